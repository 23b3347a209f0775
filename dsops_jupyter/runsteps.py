"""A run's step outputs: saved in its run folder, restored from the step cache or a failed run.

The papermill engine asks a StepLedger, at each step's first cell, whether the step runs or is
restored, and after its last cell which names to save. The kernel does the saving and loading
with the one artifact implementation (``runtime/artifacts.py``, installed there as the module
``_dsops_artifacts``); this side decides, copies artifacts between folders, keeps the cache, and
says per step what happened, for the run record.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dsops_jupyter import cache
from dsops_jupyter.pipeline import Pipeline, Step
from dsops_jupyter.runtime import artifacts

ARTIFACTS = "artifacts"  # the run folder's workdir of step outputs
KERNEL_MODULE = "_dsops_artifacts"  # what _artifacts.py is called inside the kernel


@dataclass(frozen=True)
class Restore:
    """Where a step's outputs come from instead of running it, and what its cells then say."""

    source: Path  # a workdir holding the step's outputs (a cache entry, a failed run's)
    origin: str  # "cache" or "run"
    note: str
    key: str | None = None


@dataclass(frozen=True)
class Resumed:
    """A failed run being continued: its folder, parameters, steps, and the steps it restores."""

    run_dir: Path
    parameters: dict[str, Any]
    steps: list[str]
    restored: frozenset[str]

    @property
    def workdir(self) -> Path:
        return self.run_dir / ARTIFACTS


class StepLedger:
    """Per run: which steps are restored rather than executed, what each one saved, and the
    keys that let a later run restore it (the cache) or trust it (--resume, code keys)."""

    def __init__(
        self,
        pipeline: Pipeline,
        chosen: list[str],
        parameters: dict[str, Any],
        workdir: Path,
        *,
        step_cache: cache.StepCache | None = None,
        forced: tuple[str, ...] = (),
        resumed: Resumed | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.steps: dict[str, Step] = {s.name: s for s in pipeline.steps if s.name in chosen}
        self.parameters = parameters
        self.workdir = workdir
        self.cache = step_cache
        self.forced = downstream(pipeline, list(forced)) & set(chosen)
        self.resumed = resumed
        self.keys: dict[str, str] = {}  # step -> its cache key, once known
        self.marks: dict[str, dict[str, Any]] = {
            name: {
                "code_key": cache.code_key(pipeline, name),
                "key": None,
                "restored": None,
                "cached": False,
                "forced": name in self.forced,
                "artifacts": [],
                "unstorable": {},
            }
            for name in chosen
        }
        self.why: dict[str, dict[str, Any]] = {}  # step -> its key's parts, kept with an entry
        self.warnings: list[str] = []
        self.lock: Future[str] | None = None

    def prepare(self, pool: Executor) -> None:
        """Resolve the lock (the slow part of every key, ~1 s) in ``pool`` while the kernel
        runs the set-up cells, so the first step's key does not wait for it."""
        if self.cache is not None and self.lock is None:
            self.lock = pool.submit(cache.lock_sha256, self.pipeline)

    def begin(self, step: str) -> Restore | None:
        """Called at the step's first cell: a Restore when its outputs need not be computed
        (its outputs are then already copied into this run's workdir), None to execute it."""
        if self.resumed is not None and step in self.resumed.restored:
            when = self.resumed.run_dir.name
            note = f"[dsops] step {step!r} restored from run {when}: not executed"
            return self._restore(step, Restore(self.resumed.workdir, "run", note))
        if self.cache is None:
            return None
        keyed = self._key(step)
        if keyed is None:
            return None
        key, self.why[step] = keyed
        self.keys[step] = self.marks[step]["key"] = key
        restorable = step not in self.forced and cache.restores(self.steps[step])
        found = self.cache.lookup(key) if restorable else None
        if found is None:
            return None
        record = self.cache.entry(key) or {}
        stored = _when(record.get("created"))
        note = f"[dsops] step {step!r} restored from cache (key {key[:12]}, stored {stored})"
        return self._restore(step, Restore(found, "cache", note, key))

    def restore_code(self, step: str) -> str:
        """Kernel code for a restored step: the imports and definitions later steps need from
        it (what the script hoists or runs again), then its outputs loaded into the namespace."""
        definitions = step_definitions(self.pipeline, step)
        module, folder = _kernel_names(self.workdir)
        loads = [f"{name} = {module}.load({folder}, {name!r})" for name in self.steps[step].outputs]
        return "\n\n".join([*definitions, "\n".join(loads)])

    def save_expressions(self, step: str) -> dict[str, str]:
        """Kernel expressions saving each output of an executed step (name -> expression)."""
        module, folder = _kernel_names(self.workdir)
        return {
            name: f"{module}.save({folder}, {name!r}, globals()[{name!r}], {step!r})"
            for name in self.steps[step].outputs
        }

    def saved(self, step: str, results: dict[str, dict[str, Any]]) -> None:
        """The kernel's answers to ``save_expressions``; a value that could not be stored is one
        warning, and the step is then never cached (and --resume restarts no later than it)."""
        marks = self.marks[step]
        for name, result in results.items():
            if result.get("status") == "ok":
                marks["artifacts"].append(name)
                continue
            if result.get("ename") == "KeyError":
                reason = f"step {step!r} did not bind {name!r}"
            else:
                reason = str(result.get("evalue") or result.get("ename") or "not stored")
            marks["unstorable"][name] = reason
            self.warnings.append(
                f"step {step!r}: {reason}; the step is never cached and --resume restarts "
                f"no later than it"
            )
        key = marks["key"]
        if self.cache is not None and key is not None and not marks["unstorable"]:
            self.cache.store(key, step, self.workdir, marks["artifacts"], self.why[step])

    def _restore(self, step: str, restore: Restore) -> Restore | None:
        """Copy the step's outputs into this run's workdir; a cache entry that fails its hash
        check is a warning and the step runs (a failed run's artifacts were checked before)."""
        try:
            for name in self.steps[step].outputs:
                artifacts.copy(restore.source, self.workdir, name)
        except artifacts.ArtifactError as err:
            if restore.origin == "run":
                raise
            self.warnings.append(f"cache entry of step {step!r} not used: {err}")
            return None
        marks = self.marks[step]
        marks.update(restored=restore.origin, cached=restore.origin == "cache")
        marks["artifacts"] = list(self.steps[step].outputs)
        return restore

    def _key(self, step: str) -> tuple[str, dict[str, Any]] | None:
        """The step's cache key and its parts; None when an input has no artifact (it could
        not be stored) or a step it runs after without reading from it has no key."""
        if self.lock is not None:
            self.lock.result()  # cache.lock_sha256 then answers from its memo
        entries = artifacts.entries(self.workdir) if self.workdir.is_dir() else {}
        this = self.steps[step]
        sources = {source for _, source in this.inputs}
        if any(name not in entries for name, source in this.inputs if source is not None):
            return None
        if any(name not in self.keys for name in this.depends_on if name not in sources):
            return None
        return cache.workdir_key(self.pipeline, step, self.parameters, self.workdir, self.keys)


def downstream(pipeline: Pipeline, names: list[str]) -> set[str]:
    """The named steps and every step that depends on them, directly or not."""
    found = {pipeline.step(name).name for name in names}
    for step in pipeline.steps:  # run order: a step's dependencies come before it
        if found & set(step.depends_on):
            found.add(step.name)
    return found


def step_definitions(pipeline: Pipeline, name: str) -> list[str]:
    """Code of step ``name`` that later steps rely on having run: its hoisted imports and
    definitions, the definitions later steps run again (hoist's ``rebound``) and the process
    set-up they replay, in notebook order."""
    step = pipeline.step(name)
    own = set(step.cells)
    found = [(index, code) for index, code in pipeline.hoisted if index in own]
    for later in pipeline.steps:
        found += [(index, code) for index, source, code in later.rebound if source == name]
        found += [(index, code) for index, source, code in later.replays if source == name]
    unique = dict.fromkeys(code for _, code in sorted(found, key=lambda item: item[0]))
    return list(unique)


def _kernel_names(workdir: Path) -> tuple[str, str]:
    """How kernel code names the artifact module and the workdir, binding no user name."""
    return f"__import__({KERNEL_MODULE!r})", f"__import__('pathlib').Path({str(workdir)!r})"


def _when(created: object) -> str:
    if not isinstance(created, int | float):
        return "at an unknown time"
    return datetime.fromtimestamp(created, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
