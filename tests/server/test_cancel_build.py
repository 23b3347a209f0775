"""A package job with an image on the test's private Docker engine: the Versions route shows
the version's image, and a cancel during the gated smoke run leaves no new version."""

from __future__ import annotations

import asyncio
import time

import docker
import pytest

from tests.server.test_handlers import fetch_json, post_job, wait_job


@pytest.mark.docker
async def test_versions_show_images_and_a_cancelled_package_leaves_no_tag(
    jp_fetch, repo, git, write_notebook, docker_base_image
):
    (repo / "pyproject.toml").write_text(f'[tool.dsops]\nbase-image = "{docker_base_image}"\n')
    write_notebook("tiny.ipynb", ("n: int = 3", ["parameters"]), ("print(n)", ["step:report"]))
    git(repo, "add", "pyproject.toml", "tiny.ipynb")
    git(repo, "commit", "-q", "-m", "tiny")
    body = {"kind": "package", "path": "tiny.ipynb", "options": {"build": True}}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    samples = []  # (stage, progress) as the frontend polls them
    deadline = time.monotonic() + 900
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        _status, job = await fetch_json(jp_fetch, "dsops", "jobs", job["id"])
        samples.append((job["stage"], job["progress"]))
    first = job
    assert first["state"] == "succeeded", (first["error"], first["log"][-20:])
    print("first package with image:", [(s["name"], s["duration"]) for s in first["stages"]])
    values = [value for _stage, value in samples]
    assert values == sorted(values) and values[-1] == 1.0
    building = [value for stage, value in samples if stage.startswith("Building")]
    print(f"progress through the build: {building[0]:.2f} .. {building[-1]:.2f}")
    moving = set(value for value in building if value < 0.99)
    assert len(moving) > len(building) / 2, building  # the bar moves through the build
    status, listing = await fetch_json(jp_fetch, "dsops", "versions", params={"path": "tiny.ipynb"})
    [v1] = listing["versions"]
    assert v1["image"] == {"ref": "tiny:v1", "id": first["result"]["image"]["id"]}

    # A code change whose smoke run takes long: cancelled while it runs, before refs move.
    write_notebook(
        "tiny.ipynb",
        ("n: int = 3", ["parameters"]),
        ("import time\ntime.sleep(120)\nprint(n)", ["step:report"]),
    )
    head = git(repo, "rev-parse", "HEAD")
    body = {"kind": "package", "path": "tiny.ipynb", "options": {"build": True, "smoke": True}}
    status, job = await post_job(jp_fetch, body)
    assert status == 202, job
    deadline = time.monotonic() + 600
    while not job["stage"].startswith("Smoke"):
        assert job["state"] in ("queued", "running"), (job["error"], job["log"][-20:])
        assert time.monotonic() < deadline, job["log"][-20:]
        await asyncio.sleep(0.3)
        _status, job = await fetch_json(jp_fetch, "dsops", "jobs", job["id"])
    seen = job["progress"]
    status, _ = await fetch_json(
        jp_fetch, "dsops", "jobs", job["id"], "cancel", method="POST", body=""
    )
    assert status == 202
    ended = await wait_job(jp_fetch, job["id"], timeout=60)
    assert ended["state"] == "cancelled", (ended["error"], ended["log"][-20:])
    assert 0 < seen < 1
    assert git(repo, "tag", "--list", "dsops/tiny/*").split() == ["dsops/tiny/v1"]
    assert git(repo, "rev-parse", "HEAD") == head
    status, listing = await fetch_json(jp_fetch, "dsops", "versions", params={"path": "tiny.ipynb"})
    assert [v["tag"] for v in listing["versions"]] == ["dsops/tiny/v1"]
    running = docker.from_env().containers.list(filters={"status": "running"})
    assert not running, "the smoke run's container outlived the cancel"
