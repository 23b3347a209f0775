"""What a scan works with: the Names code reads and binds, the Context scans share, free names.

Plain values and scope rules only; the scan itself is dsops_jupyter.flow's, the in-place
changes dsops_jupyter.mutation's.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__"}
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


@dataclass(frozen=True)
class Summary:
    """What calling a function or class defined in the notebook may change."""

    positional: tuple[str, ...] = ()  # parameters that take positional arguments, in order
    parameters: frozenset[str] = frozenset()  # every parameter name
    vararg: str | None = None
    kwarg: str | None = None
    mutated: tuple[str, ...] = ()  # parameters and notebook names changed in place, in order


@dataclass
class Context:
    """What scans in notebook order share: imported names and the notebook's own callables."""

    modules: set[str] = field(default_factory=set)  # bound by import: never passed on
    functions: dict[str, Definition] = field(default_factory=dict)
    summaries: dict[int, Summary] = field(default_factory=dict)  # by id of the definition


@dataclass
class Names:
    """Names read before being bound (``reads``) and names bound or changed (``writes``).

    ``binds`` are the names bound (assigned, imported, defined, deleted), ``mutated`` the names
    whose earlier value may be changed in place; ``writes`` holds both, first-seen order.
    """

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    mutated: list[str] = field(default_factory=list)

    def read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in self.reads:
            self.reads.append(name)

    def write(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        for found in (self.writes, self.binds):
            if name not in found:
                found.append(name)

    def mutate(self, name: str) -> None:
        """The value ``name`` held when this code started may be changed in place."""
        if name not in self.reads:  # not a value from outside (a comprehension's own name)
            return
        for found in (self.writes, self.mutated):
            if name not in found:
                found.append(name)


def defaults(args: ast.arguments) -> list[ast.expr]:
    return [d for d in (*args.defaults, *args.kw_defaults) if d is not None]


Comprehension = ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef | Comprehension


def free_names(node: Scope) -> list[str]:
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
        generators = node.generators
        body = [*comprehension_parts(node), *generators[1:]]
        body = [*body, *generators[0].ifs]
        for gen in generators:
            _collect_stores(gen.target, local)
    declared_global: set[str] = set()
    for child in body:
        _collect(child, local, loads, declared_global)
    return [name for name in dict.fromkeys(loads) if name not in local or name in declared_global]


def comprehension_parts(node: Comprehension) -> list[ast.expr]:
    if isinstance(node, ast.DictComp):
        return [node.key, node.value]
    return [node.elt]


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
            for expr in defaults(node.args):
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
