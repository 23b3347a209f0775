"""Papermill runs in real kernels: run records, chosen steps, coerced parameters, failures.

Kernel starts are the slow part (seconds each), so each run is made once per module and several
tests read its results.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.errors import ExecutionError
from dsops_jupyter.events import Event
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import RunOptions, RunRecord
from dsops_jupyter.notebook import read_pipeline
from tests.helpers import (
    Markdown,
    clean_env,
    dsops,
    executed_sources,
    git,
    init_repo,
    make_notebook,
    notebook_outputs,
)

INJECTION = '"); import os; os.system("x") #'
CELLS = [
    Markdown("# A small pipeline with side effects we can observe"),
    ("alpha = 1.0\nseed = 1\nlabel = 'x'", ["parameters"]),
    "import json\nfrom pathlib import Path\n\nimport yaml",
    ("data = [1, 2, 3]\nPath('load.done').write_text('1')", ["step:load"]),
    ("Path('skip.done').write_text('1')", ["skip"]),
    (
        "doubled = [d * alpha for d in data]\n"
        "print('alpha', type(alpha).__name__, repr(alpha), seed, repr(label))\n"
        "Path('double.done').write_text(json.dumps(doubled))",
        ["step:double"],
    ),
    ("Path('report.done').write_text(yaml.safe_dump(sum(doubled)))", ["step:report"]),
    ("Path('other.done').write_text(str(seed))", ["step:other"]),
]
FAILING = [
    ("x = 1", ["parameters"]),
    Markdown("Markdown cells count: the failing cell is cell 4."),
    ("a = x + 1\nprint(a)", ["step:one"]),
    ("b = a\nc = 1 / 0\nprint(c)", ["step:two"]),
    ("Path('never').write_text('1')", ["step:three"]),
]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecord, Path, list[Event]]:
    """Every step, in-process, inside a Git repository, with coerced parameters."""
    root = tmp_path_factory.mktemp("execute")
    make_notebook(root / "pipe.ipynb", CELLS)
    init_repo(root)
    cwd = root / "cwd"
    cwd.mkdir()
    events: list[Event] = []
    record = run_notebook(
        root / "pipe.ipynb",
        RunOptions(parameters={"alpha": "2", "label": INJECTION}, out_dir=root / "out", cwd=cwd),
        events.append,
    )
    return record, cwd, events


@pytest.fixture(scope="module")
def step_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """`dsops run --step double -f params.yaml -p alpha 3 --json` through the CLI."""
    root = tmp_path_factory.mktemp("step-run")
    make_notebook(root / "pipe.ipynb", CELLS)
    (root / "params.yaml").write_text("alpha: 5\nseed: 7\nlabel: from yaml\n", encoding="utf-8")
    done = dsops(
        "run", "pipe.ipynb", "--step", "double", "-f", "params.yaml", "-p", "alpha", "3",
        "--out", "out", "--json", cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout), root


# --- a full run --------------------------------------------------------------------------------
def test_every_step_ran_and_skip_cells_did_not(full_run: tuple) -> None:
    record, cwd, _ = full_run
    assert record.status == "succeeded"
    assert [s["name"] for s in record.steps] == ["load", "double", "report", "other"]
    assert all(s["status"] == "done" for s in record.steps)
    assert {p.name for p in cwd.iterdir()} == {
        "load.done",
        "double.done",
        "report.done",
        "other.done",
    }
    assert json.loads((cwd / "double.done").read_text()) == [2.0, 4.0, 6.0]


def test_cli_string_parameters_reach_the_kernel_typed(full_run: tuple) -> None:
    record, _, _ = full_run
    text = notebook_outputs(record.output_notebook)
    assert f"alpha float 2.0 1 {INJECTION!r}" in text


def test_run_record(full_run: tuple) -> None:
    record, _, _ = full_run
    assert record.output_notebook.is_file()
    assert record.record_path == record.output_notebook.parent / "run.json"
    data = json.loads(record.record_path.read_text(encoding="utf-8"))
    assert data["status"] == "succeeded"
    assert data["parameters"] == {"alpha": 2.0, "seed": 1, "label": INJECTION}
    assert [(s["name"], s["status"]) for s in data["steps"]] == [
        ("load", "done"),
        ("double", "done"),
        ("report", "done"),
        ("other", "done"),
    ]
    assert all(isinstance(s["duration"], float) and s["duration"] >= 0 for s in data["steps"])
    notebook = Path(data["notebook"])
    assert data["content_hash"] == read_pipeline(notebook).content_hash
    assert data["git"]["commit"] == git(notebook.parent, "rev-parse", "HEAD")
    assert data["python"] == platform.python_version()
    assert data["packages"]["PyYAML"] == version("PyYAML")
    assert data["packages"]["papermill"] == version("papermill")
    assert data["duration"] > 0


def test_progress_events(full_run: tuple) -> None:
    _, _, events = full_run
    kinds = [e.kind for e in events]
    assert kinds[0] == "stage" and kinds[-1] == "result"
    fractions = [e.fraction for e in events if e.kind == "progress" and e.fraction is not None]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert any(e.kind == "log" and "alpha float 2.0" in e.message for e in events)


def test_the_source_notebook_is_untouched(full_run: tuple) -> None:
    record, _, _ = full_run
    nb = json.loads(Path(record.notebook).read_text(encoding="utf-8"))
    assert all(c.get("outputs", []) == [] for c in nb["cells"])


# --- chosen steps --------------------------------------------------------------------------------
def test_step_runs_it_and_its_upstream_only(step_run: tuple) -> None:
    data, root = step_run
    assert [s["name"] for s in data["steps"]] == ["load", "double"]
    ran = "\n".join(executed_sources(Path(data["output_notebook"])))
    assert "data = [1, 2, 3]" in ran and "doubled = " in ran
    assert "report.done" not in ran and "other.done" not in ran and "skip.done" not in ran
    assert (root / "load.done").is_file() and (root / "double.done").is_file()
    assert not (root / "report.done").exists()
    assert not (root / "other.done").exists()
    assert not (root / "skip.done").exists()


def test_yaml_parameters_with_p_winning(step_run: tuple) -> None:
    data, root = step_run
    assert data["parameters"] == {"alpha": 3.0, "seed": 7, "label": "from yaml"}
    text = notebook_outputs(Path(data["output_notebook"]))
    assert "alpha float 3.0 7 'from yaml'" in text
    assert json.loads((root / "double.done").read_text()) == [3.0, 6.0, 9.0]
    assert Path(data["output_notebook"]).parent == root / "out"
    assert json.loads((root / "out" / "run.json").read_text())["status"] == "succeeded"


# --- failures ----------------------------------------------------------------------------------
def test_failing_cell_through_the_cli(tmp_path: Path) -> None:
    make_notebook(tmp_path / "fail.ipynb", FAILING)
    done = dsops("run", "fail.ipynb", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    line = errors[0]
    assert "step 'two'" in line, line
    assert "line 2 `c = 1 / 0`" in line and "ZeroDivisionError" in line, line
    kept = tmp_path / "out" / "fail.ipynb"
    assert kept.is_file() and str(kept) in line
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["status"] == "failed"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("one", "done"),
        ("two", "failed"),
        ("three", "skipped"),
    ]
    assert not (tmp_path / "never").exists()
    assert "cell 4" in line, line  # the notebook's 4th cell (markdown counts), as people count


def test_failing_cell_after_injected_parameters(tmp_path: Path) -> None:
    """papermill adds an injected-parameters cell: the error must still name the right cell."""
    make_notebook(tmp_path / "fail.ipynb", FAILING)
    with pytest.raises(ExecutionError) as caught:
        run_notebook(
            tmp_path / "fail.ipynb", RunOptions(parameters={"x": 5}, out_dir=tmp_path / "out")
        )
    err = caught.value
    assert err.exit_code == 1
    assert err.output_path and Path(err.output_path).is_file()
    assert "`c = 1 / 0`" in str(err)
    assert err.step == "two", str(err)
    assert "step 'two', cell 4," in str(err)


def test_executed_notebook_records_the_input_path_not_a_copy(full_run: tuple) -> None:
    record, _, _ = full_run
    executed = json.loads(record.output_notebook.read_text(encoding="utf-8"))
    assert executed["metadata"]["papermill"]["input_path"] == record.notebook


# --- errors name the user's line ------------------------------------------------------------------
def failing_run(tmp_path: Path, cells: list) -> str:
    """`dsops run` of a notebook that fails: exit 1, no traceback, one error line."""
    make_notebook(tmp_path / "nb.ipynb", cells)
    done = dsops("run", "nb.ipynb", "--out", "out", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_library_error_blames_the_users_line_not_the_library_frame(tmp_path: Path) -> None:
    line = failing_run(
        tmp_path,
        [
            "import pandas as pd\ndf = pd.DataFrame({'a': [1]})",
            ("x = 1\n\nz = df['nope']\nprint(z)", ["step:select"]),
        ],
    )
    assert "step 'select', cell 2, line 3 `z = df['nope']`" in line, line
    assert "KeyError: 'nope'" in line, line
    assert "get_loc" not in line and "pandas" not in line.split("(")[0], line


def test_unknown_magic_is_named(tmp_path: Path) -> None:
    line = failing_run(tmp_path, ["x = 1", ("y = 2\n%nosuchmagic 3", ["step:magic"])])
    assert "step 'magic', cell 2, line 2 `%nosuchmagic 3`" in line, line
    assert "UsageError: Line magic function `%nosuchmagic` not found" in line, line


def test_error_line_counts_the_dsops_marker_line(tmp_path: Path) -> None:
    """The %%dsops line is stripped before the kernel runs the cell; people count it."""
    line = failing_run(tmp_path, ["%%dsops step two\nb = 1\nc = b / 0"])
    assert "line 3 `c = b / 0`" in line and "ZeroDivisionError" in line, line


def test_ctrl_c_is_one_line_exit_130_and_the_bar_not_complete(tmp_path: Path) -> None:
    """A real SIGINT to a real `dsops run` while a cell sleeps."""
    make_notebook(
        tmp_path / "nb.ipynb",
        [
            ("import time\nprint('started', flush=True)", ["step:begin"]),
            ("time.sleep(120)\nprint('never')", ["step:wait"]),
        ],
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "dsops_jupyter", "run", "nb.ipynb", "--out", "out"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
    )  # fmt: skip
    seen = wait_for_line(process, "started", timeout=120)
    time.sleep(1.0)  # the sleeping cell has started
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    stderr = seen + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "ZMQError" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "interrupted in step 'wait', cell 2" in errors[0], stderr
    assert "100%" not in stderr, stderr
    record = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "interrupted"
    assert [(s["name"], s["status"]) for s in record["steps"]] == [
        ("begin", "done"),
        ("wait", "failed"),
    ]
    assert record["steps"][1]["error"] == "interrupted"


def wait_for_line(process: subprocess.Popen, text: str, timeout: float) -> str:
    """Read the process's stderr until a line containing ``text`` (bounded by ``timeout``)."""
    import selectors

    seen, deadline = "", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stderr, selectors.EVENT_READ)
        while text not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0 and process.poll() is None, f"no {text!r} in:\n{seen}"
            if selector.select(timeout=remaining):  # raw reads: no text buffer to hide lines
                seen += os.read(process.stderr.fileno(), 65536).decode("utf-8", "replace")
    return seen


# --- live output -------------------------------------------------------------------------------
def test_live_output_keeps_the_kernels_line_breaks(tmp_path: Path) -> None:
    make_notebook(
        tmp_path / "nb.ipynb",
        [
            "import sys, time\nprint('a', end='')\nsys.stdout.flush()\ntime.sleep(0.3)\n"
            "print('b')\nprint('c\\nd', end='')\nsys.stdout.flush()\ntime.sleep(0.3)\nprint('e')"
        ],
    )
    events: list[Event] = []
    run_notebook(tmp_path / "nb.ipynb", RunOptions(out_dir=tmp_path / "out"), events.append)
    assert [e.message for e in events if e.kind == "log"] == ["ab", "c", "de"]


# --- runtime verification of step inputs --------------------------------------------------------
ALIASED = [
    "import threading\nimport types\n\nimport numpy as np\nimport pandas as pd",
    (
        "rows = [1, 2]\nholder = types.SimpleNamespace(items=rows)\n"
        "frame = pd.DataFrame({'a': [1.0, 2.0]})\nframes = {'main': frame}\n"
        "grid = np.zeros(3)\nlock = threading.Lock()",
        ["step:load"],
    ),
    # Reads everything; changes `rows` only through an alias the static analysis cannot follow.
    (
        "count = len(rows)\nsummary = frame.describe()\nmean = grid.mean()\n"
        "holder.items.append(3)\nwith lock:\n    pass",
        ["step:touch"],
    ),
    ("print(count, sum(rows), sorted(k for k in dir() if 'dsops' in k))", ["step:report"]),
]


TRULY_CHANGED = {"rows", "holder"}  # by `touch`: holder.items is rows


@pytest.fixture(scope="module")
def checked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, set[str]]:
    """The CLI run, and the changes the check must report: those the analysis did not predict."""
    root = tmp_path_factory.mktemp("checked")
    make_notebook(root / "nb.ipynb", ALIASED)
    touch = read_pipeline(root / "nb.ipynb").step("touch")
    assert "rows" in touch.reads and "rows" not in touch.writes  # the alias hides it
    unpredicted = TRULY_CHANGED - set(touch.writes)
    return root, dsops("run", "nb.ipynb", "--out", "out", cwd=root), unpredicted


def test_an_unpredicted_change_is_one_warning_line_and_in_the_record(checked_run: tuple) -> None:
    root, done, unpredicted = checked_run
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    changed = [line for line in warnings if "changed" in line]
    assert len(changed) == len(unpredicted), done.stderr
    for name in unpredicted:
        assert sum(f"step 'touch' changed `{name}`" in line for line in changed) == 1, name
    record = json.loads((root / "out" / "run.json").read_text(encoding="utf-8"))
    check = record["verification"]
    assert sorted(c["name"] for c in check["unexpected_changes"]) == sorted(unpredicted)
    assert {c["step"] for c in check["unexpected_changes"]} == {"touch"}
    assert "touch" in check["checked_steps"]
    assert all(line.removeprefix("warning: ") in record["warnings"] for line in changed)


def test_values_that_cannot_be_fingerprinted_are_named_once(checked_run: tuple) -> None:
    root, done, _ = checked_run
    skipped = [line for line in done.stderr.splitlines() if "not verified" in line]
    assert len(skipped) == 1 and "`lock`" in skipped[0], done.stderr
    record = json.loads((root / "out" / "run.json").read_text(encoding="utf-8"))
    assert record["verification"]["unchecked"] == ["lock"]


def test_the_check_leaves_no_trace_in_the_notebook_or_the_namespace(checked_run: tuple) -> None:
    root, _, _ = checked_run
    executed = json.loads((root / "out" / "nb.ipynb").read_text(encoding="utf-8"))
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert len(code) == len(ALIASED)
    assert [c["execution_count"] for c in code] == list(range(1, len(ALIASED) + 1))
    assert notebook_outputs(root / "out" / "nb.ipynb").strip() == "2 6 []"


def test_strict_makes_an_unpredicted_change_an_error(checked_run: tuple) -> None:
    root, _, _ = checked_run
    done = dsops("run", "nb.ipynb", "--out", "strict", "--strict", cwd=root)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "step 'touch' changed `rows`" in errors[0], done.stderr
    assert json.loads((root / "strict" / "run.json").read_text())["status"] == "failed"


def test_fingerprints_see_content_changes_and_nothing_else() -> None:
    """The probe as the kernel runs it, here in-process on real pandas/numpy values."""
    import threading

    import numpy as np
    import pandas as pd

    from dsops_jupyter._probe import UNFINGERPRINTABLE, fingerprint

    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "c": ["x", "y"]})
    grid, rows, nested = np.arange(6.0).reshape(2, 3), [1, {"k": [2]}], {"f": frame}
    values = {"frame": frame, "grid": grid, "rows": rows, "nested": nested}
    before = {name: fingerprint(value) for name, value in values.items()}
    frame.describe(), frame.values, grid.T.sum(), sorted(rows[1])  # reading changes nothing
    assert {name: fingerprint(value) for name, value in values.items()} == before
    frame.loc[0, "c"] = "z"
    grid[1, 2] = -1.0
    rows[1]["k"].append(3)
    after = {name: fingerprint(value) for name, value in values.items()}
    assert all(after[name] != before[name] for name in values), (before, after)
    assert fingerprint(pd.DataFrame({"b": [1.0, 2.0]})) != fingerprint(
        pd.DataFrame({"a": [1.0, 2.0]})
    )  # column names count
    assert fingerprint(threading.Lock()) == UNFINGERPRINTABLE
    assert fingerprint(np) is None and fingerprint(fingerprint) is None  # code, not data


def test_an_allowed_error_still_fails_the_run_naming_its_line(tmp_path: Path) -> None:
    """nbclient runs past a cell tagged raises-exception; papermill then fails the run on it."""
    line = failing_run(
        tmp_path,
        [
            ("x = 1", ["step:first"]),
            ("y = 2\nraise ValueError('expected')", ["raises-exception"]),
            "print('ran past it')",
        ],
    )
    assert "step 'first', cell 2, line 2 `raise ValueError('expected')`" in line, line
    assert "ValueError: expected" in line, line


def test_of_several_allowed_errors_the_run_names_the_last_as_papermill_does(
    tmp_path: Path,
) -> None:
    """papermill's raise_for_execution_errors keeps the last cell holding an error output."""
    line = failing_run(
        tmp_path,
        [
            ("x = 1", ["step:first"]),
            ("raise ValueError('early')", ["raises-exception"]),
            ("raise KeyError('late')", ["raises-exception"]),
            "print('ran past both')",
        ],
    )
    assert "cell 3, line 1 `raise KeyError('late')`" in line, line
    assert "ValueError" not in line, line


def test_papermill_finds_the_engine_through_its_entry_point(tmp_path: Path) -> None:
    """papermill loads the ``papermill.engine`` entry points pyproject.toml declares, in either
    import order (papermill first, or dsops's run code first). The source checkout's installed
    metadata may predate the declaration, so it is copied into a dist-info of its own here."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    engines = declared["papermill.engine"]
    assert engines == {"dsops": "dsops_jupyter.papermill_engine:DsopsEngine"}
    info = tmp_path / "dsops_entry_points-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: dsops-entry-points\nVersion: 0\n")
    lines = [f"{name} = {target}" for name, target in engines.items()]
    (info / "entry_points.txt").write_text("\n".join(["[papermill.engine]", *lines, ""]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    check = "from papermill.engines import papermill_engines as e; print(e.get_engine('dsops'))"
    for first in ("import papermill", "import dsops_jupyter.execute"):
        done = subprocess.run(
            [sys.executable, "-c", f"{first}; {check}"], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert "dsops_jupyter.papermill_engine.DsopsEngine" in done.stdout
