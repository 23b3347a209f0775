"""Notebook -> generated script package: files, determinism, plain-python runs, safety, magics.

The generated scripts are run for real with plain ``python`` (and with every Jupyter package made
unimportable), one step at a time through a workdir, and checked with ``ast``.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.assemble import convert, generate_package
from dsops_jupyter.cells import load_notebook
from dsops_jupyter.errors import ConversionError
from dsops_jupyter.execute import runnable_notebook
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.runtime import artifacts as _artifacts
from tests.helpers import (
    JUPYTER_MODULES,
    REPO_ROOT,
    Markdown,
    assert_ok,
    clean_env,
    dsops,
    error_line,
    make_notebook,
    papermill_results,
    run_jobs,
    run_python,
    script_results,
    stepwise_results,
    tree_snapshot,
)

TRICKY = "a\"b'\nc ünï"
INJECTION = '"); import os; os.system("x") #'
TEXT = "first\n    indented\n\ttabbed\n\nlast"
PACKAGE_FILES = {"demo.py", "pipeline.json", "requirements.lock", "Dockerfile", ".dockerignore"}
PACKAGE_FILES |= {"dsops_runtime"}

PARAMETERS_CELL = f"""\
label = {TRICKY!r}
evil = {INJECTION!r}
count: int = 3
rate = 0.5
flag = False
sizes = [1, 2]
out_name = "result.json"
"""
LOAD_CELL = '''\
import json
import os
from pathlib import Path


def double(v):
    """Hoisted: it reads nothing a step makes."""
    return 2 * v


class Box:
    def __init__(self, v):
        self.v = v


offset = 10


def shifted(v):
    return v + offset  # reads step data: must stay in the step


%time values = [double(s) for s in sizes]
shifted_values = [shifted(v) for v in values]
TEXT = """first
    indented
\ttabbed\n
last"""
FANCY = f"""count
  is {count}"""
values
display(len(values))
'''
REDUCE_CELL = "%%time\ntotal = sum(values) * count * rate\n"
REPORT_CELL = """\
box = Box(total)
result = {
    "label": label, "evil": evil, "count": count, "rate": rate, "flag": flag, "sizes": sizes,
    "total": box.v, "text": TEXT, "fancy": FANCY, "shifted": shifted_values, "double": double(1),
}
Path(out_name).write_text(json.dumps(result, sort_keys=True), encoding="utf-8")
result["total"]
"""
CELLS = [
    Markdown("# Demo\nEvery feature the converter must handle."),
    "%matplotlib inline\n%load_ext autoreload\n%autoreload 2",
    (PARAMETERS_CELL, ["parameters"]),
    (LOAD_CELL, ["step:load"]),
    (REDUCE_CELL, ["step:reduce"]),
    ("!ls\nprint('exploring')", ["skip"]),
    (REPORT_CELL, ["step:report"]),
]
DEFAULTS = {
    "label": TRICKY,
    "evil": INJECTION,
    "count": 3,
    "rate": 0.5,
    "flag": False,
    "sizes": [1, 2],
    "out_name": "result.json",
}


def expected_result(**changes: Any) -> dict[str, Any]:
    p = {**DEFAULTS, **changes}
    values = [2 * s for s in p["sizes"]]
    return {
        **{k: p[k] for k in ("label", "evil", "count", "rate", "flag", "sizes")},
        "total": sum(values) * p["count"] * p["rate"],
        "text": TEXT,
        "fancy": f"count\n  is {p['count']}",
        "shifted": [v + 10 for v in values],
        "double": 2,
    }


# Every Jupyter package made unimportable, then the script run as __main__: a script that
# needs Jupyter fails here (a try/except ImportError fallback is fine, as plain Python has it).
NO_JUPYTER = f"""
import runpy, sys
BLOCKED = {set(JUPYTER_MODULES) | {"jupyter_core", "ipywidgets", "nbconvert", "dsops_jupyter"}!r}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
for name in list(sys.modules):
    assert name.partition(".")[0] not in BLOCKED, name
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the demo notebook, converted once through the CLI."""
    root = tmp_path_factory.mktemp("convert")
    make_notebook(root / "demo.ipynb", CELLS)
    (root / "no_jupyter.py").write_text(NO_JUPYTER, encoding="utf-8")
    assert_ok(dsops("convert", "demo.ipynb", cwd=root))
    return root


@pytest.fixture(scope="module")
def script(project: Path) -> Path:
    return project / "pipelines" / "demo" / "demo.py"


@pytest.fixture(scope="module")
def tree(script: Path) -> ast.Module:
    return ast.parse(script.read_text(encoding="utf-8"))


def assigned_literal(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"no module-level {name} = ...")


def function(tree: ast.Module, name: str) -> ast.FunctionDef:
    (found,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    return found


# --- the package ------------------------------------------------------------------------------
def test_package_files(project: Path) -> None:
    folder = project / "pipelines" / "demo"
    assert {p.name for p in folder.iterdir()} == PACKAGE_FILES
    spec = json.loads((folder / "pipeline.json").read_text())
    assert spec["order"] == ["load", "reduce", "report"]
    assert spec["script"] == "demo.py"
    assert spec["notebook"] == "demo.ipynb"
    assert spec["skipped_cells"] == [5]
    assert [p["name"] for p in spec["parameters"]] == list(DEFAULTS)


def test_conversion_is_byte_identical_again_and_from_another_cwd(project: Path) -> None:
    folder = project / "pipelines" / "demo"
    first = tree_snapshot(folder)
    assert_ok(dsops("convert", "demo.ipynb", cwd=project))
    assert tree_snapshot(folder) == first
    elsewhere = project / "sub" / "dir"
    elsewhere.mkdir(parents=True)
    assert_ok(dsops("convert", "../../demo.ipynb", cwd=elsewhere))
    assert tree_snapshot(folder) == first
    assert not (elsewhere / "pipelines").exists()
    pkg = generate_package(project / "demo.ipynb")
    assert pkg.files == first


def test_parameters_table_is_the_exact_literal(tree: ast.Module) -> None:
    table = assigned_literal(tree, "PARAMETERS")
    assert {name: default for name, (_, default) in table.items()} == DEFAULTS
    assert {name: kind for name, (kind, _) in table.items()} == {
        "label": "str",
        "evil": "str",
        "count": "int",
        "rate": "float",
        "flag": "bool",
        "sizes": "list",
        "out_name": "str",
    }


def test_run_signature_defaults_are_the_parameters(tree: ast.Module) -> None:
    run = function(tree, "run")
    names = [a.arg for a in run.args.args]
    defaults = [ast.literal_eval(d) for d in run.args.defaults]
    assert names == list(DEFAULTS)
    mutable = {"sizes"}
    assert {n: d for n, d in zip(names, defaults, strict=True) if n not in mutable} == {
        k: v for k, v in DEFAULTS.items() if k not in mutable
    }


def test_parameter_values_cannot_inject_code(tree: ast.Module) -> None:
    calls = [ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    assert not any(call.endswith("system") for call in calls), calls
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert INJECTION in strings and TRICKY in strings


def test_imports_and_self_contained_defs_are_hoisted(tree: ast.Module) -> None:
    top_defs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert {"double", "Box"} <= top_defs
    assert "shifted" not in top_defs
    load = function(tree, "step_load")
    assert [n.name for n in load.body if isinstance(n, ast.FunctionDef)] == ["shifted"]
    top_imports = {ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)}
    assert {"import json", "import os", "from pathlib import Path"} <= top_imports
    assert not [n for n in ast.walk(load) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_multiline_strings_keep_their_exact_content(tree: ast.Module) -> None:
    load = function(tree, "step_load")
    assigned = {ast.unparse(n.targets[0]): n.value for n in load.body if isinstance(n, ast.Assign)}
    assert ast.literal_eval(assigned["TEXT"]) == TEXT
    assert isinstance(assigned["FANCY"], ast.JoinedStr)
    assert "count\n  is " in ast.unparse(assigned["FANCY"]).replace("\\n", "\n")


def test_display_magics_are_dropped_and_timing_magics_keep_their_code(script: Path) -> None:
    text = script.read_text(encoding="utf-8")
    assert not re.search(r"^\s*[%!]", text, re.MULTILINE), "IPython syntax left in the script"
    for gone in ("matplotlib", "autoreload", "!ls", "exploring"):
        assert gone not in text, gone
    assert "values = [double(s) for s in sizes]" in text
    assert "total = sum(values) * count * rate" in text


def test_magics_in_skip_cells_leave_no_ipython_in_the_script(tmp_path: Path) -> None:
    make_notebook(tmp_path / "k.ipynb", ["x = 1", ("!ls", ["skip"]), ("%pip list", ["skip"])])
    script = generate_package(tmp_path / "k.ipynb").files["k.py"].decode()
    assert "get_ipython" not in script, "IPython shim emitted for magics of skip cells"
    assert "IPython" not in script


@pytest.mark.parametrize(
    "text",
    ["trailing  \nspaces\t\nkept", "blank\n\n\n\n\nlines kept", "a\\\nb"],
    ids=["trailing-whitespace", "blank-lines", "backslash-newline"],
)
def test_multiline_string_whitespace_is_kept_exactly(tmp_path: Path, text: str) -> None:
    source = f'value = """{text}"""\nprint(repr(value))'
    make_notebook(tmp_path / "w.ipynb", [(source, ["step:one"])])
    script = generate_package(tmp_path / "w.ipynb").files["w.py"].decode()
    (tmp_path / "w.py").write_text(script, encoding="utf-8")
    done = assert_ok(run_python(tmp_path / "w.py", cwd=tmp_path))
    assert done.stdout == repr(ast.literal_eval(f'"""{text}"""')) + "\n"


# --- running the script -----------------------------------------------------------------------
def test_script_runs_with_plain_python_and_no_jupyter(project: Path, script: Path) -> None:
    workdir = project / "run-default"
    workdir.mkdir()
    done = assert_ok(run_python(project / "no_jupyter.py", script, cwd=workdir))
    result = json.loads((workdir / "result.json").read_text(encoding="utf-8"))
    assert result == expected_result()
    timing = ("CPU times: user ", "Wall time: ")  # %time and %%time print them, as in IPython
    lines = done.stdout.splitlines()
    assert sum(line.startswith(timing) for line in lines) == 4, lines
    # display(len(values)); bare expressions print nothing
    assert [line for line in lines if not line.startswith(timing)] == ["2"]


def test_the_no_jupyter_check_can_fail(project: Path) -> None:
    probe = project / "needs_jupyter.py"
    probe.write_text("import nbformat\n", encoding="utf-8")
    done = run_python(project / "no_jupyter.py", probe, cwd=project)
    assert done.returncode != 0 and "blocked" in done.stderr


def test_script_parameters_round_trip_exactly(project: Path, script: Path) -> None:
    workdir = project / "run-changed"
    workdir.mkdir()
    label = "x'y\"z\n\tü — %s {0} $HOME `id`"
    args = ["--label", label, "--evil", INJECTION + "2", "--count", "5", "--flag", "true"]
    args += ["--sizes", "[3, 4]", "--out-name", "other.json"]
    assert_ok(run_python(script, *args, cwd=workdir))
    result = json.loads((workdir / "other.json").read_text(encoding="utf-8"))
    assert result == expected_result(
        label=label, evil=INJECTION + "2", count=5, flag=True, sizes=[3, 4]
    )


def test_help_lists_parameters_with_types_and_defaults(project: Path, script: Path) -> None:
    done = assert_ok(run_python(script, "--help", cwd=project, env=clean_env(COLUMNS="300")))
    help_text = done.stdout
    for flag, kind, default in [
        ("--label", "STR", repr(TRICKY)),
        ("--evil", "STR", repr(INJECTION)),
        ("--count", "INT", "3"),
        ("--rate", "FLOAT", "0.5"),
        ("--flag", "BOOL", "False"),
        ("--sizes", "LIST", "[1, 2]"),
        ("--out-name", "STR", "'result.json'"),
    ]:
        assert f"{flag} {kind}" in help_text, flag
        assert f"{kind.lower()} (default: {default})" in help_text, (flag, help_text)
    assert "--step" in help_text and "--workdir" in help_text


@pytest.mark.parametrize(
    "args", [["--count", "abc"], ["--sizes", "{1: 2}"], ["--flag", "maybe"], ["--nope", "1"]]
)
def test_script_rejects_bad_values(project: Path, script: Path, args: list[str]) -> None:
    done = run_python(script, *args, cwd=project)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert not (project / "result.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flag", "maybe"], "argument --flag: expected true or false, got 'maybe'"),
        (["--count", "abc"], "argument --count: invalid int value: 'abc'"),
        (["--sizes", "{1: 2}"], "argument --sizes: expected a list written in Python"),
        (["--sizes", "[1,"], "argument --sizes: expected a list written in Python"),
    ],
)
def test_script_errors_speak_the_users_names(
    project: Path, script: Path, args: list[str], message: str
) -> None:
    done = run_python(script, *args, cwd=project)
    assert done.returncode == 2
    assert message in done.stderr, done.stderr
    assert "_dsops" not in done.stderr and "Traceback" not in done.stderr


def test_steps_one_by_one_through_a_workdir(project: Path, script: Path) -> None:
    cwd = project / "stepwise"
    cwd.mkdir()
    for step in ("load", "reduce", "report"):
        assert_ok(run_python(script, "--step", step, "--workdir", "wd", "--count", "4", cwd=cwd))
        if step == "load":
            assert not (cwd / "result.json").exists()
    stored = _artifacts.entries(cwd / "wd")
    assert {"values", "total"} <= set(stored) and {e["format"] for e in stored.values()} == {"json"}
    assert stored["values"]["step"] == "load" and _artifacts.load(cwd / "wd", "values") == [2, 4]
    assert not [p for p in (cwd / "wd").iterdir() if p.name.startswith(".")]
    result = json.loads((cwd / "result.json").read_text(encoding="utf-8"))
    assert result == expected_result(count=4)


def test_steps_run_from_any_cwd_and_from_a_process_that_imports_the_script(
    project: Path, script: Path, tmp_path: Path
) -> None:
    """The script finds its artifact layer beside itself, not in the cwd or on sys.path."""
    workdir, elsewhere = tmp_path / "wd", tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert_ok(run_python(script, "--step", "load", "--workdir", workdir, cwd=elsewhere))
    code = (
        "import importlib.util\nfrom pathlib import Path\n"
        f"spec = importlib.util.spec_from_file_location('demo', {str(script)!r})\n"
        "demo = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(demo)\n"
        "defaults = {name: value for name, (_, value) in demo.PARAMETERS.items()}\n"
        f"demo.run_step('reduce', defaults, Path({str(workdir)!r}))\n"
    )
    assert_ok(run_python("-c", code, cwd=elsewhere))
    assert _artifacts.entry(workdir, "total")["step"] == "reduce"  # type: ignore[index]
    assert list(elsewhere.iterdir()) == [] and not list(script.parent.rglob("__pycache__"))


def test_step_with_a_missing_input_is_a_clear_error(project: Path, script: Path) -> None:
    cwd = project / "missing"
    cwd.mkdir()
    done = run_python(script, "--step", "report", "--workdir", "empty", cwd=cwd)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--step load" in done.stderr or "--step reduce" in done.stderr
    assert not (cwd / "result.json").exists()


def test_a_workdir_that_cannot_be_written_is_one_line(project: Path, script: Path) -> None:
    cwd = project / "unwritable"
    cwd.mkdir()
    (cwd / "wd").write_text("a file, not a folder")
    done = run_python(script, "--step", "load", "--workdir", "wd", cwd=cwd)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: step load cannot write values to wd: ")


def test_step_needs_a_workdir_and_a_known_name(project: Path, script: Path) -> None:
    done = run_python(script, "--step", "load", cwd=project)
    assert done.returncode == 2 and "--workdir" in done.stderr
    done = run_python(script, "--step", "nope", "--workdir", "w", cwd=project)
    assert done.returncode == 2 and "invalid choice" in done.stderr


# --- what cannot become plain Python ------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("!ls -la", "!ls -la"),
        ("x = 1\n%pip install numpy", "%pip install numpy"),
        ("files = !ls", "files = !ls"),
        ("%%bash\necho hi", "%%bash"),
        ("%cd /tmp", "%cd /tmp"),
    ],
)
def test_shell_and_unknown_magics_are_conversion_errors(
    tmp_path: Path, source: str, shown: str
) -> None:
    make_notebook(tmp_path / "m.ipynb", [("a = 1", ["step:one"]), Markdown("x"), source])
    before = tree_snapshot(tmp_path)
    line = error_line(dsops("convert", "m.ipynb", cwd=tmp_path), 2)
    assert "m.ipynb, cell 3" in line and f"`{shown}`" in line and "--keep-magics" in line
    assert tree_snapshot(tmp_path) == before


def test_keep_magics_keeps_them_as_ipython_calls(tmp_path: Path) -> None:
    make_notebook(tmp_path / "m.ipynb", ["x = 1\n%pip --version\nlisting = !echo hi"])
    assert_ok(dsops("convert", "m.ipynb", "--keep-magics", cwd=tmp_path))
    script = (tmp_path / "pipelines" / "m" / "m.py").read_text(encoding="utf-8")
    ast.parse(script)
    assert "get_ipython().run_line_magic('pip', '--version')" in script
    assert "listing = get_ipython().getoutput('echo hi')" in script


def test_skip_cells_may_hold_anything(tmp_path: Path) -> None:
    make_notebook(tmp_path / "s.ipynb", ["x = 1", ("!ls\n%pip install y\nnot python (", ["skip"])])
    assert_ok(dsops("convert", "s.ipynb", cwd=tmp_path))


def test_names_the_script_needs_cannot_be_redefined(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "r.ipynb", ["def main():\n    return 1", "x = main()"])
    with pytest.raises(ConversionError, match="'main'"):
        generate_package(path)
    # A parameter named like a script option is no longer refused: it is --param-step (below).


def test_zero_config_notebook_converts_to_one_step(tmp_path: Path) -> None:
    make_notebook(tmp_path / "plain.ipynb", ["n = 6", "print(n * 7)"])
    assert_ok(dsops("convert", "plain.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "plain" / "plain.py"
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "42\n"
    assert assert_ok(run_python(script, "--step", "main", "--workdir", "w", cwd=tmp_path)).stdout
    assert json.loads((script.parent / "pipeline.json").read_text())["order"] == ["main"]


def test_out_option_writes_elsewhere(tmp_path: Path) -> None:
    make_notebook(tmp_path / "plain.ipynb", ["print(1)"])
    assert_ok(dsops("convert", "plain.ipynb", "--out", "built/here", cwd=tmp_path))
    assert {p.name for p in (tmp_path / "built" / "here").iterdir()} == {
        "plain.py",
        "dsops_runtime",
        "pipeline.json",
        "requirements.lock",
        "Dockerfile",
        ".dockerignore",
    }
    assert not (tmp_path / "pipelines").exists()


def test_lock_pins_the_imported_distributions(tmp_path: Path) -> None:
    from importlib.metadata import version

    make_notebook(tmp_path / "y.ipynb", ["import yaml\nimport json\nprint(yaml.safe_dump({}))"])
    lock = generate_package(tmp_path / "y.ipynb").files["requirements.lock"].decode()
    assert f"PyYAML=={version('PyYAML')}" in lock.splitlines()
    assert "json" not in [line.split("==")[0] for line in lock.splitlines()]


def test_lock_pins_what_the_step_artifacts_store_with(tmp_path: Path) -> None:
    """The image's --step stores any value with cloudpickle, pandas values with pyarrow: both
    are pinned (pyarrow only for a notebook that imports pandas)."""
    from importlib.metadata import version

    make_notebook(tmp_path / "p.ipynb", ["import pandas as pd\nframe = pd.DataFrame()"])
    make_notebook(tmp_path / "j.ipynb", ["import json\nprint(json.dumps([]))"])
    with_pandas = generate_package(tmp_path / "p.ipynb").files["requirements.lock"].decode()
    plain = generate_package(tmp_path / "j.ipynb").files["requirements.lock"].decode()
    pins = [f"cloudpickle=={version('cloudpickle')}", f"pyarrow=={version('pyarrow')}"]
    assert set(pins) <= set(with_pandas.splitlines())
    assert "# the step artifacts (--step) use: cloudpickle, pyarrow" in with_pandas
    assert pins[0] in plain.splitlines() and "pyarrow" not in plain
    assert "unresolved" not in with_pandas + plain


def test_step_functions_are_run_again_by_the_steps_that_use_them(tmp_path: Path) -> None:
    """A def reading step data stays in its step. A later step that calls it runs the def again
    (pickle cannot carry a function into another process), so it reads that step's values at
    call time, as the notebook's function reads its globals: 20 here, in papermill too."""
    make_notebook(
        tmp_path / "f.ipynb",
        [
            ("scale = 3\ndef scaled(v):\n    return v * scale\nprint(scaled(2))", ["step:make"]),
            ("scale = 10\nprint(scaled(2))", ["step:use"]),
        ],
    )
    assert_ok(dsops("convert", "f.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "f" / "f.py"
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "6\n20\n"
    first = assert_ok(run_python(script, "--step", "make", "--workdir", "w", cwd=tmp_path))
    second = assert_ok(run_python(script, "--step", "use", "--workdir", "w", cwd=tmp_path))
    assert first.stdout + second.stdout == "6\n20\n"
    spec = json.loads((script.parent / "pipeline.json").read_text())
    assert spec["steps"][1]["depends_on"] == ["make"]


def test_step_local_classes_and_lambdas_cross_a_workdir(tmp_path: Path) -> None:
    """A class or lambda made inside a step travels by value (cloudpickle); a class the script
    defines at its top level travels by reference, so the next step's instances keep it."""
    make_notebook(
        tmp_path / "c.ipynb",
        [
            "class Shared:\n    pass",
            ("scale = 3\nclass Box:\n    factor = scale\nf = lambda v: v * scale\ns = Shared()",
             ["step:make"]),
            ("print(Box.factor, f(2), isinstance(s, Shared))", ["step:use"]),
        ],
    )  # fmt: skip
    assert_ok(dsops("convert", "c.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "c" / "c.py"
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "3 6 True\n"
    first = assert_ok(run_python(script, "--step", "make", "--workdir", "w", cwd=tmp_path))
    second = assert_ok(run_python(script, "--step", "use", "--workdir", "w", cwd=tmp_path))
    assert first.stdout + second.stdout == "3 6 True\n"
    assert {e["format"] for e in _artifacts.entries(tmp_path / "w").values()} == {"cloudpickle"}


def test_values_that_cannot_cross_a_workdir_say_so(tmp_path: Path) -> None:
    """An open file cannot be handed to another process: a stepwise run stops with one line,
    leaving nothing half-written."""
    make_notebook(
        tmp_path / "c.ipynb",
        [
            ("handle = open('data.txt', 'w')", ["step:make"]),
            ("handle.write('x')\nhandle.close()\nprint(open('data.txt').read())", ["step:use"]),
        ],
    )
    assert_ok(dsops("convert", "c.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "c" / "c.py"
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "x\n"
    first = run_python(script, "--step", "make", "--workdir", "w", cwd=tmp_path)
    assert first.returncode == 1
    assert "Traceback" not in first.stderr, first.stderr
    assert first.stderr.strip().count("\n") == 0, first.stderr
    assert "step make cannot hand handle to later steps" in first.stderr
    assert "cannot store handle (a TextIOWrapper)" in first.stderr
    assert os.listdir(tmp_path / "w") == [], "a half-written artifact was left behind"


def test_a_step_refuses_an_input_whose_bytes_changed(project: Path, script: Path) -> None:
    cwd = project / "tampered"
    cwd.mkdir()
    for step in ("load", "reduce"):
        assert_ok(run_python(script, "--step", step, "--workdir", "wd", cwd=cwd))
    (cwd / "wd" / "total" / "data.json").write_text("12345")
    done = run_python(script, "--step", "report", "--workdir", "wd", cwd=cwd)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: total in wd does not match its manifest")
    assert not (cwd / "result.json").exists()


def test_copy_of_a_package_runs_anywhere(project: Path, script: Path, tmp_path: Path) -> None:
    """The script needs nothing from the notebook's folder: copied alone, it still runs."""
    alone = tmp_path / "alone"
    alone.mkdir()
    copied = Path(shutil.copy(script, alone / "demo.py"))
    assert_ok(run_python(copied, "--out-name", "r.json", cwd=alone))
    assert json.loads((alone / "r.json").read_text())["total"] == 9.0
    done = run_python(copied, "--step", "load", "--workdir", "w", cwd=alone)  # needs the layer
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: demo.py needs the dsops_runtime/ folder beside it")


@pytest.mark.parametrize("name", ["_load", "_any"])
def test_notebook_helpers_never_collide_with_the_script_runtime(tmp_path: Path, name: str) -> None:
    """A notebook's own helper must not be silently replaced by the generated CLI's helpers:
    the script either keeps the notebook's function or refuses to convert, naming it."""
    source = f"import json\n\n\ndef {name}(text):\n    return ('mine', json.loads(text))\n"
    make_notebook(tmp_path / "u.ipynb", [source, f"print({name}('[1, 2]'))"])
    try:
        files = generate_package(tmp_path / "u.ipynb").files
    except ConversionError as err:
        assert repr(name) in str(err)
        return
    (tmp_path / "u.py").write_bytes(files["u.py"])
    done = run_python(tmp_path / "u.py", cwd=tmp_path)
    assert done.stdout == "('mine', [1, 2])\n", done.stderr[-300:]


# --- probes: papermill, the whole script and the script step by step agree ----------------------
PROBES = REPO_ROOT / "tests" / "corpus" / "probes"
CONVERT_PROBES = sorted(
    path.name
    for pattern in ("order_*.ipynb", "kale_*.ipynb", "params_*.ipynb", "magics_*.ipynb")
    for path in PROBES.glob(pattern)
)
# Probes also run with changed parameters (as `papermill -p NAME VALUE` / `--NAME VALUE`).
PROBE_PARAMETERS = {"params_computed.ipynb": {"a": "5", "ratio": "2"}}
RESULT = Path("outputs") / "result.json"


def _result(run: Callable[..., dict[str, bytes]], *args: Any) -> dict[str, Any]:
    """A probe's answer: the ``outputs/result.json`` the run wrote (shared three-way runners)."""
    return json.loads(run(*args)[RESULT.as_posix()])


@pytest.fixture(scope="module")
def probe_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict | str]:
    root = tmp_path_factory.mktemp("probes")
    jobs: dict[tuple[str, str], tuple[Callable[..., dict], tuple]] = {}
    for name in CONVERT_PROBES:
        folder = root / Path(name).stem
        folder.mkdir()
        notebook = Path(shutil.copy(PROBES / name, folder / name))
        pkg = convert(notebook)
        script = pkg.directory / f"{pkg.name}.py"
        order = json.loads(pkg.files["pipeline.json"])["order"]
        variants = {"": {}, "-changed": PROBE_PARAMETERS.get(name)}
        for suffix, values in variants.items():
            if values is None:
                continue
            args = [a for k, v in values.items() for a in (f"--{k.replace('_', '-')}", v)]
            jobs[(name, f"papermill{suffix}")] = (
                _result,
                (papermill_results, notebook, folder / f"pm{suffix}", values),
            )
            jobs[(name, f"script{suffix}")] = (
                _result,
                (script_results, script, folder / f"s{suffix}", *args),
            )
            jobs[(name, f"stepwise{suffix}")] = (
                _result,
                (stepwise_results, script, order, folder / f"w{suffix}", *args),
            )
    return run_jobs(jobs)


def probe_result(runs: dict, notebook: str, kind: str) -> dict[str, Any]:
    found = runs[(notebook, kind)]
    assert isinstance(found, dict), f"{kind} run of {notebook} failed: {found}"
    return found


PROBE_KINDS = [
    (name, suffix)
    for name in CONVERT_PROBES
    for suffix in ("", "-changed")
    if not suffix or name in PROBE_PARAMETERS
]


@pytest.mark.parametrize(("notebook", "suffix"), PROBE_KINDS)
def test_probe_script_equals_papermill(probe_runs: dict, notebook: str, suffix: str) -> None:
    expected = probe_result(probe_runs, notebook, f"papermill{suffix}")
    assert probe_result(probe_runs, notebook, f"script{suffix}") == expected


@pytest.mark.parametrize(("notebook", "suffix"), PROBE_KINDS)
def test_probe_stepwise_equals_papermill(probe_runs: dict, notebook: str, suffix: str) -> None:
    expected = probe_result(probe_runs, notebook, f"papermill{suffix}")
    assert probe_result(probe_runs, notebook, f"stepwise{suffix}") == expected


def test_probes_give_the_notebooks_own_answers(probe_runs: dict) -> None:
    """Guards against every run being equally wrong: what each probe's notebook computes."""
    got = functools.partial(probe_result, probe_runs)
    assert got("order_redefinition.ipynb", "papermill") == {"first": 2, "second": 101, "again": 102}
    assert got("order_syspath.ipynb", "papermill") == {"value": 21, "where": "src"}
    assert got("order_writefile.ipynb", "papermill") == {"value": 45.0}
    assert got("kale_empty_block.ipynb", "papermill")["total"] == round(3 * 12.566371, 6) + 1
    assert got("params_computed.ipynb", "papermill-changed") == {
        "a": 5,
        "b": 2,
        "label": "run-1",
        "ratio": 2.0,
        "scaled": [2.0, 4.0],
    }
    timing = got("magics_timing.ipynb", "papermill")
    assert (timing["x"], timing["z"], timing["w"], timing["half"]) == (45, 0, 45, 22.5)
    assert timing["note"] == "keep %cd /tmp\n!rm -rf nothing\n"
    assert timing["q"] is False and timing["r"] is False
    assert got("magics_dsops.ipynb", "papermill") == {"total": 6}


# --- order, magics and dsops' own lines -----------------------------------------------------------
def script_of(tmp_path: Path, cells: list, *options: str) -> tuple[Path, str]:
    make_notebook(tmp_path / "o.ipynb", cells)
    assert_ok(dsops("convert", "o.ipynb", *options, cwd=tmp_path))
    script = tmp_path / "pipelines" / "o" / "o.py"
    return script, script.read_text(encoding="utf-8")


def test_identical_imports_are_hoisted_once_and_rebinding_stays_in_order(tmp_path: Path) -> None:
    script, text = script_of(
        tmp_path,
        [
            ("import json\nimport math as m\nout = [m.floor(2.5)]", ["step:one"]),
            ("import json\nm = 10\nout.append(m)\nprint(json.dumps(out))", ["step:two"]),
        ],
    )
    tree = ast.parse(text)
    top = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert top.count("import json") == 1
    assert "import math as m" not in top, "m is bound twice: it must stay in its step"
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "[2, 10]\n"


def test_imports_after_a_side_effect_stay_in_their_step(tmp_path: Path) -> None:
    """After a statement that may change what imports find, only standard modules move."""
    _, text = script_of(
        tmp_path,
        [
            ('import os\nos.environ["PROBE_FLAG"] = "1"\nimport yaml\nimport csv', ["step:one"]),
            ("print(yaml.safe_dump([1]), csv.QUOTE_ALL, os.sep)", ["step:two"]),
        ],
    )
    tree = ast.parse(text)
    top = [ast.unparse(n) for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert "import os" in top and "import csv" in top
    assert "import yaml" not in top
    two = function(tree, "step_two")
    assert "import yaml" in [ast.unparse(n) for n in two.body]  # run again where it is used


def test_a_module_written_by_writefile_is_imported_after_it(tmp_path: Path) -> None:
    script, text = script_of(
        tmp_path,
        [
            ("%%writefile probe_wf.py\nVALUE = 7\n", ["step:write"]),
            ("import probe_wf\nprint(probe_wf.VALUE)", ["step:use"]),
        ],
    )
    top = [ast.unparse(n) for n in ast.parse(text).body if isinstance(n, ast.Import)]
    assert "import probe_wf" not in top
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "Writing probe_wf.py\n7\n"


def test_steps_lists_computed_parameters(tmp_path: Path) -> None:
    make_notebook(tmp_path / "c.ipynb", [("a = 1\nb = a * 2", ["parameters"]), "print(b)"])
    done = assert_ok(dsops("steps", "c.ipynb", cwd=tmp_path))
    assert "computed: b (code of the parameters cell, run as papermill runs it)" in done.stdout


def test_ipython_syntax_becomes_what_ipython_runs(tmp_path: Path) -> None:
    """%%timeit cells, x? help and magic-looking text inside strings: each once refused, left
    as a syntax error or rewritten."""
    script, text = script_of(
        tmp_path,
        [
            ("total = 3\ntotal?\n%timeit total = 0", ["step:one"]),
            ("%%timeit\ntotal = 99", []),
            ('s = """\n%cd /nowhere\n!rm -rf x\n"""\n%time n = len(s)\nprint(total, n)', []),
        ],
    )
    assert "%cd /nowhere\n!rm -rf x" in text
    lines = assert_ok(run_python(script, cwd=tmp_path)).stdout.splitlines()
    assert lines[-1] == f"3 {len(chr(10) + '%cd /nowhere' + chr(10) + '!rm -rf x' + chr(10))}"
    assert [
        line.endswith("per loop (mean ± std. dev. of 1 run, 1 loop each)") for line in lines[:2]
    ]
    assert lines[2].startswith("CPU times: user ") and lines[3].startswith("Wall time: ")


def test_dsops_own_lines_are_left_out_and_said_once(tmp_path: Path) -> None:
    make_notebook(
        tmp_path / "d.ipynb",
        [
            "%load_ext dsops_jupyter  # the panel",
            "x = 2\n%dsops steps\nprint(x)",
            ("%%dsops step report\n%dsops panel\nprint(x + 1)", []),
        ],
    )
    assert_ok(dsops("convert", "d.ipynb", cwd=tmp_path))
    script = tmp_path / "pipelines" / "d" / "d.py"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    for name in ("step_setup", "step_report"):
        step = ast.unparse(function(tree, name))
        assert "dsops" not in step and "get_ipython" not in step, step
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "2\n3\n"
    done = assert_ok(dsops("steps", "d.ipynb", cwd=tmp_path))
    notes = [line for line in done.stdout.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: left out of pipelines, scripts and runs (they drive dsops itself): "
        "cell 1 line 1 `%load_ext dsops_jupyter  # the panel`, cell 2 line 2 `%dsops steps`, "
        "cell 3 line 2 `%dsops panel`"
    ]
    pipeline = read_pipeline(tmp_path / "d.ipynb")
    assert pipeline.to_json()["interactive"] == [
        {"cell": 0, "line": 1, "text": "%load_ext dsops_jupyter  # the panel"},
        {"cell": 1, "line": 2, "text": "%dsops steps"},
        {"cell": 2, "line": 2, "text": "%dsops panel"},
    ]
    runnable = runnable_notebook(pipeline, load_notebook(tmp_path / "d.ipynb"), ["report"])
    sources = [c["source"] for c in runnable["cells"]]
    assert not any("dsops" in s for s in sources), sources
    ran = assert_ok(dsops("run", "d.ipynb", "--json", cwd=tmp_path))
    assert [s["status"] for s in json.loads(ran.stdout)["steps"]] == ["done", "done"]


def test_keep_magics_runs_magics_with_the_steps_names(tmp_path: Path) -> None:
    """A kept magic sees the names of the step that runs it (a NameError before), and
    %load_ext stays in the script."""
    script, text = script_of(
        tmp_path,
        [
            "%load_ext autoreload\n%autoreload 2\nx = 41",
            "%%capture captured\nprint(x + 1)",
            "name = 'world'\nfiles = !echo hello {name}\nprint(list(files), x)",
        ],
        "--keep-magics",
    )
    assert "get_ipython().run_line_magic('load_ext', 'autoreload')" in text
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "['hello world'] 41\n"


def test_parameters_named_like_the_scripts_own_options_are_settable(tmp_path: Path) -> None:
    """Kale's base_example_numpy_hp has a parameter ``h`` (papermill: ``-p h 3``); ``step``,
    ``workdir`` and ``help`` are the script's own options, so those parameters are --param-NAME."""
    script, _ = script_of(
        tmp_path,
        [("h = 1\nstep = 2\nworkdir = 'w'", ["parameters"]), ("print(h, step, workdir)", [])],
    )
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == "1 2 w\n"
    given = ["--h", "5", "--param-step", "7", "--param-workdir", "x"]
    assert assert_ok(run_python(script, *given, cwd=tmp_path)).stdout == "5 7 x\n"
    stepwise = [*given, "--step", "main", "--workdir", str(tmp_path / "wd")]
    assert assert_ok(run_python(script, *stepwise, cwd=tmp_path)).stdout == "5 7 x\n"
    assert "--param-step" in assert_ok(run_python(script, "-h", cwd=tmp_path)).stdout
    from dsops_jupyter.recipe import cli_args

    args = cli_args({"h": 4, "step": 9, "workdir": "y"}, {"h": "int", "step": "int"})
    assert assert_ok(run_python(script, *args, cwd=tmp_path)).stdout == "4 9 y\n"


def test_two_parameters_sharing_one_option_are_refused(tmp_path: Path) -> None:
    make_notebook(tmp_path / "p.ipynb", [("step = 1\nparam_step = 2", ["parameters"]), "x = 1"])
    message = error_line(dsops("convert", "p.ipynb", cwd=tmp_path))
    assert "'step'" in message and "'param_step'" in message and "--param-step" in message


@pytest.mark.parametrize("stepwise", [False, True], ids=["whole", "stepwise"])
def test_a_raises_exception_cell_runs_on_and_fails_at_the_end_as_papermill(
    tmp_path: Path, stepwise: bool
) -> None:
    """nbclient shows the tagged cell's error and runs on; papermill then fails naming it."""
    script, _ = script_of(
        tmp_path,
        [
            ("a = 1\nraise ValueError('boom')\nb = 2", ["step:one", "raises-exception"]),
            ("print('after', a)", ["step:two"]),
            ("print('last')", ["step:three"]),
        ],
    )
    order = ["one", "two", "three"]
    chain = [["--step", s, "--workdir", str(tmp_path / "wd")] for s in order] if stepwise else [[]]
    runs = [run_python(script, *args, cwd=tmp_path) for args in chain]
    assert [r.returncode for r in runs] == [0] * (len(runs) - 1) + [1]
    assert "".join(r.stdout for r in runs) == "after 1\nlast\n"
    assert "raise ValueError('boom')" in runs[0].stderr  # the traceback, as the notebook shows
    last = runs[-1].stderr.strip().splitlines()[-1]
    assert "cell 1" in last and "ValueError: boom" in last and "raises-exception" in last


def test_dsops_run_names_the_raises_exception_cell_papermill_fails_for(tmp_path: Path) -> None:
    from dsops_jupyter.errors import ExecutionError
    from dsops_jupyter.execute import run_notebook
    from dsops_jupyter.model import RunOptions

    path = make_notebook(
        tmp_path / "r.ipynb",
        [("x = 1\nraise KeyError('gone')", ["raises-exception"]), "print('ran on')"],
    )
    with pytest.raises(ExecutionError) as caught:
        run_notebook(path, RunOptions(out_dir=tmp_path / "out", cwd=tmp_path))
    message = str(caught.value)
    assert "cell 1" in message and "KeyError" in message, message
    assert "line 2 `raise KeyError('gone')`" in message, message


def converted_script(tmp_path: Path, cells: list[tuple[str, list[str]]]) -> tuple[Path, list[str]]:
    """The script of a notebook made of ``cells`` and its steps in run order."""
    pkg = convert(make_notebook(tmp_path / "nb.ipynb", cells))
    assert not pkg.pipeline.warnings, pkg.pipeline.warnings
    return pkg.directory / f"{pkg.name}.py", json.loads(pkg.files["pipeline.json"])["order"]


def test_a_step_that_exits_ends_the_stepwise_run_there_with_its_status(tmp_path: Path) -> None:
    # papermill and the whole script stop at the exit: the later step must not run either.
    script, order = converted_script(
        tmp_path,
        [
            ("print('before')", ["step:first"]),
            ("raise SystemExit(3)", ["step:stop"]),
            ("print('Cell should not execute.')\nopen('after.txt', 'w').close()", ["step:after"]),
        ],
    )
    assert order == ["first", "stop", "after"]
    whole = run_python(script, cwd=tmp_path)
    assert (whole.returncode, whole.stdout) == (3, "before\n")
    statuses = []
    for step in order:
        done = run_python(script, "--step", step, "--workdir", "wd", cwd=tmp_path)
        statuses.append(done.returncode)
        assert "should not" not in done.stdout
    assert statuses == [0, 3, 3]
    assert not (tmp_path / "after.txt").exists()
    assert not list((tmp_path / "wd").glob("*.partial"))


def test_a_star_import_binds_its_names_in_its_step_in_notebook_order(tmp_path: Path) -> None:
    cells = [
        ("e = 5\nprint(e, sum([1, 2]))", ["step:one"]),
        ("from math import *\nprint(round(e, 3), sin(0))", ["step:two"]),
        ("print(round(pi, 3), floor(e))", ["step:three"]),
    ]
    source = "\n".join(code for code, _ in cells)
    expected = run_python("-c", source, cwd=tmp_path)  # what the notebook's cells print in order
    assert_ok(expected)
    script, order = converted_script(tmp_path, cells)
    assert "from math import *" not in script.read_text(encoding="utf-8").split("def step_two")[0]
    assert assert_ok(run_python(script, cwd=tmp_path)).stdout == expected.stdout
    stepwise = "".join(
        assert_ok(run_python(script, "--step", step, "--workdir", "wd", cwd=tmp_path)).stdout
        for step in order
    )
    assert stepwise == expected.stdout
