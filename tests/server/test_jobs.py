"""JobManager and progress bookkeeping, with real threads and real events (no server)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dsops_jupyter import events
from dsops_jupyter.errors import JobConflictError, VcsError
from dsops_jupyter.server.jobs import JobManager, ServerStoppingError
from dsops_jupyter.server.progress import WeightedProgress
from dsops_jupyter.server.records import bounded_json, relative_paths
from dsops_jupyter.server.store import FileJobStore
from dsops_jupyter.server.work import JobInterrupted


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

    job = manager.submit("package", "x.ipynb", work, plan=["Converting", "Committing"])
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


def test_a_stage_shows_the_cores_last_progress_message(manager):
    """The build's "step k of n" reaches the job while the stage runs, and a new stage clears it."""
    seen: dict[str, dict] = {}
    submitted, release = threading.Event(), threading.Event()

    def work(on_event):
        submitted.wait(5)  # `current` is assigned once submit() returns
        events.stage(on_event, "Building image x:v1")
        events.progress(on_event, 3 / 13, "step 3 of 13")
        seen["building"] = manager.get(current["id"])
        events.stage(on_event, "Smoke run of x:v1")
        seen["smoke"] = manager.get(current["id"])
        release.wait(5)
        return {}

    current = manager.submit("package", "x.ipynb", work, plan=["Building", "Smoke"])
    submitted.set()
    release.set()
    wait(manager, current["id"])
    assert seen["building"]["stage"] == "Building image x:v1"
    assert seen["building"]["detail"] == "step 3 of 13"
    assert seen["smoke"]["detail"] == ""


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


def test_weighted_progress_is_monotone_and_below_one_until_done():
    seconds = {"Converting": 1.0, "Committing": 2.0, "Building": 7.0}.__getitem__
    overall = WeightedProgress(["Converting", "Committing", "Building"], seconds)
    assert overall.on_stage("Converting", 0.0)
    values = [overall.at(0.0), overall.on_fraction(1.0, 0.0)]
    assert overall.on_stage("Committing", 0.0)
    assert not overall.on_stage("Checking", 0.0)  # a step inside the commit, no new share
    values += [overall.on_fraction(0.5, 0.0)]
    assert overall.on_stage("Building", 0.0)
    values += [overall.on_fraction(0.5, 0.0), overall.at(1e6)]
    assert values[:4] == [0.0, 0.1, 0.2, 0.65]  # a stage weighs its expected seconds
    assert values == sorted(values) and values[-1] < 1.0
    assert not overall.on_stage("Converting", 1e6)  # never back to an earlier stage
    assert overall.at(1e6) == values[-1]


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


# --- records on disk, restarts, shutdown, bounds ------------------------------------------------
class Blocking:
    """A work that runs until released or stopped (as ProcessWork stops on shutdown)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.stopped = False

    def __call__(self, on_event):
        events.log(on_event, "working")
        self.release.wait(30)
        if self.stopped:
            raise JobInterrupted()
        return {"done": True}

    def stop(self) -> None:
        self.stopped = True
        self.release.set()


def test_jobs_survive_a_restart_and_running_ones_are_interrupted(tmp_path: Path):
    store_dir = tmp_path / ".dsops" / "jobs"
    before = JobManager(workers=1, store=FileJobStore(store_dir))
    done = wait(before, before.submit("run", "a.ipynb", lambda _e: {"x": 1})["id"])
    blocking = Blocking()
    running = before.submit("run", "b.ipynb", blocking)
    queued = before.submit("package", "c.ipynb", lambda _e: {})
    for _ in range(200):
        if "working" in before.get(running["id"])["log"]:
            break
        threading.Event().wait(0.02)
    threading.Event().wait(1.5)  # log lines reach the disk within SAVE_INTERVAL (1 s)

    # The server dies here (no shutdown): a new one reads the records.
    after = JobManager(workers=1, store=FileJobStore(store_dir))
    listed = {job["id"]: job for job in after.list()}
    assert listed[done["id"]]["state"] == "succeeded"
    assert listed[done["id"]]["result"] == {"x": 1}
    for job_id, state in ((running["id"], "running"), (queued["id"], "queued")):
        job = listed[job_id]
        assert job["state"] == "failed" and job["interrupted"] is True
        assert job["error"] == (
            f"interrupted: the Jupyter server stopped while this job was {state}; start it again"
        )
        assert job["finished"] is not None
    assert listed[running["id"]]["log"][0] == "working"  # saved within SAVE_INTERVAL
    assert (tmp_path / ".dsops" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert all(path.stat().st_mode & 0o077 == 0 for path in store_dir.iterdir())
    blocking.stop()
    before.shutdown(timeout=5)
    after.shutdown(timeout=5)


def test_shutdown_stops_running_jobs_and_cancels_queued_ones(tmp_path: Path):
    manager = JobManager(workers=1, store=FileJobStore(tmp_path))
    blocking = Blocking()
    running = manager.submit("run", "a.ipynb", blocking)
    queued = manager.submit("run", "b.ipynb", lambda _e: {})
    manager.shutdown(timeout=5)
    assert blocking.stopped
    for job_id in (running["id"], queued["id"]):
        job = manager.get(job_id)
        assert job["state"] == "failed" and job["interrupted"], job
    with pytest.raises(ServerStoppingError, match="stopping"):
        manager.submit("run", "c.ipynb", lambda _e: {})
    stored = {record["id"]: record for record in FileJobStore(tmp_path).load()}
    assert stored[queued["id"]]["interrupted"] is True


def test_unreadable_records_are_skipped(tmp_path: Path):
    (tmp_path / f"{'a' * 32}.json").write_text("{not json")
    (tmp_path / f"{'b' * 32}.json").write_text('{"id": "' + "b" * 32 + '", "kind": 3}')
    (tmp_path / f"{'c' * 32}.json").write_text("[]")
    manager = JobManager(store=FileJobStore(tmp_path))
    assert manager.list() == []
    manager.shutdown()


def test_a_job_keeps_its_last_log_lines_and_short_lines():
    manager = JobManager(workers=1, max_log_lines=10)

    def chatty(on_event):
        for i in range(25):
            events.log(on_event, f"line {i}")
        events.log(on_event, "w" * 50_000)
        return {}

    job = wait(manager, manager.submit("run", "a.ipynb", chatty)["id"])
    assert job["log"][0] == "[16 earlier lines not kept]"
    assert job["log"][1:10] == [f"line {i}" for i in range(16, 25)]
    assert len(job["log"][-1]) < 1_100 and job["log"][-1].endswith("more characters)")
    manager.shutdown()


def test_errors_and_result_values_are_cut_short():
    manager = JobManager(workers=1)

    def fails(_on_event):
        raise VcsError("bad value " + "v" * 100_000)

    failed = wait(manager, manager.submit("run", "a.ipynb", fails)["id"])
    assert len(failed["error"]) < 1_100 and failed["error"].startswith("bad value vvv")
    assert bounded_json({"a": ["x" * 5_000, 3]}, 100) == {
        "a": ["x" * 100 + "... (4900 more characters)", 3]
    }
    manager.shutdown()
