"""`dsops export --to airflow`: the DAG file Airflow parses, and a real run with DockerOperator.

The parse tests load the generated file with Airflow's own DagBag (no import error, the params,
tags and task edges as the notebook says). The docker test packages the example into an image on
the suite's private dockerd, exports it and runs ``dag.test()`` in a subprocess with its own
AIRFLOW_HOME (SQLite), each step a container; the metrics the last step writes must equal
papermill's on the same notebook and parameters.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsops_jupyter.export import airflow as engine
from dsops_jupyter.export import build_context, export, metric_names
from dsops_jupyter.export.source import ImageRef, latest_version, version_spec
from dsops_jupyter.model import RunOptions
from dsops_jupyter.vcs import commit_package
from tests.helpers import (
    assert_ok,
    clean_env,
    copy_example,
    dsops,
    git,
    init_repo,
    json_error,
    with_pandas_import,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
# Loads the DAG folder with Airflow's DagBag and prints what a test compares, as JSON.
DAGBAG = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "params": {k: [dag.params.get_param(k).value, dag.params.get_param(k).schema]
                   for k in dag.params},
        "tags": sorted(dag.tags),
        "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "mapped": sorted(t.task_id for t in dag.tasks if type(t).__name__ == "MappedOperator"),
        "expand": {t.task_id: t.expand_input.value for t in dag.tasks
                   if type(t).__name__ == "MappedOperator"},
    }
print("DAGBAG " + json.dumps(out, default=str))
"""
# Runs the DAG in the folder with dag.test(), the run's conf from argv; prints the run's state.
DAG_TEST = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
dag = bag.dags[sys.argv[2]]
run = dag.test(run_conf=json.loads(sys.argv[3]))
print("DAGRUN " + json.dumps({"state": str(run.state), "run_id": run.run_id}))
"""


def airflow_env(home: Path, dags: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONPATH=str(REPO_ROOT),
        **extra,
    )


def python(code: str, *args: str, env: dict[str, str], timeout: float = 600) -> dict:
    """Run ``code`` in a fresh interpreter; the JSON after its marker line."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    marker = code.split('print("')[-1].split(" ")[0]
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker + " ")]
    log = f"exit {done.returncode}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
    assert lines, log
    return {**json.loads(lines[-1].split(" ", 1)[1]), "log": log}


def committed(tmp_path: Path, example: str = "wine.ipynb") -> Path:
    """A Git project with ``example`` converted and committed as version v1 (no image)."""
    from dsops_jupyter.assemble import generate_package

    repo = init_repo(tmp_path / "project", commit=False)
    notebook = copy_example(example, repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "notebook")
    commit_package(generate_package(notebook))
    return notebook


def render_dag(notebook: Path, out: Path, grid: list[str] | None = None, **options: str) -> Path:
    """The DAG file for ``notebook``'s latest version with a stand-in image reference."""
    version, package_dir = latest_version(notebook)
    spec = version_spec(notebook, version, package_dir)
    ctx = build_context(
        spec,
        image=ImageRef("wine:v1"),
        version=version,
        rule=engine.NAME_RULE,
        metrics=metric_names(notebook),
        grid=grid,
    )
    ctx.options = dict(options)
    out.mkdir(parents=True, exist_ok=True)
    for name, data in engine.render(ctx).items():
        (out / name).write_bytes(data)
    return out / engine.MAIN_FILE


def ruff_clean(path: Path) -> None:
    for args in (["check"], ["format", "--check"]):
        done = subprocess.run(
            ["ruff", *args, "--config", str(REPO_ROOT / "pyproject.toml"), str(path)],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_dag_file_parses_with_params_tags_and_the_notebooks_edges(tmp_path: Path) -> None:
    notebook = committed(tmp_path)
    dag_file = render_dag(notebook, tmp_path / "dags")
    ruff_clean(dag_file)
    again = render_dag(notebook, tmp_path / "again")
    assert again.read_bytes() == dag_file.read_bytes(), "deterministic"
    bag = python(DAGBAG, str(dag_file.parent), env=airflow_env(tmp_path / "home", dag_file.parent))
    assert bag["errors"] == {}
    dag = bag["dags"]["dsops_wine"]
    version, _ = latest_version(notebook)
    assert dag["tags"] == sorted(
        ["dsops", "pipeline:wine", version.tag, f"commit:{version.commit}"]
    )
    assert dag["params"] == {
        "test_size": [0.25, {"type": "number"}],
        "alpha": [1.0, {"type": "number"}],
        "seed": [42, {"type": "integer"}],
        "output_dir": ["outputs", {"type": "string"}],
    }
    # train runs after:features; evaluate reads the model (train), the split (features) and
    # class_names (load): data edges and `after` edges alike.
    assert dag["upstream"] == {
        "prepare": [],
        "load": ["prepare"],
        "features": ["load"],
        "train": ["features"],
        "evaluate": ["features", "load", "train"],
    }
    assert dag["mapped"] == []
    text = dag_file.read_text()
    assert '"--alpha={{ params.alpha }}"' in text and version.commit in text


def test_a_grid_maps_every_step_over_the_parameter_sets(tmp_path: Path) -> None:
    notebook = committed(tmp_path)
    dag_file = render_dag(notebook, tmp_path / "dags", ["alpha=0.1,1000", "seed=1,2"])
    ruff_clean(dag_file)
    bag = python(DAGBAG, str(dag_file.parent), env=airflow_env(tmp_path / "home", dag_file.parent))
    assert bag["errors"] == {}
    dag = bag["dags"]["dsops_wine"]
    assert dag["mapped"] == ["evaluate", "features", "load", "train"]
    sets = json.loads(json.dumps(dag["expand"]["train"]))
    commands = [kwargs["command"] for kwargs in sets] if isinstance(sets, list) else sets
    assert len(commands) == 4
    swept = [[a for a in c if a.startswith(("--alpha=", "--seed="))] for c in commands]
    assert swept == [
        ["--alpha=0.1", "--seed=1"],
        ["--alpha=0.1", "--seed=2"],
        ["--alpha=1000.0", "--seed=1"],
        ["--alpha=1000.0", "--seed=2"],
    ]
    workdirs = [c[c.index("--workdir") + 1] for c in commands]
    assert workdirs == [f"/work/grid-00{i}/artifacts" for i in range(1, 5)]
    assert all("--test-size={{ params.test_size }}" in c for c in commands)


def test_the_kubernetes_variant_is_valid_python_with_pods_and_a_shared_claim(
    tmp_path: Path,
) -> None:
    """The cncf.kubernetes provider is not installed here: the file is checked as source."""
    notebook = committed(tmp_path)
    dag_file = render_dag(notebook, tmp_path / "dags", airflow_operator="k8s")
    ruff_clean(dag_file)
    tree = ast.parse(dag_file.read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "airflow.providers.cncf.kubernetes.operators.pod" in imported
    assert "airflow.providers.docker.operators.docker" not in imported
    text = dag_file.read_text()
    assert 'sub_path_expr="$(DSOPS_RUN_DIR)"' in text and "claim_name=SHARED_CLAIM" in text


def test_bad_airflow_options_are_one_line(tmp_path: Path) -> None:
    notebook = committed(tmp_path)
    with pytest.raises(Exception) as caught:
        render_dag(notebook, tmp_path / "d", airflow_operator="celery")
    assert str(caught.value) == "unknown Airflow operator 'celery'; choose docker or k8s"
    with pytest.raises(Exception) as caught:
        render_dag(notebook, tmp_path / "d", airflow_operator="k8s", artifacts="s3://b/p")
    assert "an object-store URI needs --airflow-operator docker" in str(caught.value)


def test_without_airflow_the_export_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['airflow'] = None\n"
        "from dsops_jupyter.errors import DsopsError\n"
        "from dsops_jupyter.export import export\n"
        "try:\n    export(sys.argv[1], 'airflow')\n"
        "except DsopsError as err:\n    print('ERROR', err)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(REPO_ROOT / "examples" / "wine.ipynb")],
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=str(REPO_ROOT)),
        timeout=120,
    )
    assert done.stdout.splitlines() == [
        "ERROR exporting to airflow needs the airflow package, which is not installed: "
        "pip install dsops-jupyter[airflow]"
    ], done.stderr


@dataclass
class Packaged:
    """An example packaged into an image on the private dockerd, and how long that took."""

    notebook: Path
    build_seconds: float


def package_example(
    folder: Path, example: str, base_image: str, prepare: Callable[[Path], None] | None = None
) -> Packaged:
    from dsops_jupyter.model import PackageOptions
    from dsops_jupyter.package import package_notebook

    repo = init_repo(folder, commit=False)
    notebook = copy_example(example, repo)
    (repo / ".gitignore").write_text("outputs/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", example)
    if prepare is not None:
        prepare(notebook)
    started = time.perf_counter()
    package_notebook(notebook, PackageOptions(base_image=base_image))
    return Packaged(notebook, time.perf_counter() - started)


@pytest.fixture(scope="module")
def wine_image(docker_base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Packaged:
    return package_example(tmp_path_factory.mktemp("wine"), "wine.ipynb", docker_base_image)


def papermill_metrics(notebook: Path, folder: Path, conf: dict) -> tuple[dict, float]:
    """``outputs/metrics.json`` of a `dsops run` (papermill) with ``conf``, and its seconds."""
    from dsops_jupyter.execute import run_notebook

    started = time.perf_counter()
    (folder / "cwd").mkdir(parents=True)
    options = RunOptions(parameters=conf, cwd=folder / "cwd", out_dir=folder / "run")
    run_notebook(notebook, options)
    seconds = time.perf_counter() - started
    return json.loads((folder / "cwd" / "outputs" / "metrics.json").read_text()), seconds


def dag_test(dags: Path, dag_id: str, conf: dict, home: Path, **env: str) -> float:
    """``airflow db migrate``, then ``dag.test()`` in a subprocess; the run's seconds."""
    environment = airflow_env(home, dags, **env)
    migrate = subprocess.run(
        ["airflow", "db", "migrate"], capture_output=True, text=True, env=environment, timeout=600
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    started = time.perf_counter()
    run = python(DAG_TEST, str(dags), dag_id, json.dumps(conf), env=environment)
    assert run["state"] == "success", run["log"]
    return time.perf_counter() - started


def only_child(folder: Path) -> Path:
    children = list(folder.iterdir())
    assert len(children) == 1, children
    return children[0]


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_dag_test_runs_each_step_in_a_container_with_papermills_metrics(
    wine_image: Packaged, tmp_path: Path
) -> None:
    notebook = wine_image.notebook
    result = export(notebook, "airflow", out_dir=tmp_path / "dags")
    assert result.path == tmp_path / "dags" / "dag.py"
    ruff_clean(result.path)
    conf = {"alpha": 1000.0, "seed": 7}
    expected, papermill_seconds = papermill_metrics(notebook, tmp_path / "pm", conf)
    assert expected["alpha"] == 1000.0

    shared = tmp_path / "shared"
    seconds = dag_test(
        tmp_path / "dags", "dsops_wine", conf, tmp_path / "home", DSOPS_SHARED_DIR=str(shared)
    )
    run_dir = only_child(shared / "dsops_wine")
    assert ":" not in run_dir.name and "+" not in run_dir.name
    assert json.loads((run_dir / "outputs" / "metrics.json").read_text()) == expected
    stored = {p.name.split(".")[0] for p in (run_dir / "artifacts").iterdir()}
    assert {"model", "X_test", "y_test"} <= stored
    print(
        f"\n  wine build {wine_image.build_seconds:.1f} s; dsops run {papermill_seconds:.1f} s; "
        f"airflow dag.test, 4 containers: {seconds:.1f} s ({seconds / papermill_seconds:.1f}x)"
    )


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_a_grid_through_an_object_store_gives_papermills_metrics_per_set(
    wine_image: Packaged, tmp_path: Path
) -> None:
    """Dynamic task mapping over two alphas; the run's folders go through a file:// store."""
    notebook = wine_image.notebook
    store = tmp_path / "store"
    export(
        notebook,
        "airflow",
        out_dir=tmp_path / "dags",
        grid=["alpha=0.1,1000"],
        options={"artifacts": f"file://{store}"},
    )
    conf = {"seed": 7}
    seconds = dag_test(
        tmp_path / "dags",
        "dsops_wine",
        conf,
        tmp_path / "home",
        DSOPS_SHARED_DIR=str(tmp_path / "shared"),
    )
    run_dir = only_child(store / "dsops_wine")
    for index, alpha in enumerate((0.1, 1000.0), 1):
        expected, _ = papermill_metrics(notebook, tmp_path / f"pm{index}", {**conf, "alpha": alpha})
        stored = run_dir / f"grid-00{index}" / "outputs" / "metrics.json"
        assert json.loads(stored.read_text()) == expected
    print(f"\n  airflow dag.test, grid of 2 (8 containers): {seconds:.1f} s")


@pytest.mark.docker
def test_cli_export_chooses_the_operator_and_refuses_k8s_with_a_store(
    wine_image: Packaged, tmp_path: Path
) -> None:
    notebook = wine_image.notebook
    args = ("export", notebook, "--to", "airflow", "--airflow-operator", "k8s")
    assert_ok(dsops(*args, "--out", tmp_path / "k8s", cwd=tmp_path))
    text = (tmp_path / "k8s" / "dag.py").read_text()
    assert "KubernetesPodOperator(" in text and "DockerOperator" not in text
    store = ("--artifacts", "s3://b/p", "--out", tmp_path / "x", "--json")
    line = json_error(dsops(*args, *store, cwd=tmp_path))
    assert "an object-store URI needs --airflow-operator docker" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.docker
@pytest.mark.timeout(2400)
def test_a_kale_tagged_notebook_runs_with_papermills_metrics(
    docker_base_image: str, tmp_path: Path
) -> None:
    """iris_kale: Kale's block:/prev: tags and pipeline-parameters, read unchanged (plus the
    pandas import its image needs, see with_pandas_import)."""
    packaged = package_example(
        tmp_path / "iris", "iris_kale.ipynb", docker_base_image, prepare=with_pandas_import
    )
    export(packaged.notebook, "airflow", out_dir=tmp_path / "dags")
    conf = {"max_depth": 1}
    expected, _ = papermill_metrics(packaged.notebook, tmp_path / "pm", conf)
    assert expected["accuracy"] == 0.666667  # examples/README.md
    shared = tmp_path / "shared"
    dag_test(
        tmp_path / "dags", "dsops_iris_kale", conf, tmp_path / "home", DSOPS_SHARED_DIR=str(shared)
    )
    run_dir = only_child(shared / "dsops_iris_kale")
    assert json.loads((run_dir / "outputs" / "metrics.json").read_text()) == expected
