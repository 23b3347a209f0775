"""Kubeflow Pipelines v2: the version as a pipeline built with the kfp SDK, compiled to IR YAML.

One container component per step, in the version's image, running the step runner
(`_runner.py`): step outputs are KFP ``Output[Artifact]`` (each the artifact's folder), inputs
``Input[Artifact]``, so data moves through KFP's artifact store, not a shared volume. Notebook
parameters are typed pipeline parameters with their defaults; a grid is a ``ParallelFor`` over
the parameter sets. Kale's extras become task settings (limits, and through kfp-kubernetes pod
labels, annotations and secret volumes); the last step reports the ``pipeline-metrics`` names as
a KFP ``Metrics`` output and what it wrote to its folder as the ``dsops_files`` artifact. The
pipeline's description and every pod's labels name the version's tag and commit.
"""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from kfp import compiler, dsl, kubernetes

from dsops_jupyter.export import (
    ExportContext,
    ExportStep,
    NameRule,
    names_file,
    sanitise,
)

MAIN_FILE = "pipeline.yaml"
# KFP makes task names of component names: lower-case, digits and dashes.
NAME_RULE = NameRule(invalid=r"[^a-z0-9-]+", lower=True, max_length=63)
FILES_OUTPUT = "dsops_files"
METRICS_OUTPUT = "dsops_metrics"
_TYPES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "any": str,
}
# Label values: at most 63 of [A-Za-z0-9_.-]; the tag (with "/") goes in an annotation.
_LABEL_KEYS = ("dsops.io/pipeline", "dsops.io/version", "dsops.io/commit")


def render(ctx: ExportContext) -> dict[str, bytes]:
    """``pipeline.yaml`` (KFP IR) and ``names.json`` (step -> task, version, image)."""
    pipeline = _pipeline(ctx)
    with tempfile.TemporaryDirectory(prefix="dsops-kfp-") as tmp:
        path = Path(tmp) / MAIN_FILE
        compiler.Compiler().compile(pipeline, str(path))
        return {MAIN_FILE: path.read_bytes(), "names.json": names_file(ctx)}


def _pipeline(ctx: ExportContext) -> Callable[..., Any]:
    components = {step.name: _component(ctx, step) for step in ctx.steps}
    outputs = _pipeline_outputs(ctx)

    def body(*values: Any) -> Any:  # called with a placeholder per pipeline parameter
        parameters = dict(zip([p.name for p in ctx.parameters], values, strict=True))
        if not ctx.grid:
            last = _tasks(ctx, components, parameters)
            return outputs(**{name: last.outputs[name] for name in outputs._fields})
        # the swept values travel as text (KFP types a loop item's fields by guess), and the
        # components take them as text: the script parses them as it parses its options
        with dsl.ParallelFor(items=ctx.grid_items()) as item:
            swept = {name: getattr(item, name) for name in ctx.swept}
            _tasks(ctx, components, {**parameters, **swept})
        return None

    body.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=_default(p.type, p.default),
                annotation=_TYPES[p.type],
            )
            for p in ctx.parameters
        ],
        return_annotation=inspect.Signature.empty if ctx.grid else outputs,
    )
    body.__name__ = ctx.name
    name = sanitise([ctx.name], NAME_RULE)[ctx.name]
    return dsl.pipeline(name=name, description=ctx.description)(body)


def _pipeline_outputs(ctx: ExportContext) -> Any:
    """The pipeline's outputs: what the last step wrote (and its metrics), so a run shows them."""
    fields: list[tuple[str, Any]] = [(FILES_OUTPUT, dsl.Artifact)]
    if ctx.metrics:
        fields.append((METRICS_OUTPUT, dsl.Metrics))
    return NamedTuple("Outputs", fields)


def _default(kind: str, value: Any) -> Any:
    """`any` parameters travel as text (the script parses Python literals)."""
    return repr(value) if kind == "any" else value


def _tasks(
    ctx: ExportContext, components: dict[str, Callable[..., Any]], values: dict[str, Any]
) -> Any:
    """One task per step, wired by artifacts; explicit ``after`` for order without data.
    Returns the last step's task."""
    tasks: dict[str, Any] = {}
    for step in ctx.steps:
        arguments = {name: values[name] for name in step.parameters}
        for name, producer in step.inputs:
            arguments[name] = tasks[producer].outputs[name]
        task = components[step.name](**arguments)
        task.set_display_name(step.name)
        for after in step.after:
            if after not in {producer for _, producer in step.inputs}:
                task.after(tasks[after])
        _settings(ctx, step, task)
        tasks[step.task] = task
    return task


def _settings(ctx: ExportContext, step: ExportStep, task: Any) -> None:
    """Kale's extras and the version's metadata as the task's settings."""
    extras = step.extras
    for resource, amount in extras.limits.items():
        if resource == "cpu":
            task.set_cpu_limit(amount)
        elif resource == "memory":
            task.set_memory_limit(amount)
        else:  # an accelerator such as nvidia.com/gpu
            task.set_accelerator_type(resource).set_accelerator_limit(int(amount))
    metadata = ctx.metadata()
    labels = {k: metadata[k] for k in _LABEL_KEYS if k in metadata} | extras.labels
    annotations = {k: v for k, v in metadata.items() if k not in labels} | extras.annotations
    if extras.image:
        annotations["dsops.io/kale-image"] = extras.image
    annotations["dsops.io/step"] = step.name
    for key, value in labels.items():
        kubernetes.add_pod_label(task, key, value)
    for key, value in annotations.items():
        kubernetes.add_pod_annotation(task, key, value)
    for secret, mount_path in extras.secrets.items():
        kubernetes.use_secret_as_volume(task, secret_name=secret, mount_path=mount_path)


def _component(ctx: ExportContext, step: ExportStep) -> Callable[..., Any]:
    """A container component whose interface is the step's parameters and artifacts."""
    last = step is ctx.steps[-1]
    params: list[inspect.Parameter] = []
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    for name in step.parameters:
        kind = str if name in ctx.swept else _TYPES[ctx.parameter(name).type]
        params.append(inspect.Parameter(name, keyword, annotation=kind))
    for name, _ in step.inputs:
        params.append(inspect.Parameter(name, keyword, annotation=dsl.Input[dsl.Artifact]))
    for name in step.outputs:
        params.append(inspect.Parameter(name, keyword, annotation=dsl.Output[dsl.Artifact]))
    params.append(inspect.Parameter(FILES_OUTPUT, keyword, annotation=dsl.Output[dsl.Artifact]))
    if last and ctx.metrics:
        metrics = dsl.Output[dsl.Metrics]
        params.append(inspect.Parameter(METRICS_OUTPUT, keyword, annotation=metrics))

    def spec(*values: Any) -> dsl.ContainerSpec:  # called with a placeholder per parameter
        args = dict(zip([p.name for p in params], values, strict=True))
        command = ctx.step_command(
            step,
            inputs={name: args[name].path for name, _ in step.inputs},
            outputs={name: args[name].path for name in step.outputs},
            parameters={name: str(args[name]) for name in step.parameters},
            files=args[FILES_OUTPUT].path,
            metrics=(METRICS_OUTPUT, args[METRICS_OUTPUT].path) if METRICS_OUTPUT in args else None,
            executor_input=dsl.PIPELINE_TASK_EXECUTOR_INPUT_PLACEHOLDER,
        )
        return dsl.ContainerSpec(image=ctx.image.reference, command=command)

    spec.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    spec.__name__ = f"{ctx.name}_{step.task}".replace("-", "_")
    spec.__doc__ = f"Step {step.name} of {ctx.description}."
    return dsl.container_component(spec)
