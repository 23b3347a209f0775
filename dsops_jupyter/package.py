"""The "package notebook" job: convert -> commit -> image build -> smoke run -> push.

One function used by the CLI, the magics and the server: each phase is announced with a stage
event so every adapter can show where the job is. A failing build or smoke run leaves the
committed version as it is: the version is the source of truth, the image only its product.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsops_jupyter import events
from dsops_jupyter.errors import ImageError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.model import (
    GeneratedPackage,
    ImageBuilder,
    ImageResult,
    PackageOptions,
    PackageResult,
    SmokeResult,
    Version,
)

if TYPE_CHECKING:
    from docker import DockerClient

    from dsops_jupyter.oci import BaseImage

UNRESOLVED = "# unresolved import: "
#: Frozen: safe as the default argument of every call.
DEFAULTS = PackageOptions()


def package_notebook(
    path: str | Path,
    options: PackageOptions = DEFAULTS,
    on_event: OnEvent = events.ignore,
) -> PackageResult:
    """Convert and commit the notebook, then build (and smoke-run, push) its image.

    ``options.parameters`` are coerced to the notebook's parameter types and baked in as the
    image's default arguments. ``reproducible``/``output`` assemble the image without a
    Dockerfile build. The options checked their own combinations when they were made.
    """
    from dsops_jupyter.assemble import generate_package, write_package
    from dsops_jupyter.notebook import read_pipeline
    from dsops_jupyter.params import coerce_parameters

    pipeline = read_pipeline(path, name=options.name)
    values = coerce_parameters(pipeline, options.parameters)
    base_image, output = options.base_image, options.output
    file_base = base_image if _is_file(base_image) else None
    if file_base and not (options.reproducible or output is not None):
        raise ImageError(
            f"base image {file_base} is a file: only --reproducible/--output builds read image "
            "archives; give a Dockerfile build a name:tag or name@sha256:... reference"
        )
    # Fail fast, before anything is written or committed, when the engine is needed but absent
    # or the base archive given is not an image with Python.
    if base_image and not file_base:
        from dsops_jupyter.recipe import check_base_image

        check_base_image(base_image)  # bad input is said before a missing engine is
    client = _engine(options.smoke, options.push, output, file_base) if options.images else None
    base = _read_file_base(file_base) if file_base else None
    events.stage(on_event, f"Converting {Path(path).name}")
    pkg = generate_package(
        path,
        out_dir=options.out_dir,
        name=options.name,
        base_image=None if file_base else base_image,
        image_parameters=values,
    )
    result = PackageResult(
        version=None,
        created=False,
        package_dir=pkg.directory,
        script=pkg.directory / f"{pkg.name}.py",
        unresolved_imports=_report_unresolved(pkg, on_event),
    )
    if not options.commit:
        write_package(pkg, force=options.force, on_event=on_event)
        events.result(on_event, f"wrote {pkg.directory}", package_dir=str(pkg.directory))
        return result
    from dsops_jupyter.vcs import commit_package

    events.stage(on_event, f"Committing {pkg.name}")
    result.version, result.created = commit_package(pkg, force=options.force, on_event=on_event)
    if not options.images:
        return result
    builder = builder_for(options.reproducible, output, base, client)
    result.image = builder.build(pkg, result.version, values, on_event)
    result.output = output
    if options.smoke:
        result.smoke = _smoke(result.image, client, on_event)
    if options.push:
        result.pushed = _push(result.image, options.push, result.version, client, on_event)
    if options.export:
        result.exported = _export(path, options.export, result, on_event)
    return result


def _export(path: str | Path, engine: str, result: PackageResult, on_event: OnEvent) -> dict:
    """The version's pipeline for ``engine``, in the image just built (or pushed)."""
    from dsops_jupyter.export import export

    assert result.version is not None, "an export follows a committed version's build"
    pushed = result.pushed[0] if result.pushed else None
    done = export(
        path,
        engine,
        image=pushed,
        name=result.version.name,
        package_dir=result.package_dir,
        on_event=on_event,
    )
    return done.to_json()


def _engine(
    smoke: bool, push: str | None, output: Path | None, file_base: str | None
) -> DockerClient | None:
    """The engine client, or None for a daemonless build (`output`, no smoke run, no push).

    A daemonless build still reads a base given by name from the engine when one answers.
    """
    from dsops_jupyter import image

    daemonless = output is not None and not (smoke or push)
    if not daemonless:
        return image.connect()
    if file_base is not None:
        return None
    try:
        return image.connect()
    except ImageError:
        return None  # the daemonless builder says the base needs a file or an engine


def _read_file_base(file_base: str) -> BaseImage:
    """The base archive, read and inspected now: a bad file is refused before any commit."""
    from dsops_jupyter import oci

    return oci.read_base_file(Path(file_base).expanduser())


def _is_file(base_image: str | None) -> bool:
    """A base given as a local image archive (only the daemonless builder reads those)."""
    return bool(base_image) and Path(str(base_image)).expanduser().is_file()


def _report_unresolved(pkg: GeneratedPackage, on_event: OnEvent) -> list[str]:
    """Imports the lock could not map to an installed distribution: shown, not fatal."""
    text = pkg.files.get("requirements.lock", b"").decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.startswith(UNRESOLVED)]
    names = [line[len(UNRESOLVED) :].split(" ")[0] for line in lines]
    for module in names:
        events.log(
            on_event,
            f"warning: {pkg.name} imports {module}, which no distribution in the kernel's "
            "environment provides; it is not in requirements.lock",
        )
    return names


def builder_for(
    reproducible: bool,
    output: Path | None,
    file_base: BaseImage | None,
    client: DockerClient | None,
) -> ImageBuilder:
    """The deterministic assembler for --reproducible, --output or a base archive; else the
    Dockerfile build on the engine."""
    if reproducible or output is not None or file_base is not None:
        from dsops_jupyter import oci  # the daemonless builder, only for these builds

        return oci.Assembler(base=file_base, output=output, engine=client)
    from dsops_jupyter import image

    return image.DockerfileBuilder(client)


def _smoke(info: ImageResult, client: DockerClient | None, on_event: OnEvent) -> SmokeResult:
    from dsops_jupyter import image

    events.stage(on_event, f"Smoke run of {(info.tags or [info.id])[0]}")
    return image.smoke_run(info, None, on_event, client=client)


def _push(
    info: ImageResult,
    registry: str,
    version: Version,
    client: DockerClient | None,
    on_event: OnEvent,
) -> list[str]:
    from dsops_jupyter import image

    events.stage(on_event, f"Pushing to {registry}")
    return image.push_image(info, registry, version, on_event, client=client)
