"""The "package notebook" job: (verify) -> convert -> commit -> image build -> smoke run -> push.

One function used by the CLI, the magics and the server: each phase is announced with a stage
event so every adapter can show where the job is (``PackageOptions.stage_plan`` lists them).
Versions are gated: the commit and tag objects are made first, the image is built, smoke-run
and pushed from that commit, and only then do the branch and tag move (vcs.commit_package's
gate). A failure or Ctrl-C leaves no tag, no moved branch, the package folder as it was, and
removes the image tags it made; the error says what was done and what was rolled back.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsops_jupyter import events
from dsops_jupyter.errors import DsopsError, ExecutionError, ImageError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.model import (
    GeneratedPackage,
    ImageBuilder,
    ImageResult,
    PackageOptions,
    PackageResult,
    RunOptions,
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
    """Convert and commit the notebook, building (and smoke-running, pushing) its image first.

    ``options.parameters`` are coerced to the notebook's parameter types and baked in as the
    image's default arguments. The options checked their own combinations when they were made.
    """
    from dsops_jupyter.assemble import generate_package, write_package
    from dsops_jupyter.notebook import read_pipeline
    from dsops_jupyter.params import coerce_parameters

    pipeline = read_pipeline(path, name=options.name)
    values = coerce_parameters(pipeline, options.parameters)
    base_image, output = options.base_image, options.output
    file_base = base_image if _is_file(base_image) else None
    if file_base and options.builder != "assemble":
        raise ImageError(
            f"base image {file_base} is a file: only the layer assembler reads image archives; "
            "drop --builder dockerfile, or give a name:tag or name@sha256:... reference"
        )
    # Fail fast, before anything is run, written or committed, when the engine is needed but
    # absent or the base archive given is not an image with Python.
    if base_image and not file_base:
        from dsops_jupyter.recipe import check_base_image

        check_base_image(base_image)  # bad input is said before a missing engine is
    client = _engine(options.smoke, options.push, output, file_base) if options.images else None
    base = _read_file_base(file_base) if file_base else None
    if options.verify:
        _verify(path, options, on_event)
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
    if not options.images:
        result.version, result.created = commit_package(pkg, force=options.force, on_event=on_event)
        return result
    builder = builder_for(options.builder, output, base, client)
    gate = _ImageGate(pkg, options, builder, client, values, result, on_event)
    result.version, result.created = gate.commit()
    if options.export:
        try:
            result.exported = _export(path, options.export, result, on_event)
        except DsopsError as err:  # the version and its image passed: they stay
            err.args = (f"{err}; {result.version.tag} was made and its image kept",)
            raise
    return result


def _verify(path: str | Path, options: PackageOptions, on_event: OnEvent) -> None:
    """Run the notebook with papermill (into its run folder, never the package folder) before
    anything is versioned: a failing cell makes no version."""
    from dsops_jupyter.execute import run_notebook

    try:
        run_notebook(path, RunOptions(parameters=dict(options.parameters)), on_event)
    except ExecutionError as err:
        err.args = (f"verify run failed: {err}; no version made",)
        raise


@dataclass
class _ImageGate:
    """The image work a version must pass before its refs move: build, smoke run, push.

    ``pending`` is the version whose commit object exists while the gate runs; on failure
    `roll_back` removes the image tags made for it (only images labelled with its commit).
    """

    pkg: GeneratedPackage
    options: PackageOptions
    builder: ImageBuilder
    client: DockerClient | None
    values: dict[str, Any]
    result: PackageResult
    on_event: OnEvent
    pending: Version | None = field(default=None, init=False)
    passed: bool = field(default=False, init=False)

    def commit(self) -> tuple[Version, bool]:
        """Commit through the gate; an unchanged package's version gets its image built again
        (nothing to roll back: that version exists)."""
        from dsops_jupyter.vcs import commit_package

        try:
            version, created = commit_package(
                self.pkg, force=self.options.force, on_event=self._commit_events, gate=self.run
            )
        except BaseException as err:
            if self.pending is None:
                raise  # refused before a commit object existed: nothing to roll back
            note = self.roll_back(self.pending)
            if isinstance(err, DsopsError):
                err.args = (f"{err}; {note}",)
            elif isinstance(err, KeyboardInterrupt):  # Ctrl-C, or the server's cancel (SIGINT)
                err.args = (note,)
                events.log(self.on_event, f"interrupted; {note}")
            raise
        if not created:
            self.run(version, pending=False)
        return version, created

    def run(self, version: Version, *, pending: bool = True) -> None:
        if pending:
            self.pending = version
        result, options = self.result, self.options
        result.image = self.builder.build(self.pkg, version, self.values, self.on_event)
        result.output = options.output
        if options.smoke:
            result.smoke = _smoke(result.image, self.client, self.on_event)
        if options.push:
            result.pushed = _push(result.image, options.push, version, self.client, self.on_event)
        self.passed = True

    def _commit_events(self, event: events.Event) -> None:
        """The commit's events, less its progress once the image passed: moving the refs
        takes milliseconds, and its fractions would read as the last stage's going back."""
        if not (self.passed and event.kind == "progress"):
            self.on_event(event)

    def roll_back(self, version: Version) -> str:
        """Undo the image side of an unmade version; what was rolled back, as one clause."""
        done = [f"commit {version.short} not tagged", f"{version.name} v{version.number} not made"]
        if self.client is not None:
            removed = _remove_images(self.client, version)
            if removed:
                done.append(f"image {', '.join(removed)} removed")
        archive = self.result.image.archive if self.result.image is not None else None
        if archive is not None and archive.is_file():
            archive.unlink()
            done.append(f"archive {archive} removed")
        if self.result.pushed:
            done.append(f"pushed {', '.join(self.result.pushed)} stay in the registry")
        return "rolled back: " + ", ".join(done)


def _remove_images(client: DockerClient, version: Version) -> list[str]:
    """Remove the engine tags of ``version``'s image that name an image of its commit (another
    build's image under the same tag is left alone); the tags removed."""
    from docker.errors import DockerException

    from dsops_jupyter.image import LABEL_PREFIX, image_tags

    removed = []
    for tag in image_tags(version.name, version):
        with contextlib.suppress(DockerException):
            labels = client.images.get(tag).labels or {}
            if labels.get(LABEL_PREFIX + "revision") == version.commit:
                client.api.remove_image(tag)
                removed.append(tag)
    return removed


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
    builder: str,
    output: Path | None,
    file_base: BaseImage | None,
    client: DockerClient | None,
) -> ImageBuilder:
    """The layer assembler (the default; --reproducible, --output and a base archive need it),
    or the engine's Dockerfile build (``--builder dockerfile``)."""
    if builder == "assemble":
        from dsops_jupyter import oci

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
