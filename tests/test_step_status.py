"""Honest per-step status in real kernels: step events, the run record's steps, the failing line.

The user asks for the last step; an upstream step fails: that step is failed (at the user's
cell and line), the steps before it are done with their own durations, the rest skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsops_jupyter.errors import ExecutionError
from dsops_jupyter.events import Event
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import RunOptions
from tests.helpers import Markdown, make_notebook

CELLS = [
    Markdown("# upstream fails"),
    ("import time\ntime.sleep(0.6)\nrows = [1, 2, 3]", ["step:load"]),
    ("unused = 0", ["skip"]),
    "%%dsops step features\nscaled = [r * 2 for r in rows]\n\nboom = scaled[10]",
    ("model = sum(scaled)\nprint(model)", ["step:train"]),
]


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExecutionError, list[Event]]:
    root = tmp_path_factory.mktemp("status")
    make_notebook(root / "nb.ipynb", CELLS)
    seen: list[Event] = []
    with pytest.raises(ExecutionError) as caught:
        run_notebook(
            root / "nb.ipynb", RunOptions(steps=("train",), out_dir=root / "out"), seen.append
        )
    return caught.value, seen


def test_the_failed_step_is_the_one_that_failed_at_the_users_line(failed_run: tuple) -> None:
    error, _ = failed_run
    assert error.record is not None
    steps = {s["name"]: s for s in error.record["steps"]}
    assert [(s["name"], s["status"]) for s in error.record["steps"]] == [
        ("load", "done"),
        ("features", "failed"),
        ("train", "skipped"),
    ]
    failed = steps["features"]
    # cell 3 of the user's notebook (0-based; markdown and skip cells count), line 4 as the
    # user sees it (the %%dsops marker line is line 1)
    assert (failed["cell"], failed["line"]) == (3, 4)
    assert failed["error"] == "IndexError: list index out of range"
    assert "step 'features', cell 4, line 4 `boom = scaled[10]`" in str(error)
    assert error.step == "features"


def test_durations_are_each_steps_own(failed_run: tuple) -> None:
    error, _ = failed_run
    steps = {s["name"]: s for s in error.record["steps"]}
    assert steps["load"]["duration"] >= 0.6
    assert steps["features"]["duration"] < 0.5
    assert steps["train"]["duration"] == 0.0
    assert steps["load"]["executed"] and not steps["train"]["executed"]


def test_the_record_in_the_error_is_run_json(failed_run: tuple) -> None:
    error, _ = failed_run
    saved = json.loads(Path(error.record["record"]).read_text(encoding="utf-8"))
    assert saved["steps"] == error.record["steps"]
    assert saved["status"] == "failed"


def test_step_events_queued_running_then_final(failed_run: tuple) -> None:
    _, seen = failed_run
    states = [(e.data["step"], e.data["state"]) for e in seen if e.kind == "step"]
    assert states == [
        ("load", "queued"),
        ("features", "queued"),
        ("train", "queued"),
        ("load", "running"),
        ("load", "done"),
        ("features", "running"),
        ("features", "failed"),
        ("train", "skipped"),
    ]
    failed = next(e for e in seen if e.kind == "step" and e.data["state"] == "failed")
    assert failed.message == "features: failed"
    assert (failed.data["cell"], failed.data["line"]) == (3, 4)
    assert failed.data["error"].startswith("IndexError")
    done = next(e for e in seen if e.kind == "step" and e.data["state"] == "done")
    assert done.data["duration"] >= 0.6 and done.data["cell"] == 1


def test_a_cached_step_says_cached(tmp_path: Path) -> None:
    make_notebook(
        tmp_path / "nb.ipynb",
        [("rows = [1, 2]", ["step:load"]), ("total = sum(rows)\nprint(total)", ["step:sum"])],
    )
    run_notebook(tmp_path / "nb.ipynb", RunOptions(cache=True, out_dir=tmp_path / "a"))
    seen: list[Event] = []
    again = run_notebook(
        tmp_path / "nb.ipynb", RunOptions(cache=True, out_dir=tmp_path / "b"), seen.append
    )
    # the last step hands nothing on: it exists for what it shows, so it always runs
    assert [s["status"] for s in again.steps] == ["cached", "done"]
    finals = [e.data["state"] for e in seen if e.kind == "step" and e.data["duration"] is not None]
    assert finals == ["cached", "done"]
