"""Background jobs for the server: package / run a notebook off the event loop.

The handlers must answer within milliseconds while a package job converts, commits and builds
an image for minutes, so each job runs in a small thread pool and its state is a plain record
fed by the core's progress events; the frontend polls that record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dsops_jupyter.errors import DsopsError, JobConflictError
from dsops_jupyter.events import Event, OnEvent, OverallProgress

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "succeeded", "failed"]
JobKind = Literal["package", "run"]
Work = Callable[[OnEvent], dict[str, Any]]

#: Finished jobs kept for GET /dsops/jobs; older ones are forgotten.
KEEP_FINISHED = 100


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

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "path": self.path,
            "state": self.state,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "log": list(self.log),
            "created": self.created,
            "finished": self.finished,
            "error": self.error,
            "result": self.result,
        }

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")


class JobManager:
    """Runs jobs in a thread pool; at most one active job per notebook path."""

    def __init__(self, workers: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsops-job")
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def submit(
        self, kind: JobKind, path: str, work: Work, expected_stages: int = 1
    ) -> dict[str, Any]:
        """Queue ``work`` for notebook ``path`` and return the job as it is now (queued);
        JobConflictError if a job on the same notebook is still queued or running."""
        with self._lock:
            busy = next((j for j in self._jobs.values() if j.path == path and j.active), None)
            if busy is not None:
                raise JobConflictError(
                    f"a job is already working on {path} (job {busy.id[:8]}, {busy.state});"
                    " wait for it to finish"
                )
            job = Job(kind=kind, path=path)
            self._jobs[job.id] = job
            self._forget_old()
            snapshot = job.to_json()
        self._executor.submit(self._run, job, work, OverallProgress(expected_stages))
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

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, job: Job, work: Work, overall: OverallProgress) -> None:
        with self._lock:
            job.state = "running"
            job.stage = "Starting"
        try:
            result = work(lambda event: self._on_event(job, overall, event))
        except DsopsError as err:
            self._finish(job, error=str(err))
        except Exception as err:  # a bug in dsops: keep the server alive, say so in one line
            log.exception("dsops job %s on %s crashed", job.id, job.path)
            self._finish(job, error=f"internal error: {type(err).__name__}: {one_line(err)}")
        else:
            self._finish(job, result=result)

    def _on_event(self, job: Job, overall: OverallProgress, event: Event) -> None:
        with self._lock:
            if event.kind == "stage":
                job.stage = event.message or job.stage
                job.progress = overall.on_stage()
                job.log.append(f"== {event.message}")
            elif event.kind == "progress" and event.fraction is not None:
                job.progress = overall.on_fraction(event.fraction)
            elif event.kind == "log":
                job.log.extend(event.message.splitlines() or [""])
            elif event.kind == "result" and event.message:
                job.log.append(event.message)

    def _finish(
        self, job: Job, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        with self._lock:
            job.finished = time.time()
            job.result = result
            job.error = error
            if error is None:
                job.state, job.stage, job.progress = "succeeded", "Done", 1.0
            else:
                job.state, job.stage = "failed", "Failed"
                job.log.append(f"error: {error}")

    def _forget_old(self) -> None:
        done = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.created)
        for job in done[: max(0, len(done) - KEEP_FINISHED)]:
            del self._jobs[job.id]


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def relative_paths(value: Any, root: Path) -> Any:
    """Rewrite absolute paths under ``root`` (in nested JSON) as root-relative posix paths,
    so the frontend can open them; paths outside ``root`` stay absolute."""
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


def package_work(notebook: Path, root: Path, options: dict[str, Any]) -> Work:
    """The package job: convert -> commit -> (build -> smoke), as the core's package_notebook."""

    def work(on_event: OnEvent) -> dict[str, Any]:
        from dsops_jupyter.package import package_notebook

        result = package_notebook(
            notebook,
            parameters=options.get("parameters") or None,
            name=options.get("name"),
            commit=options.get("commit", True),
            build=options.get("build", False),
            smoke=options.get("smoke", False),
            on_event=on_event,
        )
        return package_result_json(result.to_json(), root)

    return work


def run_work(notebook: Path, root: Path, options: dict[str, Any]) -> Work:
    """The run job: papermill runs the notebook (or chosen steps) with parameters."""

    def work(on_event: OnEvent) -> dict[str, Any]:
        from dsops_jupyter.execute import run_notebook

        record = run_notebook(
            notebook,
            parameters=options.get("parameters") or None,
            steps=options.get("steps") or None,
            on_event=on_event,
        )
        run = relative_paths(record.to_json(), root)
        return {**EMPTY_RESULT, "run": run}

    return work


#: Every key of a contract ``result``; a run job fills only ``run``.
EMPTY_RESULT: dict[str, Any] = {
    "version": None,
    "tag": None,
    "commit": None,
    "short": None,
    "created": False,
    "script": None,
    "package_dir": None,
    "image": None,
    "run": None,
}


def package_result_json(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """PackageResult.to_json() in the contract's flat shape: the version's fields
    (``version`` may come as a nested Version dict or as flat keys) plus paths made relative."""
    data = dict(data)
    smoke = data.get("smoke")
    if data.get("run") is None and isinstance(smoke, dict):
        # The contract's `run` is the smoke run: the script ran whole, in the image.
        status = "succeeded" if smoke.get("exit_code") == 0 else "failed"
        data["run"] = {"status": status, "output_notebook": None, "steps": [], **smoke}
    version = data.get("version")
    if isinstance(version, dict):
        data.update({k: version.get(k) for k in ("tag", "commit", "short") if k in version})
        number = version.get("number")
        data["version"] = f"v{number}" if number is not None else version.get("tag")
    return relative_paths({**EMPTY_RESULT, **data}, root)


def expected_stages(kind: JobKind, options: dict[str, Any]) -> int:
    """A hint for OverallProgress: how many stages the core will likely report."""
    if kind == "run":
        return 1
    flags = (options.get("commit", True), options.get("build", False), options.get("smoke", False))
    return 1 + sum(bool(f) for f in flags)
