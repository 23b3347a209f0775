"""The step cache: keys of a step's work, a store of its outputs under .dsops/cache, freshness.

A step's key hashes what decides its outputs: its code (comments and blank lines do not count),
the hoisted code it uses, the lock, the values of the parameters it reads and its inputs'
sha256. An entry is a folder named by the key holding the step's output artifacts (the
``runtime.artifacts`` layout) and ``entry.json``, which keeps the key's parts so a stale step
can say why it is stale. The key function lives in ``runtime.stepcache`` so scripts agree.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsops_jupyter import dotdsops, flow
from dsops_jupyter.config import load_config
from dsops_jupyter.fsutil import read_json_object
from dsops_jupyter.pipeline import Pipeline, Step
from dsops_jupyter.runtime import artifacts, stepcache

CACHE_FOLDER = Path(dotdsops.FOLDER) / "cache"
ENTRY_FILE = stepcache.ENTRY_FILE
AFTER_PREFIX = "after:"  # input_hashes key of a step run after, not read from: its step key


# --- keys --------------------------------------------------------------------------------------
def code_key(pipeline: Pipeline, step_name: str) -> str:
    """sha256 of the step's normalised code, its interface and the hoisted code it uses."""
    step = pipeline.step(step_name)
    own = [c for *_, c in step.replays] + [c for *_, c in step.rebound] + [c for _, c in step.body]
    parts = {
        "step": step.name,
        "inputs": [name for name, _ in step.inputs],
        "outputs": step.outputs,
        "code": [_normalised(code) for code in own],
        "hoisted": [_normalised(code) for code in _hoisted_used(pipeline, own)],
    }
    return _sha256(json.dumps(parts, sort_keys=True))


def script_table(pipeline: Pipeline) -> str:
    """The generated script's STEP_CACHE: each step's code key and the steps it runs after
    without reading from them, so its --cache computes the keys ``freshness`` does."""
    rows = []
    for step in pipeline.steps:
        after = only_after(step)
        rows.append(f"    {step.name!r}: ({code_key(pipeline, step.name)!r}, {after!r}),")
    return (
        "\n\n# Each step's code key (its normalised code and the module-level code it uses) and\n"
        "# the steps it runs after without reading from them. Used by --cache DIR.\n"
        "STEP_CACHE = {\n" + "\n".join(rows) + "\n}\n"
    )


def _normalised(code: str) -> str:
    """The code's syntax tree: comments, blank lines and layout do not count, strings do."""
    try:
        return ast.dump(ast.parse(code))
    except SyntaxError:  # not Python (a magic kept as is): its non-blank lines
        return "\n".join(line.rstrip() for line in code.splitlines() if line.strip())


def _hoisted_used(pipeline: Pipeline, own: list[str]) -> list[str]:
    """Module-level statements the step's code reads, through the definitions they read; the
    ones binding nothing (a side effect of a shared cell) always count."""
    statements = [node for _, code in pipeline.hoisted for node in _parse(code)]
    wanted = set(flow.scan([node for code in own for node in _parse(code)]).reads)
    used: dict[int, ast.stmt] = {}
    changed = True
    while changed:
        changed = False
        for node in statements:
            names = flow.scan([node])
            if id(node) not in used and (not names.binds or wanted & set(names.binds)):
                used[id(node)] = node
                wanted.update(names.reads)
                changed = True
    return [ast.unparse(node) for node in statements if id(node) in used]


def _parse(code: str) -> list[ast.stmt]:
    try:
        return ast.parse(code).body
    except SyntaxError:
        return []


_LOCKS: dict[tuple[str, tuple[str, ...]], str] = {}  # (interpreter, imports) -> lock sha256


def lock_sha256(pipeline: Pipeline) -> str:
    """sha256 of the requirements.lock the notebook would get; resolved once per process."""
    from dsops_jupyter.lock import imported_modules, kernel_interpreter, lock_for

    python = kernel_interpreter(pipeline.notebook_path)
    memo = (python, tuple(imported_modules(pipeline)))
    if memo not in _LOCKS:
        _LOCKS[memo] = _sha256(lock_for(pipeline, python).render())
    return _LOCKS[memo]


def static_key(pipeline: Pipeline, step_name: str) -> str:
    """The part of a step's key known before running: code, hoisted code used, lock."""
    return stepcache.static_of(code_key(pipeline, step_name), lock_sha256(pipeline))


def step_key(static: str, parameters: dict[str, object], input_hashes: dict[str, str]) -> str:
    """The step's whole key (see ``stepcache.step_key``, the one implementation)."""
    return stepcache.step_key(static, parameters, input_hashes)


def parameters_read(step: Step, values: dict[str, Any]) -> dict[str, Any]:
    """The values of the parameters ``step`` reads, from every parameter's value."""
    return {name: values[name] for name in step.parameters if name in values}


def why_parts(
    pipeline: Pipeline, step_name: str, parameters: dict[str, Any], input_hashes: dict[str, str]
) -> dict[str, Any]:
    """The key's parts, as ``store`` keeps them to explain a later miss."""
    step = pipeline.step(step_name)
    read = parameters_read(step, parameters)
    sources = {name: source for name, source in step.inputs if source is not None}
    sources.update({key: key[len(AFTER_PREFIX) :] for key in input_hashes if key not in sources})
    return {
        "notebook": notebook_id(pipeline.notebook_path),
        "step": step.name,
        "code": code_key(pipeline, step_name),
        "lock": lock_sha256(pipeline),
        "parameters": {name: stepcache.canonical(value) for name, value in read.items()},
        "inputs": dict(input_hashes),
        "sources": sources,
    }


def key_of(why: dict[str, Any], parameters: dict[str, Any]) -> str:
    """The step key of ``why_parts`` (``parameters``: the values the step reads)."""
    return step_key(stepcache.static_of(why["code"], why["lock"]), parameters, why["inputs"])


def notebook_id(path: Path) -> str:
    """A notebook as the cache names it: relative to its repository (else its folder)."""
    base = _base_folder(path)
    return Path(os.path.abspath(path)).relative_to(base).as_posix()


def _sha256(data: str | bytes) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


# --- the store ---------------------------------------------------------------------------------
class StepCache:
    """Entries under ``root``: ``entries/<key>/`` (artifacts + entry.json), ``last/`` (the last
    key of each notebook step, for the why of a miss) and ``partial/`` (stores in progress)."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = Path(root)
        self.limit_bytes = limit_bytes

    def lookup(self, key: str) -> Path | None:
        """The entry's folder (a workdir of the step's outputs), marked as just used."""
        folder = self.root / stepcache.CACHE_ENTRIES / key
        try:
            os.utime(folder / ENTRY_FILE)
        except OSError:
            return None
        return folder

    def entry(self, key: str) -> dict[str, Any] | None:
        """The entry's record, without marking it used."""
        return read_json_object(self.root / stepcache.CACHE_ENTRIES / key / ENTRY_FILE)

    def last(self, notebook: str, step: str) -> dict[str, Any] | None:
        """The record of the last entry stored for this notebook's step."""
        return read_json_object(self._last_path(notebook, step))

    def _last_path(self, notebook: str, step: str) -> Path:
        return self.root / "last" / f"{_sha256(json.dumps([notebook, step]))}.json"

    def store(
        self, key: str, step: str, workdir: Path, outputs: list[str], why: dict[str, Any]
    ) -> None:
        """Copy the step's outputs from ``workdir`` into a new entry (atomic: two runs storing
        one key, one wins), remember it as the step's last, then prune to the limit."""
        self._create()
        record = stepcache.store_entry(self.root, key, workdir, outputs, {**why, "step": step})
        self._remember(record)
        self.prune()

    def _remember(self, record: dict[str, Any]) -> None:
        path = self._last_path(record.get("notebook", ""), record["step"])
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        partial.write_text(json.dumps(record, sort_keys=True))
        os.replace(partial, path)

    def _create(self) -> None:
        if not self.root.is_dir():
            dotdsops.prepare(self.root)  # .dsops/ ignores itself in Git

    def entries(self) -> list[dict[str, Any]]:
        """Every entry's record, least recently used first (``used``: its last use)."""
        found = []
        for folder in _children(self.root / stepcache.CACHE_ENTRIES):
            record = read_json_object(folder / ENTRY_FILE)
            if record is not None:
                record["used"] = (folder / ENTRY_FILE).stat().st_mtime
                record["path"] = str(folder)
                found.append(record)
        return sorted(found, key=lambda r: (r["used"], r["key"]))

    def size(self) -> int:
        return sum(int(record.get("size", 0)) for record in self.entries())

    def prune(self, limit_bytes: int | None = None) -> list[dict[str, Any]]:
        """Remove least recently used entries until the rest fits the limit; the removed."""
        limit = self.limit_bytes if limit_bytes is None else limit_bytes
        records = self.entries()
        total = sum(int(r.get("size", 0)) for r in records)
        removed = []
        for record in records:
            if total <= limit:
                break
            if _remove(Path(record["path"]), self.root / "partial"):
                removed.append(record)
            total -= int(record.get("size", 0))
        return removed

    def clear(self) -> list[dict[str, Any]]:
        """Remove every entry (and the last-key index); the removed."""
        removed = self.prune(limit_bytes=-1)
        shutil.rmtree(self.root / "last", ignore_errors=True)
        shutil.rmtree(self.root / "partial", ignore_errors=True)
        return removed


def _remove(folder: Path, trash: Path) -> bool:
    """Move the folder aside (atomic: a concurrent prune loses the race), then delete it."""
    trash.mkdir(parents=True, exist_ok=True)
    aside = trash / f"removed-{uuid.uuid4().hex}"
    try:
        os.rename(folder, aside)
    except FileNotFoundError:
        return False
    shutil.rmtree(aside, ignore_errors=True)
    return True


def _children(folder: Path) -> list[Path]:
    try:
        return [child for child in folder.iterdir() if child.is_dir()]
    except FileNotFoundError:
        return []


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _git_top(path: Path) -> Path | None:
    start = Path(os.path.abspath(path))
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _base_folder(path: Path) -> Path:
    """The repository's top, else the notebook's folder (or the folder given)."""
    top = _git_top(path)
    if top is not None:
        return top
    path = Path(os.path.abspath(path))
    return path if path.is_dir() else path.parent


def open_cache(notebook_path: Path) -> StepCache:
    """The step cache of the repository holding the notebook (or folder): ``<repo>/.dsops/cache``;
    outside a Git repository, ``.dsops/cache`` next to the notebook."""
    base = _base_folder(Path(notebook_path))
    return StepCache(base / CACHE_FOLDER, load_config(Path(notebook_path)).cache_size)


# --- freshness ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepState:
    """A step against the cache: fresh (its outputs are there) or stale, and why."""

    name: str
    fresh: bool
    reasons: list[str]
    key: str | None = None  # None when an upstream step is stale (its inputs are unknown)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "fresh": self.fresh, "reasons": self.reasons, "key": self.key}


def resolved_parameters(pipeline: Pipeline, given: dict[str, Any] | None) -> dict[str, Any]:
    """Every parameter's value for a run: the notebook's defaults, overridden (coerced)."""
    from dsops_jupyter.params import coerce_parameters

    values = {p.name: p.default for p in pipeline.parameters}
    values.update(coerce_parameters(pipeline, given))
    return values


def freshness(
    pipeline: Pipeline, parameters: dict[str, Any] | None, cache: StepCache
) -> list[StepState]:
    """Each step (run order) fresh iff the cache holds its key computed from its upstream
    steps' cached outputs; otherwise stale, with what changed since its last stored entry.
    (A fresh step that hands nothing on still runs: see ``restores``.)"""
    values = resolved_parameters(pipeline, parameters)
    states: dict[str, StepState] = {}
    outputs: dict[str, dict[str, str]] = {}  # fresh step -> its outputs' sha256
    for step in pipeline.steps:
        upstream = [*dict.fromkeys(s for _, s in step.inputs if s), *only_after(step)]
        stale_upstream = [name for name in upstream if not states[name].fresh]
        read = parameters_read(step, values)
        inputs = input_hashes(step, outputs, {n: s.key or "" for n, s in states.items()})
        why = why_parts(pipeline, step.name, values, inputs)
        key = None if stale_upstream else key_of(why, read)
        record = cache.entry(key) if key else None
        if record is not None:
            outputs[step.name] = record.get("outputs", {})
            states[step.name] = StepState(step.name, True, [], key)
            continue
        last = cache.last(why["notebook"], step.name)
        reasons = _reasons(why, last, stale_upstream, key)
        states[step.name] = StepState(step.name, False, reasons, key)
    return [states[step.name] for step in pipeline.steps]


def restores(step: Step) -> bool:
    """Whether a cache hit may stand in for running the step: only when it hands values on.
    A step that hands nothing on (the last one, typically) exists for what it writes or
    shows (metrics files, plots), which only running it makes; so it always runs."""
    return bool(step.outputs)


def input_hashes(
    step: Step, outputs: dict[str, dict[str, str]], keys: dict[str, str]
) -> dict[str, str]:
    """What the step's key takes from upstream: the sha256 of each input it reads, and the key
    of each step it only runs after (so a change there re-runs it too). Unknown ones are left
    out (the step is then stale anyway)."""
    hashes = {}
    for name, source in step.inputs:
        if source is not None and name in outputs.get(source, {}):
            hashes[name] = outputs[source][name]
    for name in only_after(step):
        if keys.get(name):
            hashes[f"{AFTER_PREFIX}{name}"] = keys[name]
    return hashes


def only_after(step: Step) -> list[str]:
    """The steps an ``after:`` marker puts before this one that it reads nothing from: what
    they did (a file written, say) is invisible to the key but for their own keys. (A step
    whose definition this one runs again needs no such link: that code is in its code key.)"""
    sources = {source for _, source in step.inputs}
    return [name for name in step.after if name not in sources]


def workdir_key(
    pipeline: Pipeline, step_name: str, values: dict[str, Any], workdir: Path, keys: dict[str, str]
) -> tuple[str, dict[str, Any]] | None:
    """A step's key and its parts (``why`` for ``store``) in a run going through ``workdir``:
    its inputs' sha256 from their manifests there (just written or restored), ``keys`` those of
    the steps run before, ``values`` every parameter's value (``resolved_parameters``). None
    when an input is not in the workdir (its step could not store it): no key, no caching."""
    step = pipeline.step(step_name)
    present = artifacts.entries(workdir) if Path(workdir).is_dir() else {}
    outputs: dict[str, dict[str, str]] = {}
    for name, source in step.inputs:
        if source is None:
            continue
        if name not in present:
            return None
        outputs.setdefault(source, {})[name] = present[name]["sha256"]
    why = why_parts(pipeline, step_name, values, input_hashes(step, outputs, keys))
    return key_of(why, parameters_read(step, values)), why


def _reasons(
    why: dict[str, Any], last: dict[str, Any] | None, stale_upstream: list[str], key: str | None
) -> list[str]:
    if last is None:
        return ["never run"]
    reasons = [f"upstream {name} stale" for name in stale_upstream]
    if last.get("code") != why["code"]:
        reasons.append("code changed")
    if last.get("lock") != why["lock"]:
        reasons.append("lock changed")
    before, now = last.get("parameters", {}), why["parameters"]
    reasons += [
        f"parameter {n} changed" for n in sorted({*before, *now}) if before.get(n) != now.get(n)
    ]
    if not stale_upstream:
        before_inputs = last.get("inputs", {})
        changed = {
            why["sources"].get(n, n) for n, h in why["inputs"].items() if before_inputs.get(n) != h
        }
        reasons += [f"upstream {name} changed" for name in sorted(changed)]
    if not reasons:
        reasons.append(
            "not in the cache (pruned or cleared)" if key == last.get("key") else "changed"
        )
    return reasons
