"""Progress events: the one stream the CLI, the magics and the server all render.

Long core operations take an ``on_event`` callback and report what they do through it, so each
adapter only decides how to show progress (rich bar, ipywidgets bar, JSON job state).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal["stage", "progress", "log", "result", "step"]


@dataclass(frozen=True)
class Event:
    """``stage``: a new phase begins (message names it); ``progress``: ``fraction`` of the
    current phase is done (0..1, ``message`` says what); ``log``: one line of output;
    ``result``: the phase's outcome in ``data``; ``step``: a step's state in a run (``data``:
    step, state, duration, cell, line, error; see stepstatus.py). Adapters ignore kinds they
    do not render."""

    kind: EventKind
    message: str = ""
    fraction: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default sink: headless callers that do not care about progress."""


def stage(on_event: OnEvent, message: str) -> None:
    on_event(Event("stage", message))


def progress(on_event: OnEvent, fraction: float, message: str = "") -> None:
    on_event(Event("progress", message, fraction=max(0.0, min(1.0, fraction))))


def log(on_event: OnEvent, line: str) -> None:
    on_event(Event("log", line))


def result(on_event: OnEvent, message: str, **data: Any) -> None:
    on_event(Event("result", message, data=data))


def step(
    on_event: OnEvent,
    name: str,
    state: str,
    *,
    duration: float | None = None,
    cell: int | None = None,
    line: int | None = None,
    error: str | None = None,
) -> None:
    """A step's state in a run: queued, running, done, cached, failed or skipped. ``cell``
    is the index in the user's notebook, ``line`` 1-based in that cell as the user sees it."""
    data = {
        "step": name,
        "state": state,
        "duration": duration,
        "cell": cell,
        "line": line,
        "error": error,
    }
    on_event(Event("step", f"{name}: {state}", data=data))


class OverallProgress:
    """Turns per-stage progress events into one monotone 0..1 fraction.

    The core reports ``fraction`` of the *current* stage; the expected number of stages is a
    hint from the job's options and grows if the core reports more stages than expected.
    """

    def __init__(self, expected_stages: int) -> None:
        self.expected = max(1, expected_stages)
        self.stages = 0
        self.fraction = 0.0
        self.value = 0.0

    def on_stage(self) -> float:
        self.stages += 1
        self.fraction = 0.0
        return self._update()

    def on_fraction(self, fraction: float) -> float:
        self.fraction = max(0.0, min(1.0, fraction))
        return self._update()

    def _update(self) -> float:
        done = max(0, self.stages - 1) + self.fraction
        total = max(self.expected, self.stages)
        self.value = max(self.value, min(0.99, done / total))
        return self.value


def stdout_channel() -> Callable[[dict[str, Any]], None]:
    """A child process's JSON-lines channel to its parent (server jobs, sweep runs), on the
    real stdout; everything else printed goes to stderr, so stray prints cannot break it.
    Thread-safe: events come from the core's helper threads too."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        with lock:
            channel.write(json.dumps(message, default=str) + "\n")
            channel.flush()

    return send
