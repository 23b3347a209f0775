"""Cancel, the busy answer, jobs of one notebook, an unsaved notebook's pipeline, versions and
their files: the /dsops routes on a real Jupyter server, real worker processes, real kernels."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nbformat
import psutil
import pytest

from tests.server.test_handlers import (
    NO_BUILD,
    assert_error,
    fetch_json,
    post_job,
    wait_job,
)

SLOW = (
    "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))\nprint('started')",
    "import time\ntime.sleep(300)",
)


def job_processes() -> list[psutil.Process]:
    """This server's job worker processes (children running dsops_jupyter.server.worker)."""
    found = []
    for child in psutil.Process().children():
        try:
            if "dsops_jupyter.server.worker" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.2)


async def started(jp_fetch, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """The job once its first cell printed 'started'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _status, job = await fetch_json(jp_fetch, "dsops", "jobs", job_id)
        if "started" in job["log"]:
            return job
        assert job["state"] == "running" or job["state"] == "queued", job
        await asyncio.sleep(0.3)
    raise AssertionError("the job's first cell did not run")


def kernel_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- cancel, busy --------------------------------------------------------------------------------
async def test_cancel_stops_a_running_run_and_its_kernel(jp_fetch, repo, write_notebook):
    write_notebook("slow.ipynb", *SLOW)
    status, job = await post_job(jp_fetch, {"kind": "run", "path": "slow.ipynb"})
    assert status == 202, job
    await started(jp_fetch, job["id"])
    kernel = int((repo / "kernel.pid").read_text())
    [worker] = job_processes()
    assert kernel_alive(kernel)

    asked = time.monotonic()
    status, cancelling = await fetch_json(
        jp_fetch, "dsops", "jobs", job["id"], "cancel", method="POST", body=""
    )
    assert status == 202, cancelling
    assert cancelling["id"] == job["id"] and cancelling["state"] in ("running", "cancelled")
    ended = await wait_job(jp_fetch, job["id"], timeout=60)
    seconds = time.monotonic() - asked
    print(f"cancel of a running run job: ended {ended['state']} after {seconds:.1f} s")
    assert ended["state"] == "cancelled", ended
    assert ended["finished"] is not None and not ended["interrupted"]
    assert "\n" not in ended["error"]
    await wait_for(lambda: not kernel_alive(kernel), 15, "the job's kernel outlived the cancel")
    await wait_for(lambda: not worker.is_running(), 5, "the job process outlived the cancel")
    # Nothing half-written: any run record left is whole JSON.
    for record in repo.rglob("run.json"):
        json.loads(record.read_text())
    # The notebook is free again.
    status, again = await post_job(jp_fetch, {"kind": "package", "path": "slow.ipynb", **{}})
    assert status == 202, again
    await wait_job(jp_fetch, again["id"])


async def test_a_busy_notebook_answers_409_with_its_job(jp_fetch, repo, write_notebook):
    write_notebook("slow.ipynb", *SLOW)
    write_notebook("quick.ipynb", "x = 1")
    body = {"kind": "run", "path": "slow.ipynb", "options": {"parameters": {}}}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    assert job["options"] == {"parameters": {}}

    status, busy = await post_job(jp_fetch, {"kind": "package", "path": "slow.ipynb"})
    assert status == 409, busy
    assert set(busy) == {"error", "job"} and "slow.ipynb" in busy["error"]
    assert busy["job"]["id"] == job["id"] and busy["job"]["state"] in ("queued", "running")

    status, quick = await post_job(jp_fetch, {"kind": "run", "path": "quick.ipynb"})
    assert status == 202, quick
    status, mine = await fetch_json(jp_fetch, "dsops", "jobs", params={"path": "slow.ipynb"})
    assert status == 200 and [j["id"] for j in mine["jobs"]] == [job["id"]]
    status, every = await fetch_json(jp_fetch, "dsops", "jobs")
    assert [j["id"] for j in every["jobs"]] == [quick["id"], job["id"]]
    status, none = await fetch_json(jp_fetch, "dsops", "jobs", params={"path": "nope.ipynb"})
    assert none == {"jobs": []}

    await fetch_json(jp_fetch, "dsops", "jobs", job["id"], "cancel", method="POST", body="")
    assert (await wait_job(jp_fetch, job["id"]))["state"] == "cancelled"
    assert (await wait_job(jp_fetch, quick["id"]))["state"] == "succeeded"


async def test_cancel_of_an_unknown_job_is_404(jp_fetch):
    status, reply = await fetch_json(
        jp_fetch, "dsops", "jobs", "0123abcd", "cancel", method="POST", body=""
    )
    assert_error(status, reply, 404, "0123abcd")


async def test_a_job_keeps_its_options_stages_and_weighted_progress(jp_fetch, repo):
    options = {**NO_BUILD, "parameters": {"alpha": 0.5}}
    body = {"kind": "package", "path": "examples/wine.ipynb", "options": options}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    seen = [job["progress"]]
    while True:
        _status, job = await fetch_json(jp_fetch, "dsops", "jobs", job["id"])
        seen.append(job["progress"])
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job["error"]
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert job["options"] == options
    names = [stage["name"].split()[0] for stage in job["stages"]]
    assert names == ["Converting", "Committing"]
    assert all(stage["duration"] >= 0 for stage in job["stages"])
    learned = json.loads((repo / ".dsops" / "jobs" / "stage-times.json").read_text())
    assert set(learned["package"]) == {"Converting", "Committing"}


# --- the pipeline of an unsaved notebook -------------------------------------------------------
async def test_post_pipeline_describes_the_notebook_as_edited(jp_fetch, repo, write_notebook):
    path = write_notebook("nb.ipynb", ("a = 1", ["step:load"]), ("b = a + 1", ["step:use"]))
    content = json.loads(path.read_text())
    content["cells"][1]["metadata"]["tags"] = ["step:train"]  # renamed, not saved
    status, data = await fetch_json(
        jp_fetch,
        "dsops",
        "pipeline",
        method="POST",
        body=json.dumps({"path": "nb.ipynb", "content": content}),
    )
    assert status == 200, data
    assert [s["name"] for s in data["steps"]] == ["load", "train"]
    assert data["notebook"] == "nb.ipynb" and data["name"] == "nb"
    _status, saved = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "nb.ipynb"})
    assert [s["name"] for s in saved["steps"]] == ["load", "use"]
    assert saved["content_hash"] != data["content_hash"]


async def test_post_pipeline_takes_a_notebook_with_big_outputs(jp_fetch, repo, write_notebook):
    path = write_notebook("nb.ipynb", ("a = 1", ["step:load"]))
    content = json.loads(path.read_text())
    plot = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "A" * 3_000_000}}
    content["cells"][0]["outputs"] = [plot]  # over the 1 MiB bound of job requests
    body = json.dumps({"path": "nb.ipynb", "content": content})
    status, data = await fetch_json(jp_fetch, "dsops", "pipeline", method="POST", body=body)
    assert status == 200, data
    assert [s["name"] for s in data["steps"]] == ["load"]


@pytest.mark.parametrize(
    ("content", "status", "words"),
    [
        ("not a notebook", 400, ("'content'",)),
        ({"cells": []}, 400, ("nbformat",)),
        (None, 400, ("'content'",)),
    ],
)
async def test_post_pipeline_refuses_what_is_no_notebook(
    jp_fetch, repo, write_notebook, content, status, words
):
    write_notebook("nb.ipynb", "a = 1")
    body = json.dumps({"path": "nb.ipynb", "content": content})
    got, reply = await fetch_json(jp_fetch, "dsops", "pipeline", method="POST", body=body)
    assert_error(got, reply, status, *words)


# --- versions ----------------------------------------------------------------------------------
async def package(jp_fetch, rel: str) -> dict[str, Any]:
    status, job = await post_job(jp_fetch, {"kind": "package", "path": rel, "options": NO_BUILD})
    assert status == 202, job
    done = await wait_job(jp_fetch, job["id"])
    assert done["state"] == "succeeded", done["error"]
    return done


async def test_versions_newest_first_and_their_files(jp_fetch, repo, write_notebook, git):
    write_notebook("nb.ipynb", ("x = 1\nprint(x)", ["step:main"]))
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-qm", "nb")
    await package(jp_fetch, "nb.ipynb")
    write_notebook("nb.ipynb", ("x = 2\nprint(x)", ["step:main"]))
    await package(jp_fetch, "nb.ipynb")

    asked = time.monotonic()
    status, reply = await fetch_json(jp_fetch, "dsops", "versions", params={"path": "nb.ipynb"})
    seconds = time.monotonic() - asked
    assert status == 200, reply
    assert seconds < 5, f"the listing took {seconds:.1f} s"
    versions = reply["versions"]
    assert [v["tag"] for v in versions] == ["dsops/nb/v2", "dsops/nb/v1"]
    assert versions[0]["commit"] == git(repo, "rev-parse", "dsops/nb/v2^{commit}")
    assert versions[0]["script"] == "pipelines/nb/nb.py"
    for version in versions:  # no image was built: no engine knows one, or none answers
        assert version["image"] in (None, {"ref": f"nb:v{version['number']}", "id": None})

    old, new = [
        (
            await fetch_json(
                jp_fetch, "dsops", "versions", "file", params={"path": "nb.ipynb", "tag": tag}
            )
        )[1]
        for tag in ("dsops/nb/v1", "dsops/nb/v2")
    ]
    assert old["file"] == "nb.py" and old["tag"] == "dsops/nb/v1"
    assert old["content"] == git(repo, "show", "dsops/nb/v1:pipelines/nb/nb.py") + "\n"
    assert "x = 1" in old["content"] and "x = 2" in new["content"]
    params = {"path": "nb.ipynb", "tag": "dsops/nb/v1", "file": "pipeline.json"}
    status, spec = await fetch_json(jp_fetch, "dsops", "versions", "file", params=params)
    assert status == 200 and json.loads(spec["content"])["name"] == "nb"


@pytest.mark.parametrize(
    ("tag", "file", "words"),
    [
        ("dsops/nb/v9", None, ("no version",)),
        ("dsops/other/v1", None, ("no version",)),
        ("dsops/nb/v1", "../../nb.ipynb", ("not a file",)),
        ("dsops/nb/v1", "/etc/hostname", ("not a file",)),
        ("dsops/nb/v1", "missing.py", ("no file",)),
        ("dsops/nb/v1", "dsops_runtime", ("no file",)),  # a folder, not a file
    ],
)
async def test_version_files_outside_the_package_folder_are_404(
    jp_fetch, repo, write_notebook, git, tag, file, words
):
    write_notebook("nb.ipynb", "x = 1")
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-qm", "nb")
    await package(jp_fetch, "nb.ipynb")
    params = {"path": "nb.ipynb", "tag": tag, **({"file": file} if file else {})}
    status, reply = await fetch_json(jp_fetch, "dsops", "versions", "file", params=params)
    assert_error(status, reply, 404, *words)


async def test_versions_of_a_notebook_outside_git_is_409(jp_fetch, jp_root_dir, write_notebook):
    write_notebook("nb.ipynb", "x = 1")
    status, reply = await fetch_json(jp_fetch, "dsops", "versions", params={"path": "nb.ipynb"})
    assert_error(status, reply, 409, "not inside a Git repository")


# --- a failed run: step states, its record, the runs list --------------------------------------
async def test_a_failed_run_keeps_its_record_steps_and_is_listed(
    jp_fetch, repo, write_notebook, git
):
    write_notebook(
        "nb.ipynb",
        ("a = 1", ["step:load"]),
        ("b = a + 1\nc = b / 0", ["step:train"]),
        ("print(c)", ["step:report"]),
    )
    status, job = await post_job(jp_fetch, {"kind": "run", "path": "nb.ipynb"})
    assert status == 202, job
    failed = await wait_job(jp_fetch, job["id"])
    assert failed["state"] == "failed" and "ZeroDivisionError" in failed["error"]
    assert "executed notebook kept: .dsops/runs/nb/" in failed["error"]  # as the browser shows
    assert str(repo) not in failed["error"]
    steps = failed["steps"]
    assert steps["load"]["state"] == "done" and steps["load"]["duration"] is not None
    train = steps["train"]
    assert (train["state"], train["cell"], train["line"]) == ("failed", 1, 2), train
    assert "ZeroDivisionError" in train["error"]
    assert steps["report"]["state"] == "skipped"
    record = failed["result"]  # the run record of the failed run (C4)
    assert record["status"] == "failed"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("load", "done"),
        ("train", "failed"),
        ("report", "skipped"),
    ]
    assert not record["output_notebook"].startswith("/")

    status, listing = await fetch_json(jp_fetch, "dsops", "runs", params={"path": "nb.ipynb"})
    assert status == 200, listing
    [run] = listing["runs"]
    assert run["status"] == "failed" and run["dir"].startswith(".dsops/runs/nb/")
    assert run["output_notebook"] == record["output_notebook"]
    assert (repo / run["output_notebook"]).is_file()
    assert [s["status"] for s in run["steps"]] == ["done", "failed", "skipped"]
    assert ".dsops" not in git(repo, "status", "--porcelain")


async def test_runs_of_a_notebook_never_run_are_empty(jp_fetch, repo, write_notebook):
    write_notebook("nb.ipynb", "x = 1")
    status, listing = await fetch_json(jp_fetch, "dsops", "runs", params={"path": "nb.ipynb"})
    assert (status, listing) == (200, {"runs": []})


async def test_a_verified_package_of_a_failing_notebook_makes_no_version(
    jp_fetch, repo, write_notebook, git
):
    write_notebook("nb.ipynb", ("a = 1", ["step:load"]), ("b = a / 0", ["step:train"]))
    git(repo, "add", "nb.ipynb")
    git(repo, "commit", "-qm", "nb")
    options = {"verify": True, "build": False, "builder": "dockerfile"}
    status, job = await post_job(
        jp_fetch, {"kind": "package", "path": "nb.ipynb", "options": options}
    )
    assert status == 202, job
    failed = await wait_job(jp_fetch, job["id"])
    assert failed["state"] == "failed" and "ZeroDivisionError" in failed["error"]
    assert failed["options"] == options
    assert failed["steps"]["train"]["state"] == "failed"  # the verifying run's step states
    assert failed["stages"][0]["name"].startswith("Running")
    assert git(repo, "tag", "--list", "dsops/*") == ""
    status, listing = await fetch_json(jp_fetch, "dsops", "versions", params={"path": "nb.ipynb"})
    assert listing == {"versions": []}


async def test_the_executed_notebook_of_a_listed_run_and_nothing_else(
    jp_fetch, repo, write_notebook
):
    write_notebook("nb.ipynb", ("print('total', 6 * 7)", ["step:load"]))
    status, job = await post_job(jp_fetch, {"kind": "run", "path": "nb.ipynb"})
    assert status == 202, job
    assert (await wait_job(jp_fetch, job["id"]))["state"] == "succeeded"
    _status, listing = await fetch_json(jp_fetch, "dsops", "runs", params={"path": "nb.ipynb"})
    [run] = listing["runs"]

    query = {"path": "nb.ipynb", "dir": run["dir"]}
    status, answer = await fetch_json(jp_fetch, "dsops", "runs", "notebook", params=query)
    assert status == 200, answer
    assert (answer["dir"], answer["output_notebook"]) == (run["dir"], run["output_notebook"])
    on_disk = json.loads((repo / run["output_notebook"]).read_text())
    assert answer["content"] == nbformat.read(repo / run["output_notebook"], as_version=4)
    outputs = [o.get("text", "") for c in answer["content"]["cells"] for o in c.get("outputs", [])]
    assert any("total 42" in "".join(text) for text in outputs), outputs

    (repo / "secret.ipynb").write_text(json.dumps(on_disk))
    for other in (".", "..", "/tmp", run["dir"] + "/..", ".dsops/runs/nb", "secret.ipynb"):
        status, error = await fetch_json(
            jp_fetch, "dsops", "runs", "notebook", params={"path": "nb.ipynb", "dir": other}
        )
        assert_error(status, error, 404, "no run")
    status, error = await fetch_json(
        jp_fetch, "dsops", "runs", "notebook", params={"path": "nb.ipynb"}
    )
    assert_error(status, error, 400, "missing 'dir'")

    record = repo / run["dir"] / "run.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "output_notebook": str(repo / "secret.ipynb")}))
    status, error = await fetch_json(jp_fetch, "dsops", "runs", "notebook", params=query)
    assert_error(status, error, 403, "outside its folder")
