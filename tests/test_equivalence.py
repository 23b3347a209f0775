"""The heart of the product: the converted script computes what papermill computes.

For every example notebook: papermill (through execute.run_notebook) and the generated script,
with the default parameters and with one changed parameter, and the script run one step at a
time through a workdir; the metrics.json the last step writes must be equal. All runs of the
module start at once in a small thread pool (kernels and scripts are separate processes), which
keeps the module to about the time of its slowest chain.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.assemble import convert
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import RunOptions
from dsops_jupyter.runtime import artifacts
from tests.helpers import EXAMPLE_NOTEBOOKS, copy_example, run_jobs, run_python

# One parameter per notebook whose change moves the metrics (see examples/README.md).
CHANGED = {
    "wine.ipynb": ("alpha", "1000", 1000.0),
    "wine_magics.ipynb": ("alpha", "1000", 1000.0),
    "iris_kale.ipynb": ("max_depth", "1", 1),
}
METRICS = Path("outputs") / "metrics.json"


def papermill_metrics(notebook: Path, parameters: dict[str, str], cwd: Path) -> dict[str, Any]:
    cwd.mkdir()
    record = run_notebook(notebook, RunOptions(parameters=parameters, out_dir=cwd / "run", cwd=cwd))
    assert record.status == "succeeded"
    return json.loads((cwd / METRICS).read_text(encoding="utf-8"))


def script_metrics(script: Path, args: list[str], cwd: Path) -> dict[str, Any]:
    cwd.mkdir()
    done = run_python(script, *args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return json.loads((cwd / METRICS).read_text(encoding="utf-8"))


def stepwise_metrics(script: Path, order: list[str], cwd: Path) -> dict[str, Any]:
    """One process per step, in run order, passing data only through the workdir."""
    cwd.mkdir()
    for step in order:
        done = run_python(script, "--step", step, "--workdir", "work", cwd=cwd)
        assert done.returncode == 0, f"step {step}: {done.stderr}"
        assert (cwd / METRICS).exists() == (step == order[-1]), f"metrics before {step} ended"
    return json.loads((cwd / METRICS).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict | str]:
    root = tmp_path_factory.mktemp("equivalence")
    jobs: dict[tuple[str, str], tuple[Callable[..., dict], tuple]] = {}
    for name in EXAMPLE_NOTEBOOKS:
        folder = root / Path(name).stem
        notebook = copy_example(name, folder)
        pkg = convert(notebook)
        script = pkg.directory / f"{pkg.name}.py"
        order = json.loads(pkg.files["pipeline.json"])["order"]
        param, text, _ = CHANGED[name]
        flag = f"--{param.replace('_', '-')}"
        jobs[(name, "papermill")] = (papermill_metrics, (notebook, {}, folder / "pm"))
        jobs[(name, "papermill-changed")] = (
            papermill_metrics,
            (notebook, {param: text}, folder / "pm-changed"),
        )
        jobs[(name, "script")] = (script_metrics, (script, [], folder / "script"))
        jobs[(name, "script-changed")] = (
            script_metrics,
            (script, [flag, text], folder / "script-changed"),
        )
        jobs[(name, "stepwise")] = (stepwise_metrics, (script, order, folder / "stepwise"))
    found = run_jobs(jobs)
    for name in EXAMPLE_NOTEBOOKS:  # what the stepwise run handed on, and how it was stored
        stored = artifacts.entries(root / Path(name).stem / "stepwise" / "work")
        found[(name, "formats")] = {artifact: e["format"] for artifact, e in stored.items()}
    return found


def metrics(runs: dict, notebook: str, kind: str) -> dict[str, Any]:
    found = runs[(notebook, kind)]
    assert isinstance(found, dict), f"{kind} run of {notebook} failed: {found}"
    return found


@pytest.mark.parametrize("notebook", EXAMPLE_NOTEBOOKS)
def test_script_equals_papermill_with_defaults(runs: dict, notebook: str) -> None:
    assert metrics(runs, notebook, "script") == metrics(runs, notebook, "papermill")


@pytest.mark.parametrize("notebook", EXAMPLE_NOTEBOOKS)
def test_script_equals_papermill_with_a_changed_parameter(runs: dict, notebook: str) -> None:
    changed = metrics(runs, notebook, "papermill-changed")
    assert metrics(runs, notebook, "script-changed") == changed
    param, _, value = CHANGED[notebook]
    assert changed[param] == value and type(changed[param]) is type(value)
    assert changed != metrics(runs, notebook, "papermill"), "the parameter changed nothing"
    assert changed["accuracy"] != metrics(runs, notebook, "papermill")["accuracy"]


@pytest.mark.parametrize("notebook", EXAMPLE_NOTEBOOKS)
def test_stepwise_script_equals_papermill(runs: dict, notebook: str) -> None:
    assert metrics(runs, notebook, "stepwise") == metrics(runs, notebook, "papermill")


def test_stepwise_hands_values_on_in_typed_formats(runs: dict) -> None:
    """wine's steps pass DataFrames and Series (Parquet), arrays (.npy), an estimator (joblib)
    and a list of names (JSON): no value needed the cloudpickle fallback."""
    assert runs[("wine.ipynb", "formats")] == {
        "df": "parquet",
        "y_train": "parquet",
        "y_test": "parquet",
        "X_train": "npy",
        "X_test": "npy",
        "model": "joblib",
        "class_names": "json",
    }


def test_the_examples_agree_with_their_readme(runs: dict) -> None:
    """Known figures (examples/README.md): guards against every run being equally wrong."""
    assert metrics(runs, "wine.ipynb", "papermill")["accuracy"] == 1.0
    assert metrics(runs, "wine.ipynb", "papermill-changed")["accuracy"] == 0.955556
    assert metrics(runs, "iris_kale.ipynb", "papermill")["accuracy"] == 0.955556
    assert metrics(runs, "iris_kale.ipynb", "papermill-changed")["accuracy"] == 0.666667
