"""`dsops run --grid`: combinations in parallel, each a normal run with its own folder and record.

Real kernels and real processes: the sweep's results are compared with separate `dsops run`s of
the same notebook, a failing combination must not stop the others, and Ctrl-C must stop every
run cleanly (records written, no process left).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import (
    assert_ok,
    clean_env,
    copy_example,
    dsops,
    error_line,
    make_notebook,
    tree_snapshot,
)

ALPHAS = ("0.1", "10", "1000")


def test_three_parameter_sets_in_parallel_equal_three_separate_runs(tmp_path: Path) -> None:
    swept = copy_example("wine.ipynb", tmp_path / "sweep")
    done = assert_ok(
        dsops(
            "run",
            swept,
            "--grid",
            f"alpha={','.join(ALPHAS)}",
            "--jobs",
            "3",
            "--json",
            "--out",
            tmp_path / "out",
            cwd=tmp_path,
            timeout=600,
        )
    )
    summary = json.loads(done.stdout)
    assert summary == json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [run["parameters"] for run in summary["runs"]] == [{"alpha": float(a)} for a in ALPHAS]
    assert {run["status"] for run in summary["runs"]} == {"succeeded"}
    separate = copy_example("wine.ipynb", tmp_path / "separate")
    for alpha, run in zip(ALPHAS, summary["runs"], strict=True):
        assert_ok(dsops("run", separate, "-p", "alpha", alpha, cwd=tmp_path, timeout=300))
        expected = json.loads((separate.parent / "outputs" / "metrics.json").read_text())
        folder = Path(run["out_dir"])
        assert json.loads((folder / "outputs" / "metrics.json").read_text()) == expected
        assert run["metrics"] == expected
        record = json.loads(Path(run["record"]).read_text())
        assert record["status"] == "succeeded" and record["parameters"]["alpha"] == float(alpha)
        assert (folder / "wine.ipynb").exists()
    # examples/README.md: seed 42 gives 1.0 up to alpha=100 and 0.955556 at alpha=1000
    assert [run["metrics"]["accuracy"] for run in summary["runs"]] == [1.0, 1.0, 0.955556]
    assert not (swept.parent / "outputs").exists(), "each run writes in its own folder"


def test_a_failing_combination_leaves_the_others_running_and_exits_1(tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "fails.ipynb",
        [
            ("n = 1", ["parameters"]),
            ("import json\nassert n != 2, 'two is bad'", ["step:check"]),
            ("json.dump({'n': n, 'square': n * n}, open('metrics.json', 'w'))", ["step:save"]),
        ],
    )
    done = dsops(
        "run", nb, "--grid", "n=1,2,3", "--jobs", "2", "--out", tmp_path / "o", cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    table = done.stdout
    for row in ("│ 1 │ 1 │ succeeded", "│ 2 │ 2 │ failed", "│ 3 │ 3 │ succeeded"):
        assert row in table, table
    assert "run 2 failed: step 'check', cell 2, line 2" in done.stderr
    summary = json.loads((tmp_path / "o" / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["succeeded", "failed", "succeeded"]
    assert [r["metrics"].get("square") for r in summary["runs"]] == [1, None, 9]
    assert summary["status"] == "failed"
    assert json.loads(Path(summary["runs"][1]["record"]).read_text())["status"] == "failed"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--grid", "beta=1,2"], "wine.ipynb has no parameter 'beta'"),
        (["--grid", "alpha="], "--grid alpha= has no values"),
        (["--grid", "seed=1,x"], "parameter seed expects int (default 42), got 'x'"),
        (["--grid", "alpha"], "--grid 'alpha': expected NAME=VALUE,VALUE,..."),
        (["--grid", "alpha=1,2", "-p", "alpha", "3"], "set with -p and swept with --grid"),
        (["--grid", "alpha=1,2", "--jobs", "0"], "--jobs must be at least 1, got 0"),
        (["--jobs", "2"], "--jobs is for sweeps: add --grid NAME=V1,V2,..."),
    ],
)
def test_bad_grids_fail_in_one_line_with_exit_2_writing_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    nb = copy_example("wine.ipynb", tmp_path / "nb")
    before = tree_snapshot(tmp_path)
    line = error_line(dsops("run", nb, *args, cwd=tmp_path))
    assert message in line
    assert tree_snapshot(tmp_path) == before


def test_ctrl_c_stops_every_run_and_writes_the_summary(tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "slow.ipynb",
        [("n = 1", ["parameters"]), ("import time\ntime.sleep(120)", ["step:wait"])],
    )
    out = tmp_path / "o"
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dsops_jupyter",
            "run",
            nb,
            "--grid",
            "n=1,2,3",
            "--jobs",
            "2",
            "--out",
            out,
        ],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(out.glob("*/slow.ipynb"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the kernels are in their cells
    family = psutil.Process(sweep.pid).children(recursive=True)
    assert len(family) >= 4, "two run processes, each with its kernel"
    sweep.send_signal(signal.SIGINT)
    _stdout, stderr = sweep.communicate(timeout=90)
    assert sweep.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: sweep interrupted: 0 of 3 runs finished"), stderr
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["interrupted", "interrupted", "not run"]
    for run in summary["runs"][:2]:
        assert json.loads(Path(run["record"]).read_text())["status"] == "interrupted"
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, f"left running: {alive}"
