"""Data flow between a pipeline's steps: their inputs and outputs, dependencies and run order.

Built on dsops_jupyter.flow's scan of each step's code, in notebook order: a step reads a name
from the last earlier step that wrote it (or from a parameter), and runs after it.
"""

from __future__ import annotations

import ast

from dsops_jupyter import flow, ipysyntax, order
from dsops_jupyter.errors import CycleError
from dsops_jupyter.pipeline import Cell, Pipeline, Step
from dsops_jupyter.scopes import BUILTINS, Context

# Names a notebook may read without defining them (IPython's namespace, our display fallback).
KNOWN_NAMES = frozenset(
    {"display", "get_ipython", "In", "Out", "_", "__", "___", *ipysyntax.HELPERS}
)
# Parameter types whose values cannot change in place: never passed on as changed.
IMMUTABLE_TYPES = frozenset({"int", "float", "str", "bool"})


def analyse_flow(pipeline: Pipeline) -> None:
    """Fill reads/writes/inputs/outputs and dependencies; order steps; detect cycles.

    A step that may change a value it reads in place writes it (see dsops_jupyter.mutation), so
    the steps reading it later get the changed value from that step and depend on it. A step
    that writes a name also runs after the earlier steps that read its previous value, so the
    whole script never shows them the new one (an ``after:`` that contradicts it is a cycle).
    """
    param_names = {p.name for p in pipeline.parameters}
    mutable_params = {p.name for p in pipeline.parameters if p.type not in IMMUTABLE_TYPES}
    module_names = pipeline.module_names
    known = BUILTINS | module_names | KNOWN_NAMES
    by_index = {c.index: c for c in pipeline.cells}
    context = Context()  # imports and notebook functions, seen in notebook order
    module = flow.scan(
        [n for c in pipeline.cells for n in (c.statements if c.role == "shared" else c.hoisted)],
        context=context,
    )
    pipeline.free_reads.update(module.reads)
    pipeline.bound_names.update(module.binds)
    last_writer: dict[str, str] = {}
    star_imported = False  # `from m import *` may have bound any name
    readers: dict[str, list[str]] = {}  # steps that read a name's current value
    run_after: dict[str, set[str]] = {step.name: set() for step in pipeline.steps}
    later_reads = _reads_after_each_step(pipeline.steps, by_index)
    for step, read_later in zip(pipeline.steps, later_reads, strict=True):  # notebook order
        names = flow.scan([n for i in step.cells for n in by_index[i].kept], context=context)
        pipeline.free_reads.update(names.reads)
        pipeline.bound_names.update(names.binds)
        binds = set(names.binds)
        step.writes = [
            n
            for n in names.writes
            if n not in module_names
            and (n in binds or n in last_writer or n in mutable_params)  # changed in place
        ]
        if _star_imports([n for i in step.cells for n in by_index[i].kept]):
            star_imported = True
            # It may rebind any earlier value a later step reads: that value passes through it.
            shadowed = sorted(({*last_writer, *param_names} & read_later) - module_names)
            names.reads += [n for n in shadowed if n not in names.reads]
            step.writes += [n for n in shadowed if n not in step.writes]
        for name in names.reads:
            if name in last_writer:
                step.inputs.append((name, last_writer[name]))
            elif name in param_names:
                step.inputs.append((name, None))
                step.parameters.append(name)
            elif name not in known and not star_imported:
                pipeline.warnings.append(
                    f"step {step.name!r} reads {name!r}, which no earlier step, parameter or "
                    f"import defines"
                )
        step.reads = [name for name, source in step.inputs if source is not None]
        step.inferred = list(dict.fromkeys(s for _, s in step.inputs if s is not None))
        step.depends_on = list(dict.fromkeys([*step.after, *step.inferred]))
        for name, _ in step.inputs:
            readers.setdefault(name, []).append(step.name)
        for name in step.writes:
            last_writer[name] = step.name
            run_after[step.name].update(readers.pop(name, []))
        run_after[step.name].discard(step.name)
    by_name = {s.name: s for s in pipeline.steps}
    for step in pipeline.steps:
        for name, source in step.inputs:
            if source is not None and name not in by_name[source].outputs:
                by_name[source].outputs.append(name)
    for step in pipeline.steps:  # outputs in the order the step first wrote them
        step.outputs = [n for n in step.writes if n in step.outputs]
    run_order = flow.topological_order(
        [s.name for s in pipeline.steps],
        {s.name: [*s.depends_on, *sorted(run_after[s.name])] for s in pipeline.steps},
    )
    pipeline.steps = [by_name[name] for name in run_order]


def depend_on_rebound_definitions(pipeline: Pipeline) -> None:
    """A step that runs another step's definition again still comes after that step: a
    papermill run of it alone (``dsops run --step``) must run the defining cell first."""
    position = {s.name: i for i, s in enumerate(pipeline.steps)}
    for step in pipeline.steps:
        for _, source, _ in step.rebound:
            if position[source] > position[step.name]:
                raise CycleError(
                    f"step {step.name!r} uses a definition of step {source!r} but is ordered "
                    f"before it (after: markers); remove the marker or move the definition"
                )
            if source not in step.depends_on:
                step.depends_on.append(source)


def _reads_after_each_step(steps: list[Step], by_index: dict[int, Cell]) -> list[set[str]]:
    """For each step (notebook order), the names the steps after it read."""
    found: list[set[str]] = []
    after: set[str] = set()
    for step in reversed(steps):
        found.append(set(after))
        after.update(flow.scan([n for i in step.cells for n in by_index[i].kept]).reads)
    return found[::-1]


def _star_imports(statements: list[ast.stmt]) -> bool:
    return any(order.is_star_import(node) for top in statements for node in ast.walk(top))
