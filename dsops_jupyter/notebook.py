"""Read a notebook into a Pipeline: steps, parameters, shared code and the data flow between steps.

Markers come from cell tags or a first line ``%%dsops ...``; Kale's tags are read too. Messages
count cells from 1 (as a person counts them from the top); JSON ``cells`` fields are 0-based
indices into the notebook's cell list. This module groups the cells into steps; the cells are
read by dsops_jupyter.cells, hoisting is dsops_jupyter.hoist's, the data flow
dsops_jupyter.stepflow's.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from dsops_jupyter import ipysyntax
from dsops_jupyter.cells import checked_notebook, load_notebook, parse_cell, read_cell, too_deep
from dsops_jupyter.errors import NotebookError, ParameterError, UnknownAfterError
from dsops_jupyter.hoist import hoist
from dsops_jupyter.ipysyntax import indent_code
from dsops_jupyter.markers import MAX_NAME, pipeline_name
from dsops_jupyter.params import Parameter, read_parameters_cell
from dsops_jupyter.pipeline import Cell, Pipeline, Step
from dsops_jupyter.spec import content_hash
from dsops_jupyter.stepflow import analyse_flow, depend_on_rebound_definitions

IMPLICIT_STEP = "setup"
# Wraps the computed lines of a parameters cell (bound, called and deleted: never hoisted).
PARAMETERS_CELL_FUNCTION = "_parameters_cell"
ZERO_CONFIG_STEP = "main"


def read_pipeline(path: str | Path, *, name: str | None = None, content: object = None) -> Pipeline:
    """The pipeline a notebook describes; raises a DsopsError naming the cell for bad markers.
    ``content``: the notebook's JSON as edited, not yet saved (``path`` still names it and
    finds its project's config)."""
    try:
        return _read_pipeline(Path(path), name, content)
    except RecursionError:  # a tree too deep for the recursive analyses (a 500-term sum)
        raise too_deep(Path(path)) from None


def _read_pipeline(path: Path, name: str | None, content: object) -> Pipeline:
    nb = load_notebook(path) if content is None else checked_notebook(content, path)
    where = path.name
    cells = [
        read_cell(index, raw, where)
        for index, raw in enumerate(nb["cells"])
        if raw.get("cell_type") == "code"
    ]
    for cell in cells:
        if cell.role in ("skip", "injected") or cell.tree is not None:
            continue
        try:
            cell.tree = parse_cell(cell.code, f"{where}, {cell.label}")
        except SyntaxError as err:
            raise NotebookError(
                f"{where}, {cell.label}, line {err.lineno}: syntax error ({err.msg})"
            ) from None
    parameters, computed = _parameters(cells, where)
    steps, split_notes = _group_steps(cells, where)
    hoisted, hoisted_names = hoist(cells, steps)
    pipeline = Pipeline(
        name=pipeline_name(path, name),
        notebook_path=path,
        cells=cells,
        steps=steps,
        parameters=parameters,
        computed=computed,
        content_hash=content_hash(nb),
        hoisted=hoisted,
        module_names=hoisted_names,
    )
    by_index = {c.index: c for c in cells}
    pipeline.steps = [
        s for s in steps if s.name != IMPLICIT_STEP or any(by_index[i].kept for i in s.cells)
    ]
    analyse_flow(pipeline)
    depend_on_rebound_definitions(pipeline)
    pipeline.interactive = _interactive_lines(cells)
    pipeline.notes += split_notes + _interactive_note(pipeline.interactive)
    return pipeline


def _interactive_lines(cells: list[Cell]) -> list[dict[str, Any]]:
    """Lines that drive dsops itself (``%load_ext dsops_jupyter``, ``%dsops ...``): tools for
    the live notebook, left out of pipelines, scripts, runs and cache keys. ``cell`` is the
    0-based index, ``line`` 1-based in the cell as the user sees it."""
    return [
        {"cell": c.index, "line": number, "text": text}
        for c in cells
        if c.role not in ("skip", "injected")
        for number, text in ipysyntax.dsops_lines(c.source)
    ]


def _interactive_note(lines: list[dict[str, Any]]) -> list[str]:
    """Said once: which lines were left out, and why."""
    if not lines:
        return []
    where = ", ".join(f"cell {x['cell'] + 1} line {x['line']} `{x['text']}`" for x in lines)
    return [f"left out of pipelines, scripts and runs (they drive dsops itself): {where}"]


def _parameters(cells: list[Cell], where: str) -> tuple[list[Parameter], list[str]]:
    """The literal parameters and the computed names of the (one) parameters cell.

    A cell with computed lines keeps them as code, wrapped so that they see the cell's own
    literals, not the given values, exactly as papermill runs the cell before its injected one.
    """
    marked = [c for c in cells if c.role == "parameters"]
    if len(marked) > 1:
        numbers = ", ".join(str(c.index + 1) for c in marked)
        raise ParameterError(f"{where}: cells {numbers} are all marked parameters; keep one")
    if not marked:
        return [], []
    cell = marked[0]
    found = read_parameters_cell(cell.code, cell.index + 1, where)
    if found.computed:
        cell.computes = found.computed
        cell.code = _computed_parameters_code(cell.code, found.computed)
        cell.tree = ast.parse(cell.code)
    return found.parameters, found.computed


def _computed_parameters_code(code: str, computed: list[str]) -> str:
    names = ", ".join(computed)
    return (
        f"def {PARAMETERS_CELL_FUNCTION}():\n"
        f'    """The parameters cell as papermill runs it: before the given values."""\n'
        f"{indent_code(code.strip(chr(10)))}\n"
        f"    return {names}\n\n\n"
        f"{names} = {PARAMETERS_CELL_FUNCTION}()\n"
        f"del {PARAMETERS_CELL_FUNCTION}\n"
    )


def _group_steps(cells: list[Cell], where: str) -> tuple[list[Step], list[str]]:
    """Group code cells into steps: a step cell starts one, unmarked cells continue it.

    A step name tagged again on a later cell: right after its own step the cell simply
    continues it; after other cells it starts a step of its own (``_split_step``), since
    Kale's way, appending that cell's code to the earlier step, would run it before the
    cells in between (and in Kale's own Example.ipynb, before the training it evaluates).
    Notebook order is what papermill runs, so it stays the truth. Returns the steps and
    one note per split.
    """
    has_steps = any(c.role == "step" for c in cells)
    # every tagged name (a split never takes one), then: name -> its latest split-off part
    last_part: dict[str, str] = {c.step: c.step for c in cells if c.step}
    steps: dict[str, Step] = {}
    notes: list[str] = []
    current: Step | None = None
    for cell in cells:
        name = cell.step or ""  # set whenever the role is step (markers set both together)
        if cell.role == "step" and current is not None and last_part[name] == current.name:
            pass  # the same name again on the next step cell: one step, as Kale reads it
        elif cell.role == "step" and name in steps:
            current = _split_step(steps, cell, last_part, notes)
        elif cell.role == "step":
            current = steps[name] = Step(name=name)
        elif cell.in_step and current is None:
            current = steps.setdefault(
                IMPLICIT_STEP if has_steps else ZERO_CONFIG_STEP,
                Step(name=IMPLICIT_STEP if has_steps else ZERO_CONFIG_STEP),
            )
        elif not cell.in_step:
            continue
        assert current is not None
        current.cells.append(cell.index)
        current.after.extend(a for a in cell.after if a not in current.after)
        for key, values in cell.extras.items():
            current.extras.setdefault(key, []).extend(values)
    for step in steps.values():
        for dep in step.after:
            if dep not in steps:
                raise UnknownAfterError(
                    f"{where}: step {step.name!r} is marked after:{dep}, but no step {dep!r} "
                    f"exists (steps: {', '.join(steps)})"
                )
    return list(steps.values()), notes


def _split_step(
    steps: dict[str, Step], cell: Cell, last_part: dict[str, str], notes: list[str]
) -> Step:
    """A new step ``<name>_2`` (``_3``, ...) for a cell re-using an earlier, non-adjacent step's
    name; it runs after that name's previous part (an ``after`` edge) and as data flow says."""
    name = cell.step or ""
    taken = set(last_part) | set(steps)
    number = 2
    while (split := f"{name[: MAX_NAME - 1 - len(str(number))]}_{number}") in taken:
        number += 1
    previous = last_part.get(name, name)
    last_part[name] = split
    steps[split] = Step(name=split, after=[previous])
    notes.append(
        f"cell {cell.index + 1}: step {name!r} (started by cell {steps[name].cells[0] + 1}) is "
        f"tagged again after other cells; split off as step {split!r}, run after "
        f"{previous!r}, because the cells are not adjacent"
    )
    return steps[split]
