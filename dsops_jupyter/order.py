"""Which notebook code may leave notebook order, and which definitions later steps re-bind.

Notebook order is the truth: a statement moves to module level (is hoisted) only when running
it first provably changes nothing. That holds for an import or a def/class that binds a name
bound nowhere else in the notebook, and, for an import of anything but the standard library,
only when no earlier statement may change what the import finds (``sys.path``, the working
directory, the environment, files written, ``importlib``, magics). When unsure, nothing moves.
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from collections.abc import Iterable, Iterator

from dsops_jupyter import flow

STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}
# Calls (dotted names, prefix match) after which an import may find another module.
_IMPORT_STATE_CALLS = (
    "sys.path.",
    "sys.modules.",
    "sys.meta_path.",
    "sys.path_hooks.",
    "sys.path_importer_cache.",
    "os.chdir",
    "os.fchdir",
    "os.environ.",
    "os.putenv",
    "os.unsetenv",
    "os.system",
    "os.popen",
    "os.mkdir",
    "os.makedirs",
    "os.rename",
    "os.renames",
    "os.replace",
    "os.symlink",
    "os.link",
    "os.remove",
    "os.unlink",
    "importlib.",
    "site.",
    "shutil.",
    "subprocess.",
    "runpy.",
    "pkgutil.",
    "zipimport.",
    "open",
    "io.open",
    "exec",
    "eval",
    "compile",
    "__import__",
    "setattr",
    "get_ipython",
)
# Method names that write files (``Path(...).write_text``, ``handle.write``, archives).
_WRITING_METHODS = frozenset(
    {
        "write",
        "write_text",
        "write_bytes",
        "writelines",
        "mkdir",
        "touch",
        "symlink_to",
        "hardlink_to",
        "extract",
        "extractall",
        "chdir",
    }
)
# State an assignment or ``del`` may change for later imports.
_IMPORT_STATE_TARGETS = ("sys.", "os.environ")
# Names whose use makes every binding untraceable: nothing but __future__ is hoisted.
_DYNAMIC = frozenset({"exec", "eval", "globals", "vars", "locals", "get_ipython", "__import__"})
# Decorators a re-bound def may carry: re-applying them changes no result.
_PURE_DECORATORS = frozenset(
    {
        "lru_cache",
        "cache",
        "contextmanager",
        "asynccontextmanager",
        "jit",
        "njit",
        "vectorize",
        "guvectorize",
    }
)


def dotted_name(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """``np.random.seed`` -> ``numpy.random.seed`` (import aliases resolved), else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Call):  # Path("x").write_text: the call's own name stands first
        return None
    if not isinstance(node, ast.Name):
        return None
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def import_aliases(statements: Iterable[ast.stmt]) -> dict[str, str]:
    """Local name -> module for every import in the notebook (``import numpy as np``)."""
    aliases: dict[str, str] = {}
    for stmt in statements:
        for node in ast.walk(stmt):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


def executed_nodes(stmt: ast.stmt) -> Iterator[ast.AST]:
    """The nodes a statement runs when it runs: function and lambda bodies are left out."""
    pending: list[ast.AST] = [stmt]
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            pending += [*node.decorator_list, *node.args.defaults]
            pending += [d for d in node.args.kw_defaults if d is not None]
        elif isinstance(node, ast.Lambda):
            pending += [*node.args.defaults, *(d for d in node.args.kw_defaults if d)]
        else:
            pending += list(ast.iter_child_nodes(node))


class ImportBarriers:
    """Finds statements after which a non-standard-library import may find another module."""

    def __init__(self, statements: list[ast.stmt]):
        self.aliases = import_aliases(statements)
        self.unsafe_functions: set[str] = set()
        defs = [n for s in statements for n in ast.walk(s) if isinstance(n, ast.FunctionDef)]
        changed = True
        while changed:  # a notebook function that changes import state taints its callers
            changed = False
            for node in defs:
                if node.name not in self.unsafe_functions and any(
                    self._changes_state(child) for child in ast.walk(node)
                ):
                    self.unsafe_functions.add(node.name)
                    changed = True

    def is_barrier(self, stmt: ast.stmt) -> bool:
        return any(self._changes_state(node) for node in executed_nodes(stmt))

    def _changes_state(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Call):
            name = dotted_name(node.func, self.aliases)
            if isinstance(node.func, ast.Attribute) and node.func.attr in _WRITING_METHODS:
                return True
            if name is None:
                return False
            if name in self.unsafe_functions:
                return True
            return any(
                name == p or (p.endswith(".") and name.startswith(p)) for p in _IMPORT_STATE_CALLS
            )
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for target in targets:
                base = target.value if isinstance(target, ast.Subscript) else target
                name = dotted_name(base, self.aliases) or ""
                if name.startswith(_IMPORT_STATE_TARGETS) or name in ("sys.path", "sys.modules"):
                    return True
        return False


def binding_counts(statements: Iterable[ast.stmt]) -> Counter[str]:
    """How many statements bind each module-level name (``global`` in a function counts twice).

    Identical imports (``import numpy as np`` in two cells) bind the same module object and
    count once; the caller decides whether all of them may move.
    """
    counts: Counter[str] = Counter()
    seen_imports: set[tuple[str, str]] = set()
    for stmt in statements:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            for name, key in import_bindings(stmt):
                if (name, key) not in seen_imports:
                    seen_imports.add((name, key))
                    counts[name] += 1
            continue
        for name in bound_names(stmt):
            counts[name] += 1
        for node in ast.walk(stmt):
            if isinstance(node, ast.Global):
                for name in node.names:
                    counts[name] += 2
    return counts


def import_bindings(stmt: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(bound name, what it is bound to) of each alias of an import statement."""
    found = []
    for alias in stmt.names:
        if isinstance(stmt, ast.Import):
            name = alias.asname or alias.name.split(".")[0]
            key = alias.name if alias.asname else alias.name.split(".")[0]
        else:
            name = alias.asname or alias.name
            key = f"{'.' * stmt.level}{stmt.module or ''}:{alias.name}"
        found.append((name, key))
    return found


def bound_names(stmt: ast.stmt) -> set[str]:
    """Module-level names one statement binds (stores, dels, defs, imports, except, match)."""
    names: set[str] = set()
    for node in executed_nodes(stmt):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update(name for name, _ in import_bindings(node))
        elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
            names.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            names.add(node.rest)
    return names


def is_dynamic(statements: Iterable[ast.stmt]) -> bool:
    """Code that binds names no static reading can see (exec, globals(), magics)."""
    return any(
        isinstance(node, ast.Name) and node.id in _DYNAMIC
        for stmt in statements
        for node in ast.walk(stmt)
    )


def imports_stdlib_only(stmt: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(stmt, ast.ImportFrom):
        return stmt.level == 0 and (stmt.module or "").split(".")[0] in STDLIB
    return all(alias.name.split(".")[0] in STDLIB for alias in stmt.names)


def rebindable(stmt: ast.stmt, stable: set[str]) -> bool:
    """May a later step run this definition again instead of receiving its value?

    Imports (the module is cached: importing again binds the same object) and functions whose
    decorators and defaults give the same result again (pure decorators; defaults that read
    only names bound once). A class is never re-run: its instances must keep their class.
    """
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return all(alias.name != "*" for alias in stmt.names)
    if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    for decorator in stmt.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        last = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if last not in _PURE_DECORATORS:
            return False
    defaults = [*stmt.args.defaults, *(d for d in stmt.args.kw_defaults if d is not None)]
    reads = flow.scan([ast.Expr(value=d) for d in defaults]).reads
    return set(reads) <= stable


# Calls that set up the process for the code after them (imports, paths, environment). A step
# run alone in a fresh process runs the ones earlier steps ran (see notebook._replays).
_PROCESS_STATE_CALLS = frozenset(
    {
        "sys.path.insert",
        "sys.path.append",
        "sys.path.extend",
        "site.addsitedir",
        "os.chdir",
        "os.environ.update",
        "os.environ.setdefault",
        "os.putenv",
    }
)


def sets_process_state(stmt: ast.stmt, aliases: dict[str, str]) -> bool:
    """``sys.path.insert(0, "src")``, ``os.environ["X"] = "1"``, ``os.chdir(d)`` and the like."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
        return dotted_name(stmt.value.func, aliases) in _PROCESS_STATE_CALLS
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        return (
            isinstance(target, ast.Subscript) and dotted_name(target.value, aliases) == "os.environ"
        )
    return False
