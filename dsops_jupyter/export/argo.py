"""Argo Workflows: the version as a ``Workflow`` written with hera.

One container template per step, in the version's image, running the step runner
(`_runner.py`). Step outputs are Argo output artifacts (the artifact's folder, kept in the
cluster's artifact repository) that later steps take as input artifacts; notebook parameters are
workflow arguments with their defaults. The steps form the DAG template ``pipeline``; the entry
DAG runs it once, or once per parameter set of a grid (``withItems``). Kale's extras become
resource limits, template labels and annotations, and secret volumes; the workflow's labels and
annotations name the version's tag, commit and image. The last step also outputs what it wrote
to its folder (``dsops-files``) and the ``pipeline-metrics`` numbers (``dsops-metrics``).
"""

from __future__ import annotations

from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Artifact,
    Container,
    Parameter,
    Resources,
    SecretVolume,
    Task,
    Workflow,
)

from dsops_jupyter.export import (
    ExportContext,
    ExportStep,
    NameRule,
    names_file,
    parameter_text,
    sanitise,
)

MAIN_FILE = "workflow.yaml"
# Argo template and task names: lower-case DNS labels.
NAME_RULE = NameRule(invalid=r"[^a-z0-9-]+", lower=True, max_length=63)
IN_DIR = "/tmp/dsops/in"
OUT_DIR = "/tmp/dsops/out"
FILES_OUTPUT = "dsops-files"
METRICS_OUTPUT = "dsops-metrics"
_LABEL_KEYS = ("dsops.io/pipeline", "dsops.io/version", "dsops.io/commit")


def render(ctx: ExportContext) -> dict[str, bytes]:
    """``workflow.yaml`` (an Argo Workflow) and ``names.json`` (step -> template, version)."""
    text = yaml.safe_dump(workflow(ctx).to_dict(), sort_keys=False, width=100)
    return {MAIN_FILE: text.encode(), "names.json": names_file(ctx)}


def workflow(ctx: ExportContext) -> Workflow:
    metadata = ctx.metadata()
    labels = {key: _label_value(metadata[key]) for key in _LABEL_KEYS if key in metadata}
    annotations = {key: value for key, value in metadata.items() if key not in labels}
    annotations["dsops.io/description"] = ctx.description
    name = sanitise([ctx.name], NAME_RULE)[ctx.name]
    with Workflow(
        generate_name=f"{name}-",
        entrypoint="main",
        labels=labels,
        annotations=annotations,
        arguments=[
            Parameter(name=p.name, value=parameter_text(p.type, p.default)) for p in ctx.parameters
        ],
    ) as flow:
        templates = {step.name: _template(ctx, step) for step in ctx.steps}
        names = [p.name for p in ctx.parameters]
        with DAG(name="pipeline", inputs=[Parameter(name=n) for n in names]):
            tasks: dict[str, Task] = {}
            for step in ctx.steps:
                tasks[step.task] = _task(step, templates[step.name], tasks)
        with DAG(name="main"):
            Task(
                name="run",
                template="pipeline",
                arguments=[_pipeline_argument(n, n in ctx.swept) for n in names],
                with_items=ctx.grid_items() or None,
            )
    return flow


def _pipeline_argument(name: str, swept: bool) -> Parameter:
    """The pipeline DAG's parameter: the grid's item when swept, else the workflow's argument."""
    source = f"item.{name}" if swept else f"workflow.parameters.{name}"
    return Parameter(name=name, value=f"{{{{{source}}}}}")


def _task(step: ExportStep, template: Container, tasks: dict[str, Task]) -> Task:
    """The step's task in the pipeline DAG: its parameters and the artifacts it takes."""
    arguments: list[Parameter | Artifact] = [
        Parameter(name=n, value=f"{{{{inputs.parameters.{n}}}}}") for n in step.parameters
    ]
    arguments += [
        Artifact(name=n, from_=f"{{{{tasks.{producer}.outputs.artifacts.{n}}}}}")
        for n, producer in step.inputs
    ]
    return Task(
        name=step.task,
        template=template,
        arguments=arguments,
        dependencies=sorted(set(step.after)) or None,
    )


def _template(ctx: ExportContext, step: ExportStep) -> Container:
    last = step is ctx.steps[-1]
    outputs = [Artifact(name=n, path=f"{OUT_DIR}/{n}") for n in step.outputs]
    files = f"{OUT_DIR}/{FILES_OUTPUT}" if last else None
    metrics = (METRICS_OUTPUT, f"{OUT_DIR}/{METRICS_OUTPUT}.json") if last and ctx.metrics else None
    if files:
        outputs.append(Artifact(name=FILES_OUTPUT, path=files))
    if metrics:
        outputs.append(Artifact(name=metrics[0], path=metrics[1]))
    command = ctx.step_command(
        step,
        inputs={n: f"{IN_DIR}/{n}" for n, _ in step.inputs},
        outputs={n: f"{OUT_DIR}/{n}" for n in step.outputs},
        parameters={n: f"{{{{inputs.parameters.{n}}}}}" for n in step.parameters},
        files=files,
        metrics=metrics,
    )
    extras = step.extras
    annotations = {"dsops.io/step": step.name} | extras.annotations
    if extras.image:
        annotations["dsops.io/kale-image"] = extras.image
    return Container(
        name=step.task,
        image=ctx.image.reference,
        command=command,
        inputs=[Parameter(name=n) for n in step.parameters]
        + [Artifact(name=n, path=f"{IN_DIR}/{n}") for n, _ in step.inputs],
        outputs=outputs,
        resources=_resources(extras.limits),
        labels=extras.labels or None,
        annotations=annotations,
        volumes=[
            SecretVolume(name=f"secret-{i}", secret_name=secret, mount_path=path)
            for i, (secret, path) in enumerate(extras.secrets.items())
        ]
        or None,
    )


def _resources(limits: dict[str, str]) -> Resources | None:
    if not limits:
        return None
    known = {"cpu": "cpu_limit", "memory": "memory_limit"}
    settings: dict[str, Any] = {known[k]: v for k, v in limits.items() if k in known}
    for resource, amount in limits.items():
        if resource not in known:  # an accelerator such as nvidia.com/gpu
            settings.setdefault("custom_resources", {})[resource] = amount
    return Resources(**settings)


def _label_value(text: str) -> str:
    """Kubernetes label values: at most 63 of [A-Za-z0-9_.-]."""
    return sanitise([text], NameRule(r"[^A-Za-z0-9_.-]+", lower=False, max_length=63))[text]
