"""DsopsExtension settings are ordinary Jupyter config (traitlets): a swapped job store and a
smaller body limit take effect on a real server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dsops_jupyter.server.store import JobStore
from tests.server.test_handlers import assert_error, post_job, wait_job


class RecordingStore(JobStore):
    """Keeps records in a class-level dict, as a database-backed store would keep them."""

    records: dict[str, dict[str, Any]] = {}

    def save(self, record: dict[str, Any]) -> None:
        RecordingStore.records[record["id"]] = json.loads(json.dumps(record))


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"dsops_jupyter": True}},
        "DsopsExtension": {
            "job_store_class": f"{__name__}.RecordingStore",
            "max_request_bytes": 200,
        },
    }


async def test_a_configured_store_and_limit_are_used(jp_fetch, jp_root_dir, write_notebook):
    write_notebook("tiny.ipynb", "x = 1")
    status, job = await post_job(jp_fetch, {"kind": "run", "path": "tiny.ipynb"})
    assert status == 202, job
    job = await wait_job(jp_fetch, job["id"])
    assert job["state"] == "succeeded", job["error"]
    assert RecordingStore.records[job["id"]]["state"] == "succeeded"
    assert not (jp_root_dir / ".dsops" / "jobs").exists()  # the default file store was not used

    body = {"kind": "run", "path": "tiny.ipynb", "options": {"parameters": {"x": "y" * 300}}}
    status, reply = await post_job(jp_fetch, body)
    assert_error(status, reply, 413, "over the 200 limit")
