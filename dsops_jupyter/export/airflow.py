"""Airflow 3 export: a DAG file with one task per step, each running in the version's image.

The DAG (``airflow/dag.py`` in the package folder) imports from ``airflow.sdk``; each step is a
DockerOperator (default) or a KubernetesPodOperator (``airflow_operator=k8s``) running
``python <script> --step NAME --workdir /work/artifacts --PARAM={{ params.PARAM }}``. The
notebook's parameters are DAG params with their defaults and JSON-schema types. Artifacts pass
through a folder every task of a run shares, mounted as the container's working directory
(``/work``, the image's own), so relative outputs such as ``outputs/metrics.json`` land there
as they do beside a papermill run: a host folder per DAG run (Docker), a subfolder per run of
a ReadWriteMany volume claim (Kubernetes), or, with ``artifacts=URI``, an object store the
worker copies the run's folder from and to around each task (``ObjectStoragePath``). A grid
becomes dynamic task mapping: each step is mapped over the parameter sets, one folder each.
"""

from __future__ import annotations

import json
import re
from typing import Any

from airflow.sdk import Param  # a missing Airflow fails here: load_engine names the extra

from dsops_jupyter.export import ExportContext, ExportStep, NameRule, parameter_text
from dsops_jupyter.export.source import ExportError, ExtraMissingError

MAIN_FILE = "dag.py"
NAME_RULE = NameRule(invalid=r"[^A-Za-z0-9_.-]", lower=False, max_length=200, separator="_")
OPERATORS = ("docker", "k8s")
MOUNT_POINT = "/work"  # the image's WORKDIR: the step's current folder, shared by the run
WORKDIR = f"{MOUNT_POINT}/artifacts"
_SCHEMA = {
    "int": "integer",
    "float": "number",
    "str": "string",
    "bool": "boolean",
    "list": "array",
    "dict": "object",
}
# A run id (``manual__2026-01-02T03:04:05+00:00``) as one folder name on any file system.
RUN_FOLDER = "{{ run_id | replace(':', '-') | replace('+', '-') }}"


def render(ctx: ExportContext) -> dict[str, bytes]:
    """``dag.py`` and ``names.json``; the DAG's text depends on ``ctx`` only (same bytes)."""
    from dsops_jupyter.export import names_file

    operator = ctx.options.get("airflow_operator", "docker")
    if operator not in OPERATORS:
        raise ExportError(f"unknown Airflow operator {operator!r}; choose docker or k8s")
    artifacts = ctx.options.get("artifacts", "")
    if artifacts and operator == "k8s":
        raise ExportError(
            "an object-store URI needs --airflow-operator docker (a pod cannot see the worker's "
            "disk); with k8s the run shares a ReadWriteMany volume claim"
        )
    if operator == "docker":
        _require("airflow.providers.docker", "apache-airflow-providers-docker")
    params = {p.name: _param(p.name, p.type, p.default) for p in ctx.parameters}
    source = DagWriter(ctx, operator, artifacts, params).source()
    return {MAIN_FILE: source.encode("utf-8"), "names.json": names_file(ctx)}


def _require(module: str, distribution: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise ExtraMissingError(
            f"exporting to airflow needs {distribution}, which is not installed: "
            "pip install dsops-jupyter[airflow]"
        ) from None


def _param(name: str, kind: str, default: Any) -> str:
    """``Param(default, type=...)`` source; the default is checked against its type here."""
    from airflow.sdk.exceptions import ParamValidationError

    schema = _SCHEMA.get(kind)
    try:
        Param(default, type=schema).resolve() if schema else Param(default).resolve()
    except (ParamValidationError, TypeError, ValueError):
        raise ExportError(f"parameter {name}: default {default!r} is not a valid {kind}") from None
    text = _literal(default)
    return f"Param({text}, type={_literal(schema)})" if schema else f"Param({text})"


def _literal(value: Any) -> str:
    """Python source of a literal, double-quoted as ruff formats it (tuples as lists)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None or isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


class DagWriter:
    """The DAG file's text, section by section."""

    def __init__(
        self, ctx: ExportContext, operator: str, artifacts: str, params: dict[str, str]
    ) -> None:
        self.ctx, self.operator, self.artifacts, self.params = ctx, operator, artifacts, params
        self.dag_id = re.sub(NAME_RULE.invalid, "_", f"dsops_{ctx.name}")

    def source(self) -> str:
        parts = [self._header(), self._imports(), self._constants(), self._helpers()]
        parts.append(self._dag())
        return "\n\n".join(part.rstrip("\n") for part in parts if part) + "\n"

    # --- sections --------------------------------------------------------------------------------
    def _header(self) -> str:
        ctx = self.ctx
        version = ctx.version
        lines = [
            f'"""Airflow DAG of the dsops pipeline {ctx.name} ({self._version_text()}).',
            "",
            f"Generated by dsops-jupyter from {ctx.notebook or ctx.name} with `dsops export --to "
            "airflow`: edit the notebook, package it, then export again.",
            f"Image: {ctx.image.reference}"
            + (f", ID {ctx.image.image_id}." if ctx.image.image_id else "."),
            f"Each task runs one step: `python {ctx.script} --step NAME --workdir {WORKDIR}`,",
            f"in a folder the run's tasks share, mounted at {MOUNT_POINT}.",
        ]
        if version is not None:
            lines.append(f"Version: {version.tag}, commit {version.commit}.")
        renamed = {k: v for k, v in ctx.names.items() if k != v}
        if renamed:
            lines.append("Task names: " + ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
        if ctx.metrics:
            lines.append(f"Metrics (pipeline-metrics): {', '.join(ctx.metrics)}.")
        if ctx.grid:
            lines.append(f"Grid: {len(ctx.grid)} parameter sets, each step mapped over them.")
        return "\n".join(_wrap(line) for line in lines) + '\n"""\n'

    def _description(self) -> str:
        version = self.ctx.version
        where = f"{version.tag} ({version.short})" if version is not None else "no version"
        return f"dsops pipeline {self.ctx.name[:40]}, {where}"

    def _version_text(self) -> str:
        version = self.ctx.version
        return f"{version.tag}, {version.short}" if version is not None else "no version"

    def _imports(self) -> str:
        sdk = "DAG, ObjectStoragePath, Param, task" if self.artifacts else "DAG, Param, task"
        lines = ["from __future__ import annotations", "", "import os"]
        if self.operator == "docker":
            lines += ["from pathlib import Path", ""]
            lines.append("from airflow.providers.docker.operators.docker import DockerOperator")
            lines += [f"from airflow.sdk import {sdk}", "from docker.types import Mount"]
        else:
            lines += ["", "from airflow.providers.cncf.kubernetes.operators.pod import ("]
            lines += ["    KubernetesPodOperator,", ")"]
            lines += [f"from airflow.sdk import {sdk}"]
            lines += ["from kubernetes.client import models as k8s"]
        return "\n".join(lines)

    def _constants(self) -> str:
        ctx = self.ctx
        lines = [_assign("IMAGE", ctx.image.reference), _assign("SCRIPT", ctx.script)]
        if self.operator == "docker":
            lines += [
                "# The folder on the Docker host that holds one subfolder per DAG run (the tasks'",
                "# shared working directory); set DSOPS_SHARED_DIR where the worker runs.",
                'SHARED_DIR = os.environ.get("DSOPS_SHARED_DIR", "/tmp/dsops-airflow")',
                f"RUN_DIR = SHARED_DIR + {_literal('/' + self.dag_id + '/' + RUN_FOLDER)}",
            ]
        else:
            lines += [
                "# A ReadWriteMany volume claim: one subfolder per DAG run is the tasks' folder.",
                'SHARED_CLAIM = os.environ.get("DSOPS_SHARED_CLAIM", "dsops-shared")',
                f"RUN_DIR = {_literal(self.dag_id + '/' + RUN_FOLDER)}",
            ]
        if self.artifacts:
            lines.append(f"ARTIFACTS = {_literal(self.artifacts.rstrip('/') + '/' + self.dag_id)}")
        return "\n".join(lines)

    def _helpers(self) -> str:
        text = DOCKER_HELPERS if self.operator == "docker" else K8S_HELPERS
        if self.artifacts:
            text += OBJECT_STORE_HELPERS
        return text

    def _dag(self) -> str:
        ctx = self.ctx
        tags = ["dsops", f"pipeline:{ctx.name}"]
        if ctx.version is not None:
            tags += [ctx.version.tag, f"commit:{ctx.version.commit}"]
        lines = ["with DAG(", f"    dag_id={_literal(self.dag_id)},"]
        lines.append(f"    description={_literal(self._description())},")
        lines += ["    doc_md=__doc__,", "    schedule=None,", "    catchup=False,"]
        lines += ["    tags=[", *(f"        {_literal(tag)}," for tag in tags), "    ],"]
        if self.params:
            lines.append("    params={")
            lines += [f"        {_literal(name)}: {text}," for name, text in self.params.items()]
            lines.append("    },")
        lines.append(") as dag:")
        lines += [f"    {line}" if line else "" for line in self._prepare().splitlines()]
        for step in ctx.steps:
            lines.append("")
            lines += [f"    {line}" if line else "" for line in self._task(step).splitlines()]
        lines.append("")
        lines += [f"    {line}" for line in self._edges()]
        return "\n".join(lines)

    def _prepare(self) -> str:
        lines = ['prepare = make_run_folders.override(task_id="prepare")(']
        lines += ["    RUN_DIR,", *_list_lines(self._folders(), 4), ")"]
        return "\n".join(lines)

    def _folders(self) -> list[str]:
        return [_combo_folder(i) for i in range(len(self.ctx.grid))] if self.ctx.grid else [""]

    def _task(self, step: ExportStep) -> str:
        """One step's operator; mapped over the grid's parameter sets when there is a grid."""
        factory = "docker_step" if self.operator == "docker" else "pod_step"
        head = f"{_variable(step.task)} = {factory}"
        if not self.ctx.grid:
            lines = [f"{head}(", f"    {_literal(step.task)},", '    "",']
            lines += [*_list_lines(self._arguments(step, {}, ""), 4), ")"]
            return "\n".join(lines)
        lines = [f"{head}_mapped(", f"    {_literal(step.task)},", "    ["]
        for index, combo in enumerate(self.ctx.grid):
            folder = _combo_folder(index)
            lines += ["        (", f"            {_literal(folder)},"]
            lines += [*_list_lines(self._arguments(step, combo, folder), 12), "        ),"]
        lines += ["    ],", ")"]
        return "\n".join(lines)

    def _arguments(self, step: ExportStep, combo: dict[str, Any], folder: str) -> list[str]:
        """The script's options: the step, its workdir, every parameter (a swept one fixed)."""
        workdir = f"{MOUNT_POINT}/{folder}/artifacts" if folder else WORKDIR
        args = ["--step", step.name, "--workdir", workdir]
        for param in self.ctx.parameters:
            if param.name in combo:
                value = parameter_text(param.type, combo[param.name])
            else:
                value = f"{{{{ params.{param.name} }}}}"
            args.append(f"{param.option}={value}")
        return args

    def _edges(self) -> list[str]:
        """``a >> b`` for each dependency: explicit ``after`` and data edges alike."""
        lines = []
        for step in self.ctx.steps:
            upstream = sorted({*step.after, *(producer for _, producer in step.inputs)})
            if not upstream:
                lines.append(f"prepare >> {_variable(step.task)}")
            for task_name in upstream:
                lines.append(f"{_variable(task_name)} >> {_variable(step.task)}")
        return lines


def _list_lines(items: list[str], indent: int) -> list[str]:
    """A list literal of strings, one item a line (as ruff formats a long one)."""
    pad = " " * indent
    return [f"{pad}[", *(f"{pad}    {_literal(item)}," for item in items), f"{pad}],"]


def _combo_folder(index: int) -> str:
    return f"grid-{index + 1:03d}"


def _variable(task_name: str) -> str:
    """A Python name for a task's variable (task ids may hold ``-`` and ``.``)."""
    name = re.sub(r"\W", "_", task_name)
    return f"task_{name}"


def _assign(name: str, text: str, width: int = 80) -> str:
    """``NAME = "text"``, a long text as parenthesised pieces so no line passes the limit."""
    if len(name) + len(_literal(text)) + 3 <= width:
        return f"{name} = {_literal(text)}"
    pieces = [text[i : i + width - 10] for i in range(0, len(text), width - 10)]
    return "\n".join([f"{name} = (", *(f"    {_literal(p)}" for p in pieces), ")"])


def _wrap(line: str, width: int = 96) -> str:
    """Wrap a docstring line at spaces so the file stays within the line length."""
    if len(line) <= width:
        return line
    out, current = [], ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\n".join(out)


DOCKER_HELPERS = '''
@task
def make_run_folders(run_dir: str, folders: list[str]) -> None:
    """The run's shared folder(s) on the Docker host, before any step mounts them."""
    for folder in folders:
        (Path(run_dir) / folder).mkdir(parents=True, exist_ok=True)


def docker_step(task_id: str, folder: str, arguments: list[str]) -> DockerOperator:
    """One step in the version's image, the run's folder mounted as its working directory."""
    return DockerOperator(task_id=task_id, command=arguments, mounts=[mount(folder)], **DOCKER)


def docker_step_mapped(task_id: str, sets: list[tuple[str, list[str]]]) -> DockerOperator:
    """One step mapped over a grid: each parameter set in its own subfolder of the run."""
    kwargs = [{"command": arguments, "mounts": [mount(folder)]} for folder, arguments in sets]
    return DockerOperator.partial(task_id=task_id, **DOCKER).expand_kwargs(kwargs)


def mount(folder: str) -> Mount:
    return Mount(target="/work", source=f"{RUN_DIR}/{folder}".rstrip("/"), type="bind")


DOCKER = {
    "image": IMAGE,
    "entrypoint": ["python", SCRIPT],
    "network_mode": "none",
    "mount_tmp_dir": False,
    "auto_remove": "success",
    "user": f"{os.getuid()}:{os.getgid()}",
    "do_xcom_push": False,
}
'''

K8S_HELPERS = '''
@task
def make_run_folders(run_dir: str, folders: list[str]) -> None:
    """Nothing to make: a pod's subPath folder is created when the claim is mounted."""


def pod_step(task_id: str, folder: str, arguments: list[str]) -> KubernetesPodOperator:
    """One step in the version's image, the run's subfolder of the claim as its workdir."""
    return KubernetesPodOperator(
        task_id=task_id, arguments=arguments, env_vars=run_env(folder), **POD
    )


def pod_step_mapped(task_id: str, sets: list[tuple[str, list[str]]]) -> KubernetesPodOperator:
    """One step mapped over a grid: each parameter set in its own subfolder of the run."""
    kwargs = [{"arguments": arguments, "env_vars": run_env(folder)} for folder, arguments in sets]
    return KubernetesPodOperator.partial(task_id=task_id, **POD).expand_kwargs(kwargs)


def run_env(folder: str) -> dict[str, str]:
    return {"DSOPS_RUN_DIR": f"{RUN_DIR}/{folder}".rstrip("/")}


POD = {
    "image": IMAGE,
    "cmds": ["python", SCRIPT],
    "name": "dsops-step",
    "get_logs": True,
    "volumes": [
        k8s.V1Volume(
            name="dsops-shared",
            persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
                claim_name=SHARED_CLAIM
            ),
        )
    ],
    "volume_mounts": [
        k8s.V1VolumeMount(name="dsops-shared", mount_path="/work", sub_path_expr="$(DSOPS_RUN_DIR)")
    ],
}
'''

OBJECT_STORE_HELPERS = '''

def task_folder(context: dict) -> tuple[ObjectStoragePath, Path]:
    """This task's folder in the object store and on the Docker host (a grid's own)."""
    index = context["ti"].map_index
    folder = f"/grid-{index + 1:03d}" if index >= 0 else ""
    run = context["task"].render_template(RUN_DIR, context).rsplit("/", 1)[1]
    remote = ObjectStoragePath(f"{ARTIFACTS}/{run}{folder}")
    return remote, Path(context["task"].render_template(RUN_DIR, context) + folder)


def pull(context: dict) -> None:
    """Before a step: what earlier steps stored, from the object store to the Docker host."""
    remote, local = task_folder(context)
    if remote.exists():
        for item in remote.rglob("*"):
            if item.is_file():
                target = local / item.path[len(remote.path) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                item.copy(ObjectStoragePath(f"file://{target}"))


def push(context: dict, result: object = None) -> None:
    """After a step: its folder from the Docker host to the object store."""
    remote, local = task_folder(context)
    for item in local.rglob("*"):
        if item.is_file():
            target = remote / str(item.relative_to(local))
            target.parent.mkdir(parents=True, exist_ok=True)
            ObjectStoragePath(f"file://{item}").copy(target)


DOCKER.update(pre_execute=pull, post_execute=push)
'''
