"""End to end in a real JupyterLab driven by Debian's Chromium (Playwright).

A real `jupyter lab` serves a temporary Git repository holding examples/wine.ipynb. The test
marks a cell as a new step from the cell context menu, checks its badge, packages the notebook
with the toolbar button and checks on disk that the new version (commit + tag) and the generated
script exist. It relies on the installed (or `jupyter labextension develop`-linked) frontend:
it fails with the command to run when that is missing, it never builds it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import copy_example, git, init_repo

pytestmark = pytest.mark.browser

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
#: Cell 11 of wine.ipynb (scaling) continues step `features`; the test makes it step `scale`.
NEW_STEP_CELL = 11
NEW_STEP = "scale"
PACKAGE_TIMEOUT_MS = 6 * 60_000


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    log: Path


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


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real JupyterLab on a fresh Git repository holding wine.ipynb."""
    if not labextension_installed():
        pytest.fail(INSTALL_HINT)
    base = tmp_path_factory.mktemp("lab")
    root = base / "project"
    copy_example("wine.ipynb", root)
    init_repo(root)
    write_lab_settings(base / "settings")
    token, port = secrets.token_hex(16), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
        "GIT_AUTHOR_NAME": "Browser Test",
        "GIT_AUTHOR_EMAIL": "browser@example.com",
        "GIT_COMMITTER_NAME": "Browser Test",
        "GIT_COMMITTER_EMAIL": "browser@example.com",
    }
    log = base / "jupyter-lab.log"
    command = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
        "--allow-root", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}", "--ServerApp.jpserver_extensions={'dsops_jupyter': True}",
        f"--LabApp.user_settings_dir={base / 'settings'}",
        f"--LabApp.workspaces_dir={base / 'workspaces'}", "--LabApp.extension_manager=readonly",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_status(url, token, process, log)
        yield Lab(url=url, token=token, root=root, log=log)
    finally:
        stop(process)


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(30_000)
    yield opened
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        opened.screenshot(path=str(ARTIFACTS / f"{request.node.name}-failure.png"))
    context.close()


def cell(page: Page, index: int):
    return page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(index)


def open_notebook(page: Page, lab: Lab) -> None:
    page.goto(f"{lab.url}lab/tree/wine.ipynb?token={lab.token}")
    expect(page.locator("[data-testid=dsops-package-button]")).to_be_visible(timeout=60_000)
    expect(page.locator(".jp-Cell[data-dsops-step=load] [data-testid=dsops-badge]")).to_have_text(
        "step: load"
    )
    # Wait for the kernel: saving and packaging while it starts is fine, but the idle
    # indicator makes the screenshots stable.
    indicator = page.locator(".jp-NotebookPanel:visible .jp-Notebook-ExecutionIndicator")
    expect(indicator).to_have_attribute("data-status", "idle", timeout=60_000)


def mark_step_from_context_menu(page: Page, index: int, name: str) -> None:
    target = cell(page, index)
    target.locator(".jp-InputArea-editor").click(button="right")
    page.locator(".lm-Menu-item:visible", has_text="Mark cell as step").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input").fill("2 bad")
    dialog.locator(".jp-mod-accept").click()
    expect(dialog).to_contain_text("not a Python identifier")  # asked again, nothing written
    dialog.locator("input").fill(name)
    dialog.locator(".jp-mod-accept").click()
    expect(dialog).to_have_count(0)
    expect(target.locator("[data-testid=dsops-badge]")).to_have_text(f"step: {name}")
    expect(target).to_have_attribute("data-dsops-step", name)
    target.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "marked-step.png"))


def package_from_toolbar(page: Page) -> dict[str, str]:
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("[data-testid=dsops-package-button]").click()
    form = page.locator("[data-testid=dsops-package-form]")
    expect(form).to_be_visible()
    expect(form.locator("[data-testid=dsops-name]")).to_have_value("wine")
    expect(form.locator("[data-testid=dsops-commit]")).to_be_checked()
    expect(form.locator("[data-testid=dsops-build]")).not_to_be_checked()
    expect(form).to_contain_text(f"features → {NEW_STEP}")
    expect(form.locator("[data-testid=dsops-param-alpha]")).to_have_value("1")
    page.screenshot(path=str(ARTIFACTS / "package-form.png"))
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Package").click()
    job = page.locator("[data-testid=dsops-job]")
    finished = re.compile(r"^(succeeded|failed)$")
    expect(job).to_have_attribute("data-state", finished, timeout=PACKAGE_TIMEOUT_MS)
    if job.get_attribute("data-state") == "failed":
        pytest.fail(f"package job failed: {job.locator('[data-testid=dsops-error]').inner_text()}")
    result = job.locator("[data-testid=dsops-result]")
    return {
        "headline": result.locator("[data-testid=dsops-result-headline]").inner_text(),
        "tag": result.locator("[data-testid=dsops-result-tag]").inner_text(),
        "commit": result.locator("[data-testid=dsops-result-commit]").inner_text(),
    }


def test_mark_step_and_package_notebook(page: Page, lab: Lab) -> None:
    open_notebook(page, lab)
    mark_step_from_context_menu(page, NEW_STEP_CELL, NEW_STEP)

    shown = package_from_toolbar(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "package-result.png"))

    tag = "dsops/wine/v1"
    assert shown["tag"] == tag, shown
    assert shown["headline"] == "Packaged as v1", shown
    # On disk: the notebook was saved with the new tag before packaging...
    saved = nbformat.read(lab.root / "wine.ipynb", as_version=4)
    assert saved.cells[NEW_STEP_CELL].metadata.get("tags") == [f"step:{NEW_STEP}"]
    # ... and the version is a real commit + tag holding the generated package.
    assert git(lab.root, "tag", "--list", "dsops/wine/*").split() == [tag]
    commit = git(lab.root, "rev-parse", f"{tag}^{{commit}}")
    assert commit.startswith(shown["commit"]) and len(shown["commit"]) == 7
    assert git(lab.root, "rev-parse", "HEAD") == commit
    committed = git(lab.root, "ls-tree", "-r", "--name-only", tag).split()
    assert "pipelines/wine/wine.py" in committed
    assert (lab.root / "pipelines" / "wine" / "wine.py").is_file()
    spec = json.loads((lab.root / "pipelines" / "wine" / "pipeline.json").read_text())
    assert NEW_STEP in json.dumps(spec)

    # The link opens the generated script in JupyterLab and closes the dialog.
    page.locator("[data-testid=dsops-open-script]").click()
    expect(page.locator(".jp-Dialog")).to_have_count(0)
    expect(page.locator(".lm-TabBar-tab", has_text="wine.py")).to_be_visible()


def test_unchanged_notebook_keeps_its_version(page: Page, lab: Lab) -> None:
    """Runs after the test above (same server): packaging again makes no new version."""
    assert git(lab.root, "tag", "--list", "dsops/wine/*"), "needs the version made above"
    open_notebook(page, lab)
    before = git(lab.root, "rev-parse", "HEAD")
    shown = package_from_toolbar(page)
    assert shown["headline"] == "unchanged: still dsops/wine/v1", shown
    assert git(lab.root, "rev-parse", "HEAD") == before
    assert git(lab.root, "tag", "--list", "dsops/wine/*").split() == ["dsops/wine/v1"]
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Close").click()


def test_side_panel_lists_steps_and_runs_one(page: Page, lab: Lab) -> None:
    open_notebook(page, lab)
    page.locator(".jp-SideBar.jp-mod-right .lm-TabBar-tab[data-id=dsops-pipeline-panel]").click()
    panel = page.locator("[data-testid=dsops-panel]")
    steps = panel.locator("[data-testid=dsops-step]")
    expect(steps.first).to_be_visible()
    names = [steps.nth(i).get_attribute("data-step") for i in range(steps.count())]
    assert names[0] == "load" and names[-1] == "evaluate", names
    assert names.index("features") < names.index("train"), names
    saved = nbformat.read(lab.root / "wine.ipynb", as_version=4)
    if f"step:{NEW_STEP}" in saved.cells[NEW_STEP_CELL].metadata.get("tags", []):
        assert names.index("features") < names.index(NEW_STEP) < names.index("train"), names
    expect(panel).to_contain_text("alpha")
    steps.nth(1).locator(".dsops-Step-name").click()  # goes to the first cell of `features`
    expect(cell(page, 10)).to_have_class(re.compile(r"\bjp-mod-active\b"))

    panel.locator("[data-testid=dsops-run-load]").click()
    status = panel.locator("[data-step=load] [data-testid=dsops-step-status]")
    done = re.compile(r"^(succeeded|failed)$")
    expect(status).to_have_attribute("data-state", done, timeout=PACKAGE_TIMEOUT_MS)
    assert status.get_attribute("data-state") == "succeeded", status.inner_text()
    expect(status).to_contain_text("succeeded in")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pipeline-panel.png"))


def context_command(page: Page, target, label: str) -> None:
    target.locator(".jp-InputArea-editor").click(button="right")
    page.locator(".lm-Menu-item:visible", has_text=label).click()


def saved_tags(lab: Lab, index: int, expected: list[str]) -> list[str]:
    """The tags of cell `index` on disk, once they equal `expected` (or after 20 s)."""
    deadline = time.monotonic() + 20
    while True:
        notebook = nbformat.read(lab.root / "wine.ipynb", as_version=4)
        tags = notebook.cells[index].metadata.get("tags")
        if tags == expected or time.monotonic() > deadline:
            return tags
        time.sleep(0.25)


def save(page: Page) -> None:
    page.locator(".jp-NotebookPanel:visible .jp-Notebook").press("Control+s")


def test_cell_marker_commands_write_tags(page: Page, lab: Lab) -> None:
    """Clear / parameters / skip from the context menu; ends as it began (tag `skip`)."""
    skip_cell = 13
    open_notebook(page, lab)
    target = cell(page, skip_cell)
    badge = target.locator("[data-testid=dsops-badge]")
    expect(badge).to_have_text("skip")

    context_command(page, target, "Clear marker")
    expect(badge).to_have_count(0)
    expect(target).not_to_have_class(re.compile(r"\bdsops-marked\b"))
    context_command(page, target, "Mark as parameters")
    expect(badge).to_have_text("parameters")
    save(page)
    assert saved_tags(lab, skip_cell, ["parameters"]) == ["parameters"]

    context_command(page, target, "Skip cell")
    expect(badge).to_have_text("skip")
    save(page)
    assert saved_tags(lab, skip_cell, ["skip"]) == ["skip"]

    page.keyboard.press("Control+Shift+c")
    page.locator(".lm-CommandPalette-input").fill("dsops")
    palette = page.locator(".lm-CommandPalette-content")
    for label in ("dsops: Package notebook", "dsops: Mark cell as step…", "dsops: Clear marker"):
        expect(palette).to_contain_text(label)
