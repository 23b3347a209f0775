"""The dsops side panel in a real JupyterLab driven by Debian's Chromium (Playwright).

A real `jupyter lab` serves a temporary Git repository holding examples/wine.ipynb and two
notebooks written here: one whose third step raises on a known line, one whose step sleeps.
The tests run them from the panel for real (server jobs, papermill, kernels) and compare what
the panel shows with what the server answers: the failed step and its line, the step graph's
edges, the notebook's running job and its cancellation.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.labkit import Lab, LabServer, api, open_notebook, open_panel, screenshot
from tests.helpers import Markdown, copy_example, init_repo, make_notebook

pytestmark = pytest.mark.browser

FAILING = "failing.ipynb"
SLOW = "slow.ipynb"
#: The line of step `boom` that raises (1-based, as the editor shows it).
FAILING_LINE = "ratio = total / (count - count)"
RUN_TIMEOUT_MS = 180_000
#: The first answer of a fresh server imports the core (slow on a shared, busy machine).
FIRST_RENDER_MS = 90_000


def write_failing(root) -> None:
    make_notebook(
        root / FAILING,
        [
            Markdown("A pipeline whose third step fails on its third line."),
            ("count = 3", ["parameters"]),
            ("import time\ntime.sleep(1.5)\nvalues = list(range(count))", ["step:load"]),
            ("total = sum(values)", ["step:prepare"]),
            (f"print(total)\nshown = total\n{FAILING_LINE}\nprint(ratio)", ["step:boom"]),
            ("final = total * 2", ["step:report"]),
        ],
    )


def write_slow(root) -> None:
    make_notebook(
        root / SLOW,
        [
            ("seconds = 120", ["parameters"]),
            ("start = 1", ["step:start"]),
            ("import time\ntime.sleep(seconds)\nwaited = start", ["step:wait"]),
        ],
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A real JupyterLab on a fresh Git repository holding wine.ipynb and the two notebooks."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "project"
    copy_example("wine.ipynb", root)
    write_failing(root)
    write_slow(root)
    init_repo(root)
    with LabServer(base, root) as server:
        yield server.lab


def query(path: str) -> str:
    return urllib.parse.urlencode({"path": path})


def pipeline_of(lab: Lab, path: str) -> dict[str, Any]:
    answer = api(lab, f"dsops/pipeline?{query(path)}")
    assert isinstance(answer, dict)
    return answer


def jobs_of(lab: Lab, path: str) -> list[dict[str, Any]]:
    answer = api(lab, f"dsops/jobs?{query(path)}")
    assert isinstance(answer, dict)
    return list(answer["jobs"])


def step_item(panel: Locator, name: str) -> Locator:
    return panel.locator(f"[data-testid=dsops-step][data-step={name}]")


def active_cell_index(page: Page) -> int:
    return int(
        page.evaluate(
            """() => {
                const cells = [...document.querySelectorAll(
                  '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')];
                return cells.findIndex(c => c.classList.contains('jp-mod-active'));
            }"""
        )
    )


def cell_state(page: Page, index: int) -> str | None:
    cells = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell")
    return cells.nth(index).get_attribute("data-dsops-state")


def test_failing_step_is_marked_on_the_step_that_failed(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, FAILING)
    panel = open_panel(page)
    expect(step_item(panel, "boom")).to_be_visible(timeout=FIRST_RENDER_MS)
    panel.locator("[data-testid=dsops-run-all]").click()
    job_box = panel.locator("[data-testid=dsops-panel-job]")
    expect(job_box).to_have_attribute("data-state", "failed", timeout=RUN_TIMEOUT_MS)

    job = jobs_of(lab, FAILING)[0]
    assert job["state"] == "failed" and job["kind"] == "run"
    record = {step["name"]: step for step in job["result"]["steps"]}
    assert record["boom"]["status"] == "failed", record
    # The upstream steps ran, the step after the failure did not: as the run record says.
    expected = {"load": "done", "prepare": "done", "boom": "failed", "report": "skipped"}
    assert {name: step["status"] for name, step in record.items()} == expected
    for name, state in expected.items():
        expect(step_item(panel, name)).to_have_attribute("data-state", state)
    # Honest durations: the step's own seconds from the record (load sleeps 1.5 s).
    load_seconds = float(record["load"]["duration"])
    assert load_seconds >= 1.5
    expect(step_item(panel, "load").locator("[data-testid=dsops-step-state]")).to_have_text(
        f"done in {load_seconds:.1f} s"
    )
    # The failure is shown under `boom` only, with a link to its cell and line.
    assert panel.locator("[data-testid=dsops-failure-link]").count() == 1
    link = step_item(panel, "boom").locator("[data-testid=dsops-failure-link]")
    failing_cell, failing_line = record["boom"]["cell"], record["boom"]["line"]
    expect(link).to_have_text(f"cell {failing_cell + 1}, line {failing_line}")
    expect(step_item(panel, "boom").locator("[data-testid=dsops-step-error]")).to_contain_text(
        "ZeroDivisionError"
    )
    # The cells carry their step's state (colours in style/panel.css).
    pipeline = pipeline_of(lab, FAILING)
    cells = {step["name"]: step["cells"] for step in pipeline["steps"]}
    for name, state in expected.items():
        assert cell_state(page, cells[name][0]) == state, name
    # The link selects the failing cell and highlights the failing line in its editor.
    link.click()
    expect(page.locator(".jp-Cell.jp-mod-active .cm-line.dsops-FailedLine")).to_have_text(
        FAILING_LINE
    )
    assert active_cell_index(page) == failing_cell == cells["boom"][0]
    screenshot(page, "panel-failed")


def test_graph_shows_the_edges_of_the_wine_example(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, "wine.ipynb")
    panel = open_panel(page)
    pipeline = pipeline_of(lab, "wine.ipynb")
    edges = pipeline["edges"]
    assert any(edge["kind"] == "data" and edge["names"] for edge in edges), edges
    graph = panel.locator("[data-testid=dsops-graph]")
    expect(graph).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(graph.locator("[data-testid=dsops-graph-node]")).to_have_count(len(pipeline["steps"]))
    expect(graph.locator(".dsops-Graph-edge")).to_have_count(len(edges))
    for edge in edges:
        selector = (
            f".dsops-Graph-edge[data-source={edge['source']}][data-target={edge['target']}]"
            f"[data-kind={edge['kind']}]"
        )
        drawn = graph.locator(selector)
        expect(drawn).to_have_count(1)
        if edge["kind"] == "data":
            expect(drawn.locator("text")).to_have_text(", ".join(edge["names"]))
        else:
            expect(drawn.locator("text")).to_have_count(0)
    # The lists show the values passed (inputs/outputs), not every name read or written.
    for step in pipeline["steps"]:
        io = step_item(panel, step["name"]).locator("[data-testid=dsops-step-io]")
        if step["inputs"]:
            expect(io).to_contain_text(f"receives {', '.join(step['inputs'])}")
        if step["outputs"]:
            expect(io).to_contain_text(f"passes {', '.join(step['outputs'])}")
    # Clicking a node selects its step's first cell.
    train = next(step for step in pipeline["steps"] if step["name"] == "train")
    graph.locator("[data-testid=dsops-graph-node][data-step=train]").click()
    expect(page.locator(".jp-NotebookPanel:visible .jp-Cell.jp-mod-active")).to_have_attribute(
        "data-dsops-step", "train"
    )
    assert active_cell_index(page) == train["cells"][0]
    graph.scroll_into_view_if_needed()
    screenshot(page, "graph")


def test_running_job_shows_and_cancel_stops_it(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, SLOW)
    panel = open_panel(page)
    run = panel.locator("[data-testid=dsops-run-all]")
    expect(step_item(panel, "wait")).to_be_visible(timeout=FIRST_RENDER_MS)
    expect(run).to_be_enabled()
    # Another client starts a run; the panel's Run then meets a busy notebook (409).
    started = api(lab, "dsops/jobs", "POST", {"kind": "run", "path": SLOW, "options": {}})
    assert isinstance(started, dict)
    run.click()
    job_box = panel.locator("[data-testid=dsops-panel-job]")
    expect(job_box).to_have_attribute("data-job", started["id"])
    expect(job_box).to_have_attribute("data-state", re.compile(r"^(queued|running)$"))
    expect(panel.locator("[data-testid=dsops-error]")).to_be_hidden()  # no "already working"
    expect(run).to_be_disabled()
    expect(panel.locator("[data-testid=dsops-run-wait]")).to_be_disabled()
    expect(step_item(panel, "wait")).to_have_attribute("data-state", "running", timeout=90_000)
    expect(step_item(panel, "start")).to_have_attribute("data-state", "done")
    expect(panel.locator("[data-testid=dsops-panel-progress]")).to_be_visible()
    elapsed = step_item(panel, "wait").locator(".dsops-Step-state")
    expect(elapsed).to_have_text(re.compile(r"^running \d+\.\d s$"))
    expect(elapsed).not_to_have_text(elapsed.inner_text())  # it counts on

    panel.locator("[data-testid=dsops-panel-cancel]").click()
    expect(job_box).to_have_attribute("data-state", "cancelled", timeout=60_000)
    job = next(job for job in jobs_of(lab, SLOW) if job["id"] == started["id"])
    assert job["state"] == "cancelled"
    expect(run).to_be_enabled()
    # The steps end as the job says: `start` done, `wait` not finished.
    record = {step["name"]: step["status"] for step in (job.get("result") or {}).get("steps", [])}
    for name in ("start", "wait"):
        live = job["steps"][name]["state"]
        unfinished = "skipped" if live in ("queued", "running") else live
        expect(step_item(panel, name)).to_have_attribute("data-state", record.get(name, unfinished))
    assert job["steps"]["start"]["state"] == "done"
    assert step_item(panel, "wait").get_attribute("data-state") in ("skipped", "failed")


def test_panel_follows_edits_before_any_save(page: Page, lab: Lab) -> None:
    open_notebook(page, lab, FAILING)
    panel = open_panel(page)
    report = step_item(panel, "report")
    expect(report).to_be_visible(timeout=FIRST_RENDER_MS)
    on_disk = (lab.root / FAILING).read_text()
    pipeline = pipeline_of(lab, FAILING)
    report_cell = next(s for s in pipeline["steps"] if s["name"] == "report")["cells"][0]
    editor = page.locator(".jp-NotebookPanel:visible .jp-Notebook .jp-Cell").nth(report_cell)
    editor.locator(".cm-content").click()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("final = shown * count")
    # Not saved, yet the panel describes the notebook as edited (POST /dsops/pipeline).
    expect(report.locator("[data-testid=dsops-step-io]")).to_have_text(
        re.compile(r"receives (count, shown|shown, count)"), timeout=10_000
    )
    assert (lab.root / FAILING).read_text() == on_disk
    edited = pipeline_of(lab, FAILING)  # the file on disk still says what it said
    assert next(s for s in edited["steps"] if s["name"] == "report")["inputs"] == ["total"]
