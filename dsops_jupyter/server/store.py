"""Where job records live, so a restarted server still lists past jobs.

The store is swappable (``c.DsopsExtension.job_store_class``), as jupyter-scheduler swaps its
scheduler: a team may want jobs in a database. The default keeps one JSON file per job under
``<server root>/.dsops/jobs/``:

- job records name notebooks relative to the server root, so they belong to that root; a
  server started elsewhere has its own history instead of a mixed one;
- one file per job means an update rewrites one small file atomically (write + rename): a
  crash loses at most the last update of one job and never corrupts the others, and
  forgetting an old job is one unlink, with no log to compact;
- the durations of finished jobs' stages, which weigh the progress of later ones, live beside
  the records in ``stage-times.json``;
- ``.dsops/`` ignores itself in Git (dotdsops.prepare, as for the step cache and the run
  folders), and the records are private to the user (mode 0600): they hold parameter values.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

from traitlets.config import LoggingConfigurable

from dsops_jupyter import dotdsops
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.server.progress import STAGE_TIMES_FILE

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


class JobStore(LoggingConfigurable):
    """Keeps nothing: jobs are forgotten when the server stops. Base class of all stores."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.directory = directory

    def load(self) -> list[dict[str, Any]]:
        """Every stored job record (the JobManager validates them)."""
        return []

    def save(self, record: dict[str, Any]) -> None:
        """Create or replace the record of job ``record["id"]``."""

    def delete(self, job_id: str) -> None:
        """Forget a job; unknown ids are fine."""

    @property
    def stage_times_path(self) -> Path | None:
        """Where the durations of finished jobs' stages are kept (progress.StageTimes), beside
        the records; None: learned for this server's life only."""
        return None


class FileJobStore(JobStore):
    """One ``<id>.json`` file per job under ``directory``, created on the first save."""

    def load(self) -> list[dict[str, Any]]:
        records = []
        for path in sorted(self.directory.glob("*.json")):
            if not _JOB_ID.match(path.stem):  # stage-times.json
                continue
            try:
                record = json.loads(path.read_bytes())
            except (OSError, ValueError, RecursionError) as err:
                self.log.warning("dsops: skipping unreadable job record %s: %s", path, err)
                continue
            if isinstance(record, dict) and record.get("id") == path.stem:
                records.append(record)
        return records

    def save(self, record: dict[str, Any]) -> None:
        self._prepare()
        data = json.dumps(record, default=str, separators=(",", ":")).encode()
        atomic_write(self._path(record["id"]), data, mode=0o600)

    def delete(self, job_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(job_id).unlink()

    @property
    def stage_times_path(self) -> Path:
        return self.directory / STAGE_TIMES_FILE

    def _path(self, job_id: str) -> Path:
        if not _JOB_ID.match(job_id):  # ids are ours, never a path a client could choose
            raise ValueError(f"not a job id: {job_id!r}")
        return self.directory / f"{job_id}.json"

    def _prepare(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        dotdsops.prepare(self.directory)  # a .dsops/ folder ignores itself in Git
