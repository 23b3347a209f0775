"""The package's layout rules (issue 11), read from the source with ``ast``, importing nothing.

1. The import graph of ``dsops_jupyter`` has no cycle.
2. The core imports none of IPython, tornado, jupyter_server and ipywidgets, and no adapter.
3. Every module has at most 500 lines.
4. Every module's docstring starts with a one-line purpose.

What counts as an import: every ``import``/``from ... import`` anywhere in a module, inside
functions too (a lazy import that dodges a cycle is still a cycle), except under
``if TYPE_CHECKING:`` (never run). An import names one module: ``from dsops_jupyter.x import y``
names ``dsops_jupyter.x.y`` when that is a module of the package, else ``dsops_jupyter.x``. The
package ``__init__`` files Python runs on the way to a submodule are not edges: the graph is
what each module names.

Adapters: cli.py, magics.py, __main__.py and server/ render the core for one surface, so they
may import those libraries. The Jupyter hooks in __init__.py (``HOOKS``) are adapter entry
points too: Jupyter and IPython call them, importing the package never runs them. They are a
graph node of their own, ``dsops_jupyter:hooks``, which nothing imports; the rest of
__init__.py is core. Everything else is core.

One exception to rule 2, and only in ipysyntax.py: ``IPython.core.inputtransformer2``, IPython's
own reader of IPython syntax (a pure text-to-text function: no shell, kernel or display),
imported only for a cell that does not parse as Python. Reading ``%magic`` and ``!shell``
lines exactly as the kernel does is the converter's job; a copy of that grammar would drift.
"""

from __future__ import annotations

import ast
import itertools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "dsops_jupyter"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
MAX_LINES = 500
# The Jupyter hooks of __init__.py, and the graph node their imports belong to.
HOOKS = {
    "load_ipython_extension",
    "_jupyter_server_extension_points",
    "_jupyter_labextension_paths",
}
HOOK_NODE = f"{PACKAGE}:hooks"
ADAPTERS = {f"{PACKAGE}.cli", f"{PACKAGE}.magics", f"{PACKAGE}.__main__", HOOK_NODE}
ADAPTER_PACKAGES = (f"{PACKAGE}.server",)
INTERACTIVE_OR_WEB = ("IPython", "tornado", "jupyter_server", "ipywidgets")
ALLOWED_IN_CORE = {(f"{PACKAGE}.ipysyntax", "IPython.core.inputtransformer2")}


@dataclass
class Import:
    """One import statement's target, where it is written."""

    target: str  # a module of the package, or the dotted name of an outside module
    path: Path
    line: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT.parent)}:{self.line}"


@dataclass
class Module:
    """One module of the package, parsed, with its imports by graph node."""

    name: str
    path: Path
    source: str
    tree: ast.Module
    imports: dict[str, list[Import]] = field(default_factory=dict)  # graph node -> its imports


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = _module_name(path)
        found[name] = Module(name, path, source, ast.parse(source, str(path)))
    for module in found.values():
        module.imports = _imports(module, set(found))
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: Module, known: set[str]) -> list[str]:
    """The modules one import statement names (package modules resolved as the docstring says)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's own package upwards
        package = module.name.split(".")
        if module.path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - node.level + 1]
        base = ".".join([*package, base] if base else package)
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names
    ]


def _imports(module: Module, known: set[str]) -> dict[str, list[Import]]:
    """Every import the module makes, by graph node (the hooks of __init__.py apart)."""
    by_node: dict[str, list[Import]] = {module.name: []}

    def visit(node: ast.AST, owner: str) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child, owner)
            return
        if (
            module.name == PACKAGE
            and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name in HOOKS
        ):
            owner = HOOK_NODE
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in _targets(node, module, known):
                by_node.setdefault(owner, []).append(Import(target, module.path, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, owner)

    visit(module.tree, module.name)
    return by_node


def _graph(modules: dict[str, Module]) -> dict[str, dict[str, Import]]:
    """node -> {package module it imports -> the first such import}."""
    graph: dict[str, dict[str, Import]] = {}
    for module in modules.values():
        for node, imports in module.imports.items():
            edges = graph.setdefault(node, {})
            for found in imports:
                if found.target in modules and found.target != node:
                    edges.setdefault(found.target, found)
    return graph


def _strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's components with more than one node, each sorted (iterative: no recursion)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def _shortest_cycle(graph: dict[str, dict[str, Import]], component: list[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth first)."""
    start = component[0]
    members = set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, {})):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child in members and child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def _is_adapter(node: str) -> bool:
    return node in ADAPTERS or any(_in_package(node, package) for package in ADAPTER_PACKAGES)


def _in_package(name: str, top: str) -> bool:
    return name == top or name.startswith(f"{top}.")


def _report(title: str, problems: list[str]) -> str:
    return "\n".join([f"{title}:", *problems])


def test_import_graph_is_acyclic() -> None:
    graph = _graph(_modules())
    cycles = []
    for component in _strongly_connected(graph):
        path = _shortest_cycle(graph, component)
        steps = [f"    {graph[a][b].where} imports {b}" for a, b in itertools.pairwise(path)]
        cycles.append("\n".join([" -> ".join(path), *steps]))
    assert not cycles, _report("import cycles (lazy imports count)", cycles)


def _forbidden_in_core(node: str, target: str, modules: dict[str, Module]) -> bool:
    if target in modules:
        return _is_adapter(target)
    library = any(_in_package(target, name) for name in INTERACTIVE_OR_WEB)
    return library and (node, target) not in ALLOWED_IN_CORE


def test_core_imports_no_interactive_or_web_code_and_no_adapter() -> None:
    modules = _modules()
    problems = [
        f"{found.where}: core module {node} imports {found.target}"
        for module in modules.values()
        for node, imports in module.imports.items()
        if not _is_adapter(node)
        for found in imports
        if _forbidden_in_core(node, found.target, modules)
    ]
    assert not problems, _report("the core runs without Jupyter's shell, server, widgets", problems)


def test_modules_are_at_most_500_lines() -> None:
    long = [
        f"{m.path.relative_to(ROOT.parent)}: {len(m.source.splitlines())} lines"
        for m in _modules().values()
        if len(m.source.splitlines()) > MAX_LINES
    ]
    assert not long, _report(f"modules over {MAX_LINES} lines (split them by concern)", long)


def test_every_module_starts_with_a_one_line_purpose() -> None:
    problems = []
    for module in _modules().values():
        where = module.path.relative_to(ROOT.parent)
        docstring = ast.get_docstring(module.tree, clean=False)
        if not docstring or not docstring.strip():
            problems.append(f"{where}: no module docstring")
            continue
        lines = docstring.split("\n")
        if not lines[0].strip():
            problems.append(f"{where}:1: the docstring's first line is empty")
        elif len(lines) > 1 and lines[1].strip():
            problems.append(
                f"{where}:2: the purpose runs on past the first line: {lines[0].strip()!r}"
            )
    assert not problems, _report("a module's docstring opens with its purpose, one line", problems)
