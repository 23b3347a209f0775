"""Load a notebook file, check the shape of what dsops reads, and read each code cell.

Nothing here trusts the file: every field dsops relies on is checked once, so a malformed
notebook is one NotebookError naming the cell, never an AttributeError deep in the converter.
"""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from dsops_jupyter import escape, ipysyntax
from dsops_jupyter.errors import NotebookError
from dsops_jupyter.markers import read_markers, without_marker
from dsops_jupyter.pipeline import Cell
from dsops_jupyter.spec import source_of


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
        where = ""
        if isinstance(err, json.JSONDecodeError):
            where = f" (line {err.lineno}, column {err.colno})"
        raise NotebookError(f"{path.name} is not valid JSON{where}: is it a notebook?") from None
    except RecursionError:
        raise NotebookError(f"{path.name} nests JSON too deeply to be a notebook") from None
    return checked_notebook(nb, path)


def checked_notebook(nb: Any, path: Path) -> dict[str, Any]:
    """``nb`` (parsed notebook JSON, e.g. unsaved content sent by JupyterLab for ``path``)
    checked and upgraded as load_notebook does."""
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


def normalise_newlines(source: str) -> str:
    """CRLF and lone CR as LF: the one line ending every later step splits on.

    Python's parser treats all three as line ends; splitting on LF alone once put a CR-only
    cell's statements on one line of the script, at module level (run on ``--help``).
    """
    return source.replace("\r\n", "\n").replace("\r", "\n")


def read_cell(index: int, raw: dict[str, Any], where: str) -> Cell:
    """One code cell with its markers applied, parsed when it is plain Python."""
    source = source_of(raw)
    label = f"{where}, cell {index + 1}"
    markers = read_markers(
        raw.get("metadata", {}).get("tags", []), source.partition("\n")[0], label
    )
    cell = replace(markers, index=index, source=source)
    source = without_marker(source)
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


def python_code(source: str, *, keep_magics: bool = False) -> tuple[str, list[str]]:
    """Cell source as plain Python, and the magics plain Python cannot run (see ipysyntax).

    Source that already parses as Python is returned untouched, so a ``%`` inside a string
    is safe; IPython is imported only for cells that need its transformer.
    """
    found = ipysyntax.translate(source)
    return (found.kept if keep_magics else found.code), found.unsupported


def too_deep(path: Path) -> NotebookError:
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
