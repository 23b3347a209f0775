"""Job records: cancel, the busy answer, step states, stages, options, a failed run's record, and
the stage times that weigh progress; all kept across a restart (real threads, real files)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from dsops_jupyter import events
from dsops_jupyter.events import Event
from dsops_jupyter.server.jobs import JobManager, NotebookBusyError
from dsops_jupyter.server.progress import ESTIMATES, StageTimes
from dsops_jupyter.server.store import FileJobStore
from dsops_jupyter.server.work import JobError, JobInterrupted

FINISHED = ("succeeded", "failed", "cancelled")


def wait(manager: JobManager, job_id: str, until: tuple[str, ...] = FINISHED) -> dict:
    for _ in range(500):
        job = manager.get(job_id)
        if job["state"] in until:
            return job
        time.sleep(0.02)
    raise AssertionError(manager.get(job_id))


class Blocking:
    """Works until released or stopped, as ProcessWork stops on SIGINT."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.stops = 0

    def __call__(self, on_event):
        self.started.set()
        events.stage(on_event, "Running 1 step(s) of slow.ipynb: main")
        self.release.wait(30)
        if self.stops:
            raise JobInterrupted("run stopped; the executed notebook is kept")
        return {"done": True}

    def stop(self) -> None:
        self.stops += 1
        threading.Timer(0.3, self.release.set).start()  # unwinding takes a moment


def step(on_event, name: str, state: str, **data) -> None:
    """A C3 step event, as the core's events.step emits it."""
    fields = {"step": name, "state": state, "duration": None, "cell": None, "line": None}
    on_event(Event("step", f"{name}: {state}", data={**fields, "error": None, **data}))


def test_cancel_drops_a_queued_job_and_stops_a_running_one(tmp_path: Path):
    manager = JobManager(workers=1, store=FileJobStore(tmp_path))
    blocking = Blocking()
    running = manager.submit("run", "slow.ipynb", blocking, plan=["Running"])
    ran = threading.Event()
    queued = manager.submit("run", "other.ipynb", lambda _e: ran.set() or {})
    assert blocking.started.wait(10)

    dropped = manager.cancel(queued["id"])
    assert dropped["state"] == "cancelled" and dropped["error"] == "cancelled while queued"
    stopping = manager.cancel(running["id"])
    assert stopping["stage"] == "Cancelling"
    ended = wait(manager, running["id"])
    assert ended["state"] == "cancelled", ended
    assert ended["error"] == "run stopped; the executed notebook is kept"
    assert ended["finished"] is not None and not ended["interrupted"]
    assert blocking.stops == 1
    assert manager.cancel(running["id"])["state"] == "cancelled"  # again: nothing changes
    assert manager.cancel("f" * 32) is None
    time.sleep(0.2)
    assert not ran.is_set()  # the dropped job never started
    stored = {r["id"]: r["state"] for r in FileJobStore(tmp_path).load()}
    assert stored == {running["id"]: "cancelled", queued["id"]: "cancelled"}
    manager.shutdown(timeout=2)


def test_a_busy_notebook_names_its_active_job():
    manager = JobManager(workers=1)
    blocking = Blocking()
    first = manager.submit("run", "a.ipynb", blocking, options={"parameters": {"n": 3}})
    with pytest.raises(NotebookBusyError) as busy:
        manager.submit("package", "a.ipynb", blocking)
    assert busy.value.http_status == 409
    assert busy.value.job["id"] == first["id"]
    assert busy.value.job["options"] == {"parameters": {"n": 3}}
    assert [j["id"] for j in manager.list("a.ipynb")] == [first["id"]]
    assert manager.list("b.ipynb") == []
    blocking.release.set()
    wait(manager, first["id"])
    manager.shutdown(timeout=2)


def test_steps_stages_options_and_a_failed_runs_record_survive_a_restart(tmp_path: Path):
    store_dir = tmp_path / ".dsops" / "jobs"
    before = JobManager(workers=2, store=FileJobStore(store_dir))
    record = {"status": "failed", "steps": [{"name": "load", "status": "done"}]}

    def failing_run(on_event):
        events.stage(on_event, "Running 2 step(s) of nb.ipynb: load, train")
        step(on_event, "load", "queued")
        step(on_event, "train", "queued")
        step(on_event, "load", "running", cell=1)
        step(on_event, "load", "done", duration=0.25, cell=1)
        step(on_event, "train", "running", cell=3)
        error = "ZeroDivisionError: " + "x" * 5000
        step(on_event, "train", "failed", duration=0.5, cell=3, line=2, error=error)
        raise JobError("nb.ipynb, cell 4 (step train), line 2: ZeroDivisionError", record)

    options = {"parameters": {"text": "y" * 5000}, "steps": ["train"]}
    failed = wait(before, before.submit("run", "nb.ipynb", failing_run, options=options)["id"])
    blocking = Blocking()
    running = before.submit("run", "slow.ipynb", blocking)
    assert blocking.started.wait(10)
    step_running = {"step": "main", "state": "running", "cell": 0}
    clock = time.time()
    before._on_event(before._jobs[running["id"]], Event("step", "main: running", data=step_running))
    started = before.get(running["id"])["steps"]["main"]["started"]
    assert clock - 0.01 <= started <= time.time() + 0.01  # the panel counts from it
    time.sleep(1.2)  # the record reaches the disk within SAVE_INTERVAL

    after = JobManager(store=FileJobStore(store_dir))  # the server died; a new one reads
    again = after.get(failed["id"])
    assert again == failed
    assert again["state"] == "failed" and again["result"] == record
    assert again["options"]["steps"] == ["train"]
    assert len(again["options"]["parameters"]["text"]) < 1100  # bounded
    assert again["steps"]["load"] == {
        "state": "done",
        "duration": 0.25,
        "cell": 1,
        "line": None,
        "error": None,
        "started": None,
    }
    train = again["steps"]["train"]
    assert (train["state"], train["cell"], train["line"]) == ("failed", 3, 2)
    assert train["error"].startswith("ZeroDivisionError") and len(train["error"]) < 1100
    [stage] = again["stages"]
    assert stage["name"].startswith("Running") and stage["duration"] >= 0
    cut = after.get(running["id"])
    assert cut["interrupted"] and cut["state"] == "failed"
    assert cut["steps"]["main"]["state"] == "skipped"  # it did not run to its end
    assert cut["steps"]["main"]["started"] is None
    assert cut["stages"][0]["duration"] is not None
    blocking.stop()
    before.shutdown(timeout=2)
    after.shutdown(timeout=2)


def test_stage_times_are_learned_and_weigh_later_jobs(tmp_path: Path):
    path = tmp_path / "stage-times.json"
    path.write_text("{broken")
    times = StageTimes(path)  # a broken file: first-time estimates
    assert times.estimate("package", "Building") == ESTIMATES["Building"]
    manager = JobManager(workers=1, stage_times=times)

    def package(on_event):
        events.stage(on_event, "Converting x.ipynb")
        events.stage(on_event, "Building image x:v1")
        time.sleep(0.3)
        return {}

    wait(
        manager,
        manager.submit("package", "x.ipynb", package, plan=["Converting", "Building"])["id"],
    )
    learned = json.loads(path.read_text())["package"]
    assert 0.3 <= learned["Building"] < 5 and learned["Converting"] < 0.3
    assert StageTimes(path).estimate("package", "Building") == learned["Building"]

    release = threading.Event()

    def long_build(on_event):
        events.stage(on_event, "Converting x.ipynb")
        events.stage(on_event, "Building image x:v2")
        events.progress(on_event, 0.5, "step 2 of 4")
        release.wait(10)
        return {}

    job = manager.submit("package", "x.ipynb", long_build, plan=["Converting", "Building"])
    while not manager.get(job["id"])["stage"].startswith("Building"):
        time.sleep(0.01)
    time.sleep(0.05)  # its "step 2 of 4" follows at once
    seen = []
    for _ in range(10):  # a build taking far longer than learned: the bar still moves, below 1
        seen.append(manager.get(job["id"])["progress"])
        time.sleep(0.1)
    release.set()
    assert seen == sorted(seen) and seen[-1] > seen[0] and seen[-1] < 1.0
    assert seen[0] >= 0.5  # Converting is done and half the build's steps
    assert wait(manager, job["id"])["progress"] == 1.0
    manager.shutdown(timeout=2)
