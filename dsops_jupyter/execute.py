"""Run a notebook (or chosen steps and what they need) with papermill, and keep a run record.

papermill does the executing; dsops chooses the cells, coerces parameters before any kernel
starts, reports progress per cell through its papermill engine (papermill_engine.py, found by
name), and writes a JSON run record (model.RunRecord) beside the executed notebook. Each
step's outputs are kept in the run folder's ``artifacts/``; with the step cache or --resume
some steps are restored instead of executed (runsteps.py, resume.py).
"""

from __future__ import annotations

import copy
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dsops_jupyter import dotdsops, events, ipysyntax, runerrors
from dsops_jupyter._version import __version__
from dsops_jupyter.cache import open_cache
from dsops_jupyter.cells import load_notebook
from dsops_jupyter.config import load_config
from dsops_jupyter.errors import ExecutionError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.model import RUN_RECORD, RunOptions, RunRecord
from dsops_jupyter.monitor import Monitor
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.params import coerce_parameters
from dsops_jupyter.pipeline import Pipeline
from dsops_jupyter.resume import plan_resume
from dsops_jupyter.runsteps import ARTIFACTS, StepLedger
from dsops_jupyter.spec import source_of
from dsops_jupyter.stepstatus import StepTracker

ENGINE_NAME = "dsops"  # the papermill.engine entry point's name in pyproject.toml
#: Frozen: safe as the default argument of every call.
DEFAULTS = RunOptions()


def run_notebook(
    path: str | Path, options: RunOptions = DEFAULTS, on_event: OnEvent = events.ignore
) -> RunRecord:
    """Execute the notebook's pipeline (all steps, or ``options.steps`` plus their upstream).

    Each step's inputs are fingerprinted in the kernel before and after the step; a change the
    static analysis did not predict is a warning in the record (an error with ``strict``).
    """
    path = Path(path).resolve()
    kernel_name, cwd, strict = options.kernel_name, options.cwd, options.strict
    pipeline = read_pipeline(path)
    resumed = None
    if options.resume is not None:
        resumed = plan_resume(pipeline, runs_folder(path, pipeline.name), options.resume)
    raw = resumed.parameters if resumed else options.parameters
    values = coerce_parameters(pipeline, raw)
    steps = resumed.steps if resumed else list(options.steps)
    chosen = pipeline.upstream(steps) if steps else [s.name for s in pipeline.steps]
    parameters = {**{p.name: p.default for p in pipeline.parameters}, **values}
    nb = runnable_notebook(pipeline, load_notebook(path), chosen)
    out_dir = (options.out_dir or _default_out_dir(pipeline)).resolve()
    dotdsops.prepare(out_dir)  # under .dsops/: ignored by Git
    output = out_dir / path.name
    ledger = StepLedger(
        pipeline,
        chosen,
        parameters,
        out_dir / ARTIFACTS,
        step_cache=open_cache(path) if options.cache else None,
        forced=options.force,
        resumed=resumed,
    )
    events.stage(on_event, f"Running {len(chosen)} step(s) of {path.name}: {', '.join(chosen)}")
    first_cells = {s.name: s.cells[0] for s in pipeline.steps if s.cells}
    tracker = StepTracker(on_event, chosen, first_cells)
    tracker.queue()
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        environment: list[Future[dict[str, Any]]] = []

        def capture_environment() -> None:
            """Started with the first cell: the kernel is up and this process idles on it, so
            the capture costs no wall time (before, it fought papermill's import for the GIL)."""
            if not environment:
                ledger.prepare(pool)
                environment.append(pool.submit(_environment, pipeline, path, kernel_name))

        watched = _watched_names(pipeline, chosen)
        monitor = Monitor(
            on_event, str(path), watched, capture_environment, ledger=ledger, steps=tracker
        )
        failure: BaseException | None = None
        try:
            executed = _papermill(nb, output, values, kernel_name, cwd or path.parent, monitor)
        except (Exception, KeyboardInterrupt) as err:  # papermill raises several types
            failure, executed = err, _read_output(output, nb)
        capture_environment()
        details = environment[0].result()
    interrupted = isinstance(failure, KeyboardInterrupt)
    found = runerrors.locate(failure, monitor, executed) if failure and not interrupted else None
    if found is not None:
        tracker.fail(found.step, cell=found.cell, line=found.line, error=found.error)
    tracker.finish()
    changed = strict and bool(monitor.changes)
    status = "interrupted" if interrupted else "failed" if failure or changed else "succeeded"
    record = RunRecord(
        notebook=str(path),
        output_notebook=output,
        record_path=out_dir / RUN_RECORD,
        status=status,
        parameters=parameters,
        steps=tracker.record(ledger.marks),
        started=started.isoformat(timespec="seconds"),
        duration=time.perf_counter() - clock,
        details={
            **details,
            "verification": monitor.verification(),
            "warnings": monitor.warnings() + ledger.warnings,
        },
        resumed_from=str(resumed.run_dir) if resumed else None,
    )
    data = record.to_json()
    atomic_write(record.record_path, _json_bytes(data))
    if interrupted:
        raise runerrors.interrupted_error(monitor.interrupted, output, data) from None
    if found is not None:
        raise runerrors.execution_error(found, output, data) from None
    if changed:
        raise ExecutionError(
            f"{monitor.warnings()[0]} (--strict; run record: {record.record_path})", record=data
        )
    events.result(on_event, f"Run succeeded: {output}", **data)
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

    _ensure_engine()
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


def _ensure_engine() -> None:
    """papermill registers the dsops engine from the installed ``papermill.engine`` entry
    point; a source checkout run through PYTHONPATH (or an install made before the entry
    point existed) has no such metadata, so register it here then. papermill is loaded by now,
    which is the one order in which the engine module may be imported."""
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillException

    try:
        papermill_engines.get_engine(ENGINE_NAME)
    except PapermillException:
        from dsops_jupyter.papermill_engine import DsopsEngine

        papermill_engines.register(ENGINE_NAME, DsopsEngine)


def _read_output(output: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(output.read_bytes())
    except (OSError, ValueError):
        return fallback


def _default_out_dir(pipeline: Pipeline) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return runs_folder(pipeline.notebook_path, pipeline.name) / stamp


def runs_folder(notebook: Path, name: str) -> Path:
    """The folder of the pipeline's run folders: ``<runs-dir>/<name>`` (``.dsops/runs/``)."""
    return load_config(notebook).runs_dir / name


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
