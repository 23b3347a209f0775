"""The core promise on notebooks written by others (tests/corpus, see its README.md).

For every notebook under tests/corpus (the public corpus and the probes/ folder): papermill runs
it through ``execute.run_notebook``; ``convert`` turns it into a script that plain python runs
whole, and then one step per process through a workdir. Each run starts in its own folder holding
the same copy of the notebook and its data files. Where papermill finishes, the script and the
stepwise run must print what the notebook's cells printed and leave the same files behind. Where
papermill fails, dsops must fail the same way: ``dsops run`` with one line naming the user's cell,
line and error, and the conversion refusing it in one line, or the script stopping with the same
error after printing the same text.

Split mode, the hardest form of the promise: a copy in which every unmarked code cell is its
own step (tag ``step:c<N>``, N its cell number) runs one step per process through a workdir and
must print and write what papermill did, or fail as papermill failed: mutation and redefinition
across steps, on code nobody wrote for dsops.

Notebooks that fail today carry ``xfail`` (strict) in tests/corpus/manifest.json with their cause,
``xfail_split`` for the split mode: a fix makes them XPASS, which fails the run until the mark is
removed. All runs start at once in a small thread pool (kernels and scripts are separate
processes).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.assemble import convert
from dsops_jupyter.errors import DsopsError, ExecutionError
from dsops_jupyter.execute import run_notebook
from dsops_jupyter.model import RunOptions
from tests.helpers import REPO_ROOT, file_difference, notebook_stdout, run_python, written_files

CORPUS = REPO_ROOT / "tests" / "corpus"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
ENTRIES: dict[str, dict[str, Any]] = MANIFEST["notebooks"]
LICENSES = {"MIT", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "CC-BY-4.0", "CC0-1.0"}
# The only kernel here; notebooks saved with a "python2" or "dev" kernel run on it.
KERNEL = "python3"
SCRIPT_TIMEOUT = 180
WORKERS = 4
# Cell markers a split copy leaves alone: such a cell keeps its own role (or step).
MARKER_TAGS = frozenset(
    {"parameters", "pipeline-parameters", "skip", "imports", "functions", "pipeline-metrics"}
    | {"injected-parameters"}
)
MARKER_TAG_KINDS = ("step:", "block:")
# One process per code cell: a bigger notebook would cost minutes in split mode alone.
SPLIT_MAX_CODE_CELLS = 60


def corpus_notebooks() -> list[str]:
    return sorted(
        p.relative_to(CORPUS).as_posix()
        for p in CORPUS.rglob("*.ipynb")
        if ".ipynb_checkpoints" not in p.parts
    )


def entry(notebook: str) -> dict[str, Any]:
    """The manifest entry; probes may have none (then: no data files, exact comparison)."""
    return ENTRIES.get(notebook, {})


# --- one notebook's runs ----------------------------------------------------------------------
@dataclass
class ScriptRun:
    """One process (the whole script) or a chain of step processes, stopped at the first failure."""

    stdout: str = ""
    failed: str | None = None  # the failing step ("" for the whole script), None when it ended well
    stderr: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Outcome:
    notebook: str
    folder: Path
    papermill_error: str | None = None  # dsops run's ExecutionError, one line
    refused: str | None = None  # a DsopsError raised before any cell ran
    plain_papermill_ok: bool | None = None  # only when dsops refused: does papermill run it?
    executed: Path | None = None
    papermill_files: dict[str, bytes] = field(default_factory=dict)
    conversion_error: str | None = None
    script: ScriptRun | None = None
    stepwise: ScriptRun | None = None
    crash: str | None = None  # a harness-level surprise (not a DsopsError): reported as is
    split_conversion_error: str | None = None
    split: ScriptRun | None = None  # every code cell its own step, run stepwise
    split_crash: str | None = None


def stage(folder: Path, notebook: str) -> Path:
    """A fresh working folder with the notebook and its data files, as published."""
    source = CORPUS / notebook
    folder.mkdir(parents=True)
    shutil.copy(source, folder / source.name)
    for name in entry(notebook).get("data", []):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.parent / name, target)
    return folder / source.name


def run_papermill(outcome: Outcome) -> None:
    notebook = stage(outcome.folder / "papermill", outcome.notebook)
    cwd, out_dir = notebook.parent, outcome.folder / "papermill-out"
    try:
        record = run_notebook(notebook, RunOptions(out_dir=out_dir, cwd=cwd, kernel_name=KERNEL))
        outcome.executed = record.output_notebook
    except ExecutionError as err:
        outcome.papermill_error = str(err)
        kept = out_dir / notebook.name
        outcome.executed = kept if kept.exists() else None
    except DsopsError as err:
        outcome.refused = str(err)
        outcome.plain_papermill_ok = plain_papermill_runs(outcome)
    outcome.papermill_files = written_files(cwd)


def plain_papermill_runs(outcome: Outcome) -> bool:
    """papermill itself, for a notebook dsops refused: does it finish?"""
    import papermill

    notebook = stage(outcome.folder / "plain-papermill", outcome.notebook)
    try:
        papermill.execute_notebook(
            str(notebook),
            str(outcome.folder / "plain-papermill.ipynb"),
            kernel_name=KERNEL,
            cwd=str(notebook.parent),
            progress_bar=False,
        )
    except Exception:  # papermill raises several types; any of them means "it failed"
        return False
    return True


def run_script(outcome: Outcome) -> None:
    source = stage(outcome.folder / "source", outcome.notebook)
    try:
        keep_magics = entry(outcome.notebook).get("keep_magics", False)
        pkg = convert(source, out_dir=outcome.folder / "package", keep_magics=keep_magics)
    except DsopsError as err:
        outcome.conversion_error = str(err)
        return
    script = pkg.directory / f"{pkg.name}.py"
    order = json.loads(pkg.files["pipeline.json"])["order"]
    whole = stage(outcome.folder / "script", outcome.notebook).parent
    outcome.script = run_chain(script, whole, [("", [])])
    stepwise = stage(outcome.folder / "stepwise", outcome.notebook).parent
    workdir = str(outcome.folder / "workdir")  # outside the cwd: it is dsops's, not the user's
    chain = [(step, ["--step", step, "--workdir", workdir]) for step in order]
    outcome.stepwise = run_chain(script, stepwise, chain)


def papermill_then_split(outcome: Outcome) -> None:
    """papermill first, then the split run (compared with papermill's, finished or failed)."""
    guarded(run_papermill, outcome)
    if code_cell_count(outcome.notebook) <= SPLIT_MAX_CODE_CELLS:
        guarded(run_split, outcome, into="split_crash")


def code_cell_count(notebook: str) -> int:
    cells = json.loads((CORPUS / notebook).read_bytes())["cells"]
    return sum(c.get("cell_type") == "code" for c in cells)


def run_split(outcome: Outcome) -> None:
    """Every code cell its own step, tagged on a copy; run one step per process."""
    source = stage(outcome.folder / "split-source", outcome.notebook)
    source.write_text(json.dumps(split_notebook(json.loads(source.read_bytes()))), "utf-8")
    try:
        keep_magics = entry(outcome.notebook).get("keep_magics", False)
        pkg = convert(source, out_dir=outcome.folder / "split-package", keep_magics=keep_magics)
    except DsopsError as err:
        outcome.split_conversion_error = str(err)
        return
    script = pkg.directory / f"{pkg.name}.py"
    order = json.loads(pkg.files["pipeline.json"])["order"]
    cwd = stage(outcome.folder / "split", outcome.notebook).parent
    workdir = str(outcome.folder / "split-workdir")
    chain = [(step, ["--step", step, "--workdir", workdir]) for step in order]
    outcome.split = run_chain(script, cwd, chain)


def split_notebook(nb: dict[str, Any]) -> dict[str, Any]:
    """The notebook with ``step:c<N>`` on every code cell that carries no marker of its own.

    Markers are tags (a step or Kale block, parameters, skip, imports, functions, metrics,
    papermill's injected cell) and a first line ``%%dsops ...``; N is the cell's 1-based index.
    """
    for number, cell in enumerate(nb["cells"], start=1):
        if cell.get("cell_type") != "code":
            continue
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        source = "".join(cell.get("source", ""))
        if not (has_marker(tags) or source.lstrip().startswith("%%dsops")):
            tags.append(f"step:c{number}")
    return nb


def has_marker(tags: list[str]) -> bool:
    return any(t in MARKER_TAGS or t.startswith(MARKER_TAG_KINDS) for t in tags)


def run_chain(script: Path, cwd: Path, chain: list[tuple[str, list[str]]]) -> ScriptRun:
    run = ScriptRun()
    for step, args in chain:
        done = run_python(script, *args, cwd=cwd, timeout=SCRIPT_TIMEOUT)
        run.stdout += done.stdout
        if done.returncode != 0:
            run.failed, run.stderr = step, done.stderr
            break
    run.files = written_files(cwd)
    return run


def guarded(job: Any, outcome: Outcome, into: str = "crash") -> None:
    try:
        job(outcome)
    except (Exception, subprocess.TimeoutExpired) as err:
        setattr(outcome, into, f"{job.__name__}: {type(err).__name__}: {err}")


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Outcome]]:
    """Every selected notebook's runs, started together; prints the module's wall time."""
    selected = _selected_notebooks(request)
    root = tmp_path_factory.mktemp("corpus")
    found = {nb: Outcome(nb, root / re.sub(r"[^A-Za-z0-9_.-]", "_", nb)) for nb in sorted(selected)}
    clock = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for outcome in found.values():
            pool.submit(papermill_then_split, outcome)
            pool.submit(guarded, run_script, outcome)
    print(f"\ncorpus: {len(found)} notebooks ran in {time.perf_counter() - clock:.1f} s")
    yield found


def _selected_notebooks(request: pytest.FixtureRequest) -> set[str]:
    """Only the notebooks whose tests were selected (-k, node ids) are run."""
    chosen = set()
    for item in request.session.items:
        callspec = getattr(item, "callspec", None)
        if item.module is request.module and callspec and "notebook" in callspec.params:
            chosen.add(callspec.params["notebook"])
    return chosen


# --- what "the same" means --------------------------------------------------------------------
def normalized(text: str, outcome: Outcome, cwd: Path) -> str:
    """The printed text without what legitimately differs: the run's folder, masked values."""
    text = text.replace(str(cwd.resolve()), "<cwd>").replace(str(cwd), "<cwd>")
    for pattern in entry(outcome.notebook).get("mask", []):
        text = re.sub(pattern, "<masked>", text, flags=re.MULTILINE)
    return text


def file_differences(expected: dict[str, bytes], got: dict[str, bytes], notebook: str) -> list[str]:
    presence = [re.compile(p) for p in entry(notebook).get("presence_only", [])]
    problems = [f"{name}: missing" for name in sorted(expected.keys() - got.keys())]
    problems += [f"{name}: not written by papermill" for name in sorted(got.keys() - expected)]
    for name in sorted(expected.keys() & got.keys()):
        only_presence = any(p.fullmatch(name) for p in presence)
        problem = file_difference(name, expected[name], got[name], only_presence)
        problems += [problem] if problem else []
    return problems


def failing_cell(outcome: Outcome) -> tuple[int, str]:
    """The index and error name of the cell papermill blames.

    That is the cell papermill marked failed or, when nbclient ran on past an error (a cell
    tagged ``raises-exception``), the last cell holding an error output: papermill raises for
    it after the run (``raise_for_execution_errors`` keeps the last one it finds).
    The error name comes from the error output, or, for errors IPython prints
    instead of raising (an unknown magic's UsageError), from the last ``Name: message`` line.
    """
    assert outcome.executed, "papermill failed and kept no executed notebook"
    executed = json.loads(outcome.executed.read_bytes())
    original = json.loads((CORPUS / outcome.notebook).read_bytes())
    code = [c for c in executed["cells"] if c.get("cell_type") == "code"]
    failed = [
        c for c in code if c.get("metadata", {}).get("papermill", {}).get("status") == "failed"
    ]
    erred = [c for c in code if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert failed or erred, "papermill failed but no cell failed"
    cell = failed[0] if failed else erred[-1]
    source = "".join(cell["source"])
    index = next(i for i, c in enumerate(original["cells"]) if "".join(c["source"]) == source)
    outputs = cell.get("outputs", [])
    names = [o["ename"] for o in outputs if o.get("output_type") == "error"]
    printed = "".join("".join(o.get("text", "")) for o in outputs if o.get("name") == "stderr")
    names += re.findall(r"^(\w+): ", printed, flags=re.MULTILINE)[-1:]
    assert names, f"cell {index + 1} failed without naming an error"
    return index, names[0]


def blames_a_notebook_line(message: str, outcome: Outcome) -> bool:
    """The message quotes ``line N `text` `` where text is line N of one of the notebook's cells.

    The failing cell itself, or the cell defining the function the failure happened in: either
    is the user's code, unlike a line of pandas or urllib.
    """
    original = json.loads((CORPUS / outcome.notebook).read_bytes())
    cells = [
        "".join(c["source"]).splitlines() for c in original["cells"] if c["cell_type"] == "code"
    ]
    for number, text in re.findall(r"line (\d+) `(.*?)`", message):
        line = int(number) - 1
        if any(0 <= line < len(c) and c[line].strip() == text.strip() for c in cells):
            return True
    return False


def check_finished(outcome: Outcome, kinds: tuple[str, ...] = ("script", "stepwise")) -> None:
    """papermill finished: the script, whole and step by step, printed and wrote the same."""
    assert outcome.executed
    expected = normalized(notebook_stdout(outcome.executed), outcome, outcome.folder / "papermill")
    for kind in kinds:
        run: ScriptRun = getattr(outcome, kind)
        assert run.failed is None, f"{kind} failed at step {run.failed!r}:\n{run.stderr[-3000:]}"
        printed = normalized(run.stdout, outcome, outcome.folder / kind)
        assert printed == expected, f"{kind} printed other text than the notebook's cells"
        problems = file_differences(outcome.papermill_files, run.files, outcome.notebook)
        assert not problems, f"{kind} wrote other files: {problems}"


def check_failed(outcome: Outcome) -> None:
    """papermill failed: dsops run names the user's cell and line, the script fails alike."""
    message = outcome.papermill_error or ""
    index, ename = failing_cell(outcome)
    assert "\n" not in message
    assert f"cell {index + 1}" in message, (
        f"the run error does not name cell {index + 1}: {message}"
    )
    assert ename in message, f"the run error does not name {ename}: {message}"
    assert blames_a_notebook_line(message, outcome), (
        f"the run error names no line of the notebook's cells (a library frame?): {message}"
    )
    check_scripts_failed(outcome, ename, ("script", "stepwise"), outcome.conversion_error)


def check_scripts_failed(
    outcome: Outcome, ename: str, kinds: tuple[str, ...], refusal: str | None
) -> None:
    """The scripts of a notebook papermill failed on: each stops with papermill's error after
    printing the same text, or their conversion refused it (``refusal``) in one line."""
    if refusal is not None:
        assert "\n" not in refusal and "cell" in refusal, refusal
        return
    expected = normalized(notebook_stdout(outcome.executed), outcome, outcome.folder / "papermill")
    for kind in kinds:
        run: ScriptRun | None = getattr(outcome, kind)
        assert run is not None, f"the {kind} run did not happen"
        assert run.failed is not None, f"papermill failed with {ename}, the {kind} did not"
        last = run.stderr.strip().splitlines()[-1] if run.stderr.strip() else ""
        assert ename in last, f"{kind} failed otherwise than with {ename}: {last}"
        printed = normalized(run.stdout, outcome, outcome.folder / kind)
        assert printed == expected, f"{kind} printed other text before failing"


def notebooks_marked(key: str, notebooks: list[str] | None = None) -> list[Any]:
    """The corpus notebooks (or those given); a strict xfail where the manifest gives ``key``
    (its cause)."""
    return [
        pytest.param(nb, marks=pytest.mark.xfail(strict=True, reason=entry(nb)[key]))
        if key in entry(nb)
        else nb
        for nb in (corpus_notebooks() if notebooks is None else notebooks)
    ]


@pytest.mark.parametrize("notebook", notebooks_marked("xfail"))
def test_notebook_runs_the_same_as_papermill(outcomes: dict[str, Outcome], notebook: str) -> None:
    outcome = outcomes[notebook]
    assert outcome.crash is None, outcome.crash
    if "refusal_expected" in entry(notebook):
        check_refused(outcome)
    elif outcome.refused is not None:
        assert not outcome.plain_papermill_ok, (
            f"dsops refused what papermill runs: {outcome.refused}"
        )
        check_refused(outcome)
    elif outcome.papermill_error is None:
        assert outcome.conversion_error is None, f"convert refused: {outcome.conversion_error}"
        check_finished(outcome)
    else:
        check_failed(outcome)


@pytest.mark.parametrize(
    "notebook",
    notebooks_marked(
        "xfail_split",
        [nb for nb in corpus_notebooks() if code_cell_count(nb) <= SPLIT_MAX_CODE_CELLS],
    ),
)
def test_notebook_split_into_one_step_per_cell_runs_the_same(
    outcomes: dict[str, Outcome], notebook: str
) -> None:
    """Every code cell its own step, run one step per process: papermill's text and files, or
    papermill's failure (the same error after the same text), or the same one-line refusal."""
    outcome = outcomes[notebook]
    assert outcome.crash is None, outcome.crash
    assert outcome.split_crash is None, outcome.split_crash
    if outcome.refused is not None:
        message = outcome.split_conversion_error
        assert message is not None, "convert took the split copy of a notebook dsops refuses"
        assert "\n" not in message and "cell" in message, message
    elif outcome.papermill_error is not None:
        ename = failing_cell(outcome)[1]
        check_scripts_failed(outcome, ename, ("split",), outcome.split_conversion_error)
    else:
        assert outcome.split_conversion_error is None, (
            f"convert refused the split copy: {outcome.split_conversion_error}"
        )
        check_finished(outcome, kinds=("split",))


def check_refused(outcome: Outcome) -> None:
    """A notebook dsops cannot take (as Kale cannot): run and convert say so in one line."""
    for what, message in (("run", outcome.refused), ("convert", outcome.conversion_error)):
        assert message is not None, f"{what} did not refuse the notebook"
        assert "\n" not in message and "cell" in message, f"{what}: {message}"


def test_every_corpus_notebook_records_its_origin() -> None:
    public = [nb for nb in corpus_notebooks() if not nb.startswith("probes/")]
    assert len(public) >= 25, f"the corpus holds {len(public)} public notebooks, fewer than 25"
    assert set(public) <= set(ENTRIES), f"no origin recorded: {set(public) - set(ENTRIES)}"
    assert set(ENTRIES) <= set(corpus_notebooks()), "manifest entries without a notebook"
    for nb in public:
        origin = ENTRIES[nb]
        assert {"repo", "path", "commit", "license"} <= origin.keys(), nb
        assert re.fullmatch(r"[0-9a-f]{40}", origin["commit"]), nb
        assert origin["license"] in LICENSES, f"{nb}: {origin['license']} is not redistributable"
        for name in origin.get("data", []):
            assert (CORPUS / nb).parent.joinpath(name).is_file(), f"{nb}: data {name} missing"


def test_written_files_are_compared_as_data_where_bytes_may_differ() -> None:
    """The comparison itself: equal data passes, a changed value fails, whatever the format."""
    assert file_difference("m.json", b'{"a": 0.1, "b": [1, 2]}', b'{"b": [1, 2], "a": 0.1}') is None
    assert file_difference("m.json", b'{"a": 0.3}', b'{"a": 0.30000000000000004}') is None
    assert file_difference("m.json", b'{"a": 0.3}', b'{"a": 0.31}') is not None
    assert file_difference("m.json", b'{"a": 1}', b'{"a": true}') is not None
    assert file_difference("t.csv", b"x,y\n1,0.5\n", b"x,y\n1.0,0.5000000000000001\n") is None
    assert file_difference("t.csv", b"x,y\n1,0.5\n", b"x,y\n1,0.6\n") is not None
    assert file_difference("t.txt", b"a", b"b") is not None
    assert file_difference("plot.png", b"a", b"b") is None
    assert file_difference("model.bin", b"a", b"b", presence_only=True) is None


def test_split_copy_tags_every_unmarked_code_cell_and_leaves_markers_alone() -> None:
    def code(source: str, *tags: str) -> dict[str, Any]:
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": source}

    nb = {
        "cells": [
            code("import os", "imports"),
            {"cell_type": "markdown", "metadata": {}, "source": "# title"},
            code("a = 1", "parameters"),
            code("b = a + 1"),
            {"cell_type": "code", "metadata": {}, "source": ["c = b\n", "print(c)"]},
            code("d = c", "block:"),
            code("e = d", "step:train", "prev:load"),
            code("%%dsops skip\nf = 1"),
        ]
    }
    tags = [c["metadata"].get("tags") for c in split_notebook(nb)["cells"]]
    assert tags == [
        ["imports"],
        None,
        ["parameters"],
        ["step:c4"],
        ["step:c5"],
        ["block:"],
        ["step:train", "prev:load"],
        [],
    ]
