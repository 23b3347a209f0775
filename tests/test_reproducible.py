"""Issue 5: bit-for-bit reproducible, hermetic images of the real wine example.

Real convert + real Git versions in a temp repository, real wheels from PyPI (fetched once into
/var/cache/dsops-tests/wheelhouse), the Debian bookworm rootfs as the base, real dockerd engines
(the session one and a fresh one with its own data root) for the load-and-run checks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from dsops_jupyter import assemble, image, oci, vcs
from dsops_jupyter.model import GeneratedPackage, ImageResult, Version
from tests.docker_engine import (
    DockerEngine,
    _start_dockerd,
    _stop_dockerd,
    _wait_for_ping,
    ensure_rootfs_tarball,
)
from tests.helpers import assert_ok, clean_env, copy_example, dsops, git, init_repo, tree_snapshot

WHEELHOUSE = Path("/var/cache/dsops-tests/wheelhouse")
BASE_TAG = "dsops-test-base:repro"
RECIPE_BASE = "dsops-test-base:bookworm"


@dataclass
class Example:
    """The wine example converted and committed as a version in its own repository."""

    repo: Path
    notebook: Path
    pkg: GeneratedPackage
    version: Version


@dataclass
class Built:
    info: ImageResult
    archive: Path
    cache: Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_example(folder: Path) -> Example:
    repo = init_repo(folder, commit=False)
    notebook = copy_example("wine.ipynb", repo)
    git(repo, "add", "wine.ipynb")
    git(repo, "commit", "-q", "-m", "add the wine notebook")
    return package(repo, notebook)


def package(repo: Path, notebook: Path) -> Example:
    pkg = assemble.generate_package(notebook, base_image=RECIPE_BASE)
    version, _created = vcs.commit_package(pkg)
    return Example(repo, notebook, pkg, version)


def build(
    example: Example, base: str | Path, folder: Path, *, cache: Path | None = None, **kw: Any
) -> Built:
    """A build with its own (empty unless given) cache: nothing shared with other builds."""
    folder.mkdir(parents=True, exist_ok=True)
    cache = cache or Path(tempfile.mkdtemp(prefix="cache-", dir=folder))
    archive = kw.pop("output", folder / "image.tar")
    info = oci.build_reproducible(
        example.pkg,
        example.version,
        base_image=str(base),
        output=archive,
        wheelhouse=WHEELHOUSE,
        cache_dir=cache,
        **kw,
    )
    return Built(info, archive, cache)


def layer_members(archive: Path, digest: str) -> list[tarfile.TarInfo]:
    with tarfile.open(archive) as outer:
        blob = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
        assert blob is not None
        with tarfile.open(fileobj=blob, mode="r|*") as layer:
            return list(layer)


def edit_cell(notebook: Path, contains: str, new_source: str) -> None:
    nb = nbformat.read(str(notebook), as_version=4)
    (target,) = [c for c in nb.cells if contains in c.source]
    target.source = new_source
    nbformat.write(nb, str(notebook))


def add_outputs(notebook: Path, contains: str) -> None:
    """What running the notebook in JupyterLab leaves behind: counts and outputs."""
    nb = nbformat.read(str(notebook), as_version=4)
    (target,) = [c for c in nb.cells if contains in c.source]
    target.execution_count = 7
    target.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
    nbformat.write(nb, str(notebook))


@pytest.fixture(scope="module")
def base_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bookworm rootfs as a docker-archive every engine loads identically (unlike import)."""
    folder = tmp_path_factory.mktemp("base")
    base = oci.read_base(ensure_rootfs_tarball(), cache=folder / "cache")
    return oci.base_archive(base, folder / "bookworm.tar", BASE_TAG)


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Example:
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    return make_example(tmp_path_factory.mktemp("wine") / "project")


@pytest.fixture(scope="module")
def first(wine: Example, base_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The reference build: no engine, base from the archive, a fresh cache."""
    built = build(wine, base_tar, tmp_path_factory.mktemp("first"))
    print(f"\nwine {wine.version.tag}: id {built.info.id} manifest {built.info.manifest_digest}")
    return built


# --- reproducible without any engine ------------------------------------------------------------
def test_same_version_twice_gives_a_byte_identical_archive(
    wine: Example, base_tar: Path, first: Built, tmp_path: Path
) -> None:
    second = build(wine, base_tar, tmp_path)  # its own empty cache: nothing reused
    assert second.cache != first.cache
    assert (second.info.id, second.info.manifest_digest) == (
        first.info.id,
        first.info.manifest_digest,
    )
    assert sha256_file(second.archive) == sha256_file(first.archive)


def test_timestamps_owners_and_bytecode(wine: Example, first: Built) -> None:
    epoch = wine.version.epoch
    assert first.info.created == image.rfc3339(epoch)
    _base, deps, code = first.info.layers
    deps_members = layer_members(first.archive, deps)
    assert len(deps_members) > 1000
    assert all(m.mtime <= epoch and m.pax_headers == {} for m in deps_members)
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in deps_members)
    assert not [m.name for m in deps_members if m.name.endswith(".pyc")]
    names = [m.name for m in deps_members]
    assert names == sorted(names)
    assert "opt/dsops/site-packages/sklearn/__init__.py" in names
    code_members = layer_members(first.archive, code)
    assert {m.mtime for m in code_members} == {epoch}
    assert "opt/dsops/wine.py" in [m.name for m in code_members]
    with tarfile.open(first.archive) as outer:
        config = json.load(outer.extractfile(f"blobs/sha256/{first.info.id[7:]}"))  # type: ignore[arg-type]
    assert config["created"] == image.rfc3339(epoch)
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == wine.version.commit
    assert labels["org.opencontainers.image.base.name"] == BASE_TAG
    assert labels["io.dsops.notebook"] == "wine.ipynb"


def test_digest_changes_with_the_code_and_only_with_it(
    base_tar: Path, first: Built, tmp_path: Path
) -> None:
    example = make_example(tmp_path / "project")
    v1 = build(example, base_tar, tmp_path / "v1", cache=first.cache)
    # Markdown edits and saved outputs: same package, no new version, same image.
    edit_cell(example.notebook, "## Train", "## Train the model")
    add_outputs(example.notebook, "df.describe().T")
    unchanged = package(example.repo, example.notebook)
    assert unchanged.version == example.version
    again = build(unchanged, base_tar, tmp_path / "again")  # fresh cache
    assert (again.info.id, again.info.manifest_digest) == (v1.info.id, v1.info.manifest_digest)
    # A code change: a new version, a new code layer, the same dependency layer.
    edit_cell(
        example.notebook,
        'print(f"accuracy:',
        "y_pred = model.predict(X_test)\n"
        "accuracy = accuracy_score(y_test, y_pred)\ncm = confusion_matrix(y_test, y_pred)\n"
        'print(f"accuracy = {accuracy:.4f}")\n',
    )
    changed = package(example.repo, example.notebook)
    assert changed.version.number == 2
    v2 = build(changed, base_tar, tmp_path / "v2", cache=first.cache)
    assert v2.info.manifest_digest != v1.info.manifest_digest
    assert v2.info.layers[:2] == v1.info.layers[:2]
    assert v2.info.layers[2] != v1.info.layers[2]


def test_parameters_lock_and_base_change_the_digest(
    wine: Example, base_tar: Path, first: Built, tmp_path: Path
) -> None:
    params = build(wine, base_tar, tmp_path / "params", cache=first.cache, parameters={"alpha": 3})
    assert params.info.id != first.info.id and params.info.layers == first.info.layers
    files = dict(wine.pkg.files)
    assert b"iniconfig==" not in files["requirements.lock"]  # nothing wine needs: a real change
    files["requirements.lock"] += b"iniconfig==2.0.0\n"
    relocked = Example(wine.repo, wine.notebook, _with_files(wine.pkg, files), wine.version)
    lock = build(relocked, base_tar, tmp_path / "lock", cache=first.cache)
    assert lock.info.layers[1] != first.info.layers[1]
    patch = oci.LayerSpec()
    patch.add_file("etc/dsops-patch", b"patched\n")
    base_image = oci.read_base(base_tar, cache=tmp_path / "c")
    patched = oci.extend_base(base_image, patch, tmp_path / "blobs", "test: patch")
    other_base = oci.base_archive(patched, tmp_path / "patched.tar", BASE_TAG)
    base = build(wine, other_base, tmp_path / "base", cache=first.cache)
    assert base.info.layers[0] == first.info.layers[0]  # same bookworm layer, one more on top
    assert base.info.layers[2:] == first.info.layers[1:]
    assert base.info.base_digest != first.info.base_digest
    digests = {first.info.manifest_digest} | {x.info.manifest_digest for x in (params, lock, base)}
    assert len(digests) == 4


def _with_files(pkg: GeneratedPackage, files: dict[str, bytes]) -> GeneratedPackage:
    return GeneratedPackage(
        pkg.name, pkg.directory, files, pkg.notebook_path, pkg.content_hash, pkg.pipeline
    )


def test_cli_output_needs_no_engine_and_matches_the_api(base_tar: Path, tmp_path: Path) -> None:
    """`dsops package --output` with DOCKER_HOST pointing at nothing: a loadable archive."""
    repo = init_repo(tmp_path / "project", commit=False)
    notebook = copy_example("wine.ipynb", repo)
    archives = []
    for run in ("one", "two"):
        env = clean_env(
            DOCKER_HOST=f"unix://{tmp_path}/no-engine.sock",
            DSOPS_CACHE_DIR=str(tmp_path / f"cache-{run}"),
            DSOPS_WHEELHOUSE=str(WHEELHOUSE),
        )
        out = tmp_path / f"{run}.tar"
        args = ("package", notebook, "--output", out, "--base-image", base_tar, "--json")
        data = json.loads(assert_ok(dsops(*args, cwd=repo, env=env, timeout=600)).stdout)
        archives.append((out, data))
    (one, first_run), (two, second_run) = archives
    assert first_run["created"] and not second_run["created"]  # the same version, twice
    assert first_run["image"]["id"] == second_run["image"]["id"]
    assert sha256_file(one) == sha256_file(two)
    folder = Path(first_run["package_dir"])
    pkg = GeneratedPackage("wine", folder, tree_snapshot(folder), notebook, "")
    (version,) = vcs.list_versions(notebook, "wine")
    direct = build(Example(repo, notebook, pkg, version), base_tar, tmp_path / "api")
    assert direct.info.id == first_run["image"]["id"]
    assert direct.info.manifest_digest == first_run["image"]["manifest_digest"]


# --- hermetic: no network at all once the wheelhouse is filled ----------------------------------
_IN_NETNS = """
import json, socket, sys
from pathlib import Path
from dsops_jupyter import assemble, oci, vcs
try:
    socket.create_connection(("pypi.org", 443), timeout=5)
    network = True
except OSError:
    network = False
recipe_base, notebook, base, out, cache, wheelhouse = sys.argv[1:7]
pkg = assemble.generate_package(notebook, base_image=recipe_base)
version = [v for v in vcs.list_versions(Path(notebook)) if v.name == pkg.name][-1]
try:
    info = oci.build_reproducible(pkg, version, base_image=base, output=Path(out),
                                  cache_dir=Path(cache), wheelhouse=Path(wheelhouse))
    print(json.dumps({"network": network, "id": info.id, "manifest": info.manifest_digest}))
except Exception as err:
    print(json.dumps({"network": network, "error": type(err).__name__ + ": " + str(err)}))
"""


def run_without_network(*args: str | Path) -> dict[str, Any]:
    """Run the assembly in a new network namespace: no interface but a down loopback."""
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", _IN_NETNS, RECIPE_BASE, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env=clean_env(PYTHONPATH=str(Path(__file__).resolve().parents[1])),
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_hermetic_build_with_the_network_cut_off(
    wine: Example, base_tar: Path, first: Built, tmp_path: Path
) -> None:
    assert os.geteuid() == 0 and shutil.which("unshare"), "needs root and unshare (util-linux)"
    offline = run_without_network(
        wine.notebook, base_tar, tmp_path / "offline.tar", tmp_path / "cache", WHEELHOUSE
    )
    assert offline["network"] is False
    assert (offline["id"], offline["manifest"]) == (first.info.id, first.info.manifest_digest)
    assert sha256_file(tmp_path / "offline.tar") == sha256_file(first.archive)
    # With an empty wheelhouse the only step that needs the network fails, clearly.
    empty = run_without_network(
        wine.notebook, base_tar, tmp_path / "never.tar", tmp_path / "cache2", tmp_path / "empty"
    )
    assert empty["network"] is False
    assert empty["error"].startswith("LockError: ")
    assert not (tmp_path / "never.tar").exists()


# --- engines ------------------------------------------------------------------------------------
def load(client: Any, archive: Path) -> None:
    with archive.open("rb") as handle:
        client.images.load(handle)


def papermill_metrics(notebook: Path, folder: Path) -> dict[str, Any]:
    import papermill

    folder.mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(
        str(notebook), str(folder / "out.ipynb"), cwd=str(folder), kernel_name="python3"
    )
    return json.loads((folder / "outputs" / "metrics.json").read_text())


@pytest.mark.docker
def test_archive_loads_and_runs_offline_like_papermill(
    docker_engine: DockerEngine, wine: Example, first: Built, tmp_path: Path
) -> None:
    client = docker_engine.client
    load(client, first.archive)
    loaded = client.images.get(first.info.tags[0])
    assert loaded.id == first.info.id
    assert sorted(loaded.tags) == sorted(first.info.tags)
    run = image.smoke_run(first.info.tags[0], client=client, copy_out=tmp_path / "container")
    assert run.exit_code == 0
    in_container = json.loads((tmp_path / "container" / "outputs" / "metrics.json").read_text())
    assert in_container == papermill_metrics(wine.notebook, tmp_path / "papermill")
    custom = image.smoke_run(
        first.info.tags[0], {"alpha": 1000.0}, client=client, copy_out=tmp_path / "alpha"
    )
    assert custom.exit_code == 0
    metrics = json.loads((tmp_path / "alpha" / "outputs" / "metrics.json").read_text())
    assert (metrics["alpha"], metrics["accuracy"]) == (1000.0, 0.955556)


@pytest.mark.docker
def test_engine_path_gives_the_archive_path_digest(
    docker_engine: DockerEngine, wine: Example, base_tar: Path, first: Built, tmp_path: Path
) -> None:
    client = docker_engine.client
    load(client, base_tar)
    for tag in first.info.tags:
        client.images.remove(tag, force=True) if _has(client, tag) else None
    built = build(wine, BASE_TAG, tmp_path, engine=client, output=None)
    assert (built.info.id, built.info.manifest_digest) == (
        first.info.id,
        first.info.manifest_digest,
    )
    assert built.info.loaded and built.info.base == BASE_TAG
    assert client.images.get(first.info.tags[1]).id == first.info.id


def _has(client: Any, tag: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


@contextlib.contextmanager
def fresh_dockerd() -> Iterator[Any]:
    """A dockerd with its own, empty data root: no layer or build cache in common with others."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (apt-get install docker.io; .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="dsops-fresh-dockerd-", dir="/tmp"))
    process = _start_dockerd(root)
    try:
        yield _wait_for_ping(process, f"unix://{root / 'docker.sock'}", root / "dockerd.log")
    finally:
        _stop_dockerd(process, root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def fresh_engine() -> Iterator[Any]:
    with fresh_dockerd() as client:
        yield client


@pytest.mark.docker
def test_a_fresh_engine_builds_the_same_image(
    docker_engine: DockerEngine,
    fresh_engine: Any,
    wine: Example,
    base_tar: Path,
    first: Built,
    tmp_path: Path,
) -> None:
    assert fresh_engine.images.list() == []
    load(fresh_engine, base_tar)
    built = build(wine, BASE_TAG, tmp_path, engine=fresh_engine, output=None)
    print(f"\nfresh engine: id {built.info.id} manifest {built.info.manifest_digest}")
    assert (built.info.id, built.info.manifest_digest) == (
        first.info.id,
        first.info.manifest_digest,
    )
    assert fresh_engine.images.get(first.info.tags[0]).id == first.info.id
    run = image.smoke_run(first.info.tags[0], client=fresh_engine, copy_out=tmp_path / "out")
    assert run.exit_code == 0
    assert (
        json.loads((tmp_path / "out" / "outputs" / "metrics.json").read_text())["accuracy"] == 1.0
    )


@pytest.mark.docker
def test_engine_base_made_by_import_and_docker_build(
    docker_engine: DockerEngine, docker_base_image: str, tmp_path: Path
) -> None:
    """The session's base (docker import + a Dockerfile layer): saved, read, extended, run."""
    from tests.test_oci import tiny_package, version

    script = "import json, sys\njson.dump({'argv': sys.argv[1:]}, open('metrics.json', 'w'))\n"
    pkg = tiny_package(tmp_path, script=script)
    info = oci.build_reproducible(
        pkg,
        version(),
        base_image=docker_base_image,
        engine=docker_engine.client,
        parameters={"alpha": 0.25},
        cache_dir=tmp_path / "cache",
        wheelhouse=tmp_path / "empty-wheelhouse",
    )
    assert info.base == docker_base_image and info.loaded
    base = docker_engine.client.images.get(docker_base_image)
    assert info.base_digest == base.id
    assert info.layers[:-1] == base.attrs["RootFS"]["Layers"]  # unchanged; no deps: empty lock
    run = image.smoke_run(info.tags[0], client=docker_engine.client, copy_out=tmp_path / "out")
    assert run.exit_code == 0
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == {
        "argv": ["--alpha", "0.25"]
    }
