"""One server job in its own process: ``python -m dsops_jupyter.server.worker``.

Started by ProcessWork (jobs.py). Protocol:

- stdin: one JSON line ``{"kind", "notebook", "root", "options"}``, then it stays open; EOF
  means the server is gone, and the job stops as on SIGINT (no orphan commits or kernels).
- stdout: JSON lines: ``{"event": {...}}`` per progress event, then exactly one outcome:
  ``{"result": {...}}``, ``{"error": "one line", "record": {...} | null}`` (a DsopsError; a
  failed run's record, C4), ``{"interrupted": true}``
  or ``{"crash": "Type: message", "traceback": "..."}`` (a bug in dsops).

SIGINT is how the server stops a job: Python unwinds (finally blocks run, a commit rolls
back) and nbclient shuts its kernel down. Anything the job prints goes to stderr, which is the
server's log; the protocol has a private copy of stdout.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from dsops_jupyter.errors import DsopsError, RunInterruptedError
from dsops_jupyter.events import Event, OnEvent, stdout_channel
from dsops_jupyter.model import PackageOptions, RunOptions
from dsops_jupyter.server.paths import check_writes
from dsops_jupyter.server.records import (
    MAX_LINE_CHARS,
    bounded,
    bounded_json,
    relative_paths,
    relative_text,
)


def run_job(job: dict[str, Any], on_event: OnEvent) -> dict[str, Any]:
    """Run one package or run job through the core; its result JSON with root-relative paths."""
    notebook, root = Path(job["notebook"]), Path(job["root"])
    if job["kind"] == "package":
        from dsops_jupyter.package import package_notebook

        options = PackageOptions.from_json(job["options"])
        check_writes(notebook, root, options)  # again: the tree may have changed
        return relative_paths(package_notebook(notebook, options, on_event).to_json(), root)
    from dsops_jupyter.execute import run_notebook

    run = RunOptions.from_json(job["options"])
    check_writes(notebook, root, run)
    return relative_paths(run_notebook(notebook, run, on_event).to_json(), root)


def main() -> int:
    send = stdout_channel()
    job = json.loads(sys.stdin.readline())
    threading.Thread(target=_stop_when_orphaned, daemon=True).start()

    def on_event(event: Event) -> None:
        data = event.to_json()
        data["message"] = bounded(event.message, MAX_LINE_CHARS * 4, flat=False)
        # The outcome carries the result; of the events' data, only a step's state is shown.
        data["data"] = bounded_json(event.data) if event.kind == "step" else {}
        send({"event": data})

    send(_outcome(job, on_event))
    return 0


def _outcome(job: dict[str, Any], on_event: OnEvent) -> dict[str, Any]:
    root = Path(job["root"])
    try:
        return {"result": bounded_json(run_job(job, on_event))}
    except KeyboardInterrupt:
        return {"interrupted": True}
    except RunInterruptedError as err:  # a stopped run: its line says what was kept
        return {"interrupted": True, "error": relative_text(str(err), root)}
    except DsopsError as err:
        record = getattr(err, "record", None)  # ExecutionError's (C4)
        if isinstance(record, dict):
            record = bounded_json(relative_paths(record, root))
        return {"error": relative_text(str(err), root), "record": record}
    except Exception as err:  # a bug in dsops: the server logs the traceback
        return {"crash": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}


def _stop_when_orphaned(stdin: IO[str] = sys.stdin) -> None:
    """The server keeps our stdin open while it lives: EOF means it is gone."""
    stdin.read()
    os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
