"""Housekeeping of dsops's caches: a repository's step cache and the build cache of images.

The build cache (``DSOPS_CACHE_DIR``, else ~/.cache/dsops) holds the wheelhouse, extracted base
images, inflated layers and built blobs of reproducible builds. Every file there is a cache:
builds check what they find and fetch or rebuild what is missing, so removing the least
recently used files is always safe. ``cache-size`` in ``[tool.dsops]`` bounds each of the two
caches.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsops_jupyter.cache import StepCache, open_cache

BUILD_FOLDERS = ("wheelhouse", "bases", "layers", "blobs")  # see wheelhouse.py, oci/


@dataclass
class Cleanup:
    """What a prune or clear removed: step entries and build cache files, and bytes freed."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    files: list[tuple[Path, int]] = field(default_factory=list)

    @property
    def freed(self) -> int:
        return sum(int(e.get("size", 0)) for e in self.entries) + sum(s for _, s in self.files)

    def describe(self) -> list[str]:
        lines = [f"removed {_entry_line(entry)}" for entry in self.entries]
        if self.files:
            lines.append(f"removed {len(self.files)} build cache files")
        return [*lines, f"freed {_mb(self.freed)}"]

    def to_json(self) -> dict[str, Any]:
        return {
            "entries": [_entry_json(e) for e in self.entries],
            "files": [{"path": str(path), "size": size} for path, size in self.files],
            "freed": self.freed,
        }


def build_cache_dir() -> Path:
    from dsops_jupyter.wheelhouse import cache_dir

    return cache_dir()


def build_cache_files() -> list[tuple[Path, int, float]]:
    """(path, size, last use) of every build cache file, least recently used first."""
    found = []
    for name in BUILD_FOLDERS:
        for folder, _, files in os.walk(build_cache_dir() / name):
            for file in files:
                path = Path(folder) / file
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue
                found.append((path, info.st_size, max(info.st_atime, info.st_mtime)))
    return sorted(found, key=lambda item: (item[2], str(item[0])))


def report(path: Path) -> dict[str, Any]:
    """Both caches for the project holding ``path``: where, how big, the step entries."""
    steps = open_cache(path)
    entries = steps.entries()
    files = build_cache_files()
    return {
        "step_cache": str(steps.root),
        "limit": steps.limit_bytes,
        "entries": [_entry_json(e) for e in entries],
        "size": sum(int(e.get("size", 0)) for e in entries),
        "build_cache": str(build_cache_dir()),
        "build_size": sum(size for _, size, _ in files),
        "build_files": len(files),
    }


def describe(data: dict[str, Any]) -> list[str]:
    """The report as lines for people, most recently used entries first."""
    count, size, limit = len(data["entries"]), _mb(data["size"]), _mb(data["limit"])
    lines = [f"step cache {data['step_cache']}: {count} entries, {size} (limit {limit})"]
    lines += [f"  {_entry_line(entry)}" for entry in reversed(data["entries"])]
    build = f"{data['build_files']} files, {_mb(data['build_size'])}"
    return [*lines, f"build cache {data['build_cache']}: {build}"]


def _entry_line(entry: dict[str, Any]) -> str:
    used = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(entry.get("used") or 0)))
    size = _mb(int(entry.get("size") or 0))
    where = f"{entry.get('notebook')} {entry.get('step')}"
    return f"{str(entry['key'])[:12]}  {where}  {size}  used {used}"


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def prune(path: Path) -> Cleanup:
    """Least recently used first, until each cache fits ``cache-size``."""
    steps = open_cache(path)
    done = Cleanup(entries=steps.prune())
    files = build_cache_files()
    total = sum(size for _, size, _ in files)
    for file, size, _ in files:
        if total <= steps.limit_bytes:
            break
        if _unlink(file):
            done.files.append((file, size))
        total -= size
    return done


def clear(path: Path) -> Cleanup:
    """Everything in both caches."""
    steps: StepCache = open_cache(path)
    done = Cleanup(entries=steps.clear())
    for file, size, _ in build_cache_files():
        if _unlink(file):
            done.files.append((file, size))
    for name in BUILD_FOLDERS:
        shutil.rmtree(build_cache_dir() / name, ignore_errors=True)
    return done


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _entry_json(entry: dict[str, Any]) -> dict[str, Any]:
    keys = ("key", "notebook", "step", "size", "created", "used")
    return {key: entry.get(key) for key in keys}
