"""A job's work in its own process, which, unlike a thread, can be stopped.

ProcessWork starts ``python -m dsops_jupyter.server.worker``, replays its events and returns
its result or raises its error. Stopping it (a cancel, or the server shutting down) sends SIGINT:
Python unwinds, a commit rolls back, nbclient shuts its kernel down; ``kill()`` ends the whole
process group when it does not end in time.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dsops_jupyter.errors import DsopsError
from dsops_jupyter.events import Event, OnEvent
from dsops_jupyter.model import PackageOptions, RunOptions
from dsops_jupyter.server.records import job_kind

log = logging.getLogger(__name__)

Work = Callable[[OnEvent], dict[str, Any]]

PACKAGE_PARENT = Path(__file__).resolve().parents[2]


class JobInterrupted(Exception):
    """The job was stopped (cancelled, or the server is shutting down); its message, if any,
    is the core's one line on what it undid."""


class JobCrashed(Exception):
    """The job's process failed for a reason that is a bug in dsops (already logged)."""


class JobError(DsopsError):
    """The job's one-line user error, with the run record of a failed run (C4) when there is
    one, so the job keeps what ran."""

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record


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

    @property
    def pid(self) -> int | None:
        """The worker's process id once started (its session and group id too)."""
        return self._process.pid if self._process is not None else None

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
            raise JobInterrupted(outcome.get("error", ""))
        if "error" in outcome:
            raise JobError(outcome["error"], outcome.get("record"))
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
