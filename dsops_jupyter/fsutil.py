"""Atomic file writes, and the rule deciding which files in a folder dsops may replace.

A failure or Ctrl-C never leaves a half-written file behind; a user's file is never replaced or
removed unless they said --force.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from dsops_jupyter.errors import HandEditError


@contextlib.contextmanager
def atomic_stream(
    path: Path, mode: int | None = None, *, final_name: Callable[[], str] | None = None
) -> Iterator[BinaryIO]:
    """Stream into a temp file in ``path``'s folder; on success fsync it and rename it over
    ``path``, on any failure (Ctrl-C included) remove it: the target is whole or untouched.

    ``final_name``, called once the body succeeded, names the target in the same folder when
    the content decides it (a blob named by its digest).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        target = path.with_name(final_name()) if final_name is not None else path
        os.chmod(tmp, mode if mode is not None else _mode_for(target))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: Path, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` whole or not at all (see `atomic_stream`)."""
    with atomic_stream(path, mode) as handle:
        handle.write(data)


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


# --- what dsops wrote in a folder --------------------------------------------------------------
# Python and Jupyter droppings that appear next to generated files without anyone editing them.
JUNK_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
# Folders of a package that `dsops export` writes (one per engine): not the converter's files.
EXPORT_DIRS = frozenset({"kfp", "airflow", "argo"})
# ``Written`` maps a file name dsops generated in a folder to the Git blob ids of bytes dsops is
# known to have written there; ``None`` when dsops wrote the file but kept no record of its bytes.
Written = Mapping[str, "frozenset[str] | None"]


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object (records
    that another run may be writing, or that a crash cut short, are skipped, never fatal)."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def blob_sha(data: bytes) -> str:
    """Git's object id of ``data`` as a blob: compares files with trees without reading blobs."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def disk_files(directory: Path) -> list[str]:
    """Files under ``directory`` (posix names relative to it), minus bytecode and temp files,
    and minus the engine folders `dsops export` writes next to a package (``kfp/`` ...)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        skipped = JUNK_DIRS | ({".git"} | EXPORT_DIRS if dirpath == str(directory) else {".git"})
        dirnames[:] = [d for d in dirnames if d not in skipped]
        rel = Path(dirpath).relative_to(directory)
        for name in filenames:
            if name.endswith(".pyc") or (name.startswith(".") and name.endswith(".tmp")):
                continue  # bytecode, or a temp file of an interrupted atomic_write
            found.append((rel / name).as_posix())
    return sorted(found)


def written_by_convert(directory: Path) -> dict[str, frozenset[str] | None]:
    """What the package's own ``pipeline.json`` on disk says dsops wrote in ``directory``.

    Its ``files`` list names the generated files; the spec's digest proves the spec itself is
    untouched and its ``script_sha256`` vouches for the script. The other files' bytes are not
    recorded (they depend on the environment, which `dsops check` must not), so they are trusted.
    A spec edited by hand vouches for nothing: every file it lists counts as changed.
    """
    from dsops_jupyter.spec import spec_digest

    try:
        spec = json.loads((directory / "pipeline.json").read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}
    names = _listed_files(spec) if isinstance(spec, dict) else None
    if not isinstance(names, list) or not all(_plain_name(name) for name in names):
        return {}
    if spec.get("spec_sha256") != spec_digest(spec):
        return {name: frozenset() for name in names}
    written: dict[str, frozenset[str] | None] = {name: None for name in names}
    written["pipeline.json"] = frozenset({blob_sha((directory / "pipeline.json").read_bytes())})
    script = spec.get("script")
    if script in written:
        try:
            data = (directory / script).read_bytes()
        except OSError:
            data = None
        ok = data is not None and hashlib.sha256(data).hexdigest() == spec.get("script_sha256")
        written[script] = frozenset({blob_sha(data)}) if ok and data is not None else frozenset()
    return written


def _listed_files(spec: dict) -> object:
    """The spec's ``files``; a format-1 spec (before the list) had these files, always."""
    if "files" in spec or spec.get("format") != 1:
        return spec.get("files")
    return [spec.get("script"), "pipeline.json", "requirements.lock", "Dockerfile", ".dockerignore"]


def _plain_name(name: object) -> bool:
    return (
        isinstance(name, str)
        and bool(name)
        and not name.startswith("/")
        and "\\" not in name
        and not {".", "..", ".git", ""} & set(name.split("/"))
    )


def refuse_overwrites(
    directory: Path,
    files: Mapping[str, bytes],
    written: Written,
    *,
    since: str,
    force: bool,
    shown: Callable[[str], str] = str,
    ignored: Callable[[list[str]], set[str]] = lambda names: set(),
) -> list[str]:
    """The one rule of `convert` and `commit`: only ever replace or remove what dsops wrote.

    A file on disk that already holds the new bytes is fine. A file dsops wrote (``written``) is
    fine while it holds bytes dsops wrote; otherwise it was changed by hand. Any other file was
    not written by dsops. Both are refused unless ``force``, which overwrites changed generated
    files and the user's files with a generated name, and leaves the user's other files alone:
    returns their names (to say so).
    """
    edited, foreign = [], []
    for name in disk_files(directory):
        if name not in files and name not in written:
            foreign.append(name)
            continue
        data = (directory / name).read_bytes()
        if files.get(name) == data:
            continue
        if name in written:
            known = written[name]
            if known is None or blob_sha(data) in known:
                continue
            edited.append(name)
        else:
            foreign.append(name)
    skipped = ignored(foreign) if foreign else set()
    foreign = [name for name in foreign if name not in skipped]
    if force:
        return [name for name in foreign if name not in files]
    if edited:
        raise HandEditError(
            f"{_listing(shown, edited)} changed by hand since {since}; "
            "use --force to overwrite with the generated version"
        )
    if foreign:
        raise HandEditError(
            f"{_listing(shown, foreign)} in the output folder {shown('')} was not written by "
            f"dsops (not in {since}); move it out, choose another --out folder, or use --force "
            "to write the generated files and leave the others alone"
        )
    return []


def _listing(shown: Callable[[str], str], names: list[str]) -> str:
    more = f" and {len(names) - 1} more file(s)" if len(names) > 1 else ""
    return f"{shown(names[0])}{more}"


def left_alone_note(shown: Callable[[str], str], names: list[str]) -> str:
    """What --force left alone, in one line (the first few names, then how many more)."""
    listed = ", ".join(shown(name) for name in names[:5])
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"left alone (not written by dsops): {listed}{more}"
