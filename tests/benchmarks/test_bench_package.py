"""Package with an image and a smoke run, as "Package notebook" does: first time, then after a
code-only change (issue 10: at most 60 s first, at most 10 s for a code change).

The default builder (the layer assembler) on the session's private engine. "First" starts from
an empty dsops cache (no wheels, no saved base, no dependency layer) unless
DSOPS_BENCH_WARM_CACHE is set, which keeps the user's cache (a second project on one machine).

Run with ``pytest -m benchmarks tests/benchmarks/test_bench_package.py -s``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dsops_jupyter.events import Event
from dsops_jupyter.model import PackageOptions, PackageResult
from dsops_jupyter.package import package_notebook
from tests.benchmarks.test_bench_image import edit_code
from tests.docker_engine import DockerEngine
from tests.helpers import copy_example, git, init_repo

FIRST_GOAL = 60.0
CODE_CHANGE_GOAL = 10.0


def timed_package(notebook: Path, options: PackageOptions) -> tuple[PackageResult, float]:
    """Package once; print where the time went (each stage, each build step and smoke phase)."""
    marks: list[tuple[float, str]] = []

    def on_event(event: Event) -> None:
        if event.kind == "stage" or event.message.split(" ")[0] in ("step", "phase"):
            marks.append((time.perf_counter(), event.message[:60]))

    start = time.perf_counter()
    result = package_notebook(notebook, options, on_event)
    end = time.perf_counter()
    for (when, what), (after, _) in zip(marks, [*marks[1:], (end, "")], strict=True):
        print(f"  {after - when:6.2f} s  {what}")
    return result, end - start


@pytest.mark.benchmarks
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_first_package_and_code_change_with_image_and_smoke_run(
    docker_engine: DockerEngine,
    docker_base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not os.environ.get("DSOPS_BENCH_WARM_CACHE"):
        monkeypatch.setenv("DSOPS_CACHE_DIR", str(tmp_path / "cache"))
    repo = init_repo(tmp_path / "project", commit=False)
    notebook = copy_example("wine.ipynb", repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "wine")
    options = PackageOptions(base_image=docker_base_image, smoke=True)

    print("\nfirst package:")
    first, first_seconds = timed_package(notebook, options)
    edit_code(notebook)
    print("code-only change:")
    changed, changed_seconds = timed_package(notebook, options)

    assert (first.version.number, changed.version.number) == (1, 2)
    assert first.smoke.exit_code == changed.smoke.exit_code == 0
    assert "benchmark edit" in changed.smoke.log
    print(
        f"\nfirst package with image + smoke: {first_seconds:.1f} s (goal {FIRST_GOAL:.0f} s)"
        f"\ncode-only change repackage:      {changed_seconds:.1f} s (goal "
        f"{CODE_CHANGE_GOAL:.0f} s)  [{docker_engine.storage_driver}]"
    )
    assert first_seconds <= FIRST_GOAL
    assert changed_seconds <= CODE_CHANGE_GOAL
