"""The Runs and Versions views, the mark dialog and the jobs list in a real JupyterLab (Chromium).

A real `jupyter lab` serves a Git repository holding wine.ipynb with two versions made by the
CLI (v2 changes a line of code), plus slow.ipynb for a job that a server restart interrupts.
The tests drive the "dsops" menus as a user would and check the views against Git and disk.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from playwright.sync_api import Page, expect

from tests.browser.labkit import (
    PACKAGE_TIMEOUT_MS,
    REPO_ROOT,
    Lab,
    LabServer,
    api,
    cell,
    open_notebook,
    screenshot,
)
from tests.helpers import copy_example, git, init_repo

pytestmark = pytest.mark.browser

OLD_LINE = "model = RidgeClassifier(alpha=alpha)"
NEW_LINE = "model = RidgeClassifier(alpha=alpha, fit_intercept=True)"
TRAIN_CELL = 15
FEATURES_CELL = 10


def dsops_cli(root: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dsops_jupyter", *args],
        cwd=root,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def change_train_code(notebook: Path) -> None:
    nb = nbformat.read(notebook, as_version=4)
    assert OLD_LINE in nb.cells[TRAIN_CELL].source
    nb.cells[TRAIN_CELL].source = nb.cells[TRAIN_CELL].source.replace(OLD_LINE, NEW_LINE)
    nbformat.write(nb, notebook)


def write_slow_notebook(root: Path) -> None:
    """One step that sleeps: a run job still working when the server restarts."""
    nb = nbformat.v4.new_notebook()
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["kernelspec"] = kernel
    nb.cells = [nbformat.v4.new_code_cell("import time\ntime.sleep(120)")]
    nb.cells[0].metadata["tags"] = ["step:nap"]
    nbformat.write(nb, root / "slow.ipynb")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabServer]:
    """wine.ipynb with versions v1 and v2 (a code change), slow.ipynb; a running JupyterLab."""
    base = tmp_path_factory.mktemp("views")
    root = base / "project"
    copy_example("wine.ipynb", root)
    write_slow_notebook(root)
    # JupyterLab's contents API hides dot folders (.dsops/runs by default): a visible runs-dir.
    (root / "pyproject.toml").write_text('[tool.dsops]\nruns-dir = "runs"\n')
    init_repo(root)
    dsops_cli(root, "package", "--no-build", "wine.ipynb")
    change_train_code(root / "wine.ipynb")
    git(root, "commit", "-qam", "train: fit the intercept")
    dsops_cli(root, "package", "--no-build", "wine.ipynb")
    assert git(root, "tag", "--list", "dsops/wine/*").split() == ["dsops/wine/v1", "dsops/wine/v2"]
    with LabServer(base, root) as lab_server:
        yield lab_server


@pytest.fixture(scope="module")
def lab(server: LabServer) -> Lab:
    assert server.lab is not None
    return server.lab


def saved_tags(notebook: Path, index: int, expected: list[str]) -> list[str] | None:
    """The tags of cell `index` on disk once they equal `expected` (or after 20 s)."""
    deadline = time.monotonic() + 20
    tags = None
    while time.monotonic() < deadline:
        try:  # JupyterLab may be writing the file right now
            tags = nbformat.read(notebook, as_version=4).cells[index].metadata.get("tags")
        except nbformat.reader.NotJSONError:
            tags = None
        if tags == expected:
            break
        time.sleep(0.25)
    return tags


def main_menu(page: Page, label: str, notebook: str = "wine.ipynb") -> None:
    """Pick `label` in the "dsops" main menu with `notebook` the current one."""
    page.locator(".jp-MainAreaWidget .lm-TabBar-tab, #jp-main-dock-panel .lm-TabBar-tab").filter(
        has_text=re.compile(rf"^{re.escape(notebook)}$")
    ).first.click()
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^dsops$")).click()
    page.locator("#dsops-main-menu .lm-Menu-item", has_text=label).first.click()


def cell_menu(page: Page, target, label: str) -> None:
    """Pick `label` in the cell context menu's "dsops" submenu."""
    target.locator(".jp-InputArea-editor").click(button="right")
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^dsops$")).hover()
    page.locator("#dsops-cell-menu .lm-Menu-item", has_text=label).click()


def wait_job(lab: Lab, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api(lab, f"dsops/jobs/{job_id}")
        assert isinstance(job, dict)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    pytest.fail(f"job {job_id} did not finish in {timeout} s")


def editor_text(page: Page, widget) -> str:
    """Every line of a CodeMirror editor in `widget` (it draws only what is in view: scroll)."""
    seen: list[str] = []
    for _ in range(200):
        for line in widget.locator(".cm-line").all_inner_texts():
            if line not in seen:
                seen.append(line)
        moved = widget.evaluate(
            "node => { const before = node.scrollTop; node.scrollTop += node.clientHeight / 2;"
            " return node.scrollTop !== before; }"
        )
        page.wait_for_timeout(50)
        if not moved:
            return "\n".join(seen)
    return "\n".join(seen)


def test_versions_view_diffs_v1_and_v2_and_opens_v1_read_only(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, wait_kernel=False)
    main_menu(page, "Versions")
    view = page.locator("[data-testid=dsops-versions-view]:visible")
    rows = view.locator("[data-testid=dsops-version]")
    expect(rows).to_have_count(2)
    assert [rows.nth(i).get_attribute("data-tag") for i in range(2)] == [
        "dsops/wine/v2",
        "dsops/wine/v1",
    ]
    commit = git(lab.root, "rev-parse", "--short=7", "dsops/wine/v1^{commit}")
    expect(rows.nth(1)).to_contain_text(commit)
    expect(view.locator("[data-testid=dsops-side-a-v1]")).to_be_checked()
    expect(view.locator("[data-testid=dsops-side-b-v2]")).to_be_checked()
    screenshot(page, "versions-view")

    view.locator("[data-testid=dsops-diff]").click()
    diff = page.locator("[data-testid=dsops-diff-view]:visible")
    merge = diff.locator(".cm-mergeView")
    expect(merge).to_be_visible()
    sides = merge.locator(".cm-editor")
    expect(sides).to_have_count(2)
    old_changed = sides.nth(0).locator(".cm-changedLine", has_text=OLD_LINE)
    new_changed = sides.nth(1).locator(".cm-changedLine", has_text=NEW_LINE)
    expect(old_changed).to_have_count(1)
    expect(new_changed).to_have_count(1)
    expect(page.locator(".lm-TabBar-tab", has_text="wine.py v1 ↔ v2")).to_be_visible()
    screenshot(page, "versions-diff")

    page.locator(".lm-TabBar-tab", has_text="Versions — wine.ipynb").click()
    view.locator("[data-testid=dsops-open-v1]").click()
    expect(page.locator(".lm-TabBar-tab", has_text="wine.py @ v1")).to_be_visible()
    widget = page.locator("[data-testid=dsops-version-file]:visible")
    expect(widget.locator(".cm-content")).to_have_attribute("contenteditable", "false")
    text = editor_text(page, widget)
    assert OLD_LINE in text and NEW_LINE not in text, text[-500:]
    assert text.startswith("# Generated by dsops-jupyter from"), text[:200]


def test_mark_dialog_refuses_a_cycle_and_writes_after(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, wait_kernel=False)
    features = cell(page, FEATURES_CELL)
    cell_menu(page, features, "Mark cell as step")
    form = page.locator("[data-testid=dsops-mark-form]")
    expect(form.locator("[data-testid=dsops-step-name]")).to_have_value("features")
    # train and evaluate run after features (data): picking them would close a cycle.
    for downstream in ("train", "evaluate"):
        testid = f"[data-testid=dsops-after-{downstream}]"
        expect(form.locator(testid)).to_be_disabled()
        row = form.locator(".dsops-MarkForm-choice", has=page.locator(testid))
        expect(row).to_contain_text(f"{downstream} already runs after features")
    load = form.locator("[data-testid=dsops-after-load]")
    expect(load).to_be_enabled()
    load.check()
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Mark").click()
    expect(form).to_have_count(0)
    expect(features.locator(".dsops-CellBadge-after")).to_have_text("after: load")

    # Continuation cells show their step; steps get their own colours.
    expect(cell(page, FEATURES_CELL + 1).locator("[data-testid=dsops-continuation]")).to_have_text(
        "↳ features"
    )
    colours = {
        index: cell(page, index)
        .locator("[data-testid=dsops-badge]")
        .evaluate("node => getComputedStyle(node).backgroundColor")
        for index in (8, FEATURES_CELL, TRAIN_CELL)
    }
    assert len(set(colours.values())) == 3, colours
    page.locator(".jp-NotebookPanel:visible .jp-Notebook").press("Control+s")
    expected = ["step:features", "after:load"]
    assert saved_tags(lab.root / "wine.ipynb", FEATURES_CELL, expected) == expected


def test_runs_view_lists_a_run_and_opens_its_executed_notebook(page: Page, lab: Lab) -> None:
    started = api(lab, "dsops/jobs", "POST", {"kind": "run", "path": "wine.ipynb", "options": {}})
    assert isinstance(started, dict)
    job = wait_job(lab, started["id"])
    assert job["state"] == "succeeded", job.get("error")
    open_notebook(page, lab, wait_kernel=False)
    main_menu(page, "Runs")
    view = page.locator("[data-testid=dsops-runs-view]:visible")
    run = view.locator("[data-testid=dsops-run]").first
    expect(run).to_have_attribute("data-status", re.compile(r"^(succeeded|done)$"))
    expect(run).to_contain_text("evaluate")
    expect(view.locator("[data-testid=dsops-job-row]").first).to_have_attribute(
        "data-state", "succeeded"
    )
    screenshot(page, "runs-view")
    link = run.locator("[data-testid=dsops-run-open]")
    executed = link.get_attribute("title")
    assert executed and executed.startswith("runs/wine/"), executed
    assert (lab.root / executed).is_file(), executed
    link.click()
    tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current")
    expect(tab).to_have_attribute("title", re.compile(re.escape(executed)))
    expect(page.locator(".jp-NotebookPanel:visible")).to_contain_text("RidgeClassifier")


def printed_lines(notebook: Path) -> list[str]:
    """The non-empty lines the run printed (stream outputs of the executed notebook)."""
    nb = nbformat.read(notebook, as_version=4)
    texts = [o.text for c in nb.cells for o in c.get("outputs", []) if o.output_type == "stream"]
    return [line.strip() for text in texts for line in text.splitlines() if line.strip()]


def test_a_run_in_the_default_hidden_folder_opens_read_only(page: Page, lab: Lab) -> None:
    """Default run folders (.dsops/runs, hidden from the contents API) open read-only."""
    pyproject = lab.root / "pyproject.toml"
    configured = pyproject.read_text()
    pyproject.write_text("[tool.dsops]\n")  # the default runs-dir: .dsops/runs
    try:
        started = api(lab, "dsops/jobs", "POST", {"kind": "run", "path": "wine.ipynb"})
        assert isinstance(started, dict)
        job = wait_job(lab, started["id"])
        assert job["state"] == "succeeded", job.get("error")
        open_notebook(page, lab, wait_kernel=False)
        main_menu(page, "Runs")
        view = page.locator("[data-testid=dsops-runs-view]:visible")
        link = view.locator("[data-testid=dsops-run] [data-testid=dsops-run-open]").first
        executed = link.get_attribute("title")
        assert executed and executed.startswith(".dsops/runs/wine/"), executed
        printed = printed_lines(lab.root / executed)
        assert printed, "the wine run printed nothing"
        link.click()
        stamp = Path(executed).parent.name
        tab = page.locator("#jp-main-dock-panel .lm-TabBar-tab.jp-mod-current")
        expect(tab).to_contain_text(f"wine.ipynb @ {stamp}")
        expect(tab).to_have_attribute("title", re.compile("read-only"))
        shown = page.locator("[data-testid=dsops-run-notebook]:visible")
        expect(shown.locator(".jp-OutputArea-output").first).to_be_visible()
        expect(shown).to_contain_text(printed[-1])
        expect(page.locator("[data-testid=dsops-read-only]:visible")).to_have_text("read-only")
        cells = nbformat.read(lab.root / executed, as_version=4).cells
        first_code = next(c for c in cells if c.cell_type == "code")
        lines = shown.locator(".jp-CodeCell").first.locator(".cm-line")
        expect(lines).to_have_count(len(first_code.source.splitlines()))  # lines not doubled
        editor = shown.locator(".jp-CodeCell .cm-editor").first
        expect(editor).to_have_class(re.compile("jp-mod-readOnly"))
        editor.locator(".cm-content").click()
        page.keyboard.type("typed_here")
        expect(shown).not_to_contain_text("typed_here")
        screenshot(page, "run-notebook")
    finally:
        pyproject.write_text(configured)


def wait_running(lab: Lab, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while api(lab, f"dsops/jobs/{job_id}")["state"] != "running":  # type: ignore[index]
        assert time.monotonic() < deadline, f"job {job_id} never started"
        time.sleep(0.5)


def test_busy_notebook_shows_its_running_job_and_cancels_it(page: Page, lab: Lab) -> None:
    slow = api(lab, "dsops/jobs", "POST", {"kind": "run", "path": "slow.ipynb", "options": {}})
    assert isinstance(slow, dict)
    wait_running(lab, slow["id"])
    open_notebook(page, lab, "slow.ipynb", wait_kernel=False)
    page.locator("[data-testid=dsops-package-button]:visible").click()
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Package").click()
    job = page.locator("[data-testid=dsops-job]")
    expect(job.locator("[data-testid=dsops-busy]")).to_contain_text("slow.ipynb is busy")
    expect(job).to_have_attribute("data-kind", "run")
    expect(job).to_have_attribute("data-state", "running")
    expect(job.locator("[data-testid=dsops-error]")).to_have_count(0)
    job.locator("[data-testid=dsops-cancel]").click()
    expect(job).to_have_attribute("data-state", "cancelled", timeout=60_000)
    assert wait_job(lab, slow["id"])["state"] == "cancelled"
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Close").click()


def test_restart_shows_past_jobs_and_marks_the_interrupted_one(
    page: Page, server: LabServer, lab: Lab
) -> None:
    """Last in the module: it restarts the server."""
    slow = api(lab, "dsops/jobs", "POST", {"kind": "run", "path": "slow.ipynb", "options": {}})
    assert isinstance(slow, dict)
    wait_running(lab, slow["id"])
    server.restart()
    open_notebook(page, lab, "slow.ipynb", wait_kernel=False)
    main_menu(page, "Runs", "slow.ipynb")
    view = page.locator("[data-testid=dsops-runs-view]:visible")
    row = view.locator("[data-testid=dsops-job-row]").first
    expect(row).to_have_attribute("data-state", "interrupted")
    expect(row).to_contain_text("interrupted")
    expect(row).to_contain_text("run")


# ---- with a Docker engine: package from the UI (timed), cancel a build ----


@pytest.fixture(scope="module")
def docker_lab(
    docker_engine, docker_base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """wine.ipynb in a repository whose [tool.dsops] base image is the test engine's."""
    base = tmp_path_factory.mktemp("views-docker")
    root = base / "project"
    copy_example("wine.ipynb", root)
    (root / "pyproject.toml").write_text(f'[tool.dsops]\nbase-image = "{docker_base_image}"\n')
    init_repo(root)
    with LabServer(base, root, env={"DOCKER_HOST": docker_engine.host}) as lab_server:
        yield lab_server.lab


def start_package(page: Page, *, smoke: bool, builder: str | None = None) -> float:
    """Open the Package dialog, ask for the image (and smoke run), start; the start time."""
    page.locator("[data-testid=dsops-package-button]").click()
    form = page.locator("[data-testid=dsops-package-form]")
    expect(form).to_be_visible()
    expect(form).to_contain_text("fast layer assembler")
    expect(form.locator("[data-testid=dsops-parameters-note]")).to_contain_text("image's defaults")
    form.locator("[data-testid=dsops-build]").check()
    if smoke:
        form.locator("[data-testid=dsops-smoke]").check()
    if builder is not None:
        form.locator("summary", has_text="Advanced").click()
        form.locator("[data-testid=dsops-builder]").select_option(builder)
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Package").click()
    return time.monotonic()


def finish_package(page: Page, started: float) -> tuple[float, str]:
    job = page.locator("[data-testid=dsops-job]")
    done = re.compile(r"^(succeeded|failed|cancelled)$")
    expect(job).to_have_attribute("data-state", done, timeout=PACKAGE_TIMEOUT_MS)
    seconds = time.monotonic() - started
    if job.get_attribute("data-state") != "succeeded":
        pytest.fail(f"package job failed: {job.locator('[data-testid=dsops-error]').inner_text()}")
    headline = job.locator("[data-testid=dsops-result-headline]").inner_text()
    expect(job.locator("[data-testid=dsops-result-smoke]")).to_contain_text("exit 0")
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Close").click()
    return seconds, headline


def type_in_train_cell(page: Page, text: str) -> None:
    editor = cell(page, TRAIN_CELL).locator(".jp-InputArea-editor .cm-content")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(text)
    page.keyboard.press("Escape")


@pytest.mark.docker
def test_package_with_image_from_the_ui_is_timed(page: Page, docker_lab: Lab) -> None:
    """First package with build + smoke, then a code-only change; seconds from the click."""
    open_notebook(page, docker_lab)
    first, headline = finish_package(page, start_package(page, smoke=True))
    assert headline == "Packaged as v1", headline
    type_in_train_cell(page, "\nprint(model.n_features_in_)")
    again, headline = finish_package(page, start_package(page, smoke=True))
    assert headline == "Packaged as v2", headline
    tags = git(docker_lab.root, "tag", "--list", "dsops/wine/*").split()
    assert tags == ["dsops/wine/v1", "dsops/wine/v2"], tags
    timing = {"first_package_s": round(first, 1), "code_change_repackage_s": round(again, 1)}
    (REPO_ROOT / "test-artifacts").mkdir(exist_ok=True)
    (REPO_ROOT / "test-artifacts" / "ui-package-timing.json").write_text(json.dumps(timing))
    print(f"\nUI package timing (build + smoke, test engine): {timing}")


@pytest.mark.docker
def test_cancel_during_a_build_leaves_no_tag(page: Page, docker_lab: Lab) -> None:
    """The Dockerfile builder (the slow one) is cancelled while it builds: no new version."""
    open_notebook(page, docker_lab)
    tags_before = git(docker_lab.root, "tag", "--list", "dsops/*").split()
    head_before = git(docker_lab.root, "rev-parse", "HEAD")
    type_in_train_cell(page, "\nprint(model.classes_)")
    start_package(page, smoke=False, builder="dockerfile")
    job = page.locator("[data-testid=dsops-job]")
    stage = job.locator("[data-testid=dsops-stage]")
    expect(stage).to_have_text(re.compile(r"^Building"), timeout=PACKAGE_TIMEOUT_MS)
    job.locator("[data-testid=dsops-cancel]").click()
    expect(job).to_have_attribute("data-state", "cancelled", timeout=120_000)
    expect(job.locator("[data-testid=dsops-cancel]")).to_be_hidden()
    expect(job.locator("[data-testid=dsops-cancelled]")).not_to_be_empty()
    assert git(docker_lab.root, "tag", "--list", "dsops/*").split() == tags_before
    assert git(docker_lab.root, "rev-parse", "HEAD") == head_before
    assert git(docker_lab.root, "status", "--porcelain", "--", "pipelines") == ""
