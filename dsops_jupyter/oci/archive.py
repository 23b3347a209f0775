"""The image archive writer: one tar that is a docker-archive and an OCI image layout at once.

``manifest.json`` is what ``docker load`` reads; ``oci-layout``, ``index.json`` and
``blobs/sha256`` are the OCI layout (umoci, skopeo, crane read it). Config, manifest and index are
canonical JSON; the config digest is the image ID an engine reports after loading it.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

from dsops_jupyter.errors import ImageError
from dsops_jupyter.fsutil import atomic_stream
from dsops_jupyter.oci.blob import (
    MEDIA_CONFIG,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    Blob,
    Hashing,
    canonical_json,
    hex_of,
    sha256_digest,
)
from dsops_jupyter.oci.layer import TarEntry, tarinfo


@dataclass(frozen=True)
class Assembled:
    """An image ready to write: config bytes and layers (the first ``base_layers`` the base's)."""

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


# name in blobs/sha256 -> (size, opener, the layer when its digest must be checked on copy)
_Blobs = Mapping[str, tuple[int, Callable[[], IO[bytes]], Blob | None]]


def write_archive(
    out: Path, image: Assembled, tags: list[str], epoch: int, *, skip_layers: int = 0
) -> None:
    """Write the archive of ``image`` to ``out`` (atomically), named by ``tags``.

    ``skip_layers`` leaves the first layers' blobs out: only for loading into an engine that
    holds them already (the classic image store never opens a layer file whose chain it has).
    """
    manifest = image.manifest
    blobs: dict[str, tuple[int, Callable[[], IO[bytes]], Blob | None]] = {}
    for index, layer in enumerate(image.layers):
        if index >= skip_layers:
            blobs[hex_of(layer.digest)] = (layer.size, layer.open, layer)
    for data in (image.config, manifest):
        blobs[hex_of(sha256_digest(data))] = (len(data), partial(io.BytesIO, data), None)
    meta = {
        "index.json": _index(manifest, tags),
        "manifest.json": canonical_json(
            [
                {
                    "Config": f"blobs/sha256/{hex_of(image.config_digest)}",
                    "RepoTags": tags,
                    "Layers": [f"blobs/sha256/{hex_of(b.digest)}" for b in image.layers],
                }
            ]
        ),
        "oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}),
    }
    with atomic_stream(out) as raw:
        _write_archive_tar(raw, blobs, meta, epoch)


def _write_archive_tar(
    raw: IO[bytes], blobs: _Blobs, meta: Mapping[str, bytes], epoch: int
) -> None:
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for folder in ("blobs", "blobs/sha256"):
            archive.addfile(tarinfo(TarEntry(folder, "dir", mode=0o755), epoch))
        for name in sorted(blobs):
            size, opener, blob = blobs[name]
            info = tarinfo(TarEntry(f"blobs/sha256/{name}"), epoch, size)
            with opener() as stream:
                checked = Hashing(stream) if blob is not None and not blob.trusted else None
                archive.addfile(info, checked or stream)
            if checked is not None and checked.digest != f"sha256:{name}":
                raise ImageError(f"base layer blob {name[:12]} is corrupt (digest mismatch)")
        for name in sorted(meta):
            info = tarinfo(TarEntry(name), epoch, len(meta[name]))
            archive.addfile(info, io.BytesIO(meta[name]))


def _index(manifest: bytes, tags: list[str]) -> bytes:
    descriptor: dict[str, Any] = {
        "mediaType": MEDIA_MANIFEST,
        "digest": sha256_digest(manifest),
        "size": len(manifest),
    }
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
