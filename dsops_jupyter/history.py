"""A notebook's past runs, newest first, read from the run.json of each of its run folders.

Run folders are ``<runs-dir>/<pipeline>/<stamp>/`` (sweeps: ``<stamp>-sweep/<NN-values>/``);
a folder whose run.json is missing (a run still going) or unreadable is left out, and so is the
record of another notebook of the same name elsewhere in the project.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsops_jupyter.config import load_config
from dsops_jupyter.fsutil import read_json_object
from dsops_jupyter.markers import pipeline_name
from dsops_jupyter.model import RUN_RECORD


def list_runs(notebook: Path) -> list[dict[str, Any]]:
    """``{dir, status, parameters, started, duration, output_notebook, steps}`` per run (absolute
    paths), newest first."""
    notebook = Path(notebook).resolve()
    folder = load_config(notebook).runs_dir / pipeline_name(notebook)
    if not folder.is_dir():
        return []
    found = []
    for path in [*folder.glob(f"*/{RUN_RECORD}"), *folder.glob(f"*/*/{RUN_RECORD}")]:
        record = read_json_object(path)
        if record is None or not _same_notebook(record.get("notebook"), notebook):
            continue
        found.append(_summary(path.parent, record))
    return sorted(found, key=lambda run: (str(run["started"] or ""), run["dir"]), reverse=True)


def _same_notebook(recorded: object, notebook: Path) -> bool:
    """The record is this notebook's: the same path, or (the project moved since) a path that
    no longer exists with the same file name."""
    if not isinstance(recorded, str):
        return True
    path = Path(recorded)
    return path == notebook or (path.name == notebook.name and not path.exists())


def _summary(run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    steps = record.get("steps")
    steps = steps if isinstance(steps, list) else []
    parameters = record.get("parameters")
    output = record.get("output_notebook")
    return {
        "dir": str(run_dir),
        "status": record.get("status"),
        "parameters": parameters if isinstance(parameters, dict) else {},
        "started": record.get("started"),
        "duration": record.get("duration"),
        "output_notebook": str(Path(output)) if isinstance(output, str) else None,
        "steps": [_step(step) for step in steps if isinstance(step, dict)],
    }


def _step(step: dict[str, Any]) -> dict[str, Any]:
    """What a list of runs shows of a step: its final state and where it failed."""
    keys = ("name", "status", "duration", "cell", "line", "error", "restored")
    return {key: step.get(key) for key in keys}
