"""Static data flow: which names a block reads before binding and which it binds; DAG order."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dsops_jupyter.errors import CycleError
from dsops_jupyter.flow import scan, topological_order
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.pipeline import Pipeline
from dsops_jupyter.scopes import free_names
from tests.helpers import make_notebook


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


# --- values changed in place ------------------------------------------------------------------
def changed(code: str) -> list[str]:
    """Names whose outside value ``code`` may change in place (they must be passed on)."""
    return scan(ast.parse(code).body).mutated


@pytest.mark.parametrize(
    ("code", "mutated"),
    [
        ("rows.append(x)", ["rows"]),
        ("n = rows.pop()", ["rows"]),  # a mutating method changes its receiver, result used
        ("rows.extend(other)", ["rows"]),  # ... and only its receiver
        ("rows[0].append(x)", ["rows"]),
        ("obj.items.sort()", ["obj"]),
        ("d.setdefault(k, []).append(v)", ["d"]),
        ("for r in rows:\n    r.update(z=1)", ["rows"]),
        ("for r in rows:\n    r['z'] = r['x'] * 2", ["rows"]),
        ("for i, r in enumerate(rows):\n    r['i'] = i", ["rows"]),
        ("for k, v in table.items():\n    v.append(k)", ["table"]),
        ("x = rows[0]\nx.append(1)", ["rows"]),
        ("x = rows\ny = x\ny['k'] = 1", ["rows"]),
        ("pair = [rows, other]\npair[0].append(1)", ["rows", "other"]),
        ("v = arr.reshape(2, 3)\nv[0] = 1", ["arr"]),
        ("df.rename(columns={'a': 'b'}, inplace=True)", ["df"]),
        ("df['a'].fillna(0, inplace=True)", ["df"]),
        ("del cfg['k']", ["cfg"]),
        ("del obj.attr", ["obj"]),
        ("inner = cfg['inner']\ndel inner['b']", ["cfg"]),
        ("counts['a'] += 1", ["counts"]),
        ("obj.total += 1", ["obj"]),
        ("x = rows\nx += [1]", ["rows"]),
        ("for row in table:\n    row['n'] += 1", ["table"]),
        ("import random\nrandom.shuffle(deck)", ["deck"]),
        ("import numpy as np\nnp.random.shuffle(arr)", ["arr"]),
        ("rng.shuffle(arr)", ["rng", "arr"]),  # a dropped result: receiver and arguments
        ("clf.fit(X, y)", ["clf"]),
        ("Xs = scaler.fit_transform(X)", ["scaler"]),
        ("next(it)", ["it"]),
        ("setattr(obj, 'a', 1)", ["obj"]),
        ("transform(rows)", ["rows"]),  # a callable the analysis cannot see through
        ("out = fns[0](rows)", ["rows"]),
        ("[acc.append(v) for v in vals]", ["acc"]),
        ("[r.update(z=1) for r in rows]", ["rows"]),
        ("[[c.append(1) for c in row] for row in grid]", ["grid"]),
        ("await queue.put(item)", ["queue"]),
    ],
)
def test_in_place_changes_are_writes(code: str, mutated: list[str]) -> None:
    assert changed(code) == mutated
    assert set(mutated) <= set(names(code)[1]), "a changed value is written (passed on)"


@pytest.mark.parametrize(
    "code",
    [
        "print(df.head())",
        "df.head()",
        "df.describe()",
        "df.info()",
        "display(df)",
        "len(rows)",
        "print(len(rows), repr(rows), str(rows), isinstance(rows, list))",
        "import matplotlib.pyplot as plt\nplt.plot(x)\nplt.show()",
        "import seaborn as sns\nsns.histplot(df, x='a')",
        "df.plot.bar()",
        "ax.set_title(name)",
        "df.to_csv(path)",
        "import json\njson.dump(metrics, fh)",
        "import os\nos.makedirs(out_dir, exist_ok=True)",
        "import numpy as np\nnp.save(path, arr)",
        "y = np.log(x)",
        "merged = df.merge(other, on='k')",
        "clean = df.dropna()\nclean['a'] = 1",
        "copy = rows.copy()\ncopy.append(1)",
        "top = df.groupby('a').sum()\ntop['b'] = 0",
        "n = len(rows)\nn += 1",
        "total = a + b\ntotal += c",
        "df.rename(columns={'a': 'b'}, inplace=False)",
        "sorted(rows)",
        "rows = rows + [1]\nrows.append(2)",
        "x = []\nx.append(rows)",
        "import sys\nsys.path.append(src)",
        "import numpy as np\nnp.random.seed(seed)",
        "f = lambda r: r.append(1)",
        "for i in range(n):\n    i += 1",
        "[print(v) for v in vals]",
        "df.columns.tolist()",
        "df.isna().sum()",
        "import numpy as np\nnp.unique(arr)",
        "import pandas as pd\npd.get_dummies(df)",
        "df.select_dtypes('number')",
    ],
)
def test_reading_only_changes_nothing(code: str) -> None:
    assert changed(code) == []


def test_a_notebook_function_changes_what_its_body_changes() -> None:
    code = (
        "def add_total(items, label=None):\n"
        "    items.append(sum(items))\n"
        "def summary(items):\n"
        "    return {'n': len(items)}\n"
        "def rebind(items):\n"
        "    items = items.copy()\n"
        "    items.append(0)\n"
        "def log(entry):\n"
        "    history.append(entry)\n"
        "add_total(values)\n"
        "s = summary(rows)\n"
        "rebind(other)\n"
        "log(point)\n"
        "add_total(items=kw_values)\n"
        "add_total(*packed)\n"
    )
    assert changed(code) == ["values", "history", "kw_values", "packed"]


def test_a_notebook_class_changes_what_its_init_changes() -> None:
    code = (
        "class Keeper:\n"
        "    def __init__(self, data, log):\n"
        "        self.data = data\n"
        "        log.append('made')\n"
        "class Plain:\n"
        "    pass\n"
        "k = Keeper(rows, events)\n"
        "p = Plain()\n"
        "k.data.append(1)\n"
    )
    assert changed(code) == ["events", "rows"]


def test_names_bound_here_and_modules_are_not_changed_outside() -> None:
    code = "import pandas as pd\nframe = pd.DataFrame()\nframe['a'] = 1\npd.options.x = 1\n"
    found = scan(ast.parse(code).body)
    assert found.mutated == []
    assert found.writes == ["pd", "frame"]
    assert found.binds == ["pd", "frame"]


# --- pipelines: the changing step hands the value on ------------------------------------------
def pipeline_of(tmp_path: Path, cells: list) -> Pipeline:
    return read_pipeline(make_notebook(tmp_path / "nb.ipynb", cells))


def test_written_mutated_read_chain_depends_on_the_mutating_step(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("rows = [1]\nlimit = 3", ["step:a"]),
            ("print(len(rows))", ["step:peek"]),
            ("rows.append(2)\nprint(rows[0])", ["step:b"]),
            ("n = len(rows) + limit", ["step:c"]),
        ],
    )
    a, peek, b, c = (pipeline.step(name) for name in ("a", "peek", "b", "c"))
    assert peek.writes == [] and peek.inputs == [("rows", "a")]
    assert b.writes == ["rows"] and b.outputs == ["rows"] and b.inputs == [("rows", "a")]
    assert c.inputs == [("rows", "b"), ("limit", "a")]
    assert c.depends_on == ["b", "a"]
    assert [s.name for s in pipeline.steps] == ["a", "peek", "b", "c"]
    assert a.outputs == ["rows", "limit"]


def test_a_notebook_helper_that_appends_passes_its_argument_on(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("def add(items):\n    items.append(1)", ["step:helpers"]),
            ("values = []", ["step:load"]),
            ("add(values)", ["step:grow"]),
            ("total = sum(values)", ["step:report"]),
        ],
    )
    assert "add" in pipeline.module_names  # hoisted: never passed on itself
    assert pipeline.step("grow").writes == ["values"]
    assert pipeline.step("report").inputs == [("values", "grow")]


def test_parameters_changed_in_place_are_passed_on_when_they_can_change(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("names = ['a']\nout_dir = 'out'\nseed = 1", ["parameters"]),
            ("names.append('b')\nimport os\nos.makedirs(out_dir)\nhelper(seed)", ["step:a"]),
            ("print(names, out_dir, seed)", ["step:b"]),
        ],
    )
    step_a = pipeline.step("a")
    assert "names" in step_a.writes
    assert "out_dir" not in step_a.writes and "seed" not in step_a.writes  # immutable types
    assert pipeline.step("b").inputs == [("names", "a"), ("out_dir", None), ("seed", None)]


def test_modules_and_unknown_names_are_never_passed_on(tmp_path: Path) -> None:
    pipeline = pipeline_of(
        tmp_path,
        [
            ("import random\nimport sys\nrows = [3, 1]", ["step:a"]),
            ("random.shuffle(rows)\nsys.path.append('src')\nundefined.append(1)", ["step:b"]),
            ("print(rows, random.random())", ["step:c"]),
        ],
    )
    assert pipeline.step("b").writes == ["rows"]
    assert pipeline.step("c").inputs == [("rows", "b")]


def test_a_step_that_changes_a_value_runs_after_the_earlier_readers(tmp_path: Path) -> None:
    """``after:`` may pull a reader past the changing step; the script must not reorder them."""
    cells = [
        ("rows = [1]", ["step:a"]),
        ("seen = list(rows)", ["step:peek", "after:late"]),
        ("rows.append(2)", ["step:grow"]),
        ("flag = 1", ["step:late"]),
    ]
    pipeline = pipeline_of(tmp_path, cells)
    assert pipeline.step("grow").depends_on == ["a"]  # data and markers only
    assert [s.name for s in pipeline.steps] == ["a", "late", "peek", "grow"]


def test_an_after_marker_against_notebook_order_of_a_change_is_a_cycle(tmp_path: Path) -> None:
    cells = [
        ("rows = [1]", ["step:a"]),
        ("seen = list(rows)", ["step:peek", "after:grow"]),
        ("rows.append(2)", ["step:grow"]),
    ]
    with pytest.raises(CycleError, match="grow -> peek -> grow"):
        pipeline_of(tmp_path, cells)


# --- the step graph (Pipeline.to_json()["edges"]) ---------------------------------------------
def test_the_wine_graph_passes_values_not_throwaway_names() -> None:
    """Read from examples/wine.ipynb: features takes the frame, train the scaled training
    split, evaluate the model, the test split and the class names; the figure, its axes and
    the metrics file handle evaluate makes for itself pass nowhere."""
    data = read_pipeline(Path(__file__).parents[1] / "examples" / "wine.ipynb").to_json()
    assert data["edges"] == [
        {"source": "load", "target": "features", "kind": "data", "names": ["df"]},
        {"source": "features", "target": "train", "kind": "data", "names": ["X_train", "y_train"]},
        {"source": "train", "target": "evaluate", "kind": "data", "names": ["model"]},
        {"source": "features", "target": "evaluate", "kind": "data", "names": ["X_test", "y_test"]},
        {"source": "load", "target": "evaluate", "kind": "data", "names": ["class_names"]},
    ]
    steps = {s["name"]: s for s in data["steps"]}
    assert {"fig", "ax", "f"} <= set(steps["evaluate"]["writes"])
    passed = {n for s in data["steps"] for n in s["outputs"]}
    passed |= {n for e in data["edges"] for n in e["names"]}
    assert not passed & {"fig", "ax", "f", "wine", "X", "y", "scaler", "X_train_raw"}
    assert steps["evaluate"]["outputs"] == []


def test_after_edges_and_names_rebound_before_reading(tmp_path: Path) -> None:
    path = make_notebook(
        tmp_path / "g.ipynb",
        [
            ("fig = 'a figure'\nrows = [1, 2]\nfor i in rows:\n    pass", ["step:load"]),
            ("open('marker.txt', 'w').close()", ["step:prepare", "after:load"]),
            ("fig = 'its own'\nfor i in rows:\n    print(fig, i)", ["step:plot"]),
        ],
    )
    assert read_pipeline(path).to_json()["edges"] == [
        {"source": "load", "target": "prepare", "kind": "after", "names": []},
        {"source": "load", "target": "plot", "kind": "data", "names": ["rows"]},
    ]
