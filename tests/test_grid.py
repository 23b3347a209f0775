"""Grid specs (`--grid NAME=V1,V2`): typed axes from the notebook's parameters, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsops_jupyter.errors import ParameterError
from dsops_jupyter.grid import parse_grid, split_values
from dsops_jupyter.notebook import read_pipeline
from tests.helpers import EXAMPLES, make_notebook


@pytest.fixture(scope="module")
def wine():
    return read_pipeline(EXAMPLES / "wine.ipynb")


def test_values_take_the_declared_types_and_combine_last_axis_fastest(wine) -> None:
    grid = parse_grid(wine.parameters, ["alpha=0.1, 1 ,10", "seed=1,2"])
    assert grid.to_json() == {"alpha": [0.1, 1.0, 10.0], "seed": [1, 2]}
    assert all(isinstance(v, float) for v in grid.to_json()["alpha"])
    combos = grid.combinations()
    assert combos == [{"alpha": a, "seed": s} for a in (0.1, 1.0, 10.0) for s in (1, 2)], (
        "nested loops, left axis outermost"
    )
    assert parse_grid(wine.parameters, []).combinations() == []


def test_top_level_commas_split_and_quotes_belong_to_str_values(tmp_path: Path) -> None:
    nb = make_notebook(
        tmp_path / "p.ipynb",
        [("sizes = [1]\nname = 'x'\nextra = None", ["parameters"]), ("print(sizes)", ["step:a"])],
    )
    pipeline = read_pipeline(nb)
    grid = parse_grid(
        pipeline.parameters, ["sizes=[1, 2],[3]", "name='a,b',c", "extra={'k': (1, 2)},7"]
    )
    assert grid.to_json() == {
        "sizes": [[1, 2], [3]],
        "name": ["a,b", "c"],
        "extra": [{"k": (1, 2)}, 7],
    }
    assert split_values("1,1,2") == ["1", "1", "2"]
    assert parse_grid(pipeline.parameters, ["name=a,a,b"]).to_json() == {"name": ["a", "b"]}


@pytest.mark.parametrize(
    ("specs", "fixed", "message"),
    [
        (["alpha"], {}, "--grid 'alpha': expected NAME=VALUE,VALUE,..."),
        (["=1,2"], {}, "--grid '=1,2': expected NAME=VALUE,VALUE,..."),
        (["beta=1"], {}, "wine.ipynb has no parameter 'beta' (its parameters: test_size, alpha"),
        (["alpha="], {}, "--grid alpha= has no values"),
        (["alpha=1,,2"], {}, "--grid value list '1,,2' has an empty value"),
        (["seed=1,two"], {}, "parameter seed expects int (default 42), got 'two'"),
        (["alpha=1", "alpha=2"], {}, "--grid alpha given twice"),
        (["alpha=1,2"], {"alpha": "3"}, "parameter alpha is set with -p and swept with --grid"),
    ],
)
def test_bad_specs_fail_in_one_line(wine, specs, fixed, message) -> None:
    with pytest.raises(ParameterError) as caught:
        parse_grid(wine.parameters, specs, fixed, wine.notebook_path.name)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
