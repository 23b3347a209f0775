"""`dsops run --resume [RUN]`: find the failed run and decide which of its steps to restore.

A failed run keeps the outputs of the steps that finished in its run folder. Resuming runs the
same steps with the same parameters in a fresh kernel, restoring those outputs (as a cache hit
does) up to the first step that failed or could not store an output, and executing the rest.
It refuses when a step it would restore has changed since (its code key, see cache.py: the
step's normalised code and the hoisted code it uses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dsops_jupyter.cache import code_key
from dsops_jupyter.errors import ResumeError
from dsops_jupyter.fsutil import read_json_object
from dsops_jupyter.model import RUN_RECORD
from dsops_jupyter.pipeline import Pipeline
from dsops_jupyter.runsteps import ARTIFACTS, Resumed
from dsops_jupyter.runtime import artifacts

RESUMABLE = ("failed", "interrupted")


def plan_resume(pipeline: Pipeline, runs: Path, run: str) -> Resumed:
    """The failed run ``run`` (a run folder, or its name under ``runs``; "" for the latest
    failed one) as a Resumed; a ResumeError in one line when it cannot be continued."""
    run_dir = _named_run(runs, run) if run else _latest_failed(runs, pipeline.name)
    record = _record(run_dir)
    if record.get("status") not in RESUMABLE:
        raise ResumeError(
            f"run {run_dir} {record.get('status', 'has no status')}: only a failed run resumes"
        )
    steps = [step["name"] for step in record.get("steps", [])]
    missing = [name for name in steps if name not in {s.name for s in pipeline.steps}]
    if missing:
        raise ResumeError(f"step {missing[0]!r} of run {run_dir.name} is no longer in the notebook")
    restored = _finished_steps(pipeline, record, run_dir / ARTIFACTS)
    recorded = {step["name"]: step.get("code_key") for step in record["steps"]}
    for name in restored:
        if recorded[name] != code_key(pipeline, name):
            raise ResumeError(
                f"step {name!r} changed since run {run_dir.name} (its code or the code it "
                f"uses): its kept outputs may be stale; run without --resume"
            )
    return Resumed(run_dir, dict(record.get("parameters", {})), steps, frozenset(restored))


def _finished_steps(pipeline: Pipeline, record: dict[str, Any], workdir: Path) -> list[str]:
    """Steps of the run that finished and stored every output, in notebook order, up to the
    first that did not: the failing step and everything after it run again."""
    by_name = {step["name"]: step for step in record["steps"]}
    kept = artifacts.entries(workdir) if workdir.is_dir() else {}
    ordered = sorted(
        (s for s in pipeline.steps if s.name in by_name), key=lambda s: min(s.cells, default=0)
    )
    finished = []
    for step in ordered:
        done = by_name[step.name]
        stored = all(name in kept for name in step.outputs)
        if done.get("status") not in ("done", "cached") or done.get("unstorable") or not stored:
            break
        finished.append(step.name)
    return finished


def _named_run(runs: Path, run: str) -> Path:
    for candidate in (Path(run), runs / run):
        folder = candidate.parent if candidate.name == RUN_RECORD else candidate
        if (folder / RUN_RECORD).is_file():
            return folder.resolve()
    raise ResumeError(f"no run {run!r}: give a run folder or the name of one in {runs}")


def _latest_failed(runs: Path, name: str) -> Path:
    """The newest failed run that no later run resumed already (a resumed run that failed
    again is itself the newest failed one)."""
    paths = sorted(runs.glob(f"*/{RUN_RECORD}"), reverse=True) if runs.is_dir() else []
    records = [(path.parent, record) for path in paths if (record := read_json_object(path))]
    resumed = {Path(r["resumed_from"]).name for _, r in records if r.get("resumed_from")}
    for run_dir, record in records:
        if record.get("status") in RESUMABLE and run_dir.name not in resumed:
            return run_dir
    raise ResumeError(f"no failed run of {name} in {runs} left to resume")


def _record(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((run_dir / RUN_RECORD).read_bytes())
    except (OSError, ValueError) as err:
        raise ResumeError(f"cannot read the record of run {run_dir}: {err}") from None
    if not isinstance(data, dict):
        raise ResumeError(f"cannot read the record of run {run_dir}: not a JSON object")
    return data
