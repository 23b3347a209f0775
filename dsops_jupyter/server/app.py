"""The jupyter_server extension app: settings (traitlets), routes, and a clean shutdown.

Configure it like any Jupyter app, e.g. in ``jupyter_server_config.py``::

    c.DsopsExtension.job_store_class = "mypackage.SqlJobStore"   # a JobStore subclass
    c.DsopsExtension.stop_timeout = 30
    c.DsopsExtension.workers = 4          # jobs that run at once
    c.DsopsExtension.keep_finished = 500  # finished jobs kept in the list
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, Integer, Type, Unicode

from dsops_jupyter.server.handlers import MAX_NOTEBOOK_BYTES, MAX_REQUEST_BYTES, setup_handlers
from dsops_jupyter.server.jobs import KEEP_FINISHED, JobManager
from dsops_jupyter.server.progress import StageTimes
from dsops_jupyter.server.records import MAX_LOG_LINES
from dsops_jupyter.server.store import FileJobStore, JobStore


class DsopsExtension(ExtensionApp):
    """Routes under ``<base_url>dsops/`` (docs/rest-api.md) and the jobs behind them."""

    name = "dsops_jupyter"
    load_other_extensions = True

    job_store_class = Type(
        default_value=FileJobStore,
        klass=JobStore,
        config=True,
        help="Where job records are kept across restarts (a JobStore subclass; JobStore itself"
        " keeps nothing).",
    )
    jobs_dir = Unicode(
        "",
        config=True,
        help="The folder the job store uses; default: .dsops/jobs under the server root.",
    )
    workers = Integer(2, config=True, help="Jobs that run at once; each is heavy.")
    stop_timeout = Float(
        10.0,
        config=True,
        help="Seconds a cancelled job, or a running job on shutdown, gets to stop after SIGINT"
        " before it is killed.",
    )
    max_request_bytes = Integer(
        MAX_REQUEST_BYTES, config=True, help="Largest POST body accepted (413 above)."
    )
    max_notebook_bytes = Integer(
        MAX_NOTEBOOK_BYTES,
        config=True,
        help="Largest notebook POST /dsops/pipeline accepts (413 above).",
    )
    max_log_lines = Integer(
        MAX_LOG_LINES, config=True, help="Log lines kept per job record (the last ones)."
    )
    keep_finished = Integer(
        KEEP_FINISHED, config=True, help="Finished jobs listed and kept (the newest ones)."
    )

    jobs: JobManager

    def initialize_handlers(self) -> None:
        server = self.serverapp
        assert server is not None, "jupyter_server sets serverapp before initialize_handlers"
        root = Path(server.root_dir).expanduser().resolve()
        directory = Path(self.jobs_dir).expanduser() if self.jobs_dir else root / ".dsops" / "jobs"
        store = self.job_store_class(directory=directory, parent=self)
        self.jobs = JobManager(
            workers=self.workers,
            store=store,
            max_log_lines=self.max_log_lines,
            keep_finished=self.keep_finished,
            stop_timeout=self.stop_timeout,
            stage_times=StageTimes(store.stage_times_path),
        )
        setup_handlers(
            server.web_app, root, self.jobs, self.max_request_bytes, self.max_notebook_bytes
        )
        self.log.info("dsops_jupyter: routes registered under %sdsops/", server.base_url)

    async def stop_extension(self) -> None:
        """Called on server shutdown (SIGTERM, Ctrl-C): stop the jobs, record how they ended."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.jobs.shutdown, self.stop_timeout)
