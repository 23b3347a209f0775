"""Background jobs for the server: package / run a notebook off the event loop.

The handlers must answer within milliseconds while a package job converts, commits and builds
an image for minutes, so each job runs in a small thread pool and its state is a plain record
fed by the core's progress events; the frontend polls that record. The real work of a job runs
in its own process (ProcessWork), because a process, unlike a thread, can be stopped: on server
shutdown it gets SIGINT (Python unwinds, a commit rolls back, nbclient shuts its kernel down)
and is killed if it has not ended after ``stop_timeout`` seconds.

Records are kept in a JobStore, so a restarted server lists past jobs; jobs that were still
queued or running when the server stopped (or died) are marked interrupted. Records are bounded:
the last ``max_log_lines`` log lines, long lines, errors and result strings cut short, so a huge
value or a chatty cell cannot make every GET /dsops/jobs huge.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dsops_jupyter.errors import DsopsError, JobConflictError
from dsops_jupyter.events import Event, OnEvent, OverallProgress
from dsops_jupyter.model import PackageOptions, RunOptions

if TYPE_CHECKING:  # the store imports traitlets, which this module does not need
    from dsops_jupyter.server.store import JobStore

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed"]
JobKind = Literal["package", "run"]
Work = Callable[[OnEvent], dict[str, Any]]

#: Finished jobs kept for GET /dsops/jobs; older ones are forgotten (and deleted from the store).
KEEP_FINISHED = 100
#: Log lines kept per job (the last ones: where a failure shows), and characters per line.
MAX_LOG_LINES = 500
MAX_LINE_CHARS = 1000
#: Characters kept of an error message, and of any string in a job's result.
MAX_ERROR_CHARS = 1000
MAX_VALUE_CHARS = 1000
#: While a job runs, its log and progress reach the store at most this often (seconds).
SAVE_INTERVAL = 1.0

PACKAGE_PARENT = Path(__file__).resolve().parents[2]

INTERRUPTED = "interrupted: the Jupyter server stopped while this job was {state}; start it again"


class JobInterrupted(Exception):
    """The job was stopped because the server is shutting down."""


class JobCrashed(Exception):
    """The job's process failed for a reason that is a bug in dsops (already logged)."""


class ServerStoppingError(DsopsError):
    """No new jobs while the server shuts down."""

    http_status = 503


@dataclass
class Job:
    """One job as the REST contract shows it (see docs/rest-api.md)."""

    kind: JobKind
    path: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = "queued"
    stage: str = "Queued"
    progress: float = 0.0
    log: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    interrupted: bool = False
    dropped_lines: int = 0  # log lines no longer kept (the oldest)

    def to_json(self) -> dict[str, Any]:
        dropped = [f"[{self.dropped_lines} earlier lines not kept]"] if self.dropped_lines else []
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "log": dropped + self.log,
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
            "result": self.result,
            "interrupted": self.interrupted,
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
            and job.state in ("queued", "running", "succeeded", "failed")
            and isinstance(job.path, str)
            and isinstance(job.log, list)
            and isinstance(job.created, int | float)
        )
        return job if valid else None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


class JobManager:
    """Runs jobs in a thread pool; at most one active job per notebook path."""

    def __init__(
        self,
        workers: int = 2,
        store: JobStore | None = None,
        max_log_lines: int = MAX_LOG_LINES,
        keep_finished: int = KEEP_FINISHED,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsops-job")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, tuple[Work, Future[None]]] = {}
        self._saved_at: dict[str, float] = {}
        self._pending: dict[str, threading.Timer] = {}
        self._store = store
        self._max_log_lines = max(1, max_log_lines)
        self._keep_finished = max(0, keep_finished)
        self._stopping = False
        self._restore()

    def submit(
        self, kind: JobKind, path: str, work: Work, expected_stages: int = 1
    ) -> dict[str, Any]:
        """Queue ``work`` for notebook ``path`` and return the job as it is now (queued);
        JobConflictError if a job on the same notebook is still queued or running."""
        with self._lock:
            if self._stopping:
                raise ServerStoppingError("the Jupyter server is stopping; start the job again")
            busy = next((j for j in self._jobs.values() if j.path == path and j.active), None)
            if busy is not None:
                raise JobConflictError(
                    f"a job is already working on {path} (job {busy.id[:8]}, {busy.state});"
                    " wait for it to finish"
                )
            job = Job(kind=kind, path=path)
            self._jobs[job.id] = job
            self._forget_old()
            self._save(job)
            snapshot = job.to_json()
            future = self._executor.submit(self._run, job, work, OverallProgress(expected_stages))
            self._running[job.id] = (work, future)
        return snapshot

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return job.to_json() if job else None

    def list(self) -> list[dict[str, Any]]:
        """All known jobs, newest first."""
        with self._lock:
            jobs = sorted(self._jobs.values(), key=lambda j: j.created, reverse=True)
            return [j.to_json() for j in jobs]

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop every job within about ``timeout`` seconds and record how each one ended.

        Queued jobs never start; running ones are asked to stop (works that can: ProcessWork),
        then killed when the time is up. Jobs that finish meanwhile keep their real outcome;
        the others are recorded as interrupted."""
        with self._lock:
            self._stopping = True
            running = list(self._running.values())
        self._executor.shutdown(wait=False, cancel_futures=True)
        for work, _future in running:
            _call(work, "stop")
        # A cancelled future never counts as done for wait(): leave the queued ones out.
        futures = [future for _work, future in running if not future.cancelled()]
        _done, late = wait_futures(futures, timeout=max(0.0, timeout))
        for work, future in running:
            if future in late:
                _call(work, "kill")
        wait_futures(late, timeout=2.0)  # killed: their threads read EOF and record it
        with self._lock:
            for job in self._jobs.values():
                if job.active:
                    self._interrupt(job)

    def _run(self, job: Job, work: Work, overall: OverallProgress) -> None:
        with self._lock:
            job.state = "running"
            job.stage = "Starting"
            self._save(job)
        try:
            result = work(lambda event: self._on_event(job, overall, event))
        except JobInterrupted:
            with self._lock:
                self._interrupt(job)
        except DsopsError as err:
            self._finish(job, error=str(err))
        except JobCrashed as err:
            self._finish(job, error=f"internal error: {err}")
        except Exception as err:  # a bug in dsops: keep the server alive, say so in one line
            log.exception("dsops job %s on %s crashed", job.id, job.path)
            self._finish(job, error=f"internal error: {type(err).__name__}: {one_line(err)}")
        else:
            self._finish(job, result=result)
        finally:
            with self._lock:
                self._running.pop(job.id, None)

    def _on_event(self, job: Job, overall: OverallProgress, event: Event) -> None:
        with self._lock:
            if event.kind == "stage":
                job.stage = bounded(event.message, MAX_LINE_CHARS) or job.stage
                job.progress = overall.on_stage()
                self._append_log(job, [f"== {event.message}"])
                self._save(job)
            elif event.kind == "progress" and event.fraction is not None:
                job.progress = overall.on_fraction(event.fraction)
            elif event.kind == "log":
                self._append_log(job, event.message.splitlines() or [""])
            elif event.kind == "result" and event.message:
                self._append_log(job, [event.message])
            self._save_soon(job)

    def _append_log(self, job: Job, lines: Sequence[str]) -> None:
        job.log.extend(bounded(line, MAX_LINE_CHARS, flat=False) for line in lines)
        excess = len(job.log) - self._max_log_lines
        if excess > 0:
            del job.log[:excess]
            job.dropped_lines += excess

    def _finish(
        self, job: Job, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        with self._lock:
            if not job.active:  # already recorded as interrupted by shutdown()
                return
            job.finished = time.time()
            job.result = bounded_json(result) if result is not None else None
            job.error = bounded(error, MAX_ERROR_CHARS) if error is not None else None
            if error is None:
                job.state, job.stage, job.progress = "succeeded", "Done", 1.0
            else:
                job.state, job.stage = "failed", "Failed"
                self._append_log(job, [f"error: {job.error}"])
            self._save(job)

    def _interrupt(self, job: Job) -> None:
        """Record ``job`` (queued or running) as interrupted; the lock is held."""
        if not job.active:
            return
        job.error = INTERRUPTED.format(state=job.state)
        job.state, job.stage, job.interrupted = "failed", "Interrupted", True
        job.finished = job.finished or time.time()
        self._append_log(job, [f"error: {job.error}"])
        self._save(job)

    def _save_soon(self, job: Job) -> None:
        """Save now if the last save is old enough, else once SAVE_INTERVAL has passed: a
        chatty cell costs a write a second, and a crash loses at most a second of log."""
        wait = SAVE_INTERVAL - (time.monotonic() - self._saved_at.get(job.id, 0.0))
        if wait <= 0:
            self._save(job)
        elif job.id not in self._pending:
            timer = threading.Timer(wait, self._save_pending, args=(job,))
            timer.daemon = True
            self._pending[job.id] = timer
            timer.start()

    def _save_pending(self, job: Job) -> None:
        with self._lock:
            self._pending.pop(job.id, None)
            self._save(job)

    def _save(self, job: Job) -> None:
        """Write the job's record to the store; the lock is held, so writes never reorder."""
        self._saved_at[job.id] = time.monotonic()
        if self._store is None:
            return
        try:
            self._store.save(job.to_json())
        except OSError as err:  # a full disk must not fail the job itself
            log.warning("dsops: cannot save job %s: %s", job.id, err)

    def _restore(self) -> None:
        """Load the store's jobs; those still active were cut off by a stop or a crash."""
        if self._store is None:
            return
        for record in self._store.load():
            job = Job.from_json(record)
            if job is None:
                log.warning("dsops: ignoring a stored job record that is not a job: %.80s", record)
                continue
            self._jobs[job.id] = job
            if job.active:
                self._interrupt(job)
        self._forget_old()

    def _forget_old(self) -> None:
        done = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.created)
        for job in done[: max(0, len(done) - self._keep_finished)]:
            del self._jobs[job.id]
            self._saved_at.pop(job.id, None)
            if self._store is not None:
                self._store.delete(job.id)


def _call(work: Work, method: str) -> None:
    """``work.stop()`` / ``work.kill()`` when the work supports it (plain callables do not)."""
    action = getattr(work, method, None)
    if callable(action):
        action()


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
    in run records)."""
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


class ProcessWork:
    """A job's work in its own process (``python -m dsops_jupyter.server.worker``).

    Called in a job thread, it starts the worker, feeds it the job (one JSON line on stdin,
    which then stays open: EOF tells the worker the server is gone), replays the worker's
    events and returns its result or raises its error. ``stop()`` sends SIGINT so the job
    unwinds cleanly; ``kill()`` ends its whole process group.
    """

    def __init__(self, notebook: Path, root: Path, options: PackageOptions | RunOptions):
        self.job = {
            "kind": job_kind(options),
            "notebook": str(notebook),
            "root": str(root),
            "options": options.to_json(),
        }
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False

    def __call__(self, on_event: OnEvent) -> dict[str, Any]:
        with self._lock:
            if self._stopped:
                raise JobInterrupted()
            self._process = process = subprocess.Popen(
                [sys.executable, "-m", "dsops_jupyter.server.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # `-m` puts the cwd first on sys.path: the folder holding this very package, so
                # the worker runs the server's dsops and no file in the user's root shadows it.
                cwd=PACKAGE_PARENT,
                start_new_session=True,  # a Ctrl-C in the server's terminal is the server's
            )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(self.job).encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # it died at once: the missing outcome below says so
        outcome: dict[str, Any] = {}
        for line in process.stdout:
            message = json.loads(line)
            if "event" in message:
                on_event(Event(**message["event"]))
            else:
                outcome = message
        process.wait()
        process.stdin.close()
        process.stdout.close()
        return self._result(outcome, process.returncode)

    def _result(self, outcome: dict[str, Any], returncode: int) -> dict[str, Any]:
        if "result" in outcome:
            return outcome["result"]
        if self._stopped:
            raise JobInterrupted()
        if "error" in outcome:
            raise DsopsError(outcome["error"])
        if "crash" in outcome:
            log.error("dsops job process crashed:\n%s", outcome.get("traceback", ""))
            raise JobCrashed(outcome["crash"])
        raise JobCrashed(f"the job process ended with exit code {returncode} and no outcome")

    def stop(self) -> None:
        """Ask the worker to stop: SIGINT, as a Ctrl-C would."""
        with self._lock:
            self._stopped = True
            if self._process is not None and self._process.poll() is None:
                self._process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """End the worker and everything it started in its session, now."""
        with self._lock:
            self._stopped = True
            if self._process is not None:  # its group outlives it: kill that even so
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self._process.pid, signal.SIGKILL)
