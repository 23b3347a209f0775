"""The marker grammar: cell tags and ``%%dsops`` lines (Kale's tags too), step and pipeline names.

Tags and a first line ``%%dsops ...`` mean the same; both set a cell's role, its step and the
steps it runs after. The magics read their first line with ``parse_marker_line``, so the live
kernel and the saved notebook can never disagree about a marker.
"""

from __future__ import annotations

import keyword
import re
import shlex
from collections.abc import Iterable
from pathlib import Path

from dsops_jupyter import escape
from dsops_jupyter.errors import MarkerError
from dsops_jupyter.pipeline import Cell

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
MAGIC = "%%dsops"


def read_markers(tags: Iterable[str], first_line: str, where: str) -> Cell:
    """The markers of one cell, its tags then a ``%%dsops`` first line, as a Cell without code.

    The one reader of the marker grammar: tests/marker_cases.json runs through it and through
    the frontend's src/markers.ts, so the badges and the core never disagree about a marker.
    """
    cell = Cell(index=-1, source="", tags=tuple(tags), role="continue")
    for tag in cell.tags:
        _apply_tag(cell, tag, where)
    if first_line.strip().startswith(MAGIC):
        _apply_magic_line(cell, first_line.strip(), where)
    return cell


def without_marker(source: str) -> str:
    """The cell's code without a first ``%%dsops`` marker line (as ``read_markers`` reads it)."""
    first, _, rest = source.partition("\n")
    return rest if first.strip().startswith(MAGIC) else source


def parse_marker_line(line: str, where: str = MAGIC) -> tuple[str, str | None, list[str]]:
    """Read one ``%%dsops ...`` line exactly as the core does: (role, step name, after).

    The magics validate their first line with this, so the live kernel and the saved
    notebook can never disagree about a marker.
    """
    cell = read_markers((), line, where)
    return cell.role, cell.step, cell.after


def check_step_name(name: str, where: str) -> str:
    """A step name names the step's function: a Python identifier of at most MAX_NAME characters."""
    if not IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise MarkerError(
            f"{where}: step name {name[:60]!r} is not a valid Python identifier "
            f"(letters, digits and _, not starting with a digit)"
        )
    if len(name) > MAX_NAME:
        raise MarkerError(f"{where}: step name {name[:60]!r}... is over {MAX_NAME} characters")
    return name


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
