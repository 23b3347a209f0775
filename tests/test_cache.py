"""The step cache: keys, the store under .dsops/cache, fresh/stale marks, its CLI and the
generated script's --cache, on real notebooks in real Git repositories."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from dsops_jupyter import cache
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.runtime import artifacts, stepcache
from tests.helpers import init_repo, make_notebook

CELLS = [
    ("n = 3\nlabel = 'x'", ["parameters"]),
    ("import math\n\n\ndef root(x):\n    return math.sqrt(x)\n", []),
    ("a = root(n)  # the root\nspare = a + 1", ["step:load"]),
    ("b = [a] * 2\nprint(label)", ["step:fit"]),
    ("c = len(b)", ["step:report"]),
]


def notebook(tmp_path: Path, cells: list = CELLS) -> Path:
    repo = tmp_path / "repo"
    if not repo.exists():
        init_repo(repo)
    return make_notebook(repo / "nb.ipynb", cells)


def edit_cell(path: Path, index: int, source: str) -> None:
    """Change one cell's source the way a user saving from JupyterLab does."""
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[index].source = source
    nbformat.write(nb, str(path))


def static_keys(path: Path) -> dict[str, str]:
    pipeline = read_pipeline(path)
    return {step.name: cache.static_key(pipeline, step.name) for step in pipeline.steps}


# --- keys --------------------------------------------------------------------------------------
def test_static_keys_ignore_comments_and_blank_lines(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    before = static_keys(path)
    edit_cell(path, 2, "# load it\n\na = root(n)\n\nspare = a + 1  # done\n")
    edit_cell(path, 1, "import math\n# helper\n\ndef root(x):\n\n    return math.sqrt(x)  # sqrt\n")
    assert static_keys(path) == before


@pytest.mark.parametrize(
    ("index", "source", "changed"),
    [
        (2, "a = root(n) + 0\nspare = a + 1", {"load"}),  # the step's own code
        (1, "import math\n\ndef root(x):\n    return math.sqrt(x) * 1\n", {"load"}),  # hoisted
        (3, "b = [a] * 2\nprint('label')", {"fit"}),  # a string's content is code too
    ],
)
def test_static_keys_change_with_the_code_a_step_runs(
    tmp_path: Path, index: int, source: str, changed: set[str]
) -> None:
    path = notebook(tmp_path)
    before = static_keys(path)
    edit_cell(path, index, source)
    after = static_keys(path)
    assert {name for name in before if before[name] != after[name]} == changed


def test_a_new_reader_changes_the_key_of_the_step_it_reads_from(tmp_path: Path) -> None:
    """Its outputs grow: an old entry would lack the new one."""
    path = notebook(tmp_path)
    before = static_keys(path)
    edit_cell(path, 4, "c = len(b) + spare")
    after = static_keys(path)
    assert before["load"] != after["load"] and before["fit"] == after["fit"]


def test_lock_changes_every_static_key(tmp_path: Path) -> None:
    """An import a step adds changes requirements.lock: every step's environment changed."""
    path = notebook(tmp_path)
    before = static_keys(path)
    edit_cell(path, 4, "import yaml\nc = len(b)")
    after = static_keys(path)
    assert all(before[name] != after[name] for name in before)
    pipeline = read_pipeline(path)
    assert cache.code_key(pipeline, "fit") == cache.code_key(read_pipeline(path), "fit")


def test_step_key_changes_with_parameters_and_inputs() -> None:
    static = "s" * 64
    base = stepcache.step_key(static, {"n": 3, "opts": {"b": 1, "a": 2}}, {"a": "1" * 64})
    same = stepcache.step_key(static, {"opts": {"a": 2, "b": 1}, "n": 3}, {"a": "1" * 64})
    assert base == same  # canonical: order of dict items does not count
    assert base != stepcache.step_key(static, {"n": 4, "opts": {"a": 2, "b": 1}}, {"a": "1" * 64})
    assert base != stepcache.step_key(static, {"n": 3, "opts": {"a": 2, "b": 1}}, {"a": "2" * 64})
    assert base != stepcache.step_key("t" * 64, {"n": 3, "opts": {"a": 2, "b": 1}}, {"a": "1" * 64})
    assert cache.step_key(static, {"n": 3}, {}) == stepcache.step_key(static, {"n": 3}, {})


# --- a run through the cache -------------------------------------------------------------------
def cached_run(
    path: Path, parameters: dict | None = None, only: set[str] | None = None
) -> list[str]:
    """Run the notebook's steps in this process through a workdir and the step cache, as a
    cached run does: a step whose key is stored is restored, the others run and are stored.
    ``only``: run just these steps (restoring what they need). Returns the steps executed."""
    pipeline = read_pipeline(path)
    store = cache.open_cache(path)
    values = cache.resolved_parameters(pipeline, parameters)
    namespace: dict = dict(values)
    for _, code in pipeline.hoisted:
        exec(code, namespace)
    workdir = path.parent / f"work-{len(list(path.parent.glob('work-*')))}"
    keys: dict[str, str] = {}
    executed = []
    wanted = pipeline.upstream(sorted(only)) if only else [s.name for s in pipeline.steps]
    for step in pipeline.steps:
        if step.name not in wanted:
            continue
        key, why = cache.workdir_key(pipeline, step.name, values, workdir, keys)
        keys[step.name] = key
        if stepcache.restore_entry(store.root, key, workdir, step.outputs):
            namespace.update({name: artifacts.load(workdir, name) for name in step.outputs})
            continue
        for _, code in step.body:
            exec(code, namespace)
        executed.append(step.name)
        for name in step.outputs:
            artifacts.save(workdir, name, namespace[name], step.name)
        store.store(key, step.name, workdir, step.outputs, why)
    return executed


def marks(path: Path, parameters: dict | None = None) -> dict[str, list[str] | str]:
    pipeline = read_pipeline(path)
    states = cache.freshness(pipeline, parameters, cache.open_cache(path))
    return {s.name: "fresh" if s.fresh else s.reasons for s in states}


def test_freshness_after_each_kind_of_change(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    assert marks(path) == {
        "load": ["never run"],
        "fit": ["upstream load stale", "never run"],
        "report": ["upstream fit stale", "never run"],
    }
    assert cached_run(path) == ["load", "fit", "report"]
    assert marks(path) == dict.fromkeys(["load", "fit", "report"], "fresh")
    assert cached_run(path) == []

    edit_cell(path, 2, "a = root(n)  # comment moved\n\n\nspare = a + 1")
    assert marks(path) == dict.fromkeys(["load", "fit", "report"], "fresh")

    edit_cell(path, 3, "b = [a] * 3\nprint(label)")
    assert marks(path) == {
        "load": "fresh",
        "fit": ["code changed"],
        "report": ["upstream fit stale"],
    }
    assert cached_run(path) == ["fit", "report"]

    assert marks(path, {"label": "y"}) == {
        "load": "fresh",
        "fit": ["parameter label changed"],
        "report": ["upstream fit stale"],
    }
    assert cached_run(path, {"label": "y"}) == ["fit"]  # same b: report is restored
    assert marks(path, {"label": "y"}) == dict.fromkeys(["load", "fit", "report"], "fresh")

    edit_cell(path, 2, "a = root(n) * 2\nspare = a + 1")
    assert cached_run(path, {"label": "y"}, only={"load"}) == ["load"]
    assert marks(path, {"label": "y"}) == {
        "load": "fresh",
        "fit": ["upstream load changed"],
        "report": ["upstream fit stale"],
    }

    edit_cell(path, 4, "import yaml\nc = len(b)")  # hoisted: only the lock changes for report
    assert marks(path, {"label": "y"}) == {
        "load": ["lock changed"],
        "fit": ["upstream load stale", "lock changed"],
        "report": ["upstream fit stale", "lock changed"],
    }


def test_a_cached_run_restores_the_values_a_full_run_computes(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    cached_run(path, {"n": 16})
    store = cache.open_cache(path)
    pipeline = read_pipeline(path)
    last = store.last(cache.notebook_id(path), "load")
    assert last is not None
    folder = store.lookup(last["key"])
    assert folder is not None
    assert set(artifacts.entries(folder)) == {"a"}  # what later steps read, nothing else
    assert artifacts.load(folder, "a") == 4.0
    assert [s.fresh for s in cache.freshness(pipeline, {"n": "16"}, store)] == [True] * 3
