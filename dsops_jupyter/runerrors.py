"""Where a run failed, as the user sees it: the step, their cell, the line, the error.

The executed notebook is the one ``execute.runnable_notebook`` built (cells dropped, marker lines
removed, papermill's injected cell added); each kept cell's ``metadata.dsops`` names its step and
its index in the user's notebook, and ``line_offset`` maps a line back past a removed marker line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsops_jupyter.errors import ExecutionError, RunInterruptedError
from dsops_jupyter.monitor import CellError, Monitor

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_FRAME = re.compile(
    r"(?:Cell In ?\[(\d*)\], line (\d+)|Input In ?\[(\d*)\].*<cell line: (\d+)>)"
)


@dataclass(frozen=True)
class Failure:
    """One failed run: the step (None when no step's cell failed), the user's cell index
    (0-based) and line (1-based) with its text, and the error in one line."""

    step: str | None
    cell: int | None
    line: int | None
    text: str
    error: str

    def where(self) -> str:
        where = f"step {self.step or '?'!r}"
        if self.cell is not None:
            where += f", cell {self.cell + 1}"
        if self.line is not None:
            where += f", line {self.line} `{self.text}`"
        return where


def locate(failure: BaseException, monitor: Monitor, executed: dict[str, Any]) -> Failure:
    """The failing cell is the one that stopped the run or, when every cell ran (errors allowed
    by a ``raises-exception`` tag), the one papermill reports. A dead kernel, a timeout or a
    papermill error has no cell: the step that was running then failed."""
    cell = monitor.failed_cell or _papermill_error_cell(executed)
    error = monitor.failure or (failure if isinstance(failure, CellError) else None)
    if error is None or not cell:
        lines = _ANSI.sub("", str(failure)).strip().splitlines() or ["unknown error"]
        return Failure(monitor.steps.running(), None, None, "", lines[-1])
    meta = cell.get("metadata", {}).get("dsops", {})
    text = _error_text(error, cell)
    found = _user_line(error.traceback or [], cell) or _magic_line(text, cell)
    line, shown = (found[0] + meta.get("line_offset", 0), found[1]) if found else (None, "")
    return Failure(meta.get("step"), meta.get("cell"), line, shown, text)


def execution_error(found: Failure, output: Path, record: dict[str, Any]) -> ExecutionError:
    """One line: step, cell, the user's failing line, the exception; the notebook is kept."""
    if found.cell is None:
        message = f"run failed: {found.error} ({_kept(output)})"
    else:
        message = f"{found.where()} failed: {found.error} ({_kept(output)})"
    return ExecutionError(message, output_path=str(output), step=found.step, record=record)


def interrupted_error(
    meta: dict[str, Any], output: Path, record: dict[str, Any]
) -> RunInterruptedError:
    where = "before the first cell ran"
    if meta:
        where = f"in step {meta.get('step', '?')!r}"
        where += f", cell {meta['cell'] + 1}" if "cell" in meta else ""
    return RunInterruptedError(
        f"interrupted {where} ({_kept(output)})",
        output_path=str(output),
        step=meta.get("step"),
        record=record,
    )


def _kept(output: Path) -> str:
    return f"executed notebook kept: {output}" if output.exists() else "no output notebook"


def _papermill_error_cell(executed: dict[str, Any]) -> dict[str, Any]:
    """papermill's rule (``raise_for_execution_errors``): the LAST cell with an error output
    (SystemExit(0) aside) wins; a cell marked failed counts only while none was found yet."""
    found: dict[str, Any] = {}
    for cell in (c for c in executed.get("cells", []) if c.get("cell_type") == "code"):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        clean = [
            o for o in errors if o.get("ename") == "SystemExit" and o.get("evalue") in ("", "0")
        ]
        if len(errors) > len(clean):
            found = cell
        elif not found and not clean:
            found = cell if cell.get("metadata", {}).get("papermill", {}).get("exception") else {}
    return found


def _user_line(traceback: str | list[str], cell: dict[str, Any]) -> tuple[int, str] | None:
    """The failing cell's own line in IPython's traceback: its last frame in that cell, not a
    library frame (``Cell In[N], line L``; ``Input In [N] ... <cell line: L>`` before IPython
    8.5). The text comes from the cell's source; the ``---->`` line only when that fails."""
    text = _ANSI.sub("", traceback if isinstance(traceback, str) else "\n".join(traceback))
    count = str(cell.get("execution_count") or "")
    frames = [m for m in _CELL_FRAME.finditer(text) if not count or (m[1] or m[3]) == count]
    if not frames:
        return None
    number = int(frames[-1][2] or frames[-1][4])
    arrow = re.compile(rf"-+>\s*{number}\s?(.*)").search(text, frames[-1].end())
    return number, _source_line(cell, number) or (arrow[1].strip() if arrow else "")


def _magic_line(error: str, cell: dict[str, Any]) -> tuple[int, str] | None:
    """A UsageError has no traceback: the line is the first one using the magic it names."""
    named = re.search(r"`(%{1,2}[^`\s]+)`", error) if error.startswith("UsageError") else None
    for number, line in enumerate(_source_lines(cell), 1):
        if named and named[1] in line:
            return number, line.strip()
    return None


def _source_lines(cell: dict[str, Any]) -> list[str]:
    source = cell.get("source", "")
    return ("".join(source) if isinstance(source, list) else source).splitlines()


def _source_line(cell: dict[str, Any], number: int) -> str:
    lines = _source_lines(cell)
    return lines[number - 1].strip() if 0 < number <= len(lines) else ""


def _error_text(failure: CellError, cell: dict[str, Any]) -> str:
    """``Type: message`` on one line. IPython reports a UsageError (an unknown magic) on
    stderr, with no error output: its message is then that stderr line."""
    ename, evalue = failure.ename, str(failure.evalue or "").strip()
    if not evalue:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("name") == "stderr" else ""
            for line in ("".join(text) if isinstance(text, list) else text).splitlines():
                if line.startswith("UsageError: "):
                    ename, evalue = "UsageError", line.partition(": ")[2]
    evalue = " ".join(evalue.split())
    return f"{ename}: {evalue}" if evalue else ename
