"""Background jobs for the server: package / run a notebook off the event loop.

The handlers must answer within milliseconds while a package job converts, commits and builds
an image for minutes, so each job runs in a small thread pool and its state is a plain record
(records.Job) fed by the core's events; the frontend polls that record. The real work of a job
runs in its own process (work.ProcessWork), because a process can be stopped: a cancel or the
server's shutdown sends it SIGINT (Python unwinds, a commit rolls back, nbclient shuts its kernel
down), and it is killed if it has not ended after ``stop_timeout`` seconds.

Records are kept in a JobStore, so a restarted server lists past jobs; jobs that were still
queued or running when the server stopped (or died) are marked interrupted. Stage durations of
finished jobs weigh the progress of later ones (progress.StageTimes).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from typing import TYPE_CHECKING, Any

from dsops_jupyter.errors import DsopsError, JobConflictError
from dsops_jupyter.events import Event
from dsops_jupyter.server.progress import StageTimes, WeightedProgress, stage_key
from dsops_jupyter.server.records import (
    MAX_ERROR_CHARS,
    MAX_LINE_CHARS,
    MAX_LOG_LINES,
    Job,
    JobKind,
    bounded,
    bounded_json,
    one_line,
)
from dsops_jupyter.server.work import JobCrashed, JobInterrupted, Work

if TYPE_CHECKING:  # the store imports traitlets, which this module does not need
    from dsops_jupyter.server.store import JobStore

log = logging.getLogger(__name__)

#: Finished jobs kept for GET /dsops/jobs; older ones are forgotten (and deleted from the store).
KEEP_FINISHED = 100
#: While a job runs, its log and progress reach the store at most this often (seconds).
SAVE_INTERVAL = 1.0
#: Seconds a stopped job gets to end after SIGINT before it is killed (a cancel; shutdown
#: passes its own).
STOP_TIMEOUT = 10.0

INTERRUPTED = "interrupted: the Jupyter server stopped while this job was {state}; start it again"
CANCELLED = "cancelled while {state}"


class ServerStoppingError(DsopsError):
    """No new jobs while the server shuts down."""

    http_status = 503


class NotebookBusyError(JobConflictError):
    """A job is already queued or running on the notebook; ``job`` is that job's record."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message)
        self.job = job


class JobManager:
    """Runs jobs in a thread pool; at most one active job per notebook path."""

    def __init__(
        self,
        workers: int = 2,
        store: JobStore | None = None,
        max_log_lines: int = MAX_LOG_LINES,
        keep_finished: int = KEEP_FINISHED,
        stop_timeout: float = STOP_TIMEOUT,
        stage_times: StageTimes | None = None,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsops-job")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._running: dict[str, tuple[Work, Future[None]]] = {}
        self._progress: dict[str, WeightedProgress] = {}
        self._cancelling: set[str] = set()
        self._saved_at: dict[str, float] = {}
        self._pending: dict[str, threading.Timer] = {}
        self._store = store
        self._max_log_lines = max(1, max_log_lines)
        self._keep_finished = max(0, keep_finished)
        self._stop_timeout = max(0.0, stop_timeout)
        self._stage_times = stage_times or StageTimes(None)
        self._stopping = False
        self._restore()

    def submit(
        self,
        kind: JobKind,
        path: str,
        work: Work,
        plan: Sequence[str] = (),
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Queue ``work`` for notebook ``path`` and return the job as it is now (queued).

        ``plan``: the stage keys the job will announce (``options.stage_plan()``), which weigh
        its progress; ``options``: what the client asked for, kept in the record.
        NotebookBusyError if a job on the same notebook is still queued or running."""
        with self._lock:
            if self._stopping:
                raise ServerStoppingError("the Jupyter server is stopping; start the job again")
            busy = self._active_on(path)
            if busy is not None:
                raise NotebookBusyError(
                    f"a job is already working on {path} (job {busy.id[:8]}, {busy.state});"
                    " wait for it to finish or cancel it",
                    busy.to_json(),
                )
            job = Job(kind=kind, path=path, options=bounded_json(options or {}))
            self._jobs[job.id] = job
            self._progress[job.id] = WeightedProgress(
                plan, lambda key: self._stage_times.estimate(kind, key)
            )
            self._forget_old()
            self._save(job)
            snapshot = job.to_json()
            future = self._executor.submit(self._run, job, work)
            self._running[job.id] = (work, future)
        return snapshot

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return self._snapshot(job) if job else None

    def list(self, path: str | None = None) -> list[dict[str, Any]]:
        """All known jobs (of notebook ``path`` only, when given), newest first."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if path is None or j.path == path]
            jobs.sort(key=lambda j: j.created, reverse=True)
            return [self._snapshot(j) for j in jobs]

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """Stop a job: a queued one never starts, a running one gets SIGINT and is killed
        after ``stop_timeout`` seconds; it ends "cancelled". A finished job stays as it is.
        None for an unknown id."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or not job.active or job_id in self._cancelling:
                return self._snapshot(job) if job else None
            work, future = self._running[job_id]
            self._cancelling.add(job_id)
            if future.cancel():  # still queued: it never starts
                self._running.pop(job_id, None)
                self._end_cancelled(job, "")
                return self._snapshot(job)
            job.stage = "Cancelling"
            self._append_log(job, ["== Cancelling"])
            self._save(job)
        _call(work, "stop")
        killer = threading.Timer(self._stop_timeout, self._kill_late, args=(job_id,))
        killer.daemon = True
        killer.start()
        return self.get(job_id)

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

    def _active_on(self, path: str) -> Job | None:
        return next((j for j in self._jobs.values() if j.path == path and j.active), None)

    def _snapshot(self, job: Job) -> dict[str, Any]:
        """The job's JSON; a running job's progress moves on with the time in its stage."""
        overall = self._progress.get(job.id)
        if job.state == "running" and overall is not None:
            job.progress = overall.at(time.time())
        return job.to_json()

    def _kill_late(self, job_id: str) -> None:
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:
            _call(running[0], "kill")

    def _run(self, job: Job, work: Work) -> None:
        with self._lock:
            job.state = "running"
            job.stage = "Starting"
            self._save(job)
        try:
            result = work(lambda event: self._on_event(job, event))
        except JobInterrupted as stop:
            with self._lock:
                if job.id in self._cancelling:
                    self._end_cancelled(job, str(stop))
                else:
                    self._interrupt(job)
        except DsopsError as err:
            self._finish(job, error=str(err), result=getattr(err, "record", None))
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
                self._progress.pop(job.id, None)
                self._cancelling.discard(job.id)

    def _on_event(self, job: Job, event: Event) -> None:
        with self._lock:
            overall = self._progress[job.id]
            now = time.time()
            if event.kind == "stage":
                name = bounded(event.message, MAX_LINE_CHARS)
                job.stage, job.detail = name or job.stage, ""
                if overall.on_stage(stage_key(name), now):
                    job.begin_stage(name, now)
                job.progress = overall.at(now)
                self._append_log(job, [f"== {event.message}"])
                self._save(job)
            elif event.kind == "progress" and event.fraction is not None:
                job.progress = overall.on_fraction(event.fraction, now)
                job.detail = bounded(event.message, MAX_LINE_CHARS) or job.detail
            elif event.kind == "log":
                self._append_log(job, event.message.splitlines() or [""])
            elif event.kind == "result" and event.message:
                self._append_log(job, [event.message])
            elif event.kind == "step":
                job.on_step(event.data, now)
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
            job.end_stage(job.finished)
            job.result = bounded_json(result) if result is not None else None
            job.error = bounded(error, MAX_ERROR_CHARS) if error is not None else None
            if error is None:
                job.state, job.stage, job.progress = "succeeded", "Done", 1.0
                self._stage_times.learn(job.kind, job.stages)
            else:
                job.state, job.stage = "failed", "Failed"
                self._stage_times.learn(job.kind, job.stages[:-1])  # the last one was cut short
                self._append_log(job, [f"error: {job.error}"])
            self._end_steps(job)
            self._save(job)

    def _end_cancelled(self, job: Job, message: str) -> None:
        """Record ``job`` as cancelled; the lock is held."""
        job.error = bounded(message or CANCELLED.format(state=job.state), MAX_ERROR_CHARS)
        job.state, job.stage = "cancelled", "Cancelled"
        job.finished = time.time()
        job.end_stage(job.finished)
        self._append_log(job, [f"cancelled: {job.error}"])
        self._end_steps(job)
        self._save(job)

    def _interrupt(self, job: Job) -> None:
        """Record ``job`` (queued or running) as interrupted; the lock is held."""
        if not job.active:
            return
        job.error = INTERRUPTED.format(state=job.state)
        job.state, job.stage, job.interrupted = "failed", "Interrupted", True
        job.finished = job.finished or time.time()
        job.end_stage(job.finished)
        self._append_log(job, [f"error: {job.error}"])
        self._end_steps(job)
        self._save(job)

    @staticmethod
    def _end_steps(job: Job) -> None:
        """Steps still queued or running when a job ended did not run to the end (C3)."""
        for status in job.steps.values():
            if status.get("state") in ("queued", "running"):
                status["state"], status["started"] = "skipped", None

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
