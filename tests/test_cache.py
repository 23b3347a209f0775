"""The step cache: keys, the store under .dsops/cache, fresh/stale marks, its CLI and the
generated script's --cache, on real notebooks in real Git repositories."""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat
import pytest

from dsops_jupyter import cache
from dsops_jupyter.errors import DsopsError
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.runtime import artifacts, stepcache
from tests.helpers import (
    assert_ok,
    clean_env,
    dsops,
    error_line,
    git,
    init_repo,
    make_notebook,
    run_python,
)

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
        found = cache.workdir_key(pipeline, step.name, values, workdir, keys)
        assert found is not None
        key, why = found
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
        "fit": ["never run"],
        "report": ["never run"],
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


# --- the store ---------------------------------------------------------------------------------
def stored(store: cache.StepCache, tmp_path: Path, name: str, size: int) -> str:
    """Store one entry holding ``size`` random bytes; its key."""
    workdir = tmp_path / f"work-{name}"
    artifacts.save(workdir, "blob", os.urandom(size), name)
    key = hashlib.sha256(name.encode()).hexdigest()
    store.store(key, name, workdir, ["blob"], {"notebook": "nb.ipynb"})
    return key


def test_prune_removes_the_least_recently_used_entries(tmp_path: Path) -> None:
    store = cache.StepCache(tmp_path / "cache", limit_bytes=10**9)
    keys = {}
    for name in ("old", "middle", "new"):
        keys[name] = stored(store, tmp_path, name, 40_000)
        time.sleep(0.02)
    assert store.lookup(keys["old"]) is not None  # used again: now the most recent
    sizes = {e["step"]: e["size"] for e in store.entries()}
    removed = store.prune(limit_bytes=sizes["old"] + sizes["new"] + 100)
    assert [e["step"] for e in removed] == ["middle"]
    assert {e["step"] for e in store.entries()} == {"old", "new"}
    assert store.size() <= sizes["old"] + sizes["new"] + 100


def test_store_prunes_to_the_limit(tmp_path: Path) -> None:
    store = cache.StepCache(tmp_path / "cache", limit_bytes=100_000)
    for name in ("one", "two", "three"):
        stored(store, tmp_path, name, 40_000)
        time.sleep(0.02)
    assert [e["step"] for e in store.entries()] == ["two", "three"]
    assert store.size() <= 100_000


def _store_same_key(root: str, workdir: str) -> str:
    store = cache.StepCache(Path(root), limit_bytes=10**9)
    store.store("k" * 64, "step", Path(workdir), ["blob"], {"notebook": "nb.ipynb"})
    return "ok"


def test_concurrent_stores_of_one_key_leave_one_whole_entry(tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    value = os.urandom(2_000_000)
    artifacts.save(workdir, "blob", value, "step")
    with ProcessPoolExecutor(4) as pool:
        jobs = [pool.submit(_store_same_key, str(tmp_path / "c"), str(workdir)) for _ in range(8)]
        assert [job.result() for job in jobs] == ["ok"] * 8
    store = cache.StepCache(tmp_path / "c", limit_bytes=10**9)
    assert [e["key"] for e in store.entries()] == ["k" * 64]
    folder = store.lookup("k" * 64)
    assert folder is not None and artifacts.load(folder, "blob") == value
    assert not list((tmp_path / "c" / "partial").iterdir())


def test_the_cache_and_runs_are_ignored_by_git_and_the_users_gitignore_kept(
    tmp_path: Path,
) -> None:
    path = notebook(tmp_path)
    gitignore = path.parent / ".gitignore"
    gitignore.write_text("*.pyc\n# mine\nbuild")  # no newline at the end
    cached_run(path)
    edit_cell(path, 3, "b = [a]\nprint(label)")
    cached_run(path)
    assert gitignore.read_text() == "*.pyc\n# mine\nbuild"
    for inside in (".dsops/cache/entries", ".dsops/runs", ".dsops/.gitignore"):
        assert git(path.parent, "check-ignore", inside) == inside
    assert ".dsops" not in git(path.parent, "status", "--porcelain", "--untracked-files=all")


def test_lines_driving_dsops_leave_the_cache_key_alone(tmp_path: Path) -> None:
    plain = make_notebook(tmp_path / "a.ipynb", [("x = 2\nprint(x)", ["step:s"])])
    tooled = make_notebook(
        tmp_path / "b.ipynb",
        ["%load_ext dsops_jupyter", ("x = 2\n%dsops steps\nprint(x)\n%dsops panel", ["step:s"])],
    )
    assert cache.code_key(read_pipeline(plain), "s") == cache.code_key(read_pipeline(tooled), "s")


def test_outside_a_repository_the_cache_sits_next_to_the_notebook(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "plain" / "nb.ipynb", CELLS)
    cached_run(path)
    assert cache.open_cache(path).root == path.parent / ".dsops" / "cache"
    assert not (path.parent / ".gitignore").exists()
    assert marks(path) == dict.fromkeys(["load", "fit", "report"], "fresh")


# --- the command line --------------------------------------------------------------------------
def test_dsops_steps_shows_fresh_and_stale_with_why(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    shown = assert_ok(dsops("steps", path.name, cwd=path.parent)).stdout
    assert "1. load  (cell 3)  [stale: never run]" in shown
    assert "3. report  (cell 5)  [stale: never run]" in shown
    cached_run(path)
    shown = assert_ok(dsops("steps", path.name, cwd=path.parent)).stdout
    assert shown.count("[fresh]") == 3
    done = assert_ok(dsops("steps", path.name, "-p", "label", "y", "--json", cwd=path.parent))
    states = {s["name"]: s["state"] for s in json.loads(done.stdout)["steps"]}
    assert states["load"]["fresh"] and not states["fit"]["fresh"]
    assert states["fit"]["reasons"] == ["parameter label changed"]
    assert states["report"]["reasons"] == ["upstream fit stale"]
    assert error_line(dsops("steps", path.name, "-p", "n", "many", cwd=path.parent)).startswith(
        "error: parameter n expects int"
    )


def test_dsops_cache_show_prune_and_clear_cover_the_build_cache(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    repo = path.parent
    (repo / "pyproject.toml").write_text('[tool.dsops]\ncache-size = "150KB"\n')
    build = tmp_path / "build-cache"
    old, new = build / "layers" / "old.tar", build / "wheelhouse" / "w-1.0-py3-none-any.whl"
    for file in (old, new):
        file.parent.mkdir(parents=True)
        file.write_bytes(os.urandom(100_000))
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    env = clean_env(DSOPS_CACHE_DIR=str(build))
    cached_run(path)

    shown = assert_ok(dsops("cache", cwd=repo, env=env)).stdout
    assert f"step cache {repo / '.dsops' / 'cache'}: 3 entries" in shown
    assert "(limit 150.0 KB)" in shown and "build cache" in shown and "2 files, 200.0 KB" in shown
    assert shown.count("nb.ipynb") == 3

    pruned = assert_ok(dsops("cache", "prune", "--json", cwd=repo, env=env)).stdout
    data = json.loads(pruned)
    assert [f["path"] for f in data["files"]] == [str(old)] and data["entries"] == []
    assert data["freed"] == 100_000 and new.exists() and not old.exists()

    cleared = assert_ok(dsops("cache", "clear", "--project", path, cwd=tmp_path, env=env)).stdout
    assert cleared.count("removed ") == 4  # three entries, one line for the build files
    assert "freed" in cleared and not new.exists()
    assert marks(path)["load"] == ["never run"]
    shown = assert_ok(dsops("cache", cwd=repo, env=env)).stdout
    assert "0 entries" in shown and "0 files" in shown


def test_bad_cache_size_is_one_line(tmp_path: Path) -> None:
    path = notebook(tmp_path)
    (path.parent / "pyproject.toml").write_text('[tool.dsops]\ncache-size = "lots"\n')
    line = error_line(dsops("cache", cwd=path.parent))
    assert line == "error: [tool.dsops] cache-size must be a size such as \"5GB\", not 'lots'"


# --- the generated script's --cache ------------------------------------------------------------
LOGGED = [
    ("n = 4", ["parameters"]),
    ("import json", []),
    (
        "with open('log.txt', 'a') as log:\n    log.write('load\\n')\nxs = list(range(n))",
        ["step:load"],
    ),
    ("total = sum(xs)\nsquares = {str(x): x * x for x in xs}", ["step:total"]),
    (
        "with open('result.json', 'w') as out:\n    json.dump([total, squares], out)",
        ["step:report"],
    ),
]


def converted(tmp_path: Path) -> tuple[Path, Path]:
    """A notebook whose first step appends a line to log.txt, converted: (notebook, script)."""
    path = notebook(tmp_path, LOGGED)
    assert_ok(dsops("convert", path.name, cwd=path.parent))
    return path, path.parent / "pipelines" / "nb" / "nb.py"


def test_script_cache_second_run_restores_and_gives_the_same_results(
    tmp_path: Path,
) -> None:
    path, script = converted(tmp_path)
    store = path.parent / ".dsops" / "cache"
    plain = tmp_path / "plain"
    plain.mkdir()
    assert_ok(run_python(script, cwd=plain))
    work = tmp_path / "work"
    work.mkdir()
    for workdir in ("w1", "w2"):
        done = assert_ok(run_python(script, "--cache", store, "--workdir", workdir, cwd=work))
    assert (work / "log.txt").read_text() == "load\n"  # the second run did not run load
    # load and total restored; report hands nothing on, so it runs (and writes result.json)
    assert done.stderr.count("restored from the cache") == 2
    assert (work / "result.json").read_bytes() == (plain / "result.json").read_bytes()
    for name in ("xs", "total", "squares"):
        assert artifacts.load(work / "w2", name) == artifacts.load(work / "w1", name)
    shown = assert_ok(dsops("steps", path.name, cwd=path.parent)).stdout
    assert shown.count("[fresh]") == 3  # the script's keys are the ones dsops computes


def test_script_cache_force_reruns_a_step_and_what_follows(tmp_path: Path) -> None:
    _, script = converted(tmp_path)
    store = tmp_path / "store"
    work = tmp_path / "work"
    work.mkdir()
    assert_ok(run_python(script, "--cache", store, cwd=work))
    done = assert_ok(run_python(script, "--cache", store, "--force", "total", cwd=work))
    assert done.stderr.count("restored from the cache") == 1 and "step load" in done.stderr
    assert (work / "log.txt").read_text() == "load\n"
    (work / "result.json").unlink()
    done = assert_ok(run_python(script, "--cache", store, "--force", "load", "--n", "5", cwd=work))
    assert "restored" not in done.stderr
    assert (work / "log.txt").read_text() == "load\nload\n"
    assert json.loads((work / "result.json").read_text())[0] == 10
    refused = run_python(script, "--force", "load", cwd=work)
    assert refused.returncode == 2 and refused.stderr.endswith("error: --force needs --cache DIR\n")


# --- notebooks written by others ---------------------------------------------------------------
CORPUS = Path(__file__).parent / "corpus"


def test_comments_and_blank_lines_keep_the_keys_of_corpus_notebooks(tmp_path: Path) -> None:
    """Every corpus notebook dsops reads: a comment and blank lines after each code cell change
    no step's code key, except in a cell magic's body (text the magic receives, not code)."""
    checked = 0
    for source in sorted(CORPUS.rglob("*.ipynb")):
        try:
            pipeline = read_pipeline(source)
        except DsopsError:
            continue
        book = nbformat.read(str(source), as_version=4)
        code = [c for c in book.cells if c.cell_type == "code" and c.source.strip()]
        if any(c.source.lstrip().startswith("%%") and "%%dsops" not in c.source for c in code):
            continue
        for cell in code:
            cell.source = cell.source.rstrip("\n") + "\n\n# a note\n\n"
        copy = tmp_path / source.relative_to(CORPUS)
        copy.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(book, str(copy))
        edited = read_pipeline(copy)
        for step in pipeline.steps:
            assert cache.code_key(pipeline, step.name) == cache.code_key(edited, step.name), (
                f"{source.name}: step {step.name}"
            )
        checked += 1
    assert checked >= 40


def test_a_step_run_after_another_goes_stale_when_that_one_changes(tmp_path: Path) -> None:
    """`after:` without data: what the earlier step did (a file) reaches the later one only
    through that step's key."""
    data = tmp_path / "data.txt"
    path = notebook(
        tmp_path,
        [
            (f"open({str(data)!r}, 'w').write('one')", ["step:write"]),
            (f"text = open({str(data)!r}).read()", ["step:read", "after:write"]),
        ],
    )
    assert cached_run(path) == ["write", "read"]
    edit_cell(path, 0, f"open({str(data)!r}, 'w').write('two')")
    assert marks(path) == {"write": ["code changed"], "read": ["upstream write stale"]}
    assert cached_run(path, only={"write"}) == ["write"]
    assert marks(path) == {"write": "fresh", "read": ["upstream write changed"]}
    assert cached_run(path) == ["read"]


@pytest.mark.parametrize(
    "name",
    [
        "kale/Example.ipynb",
        "kale/composition_notebook_a.ipynb",
        "probes/mutation_append.ipynb",
        "probes/mutation_helper.ipynb",
        "probes/mutation_del_item.ipynb",
        "probes/params_computed.ipynb",
    ],
)
def test_script_cache_on_corpus_notebooks(tmp_path: Path, name: str) -> None:
    """A cached run prints what a plain run prints and ends with the values it computes; the
    next one restores every step that hands values on and runs only the others."""
    source = tmp_path / Path(name).name
    source.write_bytes((CORPUS / name).read_bytes())
    assert_ok(dsops("convert", source.name, "--out", "pkg", cwd=tmp_path))
    (script,) = (tmp_path / "pkg").glob("*.py")
    steps = [step for step in read_pipeline(source).steps if step.outputs]
    runs = {}
    for run in ("plain", "first", "second"):
        (tmp_path / run).mkdir()
        flags = [] if run == "plain" else ["--cache", tmp_path / "store", "--workdir", "w"]
        runs[run] = assert_ok(run_python(script, *flags, cwd=tmp_path / run))
    assert runs["first"].stdout == runs["plain"].stdout
    assert "restored" not in runs["first"].stderr
    assert runs["second"].stderr.count("restored from the cache") == len(steps)
    assert set(runs["second"].stdout.splitlines()) <= set(runs["plain"].stdout.splitlines())
    first, second = tmp_path / "first" / "w", tmp_path / "second" / "w"
    restored = {name: e["sha256"] for name, e in artifacts.entries(second).items()}
    assert restored == {name: e["sha256"] for name, e in artifacts.entries(first).items()}
    for output in restored:  # and each loads (its hash checked against its bytes)
        artifacts.load(second, output)
