"""Parameter sweeps: every combination of a grid as its own `dsops run`, a few at a time.

Each combination is a normal run (execute.run_notebook) in a process of its own, with its own
run folder as the kernel's working directory, so relative outputs (``outputs/metrics.json``)
of parallel runs never overwrite each other. A process per run keeps Ctrl-C clean: the sweep
forwards one SIGINT to each running process, which unwinds exactly as an interrupted
`dsops run` does (record written, kernel shut down). Events come back as JSON lines and are
re-emitted here, tagged with the run; the summary (``sweep.json``) lists each run's
parameters, status, duration, run record and the metrics the notebook wrote.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from dsops_jupyter import dotdsops, events
from dsops_jupyter.config import load_config
from dsops_jupyter.errors import DsopsError, OptionsError, RunInterruptedError
from dsops_jupyter.events import Event, OnEvent
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.grid import Grid, parse_grid
from dsops_jupyter.model import RUN_RECORD, RunOptions
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.params import coerce_parameters

SUMMARY = "sweep.json"
METRICS = "metrics.json"
STOP_SECONDS = 60.0  # after Ctrl-C, how long a run may take to unwind before it is killed
# The folder holding this package: the run processes import the same dsops as this one.
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent
_CHILD = "from dsops_jupyter.sweep import child_main; child_main()"


@dataclass
class SweepRun:
    """One combination: its grid values, where it ran, and how it ended."""

    index: int
    parameters: dict[str, Any]
    out_dir: Path
    status: str = "not run"  # running, then succeeded | failed | interrupted
    duration: float = 0.0
    error: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    fraction: float = 0.0

    @property
    def label(self) -> str:
        return " ".join(f"{name}={value!r}" for name, value in self.parameters.items())

    @property
    def record(self) -> Path:
        return self.out_dir / RUN_RECORD

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "parameters": self.parameters,
            "status": self.status,
            "duration": round(self.duration, 3),
            "out_dir": str(self.out_dir),
            "record": str(self.record) if self.record.exists() else None,
            "metrics": self.metrics,
            "error": self.error,
        }


@dataclass
class SweepResult:
    """The sweep: notebook, grid, fixed parameters, and one SweepRun per combination."""

    notebook: Path
    grid: Grid
    fixed: dict[str, Any]
    jobs: int
    out_dir: Path
    runs: list[SweepRun]
    duration: float = 0.0

    @property
    def status(self) -> str:
        states = {run.status for run in self.runs}
        for state in ("interrupted", "failed", "not run"):
            if state in states:
                return state
        return "succeeded"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / SUMMARY

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook": str(self.notebook),
            "grid": self.grid.to_json(),
            "fixed": self.fixed,
            "jobs": self.jobs,
            "status": self.status,
            "duration": round(self.duration, 3),
            "summary": str(self.summary_path),
            "runs": [run.to_json() for run in self.runs],
        }


def run_sweep(
    path: str | Path,
    specs: Sequence[str],
    options: RunOptions | None = None,
    jobs: int | None = None,
    on_event: OnEvent = events.ignore,
) -> SweepResult:
    """Run every combination of ``specs`` (``NAME=V1,V2``) with ``options`` for the rest.

    ``jobs`` bounds the runs at once (default: the CPU count). A failing combination does not
    stop the others: check ``status``. Raises RunInterruptedError after Ctrl-C, once the
    summary is written; a bad grid fails before anything starts.
    """
    path, options = Path(path).resolve(), options or RunOptions()
    pipeline = read_pipeline(path)
    fixed = coerce_parameters(pipeline, options.parameters)
    grid = parse_grid(pipeline.parameters, specs, options.parameters, pipeline.notebook_path.name)
    combinations = grid.combinations()
    if not combinations:
        raise OptionsError("a sweep needs at least one --grid NAME=V1,V2,...")
    jobs = jobs if jobs is not None else os.cpu_count() or 1
    if jobs < 1:
        raise OptionsError(f"--jobs must be at least 1, got {jobs}")
    out_dir = (options.out_dir or _default_out_dir(path, pipeline.name)).resolve()
    runs = [
        SweepRun(number, combo, out_dir / _folder_name(number, combo, len(combinations)))
        for number, combo in enumerate(combinations, 1)
    ]
    result = SweepResult(path, grid, fixed, jobs, out_dir, runs)
    events.stage(on_event, f"Sweeping {len(runs)} combinations of {path.name}, {jobs} at a time")
    clock = time.perf_counter()
    dotdsops.prepare(out_dir)  # under .dsops/: ignored by Git from the first run on
    try:
        _Scheduler(path, options, runs, jobs, on_event).run()
    finally:
        result.duration = time.perf_counter() - clock
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(result.summary_path, _json_bytes(result.to_json()))
    if result.status == "interrupted":
        done = sum(run.status in ("succeeded", "failed") for run in runs)
        raise RunInterruptedError(
            f"sweep interrupted: {done} of {len(runs)} runs finished (summary: "
            f"{result.summary_path})"
        )
    events.result(on_event, f"Sweep {result.status}: {result.summary_path}", **result.to_json())
    return result


class _Scheduler:
    """Starts up to ``jobs`` run processes, relays their events, records their outcomes."""

    def __init__(
        self,
        path: Path,
        options: RunOptions,
        runs: list[SweepRun],
        jobs: int,
        on_event: OnEvent,
    ) -> None:
        self.path, self.options, self.jobs, self.on_event = path, options, jobs, on_event
        self.runs = runs
        self.pending = list(runs)
        self.active: dict[int, _Process] = {}
        self.inbox: queue.Queue[tuple[int, dict[str, Any] | None]] = queue.Queue()
        self.stop_deadline: float | None = None

    def run(self) -> None:
        while self.pending or self.active:
            try:
                self._step()
            except KeyboardInterrupt:
                self._stop()
            if self.stop_deadline is not None and not self.active:
                break

    def _step(self) -> None:
        """Start what may start, then take one message (or notice a late stop)."""
        while self.pending and len(self.active) < self.jobs and self.stop_deadline is None:
            self._start(self.pending.pop(0))
        try:
            index, message = self.inbox.get(timeout=0.5)
        except queue.Empty:
            self._kill_if_late()
            return
        if message is None:
            self._finish(index)
        else:
            self._handle(self.runs[index - 1], message)

    def _start(self, run: SweepRun) -> None:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        values = {**self.options.parameters, **run.parameters}
        options = replace(self.options, parameters=values, out_dir=run.out_dir, cwd=run.out_dir)
        self.active[run.index] = _Process(run, self.path, options, self.inbox)
        run.status = "running"
        self._progress(run, f"started: {run.label}")

    def _handle(self, run: SweepRun, message: dict[str, Any]) -> None:
        if "event" in message:
            event = Event(**message["event"])
            if event.kind == "progress" and event.fraction is not None:
                run.fraction = event.fraction
                self._progress(run, event.message)
            elif event.kind == "log":  # a cell's output: tagged, so a renderer may leave it out
                tagged = Event("log", f"[{run.index}] {event.message}", data={"run": run.index})
                self.on_event(tagged)
        else:
            self.active[run.index].outcome = message

    def _progress(self, run: SweepRun, message: str) -> None:
        overall = sum(r.fraction for r in self.runs) / len(self.runs)
        data = {"run": run.index, "run_fraction": run.fraction, "status": run.status}
        self.on_event(Event("progress", f"[{run.index}] {message}", overall, data))

    def _finish(self, index: int) -> None:
        process = self.active.pop(index)
        run = process.run
        process.close()
        outcome = process.outcome
        run.duration = time.perf_counter() - process.started
        if "record" in outcome:
            run.status = outcome["record"]["status"]
            run.duration = outcome["record"]["duration"]
        else:
            run.status = outcome.get("status") or (
                "interrupted" if process.interrupted else "failed"
            )
            run.error = outcome.get("error") or process.crash_message()
        run.metrics = read_metrics(run.out_dir)
        run.fraction = 1.0
        self._progress(run, f"{run.status}: {run.label}")
        events.log(
            self.on_event,
            f"[{run.index}/{len(self.runs)}] {run.status} in {run.duration:.1f}s: {run.label}"
            + (f" ({run.error})" if run.error else ""),
        )

    def _stop(self) -> None:
        """Ctrl-C: start nothing more, ask each running process to stop (once)."""
        if self.stop_deadline is not None:  # a second Ctrl-C: stop waiting
            self.stop_deadline = 0.0
            self._kill_if_late()
            return
        self.stop_deadline = time.monotonic() + STOP_SECONDS
        for process in self.active.values():
            process.interrupt()

    def _kill_if_late(self) -> None:
        if self.stop_deadline is not None and time.monotonic() >= self.stop_deadline:
            for process in self.active.values():
                process.kill()


class _Process:
    """One combination's `dsops run` in a child process (``child_main``), read by a thread."""

    def __init__(
        self,
        run: SweepRun,
        path: Path,
        options: RunOptions,
        inbox: queue.Queue[tuple[int, dict[str, Any] | None]],
    ) -> None:
        self.run, self.inbox = run, inbox
        self.outcome: dict[str, Any] = {}
        self.interrupted = False
        self.started = time.perf_counter()
        self.log_path = run.out_dir / "stderr.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=_PACKAGE_PARENT,
            start_new_session=True,  # a terminal's Ctrl-C is the sweep's: it forwards one
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(pickle.dumps((path, options)))
            self.process.stdin.close()
        except BrokenPipeError:
            pass  # it died at once: the missing outcome says so
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                self.inbox.put((self.run.index, json.loads(line)))
            except ValueError:
                continue  # not a protocol line
        self.inbox.put((self.run.index, None))

    def interrupt(self) -> None:
        if self.process.poll() is None:
            self.interrupted = True
            self.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.interrupted = True
            self.process.kill()

    def close(self) -> None:
        self.process.wait()
        assert self.process.stdout is not None
        self.process.stdout.close()
        self._log.close()
        if self.log_path.stat().st_size == 0:
            self.log_path.unlink()

    def crash_message(self) -> str:
        return (
            f"the run process ended with exit code {self.process.returncode} and no outcome "
            f"(log: {self.log_path})"
        )


def child_main() -> None:
    """One combination: read (notebook, RunOptions) from stdin, run it, report JSON lines.

    Lines: ``{"event": ...}`` per progress event, then one outcome: ``{"record": run.json}``,
    or ``{"status": ..., "error": "one line"}``. Anything else printed goes to stderr (the
    run's log file), so stray prints cannot break the protocol.
    """
    send = events.stdout_channel()

    def on_event(event: Event) -> None:
        if event.kind != "result":  # the outcome carries the record
            send({"event": {**event.to_json(), "data": {}}})

    from dsops_jupyter.execute import run_notebook

    path, options = pickle.load(sys.stdin.buffer)
    try:
        send({"record": run_notebook(path, options, on_event).to_json()})
    except (KeyboardInterrupt, RunInterruptedError) as err:
        send({"status": "interrupted", "error": str(err) or "interrupted"})
    except DsopsError as err:
        send({"status": "failed", "error": str(err)})


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """The ``metrics.json`` a run wrote (the shallowest under its folder), else ``{}``."""
    found = sorted(
        (p for p in run_dir.rglob(METRICS) if "artifacts" not in p.relative_to(run_dir).parts),
        key=lambda p: (len(p.parts), str(p)),
    )
    for candidate in found:
        try:
            data = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}


def _folder_name(number: int, combo: dict[str, Any], total: int) -> str:
    """``03-alpha-0.5-seed-1``: numbered in grid order, readable, safe on every file system."""
    text = "-".join(f"{name}-{value}" for name, value in combo.items())
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60]
    return f"{number:0{len(str(total))}d}-{slug}" if slug else f"{number:0{len(str(total))}d}"


def _default_out_dir(path: Path, name: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return load_config(path).runs_dir / name / f"{stamp}-sweep"


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
