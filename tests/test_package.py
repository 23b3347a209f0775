"""package_notebook: convert -> commit -> build -> smoke, as the CLI, magics and server call it.

The engine-free tests point DOCKER_HOST at a socket that does not exist, which proves that
`--no-build` never needs an engine; the docker tests use the session's private dockerd.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from dsops_jupyter import vcs
from dsops_jupyter.cli import build_parser
from dsops_jupyter.errors import ExecutionError, ImageError, OptionsError, ParameterError
from dsops_jupyter.events import Event
from dsops_jupyter.magics import _package_parser
from dsops_jupyter.model import PackageOptions, PackageResult, RunOptions
from dsops_jupyter.package import package_notebook
from tests.docker_engine import DockerEngine, ensure_rootfs_tarball
from tests.helpers import (
    RUNTIME_FILES,
    assert_ok,
    clean_env,
    dsops,
    git,
    init_repo,
    make_notebook,
    tree_snapshot,
)
from tests.test_image import NO_ENGINE, Recorder, tiny_repo

PACKAGE_FILES = {"tiny.py", "pipeline.json", "requirements.lock", "Dockerfile", ".dockerignore"}
PACKAGE_FILES |= {"dsops_runtime"}


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)


def test_package_options_own_defaults_checks_stages_and_json() -> None:
    """One default for every surface (an image, as `dsops package` always built one)."""
    default = PackageOptions()
    assert default.commit and default.build and default.images
    cli = build_parser().parse_args(["package", "nb.ipynb"])
    assert (not cli.no_commit, not cli.no_build) == (default.commit, default.build)
    magic = _package_parser().parse_args([])
    assert (magic.commit, magic.build) == (default.commit, default.build)
    assert default.stage_plan() == ["Converting", "Committing", "Building"]
    assert PackageOptions(build=False).stage_plan() == ["Converting", "Committing"]
    assert PackageOptions(commit=False, build=False).stage_plan() == ["Converting"]
    smoke_push = PackageOptions(build=False, smoke=True, push="r.example", verify=True)
    assert smoke_push.stage_plan() == [
        "Running",
        "Converting",
        "Committing",
        "Building",
        "Smoke",
        "Pushing",
    ]
    assert (default.builder, cli.builder, magic.builder) == ("assemble",) * 3
    with pytest.raises(OptionsError, match="unknown builder"):
        PackageOptions.from_json({"builder": "kaniko"})
    with pytest.raises(OptionsError, match="option 'verify' must be bool"):
        PackageOptions.from_json({"verify": "yes"})
    with pytest.raises(OptionsError, match="drop --builder dockerfile"):
        PackageOptions(builder="dockerfile", reproducible=True)
    with pytest.raises(ImageError, match="built from a committed version"):
        PackageOptions(commit=False, build=False, smoke=True)
    options = PackageOptions(
        name="x", out_dir=Path("o"), output=Path("t.tar"), force=True, parameters={"a": [1]}
    )
    assert PackageOptions.from_json(json.loads(json.dumps(options.to_json()))) == options
    with pytest.raises(OptionsError, match='unknown option "colour"'):
        PackageOptions.from_json({"colour": "red"})
    with pytest.raises(OptionsError, match="option 'build' must be bool, not \"yes\""):
        PackageOptions.from_json({"build": "yes"})
    with pytest.raises(OptionsError, match="more characters"):
        PackageOptions.from_json({"name": 7 * 10**300})


def test_run_options_json_round_trip_and_checks() -> None:
    options = RunOptions(parameters={"a": 1}, steps=("load",), out_dir=Path("o"), strict=True)
    assert RunOptions.from_json(json.loads(json.dumps(options.to_json()))) == options
    assert options.stage_plan() == ["Running"]
    with pytest.raises(OptionsError, match="'steps' must be a list of step names"):
        RunOptions.from_json({"steps": [1]})
    with pytest.raises(OptionsError, match="'parameters' must map names to values"):
        RunOptions.from_json({"parameters": {1: 2}})


@pytest.mark.usefixtures("no_engine")
def test_no_build_commits_the_package_with_its_recipe(tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    recorder = Recorder()
    result = package_notebook(
        notebook, PackageOptions(parameters={"repeat": "3", "fail": "no"}, build=False), recorder
    )
    assert isinstance(result, PackageResult)
    assert result.created and result.version.tag == "dsops/tiny/v1" and result.image is None
    assert result.script == result.package_dir / "tiny.py"
    assert {p.name for p in result.package_dir.iterdir()} == PACKAGE_FILES
    dockerfile = (result.package_dir / "Dockerfile").read_text()
    assert 'CMD ["--fail", "false", "--repeat", "3"]' in dockerfile  # coerced, then baked
    committed = git(notebook.parent, "show", "--name-only", "--format=", result.version.commit)
    files = PACKAGE_FILES - {"dsops_runtime"} | RUNTIME_FILES
    assert set(committed.split()) == {f"pipelines/tiny/{name}" for name in files}
    stages = [e.message for e in recorder.of("stage")]
    assert stages[:2] == ["Converting tiny.ipynb", "Committing tiny"]
    data = result.to_json()
    assert data["version"]["tag"] == "dsops/tiny/v1" and data["image"] is None
    assert json.loads(json.dumps(data)) == data  # plain JSON for the server and --json

    again = package_notebook(
        notebook, PackageOptions(parameters={"repeat": 3, "fail": False}, build=False)
    )
    assert not again.created and again.version == result.version
    assert [v.tag for v in vcs.list_versions(notebook)] == ["dsops/tiny/v1"]


@pytest.mark.usefixtures("no_engine")
def test_bad_parameters_fail_before_anything_is_written(tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    before = tree_snapshot(notebook.parent)
    with pytest.raises(ParameterError, match="parameter repeat expects int"):
        package_notebook(notebook, PackageOptions(parameters={"repeat": "many"}))
    with pytest.raises(ParameterError, match="has no parameter 'colour'"):
        package_notebook(notebook, PackageOptions(parameters={"colour": "red"}, build=False))
    assert tree_snapshot(notebook.parent) == before
    assert git(notebook.parent, "tag", "--list") == ""


@pytest.mark.usefixtures("no_engine")
def test_no_commit_writes_the_recipe_only_without_build(tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    with pytest.raises(ImageError, match="built from a committed version"):
        package_notebook(notebook, PackageOptions(commit=False))
    assert not (notebook.parent / "pipelines").exists()
    result = package_notebook(notebook, PackageOptions(commit=False, build=False))
    assert result.version is None and not result.created
    assert {p.name for p in result.package_dir.iterdir()} == PACKAGE_FILES
    assert git(notebook.parent, "tag", "--list") == ""
    assert git(notebook.parent, "log", "--format=%s") == "tiny"


@pytest.mark.usefixtures("no_engine")
def test_unresolved_imports_are_reported(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "p", commit=False)
    notebook = make_notebook(
        repo / "odd.ipynb",
        ["import json\nimport not_a_real_module_xyz", ("x = 1", ["step:one"])],
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "odd")
    recorder = Recorder()
    result = package_notebook(notebook, PackageOptions(build=False), recorder)
    assert result.unresolved_imports == ["not_a_real_module_xyz"]
    assert any(
        line.startswith("warning: odd imports not_a_real_module_xyz")
        and "not in requirements.lock" in line
        for line in recorder.log()
    )


@pytest.mark.usefixtures("no_engine")
def test_a_base_image_file_needs_the_layer_assembler(tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    archive = tmp_path / "base.tar"
    archive.write_bytes(b"not really")
    options = PackageOptions(base_image=str(archive), builder="dockerfile")
    with pytest.raises(ImageError, match="only the layer assembler reads image archives"):
        package_notebook(notebook, options)
    assert not (notebook.parent / "pipelines").exists()


def test_output_archive_is_assembled_without_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--output` with a base archive: oci.build_reproducible, no Dockerfile build, no engine."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    notebook = tiny_repo(tmp_path / "p")
    out = tmp_path / "tiny.tar"
    result = package_notebook(
        notebook,
        PackageOptions(
            base_image=str(ensure_rootfs_tarball()), output=out, parameters={"repeat": 2}
        ),
    )
    assert result.output == out and result.image.archive == out and not result.image.loaded
    assert result.image.tags == ["tiny:v1", f"tiny:{result.version.short}"]
    assert result.image.commit == result.version.commit
    with tarfile.open(out) as tar:
        assert {"index.json", "oci-layout", "manifest.json"} <= set(tar.getnames())
    assert result.to_json()["image"]["reproducible"] is True


@pytest.mark.docker
def test_reproducible_image_is_loaded_and_smoke_run(docker_engine: object, tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    result = package_notebook(
        notebook,
        PackageOptions(
            base_image=str(ensure_rootfs_tarball()),
            reproducible=True,
            smoke=True,
            parameters={"repeat": 2},
        ),
    )
    assert result.image.loaded and result.smoke.log == ["hello hello"]


@pytest.mark.docker
def test_cli_package_prints_image_id_tags_and_size(docker_base_image: str, tmp_path: Path) -> None:
    notebook = tiny_repo(tmp_path / "p")
    args = ("package", notebook, "--base-image", docker_base_image, "-p", "repeat", "2")
    done = assert_ok(dsops(*args, "--smoke", cwd=notebook.parent, env=clean_env()))
    short = vcs.list_versions(notebook)[0].short
    assert f"tags:    tiny:v1, tiny:{short}" in done.stdout
    assert "image:   sha256:" in done.stdout and " MB" in done.stdout
    assert "step 4 of 5: code layer" in done.stderr  # the default builder's steps
    assert "hello hello" in done.stderr  # the smoke run's output
    done = assert_ok(dsops(*args, "--builder", "dockerfile", cwd=notebook.parent, env=clean_env()))
    assert "Step 13/13 : COPY tiny.py pipeline.json /opt/dsops/" in done.stderr  # build log
    done = assert_ok(dsops(*args, "--json", cwd=notebook.parent, env=clean_env()))
    data = json.loads(done.stdout)
    assert data["created"] is False and data["image"]["tags"][0] == "tiny:v1"


def stage_keys(recorder: Recorder) -> list[str]:
    return [event.message.split()[0] for event in recorder.of("stage")]


def progress_in(recorder: Recorder, key: str) -> list[tuple[float, str]]:
    """The (fraction, message) progress events of the stage whose key is ``key``."""
    found, inside = [], False
    for event in recorder.events:
        if event.kind == "stage":
            inside = event.message.split()[0] == key
        elif event.kind == "progress" and inside:
            found.append((event.fraction, event.message))
    return found


def images_of(engine: DockerEngine, short: str) -> list[str]:
    """Tags of images built from the commit ``short`` names (the engine is the session's:
    other tests' tiny images share the repository name)."""
    images = engine.client.images.list(name="tiny")
    revision = "org.opencontainers.image.revision"
    return [t for i in images if i.labels[revision].startswith(short) for t in i.tags]


@pytest.mark.usefixtures("no_engine")
def test_verify_runs_the_notebook_first_and_a_failing_cell_makes_no_version(
    tmp_path: Path,
) -> None:
    notebook = tiny_repo(tmp_path / "p")
    recorder = Recorder()
    failing = PackageOptions(parameters={"fail": True}, build=False, verify=True)
    with pytest.raises(ExecutionError) as caught:
        package_notebook(notebook, failing, recorder)
    message = str(caught.value)
    assert message.startswith("verify run failed: ") and message.endswith("; no version made")
    assert stage_keys(recorder) == ["Running"]  # nothing converted, nothing committed
    assert not (notebook.parent / "pipelines").exists()
    assert git(notebook.parent, "tag", "--list") == ""
    assert git(notebook.parent, "log", "--format=%s") == "tiny"

    recorder = Recorder()
    passing = PackageOptions(build=False, verify=True)
    result = package_notebook(notebook, passing, recorder)
    assert result.created and result.version.tag == "dsops/tiny/v1"
    assert stage_keys(recorder) == passing.stage_plan() == ["Running", "Converting", "Committing"]


@pytest.mark.docker
def test_stage_plan_is_what_a_package_job_announces(docker_base_image: str, tmp_path: Path) -> None:
    """The default builder (the layer assembler), verified and smoke-run: the stage keys the
    job announced are its stage_plan(); the build reports "step k of n", the smoke run its
    phases, each ending at 1.0."""
    notebook = tiny_repo(tmp_path / "p")
    options = PackageOptions(
        base_image=docker_base_image, smoke=True, verify=True, parameters={"repeat": 2}
    )
    recorder = Recorder()
    result = package_notebook(notebook, options, recorder)
    assert stage_keys(recorder) == options.stage_plan()
    assert stage_keys(recorder) == ["Running", "Converting", "Committing", "Building", "Smoke"]
    assert result.image.loaded and result.smoke.log == ["hello hello"]
    for key, word in (("Building", "step"), ("Smoke", "phase")):
        reported = progress_in(recorder, key)
        total = int(reported[0][1].split()[-1])
        expected = [f"{word} {k} of {total}" for k in range(1, total + 1)]
        assert [m for _, m in reported] == [*expected, expected[-1]]  # the last: done
        assert [f for f, _ in reported] == [k / total for k in range(total)] + [1.0]


@pytest.mark.docker
def test_ctrl_c_after_the_build_makes_no_version_and_removes_its_images(
    docker_base_image: str, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    notebook = tiny_repo(tmp_path / "p")
    repo = notebook.parent
    tip, before = git(repo, "rev-parse", "HEAD"), tree_snapshot(repo)
    recorder = Recorder()

    def interrupt_the_smoke_run(event: Event) -> None:
        recorder(event)
        if event.kind == "stage" and event.message.startswith("Smoke"):
            raise KeyboardInterrupt

    options = PackageOptions(base_image=docker_base_image, smoke=True)
    with pytest.raises(KeyboardInterrupt) as caught:
        package_notebook(notebook, options, interrupt_the_smoke_run)
    note = str(caught.value)
    short = note.split()[3]
    assert note == (
        f"rolled back: commit {short} not tagged, tiny v1 not made, "
        f"image tiny:v1, tiny:{short} removed"
    )
    assert recorder.log()[-1] == f"interrupted; {note}"
    assert git(repo, "tag", "--list") == "" and git(repo, "rev-parse", "HEAD") == tip
    assert tree_snapshot(repo) == before  # no package folder, nothing half-written
    assert not images_of(docker_engine, short)
    again = package_notebook(notebook, options)  # nothing left blocks the next attempt
    assert again.version.tag == "dsops/tiny/v1" and git(repo, "tag", "--list") == "dsops/tiny/v1"


@pytest.mark.docker
def test_cli_sigint_during_the_build_leaves_no_version(
    docker_base_image: str, tmp_path: Path
) -> None:
    """A real SIGINT (what the server's cancel sends) to `dsops package` while it builds."""
    notebook = tiny_repo(tmp_path / "p")
    repo = notebook.parent
    tip, before = git(repo, "rev-parse", "HEAD"), tree_snapshot(repo)
    args = ["package", str(notebook), "--base-image", docker_base_image, "--builder", "dockerfile"]
    process = subprocess.Popen(
        [sys.executable, "-m", "dsops_jupyter", *args],
        cwd=repo,
        env=clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    seen = []
    for line in process.stderr:
        seen.append(line)
        if line.startswith("Step 2/"):  # the engine is building
            process.send_signal(signal.SIGINT)
            break
    rest = process.stderr.read()
    assert process.wait(timeout=120) == 130, "".join(seen) + rest
    last = rest.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: interrupted; rolled back: commit \w{7} not tagged, tiny v1 not made", last
    ), last
    assert git(repo, "tag", "--list") == "" and git(repo, "rev-parse", "HEAD") == tip
    assert tree_snapshot(repo) == before
