"""Parameters: literal defaults, declared types, coercion of CLI strings and YAML values."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.errors import ParameterError
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.params import (
    Parameter,
    coerce_parameters,
    coerce_value,
    parse_parameters_cell,
    read_parameters_cell,
)
from tests.helpers import make_notebook

TRICKY = "a\"b'\nc ünï"
INJECTION = '"); import os; os.system("x") #'


def param(kind: str, default: Any = None) -> Parameter:
    return Parameter("p", kind, default, 1)


@pytest.mark.parametrize(
    ("kind", "raw", "expected"),
    [
        ("int", "3", 3),
        ("int", " 1_000 ", 1000),
        ("int", 4, 4),
        ("int", 4.0, 4),
        ("float", "2", 2.0),
        ("float", "1e-3", 0.001),
        ("float", 2, 2.0),
        ("str", "hello", "hello"),
        ("str", TRICKY, TRICKY),
        ("str", INJECTION, INJECTION),
        ("str", "42", "42"),
        ("bool", "true", True),
        ("bool", "No", False),
        ("bool", "1", True),
        ("bool", False, False),
        ("list", "[1, 'a']", [1, "a"]),
        ("list", "(1, 2)", [1, 2]),
        ("list", [3], [3]),
        ("dict", "{'a': [1]}", {"a": [1]}),
        ("dict", {"k": 1}, {"k": 1}),
        ("any", "12", 12),
        ("any", "[1]", [1]),
        ("any", "plain text", "plain text"),
        ("any", None, None),
    ],
)
def test_coerce_value(kind: str, raw: Any, expected: Any) -> None:
    value = coerce_value(param(kind), raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        ("int", "abc"),
        ("int", "1.5"),
        ("int", 1.5),
        ("int", True),
        ("int", "[1]"),
        ("float", "[1]"),
        ("float", "abc"),
        ("float", True),
        ("float", None),
        ("bool", "maybe"),
        ("bool", 2),
        ("str", 5),
        ("str", ["a"]),
        ("list", "{'a': 1}"),
        ("list", "not a literal"),
        ("list", "__import__('os').system('x')"),
        ("dict", "[1]"),
        ("dict", "(]"),
    ],
)
def test_wrong_types_are_one_line_errors(kind: str, raw: Any) -> None:
    with pytest.raises(ParameterError) as caught:
        coerce_value(param(kind, 0), raw)
    message = str(caught.value)
    assert message.startswith(f"parameter p expects {kind}")
    assert "\n" not in message


def test_long_values_are_shortened_in_the_message() -> None:
    with pytest.raises(ParameterError) as caught:
        coerce_value(param("int"), "x" * 500)
    assert len(str(caught.value)) < 200


def test_literal_coercion_never_evaluates_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for kind in ("list", "dict", "any"):
        with contextlib.suppress(ParameterError):
            coerce_value(param(kind), code)
    assert not marker.exists()


def test_parse_parameters_cell_reads_literals_without_running_them() -> None:
    found = parse_parameters_cell(
        f"label = {TRICKY!r}\nevil = {INJECTION!r}\nn: int = 3\n", 4, "nb.ipynb"
    )
    assert [(p.name, p.type, p.default, p.cell) for p in found] == [
        ("label", "str", TRICKY, 4),
        ("evil", "str", INJECTION, 4),
        ("n", "int", 3, 4),
    ]


@pytest.mark.parametrize(
    ("annotation", "default", "kind"),
    [
        ("int", 1, "int"),
        ("float", 1, "float"),
        ("typing.List[int]", [1], "list"),
        ("Optional[str]", None, "any"),
        ("tuple", (1,), "list"),
        ("SomethingElse", "x", "str"),
    ],
)
def test_declared_type_wins_over_the_default(annotation: str, default: Any, kind: str) -> None:
    (found,) = parse_parameters_cell(f"v: {annotation} = {default!r}", 1, "nb")
    assert found.type == kind


@pytest.mark.parametrize(
    ("source", "parameters", "computed"),
    [
        ("x = f()", [], ["x"]),
        ("x = 1 + 1", [], ["x"]),
        ("a = 1\nb = a * 2", ["a"], ["b"]),
        ("x, y = 1, 2", [], ["x", "y"]),
        ("x = y = 1", [], ["x", "y"]),
        ("print(1)\nk = 2", ["k"], []),
        ("42\nk: float = 2", ["k"], []),
        ("a = 1\na += 1", [], ["a"]),
    ],
)
def test_computed_lines_are_code_not_parameters(
    source: str, parameters: list[str], computed: list[str]
) -> None:
    found = read_parameters_cell(source, 2, "nb.ipynb")
    assert [p.name for p in found.parameters] == parameters
    assert found.computed == computed


def test_parameters_cell_must_be_python() -> None:
    with pytest.raises(ParameterError) as caught:
        parse_parameters_cell("x = (", 2, "nb.ipynb")
    assert "nb.ipynb: parameters cell 2 is not valid Python" in str(caught.value)


def test_comments_and_blank_lines_are_allowed() -> None:
    found = parse_parameters_cell("# the rate\n\nrate = 0.1  # per step\n", 1, "nb")
    assert [(p.name, p.default) for p in found] == [("rate", 0.1)]


def test_coerce_parameters_against_a_notebook(tmp_path: Path) -> None:
    source = "alpha = 1.0\nseed = 42\nname = 'run'\nsizes = [1]\nverbose = False"
    path = make_notebook(tmp_path / "p.ipynb", [(source, ["parameters"]), "print(alpha)"])
    pipeline = read_pipeline(path)
    got = coerce_parameters(
        pipeline, {"alpha": "2", "seed": 7, "name": INJECTION, "sizes": "[2, 3]", "verbose": "yes"}
    )
    assert got == {"alpha": 2.0, "seed": 7, "name": INJECTION, "sizes": [2, 3], "verbose": True}
    assert type(got["alpha"]) is float
    assert coerce_parameters(pipeline, {}) == {}
    assert coerce_parameters(pipeline, None) == {}


def test_unknown_parameter_lists_the_known_ones(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "p.ipynb", [("alpha = 1.0", ["parameters"]), "print(1)"])
    with pytest.raises(ParameterError) as caught:
        coerce_parameters(read_pipeline(path), {"alpah": "2"})
    assert str(caught.value) == "p.ipynb has no parameter 'alpah' (its parameters: alpha)"


def test_no_parameters_cell_means_any_parameter_is_unknown(tmp_path: Path) -> None:
    path = make_notebook(tmp_path / "p.ipynb", ["print(1)"])
    with pytest.raises(ParameterError, match="its parameters: none"):
        coerce_parameters(read_pipeline(path), {"x": "1"})
