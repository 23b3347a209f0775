"""Data flow between steps: which names a block of code reads and writes, and a DAG order.

The analysis is static (ast), in statement order, so ``x = x + 1`` reads ``x`` from an earlier
step and writes it back. Attribute and item stores (``df["a"] = ...``) count as writes of the
base name because they mutate a value a later step may read. Mutating method calls
(``lst.append``) are not seen: add ``after:`` to order such steps explicitly.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dsops_jupyter.errors import CycleError

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__"}


@dataclass
class Names:
    """Names read before being bound (``reads``) and names bound (``writes``), first-seen order."""

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)

    def read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in self.reads:
            self.reads.append(name)

    def write(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        if name not in self.writes:
            self.writes.append(name)


class _Scanner(ast.NodeVisitor):
    """Walks module-level statements in execution order; nested scopes contribute free names."""

    def __init__(self, names: Names, bound: set[str]):
        self.names = names
        self.bound = bound

    # -- plain names ------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.names.read(node.id, self.bound)
        else:
            self.names.write(node.id, self.bound)

    def _store_through(self, node: ast.Attribute | ast.Subscript) -> None:
        """``a.b = v`` / ``a[k] = v`` mutate ``a``: it is read and written."""
        if isinstance(node, ast.Subscript):
            self.visit(node.slice)
        base = node.value
        while isinstance(base, ast.Attribute | ast.Subscript):
            if isinstance(base, ast.Subscript):
                self.visit(base.slice)
            base = base.value
        if isinstance(base, ast.Name):
            self.names.read(base.id, self.bound)
            self.names.write(base.id, self.bound)
        else:
            self.visit(base)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.visit(node.value)
        else:
            self._store_through(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load):
            self.generic_visit(node)
        else:
            self._store_through(node)

    # -- statements whose value runs before the target is bound ------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.visit(target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            self.names.read(node.target.id, self.bound)
        self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self.visit(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.visit(node.target)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.visit(node.target)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                self.names.write((alias.asname or alias.name).split(".")[0], self.bound)

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.names.write(node.name, self.bound)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        return

    visit_Nonlocal = visit_Global

    # -- nested scopes: only their free names matter here --------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in (*node.decorator_list, *_defaults(node.args)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in _defaults(node.args):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        for name in free_names(node):
            self.names.read(name, self.bound)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [d for d in (*args.defaults, *args.kw_defaults) if d is not None]


def free_names(node: ast.AST) -> list[str]:
    """Names a function, class, lambda or comprehension reads from its enclosing scope."""
    local: set[str] = set()
    loads: list[str] = []
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                local.add(arg.arg)
        body: Sequence[ast.AST] = node.body if isinstance(node.body, list) else [node.body]
    elif isinstance(node, ast.ClassDef):
        body = node.body
    else:  # comprehension: the first iterator belongs to the enclosing scope
        generators = node.generators  # type: ignore[attr-defined]
        body = [*_comprehension_parts(node), *generators[1:]]
        body = [*body, *generators[0].ifs]
        for gen in generators:
            _collect_stores(gen.target, local)
    declared_global: set[str] = set()
    for child in body:
        _collect(child, local, loads, declared_global)
    return [name for name in dict.fromkeys(loads) if name not in local or name in declared_global]


def _comprehension_parts(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.DictComp):
        return [node.key, node.value]
    return [node.elt]  # type: ignore[attr-defined]


def _collect_stores(target: ast.AST, local: set[str]) -> None:
    for sub in ast.walk(target):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            local.add(sub.id)


def _collect(node: ast.AST, local: set[str], loads: list[str], declared_global: set[str]) -> None:
    """Gather one scope's bindings and loads; nested scopes add only their free names."""
    if isinstance(node, ast.Global):
        declared_global.update(node.names)
        return
    if isinstance(node, ast.Name):
        (loads.append if isinstance(node.ctx, ast.Load) else local.add)(node.id)
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        local.add(node.name)
        for expr in node.decorator_list:
            _collect(expr, local, loads, declared_global)
        if not isinstance(node, ast.ClassDef):
            for expr in _defaults(node.args):
                _collect(expr, local, loads, declared_global)
        loads.extend(free_names(node))
        return
    if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        if not isinstance(node, ast.Lambda):
            _collect(node.generators[0].iter, local, loads, declared_global)
        loads.extend(free_names(node))
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        local.update((a.asname or a.name).split(".")[0] for a in node.names)
        return
    if isinstance(node, ast.ExceptHandler) and node.name:
        local.add(node.name)
    for child in ast.iter_child_nodes(node):
        _collect(child, local, loads, declared_global)


def scan(statements: Iterable[ast.stmt], bound: set[str] | None = None) -> Names:
    """Reads and writes of module-level ``statements`` run in order (``bound``: already set)."""
    names = Names()
    scanner = _Scanner(names, set() if bound is None else bound)
    for stmt in statements:
        scanner.visit(stmt)
    return names


def topological_order(order: Sequence[str], depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """Stable topological sort: keeps notebook order wherever dependencies allow it."""
    position = {name: i for i, name in enumerate(order)}
    remaining = {name: set(depends_on.get(name, ())) for name in order}
    result: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise CycleError(f"steps depend on each other in a cycle: {_cycle(remaining)}")
        first = min(ready, key=position.__getitem__)
        result.append(first)
        del remaining[first]
        for deps in remaining.values():
            deps.discard(first)
    return result


def _cycle(remaining: Mapping[str, set[str]]) -> str:
    """Name one cycle, e.g. ``a -> b -> a``, so the user knows which marker to change."""
    start = min(remaining)
    path = [start]
    while True:
        step = min(remaining[path[-1]])
        if step in path:
            loop = [*path[path.index(step) :], step]
            return " -> ".join(loop) + " (remove an after: marker or a data dependency)"
        path.append(step)
