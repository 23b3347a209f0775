"""The pipeline a notebook describes: its code cells, its steps, and the Pipeline holding both.

Plain values filled in by dsops_jupyter.notebook; the converter, the runs and the adapters read
them. ``cells`` fields are 0-based indices into the notebook's cell list; labels count from 1.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsops_jupyter.errors import UnknownStepError
from dsops_jupyter.params import Parameter


@dataclass
class Cell:
    """One code cell as dsops sees it: its role and its Python code (markers and magics handled)."""

    index: int
    source: str
    tags: tuple[str, ...]
    role: str  # step | continue | parameters | skip | shared | metrics | injected
    step: str | None = None
    after: list[str] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    code: str = ""
    unsupported: list[str] = field(default_factory=list)  # magics plain Python cannot run
    tree: ast.Module | None = None
    kept: list[ast.stmt] = field(default_factory=list)  # run in the step (first: re-bound defs)
    hoisted: list[ast.stmt] = field(default_factory=list)  # statements moved to module level
    computes: list[str] = field(default_factory=list)  # parameters cell: names its code binds
    magic_code: str | None = None  # code in the step with --keep-magics, when it differs

    @property
    def in_step(self) -> bool:
        """Its code runs inside a step (a parameters cell only for its computed lines)."""
        return self.role in ("step", "continue", "metrics") or bool(self.computes)

    @property
    def label(self) -> str:
        return f"cell {self.index + 1}"

    @property
    def statements(self) -> list[ast.stmt]:
        """Its top-level statements: every cell a pipeline runs is parsed (skipped ones are not)."""
        assert self.tree is not None, f"{self.label} is skipped, never parsed"
        return self.tree.body


@dataclass
class Step:
    """One step: its cells, the names it reads and writes, the steps it runs after."""

    name: str
    cells: list[int] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    extras: dict[str, list[str]] = field(default_factory=dict)
    body: list[tuple[int, str]] = field(default_factory=list)  # (cell index, code) kept in the step
    magic_body: list[tuple[int, str]] = field(default_factory=list)  # the same, --keep-magics
    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    inputs: list[tuple[str, str | None]] = field(default_factory=list)  # (name, step or None=param)
    outputs: list[str] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    # (cell index, step that defines it, code): definitions this step runs again, see hoist
    rebound: list[tuple[int, str, str]] = field(default_factory=list)
    # (cell index, step, code): process set-up of earlier steps, rerun when this step runs alone
    replays: list[tuple[int, str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cells": self.cells,
            "after": self.after,
            "inferred": self.inferred,
            "depends_on": self.depends_on,
            "reads": self.reads,
            "writes": self.writes,
            "inputs": [name for name, _ in self.inputs],
            "outputs": self.outputs,
            "parameters": self.parameters,
            "extras": self.extras,
        }


@dataclass
class Pipeline:
    """A notebook read as steps (in run order), parameters, and code hoisted to module level."""

    name: str
    notebook_path: Path
    cells: list[Cell]
    steps: list[Step]  # in run order
    parameters: list[Parameter]
    content_hash: str
    hoisted: list[tuple[int, str]]  # (cell index, code) placed at module level, imports first
    module_names: set[str] = field(default_factory=set)  # names the hoisted code defines
    computed: list[str] = field(default_factory=list)  # bound by code in the parameters cell
    notes: list[str] = field(default_factory=list)  # what dsops leaves out, said once
    warnings: list[str] = field(default_factory=list)
    free_reads: set[str] = field(default_factory=set)  # names any code reads before binding
    bound_names: set[str] = field(default_factory=set)  # names any code binds
    # lines that drive dsops itself, left out: {cell (0-based), line (1-based), text}
    interactive: list[dict[str, Any]] = field(default_factory=list)

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        known = ", ".join(s.name for s in self.steps)
        raise UnknownStepError(f"{self.notebook_path.name} has no step {name!r} (steps: {known})")

    def upstream(self, names: list[str]) -> list[str]:
        """The chosen steps plus every step they need, in run order."""
        wanted: set[str] = set()
        pending = [self.step(name).name for name in names]
        while pending:
            name = pending.pop()
            if name not in wanted:
                wanted.add(name)
                pending.extend(self.step(name).depends_on)
        return [s.name for s in self.steps if s.name in wanted]

    def edges(self) -> list[dict[str, Any]]:
        """The step graph: per dependency of a step, a ``data`` edge labelled with the names
        the target receives from the source (what the script passes; a name the target binds
        before reading, a loop variable or a figure it makes itself is not received), else an
        ``after`` edge (an ``after:`` marker, or a definition of the source the target uses)."""
        found = []
        for step in self.steps:
            for source in step.depends_on:
                names = [name for name, origin in step.inputs if origin == source]
                kind = "data" if names else "after"
                found.append({"source": source, "target": step.name, "kind": kind, "names": names})
        return found

    @property
    def skipped_cells(self) -> list[int]:
        return [c.index for c in self.cells if c.role in ("skip", "injected")]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "notebook": self.notebook_path.name,
            "content_hash": self.content_hash,
            "steps": [step.to_json() for step in self.steps],
            "edges": self.edges(),
            "parameters": [p.to_json() for p in self.parameters],
            "computed": self.computed,
            "notes": self.notes,
            "shared_cells": sorted({index for index, _ in self.hoisted}),
            "skipped_cells": self.skipped_cells,
            "warnings": self.warnings,
            "interactive": self.interactive,
        }
