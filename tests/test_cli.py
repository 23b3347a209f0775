"""The `dsops` command as users run it: `python -m dsops_jupyter ...` in real folders and repos.

Exit codes (0 ok, 1 failed work, 2 bad input), one-line errors without tracebacks, nothing
written on failure, and parseable --json on every command.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v3

from tests.helpers import (
    EXAMPLES,
    RUNTIME_FILES,
    Markdown,
    assert_ok,
    copy_example,
    dsops,
    error_line,
    git,
    init_repo,
    json_error,
    make_notebook,
    run_python,
    tree_snapshot,
)

GOOD = [
    Markdown("# small"),
    ("rate = 0.5\nseed: int = 1", ["parameters"]),
    ("xs = [seed, 2, 3]", ["step:load"]),
    ("total = sum(xs) * rate", ["step:reduce"]),
    ("print(total)", ["step:report", "after:reduce"]),
]
# Each bad notebook: how to write it, and a fragment its one-line error must contain.
BAD: dict[str, tuple[object, str]] = {
    "invalid-json": ('{"cells": [', "not valid JSON"),
    "not-a-notebook": ('{"name": "package.json"}', "not a Jupyter notebook"),
    "garbage-nbformat": ('{"nbformat": "four", "cells": []}', "unsupported nbformat"),
    "two-parameters-cells": ([("a = 1", ["parameters"]), ("b = 2", ["parameters"])], "keep one"),
    "after-unknown": ([("a = 1", ["step:s", "after:nowhere"])], "no step 'nowhere'"),
    "cycle": (
        [("a = 1", ["step:one", "after:two"]), ("b = 2", ["step:two", "after:one"])],
        "cycle",
    ),
    "step-not-identifier": ([("a = 1", ["step:load-data"])], "not a valid Python identifier"),
    "step-with-quote": (['%%dsops step "it\'s"\na = 1'], "not a valid Python identifier"),
    "step-with-newline": ([("a = 1", ["step:a\nb"])], "not a valid Python identifier"),
    "step-unicode": ([("a = 1", ["step:schritt_ü"])], "not a valid Python identifier"),
}


def write_bad(folder: Path, case: str) -> Path:
    content, _ = BAD[case]
    path = folder / "bad.ipynb"
    if isinstance(content, str):
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    else:
        make_notebook(path, content)  # type: ignore[arg-type]
    return path


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A Git repository holding the small notebook, committed."""
    make_notebook(tmp_path / "small.ipynb", GOOD)
    return init_repo(tmp_path)


# --- steps --------------------------------------------------------------------------------------
def test_steps_lists_the_pipeline(small: Path) -> None:
    done = assert_ok(dsops("steps", "small.ipynb", cwd=small))
    out = done.stdout
    assert "small: 3 step(s)" in out
    assert "rate: float = 0.5" in out and "seed: int = 1" in out
    assert out.index("1. load") < out.index("2. reduce") < out.index("3. report")
    assert "needs: reduce (after)" in out
    assert done.stderr == ""


def test_steps_json(small: Path) -> None:
    data = json.loads(assert_ok(dsops("steps", "small.ipynb", "--json", cwd=small)).stdout)
    assert data["name"] == "small"
    assert [s["name"] for s in data["steps"]] == ["load", "reduce", "report"]
    assert data["parameters"] == [
        {"name": "rate", "type": "float", "default": 0.5},
        {"name": "seed", "type": "int", "default": 1},
    ]
    reduce = data["steps"][1]
    assert reduce["cells"] == [3] and reduce["reads"] == ["xs"] and reduce["parameters"] == ["rate"]
    assert data["steps"][2]["after"] == ["reduce"]


@pytest.mark.parametrize("name", ["wine.ipynb", "wine_magics.ipynb", "iris_kale.ipynb"])
def test_steps_of_the_examples(name: str) -> None:
    data = json.loads(assert_ok(dsops("steps", name, "--json", cwd=EXAMPLES)).stdout)
    assert len(data["steps"]) == 4 and data["warnings"] == []


def test_steps_warns_on_stderr_but_succeeds(tmp_path: Path) -> None:
    make_notebook(tmp_path / "w.ipynb", [("z = 1", ["skip"]), "print(z)"])
    done = assert_ok(dsops("steps", "w.ipynb", cwd=tmp_path))
    assert done.stderr.startswith("warning:") and "'z'" in done.stderr


# --- bad input: exit 2, one line, nothing written ----------------------------------------------
@pytest.mark.parametrize("case", list(BAD))
def test_bad_notebooks_fail_cleanly_for_steps_and_convert(tmp_path: Path, case: str) -> None:
    write_bad(tmp_path, case)
    before = tree_snapshot(tmp_path)
    for command in ("steps", "convert"):
        line = error_line(dsops(command, "bad.ipynb", cwd=tmp_path))
        assert BAD[case][1] in line, line
    assert tree_snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["invalid-json", "cycle", "two-parameters-cells"])
def test_bad_notebooks_fail_cleanly_for_run_and_commit(tmp_path: Path, case: str) -> None:
    write_bad(tmp_path, case)
    init_repo(tmp_path)
    before, head = tree_snapshot(tmp_path), git(tmp_path, "rev-parse", "HEAD")
    for command in ("run", "commit"):
        error_line(dsops(command, "bad.ipynb", cwd=tmp_path))
    assert tree_snapshot(tmp_path) == before
    assert git(tmp_path, "rev-parse", "HEAD") == head
    assert git(tmp_path, "tag") == ""


def test_missing_notebook(tmp_path: Path) -> None:
    assert "no such notebook" in error_line(dsops("steps", "nope.ipynb", cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["-p", "seed", "abc"], "parameter seed expects int"),
        (["-p", "rate", "[1]"], "parameter rate expects float"),
        (["-p", "nope", "1"], "no parameter 'nope'"),
        (["--step", "nope"], "no step 'nope'"),
        (["-f", "missing.yaml"], "missing.yaml"),
        (["-f", "list.yaml"], "expected a mapping"),
    ],
)
def test_bad_run_options_fail_before_any_kernel(
    small: Path, args: list[str], fragment: str
) -> None:
    (small / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    before = tree_snapshot(small)
    done = dsops("run", "small.ipynb", *args, cwd=small)
    assert fragment in error_line(done)
    assert tree_snapshot(small) == before  # no runs/ folder, no executed notebook


def test_run_errors_are_exactly_one_stderr_line(small: Path) -> None:
    done = dsops("run", "small.ipynb", "-p", "seed", "abc", cwd=small)
    assert done.returncode == 2
    assert done.stderr == "error: parameter seed expects int (default 1), got 'abc'\n"


def test_unknown_option_is_exit_2(small: Path) -> None:
    done = dsops("convert", "small.ipynb", "--bogus", cwd=small)
    assert done.returncode == 2 and "Traceback" not in done.stderr


# --- nbformat 3 ----------------------------------------------------------------------------------
def write_v3(folder: Path) -> Path:
    """A real nbformat 3 notebook, as IPython 2 wrote it (worksheets, no kernelspec)."""
    cells = [
        v3.new_code_cell(input="n = 2", metadata={"tags": ["parameters"]}),
        v3.new_code_cell(
            input="squares = [i * i for i in range(n)]", metadata={"tags": ["step:a"]}
        ),
        v3.new_code_cell(input="print(sum(squares))", metadata={"tags": ["step:b"]}),
    ]
    nb = v3.new_notebook(worksheets=[v3.new_worksheet(cells=cells)])
    path = folder / "old.ipynb"
    path.write_text(v3.writes_json(nb), encoding="utf-8")
    return path


def test_nbformat_3_notebook_steps_and_convert(tmp_path: Path) -> None:
    path = write_v3(tmp_path)
    before = path.read_bytes()
    data = json.loads(assert_ok(dsops("steps", "old.ipynb", "--json", cwd=tmp_path)).stdout)
    assert [s["name"] for s in data["steps"]] == ["a", "b"]
    assert data["parameters"] == [{"name": "n", "type": "int", "default": 2}]
    assert_ok(dsops("convert", "old.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "old" / "old.py"
    assert assert_ok(run_python(script, "--n", "4", cwd=tmp_path)).stdout == "14\n"
    assert path.read_bytes() == before  # upgraded in memory only


def test_nbformat_3_notebook_runs(tmp_path: Path) -> None:
    """Old notebooks carry no kernelspec; dsops knows it is Python, so it runs it."""
    write_v3(tmp_path)
    done = assert_ok(dsops("run", "old.ipynb", "-p", "n", "3", "--json", cwd=tmp_path))
    executed = nbformat.read(json.loads(done.stdout)["output_notebook"], as_version=4)
    printed = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert "5\n" in printed


# --- commit and versions ------------------------------------------------------------------------
def test_commit_unchanged_and_versions(small: Path) -> None:
    first = json.loads(assert_ok(dsops("commit", "small.ipynb", "--json", cwd=small)).stdout)
    assert first["created"] is True and first["tag"] == "dsops/small/v1" and first["number"] == 1
    assert git(small, "rev-parse", "HEAD") == first["commit"]
    assert (small / "pipelines" / "small" / "small.py").is_file()
    assert git(small, "status", "--porcelain", "pipelines") == ""

    again = assert_ok(dsops("commit", "small.ipynb", cwd=small))
    assert "unchanged" in again.stdout
    assert git(small, "rev-parse", "HEAD") == first["commit"]
    assert git(small, "tag").split() == ["dsops/small/v1"]

    nb = nbformat.read(str(small / "small.ipynb"), as_version=4)
    nb.cells[3].source = "total = sum(xs) * rate * 2"
    nbformat.write(nb, str(small / "small.ipynb"))
    second = assert_ok(dsops("commit", "small.ipynb", cwd=small))
    assert "committed dsops/small/v2" in second.stdout

    listed = json.loads(assert_ok(dsops("versions", "small.ipynb", "--json", cwd=small)).stdout)
    assert [(v["tag"], v["number"]) for v in listed] == [
        ("dsops/small/v1", 1),
        ("dsops/small/v2", 2),
    ]
    assert listed[1]["commit"] == git(small, "rev-parse", "HEAD")
    table = assert_ok(dsops("versions", "small.ipynb", cwd=small)).stdout
    assert "dsops/small/v1" in table and "dsops/small/v2" in table


def test_convert_commit_flag_is_commit(small: Path) -> None:
    done = assert_ok(dsops("convert", "small.ipynb", "--commit", "--json", cwd=small))
    assert json.loads(done.stdout)["tag"] == "dsops/small/v1"


def test_versions_before_any_commit(small: Path) -> None:
    assert json.loads(assert_ok(dsops("versions", "small.ipynb", "--json", cwd=small)).stdout) == []
    assert "no versions yet" in assert_ok(dsops("versions", "small.ipynb", cwd=small)).stdout


def test_commit_outside_a_repository(tmp_path: Path) -> None:
    make_notebook(tmp_path / "small.ipynb", GOOD)
    before = tree_snapshot(tmp_path)
    line = error_line(dsops("commit", "small.ipynb", cwd=tmp_path))
    assert "not inside a Git repository" in line
    assert tree_snapshot(tmp_path) == before
    assert "not inside a Git repository" in json_error(
        dsops("versions", "small.ipynb", "--json", cwd=tmp_path)
    )


# --- --json on every command ------------------------------------------------------------------
def test_convert_json(small: Path) -> None:
    data = json.loads(assert_ok(dsops("convert", "small.ipynb", "--json", cwd=small)).stdout)
    assert data["name"] == "small"
    assert Path(data["directory"]) == small / "pipelines" / "small"
    assert set(data["files"]) == {
        "small.py",
        "pipeline.json",
        "requirements.lock",
        "Dockerfile",
        ".dockerignore",
        *RUNTIME_FILES,
    }


def test_check_json(small: Path) -> None:
    assert_ok(dsops("convert", "small.ipynb", cwd=small))
    data = json.loads(assert_ok(dsops("check", "small.ipynb", "--json", cwd=small)).stdout)
    assert data["ok"] is True
    assert [(i["notebook"], i["status"]) for i in data["items"]] == [("small.ipynb", "ok")]


@pytest.mark.parametrize("command", ["steps", "run", "convert", "commit", "versions", "check"])
def test_errors_with_json(tmp_path: Path, command: str) -> None:
    write_bad(tmp_path, "invalid-json")
    if command == "versions":  # versions reads tags, not the notebook: outside a repository
        assert "Git repository" in json_error(dsops(command, "bad.ipynb", "--json", cwd=tmp_path))
        return
    if command == "check":
        (tmp_path / "pipelines" / "bad").mkdir(parents=True)
        spec = {"name": "bad", "notebook": "bad.ipynb"}
        (tmp_path / "pipelines" / "bad" / "pipeline.json").write_text(json.dumps(spec))
        done = dsops(command, "bad.ipynb", "--json", cwd=tmp_path)
        assert done.returncode == 1
        (item,) = json.loads(done.stdout)["items"]
        assert item["status"] == "error" and "not valid JSON" in item["note"]
        return
    message = json_error(dsops(command, "bad.ipynb", "--json", cwd=tmp_path))
    assert "bad.ipynb is not valid JSON" in message


def test_run_failure_with_json(tmp_path: Path) -> None:
    make_notebook(tmp_path / "f.ipynb", [("raise ValueError('boom')", ["step:explode"])])
    message = json_error(dsops("run", "f.ipynb", "--json", "--out", "o", cwd=tmp_path), 1)
    assert "step 'explode'" in message and "ValueError: boom" in message
    assert (tmp_path / "o" / "f.ipynb").is_file()


def test_example_copy_converts_from_its_own_folder(tmp_path: Path) -> None:
    copy_example("iris_kale.ipynb", tmp_path / "nbs")
    init_repo(tmp_path)
    assert_ok(dsops("convert", "iris_kale.ipynb", cwd=tmp_path / "nbs"))
    spec = json.loads((tmp_path / "pipelines" / "iris_kale" / "pipeline.json").read_text())
    assert spec["notebook"] == "nbs/iris_kale.ipynb"  # relative to the Git root, not the cwd
    train = next(s for s in spec["steps"] if s["name"] == "train_model")
    assert train["extras"] == {"image": ["python:3.11"], "limit": ["memory:1Gi"]}
