"""Run a notebook (or chosen steps and what they need) with papermill, and keep a run record.

papermill does the executing; dsops chooses the cells, coerces parameters before any kernel
starts, reports progress per cell through a registered papermill engine, and writes a JSON run
record beside the executed notebook.
"""

from __future__ import annotations

import copy
import json
import platform
import re
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dsops_jupyter import __version__, events, ipysyntax
from dsops_jupyter.config import load_config
from dsops_jupyter.errors import ExecutionError
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
    on_event: OnEvent = events.ignore,
) -> RunRecord:
    """Execute the notebook's pipeline (all steps, or ``steps`` plus their upstream)."""
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
                environment.append(pool.submit(_environment, pipeline, path))

        failure = None
        try:
            executed = _papermill(
                nb, output, values, kernel_name, cwd or path.parent, on_event, capture_environment
            )
        except Exception as err:  # papermill raises several types; map them after the record
            failure, executed = err, _read_output(output, nb)
        capture_environment()
        details = environment[0].result()
    record = RunRecord(
        notebook=str(path),
        output_notebook=output,
        record_path=out_dir / "run.json",
        status="failed" if failure else "succeeded",
        parameters={**{p.name: p.default for p in pipeline.parameters}, **values},
        steps=_step_results(executed, chosen),
        started=started.isoformat(timespec="seconds"),
        duration=time.perf_counter() - clock,
        details=details,
    )
    atomic_write(record.record_path, _json_bytes(record.to_json()))
    if failure is not None:
        raise _execution_error(failure, executed, output) from None
    events.result(on_event, f"Run succeeded: {output}", **record.to_json())
    return record


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
        if source.lstrip().startswith("%%dsops"):  # markers are read by dsops, not the kernel
            source = cell["source"] = source.lstrip().partition("\n")[2]
        if ipysyntax.drives_dsops(source):  # %load_ext dsops_jupyter, %dsops: live tools only
            cell["source"] = ipysyntax.without_dsops_lines(source)
        if role == "parameters":  # papermill injects after the cell *tagged* parameters
            tags = cell.setdefault("metadata", {}).setdefault("tags", [])
            tags.append("parameters") if "parameters" not in tags else None
        cell.setdefault("metadata", {})["dsops"] = {"step": label, "cell": index}
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
    on_event: OnEvent,
    on_first_cell: Callable[[], None],
) -> dict[str, Any]:
    import nbformat
    import papermill

    _register_engine()
    node = nbformat.from_dict(nb)
    total = sum(1 for c in nb["cells"] if c.get("cell_type") == "code") + (1 if values else 0)
    return papermill.execute_notebook(
        node,
        str(output),
        parameters=values or None,
        engine_name=ENGINE_NAME,
        kernel_name=kernel_name,
        progress_bar=False,
        # The kernel's cwd goes through nbclient, not os.chdir: jobs may run in threads.
        resources={"metadata": {"path": str(cwd)}},
        dsops_on_event=on_event,
        dsops_total=total,
        dsops_on_first_cell=on_first_cell,
    )


def _register_engine() -> None:
    """A papermill engine that reports each cell's start, output and end as dsops events."""
    from papermill.engines import NBClientEngine, papermill_engines

    class DsopsEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man,
            kernel_name,
            dsops_on_event=events.ignore,
            dsops_total=1,
            dsops_on_first_cell=lambda: None,
            **kwargs,
        ):
            _report_cells(nb_man, dsops_on_event, max(dsops_total, 1), dsops_on_first_cell)
            return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)

    papermill_engines.register(ENGINE_NAME, DsopsEngine)


def _report_cells(
    nb_man: Any, on_event: OnEvent, total: int, on_first_cell: Callable[[], None]
) -> None:
    start, complete = nb_man.cell_start, nb_man.cell_complete
    done = [0]

    def cell_start(cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        start(cell, cell_index=cell_index, **kwargs)
        on_first_cell()
        label = cell.get("metadata", {}).get("dsops", {}).get("step", "parameters")
        events.progress(on_event, done[0] / total, f"step {label}")

    def cell_complete(cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        complete(cell, cell_index=cell_index, **kwargs)
        done[0] += 1
        for line in _stream_lines(cell):
            events.log(on_event, line)
        events.progress(on_event, done[0] / total)

    nb_man.cell_start, nb_man.cell_complete = cell_start, cell_complete


def _stream_lines(cell: Any) -> list[str]:
    lines = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            text = output.get("text", "")
            lines.extend(("".join(text) if isinstance(text, list) else text).splitlines())
    return lines


def _read_output(output: Path, fallback: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(output.read_bytes())
    except (OSError, ValueError):
        return fallback


def _step_results(executed: dict[str, Any], chosen: list[str]) -> list[dict[str, Any]]:
    """Per step: status (succeeded/failed/not run) and the summed durations of its cells."""
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
            results[name]["status"] = "failed"
        elif status != "completed" and results[name]["status"] == "succeeded":
            results[name]["status"] = "not run"
    for result in results.values():
        result["duration"] = round(result["duration"], 3)
    return list(results.values())


def _execution_error(failure: Exception, executed: dict[str, Any], output: Path) -> ExecutionError:
    """One line: step, cell, the failing source line, the exception; the notebook is kept."""
    failed = [
        c
        for c in executed.get("cells", [])
        if c.get("metadata", {}).get("papermill", {}).get("status") == "failed"
    ]
    # None failed when nbclient ran on past a cell tagged raises-exception: papermill raises
    # after the run for the last cell holding an error output; name that cell.
    failed = failed or [c for c in executed.get("cells", []) if _shows_error(c)][-1:]
    kept = f"executed notebook kept: {output}" if output.exists() else "no output notebook"
    if not failed or not hasattr(failure, "ename"):
        lines = _ANSI.sub("", str(failure)).strip().splitlines() or ["unknown error"]
        return ExecutionError(f"run failed: {lines[-1]} ({kept})")
    meta = failed[0]["metadata"].get("dsops", {})
    step = meta.get("step", "?")
    where = f"step {step!r}, cell {meta['cell'] + 1}" if "cell" in meta else f"step {step!r}"
    line = _failing_line(getattr(failure, "traceback", []) or [])
    if line:
        where += f", line {line[0]} `{line[1]}`"
    error = f"{failure.ename}: {getattr(failure, 'evalue', '')}"
    return ExecutionError(f"{where} failed: {error} ({kept})", output_path=str(output), step=step)


def _shows_error(cell: dict[str, Any]) -> bool:
    """A cell of ours (not papermill's error banner) with an error output."""
    outputs = cell.get("outputs", [])
    has_error = any(o.get("output_type") == "error" for o in outputs)
    return has_error and "dsops" in cell.get("metadata", {})


def _failing_line(traceback: list[str]) -> tuple[int, str] | None:
    """The ``---->`` line of the first traceback frame IPython printed for the cell."""
    for frame in traceback:
        for line in _ANSI.sub("", frame).splitlines():
            match = re.match(r"-+>\s*(\d+)\s?(.*)", line.strip())
            if match:
                return int(match[1]), match[2].strip()
    return None


def _default_out_dir(pipeline: Pipeline) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return load_config(pipeline.notebook_path).root / "runs" / pipeline.name / stamp


def _environment(pipeline: Pipeline, path: Path) -> dict[str, Any]:
    """What a reader of the record needs to reproduce the run."""
    from dsops_jupyter.lock import distributions_for

    packages = distributions_for(pipeline)
    packages.update({name: _version(name) for name in ("papermill", "nbformat", "nbclient")})
    return {
        "content_hash": pipeline.content_hash,
        "git": _git_revision(path.parent),
        "python": platform.python_version(),
        "dsops": __version__,
        "packages": dict(sorted(packages.items())),
    }


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _git_revision(folder: Path) -> dict[str, Any] | None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.CalledProcessError):
        return None


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
