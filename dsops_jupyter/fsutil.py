"""Atomic file writes: a failure or Ctrl-C never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write through a temp file in the same folder, then rename over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode if mode is not None else _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, before any worker thread exists
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def _mode_for(path: Path) -> int:
    """An existing file keeps its mode; a new one gets 0666 minus the umask, not mkstemp's 0600."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def write_files(directory: Path, files: Mapping[str, bytes]) -> list[Path]:
    """Write every file, skipping those whose bytes are already on disk (keeps mtimes stable).

    Returns the paths that changed.
    """
    changed = []
    for name in sorted(files):
        target = directory / name
        if target.is_file() and target.read_bytes() == files[name]:
            continue
        atomic_write(target, files[name])
        changed.append(target)
    return changed
