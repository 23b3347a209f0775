"""Step artifacts shared by scripts, runs, images and exports (standard library only).

Never imports dsops_jupyter: this source also ships inside every generated script package, so
the script and the core compute the same step cache keys from the same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path


# --- step cache: keys and entries, one implementation for dsops_jupyter.cache and --cache --------
def step_key(static: str, parameters: dict[str, object], input_hashes: dict[str, str]) -> str:
    """A step's cache key: its static key, the values of the parameters it reads (canonical)
    and its inputs' sha256."""
    values = {name: canonical(value) for name, value in parameters.items()}
    text = json.dumps([static, values, input_hashes], sort_keys=True)
    return hashlib.sha256(f"dsops-step-1\n{text}".encode()).hexdigest()


def static_of(code_key: str, lock_sha256: str) -> str:
    """A step's static key: its normalised code (with the hoisted code it uses) and the lock."""
    return hashlib.sha256(f"dsops-static-1\n{code_key}\n{lock_sha256}".encode()).hexdigest()


def canonical(value: object) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def store_entry(cache: Path, key: str, workdir: Path, outputs: list[str], record: dict) -> dict:
    """Copy ``outputs`` into the entry ``cache/entries/key`` with ``record`` as entry.json (it
    gains the outputs' sha256 and the size), atomically: two runs storing one key, one wins."""
    partial = cache / "partial" / f"{key}.{uuid.uuid4().hex}"
    try:
        hashes = {name: copy(workdir, partial, name)["sha256"] for name in outputs}
        partial.mkdir(parents=True, exist_ok=True)
        size = sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())
        record = {**record, "key": key, "outputs": hashes, "created": time.time(), "size": size}
        (partial / "entry.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        (cache / "entries").mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # another run stored this key first
            os.rename(partial, cache / "entries" / key)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return record


def restore_entry(cache: Path, key: str, workdir: Path, outputs: list[str]) -> bool:
    """Copy a cached step's outputs into ``workdir``, marking the entry used; False on a miss
    (or an entry that fails its hash check: the step then runs)."""
    try:
        os.utime(cache / "entries" / key / "entry.json")
        for name in outputs:
            copy(cache / "entries" / key, workdir, name)
    except (OSError, ArtifactError):
        return False
    return True
