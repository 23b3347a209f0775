"""%%dsops / %dsops in a REAL IPython kernel (nbclient), on notebooks saved to disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from dsops_jupyter.notebook import read_pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

TINY = [
    "%load_ext dsops_jupyter",
    "%%dsops parameters\nalpha = 0.5\nrounds = 3\nlabel = 'tiny'\nverbose = False",
    "%%dsops step load\ndata = [1, 2, 3]\nprint('loaded', len(data))\nsum(data)",
    "total = sum(data) * rounds",
    "%%dsops step train --after load\nmodel = total * alpha\nmodel",
    "%%dsops skip\nprint('exploring', model)",
    "print('model is', model)",
]


@pytest.fixture(autouse=True)
def _kernel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernels import dsops_jupyter from this checkout; no session unless a test says so."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), path) if p))
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def write(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def execute(path: Path, *, allow_errors: bool = False) -> nbformat.NotebookNode:
    """Run every cell in a fresh kernel whose cwd is the notebook's folder (as Jupyter does)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return nb


def text(cell: Any) -> str:
    """Everything a cell showed, as text (streams, results, errors)."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
    return "\n".join(parts)


def errors(cell: Any) -> list[Any]:
    return [o for o in cell.get("outputs", []) if o["output_type"] == "error"]


def usage_errors(cell: Any) -> list[str]:
    """IPython shows a UsageError as one stderr line (no traceback) and fails the cell."""
    lines = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream" and out["name"] == "stderr":
            lines += [ln for ln in out["text"].splitlines() if ln.startswith("UsageError: ")]
    return lines


def widget_states(nb: Any) -> dict[str, dict[str, Any]]:
    """Model id -> state of the widgets nbclient saved with the notebook (as a frontend sees)."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {m_id: m["state"] | {"_model_name": m["model_name"]} for m_id, m in state.items()}


def widget_models(nb: Any) -> list[dict[str, Any]]:
    return list(widget_states(nb).values())


# --- cell magics -------------------------------------------------------------------------------
def test_step_cells_run_in_the_live_kernel(tmp_path: Path):
    path = write(tmp_path / "tiny.ipynb", TINY)
    nb = execute(path)
    cells = nb.cells
    assert "loaded 3" in text(cells[2])
    results = [o for o in cells[2].outputs if o["output_type"] == "execute_result"]
    assert [r["data"]["text/plain"] for r in results] == ["6"], "the last expression displays"
    assert text(cells[4]) == "9.0"  # total (18) * alpha, from variables of earlier cells
    assert "exploring 9.0" in text(cells[5])
    assert "model is 9.0" in text(cells[6])
    assert not any(errors(c) for c in cells)

    nbformat.write(nb, path)  # the saved notebook: the core reads the same first lines
    pipeline = read_pipeline(path)
    assert [s.name for s in pipeline.steps] == ["load", "train"]
    assert pipeline.step("train").after == ["load"]
    assert pipeline.step("load").cells == [2, 3]
    params = {p.name: (p.type, p.default) for p in pipeline.parameters}
    assert params["alpha"] == ("float", 0.5) and params["rounds"] == ("int", 3)


def test_bad_step_name_is_a_one_line_error_and_the_body_does_not_run(tmp_path: Path):
    path = write(
        tmp_path / "bad.ipynb",
        [
            "%load_ext dsops_jupyter",
            "%%dsops step 1bad\nran = True",
            "%%dsops step ok --colour red\nran = True",
            "%%dsops frobnicate\nran = True",
            "print('ran' in dir())",
        ],
    )
    nb = execute(path, allow_errors=True)
    for cell in nb.cells[1:4]:
        assert len(usage_errors(cell)) == 1, cell.outputs
        assert not errors(cell), "no Python traceback for a marker error"
    assert "step name '1bad' is not a valid Python identifier" in usage_errors(nb.cells[1])[0]
    assert "--colour" in usage_errors(nb.cells[2])[0]
    assert "frobnicate" in usage_errors(nb.cells[3])[0]
    assert text(nb.cells[4]).strip() == "False"
    with pytest.raises(CellExecutionError, match="1bad"):
        execute(path)  # the cell fails: "run all" stops there


def test_a_failing_body_fails_the_cell(tmp_path: Path):
    path = write(
        tmp_path / "fail.ipynb",
        ["%load_ext dsops_jupyter", "%%dsops step boom\nbefore = 1\n1 / 0", "after = 1"],
    )
    nb = execute(path, allow_errors=True)
    assert [e["ename"] for e in errors(nb.cells[1])] == ["ZeroDivisionError"]
    assert usage_errors(nb.cells[1]) == [
        "UsageError: %%dsops step boom: the cell failed (ZeroDivisionError)"
    ]
    with pytest.raises(CellExecutionError, match="boom"):
        execute(path)  # without allow_errors, "run all" stops at the failed step


# --- line magics -------------------------------------------------------------------------------
def test_steps_lists_the_saved_notebooks_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = write(tmp_path / "tiny.ipynb", TINY)
    driver = write(tmp_path / "driver.ipynb", ["%load_ext dsops_jupyter", "%dsops steps"])
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    out = text(execute(driver).cells[1])
    assert out.splitlines()[0] == "tiny: 2 step(s)"
    assert "load" in out and "train" in out
    assert "alpha: float = 0.5" in out


def test_steps_say_which_lines_drive_dsops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = write(tmp_path / "tiny.ipynb", [*TINY, "%dsops steps"])
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    out = text(execute(target).cells[-1])
    assert out.splitlines()[-1] == (
        "note: left out of pipelines, scripts and runs (they drive dsops itself): "
        f"cell 1 line 1 `%load_ext dsops_jupyter`, cell {len(TINY) + 1} line 1 `%dsops steps`"
    )


def test_session_path_relative_to_the_server_root(tmp_path: Path, monkeypatch):
    """JPY_SESSION_NAME relative to the server root; the kernel's cwd is the notebook folder."""
    shutil.copy(REPO_ROOT / "examples" / "wine_magics.ipynb", tmp_path / "nb.ipynb")
    target = tmp_path / "examples" / "wine_magics.ipynb"
    target.parent.mkdir()
    shutil.move(tmp_path / "nb.ipynb", target)
    driver = write(target.parent / "driver.ipynb", ["%load_ext dsops_jupyter", "%dsops steps"])
    monkeypatch.setenv("JPY_SESSION_NAME", "examples/wine_magics.ipynb")
    out = text(execute(driver).cells[1])
    for step in ("load", "features", "train", "evaluate"):
        assert step in out


def test_line_magics_without_a_session_say_so(tmp_path: Path):
    path = write(
        tmp_path / "nosession.ipynb",
        [
            "%load_ext dsops_jupyter",
            "%dsops steps",
            "%dsops frob",
            "%dsops run --colour red",
            "%dsops",
        ],
    )
    nb = execute(path, allow_errors=True)
    assert "%dsops run [-p NAME VALUE]... [--step NAME]..." in text(nb.cells[4])
    (error,) = usage_errors(nb.cells[1])
    assert "cannot tell which notebook this kernel belongs to" in error
    assert "unknown command 'frob'" in usage_errors(nb.cells[2])[0]
    assert "unrecognized arguments: --colour red" in usage_errors(nb.cells[3])[0]


def test_core_errors_show_as_one_line(tmp_path: Path, monkeypatch):
    target = write(
        tmp_path / "dup.ipynb", ["%%dsops step a\nx = 1", "%%dsops step b --after c\ny = 2"]
    )
    driver = write(tmp_path / "driver.ipynb", ["%load_ext dsops_jupyter", "%dsops steps"])
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    (error,) = usage_errors(execute(driver, allow_errors=True).cells[1])
    assert "dup.ipynb" in error


def test_run_magic_shows_progress_and_the_result(tmp_path: Path, monkeypatch):
    """`%dsops run` in a skip cell of the notebook itself: papermill runs it in another kernel."""
    target = write(
        tmp_path / "tiny.ipynb", [*TINY, "%%dsops skip\n%dsops run -p alpha 2 --step load"]
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    nb = execute(target)
    last = nb.cells[-1]
    assert any(WIDGET_VIEW in o.get("data", {}) for o in last.outputs), "a progress bar"
    out = text(last)
    assert "run succeeded" in out
    assert "load: done" in out and "train" not in out
    bars = [m for m in widget_models(nb) if m["_model_name"] == "FloatProgressModel"]
    assert [b["value"] for b in bars] == [1.0] and bars[0]["bar_style"] == "success"
    (record,) = tmp_path.glob(".dsops/runs/tiny/*/run.json")
    saved = json.loads(record.read_text())
    assert saved["parameters"]["alpha"] == 2.0 and saved["status"] == "succeeded"


# --- panel -------------------------------------------------------------------------------------
def test_panel_builds_typed_widgets(tmp_path: Path, monkeypatch):
    target = write(tmp_path / "tiny.ipynb", TINY)
    driver = write(tmp_path / "driver.ipynb", ["%load_ext dsops_jupyter", "%dsops panel"])
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    nb = execute(driver)
    (view,) = [o for o in nb.cells[1].outputs if WIDGET_VIEW in o.get("data", {})]
    models = widget_models(nb)
    root = widget_states(nb)[view["data"][WIDGET_VIEW]["model_id"]]
    assert root["_model_name"] == "VBoxModel"
    inputs = {m["description"]: m["_model_name"] for m in models if "description" in m}
    assert inputs["alpha"] == "FloatTextModel"
    assert inputs["rounds"] == "IntTextModel"
    assert inputs["label"] == "TextModel"
    assert inputs["verbose"] == "CheckboxModel"
    assert inputs["Run"] == inputs["Package"] == "ButtonModel"
    (steps,) = [m for m in models if m["_model_name"] == "SelectMultipleModel"]
    assert steps["_options_labels"] == ["load", "train"]
    assert any(m["_model_name"] == "FloatProgressModel" for m in models)
    assert any(m["_model_name"] == "OutputModel" for m in models)


def test_panel_run_button_runs_the_chosen_step(tmp_path: Path, monkeypatch):
    target = write(tmp_path / "tiny.ipynb", TINY)
    driver = write(
        tmp_path / "driver.ipynb",
        [
            "%load_ext dsops_jupyter",
            "p = %dsops panel\np",
            "p.inputs['alpha'].value = 4.0\np.steps.value = ('load',)\np.run_button.click()\n"
            "print(p.wait(300), p.error)\nprint(p.result['parameters']['alpha'])\n"
            "print([s['name'] for s in p.result['steps']])\nprint(p.progress.bar.value)",
        ],
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    out = text(execute(driver).cells[2]).splitlines()
    assert out == ["succeeded None", "4.0", "['load']", "1.0"]


# --- package -----------------------------------------------------------------------------------
def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_package_magic_commits_a_version(tmp_path: Path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Dsops Test")
    git(repo, "config", "user.email", "dsops-test@example.invalid")
    target = write(repo / "tiny.ipynb", TINY)
    git(repo, "add", "tiny.ipynb")
    git(repo, "commit", "-q", "-m", "tiny")
    driver = write(
        tmp_path / "driver.ipynb", ["%load_ext dsops_jupyter", "%dsops package --no-build"]
    )
    monkeypatch.setenv("JPY_SESSION_NAME", str(target))
    nb = execute(driver)
    out = text(nb.cells[1])
    assert "dsops/tiny/v1" in out and "new version" in out
    assert git(repo, "tag", "--list", "dsops/*") == "dsops/tiny/v1"
    assert (repo / "pipelines" / "tiny" / "tiny.py").is_file()
    again = text(execute(driver).cells[1])
    assert "unchanged, no new version" in again
