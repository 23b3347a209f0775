"""Run a notebook (or chosen steps and what they need) with papermill, and keep a run record.

papermill does the executing; dsops chooses the cells, coerces parameters before any kernel
starts, reports progress per cell through a registered papermill engine, and writes a JSON run
record beside the executed notebook.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from dsops_jupyter import __version__, events, ipysyntax
from dsops_jupyter._probe import UNFINGERPRINTABLE
from dsops_jupyter.config import load_config
from dsops_jupyter.errors import ExecutionError, RunInterruptedError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.notebook import Pipeline, load_notebook, read_pipeline
from dsops_jupyter.params import coerce_parameters
from dsops_jupyter.spec import source_of

ENGINE_NAME = "dsops"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class RunRecord:
    notebook: str
    output_notebook: Path
    record_path: Path
    status: str
    parameters: dict[str, Any]
    steps: list[dict[str, Any]]
    started: str
    duration: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "output_notebook": str(self.output_notebook),
            "record": str(self.record_path),
            "status": self.status,
            "parameters": self.parameters,
            "steps": self.steps,
            "started": self.started,
            "duration": round(self.duration, 3),
            **self.details,
        }


def run_notebook(
    path: str | Path,
    *,
    parameters: dict[str, Any] | None = None,
    steps: list[str] | None = None,
    out_dir: Path | None = None,
    kernel_name: str | None = None,
    cwd: Path | None = None,
    strict: bool = False,
    on_event: OnEvent = events.ignore,
) -> RunRecord:
    """Execute the notebook's pipeline (all steps, or ``steps`` plus their upstream).

    Each step's inputs are fingerprinted in the kernel before and after the step; a change the
    static analysis did not predict is a warning in the record (an error with ``strict``).
    """
    path = Path(path).resolve()
    pipeline = read_pipeline(path)
    values = coerce_parameters(pipeline, parameters)
    chosen = pipeline.upstream(steps) if steps else [s.name for s in pipeline.steps]
    nb = runnable_notebook(pipeline, load_notebook(path), chosen)
    out_dir = (out_dir or _default_out_dir(pipeline)).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / path.name
    events.stage(on_event, f"Running {len(chosen)} step(s) of {path.name}: {', '.join(chosen)}")
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        environment: list[Future[dict[str, Any]]] = []

        def capture_environment() -> None:
            """Started with the first cell: the kernel is up and this process idles on it, so
            the capture costs no wall time (before, it fought papermill's import for the GIL)."""
            if not environment:
                environment.append(pool.submit(_environment, pipeline, path, kernel_name))

        monitor = Monitor(
            on_event, str(path), _watched_names(pipeline, chosen), capture_environment
        )
        failure: BaseException | None = None
        try:
            executed = _papermill(nb, output, values, kernel_name, cwd or path.parent, monitor)
        except (Exception, KeyboardInterrupt) as err:  # papermill raises several types
            failure, executed = err, _read_output(output, nb)
        capture_environment()
        details = environment[0].result()
    interrupted = isinstance(failure, KeyboardInterrupt)
    changed = strict and bool(monitor.changes)
    status = "interrupted" if interrupted else "failed" if failure or changed else "succeeded"
    record = RunRecord(
        notebook=str(path),
        output_notebook=output,
        record_path=out_dir / "run.json",
        status=status,
        parameters={**{p.name: p.default for p in pipeline.parameters}, **values},
        steps=_step_results(executed, chosen, monitor.interrupted.get("step")),
        started=started.isoformat(timespec="seconds"),
        duration=time.perf_counter() - clock,
        details={**details, "verification": monitor.verification(), "warnings": monitor.warnings()},
    )
    atomic_write(record.record_path, _json_bytes(record.to_json()))
    if interrupted:
        raise _interrupted_error(monitor.interrupted, output) from None
    if failure is not None:
        raise _execution_error(failure, monitor, executed, output) from None
    if changed:
        raise ExecutionError(
            f"{monitor.warnings()[0]} (--strict; run record: {record.record_path})"
        )
    events.result(on_event, f"Run succeeded: {output}", **record.to_json())
    return record


def _watched_names(pipeline: Pipeline, chosen: list[str]) -> dict[str, list[str]]:
    """Per step, the names it reads and, by the static analysis, leaves unchanged: these are
    fingerprinted before and after the step. Imports and definitions are code, not data."""
    watched = {}
    for step in pipeline.steps:
        names = [n for n in step.reads if n not in step.writes and n not in pipeline.module_names]
        if step.name in chosen and names:
            watched[step.name] = names
    return watched


def runnable_notebook(pipeline: Pipeline, nb: dict[str, Any], chosen: list[str]) -> dict[str, Any]:
    """The notebook papermill runs: chosen steps' cells, shared code, parameters; no skip cells.

    Cells of steps not chosen contribute only their hoisted imports and definitions, so a chosen
    step still finds every function it calls. Each kept cell records in ``metadata.dsops`` the
    step (or role) and the original cell index, which survive papermill's own inserted cells.
    """
    step_of = {i: s.name for s in pipeline.steps if s.name in chosen for i in s.cells}
    hoisted: dict[int, list[str]] = {}
    for index, code in pipeline.hoisted:
        hoisted.setdefault(index, []).append(code)
    roles = {c.index: c.role for c in pipeline.cells}
    cells = []
    for index, raw in enumerate(nb["cells"]):
        cell = copy.deepcopy(raw)
        if cell.get("cell_type") != "code":
            cells.append(cell)
            continue
        role = roles.get(index)
        if index in step_of:
            label = step_of[index]
        elif role in ("parameters", "shared"):
            label = role
        elif index in hoisted:
            label, cell["source"] = "shared", "\n\n".join(hoisted[index])
        else:
            continue
        source = source_of(cell)
        meta = {"step": label, "cell": index}
        if source.lstrip().startswith("%%dsops"):  # markers are read by dsops, not the kernel
            stripped = source.lstrip()
            meta["line_offset"] = source[: len(source) - len(stripped)].count("\n") + 1
            source = cell["source"] = stripped.partition("\n")[2]
        if ipysyntax.drives_dsops(source):  # %load_ext dsops_jupyter, %dsops: live tools only
            cell["source"] = ipysyntax.without_dsops_lines(source)
        if role == "parameters":  # papermill injects after the cell *tagged* parameters
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            tags.append("parameters") if "parameters" not in tags else None
        cell.setdefault("metadata", {})["dsops"] = meta
        cells.append(cell)
    return {**nb, "metadata": _with_kernelspec(nb.get("metadata", {})), "cells": cells}


def _with_kernelspec(metadata: dict[str, Any]) -> dict[str, Any]:
    """papermill needs a kernel and a language; a notebook without them (nbformat 3) is Python."""
    if metadata.get("kernelspec", {}).get("name"):
        return metadata
    python3 = {"name": "python3", "language": "python", "display_name": "Python 3"}
    return {**metadata, "kernelspec": python3}


def _papermill(
    nb: dict[str, Any],
    output: Path,
    values: dict[str, Any],
    kernel_name: str | None,
    cwd: Path,
    monitor: Monitor,
) -> dict[str, Any]:
    import nbformat
    import papermill

    _register_engine()
    return papermill.execute_notebook(
        nbformat.from_dict(nb),
        str(output),
        parameters=values or None,
        engine_name=ENGINE_NAME,
        kernel_name=kernel_name,
        progress_bar=False,
        # The kernel's cwd goes through nbclient, not os.chdir: jobs may run in threads.
        resources={"metadata": {"path": str(cwd)}},
        dsops_monitor=monitor,
    )


@dataclass
class Monitor:
    """What the engine reports while cells run: progress, live output lines, the failing cell,
    and the runtime check of each step's inputs (fingerprints taken in the kernel)."""

    on_event: OnEvent
    input_path: str
    watched: dict[str, list[str]]  # step -> names it reads and should leave unchanged
    on_first_cell: Callable[[], None] = lambda: None
    failure: Any = None  # nbclient's CellExecutionError
    failed_cell: dict[str, Any] = field(default_factory=dict)
    interrupted: dict[str, Any] = field(default_factory=dict)  # metadata.dsops of that cell
    changes: list[dict[str, str]] = field(default_factory=list)
    unchecked: set[str] = field(default_factory=set)
    checked: list[str] = field(default_factory=list)
    probe_seconds: float = 0.0  # time spent fingerprinting, the cost of the runtime check
    partial: dict[str, str] = field(default_factory=dict)  # stream name -> unfinished line

    def stream(self, name: str, text: str) -> None:
        """Kernel output as it arrives, one log event per complete line (the kernel's breaks)."""
        *lines, self.partial[name] = (self.partial.get(name, "") + text).split("\n")
        for line in lines:
            events.log(self.on_event, _terminal_line(line))

    def flush(self) -> None:
        for rest in self.partial.values():
            if rest:
                events.log(self.on_event, _terminal_line(rest))
        self.partial.clear()

    def compare(self, step: str, before: dict[str, str], after: dict[str, str]) -> None:
        self.checked.append(step)
        for name, digest in before.items():
            if digest == UNFINGERPRINTABLE or after.get(name) == UNFINGERPRINTABLE:
                self.unchecked.add(name)
            elif name in after and after[name] != digest:
                self.changes.append({"step": step, "name": name})

    def verification(self) -> dict[str, Any]:
        return {
            "checked_steps": self.checked,
            "unexpected_changes": self.changes,
            "unchecked": sorted(self.unchecked),
            "seconds": round(self.probe_seconds, 3),
        }

    def warnings(self) -> list[str]:
        lines = [
            f"step {c['step']!r} changed `{c['name']}`, which the analysis says it only reads: "
            "a step-by-step run would pass the unchanged value on"
            for c in self.changes
        ]
        if self.unchecked:
            names = ", ".join(f"`{n}`" for n in sorted(self.unchecked))
            lines.append(f"not verified at run time (cannot be fingerprinted): {names}")
        return lines


def _terminal_line(line: str) -> str:
    """What a terminal shows of a line: the text after its last carriage return."""
    return line.rstrip("\r").rsplit("\r", 1)[-1]


@cache
def _register_engine() -> None:
    """A papermill engine whose client reports progress and live output as dsops events,
    records the input path (not a copy), and verifies each step's inputs between steps."""
    from nbclient.exceptions import CellExecutionError
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.log import logger
    from papermill.utils import merge_kwargs, remove_args

    class DsopsClient(PapermillNotebookClient):
        def __init__(self, nb_man: Any, monitor: Monitor, **kwargs: Any) -> None:
            super().__init__(nb_man, **kwargs)
            self.monitor = monitor
            self.probe_installed = False

        def papermill_execute_cells(self) -> None:
            """papermill's loop, plus events and checks; an interrupted cell is marked failed
            (papermill would mark it completed) and the kernel is killed, not asked to stop
            while it is busy (that makes it print a ZMQ traceback)."""
            self.shutdown_kernel = "immediate"
            save = self.nb_man.save
            self.nb_man.save = _throttled(save)
            try:
                self.execute_code_cells()
            finally:
                self.nb_man.save = save  # the final save (notebook_complete) always happens
            self.shutdown_kernel = "graceful"

        def execute_code_cells(self) -> None:
            code = [i for i, c in enumerate(self.nb.cells) if c.get("cell_type") == "code"]
            starts, ends = _step_runs(self.nb.cells, code, self.monitor.watched)
            before: dict[str, str] = {}
            for done, index in enumerate(code):
                cell = self.nb.cells[index]
                step = _label(cell)
                if index in starts:
                    before = self.fingerprints(self.monitor.watched[step])
                self.monitor.on_first_cell()
                events.progress(self.monitor.on_event, done / len(code), f"step {step}")
                self.nb_man.cell_start(cell, index)
                try:
                    self.execute_cell(cell, index)
                except CellExecutionError as err:
                    self.nb_man.cell_exception(cell, cell_index=index, exception=err)
                    self.monitor.failure, self.monitor.failed_cell = err, cell
                    break
                except KeyboardInterrupt:
                    _cancel_pending_tasks()  # else they report the killed kernel at exit
                    self.nb_man.cell_exception(cell, cell_index=index)
                    self.monitor.interrupted = dict(cell.get("metadata", {}).get("dsops", {}))
                    raise
                finally:
                    self.monitor.flush()
                    self.nb_man.cell_complete(cell, cell_index=index)
                events.progress(self.monitor.on_event, (done + 1) / len(code))
                if index in ends:
                    after = self.fingerprints(list(before))
                    self.monitor.compare(step, before, after)

        def fingerprints(self, names: list[str]) -> dict[str, str]:
            """Digests of ``names`` in the user's namespace, through silent requests: no cell,
            no execution count, no history, no hooks (IPython skips them when silent)."""
            clock = time.perf_counter()
            if not self.probe_installed:
                self.silent_request(_probe_install(), {})
                self.probe_installed = True
            expression = f"__import__('_dsops_probe').fingerprints({names!r}, globals())"
            reply = self.silent_request("", {"fp": expression})
            result = reply.get("user_expressions", {}).get("fp", {})
            self.monitor.probe_seconds += time.perf_counter() - clock
            if result.get("status") != "ok":
                return {}
            return json.loads(ast.literal_eval(result["data"]["text/plain"]))

        def silent_request(self, code: str, expressions: dict[str, str]) -> dict[str, Any]:
            msg_id = self.kc.execute(
                code, silent=True, store_history=False, user_expressions=expressions
            )
            reply = self.wait_for_reply(msg_id)
            return reply["content"] if reply else {}

        def process_message(self, msg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            if msg.get("msg_type") == "stream":
                self.monitor.stream(msg["content"]["name"], msg["content"]["text"])
            return super().process_message(msg, *args, **kwargs)

    class DsopsEngine(NBClientEngine):
        @classmethod
        def execute_notebook(cls, nb: Any, kernel_name: Any, **kwargs: Any) -> Any:
            # papermill records the input as given: for a notebook object, a full copy,
            # re-serialised with every save (twice a cell). The file's path is what it ran.
            nb.metadata.papermill["input_path"] = kwargs["dsops_monitor"].input_path
            return super().execute_notebook(nb, kernel_name, **kwargs)

        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            dsops_monitor: Monitor,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: int | None = None,
            **kwargs: Any,
        ) -> Any:
            """NBClientEngine.execute_managed_notebook (papermill 2.x) with dsops's client."""
            kwargs = remove_args(["input_path"], **kwargs)
            safe_kwargs = remove_args(["timeout", "startup_timeout"], **kwargs)
            final_kwargs = merge_kwargs(
                safe_kwargs,
                timeout=execution_timeout if execution_timeout else kwargs.get("timeout"),
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            return DsopsClient(nb_man, dsops_monitor, **final_kwargs).execute()

    papermill_engines.register(ENGINE_NAME, DsopsEngine)


def _probe_install() -> str:
    """Code that makes _probe.py the kernel's module ``_dsops_probe``, binding no user name."""
    source = Path(__file__).with_name("_probe.py").read_text(encoding="utf-8")
    return (
        "__import__('sys').modules.setdefault('_dsops_probe', __import__('types')"
        f".ModuleType('_dsops_probe')); exec({source!r}, "
        "__import__('sys').modules['_dsops_probe'].__dict__)"
    )


def _throttled(save: Callable[[], None]) -> Callable[[], None]:
    """papermill saves the whole notebook (validated, re-serialised) when each cell starts and
    ends: ~0.1 s a save on a 170-cell notebook with figures, more than the cells themselves.
    Save at most once a second, and never spend more than ~5% of the run saving."""
    next_save = [0.0]

    def throttled(**kwargs: Any) -> None:
        start = time.monotonic()
        if start >= next_save[0]:
            save(**kwargs)
            next_save[0] = start + max(1.0, 20 * (time.monotonic() - start))

    return throttled


def _cancel_pending_tasks() -> None:
    """Ctrl-C stops nbclient's event loop mid-cell, leaving its tasks pending: cancel them."""
    import asyncio

    from jupyter_core.utils import ensure_event_loop

    loop = ensure_event_loop()
    if loop.is_running():  # driven by someone else's loop: theirs to clean up
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def _label(cell: Any) -> str:
    return cell.get("metadata", {}).get("dsops", {}).get("step", "parameters")


def _step_runs(
    cells: list[Any], code: list[int], watched: dict[str, list[str]]
) -> tuple[set[int], set[int]]:
    """First and last cell indexes of each unbroken run of a watched step's code cells."""
    labels = [_label(cells[i]) for i in code]
    starts, ends = set(), set()
    for position, index in enumerate(code):
        if labels[position] not in watched:
            continue
        if position == 0 or labels[position - 1] != labels[position]:
            starts.add(index)
        if position == len(code) - 1 or labels[position + 1] != labels[position]:
            ends.add(index)
    return starts, ends


def _read_output(output: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(output.read_bytes())
    except (OSError, ValueError):
        return fallback


def _step_results(
    executed: dict[str, Any], chosen: list[str], interrupted: str | None = None
) -> list[dict[str, Any]]:
    """Per step: status (succeeded/failed/interrupted/not run) and its cells' summed durations."""
    results = {name: {"name": name, "status": "succeeded", "duration": 0.0} for name in chosen}
    for cell in executed.get("cells", []):
        meta = cell.get("metadata", {})
        name = meta.get("dsops", {}).get("step")
        if name not in results:
            continue
        run = meta.get("papermill", {})
        results[name]["duration"] += float(run.get("duration") or 0.0)
        status = run.get("status")
        if status == "failed":
            results[name]["status"] = "interrupted" if name == interrupted else "failed"
        elif status != "completed" and results[name]["status"] == "succeeded":
            results[name]["status"] = "not run"
    for result in results.values():
        result["duration"] = round(result["duration"], 3)
    return list(results.values())


def _kept(output: Path) -> str:
    return f"executed notebook kept: {output}" if output.exists() else "no output notebook"


def _where(meta: dict[str, Any]) -> str:
    step = meta.get("step", "?")
    return f"step {step!r}, cell {meta['cell'] + 1}" if "cell" in meta else f"step {step!r}"


def _interrupted_error(meta: dict[str, Any], output: Path) -> RunInterruptedError:
    where = f"in {_where(meta)}" if meta else "before the first cell ran"
    return RunInterruptedError(
        f"interrupted {where} ({_kept(output)})", output_path=str(output), step=meta.get("step")
    )


def _execution_error(
    failure: BaseException, monitor: Monitor, executed: dict[str, Any], output: Path
) -> ExecutionError:
    """One line: step, cell, the user's failing line, the exception; the notebook is kept.

    The failing cell is the one that stopped the run or, when every cell ran (errors allowed
    by a ``raises-exception`` tag), the one papermill reports."""
    cell = monitor.failed_cell or _papermill_error_cell(executed)
    error = monitor.failure or (failure if hasattr(failure, "ename") else None)
    if error is None or not cell:  # a dead kernel, a timeout, a papermill error
        lines = _ANSI.sub("", str(failure)).strip().splitlines() or ["unknown error"]
        return ExecutionError(f"run failed: {lines[-1]} ({_kept(output)})")
    meta = cell.get("metadata", {}).get("dsops", {})
    where = _where(meta)
    text = _error_text(error, cell)
    line = _user_line(error.traceback or [], cell) or _magic_line(text, cell)
    if line:
        where += f", line {line[0] + meta.get('line_offset', 0)} `{line[1]}`"
    return ExecutionError(
        f"{where} failed: {text} ({_kept(output)})",
        output_path=str(output),
        step=meta.get("step"),
    )


_CLEAN_EXITS = {("SystemExit", ""), ("SystemExit", "0")}


def _papermill_error_cell(executed: dict[str, Any]) -> dict[str, Any]:
    """papermill's rule (``raise_for_execution_errors``): the LAST cell with an error output
    (SystemExit(0) aside) wins; a cell marked failed counts only while none was found yet."""
    found: dict[str, Any] = {}
    for cell in (c for c in executed.get("cells", []) if c.get("cell_type") == "code"):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        clean = [
            o for o in errors if o.get("ename") == "SystemExit" and o.get("evalue") in ("", "0")
        ]
        if len(errors) > len(clean):
            found = cell
        elif not found and not clean:
            found = cell if cell.get("metadata", {}).get("papermill", {}).get("exception") else {}
    return found


_CELL_FRAME = re.compile(
    r"(?:Cell In ?\[(\d*)\], line (\d+)|Input In ?\[(\d*)\].*<cell line: (\d+)>)"
)


def _user_line(traceback: str | list[str], cell: dict[str, Any]) -> tuple[int, str] | None:
    """The failing cell's own line in IPython's traceback: its last frame in that cell, not a
    library frame (``Cell In[N], line L``; ``Input In [N] ... <cell line: L>`` before IPython
    8.5). The text comes from the cell's source; the ``---->`` line only when that fails."""
    text = _ANSI.sub("", traceback if isinstance(traceback, str) else "\n".join(traceback))
    count = str(cell.get("execution_count") or "")
    frames = [m for m in _CELL_FRAME.finditer(text) if not count or (m[1] or m[3]) == count]
    if not frames:
        return None
    number = int(frames[-1][2] or frames[-1][4])
    arrow = re.compile(rf"-+>\s*{number}\s?(.*)").search(text, frames[-1].end())
    return number, _source_line(cell, number) or (arrow[1].strip() if arrow else "")


def _magic_line(error: str, cell: dict[str, Any]) -> tuple[int, str] | None:
    """A UsageError has no traceback: the line is the first one using the magic it names."""
    named = re.search(r"`(%{1,2}[^`\s]+)`", error) if error.startswith("UsageError") else None
    source = cell.get("source", "")
    lines = ("".join(source) if isinstance(source, list) else source).splitlines()
    for number, line in enumerate(lines, 1):
        if named and named[1] in line:
            return number, line.strip()
    return None


def _source_line(cell: dict[str, Any], number: int) -> str:
    source = cell.get("source", "")
    lines = ("".join(source) if isinstance(source, list) else source).splitlines()
    return lines[number - 1].strip() if 0 < number <= len(lines) else ""


def _error_text(failure: Any, cell: dict[str, Any]) -> str:
    """``Type: message``. IPython reports a UsageError (an unknown magic) on stderr, with no
    error output: its message is then that stderr line."""
    ename, evalue = failure.ename, str(failure.evalue or "").strip()
    if not evalue:
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output.get("name") == "stderr" else ""
            for line in ("".join(text) if isinstance(text, list) else text).splitlines():
                if line.startswith("UsageError: "):
                    ename, evalue = "UsageError", line.partition(": ")[2]
    return f"{ename}: {evalue}" if evalue else ename


def _default_out_dir(pipeline: Pipeline) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return load_config(pipeline.notebook_path).root / "runs" / pipeline.name / stamp


def _environment(pipeline: Pipeline, path: Path, kernel_name: str | None) -> dict[str, Any]:
    """What a reader of the record needs to reproduce the run: the kernel's Python and the
    versions of what the notebook imports, as installed where the kernel ran."""
    from dsops_jupyter.lock import distributions_for
    from dsops_jupyter.vcs import work_tree_state  # lazy, as the lock: GitPython loads slowly

    kernel = distributions_for(pipeline, kernel_name)
    packages = dict(kernel["pins"])
    packages.update({name: _version(name) for name in ("papermill", "nbformat", "nbclient")})
    return {
        "content_hash": pipeline.content_hash,
        "git": work_tree_state(path.parent),
        "python": kernel["python"],
        "dsops": __version__,
        "packages": dict(sorted(packages.items())),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
