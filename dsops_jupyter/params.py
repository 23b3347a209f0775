"""Notebook parameters: literal defaults, declared types, and coercion of user-given values.

A parameters cell holds literal assignments only, so defaults are read with ``ast.literal_eval``
and never executed. Values from the CLI (strings) or YAML (typed) are coerced to the declared
type before any kernel starts, so a typo fails in milliseconds instead of mid-run.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dsops_jupyter.errors import ParameterError

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


def parse_parameters_cell(source: str, cell: int, where: str) -> list[Parameter]:
    """Read ``name = literal`` / ``name: type = literal`` lines; anything else is an error."""
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ParameterError(
            f"{where}: parameters cell {cell} is not valid Python (line {err.lineno}: {err.msg})"
        ) from None
    found: dict[str, Parameter] = {}
    for node in tree.body:
        name, annotation, value = _assignment_parts(node, cell, where)
        try:
            default = ast.literal_eval(value) if value is not None else None
        except ValueError:
            raise ParameterError(
                f"{where}: parameters cell {cell}, line {node.lineno}: `{name}` must be a literal "
                f"(number, string, bool, None, list, dict); move computed values to a step"
            ) from None
        found[name] = Parameter(name, _declared_type(annotation, default), default, cell)
    return list(found.values())


def _assignment_parts(node: ast.stmt, cell: int, where: str) -> tuple[str, str | None, ast.expr]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        target, annotation, value = node.targets[0], None, node.value
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        target, value = node.target, node.value
        annotation = ast.unparse(node.annotation)
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
        raise ParameterError(f"{where}: parameters cell {cell} holds a bare value; assign it")
    else:
        raise ParameterError(
            f"{where}: parameters cell {cell}, line {node.lineno}: only `name = literal` "
            f"assignments are allowed in a parameters cell"
        )
    if not isinstance(target, ast.Name):
        raise ParameterError(
            f"{where}: parameters cell {cell}, line {node.lineno}: assign to a plain name"
        )
    return target.id, annotation, value


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


def coerce_parameters(pipeline: Any, raw: Mapping[str, Any] | None) -> dict[str, Any]:
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
