"""A real `jupyter server` process stopped while a job runs: bounded shutdown, no job left
running, and after a restart the job is listed as interrupted (records live on disk)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import git, init_repo, make_notebook

TOKEN = "dsops-shutdown-test"
#: DsopsExtension.stop_timeout (10 s) plus the server's own cleanup; the job sleeps 300 s.
EXIT_BOUND = 20.0


class Server:
    """One `jupyter server` process on ``root``, spoken to over HTTP with a token."""

    def __init__(self, root: Path, home: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        config = home / "config"
        config.mkdir(parents=True, exist_ok=True)
        extensions = {"ServerApp": {"jpserver_extensions": {"dsops_jupyter": True}}}
        (config / "jupyter_server_config.json").write_text(json.dumps(extensions))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        }
        self.log = open(home / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "jupyter", "server", "--allow-root", "--no-browser"),
                f"--port={self.port}",
                f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={root}",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def request(self, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            headers={"Authorization": f"token {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the server exited at start"
            try:
                if self.request("/api/status")[0] == 200:
                    return
            except (OSError, ValueError):
                time.sleep(0.2)
        raise AssertionError("the server did not answer within 60 s")

    def stop(self, sig: int) -> float:
        """Send ``sig``; the seconds until the process exited (killed past EXIT_BOUND * 2)."""
        start = time.monotonic()
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=EXIT_BOUND * 2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        return time.monotonic() - start


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.stop(signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_server_stops_its_jobs_and_lists_them_as_interrupted(
    tmp_path: Path, servers: list[Server], sig: int
) -> None:
    root = tmp_path / "root"
    make_notebook(
        root / "slow.ipynb",
        [
            "import os\nopen('kernel.pid', 'w').write(str(os.getpid()))\nprint('started')",
            "import time\ntime.sleep(300)",
        ],
    )
    init_repo(root)
    servers.append(Server(root, tmp_path / "home"))
    status, job = servers[0].request("/dsops/jobs", {"kind": "run", "path": "slow.ipynb"})
    assert status == 202, job

    def started() -> bool:
        return "started" in servers[0].request(f"/dsops/jobs/{job['id']}")[1]["log"]

    wait_until(started, 120, "the job's first cell did not run")
    kernel = int((root / "kernel.pid").read_text())
    assert alive(kernel)
    time.sleep(1.5)  # records reach the disk within a second (SAVE_INTERVAL): let that pass

    seconds = servers[0].stop(sig)
    print(f"server exit {seconds:.1f} s after {signal.Signals(sig).name} with a running job")
    assert seconds < EXIT_BOUND, f"the server took {seconds:.1f} s to stop"
    wait_until(lambda: not alive(kernel), 15, "the job's kernel outlived the server")

    servers.append(Server(root, tmp_path / "home"))
    status, listing = servers[1].request("/dsops/jobs")
    assert status == 200, listing
    [again] = listing["jobs"]
    assert again["id"] == job["id"] and again["path"] == "slow.ipynb"
    assert again["state"] == "failed" and again["interrupted"] is True
    assert again["error"].startswith("interrupted: the Jupyter server stopped")
    assert "\n" not in again["error"] and again["finished"] is not None
    assert "started" in again["log"]  # what the job did before is kept
    assert (root / ".dsops" / "jobs" / f"{job['id']}.json").is_file()
    assert ".dsops" not in git(root, "status", "--porcelain", "--ignored=no")
