"""Shared helpers of the core tests: build notebooks, run the CLI and generated scripts for real.

Plain functions (not fixtures) so any test module, including the benchmarks, can import them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = REPO_ROOT / "examples"
# The runtime package (step artifacts, step cache entries) every generated package ships.
_RUNTIME = REPO_ROOT / "dsops_jupyter" / "runtime"
RUNTIME_FILES = {f"dsops_runtime/{path.name}" for path in _RUNTIME.glob("*.py")}
EXAMPLE_NOTEBOOKS = ("wine.ipynb", "wine_magics.ipynb", "iris_kale.ipynb")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python"}
# Modules whose presence in a generated script's process means it still depends on Jupyter.
JUPYTER_MODULES = ("IPython", "ipykernel", "papermill", "nbformat", "nbclient", "jupyter_client")

CellSpec = str | tuple[str, Sequence[str]] | nbformat.NotebookNode


class Markdown(str):
    """A cell spec that becomes a markdown cell."""


def cell(spec: CellSpec) -> nbformat.NotebookNode:
    """One nbformat cell: ``"code"``, ``("code", ["tag", ...])`` or ``Markdown("text")``."""
    if isinstance(spec, nbformat.NotebookNode):
        return spec
    if isinstance(spec, Markdown):
        return new_markdown_cell(str(spec))
    if isinstance(spec, str):
        return new_code_cell(spec)
    source, tags = spec
    node = new_code_cell(source)
    if tags:
        node.metadata["tags"] = list(tags)
    return node


def make_notebook(
    path: Path, cells: Iterable[CellSpec], *, metadata: dict[str, Any] | None = None
) -> Path:
    """Write a valid v4 notebook with a python3 kernelspec, as JupyterLab saves it."""
    nb = new_notebook(cells=[cell(spec) for spec in cells])
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    nb.metadata.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def copy_example(name: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(EXAMPLES / name, folder / name))


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def init_repo(folder: Path, *, commit: bool = True) -> Path:
    """A real Git work tree with a local identity (the machine's global config is not needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "config", "user.name", "Test Scientist")
    git(folder, "config", "user.email", "test@example.com")
    git(folder, "config", "commit.gpgsign", "false")
    if commit:
        git(folder, "add", "-A")
        git(folder, "commit", "-q", "--allow-empty", "-m", "initial")
    return folder


def isolate_git_config(tmp_path: Path, monkeypatch: Any) -> None:
    """No global or system Git config of the machine (signing, hooks path) reaches a test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for child processes: no pager, no colours, matplotlib off-screen."""
    env = dict(os.environ)
    env.update({"PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg", "NO_COLOR": "1"})
    env.update(extra)
    return env


def dsops(
    *args: str | Path, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m dsops_jupyter ARGS`` in ``cwd``, as a user types it."""
    return subprocess.run(
        [sys.executable, "-m", "dsops_jupyter", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
    )


def run_python(
    *args: str | Path, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Plain ``python ARGS`` (a generated script), from ``cwd``."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_env(),
    )


def assert_ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\n{done.stderr}"
    return done


def error_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Assert a clean failure: exit ``code``, one stderr line, no traceback; return that line."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one stderr line, got:\n{done.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def json_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """Assert a --json failure: exit ``code`` and ``{"error": "one line"}`` on stdout."""
    assert done.returncode == code, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"error"}, data
    assert "\n" not in data["error"]
    return data["error"]


def tree_snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (except .git) with its bytes: proves 'nothing written'."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(folder).parts
    }


def executed_sources(notebook: Path) -> list[str]:
    """Sources of the code cells the kernel ran (execution_count set) in an executed notebook."""
    nb = json.loads(notebook.read_bytes())
    return [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in nb["cells"]
        if c["cell_type"] == "code" and c.get("execution_count") is not None
    ]


def notebook_outputs(notebook: Path) -> str:
    """All stream text and text/plain results of an executed notebook, concatenated."""
    nb = json.loads(notebook.read_bytes())
    parts: list[str] = []
    for c in nb["cells"]:
        for out in c.get("outputs", []):
            text = out.get("text") or out.get("data", {}).get("text/plain", "")
            parts.append("".join(text) if isinstance(text, list) else text)
    return "\n".join(parts)


# --- three-way runs: papermill, the whole generated script, the script one step at a time ----
RESULTS = Path("outputs")  # where probe and corpus notebooks write what they computed
RUN_KINDS = ("papermill", "script", "stepwise")


def result_files(cwd: Path) -> dict[str, bytes]:
    """The files a run wrote under ``outputs/`` of its working directory."""
    folder = cwd / RESULTS
    found = tree_snapshot(folder) if folder.is_dir() else {}
    return {(RESULTS / name).as_posix(): data for name, data in found.items()}


def papermill_results(
    notebook: Path, cwd: Path, parameters: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """Run the notebook through ``execute.run_notebook`` (papermill) in ``cwd``."""
    from dsops_jupyter.execute import run_notebook
    from dsops_jupyter.model import RunOptions

    cwd.mkdir(parents=True)
    record = run_notebook(
        notebook, RunOptions(parameters=parameters or {}, out_dir=cwd / "run", cwd=cwd)
    )
    assert record.status == "succeeded", f"papermill run of {notebook.name}: {record.details}"
    return result_files(cwd)


def script_results(script: Path, cwd: Path, *args: str) -> dict[str, bytes]:
    """Run the whole generated script with plain python in ``cwd``."""
    cwd.mkdir(parents=True)
    done = run_python(script, *args, cwd=cwd)
    assert done.returncode == 0, f"script {script.name}: {done.stderr}"
    return result_files(cwd)


def stepwise_results(script: Path, order: Sequence[str], cwd: Path, *args: str) -> dict[str, bytes]:
    """One process per step, in ``order``, passing values only through ``cwd/work``."""
    cwd.mkdir(parents=True)
    for step in order:
        done = run_python(script, *args, "--step", step, "--workdir", "work", cwd=cwd)
        assert done.returncode == 0, f"step {step} of {script.name}: {done.stderr}"
    return result_files(cwd)


def run_jobs(jobs: dict[Any, tuple[Callable[..., Any], tuple]]) -> dict[Any, Any]:
    """Run independent jobs (kernels and scripts are separate processes) three at a time; each
    key maps to its result, or to its failure as text so the test that reads it reports it."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {key: pool.submit(fn, *args) for key, (fn, args) in jobs.items()}
    found = {}
    for key, future in futures.items():
        try:
            found[key] = future.result()
        except BaseException as err:
            found[key] = f"{type(err).__name__}: {err}"
    return found


def three_way(notebook: Path, tmp: Path) -> dict[str, dict[str, bytes] | str]:
    """Convert ``notebook`` and run it three ways (``RUN_KINDS``) with default parameters.

    Each kind maps to the files it wrote under ``outputs/``, or to its failure as one text, so
    a caller compares kinds and still sees why one of them did not finish.
    """
    from dsops_jupyter.assemble import convert

    folder = tmp / notebook.stem
    folder.mkdir(parents=True)
    copy = Path(shutil.copy(notebook, folder / notebook.name))
    pkg = convert(copy)
    script = pkg.directory / f"{pkg.name}.py"
    order = json.loads(pkg.files["pipeline.json"])["order"]
    runs = {
        "papermill": lambda: papermill_results(copy, folder / "papermill"),
        "script": lambda: script_results(script, folder / "script"),
        "stepwise": lambda: stepwise_results(script, order, folder / "stepwise"),
    }
    found: dict[str, dict[str, bytes] | str] = {}
    for kind, run in runs.items():
        try:
            found[kind] = run()
        except AssertionError as err:
            found[kind] = f"{kind} failed: {err}"
    return found


# --- corpus comparison (tests/test_corpus.py): what a run printed and what it wrote -------------
# Files whose bytes legitimately differ between two equal runs (timestamps inside images, pickles
# of objects holding ids): compared by presence only.
PRESENCE_ONLY_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".pdf", ".pkl", ".pickle")
FLOAT_TOLERANCE = 1e-9


def notebook_stdout(notebook: Path) -> str:
    """The ``stdout`` stream outputs of an executed notebook, concatenated in cell order.

    Exactly what ``print()`` wrote: rich results and display outputs (what a script does not
    print) are left out, and so is stderr (warnings differ between a kernel and a process).
    """
    nb = json.loads(notebook.read_bytes())
    parts: list[str] = []
    for c in nb["cells"]:
        for out in c.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                parts.append("".join(text) if isinstance(text, list) else text)
    return "".join(parts)


def written_files(folder: Path) -> dict[str, bytes]:
    """Every file a run left in its working folder, by relative path."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.relative_to(folder).parts
    }


def same_value(left: Any, right: Any) -> bool:
    """Equal data, floats within FLOAT_TOLERANCE (relative); bools and ints stay exact."""
    if isinstance(left, float) or isinstance(right, float):
        if isinstance(left, bool) or isinstance(right, bool):
            return left == right
        if not isinstance(left, (int, float)) or not isinstance(right, (int, float)):
            return False
        if left != left and right != right:  # NaN == NaN as data
            return True
        return abs(left - right) <= FLOAT_TOLERANCE * max(1.0, abs(left), abs(right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same_value(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same_value, left, right))
    return type(left) is type(right) and left == right


def _csv_cells(data: bytes) -> list[list[Any]]:
    import csv
    import io

    def cell_value(text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    rows = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")))
    return [[cell_value(text) for text in row] for row in rows]


def file_difference(
    name: str, left: bytes, right: bytes, presence_only: bool = False
) -> str | None:
    """Why two versions of one written file differ (None when they are the same data)."""
    if presence_only or name.lower().endswith(PRESENCE_ONLY_SUFFIXES) or left == right:
        return None
    if name.endswith(".json"):
        try:
            same = same_value(json.loads(left), json.loads(right))
        except ValueError:
            same = False
        return None if same else f"{name}: different JSON data"
    if name.endswith(".csv"):
        same = same_value(_csv_cells(left), _csv_cells(right))
        return None if same else f"{name}: different CSV data"
    return f"{name}: different bytes"


def with_pandas_import(notebook: Path) -> None:
    """iris_kale calls load_iris(as_frame=True), which needs pandas, but never imports it: the
    lock (imported distributions only) leaves pandas out of the image. Import it in the
    ``imports`` cell so the image can run the notebook (a gap of the lock, not of exports)."""
    nb = json.loads(notebook.read_text())
    cell = next(c for c in nb["cells"] if "imports" in c["metadata"].get("tags", []))
    cell["source"] = "".join(cell["source"]) + "\nimport pandas  # noqa: F401"
    notebook.write_text(json.dumps(nb, indent=1))
    git(notebook.parent, "commit", "-q", "-am", "pandas for load_iris(as_frame=True)")
