"""Data flow between steps: which names a block of code reads and writes, and a DAG order.

The analysis is static (ast), in statement order, so ``x = x + 1`` reads ``x`` from an earlier
step and writes it back. A step that may change, in place, a value it reads writes that name
too; which code does is dsops_jupyter.mutation's rule, applied by the same scan.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping, Sequence

from dsops_jupyter.errors import CycleError
from dsops_jupyter.mutation import MutationTracker
from dsops_jupyter.scopes import (
    Comprehension,
    Context,
    Definition,
    Names,
    Summary,
    defaults,
    free_names,
)


class _Scanner(MutationTracker, ast.NodeVisitor):
    """Walks module-level statements in execution order; nested scopes contribute free names."""

    def _summarise(self, node: Definition) -> Summary:
        return summarise(node, self.context)

    # -- plain names ------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.names.read(node.id, self.bound)
        else:
            self.names.write(node.id, self.bound)
            self.aliases.pop(node.id, None)

    def _store_through(self, node: ast.Attribute | ast.Subscript) -> None:
        """``a.b = v`` / ``a[k] = v`` / ``del a[k]`` read ``a`` and change it in place."""
        if isinstance(node, ast.Subscript):
            self.visit(node.slice)
        self.visit(node.value)
        self._mutate(node.value)

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

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        self._call_mutations(node, discarded=False)

    def visit_Expr(self, node: ast.Expr) -> None:
        call = node.value.value if isinstance(node.value, ast.Await) else node.value
        if isinstance(call, ast.Call):
            self.generic_visit(call)
            self._call_mutations(call, discarded=True)
        else:
            self.visit(node.value)

    # -- statements whose value runs before the target is bound ------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        roots = self._roots(node.value)
        for target in node.targets:
            self.visit(target)
            self._alias(target, roots)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            roots = self._roots(node.target)
            self.names.read(node.target.id, self.bound)
            self._mutate(node.target)  # lists, arrays and frames add in place
            self.visit(node.target)
            self._alias(node.target, roots | self._roots(node.value))
        else:
            self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            roots = self._roots(node.value)
            self.visit(node.target)
            self._alias(node.target, roots)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        roots = self._roots(node.value)
        self.visit(node.target)
        self._alias(node.target, roots)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        roots = self._roots(node.iter)
        self.visit(node.target)
        self._alias(node.target, roots)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                roots = self._roots(item.context_expr)
                self.visit(item.optional_vars)
                self._alias(item.optional_vars, roots)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                name = (alias.asname or alias.name).split(".")[0]
                self.names.write(name, self.bound)
                self.context.modules.add(name)

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
        for expr in (*node.decorator_list, *defaults(node.args)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)
        self.aliases.pop(node.name, None)
        self.context.functions[node.name] = node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)
        self.aliases.pop(node.name, None)
        self.context.functions[node.name] = node

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in defaults(node.args):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)

    def _comprehension(self, node: Comprehension) -> None:
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        for name in free_names(node):
            self.names.read(name, self.bound)
        self._comprehension_mutations(node)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension


def summarise(node: Definition, context: Context) -> Summary:
    """What calling ``node`` may change: scan its body (a class: its ``__init__``)."""
    function: ast.FunctionDef | ast.AsyncFunctionDef
    if isinstance(node, ast.ClassDef):
        inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        if not inits:
            return Summary()
        function = inits[-1]
    else:
        function = node
    args = function.args
    positional = tuple(a.arg for a in (*args.posonlyargs, *args.args))
    everything = [*positional, *(a.arg for a in args.kwonlyargs)]
    vararg = args.vararg.arg if args.vararg else None
    kwarg = args.kwarg.arg if args.kwarg else None
    inner = Names()
    scope = Context(set(context.modules), dict(context.functions), context.summaries)
    scanner = _Scanner(inner, set(), scope)
    for stmt in function.body:
        scanner.visit(stmt)
    mutated = tuple(inner.mutated)
    if isinstance(node, ast.ClassDef) and positional:  # self is the new object
        mutated = tuple(name for name in mutated if name != positional[0])
        positional = positional[1:]
    names = {*everything, *(n for n in (vararg, kwarg) if n)}
    return Summary(positional, frozenset(names), vararg, kwarg, mutated)


def scan(
    statements: Iterable[ast.stmt],
    bound: set[str] | None = None,
    context: Context | None = None,
) -> Names:
    """Reads and writes of module-level ``statements`` run in order (``bound``: already set).

    ``context`` carries imports and notebook functions from code scanned before (notebook
    order); the scan adds the ones it finds.
    """
    names = Names()
    scanner = _Scanner(names, set() if bound is None else bound, context or Context())
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
