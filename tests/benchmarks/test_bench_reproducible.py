"""Benchmark: reproducible assembly vs the plain Dockerfile build of the wine example.

One run, one fresh dockerd (empty data root, so "cold" really has no layer or build cache),
both paths from the same base image in that engine:

- Dockerfile cold: ``docker build`` of the generated recipe (pip installs from PyPI);
- Dockerfile warm: the same build again (every step a cache hit);
- reproducible cold: empty dsops cache and empty wheelhouse (``pip download`` from PyPI, base
  saved from the engine, layers written, loaded);
- reproducible warm: everything cached (wheels, base, dependency layer);
- code change: a cell edited, a new version, both paths again (the edit loop a user lives in:
  only the code layer is new).

Run with ``pytest -m benchmarks tests/benchmarks -s``; prints the times and ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter import assemble, image, oci, vcs
from dsops_jupyter.model import ImageResult
from tests.docker_engine import HOST_CA_BUNDLE, ensure_rootfs_tarball
from tests.helpers import copy_example, git, init_repo
from tests.test_reproducible import fresh_dockerd

BASE_TAG = "dsops-bench-base:ca"
PIP_CONF = b"[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\n"


def ca_base_archive(folder: Path) -> Path:
    """bookworm + the host CA bundle (pip inside ``docker build`` needs it), as an archive."""
    base = oci.read_base(ensure_rootfs_tarball(), cache=folder / "cache")
    extra = oci.LayerSpec()
    extra.add_file("etc/ssl/certs/ca-certificates.crt", HOST_CA_BUNDLE.read_bytes())
    extra.add_file("etc/pip.conf", PIP_CONF)
    with_ca = oci.extend_base(base, extra, folder / "blobs", "test: host CA bundle for pip")
    return oci.base_archive(with_ca, folder / "base.tar", BASE_TAG)


def timed(label: str, action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - start
    print(f"\n  {label:<24} {seconds:7.1f} s", flush=True)
    return seconds, value


@pytest.mark.benchmarks
@pytest.mark.docker
@pytest.mark.timeout(3600)  # vfs copies every layer of a Dockerfile build: slow on purpose
def test_reproducible_vs_dockerfile_build(tmp_path: Path) -> None:
    repo = init_repo(tmp_path / "project", commit=False)
    notebook = copy_example("wine.ipynb", repo)
    git(repo, "add", "wine.ipynb")
    git(repo, "commit", "-q", "-m", "wine")
    pkg = assemble.generate_package(notebook, base_image=BASE_TAG)
    version, _ = vcs.commit_package(pkg)
    base = ca_base_archive(tmp_path / "base")
    cache, wheels = tmp_path / "dsops-cache", tmp_path / "wheelhouse"

    def dockerfile(client: Any) -> ImageResult:
        return image.build_image(pkg, version, client=client)

    def reproducible(client: Any) -> ImageResult:
        return oci.build_reproducible(
            pkg, version, base_image=BASE_TAG, engine=client, wheelhouse=wheels, cache_dir=cache
        )

    def change_code() -> None:
        nonlocal pkg, version
        text = notebook.read_text().replace("accuracy: {accuracy:.4f}", "accuracy = {accuracy:.4f}")
        notebook.write_text(text)
        pkg = assemble.generate_package(notebook, base_image=BASE_TAG)
        version, created = vcs.commit_package(pkg)
        assert created

    with fresh_dockerd() as client:
        with base.open("rb") as handle:
            client.images.load(handle)
        times: dict[str, float] = {}
        times["dockerfile cold"], plain = timed("dockerfile cold", lambda: dockerfile(client))
        times["dockerfile warm"], again = timed("dockerfile warm", lambda: dockerfile(client))
        times["reproducible cold"], cold = timed("reproducible cold", lambda: reproducible(client))
        times["reproducible warm"], warm = timed("reproducible warm", lambda: reproducible(client))
        change_code()
        times["dockerfile code change"], _ = timed(
            "dockerfile code change", lambda: dockerfile(client)
        )
        times["reproducible code change"], changed = timed(
            "reproducible code change", lambda: reproducible(client)
        )

    assert again.id == plain.id  # the warm Dockerfile build was all cache hits
    assert (warm.id, warm.manifest_digest) == (cold.id, cold.manifest_digest)
    assert changed.layers[:-1] == cold.layers[:-1] and changed.layers[-1] != cold.layers[-1]
    print("\nwine example, one fresh engine (vfs), seconds:")
    for name, seconds in times.items():
        print(f"  {name:<24} {seconds:7.1f}")
    cold_ratio = times["reproducible cold"] / times["dockerfile cold"]
    warm_ratio = times["reproducible warm"] / times["dockerfile warm"]
    edit_ratio = times["reproducible code change"] / times["dockerfile code change"]
    print(
        f"  reproducible / dockerfile: cold {cold_ratio:.2f}x, warm {warm_ratio:.2f}x,"
        f" code change {edit_ratio:.2f}x"
    )
    print(f"  reproducible image {cold.id} manifest {cold.manifest_digest}")
    print(f"  dockerfile image   {plain.id} (differs on every cold build: timestamps)")
