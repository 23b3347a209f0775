"""Reading notebooks: the marker vocabulary (tags, %%dsops lines, Kale), steps, parameters, errors.

In-process against read_pipeline on real .ipynb files; the CLI path of the same cases is in
test_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat import v3

from dsops_jupyter.errors import (
    CycleError,
    DsopsError,
    MarkerError,
    NotebookError,
    ParameterError,
    UnknownStepError,
)
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.pipeline import Pipeline
from tests.helpers import EXAMPLES, Markdown, make_notebook


def pipeline_of(tmp_path: Path, cells: list, name: str = "nb.ipynb") -> Pipeline:
    return read_pipeline(make_notebook(tmp_path / name, cells))


def steps_of(pipeline: Pipeline) -> dict[str, list[int]]:
    """Step name -> its cells (0-based notebook indices), in run order."""
    return {step.name: step.cells for step in pipeline.steps}


def fails(tmp_path: Path, cells: list, kind: type[DsopsError]) -> str:
    path = make_notebook(tmp_path / "bad.ipynb", cells)
    with pytest.raises(kind) as caught:
        read_pipeline(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- zero config, continuation, skip -----------------------------------------------------------
def test_no_markers_is_one_step_main(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, [Markdown("# t"), "x = 1", "y = x + 1", "print(y)"])
    assert steps_of(pipeline) == {"main": [1, 2, 3]}
    assert pipeline.parameters == []
    assert pipeline.name == "nb"


def test_unmarked_cells_continue_the_step_above(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("a = 1", ["step:first"]),
            "b = a + 1",
            Markdown("text between cells does not end a step"),
            "c = b * 2",
            ("d = c", ["step:second"]),
            "e = d",
        ],
    )
    assert steps_of(pipeline) == {"first": [0, 1, 3], "second": [4, 5]}


def test_code_before_the_first_step_is_its_own_setup_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, ["base = 10", ("x = base + 1", ["step:use"])])
    assert steps_of(pipeline) == {"setup": [0], "use": [1]}
    assert pipeline.step("use").depends_on == ["setup"]


def test_skip_cells_belong_to_no_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("a = 1", ["step:one"]),
            ("a.bit_length()  # exploring", ["skip"]),
            "%%dsops skip\nthis is not even python (",
            "b = a",
        ],
    )
    assert steps_of(pipeline) == {"one": [0, 3]}
    assert pipeline.to_json()["skipped_cells"] == [1, 2]


def test_a_name_only_a_skip_cell_defines_is_reported(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, [("z = 3", ["skip"]), ("y = z", ["step:one"])])
    assert any("'z'" in w for w in pipeline.warnings), pipeline.warnings


# --- tags and %%dsops lines mean the same -----------------------------------------------------
TAGGED = [
    ("n = 2", ["parameters"]),
    ("xs = list(range(n))", ["step:load"]),
    ("total = sum(xs)", ["step:reduce"]),
    ("print('side step')", ["step:report", "after:reduce"]),
]
MAGIC = [
    "%%dsops parameters\nn = 2",
    "%%dsops step load\nxs = list(range(n))",
    "%%dsops step reduce\ntotal = sum(xs)",
    "%%dsops step report --after reduce\nprint('side step')",
]


@pytest.mark.parametrize("cells", [TAGGED, MAGIC], ids=["tags", "magics"])
def test_tags_and_magic_lines_describe_the_same_pipeline(tmp_path: Path, cells: list) -> None:
    pipeline = pipeline_of(tmp_path, cells)
    assert steps_of(pipeline) == {"load": [1], "reduce": [2], "report": [3]}
    assert [(p.name, p.type, p.default) for p in pipeline.parameters] == [("n", "int", 2)]
    assert pipeline.step("load").parameters == ["n"]
    assert pipeline.step("reduce").reads == ["xs"]
    assert pipeline.step("reduce").depends_on == ["load"]
    assert pipeline.step("report").after == ["reduce"]
    assert pipeline.step("report").depends_on == ["reduce"]


def test_magic_after_takes_a_comma_list(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            "%%dsops step a\nx = 1",
            "%%dsops step b\ny = 2",
            "%%dsops step c --after a,b\nprint('c')",
        ],
    )
    assert pipeline.step("c").after == ["a", "b"]
    assert pipeline.step("c").depends_on == ["a", "b"]


def test_magic_line_is_not_part_of_the_step_code(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, ["%%dsops step only\nvalue = 41 + 1"])
    assert [code.strip() for _, code in pipeline.step("only").body] == ["value = 41 + 1"]


@pytest.mark.parametrize(
    "line", ["%%dsops", "%%dsops step", "%%dsops bogus", "%%dsops step a --before b", "%%dsops '"]
)
def test_unreadable_magic_lines_are_marker_errors(tmp_path: Path, line: str) -> None:
    message = fails(tmp_path, [f"{line}\nx = 1"], MarkerError)
    assert message.startswith("bad.ipynb, cell 1: cannot read") or "says nothing" in message


# --- Kale's vocabulary --------------------------------------------------------------------------
def test_kale_tags_are_read(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("import math", ["imports"]),
            ("def twice(v):\n    return 2 * v", ["functions"]),
            ("k = 3", ["pipeline-parameters"]),
            ("a = twice(k)", ["block:first"]),
            (
                "b = math.sqrt(a)",
                [
                    "step:second",
                    "prev:first",
                    "image:python:3.11",
                    "limit:memory:1Gi",
                    "cache:false",
                    "label:team:ds",
                    "annotation:owner:me",
                    "secret:creds",
                ],
            ),
            ("b", ["pipeline-metrics"]),
            ("print('explore')", ["skip"]),
        ],
    )
    assert steps_of(pipeline) == {"first": [3], "second": [4, 5]}
    assert [(p.name, p.default) for p in pipeline.parameters] == [("k", 3)]
    assert pipeline.step("second").after == ["first"]
    assert pipeline.step("second").extras == {
        "image": ["python:3.11"],
        "limit": ["memory:1Gi"],
        "cache": ["false"],
        "label": ["team:ds"],
        "annotation": ["owner:me"],
        "secret": ["creds"],
    }
    assert pipeline.to_json()["shared_cells"] == [0, 1]
    assert pipeline.to_json()["skipped_cells"] == [6]
    assert pipeline.step("first").parameters == ["k"]


@pytest.mark.parametrize("empty", ["block:", "step:"])
def test_kale_empty_block_tag_continues_the_previous_step(tmp_path: Path, empty: str) -> None:
    """Kale's extension writes an empty ``block:`` tag; Kale reads it as "no step name"."""
    pipeline = pipeline_of(
        tmp_path,
        [
            ("a = 1", ["block:first"]),
            ("b = a + 1", [empty]),
            ("c = b * 2", ["block:second", "prev:first"]),
            ("d = c", [empty, "limit:memory:1Gi"]),
        ],
    )
    assert steps_of(pipeline) == {"first": [0, 1], "second": [2, 3]}
    assert pipeline.step("second").extras == {"limit": ["memory:1Gi"]}
    assert pipeline.step("second").reads == ["b"]


def test_kale_empty_block_before_any_step_is_the_setup_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, [("x = 1", ["block:"]), ("print(x)", ["block:use"])])
    assert steps_of(pipeline) == {"setup": [0], "use": [1]}


def test_kale_example_reads_unchanged() -> None:
    pipeline = read_pipeline(EXAMPLES / "iris_kale.ipynb")
    assert [s.name for s in pipeline.steps] == ["load_data", "split", "train_model", "evaluate"]
    train = pipeline.step("train_model")
    assert train.extras == {"image": ["python:3.11"], "limit": ["memory:1Gi"]}
    assert [p.name for p in pipeline.parameters] == ["max_depth", "test_size", "seed", "output_dir"]


# --- data flow, explicit dependencies and run order ---------------------------------------------
def test_inferred_reads_and_writes(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("rate = 0.5", ["parameters"]),
            ("raw = [1, 2, 3]\nscratch = 0", ["step:load"]),
            ("clean = [r * rate for r in raw]\nraw = raw + [4]", ["step:clean"]),
            ("result = sum(clean) + len(raw)", ["step:score"]),
        ],
    )
    load, clean, score = (pipeline.step(n) for n in ("load", "clean", "score"))
    assert load.writes == ["raw", "scratch"]
    assert load.outputs == ["raw"]  # scratch is never read later: not passed on
    assert clean.reads == ["raw"] and clean.parameters == ["rate"]
    assert clean.outputs == ["clean", "raw"]
    # score reads raw as clean rewrote it: the last writer in notebook order wins.
    assert dict(score.inputs) == {"clean": "clean", "raw": "clean"}
    assert score.depends_on == ["clean"]


def test_explicit_after_adds_to_inferred_dependencies(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("items = []", ["step:make"]),
            ("side = 1", ["step:other"]),
            ("n = len(items)", ["step:use", "after:other"]),
        ],
    )
    use = pipeline.step("use")
    assert use.after == ["other"]
    assert use.inferred == ["make"]
    assert set(use.depends_on) == {"make", "other"}


def test_run_order_follows_after_markers(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("print(1)", ["step:one"]),
            ("print(2)", ["step:two", "after:three"]),
            ("print(3)", ["step:three"]),
        ],
    )
    assert [s.name for s in pipeline.steps] == ["one", "three", "two"]


def test_upstream_of_a_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("a = 1", ["step:a"]),
            ("b = a", ["step:b"]),
            ("c = 1", ["step:c"]),
            ("d = b + c", ["step:d"]),
        ],
    )
    assert pipeline.upstream(["b"]) == ["a", "b"]
    assert pipeline.upstream(["d"]) == ["a", "b", "c", "d"]
    with pytest.raises(UnknownStepError, match="no step 'zz'"):
        pipeline.upstream(["zz"])


# --- parameters ---------------------------------------------------------------------------------
def test_parameters_with_types_and_defaults(tmp_path: Path) -> None:
    source = "\n".join(
        [
            "count: int = 3",
            "rate = 0.5",
            "label = 'x'",
            "flag = True",
            "sizes = [1, 2]",
            "pair = (1, 2)",
            "opts = {'a': 1}",
            "nothing = None",
            "scale: float = 2.5",
        ]
    )
    pipeline = pipeline_of(tmp_path, [(source, ["parameters"]), "print(count)"])
    got = {p.name: (p.type, p.default) for p in pipeline.parameters}
    assert got == {
        "count": ("int", 3),
        "rate": ("float", 0.5),
        "label": ("str", "x"),
        "flag": ("bool", True),
        "sizes": ("list", [1, 2]),
        "pair": ("list", (1, 2)),
        "opts": ("dict", {"a": 1}),
        "nothing": ("any", None),
        "scale": ("float", 2.5),
    }
    assert pipeline.to_json()["parameters"][5] == {
        "name": "pair",
        "type": "list",
        "default": [1, 2],
    }


def test_computed_lines_of_the_parameters_cell_stay_code(tmp_path: Path) -> None:
    """papermill runs any parameters cell: literal lines are parameters, the rest is code that
    a step runs (the setup step when the cell comes before every step)."""
    source = "a = 1\nb = a * 2\nn: int = 3\nimport os\nout = os.path.join('x', str(n))"
    pipeline = pipeline_of(tmp_path, [(source, ["parameters"]), ("print(b, out, a)", ["step:use"])])
    assert [(p.name, p.type, p.default) for p in pipeline.parameters] == [
        ("a", "int", 1),
        ("n", "int", 3),
    ]
    assert pipeline.computed == ["b", "os", "out"]
    assert pipeline.to_json()["computed"] == ["b", "os", "out"]
    assert steps_of(pipeline) == {"setup": [0], "use": [1]}
    assert pipeline.step("use").reads == ["b", "out"]
    assert pipeline.step("use").parameters == ["a"]


def test_a_name_both_literal_and_computed_is_computed(tmp_path: Path) -> None:
    pipeline = pipeline_of(tmp_path, [("a = 1\na = a + 1\nc = 3", ["parameters"]), "print(a)"])
    assert [p.name for p in pipeline.parameters] == ["c"]
    assert pipeline.computed == ["a"]


def test_parameters_cell_with_a_syntax_error(tmp_path: Path) -> None:
    message = fails(tmp_path, [("x = (", ["parameters"]), "print(1)"], NotebookError)
    assert "cell 1, line 1: syntax error" in message


def test_two_parameters_cells_are_an_error(tmp_path: Path) -> None:
    message = fails(
        tmp_path, [("a = 1", ["parameters"]), "%%dsops parameters\nb = 2"], ParameterError
    )
    assert "1, 2" in message


# --- bad markers ----------------------------------------------------------------------------------
def test_a_step_name_tagged_again_next_continues_the_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path, [("a = 1", ["step:load"]), Markdown("x"), "%%dsops step load\nb = a + 1"]
    )
    assert steps_of(pipeline) == {"load": [0, 2]}
    assert pipeline.notes == []


def test_a_step_name_tagged_again_after_other_cells_splits_in_notebook_order(
    tmp_path: Path,
) -> None:
    """Kale's Example.ipynb: cell 4 evaluates what cell 3 trained, under cell 1's name."""
    pipeline = pipeline_of(
        tmp_path,
        [
            ("data = [3, 1, 2]", ["step:evaluation"]),
            ("model = sorted(data)", ["step:training"]),
            ("print(model[0])", ["step:evaluation"]),
            "print(data)",
        ],
    )
    assert steps_of(pipeline) == {"evaluation": [0], "training": [1], "evaluation_2": [2, 3]}
    split = pipeline.step("evaluation_2")
    assert split.after == ["evaluation"]
    assert set(split.depends_on) == {"evaluation", "training"}
    assert len(pipeline.notes) == 1 and "not adjacent" in pipeline.notes[0]
    assert "cell 3" in pipeline.notes[0] and "'evaluation_2'" in pipeline.notes[0]
    assert pipeline.to_json()["notes"] == pipeline.notes


def test_a_split_step_name_never_takes_a_tagged_name(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("a = 1", ["step:s"]),
            ("b = 2", ["step:s_2"]),
            ("c = a", ["step:s"]),
            ("d = b", ["step:t"]),
            ("e = c", ["step:s"]),
        ],
    )
    assert steps_of(pipeline) == {"s": [0], "s_2": [1], "s_3": [2], "t": [3], "s_4": [4]}
    assert pipeline.step("s_3").after == ["s"] and pipeline.step("s_4").after == ["s_3"]


def test_after_an_unknown_step(tmp_path: Path) -> None:
    message = fails(tmp_path, [("a = 1", ["step:load", "after:prepare"])], UnknownStepError)
    assert "after:prepare" in message and "'load'" in message


def test_cycle_of_after_markers(tmp_path: Path) -> None:
    message = fails(
        tmp_path,
        [("a = 1", ["step:one", "after:two"]), ("b = 2", ["step:two", "after:one"])],
        CycleError,
    )
    assert "one -> two -> one" in message


def test_cycle_between_data_flow_and_after(tmp_path: Path) -> None:
    message = fails(
        tmp_path, [("a = 1", ["step:one", "after:two"]), ("b = a", ["step:two"])], CycleError
    )
    assert "cycle" in message


@pytest.mark.parametrize(
    "name", ["1st", "two words", "class", "da-sh", "quo'te", 'dou"ble', "new\nline", "ünï", "é"]
)
def test_step_names_must_be_identifiers(tmp_path: Path, name: str) -> None:
    fails(tmp_path, [("a = 1", [f"step:{name}"])], MarkerError)
    fails(tmp_path, [f"%%dsops step {json.dumps(name)}\na = 1"], MarkerError)


def test_a_cell_with_two_roles_is_an_error(tmp_path: Path) -> None:
    message = fails(tmp_path, [("a = 1", ["step:one", "skip"])], MarkerError)
    assert "cell 1" in message


def test_syntax_error_names_the_cell_and_line(tmp_path: Path) -> None:
    message = fails(tmp_path, ["x = 1", "y = 2\nz = (\n"], NotebookError)
    assert "cell 2" in message and "line" in message


# --- the file itself ------------------------------------------------------------------------------
def test_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.ipynb"
    path.write_text('{"cells": [', encoding="utf-8")
    with pytest.raises(NotebookError, match="not valid JSON"):
        read_pipeline(path)


@pytest.mark.parametrize("content", ["[1, 2]", '{"cells": []}', '"text"', "{}"])
def test_json_that_is_not_a_notebook(tmp_path: Path, content: str) -> None:
    path = tmp_path / "data.ipynb"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NotebookError, match="not a Jupyter notebook"):
        read_pipeline(path)


@pytest.mark.parametrize("nbformat_value", ["'x'", "5", "null", "3"])
def test_garbage_nbformat(tmp_path: Path, nbformat_value: str) -> None:
    path = tmp_path / "odd.ipynb"
    value = nbformat_value.replace("'", '"')
    path.write_text(f'{{"nbformat": {value}, "cells": []}}')
    with pytest.raises(NotebookError) as caught:
        read_pipeline(path)
    assert "odd.ipynb" in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotebookError, match="no such notebook"):
        read_pipeline(tmp_path / "nope.ipynb")


def write_v3(path: Path) -> Path:
    """A real nbformat 3 notebook (worksheets, `input` fields), as old Jupyter wrote it."""
    first = v3.new_code_cell(input="alpha = 0.5", metadata={"tags": ["parameters"]})
    cells = [first, v3.new_code_cell(input="beta = alpha * 2\nprint(beta)")]
    nb = v3.new_notebook(worksheets=[v3.new_worksheet(cells=cells)])
    path.write_text(v3.writes_json(nb), encoding="utf-8")
    assert json.loads(path.read_text())["nbformat"] == 3
    return path


def test_nbformat_3_is_upgraded_in_memory(tmp_path: Path) -> None:
    path = write_v3(tmp_path / "old.ipynb")
    before = path.read_bytes()
    pipeline = read_pipeline(path)
    assert steps_of(pipeline) == {"main": [1]}
    assert [(p.name, p.default) for p in pipeline.parameters] == [("alpha", 0.5)]
    assert path.read_bytes() == before


def test_nbformat_converted_notebook(tmp_path: Path) -> None:
    """nbformat.convert down to v3 and saved: read back with the same steps."""
    v4 = make_notebook(tmp_path / "v4.ipynb", [("a = 1", ["step:one"]), ("b = a", ["step:two"])])
    old = nbformat.convert(nbformat.read(str(v4), as_version=4), 3)
    path = tmp_path / "v3.ipynb"
    path.write_text(nbformat.writes(old, version=3), encoding="utf-8")
    assert steps_of(read_pipeline(path)) == {"one": [0], "two": [1]}


def test_non_python_kernel_is_refused(tmp_path: Path) -> None:
    path = make_notebook(
        tmp_path / "r.ipynb",
        ["x <- 1"],
        metadata={"kernelspec": {"name": "ir", "display_name": "R", "language": "R"}},
    )
    with pytest.raises(NotebookError, match="Python only"):
        read_pipeline(path)


def test_content_hash_ignores_outputs_but_not_code(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "h.ipynb", [("a = 1", ["step:one"])])
    first = read_pipeline(path).content_hash
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="noise")]
    nb.cells[0].execution_count = 7
    nbformat.write(nb, str(path))
    assert read_pipeline(path).content_hash == first
    nb.cells[0].source = "a = 2"
    nbformat.write(nb, str(path))
    assert read_pipeline(path).content_hash != first


@pytest.mark.parametrize(
    ("file_name", "expected"), [("My Notebook-2.ipynb", "my_notebook_2"), ("3d.ipynb", "nb_3d")]
)
def test_pipeline_name_from_file_name(tmp_path: Path, file_name: str, expected: str) -> None:
    assert pipeline_of(tmp_path, ["x = 1"], name=file_name).name == expected
