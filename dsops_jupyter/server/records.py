"""Job records as the REST contract shows them, and the bounds that keep them small.

A record is what GET /dsops/jobs lists and the JobStore keeps: state, stage, progress, the
last log lines, the options the job was started with, per-step states (C3 "step" events), the
stages with their durations and the core's result. Every string a user or a cell controls is cut
short, so a huge value or a chatty cell cannot make every listing huge.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from dsops_jupyter.model import PackageOptions, RunOptions

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobKind = Literal["package", "run"]
STATES: tuple[JobState, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE: tuple[JobState, ...] = ("queued", "running")

#: Log lines kept per job (the last ones: where a failure shows), and characters per line.
MAX_LOG_LINES = 500
MAX_LINE_CHARS = 1000
#: Characters kept of an error message, and of any string in a job's result or options.
MAX_ERROR_CHARS = 1000
MAX_VALUE_CHARS = 1000
#: Steps and stages kept per job: a notebook of 10 000 steps must not grow every listing.
MAX_STEPS = 500
MAX_STAGES = 50
#: The fields of a step event's data a record keeps (C3).
STEP_FIELDS = ("state", "duration", "cell", "line", "error")


@dataclass
class Job:
    """One job as the REST contract shows it (see docs/rest-api.md)."""

    kind: JobKind
    path: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = "queued"
    stage: str = "Queued"
    detail: str = ""  # the core's last progress message in the stage ("step 3 of 13")
    progress: float = 0.0
    log: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    interrupted: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    dropped_lines: int = 0  # log lines no longer kept (the oldest)

    def to_json(self) -> dict[str, Any]:
        dropped = [f"[{self.dropped_lines} earlier lines not kept]"] if self.dropped_lines else []
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "state": self.state,
            "stage": self.stage,
            "detail": self.detail,
            "progress": round(self.progress, 4),
            "log": dropped + self.log,
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
            "result": self.result,
            "interrupted": self.interrupted,
            "options": self.options,
            "steps": self.steps,
            "stages": self.stages,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Job | None:
        """A stored record back as a Job; None if it is not one (written by another version)."""
        known = {f.name for f in fields(cls)} - {"dropped_lines"}
        try:
            job = cls(**{k: v for k, v in record.items() if k in known})
        except TypeError:
            return None
        valid = (
            isinstance(job.id, str)
            and job.kind in ("package", "run")
            and job.state in STATES
            and isinstance(job.path, str)
            and isinstance(job.log, list)
            and isinstance(job.created, int | float)
            and isinstance(job.options, dict)
            and isinstance(job.steps, dict)
            and isinstance(job.stages, list)
        )
        return job if valid else None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def on_step(self, data: dict[str, Any], now: float) -> None:
        """Record a C3 step event: the step's latest state, duration, failing cell and line;
        a running step also when it ``started`` (server clock), so a client can count along."""
        name = data.get("step")
        if not isinstance(name, str) or (name not in self.steps and len(self.steps) >= MAX_STEPS):
            return
        status = {key: data.get(key) for key in STEP_FIELDS}
        if status["error"] is not None:
            status["error"] = bounded(status["error"], MAX_ERROR_CHARS)
        status["started"] = round(now, 3) if status["state"] == "running" else None
        self.steps[bounded(name, MAX_LINE_CHARS)] = status

    def begin_stage(self, name: str, now: float) -> None:
        """A new stage starts: the one before ends now (its duration is known)."""
        self.end_stage(now)
        if len(self.stages) < MAX_STAGES:
            self.stages.append({"name": name, "started": now, "duration": None})

    def end_stage(self, now: float) -> None:
        if self.stages and self.stages[-1]["duration"] is None:
            self.stages[-1]["duration"] = round(now - self.stages[-1]["started"], 3)


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def bounded(value: object, limit: int, *, flat: bool = True) -> str:
    """``value`` as one line (unless not ``flat``) of at most about ``limit`` characters: a
    50 MB value echoed in an error or a log line must not travel with every job listing."""
    text = one_line(value) if flat else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def bounded_json(value: Any, limit: int = MAX_VALUE_CHARS) -> Any:
    """Nested JSON with every string cut to ``limit`` characters (parameter values are echoed
    in run records and job options)."""
    if isinstance(value, dict):
        return {k: bounded_json(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [bounded_json(v, limit) for v in value]
    if isinstance(value, str):
        return bounded(value, limit, flat=False)
    return value


def job_kind(options: PackageOptions | RunOptions) -> JobKind:
    """The job kind the options are for: the REST ``kind`` and the worker's dispatch."""
    return "package" if isinstance(options, PackageOptions) else "run"


def relative_text(text: str, root: Path) -> str:
    """A one-line error with the paths under ``root`` written root-relative, as the user sees
    them in JupyterLab's file browser (the core's lines name absolute paths)."""
    return text.replace(f"{root}{os.sep}", "")


def relative_paths(value: Any, root: Path) -> Any:
    """Rewrite absolute paths under ``root`` (in nested JSON) as root-relative posix paths,
    so the frontend can open them; paths outside ``root`` stay absolute. The one thing the
    server changes in the core's result JSON: presentation, not a shape of its own."""
    if isinstance(value, dict):
        return {k: relative_paths(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [relative_paths(v, root) for v in value]
    if isinstance(value, str) and os.path.isabs(value):
        try:
            return Path(value).resolve().relative_to(root).as_posix() or "."
        except ValueError:
            return value
    return value
