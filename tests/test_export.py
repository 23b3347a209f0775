"""`dsops export`: KFP v2 and Argo pipelines of a committed version, and what they refuse.

Without an engine: the compiled KFP IR and the Argo Workflow of the wine and Kale examples are
checked against the version's own pipeline.json (tasks, artifact edges, typed parameters,
Kale extras, the version in the metadata), the Workflow round-trips through hera's models, and
the one-line errors (engine package missing, bad names sanitised). With the test dockerd: the
version's image is built, the exported pipeline runs under kfp.local's DockerRunner, one
container per step, and the metrics the last step writes equal papermill's on the notebook.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsops_jupyter.export import ImageRef, build_context, metric_names
from dsops_jupyter.export import kfp as kfp_engine
from dsops_jupyter.export.source import latest_version, version_spec
from dsops_jupyter.model import PackageOptions
from dsops_jupyter.package import package_notebook
from tests.helpers import (
    assert_ok,
    clean_env,
    copy_example,
    dsops,
    error_line,
    git,
    init_repo,
    make_notebook,
    papermill_results,
    with_pandas_import,
)

SLOW = pytest.mark.timeout(2400)
ROOT = Path(__file__).resolve().parent.parent


def example_repo(folder: Path, example: str) -> Path:
    """A Git project holding one example notebook, committed."""
    repo = init_repo(folder, commit=False)
    notebook = copy_example(example, repo)
    (repo / ".gitignore").write_text("outputs/\n__pycache__/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", example)
    return notebook


def committed(folder: Path, example: str) -> tuple[Path, dict[str, Any], Any]:
    """The example with a version (no image): its notebook, committed spec and version."""
    notebook = example_repo(folder, example)
    assert_ok(dsops("commit", notebook, cwd=notebook.parent))
    version, package_dir = latest_version(notebook)
    return notebook, version_spec(notebook, version, package_dir), version


def kfp_documents(ctx: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The compiled pipeline spec and its Kubernetes platform spec."""
    docs = list(yaml.safe_load_all(kfp_engine.render(ctx)["pipeline.yaml"]))
    return docs[0], docs[1]["platforms"]["kubernetes"]


# --- KFP: compiled structure ---------------------------------------------------------------------
@pytest.mark.parametrize("example", ["wine.ipynb", "iris_kale.ipynb"])
def test_kfp_pipeline_follows_the_versions_spec(tmp_path: Path, example: str) -> None:
    notebook, spec, version = committed(tmp_path / "p", example)
    ctx = build_context(
        spec,
        image=ImageRef("registry.example/x@sha256:" + "a" * 64),
        version=version,
        rule=kfp_engine.NAME_RULE,
        metrics=metric_names(notebook),
    )
    pipeline, platform = kfp_documents(ctx)
    tasks = pipeline["root"]["dag"]["tasks"]
    by_step = {task["taskInfo"]["name"]: task for task in tasks.values()}
    assert list(by_step) == [s["name"] for s in spec["steps"]] or set(by_step) == {
        s["name"] for s in spec["steps"]
    }
    producers = {}
    for step in spec["steps"]:
        task = by_step[step["name"]]
        edges = task.get("inputs", {}).get("artifacts", {})
        expected = {n: producers[n] for n in step["inputs"] if n in producers}
        got = {n: e["taskOutputArtifact"]["producerTask"] for n, e in edges.items()}
        assert got == {n: ctx.names[p] and _task_key(tasks, p) for n, p in expected.items()}
        params = task.get("inputs", {}).get("parameters", {})
        assert set(params) == set(step["parameters"])
        producers.update({n: step["name"] for n in step["outputs"]})
        executor = pipeline["deploymentSpec"]["executors"][
            pipeline["components"][task["componentRef"]["name"]]["executorLabel"]
        ]["container"]
        assert executor["image"] == ctx.image.reference
        assert executor["command"][executor["command"].index("--step") + 1] == step["name"]
        assert "{{$}}" in executor["command"]
    kinds = {"int": "NUMBER_INTEGER", "float": "NUMBER_DOUBLE", "str": "STRING"}
    declared = pipeline["root"]["inputDefinitions"]["parameters"]
    for param in spec["parameters"]:
        assert declared[param["name"]]["parameterType"] == kinds[param["type"]]
        assert declared[param["name"]]["defaultValue"] == param["default"]
    assert version.tag in pipeline["pipelineInfo"]["description"]
    assert version.commit in pipeline["pipelineInfo"]["description"]
    for executor in platform["deploymentSpec"]["executors"].values():
        labels = executor["podMetadata"]["labels"]
        assert labels["dsops.io/commit"] == version.commit
        assert executor["podMetadata"]["annotations"]["dsops.io/tag"] == version.tag


def _task_key(tasks: dict[str, Any], step: str) -> str:
    return next(key for key, task in tasks.items() if task["taskInfo"]["name"] == step)


def test_kfp_maps_kale_extras_and_metrics(tmp_path: Path) -> None:
    notebook, spec, version = committed(tmp_path / "p", "iris_kale.ipynb")
    ctx = build_context(
        spec,
        image=ImageRef("iris_kale:v1"),
        version=version,
        rule=kfp_engine.NAME_RULE,
        metrics=metric_names(notebook),
    )
    pipeline, platform = kfp_documents(ctx)
    train = next(s for s in spec["steps"] if s["extras"].get("limit"))
    memory = train["extras"]["limit"][0].split(":", 1)[1]
    executors = pipeline["deploymentSpec"]["executors"]
    limited = [e for e in executors.values() if e["container"].get("resources")]
    assert [e["container"]["resources"]["resourceMemoryLimit"] for e in limited] == [memory]
    kale_image = train["extras"]["image"][0]
    annotated = [
        e["podMetadata"]["annotations"]
        for e in platform["deploymentSpec"]["executors"].values()
        if "dsops.io/kale-image" in e["podMetadata"]["annotations"]
    ]
    assert [a["dsops.io/kale-image"] for a in annotated] == [kale_image]
    assert any(kale_image in note for note in ctx.notes)
    last = pipeline["components"][f"comp-{_component_of(pipeline, spec['steps'][-1]['name'])}"]
    outputs = last["outputDefinitions"]["artifacts"]
    assert outputs[kfp_engine.METRICS_OUTPUT]["artifactType"]["schemaTitle"] == "system.Metrics"
    command = executors[last["executorLabel"]]["container"]["command"]
    names = command[command.index("--metric-names") + 1].split(",")
    assert names == metric_names(notebook) and names


def _component_of(pipeline: dict[str, Any], step: str) -> str:
    task = next(
        t for t in pipeline["root"]["dag"]["tasks"].values() if t["taskInfo"]["name"] == step
    )
    return task["componentRef"]["name"].removeprefix("comp-")


def test_kfp_grid_is_a_parallel_for_over_every_combination(tmp_path: Path) -> None:
    _, spec, version = committed(tmp_path / "p", "wine.ipynb")
    ctx = build_context(
        spec,
        image=ImageRef("wine:v1"),
        version=version,
        rule=kfp_engine.NAME_RULE,
        grid=["alpha=0.1,0.5,1", "seed=1,2"],
    )
    pipeline, _ = kfp_documents(ctx)
    (loop,) = pipeline["root"]["dag"]["tasks"].values()
    items = json.loads(loop["parameterIterator"]["items"]["raw"])
    assert len(items) == 6
    # as the script's options read them (a float parameter given as 1 is 1.0)
    assert {(i["alpha"], i["seed"]) for i in items} == {
        (a, s) for a in ("0.1", "0.5", "1.0") for s in ("1", "2")
    }


def test_package_export_option_on_every_surface() -> None:
    from dsops_jupyter.errors import OptionsError
    from dsops_jupyter.magics import _package_parser
    from dsops_jupyter.server.handlers import job_options

    options = PackageOptions(export="argo")
    assert options.stage_plan() == [*PackageOptions().stage_plan(), "Exporting"]
    assert PackageOptions.from_json(json.loads(json.dumps(options.to_json()))) == options
    with pytest.raises(OptionsError, match="choose one of kfp, airflow, argo"):
        PackageOptions(export="spark")
    with pytest.raises(OptionsError, match="drop --no-build and --output"):
        PackageOptions(build=False, export="kfp")
    assert job_options("package", {"export": "kfp", "build": True}) == PackageOptions(export="kfp")
    assert vars(_package_parser().parse_args(["--export", "airflow"]))["export"] == "airflow"


# --- bad input -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("engine", "module"), [("kfp", "kfp"), ("argo", "hera")])
def test_a_missing_engine_package_is_one_line_naming_the_extra(
    tmp_path: Path, engine: str, module: str
) -> None:
    notebook = example_repo(tmp_path / "p", "wine.ipynb")
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from dsops_jupyter.cli import main\n"
        f"sys.exit(main(['export', {str(notebook)!r}, '--to', {engine!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    line = error_line(done)
    assert line.endswith(f"pip install dsops-jupyter[{engine}]")
    assert module in line


def test_step_names_an_engine_refuses_are_sanitised_and_recorded(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "p", commit=False)
    notebook = make_notebook(
        repo / "odd.ipynb",
        [
            ("n: int = 2", ["parameters"]),
            ("Raw_Data = list(range(n))", ["step:Raw_Data"]),
            ("raw_data = [x * 2 for x in Raw_Data]", ["step:raw_data"]),
            ("total = sum(raw_data)\nprint(total)", ["step:" + "very_long_" * 9 + "name"]),
        ],
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd")
    assert_ok(dsops("commit", notebook, cwd=repo))
    version, package_dir = latest_version(notebook)
    spec = version_spec(notebook, version, package_dir)
    ctx = build_context(spec, image=ImageRef("odd:v1"), version=version, rule=kfp_engine.NAME_RULE)
    names = ctx.names
    assert set(names) == {s["name"] for s in spec["steps"]}
    assert len(set(names.values())) == len(names)  # Raw_Data and raw_data stay two tasks
    assert all(len(v) <= 63 and v == v.lower() and "_" not in v for v in names.values())
    recorded = json.loads(kfp_engine.render(ctx)["names.json"])
    assert recorded["names"] == names
    assert any("Raw_Data ->" in note for note in ctx.notes)
    pipeline, _ = kfp_documents(ctx)
    shown = {t["taskInfo"]["name"] for t in pipeline["root"]["dag"]["tasks"].values()}
    assert shown == set(names)  # the display names keep the notebook's step names


@pytest.mark.docker
def test_an_image_that_does_not_exist_is_one_line(docker_engine: object, tmp_path: Path) -> None:
    notebook = example_repo(tmp_path / "p", "wine.ipynb")
    assert_ok(dsops("commit", notebook, cwd=notebook.parent))
    env = clean_env(DOCKER_HOST=os.environ["DOCKER_HOST"])
    missing = dsops("export", notebook, "--to", "kfp", cwd=notebook.parent, env=env)
    assert "no image of wine v1" in error_line(missing, 1)
    given = dsops(
        "export", notebook, "--to", "kfp", "--image", "nosuch/wine:v9", cwd=notebook.parent, env=env
    )
    assert error_line(given, 1).startswith("error: image nosuch/wine:v9 does not exist")
    assert not (notebook.parent / "pipelines" / "wine" / "kfp").exists()


# --- KFP: a real local run -----------------------------------------------------------------------
def run_kfp_locally(pipeline_yaml: Path, root: Path, **arguments: Any) -> tuple[Any, float]:
    """The compiled pipeline under kfp.local's DockerRunner (DOCKER_HOST: the test dockerd),
    its artifacts under ``root``."""
    from kfp import components, local

    local.init(
        # kfp.local hands a component's command to docker as CMD, after the image's ENTRYPOINT
        # (the script); a KFP backend runs the command as given. Clear the entrypoint here, and
        # run as this user so the steps can write into the pipeline root.
        runner=local.DockerRunner(
            network_mode="none", entrypoint=[""], user=f"{os.getuid()}:{os.getgid()}"
        ),
        pipeline_root=str(root),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(pipeline_yaml))
    start = time.perf_counter()
    task = pipeline(**arguments)
    return task, time.perf_counter() - start


ARTIFACT_FROM = r"\{\{tasks\.([\w-]+)\.outputs\.artifacts\.\w+\}\}"


def _substitute(text: str, params: dict[str, str]) -> str:
    """Argo's ``{{inputs.parameters.NAME}}`` replaced by the task's values."""
    return re.sub(r"\{\{inputs\.parameters\.(\w+)\}\}", lambda m: params[m[1]], text)


def run_argo_dag(workflow: dict[str, Any], root: Path, **arguments: str) -> Path:
    """What Argo does with the workflow's ``pipeline`` DAG, minus Kubernetes: each task's
    template runs as a container on the test dockerd (its command replacing the entrypoint, as in
    a pod), its input artifacts mounted at their paths from the producers' outputs, its outputs
    collected from ``/tmp/dsops/out``. Returns the folder holding every task's outputs."""
    import docker

    client = docker.from_env()
    templates = {t["name"]: t for t in workflow["spec"]["templates"]}
    values = {p["name"]: p["value"] for p in workflow["spec"]["arguments"]["parameters"]}
    values.update(arguments)
    for task in templates["pipeline"]["dag"]["tasks"]:  # written in run order
        template = templates[task["template"]]
        given = task.get("arguments", {})
        params = {p["name"]: values[p["name"]] for p in given.get("parameters", [])}
        command = [_substitute(part, params) for part in template["container"]["command"]]
        out = root / task["name"]
        out.mkdir(parents=True)
        volumes = {str(out): {"bind": "/tmp/dsops/out", "mode": "rw"}}
        paths = {a["name"]: a["path"] for a in template.get("inputs", {}).get("artifacts", [])}
        for artifact in given.get("artifacts", []):
            producer = re.fullmatch(
                r"\{\{tasks\.([\w-]+)\.outputs\.artifacts\.\w+\}\}", artifact["from"]
            )
            assert producer is not None, artifact
            source = root / producer[1] / artifact["name"]
            volumes[str(source)] = {"bind": paths[artifact["name"]], "mode": "ro"}
        client.containers.run(
            template["container"]["image"],
            entrypoint=command,
            user="0",
            network_mode="none",
            volumes=volumes,
            remove=True,
        )
    return root


@SLOW
@pytest.mark.docker
@pytest.mark.parametrize(
    ("example", "parameter", "value"),
    [("wine.ipynb", "alpha", 0.5), ("iris_kale.ipynb", "max_depth", 2)],
)
def test_exported_pipelines_run_in_containers_with_papermills_metrics(
    docker_base_image: str, tmp_path: Path, example: str, parameter: str, value: float
) -> None:
    """The version's image built, exported to KFP (wine: by `package --export`; iris_kale: by
    `dsops export`) and run by kfp.local, and exported to Argo and its DAG run container by
    container: the metrics the last step writes equal papermill's with the same parameter."""
    notebook = example_repo(tmp_path / "p", example)
    if example == "iris_kale.ipynb":
        with_pandas_import(notebook)
    export = "kfp" if example == "wine.ipynb" else None
    result = package_notebook(notebook, PackageOptions(base_image=docker_base_image, export=export))
    assert result.image is not None and result.version is not None
    env = clean_env(DOCKER_HOST=os.environ["DOCKER_HOST"])
    if result.exported is None:
        exported = dsops("export", notebook, "--to", "kfp", "--json", cwd=notebook.parent, env=env)
        data = json.loads(assert_ok(exported).stdout)
    else:
        data = result.exported
    assert data["image_id"] == result.image.id
    assert data["version"]["commit"] == result.version.commit
    pipeline_yaml = Path(data["path"])
    assert pipeline_yaml == result.package_dir / "kfp" / "pipeline.yaml"

    start = time.perf_counter()
    expected = papermill_results(notebook, tmp_path / "papermill", {parameter: value})
    papermill_seconds = time.perf_counter() - start
    expected_metrics = json.loads(expected["outputs/metrics.json"])
    task, kfp_seconds = run_kfp_locally(pipeline_yaml, tmp_path / "kfp", **{parameter: value})
    print(
        f"\n{example}: kfp.local DockerRunner {kfp_seconds:.1f}s, "
        f"dsops run (papermill) {papermill_seconds:.1f}s, "
        f"ratio {kfp_seconds / papermill_seconds:.2f}"
    )
    written = Path(task.outputs[kfp_engine.FILES_OUTPUT].path)
    assert json.loads((written / "outputs" / "metrics.json").read_text()) == expected_metrics
    names = metric_names(notebook)
    if names:
        logged = task.outputs[kfp_engine.METRICS_OUTPUT].metadata
        assert logged == {name: pytest.approx(float(expected_metrics[name])) for name in names}

    argo = assert_ok(
        dsops("export", notebook, "--to", "argo", "--json", cwd=notebook.parent, env=env)
    )
    workflow = yaml.safe_load(Path(json.loads(argo.stdout)["path"]).read_text())
    outputs = run_argo_dag(workflow, tmp_path / "argo", **{parameter: str(value)})
    pipeline = next(t for t in workflow["spec"]["templates"] if t["name"] == "pipeline")
    last = outputs / pipeline["dag"]["tasks"][-1]["name"]
    assert json.loads((last / "dsops-files" / "outputs" / "metrics.json").read_text()) == (
        expected_metrics
    )
    if names:
        argo_metrics = json.loads((last / "dsops-metrics.json").read_text())
        assert argo_metrics == {n: pytest.approx(float(expected_metrics[n])) for n in names}


# --- Argo: structure and schema ------------------------------------------------------------------
def argo_workflow(ctx: Any) -> dict[str, Any]:
    from dsops_jupyter.export import argo as argo_engine

    return yaml.safe_load(argo_engine.render(ctx)["workflow.yaml"])


@pytest.mark.parametrize("example", ["wine.ipynb", "iris_kale.ipynb"])
def test_argo_workflow_follows_the_spec_and_validates(tmp_path: Path, example: str) -> None:
    from hera.workflows import Workflow, models

    from dsops_jupyter.export import argo as argo_engine

    notebook, spec, version = committed(tmp_path / "p", example)
    ctx = build_context(
        spec,
        image=ImageRef("registry.example/x@sha256:" + "b" * 64),
        version=version,
        rule=argo_engine.NAME_RULE,
        metrics=metric_names(notebook),
    )
    data = argo_workflow(ctx)
    # Argo's schema, through hera's generated models, and a lossless round trip through hera.
    models.Workflow.model_validate(data)
    assert Workflow.from_dict(data).to_dict() == data
    assert data["metadata"]["labels"]["dsops.io/commit"] == version.commit
    assert data["metadata"]["annotations"]["dsops.io/tag"] == version.tag
    arguments = {p["name"]: p["value"] for p in data["spec"]["arguments"]["parameters"]}
    assert arguments == {p["name"]: _argo_text(p["default"]) for p in spec["parameters"]}
    templates = {t["name"]: t for t in data["spec"]["templates"]}
    dag = {t["name"]: t for t in templates["pipeline"]["dag"]["tasks"]}
    producers: dict[str, str] = {}
    for step in spec["steps"]:
        task = dag[ctx.names[step["name"]]]
        template = templates[task["template"]]
        sources = {a["name"]: a["from"] for a in task.get("arguments", {}).get("artifacts", [])}
        expected = {
            n: f"{{{{tasks.{ctx.names[producers[n]]}.outputs.artifacts.{n}}}}}"
            for n in step["inputs"]
            if n in producers
        }
        assert sources == expected
        outputs = {a["name"] for a in template.get("outputs", {}).get("artifacts", [])}
        assert set(step["outputs"]) <= outputs
        assert template["container"]["image"] == ctx.image.reference
        assert template["metadata"]["annotations"]["dsops.io/step"] == step["name"]
        producers.update({n: step["name"] for n in step["outputs"]})
    (run,) = templates["main"]["dag"]["tasks"]
    assert run["template"] == "pipeline" and "withItems" not in run


def _argo_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def test_argo_grid_is_with_items_and_limits_are_resources(tmp_path: Path) -> None:
    from hera.workflows import models

    from dsops_jupyter.export import argo as argo_engine

    notebook, spec, version = committed(tmp_path / "p", "iris_kale.ipynb")
    ctx = build_context(
        spec,
        image=ImageRef("iris_kale:v1"),
        version=version,
        rule=argo_engine.NAME_RULE,
        metrics=metric_names(notebook),
        grid=["max_depth=2,3,4"],
    )
    data = argo_workflow(ctx)
    models.Workflow.model_validate(data)
    templates = {t["name"]: t for t in data["spec"]["templates"]}
    (run,) = templates["main"]["dag"]["tasks"]
    assert [item["max_depth"] for item in run["withItems"]] == ["2", "3", "4"]
    values = {p["name"]: p["value"] for p in run["arguments"]["parameters"]}
    assert values["max_depth"] == "{{item.max_depth}}"
    assert values["seed"] == "{{workflow.parameters.seed}}"
    limited = {
        name: t["container"]["resources"]["limits"]
        for name, t in templates.items()
        if t.get("container", {}).get("resources")
    }
    train = next(s for s in spec["steps"] if s["extras"].get("limit"))
    kind, amount = train["extras"]["limit"][0].split(":", 1)
    assert limited == {ctx.names[train["name"]]: {kind: amount}}
    last = templates[ctx.names[spec["steps"][-1]["name"]]]
    command = last["container"]["command"]
    assert command[command.index("--metric-names") + 1] == ",".join(metric_names(notebook))


def test_a_bad_grid_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    notebook, _, _ = committed(tmp_path / "p", "wine.ipynb")
    for grid, message in [
        ("alpha", "expected NAME=VALUE,VALUE,..."),
        ("beta=1,2", "no parameter 'beta' (its parameters: test_size, alpha, seed, output_dir)"),
        ("seed=1,two", "seed"),
    ]:
        done = dsops("export", notebook, "--to", "argo", "--grid", grid, cwd=notebook.parent)
        assert message in error_line(done)
    assert not (notebook.parent / "pipelines" / "wine" / "argo").exists()
