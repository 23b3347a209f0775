"""Base-image readers: docker-archive, OCI layout (folder or tar), rootfs tarball, or the engine.

Every base becomes the same `BaseImage`: its config bytes as found and its layers as uncompressed
tars read in place (or inflated once into the cache), so one base read from any of these forms
gives the same blobs, hence the same manifest digest on top of it.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from dsops_jupyter.errors import ImageError
from dsops_jupyter.events import OnEvent, ignore
from dsops_jupyter.fsutil import atomic_stream
from dsops_jupyter.image import rfc3339
from dsops_jupyter.oci import daemon
from dsops_jupyter.oci.archive import Assembled, write_archive
from dsops_jupyter.oci.blob import (
    CHUNK,
    DOCKER_MANIFEST_LIST,
    MEDIA_INDEX,
    MEDIA_LAYER,
    Blob,
    Hashing,
    Window,
    canonical_json,
    file_blob,
    hex_of,
    host_architecture,
    sha256_digest,
)
from dsops_jupyter.oci.layer import LayerSpec, write_layer

if TYPE_CHECKING:
    from docker import DockerClient

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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

    @property
    def label(self) -> str:
        """How messages name the base: its tag, else its digest."""
        return self.name or self.digest[:19]


class _Files:
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
                    self._members[normalize_member(member.name)] = member

    def names(self) -> set[str]:
        if self._members:
            return set(self._members)
        return {p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()}

    def _member(self, name: str, hops: int = 0) -> tarfile.TarInfo:
        member = self._members.get(normalize_member(name))
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


def normalize_member(name: str) -> str:
    """A tar member name without leading ``./`` or ``/``."""
    return PurePosixPath("/" + name).as_posix().lstrip("/")


def read_base(
    ref: str | Path, *, engine: DockerClient | None = None, cache: Path, on_event: OnEvent = ignore
) -> BaseImage:
    """A base image from a path (docker-archive, OCI layout dir/tar, rootfs tar) or an engine."""
    path = Path(ref).expanduser()
    if path.exists():
        return read_base_path(path, cache)
    if engine is None:
        raise ImageError(
            f"base image {ref} is not a file and no Docker engine runs; pass a docker-archive"
            " or OCI layout path as the base, or start Docker"
        )
    archive, image_id, tags = daemon.save_base(engine, str(ref), cache / "bases", on_event)
    base = read_base_path(archive, cache)
    if base.digest != image_id:
        raise ImageError(f"docker save of {ref} gave config {base.digest}, not {image_id}")
    return replace(base, name=_pick_name(tags, str(ref)), in_engine=True)


def read_base_path(path: Path, cache: Path, name: str = "") -> BaseImage:
    """Read a docker-archive, an OCI layout (dir or tar) or a plain rootfs tarball."""
    if path.is_dir():
        return _oci_base(_Files(path), cache, name)
    files = _Files(path)
    names = files.names()
    if "manifest.json" in names:
        return _docker_archive_base(files, cache, name)
    if {"index.json", "oci-layout"} <= names:
        return _oci_base(files, cache, name)
    return _rootfs_base(path)


def _pick_name(tags: Iterable[str], wanted: str) -> str:
    """The tag recorded as base.name: the one asked for if the image has it, else the first."""
    tags = sorted(tags)
    for candidate in (wanted, f"{wanted}:latest"):
        if candidate in tags:
            return candidate
    return tags[0] if tags else ""


def _docker_archive_base(files: _Files, cache: Path, wanted: str) -> BaseImage:
    items = files.json("manifest.json")
    if not items:
        raise ImageError(f"{files.path} holds no image (empty manifest.json)")
    item = next((i for i in items if wanted and wanted in (i.get("RepoTags") or [])), items[0])
    config_bytes = files.read(item["Config"])
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(item["Layers"]):
        raise ImageError(f"{files.path}: manifest.json and config disagree on the layer count")
    layers = tuple(
        _layer_blob(files, name, diff_id, cache)
        for name, diff_id in zip(item["Layers"], diff_ids, strict=True)
    )
    tag = _pick_name(item.get("RepoTags") or [], wanted)
    return BaseImage(tag, config_bytes, layers)


def _oci_base(files: _Files, cache: Path, wanted: str) -> BaseImage:
    manifest, tag = _oci_manifest(files, files.json("index.json"), wanted)
    config_bytes = files.read(f"blobs/sha256/{hex_of(manifest['config']['digest'])}")
    diff_ids = json.loads(config_bytes).get("rootfs", {}).get("diff_ids", [])
    if len(diff_ids) != len(manifest.get("layers", [])):
        raise ImageError(f"{files.path}: manifest and config disagree on the layer count")
    layers = tuple(
        _layer_blob(files, f"blobs/sha256/{hex_of(desc['digest'])}", diff_id, cache)
        for desc, diff_id in zip(manifest["layers"], diff_ids, strict=True)
    )
    return BaseImage(tag, config_bytes, layers)


def _oci_manifest(files: _Files, index: dict[str, Any], wanted: str) -> tuple[dict, str]:
    """Follow index -> (nested index for this platform) -> manifest."""
    descriptors = index.get("manifests") or []
    if not descriptors:
        raise ImageError(f"{files.path}: index.json lists no image")

    def ref(desc: dict[str, Any]) -> str:
        notes = desc.get("annotations") or {}
        return notes.get("io.containerd.image.name") or notes.get(
            "org.opencontainers.image.ref.name", ""
        )

    chosen = next((d for d in descriptors if wanted and ref(d) == wanted), descriptors[0])
    tag = _pick_name([ref(d) for d in descriptors if ":" in ref(d)], wanted)
    body = files.json(f"blobs/sha256/{hex_of(chosen['digest'])}")
    if body.get("mediaType") in (MEDIA_INDEX, DOCKER_MANIFEST_LIST) or "manifests" in body:
        arch = host_architecture()
        nested = [d for d in body["manifests"] if d.get("platform", {}).get("architecture") == arch]
        if not nested:
            raise ImageError(f"{files.path}: no {arch} image in the multi-platform index")
        body = files.json(f"blobs/sha256/{hex_of(nested[0]['digest'])}")
    return body, tag


def _layer_blob(files: _Files, name: str, diff_id: str, cache: Path) -> Blob:
    """A base layer as an uncompressed tar: in place if it is one, else inflated into the cache."""
    path, offset, size = files.locate(name)
    with path.open("rb") as handle:
        handle.seek(offset)
        magic = handle.read(4)
    if magic[:2] == b"\x1f\x8b":
        return _inflated(path, offset, size, diff_id, cache)
    if magic == b"\x28\xb5\x2f\xfd":
        raise ImageError(f"layer {name} of {files.path} is zstd-compressed; not supported yet")
    return Blob(diff_id, size, MEDIA_LAYER, path, offset, diff_id, size, trusted=False)


def _inflated(path: Path, offset: int, size: int, diff_id: str, cache: Path) -> Blob:
    """A gzip layer inflated once into the cache, checked against its diff_id before it lands."""
    target = cache / "layers" / f"{hex_of(diff_id)}.tar"
    if not target.is_file():
        with atomic_stream(target) as out, Window(path, offset, size) as raw:
            inflated = Hashing(out)
            shutil.copyfileobj(gzip.GzipFile(fileobj=io.BufferedReader(raw)), inflated, CHUNK)
            if inflated.digest != diff_id:
                raise ImageError(f"base layer of {path} does not match its diff_id {diff_id}")
    return file_blob(target, MEDIA_LAYER, diff_id)


def _rootfs_base(path: Path) -> BaseImage:
    """A bare rootfs tarball (debootstrap, ``docker export``) as a one-layer base image."""
    _check_root_traversable(path)
    layer = file_blob(path, MEDIA_LAYER)
    created = rfc3339(0)
    config = {
        "architecture": host_architecture(),
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


def base_history(base: BaseImage) -> list[dict[str, Any]]:
    """The base's history, or one entry per layer when it has none that matches its layers."""
    history = list(base.config.get("history") or [])
    if sum(not h.get("empty_layer") for h in history) == len(base.layers):
        return history
    created = base.config.get("created") or rfc3339(0)
    return [{"created": created, "created_by": "base layer"} for _ in base.layers]


def base_archive(base: BaseImage, out: Path, tag: str) -> Path:
    """Write a base image as a loadable archive (how tests give engines one identical base)."""
    image = Assembled(base.config_bytes, base.layers, len(base.layers))
    write_archive(out, image, [tag] if tag else [], 0)
    return out


def extend_base(base: BaseImage, extra: LayerSpec, directory: Path, created_by: str) -> BaseImage:
    """The base plus one uncompressed layer (a CA bundle, a config file) as a new base."""
    layer = write_layer(extra, 0, directory, compress=False)
    config = base.config
    config.setdefault("rootfs", {"type": "layers"}).setdefault("diff_ids", []).append(layer.diff_id)
    config["history"] = [*base_history(base), {"created": rfc3339(0), "created_by": created_by}]
    return BaseImage(base.name, canonical_json(config), (*base.layers, layer))
