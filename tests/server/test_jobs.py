"""JobManager and progress bookkeeping, with real threads and real events (no server)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dsops_jupyter import events
from dsops_jupyter.errors import JobConflictError, VcsError
from dsops_jupyter.server.jobs import (
    JobManager,
    OverallProgress,
    package_result_json,
    relative_paths,
)


@pytest.fixture
def manager():
    jobs = JobManager(workers=2)
    yield jobs
    jobs.shutdown()


def wait(manager: JobManager, job_id: str) -> dict:
    for _ in range(200):
        job = manager.get(job_id)
        if job["state"] in ("succeeded", "failed"):
            return job
        threading.Event().wait(0.02)
    raise AssertionError(manager.get(job_id))


def test_events_feed_stage_progress_and_log(manager):
    def work(on_event):
        events.stage(on_event, "Converting")
        events.progress(on_event, 0.5)
        events.log(on_event, "wrote a.py\nwrote b.json")
        events.stage(on_event, "Committing")
        events.result(on_event, "committed v1", tag="dsops/x/v1")
        return {"tag": "dsops/x/v1"}

    job = manager.submit("package", "x.ipynb", work, expected_stages=2)
    done = wait(manager, job["id"])
    assert done["state"] == "succeeded" and done["progress"] == 1.0
    assert done["log"] == [
        "== Converting",
        "wrote a.py",
        "wrote b.json",
        "== Committing",
        "committed v1",
    ]
    assert done["result"] == {"tag": "dsops/x/v1"}
    assert done["finished"] >= done["created"]


def test_one_active_job_per_notebook(manager):
    release = threading.Event()

    def slow(_on_event):
        release.wait(10)
        return {}

    first = manager.submit("run", "a.ipynb", slow)
    with pytest.raises(JobConflictError, match=r"a job is already working on a\.ipynb"):
        manager.submit("package", "a.ipynb", slow)
    other = manager.submit("run", "b.ipynb", slow)  # a different notebook is fine
    release.set()
    assert wait(manager, first["id"])["state"] == "succeeded"
    assert wait(manager, other["id"])["state"] == "succeeded"
    again = manager.submit("run", "a.ipynb", lambda _e: {})
    assert wait(manager, again["id"])["state"] == "succeeded"
    assert [j["id"] for j in manager.list()] == [again["id"], other["id"], first["id"]]


def test_errors_become_one_line(manager):
    def user_error(_on_event):
        raise VcsError("x.ipynb: not committed;\n  commit it first")

    def bug(_on_event):
        raise KeyError("boom")

    failed = wait(manager, manager.submit("package", "x.ipynb", user_error)["id"])
    assert failed["state"] == "failed"
    assert failed["error"] == "x.ipynb: not committed; commit it first"
    crashed = wait(manager, manager.submit("package", "y.ipynb", bug)["id"])
    assert crashed["error"] == "internal error: KeyError: 'boom'"
    assert crashed["log"][-1] == f"error: {crashed['error']}"


def test_overall_progress_is_monotone_and_below_one_until_done():
    overall = OverallProgress(expected_stages=2)
    values = [overall.on_stage(), overall.on_fraction(0.5), overall.on_fraction(1.0)]
    values += [overall.on_stage(), overall.on_fraction(0.5), overall.on_stage()]
    values += [overall.on_fraction(0.2)]  # a third, unexpected stage: never goes back
    assert values == sorted(values)
    assert values[:3] == [0.0, 0.25, 0.5]
    assert all(0.0 <= v < 1.0 for v in values)


def test_paths_become_relative_to_the_root(tmp_path: Path):
    root = tmp_path.resolve()
    data = {
        "script": str(root / "pipelines" / "x" / "x.py"),
        "nested": [{"out": str(root / "runs" / "o.ipynb")}],
        "elsewhere": "/etc/hostname",
        "word": "v1",
        "n": 3,
    }
    assert relative_paths(data, root) == {
        "script": "pipelines/x/x.py",
        "nested": [{"out": "runs/o.ipynb"}],
        "elsewhere": "/etc/hostname",
        "word": "v1",
        "n": 3,
    }


def test_package_result_flattens_a_nested_version(tmp_path: Path):
    root = tmp_path.resolve()
    data = {
        "version": {
            "name": "x",
            "number": 3,
            "tag": "dsops/x/v3",
            "commit": "a" * 40,
            "short": "a" * 7,
            "epoch": 1,
        },
        "created": True,
        "package_dir": str(root / "pipelines" / "x"),
        "script": str(root / "pipelines" / "x" / "x.py"),
        "image": None,
    }
    out = package_result_json(data, root)
    assert out["version"] == "v3" and out["tag"] == "dsops/x/v3"
    assert out["commit"] == "a" * 40 and out["short"] == "a" * 7
    assert out["script"] == "pipelines/x/x.py" and out["package_dir"] == "pipelines/x"
    assert out["run"] is None


def test_package_result_maps_the_smoke_run_to_run(tmp_path: Path):
    data = {"version": None, "created": False, "smoke": {"exit_code": 0, "log": ["ok"]}}
    run = package_result_json(data, tmp_path)["run"]
    assert run["status"] == "succeeded" and run["log"] == ["ok"] and run["steps"] == []
