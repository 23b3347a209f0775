"""Step cache keys and entries, shared by the generated script's --cache and `dsops cache`.

Standard library only, like the rest of runtime/: the script computes the same keys from the
same bytes as the core (cache.py), and stores and restores entries the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from .artifacts import copy


# --- step cache keys ---------------------------------------------------------------------------
def canonical(value: object) -> str:
    """A parameter value as the cache key sees it: sorted JSON, else its repr."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def static_of(code_key: str, lock_sha256: str) -> str:
    """A step's static key: its normalised code (with the hoisted code it uses) and the lock."""
    return hashlib.sha256(f"dsops-static-1\n{code_key}\n{lock_sha256}".encode()).hexdigest()


def step_key(static: str, parameters: dict[str, object], input_hashes: dict[str, str]) -> str:
    """A step's cache key: its static key, the values of the parameters it reads and the sha256
    of its inputs. The script and the core both call this one function."""
    parts = {
        "static": static,
        "parameters": {name: canonical(value) for name, value in parameters.items()},
        "inputs": dict(input_hashes),
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"dsops-step-1\n{text}".encode()).hexdigest()


# --- step cache entries ------------------------------------------------------------------------
CACHE_ENTRIES = "entries"  # <cache>/entries/<key>/: the step's artifacts and ENTRY_FILE
ENTRY_FILE = "entry.json"


def store_entry(
    cache: Path, key: str, workdir: Path, outputs: list[str], record: dict[str, Any]
) -> dict[str, Any]:
    """Copy ``outputs`` from ``workdir`` into the cache entry ``key``, atomically: a partial
    folder renamed into place (two runs storing one key: one wins, neither is corrupt). The
    record saved as ENTRY_FILE gains the outputs' sha256 and the entry's size; returned."""
    partial = cache / "partial" / f"{key}.{uuid.uuid4().hex}"
    partial.mkdir(parents=True)
    try:
        hashes = {name: copy(workdir, partial, name)["sha256"] for name in outputs}
        size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
        record = {**record, "key": key, "outputs": hashes, "created": time.time(), "size": size}
        (partial / ENTRY_FILE).write_text(json.dumps(record, indent=1, sort_keys=True))
        target = cache / CACHE_ENTRIES / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(partial, target)
        except OSError:
            if not (target / ENTRY_FILE).is_file():  # not another run's finished entry
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


def restore_entry(cache: Path, key: str, workdir: Path, outputs: list[str]) -> bool:
    """Copy a cached step's outputs into ``workdir`` and mark the entry used; False on a miss."""
    entry_dir = cache / CACHE_ENTRIES / key
    try:
        os.utime(entry_dir / ENTRY_FILE)
    except OSError:
        return False
    for name in outputs:
        copy(entry_dir, workdir, name)
    return True
