"""What a run reports while cells execute: progress, step states, output, failing cell, checks.

The input check compares kernel fingerprints of each step's inputs between steps.

Filled by the papermill engine (papermill_engine.py), read by execute.py for the run record:
its own module so that execute.py never imports the engine, which papermill loads by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dsops_jupyter import events
from dsops_jupyter._probe import UNFINGERPRINTABLE
from dsops_jupyter.events import OnEvent
from dsops_jupyter.stepstatus import StepTracker

if TYPE_CHECKING:
    from dsops_jupyter.runsteps import StepLedger


@runtime_checkable
class CellError(Protocol):
    """A failed cell as nbclient (CellExecutionError: traceback one string) and papermill
    (PapermillExecutionError: traceback a list of lines) both report it."""

    @property
    def ename(self) -> str: ...
    @property
    def evalue(self) -> str: ...
    @property
    def traceback(self) -> str | list[str]: ...


@dataclass
class Monitor:
    """What the engine reports while cells run: progress, live output lines, the failing cell,
    and the runtime check of each step's inputs (fingerprints taken in the kernel); what it
    asks: the ledger, which steps to restore and which outputs to save."""

    on_event: OnEvent
    input_path: str
    watched: dict[str, list[str]]  # step -> names it reads and should leave unchanged
    on_first_cell: Callable[[], None] = lambda: None
    failure: CellError | None = None
    failed_cell: dict[str, Any] = field(default_factory=dict)
    interrupted: dict[str, Any] = field(default_factory=dict)  # metadata.dsops of that cell
    changes: list[dict[str, str]] = field(default_factory=list)
    unchecked: set[str] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)
    probe_seconds: float = 0.0  # time spent fingerprinting, the cost of the runtime check
    partial: dict[str, str] = field(default_factory=dict)  # stream name -> unfinished line
    ledger: StepLedger | None = None  # saves step outputs; restores cached or resumed steps
    steps: StepTracker = field(default_factory=lambda: StepTracker(events.ignore, [], {}))

    def stream(self, name: str, text: str) -> None:
        """Kernel output as it arrives, one log event per complete line (the kernel's breaks)."""
        *lines, self.partial[name] = (self.partial.get(name, "") + text).split("\n")
        for line in lines:
            events.log(self.on_event, _terminal_line(line))

    def flush(self) -> None:
        for rest in self.partial.values():
            if rest:
                events.log(self.on_event, _terminal_line(rest))
        self.partial.clear()

    def compare(self, step: str, before: dict[str, str], after: dict[str, str]) -> None:
        self.checked.append(step)
        for name, digest in before.items():
            if digest == UNFINGERPRINTABLE or after.get(name) == UNFINGERPRINTABLE:
                self.unchecked.add(name)
            elif name in after and after[name] != digest:
                self.changes.append({"step": step, "name": name})

    def verification(self) -> dict[str, Any]:
        return {
            "checked_steps": self.checked,
            "unexpected_changes": self.changes,
            "unchecked": sorted(self.unchecked),
            "seconds": round(self.probe_seconds, 3),
        }

    def warnings(self) -> list[str]:
        lines = [
            f"step {c['step']!r} changed `{c['name']}`, which the analysis says it only reads: "
            "a step-by-step run would pass the unchanged value on"
            for c in self.changes
        ]
        if self.unchecked:
            names = ", ".join(f"`{n}`" for n in sorted(self.unchecked))
            lines.append(f"not verified at run time (cannot be fingerprinted): {names}")
        return lines


def _terminal_line(line: str) -> str:
    """What a terminal shows of a line: the text after its last carriage return."""
    return line.rstrip("\r").rsplit("\r", 1)[-1]
