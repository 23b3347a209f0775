"""Parameter grids (``--grid alpha=0.1,0.5 --grid seed=1,2``): typed axes and their combinations.

One parser for every surface that sweeps: ``dsops run --grid`` runs the combinations locally
(sweep.py), and the exports express the same grid natively (Airflow dynamic task mapping, KFP
``ParallelFor``, Argo ``withItems``). Values are coerced to the notebook's declared parameter
types before anything runs, so a typo fails in milliseconds with one line.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dsops_jupyter.errors import ParameterError
from dsops_jupyter.params import Parameter, coerce_value

_OPEN, _CLOSE = "([{", ")]}"
_QUOTES = "'\""


@dataclass(frozen=True)
class Grid:
    """Axes in the order given: (parameter name, its coerced values). Combinations vary the
    last axis fastest, as nested loops over the axes written left to right would."""

    axes: tuple[tuple[str, tuple[Any, ...]], ...]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.axes]

    def combinations(self) -> list[dict[str, Any]]:
        """The cartesian product, one ``{name: value}`` per run (an empty grid: none)."""
        if not self.axes:
            return []
        values = [axis for _, axis in self.axes]
        return [dict(zip(self.names, combo, strict=True)) for combo in itertools.product(*values)]

    def to_json(self) -> dict[str, list[Any]]:
        return {name: list(values) for name, values in self.axes}


def parse_grid(
    parameters: Sequence[Parameter],
    specs: Sequence[str],
    fixed: Mapping[str, Any] | None = None,
    where: str = "the notebook",
) -> Grid:
    """Read ``NAME=V1,V2,...`` specs into a typed Grid for a notebook's ``parameters``
    (``where`` names the notebook in errors).

    Values split at top-level commas: ``[1, 2],[3]`` is two lists and ``'a,b',c`` two strings.
    A repeated value counts once. One-line ParameterError for a spec without ``=``, an unknown
    or repeated parameter, a parameter also set with ``-p`` (``fixed``), a bad or empty value.
    """
    declared = {p.name: p for p in parameters}
    axes: dict[str, tuple[Any, ...]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--grid {spec!r}: expected NAME=VALUE,VALUE,...")
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ParameterError(f"{where} has no parameter {name!r} (its parameters: {known})")
        if name in axes:
            raise ParameterError(f"--grid {name} given twice: list all its values in one --grid")
        if name in (fixed or {}):
            raise ParameterError(f"parameter {name} is set with -p and swept with --grid: keep one")
        raw = split_values(text)
        if not raw:
            raise ParameterError(f"--grid {name}= has no values (expected {name}=V1,V2,...)")
        coerced = [coerce_value(declared[name], _unquoted(declared[name], v)) for v in raw]
        axes[name] = tuple(_unique(coerced))
    return Grid(tuple(axes.items()))


def split_values(text: str) -> list[str]:
    """Split at commas outside brackets and quotes; surrounding blanks go, empty pieces fail."""
    pieces, current, depth, quote = [], "", 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in _QUOTES:
            quote = char
        elif char in _OPEN:
            depth += 1
        elif char in _CLOSE:
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            pieces.append(current)
            current = ""
            continue
        current += char
    pieces.append(current)
    stripped = [piece.strip() for piece in pieces]
    if stripped == [""]:
        return []
    if "" in stripped:
        raise ParameterError(f"--grid value list {text!r} has an empty value")
    return stripped


def _unquoted(param: Parameter, value: str) -> str:
    """A quoted value of a str parameter is its text (``'a,b'`` is ``a,b``); others as typed."""
    if param.type == "str" and len(value) >= 2 and value[0] == value[-1] and value[0] in _QUOTES:
        try:
            return str(ast.literal_eval(value))
        except (ValueError, SyntaxError):
            return value
    return value


def _unique(values: list[Any]) -> list[Any]:
    """Order kept; equal by repr, so an ``any`` parameter's 1 and 1.0 stay two values."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = repr(value)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept
