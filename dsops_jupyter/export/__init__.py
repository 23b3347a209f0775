"""Export a notebook's committed version to an engine (KFP, Airflow, Argo): the common part.

Which version (the notebook's latest tag ``dsops/<name>/v<N>``), which image (the version's,
pinned by digest where the engine knows one; ``--image REF`` overrides), the pipeline spec of
that version (its committed ``pipeline.json``), parameters with types and defaults, Kale's
per-step extras, the metrics names, an optional parameter grid, and step names each engine
accepts (sanitised, the mapping recorded). Each engine module ``export/<engine>.py`` turns an
`ExportContext` into files through the same function, ``render(ctx) -> dict[str, bytes]``;
this module writes them atomically into ``pipelines/<name>/<engine>/`` (or ``--out``).

Every step runs in the version's image as ``python -c <runner> ... -- [--PARAM V...]``: the
runner (``_runner.py``, standard library only) calls ``<script> --step NAME --workdir DIR``
and moves artifacts between the workdir and the paths the engine hands it.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from dsops_jupyter import events
from dsops_jupyter.events import OnEvent
from dsops_jupyter.export.source import (
    ExportError,
    ExtraMissingError,
    ImageRef,
    latest_version,
    resolve_image,
    version_spec,
)
from dsops_jupyter.fsutil import write_files
from dsops_jupyter.model import EXPORT_ENGINES, Version, quoted

#: The folder of the script package inside the version's image (see templates/Dockerfile.tmpl).
IMAGE_PACKAGE_DIR = PurePosixPath("/opt/dsops")
#: Where a step's workdir (its artifacts) lives inside the container.
CONTAINER_WORKDIR = "/tmp/dsops/work"


# --- what an engine receives --------------------------------------------------------------------
@dataclass(frozen=True)
class ExportParameter:
    """A notebook parameter: a typed pipeline parameter with its default."""

    name: str
    type: str  # int | float | str | bool | list | dict | any
    default: Any
    option: str  # the script's option that sets it (`--alpha`, `--param-step`)


@dataclass(frozen=True)
class StepExtras:
    """Kale's per-step tags, parsed: ``limit:memory:1Gi``, ``label:team:ml``,
    ``annotation:owner:me``, ``secret:NAME[:MOUNT_PATH]``, ``image:REF``."""

    limits: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # secret name -> mount path
    image: str = ""


@dataclass(frozen=True)
class ExportStep:
    """One step as an engine task: ``task`` is its name sanitised for the engine, ``inputs``
    are (artifact name, producing step's task name), ``after`` the tasks it waits for."""

    name: str
    task: str
    inputs: list[tuple[str, str]]
    outputs: list[str]
    parameters: list[str]
    after: list[str]
    extras: StepExtras


@dataclass
class ExportContext:
    """Everything an engine module needs to write its pipeline definition."""

    name: str
    notebook: str  # project-relative path, as pipeline.json records it
    version: Version | None
    image: ImageRef
    script: str  # the script's path inside the image
    steps: list[ExportStep]
    parameters: list[ExportParameter]
    metrics: list[str] = field(default_factory=list)  # names in `pipeline-metrics` cells
    grid: list[dict[str, Any]] = field(default_factory=list)  # parameter sets of a sweep
    names: dict[str, str] = field(default_factory=dict)  # step name -> engine task name
    notes: list[str] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # engine-specific, e.g. airflow_operator

    @property
    def description(self) -> str:
        where = f"{self.version.tag} ({self.version.commit})" if self.version else "no version"
        return f"{self.name} from {self.notebook}, {where}, image {self.image.reference}"

    def metadata(self) -> dict[str, str]:
        """Labels/annotations naming the version, so a cluster run traces back to Git."""
        data = {"dsops.io/pipeline": self.name, "dsops.io/image": self.image.reference}
        if self.version is not None:
            data.update(
                {
                    "dsops.io/version": f"v{self.version.number}",
                    "dsops.io/tag": self.version.tag,
                    "dsops.io/commit": self.version.commit,
                }
            )
        if self.image.image_id:
            data["dsops.io/image-id"] = self.image.image_id
        return data

    def parameter(self, name: str) -> ExportParameter:
        return next(p for p in self.parameters if p.name == name)

    @property
    def swept(self) -> list[str]:
        """The parameters the grid sweeps."""
        return list(self.grid[0]) if self.grid else []

    def grid_items(self) -> list[dict[str, str]]:
        """The grid's parameter sets as the script's options read them: engines pass text."""
        return [
            {name: parameter_text(self.parameter(name).type, value) for name, value in s.items()}
            for s in self.grid
        ]

    def step_command(
        self,
        step: ExportStep,
        *,
        inputs: Mapping[str, str],
        outputs: Mapping[str, str],
        parameters: Mapping[str, str],
        files: str | None = None,
        metrics: tuple[str, str] | None = None,
        executor_input: str | None = None,
    ) -> list[str]:
        """The container command of ``step``: the runner with the paths the engine gives
        (placeholders of its templating), then the script's parameter options. ``metrics``:
        the engine's name and path of the metrics output (see _runner.py)."""
        command = ["python", "-c", runner_source(), "--script", self.script]
        command += ["--step", step.name, "--workdir", CONTAINER_WORKDIR]
        for name, path in inputs.items():
            command += ["--in", f"{name}={path}"]
        for name, path in outputs.items():
            command += ["--out", f"{name}={path}"]
        if files is not None:
            command += ["--files", files]
        if metrics is not None:
            name, path = metrics
            command += ["--metrics", f"{name}={path}", "--metric-names", ",".join(self.metrics)]
        if executor_input is not None:
            command += ["--executor-input", executor_input]
        command.append("--")
        for name, value in parameters.items():
            command.append(f"{self.parameter(name).option}={value}")
        return command


@dataclass
class ExportResult:
    """What an export wrote: the engine's main file, all files, and what it was made from."""

    engine: str
    path: Path
    files: list[Path]
    version: Version
    image: ImageRef
    names: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "path": str(self.path),
            "files": [str(path) for path in self.files],
            "version": self.version.to_json(),
            "image": self.image.reference,
            "image_id": self.image.image_id,
            "names": self.names,
            "notes": self.notes,
        }


class Engine(Protocol):
    """An ``export/<engine>.py`` module: its main file's name, the task names it accepts, and
    the one function."""

    MAIN_FILE: str
    NAME_RULE: NameRule

    def render(self, ctx: ExportContext) -> dict[str, bytes]: ...


@dataclass(frozen=True)
class NameRule:
    """What names an engine accepts for a task: allowed characters, case, length."""

    invalid: str  # a regex class of characters to replace, e.g. r"[^a-z0-9-]"
    lower: bool
    max_length: int
    separator: str = "-"


def runner_source() -> str:
    """The step runner's code, passed to ``python -c`` (the image has no dsops installed);
    without its docstrings, as it appears once per step in every pipeline definition."""
    text = (resources.files("dsops_jupyter.export") / "_runner.py").read_text("utf-8")
    tree = ast.parse(text)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and len(body) > 1 and _is_docstring(body[0]):
            body.pop(0)
    return ast.unparse(tree) + "\n"


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


# --- the common steps ---------------------------------------------------------------------------
def load_engine(to: str) -> Engine:
    """The engine module; a missing engine package is one line naming the extra to install."""
    if to not in EXPORT_ENGINES:
        choices = ", ".join(EXPORT_ENGINES)
        raise ExportError(f"unknown engine {quoted(to)}; choose one of {choices}")
    try:
        module: Any = importlib.import_module(f"dsops_jupyter.export.{to}")
    except ImportError as err:
        missing = (err.name or to).split(".")[0]  # the distribution, not `airflow.sdk`
        raise ExtraMissingError(
            f"exporting to {to} needs the {missing} package, which is not installed: "
            f"pip install dsops-jupyter[{to}]"
        ) from None
    return module


def sanitise(names: list[str], rule: NameRule) -> dict[str, str]:
    """Each name made acceptable to the engine, distinct from the others (a suffix when two
    would collide); the mapping is recorded in the output so a task traces back to its step."""
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        text = name.lower() if rule.lower else name
        text = re.sub(rule.invalid, rule.separator, text).strip(rule.separator + "_") or "step"
        text = text[: rule.max_length].rstrip(rule.separator + "_")
        candidate, number = text, 2
        while candidate in taken:
            suffix = f"{rule.separator}{number}"
            candidate = text[: rule.max_length - len(suffix)] + suffix
            number += 1
        taken.add(candidate)
        mapping[name] = candidate
    return mapping


def parse_extras(step: str, extras: Mapping[str, list[str]]) -> StepExtras:
    """Kale's ``KIND:KEY:VALUE`` step tags as task settings; a malformed one is one line."""
    limits: dict[str, str] = {}
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    secrets: dict[str, str] = {}
    image = ""
    for kind, values in extras.items():
        for value in values:
            key, sep, rest = value.partition(":")
            if kind == "image":
                image = value
            elif kind == "secret":
                secrets[key] = rest or f"/secrets/{key}"
            elif kind in ("limit", "label", "annotation") and sep and key and rest:
                {"limit": limits, "label": labels, "annotation": annotations}[kind][key] = rest
            elif kind in ("limit", "label", "annotation"):
                raise ExportError(
                    f"step {step}: tag {kind}:{value} must be {kind}:KEY:VALUE "
                    f"(e.g. limit:memory:1Gi)"
                )
    return StepExtras(limits, labels, annotations, secrets, image)


def parameter_text(kind: str, value: Any) -> str:
    """A parameter value as the script's option reads it (engines that pass text)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind in ("list", "dict", "any"):
        return repr(value)
    return value if isinstance(value, str) else json.dumps(value)


def grid_runs(items: list[str], parameters: list[ExportParameter]) -> list[dict[str, Any]]:
    """``--grid alpha=0.1,0.5 --grid seed=1,2``: every combination, read by the one grid parser
    ``dsops run --grid`` uses, for the version's parameters."""
    from dsops_jupyter.grid import parse_grid
    from dsops_jupyter.params import Parameter

    declared = [Parameter(name=p.name, type=p.type, default=p.default, cell=0) for p in parameters]
    return parse_grid(declared, items, where="the version").combinations()


def metric_names(notebook: Path) -> list[str]:
    """The names a notebook's ``pipeline-metrics`` cells show (Kale: one expression a line)."""
    from dsops_jupyter.notebook import read_pipeline

    names: list[str] = []
    for cell in read_pipeline(notebook).cells:
        if cell.role != "metrics" or cell.tree is None:
            continue
        for node in cell.tree.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Name):
                names.append(node.value.id)
    return names


def spec_parameters(spec: Mapping[str, Any]) -> list[ExportParameter]:
    """The parameters a pipeline spec declares, with the script option of each."""
    from dsops_jupyter.params import parameter_options

    return [
        ExportParameter(p["name"], p["type"], p["default"], parameter_options(p["name"])[0])
        for p in spec.get("parameters", [])
    ]


def build_context(
    spec: Mapping[str, Any],
    *,
    image: ImageRef,
    version: Version | None,
    rule: NameRule,
    metrics: list[str] | None = None,
    grid: list[str] | None = None,
) -> ExportContext:
    """An engine's view of a pipeline spec (a version's ``pipeline.json``)."""
    parameters = spec_parameters(spec)
    names = sanitise([s["name"] for s in spec["steps"]], rule)
    producers: dict[str, str] = {}
    steps = []
    for raw in spec["steps"]:
        params = [n for n in raw["inputs"] if n in raw.get("parameters", [])]
        inputs = [(n, names[producers[n]]) for n in raw["inputs"] if n in producers]
        steps.append(
            ExportStep(
                name=raw["name"],
                task=names[raw["name"]],
                inputs=inputs,
                outputs=list(raw["outputs"]),
                parameters=params,
                after=[names[a] for a in raw.get("depends_on", raw.get("after", []))],
                extras=parse_extras(raw["name"], raw.get("extras", {})),
            )
        )
        producers.update({name: raw["name"] for name in raw["outputs"]})
    ctx = ExportContext(
        name=spec["name"],
        notebook=spec.get("notebook", ""),
        version=version,
        image=image,
        script=str(IMAGE_PACKAGE_DIR / spec["script"]),
        steps=steps,
        parameters=parameters,
        metrics=list(metrics or []),
        names=names,
    )
    ctx.grid = grid_runs(list(grid or []), parameters)
    renamed = {k: v for k, v in names.items() if k != v}
    if renamed:
        shown = ", ".join(f"{k} -> {v}" for k, v in renamed.items())
        ctx.notes.append(f"step names changed for the engine: {shown}")
    for step in steps:
        if step.extras.image:
            ctx.notes.append(
                f"step {step.name}: image:{step.extras.image} is recorded as an annotation, not "
                "used: every step runs the version's script in the version's image"
            )
    return ctx


def export(
    notebook: str | Path,
    to: str,
    *,
    image: str | None = None,
    out_dir: str | Path | None = None,
    grid: list[str] | None = None,
    name: str | None = None,
    package_dir: Path | None = None,
    options: Mapping[str, str] | None = None,
    on_event: OnEvent = events.ignore,
) -> ExportResult:
    """Write the engine's pipeline definition of the notebook's latest version (its package
    folder: ``package_dir``, by default where the settings put it)."""
    path = Path(notebook)
    engine = load_engine(to)
    version, default_dir = latest_version(path, name)
    package_dir = package_dir or default_dir
    spec = version_spec(path, version, package_dir)
    grid_runs(list(grid or []), spec_parameters(spec))  # bad input is said before the engine
    ref = resolve_image(version, image)
    # after the checks: a refused export prints its one line and no progress
    events.stage(on_event, f"Exporting {version.tag} to {to}")
    rule = engine.NAME_RULE
    ctx = build_context(
        spec, image=ref, version=version, rule=rule, metrics=metric_names(path), grid=grid
    )
    ctx.options = dict(options or {})
    files = engine.render(ctx)
    target = Path(out_dir) if out_dir is not None else package_dir / to
    write_files(target, files)
    for note in ctx.notes:
        events.log(on_event, note)
    result = ExportResult(
        engine=to,
        path=target / engine.MAIN_FILE,
        files=[target / file for file in sorted(files)],
        version=version,
        image=ref,
        names=ctx.names,
        notes=ctx.notes,
    )
    events.result(on_event, f"wrote {result.path}", **result.to_json())
    return result


def names_file(ctx: ExportContext) -> bytes:
    """``names.json``: the engine's task name of each step, and the version and image used."""
    data = {"names": ctx.names, "image": ctx.image.reference, **ctx.metadata()}
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


__all__ = ["ExportError", "ExtraMissingError", "ImageRef", "export"]
