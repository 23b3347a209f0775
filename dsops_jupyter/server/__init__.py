"""jupyter_server extension: the ``/dsops`` REST routes and their background jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Concurrent jobs (papermill kernels, docker builds); small on purpose, each is heavy.
WORKERS = 2


def load_jupyter_server_extension(server_app: Any) -> None:
    """Register the routes; called by dsops_jupyter._load_jupyter_server_extension."""
    # Imported here so `dsops_jupyter.server.jobs` stays importable without tornado.
    from dsops_jupyter.server.handlers import setup_handlers
    from dsops_jupyter.server.jobs import JobManager

    root = Path(server_app.root_dir).expanduser().resolve()
    setup_handlers(server_app.web_app, root, JobManager(workers=WORKERS))
    server_app.log.info("dsops_jupyter: routes registered under %sdsops/", server_app.base_url)
