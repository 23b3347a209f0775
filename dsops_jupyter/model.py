"""Value types shared by the core and its adapters, importing nothing of the package but errors.

They live here, not in the module that makes them, so that the modules that only pass them on
(vcs commits a generated package, image labels a version) need not import their makers, and
so that the CLI, the magics and the server share one options type and one result shape per
job (PackageOptions/PackageResult, RunOptions/RunRecord). errors.py imports nothing: the
options' checks raise its one-line errors without making a cycle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from dsops_jupyter.errors import ImageError, OptionsError

if TYPE_CHECKING:
    from dsops_jupyter.events import OnEvent
    from dsops_jupyter.pipeline import Pipeline


@dataclass
class GeneratedPackage:
    """The files of one generated package, in memory until written (so failures write nothing)."""

    name: str
    directory: Path
    files: dict[str, bytes]
    notebook_path: Path
    content_hash: str
    pipeline: Pipeline | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Version:
    """One tagged version of a generated package (``epoch``: committer time, for reproducible
    image timestamps; ``message``: the version commit's message)."""

    name: str
    number: int
    tag: str
    commit: str
    short: str
    epoch: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageResult:
    """A built image: from either builder, or found in the engine by `dsops images`.

    An engine image carries what its labels say (version, commit, created); an assembled image
    (``reproducible``) adds its manifest digest, base, layers and archive. `to_json` gives the
    first kind's keys only, so `dsops images --json` and Dockerfile builds keep their shape.
    """

    id: str  # "sha256:<config digest>": the image ID an engine reports
    tags: list[str]
    size: int  # bytes: the engine's size, or the uncompressed layers of an assembled image
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
    reproducible: bool = False

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.reproducible:
            return {key: data[key] for key in _ENGINE_KEYS}
        data["archive"] = str(self.archive) if self.archive else None
        return data


_ENGINE_KEYS = ("id", "tags", "size", "version", "commit", "created", "name")


class ImageBuilder(Protocol):
    """How `package` builds the image of a committed version, whichever builder it picked."""

    def build(
        self,
        pkg: GeneratedPackage,
        version: Version,
        parameters: dict[str, Any],
        on_event: OnEvent,
    ) -> ImageResult: ...


@dataclass
class SmokeResult:
    """What a smoke run printed; `workdir` holds the container's /work when it was copied out."""

    exit_code: int
    log: list[str] = field(default_factory=list)
    workdir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir) if self.workdir else None
        return data


# --- what a job is asked to do, and what it did: the one shape every adapter uses ------------
#: A user's value quoted back in an error is cut to this many characters.
QUOTED_CHARS = 200


def quoted(value: object) -> str:
    """A user's value (an option, a path a client sent) quoted as JSON for a one-line error
    and cut short, so the reason after it stays readable and a 50 MB value is not echoed."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError, RecursionError):
        text = "(a value that is not JSON, or nested too deeply)"
    if len(text) <= QUOTED_CHARS:
        return text
    return f"{text[:QUOTED_CHARS]}... ({len(text) - QUOTED_CHARS} more characters)"


def _from_json(kind: str, data: object, types: Mapping[str, tuple[type, ...]]) -> dict[str, Any]:
    """The fields of ``data`` (a JSON object of options), type-checked against ``types``: an
    unknown name or a wrong type is an OptionsError naming it."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OptionsError(f"{kind} options must be a JSON object, not {quoted(data)}")
    for key, value in data.items():
        if key not in types:
            raise OptionsError(f"unknown option {quoted(key)}; expected one of {', '.join(types)}")
        if not isinstance(value, types[key]):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types[key])
            raise OptionsError(f"option {key!r} must be {names}, not {quoted(value)}")
    parameters = data.get("parameters") or {}
    if not all(isinstance(name, str) for name in parameters):
        raise OptionsError("option 'parameters' must map names to values")
    return dict(data)


#: The engines `dsops export` and `package --export` write pipelines for.
EXPORT_ENGINES = ("kfp", "airflow", "argo")
#: The image builders: the layer assembler (oci.Assembler, the default: no `docker build`, the
#: dependency layer cached by the wheels' content) and the engine's Dockerfile build.
BUILDERS = ("assemble", "dockerfile")


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def _text(value: Path | None) -> str | None:
    return str(value) if value is not None else None


@dataclass(frozen=True)
class PackageOptions:
    """How to package a notebook; the same defaults and checks for the CLI, magics and server.

    ``build`` defaults to True, as `dsops package` always did: one default on every surface
    (the magics and the server used to default to no image). An image is built when asked for
    in any way (``build``, ``smoke``, ``push``, ``reproducible``, ``output``), and only from a
    committed version. ``verify`` runs the notebook with papermill first: a failing cell makes
    no version. ``builder`` picks how the image is made (BUILDERS); --reproducible, --output and
    a base archive need the assembler.
    """

    name: str | None = None
    out_dir: Path | None = None
    commit: bool = True
    build: bool = True
    smoke: bool = False
    base_image: str | None = None
    push: str | None = None
    force: bool = False
    reproducible: bool = False
    output: Path | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    export: str | None = None  # also write the version's pipeline for this engine
    verify: bool = False
    builder: str = "assemble"

    JSON_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "name": (str, type(None)),
        "out_dir": (str, type(None)),
        "commit": (bool,),
        "build": (bool,),
        "smoke": (bool,),
        "base_image": (str, type(None)),
        "push": (str, type(None)),
        "force": (bool,),
        "reproducible": (bool,),
        "output": (str, type(None)),
        "parameters": (dict,),
        "export": (str, type(None)),
        "verify": (bool,),
        "builder": (str,),
    }

    def __post_init__(self) -> None:
        if self.builder not in BUILDERS:
            raise OptionsError(
                f"unknown builder {quoted(self.builder)}; choose one of {', '.join(BUILDERS)}"
            )
        if self.builder == "dockerfile" and (self.reproducible or self.output is not None):
            raise OptionsError(
                "--reproducible and --output assemble the image: drop --builder dockerfile"
            )
        if self.images and not self.commit:
            raise ImageError(
                "an image is built from a committed version; "
                "drop --no-commit, or add --no-build to only write the recipe"
            )
        if self.export is not None and self.export not in EXPORT_ENGINES:
            raise OptionsError(
                f"cannot export to {quoted(self.export)}; choose one of {', '.join(EXPORT_ENGINES)}"
            )
        if self.export is not None and not (self.images and self.output is None):
            raise OptionsError(
                "--export runs the version's image on an engine: build it into the Docker "
                "engine (drop --no-build and --output)"
            )

    @property
    def images(self) -> bool:
        """Whether an image is made at all (a smoke run or a push needs one)."""
        return self.build or self.smoke or bool(self.push) or self.reproducible or bool(self.output)

    def stage_plan(self) -> list[str]:
        """The keys (first words) of the stages package_notebook announces, in order: the
        verifying run, convert, commit, build, smoke run, push, export."""
        optional = (
            ("Running", self.verify),
            ("Converting", True),
            ("Committing", self.commit),
            ("Building", self.images),
            ("Smoke", self.smoke),
            ("Pushing", bool(self.push)),
            ("Exporting", bool(self.export)),
        )
        return [key for key, announced in optional if announced]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(out_dir=_text(self.out_dir), output=_text(self.output))
        return data

    @classmethod
    def check_json(cls, data: object) -> dict[str, Any]:
        """``data``'s fields, type-checked: an unknown name or a wrong type is an OptionsError."""
        return _from_json("package", data, cls.JSON_TYPES)

    @classmethod
    def from_json(cls, data: object) -> PackageOptions:
        """Options a user gave as JSON (a server request, the worker's job line)."""
        values = cls.check_json(data)
        for key in ("out_dir", "output"):
            if key in values:
                values[key] = _path(values[key])
        return cls(**values)


@dataclass(frozen=True)
class RunOptions:
    """How to run a notebook: parameter values, chosen steps (their upstream runs too), where
    the executed notebook and run record go, the kernel, --strict input checks, the step cache
    (``force``: steps re-run with everything downstream) and ``resume`` (a failed run's folder
    or name, "" for the latest failed run)."""

    parameters: dict[str, Any] = field(default_factory=dict)
    steps: tuple[str, ...] = ()
    out_dir: Path | None = None
    kernel_name: str | None = None
    cwd: Path | None = None
    strict: bool = False
    cache: bool = False
    force: tuple[str, ...] = ()
    resume: str | None = None

    JSON_TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "parameters": (dict,),
        "steps": (list,),
        "out_dir": (str, type(None)),
        "kernel_name": (str, type(None)),
        "cwd": (str, type(None)),
        "strict": (bool,),
        "cache": (bool,),
        "force": (list,),
        "resume": (str, type(None)),
    }

    def __post_init__(self) -> None:
        if self.force and not self.cache:
            raise OptionsError("--force re-runs steps the cache would restore: add --cache")
        if self.resume is None:
            return
        if self.parameters:
            raise OptionsError("--resume runs with the failed run's parameters: drop -p")
        if self.steps:
            raise OptionsError("--resume runs the failed run's steps: drop --step")
        if self.force:
            raise OptionsError("--resume restarts at the failing step: drop --force")

    def stage_plan(self) -> list[str]:
        """The keys of the stages run_notebook announces: the one run."""
        return ["Running"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(steps=list(self.steps), force=list(self.force))
        data.update(out_dir=_text(self.out_dir), cwd=_text(self.cwd))
        return data

    @classmethod
    def check_json(cls, data: object) -> dict[str, Any]:
        """``data``'s fields, type-checked: an unknown name or a wrong type is an OptionsError."""
        values = _from_json("run", data, cls.JSON_TYPES)
        for key in ("steps", "force"):
            if not all(isinstance(step, str) for step in values.get(key, [])):
                raise OptionsError(f"option {key!r} must be a list of step names")
        return values

    @classmethod
    def from_json(cls, data: object) -> RunOptions:
        """Options a user gave as JSON (a server request, the worker's job line)."""
        values = cls.check_json(data)
        values["steps"] = tuple(values.get("steps", ()))
        values["force"] = tuple(values.get("force", ()))
        for key in ("out_dir", "cwd"):
            if key in values:
                values[key] = _path(values[key])
        return cls(**values)


@dataclass
class PackageResult:
    """What packaging produced: the version, the package folder, and the image when built.

    ``to_json`` is the one result shape: `dsops package --json`, the magics, the server's
    package jobs (paths made relative to its root) and the frontend's IPackageResult.
    """

    version: Version | None  # None with commit=False
    created: bool
    package_dir: Path
    script: Path
    image: ImageResult | None = None
    smoke: SmokeResult | None = None
    pushed: list[str] = field(default_factory=list)
    output: Path | None = None
    unresolved_imports: list[str] = field(default_factory=list)
    exported: dict[str, Any] | None = None  # ExportResult.to_json() of --export

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version.to_json() if self.version is not None else None,
            "created": self.created,
            "package_dir": str(self.package_dir),
            "script": str(self.script),
            "image": self.image.to_json() if self.image is not None else None,
            "smoke": self.smoke.to_json() if self.smoke is not None else None,
            "pushed": list(self.pushed),
            "output": _text(self.output),
            "unresolved_imports": list(self.unresolved_imports),
            "exported": self.exported,
        }


RUN_RECORD = "run.json"  # the file name of a run record in its run folder


@dataclass
class RunRecord:
    """One run of a notebook; ``to_json`` is run.json and the one run result shape (CLI --json,
    magics, the server's run jobs, the frontend's IRunRecord). ``details``: environment,
    verification and warnings, spread into the top level of the JSON. Each step says whether
    it was executed or ``restored`` ("cache", or "run" for --resume) and its keys."""

    notebook: str
    output_notebook: Path
    record_path: Path
    status: str
    parameters: dict[str, Any]
    steps: list[dict[str, Any]]
    started: str
    duration: float
    details: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None  # the failed run's folder, for --resume

    def to_json(self) -> dict[str, Any]:
        return {
            "resumed_from": self.resumed_from,
            "notebook": self.notebook,
            "output_notebook": str(self.output_notebook),
            "record": str(self.record_path),
            "status": self.status,
            "parameters": self.parameters,
            "steps": self.steps,
            "started": self.started,
            "duration": round(self.duration, 3),
            **self.details,
        }
