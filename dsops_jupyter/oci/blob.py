"""Content-addressed bytes: digests, the one hashing stream, canonical JSON and blob descriptors.

Every digest dsops computes (layers while they are written, base layers while they are copied or
inflated, wheels and files for cache keys) goes through `Hashing`, so there is one place that
decides what "the sha256 of these bytes" means.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from dsops_jupyter.errors import ImageError

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
CHUNK = 1 << 20


def canonical_json(value: Any) -> bytes:
    """The one JSON spelling of a value: same data, same bytes, same digest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest (the blob's file name); other digests refused."""
    algorithm, _, value = digest.partition(":")
    if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ImageError(f"unsupported digest {digest!r}: only sha256 is handled")
    return value


def host_architecture() -> str:
    """This machine as an OCI ``architecture`` (the default of a base that names none)."""
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


class Hashing:
    """Hashes and counts the bytes passing through, in either direction: written on to ``raw``
    (a layer being written) or read from it (a base layer being copied)."""

    def __init__(self, raw: Any = None) -> None:
        self.raw, self.hash, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self._count(data)
        if self.raw is not None:
            self.raw.write(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._count(self.raw.read(size))

    def _count(self, data: bytes) -> bytes:
        self.hash.update(data)
        self.size += len(data)
        return data

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        if self.raw is not None:
            self.raw.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, read in chunks."""
    with path.open("rb") as handle:
        reader = Hashing(handle)
        while reader.read(CHUNK):
            pass
    return reader.digest


class Window(io.RawIOBase):
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
        return io.BufferedReader(Window(self.path, self.offset, self.size), CHUNK)


def file_blob(path: Path, media_type: str, digest: str | None = None) -> Blob:
    """A whole file as an uncompressed layer blob (its digest is its diff_id)."""
    size = path.stat().st_size
    digest = digest or file_digest(path)
    return Blob(digest, size, media_type, path, diff_id=digest, diff_size=size)
