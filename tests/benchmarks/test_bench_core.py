"""Performance of the headless core against the tools it replaces, as whole-process wall times.

Run on demand (deselected by default): ``pytest -m benchmarks tests/benchmarks -s``.

- P1: the converted script vs papermill on the same example notebook (goal <= 0.3x).
- P2: `dsops run` vs the bare `papermill` CLI on the same notebook (goal <= 1.05x).
- P5: `dsops check` over 200 converted notebooks vs `jupyter nbconvert --to script` on them
  (goal >= 20x faster).

Each figure is the median of REPEATS runs, interleaved so machine load hits both sides alike.
Benchmarks report: they assert that every run succeeded, never that a goal was met.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsops_jupyter.assemble import convert
from tests.helpers import clean_env, copy_example, init_repo, make_notebook

pytestmark = pytest.mark.benchmarks

REPEATS = 3
CHECK_NOTEBOOKS = 200
EXAMPLE = "wine.ipynb"
RESULTS: dict[str, dict[str, float | str]] = {}


def timed(argv: list[str | Path], cwd: Path) -> float:
    """Wall time of one process; it must succeed."""
    start = time.perf_counter()
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, env=clean_env()
    )
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return elapsed


def medians(sides: dict[str, Callable[[int], float]]) -> dict[str, float]:
    """Run every side REPEATS times, interleaved; the median wall time of each."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    for rep in range(REPEATS):
        for name, run in sides.items():
            times[name].append(run(rep))
    return {name: statistics.median(values) for name, values in times.items()}


def record(key: str, label: str, ours: float, theirs: float, goal: str, speedup: bool) -> None:
    ratio = theirs / ours if speedup else ours / theirs
    RESULTS[key] = {"label": label, "dsops": ours, "baseline": theirs, "ratio": ratio, "goal": goal}
    shown = f"{ratio:.1f}x faster" if speedup else f"{ratio:.2f}x"
    print(f"\n{key} {label}: dsops {ours:.2f}s, baseline {theirs:.2f}s -> {shown} (goal {goal})")


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench-wine")
    notebook = copy_example(EXAMPLE, root)
    init_repo(root)
    pkg = convert(notebook)
    return notebook, pkg.directory / f"{pkg.name}.py"


def fresh(root: Path, name: str, rep: int) -> Path:
    folder = root / f"{name}-{rep}"
    folder.mkdir()
    return folder


def test_p1_script_vs_papermill(wine: tuple[Path, Path]) -> None:
    notebook, script = wine
    root = notebook.parent

    def papermill(rep: int) -> float:
        cwd = fresh(root, "p1-papermill", rep)
        return timed(["papermill", notebook, cwd / "out.ipynb", "--cwd", cwd], cwd)

    def generated(rep: int) -> float:
        cwd = fresh(root, "p1-script", rep)
        elapsed = timed([sys.executable, script], cwd)
        assert (cwd / "outputs" / "metrics.json").is_file()
        return elapsed

    got = medians({"script": generated, "papermill": papermill})
    RESULTS["_papermill_wine"] = {"median": got["papermill"]}
    record("P1", "converted script vs papermill (wine)", got["script"], got["papermill"],
           "<= 0.30x", speedup=False)  # fmt: skip


def test_p2_dsops_run_vs_papermill_cli(wine: tuple[Path, Path]) -> None:
    notebook, _ = wine
    root = notebook.parent

    def papermill(rep: int) -> float:
        cwd = fresh(root, "p2-papermill", rep)
        return timed(["papermill", notebook, cwd / "out.ipynb", "--cwd", root], cwd)

    def dsops_run(rep: int) -> float:
        out = root / f"p2-dsops-{rep}"
        elapsed = timed(
            [sys.executable, "-m", "dsops_jupyter", "run", notebook, "--out", out], root
        )
        assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
        return elapsed

    got = medians({"dsops": dsops_run, "papermill": papermill})
    record("P2", "`dsops run` vs `papermill` CLI (wine)", got["dsops"], got["papermill"],
           "<= 1.05x", speedup=False)  # fmt: skip


def many_notebooks(root: Path, count: int) -> list[Path]:
    """Distinct small notebooks: parameters, imports, two or three steps, a skip cell."""
    paths = []
    for i in range(count):
        cells = [
            (f"n = {i + 1}\nlabel = 'nb{i}'", ["parameters"]),
            "import json\nimport math",
            (f"values = [math.sqrt(v) * {i % 7 + 1} for v in range(n)]", ["step:make"]),
            ("values.sort()", ["skip"]),
            (f"total = round(sum(values), {i % 5})", ["step:reduce"]),
        ]
        if i % 2:
            cells.append(("print(json.dumps({label: total}))", ["step:report", "after:reduce"]))
        paths.append(make_notebook(root / "nbs" / f"analysis_{i:03d}.ipynb", cells))
    return paths


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-check")
    (root / "pyproject.toml").write_text('[tool.dsops]\nnotebooks = ["nbs/*.ipynb"]\n')
    for path in many_notebooks(root, CHECK_NOTEBOOKS):
        convert(path)
    return root


def test_p5_check_vs_nbconvert(many: Path) -> None:
    notebooks = sorted(str(p.relative_to(many)) for p in (many / "nbs").glob("*.ipynb"))
    assert len(notebooks) == CHECK_NOTEBOOKS

    def check(rep: int) -> float:
        return timed([sys.executable, "-m", "dsops_jupyter", "check", "--strict"], many)

    def check_full(rep: int) -> float:
        return timed([sys.executable, "-m", "dsops_jupyter", "check", "--strict", "--full"], many)

    def nbconvert(rep: int) -> float:
        out = many / f"nbconvert-{rep}"
        argv = ["jupyter", "nbconvert", "--to", "script", "--output-dir", out, *notebooks]
        elapsed = timed(argv, many)
        assert len(list(out.glob("*.py"))) == CHECK_NOTEBOOKS
        shutil.rmtree(out)
        return elapsed

    got = medians({"check": check, "full": check_full, "nbconvert": nbconvert})
    report = subprocess.run(
        [sys.executable, "-m", "dsops_jupyter", "check", "--json"],
        cwd=many, capture_output=True, text=True, env=clean_env(), check=True,
    )  # fmt: skip
    items = json.loads(report.stdout)["items"]
    assert len(items) == CHECK_NOTEBOOKS and all(i["status"] == "ok" for i in items)
    record("P5", f"`dsops check` vs nbconvert --to script ({CHECK_NOTEBOOKS} notebooks)",
           got["check"], got["nbconvert"], ">= 20x faster", speedup=True)  # fmt: skip
    record("P5-full", f"`dsops check --full` (regenerate all) vs nbconvert ({CHECK_NOTEBOOKS})",
           got["full"], got["nbconvert"], "(no cache)", speedup=True)  # fmt: skip


def test_zz_print_table() -> None:
    rows = [(k, v) for k, v in sorted(RESULTS.items()) if not k.startswith("_")]
    assert rows, "no benchmark ran"
    print(f"\n\n{'':4}{'benchmark':<62}{'dsops':>9}{'baseline':>10}{'ratio':>14}  goal")
    for key, row in rows:
        ratio = row["ratio"]
        shown = f"{ratio:.1f}x faster" if key.startswith("P5") else f"{ratio:.2f}x"
        print(
            f"{key:<4}{row['label']:<62}{row['dsops']:>8.2f}s{row['baseline']:>9.2f}s"
            f"{shown:>14}  {row['goal']}"
        )
    print(f"(medians of {REPEATS} runs each; {sys.platform}, Python {sys.version.split()[0]})")
