"""`dsops run` on a big notebook, and the generated script against its floor.

Run on demand (deselected by default):
``pytest -m benchmarks tests/benchmarks/test_bench_run.py -s``.

- P2-big: `dsops run` vs the bare `papermill` CLI on a notebook of BIG_CELLS code cells
  (goal <= 1.05x). No corpus notebook that size exists yet, so it is synthetic and generated
  deterministically: steps, a parameters cell, small pandas/numpy work, printed text, HTML
  tables and a matplotlib figure every 15 cells. The input is saved *with* its outputs (from a
  first papermill run), as people commit notebooks.
- P1-floor: the generated script of examples/wine.ipynb vs its floor, a file holding only the
  notebook's imports, both run with the same python (goal <= 1.15x).
- verify: the share of `dsops run`'s wall time spent fingerprinting step inputs on wine.

Medians of REPEATS interleaved runs. Benchmarks report; they assert only that runs succeeded.
"""

from __future__ import annotations

import ast
import json
import statistics
import sys
from pathlib import Path

import pytest

from dsops_jupyter.assemble import convert
from tests.benchmarks.test_bench_core import fresh, medians, record, timed
from tests.helpers import Markdown, copy_example, init_repo, make_notebook

pytestmark = pytest.mark.benchmarks

BIG_CELLS = 170


def big_cells() -> list:
    """BIG_CELLS code cells (and a markdown cell every 10) of ordinary analysis code."""
    cells: list = [
        Markdown("# A long analysis"),
        ("n_rows = 2000\nseed = 0", ["parameters"]),
        "import numpy as np\nimport pandas as pd\nimport matplotlib.pyplot as plt",
        (
            "rng = np.random.default_rng(seed)\n"
            "df = pd.DataFrame(rng.normal(size=(n_rows, 6)), columns=list('abcdef'))",
            ["step:load"],
        ),
    ]
    for i in range(BIG_CELLS - 3):
        if i % 10 == 0:
            cells.append(Markdown(f"## Part {i // 10}"))
        if i % 30 == 0:
            cells.append((f"part_{i} = df.copy()\npart_{i}['k'] = {i}", [f"step:part{i // 30}"]))
        elif i % 15 == 0:
            cells.append(
                f"fig, ax = plt.subplots(figsize=(4, 3))\nax.hist(df['{'abcdef'[i % 6]}'], "
                "bins=30)\nax.set_title('part " + str(i) + "')\nplt.show()"
            )
        elif i % 5 == 0:
            cells.append(f"df.describe().round({i % 4})")
        elif i % 3 == 0:
            cells.append(f"s_{i} = df['{'abcdef'[i % 6]}'].rolling(5).mean()\nprint(s_{i}.tail(3))")
        else:
            cells.append(f"v_{i} = float((df.values * {i}).sum())\nprint('value', {i}, v_{i})")
    return cells


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-big")
    blank = make_notebook(root / "blank.ipynb", big_cells())
    notebook = root / "analysis.ipynb"
    timed(["papermill", blank, notebook, "--cwd", root], root)  # saved with outputs
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    assert sum(c["cell_type"] == "code" for c in nb["cells"]) >= 150
    init_repo(root)
    return notebook


def test_p2_big_notebook_dsops_run_vs_papermill_cli(big: Path) -> None:
    root = big.parent

    def papermill(rep: int) -> float:
        cwd = fresh(root, "papermill", rep)
        return timed(["papermill", big, cwd / "out.ipynb", "--cwd", root], cwd)

    def dsops_run(rep: int) -> float:
        out = root / f"dsops-{rep}"
        elapsed = timed([sys.executable, "-m", "dsops_jupyter", "run", big, "--out", out], root)
        assert json.loads((out / "run.json").read_text())["status"] == "succeeded"
        return elapsed

    got = medians({"dsops": dsops_run, "papermill": papermill})
    size = big.stat().st_size // 1024
    record("P2-big", f"`dsops run` vs `papermill` ({BIG_CELLS} cells, {size} KiB, synthetic)",
           got["dsops"], got["papermill"], "<= 1.05x", speedup=False)  # fmt: skip


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """wine.ipynb, its generated script, and the floor: only the notebook's imports."""
    root = tmp_path_factory.mktemp("bench-wine-floor")
    notebook = copy_example("wine.ipynb", root)
    init_repo(root)
    pkg = convert(notebook)
    floor = root / "floor.py"
    floor.write_text("\n".join(notebook_imports(notebook)) + "\n", encoding="utf-8")
    return notebook, pkg.directory / f"{pkg.name}.py", floor


def notebook_imports(notebook: Path) -> list[str]:
    """Every top-level import statement of the notebook's code cells, in notebook order."""
    lines = []
    for cell in json.loads(notebook.read_text(encoding="utf-8"))["cells"]:
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or source.lstrip().startswith("%"):
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                lines.append(ast.unparse(node))
    return lines


def test_p1_script_vs_its_floor(wine: tuple[Path, Path, Path]) -> None:
    notebook, script, floor = wine
    root = notebook.parent

    def generated(rep: int) -> float:
        cwd = fresh(root, "script", rep)
        elapsed = timed([sys.executable, script], cwd)
        assert (cwd / "outputs" / "metrics.json").is_file()
        return elapsed

    def imports_only(rep: int) -> float:
        return timed([sys.executable, floor], fresh(root, "floor", rep))

    got = medians({"script": generated, "floor": imports_only})
    record("P1-floor", "generated script vs its imports only (wine)", got["script"],
           got["floor"], "<= 1.15x", speedup=False)  # fmt: skip


def test_verification_overhead(wine: tuple[Path, Path, Path]) -> None:
    notebook, _, _ = wine
    root = notebook.parent
    shares, seconds = [], []
    for rep in range(3):
        out = root / f"verify-{rep}"
        timed([sys.executable, "-m", "dsops_jupyter", "run", notebook, "--out", out], root)
        data = json.loads((out / "run.json").read_text())
        assert data["verification"]["checked_steps"], data["verification"]
        seconds.append(data["verification"]["seconds"])
        shares.append(data["verification"]["seconds"] / data["duration"])
    print(
        f"\nverify: fingerprinting took {statistics.median(seconds) * 1000:.0f} ms, "
        f"{statistics.median(shares):.1%} of `dsops run` (wine, median of 3)"
    )
