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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

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
    "_dsops_writefile",  # %%writefile, as ipysyntax writes it
)
_IMPORT_STATE_PREFIXES = tuple(p for p in _IMPORT_STATE_CALLS if p.endswith("."))
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
# Calls that may bind any name (``vars``/``locals`` only without arguments): after them no
# static reading can tell what a name holds, so nothing but __future__ is hoisted.
_DYNAMIC = frozenset({"exec", "globals", "get_ipython", "__import__"})
_DYNAMIC_WITHOUT_ARGUMENTS = frozenset({"vars", "locals"})
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
    """Local name -> module for the notebook's top-level imports (``import numpy as np``)."""
    aliases: dict[str, str] = {}
    for node in statements:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return aliases


_EFFECTS = (ast.Call, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)
Effect = ast.Call | ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete
_LEAVES = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop, ast.Constant)


@dataclass
class Facts:
    """What one top-level statement does, from a single walk of its tree."""

    bound: set[str] = field(default_factory=set)  # module-level names it binds when it runs
    mutated: set[str] = field(default_factory=set)  # bases of ``a.b = v`` / ``a[k] = v``
    declared_global: set[str] = field(default_factory=set)  # ``global x`` in its functions
    dynamic: bool = False  # exec, globals(), magics, ``import *``: binds what no one sees
    effects: list[Effect] = field(default_factory=list)  # calls and stores it runs
    deferred: dict[str, list[Effect]] = field(default_factory=dict)  # per function: when called


def statement_facts(stmt: ast.stmt) -> Facts:
    """One walk: a function's body counts as run only when the function is called."""
    facts = Facts()
    pending: list[tuple[ast.AST, str | None]] = [(stmt, None)]  # (node, function it is in)
    while pending:
        node, function = pending.pop()
        if isinstance(node, _LEAVES):
            continue
        if isinstance(node, ast.Name):
            if function is None and not isinstance(node.ctx, ast.Load):
                facts.bound.add(node.id)
            continue
        _note(node, function, facts)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            args = node.args
            outside = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
            body: Sequence[ast.AST]
            if isinstance(node, ast.Lambda):
                inner, body = function or "<lambda>", [node.body]
            else:
                outside += node.decorator_list
                inner, body = node.name, node.body
            pending += [(child, function) for child in outside]
            pending += [(child, inner) for child in body]
        else:
            pending += [(child, function) for child in ast.iter_child_nodes(node)]
    return facts


def _note(node: ast.AST, function: str | None, facts: Facts) -> None:
    if isinstance(node, ast.Global):
        facts.declared_global.update(node.names)
    elif isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
        facts.dynamic = True
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        name = node.func.id
        if name in _DYNAMIC or (name in _DYNAMIC_WITHOUT_ARGUMENTS and not node.args):
            facts.dynamic = True
    if isinstance(node, _EFFECTS):
        if function is None:
            facts.effects.append(node)
        else:
            facts.deferred.setdefault(function, []).append(node)
    if function is None:
        _note_binding(node, facts)


def _note_binding(node: ast.AST, facts: Facts) -> None:
    if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
        facts.bound.add(node.id)
    elif isinstance(node, ast.Attribute | ast.Subscript) and isinstance(node.ctx, ast.Store):
        base = node.value
        while isinstance(base, ast.Attribute | ast.Subscript):
            base = base.value
        if isinstance(base, ast.Name):
            facts.mutated.add(base.id)
    elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        facts.bound.add(node.name)
    elif isinstance(node, ast.Import | ast.ImportFrom):
        facts.bound.update(name for name, _ in import_bindings(node))
    elif isinstance(node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name:
        facts.bound.add(node.name)
    elif isinstance(node, ast.MatchMapping) and node.rest:
        facts.bound.add(node.rest)


class ImportBarriers:
    """Finds statements after which a non-standard-library import may find another module."""

    def __init__(self, statements: list[ast.stmt], facts: dict[int, Facts]):
        self.aliases = import_aliases(statements)
        self.facts = facts
        deferred: dict[str, list[Effect]] = {}
        for stmt in statements:
            for name, effects in facts[id(stmt)].deferred.items():
                deferred.setdefault(name, []).extend(effects)
        self.unsafe_functions: set[str] = set()
        changed = True
        while changed:  # a notebook function that changes import state taints its callers
            changed = False
            for name, effects in deferred.items():
                if name not in self.unsafe_functions and any(map(self._changes_state, effects)):
                    self.unsafe_functions.add(name)
                    changed = True

    def is_barrier(self, stmt: ast.stmt) -> bool:
        return any(map(self._changes_state, self.facts[id(stmt)].effects))

    def _changes_state(self, node: Effect) -> bool:
        if isinstance(node, ast.Call):
            name = dotted_name(node.func, self.aliases)
            if name in ("open", "io.open") and _reads_only(node):
                return False
            if isinstance(node.func, ast.Attribute) and node.func.attr in _WRITING_METHODS:
                return True
            if name is None:
                return False
            if name in self.unsafe_functions:
                return True
            return name in _IMPORT_STATE_CALLS or name.startswith(_IMPORT_STATE_PREFIXES)
        targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
        for target in targets:
            base = target.value if isinstance(target, ast.Subscript) else target
            name = dotted_name(base, self.aliases) or ""
            if name.startswith(_IMPORT_STATE_TARGETS) or name in ("sys.path", "sys.modules"):
                return True
        return False


def _reads_only(call: ast.Call) -> bool:
    """``open(path)`` / ``open(path, "rb")``: a constant mode that cannot write."""
    modes = [k.value for k in call.keywords if k.arg == "mode"] + call.args[1:2]
    if not modes:
        return len(call.args) <= 1 and all(k.arg in ("encoding", "errors") for k in call.keywords)
    mode = modes[0]
    return (
        isinstance(mode, ast.Constant)
        and isinstance(mode.value, str)
        and not (set(mode.value) & set("wax+"))
    )


def binding_counts(statements: Iterable[ast.stmt], facts: dict[int, Facts]) -> Counter[str]:
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
        found = facts[id(stmt)]
        counts.update(found.bound)
        counts.update(dict.fromkeys(found.declared_global, 2))
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
# run alone in a fresh process runs the ones earlier steps ran (see hoist._replay_process_state).
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


def is_star_import(node: ast.AST) -> bool:
    """``from m import *``: binds names nobody can list without importing ``m``."""
    return isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)


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
