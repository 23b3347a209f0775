"""The deterministic builder: read the base, fetch the wheels, assemble, write and/or load.

Build (this module) and publish (`archive`, `daemon`) are separate as in ko: the image exists as
blobs first; writing it to a file and loading it into an engine are two ways of handing it over.
"""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsops_jupyter import wheelhouse as wh
from dsops_jupyter.errors import BaseImageError, ImageError
from dsops_jupyter.events import OnEvent, ignore, log, result, stage
from dsops_jupyter.image import BuildSteps, image_tags, rfc3339
from dsops_jupyter.model import GeneratedPackage, ImageResult, Version
from dsops_jupyter.oci.archive import Assembled, write_archive
from dsops_jupyter.oci.blob import canonical_json, sha256_digest
from dsops_jupyter.oci.daemon import load_into_engine
from dsops_jupyter.oci.facts import inspect_base
from dsops_jupyter.oci.layer import write_layer
from dsops_jupyter.oci.policy import code_layer, deps_layer, image_config
from dsops_jupyter.oci.source import BaseImage, read_base, read_base_path
from dsops_jupyter.recipe import recipe_base_image

if TYPE_CHECKING:
    from docker import DockerClient


@dataclass(frozen=True)
class Assembler:
    """The default `ImageBuilder` (``--builder assemble``): the base is ``base`` (a file read
    already) or else the recipe's FROM (read from the engine once per image ID); ``output`` is
    written, ``engine`` (if any) loads it, so a smoke run and `dsops images` find it there."""

    base: BaseImage | None = None
    output: Path | None = None
    engine: DockerClient | None = None

    def build(
        self,
        pkg: GeneratedPackage,
        version: Version,
        parameters: dict[str, Any],
        on_event: OnEvent,
    ) -> ImageResult:
        stage(on_event, f"Building image {image_tags(pkg.name, version)[0]} (layer assembler)")
        return build_reproducible(
            pkg,
            version,
            base_image=self.base or recipe_base_image(pkg.files["Dockerfile"]),
            parameters=parameters or None,
            output=self.output,
            engine=self.engine,
            on_event=on_event,
        )


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


def build_reproducible(
    pkg: GeneratedPackage,
    version: Version,
    *,
    base_image: str | Path | BaseImage,
    parameters: dict[str, Any] | None = None,
    output: Path | None = None,
    engine: DockerClient | None = None,
    wheelhouse: Path | None = None,
    on_event: OnEvent = ignore,
    cache_dir: Path | None = None,
) -> ImageResult:
    """Assemble the image of one version; write ``output`` and/or load it into ``engine``.

    The same (package files, lock, parameters, base, version commit) always gives the same
    image ID and manifest digest, with or without an engine and with no build cache at all.
    ``cache_dir`` (default: ``DSOPS_CACHE_DIR`` or ~/.cache/dsops) only makes it faster.
    """
    cache = Path(cache_dir) if cache_dir is not None else wh.cache_dir()
    wheelhouse = wheelhouse or wh.default_wheelhouse(cache)
    epoch = int(version.epoch)
    steps = BuildSteps(on_event, 4 + (output is not None) + (engine is not None))
    steps.next("reading the base image")
    if isinstance(base_image, BaseImage):
        base = base_image  # read (and checked) already, before the version was committed
    else:
        base = read_base(base_image, engine=engine, cache=cache, on_event=on_event)
    facts = inspect_base(base, cache)
    target = facts.target()
    shown = base.name or ("rootfs" if isinstance(base_image, BaseImage) else base_image)
    log(on_event, f"base {shown} ({base.digest[:19]}): {target}")
    steps.next("fetching wheels")
    requirements = wh.parse_lock(pkg.files.get("requirements.lock", b""), target)
    wheels = wh.ensure_wheels(requirements, target, wheelhouse, on_event)
    with tempfile.TemporaryDirectory(prefix="dsops-image-") as tmp:
        steps.next(f"dependency layer ({len(wheels)} wheels)")
        deps = (deps_layer(wheels, epoch, cache, on_event),) if wheels else ()
        steps.next("code layer")
        ours = (*deps, write_layer(code_layer(pkg, facts.python), epoch, Path(tmp)))
        config = image_config(base, facts, pkg, version, parameters, ours, len(wheels))
        image = Assembled(canonical_json(config), base.layers + ours, len(base.layers))
        tags = image_tags(pkg.name, version)
        if output is not None:
            steps.next(f"writing {output}")
            write_archive(Path(output), image, tags, epoch)
        if engine is not None:
            steps.next("loading the image into Docker")
            load_into_engine(
                engine,
                image,
                tags,
                epoch,
                base_in_engine=base.in_engine,
                output=output,
                tmp=Path(tmp),
            )
    steps.finish()
    info = _describe(image, pkg, version, base, tags, output, loaded=engine is not None)
    result(on_event, f"image {info.short_id} ({', '.join(tags)})", **info.to_json())
    return info


def _describe(
    image: Assembled,
    pkg: GeneratedPackage,
    version: Version,
    base: BaseImage,
    tags: list[str],
    output: Path | None,
    *,
    loaded: bool,
) -> ImageResult:
    return ImageResult(
        id=image.config_digest,
        tags=tags,
        size=sum(b.diff_size or b.size for b in image.layers),
        version=f"v{version.number}",
        commit=version.commit,
        created=rfc3339(int(version.epoch)),
        name=pkg.name,
        manifest_digest=sha256_digest(image.manifest),
        base=base.name,
        base_digest=base.digest,
        layers=[b.digest for b in image.layers],
        archive=Path(output) if output is not None else None,
        loaded=loaded,
        reproducible=True,
    )
