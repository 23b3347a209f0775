"""Deterministic layers: sorted tar entries with fixed metadata, gzip without timestamps.

Entries are sorted, mtimes clamped to SOURCE_DATE_EPOCH, owners numeric, GNU headers without pax
timestamps; gzip has mtime 0, no file name and a fixed level: the same entries always give the
same bytes, hence the same digest.
"""

from __future__ import annotations

import io
import queue
import struct
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from dsops_jupyter.errors import ImageError
from dsops_jupyter.fsutil import atomic_stream
from dsops_jupyter.oci.blob import CHUNK, MEDIA_LAYER, MEDIA_LAYER_GZIP, Blob, Hashing, hex_of

GZIP_LEVEL = 1  # ko's and go-containerregistry's choice: 4x faster than 6, ~15% larger


@dataclass(frozen=True)
class TarEntry:
    """One entry of a layer; ``mtime`` None means the layer's SOURCE_DATE_EPOCH."""

    path: str
    kind: str = "file"  # file | dir | symlink
    data: bytes | Callable[[], bytes] = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int | None = None
    linkname: str = ""


class LayerSpec:
    """The entries of one layer; parents are added as 0755 root dirs, later adds win."""

    def __init__(self) -> None:
        self._entries: dict[str, TarEntry] = {}

    def add(self, entry: TarEntry) -> None:
        path = _normalize(entry.path)
        parts = path.split("/")
        for depth in range(1, len(parts)):
            self._entries.setdefault("/".join(parts[:depth]), TarEntry("", "dir", mode=0o755))
        self._entries[path] = replace(entry, path=path)

    def add_file(self, path: str, data: bytes | Callable[[], bytes], **kw: Any) -> None:
        self.add(TarEntry(path, "file", data, **kw))

    def add_dir(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        self.add(TarEntry(path, "dir", mode=mode, uid=uid, gid=gid))

    def entries(self) -> list[TarEntry]:
        """Sorted by path, so parents come before children and order never depends on input."""
        return [replace(self._entries[p], path=p) for p in sorted(self._entries)]

    def __len__(self) -> int:
        return len(self._entries)


def _normalize(path: str) -> str:
    clean = PurePosixPath("/" + path.strip("/")).as_posix().lstrip("/")
    if not clean or ".." in clean.split("/"):
        raise ImageError(f"invalid path {path!r} in an image layer")
    return clean


def tarinfo(entry: TarEntry, epoch: int, size: int = 0) -> tarfile.TarInfo:
    """The entry's header with fixed metadata (no user or group names, mtime clamped)."""
    info = tarfile.TarInfo(entry.path)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}[
        entry.kind
    ]
    info.mode, info.uid, info.gid, info.size = entry.mode, entry.uid, entry.gid, size
    info.mtime = epoch if entry.mtime is None else min(entry.mtime, epoch)
    info.uname = info.gname = ""
    info.linkname = entry.linkname
    return info


def write_tar(entries: Iterable[TarEntry], out: Any, epoch: int) -> None:
    """Entries as a GNU tar (no pax headers, hence no atime/ctime) into a write-only stream."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for entry in entries:
            if entry.kind != "file":
                archive.addfile(tarinfo(entry, epoch))
                continue
            data = entry.data() if callable(entry.data) else entry.data
            archive.addfile(tarinfo(entry, epoch, len(data)), io.BytesIO(data))


class _GzipPipe:
    """gzip as ``gzip.GzipFile(filename="", mtime=0)`` writes it, deflated on a second thread.

    Same bytes as GzipFile at the same level (header: no name, mtime 0, OS 255), but the
    compression of one chunk overlaps the tar writing of the next: half the time on 2 cores.
    """

    def __init__(self, out: Any, level: int) -> None:
        self._out, self._crc, self._size, self._buffer = out, 0, 0, bytearray()
        self._deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zlib.DEF_MEM_LEVEL)
        self._chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        xfl = {9: b"\x02", 1: b"\x04"}.get(level, b"\x00")
        out.write(b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + xfl + b"\xff")
        self._thread = threading.Thread(target=self._work, name="dsops-gzip", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(self._deflate.compress(chunk))
                except BaseException as err:  # re-raised in the writing thread
                    self._error = err

    def write(self, data: bytes) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buffer += data
        if len(self._buffer) >= CHUNK:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def _put(self, chunk: bytes | None) -> None:
        if self._error is not None:
            raise self._error
        self._chunks.put(chunk)

    def tell(self) -> int:
        return self._size

    def close(self) -> None:
        """Flush the last chunk and the trailer (CRC32, size mod 2**32)."""
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._chunks.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._out.write(self._deflate.flush())
        self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))

    def abort(self) -> None:
        """Stop the worker after a failure (the partial output is thrown away)."""
        self._error = self._error or ImageError("layer writing aborted")
        self._chunks.put(None)
        self._thread.join()


def write_layer(spec: LayerSpec, epoch: int, directory: Path, *, compress: bool = True) -> Blob:
    """Write a layer blob into ``directory`` (named by digest, atomically) and describe it."""
    with atomic_stream(directory / "layer", final_name=lambda: hex_of(outer.digest)) as raw:
        outer = Hashing(raw)
        inner = Hashing(_GzipPipe(outer, GZIP_LEVEL) if compress else outer)
        _write_through(spec, epoch, inner)
    media = MEDIA_LAYER_GZIP if compress else MEDIA_LAYER
    path = directory / hex_of(outer.digest)
    return Blob(outer.digest, outer.size, media, path, diff_id=inner.digest, diff_size=inner.size)


def _write_through(spec: LayerSpec, epoch: int, inner: Hashing) -> None:
    """The tar into ``inner``, closing its gzip pipe on success and stopping it on failure."""
    pipe = inner.raw if isinstance(inner.raw, _GzipPipe) else None
    try:
        write_tar(spec.entries(), inner, epoch)
    except BaseException:
        if pipe is not None:
            pipe.abort()
        raise
    if pipe is not None:
        pipe.close()
