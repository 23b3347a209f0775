"""The dsops papermill engine: nbclient with progress events, live output and input checks.

papermill finds it by name (``engine_name="dsops"``) through the ``papermill.engine`` entry
point of pyproject.toml, as papermill documents for engines. papermill imports every such entry
point when papermill.engines loads, so this module must only ever be imported by papermill (or,
in a source checkout whose installed metadata lacks the entry point, by execute.py after
papermill is loaded): imported first, it would make papermill load it half-initialised.
"""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
from nbclient.exceptions import CellExecutionError
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine
from papermill.log import logger
from papermill.utils import merge_kwargs, remove_args

from dsops_jupyter import events
from dsops_jupyter.monitor import Monitor
from dsops_jupyter.runsteps import KERNEL_MODULE, Restore


class DsopsClient(PapermillNotebookClient):
    """papermill's nbclient, reporting progress and live output as dsops events, and
    fingerprinting each watched step's inputs before and after the step."""

    def __init__(self, nb_man: Any, monitor: Monitor, **kwargs: Any) -> None:
        super().__init__(nb_man, **kwargs)
        self.monitor = monitor
        self.probe_installed = False
        self.artifacts_installed = False

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
        firsts, lasts = _step_bounds(self.nb.cells, code)
        ledger = self.monitor.ledger
        restored: dict[str, Restore] = {}
        before: dict[str, str] = {}
        for done, index in enumerate(code):
            cell = self.nb.cells[index]
            step = _label(cell)
            tracked = ledger is not None and step in ledger.steps
            self.monitor.on_first_cell()
            self.monitor.steps.cell_started(step)
            events.progress(self.monitor.on_event, done / len(code), f"step {step}")
            self.nb_man.cell_start(cell, index)
            try:
                if tracked and index == firsts[step]:
                    self.begin_step(step, cell, restored)
                if step in restored:
                    _show_restored(cell, restored[step])
                else:
                    if index in starts:
                        before = self.fingerprints(self.monitor.watched[step])
                    self.execute_cell(cell, index)
            except CellExecutionError as err:
                self.nb_man.cell_exception(cell, cell_index=index, exception=err)
                self.monitor.failure, self.monitor.failed_cell = err, cell
                self.monitor.steps.cell_ended(step)
                break
            except KeyboardInterrupt:
                _cancel_pending_tasks()  # else they report the killed kernel at exit
                self.nb_man.cell_exception(cell, cell_index=index)
                self.monitor.interrupted = dict(cell.get("metadata", {}).get("dsops", {}))
                self.monitor.steps.cell_ended(step)
                raise
            finally:
                self.monitor.flush()
                self.nb_man.cell_complete(cell, cell_index=index)
            events.progress(self.monitor.on_event, (done + 1) / len(code))
            if step not in restored:
                self.after_cell(step, index in ends, tracked and index == lasts[step], before)
            self.monitor.steps.cell_ended(step)
            if index == lasts[step]:
                self.monitor.steps.step_ended(step, restored=step in restored)

    def after_cell(
        self, step: str, ends_run: bool, ends_step: bool, before: dict[str, str]
    ) -> None:
        """After an executed cell: the input check at the end of a run of the step's cells,
        its outputs saved after its last cell."""
        if ends_run:
            self.monitor.compare(step, before, self.fingerprints(list(before)))
        if ends_step:
            self.save_outputs(step)

    def begin_step(self, step: str, cell: Any, restored: dict[str, Restore]) -> None:
        """At a step's first cell: when the ledger restores it, run its definitions and load
        its outputs in the kernel; a failure there fails this cell as its code would."""
        assert self.monitor.ledger is not None
        restore = self.monitor.ledger.begin(step)
        if restore is None:
            return
        self.install_artifacts()
        reply = self.silent_request(self.monitor.ledger.restore_code(step), {})
        if reply.get("status") != "ok":
            error = {k: reply.get(k, "") for k in ("ename", "evalue", "traceback")}
            cell.outputs = [nbformat.v4.new_output("error", **error)]
            raise CellExecutionError.from_cell_and_msg(cell, error)
        restored[step] = restore

    def save_outputs(self, step: str) -> None:
        """After an executed step's last cell: its outputs saved as artifacts, in the kernel."""
        assert self.monitor.ledger is not None
        expressions = self.monitor.ledger.save_expressions(step)
        results: dict[str, Any] = {}
        if expressions:
            self.install_artifacts()
            results = self.silent_request("", expressions).get("user_expressions", {})
        self.monitor.ledger.saved(step, results)

    def install_artifacts(self) -> None:
        if not self.artifacts_installed:
            self.silent_request(_module_install("runtime/artifacts.py", KERNEL_MODULE), {})
            self.artifacts_installed = True

    def fingerprints(self, names: list[str]) -> dict[str, str]:
        """Digests of ``names`` in the user's namespace, through silent requests: no cell,
        no execution count, no history, no hooks (IPython skips them when silent)."""
        clock = time.perf_counter()
        if not self.probe_installed:
            self.silent_request(_module_install("_probe.py", "_dsops_probe"), {})
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
    """papermill's nbclient engine with DsopsClient; it records the input path, not a copy."""

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


def _module_install(filename: str, module: str) -> str:
    """Code that makes the package's stand-alone file ``filename`` (_probe.py,
    runtime/artifacts.py) the kernel's module ``module``, binding no user name: the kernel needs
    no dsops install."""
    source = (Path(__file__).parent / filename).read_text(encoding="utf-8")
    return (
        f"__import__('sys').modules.setdefault({module!r}, __import__('types')"
        f".ModuleType({module!r})); exec({source!r}, "
        f"__import__('sys').modules[{module!r}].__dict__)"
    )


def _show_restored(cell: Any, restore: Restore) -> None:
    """A restored cell says so: its one output is the note, it has no execution count."""
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"{restore.note}\n")]
    cell.execution_count = None
    cell.metadata.setdefault("dsops", {})["restored"] = {
        "origin": restore.origin,
        "key": restore.key,
    }


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


def _step_bounds(cells: list[Any], code: list[int]) -> tuple[dict[str, int], dict[str, int]]:
    """Each label's first and last code cell index."""
    firsts: dict[str, int] = {}
    lasts: dict[str, int] = {}
    for index in code:
        firsts.setdefault(_label(cells[index]), index)
        lasts[_label(cells[index])] = index
    return firsts, lasts


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
