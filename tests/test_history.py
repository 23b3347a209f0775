"""Run folders under the git-ignored .dsops/ and the runs history read back from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsops_jupyter.config import load_config
from dsops_jupyter.errors import ExecutionError
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.history import list_runs
from dsops_jupyter.model import RunOptions
from tests.helpers import assert_ok, dsops, git, init_repo, make_notebook

CELLS = [
    ("alpha = 1.0", ["parameters"]),
    ("rows = [alpha, 2 * alpha]", ["step:load"]),
    ("assert alpha > 0, 'alpha must be positive'\ntotal = sum(rows)", ["step:fit"]),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Git project with a .gitignore of its own and two runs: one succeeded, one failed."""
    root = init_repo(tmp_path_factory.mktemp("history") / "repo")
    (root / ".gitignore").write_text("*.pyc\n")
    make_notebook(root / "nb.ipynb", CELLS)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "notebook")
    run_notebook(root / "nb.ipynb", RunOptions(parameters={"alpha": 2.0}))
    with pytest.raises(ExecutionError):
        run_notebook(root / "nb.ipynb", RunOptions(parameters={"alpha": -1.0}))
    return root


def test_run_folders_sit_under_dsops_ignored_by_git(project: Path) -> None:
    folders = sorted((project / ".dsops" / "runs" / "nb").iterdir())
    assert len(folders) == 2 and all((f / "run.json").is_file() for f in folders)
    assert load_config(project / "nb.ipynb").runs_dir == project / ".dsops" / "runs"
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    assert (project / ".gitignore").read_text() == "*.pyc\n"
    assert not (project / "runs").exists()


def test_list_runs_newest_first_with_step_states(project: Path) -> None:
    runs = list_runs(project / "nb.ipynb")
    assert [(r["status"], r["parameters"]["alpha"]) for r in runs] == [
        ("failed", -1.0),
        ("succeeded", 2.0),
    ]
    failed = runs[0]
    assert Path(failed["dir"]).parent == project / ".dsops" / "runs" / "nb"
    assert Path(failed["output_notebook"]).is_file()
    assert failed["duration"] > 0 and failed["started"]
    assert [(s["name"], s["status"]) for s in failed["steps"]] == [
        ("load", "done"),
        ("fit", "failed"),
    ]
    fit = failed["steps"][1]
    assert (fit["cell"], fit["line"]) == (2, 1)
    assert fit["error"] == "AssertionError: alpha must be positive"


def test_a_broken_or_unfinished_run_folder_is_left_out(project: Path, tmp_path: Path) -> None:
    runs = project / ".dsops" / "runs" / "nb"
    (runs / "20990101-000000-000000").mkdir()  # a run still going: no run.json yet
    (runs / "20990101-000000-000001").mkdir()
    (runs / "20990101-000000-000001" / "run.json").write_text("{ half")
    try:
        assert len(list_runs(project / "nb.ipynb")) == 2
    finally:
        for name in ("20990101-000000-000000", "20990101-000000-000001"):
            for child in (runs / name).iterdir():
                child.unlink()
            (runs / name).rmdir()


def test_dsops_runs_lists_them(project: Path) -> None:
    done = assert_ok(dsops("runs", "nb.ipynb", cwd=project))
    lines = done.stdout.splitlines()
    assert "failed" in lines[0] and "alpha=-1.0" in lines[0], done.stdout
    assert (
        lines[1] == "    step fit failed (cell 3, line 1): AssertionError: alpha must be positive"
    )
    data = json.loads(assert_ok(dsops("runs", "nb.ipynb", "--json", cwd=project)).stdout)
    assert data == {"runs": list_runs(project / "nb.ipynb")}


def test_runs_dir_is_configurable(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.dsops]\nruns-dir = "out/runs"\n')
    make_notebook(tmp_path / "nb.ipynb", CELLS[:2])
    record = run_notebook(tmp_path / "nb.ipynb")
    assert record.record_path.parent.parent == tmp_path / "out" / "runs" / "nb"
    assert [r["dir"] for r in list_runs(tmp_path / "nb.ipynb")] == [str(record.record_path.parent)]
    assert not (tmp_path / ".dsops").exists()


def test_a_notebook_of_the_same_name_elsewhere_keeps_its_own_runs(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "repo")
    top = make_notebook(root / "nb.ipynb", CELLS[:2])
    nested = make_notebook(root / "sub" / "nb.ipynb", CELLS[:2])
    record = run_notebook(nested)
    assert record.record_path.parent.parent == root / ".dsops" / "runs" / "nb"
    assert list_runs(top) == []
    assert [r["dir"] for r in list_runs(nested)] == [str(record.record_path.parent)]
