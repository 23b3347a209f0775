"""One escaping function per kind of generated text: values never change the text's structure.

Notebook names, paths, parameter values and image references end up in a Dockerfile, a Python
script, Git messages, image labels and pipeline.json. Each target gets exactly one function
here, and every generator calls it, so a newline in a file name can never add a Dockerfile
instruction, a commit trailer or a statement. A value that no spelling can carry faithfully
(a lone surrogate has no UTF-8 form) is refused with one line naming it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from dsops_jupyter.errors import ConversionError

# A value shown bare in a one-line context must not start or end with blanks or look quoted.
_QUOTE_CHARS = frozenset('"\\')


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as UTF-8 text (a lone surrogate, NUL), or None."""
    if "\x00" in value:
        return "it contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"it contains a lone surrogate (U+{ord(value[err.start]):04X}) with no UTF-8 form"
    return None


def one_line(value: str) -> str:
    """A value inside one line of text (a comment, a Git message line): never a line break.

    Plain printable values stay as they are (``wine.ipynb``); anything else (line breaks, tabs,
    form feeds, NUL, quotes, backslashes, surrogates, outer blanks) is shown JSON-quoted in
    ASCII, so the line still reads, cannot be split, and ``json.loads`` gives the value back.
    """
    if value and value.isprintable() and value == value.strip() and not _QUOTE_CHARS & set(value):
        return value
    return json.dumps(value, ensure_ascii=True)


def shown(value: str, limit: int = 80) -> str:
    """A value as an error message shows it: one line, shortened (a 5,000-character name)."""
    text = one_line(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def quoted(value: str) -> str:
    """A value always JSON-quoted in ASCII: one line, and ``json.loads`` gives it back."""
    return json.dumps(value, ensure_ascii=True)


# The targets: each has its own name so a reader of a generator sees which rules apply.
dockerfile_comment = one_line
git_message_value = one_line
python_comment = quoted  # the script header has always shown the notebook quoted


def dockerfile_quoted(value: str, what: str) -> str:
    """A double-quoted Dockerfile word (a LABEL value): ``"``, ``\\`` and ``$`` escaped.

    Docker's word parser has no escape for a line break, so a value with control characters
    is refused: it could only be spelled by changing it.
    """
    problem = text_problem(value) or (
        "it contains a line break or control character" if not value.isprintable() else None
    )
    if problem:
        raise ConversionError(f"{what} {shown(value)} cannot go into a Dockerfile: {problem}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


def json_text(value: Any, what: str, *, allow_nan: bool = False, **options: Any) -> str:
    """JSON in ASCII (line breaks, quotes and surrogates escaped): ``json.loads`` round-trips.

    Non-finite floats have no JSON spelling: refused unless ``allow_nan`` accepts Python's
    ``Infinity`` extension (pipeline.json, read by Python). Ints over Python's 4,300-digit
    limit for decimal text are refused too.
    """
    try:
        return json.dumps(value, ensure_ascii=True, allow_nan=allow_nan, **options)
    except (ValueError, TypeError, RecursionError) as err:
        raise ConversionError(f"{what} cannot be written as JSON: {_reason(err)}") from None


def dockerfile_json(values: list[str], what: str) -> str:
    """A JSON-form Dockerfile argument list (CMD): escaped JSON, each item a valid exec argument.

    Docker's JSON reader turns an escaped lone surrogate into U+FFFD and exec arguments end at
    NUL, so such values would silently change: refused instead.
    """
    for value in values:
        problem = text_problem(value)
        if problem:
            raise ConversionError(f"{what} {shown(value)} cannot be an image argument: {problem}")
    return json_text(values, what)


def label_value(value: str, key: str) -> str:
    """An image label value: any text that survives JSON and the engine unchanged, else refused."""
    problem = text_problem(value)
    if problem:
        raise ConversionError(f"image label {key} {shown(value)} is not usable: {problem}")
    return value


def python_literal(value: Any, what: str = "value") -> str:
    """Python source that evaluates to ``value`` in any module (``repr`` is not: ``inf``).

    Covers what a parameters cell can hold (``ast.literal_eval`` values). Ints too long for
    decimal text (Python refuses over 4,300 digits) are written in hex, which has no limit.
    """
    try:
        return _literal(value)
    except RecursionError:
        raise ConversionError(f"{what} is nested too deeply to write into the script") from None


def _literal(value: Any) -> str:
    if isinstance(value, bool) or value is None or value is Ellipsis:
        return repr(value)
    if isinstance(value, int):
        return _int_literal(value)
    if isinstance(value, float):
        return _float_literal(value)
    if isinstance(value, complex):
        return f"complex({_float_literal(value.real)}, {_float_literal(value.imag)})"
    if isinstance(value, str | bytes):
        return repr(value)  # escapes quotes, line breaks, NUL and surrogates
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    if isinstance(value, tuple):
        items = ", ".join(map(_literal, value))
        return f"({items},)" if len(value) == 1 else f"({items})"
    if isinstance(value, dict):
        pairs = (f"{_literal(k)}: {_literal(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, set | frozenset):
        items = ", ".join(sorted(map(_literal, value)))
        inner = f"{{{items}}}" if value else ""
        return inner if isinstance(value, set) and value else f"{type(value).__name__}({inner})"
    raise ConversionError(f"a {type(value).__name__} value cannot be written into the script")


def _int_literal(value: int) -> str:
    try:
        return repr(value)
    except ValueError:  # over sys.get_int_max_str_digits(): hex has no such limit
        return hex(value)


def _float_literal(value: float) -> str:
    if math.isfinite(value):
        return repr(value)
    return f"float({str(value)!r})"  # float('inf'), float('-inf'), float('nan')


def _reason(err: Exception) -> str:
    if isinstance(err, RecursionError):
        return "it is nested too deeply"
    return str(err).split("\n")[0]
