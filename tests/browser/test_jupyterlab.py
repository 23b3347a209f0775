"""End to end in a real JupyterLab driven by Debian's Chromium (Playwright).

A real `jupyter lab` serves a temporary Git repository holding examples/wine.ipynb. The test
marks a cell as a new step from the cell context menu, checks its badge, packages the notebook
with the toolbar button and checks on disk that the new version (commit + tag) and the generated
script exist. It relies on the installed (or `jupyter labextension develop`-linked) frontend:
it fails with the command to run when that is missing, it never builds it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import nbformat
import pytest
from playwright.sync_api import Page, expect

from tests.browser.labkit import (
    PACKAGE_TIMEOUT_MS,
    Lab,
    LabServer,
    cell,
    open_notebook,
    open_panel,
    screenshot,
)
from tests.helpers import copy_example, git, init_repo

pytestmark = pytest.mark.browser

#: Cell 11 of wine.ipynb (scaling) continues step `features`; the test makes it step `scale`.
NEW_STEP_CELL = 11
NEW_STEP = "scale"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real JupyterLab on a fresh Git repository holding wine.ipynb."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "project"
    copy_example("wine.ipynb", root)
    init_repo(root)
    with LabServer(base, root) as server:
        yield server.lab


def open_wine(page: Page, lab: Lab) -> None:
    open_notebook(page, lab)
    expect(page.locator(".jp-Cell[data-dsops-step=load] [data-testid=dsops-badge]")).to_have_text(
        "step: load"
    )


def mark_step_from_context_menu(page: Page, index: int, name: str) -> None:
    target = cell(page, index)
    context_command(page, target, "Mark cell as step")
    dialog = page.locator(".jp-Dialog")
    dialog.locator("[data-testid=dsops-step-name]").fill("2 bad")
    dialog.locator(".jp-mod-accept").click()
    expect(dialog).to_contain_text("not a Python identifier")  # asked again, nothing written
    dialog.locator("[data-testid=dsops-step-name]").fill(name)
    dialog.locator(".jp-mod-accept").click()
    expect(dialog).to_have_count(0)
    expect(target.locator("[data-testid=dsops-badge]")).to_have_text(f"step: {name}")
    expect(target).to_have_attribute("data-dsops-step", name)
    target.scroll_into_view_if_needed()
    screenshot(page, "marked-step")


def package_from_toolbar(page: Page) -> dict[str, str]:
    page.locator("[data-testid=dsops-package-button]").click()
    form = page.locator("[data-testid=dsops-package-form]")
    expect(form).to_be_visible()
    expect(form.locator("[data-testid=dsops-name]")).to_have_value("wine")
    expect(form.locator("[data-testid=dsops-commit]")).to_be_checked()
    expect(form.locator("[data-testid=dsops-build]")).not_to_be_checked()
    expect(form).to_contain_text(f"features → {NEW_STEP}")
    expect(form.locator("[data-testid=dsops-param-alpha]")).to_have_value("1")
    screenshot(page, "package-form")
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
    open_wine(page, lab)
    mark_step_from_context_menu(page, NEW_STEP_CELL, NEW_STEP)

    shown = package_from_toolbar(page)
    screenshot(page, "package-result")

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
    open_wine(page, lab)
    before = git(lab.root, "rev-parse", "HEAD")
    shown = package_from_toolbar(page)
    assert shown["headline"] == "unchanged: still dsops/wine/v1", shown
    assert git(lab.root, "rev-parse", "HEAD") == before
    assert git(lab.root, "tag", "--list", "dsops/wine/*").split() == ["dsops/wine/v1"]
    page.locator(".jp-Dialog .jp-mod-accept", has_text="Close").click()


def test_side_panel_lists_steps_and_runs_one(page: Page, lab: Lab) -> None:
    open_wine(page, lab)
    panel = open_panel(page)
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
    done = re.compile(r"^(done|failed)$")
    expect(status).to_have_attribute("data-state", done, timeout=PACKAGE_TIMEOUT_MS)
    assert status.get_attribute("data-state") == "done", status.inner_text()
    expect(status).to_contain_text("done in")
    screenshot(page, "pipeline-panel")


def context_command(page: Page, target, label: str) -> None:
    """Pick `label` in the cell context menu's "dsops" submenu."""
    target.locator(".jp-InputArea-editor").click(button="right")
    page.locator(".lm-Menu-item:visible", has_text=re.compile(r"^dsops$")).hover()
    page.locator("#dsops-cell-menu .lm-Menu-item", has_text=label).click()


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
    open_wine(page, lab)
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
