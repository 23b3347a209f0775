"""Static data flow: which names a block reads before binding and which it binds; DAG order."""

from __future__ import annotations

import ast

import pytest

from dsops_jupyter.errors import CycleError
from dsops_jupyter.flow import free_names, scan, topological_order


def names(code: str, bound: set[str] | None = None) -> tuple[list[str], list[str]]:
    found = scan(ast.parse(code).body, bound)
    return found.reads, found.writes


@pytest.mark.parametrize(
    ("code", "reads", "writes"),
    [
        ("y = x + 1", ["x"], ["y"]),
        ("x = 1\ny = x", [], ["x", "y"]),
        ("x = x + 1", ["x"], ["x"]),
        ("x += 1", ["x"], ["x"]),
        ("a, (b, *c) = d", ["d"], ["a", "b", "c"]),
        ("df['col'] = 1", ["df"], ["df"]),
        ("obj.attr.sub = value", ["value", "obj"], ["obj"]),
        ("m[key] = v", ["v", "key", "m"], ["m"]),
        ("import numpy as np\nimport os.path\nfrom a import b as c", [], ["np", "os", "c"]),
        ("for i in items:\n    total = i", ["items"], ["i", "total"]),
        ("with open(p) as fh:\n    text = fh.read()", ["open", "p"], ["fh", "text"]),
        ("try:\n    r = f()\nexcept ValueError as err:\n    r = err", ["f", "ValueError"], []),
        ("if (n := len(xs)) > 2:\n    big = n", ["len", "xs"], ["n", "big"]),
        ("sq = [v * k for v in vals]", ["vals", "k"], ["sq"]),
        ("d = {k: w for k, w in pairs.items() if w > lim}", ["pairs", "lim"], ["d"]),
        ("f = lambda q, r=default: q + outer", ["default", "outer"], ["f"]),
        ("x: int", [], []),
        ("x: int = y", ["y"], ["x"]),
        ("print(a)\na = 2", ["print", "a"], ["a"]),
    ],
)
def test_scan(code: str, reads: list[str], writes: list[str]) -> None:
    got_reads, got_writes = names(code)
    assert got_reads == reads
    if code.startswith("try"):  # r and err are written, order is not the point here
        assert set(got_writes) == {"r", "err"}
    else:
        assert got_writes == writes


def test_function_body_contributes_only_free_names() -> None:
    code = (
        "def fit(data, lr=rate):\n"
        "    local = data * lr\n"
        "    helper = model\n"
        "    return local + helper + offset\n"
    )
    reads, writes = names(code)
    assert reads == ["rate", "model", "offset"]
    assert writes == ["fit"]


def test_class_and_decorators() -> None:
    code = "@registry.register(kind)\nclass Model(Base):\n    size = width\n"
    reads, writes = names(code)
    assert set(reads) == {"registry", "kind", "Base", "width"}
    assert writes == ["Model"]


def test_global_in_function_is_a_read_of_the_module_name() -> None:
    code = "def bump():\n    global counter\n    counter = counter + 1\n"
    assert "counter" in free_names(ast.parse(code).body[0])


def test_nested_function_free_names() -> None:
    code = "def outer(a):\n    def inner(b):\n        return a + b + c\n    return inner\n"
    assert free_names(ast.parse(code).body[0]) == ["c"]


def test_already_bound_names_are_not_reads() -> None:
    reads, _ = names("y = x + z", bound={"x"})
    assert reads == ["z"]


def test_topological_order_keeps_notebook_order_when_free() -> None:
    order = ["a", "b", "c", "d"]
    assert topological_order(order, {}) == order
    assert topological_order(order, {"a": ["d"]}) == ["b", "c", "d", "a"]
    assert topological_order(order, {"b": ["c"], "c": ["d"]}) == ["a", "d", "c", "b"]


def test_topological_order_names_the_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        topological_order(["a", "b", "c"], {"a": ["c"], "b": ["a"], "c": ["b"]})
    message = str(caught.value)
    assert "a -> c -> b -> a" in message
    assert "\n" not in message


def test_self_dependency_is_a_cycle() -> None:
    with pytest.raises(CycleError, match="a -> a"):
        topological_order(["a"], {"a": ["a"]})
