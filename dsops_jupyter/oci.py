"""Reproducible images assembled in Python, without ``docker build`` (as ko and rules_oci do).

Why: a Dockerfile build stamps the wall clock into layers, history and config, and resolves
dependencies over the network, so two builds of one version never share a digest. Here the image
is ``[base layers, unchanged] + [site-packages of the locked wheels] + [the generated package]``,
and every byte is a function of the version commit, the lock, the wheels and the base:

- tar entries sorted, mtimes clamped to SOURCE_DATE_EPOCH (the version commit's time), owners
  0:0 (the run user only for its work dir), fixed modes, GNU headers without pax timestamps;
- gzip with mtime 0, no file name and a fixed level; no ``.pyc`` at all;
- canonical JSON (sorted keys, no spaces) for config, manifest and index;
- the base recorded by digest (its image ID) in the OCI ``base`` labels.

The output is one tar that is both a docker-archive (``manifest.json``, what ``docker load``
reads) and an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``); the config
digest is the image ID an engine reports after loading it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import queue
import re
import shutil
import struct
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO, Any

from dsops_jupyter import wheelhouse as wh
from dsops_jupyter.errors import BaseImageError, ImageError
from dsops_jupyter.events import OnEvent, ignore, log, progress, result, stage
from dsops_jupyter.image import image_labels as recipe_labels
from dsops_jupyter.image import image_tags, rfc3339
from dsops_jupyter.recipe import cli_args

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

GZIP_LEVEL = 1  # ko's and go-containerregistry's choice: 4x faster than 6, ~15% larger
RUN_USER = 10001  # the Dockerfile recipe's user; numeric, so the base needs no passwd entry
APP_DIR = "opt/dsops"  # where the Dockerfile recipe puts the script too
WORK_DIR = "work"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LAYOUT_VERSION = 1  # bump when the layout of generated layers changes (invalidates caches)
_CHUNK = 1 << 20


# --- small helpers ------------------------------------------------------------------------------
def canonical_json(value: Any) -> bytes:
    """The one JSON spelling of a value: same data, same bytes, same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _hex(digest: str) -> str:
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ImageError(f"unsupported digest {digest!r}: only sha256 is handled")
    return value


def _host_architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


class _Counting:
    """A write-only stream that hashes and counts what passes through to ``raw``."""

    def __init__(self, raw: IO[bytes] | None = None) -> None:
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.raw is not None:
            self.raw.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self.raw is not None:
            self.raw.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


class _Window(io.RawIOBase):
    """``size`` bytes of a file from ``offset``: a member of an uncompressed tar, unextracted."""

    def __init__(self, path: Path, offset: int, size: int) -> None:
        self._file = path.open("rb")
        self._file.seek(offset)
        self._left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._file.readinto(memoryview(buffer)[: min(len(buffer), self._left)])
        self._left -= count or 0
        return count or 0

    def close(self) -> None:
        self._file.close()
        super().close()


# --- blobs --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """Content-addressed bytes living at ``path[offset:offset+size]``.

    ``diff_id`` (layers only) is the digest of the uncompressed tar; ``trusted`` is False when
    the digest was taken from a manifest rather than computed here, so copying checks it.
    """

    digest: str
    size: int
    media_type: str
    path: Path
    offset: int = 0
    diff_id: str = ""
    diff_size: int = 0
    trusted: bool = True

    def open(self) -> IO[bytes]:
        return io.BufferedReader(_Window(self.path, self.offset, self.size), _CHUNK)


def _file_blob(path: Path, media_type: str, digest: str | None = None) -> Blob:
    size = path.stat().st_size
    digest = digest or "sha256:" + wh.file_digest(path)
    return Blob(digest, size, media_type, path, diff_id=digest, diff_size=size)


# --- deterministic layers ----------------------------------------------------------------------
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


def _tarinfo(entry: TarEntry, epoch: int, size: int = 0) -> tarfile.TarInfo:
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
                archive.addfile(_tarinfo(entry, epoch))
                continue
            data = entry.data() if callable(entry.data) else entry.data
            archive.addfile(_tarinfo(entry, epoch, len(data)), io.BytesIO(data))


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
        if len(self._buffer) >= _CHUNK:
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
    """Write a layer blob into ``directory`` (named by digest) and describe it."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".layer-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as raw:
            outer = _Counting(raw)
            inner = _Counting(_GzipPipe(outer, GZIP_LEVEL) if compress else outer)
            try:
                write_tar(spec.entries(), inner, epoch)
            except BaseException:
                if isinstance(inner.raw, _GzipPipe):
                    inner.raw.abort()
                raise
            if isinstance(inner.raw, _GzipPipe):
                inner.raw.close()
        path = directory / _hex(outer.digest)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    media = MEDIA_LAYER_GZIP if compress else MEDIA_LAYER
    return Blob(outer.digest, outer.size, media, path, diff_id=inner.digest, diff_size=inner.size)


# --- reading base images -----------------------------------------------------------------------
@dataclass(frozen=True)
class BaseImage:
    """A base image as layers of uncompressed tars (digest == diff_id) plus its config.

    Uncompressed is the canonical form: the same base read from an engine, a docker-archive or an
    OCI layout gives the same blobs, hence the same manifest digest on top of it.
    """

    name: str
    config_bytes: bytes  # as found: re-serializing would change the digest
    layers: tuple[Blob, ...]
    in_engine: bool = False

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_bytes)

    @property
    def digest(self) -> str:
        """sha256 of the config bytes: the image ID engines show."""
        return sha256_digest(self.config_bytes)


class _Source:
    """Files of an image archive: an uncompressed tar or a directory (OCI layout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._members: dict[str, tarfile.TarInfo] = {}
        if path.is_file():
            with open(path, "rb") as handle:
                if handle.read(2) == b"\x1f\x8b":
                    raise ImageError(f"{path} is compressed; gunzip it first (docker save | gzip)")
            with tarfile.open(path, "r:") as archive:
                for member in archive.getmembers():
                    self._members[_normalize_member(member.name)] = member

    def names(self) -> set[str]:
        if self._members:
            return set(self._members)
        return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}

    def _member(self, name: str, hops: int = 0) -> tarfile.TarInfo:
        member = self._members.get(_normalize_member(name))
        if member is None or hops > 8:
            raise ImageError(f"{self.path} has no {name}; is it a docker-archive or OCI layout?")
        if member.issym() or member.islnk():
            base = PurePosixPath(name).parent if member.issym() else PurePosixPath()
            return self._member((base / member.linkname).as_posix(), hops + 1)
        return member

    def locate(self, name: str) -> tuple[Path, int, int]:
        """(file, offset, size) of a file's bytes, so blobs are read in place."""
        if self._members:
            member = self._member(name)
            return self.path, member.offset_data, member.size
        path = self.path / name
        if not path.is_file():
            raise ImageError(f"{self.path} has no {name}; is it an OCI image layout?")
        return path, 0, path.stat().st_size

    def read(self, name: str) -> bytes:
        path, offset, size = self.locate(name)
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(size)

    def json(self, name: str) -> Any:
        try:
            return json.loads(self.read(name))
        except ValueError as err:
            raise ImageError(f"{name} in {self.path} is not valid JSON: {err}") from err


def _normalize_member(name: str) -> str:
    return PurePosixPath("/" + name).as_posix().lstrip("/")


def read_base(
    ref: str | Path, *, engine: Any = None, cache: Path | None = None, on_event: OnEvent = ignore
) -> BaseImage:
    """A base image from a path (docker-archive, OCI layout dir/tar, rootfs tar) or an engine."""
    cache = cache or wh.cache_dir()
    path = Path(ref).expanduser()
    if path.exists():
        return read_base_path(path, cache)
    if engine is None:
        raise ImageError(
            f"base image {ref} is not a file and no Docker engine runs; pass a docker-archive"
            " or OCI layout path as the base, or start Docker"
        )
    return _engine_base(engine, str(ref), cache, on_event)


def read_base_file(path: Path, cache: Path | None = None) -> BaseImage:
    """A base image archive given by the user, checked whole (format, layers, Python, libc).

    Called before anything is committed: a file that is no usable image (``/etc/passwd``, a
    truncated archive, a rootfs without Python) is one BaseImageError, bad input (exit 2).
    """
    cache = cache or wh.cache_dir()
    try:
        base = read_base_path(path, cache)
        inspect_base(base, cache)
    except ImageError as err:
        raise BaseImageError(str(err)) from None
    except (OSError, tarfile.TarError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = (
            "not a tar archive"
            if isinstance(err, tarfile.TarError)
            else getattr(err, "strerror", None) or f"malformed: {type(err).__name__}"
        )
        raise BaseImageError(
            f"base image {path} is not a usable image archive ({reason}); pass a `docker save` "
            "archive, an OCI image layout or a rootfs tarball"
        ) from None
    return base


def read_base_path(path: Path, cache: Path, name: str = "") -> BaseImage:
    """Read a docker-archive, an OCI layout (dir or tar) or a plain rootfs tarball."""
    if path.is_dir():
        return _oci_base(_Source(path), cache, name)
    source = _Source(path)
    names = source.names()
    if "manifest.json" in names:
        return _docker_archive_base(source, cache, name)
    if {"index.json", "oci-layout"} <= names:
        return _oci_base(source, cache, name)
    return _rootfs_base(path, cache)


def _pick_name(tags: Iterable[str], wanted: str) -> str:
    """The tag recorded as base.name: the one asked for if the image has it, else the first."""
    tags = sorted(tags)
    for candidate in (wanted, f"{wanted}:latest"):
        if candidate in tags:
            return candidate
    return tags[0] if tags else ""


def _docker_archive_base(source: _Source, cache: Path, wanted: str) -> BaseImage:
    items = source.json("manifest.json")
    if not items:
        raise ImageError(f"{source.path} holds no image (empty manifest.json)")
    item = next((i for i in items if wanted and wanted in (i.get("RepoTags") or [])), items[0])
    config_bytes = source.read(item["Config"])
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(item["Layers"]):
        raise ImageError(f"{source.path}: manifest.json and config disagree on the layer count")
    layers = tuple(
        _layer_blob(source, name, diff_id, cache)
        for name, diff_id in zip(item["Layers"], diff_ids, strict=True)
    )
    tag = _pick_name(item.get("RepoTags") or [], wanted)
    return BaseImage(tag, config_bytes, layers)


def _oci_base(source: _Source, cache: Path, wanted: str) -> BaseImage:
    manifest, tag = _oci_manifest(source, source.json("index.json"), wanted)
    config_bytes = source.read(f"blobs/sha256/{_hex(manifest['config']['digest'])}")
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.get("layers", [])):
        raise ImageError(f"{source.path}: manifest and config disagree on the layer count")
    layers = tuple(
        _layer_blob(source, f"blobs/sha256/{_hex(desc['digest'])}", diff_id, cache)
        for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True)
    )
    return BaseImage(tag, config_bytes, layers)


def _oci_manifest(source: _Source, index: dict[str, Any], wanted: str) -> tuple[dict, str]:
    """Follow index -> (nested index for this platform) -> manifest."""
    descriptors = index.get("manifests") or []
    if not descriptors:
        raise ImageError(f"{source.path}: index.json lists no image")

    def ref(desc: dict[str, Any]) -> str:
        notes = desc.get("annotations") or {}
        return notes.get("io.containerd.image.name") or notes.get(
            "org.opencontainers.image.ref.name", ""
        )

    chosen = next((d for d in descriptors if wanted and ref(d) == wanted), descriptors[0])
    tag = _pick_name([ref(d) for d in descriptors if ":" in ref(d)], wanted)
    body = source.json(f"blobs/sha256/{_hex(chosen['digest'])}")
    if body.get("mediaType") in (MEDIA_INDEX, _DOCKER_MANIFEST_LIST) or "manifests" in body:
        arch = _host_architecture()
        nested = [d for d in body["manifests"] if d.get("platform", {}).get("architecture") == arch]
        if not nested:
            raise ImageError(f"{source.path}: no {arch} image in the multi-platform index")
        body = source.json(f"blobs/sha256/{_hex(nested[0]['digest'])}")
    return body, tag


def _layer_blob(source: _Source, name: str, diff_id: str, cache: Path) -> Blob:
    """A base layer as an uncompressed tar: in place if it is one, else inflated into the cache."""
    path, offset, size = source.locate(name)
    with path.open("rb") as handle:
        handle.seek(offset)
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        return _inflated(path, offset, size, diff_id, cache)
    if magic == b"\x28\xb5\x2f\xfd":
        raise ImageError(f"layer {name} of {source.path} is zstd-compressed; not supported yet")
    return Blob(diff_id, size, MEDIA_LAYER, path, offset, diff_id, size, trusted=False)


def _inflated(path: Path, offset: int, size: int, diff_id: str, cache: Path) -> Blob:
    target = cache / "layers" / f"{_hex(diff_id)}.tar"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".inflate-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, _Window(path, offset, size) as raw:
                counter = _Counting(out)
                shutil.copyfileobj(gzip.GzipFile(fileobj=io.BufferedReader(raw)), counter, _CHUNK)
            if counter.digest != diff_id:
                raise ImageError(f"base layer of {path} does not match its diff_id {diff_id}")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    return _file_blob(target, MEDIA_LAYER, diff_id)


def _rootfs_base(path: Path, cache: Path) -> BaseImage:
    """A bare rootfs tarball (debootstrap, ``docker export``) as a one-layer base image."""
    _check_root_traversable(path)
    layer = _file_blob(path, MEDIA_LAYER)
    created = rfc3339(0)
    config = {
        "architecture": _host_architecture(),
        "os": "linux",
        "created": created,
        "config": {"Env": [f"PATH={DEFAULT_PATH}"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": created, "created_by": "dsops: rootfs tarball"}],
    }
    return BaseImage("", canonical_json(config), (layer,))


def _check_root_traversable(path: Path) -> None:
    """The image runs as a non-root user: a rootfs whose ``/`` others cannot enter (a tarball of a
    ``mkdtemp`` folder is 0700) makes every exec fail with "permission denied" at run time."""
    try:
        with tarfile.open(path) as archive:
            first = archive.next()
    except (tarfile.TarError, OSError) as err:
        raise ImageError(f"{path} is not a rootfs tarball or image archive: {err}") from None
    if first is None:
        raise ImageError(f"{path} is an empty tarball, not a base image")
    if first.isdir() and first.name.strip("./") == "" and not first.mode & 0o001:
        raise ImageError(
            f"{path}: its root folder has mode {first.mode:04o}, so the image's non-root user "
            "cannot reach /usr; `chmod 755` the rootfs folder before making the tarball"
        )


def base_archive(base: BaseImage, out: Path, tag: str) -> Path:
    """Write a base image as a loadable archive (how tests give engines one identical base)."""
    image = _Assembled(base.config_bytes, base.layers, len(base.layers))
    write_archive(out, image, [tag] if tag else [], 0)
    return out


def extend_base(base: BaseImage, extra: LayerSpec, directory: Path, created_by: str) -> BaseImage:
    """The base plus one uncompressed layer (a CA bundle, a config file) as a new base."""
    layer = write_layer(extra, 0, directory, compress=False)
    config = base.config
    config.setdefault("rootfs", {"type": "layers"}).setdefault("diff_ids", []).append(layer.diff_id)
    config["history"] = [*_base_history(base), {"created": rfc3339(0), "created_by": created_by}]
    return BaseImage(base.name, canonical_json(config), (*base.layers, layer))


def _engine_base(client: Any, ref: str, cache: Path, on_event: OnEvent) -> BaseImage:
    """``docker save`` the base once per image ID into the cache, then read that archive."""
    from docker.errors import DockerException, ImageNotFound

    try:
        image = client.images.get(ref)
    except ImageNotFound as err:
        raise ImageError(
            f"base image {ref} is not in the Docker engine; docker load or pull it first"
        ) from err
    except DockerException as err:
        raise ImageError(f"cannot read base image {ref} from Docker: {err}") from err
    target = cache / "bases" / f"{_hex(image.id)}.tar"
    if not target.is_file():
        log(on_event, f"saving base image {ref} ({image.id[:19]}) from the engine")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".save-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in image.save(chunk_size=_CHUNK):
                    out.write(chunk)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
    base = read_base_path(target, cache)
    if base.digest != image.id:
        raise ImageError(f"docker save of {ref} gave config {base.digest}, not {image.id}")
    return replace(base, name=_pick_name(image.tags, ref), in_engine=True)


# --- what the base offers: Python and libc ------------------------------------------------------
@dataclass(frozen=True)
class BaseFacts:
    """The interpreter and platform of a base image, read from its layers (never by running it)."""

    architecture: str
    python: str
    python_version: tuple[int, int]
    libc: str
    libc_version: tuple[int, int]

    def target(self) -> wh.Target:
        machine = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686"}.get(
            self.architecture, self.architecture
        )
        return wh.Target(self.python_version, self.python, machine, self.libc, self.libc_version)


_PYTHON = re.compile(r"^(usr/local/bin|usr/bin|bin)/python3\.(\d+)$")
_LIBC = re.compile(
    r"^(usr/)?lib(64|32)?(/[a-z0-9_]+-linux-gnu[a-z0-9]*)?/libc(\.so\.6|-2\.\d+\.so)$"
)
_MUSL = re.compile(r"^(usr/)?lib/ld-musl-[a-z0-9_]+\.so\.1$")
_PYTHON_DIRS = ("usr/local/bin", "usr/bin", "bin")


def inspect_base(base: BaseImage, cache: Path | None = None) -> BaseFacts:
    """Find python3.X and the libc version in the base's layers (cached by base digest)."""
    memo = (cache or wh.cache_dir()) / "bases" / f"{_hex(base.digest)}.facts.json"
    if memo.is_file():
        data = json.loads(memo.read_text())
        return BaseFacts(
            data["architecture"],
            data["python"],
            tuple(data["python_version"]),
            data["libc"],
            tuple(data["libc_version"]),
        )
    facts = _scan_layers(base)
    from dsops_jupyter.fsutil import atomic_write

    atomic_write(memo, canonical_json(facts.__dict__))
    return facts


def _scan_layers(base: BaseImage) -> BaseFacts:
    pythons: dict[str, tuple[int, int]] = {}
    glibc: tuple[int, int] | None = None
    musl = False
    for layer in base.layers:
        with layer.open() as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                name = _normalize_member(member.name)
                match = _PYTHON.match(name)
                if match:
                    pythons[name] = (3, int(match.group(2)))
                elif _LIBC.match(name):
                    glibc = _glibc_version(archive, member) or glibc
                elif _MUSL.match(name):
                    musl = True
    return _facts(base, pythons, glibc, musl)


def _glibc_version(archive: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[int, int] | None:
    named = re.search(r"libc-2\.(\d+)\.so", member.name + " " + member.linkname)
    if named:
        return (2, int(named.group(1)))
    if not member.isfile():
        return None
    handle = archive.extractfile(member)
    data = handle.read() if handle else b""
    versions = [int(v) for v in re.findall(rb"GLIBC_2\.(\d+)", data)]
    return (2, max(versions)) if versions else None


def _facts(
    base: BaseImage, pythons: dict[str, tuple[int, int]], glibc: tuple[int, int] | None, musl: bool
) -> BaseFacts:
    label = base.name or base.digest[:19]
    for folder in _PYTHON_DIRS:
        found = {n: v for n, v in pythons.items() if n.startswith(folder + "/")}
        if found:
            name = max(found, key=lambda n: found[n])
            break
    else:
        raise ImageError(
            f"base image {label} has no python3.X in /usr/local/bin or /usr/bin; use a base"
            " image with Python 3 installed"
        )
    if glibc is None and not musl:
        raise ImageError(f"base image {label} has neither glibc nor musl; wheels cannot run there")
    libc, version = ("glibc", glibc) if glibc else ("musl", (1, 2))
    arch = base.config.get("architecture") or _host_architecture()
    return BaseFacts(arch, "/" + name, pythons[name], libc, version)


# --- assembling the image -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Assembled:
    config: bytes
    layers: tuple[Blob, ...]
    base_layers: int

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config)

    @property
    def manifest(self) -> bytes:
        return canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {
                    "mediaType": MEDIA_CONFIG,
                    "digest": self.config_digest,
                    "size": len(self.config),
                },
                "layers": [
                    {"mediaType": b.media_type, "digest": b.digest, "size": b.size}
                    for b in self.layers
                ],
            }
        )


def write_archive(
    out: Path, image: _Assembled, tags: list[str], epoch: int, *, skip_base_layers: bool = False
) -> None:
    """One tar that is a docker-archive and an OCI image layout at once (atomic write).

    ``skip_base_layers`` leaves the base's blobs out: only for loading into the engine the base
    came from, which never opens a layer file whose chain it already has.
    """
    manifest = image.manifest
    blobs: dict[str, tuple[int, Callable[[], IO[bytes]], Blob | None]] = {}
    for index, layer in enumerate(image.layers):
        if not (skip_base_layers and index < image.base_layers):
            blobs[_hex(layer.digest)] = (layer.size, layer.open, layer)
    for data in (image.config, manifest):
        blobs[hashlib.sha256(data).hexdigest()] = (len(data), partial(io.BytesIO, data), None)
    meta = {
        "index.json": _index(manifest, tags),
        "manifest.json": canonical_json(
            [
                {
                    "Config": f"blobs/sha256/{_hex(image.config_digest)}",
                    "RepoTags": tags,
                    "Layers": [f"blobs/sha256/{_hex(b.digest)}" for b in image.layers],
                }
            ]
        ),
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as raw:
            _write_archive_tar(raw, blobs, meta, epoch)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_archive_tar(
    raw: IO[bytes],
    blobs: Mapping[str, tuple[int, Callable[[], IO[bytes]], Blob | None]],
    meta: Mapping[str, bytes],
    epoch: int,
) -> None:
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for folder in ("blobs", "blobs/sha256"):
            archive.addfile(_tarinfo(TarEntry(folder, "dir", mode=0o755), epoch))
        for name in sorted(blobs):
            size, opener, blob = blobs[name]
            info = _tarinfo(TarEntry(f"blobs/sha256/{name}"), epoch, size)
            with opener() as stream:
                checked = _Checked(stream) if blob is not None and not blob.trusted else stream
                archive.addfile(info, checked)
            if isinstance(checked, _Checked) and checked.digest != f"sha256:{name}":
                raise ImageError(f"base layer blob {name[:12]} is corrupt (digest mismatch)")
        for name in sorted(meta):
            info = _tarinfo(TarEntry(name), epoch, len(meta[name]))
            archive.addfile(info, io.BytesIO(meta[name]))


class _Checked:
    """A reader that hashes what is read through it (verifies base layers while copying)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream, self._hash = stream, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        return data

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _index(manifest: bytes, tags: list[str]) -> bytes:
    descriptor = {"mediaType": MEDIA_MANIFEST, "digest": sha256_digest(manifest)}
    descriptor["size"] = len(manifest)
    entries = [
        {
            **descriptor,
            "annotations": {
                "io.containerd.image.name": tag,
                "org.opencontainers.image.ref.name": tag.rsplit(":", 1)[-1],
            },
        }
        for tag in tags
    ] or [descriptor]
    return canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries})


# --- the product entry point --------------------------------------------------------------------
@dataclass
class ReproducibleImage:
    """What a reproducible build produced: image.ImageInfo's fields plus digests and paths."""

    id: str  # "sha256:<config digest>": the image ID an engine reports
    tags: list[str]
    size: int  # uncompressed bytes of all layers
    version: str = ""  # "v<N>"
    commit: str = ""
    created: str = ""
    name: str = ""
    manifest_digest: str = ""
    base: str = ""
    base_digest: str = ""
    layers: list[str] = field(default_factory=list)
    archive: Path | None = None
    loaded: bool = False

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["archive"] = str(self.archive) if self.archive else None
        data["reproducible"] = True
        return data


def build_reproducible(
    pkg: Any,
    version: Any,
    *,
    base_image: str | Path | BaseImage,
    parameters: dict[str, Any] | None = None,
    output: Path | None = None,
    engine: Any = None,
    wheelhouse: Path | None = None,
    on_event: OnEvent = ignore,
    cache_dir: Path | None = None,
) -> ReproducibleImage:
    """Assemble the image of one version; write ``output`` and/or load it into ``engine``.

    The same (package files, lock, parameters, base, version commit) always gives the same
    image ID and manifest digest, with or without an engine and with no build cache at all.
    ``cache_dir`` (default: ``DSOPS_CACHE_DIR`` or ~/.cache/dsops) only makes it faster.
    """
    cache = Path(cache_dir) if cache_dir is not None else wh.cache_dir()
    wheelhouse = wheelhouse or wh.default_wheelhouse(cache)
    epoch = int(version.epoch)
    stage(on_event, "Reading the base image")
    if isinstance(base_image, BaseImage):
        base = base_image  # read (and checked) already, before the version was committed
    else:
        base = read_base(base_image, engine=engine, cache=cache, on_event=on_event)
    facts = inspect_base(base, cache)
    target = facts.target()
    shown = base.name or ("rootfs" if isinstance(base_image, BaseImage) else base_image)
    log(on_event, f"base {shown} ({base.digest[:19]}): {target}")
    stage(on_event, "Fetching wheels")
    requirements = wh.parse_lock(pkg.files.get("requirements.lock", b""), target)
    wheels = wh.ensure_wheels(requirements, target, wheelhouse, on_event)
    stage(on_event, "Assembling layers")
    with tempfile.TemporaryDirectory(prefix="dsops-image-") as tmp:
        ours = _our_layers(pkg, wheels, epoch, cache, Path(tmp), on_event)
        config = image_config(base, facts, pkg, version, parameters, ours, len(wheels))
        image = _Assembled(canonical_json(config), base.layers + ours, len(base.layers))
        tags = image_tags(pkg.name, version)
        if output is not None:
            stage(on_event, f"Writing {output}")
            write_archive(Path(output), image, tags, epoch)
        loaded = False
        if engine is not None:
            stage(on_event, "Loading the image into Docker")
            load_into_engine(engine, image, tags, epoch, base, output, Path(tmp))
            loaded = True
    info = _describe(image, pkg, version, base, tags, epoch, output, loaded)
    result(on_event, f"image {info.short_id} ({', '.join(tags)})", **info.to_json())
    return info


def _our_layers(
    pkg: Any, wheels: list[Path], epoch: int, cache: Path, tmp: Path, on_event: OnEvent
) -> tuple[Blob, ...]:
    layers = []
    if wheels:
        layers.append(deps_layer(wheels, epoch, cache, on_event))
    progress(on_event, 0.9, "code layer")
    layers.append(write_layer(code_layer(pkg), epoch, tmp))
    return tuple(layers)


def deps_layer(wheels: list[Path], epoch: int, cache: Path, on_event: OnEvent = ignore) -> Blob:
    """site-packages of the wheels as one gzip layer, cached by the wheels' content.

    mtimes are the wheel members' own times clamped to ``epoch``, so an unchanged lock gives the
    same layer in every later version (shared by engines and registries).
    """
    with wh.installed_files(wheels) as files:
        newest = max((f.mtime for f in files), default=epoch)
        clamp = min(epoch, newest)
        key = _deps_key(wheels, clamp)
        memo = cache / "layers" / f"deps-{key}.json"
        hit = _cached_blob(memo, cache)
        if hit is not None:
            log(on_event, f"dependency layer {hit.digest[:19]} from the cache")
            return hit
        spec = LayerSpec()
        for item in files:
            spec.add(TarEntry(item.path, "file", item.read, mode=item.mode, mtime=item.mtime))
        progress(on_event, 0.1, f"site-packages: {len(files)} files from {len(wheels)} wheels")
        blob = write_layer(spec, clamp, cache / "blobs" / "sha256")
    from dsops_jupyter.fsutil import atomic_write

    atomic_write(memo, canonical_json({k: getattr(blob, k) for k in _BLOB_FIELDS}))
    return blob


_BLOB_FIELDS = ("digest", "size", "media_type", "diff_id", "diff_size")


def _deps_key(wheels: list[Path], clamp: int) -> str:
    recipe = {
        "layout": LAYOUT_VERSION,
        "gzip": [GZIP_LEVEL, zlib.ZLIB_RUNTIME_VERSION],
        "epoch": clamp,
        "prefix": wh.SITE_PACKAGES,
        "wheels": [[w.name, wh.file_digest(w)] for w in wheels],
    }
    return hashlib.sha256(canonical_json(recipe)).hexdigest()


def _cached_blob(memo: Path, cache: Path) -> Blob | None:
    if not memo.is_file():
        return None
    data = json.loads(memo.read_text())
    path = cache / "blobs" / "sha256" / _hex(data["digest"])
    if not path.is_file() or path.stat().st_size != data["size"]:
        return None
    return Blob(path=path, **data)


def code_layer(pkg: Any) -> LayerSpec:
    """/opt/dsops holds the generated package (minus its recipe); /work is the run user's."""
    spec = LayerSpec()
    spec.add_dir(APP_DIR)
    for name in sorted(pkg.files):
        if name in ("Dockerfile", ".dockerignore"):
            continue
        spec.add_file(f"{APP_DIR}/{name}", pkg.files[name])
    spec.add_dir(WORK_DIR, uid=RUN_USER, gid=RUN_USER)
    return spec


def image_config(
    base: BaseImage,
    facts: BaseFacts,
    pkg: Any,
    version: Any,
    parameters: Mapping[str, Any] | None,
    ours: tuple[Blob, ...],
    wheel_count: int,
) -> dict[str, Any]:
    """The OCI image config: base settings + our entrypoint, env, user, labels and history."""
    created = rfc3339(int(version.epoch))
    inherited = dict(base.config.get("config") or {})
    env = _merge_env(
        inherited.get("Env") or [],
        {
            "PATH": _env_value(inherited.get("Env") or [], "PATH") or DEFAULT_PATH,
            "PYTHONPATH": f"/{wh.SITE_PACKAGES}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "HOME": f"/{WORK_DIR}",
        },
    )
    labels = dict(inherited.get("Labels") or {})
    labels.update(image_labels(pkg, version, base))
    inherited.update(
        {
            "Env": env,
            "Entrypoint": [facts.python, f"/{APP_DIR}/{pkg.name}.py"],
            "Cmd": cli_args(parameters),
            "User": f"{RUN_USER}:{RUN_USER}",
            "WorkingDir": f"/{WORK_DIR}",
            "Labels": labels,
        }
    )
    history = _base_history(base) + [
        {
            "created": created,
            "created_by": f"dsops: {wheel_count} locked wheels -> /{wh.SITE_PACKAGES}",
            "comment": "dsops-jupyter reproducible build",
        }
        for _ in ours[:-1]
    ]
    history.append(
        {
            "created": created,
            "created_by": f"dsops: generated package {pkg.name} -> /{APP_DIR}",
            "comment": "dsops-jupyter reproducible build",
        }
    )
    config = {
        "architecture": base.config.get("architecture") or _host_architecture(),
        "os": base.config.get("os") or "linux",
        "created": created,
        "config": inherited,
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in base.layers + ours]},
        "history": history,
    }
    for key in ("variant", "os.version", "os.features"):
        if key in base.config:
            config[key] = base.config[key]
    return config


def image_labels(pkg: Any, version: Any, base: BaseImage) -> dict[str, str]:
    """The Dockerfile build's labels (one source of truth), plus the base's digest; an empty
    ``source`` (no origin remote) is left out rather than recorded as ""."""
    labels = recipe_labels(pkg, version, base.name)
    labels["org.opencontainers.image.base.digest"] = base.digest
    return {key: value for key, value in labels.items() if value}


def _env_value(env: list[str], key: str) -> str:
    return next((item.split("=", 1)[1] for item in env if item.startswith(key + "=")), "")


def _merge_env(env: list[str], updates: Mapping[str, str]) -> list[str]:
    merged = [item for item in env if item.split("=", 1)[0] not in updates]
    return merged + [f"{key}={value}" for key, value in updates.items()]


def _base_history(base: BaseImage) -> list[dict[str, Any]]:
    """The base's history, or one entry per layer when it has none that matches its layers."""
    history = list(base.config.get("history") or [])
    if sum(not h.get("empty_layer") for h in history) == len(base.layers):
        return history
    created = base.config.get("created") or rfc3339(0)
    return [{"created": created, "created_by": "base layer"} for _ in base.layers]


def load_into_engine(
    client: Any,
    image: _Assembled,
    tags: list[str],
    epoch: int,
    base: BaseImage,
    output: Path | None,
    tmp: Path,
) -> None:
    """``docker load`` the archive and check the engine agrees on the image ID.

    When the base came from this engine, its layers are left out of what is sent (the classic
    image store never opens a layer file whose chain it has); an engine that wants them anyway
    (containerd image store) gets the complete archive on a second try.
    """
    from docker.errors import DockerException

    complete = Path(output) if output is not None else tmp / "image.tar"
    try:
        if base.in_engine:
            try:
                _load(client, _archive(tmp / "thin.tar", image, tags, epoch, thin=True))
            except DockerException:
                _load(client, _ensure_archive(complete, image, tags, epoch, output))
        else:
            _load(client, _ensure_archive(complete, image, tags, epoch, output))
        loaded = client.images.get(tags[0])
        for tag in tags[1:]:
            repo, _, name = tag.rpartition(":")
            loaded.tag(repo, name)
    except DockerException as err:
        raise ImageError(f"docker load of {tags[0]} failed: {err}") from err
    # The classic store names images by config digest, the containerd store by manifest digest.
    if loaded.id not in (image.config_digest, sha256_digest(image.manifest)):
        raise ImageError(f"engine reports {loaded.id} for {tags[0]}, not {image.config_digest}")


def _archive(path: Path, image: _Assembled, tags: list[str], epoch: int, thin: bool) -> Path:
    write_archive(path, image, tags, epoch, skip_base_layers=thin)
    return path


def _ensure_archive(
    path: Path, image: _Assembled, tags: list[str], epoch: int, output: Path | None
) -> Path:
    """The complete archive: ``output`` when it was already written, else a temp file."""
    return path if output is not None else _archive(path, image, tags, epoch, thin=False)


def _load(client: Any, archive: Path) -> None:
    with archive.open("rb") as handle:
        client.images.load(handle)


def _describe(
    image: _Assembled,
    pkg: Any,
    version: Any,
    base: BaseImage,
    tags: list[str],
    epoch: int,
    output: Path | None,
    loaded: bool,
) -> ReproducibleImage:
    return ReproducibleImage(
        id=image.config_digest,
        tags=tags,
        size=sum(b.diff_size or b.size for b in image.layers),
        version=f"v{version.number}",
        commit=version.commit,
        created=rfc3339(epoch),
        name=pkg.name,
        manifest_digest=sha256_digest(image.manifest),
        base=base.name,
        base_digest=base.digest,
        layers=[b.digest for b in image.layers],
        archive=Path(output) if output is not None else None,
        loaded=loaded,
    )
