"""P4: repackaging after a code-only change vs a cold build of the same notebook, in one run.

Cold means no layer of this recipe exists in the engine: the base is a fresh image (the test
base plus a unique label), so every step runs, pip downloads every wheel from PyPI. Then one code
cell changes and `package_notebook` runs again; only the version labels and the code layer may
be rebuilt. Goal: repackage <= 0.1 x cold. Also prints the image size against its base.

Run with ``pytest -m benchmarks tests/benchmarks/test_bench_image.py -s``.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.model import PackageOptions
from dsops_jupyter.package import package_notebook
from tests.docker_engine import DockerEngine
from tests.helpers import copy_example, git, init_repo

GOAL = 0.1


def fresh_base(client: Any, parent: str) -> str:
    """A base no build has used yet: `parent` plus a unique label (one empty layer)."""
    tag = f"dsops-bench-base:{uuid.uuid4().hex[:12]}"
    dockerfile = f"FROM {parent}\nLABEL io.dsops.bench={tag.split(':')[1]}\n".encode()
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    for chunk in client.api.build(fileobj=context, custom_context=True, tag=tag, decode=True):
        assert "error" not in chunk, chunk
    return tag


def edit_code(notebook: Path) -> None:
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if "step:evaluate" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nprint('benchmark edit')"
    notebook.write_text(json.dumps(nb, indent=1))


@pytest.mark.benchmarks
@pytest.mark.docker
@pytest.mark.timeout(3600)
def test_p4_code_only_repackage_vs_cold_build(
    docker_engine: DockerEngine, docker_base_image: str, tmp_path: Path
) -> None:
    client = docker_engine.client
    base = fresh_base(client, docker_base_image)
    repo = init_repo(tmp_path / "project", commit=False)
    notebook = copy_example("wine.ipynb", repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wine")
    options = PackageOptions(parameters={"alpha": 0.7}, base_image=base)

    start = time.perf_counter()
    cold = package_notebook(notebook, options)
    cold_seconds = time.perf_counter() - start

    edit_code(notebook)
    start = time.perf_counter()
    warm = package_notebook(notebook, options)
    warm_seconds = time.perf_counter() - start

    start = time.perf_counter()
    unchanged = package_notebook(notebook, options)
    unchanged_seconds = time.perf_counter() - start

    assert (cold.version.number, warm.version.number) == (1, 2) and not unchanged.created
    base_size = client.images.get(base).attrs["Size"]
    ratio = warm_seconds / cold_seconds
    print(
        f"\n  P4 wine image ({docker_engine.storage_driver} storage)"
        f"\n    cold package (convert+commit+build, pip from PyPI) {cold_seconds:8.1f} s"
        f"\n    code-only change repackage                         {warm_seconds:8.1f} s"
        f"\n    ratio                                              {ratio:8.3f} x "
        f"(goal <= {GOAL} x)"
        f"\n    unchanged notebook repackage (no new version)      {unchanged_seconds:8.1f} s"
        f"\n    image size {warm.image.size / 1e6:.1f} MB = base {base_size / 1e6:.1f} MB"
        f" + {(warm.image.size - base_size) / 1e6:.1f} MB (venv, dependencies, code)",
        flush=True,
    )
    assert ratio <= GOAL
