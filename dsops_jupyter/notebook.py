"""Read a notebook into a Pipeline: steps, parameters, shared code and the data flow between steps.

Markers come from cell tags or a first line ``%%dsops ...``; Kale's tags are read too. Messages
count cells from 1 (as a person counts them from the top); JSON ``cells`` fields are 0-based
indices into the notebook's cell list.
"""

from __future__ import annotations

import ast
import json
import keyword
import re
import shlex
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dsops_jupyter import escape, flow, ipysyntax, order
from dsops_jupyter.errors import (
    CycleError,
    MarkerError,
    NotebookError,
    ParameterError,
    UnknownStepError,
)
from dsops_jupyter.ipysyntax import indent_code
from dsops_jupyter.params import Parameter, read_parameters_cell
from dsops_jupyter.spec import content_hash, source_of

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
PIPELINE_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
KALE_STEP_EXTRAS = ("image", "limit", "cache", "label", "annotation", "secret", "volume")
ROLE_TAGS = {
    "parameters": "parameters",
    "pipeline-parameters": "parameters",
    "skip": "skip",
    "imports": "shared",
    "functions": "shared",
    "pipeline-metrics": "metrics",
    "injected-parameters": "injected",
}
MAX_NAME = 100  # pipeline and step names: file, module, tag and image names stay well in limits
IMPLICIT_STEP = "setup"
# Wraps the computed lines of a parameters cell (bound, called and deleted: never hoisted).
PARAMETERS_CELL_FUNCTION = "_parameters_cell"
ZERO_CONFIG_STEP = "main"
# Names a notebook may read without defining them (IPython's namespace, our display fallback).
KNOWN_NAMES = frozenset(
    {"display", "get_ipython", "In", "Out", "_", "__", "___", *ipysyntax.HELPERS}
)


@dataclass
class Cell:
    """One code cell as dsops sees it: its role and its Python code (markers and magics handled)."""

    index: int
    source: str
    tags: tuple[str, ...]
    role: str  # step | continue | parameters | skip | shared | metrics | injected
    step: str | None = None
    after: list[str] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    code: str = ""
    unsupported: list[str] = field(default_factory=list)  # magics plain Python cannot run
    tree: ast.Module | None = None
    kept: list[ast.stmt] = field(default_factory=list)  # run in the step (first: re-bound defs)
    hoisted: list[ast.stmt] = field(default_factory=list)  # statements moved to module level
    computes: list[str] = field(default_factory=list)  # parameters cell: names its code binds
    magic_code: str | None = None  # code in the step with --keep-magics, when it differs

    @property
    def in_step(self) -> bool:
        """Its code runs inside a step (a parameters cell only for its computed lines)."""
        return self.role in ("step", "continue", "metrics") or bool(self.computes)

    @property
    def label(self) -> str:
        return f"cell {self.index + 1}"


@dataclass
class Step:
    name: str
    cells: list[int] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    body: list[tuple[int, str]] = field(default_factory=list)  # (cell index, code) kept in the step
    magic_body: list[tuple[int, str]] = field(default_factory=list)  # the same, --keep-magics
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    inputs: list[tuple[str, str | None]] = field(default_factory=list)  # (name, step or None=param)
    outputs: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    # (cell index, step that defines it, code): definitions this step runs again, see _hoist
    rebound: list[tuple[int, str, str]] = field(default_factory=list)
    # (cell index, step, code): process set-up of earlier steps, rerun when this step runs alone
    replays: list[tuple[int, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cells": self.cells,
            "after": self.after,
            "inferred": self.inferred,
            "depends_on": self.depends_on,
            "reads": self.reads,
            "writes": self.writes,
            "inputs": [name for name, _ in self.inputs],
            "outputs": self.outputs,
            "parameters": self.parameters,
            "extras": self.extras,
        }


@dataclass
class Pipeline:
    name: str
    notebook_path: Path
    cells: list[Cell]
    steps: list[Step]  # in run order
    parameters: list[Parameter]
    content_hash: str
    hoisted: list[tuple[int, str]]  # (cell index, code) placed at module level, imports first
    module_names: set[str] = field(default_factory=set)  # names the hoisted code defines
    computed: list[str] = field(default_factory=list)  # bound by code in the parameters cell
    notes: list[str] = field(default_factory=list)  # what dsops leaves out, said once
    warnings: list[str] = field(default_factory=list)
    free_reads: set[str] = field(default_factory=set)  # names any code reads before binding
    bound_names: set[str] = field(default_factory=set)  # names any code binds

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        known = ", ".join(s.name for s in self.steps)
        raise UnknownStepError(f"{self.notebook_path.name} has no step {name!r} (steps: {known})")

    def upstream(self, names: list[str]) -> list[str]:
        """The chosen steps plus every step they need, in run order."""
        wanted: set[str] = set()
        pending = [self.step(name).name for name in names]
        while pending:
            name = pending.pop()
            if name not in wanted:
                wanted.add(name)
                pending.extend(self.step(name).depends_on)
        return [s.name for s in self.steps if s.name in wanted]

    @property
    def skipped_cells(self) -> list[int]:
        return [c.index for c in self.cells if c.role in ("skip", "injected")]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notebook": self.notebook_path.name,
            "content_hash": self.content_hash,
            "steps": [step.to_json() for step in self.steps],
            "parameters": [p.to_json() for p in self.parameters],
            "computed": self.computed,
            "notes": self.notes,
            "shared_cells": sorted({index for index, _ in self.hoisted}),
            "skipped_cells": self.skipped_cells,
            "warnings": self.warnings,
        }


# --- loading ---------------------------------------------------------------------------------
def load_notebook(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a notebook without nbformat's (slow) schema machinery.

    Every shape the rest of dsops relies on is checked here, so a malformed notebook is one
    NotebookError naming the cell, never an AttributeError deep in the converter.
    """
    if escape.text_problem(str(path)):
        raise NotebookError(f"{escape.shown(str(path))}: the file name is not UTF-8; rename it")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise NotebookError(f"{path}: no such notebook") from None
    except OSError as err:
        raise NotebookError(f"{escape.shown(str(path))}: cannot read it ({err.strerror})") from None
    try:
        nb = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        where = f" (line {err.lineno}, column {err.colno})" if hasattr(err, "lineno") else ""
        raise NotebookError(f"{path.name} is not valid JSON{where}: is it a notebook?") from None
    except RecursionError:
        raise NotebookError(f"{path.name} nests JSON too deeply to be a notebook") from None
    if not isinstance(nb, dict) or "nbformat" not in nb:
        raise NotebookError(f"{path.name} is JSON but not a Jupyter notebook (no nbformat field)")
    if nb.get("nbformat") != 4:
        nb = _upgrade(nb, path)
    _check_shape(nb, path.name)
    for cell in nb["cells"]:  # once, here: the converter and the runs then split on "\n" only
        source = source_of(cell)
        if "\r" in source:
            cell["source"] = normalise_newlines(source)
    return nb


def _check_shape(nb: dict[str, Any], where: str) -> None:
    """The fields dsops reads have the types nbformat 4 gives them; one line naming the cell."""
    if not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{where} is not a valid notebook: it has no list of cells")
    language: Any = nb
    keys: list[str] = []
    for key, default in (("metadata", {}), ("kernelspec", {}), ("language", "python")):
        if not isinstance(language, dict):
            break
        keys.append(key)
        language = language.get(key, default)
    if len(keys) < 3 or not isinstance(language, str):
        kind = "text" if len(keys) == 3 else "an object"
        raise NotebookError(
            f"{where}: malformed notebook ({'.'.join(keys)} is {_json_kind(language)}, "
            f"not {kind}); open and save it in JupyterLab"
        )
    if language.lower() not in ("python", "python3", ""):
        raise NotebookError(
            f"{where} uses a {escape.shown(language, 40)} kernel; dsops converts Python only"
        )
    for number, cell in enumerate(nb["cells"], 1):
        problem = _cell_problem(cell)
        if problem:
            raise NotebookError(f"{where}: cell {number} is malformed ({problem})")


def _cell_problem(cell: Any) -> str | None:
    """What is wrong with one cell's shape (or its text), or None."""
    if not isinstance(cell, dict) or not isinstance(cell.get("cell_type", ""), str):
        return "no cell_type/source"
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        return "its source is neither text nor a list of text lines"
    metadata = cell.get("metadata", {})
    if not isinstance(metadata, dict):
        return f"its metadata is {_json_kind(metadata)}, not an object"
    tags = metadata.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        shown = "a list holding non-text tags" if isinstance(tags, list) else _json_kind(tags)
        return f"metadata.tags is {shown}, not a list of text tags"
    if cell.get("cell_type") != "code":
        return None
    for text in (source, *tags):
        problem = escape.text_problem(text)
        if problem:
            return problem
    return None


def _json_kind(value: Any) -> str:
    """The JSON name of a value's type, as a notebook author sees the file."""
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list"}
    return "null" if value is None else kinds.get(type(value), "an object")


def _upgrade(nb: dict[str, Any], path: Path) -> dict[str, Any]:
    """nbformat 3 (and older) notebooks are upgraded in memory, as Jupyter does on open."""
    import nbformat

    version = nb.get("nbformat")
    if not isinstance(version, int) or isinstance(version, bool) or version > 4:
        raise NotebookError(f"{path.name}: unsupported nbformat {escape.shown(repr(version), 40)}")
    try:
        return dict(nbformat.reads(json.dumps(nb), as_version=4))
    except Exception as err:
        raise NotebookError(
            f"{path.name} is nbformat {version} and cannot be upgraded ({escape.shown(str(err))}); "
            f"open and save it in JupyterLab to upgrade it"
        ) from None


def pipeline_name(path: Path, name: str | None = None) -> str:
    """The pipeline's name: it names a Python module, a folder, a Git tag and a Docker image."""
    if name is not None:
        if not PIPELINE_NAME.match(name) or len(name) > MAX_NAME:
            raise MarkerError(
                f"pipeline name {escape.shown(name, 60)} must be at most {MAX_NAME} lower-case "
                f"letters, digits and _ (it names a Python module, a Git tag and a Docker image)"
            )
        return name
    derived = re.sub(r"[^a-z0-9_]+", "_", path.stem.lower()).strip("_") or "pipeline"
    derived = f"nb_{derived}" if derived[0].isdigit() else derived
    if len(derived) > MAX_NAME:
        raise MarkerError(
            f"{escape.shown(path.name, 60)}: the notebook name is too long to name the pipeline "
            f"(at most {MAX_NAME} characters); pass --name NAME"
        )
    return derived


# --- markers ---------------------------------------------------------------------------------
def check_step_name(name: str, where: str) -> str:
    if not IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise MarkerError(
            f"{where}: step name {name[:60]!r} is not a valid Python identifier "
            f"(letters, digits and _, not starting with a digit)"
        )
    if len(name) > MAX_NAME:
        raise MarkerError(f"{where}: step name {name[:60]!r}... is over {MAX_NAME} characters")
    return name


def normalise_newlines(source: str) -> str:
    """CRLF and lone CR as LF: the one line ending every later step splits on.

    Python's parser treats all three as line ends; splitting on LF alone once put a CR-only
    cell's statements on one line of the script, at module level (run on ``--help``).
    """
    return source.replace("\r\n", "\n").replace("\r", "\n")


def _classify(index: int, raw: dict[str, Any], where: str) -> Cell:
    source = source_of(raw)
    label = f"{where}, cell {index + 1}"
    first, _, rest = source.partition("\n")
    markers = read_markers(raw.get("metadata", {}).get("tags", []), first, label)
    cell = replace(markers, index=index, source=source)
    if first.strip().startswith("%%dsops"):
        source = rest
    try:  # most cells are plain Python: parse once, keep the tree
        cell.tree, cell.code = parse_cell(source, label), source
    except SyntaxError:
        cell.code, cell.unsupported = python_code(source)
    return cell


def parse_cell(code: str, label: str) -> ast.Module:
    """``ast.parse``, with the parser's own limits (nesting, memory) as one line naming the cell.

    SyntaxError is left to the caller: it may mean IPython syntax, not bad code.
    """
    try:
        tree = ast.parse(code)
    except (RecursionError, MemoryError):
        raise NotebookError(
            f"{label}: the code is nested too deeply for Python's parser; split the expression"
        ) from None
    return tree


def _deeper_than(tree: ast.AST, limit: int) -> bool:
    """Whether the tree is deeper than ``limit`` (iterative: the recursive visitors that read
    it later would hit Python's recursion limit on exactly such trees)."""
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return False


def _apply_tag(cell: Cell, tag: str, label: str) -> None:
    kind, sep, value = tag.partition(":")
    if sep and kind in ("step", "block") and not value:
        return  # Kale's empty ``block:`` (its extension writes it): the cell continues the step
    if sep and kind in ("step", "block"):
        _set_step(cell, check_step_name(value, label), label)
    elif sep and kind in ("after", "prev"):
        cell.after.append(check_step_name(value, label))
    elif sep and kind in KALE_STEP_EXTRAS:
        cell.extras.setdefault(kind, []).append(value)
    elif tag in ROLE_TAGS:
        _set_role(cell, ROLE_TAGS[tag], label)


def _set_role(cell: Cell, role: str, label: str) -> None:
    if cell.role not in ("continue", role):
        raise MarkerError(f"{label} is marked both {cell.role} and {role}; keep one marker")
    cell.role = role


def _set_step(cell: Cell, name: str, label: str) -> None:
    if cell.step not in (None, name):
        raise MarkerError(f"{label} starts two steps ({cell.step!r} and {name!r}); keep one")
    _set_role(cell, "step", label)
    cell.step = name


def read_markers(tags: Iterable[str], first_line: str, where: str) -> Cell:
    """The markers of one cell, its tags then a ``%%dsops`` first line, as a Cell without code.

    The one reader of the marker grammar: tests/marker_cases.json runs through it and through
    the frontend's src/markers.ts, so the badges and the core never disagree about a marker.
    """
    cell = Cell(index=-1, source="", tags=tuple(tags), role="continue")
    for tag in cell.tags:
        _apply_tag(cell, tag, where)
    if first_line.strip().startswith("%%dsops"):
        _apply_magic_line(cell, first_line.strip(), where)
    return cell


def parse_marker_line(line: str, where: str = "%%dsops") -> tuple[str, str | None, list[str]]:
    """Read one ``%%dsops ...`` line exactly as the core does: (role, step name, after).

    The magics validate their first line with this, so the live kernel and the saved
    notebook can never disagree about a marker.
    """
    cell = read_markers((), line, where)
    return cell.role, cell.step, cell.after


def _apply_magic_line(cell: Cell, line: str, label: str) -> None:
    try:
        words = shlex.split(line)[1:]
    except ValueError as err:
        raise MarkerError(f"{label}: cannot read {line!r} ({err})") from None
    usage = "use %%dsops step NAME [--after A,B], %%dsops parameters or %%dsops skip"
    if not words:
        raise MarkerError(f"{label}: {line!r} says nothing; {usage}")
    if words[0] in ("parameters", "skip") and len(words) == 1:
        _set_role(cell, words[0], label)
    elif words[0] == "step" and len(words) in (2, 4) and words[2:3] in ([], ["--after"]):
        _set_step(cell, check_step_name(words[1], label), label)
        for name in words[3].split(",") if len(words) == 4 else []:
            cell.after.append(check_step_name(name.strip(), label))
    else:
        raise MarkerError(f"{label}: cannot read {line!r}; {usage}")


# --- magics -----------------------------------------------------------------------------------
def python_code(source: str, *, keep_magics: bool = False) -> tuple[str, list[str]]:
    """Cell source as plain Python, and the magics plain Python cannot run (see ipysyntax).

    Source that already parses as Python is returned untouched, so a ``%`` inside a string
    is safe; IPython is imported only for cells that need its transformer.
    """
    found = ipysyntax.translate(source)
    return (found.kept if keep_magics else found.code), found.unsupported


def _without_marker(source: str) -> str:
    """The cell's code without a first ``%%dsops`` marker line (as _classify reads it)."""
    first, _, rest = source.partition("\n")
    return rest if first.strip().startswith("%%dsops") else source


# --- assembling the pipeline -----------------------------------------------------------------
def read_pipeline(path: str | Path, *, name: str | None = None) -> Pipeline:
    """The pipeline a notebook describes; raises a DsopsError naming the cell for bad markers."""
    try:
        return _read_pipeline(Path(path), name)
    except RecursionError:  # a tree too deep for the recursive analyses (a 500-term sum)
        raise _too_deep(Path(path)) from None


def _too_deep(path: Path) -> NotebookError:
    """The error for code nested deeper than the analyses recurse: found only on this path,
    so reading ordinary notebooks pays nothing for it."""
    nb = load_notebook(path)
    for index, raw in enumerate(nb["cells"]):
        try:
            deep = raw.get("cell_type") == "code" and _deeper_than(ast.parse(source_of(raw)), 200)
        except (SyntaxError, RecursionError, MemoryError):
            deep = False
        if deep:
            return NotebookError(
                f"{path.name}, cell {index + 1}: the code nests too deeply to analyse (a chain "
                f"`a + b + ...` adds a level per term); split it into shorter expressions"
            )
    return NotebookError(f"{path.name}: the code nests too deeply to analyse; split it")


def _read_pipeline(path: Path, name: str | None) -> Pipeline:
    nb = load_notebook(path)
    where = path.name
    cells = [
        _classify(index, raw, where)
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
    hoisted, hoisted_names = _hoist(cells, steps)
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
    _analyse_flow(pipeline)
    _depend_on_rebound_definitions(pipeline)
    pipeline.notes += split_notes + _dsops_lines_note(cells)
    return pipeline


def _dsops_lines_note(cells: list[Cell]) -> list[str]:
    """Lines that drive dsops itself are tools for the live notebook: say once they are left out."""
    numbers = [str(c.index + 1) for c in cells if ipysyntax.drives_dsops(_without_marker(c.source))]
    if not numbers:
        return []
    plural = "s" if len(numbers) > 1 else ""
    return [
        f"cell{plural} {', '.join(numbers)}: lines that drive dsops itself (%load_ext "
        f"dsops_jupyter, %dsops) are left out of pipelines, scripts and runs"
    ]


def _depend_on_rebound_definitions(pipeline: Pipeline) -> None:
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
        if cell.role == "step" and current is not None and last_part[cell.step] == current.name:  # type: ignore[index]
            pass  # the same name again on the next step cell: one step, as Kale reads it
        elif cell.role == "step" and cell.step in steps:
            current = _split_step(steps, cell, last_part, notes)
        elif cell.role == "step":
            current = steps[cell.step] = Step(name=cell.step)  # type: ignore[index]
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
    from dsops_jupyter.errors import UnknownAfterError  # a marker error: 400, not 404

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


def _hoist(cells: list[Cell], steps: list[Step]) -> tuple[list[tuple[int, str]], set[str]]:
    """Move what is provably order-independent to module level; the rest stays in its step.

    Shared cells (Kale's ``imports``/``functions``) run at module level as Kale runs them. From
    step cells only imports and def/class statements that ``_movable`` proves may run first
    move. A function or import left in a step that a later step uses is run again there
    (``_rebind_definitions``), so each step, alone in its own process, has it too.
    """
    by_index = {c.index: c for c in cells}
    in_steps = {i for step in steps for i in step.cells}
    running = [c for c in cells if c.role in ("shared", "parameters") or c.index in in_steps]
    statements = [n for c in running for n in c.tree.body]  # type: ignore[union-attr]
    facts = {id(n): order.statement_facts(n) for n in statements}
    counts = order.binding_counts(statements, facts)
    hoist_ids = _movable(running, in_steps, counts, facts)
    module_names: set[str] = set()
    for cell in running:
        if cell.role == "shared":
            module_names.update(flow.scan(cell.tree.body).writes)  # type: ignore[union-attr]
    import_code: list[tuple[int, str]] = []
    other_code: list[tuple[int, str]] = []
    original = {c.index: c.code for c in cells}
    for cell in cells:
        if cell.role == "shared":
            other_code.append((cell.index, cell.code))
            continue
        if not cell.in_step:
            continue
        kept, moved = _split_cell(cell, hoist_ids, cell.code)
        if not cell.computes and cell.code != _without_marker(cell.source):
            with_magics = ipysyntax.translate(_without_marker(cell.source)).kept
            if with_magics != cell.code:  # same lines, extension magics kept: split alike
                cell.magic_code = _split_cell(cell, hoist_ids, with_magics)[0]
        cell.kept = [n for n in cell.tree.body if id(n) not in hoist_ids]  # type: ignore[union-attr]
        cell.hoisted = [node for node, _ in moved]
        for node, text in moved:
            module_names.update(flow.scan([node]).writes)
            target = import_code if isinstance(node, ast.Import | ast.ImportFrom) else other_code
            target.append((cell.index, text))
        cell.code = kept
    for step in steps:
        step.body = [(i, by_index[i].code) for i in step.cells]
        step.magic_body = [(i, by_index[i].magic_code or by_index[i].code) for i in step.cells]
    stable = {n for n, count in counts.items() if count == 1} | module_names | flow.BUILTINS
    _rebind_definitions(steps, by_index, original, stable, facts)
    _replay_process_state(steps, by_index, original, module_names | flow.BUILTINS)
    seen: set[str] = set()
    unique_imports = [(i, t) for i, t in import_code if not (t in seen or seen.add(t))]
    return unique_imports + other_code, module_names


def _movable(
    running: list[Cell], in_steps: set[int], counts: Counter[str], facts: dict[int, order.Facts]
) -> set[int]:
    """ids of the step statements that may run first, at module level, changing nothing.

    An import or def/class qualifies when every name it binds is bound by it alone in the
    notebook (identical imports count once), it sits alone on its lines, and:
    - an import of anything outside the standard library comes before every statement that may
      change what imports find (sys.path, cwd, environment, files, importlib, magics);
    - a def/class reads, when defined and when called, only builtins the notebook never
      rebinds and names that move too.
    Code that binds names invisibly (exec, globals(), magics) moves nothing but __future__.
    """
    statements = [(c, n) for c in running for n in c.tree.body]  # type: ignore[union-attr]
    nodes = [n for _, n in statements]
    futures = {
        id(n)
        for c, n in statements
        if c.index in in_steps
        and isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and _alone_on_its_lines(n, c)
    }
    if any(facts[id(n)].dynamic for n in nodes):
        return futures
    barriers = order.ImportBarriers(nodes, facts)
    imports: dict[int, ast.Import | ast.ImportFrom] = {}
    blocked: set[str] = set()  # names of which some import must stay where it is
    after_barrier = False
    for cell, node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [name for name, _ in order.import_bindings(node)]
            if (
                cell.index in in_steps
                and _alone_on_its_lines(node, cell)
                and (not after_barrier or order.imports_stdlib_only(node))
            ):
                imports[id(node)] = node
            else:
                blocked.update(names)
        after_barrier = after_barrier or barriers.is_barrier(node)
    moved = {
        key
        for key, node in imports.items()
        if all(counts[n] == 1 and n not in blocked for n, _ in order.import_bindings(node))
    }
    imported = {n for key in moved for n, _ in order.import_bindings(imports[key])}
    shared = {
        name
        for cell in running
        if cell.role == "shared"
        for name in flow.scan(cell.tree.body).writes  # type: ignore[union-attr]
        if counts[name] == 1
    }
    candidates = {
        id(node): node
        for cell, node in statements
        if cell.index in in_steps
        and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and counts[node.name] == 1
        and _alone_on_its_lines(node, cell)
        and not barriers.is_barrier(node)
    }
    base = (flow.BUILTINS | {"display"}) - set(counts) | imported | shared
    changed = True
    while changed:  # drop definitions that read step data, until nothing changes
        changed = False
        allowed = base | {n.name for n in candidates.values()}
        for key, node in list(candidates.items()):
            if not set(flow.scan([node]).reads) <= allowed:
                del candidates[key]
                changed = True
    return futures | moved | set(candidates)


def _rebind_definitions(
    steps: list[Step],
    by_index: dict[int, Cell],
    original: dict[int, str],
    stable: set[str],
    facts: dict[int, order.Facts],
) -> None:
    """A later step that uses a function or import another step defined runs it again itself.

    Pickle cannot carry a function defined in another process's ``__main__`` through the
    workdir, and the notebook's function reads its globals when called, not when defined. So
    the definition is run again at the top of the step that uses it: in a whole run and one
    step at a time alike it then sees the values this step sees, as the notebook's did. Only
    definitions that give the same result again qualify (``order.rebindable``); anything else
    is passed on as a value.
    """
    latest: dict[str, tuple[Step, Cell, ast.stmt]] = {}
    for step in steps:  # notebook order
        cells = [by_index[i] for i in step.cells]
        own = [n for c in cells for n in c.kept]
        copies: dict[int, tuple[Step, Cell, ast.stmt]] = {}
        while True:  # a copied function may need further definitions
            reads = flow.scan([n for _, _, n in copies.values()] + own).reads
            wanted = {id(latest[n][2]): latest[n] for n in reads if n in latest}
            if wanted.keys() <= copies.keys():
                break
            copies.update(wanted)
        ordered = sorted(copies.values(), key=lambda c: (c[1].index, c[2].lineno))
        step.rebound = [
            (cell.index, source.name, _statement_text(node, cell, original[cell.index]))
            for source, cell, node in ordered
        ]
        if cells and ordered:
            cells[0].kept[:0] = [node for _, _, node in ordered]
        for cell in cells:
            for node in cell.kept[len(ordered) if cell is cells[0] else 0 :]:
                rebinds = order.rebindable(node, stable)
                for name in facts[id(node)].bound | facts[id(node)].mutated:
                    if rebinds:
                        latest[name] = (step, cell, node)
                    else:
                        latest.pop(name, None)


def _replay_process_state(
    steps: list[Step], by_index: dict[int, Cell], original: dict[int, str], module: set[str]
) -> None:
    """What earlier steps did to the process (sys.path, cwd, environment, star imports) is done
    again when a step runs alone in a fresh process, so its imports, relative paths and names
    find what the notebook's did. Only statements reading module-level names qualify (they run
    before the step's inputs exist); a whole run never runs them twice."""
    statements = [n for c in by_index.values() if c.tree is not None for n in c.tree.body]
    aliases = order.import_aliases(statements)
    earlier: list[tuple[int, str, str]] = []
    for step in steps:  # notebook order
        step.replays = list(earlier)
        for index in step.cells:
            cell = by_index[index]
            for node in cell.kept:
                if order.is_star_import(node) or (
                    order.sets_process_state(node, aliases)
                    and set(flow.scan([node]).reads) <= module
                ):
                    text = _statement_text(node, cell, original[index])
                    earlier.append((index, step.name, text))


def _statement_text(node: ast.stmt, cell: Cell, code: str) -> str:
    """A top-level statement's own source lines (or its unparsed form if it shares a line)."""
    if not _alone_on_its_lines(node, cell):
        return ast.unparse(node)
    lines = code.split("\n")
    return "\n".join(lines[_first_line(node) - 1 : node.end_lineno])


def _alone_on_its_lines(node: ast.stmt, cell: Cell) -> bool:
    """A statement sharing a line with another (``import os; x = 1``) is left where it is."""
    start = _first_line(node)
    for other in cell.tree.body:  # type: ignore[union-attr]
        if (
            other is not node
            and _first_line(other) <= node.end_lineno
            and other.end_lineno >= start
        ):  # type: ignore[operator]
            return False
    return True


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _split_cell(
    cell: Cell, hoist_ids: set[int], code: str
) -> tuple[str, list[tuple[ast.stmt, str]]]:
    """Cut hoisted statements (whole lines of the cell's tree) out of ``code``."""
    lines = code.split("\n")
    moved: list[tuple[ast.stmt, str]] = []
    drop: set[int] = set()
    for node in cell.tree.body:  # type: ignore[union-attr]
        if id(node) in hoist_ids:
            first, last = _first_line(node), node.end_lineno or node.lineno
            moved.append((node, "\n".join(lines[first - 1 : last])))
            drop.update(range(first - 1, last))
    kept = "\n".join(line for number, line in enumerate(lines) if number not in drop)
    return kept, moved


# Parameter types whose values cannot change in place: never passed on as changed.
IMMUTABLE_TYPES = frozenset({"int", "float", "str", "bool"})


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


def _analyse_flow(pipeline: Pipeline) -> None:
    """Fill reads/writes/inputs/outputs and dependencies; order steps; detect cycles.

    A step that may change a value it reads in place writes it (see dsops_jupyter.flow), so
    the steps reading it later get the changed value from that step and depend on it. A step
    that writes a name also runs after the earlier steps that read its previous value, so the
    whole script never shows them the new one (an ``after:`` that contradicts it is a cycle).
    """
    param_names = {p.name for p in pipeline.parameters}
    mutable_params = {p.name for p in pipeline.parameters if p.type not in IMMUTABLE_TYPES}
    module_names = pipeline.module_names
    known = flow.BUILTINS | module_names | KNOWN_NAMES
    by_index = {c.index: c for c in pipeline.cells}
    context = flow.Context()  # imports and notebook functions, seen in notebook order
    module = flow.scan(
        [n for c in pipeline.cells for n in (c.tree.body if c.role == "shared" else c.hoisted)],  # type: ignore[union-attr]
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
    order = flow.topological_order(
        [s.name for s in pipeline.steps],
        {s.name: [*s.depends_on, *sorted(run_after[s.name])] for s in pipeline.steps},
    )
    pipeline.steps = [by_name[name] for name in order]
