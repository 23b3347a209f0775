"""Notebook parameters: literal defaults, declared types, and coercion of user-given values.

Literal lines of a parameters cell are parameters, read with ``ast.literal_eval`` and never
executed; other lines are code that computes values, as papermill runs them. Values from the
CLI (strings) or YAML (typed) are coerced to the declared type before any kernel starts, so a
typo fails in milliseconds instead of mid-run.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dsops_jupyter import flow
from dsops_jupyter.errors import ParameterError

if TYPE_CHECKING:  # pipeline.py imports Parameter from here
    from dsops_jupyter.pipeline import Pipeline

TYPES = ("int", "float", "str", "bool", "list", "dict", "any")
_PY_TYPES: dict[type, str] = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    list: "list",
    tuple: "list",
    dict: "dict",
}
# The generated script's own options (see templates/script_runtime.py.txt, which mirrors
# parameter_options): a parameter spelled like one is set as ``--param-NAME`` instead.
SCRIPT_OPTIONS = ("help", "step", "workdir", "cache", "force")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    cell: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": _jsonable(self.default)}


def parameter_options(name: str) -> list[str]:
    """The generated script's options that set a parameter, the first one canonical.

    ``--NAME`` with ``_`` as ``-`` (and ``--NAME`` as written too); a name the script's own
    options use (``step``, ``workdir``, ``help``) is ``--param-NAME``, so a notebook that
    papermill runs with ``-p step 3`` converts as well. ``h`` needs nothing: ``--h`` and the
    script's ``-h`` are different options.
    """
    dashed = name.replace("_", "-")
    if name in SCRIPT_OPTIONS:
        return [f"--param-{dashed}"]
    return [f"--{dashed}"] + ([f"--{name}"] if "_" in name else [])


@dataclass(frozen=True)
class ParametersCell:
    """What a parameters cell declares: typed literals, and names its other code computes."""

    parameters: list[Parameter]
    computed: list[str]  # bound by code (``b = a * 2``): run as papermill runs the cell


def parse_parameters_cell(source: str, cell: int, where: str) -> list[Parameter]:
    """The literal parameters of a parameters cell (its computed lines are not parameters)."""
    return read_parameters_cell(source, cell, where).parameters


def read_parameters_cell(source: str, cell: int, where: str) -> ParametersCell:
    """Split a parameters cell into literal parameters and computed names, running nothing.

    ``name = literal`` / ``name: type = literal`` lines are typed, overridable parameters. Any
    other statement is code, as papermill runs it: a name it binds is computed, never a
    parameter (papermill's injected values come after the cell, so overriding ``a`` leaves
    ``b = a * 2`` as the cell computed it).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ParameterError(
            f"{where}: parameters cell {cell} is not valid Python (line {err.lineno}: {err.msg})"
        ) from None
    literals: dict[str, Parameter] = {}
    computed: list[str] = []
    for node in tree.body:
        literal = _literal_assignment(node)
        if literal is None:
            computed += [n for n in flow.scan([node]).writes if n not in computed]
            continue
        name, annotation, default = literal
        literals[name] = Parameter(name, _declared_type(annotation, default), default, cell)
    parameters = [p for name, p in literals.items() if name not in computed]
    return ParametersCell(parameters, computed)


def _literal_assignment(node: ast.stmt) -> tuple[str, str | None, Any] | None:
    """``(name, annotation, value)`` of a one-name literal assignment, else None (it is code)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, annotation, value = node.targets[0], None, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target, value = node.target, node.value
        annotation = ast.unparse(node.annotation)
    else:
        return None
    if not isinstance(target, ast.Name):
        return None
    try:
        return target.id, annotation, ast.literal_eval(value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _declared_type(annotation: str | None, default: Any) -> str:
    if annotation is not None:
        cleaned = annotation.replace("typing.", "").split("[")[0].lower()
        aliases = {"tuple": "list", "none": "any", "optional": "any", "anything": "any"}
        cleaned = aliases.get(cleaned, cleaned)
        if cleaned in TYPES:
            return cleaned
    return _PY_TYPES.get(type(default), "any")


def coerce_value(param: Parameter, value: Any) -> Any:
    """Return ``value`` as the parameter's type or raise a one-line ParameterError."""
    try:
        return _COERCE[param.type](value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...'"
        raise ParameterError(
            f"parameter {param.name} expects {param.type} (default {param.default!r}), got {shown}"
        ) from None


def coerce_parameters(pipeline: Pipeline, raw: Mapping[str, Any] | None) -> dict[str, Any]:
    """Coerce user values for ``pipeline``'s parameters; unknown names are an error."""
    declared = {p.name: p for p in pipeline.parameters}
    coerced = {}
    for name, value in (raw or {}).items():
        if name not in declared:
            known = ", ".join(declared) or "none"
            raise ParameterError(
                f"{pipeline.notebook_path.name} has no parameter {name!r} (its parameters: {known})"
            )
        coerced[name] = coerce_value(declared[name], value)
    return coerced


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip().replace("_", ""), 10)
    raise TypeError


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise TypeError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError


def _literal_of(kind: type) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, str):
            value = ast.literal_eval(value.strip())
        if kind is list and isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, kind):
            raise TypeError
        return value

    return convert


def _to_any(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return value


_COERCE = {
    "int": _to_int,
    "float": _to_float,
    "bool": _to_bool,
    "str": _to_str,
    "list": _literal_of(list),
    "dict": _literal_of(dict),
    "any": _to_any,
}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return repr(value)
