"""A real JupyterLab for browser tests: start, restart and stop one; open a notebook in it.

Shared by every browser test module. A test module makes its own project folder (a Git
repository with the notebooks it needs) and starts a LabServer on it; `page` fixtures come
from conftest.py. The frontend must be installed (or `jupyter labextension develop`-linked):
a missing one fails with the command to run, it is never built here.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "the dsops-jupyter labextension is not installed: run `jlpm install && jlpm build:prod && "
    "jupyter labextension develop --overwrite .` (or `pip install -e .`) in the repository"
)
#: How long a package job (with an image build) may take in a browser test.
PACKAGE_TIMEOUT_MS = 6 * 60_000


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path


@dataclass
class LabServer:
    """A `jupyter lab` serving ``root`` (state under ``base``); ``restart()`` keeps its URL,
    token, settings and root, as a user's restarted server would."""

    base: Path
    root: Path
    env: dict[str, str] = field(default_factory=dict)
    lab: Lab | None = None
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Lab:
        if not labextension_installed():
            pytest.fail(INSTALL_HINT)
        write_lab_settings(self.base / "settings")
        token = self.lab.token if self.lab else secrets.token_hex(16)
        port = int(self.lab.url.rsplit(":", 1)[1].strip("/")) if self.lab else free_port()
        log = self.base / "jupyter-lab.log"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self._command(port, token),
                cwd=self.root,
                env=self._environment(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.lab = Lab(url=f"http://127.0.0.1:{port}/", token=token, root=self.root, log=log)
        wait_for_status(self.lab.url, token, self.process, log)
        return self.lab

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def __enter__(self) -> LabServer:
        """``with LabServer(...) as server``: started, and stopped on leaving (a failed start
        too: its process may be up without answering)."""
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def restart(self) -> Lab:
        self.stop()
        return self.start()

    def _command(self, port: int, token: str) -> list[str]:
        return [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
            "--allow-root", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.jpserver_extensions={'dsops_jupyter': True}",
            f"--LabApp.user_settings_dir={self.base / 'settings'}",
            f"--LabApp.workspaces_dir={self.base / 'workspaces'}",
            "--LabApp.extension_manager=readonly",
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": path,
            "JUPYTER_RUNTIME_DIR": str(self.base / "runtime"),
            "GIT_AUTHOR_NAME": "Browser Test",
            "GIT_AUTHOR_EMAIL": "browser@example.com",
            "GIT_COMMITTER_NAME": "Browser Test",
            "GIT_COMMITTER_EMAIL": "browser@example.com",
            **self.env,
        }


def labextension_installed() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).splitlines()
    version = json.loads((REPO_ROOT / "package.json").read_text(encoding="utf-8"))["version"]
    listed = f"dsops-jupyter v{version}"
    return any(listed in ln and "enabled" in ln and "OK" in ln for ln in lines)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_status(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /api/status until the server answers; fail early if the process died."""
    deadline = time.monotonic() + 90
    headers = {"Authorization": f"token {token}"}
    request = urllib.request.Request(f"{url}api/status", headers=headers)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer /api/status in 90 s:\n{log.read_text()[-3000:]}")


def write_lab_settings(settings_dir: Path) -> None:
    """No news toast over the screenshot: the notification plugin must not ask about news."""
    folder = settings_dir / "@jupyterlab" / "apputils-extension"
    target = folder / "notification.jupyterlab-settings"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server we started and its kernels (its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def api(lab: Lab, route: str, method: str = "GET", body: object = None) -> object:
    """Call a server route as the frontend would (token auth); the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{lab.url}{route}",
        data=data,
        method=method,
        headers={"Authorization": f"token {lab.token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


def cell(page: Page, index: int):
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)


def open_notebook(
    page: Page, lab: Lab, notebook: str = "wine.ipynb", wait_kernel: bool = True
) -> None:
    """Open ``notebook`` alone and wait for the toolbar button (and the idle kernel).

    ``reset`` drops the saved layout: tabs an earlier test opened would otherwise come back
    behind this one, and a locator's ``.first`` could pick their hidden copies.
    """
    page.goto(f"{lab.url}lab/tree/{notebook}?reset&token={lab.token}")
    expect(page.locator("[data-testid=dsops-package-button]")).to_be_visible(timeout=60_000)
    if wait_kernel:
        indicator = page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")
        expect(indicator).to_have_attribute("data-status", "idle", timeout=60_000)


def open_panel(page: Page):
    """Show the dsops side panel; its locator."""
    page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id=dsops-pipeline-panel]").click()
    panel = page.locator("[data-testid=dsops-panel]")
    expect(panel).to_be_visible()
    return panel


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot as a test artifact (test-artifacts/NAME.png)."""
    ARTIFACTS.mkdir(exist_ok=True)
    target = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(target))
    return target
