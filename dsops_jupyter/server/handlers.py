"""REST handlers under ``<base_url>dsops/`` (contract: docs/rest-api.md).

Thin by design: parse and check the request, call the core, render JSON. Every error is
``{"error": "<one line>"}`` with a 4xx status (DsopsError.http_status), never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from http.client import responses
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, TypeVar

import nbformat
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.web import HTTPError

from dsops_jupyter.errors import DsopsError
from dsops_jupyter.model import PackageOptions, RunOptions, quoted
from dsops_jupyter.server.jobs import JobManager, NotebookBusyError
from dsops_jupyter.server.paths import check_writes, inside
from dsops_jupyter.server.records import (
    MAX_ERROR_CHARS,
    bounded,
    job_kind,
    one_line,
    relative_paths,
)
from dsops_jupyter.server.work import ProcessWork

AUTH_RESOURCE = "dsops"
T = TypeVar("T")

#: The options a client may set, per kind. Folders, archives, registries and kernels stay the
#: server's choice (its writes are confined to the root). Unknown names are refused; names of
#: the other kind are type-checked, then dropped.
CLIENT_OPTIONS: dict[str, tuple[str, ...]] = {
    "package": (
        *("name", "commit", "build", "smoke", "force", "parameters", "export"),
        *("verify", "builder"),
    ),
    "run": ("parameters", "steps"),
}
OPTIONS_OF: dict[str, type[PackageOptions] | type[RunOptions]] = {
    "package": PackageOptions,
    "run": RunOptions,
}
KINDS = tuple(CLIENT_OPTIONS)
#: Default bound of a POST body (DsopsExtension.max_request_bytes): options are small.
MAX_REQUEST_BYTES = 1024 * 1024
#: Default bound of POST /dsops/pipeline (DsopsExtension.max_notebook_bytes): a notebook's
#: outputs (plots) make it far bigger than job options.
MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
#: Nesting a parameter value may have: deeper is no notebook's literal, and would only make
#: the core and the kernel recurse.
MAX_VALUE_DEPTH = 32


class DsopsHandler(APIHandler):
    """Shared plumbing: the root dir, the job manager, path checks, JSON errors."""

    auth_resource = AUTH_RESOURCE

    @property
    def jobs(self) -> JobManager:
        return self.settings["dsops_jobs"]

    @property
    def root(self) -> Path:
        return self.settings["dsops_root"]

    def notebook_path(self, rel: Any) -> Path:
        """The absolute notebook path for a root-relative ``rel``; refuses escapes."""
        if not isinstance(rel, str) or not rel.strip():
            raise HTTPError(400, "missing 'path': a notebook path relative to the server root")
        if os.path.isabs(rel) or rel.startswith(("/", "\\")) or ".." in Path(rel).parts:
            raise HTTPError(403, f"path {quoted(rel)} is outside the server root")
        try:
            if not inside(self.root / rel, self.root):
                raise HTTPError(403, f"path {quoted(rel)} is outside the server root")
            target = (self.root / rel).resolve()
            found = target.is_file()
        except (OSError, ValueError) as err:  # too long a name, a NUL byte, ...
            reason = err.strerror if isinstance(err, OSError) else one_line(err)
            raise HTTPError(400, f"cannot use path {quoted(rel)}: {reason}") from None
        if not found:
            raise HTTPError(404, f"no such notebook: {quoted(rel)}")
        return target

    def json_body(self, limit_setting: str = "dsops_max_request_bytes") -> dict[str, Any]:
        raw = self.request.body or b"{}"
        limit = self.settings[limit_setting]
        if len(raw) > limit:
            raise HTTPError(413, f"request body of {len(raw)} bytes is over the {limit} limit")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise HTTPError(400, f"request body is not valid JSON: {one_line(err)}") from err
        except RecursionError:
            raise HTTPError(400, "request body is not valid JSON: nested too deeply") from None
        if not isinstance(body, dict):
            raise HTTPError(400, "request body must be a JSON object")
        return body

    def relative(self, path: Path) -> str:
        """Root-relative posix path if under the root, else the absolute path."""
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """JSON ``{"error": one line}`` for every failure, with no traceback."""
        exc = (kwargs.get("exc_info") or (None, None, None))[1]
        if isinstance(exc, DsopsError):
            status_code, message = exc.http_status, str(exc)
            self.set_status(status_code)
        elif isinstance(exc, HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        elif status_code >= 500:
            message = "internal error in dsops; see the Jupyter server log"
        else:
            message = responses.get(status_code, "request refused")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": bounded(message, MAX_ERROR_CHARS)}))

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # User errors are expected answers, not server faults: one log line, no traceback.
        if isinstance(value, DsopsError):
            self.log.info("dsops: %s %s -> %s", self.request.method, self.request.uri, value)
            return
        super().log_exception(typ, value, tb)


class PipelineHandler(DsopsHandler):
    """GET /dsops/pipeline?path=...: the notebook's steps (fresh or stale against the step
    cache, with the notebook's default parameters), edges and parameters; POST: the same for
    the notebook as edited, not yet saved."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        notebook = self.notebook_path(self.get_query_argument("path", None))
        name = self.get_query_argument("name", None) or None
        # Reading a big notebook takes a while: keep the event loop free.
        self.write_json(await off_loop(self.describe, notebook, name))

    @tornado.web.authenticated
    @authorized
    async def post(self) -> None:
        """The same for the notebook as edited: body ``{path, content[, name]}``."""
        body = self.json_body("dsops_max_notebook_bytes")
        notebook = self.notebook_path(body.get("path"))
        content, name = body.get("content"), body.get("name") or None
        if not isinstance(content, dict):
            raise HTTPError(400, "'content' must be the notebook's JSON (an object)")
        if name is not None and not isinstance(name, str):
            raise HTTPError(400, "'name' must be a string")
        self.write_json(await off_loop(self.describe, notebook, name, content))

    def describe(
        self, notebook: Path, name: str | None, content: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        from dsops_jupyter.cache import freshness, open_cache
        from dsops_jupyter.notebook import read_pipeline

        pipeline = read_pipeline(notebook, name=name, content=content)
        data = pipeline.to_json()
        states = freshness(pipeline, None, open_cache(notebook))
        for step, state in zip(data["steps"], states, strict=True):
            step["state"] = state.to_json()
        data["notebook"] = self.relative(notebook)
        data["output_dir"] = self.relative(output_dir(notebook, pipeline.name))
        return data


class JobsHandler(DsopsHandler):
    """GET /dsops/jobs (newest first), POST /dsops/jobs (start a package or run job)."""

    @tornado.web.authenticated
    @authorized
    def get(self) -> None:
        rel = self.get_query_argument("path", None)
        path = None if rel is None else PurePosixPath(rel).as_posix()
        self.write_json({"jobs": self.jobs.list(path)})

    @tornado.web.authenticated
    @authorized
    def post(self) -> None:
        body = self.json_body()
        kind = body.get("kind")
        if kind not in KINDS:
            raise HTTPError(400, f"unknown job kind {quoted(kind)}; expected 'package' or 'run'")
        notebook = self.notebook_path(body.get("path"))
        given = body.get("options", {})
        options = job_options(kind, given)
        check_writes(notebook, self.root, options)
        try:
            job = self.jobs.submit(
                job_kind(options),
                self.relative(notebook),
                ProcessWork(notebook, self.root, options),
                plan=options.stage_plan(),
                options=given or {},
            )
        except NotebookBusyError as busy:  # the client shows the running job instead
            self.write_json({"error": str(busy), "job": busy.job}, status=busy.http_status)
            return
        self.write_json(job, status=202)


class JobHandler(DsopsHandler):
    """GET /dsops/jobs/<id>."""

    @tornado.web.authenticated
    @authorized
    def get(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            raise HTTPError(404, f"no such job: {quoted(job_id)}")
        self.write_json(job)


class CancelHandler(DsopsHandler):
    """POST /dsops/jobs/<id>/cancel: stop the job; 202 with it (it ends "cancelled")."""

    @tornado.web.authenticated
    @authorized
    def post(self, job_id: str) -> None:
        job = self.jobs.cancel(job_id)
        if job is None:
            raise HTTPError(404, f"no such job: {quoted(job_id)}")
        self.write_json(job, status=202)


class RunsHandler(DsopsHandler):
    """GET /dsops/runs?path=...: the notebook's past runs, newest first (C5)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        from dsops_jupyter.history import list_runs

        notebook = self.notebook_path(self.get_query_argument("path", None))
        runs = await off_loop(list_runs, notebook)
        self.write_json({"runs": relative_paths(runs, self.root)})


class RunNotebookHandler(DsopsHandler):
    """GET /dsops/runs/notebook?path=...&dir=...: the executed notebook of one of the notebook's
    runs. JupyterLab's contents API hides the default ``.dsops/`` run folders, so the Runs view
    reads it here; only a run folder the /runs route lists is readable, nothing else."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        notebook = self.notebook_path(self.get_query_argument("path", None))
        run_dir = self.get_query_argument("dir", None)
        if not run_dir:
            raise HTTPError(400, "missing 'dir': a run folder as GET /dsops/runs lists it")
        self.write_json(await off_loop(self.executed_notebook, notebook, run_dir))

    def executed_notebook(self, notebook: Path, run_dir: str) -> dict[str, Any]:
        """``{dir, output_notebook, content}`` of the listed run whose ``dir`` is ``run_dir``."""
        from dsops_jupyter.history import list_runs

        runs = relative_paths(list_runs(notebook), self.root)
        run = next((run for run in runs if run["dir"] == run_dir), None)
        if run is None:
            raise HTTPError(404, f"no run {quoted(run_dir)} of {notebook.name}")
        output = run["output_notebook"]
        if not output:
            raise HTTPError(404, f"run {quoted(run_dir)} has no executed notebook")
        path = Path(output) if os.path.isabs(output) else self.root / output
        if not inside(path, (self.root / run_dir).resolve()):
            raise HTTPError(403, f"the notebook of run {quoted(run_dir)} is outside its folder")
        try:  # as the contents API gives notebooks: multi-line strings joined, nbformat 4
            content = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        except OSError:
            raise HTTPError(404, f"the executed notebook {quoted(output)} is gone") from None
        except ValueError as err:
            raise HTTPError(404, f"{quoted(output)} is no notebook: {one_line(err)}") from None
        return {"dir": run_dir, "output_notebook": output, "content": content}


class VersionsHandler(DsopsHandler):
    """GET /dsops/versions?path=...: the notebook's versions with their images, newest first."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        from dsops_jupyter.server.versions import version_entries

        notebook = self.notebook_path(self.get_query_argument("path", None))
        name = self.get_query_argument("name", None) or None
        self.write_json({"versions": await off_loop(version_entries, notebook, name)})


class VersionFileHandler(DsopsHandler):
    """GET /dsops/versions/file?path=...&tag=...[&file=...]: a file of a version's package
    folder, read from the tag's Git tree (default: the script)."""

    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        from dsops_jupyter.server.versions import version_file

        notebook = self.notebook_path(self.get_query_argument("path", None))
        tag = self.get_query_argument("tag", None)
        if not tag:
            raise HTTPError(400, "missing 'tag': a version's tag, e.g. dsops/<name>/v1")
        file = self.get_query_argument("file", None) or None
        name = self.get_query_argument("name", None) or None
        self.write_json(await off_loop(version_file, notebook, tag, file, name))


async def off_loop(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread: Git, the engine and big notebooks take a while."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def job_options(kind: str, options: Any) -> PackageOptions | RunOptions:
    """The client's options as the core's PackageOptions or RunOptions, which type-check them
    and own their defaults; this only keeps to the options a client may set."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise HTTPError(400, "'options' must be a JSON object")
    known = list(dict.fromkeys(CLIENT_OPTIONS["package"] + CLIENT_OPTIONS["run"]))
    unknown = next((key for key in options if key not in known), None)
    if unknown is not None:
        expected = ", ".join(known)
        raise HTTPError(400, f"unknown option {quoted(unknown)}; expected one of {expected}")
    parameters = options.get("parameters")
    if isinstance(parameters, dict):
        deep = next((k for k, v in parameters.items() if depth(v) > MAX_VALUE_DEPTH), None)
        if deep is not None:
            levels = f"nested over {MAX_VALUE_DEPTH} levels"
            raise HTTPError(400, f"parameter {quoted(deep)} is {levels}")
    own = {k: v for k, v in options.items() if k in CLIENT_OPTIONS[kind]}
    other = "run" if kind == "package" else "package"
    OPTIONS_OF[other].check_json({k: v for k, v in options.items() if k not in own})
    return OPTIONS_OF[kind].from_json(own)


def depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (iterative: no recursion limit)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            todo.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, level + 1) for v in item)
    return deepest


def output_dir(notebook: Path, name: str) -> Path:
    """Where the generated package goes (the core's config decides)."""
    from dsops_jupyter.config import load_config

    return load_config(notebook).package_dir(name)


def setup_handlers(
    web_app: tornado.web.Application,
    root: Path,
    jobs: JobManager,
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_notebook_bytes: int = MAX_NOTEBOOK_BYTES,
) -> None:
    base = url_path_join(web_app.settings["base_url"], "dsops")
    web_app.settings["dsops_root"] = root
    web_app.settings["dsops_jobs"] = jobs
    web_app.settings["dsops_max_request_bytes"] = max_request_bytes
    web_app.settings["dsops_max_notebook_bytes"] = max_notebook_bytes
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "pipeline"), PipelineHandler),
            (url_path_join(base, "jobs"), JobsHandler),
            (url_path_join(base, "jobs", r"([^/]+)"), JobHandler),
            (url_path_join(base, "jobs", r"([^/]+)", "cancel"), CancelHandler),
            (url_path_join(base, "runs"), RunsHandler),
            (url_path_join(base, "runs", "notebook"), RunNotebookHandler),
            (url_path_join(base, "versions"), VersionsHandler),
            (url_path_join(base, "versions", "file"), VersionFileHandler),
        ],
    )
