"""The /dsops REST routes on a real Jupyter server (pytest-jupyter), real Git, real kernels."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from dsops_jupyter.model import PackageResult

FINISHED = ("succeeded", "failed", "cancelled")
#: Package jobs build an image by default, as `dsops package` does; these tests have no engine.
NO_BUILD = {"build": False}


async def fetch_json(jp_fetch, *parts: str, **kwargs: Any) -> tuple[int, Any]:
    """(status, parsed body) for success and error answers alike."""
    try:
        response = await jp_fetch(*parts, **kwargs)
    except HTTPClientError as err:
        assert err.response is not None, err
        response = err.response
    assert response.headers["Content-Type"].startswith("application/json"), response.body
    return response.code, json.loads(response.body)


async def post_job(jp_fetch, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return await fetch_json(jp_fetch, "dsops", "jobs", method="POST", body=raw)


async def wait_job(jp_fetch, job_id: str, timeout: float = 300) -> dict[str, Any]:
    """Poll GET /dsops/jobs/<id> like the frontend does, until the job is finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, job = await fetch_json(jp_fetch, "dsops", "jobs", job_id)
        assert status == 200, job
        assert 0.0 <= job["progress"] <= 1.0
        if job["state"] in FINISHED:
            return job
        await asyncio.sleep(0.3)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s: {job['log']}")


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    assert status == expected, body
    assert set(body) == {"error"}, body
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for word in words:
        assert word in body["error"], body


# --- auth and paths ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "parts", "body"),
    [
        ("GET", ("dsops", "jobs"), None),
        ("GET", ("dsops", "pipeline"), None),
        ("GET", ("dsops", "jobs", "abc123"), None),
        ("POST", ("dsops", "jobs"), json.dumps({"kind": "run", "path": "a.ipynb"})),
    ],
)
async def test_unauthenticated_requests_are_refused(jp_fetch, method, parts, body):
    status, reply = await fetch_json(
        jp_fetch, *parts, method=method, body=body, headers={"Authorization": ""}
    )
    assert status == 403, reply
    assert "error" in reply


@pytest.mark.parametrize(
    "path", ["../outside.ipynb", "examples/../../outside.ipynb", "/etc/hostname", "link/x.ipynb"]
)
async def test_paths_outside_the_root_are_refused(jp_fetch, jp_root_dir, tmp_path, path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.ipynb").write_text("{}")
    (jp_root_dir / "link").symlink_to(outside, target_is_directory=True)
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": path})
    assert_error(status, reply, 403, "outside the server root")
    status, reply = await post_job(jp_fetch, {"kind": "package", "path": path})
    assert_error(status, reply, 403, "outside the server root")


async def test_missing_notebook_is_404(jp_fetch, jp_root_dir):
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "no.ipynb"})
    assert_error(status, reply, 404, "no.ipynb")


async def test_missing_path_is_400(jp_fetch):
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline")
    assert_error(status, reply, 400, "path")


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("{not json", ("not valid JSON",)),
        ("[1, 2]", ("JSON object",)),
        ({"kind": "deploy", "path": "examples/wine.ipynb"}, ("unknown job kind", "deploy")),
        ({"path": "examples/wine.ipynb"}, ("unknown job kind",)),
        ({"kind": "run"}, ("missing 'path'",)),
        ({"kind": "run", "path": 3}, ("missing 'path'",)),
        ({"kind": "package", "path": "examples/wine.ipynb", "options": []}, ("'options'",)),
        (
            {"kind": "package", "path": "examples/wine.ipynb", "options": {"build": "yes"}},
            ("'build'", "bool"),
        ),
        (
            {"kind": "run", "path": "examples/wine.ipynb", "options": {"steps": "train"}},
            ("'steps'", "list"),
        ),
        (
            {"kind": "run", "path": "examples/wine.ipynb", "options": {"steps": [1]}},
            ("'steps'",),
        ),
        (
            {"kind": "run", "path": "examples/wine.ipynb", "options": {"parameters": [1]}},
            ("'parameters'", "dict"),
        ),
        (
            {"kind": "run", "path": "examples/wine.ipynb", "options": {"colour": "red"}},
            ("unknown option", "colour"),
        ),
    ],
)
async def test_bad_job_requests_are_400_with_json(jp_fetch, repo, body, words):
    status, reply = await post_job(jp_fetch, body)
    assert_error(status, reply, 400, *words)
    status, jobs = await fetch_json(jp_fetch, "dsops", "jobs")
    assert jobs == {"jobs": []}


async def test_unknown_job_is_404(jp_fetch):
    status, reply = await fetch_json(jp_fetch, "dsops", "jobs", "0123abcd")
    assert_error(status, reply, 404, "0123abcd")


async def test_unknown_route_method_is_json(jp_fetch):
    status, reply = await fetch_json(jp_fetch, "dsops", "versions", method="POST", body="{}")
    assert status == 405
    assert set(reply) == {"error"}


# --- pipeline ----------------------------------------------------------------------------------
async def test_pipeline_returns_the_steps(jp_fetch, repo):
    status, data = await fetch_json(
        jp_fetch, "dsops", "pipeline", params={"path": "examples/wine.ipynb"}
    )
    assert status == 200, data
    assert data["name"] == "wine"
    assert data["notebook"] == "examples/wine.ipynb"
    assert data["output_dir"] == "pipelines/wine"
    assert [s["name"] for s in data["steps"]] == ["load", "features", "train", "evaluate"]
    train = next(s for s in data["steps"] if s["name"] == "train")
    assert train["after"] == ["features"]
    assert {"name", "cells", "after", "depends_on", "reads", "writes"} <= set(train)
    params = {p["name"]: p for p in data["parameters"]}
    assert params["alpha"] == {"name": "alpha", "type": "float", "default": 1.0}
    assert params["seed"]["type"] == "int"
    assert isinstance(data["content_hash"], str) and data["content_hash"]


async def test_pipeline_marks_steps_fresh_or_stale(jp_fetch, repo, write_notebook):
    from dsops_jupyter import cache
    from dsops_jupyter.notebook import read_pipeline
    from dsops_jupyter.runtime import artifacts

    path = write_notebook("two.ipynb", ("a = 41 + 1", ["step:load"]), ("b = a", ["step:use"]))
    pipeline, store = read_pipeline(path), cache.open_cache(path)
    workdir = repo / "work"
    found = cache.workdir_key(pipeline, "load", {}, workdir, {})
    assert found is not None
    artifacts.save(workdir, "a", 42, "load")  # what step load computes
    store.store(found[0], "load", workdir, ["a"], found[1])
    status, data = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "two.ipynb"})
    assert status == 200, data
    states = {s["name"]: s["state"] for s in data["steps"]}
    assert states["load"]["fresh"] and states["load"]["reasons"] == []
    assert not states["use"]["fresh"] and states["use"]["reasons"] == ["never run"]


async def test_pipeline_marker_error_is_400(jp_fetch, repo, write_notebook):
    write_notebook("bad.ipynb", ("a = 1", ["step:load"]), ("b = 2", ["step:fit", "prev:loda"]))
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "bad.ipynb"})
    assert_error(status, reply, 400, "loda")


# --- jobs --------------------------------------------------------------------------------------
async def test_package_job_commits_and_tags(jp_fetch, repo, git):
    status, job = await post_job(
        jp_fetch, {"kind": "package", "path": "examples/wine.ipynb", "options": NO_BUILD}
    )
    assert status == 202, job
    assert job["state"] == "queued"
    assert job["kind"] == "package" and job["path"] == "examples/wine.ipynb"
    assert job["finished"] is None and job["error"] is None and job["result"] is None

    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job
    assert job["progress"] == 1.0
    assert job["log"], "the core's log lines are kept"
    result = job["result"]
    assert set(result) == set(PackageResult(None, False, Path(), Path()).to_json())
    assert result["created"] is True
    version = result["version"]
    assert version["number"] == 1 and version["name"] == "wine"
    assert version["tag"] == "dsops/wine/v1"
    assert result["package_dir"] == "pipelines/wine"
    assert result["script"] == "pipelines/wine/wine.py"
    assert result["image"] is None and result["smoke"] is None
    assert (repo / result["script"]).is_file()
    assert git(repo, "tag", "--list", "dsops/*").splitlines() == ["dsops/wine/v1"]
    assert git(repo, "rev-parse", "dsops/wine/v1^{commit}") == version["commit"]
    assert version["commit"].startswith(version["short"]) and len(version["commit"]) == 40
    assert git(repo, "status", "--porcelain") == ""

    # Unchanged notebook: no new version.
    status, again = await post_job(
        jp_fetch, {"kind": "package", "path": "examples/wine.ipynb", "options": NO_BUILD}
    )
    again = await wait_job(jp_fetch, again["id"])
    assert again["state"] == "succeeded", again
    assert again["result"]["created"] is False
    assert again["result"]["version"]["tag"] == "dsops/wine/v1"
    assert git(repo, "tag", "--list", "dsops/*").splitlines() == ["dsops/wine/v1"]

    status, listing = await fetch_json(jp_fetch, "dsops", "jobs")
    assert [j["id"] for j in listing["jobs"]] == [again["id"], job["id"]]


async def test_failed_job_reports_one_line(jp_fetch, jp_root_dir, write_notebook):
    """Not a Git repository: the package job fails with the core's one-line message."""
    write_notebook("plain.ipynb", ("x = 1", ["step:one"]))
    body = {"kind": "package", "path": "plain.ipynb", "options": NO_BUILD}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "failed"
    assert job["error"] and "\n" not in job["error"] and "internal error" not in job["error"]
    assert job["result"] is None and job["finished"] is not None


async def test_same_notebook_twice_is_409_other_notebook_runs(jp_fetch, repo, write_notebook):
    write_notebook("slow.ipynb", "import time\ntime.sleep(4)\nx = 1")
    write_notebook("other.ipynb", "y = 2")
    status, first = await post_job(jp_fetch, {"kind": "run", "path": "slow.ipynb"})
    assert status == 202, first
    status, reply = await post_job(jp_fetch, {"kind": "package", "path": "slow.ipynb"})
    assert status == 409 and "a job is already working on slow.ipynb" in reply["error"]
    assert reply["job"]["id"] == first["id"]  # the busy answer names the active job
    status, other = await post_job(jp_fetch, {"kind": "run", "path": "other.ipynb"})
    assert status == 202, other

    other = await wait_job(jp_fetch, other["id"])
    assert other["state"] == "succeeded", other
    status, now = await fetch_json(jp_fetch, "dsops", "jobs", first["id"])
    assert now["state"] == "running", "two notebooks run at once"

    first = await wait_job(jp_fetch, first["id"])
    assert first["state"] == "succeeded", first
    run = first["result"]
    assert run["status"] == "succeeded"
    assert not os.path.isabs(run["output_notebook"])
    assert (repo / run["output_notebook"]).is_file()
    # Finished: the notebook is free again.
    status, third = await post_job(jp_fetch, {"kind": "run", "path": "slow.ipynb"})
    assert status == 202, third
    await wait_job(jp_fetch, third["id"])


async def test_run_job_with_parameters_and_steps(jp_fetch, repo):
    status, job = await post_job(
        jp_fetch,
        {
            "kind": "run",
            "path": "examples/wine.ipynb",
            "options": {"parameters": {"alpha": 0.5}, "steps": ["load"]},
        },
    )
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job
    names = [s["name"] for s in job["result"]["steps"]]
    assert "load" in names and "evaluate" not in names


async def test_bad_parameter_value_fails_the_job(jp_fetch, repo):
    status, job = await post_job(
        jp_fetch,
        {"kind": "run", "path": "examples/wine.ipynb", "options": {"parameters": {"seed": "x"}}},
    )
    if status == 202:
        job = await wait_job(jp_fetch, job["id"])
        assert job["state"] == "failed" and "seed" in job["error"]
    else:
        assert_error(status, job, 400, "seed")


def test_root_dir_is_resolved(jp_serverapp, jp_root_dir: Path):
    settings = jp_serverapp.web_app.settings
    assert settings["dsops_root"] == jp_root_dir.resolve()


# --- a kernel started for a notebook session knows its notebook ---------------------------------
async def test_session_kernel_magic_finds_its_notebook(jp_fetch, jp_serverapp, repo):
    """JupyterLab starts kernels through /api/sessions; `%dsops steps` in such a kernel finds
    the notebook from the session (JPY_SESSION_NAME), with no configuration."""
    body = {
        "path": "examples/wine.ipynb",
        "name": "wine.ipynb",
        "type": "notebook",
        "kernel": {"name": "python3"},
    }
    status, session = await fetch_json(
        jp_fetch, "api", "sessions", method="POST", body=json.dumps(body)
    )
    assert status == 201, session
    manager = jp_serverapp.kernel_manager.get_kernel(session["kernel"]["id"])
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        outputs: list[str] = []

        def hook(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                outputs.append(content["text"])
            elif msg["msg_type"] == "error":
                outputs.append(f"{content['ename']}: {content['evalue']}")

        reply = await client.execute_interactive(
            "%load_ext dsops_jupyter\n%dsops steps", output_hook=hook, timeout=60
        )
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")
    text = "".join(outputs)
    assert reply["content"]["status"] == "ok", text
    assert text.startswith("wine: 4 step(s)"), text


@pytest.mark.docker
async def test_package_job_builds_and_smoke_runs_the_image(
    jp_fetch, repo, git, write_notebook, docker_base_image
):
    """build + smoke on the test's private Docker engine: the image and the smoke run come
    back in the job result, with progress through every stage."""
    (repo / "pyproject.toml").write_text(f'[tool.dsops]\nbase-image = "{docker_base_image}"\n')
    write_notebook(
        "tiny.ipynb",
        ("n: int = 3", ["parameters"]),
        ("total = sum(range(n))", ["step:compute"]),
        ("print('total', total)", ["step:report"]),
    )
    git(repo, "add", "pyproject.toml", "tiny.ipynb")
    git(repo, "commit", "-q", "-m", "tiny")
    status, job = await post_job(
        jp_fetch,
        {
            "kind": "package",
            "path": "tiny.ipynb",
            "options": {"build": True, "smoke": True, "parameters": {"n": 5}},
        },
    )
    assert status == 202, job
    seen = set()
    deadline = time.monotonic() + 900
    while job["state"] not in FINISHED and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        _, job = await fetch_json(jp_fetch, "dsops", "jobs", job["id"])
        seen.add(job["stage"])
    assert job["state"] == "succeeded", (job["error"], job["log"][-20:])
    assert any(s.startswith("Building image") for s in seen) or any(
        line.startswith("== Building image") for line in job["log"]
    )
    result = job["result"]
    assert result["version"]["tag"] == "dsops/tiny/v1"
    image = result["image"]
    assert image["id"].startswith("sha256:")
    assert "tiny:v1" in image["tags"]
    assert image["size"] > 0
    smoke = result["smoke"]
    assert smoke["exit_code"] == 0, smoke
    assert any("total 10" in line for line in smoke["log"]), smoke["log"]  # n=5 baked in


# --- limits: request bodies, echoed values, job records ----------------------------------------
async def test_a_body_over_the_limit_is_413_and_starts_nothing(jp_fetch, repo):
    body = {"kind": "run", "path": "examples/wine.ipynb"}
    body["options"] = {"parameters": {"output_dir": "x" * 1_100_000}}
    status, reply = await post_job(jp_fetch, body)
    assert_error(status, reply, 413, "limit")
    assert len(reply["error"]) < 200
    status, jobs = await fetch_json(jp_fetch, "dsops", "jobs")
    assert jobs == {"jobs": []}


async def test_values_echoed_in_errors_are_cut_short(jp_fetch, repo):
    huge = "y" * 500_000
    body = {"kind": "package", "path": "examples/wine.ipynb", "options": {"build": huge}}
    status, reply = await post_job(jp_fetch, body)
    assert_error(status, reply, 400, "'build'", "more characters")
    assert len(reply["error"]) < 2_000
    status, reply = await post_job(jp_fetch, {"kind": huge, "path": "examples/wine.ipynb"})
    assert_error(status, reply, 400, "unknown job kind")
    assert len(reply["error"]) < 2_000


async def test_job_records_stay_small(jp_fetch, repo, write_notebook):
    """A near-limit parameter value and a cell printing thousands of lines: the record keeps
    the last log lines and cut values, so listing jobs stays cheap."""
    write_notebook(
        "chatty.ipynb",
        ('text: str = ""', ["parameters"]),
        "for i in range(5000):\n    print('line', i)\nprint(len(text))",
    )
    body = {"kind": "run", "path": "chatty.ipynb"}
    body["options"] = {"parameters": {"text": "z" * 900_000}}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job["error"]
    assert "900000" in job["log"][-3:], job["log"][-3:]  # the kernel got the whole value
    assert "line 4999" in job["log"] and "line 0" not in job["log"]
    assert job["log"][0].startswith("[") and "earlier lines not kept" in job["log"][0]
    assert job["result"]["parameters"]["text"].endswith("more characters)")
    response = await jp_fetch("dsops", "jobs")
    assert len(response.body) < 100_000, len(response.body)


# --- input the server cannot parse: 400, one line, never 500 -----------------------------
async def test_deeply_nested_bodies_are_400(jp_fetch, repo):
    nested = "[" * 100_000 + "]" * 100_000
    raw = '{"kind": "run", "path": "examples/wine.ipynb", "options": {"parameters": {"a": %s}}}'
    status, reply = await post_job(jp_fetch, raw % nested)
    assert_error(status, reply, 400, "nested too deeply")
    status, reply = await post_job(jp_fetch, raw % ("[" * 100 + "]" * 100))
    assert_error(status, reply, 400, '"a"', "nested over 32 levels")


async def test_a_very_long_path_is_400(jp_fetch, repo):
    path = "d/" * 2_500 + "x.ipynb"
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": path})
    assert_error(status, reply, 400, "too long")
    assert len(reply["error"]) < 2_000
    status, reply = await post_job(jp_fetch, {"kind": "package", "path": path})
    assert_error(status, reply, 400, "too long")


async def test_unknown_after_marker_is_400(jp_fetch, repo, write_notebook):
    write_notebook("after.ipynb", ("a = 1", ["step:load", "after:prepare"]))
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "after.ipynb"})
    assert_error(status, reply, 400, "after:prepare")


# --- writes are confined like reads ----------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "link"),
    [("package", "pipelines"), ("package", "pipelines/wine"), ("run", ".dsops/runs")],
)
async def test_a_symlinked_output_folder_outside_the_root_is_refused(
    jp_fetch, repo, tmp_path, kind, link
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (repo / link).parent.mkdir(parents=True, exist_ok=True)
    (repo / link).symlink_to(outside, target_is_directory=True)
    status, reply = await post_job(jp_fetch, {"kind": kind, "path": "examples/wine.ipynb"})
    assert_error(status, reply, 403, "outside the server root", link)
    assert list(outside.iterdir()) == []
    status, jobs = await fetch_json(jp_fetch, "dsops", "jobs")
    assert jobs == {"jobs": []}


def test_the_job_process_checks_the_writes_again(repo, tmp_path):
    """A symlink made after the job was accepted is refused too, before the core writes."""
    from dsops_jupyter.server.paths import OutsideRootError
    from dsops_jupyter.server.worker import run_job

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (repo / "pipelines").symlink_to(outside, target_is_directory=True)
    job = {
        "kind": "package",
        "notebook": str(repo / "examples" / "wine.ipynb"),
        "root": str(repo),
        "options": NO_BUILD,
    }
    with pytest.raises(OutsideRootError, match="outside the server root"):
        run_job(job, lambda _event: None)
    assert list(outside.iterdir()) == []


# --- force: the way out of a hand-edit refusal ------------------------------------------------
async def test_force_overwrites_hand_edits_like_the_cli(jp_fetch, repo, git):
    package = {"kind": "package", "path": "examples/wine.ipynb", "options": NO_BUILD}
    first = await wait_job(jp_fetch, (await post_job(jp_fetch, package))[1]["id"])
    assert first["state"] == "succeeded", first["error"]
    script = repo / first["result"]["script"]
    generated = script.read_text()
    script.write_text(generated + "# my fix\n")

    refused = await wait_job(jp_fetch, (await post_job(jp_fetch, package))[1]["id"])
    assert refused["state"] == "failed" and "by hand" in refused["error"], refused
    assert script.read_text().endswith("# my fix\n")

    forced = {**package, "options": {**NO_BUILD, "force": True}}
    status, job = await post_job(jp_fetch, forced)
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job["error"]
    assert script.read_text() == generated
    assert job["result"]["version"]["tag"] == "dsops/wine/v1"
    status, reply = await post_job(jp_fetch, {**package, "options": {"force": "yes"}})
    assert_error(status, reply, 400, "'force'", "bool")


MALFORMED_CELLS = {
    "cell metadata as a list": {"metadata": []},
    "cell metadata null": {"metadata": None},
    "tags null": {"metadata": {"tags": None}},
    "source as a list of ints": {"source": [1, 2]},
    "a 3,000-term expression": {"source": "x = " + "1 + " * 3_000 + "1"},
}


@pytest.mark.parametrize("case", [*MALFORMED_CELLS, "kernelspec null", "nested JSON"])
async def test_malformed_notebooks_answer_like_the_core(jp_fetch, jp_root_dir, case):
    """Whatever the core raises as a DsopsError is that status with its one line; anything else
    is a bug in dsops: 500 with a generic line (logged, never sent as a traceback)."""
    from dsops_jupyter.errors import DsopsError
    from dsops_jupyter.notebook import read_pipeline

    cell = {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []}
    cell.update(MALFORMED_CELLS.get(case, {}))
    kernelspec = None if case == "kernelspec null" else {"name": "python3", "display_name": "P"}
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {"kernelspec": kernelspec}}
    text = json.dumps({**nb, "cells": [{**cell, "execution_count": None}]})
    if case == "nested JSON":
        text = '{"cells": ' + "[" * 5_000 + "]" * 5_000 + "}"
    path = jp_root_dir / "bad.ipynb"
    path.write_text(text, encoding="utf-8")
    try:
        read_pipeline(path)
        expected = (200, None)
    except DsopsError as err:
        expected = (err.http_status, str(err))
    except Exception:
        expected = (500, "internal error in dsops; see the Jupyter server log")
    status, reply = await fetch_json(jp_fetch, "dsops", "pipeline", params={"path": "bad.ipynb"})
    assert status == expected[0], reply
    if expected[1] is not None:
        assert_error(status, reply, status, expected[1])


async def test_files_in_the_root_do_not_shadow_the_job_process_modules(
    jp_fetch, jp_root_dir, write_notebook
):
    """The job process imports papermill, git, docker...: a user's papermill.py beside the
    notebooks must not be what it imports."""
    (jp_root_dir / "papermill.py").write_text("raise ImportError('the user module was imported')")
    write_notebook("plain.ipynb", "x = 1")
    status, job = await post_job(jp_fetch, {"kind": "run", "path": "plain.ipynb"})
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job["error"]
