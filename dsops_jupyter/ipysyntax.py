"""IPython syntax in a cell (magics, ``!`` shell lines, ``x?`` help) as plain Python.

IPython's own transformer (``TransformerManager.transform_cell``, as nbconvert uses) turns the
cell into Python that calls ``get_ipython()``; each call is then replaced by what the magic
does to the namespace, where plain Python can do it:

- ``%time``/``%%time`` run their code in place (IPython runs it in the user namespace) and
  print IPython's two timing lines;
  ``%timeit``/``%%timeit`` run their code once inside a function of its own, as IPython's
  timer does, so its assignments do not persist (IPython repeats it a number of times it picks
  by timing; the script runs it once), and print one line "... per loop (...)";
- ``%%writefile`` writes the same file with the same message;
- display-only magics (``%matplotlib``, ``%config``, ``x?`` help) are dropped;
- extension magics (``%load_ext``, ``%autoreload``) are dropped, or kept with --keep-magics;
- lines that drive dsops itself (``%load_ext dsops_jupyter``, ``%dsops ...``) are dropped;
- anything else stays an IPython call: it runs only with --keep-magics.

Only the lines IPython rewrites change, so strings and comments are never touched. IPython is
imported only for a cell that does not parse as Python and holds ``%``, ``!`` or ``?``.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field

DISPLAY_MAGICS = frozenset(
    {"matplotlib", "config", "pylab", "pinfo", "pinfo2", "psearch", "pdef", "pdoc", "psource"}
)
EXTENSION_MAGICS = frozenset({"load_ext", "reload_ext", "unload_ext", "autoreload", "aimport"})
WRITEFILE_HELPER = "_dsops_writefile"
TIME_HELPER = "_dsops_time"  # a clock: .stop() prints IPython's two timing lines
TIME_CLOCK = "_dsops_clock"
TIMEIT_HELPER = "_dsops_timeit_once"  # runs the body once, prints a timeit line
TIMEIT_FUNCTION = "_dsops_timeit"
HELPERS = (WRITEFILE_HELPER, TIME_HELPER, TIMEIT_HELPER)
_DSOPS_LINE = re.compile(
    r"^\s*(%(load_ext|reload_ext|unload_ext)\s+dsops_jupyter\s*(#.*)?$|%%?dsops\b)", re.MULTILINE
)
_MARGIN_MAGIC = re.compile(r"%([A-Za-z_]\w*(?: .*)?)$")
_NOT_SIMPLE = ("'''", '"""', "\\\n")  # a line may sit inside a string or continue another
_CONTINUED = ("(", "[", "{", ",", "\\", "+", "-", "*", "/", "%", "=", ":", "|", "&")
_TIMEIT_OPTION = re.compile(r"\s*-(?:[nrp]\s*\S+|[tcqo])(?=\s|$)")
_MAGIC_CALLS = frozenset({"run_line_magic", "run_cell_magic", "system", "getoutput"})


@dataclass
class Translation:
    code: str  # plain Python (what a script runs without --keep-magics)
    kept: str  # the same with extension magics kept as IPython calls (--keep-magics)
    unsupported: list[str] = field(default_factory=list)  # magics plain Python cannot run


def drives_dsops(source: str) -> bool:
    """Does the cell hold a line that drives dsops itself (its extension or its magics)?"""
    return "dsops" in source and bool(_DSOPS_LINE.search(source))


def dsops_lines(source: str) -> list[tuple[int, str]]:
    """The lines (1-based number, text) that drive dsops itself: left out of pipelines."""
    if not drives_dsops(source):
        return []
    return [
        (number, line.strip())
        for number, line in enumerate(source.split("\n"), 1)
        if _DSOPS_LINE.match(line) and not line.lstrip().startswith("%%")
    ]


def without_dsops_lines(source: str) -> str:
    """The cell for a papermill run: lines that drive dsops itself become blank (or ``pass``)."""
    if not drives_dsops(source):
        return source
    lines = source.split("\n")
    for number, line in enumerate(lines):
        if _DSOPS_LINE.match(line):
            indent = line[: len(line) - len(line.lstrip())]
            lines[number] = f"{indent}pass" if indent else ""
    return "\n".join(lines)


def translate(source: str) -> Translation:
    """The cell as plain Python (see the module docstring); Python source is returned as is."""
    try:
        ast.parse(source)
        return Translation(source, source)
    except SyntaxError:
        pass
    if not any(mark in source for mark in "%!?"):
        return Translation(source, source)  # a plain syntax error, reported by the caller
    tree, transformed = _simple_line_magics(source)
    if tree is None:
        from IPython.core.inputtransformer2 import TransformerManager

        try:  # IPython's transformer raises on some broken cells (an IndentationError, say)
            transformed = TransformerManager().transform_cell(source)
            tree = ast.parse(transformed)
        except (SyntaxError, tokenize.TokenError):
            return Translation(source, source)  # reported as a syntax error by the caller
    cell_magic = _whole_cell_magic(tree)
    if cell_magic is not None:
        return _translate_cell_magic(source, *cell_magic)
    return _Rewriter(source, transformed, tree).run()


def _simple_line_magics(source: str) -> tuple[ast.Module | None, str]:
    """IPython's transform of the commonest cell (``%matplotlib inline`` lines at the margin,
    plain Python around them), without importing IPython (half a second), so ``check`` stays
    fast. Anything less plain (strings over lines, continuations, ``!``, ``?``, indented
    magics) returns None and goes to IPython's transformer."""
    if any(mark in source for mark in _NOT_SIMPLE):
        return None, source
    lines = source.split("\n")
    previous = ""
    for number, line in enumerate(lines):
        match = _MARGIN_MAGIC.match(line)
        if match and not previous.rstrip().endswith(_CONTINUED):
            name, _, args = match[1].partition(" ")
            lines[number] = f"get_ipython().run_line_magic({name!r}, {args!r})"
        previous = line if line.strip() else previous
    transformed = "\n".join(lines) + ("" if source.endswith("\n") else "\n")
    try:
        return ast.parse(transformed), transformed
    except SyntaxError:
        return None, source


def _whole_cell_magic(tree: ast.Module) -> tuple[str, str, str] | None:
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Expr):
        return None
    found = _magic_call(tree.body[0].value)
    if found is None or found[0] != "run_cell_magic" or len(found[1]) != 3:
        return None
    name, line, body = found[1]
    return name, line, body


def _magic_call(node: ast.AST) -> tuple[str, list[str]] | None:
    """``get_ipython().METHOD('a', 'b')`` -> (METHOD, ['a', 'b']) when the arguments are text."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _MAGIC_CALLS
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
        and not node.keywords
    ):
        return None
    texts = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return (node.func.attr, texts) if len(texts) == len(node.args) else None


def _translate_cell_magic(source: str, name: str, line: str, body: str) -> Translation:
    lines = source.split("\n")
    first = next(i for i, text in enumerate(lines) if text.strip().startswith("%%"))
    pad = "\n" * (first + 1)  # the body keeps its line numbers in the cell
    if (name == "capture" and not line.strip()) or name == "dsops":
        inner = translate(body)
        return Translation(pad + inner.code, pad + inner.kept, inner.unsupported)
    if name == "time":  # the body stays top-level code: its imports and defs still move
        inner = translate(body)
        start = "\n" * first + f"{TIME_CLOCK} = {TIME_HELPER}()\n"
        stop = f"\n{TIME_CLOCK}.stop()\n"
        return Translation(
            start + inner.code.rstrip("\n") + stop,
            start + inner.kept.rstrip("\n") + stop,
            inner.unsupported,
        )
    if name == "timeit":
        inner = translate(body)
        setup = _TIMEIT_OPTION.sub("", " " + line).strip()
        quiet = "-q" in line.split()
        return Translation(
            pad + _timeit_code(setup, inner.code, quiet=quiet),
            pad + _timeit_code(setup, inner.kept, quiet=quiet),
            inner.unsupported,
        )
    if name == "writefile":
        code = _writefile_code(line, body)
        if code is not None:
            return Translation(pad + code, pad + code)
    call = f"get_ipython().run_cell_magic({name!r}, {line!r}, {body!r})"
    code = call + "\n" * (len(lines) - 1)
    return Translation(code, code, [lines[first].strip()])


def _timeit_code(setup: str, body: str, indent: str = "", *, quiet: bool = False) -> str:
    """IPython times the code inside a function: it reads the namespace, binds nothing in it."""
    inner = "\n".join(part for part in (setup, body.strip("\n")) if part.strip()) or "pass"
    run = f"{TIMEIT_FUNCTION}()" if quiet else f"{TIMEIT_HELPER}({TIMEIT_FUNCTION})"
    lines = [
        f"def {TIMEIT_FUNCTION}():  # IPython times the code in a scope of its own",
        indent_code(inner),
        run,
        f"del {TIMEIT_FUNCTION}",
    ]
    return "\n".join(lines).replace("\n", "\n" + indent) if indent else "\n".join(lines)


def _writefile_code(line: str, body: str) -> str | None:
    words = line.split()
    append = any(w in ("-a", "--append") for w in words)
    names = [w for w in words if w not in ("-a", "--append")]
    if len(names) != 1 or any(mark in line for mark in "{$"):
        return None  # IPython would expand variables in the line: keep it an IPython call
    filename = names[0]
    if re.match(r"^('.*')|(\".*\")$", filename):
        filename = filename[1:-1]
    return f"{WRITEFILE_HELPER}({filename!r}, {body!r}, append={append})\n"


# A replacement: the node whose source span it replaces (a magic call or its whole statement).
Edit = tuple[ast.Call | ast.Expr, str]


class _Rewriter:
    """Replaces the ``get_ipython()`` calls IPython wrote into a cell by their plain effect."""

    def __init__(self, source: str, transformed: str, tree: ast.Module):
        self.source_lines = source.split("\n")
        self.lines = transformed.split("\n")
        self.tree = tree
        self.newline_added = not source.endswith("\n")  # IPython ends every cell with one
        self.same_lines = source.count("\n") + self.newline_added == transformed.count("\n")
        self.unsupported: list[str] = []

    def run(self) -> Translation:
        plain: list[Edit] = []
        kept: list[Edit] = []
        parents = {id(c): p for p in ast.walk(self.tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(self.tree):
            if not isinstance(node, ast.Call):
                continue
            found = _magic_call(node)
            if found is None:
                continue
            parent = parents.get(id(node))
            statement = parent if isinstance(parent, ast.Expr) else None
            for edits, keep in ((plain, False), (kept, True)):
                edit = self._edit(node, statement, *found, keep=keep)
                if edit is not None:
                    edits.append(edit)
        self.unsupported = list(dict.fromkeys(self.unsupported))
        return Translation(self._apply(plain), self._apply(kept), self.unsupported)

    def _edit(
        self, call: ast.Call, statement: ast.Expr | None, kind: str, args: list[str], *, keep: bool
    ) -> Edit | None:
        name, line = [*args, "", ""][:2] if kind == "run_line_magic" else ("", "")
        if kind == "run_line_magic" and name == "time" and _parses(line, statement):
            if statement is None:
                return call, f"{TIME_HELPER}().value(lambda: ({line}))"
            indent = " " * statement.col_offset
            start = f"{TIME_CLOCK} = {TIME_HELPER}()"
            return statement, f"{start}\n{indent}{line}\n{indent}{TIME_CLOCK}.stop()"
        if kind == "run_line_magic" and name == "timeit" and statement is not None:
            code = _TIMEIT_OPTION.sub("", " " + line).strip()
            if "-o" not in line.split() and _parses(code, statement):
                quiet = "-q" in line.split()
                return statement, _timeit_code("", code, " " * statement.col_offset, quiet=quiet)
        drop = kind == "run_line_magic" and (
            name in DISPLAY_MAGICS
            or name == "dsops"
            or (name in EXTENSION_MAGICS and (not keep or "dsops_jupyter" in line.split()))
        )
        if drop and statement is not None:
            return statement, "pass" if statement.col_offset else ""  # a block needs a body
        if not (kind == "run_line_magic" and name in EXTENSION_MAGICS):
            self._unsupported(call, kind, args)
        return None

    def _unsupported(self, call: ast.Call, kind: str, args: list[str]) -> None:
        if self.same_lines:
            self.unsupported.append(self.source_lines[call.lineno - 1].strip())
        elif kind == "run_line_magic":
            self.unsupported.append(f"%{args[0]} {args[1]}".strip())
        else:
            self.unsupported.append(f"!{args[0]}")

    def _apply(self, edits: list[Edit]) -> str:
        """Splice replacements in (UTF-8 column offsets, from the end so offsets hold)."""
        lines = [line.encode("utf-8") for line in self.lines]
        for node, text in sorted(edits, key=_position, reverse=True):
            first, start, last, end = _span(node)
            head = lines[first][:start]
            tail = lines[last][end:]
            lines[first : last + 1] = [head + text.encode("utf-8") + tail]
        code = b"\n".join(lines).decode("utf-8")
        return code.removesuffix("\n") if self.newline_added else code


def _position(edit: Edit) -> tuple[int, int]:
    return edit[0].lineno, edit[0].col_offset


def _span(node: ast.Call | ast.Expr) -> tuple[int, int, int, int]:
    """First line, start column, last line, end column (0-based lines, UTF-8 columns)."""
    if node.end_lineno is None or node.end_col_offset is None:  # only for hand-made nodes
        raise ValueError("a node from ast.parse always has an end position")
    return node.lineno - 1, node.col_offset, node.end_lineno - 1, node.end_col_offset


def _parses(code: str, statement: ast.Expr | None) -> bool:
    try:
        ast.parse(code, mode="exec" if statement is not None else "eval")
        return True
    except SyntaxError:
        return False


def indent_code(code: str, prefix: str = "    ") -> str:
    """Indent code into a function body, leaving the inside of multi-line strings untouched."""
    inside = _lines_inside_strings(code)
    return "\n".join(
        line if number in inside else _indent_line(line, prefix)
        for number, line in enumerate(code.split("\n"), 1)
    )


def _indent_line(line: str, prefix: str) -> str:
    """Prefix one line; after any form feed in its indentation, since a form feed resets
    Python's column count (a cell line starting with one would otherwise lose its indent)."""
    if not line.strip():
        return ""
    if "\f" not in line:
        return prefix + line
    body = line.lstrip(" \t\f")
    cut = line.rfind("\f", 0, len(line) - len(body)) + 1
    return line[:cut] + prefix + line[cut:]


def _lines_inside_strings(code: str) -> set[int]:
    if '"""' not in code and "'''" not in code and "\\\n" not in code:
        return set()  # no string can span lines: skip tokenizing (most step bodies)
    inside: set[int] = set()
    starts: list[int] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            name = tokenize.tok_name[token.type]
            if name == "FSTRING_START":
                starts.append(token.start[0])
            elif name == "FSTRING_END":
                inside.update(range(starts.pop() + 1, token.end[0] + 1))
            elif token.type == tokenize.STRING and token.end[0] > token.start[0]:
                inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError, IndexError):
        pass
    return inside
