"""The image recipe, and images built, run and listed on a real Docker engine.

Docker tests use the session's private dockerd (tests/docker_engine.py) and a base image made
locally from a Debian rootfs with the host CA bundle added (pip reaches PyPI through it). The
wine example is packaged once per module; later tests reuse that image and its v2.
"""

from __future__ import annotations

import io
import json
import re
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter import assemble, image, recipe, vcs
from dsops_jupyter.errors import BuildError, EngineUnavailableError, ImageError
from dsops_jupyter.events import Event
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import PackageOptions, PackageResult, RunOptions
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.package import package_notebook
from tests.docker_engine import DockerEngine
from tests.helpers import (
    RUNTIME_FILES,
    assert_ok,
    clean_env,
    copy_example,
    dsops,
    error_line,
    git,
    init_repo,
    make_notebook,
    tree_snapshot,
)

NO_ENGINE = "unix:///nonexistent/dsops-tests/docker.sock"
# A wine build on vfs storage (every step copies the whole image) takes many minutes.
SLOW = pytest.mark.timeout(2400)
ORIGIN = "https://example.com/team/wine.git"
# What a build of the wine package sends to the engine: the .dockerignore allow-list.
CONTEXT = {"Dockerfile", "wine.py", "pipeline.json", "requirements.lock", *RUNTIME_FILES}


# --- helpers -------------------------------------------------------------------------------------
def wine_repo(folder: Path) -> Path:
    """A Git project holding the wine example, with an origin remote and a .gitignore."""
    repo = init_repo(folder, commit=False)
    notebook = copy_example("wine.ipynb", repo)
    (repo / ".gitignore").write_text(".env\noutputs/\n__pycache__/\n")
    git(repo, "remote", "add", "origin", ORIGIN.replace("https://", "https://bot:s3cret@"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wine")
    return notebook


def tiny_repo(folder: Path) -> Path:
    """A notebook with no third-party imports (an empty lock: quick to build)."""
    repo = init_repo(folder, commit=False)
    notebook = make_notebook(
        repo / "tiny.ipynb",
        [
            ("greeting = 'hello'\nfail = False\nrepeat: int = 1", ["parameters"]),
            ("message = ' '.join([greeting] * repeat)", ["step:make"]),
            (
                "import json\nif fail:\n    raise SystemExit('tiny failed on purpose')\n"
                "print(message)\njson.dump({'message': message}, open('out.json', 'w'))",
                ["step:report"],
            ),
        ],
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny")
    return notebook


class Recorder:
    """Collects events: the same stream the CLI, magics and server render."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def log(self) -> list[str]:
        return [e.message for e in self.of("log")]


def run_container(client: Any, ref: str, *args: str, **options: Any) -> str:
    """Run a container to completion (no network) and return its output."""
    output = client.containers.run(
        ref, list(args) or None, network_mode="none", remove=True, **options
    )
    return output.decode()


def read_from_image(client: Any, ref: str, path: str) -> bytes:
    container = client.containers.create(ref)
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            assert member is not None
            handle = tar.extractfile(member)
            assert handle is not None
            return handle.read()
    finally:
        container.remove(force=True)


def uncached_steps(log: list[str]) -> list[str]:
    """The Dockerfile instructions the classic builder ran instead of taking from its cache."""
    steps: list[tuple[str, bool]] = []
    for line in log:
        match = re.match(r"^Step \d+/\d+ : (.*)$", line)
        if match:
            steps.append((match[1], False))
        elif "Using cache" in line and steps:
            steps[-1] = (steps[-1][0], True)
    return [instruction for instruction, cached in steps[1:] if not cached]  # FROM: no cache


# --- the recipe (no engine) ---------------------------------------------------------------------
def test_recipe_is_deterministic_pinned_and_ordered(tmp_path: Path) -> None:
    notebook = wine_repo(tmp_path / "p")
    pipeline = read_pipeline(notebook)
    params = {"alpha": 0.7, "output_dir": "out"}
    first = recipe.render_recipe(pipeline, "python:3.11-slim", params)
    assert first == recipe.render_recipe(pipeline, "python:3.11-slim", params)
    assert set(first) == {"Dockerfile", ".dockerignore"}
    text = first["Dockerfile"].decode()
    instructions = [line.split()[0] for line in text.splitlines() if re.match(r"^[A-Z]+ ", line)]
    assert instructions[0] == "FROM" and "FROM python:3.11-slim\n" in text
    # dependencies before the code; the code is the last instruction (the only layer that moves)
    assert (
        text.index("COPY requirements.lock")
        < text.index("/opt/venv/bin/pip install")
        < text.index("COPY wine.py")
    )
    assert instructions[-1] == "COPY" and text.rstrip().endswith(
        "COPY wine.py pipeline.json /opt/dsops/"
    )
    assert "python3 -m venv /opt/venv" in text
    assert "USER 10001:10001" in text and "useradd --uid 10001" in text
    assert 'ENTRYPOINT ["/opt/venv/bin/python", "/opt/dsops/wine.py"]' in text
    assert 'CMD ["--alpha", "0.7", "--output-dir", "out"]' in text
    assert "ca-certificates.crt" not in text and "pip.conf" not in text  # test-only, never here
    assert str(tmp_path) not in text  # nothing host-specific in a committed file
    ignore = first[".dockerignore"].decode().splitlines()
    assert "*" in ignore
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == CONTEXT - RUNTIME_FILES | {"dsops_runtime/*.py"}


def test_default_base_image_follows_the_kernel_python() -> None:
    assert recipe.default_base_image("3.12.4") == "python:3.12-slim"
    assert recipe.default_base_image("3.10") == "python:3.10-slim"
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert recipe.default_base_image() == f"python:{minor}-slim"
    with pytest.raises(ImageError, match="cannot derive a base image"):
        recipe.default_base_image("three")


def test_base_image_comes_from_config_and_flag_and_must_be_pinned(tmp_path: Path) -> None:
    notebook = wine_repo(tmp_path / "p")
    pyproject = notebook.parent / "pyproject.toml"
    pyproject.write_text('[tool.dsops]\nbase-image = "registry.local:5000/py/base:3.11"\n')
    digest = "python@sha256:" + "ab" * 32
    from_config = assemble.generate_package(notebook).files["Dockerfile"].decode()
    assert "FROM registry.local:5000/py/base:3.11\n" in from_config
    from_flag = assemble.generate_package(notebook, base_image=digest).files["Dockerfile"]
    assert f"FROM {digest}\n".encode() in from_flag
    for bad in ("python", "python:3.11 AS x", "python:3.11\nRUN rm -rf /", "Python:3"):
        with pytest.raises(ImageError, match="pin it as name:tag"):
            assemble.generate_package(notebook, base_image=bad)


def test_parameters_are_spelled_as_the_script_parses_them() -> None:
    args = recipe.cli_args(
        {"alpha": 0.5, "flag": True, "ids": [1, 2], "name": "-x", "seed": 3, "misc": "7"},
        {"misc": "any", "name": "str", "flag": "bool"},
    )
    assert args == [
        "--alpha",
        "0.5",
        "--flag",
        "true",
        "--ids",
        "[1, 2]",
        "--misc",
        "'7'",
        "--name=-x",
        "--seed",
        "3",
    ]
    assert recipe.cli_args(None) == []


def test_build_context_holds_only_the_generated_package(tmp_path: Path) -> None:
    notebook = wine_repo(tmp_path / "p")
    pkg = assemble.generate_package(notebook)
    files = {**pkg.files, "outputs/metrics.json": b"{}", ".env": b"SECRET=1"}
    with tarfile.open(fileobj=image.build_context(files)) as tar:
        members = tar.getmembers()
    assert {m.name for m in members} == CONTEXT
    assert all(m.mtime == 0 and m.uid == 0 and m.mode == 0o644 for m in members)


def test_no_engine_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    with pytest.raises(EngineUnavailableError) as caught:
        image.connect()
    assert str(caught.value) == (
        f"no Docker engine at {NO_ENGINE}: start one or set "
        "DOCKER_HOST=unix:///path/docker.sock (or tcp://...)"
    )
    notebook = wine_repo(tmp_path / "p")
    with pytest.raises(EngineUnavailableError):
        image.list_images(notebook, versions=None)
    # package fails before writing or committing anything...
    with pytest.raises(EngineUnavailableError):
        package_notebook(notebook, PackageOptions(base_image="dsops-test-base:bookworm-ca"))
    assert not (notebook.parent / "pipelines").exists()
    assert git(notebook.parent, "tag", "--list") == ""
    # ...and --no-build still writes (and commits) the recipe.
    result = package_notebook(notebook, PackageOptions(build=False))
    assert result.image is None and result.version.tag == "dsops/wine/v1"
    assert (result.package_dir / "Dockerfile").is_file()
    assert (result.package_dir / ".dockerignore").is_file()


def test_cli_without_engine(tmp_path: Path) -> None:
    notebook = wine_repo(tmp_path / "p")
    env = clean_env(DOCKER_HOST=NO_ENGINE)
    line = error_line(dsops("package", notebook, cwd=notebook.parent, env=env), code=1)
    assert line == f"error: no Docker engine at {NO_ENGINE}: start one or set " + (
        "DOCKER_HOST=unix:///path/docker.sock (or tcp://...)"
    )
    line = error_line(dsops("images", notebook, cwd=notebook.parent, env=env), code=1)
    assert "no Docker engine at" in line
    done = assert_ok(dsops("package", notebook, "--no-build", cwd=notebook.parent, env=env))
    assert (notebook.parent / "pipelines" / "wine" / "Dockerfile").is_file(), done.stdout


# --- images on the engine ---------------------------------------------------------------------
@dataclass
class Wine:
    notebook: Path
    first: PackageResult
    first_events: Recorder
    first_seconds: float


@pytest.fixture(scope="module")
def wine(docker_base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Wine:
    """The wine example packaged and smoke-run once (alpha baked to 0.7)."""
    notebook = wine_repo(tmp_path_factory.mktemp("wine") / "project")
    package_dir = notebook.parent / "pipelines" / "wine"
    # Files a build must never see: ignored by Git, next to (and inside) the package folder.
    for stray in (package_dir / ".env", notebook.parent / ".env"):
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_text("SECRET=do-not-ship\n")
    (package_dir / "outputs").mkdir()
    (package_dir / "outputs" / "metrics.json").write_text('{"stale": true}\n')
    recorder = Recorder()
    start = time.perf_counter()
    result = package_notebook(
        notebook,
        PackageOptions(
            parameters={"alpha": "0.7"},
            base_image=docker_base_image,
            smoke=True,
            builder="dockerfile",  # this module tests the Dockerfile build; test_oci the other
        ),
        recorder,
    )
    return Wine(notebook, result, recorder, time.perf_counter() - start)


@pytest.mark.docker
@SLOW
def test_package_builds_the_example_and_reports_progress(wine: Wine) -> None:
    result = wine.first
    info = result.image
    assert result.created and result.version.tag == "dsops/wine/v1"
    assert info.tags == ["wine:v1", f"wine:{result.version.short}"]
    assert info.size > 100_000_000 and info.id.startswith("sha256:")
    stages = [e.message for e in wine.first_events.of("stage")]
    assert stages[0] == "Converting wine.ipynb"
    assert "Building image wine:v1" in stages and stages[-1] == "Smoke run of wine:v1"
    assert [m.split()[0] for m in stages] == ["Converting", "Committing", "Building", "Smoke"]
    assert stages.index("Committing wine") < stages.index("Building image wine:v1")
    steps = [e for e in wine.first_events.of("progress") if e.message.startswith("step ")]
    assert [e.message for e in steps] == [f"step {n} of 13" for n in range(1, 14)] + [
        "step 13 of 13"  # done
    ]
    assert [e.fraction for e in steps] == sorted(e.fraction for e in steps)
    log = wine.first_events.log()
    # the build's own output is streamed as log lines (pip's, among others)
    assert any("install" in line.lower() for line in log), log[-20:]
    assert "accuracy: 1.0000" in result.smoke.log  # the smoke run's output is shown
    print(f"\n  wine cold package+build+smoke: {wine.first_seconds:.1f} s")


@pytest.mark.docker
@SLOW
def test_image_runs_like_papermill(wine: Wine, docker_engine: DockerEngine, tmp_path: Path) -> None:
    """Same metrics.json from the image (baked, given, step by step) as from papermill."""
    client = docker_engine.client
    ref = wine.first.image.tags[0]
    (tmp_path / "pm").mkdir()
    (tmp_path / "pm3").mkdir()
    run_notebook(
        wine.notebook,
        RunOptions(parameters={"alpha": 0.7}, cwd=tmp_path / "pm", out_dir=tmp_path / "pm-run"),
    )
    expected = json.loads((tmp_path / "pm" / "outputs" / "metrics.json").read_text())
    assert expected["alpha"] == 0.7

    baked = image.smoke_run(ref, None, copy_out=tmp_path / "baked")
    assert baked.workdir == tmp_path / "baked"
    assert json.loads((tmp_path / "baked" / "outputs" / "metrics.json").read_text()) == expected

    given = image.smoke_run(ref, {"alpha": 0.3}, copy_out=tmp_path / "given")
    run_notebook(
        wine.notebook,
        RunOptions(parameters={"alpha": 0.3}, cwd=tmp_path / "pm3", out_dir=tmp_path / "pm3-run"),
    )
    got = json.loads((tmp_path / "given" / "outputs" / "metrics.json").read_text())
    assert got == json.loads((tmp_path / "pm3" / "outputs" / "metrics.json").read_text())
    assert got["alpha"] == 0.3 and given.exit_code == 0

    # `docker run IMG --step NAME --workdir /data`, one container per step, as orchestrators do
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)  # the image runs as uid 10001
    mount = {"volumes": {str(data): {"bind": "/data", "mode": "rw"}}, "working_dir": "/data"}
    for step in ("load", "features", "train", "evaluate"):
        run_container(client, ref, "--step", step, "--workdir", "/data", "--alpha", "0.7", **mount)
    assert json.loads((data / "outputs" / "metrics.json").read_text()) == expected
    stored = {p.parent.name: p.suffix for p in data.glob("*/data.*")}  # typed, inside the image
    assert (stored["model"], stored["X_test"], stored["y_test"]) == (".joblib", ".npy", ".parquet")


@pytest.mark.docker
def test_image_labels_user_and_contents(wine: Wine, docker_engine: DockerEngine) -> None:
    client = docker_engine.client
    version = wine.first.version
    built = client.images.get(wine.first.image.id)
    labels = built.labels
    committed = int(git(wine.notebook.parent, "show", "-s", "--format=%ct", version.commit))
    assert labels["org.opencontainers.image.source"] == ORIGIN  # credentials stripped
    assert labels["org.opencontainers.image.revision"] == version.commit
    assert labels["org.opencontainers.image.version"] == "v1"
    assert labels["org.opencontainers.image.title"] == "wine"
    assert labels["org.opencontainers.image.created"] == datetime.fromtimestamp(
        committed, tz=timezone.utc
    ).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert labels["org.opencontainers.image.base.name"] == "dsops-test-base:bookworm-ca"
    assert labels["io.dsops.notebook"] == "wine.ipynb"
    assert labels["io.dsops.tag"] == "dsops/wine/v1"
    assert labels == image.image_labels(
        assemble.generate_package(wine.notebook, base_image="dsops-test-base:bookworm-ca"),
        version,
        "dsops-test-base:bookworm-ca",
    )
    config = built.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/opt/venv/bin/python", "/opt/dsops/wine.py"]
    assert config["Cmd"] == ["--alpha", "0.7"]
    assert config["WorkingDir"] == "/work"
    sh = {"entrypoint": ["/bin/sh", "-c"]}
    assert run_container(client, built.id, "id -u", **sh).strip() == "10001"
    listing = run_container(client, built.id, "ls -A /opt/dsops /work", **sh).split()
    assert sorted(listing) == sorted(
        ["/opt/dsops:", "dsops_runtime", "pipeline.json", "requirements.lock", "wine.py", "/work:"]
    )
    find = "find / -xdev \\( -name .env -o -name .git -o -name '*.ipynb' \\) -print"
    assert run_container(client, built.id, find, user="root", **sh).strip() == ""
    in_git = git(wine.notebook.parent, "show", f"{version.commit}:pipelines/wine/wine.py")
    shipped = read_from_image(client, built.id, "/opt/dsops/wine.py").decode()
    assert shipped.rstrip("\n") == in_git.rstrip("\n")


@pytest.fixture(scope="module")
def wine_v2(wine: Wine) -> tuple[PackageResult, Recorder, float]:
    """v2 after a code-only change to the notebook (a new print in the evaluate step)."""
    nb = json.loads(wine.notebook.read_text())
    cell = next(c for c in nb["cells"] if "step:evaluate" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nprint('evaluated by v2')"
    wine.notebook.write_text(json.dumps(nb, indent=1))
    recorder = Recorder()
    start = time.perf_counter()
    result = package_notebook(
        wine.notebook,
        PackageOptions(
            parameters={"alpha": "0.7"},
            base_image="dsops-test-base:bookworm-ca",
            builder="dockerfile",
        ),
        recorder,
    )
    return result, recorder, time.perf_counter() - start


@pytest.mark.docker
@SLOW
def test_code_only_change_rebuilds_only_the_code_layer(
    wine: Wine, wine_v2: tuple[PackageResult, Recorder, float], docker_engine: DockerEngine
) -> None:
    second, recorder, seconds = wine_v2
    assert second.created and second.version.tag == "dsops/wine/v2"
    assert second.image.tags == ["wine:v2", f"wine:{second.version.short}"]
    client = docker_engine.client
    old, new = client.images.get(wine.first.image.id), client.images.get(second.image.id)
    old_layers, new_layers = old.attrs["RootFS"]["Layers"], new.attrs["RootFS"]["Layers"]
    assert len(old_layers) == len(new_layers)
    assert old_layers[:-1] == new_layers[:-1] and old_layers[-1] != new_layers[-1]
    # the build cache served every step up to the version labels and the code copy
    assert [s.split()[0] for s in uncached_steps(recorder.log())] == ["LABEL", "COPY"]
    assert uncached_steps(recorder.log())[-1].startswith("COPY wine.py")
    old_ids = [h["Id"] for h in old.history()][2:]
    assert [h["Id"] for h in new.history()][2:] == old_ids
    assert "evaluated by v2" in image.smoke_run(second.image).log
    print(f"\n  code-only repackage: {seconds:.1f} s (cold was {wine.first_seconds:.1f} s)")


@pytest.mark.docker
def test_images_lists_versions_with_commit_and_size(
    wine: Wine, wine_v2: tuple[PackageResult, Recorder, float], tmp_path: Path
) -> None:
    second = wine_v2[0]
    listed = image.list_images(wine.notebook, versions=vcs.list_versions(wine.notebook))
    assert [(i.version, i.commit) for i in listed] == [
        ("v1", wine.first.version.commit),
        ("v2", second.version.commit),
    ]
    assert all(i.size > 100_000_000 and i.name == "wine" for i in listed)
    assert listed[0].to_json()["tags"] == ["wine:v1", f"wine:{wine.first.version.short}"]
    # another project's wine.ipynb (same relative path and name) is not listed
    other = wine_repo(tmp_path / "other")
    assert image.list_images(other, versions=vcs.list_versions(other)) == []
    done = assert_ok(dsops("images", wine.notebook, "--json", cwd=wine.notebook.parent))
    assert [i["version"] for i in json.loads(done.stdout)] == ["v1", "v2"]
    done = assert_ok(dsops("images", wine.notebook, cwd=wine.notebook.parent))
    assert "wine:v2" in done.stdout and second.version.short in done.stdout


@pytest.mark.docker
def test_failing_build_names_the_instruction_and_keeps_the_version(
    docker_base_image: str, tmp_path: Path
) -> None:
    notebook = tiny_repo(tmp_path / "p")
    pkg = assemble.generate_package(notebook, base_image=docker_base_image)
    pkg.files["requirements.lock"] = b"# a pin no index has\nsix==0.0.424242\n"
    version, created = vcs.commit_package(pkg)
    assert created
    recorder = Recorder()
    with pytest.raises(BuildError) as caught:
        image.build_image(pkg, version, on_event=recorder)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("image build of tiny v1 failed at step 7/13 `RUN if grep")
    assert "pip install" in message and "returned a non-zero code: 1" in message
    assert "last log lines:" in message and "six==0.0.424242" in message
    assert any("No matching distribution found for six==0.0.424242" in x for x in recorder.log())
    assert [v.tag for v in vcs.list_versions(notebook)] == ["dsops/tiny/v1"]
    assert git(notebook.parent, "status", "--porcelain") == ""


@pytest.mark.docker
def test_smoke_run_failure_and_parameters(
    docker_base_image: str, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    notebook = tiny_repo(tmp_path / "p")
    result = package_notebook(
        notebook, PackageOptions(parameters={"repeat": 2}, base_image=docker_base_image)
    )
    ref = result.image.tags[0]
    assert image.smoke_run(ref).log == ["hello hello"]  # the baked default
    ran = image.smoke_run(ref, {"greeting": "-hi", "repeat": 3}, copy_out=tmp_path / "out")
    assert ran.log == ["-hi -hi -hi"]
    assert json.loads((tmp_path / "out" / "out.json").read_text()) == {"message": "-hi -hi -hi"}
    out = run_container(docker_engine.client, ref, "--greeting", "hey", "--repeat", "1")
    assert out == "hey\n"
    with pytest.raises(ImageError) as caught:
        image.smoke_run(ref, {"fail": True})
    assert str(caught.value) == (
        f"smoke run of {ref} failed with exit code 1: tiny failed on purpose"
    )
    tip, package = git(notebook.parent, "rev-parse", "HEAD"), tree_snapshot(result.package_dir)
    options = PackageOptions(parameters={"fail": "true"}, base_image=docker_base_image, smoke=True)
    with pytest.raises(ImageError) as caught:
        package_notebook(notebook, options)
    # a gated version: the smoke run failed, so no v2, nothing moved, its images removed
    message = str(caught.value)
    smoke, rolled_back = message.split("; rolled back: ")
    assert smoke.startswith("smoke run of tiny:v2 failed with exit code 1: tiny failed on purpose")
    undone = r"commit (\w{7}) not tagged, tiny v2 not made, image (.*) removed"
    commit = re.fullmatch(undone, rolled_back)
    assert commit is not None and commit[2] == f"tiny:v2, tiny:{commit[1]}"
    assert [v.tag for v in vcs.list_versions(notebook)] == ["dsops/tiny/v1"]
    assert git(notebook.parent, "rev-parse", "HEAD") == tip
    assert tree_snapshot(result.package_dir) == package
    assert git(notebook.parent, "status", "--porcelain") == ""
    images = docker_engine.client.images.list(name="tiny")
    revision = "org.opencontainers.image.revision"
    assert not [i for i in images if i.labels[revision].startswith(commit[1])]
    assert docker_engine.client.images.get("tiny:v1").id == result.image.id  # v1's image stays


@pytest.mark.docker
def test_push_failure_is_clear(docker_base_image: str, tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    with pytest.raises(ImageError) as caught:
        package_notebook(notebook, PackageOptions(base_image=docker_base_image, push="localhost:1"))
    message = str(caught.value)
    assert message.startswith("push of localhost:1/tiny:v1 failed: ")
    assert "\n" not in message
    undone = r"; rolled back: commit (\w{7}) not tagged, tiny v1 not made, image (.*) removed$"
    commit = re.search(undone, message)
    assert commit is not None and commit[2] == f"tiny:v1, tiny:{commit[1]}"
    assert vcs.list_versions(notebook) == []
    assert not (notebook.parent / "pipelines").exists()
