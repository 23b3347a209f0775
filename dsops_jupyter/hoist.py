"""Hoisting: which step code moves to module level, and what a step runs again when alone.

Notebook order is the truth (see dsops_jupyter.order): an import or def/class moves only when
running it first provably changes nothing. What stays in a step but a later step needs (a
definition, a change to the process such as ``sys.path``) that later step runs again, so each
step also works alone in a fresh process.
"""

from __future__ import annotations

import ast
from collections import Counter

from dsops_jupyter import flow, ipysyntax, order
from dsops_jupyter.markers import without_marker
from dsops_jupyter.pipeline import Cell, Step
from dsops_jupyter.scopes import BUILTINS


def hoist(cells: list[Cell], steps: list[Step]) -> tuple[list[tuple[int, str]], set[str]]:
    """Move what is provably order-independent to module level; the rest stays in its step.

    Shared cells (Kale's ``imports``/``functions``) run at module level as Kale runs them. From
    step cells only imports and def/class statements that ``_movable`` proves may run first
    move. A function or import left in a step that a later step uses is run again there
    (``_rebind_definitions``), so each step, alone in its own process, has it too.
    """
    by_index = {c.index: c for c in cells}
    in_steps = {i for step in steps for i in step.cells}
    running = [c for c in cells if c.role in ("shared", "parameters") or c.index in in_steps]
    statements = [n for c in running for n in c.statements]
    facts = {id(n): order.statement_facts(n) for n in statements}
    counts = order.binding_counts(statements, facts)
    hoist_ids = _movable(running, in_steps, counts, facts)
    module_names: set[str] = set()
    for cell in running:
        if cell.role == "shared":
            module_names.update(flow.scan(cell.statements).writes)
    import_code: list[tuple[int, str]] = []
    other_code: list[tuple[int, str]] = []
    original = {c.index: c.code for c in cells}
    for cell in cells:
        if cell.role == "shared":
            other_code.append((cell.index, cell.code))
            continue
        if not cell.in_step:
            continue
        kept, moved = _split_cell(cell, hoist_ids, cell.code)
        if not cell.computes and cell.code != without_marker(cell.source):
            with_magics = ipysyntax.translate(without_marker(cell.source)).kept
            if with_magics != cell.code:  # same lines, extension magics kept: split alike
                cell.magic_code = _split_cell(cell, hoist_ids, with_magics)[0]
        cell.kept = [n for n in cell.statements if id(n) not in hoist_ids]
        cell.hoisted = [node for node, _ in moved]
        for node, text in moved:
            module_names.update(flow.scan([node]).writes)
            target = import_code if isinstance(node, ast.Import | ast.ImportFrom) else other_code
            target.append((cell.index, text))
        cell.code = kept
    for step in steps:
        step.body = [(i, by_index[i].code) for i in step.cells]
        step.magic_body = [(i, by_index[i].magic_code or by_index[i].code) for i in step.cells]
    stable = {n for n, count in counts.items() if count == 1} | module_names | BUILTINS
    _rebind_definitions(steps, by_index, original, stable, facts)
    _replay_process_state(steps, by_index, original, module_names | BUILTINS)
    first_import: dict[str, tuple[int, str]] = {}  # an import written twice moves once
    for index, text in import_code:
        first_import.setdefault(text, (index, text))
    return [*first_import.values(), *other_code], module_names


def _movable(
    running: list[Cell], in_steps: set[int], counts: Counter[str], facts: dict[int, order.Facts]
) -> set[int]:
    """ids of the step statements that may run first, at module level, changing nothing.

    An import or def/class qualifies when every name it binds is bound by it alone in the
    notebook (identical imports count once), it sits alone on its lines, and:
    - an import of anything outside the standard library comes before every statement that may
      change what imports find (sys.path, cwd, environment, files, importlib, magics);
    - a def/class reads, when defined and when called, only builtins the notebook never
      rebinds and names that move too.
    Code that binds names invisibly (exec, globals(), magics) moves nothing but __future__.
    """
    statements = [(c, n) for c in running for n in c.statements]
    nodes = [n for _, n in statements]
    futures = {
        id(n)
        for c, n in statements
        if c.index in in_steps
        and isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and _alone_on_its_lines(n, c)
    }
    if any(facts[id(n)].dynamic for n in nodes):
        return futures
    barriers = order.ImportBarriers(nodes, facts)
    imports: dict[int, ast.Import | ast.ImportFrom] = {}
    blocked: set[str] = set()  # names of which some import must stay where it is
    after_barrier = False
    for cell, node in statements:
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [name for name, _ in order.import_bindings(node)]
            if (
                cell.index in in_steps
                and _alone_on_its_lines(node, cell)
                and (not after_barrier or order.imports_stdlib_only(node))
            ):
                imports[id(node)] = node
            else:
                blocked.update(names)
        after_barrier = after_barrier or barriers.is_barrier(node)
    moved = {
        key
        for key, node in imports.items()
        if all(counts[n] == 1 and n not in blocked for n, _ in order.import_bindings(node))
    }
    imported = {n for key in moved for n, _ in order.import_bindings(imports[key])}
    shared = {
        name
        for cell in running
        if cell.role == "shared"
        for name in flow.scan(cell.statements).writes
        if counts[name] == 1
    }
    candidates = {
        id(node): node
        for cell, node in statements
        if cell.index in in_steps
        and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and counts[node.name] == 1
        and _alone_on_its_lines(node, cell)
        and not barriers.is_barrier(node)
    }
    base = (BUILTINS | {"display"}) - set(counts) | imported | shared
    changed = True
    while changed:  # drop definitions that read step data, until nothing changes
        changed = False
        allowed = base | {n.name for n in candidates.values()}
        for key, node in list(candidates.items()):
            if not set(flow.scan([node]).reads) <= allowed:
                del candidates[key]
                changed = True
    return futures | moved | set(candidates)


def _rebind_definitions(
    steps: list[Step],
    by_index: dict[int, Cell],
    original: dict[int, str],
    stable: set[str],
    facts: dict[int, order.Facts],
) -> None:
    """A later step that uses a function or import another step defined runs it again itself.

    Pickle cannot carry a function defined in another process's ``__main__`` through the
    workdir, and the notebook's function reads its globals when called, not when defined. So
    the definition is run again at the top of the step that uses it: in a whole run and one
    step at a time alike it then sees the values this step sees, as the notebook's did. Only
    definitions that give the same result again qualify (``order.rebindable``); anything else
    is passed on as a value.
    """
    latest: dict[str, tuple[Step, Cell, ast.stmt]] = {}
    for step in steps:  # notebook order
        cells = [by_index[i] for i in step.cells]
        own = [n for c in cells for n in c.kept]
        copies: dict[int, tuple[Step, Cell, ast.stmt]] = {}
        while True:  # a copied function may need further definitions
            reads = flow.scan([n for _, _, n in copies.values()] + own).reads
            wanted = {id(latest[n][2]): latest[n] for n in reads if n in latest}
            if wanted.keys() <= copies.keys():
                break
            copies.update(wanted)
        ordered = sorted(copies.values(), key=lambda c: (c[1].index, c[2].lineno))
        step.rebound = [
            (cell.index, source.name, _statement_text(node, cell, original[cell.index]))
            for source, cell, node in ordered
        ]
        if cells and ordered:
            cells[0].kept[:0] = [node for _, _, node in ordered]
        for cell in cells:
            for node in cell.kept[len(ordered) if cell is cells[0] else 0 :]:
                rebinds = order.rebindable(node, stable)
                for name in facts[id(node)].bound | facts[id(node)].mutated:
                    if rebinds:
                        latest[name] = (step, cell, node)
                    else:
                        latest.pop(name, None)


def _replay_process_state(
    steps: list[Step], by_index: dict[int, Cell], original: dict[int, str], module: set[str]
) -> None:
    """What earlier steps did to the process (sys.path, cwd, environment, star imports) is done
    again when a step runs alone in a fresh process, so its imports, relative paths and names
    find what the notebook's did. Only statements reading module-level names qualify (they run
    before the step's inputs exist); a whole run never runs them twice."""
    statements = [n for c in by_index.values() if c.tree is not None for n in c.tree.body]
    aliases = order.import_aliases(statements)
    earlier: list[tuple[int, str, str]] = []
    for step in steps:  # notebook order
        step.replays = list(earlier)
        for index in step.cells:
            cell = by_index[index]
            for node in cell.kept:
                if order.is_star_import(node) or (
                    order.sets_process_state(node, aliases)
                    and set(flow.scan([node]).reads) <= module
                ):
                    text = _statement_text(node, cell, original[index])
                    earlier.append((index, step.name, text))


def _statement_text(node: ast.stmt, cell: Cell, code: str) -> str:
    """A top-level statement's own source lines (or its unparsed form if it shares a line)."""
    if not _alone_on_its_lines(node, cell):
        return ast.unparse(node)
    lines = code.split("\n")
    return "\n".join(lines[_first_line(node) - 1 : _last_line(node)])


def _alone_on_its_lines(node: ast.stmt, cell: Cell) -> bool:
    """A statement sharing a line with another (``import os; x = 1``) is left where it is."""
    start, end = _first_line(node), _last_line(node)
    for other in cell.statements:
        if other is not node and _first_line(other) <= end and _last_line(other) >= start:
            return False
    return True


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])


def _last_line(node: ast.stmt) -> int:
    return node.end_lineno or node.lineno  # always set by ast.parse


def _split_cell(
    cell: Cell, hoist_ids: set[int], code: str
) -> tuple[str, list[tuple[ast.stmt, str]]]:
    """Cut hoisted statements (whole lines of the cell's tree) out of ``code``."""
    lines = code.split("\n")
    moved: list[tuple[ast.stmt, str]] = []
    drop: set[int] = set()
    for node in cell.statements:
        if id(node) in hoist_ids:
            first, last = _first_line(node), _last_line(node)
            moved.append((node, "\n".join(lines[first - 1 : last])))
            drop.update(range(first - 1, last))
    kept = "\n".join(line for number, line in enumerate(lines) if number not in drop)
    return kept, moved
