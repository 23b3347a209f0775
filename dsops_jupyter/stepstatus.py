"""Each chosen step's state through a run, as step events and as the run record's steps.

States (contract C3): ``queued`` for every chosen step at the start, ``running`` when its first
cell starts, then ``done``, ``cached`` (restored from the step cache or a resumed run),
``failed`` or ``skipped`` (not run: an earlier step failed or the run was stopped). The
duration of a step is the sum of its own cells' wall time (restoring, saving outputs
included), so a downstream step never shows the time its upstream steps took.
"""

from __future__ import annotations

import time
from typing import Any

from dsops_jupyter import events
from dsops_jupyter.events import OnEvent

FINAL = ("done", "cached", "failed", "skipped")


class StepTracker:
    """Told by the papermill engine when a step's cells start and end; emits step events."""

    def __init__(self, on_event: OnEvent, chosen: list[str], first_cells: dict[str, int]):
        self.on_event = on_event
        self.states: dict[str, str] = dict.fromkeys(chosen, "queued")
        self.durations: dict[str, float] = dict.fromkeys(chosen, 0.0)
        self.cells: dict[str, int | None] = {name: first_cells.get(name) for name in chosen}
        self.lines: dict[str, int | None] = dict.fromkeys(chosen)
        self.errors: dict[str, str | None] = dict.fromkeys(chosen)
        self.started: float | None = None  # the clock of the cell running now

    def queue(self) -> None:
        for name in self.states:
            self._emit(name)

    def cell_started(self, step: str) -> None:
        """A cell of ``step`` starts (a shared or parameters cell: not a step, ignored)."""
        if step not in self.states:
            return
        self.started = time.perf_counter()
        if self.states[step] == "queued":
            self.states[step] = "running"
            self._emit(step)

    def cell_ended(self, step: str) -> None:
        """The cell (its output saving included) is over: its time counts for its step."""
        if step in self.states and self.started is not None:
            self.durations[step] += time.perf_counter() - self.started
        self.started = None

    def step_ended(self, step: str, *, restored: bool) -> None:
        if self.states.get(step) == "running":
            self.states[step] = "cached" if restored else "done"
            self._emit(step)

    def running(self) -> str | None:
        return next((name for name, state in self.states.items() if state == "running"), None)

    def fail(self, step: str | None, *, cell: int | None, line: int | None, error: str) -> None:
        """``step`` failed at the user's ``cell`` and ``line`` (a step already done counts too:
        a ``raises-exception`` cell lets the run go on, papermill fails it at the end)."""
        if step not in self.states:
            return
        self.cell_ended(step)
        self.states[step] = "failed"
        self.cells[step] = cell if cell is not None else self.cells[step]
        self.lines[step], self.errors[step] = line, error
        self._emit(step)

    def finish(self) -> None:
        """The run is over: a step still running was stopped (failed), one never started was
        skipped."""
        for name, state in self.states.items():
            if state == "running":
                self.cell_ended(name)
                self.states[name], self.errors[name] = "failed", "interrupted"
                self._emit(name)
            elif state == "queued":
                self.states[name] = "skipped"
                self._emit(name)

    def record(self, marks: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The run record's steps (contract C4): final state, duration, where it failed, and
        the ledger's marks (keys, restored, artifacts)."""
        return [
            {
                "name": name,
                "status": state,
                "duration": round(self.durations[name], 3),
                "cell": self.cells[name],
                "line": self.lines[name],
                "error": self.errors[name],
                "executed": state in ("done", "failed") and not marks[name]["restored"],
                **marks[name],
            }
            for name, state in self.states.items()
        ]

    def _emit(self, name: str) -> None:
        final = self.states[name] in FINAL
        events.step(
            self.on_event,
            name,
            self.states[name],
            duration=round(self.durations[name], 3) if final else None,
            cell=self.cells[name],
            line=self.lines[name],
            error=self.errors[name],
        )
