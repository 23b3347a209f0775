"""The dsops image policy: which files go in which layer, and the config that runs the script.

The image is ``[base layers, unchanged] + [site-packages of the locked wheels] + [the generated
package]``; the entrypoint, user, work dir and labels match the Dockerfile recipe's, so both
builders give images that run the same way.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsops_jupyter import wheelhouse as wh
from dsops_jupyter.events import OnEvent, ignore, log
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.image import image_labels as recipe_labels
from dsops_jupyter.image import rfc3339
from dsops_jupyter.model import GeneratedPackage, Version
from dsops_jupyter.oci.blob import (
    Blob,
    canonical_json,
    file_digest,
    hex_of,
    host_architecture,
    sha256_digest,
)
from dsops_jupyter.oci.facts import BaseFacts
from dsops_jupyter.oci.layer import GZIP_LEVEL, LayerSpec, TarEntry, write_layer
from dsops_jupyter.oci.source import DEFAULT_PATH, BaseImage, base_history
from dsops_jupyter.recipe import cli_args

RUN_USER = 10001  # the Dockerfile recipe's user; numeric, so the base needs no passwd entry
APP_DIR = "opt/dsops"  # where the Dockerfile recipe puts the script too
WORK_DIR = "work"
LAYOUT_VERSION = 2  # bump when the layout of generated layers changes (invalidates caches)
_BLOB_FIELDS = ("digest", "size", "media_type", "diff_id", "diff_size")


def deps_layer(wheels: list[Path], epoch: int, cache: Path, on_event: OnEvent = ignore) -> Blob:
    """site-packages of the wheels as one gzip layer, cached by the wheels' content.

    mtimes are the wheel members' own times clamped to ``epoch``, so an unchanged lock gives the
    same layer in every later version (shared by engines and registries). A cache hit opens no
    wheel: the newest member time of a set of wheels is cached by their digests too.
    """
    digests = [[w.name, hex_of(file_digest(w))] for w in wheels]
    newest = _newest_member(wheels, digests, cache)
    clamp = min(epoch, newest if newest is not None else epoch)
    memo = cache / "layers" / f"deps-{_deps_key(digests, clamp)}.json"
    hit = _cached_blob(memo, cache)
    if hit is not None:
        log(on_event, f"dependency layer {hit.digest[:19]} from the cache")
        return hit
    with wh.installed_files(wheels) as files:
        spec = LayerSpec()
        for item in files:
            spec.add(TarEntry(item.path, "file", item.read, mode=item.mode, mtime=item.mtime))
        log(on_event, f"site-packages: {len(files)} files from {len(wheels)} wheels")
        blob = write_layer(spec, clamp, cache / "blobs" / "sha256")
    atomic_write(memo, canonical_json({k: getattr(blob, k) for k in _BLOB_FIELDS}))
    return blob


def _newest_member(wheels: list[Path], digests: list[list[str]], cache: Path) -> int | None:
    """The newest mtime among the files the wheels install (None: they install none)."""
    key = hex_of(sha256_digest(canonical_json({"layout": LAYOUT_VERSION, "wheels": digests})))
    memo = cache / "layers" / f"newest-{key}.json"
    if memo.is_file():
        return json.loads(memo.read_text())["newest"]
    with wh.installed_files(wheels) as files:
        newest = max((f.mtime for f in files), default=None)
    atomic_write(memo, canonical_json({"newest": newest}))
    return newest


def _deps_key(digests: list[list[str]], clamp: int) -> str:
    recipe = {
        "layout": LAYOUT_VERSION,
        "gzip": [GZIP_LEVEL, zlib.ZLIB_RUNTIME_VERSION],
        "epoch": clamp,
        "prefix": wh.SITE_PACKAGES,
        "wheels": digests,
    }
    return hex_of(sha256_digest(canonical_json(recipe)))


def _cached_blob(memo: Path, cache: Path) -> Blob | None:
    if not memo.is_file():
        return None
    data = json.loads(memo.read_text())
    path = cache / "blobs" / "sha256" / hex_of(data["digest"])
    if not path.is_file() or path.stat().st_size != data["size"]:
        return None
    return Blob(path=path, **data)


def code_layer(pkg: GeneratedPackage, python: str) -> LayerSpec:
    """/opt/dsops holds the generated package (minus its recipe); /work is the run user's.

    ``/opt/dsops/bin/python`` (first on PATH) is the base's ``python``: exported pipelines run
    ``python /opt/dsops/<name>.py`` as the Dockerfile image's venv allows, and Debian's
    python3 packages install no ``python``."""
    spec = LayerSpec()
    spec.add_dir(APP_DIR)
    spec.add(TarEntry(f"{APP_DIR}/bin/python", "symlink", mode=0o777, linkname=python))
    for name in sorted(pkg.files):
        if name in ("Dockerfile", ".dockerignore"):
            continue
        spec.add_file(f"{APP_DIR}/{name}", pkg.files[name])
    spec.add_dir(WORK_DIR, uid=RUN_USER, gid=RUN_USER)
    return spec


def image_config(
    base: BaseImage,
    facts: BaseFacts,
    pkg: GeneratedPackage,
    version: Version,
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
            "PATH": f"/{APP_DIR}/bin:"
            + (_env_value(inherited.get("Env") or [], "PATH") or DEFAULT_PATH),
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
    config = {
        "architecture": base.config.get("architecture") or host_architecture(),
        "os": base.config.get("os") or "linux",
        "created": created,
        "config": inherited,
        "rootfs": {"type": "layers", "diff_ids": [b.diff_id for b in base.layers + ours]},
        "history": base_history(base) + _our_history(created, pkg.name, len(ours), wheel_count),
    }
    for key in ("variant", "os.version", "os.features"):
        if key in base.config:
            config[key] = base.config[key]
    return config


def _our_history(created: str, name: str, layers: int, wheel_count: int) -> list[dict[str, str]]:
    """One entry per layer of ours: the dependency layer (when there are wheels), then the code."""
    comment = "dsops-jupyter reproducible build"
    deps = f"dsops: {wheel_count} locked wheels -> /{wh.SITE_PACKAGES}"
    code = f"dsops: generated package {name} -> /{APP_DIR}"
    entries = [deps] * (layers - 1) + [code]
    return [{"created": created, "created_by": text, "comment": comment} for text in entries]


def image_labels(pkg: GeneratedPackage, version: Version, base: BaseImage) -> dict[str, str]:
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
