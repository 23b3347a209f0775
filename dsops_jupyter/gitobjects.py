"""The Git objects of a version (blobs, tree, messages), written without touching a ref."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dsops_jupyter import escape
from dsops_jupyter.gitrun import Repository
from dsops_jupyter.model import GeneratedPackage

_NULL_SHA = "0" * 40
_FILE_MODE = "100644"


@dataclass(frozen=True)
class _Target:
    """Where the version goes: repository root, folder (posix, relative), branch and its tip."""

    repo: Repository
    root: Path
    rel: str
    branch: str
    head: str | None  # None: unborn branch (no commit yet)

    def path(self, name: str) -> str:
        return f"{self.rel}/{name}"

    @property
    def directory(self) -> Path:
        return self.root / self.rel


def _tree_blobs(repo: Repository, rev: str, rel: str) -> dict[str, str]:
    """``{name relative to rel: blob sha}`` of the files under ``rel`` in ``rev``."""
    out = repo.run("ls-tree", "-r", "-z", "--full-tree", rev, "--", rel)
    blobs = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob" and path.startswith(f"{rel}/"):
            blobs[path[len(rel) + 1 :]] = sha
    return blobs


def _write_tree(target: _Target, blobs: Mapping[str, str], stale: list[str], index: Path) -> str:
    """HEAD's tree with the generated files replaced (and the stale ones removed), built in a
    throwaway index: the user's files in the folder stay as HEAD has them."""
    repo = target.repo
    env = {"GIT_INDEX_FILE": str(index)}
    repo.run("read-tree", *([target.head] if target.head else ["--empty"]), env=env)
    removals = [f"0 {_NULL_SHA}\t{target.path(name)}" for name in sorted({*blobs, *stale})]
    repo.run(
        "update-index",
        "-z",
        "--index-info",
        input=_index_info(target, removals, blobs),
        env=env,
    )
    return repo.run("write-tree", env=env).strip()


def _index_info(target: _Target, lines: list[str], blobs: Mapping[str, str]) -> bytes:
    added = [f"{_FILE_MODE} {sha}\t{target.path(name)}" for name, sha in sorted(blobs.items())]
    return "".join(f"{line}\0" for line in [*lines, *added]).encode()


def _parents(target: _Target) -> list[str]:
    return ["-p", target.head] if target.head else []


def _commit_message(target: _Target, pkg: GeneratedPackage, number: int) -> str:
    notebook = Path(pkg.notebook_path).resolve()
    with contextlib.suppress(ValueError):
        notebook = notebook.relative_to(target.root)
    value = escape.git_message_value
    return (
        f"dsops: {value(pkg.name)} v{number}\n\n"
        f"notebook: {value(notebook.as_posix())}\ncontent: {value(pkg.content_hash)}\n"
    )


def _tag_message(pkg: GeneratedPackage, number: int) -> str:
    """Summary line, then the pipeline manifest: `git show <tag>` tells what the version is."""
    summary = f"dsops: {escape.git_message_value(pkg.name)} v{number}\n"
    manifest = pkg.files.get("pipeline.json")
    if manifest is None:
        return summary
    # pipeline.json is ASCII JSON: no value in it can break a line or add a trailer.
    text = manifest.decode("utf-8", "replace")
    return f"{summary}\n{text}" + ("" if text.endswith("\n") else "\n")


def _committer(raw_commit: str) -> str:
    """``Name <email> epoch tz`` of a raw commit: the tagger too, same identity and time."""
    line = next(line for line in raw_commit.splitlines() if line.startswith("committer "))
    return line.removeprefix("committer ")
