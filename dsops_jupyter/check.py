"""Does every generated package still match its notebook? (for CI and pre-commit)

Packages are found through their ``pipeline.json`` under ``<root>/<output>/``, which names the
notebook it came from, so a package converted with ``--name`` is checked too. Only the
notebook-derived files (script and spec) are compared: the lock and the image recipe describe
an environment, which may differ between a laptop and CI.

Like black's and ruff's caches, a package whose recorded hashes all hold (the notebook's
content hash, the script's and the spec's own sha256, the package format and settings) is
known to be what dsops generates from that notebook, and is not regenerated. Anything else, or
``--full``, regenerates in memory and compares bytes, printing a unified diff.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dsops_jupyter.config import Config, load_config
from dsops_jupyter.errors import DsopsError

SPEC = "pipeline.json"


@dataclass
class Item:
    notebook: str
    status: str  # ok | drift | missing | error
    package: str = ""
    note: str = ""
    diff: str = ""


@dataclass
class Report:
    items: list[Item] = field(default_factory=list)
    strict: bool = False

    @property
    def ok(self) -> bool:
        bad = {"drift", "error"} | ({"missing"} if self.strict else set())
        return not any(item.status in bad for item in self.items)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for item in self.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
        return f"dsops check: {parts}" + ("" if self.ok else " -> run `dsops convert` and commit")

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "items": [item.__dict__ for item in self.items],
        }


def check_paths(paths: list[Path], *, strict: bool = False, full: bool = False) -> Report:
    start = paths[0] if paths else Path.cwd()
    config = load_config(start)
    packages, corrupt = _packages_by_notebook(config)
    notebooks = _notebooks(paths, config, packages)
    report = Report(strict=strict)
    for notebook in notebooks:
        key = _relative(notebook, config.root)
        found = packages.get(key)
        if not found:
            # A corrupt spec in the notebook's default folder is why its package is not found.
            reason = corrupt.pop(config.package_dir(notebook.stem) / SPEC, None)
            report.items.append(_missing(key, reason, config))
            continue
        for package, spec in found:
            if not full and _hashes_hold(notebook, package, spec, config):
                shown = _relative(package, config.root)
                report.items.append(Item(key, "ok", shown, note="hashes match"))
            else:
                report.items.append(_check_one(notebook, key, package, spec, config))
    for spec_path, reason in corrupt.items():  # no notebook to pin them on: drift all the same
        shown = _relative(spec_path, config.root)
        report.items.append(Item(shown, "drift", _relative(spec_path.parent, config.root), reason))
    return report


def _missing(key: str, corrupt: str | None, config: Config) -> Item:
    if corrupt is None:
        return Item(key, "missing", note="never converted")
    return Item(key, "drift", note=corrupt)


def _notebooks(paths: list[Path], config: Config, packages: dict[str, Any]) -> list[Path]:
    """The given paths; else the configured notebooks and every notebook with a package."""
    if not paths:
        # Both come from the (resolved) root: no realpath per notebook, sorted as strings.
        names = {str(p) for p in config.notebook_paths()} | {str(config.root / n) for n in packages}
        return [Path(name) for name in sorted(names)]
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += [
                p for p in sorted(path.rglob("*.ipynb")) if ".ipynb_checkpoints" not in p.parts
            ]
        else:
            found.append(path)
    return [p.resolve() for p in found]


def _packages_by_notebook(
    config: Config,
) -> tuple[dict[str, list[tuple[Path, dict[str, Any]]]], dict[Path, str]]:
    """Packages by the notebook their spec names, and the specs that cannot be read (path ->
    one line naming the file): a corrupt spec hides its package, so it is drift, not absence."""
    index: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    corrupt: dict[Path, str] = {}
    for spec_path in sorted((config.root / config.output).glob(f"*/{SPEC}")):
        shown = _relative(spec_path, config.root)
        try:
            spec = json.loads(spec_path.read_bytes())
        except (OSError, ValueError, RecursionError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not valid JSON"
            corrupt[spec_path] = f"{shown}: {reason}; convert its notebook again and commit"
            continue
        if isinstance(spec, dict) and isinstance(spec.get("notebook"), str):
            index.setdefault(spec["notebook"], []).append((spec_path.parent, spec))
        else:
            corrupt[spec_path] = (
                f"{shown}: not a pipeline spec (no 'notebook' path);"
                " convert its notebook again and commit"
            )
    return index, corrupt


def _hashes_hold(notebook: Path, package: Path, spec: dict[str, Any], config: Config) -> bool:
    """True when the package is provably what the current generator makes of this notebook."""
    from dsops_jupyter.spec import SCRIPT_FORMAT, content_hash, spec_digest

    if spec.get("format") != SCRIPT_FORMAT or spec.get("keep_magics") != config.keep_magics:
        return False
    try:
        nb = json.loads(notebook.read_bytes())
        script = (package / str(spec.get("script"))).read_bytes()
        return (
            isinstance(nb, dict)
            and isinstance(nb.get("cells"), list)
            and content_hash(nb) == spec.get("content_hash")
            and hashlib.sha256(script).hexdigest() == spec.get("script_sha256")
            and spec_digest(spec) == spec.get("spec_sha256")
        )
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def _check_one(notebook: Path, key: str, package: Path, spec: dict, config: Config) -> Item:
    from dsops_jupyter.convert import render_files
    from dsops_jupyter.notebook import read_pipeline

    shown = _relative(package, config.root)
    try:
        pipeline = read_pipeline(notebook, name=spec.get("name"))
        expected = render_files(pipeline, config)
    except DsopsError as err:
        return Item(key, "error", shown, note=str(err))
    diffs = [_diff(package / name, content) for name, content in sorted(expected.items())]
    diff = "".join(diffs)
    return Item(key, "drift" if diff else "ok", shown, diff=diff)


def _diff(path: Path, expected: bytes) -> str:
    try:
        actual = path.read_bytes()
    except OSError:
        actual = b""
    if actual == expected:
        return ""
    lines = difflib.unified_diff(
        actual.decode("utf-8", "replace").splitlines(keepends=True),
        expected.decode("utf-8", "replace").splitlines(keepends=True),
        fromfile=f"{path} (committed)",
        tofile=f"{path} (from the notebook)",
    )
    return "".join(lines)


def _relative(path: Path, root: Path) -> str:
    """Paths found under the root need no realpath (a syscall per component); others do."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        pass
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)
