"""The papermill path's step engine in real kernels: run-folder artifacts, `--cache`, `--force`,
`--resume`, on the examples and on corpus notebooks written by others.

What proves a step was not executed: its cells in the executed notebook have no execution count
and say "restored from cache", and what they would write (a line appended to a file) is not
written. A step that hands nothing on (wine's evaluate) always runs: what it writes and shows is
its work, so a cached re-run still writes ``outputs/metrics.json``. What proves the restore is
right: a later step that does run computes exactly what it computed in the full run.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.errors import ExecutionError, OptionsError, ResumeError
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import RunOptions, RunRecord
from dsops_jupyter.notebook import read_pipeline
from tests.helpers import (
    REPO_ROOT,
    copy_example,
    dsops,
    error_line,
    init_repo,
    make_notebook,
)

CORPUS = REPO_ROOT / "tests" / "corpus"
EDIT = 'print("edited")\n'  # prepended to a step's first cell: new code, same results


def run(notebook: Path, cwd: Path, **options: Any) -> RunRecord:
    """One in-process `dsops run` with a fresh working folder ``cwd``."""
    cwd.mkdir(parents=True, exist_ok=True)
    return run_notebook(notebook, RunOptions(cwd=cwd, **options))


def steps_of(record: RunRecord) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in record.steps}


def restored(record: RunRecord) -> set[str]:
    return {name for name, step in steps_of(record).items() if step["restored"]}


def executed_cells(record: RunRecord) -> dict[str, list[int | None]]:
    """Per step, the execution counts of its (non-empty) cells in the executed notebook."""
    nb = json.loads(record.output_notebook.read_bytes())
    found: dict[str, list[int | None]] = {}
    for cell in nb["cells"]:
        step = cell.get("metadata", {}).get("dsops", {}).get("step")
        blank = not "".join(cell["source"]).strip()  # nbclient does not run an empty cell
        if cell["cell_type"] == "code" and step in steps_of(record) and not blank:
            found.setdefault(step, []).append(cell.get("execution_count"))
    return found


def cell_texts(record: RunRecord, step: str) -> list[str]:
    nb = json.loads(record.output_notebook.read_bytes())
    return [
        "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
        for cell in nb["cells"]
        if cell.get("metadata", {}).get("dsops", {}).get("step") == step
    ]


def artifact_hashes(record: RunRecord) -> dict[str, str]:
    folder = record.output_notebook.parent / "artifacts"
    return {
        path.parent.name: json.loads(path.read_bytes())["sha256"]
        for path in folder.glob("*/manifest.json")
    }


def edit_step(notebook: Path, step: str, prefix: str = EDIT, *, undo: str | None = None) -> None:
    """Prepend ``prefix`` to the first cell of ``step`` (or remove it again with ``undo``)."""
    index = read_pipeline(notebook).step(step).cells[0]
    nb = json.loads(notebook.read_bytes())
    cell = nb["cells"][index]
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    marker, _, body = source.partition("\n") if source.startswith("%%dsops") else ("", "", source)
    body = body.replace(undo, "", 1) if undo else prefix + body
    cell["source"] = f"{marker}\n{body}" if marker else body
    notebook.write_text(json.dumps(nb, indent=1), encoding="utf-8")


def assert_not_executed(record: RunRecord, names: set[str]) -> None:
    cells = executed_cells(record)
    for name in names:
        assert set(cells[name]) == {None}, (name, cells[name])
        assert all("restored from" in text for text in cell_texts(record, name)), name
    for name in set(cells) - names:
        assert all(isinstance(count, int) for count in cells[name]), (name, cells[name])


# --- wine: full, cached, edited last step, --force, resume ---------------------------------------
@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = init_repo(tmp_path_factory.mktemp("wine"), commit=False)
    notebook = copy_example("wine.ipynb", root)
    full = run(notebook, root / "cwd-full", cache=True)
    again = run(notebook, root / "cwd-again", cache=True)
    edit_step(notebook, "evaluate")
    edited = run(notebook, root / "cwd-edited", cache=True)
    forced = run(notebook, root / "cwd-forced", cache=True, force=("features",))
    return {"root": root, "notebook": notebook, "full": full, "again": again, "edited": edited,
            "forced": forced}  # fmt: skip


def metrics(cwd: Path) -> dict[str, Any]:
    return json.loads((cwd / "outputs" / "metrics.json").read_bytes())


def test_a_run_keeps_every_step_output_in_its_run_folder(wine: dict[str, Any]) -> None:
    full = wine["full"]
    kept = artifact_hashes(full)
    for step in full.steps:
        assert step["executed"] and not step["restored"] and step["code_key"] and step["key"], step
        assert set(step["artifacts"]) <= set(kept), step
    outputs = {name for step in full.steps for name in step["artifacts"]}
    assert {"df", "class_names", "X_train", "X_test", "y_train", "y_test", "model"} <= outputs
    manifest = json.loads((full.output_notebook.parent / "artifacts/df/manifest.json").read_text())
    assert manifest["step"] == "load" and manifest["format"] == "parquet", manifest


def test_a_cached_rerun_restores_every_step_that_hands_values_on(wine: dict) -> None:
    again = wine["again"]
    assert restored(again) == {"load", "features", "train"}
    assert all(step["cached"] and not step["executed"] for step in again.steps[:3])
    assert steps_of(again)["evaluate"]["executed"]  # hands nothing on: its work is its files
    assert_not_executed(again, restored(again))
    assert metrics(wine["root"] / "cwd-again") == metrics(wine["root"] / "cwd-full")
    assert artifact_hashes(again) == artifact_hashes(wine["full"])
    texts = cell_texts(again, "train")
    assert texts and all("restored from cache (key" in text for text in texts), texts


def test_editing_the_last_step_reruns_only_it_with_the_full_runs_results(wine: dict) -> None:
    edited = wine["edited"]
    assert restored(edited) == {"load", "features", "train"}
    assert_not_executed(edited, {"load", "features", "train"})
    root = wine["root"]
    assert metrics(root / "cwd-edited") == metrics(root / "cwd-full")


def test_force_reruns_the_step_and_everything_downstream(wine: dict) -> None:
    forced = wine["forced"]
    assert restored(forced) == {"load"}
    assert {s["name"] for s in forced.steps if s["forced"]} == {"features", "train", "evaluate"}
    assert_not_executed(forced, {"load"})
    root = wine["root"]
    assert metrics(root / "cwd-forced") == metrics(root / "cwd-full")


def test_resume_continues_a_failed_run_with_its_parameters(wine: dict) -> None:
    root, notebook = wine["root"], wine["notebook"]
    breaking = 'raise RuntimeError("not yet")\n'
    edit_step(notebook, "train", breaking)
    with pytest.raises(ExecutionError, match="not yet"):
        run(notebook, root / "cwd-broken", parameters={"alpha": 1000.0})
    edit_step(notebook, "train", undo=breaking)  # the user fixes the cell
    resumed = run(notebook, root / "cwd-resumed", resume="")
    failed_run = Path(resumed.resumed_from or "")
    assert json.loads((failed_run / "run.json").read_bytes())["status"] == "failed"
    assert resumed.parameters["alpha"] == 1000.0
    assert restored(resumed) == {"load", "features"}
    assert {s["restored"] for s in resumed.steps if s["restored"]} == {"run"}
    assert_not_executed(resumed, {"load", "features"})
    with pytest.raises(ResumeError, match="left to resume"):  # resumed already: not again
        run(notebook, root / "cwd-again-resumed", resume="")
    reference = run(notebook, root / "cwd-reference", parameters={"alpha": 1000.0})
    assert metrics(root / "cwd-resumed") == metrics(root / "cwd-reference")
    assert metrics(root / "cwd-resumed")["accuracy"] == 0.955556
    assert reference.resumed_from is None


def test_resume_refuses_changed_upstream_code_a_good_run_and_an_unknown_run(wine: dict) -> None:
    root, notebook = wine["root"], wine["notebook"]
    with pytest.raises(ResumeError, match="only a failed run resumes"):
        run(notebook, root / "cwd-x", resume=str(wine["full"].output_notebook.parent))
    with pytest.raises(ResumeError, match="no run 'nope'"):
        run(notebook, root / "cwd-x", resume="nope")
    breaking = 'raise RuntimeError("again")\n'
    edit_step(notebook, "evaluate", breaking)
    with pytest.raises(ExecutionError):
        run(notebook, root / "cwd-broken-2")
    edit_step(notebook, "evaluate", undo=breaking)
    edit_step(notebook, "load", "n_rows = 1\n")  # an upstream step changed since
    done = dsops("run", notebook.name, "--resume", cwd=root)
    line = error_line(done)
    assert "step 'load' changed since run" in line and "--resume" in line, line
    edit_step(notebook, "load", undo="n_rows = 1\n")


def test_cli_flags_and_their_combination_checks(wine: dict) -> None:
    with pytest.raises(OptionsError, match="add --cache"):
        RunOptions(force=("train",))
    with pytest.raises(OptionsError, match="drop -p"):
        RunOptions(resume="", parameters={"alpha": 1})
    with pytest.raises(OptionsError, match="drop --step"):
        RunOptions(resume="x", steps=("train",))
    assert RunOptions.from_json({"cache": True, "force": ["train"]}).force == ("train",)
    done = dsops("run", wine["notebook"].name, "--cache", "--out", "out-cli", cwd=wine["root"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("restored from cache") == 3, done.stdout


# --- Kale's iris example and two corpus notebooks written by others --------------------------
CASES = {
    "iris_kale": (REPO_ROOT / "examples" / "iris_kale.ipynb", "evaluate"),
    "kale_example": (CORPUS / "kale" / "Example.ipynb", "evaluation_2"),
    "kale_iris_sklearn": (CORPUS / "kale" / "iris_sklearn.ipynb", "evaluate_model"),
}


def stdout_of(record: RunRecord, step: str) -> list[str]:
    return [text.replace("edited\n", "", 1) for text in cell_texts(record, step)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_cached_rerun_after_editing_the_last_step_matches_the_full_run(
    case: str, tmp_path: Path
) -> None:
    source, step = CASES[case]
    root = init_repo(tmp_path / "repo", commit=False)
    notebook = Path(shutil.copy(source, root / source.name))
    full = run(notebook, root / "cwd-full", cache=True)
    assert all(s["executed"] for s in full.steps)
    edit_step(notebook, step)
    edited = run(notebook, root / "cwd-edited", cache=True)
    *upstream, last = [s["name"] for s in full.steps]
    assert last == step and restored(edited) == set(upstream), edited.steps
    assert_not_executed(edited, set(upstream))
    assert stdout_of(edited, last) == cell_texts(full, last)
    assert artifact_hashes(edited) == artifact_hashes(full)


# --- values that cannot be stored ---------------------------------------------------------------
UNSTORABLE = [
    ("rows = [1, 2, 3]", ["step:load"]),
    (
        "log = open('log.txt', 'a')\nlog.write('open\\n')\nopen('ran.txt', 'a').write('handle\\n')",
        ["step:handle"],
    ),
    ("open('ran.txt', 'a').write('total\\n')\ntotal = sum(rows) + log.closed", ["step:total"]),
    ("open('ran.txt', 'a').write('report\\n')\nprint(total)", ["step:report"]),
]


def test_an_unstorable_value_is_one_warning_and_its_step_is_never_cached(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo", commit=False)
    notebook = make_notebook(root / "handle.ipynb", UNSTORABLE)
    first = run(notebook, root / "cwd", cache=True)
    warnings = [w for w in first.details["warnings"] if "never cached" in w]
    assert len(warnings) == 1, first.details["warnings"]
    assert re.search(r"\blog\b", warnings[0]) and "step 'handle'" in warnings[0], warnings
    assert steps_of(first)["handle"]["unstorable"], first.steps
    second = run(notebook, root / "cwd", cache=True)
    # total reads log, so it has no key either; report hands nothing on: it always runs
    assert restored(second) == {"load"}, second.steps
    ran = (root / "cwd" / "ran.txt").read_text().splitlines()
    assert ran == ["handle", "total", "report", "handle", "total", "report"], ran


def test_resume_restarts_no_later_than_a_step_with_an_unstorable_value(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo", commit=False)
    cells = [*UNSTORABLE[:3], ("raise ValueError('broken report')", ["step:report"])]
    notebook = make_notebook(root / "handle.ipynb", cells)
    with pytest.raises(ExecutionError, match="broken report"):
        run(notebook, root / "cwd")
    make_notebook(notebook, UNSTORABLE)  # fixed
    resumed = run(notebook, root / "cwd", resume="")
    assert restored(resumed) == {"load"}, resumed.steps
    ran = (root / "cwd" / "ran.txt").read_text().splitlines()
    assert ran == ["handle", "total", "handle", "total", "report"], ran
