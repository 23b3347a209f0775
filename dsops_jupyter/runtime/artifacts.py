"""Typed step artifacts: what a step hands on, stored by type with a manifest, safe to share.

One implementation for every surface: the generated script ships this file beside it (as
``dsops_artifacts.py``), `dsops run` sends its source to the kernel, images and cluster exports
run the script. So it needs only the standard library at import and must not import
dsops_jupyter; pandas, NumPy, pyarrow, joblib and cloudpickle are imported when a value needs them.

Layout: artifact NAME of a workdir is the folder ``WORKDIR/NAME/`` holding ``manifest.json``
(name, step, type, format, size, sha256, note) and one data file. A writer fills a hidden
folder, fsyncs it and renames it into place (replacing an artifact is an atomic exchange on
Linux), so readers see a whole artifact or none, and every load checks the data's sha256.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import pickle
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
DATA_FILES = {kind: f"data.{kind}" for kind in ("parquet", "npy", "joblib", "json")}
DATA_FILES |= {"cloudpickle": "data.pkl", "pickle": "data.pkl"}
_CHUNK = 1 << 20
_SAMPLE_ROWS = 5  # rows from each end of a frame that must survive Parquet before it is used
_PARQUET_KEY = b"dsops"  # Parquet schema metadata: how to rebuild the value (a Series, its name)
_RETRIES = 100  # a reader that races a writer tries again, 10 ms apart, rather than fail


class ArtifactError(Exception):
    """An artifact that cannot be read or written; the message is one line."""


class UnstorableError(ArtifactError):
    """A value no format can store (an open file, a socket, a generator, a lock...)."""


class _Unsuited(Exception):
    """This format cannot give the value back exactly: the next format in line takes it."""


# --- writing ------------------------------------------------------------------------------------
def save(workdir: Path, name: str, value: object, step: str) -> dict[str, Any]:
    """Store ``value`` as artifact ``name`` of ``workdir``, atomically; its manifest entry."""
    partial = _partial_folder(Path(workdir), name)
    try:
        kind, notes = _write_data(value, partial, name)
        digest, size = _hash_file(partial / DATA_FILES[kind], sync=True)
        of = type(value)
        described: dict[str, Any] = {"name": name, "step": step, "format": kind}
        note = "; ".join(notes) + (f": stored with {kind}" if notes else "")
        described |= {"type": f"{of.__module__}.{of.__qualname__}", "size": size, "sha256": digest}
        described["note"] = note
        _publish(partial, described)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return described


def _partial_folder(workdir: Path, name: str) -> Path:
    """A hidden folder in the workdir to fill before it is renamed to ``name``."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        raise ArtifactError(f"{name!r} cannot name an artifact (a file name not starting with .)")
    workdir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=workdir))


def _formats(value: Any) -> list[str]:
    """The formats that may hold the value, best first; cloudpickle takes what others refuse."""
    pandas, numpy = sys.modules.get("pandas"), sys.modules.get("numpy")
    if pandas is not None and type(value) in (pandas.DataFrame, pandas.Series):
        return ["parquet", "cloudpickle"]
    if numpy is not None and type(value) is numpy.ndarray and not value.dtype.hasobject:
        return ["npy", "cloudpickle"]
    if _is_json_exact(value):
        return ["json"]
    if _for_joblib(value):
        return ["joblib", "cloudpickle"]
    return ["cloudpickle"]


def _write_data(value: object, folder: Path, name: str) -> tuple[str, list[str]]:
    """Write the data file in the first format that takes the value: (format, notes)."""
    notes: list[str] = []
    *preferred, last = _formats(value)
    for kind in preferred:
        try:
            return _WRITERS[kind](value, folder / DATA_FILES[kind]), notes
        except ImportError as err:
            library = (err.name or _one_line(err)).split(".")[0]
            notes.append(f"{library} is not installed, so not {kind}")
        except _Unsuited as err:
            notes.append(f"{kind} cannot give it back exactly ({err})")
        except Exception as err:
            notes.append(f"{kind} failed ({_one_line(err)})")
        (folder / DATA_FILES[kind]).unlink(missing_ok=True)
    try:
        kind = _WRITERS[last](value, folder / DATA_FILES[last])
    except Exception as err:  # the last resort refused: no format can store the value
        kind_of = type(value).__name__
        raise UnstorableError(f"cannot store {name} (a {kind_of}): {_one_line(err)}") from None
    if kind == "pickle":
        notes.append("cloudpickle is not installed")
    return kind, notes


def _is_json_exact(value: object) -> bool:
    """JSON gives back exactly this value, with the same types (no tuple, NaN or int subclass)."""
    try:
        return _json_types(value) and json.loads(_json_text(value)) == value
    except (RecursionError, ValueError):  # too deep; an int with too many digits for str()
        return False


def _json_types(value: Any) -> bool:
    kind = type(value)
    if kind is list:
        return all(map(_json_types, value))
    if kind is dict:
        return all(type(key) is str and _json_types(item) for key, item in value.items())
    return kind in (str, int, bool, type(None)) or (kind is float and math.isfinite(value))


def _json_text(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _for_joblib(value: Any) -> bool:
    """scikit-learn estimators, and containers of NumPy arrays: what joblib is made for."""
    base, numpy = sys.modules.get("sklearn.base"), sys.modules.get("numpy")
    if base is not None and isinstance(value, base.BaseEstimator):
        return True
    if numpy is None or type(value) not in (list, tuple, dict):
        return False
    items = value.values() if type(value) is dict else value
    return any(isinstance(item, numpy.ndarray) for item in items)


def _write_plain(kind: str) -> Callable[[Any, Path], str]:
    """The writer of a format whose library writes a file in one call."""

    def write(value: Any, path: Path) -> str:
        with open(path, "wb") as handle:
            if kind == "json":
                handle.write(_json_text(value).encode("utf-8"))
            elif kind == "npy":
                __import__("numpy").save(handle, value, allow_pickle=False)
            else:
                __import__("joblib").dump(value, handle)
        return kind

    return write


def _write_pickle(value: Any, path: Path) -> str:
    """cloudpickle, or plain pickle when cloudpickle is not installed (the caller notes it)."""
    try:
        pickler, kind = _cloudpickler(), "cloudpickle"
    except ImportError:
        pickler, kind = _PlainPickler, "pickle"
    with open(path, "wb") as handle:
        pickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return kind


def _refuse_open_files(obj: object) -> None:
    """cloudpickle stores a file opened for reading as its contents: an open file is refused."""
    if isinstance(obj, io.IOBase):
        raise pickle.PicklingError(f"an open file ({type(obj).__name__}) cannot be stored")


class _PlainPickler(pickle.Pickler):
    """Plain pickle, refusing open files as the cloudpickle one does."""

    def reducer_override(self, obj: object) -> Any:
        _refuse_open_files(obj)
        return NotImplemented


def _cloudpickler() -> type[pickle.Pickler]:
    """cloudpickle, except that what the running script (``__main__``) defines at its top level
    goes by reference, as plain pickle does: the next step runs those definitions again, so its
    instances keep their class (cloudpickle would rebuild a copy of a ``__main__`` class)."""
    import cloudpickle

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj: object) -> Any:
            _refuse_open_files(obj)
            if isinstance(obj, type | types.FunctionType) and _defined_in_main(obj):
                return NotImplemented
            return super().reducer_override(obj)

    return Pickler


def _defined_in_main(obj: type | types.FunctionType) -> bool:
    found: object = sys.modules.get("__main__")
    if getattr(obj, "__module__", None) != "__main__":
        return False
    for part in obj.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is obj


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _hash_file(path: Path, sync: bool = False) -> tuple[str, int]:
    with open(path, "rb") as handle:
        if sync:
            os.fsync(handle.fileno())
        return _hash_handle(handle)


def _hash_handle(handle: io.BufferedReader) -> tuple[str, int]:
    digest, size, view = hashlib.sha256(), 0, memoryview(bytearray(_CHUNK))
    while count := handle.readinto(view):
        digest.update(view[:count])
        size += count
    return digest.hexdigest(), size


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(partial: Path, described: dict[str, Any]) -> None:
    """Write the manifest, then rename the whole folder into place. An existing artifact is
    swapped out in one atomic exchange (Linux renameat2); elsewhere it is moved aside for a
    moment, and readers wait for its successor."""
    with open(partial / MANIFEST, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(described, indent=1, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync(partial)
    target, asides = partial.parent / described["name"], []
    while True:
        try:
            os.rename(partial, target)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if _exchange(partial, target):
            asides.append(partial)  # now holding the replaced artifact
            break
        # No atomic exchange here: the old artifact goes aside (readers wait for a moment).
        asides.append(Path(tempfile.mkdtemp(prefix=f".{target.name}.replaced-", dir=target.parent)))
        with contextlib.suppress(FileNotFoundError):
            os.rename(target, asides[-1])  # onto an empty folder: POSIX allows it
    for aside in asides:
        shutil.rmtree(aside, ignore_errors=True)
    _fsync(target.parent)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically; False where the system cannot, or ``second`` is gone."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    at_cwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
    if renameat2 is None:
        return False
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOENT, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


# --- reading ------------------------------------------------------------------------------------
def entry(workdir: Path, name: str) -> dict[str, Any] | None:
    """The manifest entry of artifact ``name``; None when the workdir has no whole such artifact."""
    try:
        found = json.loads((Path(workdir) / name / MANIFEST).read_bytes())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("format") in DATA_FILES else None


def entries(workdir: Path) -> dict[str, dict[str, Any]]:
    """Every whole artifact of the workdir, name -> manifest entry (partial folders are hidden)."""
    try:
        names = sorted(n for n in os.listdir(workdir) if not n.startswith("."))
    except FileNotFoundError:
        return {}
    found = {name: entry(workdir, name) for name in names}
    return {name: described for name, described in found.items() if described is not None}


def load(workdir: Path, name: str) -> object:
    """The value of artifact ``name``, after checking its bytes against the manifest's sha256."""
    with _opened(Path(workdir), name) as (described, handle, _):
        return _read(handle, described["format"], name, Path(workdir))


def copy(src_workdir: Path, dst_workdir: Path, name: str) -> dict[str, Any]:
    """Copy artifact ``name`` into another workdir (a hard link when possible), hash checked."""
    partial = _partial_folder(Path(dst_workdir), name)
    try:
        with _opened(Path(src_workdir), name) as (described, handle, folder):
            data = DATA_FILES[described["format"]]
            try:
                os.link(data, partial / data, src_dir_fd=folder)
            except OSError:  # another file system, or one without hard links
                with open(partial / data, "wb") as out:
                    shutil.copyfileobj(handle, out, _CHUNK)
            if _hash_file(partial / data, sync=True)[0] != described["sha256"]:
                raise ArtifactError(f"{name} in {src_workdir} changed while it was copied")
        _publish(partial, described)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return described


@contextlib.contextmanager
def _opened(workdir: Path, name: str) -> Iterator[tuple[dict[str, Any], io.BufferedReader, int]]:
    """The manifest, the data file (open, hash checked, at its start) and a handle on the folder
    of one whole artifact. Both files are opened through that handle, so a concurrent
    replacement cannot mix two versions; a read that loses a race with a writer starts again."""
    for _ in range(_RETRIES):
        try:
            folder = os.open(workdir / name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except (FileNotFoundError, NotADirectoryError):
            if not _moved_aside(workdir, name):
                break
            time.sleep(0.01)
            continue
        try:
            try:
                described, handle = _read_whole(folder, workdir, name)
            except FileNotFoundError:  # the folder was replaced and is being removed
                time.sleep(0.01)
                continue
            with handle:
                yield described, handle, folder
            return
        finally:
            os.close(folder)
    raise ArtifactError(f"{name} is not in {workdir}: run the step that writes it first")


def _moved_aside(workdir: Path, name: str) -> bool:
    """A writer without an atomic exchange has moved the artifact aside for a moment."""
    with contextlib.suppress(OSError):
        return any(n.startswith(f".{name}.replaced-") for n in os.listdir(workdir))
    return False


def _read_whole(folder: int, workdir: Path, name: str) -> tuple[dict[str, Any], io.BufferedReader]:
    def opener(path: str, flags: int) -> int:
        return os.open(path, flags, dir_fd=folder)

    with open(MANIFEST, "rb", opener=opener) as handle:
        try:
            described = json.loads(handle.read())
            data = DATA_FILES[described["format"]]
        except (ValueError, KeyError, TypeError):
            raise ArtifactError(f"{name} in {workdir} has a broken {MANIFEST}") from None
    handle = open(data, "rb", opener=opener)  # noqa: SIM115 (the caller closes it)
    digest, _ = _hash_handle(handle)
    if digest != described.get("sha256"):
        handle.close()
        raise ArtifactError(
            f"{name} in {workdir} does not match its manifest (sha256 {digest[:12]}..., "
            f"expected {str(described.get('sha256'))[:12]}...): its data changed after writing"
        )
    handle.seek(0)
    return described, handle


def _read(handle: io.BufferedReader, kind: str, name: str, workdir: Path) -> object:
    if kind == "json":
        return json.loads(handle.read().decode("utf-8"))
    if kind == "parquet":
        return _from_table(_needs("pyarrow.parquet", name, workdir, kind).read_table(handle))
    if kind == "npy":
        return _needs("numpy", name, workdir, kind).load(handle, allow_pickle=False)
    if kind == "joblib":
        return _needs("joblib", name, workdir, kind).load(handle)
    if kind == "cloudpickle":
        _needs("cloudpickle", name, workdir, kind)
    return pickle.load(handle)


def _needs(library: str, name: str, workdir: Path, kind: str) -> Any:
    import importlib

    try:
        return importlib.import_module(library)
    except ImportError:
        top = library.split(".")[0]
        message = f"reading {name} ({kind}) in {workdir} needs {top}: pip install {top}"
    raise ArtifactError(message)


# --- Parquet (pandas values) --------------------------------------------------------------------
def _write_parquet(value: Any, path: Path) -> str:
    """A DataFrame or Series as Parquet when Parquet gives it back exactly: string column names,
    no mixed object columns, and rows from both ends that survive the round trip unchanged."""
    import pyarrow.parquet as parquet

    frame, extra = _as_frame(value)
    refusal = _parquet_refusal(frame)
    if refusal:
        raise _Unsuited(refusal)
    _check_sample(frame, extra)
    parquet.write_table(_to_table(frame, extra), path)
    return "parquet"


def _as_frame(value: Any) -> tuple[Any, dict[str, Any]]:
    if type(value) is sys.modules["pandas"].DataFrame:
        return value, {"series": False}
    if not _json_types(value.name):
        raise _Unsuited(f"the Series name {value.name!r} is not a plain value")
    return value.to_frame(name="series"), {"series": True, "name": value.name}


def _parquet_refusal(frame: Any) -> str:
    """Why Parquet would not give this frame back ("" if it would, as far as its labels and
    object columns tell; the sample's round trip checks the rest)."""
    from pandas.api.types import infer_dtype

    if not all(type(column) is str for column in frame.columns):
        return "its column names are not all strings"
    if frame.attrs:
        return "Parquet does not keep DataFrame.attrs"
    if getattr(frame.index, "freq", None) is not None:
        return "Parquet does not keep the index frequency"
    levels = [frame.index.get_level_values(i) for i in range(frame.index.nlevels)]
    for label, values in [*frame.items(), *zip(frame.index.names, levels, strict=True)]:
        if values.dtype == object and infer_dtype(values, skipna=False) not in ("string", "empty"):
            return f"{label!r} holds objects of mixed types or missing values"
    return ""


def _check_sample(frame: Any, extra: dict[str, Any]) -> None:
    """Rows from both ends go through Parquet and back; any difference refuses the format."""
    import pyarrow
    import pyarrow.parquet as parquet
    from pandas.testing import assert_frame_equal, assert_series_equal

    rows, ends = len(frame), _SAMPLE_ROWS
    sample = frame.take(sorted({*range(min(ends, rows)), *range(max(rows - ends, 0), rows)}))
    sink = pyarrow.BufferOutputStream()
    parquet.write_table(_to_table(sample, extra), sink)
    back = _from_table(parquet.read_table(pyarrow.BufferReader(sink.getvalue())))
    expected = sample.iloc[:, 0].rename(extra.get("name")) if extra["series"] else sample
    same: Callable[..., None] = assert_series_equal if extra["series"] else assert_frame_equal
    try:
        same(back, expected, check_exact=True, check_index_type=True, check_flags=True)
    except AssertionError as err:
        raise _Unsuited(f"Parquet would change it: {_one_line(err)}") from None


def _to_table(frame: Any, extra: dict[str, Any]) -> Any:
    import pyarrow

    table = pyarrow.Table.from_pandas(frame)
    metadata = {**(table.schema.metadata or {}), _PARQUET_KEY: json.dumps(extra).encode()}
    return table.replace_schema_metadata(metadata)


def _from_table(table: Any) -> Any:
    extra = json.loads((table.schema.metadata or {}).get(_PARQUET_KEY, b'{"series": false}'))
    frame = table.to_pandas()
    return frame.iloc[:, 0].rename(extra.get("name")) if extra["series"] else frame


_WRITERS: dict[str, Callable[[Any, Path], str]] = {
    "parquet": _write_parquet,
    "npy": _write_plain("npy"),
    "joblib": _write_plain("joblib"),
    "json": _write_plain("json"),
    "cloudpickle": _write_pickle,
}
