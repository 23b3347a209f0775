"""The "package notebook" job: convert -> commit -> image build -> smoke run -> push.

One function used by the CLI, the magics and the server: each phase is announced with a stage
event so every adapter can show where the job is. A failing build or smoke run leaves the
committed version as it is: the version is the source of truth, the image only its product.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsops_jupyter import events, recipe
from dsops_jupyter.errors import ImageError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.model import GeneratedPackage, Version

UNRESOLVED = "# unresolved import: "


@dataclass
class PackageResult:
    """What packaging produced: the version, the package folder, and the image when built."""

    version: Any  # vcs.Version, or None with commit=False
    created: bool
    package_dir: Path
    script: Path
    image: Any = None  # image.ImageInfo, or oci.ReproducibleImage for reproducible builds
    smoke: Any = None  # image.SmokeResult
    pushed: list[str] = field(default_factory=list)
    output: Path | None = None
    unresolved_imports: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version.to_json() if self.version is not None else None,
            "created": self.created,
            "package_dir": str(self.package_dir),
            "script": str(self.script),
            "image": self.image.to_json() if self.image is not None else None,
            "smoke": self.smoke.to_json() if self.smoke is not None else None,
            "pushed": list(self.pushed),
            "output": str(self.output) if self.output is not None else None,
            "unresolved_imports": list(self.unresolved_imports),
        }


def package_notebook(
    path: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    name: str | None = None,
    out_dir: Path | None = None,
    commit: bool = True,
    build: bool = True,
    smoke: bool = False,
    base_image: str | None = None,
    push: str | None = None,
    force: bool = False,
    reproducible: bool = False,
    output: Path | None = None,
    on_event: OnEvent = events.ignore,
) -> PackageResult:
    """Convert and commit the notebook, then build (and smoke-run, push) its image.

    `parameters` are coerced to the notebook's parameter types and baked in as the image's
    default arguments. `reproducible`/`output` assemble the image without a Dockerfile build.
    """
    from dsops_jupyter.assemble import generate_package, write_package
    from dsops_jupyter.notebook import read_pipeline
    from dsops_jupyter.params import coerce_parameters

    images = build or smoke or bool(push) or reproducible or output is not None
    if images and not commit:
        raise ImageError(
            f"{Path(path).name}: an image is built from a committed version; "
            "drop --no-commit, or add --no-build to only write the recipe"
        )
    pipeline = read_pipeline(path, name=name)
    values = coerce_parameters(pipeline, parameters)
    file_base = base_image if _is_file(base_image) else None
    if file_base and not (reproducible or output is not None):
        raise ImageError(
            f"base image {file_base} is a file: only --reproducible/--output builds read image "
            "archives; give a Dockerfile build a name:tag or name@sha256:... reference"
        )
    # Fail fast, before anything is written or committed, when the engine is needed but absent
    # or the base archive given is not an image with Python.
    if base_image and not file_base:
        from dsops_jupyter.recipe import check_base_image

        check_base_image(base_image)  # bad input is said before a missing engine is
    client = _engine(smoke, push, output, file_base) if images else None
    base = _read_file_base(file_base) if file_base else None
    events.stage(on_event, f"Converting {Path(path).name}")
    pkg = generate_package(
        path,
        out_dir=out_dir,
        name=name,
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
    if not commit:
        write_package(pkg, force=force, on_event=on_event)
        events.result(on_event, f"wrote {pkg.directory}", package_dir=str(pkg.directory))
        return result
    from dsops_jupyter.vcs import commit_package

    events.stage(on_event, f"Committing {pkg.name}")
    result.version, result.created = commit_package(pkg, force=force, on_event=on_event)
    if not images:
        return result
    result.image = _build(pkg, result.version, values, reproducible, output, base, client, on_event)
    result.output = Path(output) if output is not None else None
    if smoke:
        result.smoke = _smoke(result.image, client, on_event)
    if push:
        result.pushed = _push(result.image, push, result.version, client, on_event)
    return result


def _engine(smoke: bool, push: str | None, output: Path | None, file_base: str | None) -> Any:
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


def _read_file_base(file_base: str) -> Any:
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


def _build(
    pkg: GeneratedPackage,
    version: Version,
    values: dict[str, Any],
    reproducible: bool,
    output: Path | None,
    file_base: Any,  # oci.BaseImage read from a file, or None
    client: Any,
    on_event: OnEvent,
) -> Any:
    """A Dockerfile build on the engine, or the daemonless assembly (loaded when `client`)."""
    from dsops_jupyter import image

    tag = image.image_tags(pkg.name, version)[0]
    if not (reproducible or output is not None):
        events.stage(on_event, f"Building image {tag}")
        return image.build_image(pkg, version, on_event=on_event, client=client)
    from dsops_jupyter import oci  # the daemonless builder, only for these builds

    events.stage(on_event, f"Assembling image {tag}")
    return oci.build_reproducible(
        pkg,
        version,
        base_image=file_base or recipe.recipe_base_image(pkg.files["Dockerfile"]),
        parameters=values or None,
        output=Path(output) if output is not None else None,
        engine=client,
        on_event=on_event,
    )


def _smoke(info: Any, client: Any, on_event: OnEvent) -> Any:
    from dsops_jupyter import image

    events.stage(on_event, f"Smoke run of {(info.tags or [info.id])[0]}")
    return image.smoke_run(info, None, on_event, client=client)


def _push(info: Any, registry: str, version: Version, client: Any, on_event: OnEvent) -> list[str]:
    from dsops_jupyter import image

    events.stage(on_event, f"Pushing to {registry}")
    return image.push_image(info, registry, version, on_event, client=client)
