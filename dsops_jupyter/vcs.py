"""Versions of generated packages: one Git commit of the generated folder + an annotated tag.

A version of pipeline ``<name>`` is a commit that touches only its generated folder, tagged
``dsops/<name>/v<N>``. The commit is built in a temporary index (``GIT_INDEX_FILE``) from HEAD's
tree, so the user's staged and unstaged changes to other files stay exactly as they were; the
branch and the tag then move together in one atomic ``git update-ref --stdin`` transaction whose
old values act as compare-and-swap. Anything failing (or Ctrl-C) after that is rolled back, so a
failed commit leaves no commit on the branch, no tag and the index as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import git
from gitdb import IStream

from dsops_jupyter import escape
from dsops_jupyter.convert import GeneratedPackage
from dsops_jupyter.errors import HandEditError, NotARepositoryError, VcsError
from dsops_jupyter.events import OnEvent, ignore, result, stage
from dsops_jupyter.fsutil import write_files

TAG_NAMESPACE = "dsops"
_TAG_RE = re.compile(r"^refs/tags/dsops/(?P<name>[^/]+)/v(?P<number>[1-9][0-9]*)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NULL_SHA = "0" * 40
_FILE_MODE = "100644"
# Python and Jupyter droppings that appear next to generated files without anyone editing them.
_JUNK_DIRS = frozenset({"__pycache__", ".ipynb_checkpoints"})
_IDENTITY_HELP = (
    'run `git config --global user.name "Your Name"` and '
    '`git config --global user.email "you@example.com"` (or set GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL '
    "and GIT_COMMITTER_NAME/GIT_COMMITTER_EMAIL), then try again"
)


@dataclass(frozen=True)
class Version:
    """One tagged version of a generated package (``epoch``: committer time, for reproducible
    image timestamps; ``message``: the version commit's message)."""

    name: str
    number: int
    tag: str
    commit: str
    short: str
    epoch: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def tag_name(name: str, number: int) -> str:
    return f"{TAG_NAMESPACE}/{name}/v{number}"


# --- reading versions --------------------------------------------------------------------------
def open_repo(path: Path) -> git.Repo:
    """The work tree containing ``path`` (which may not exist yet, e.g. a package folder)."""
    start = Path(path).absolute()
    while not start.is_dir() and start != start.parent:
        start = start.parent
    try:
        repo = git.Repo(start, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        repo = None
    if repo is None or repo.bare or repo.working_tree_dir is None:
        if repo is not None:
            repo.close()
        raise NotARepositoryError(
            f"{path} is not inside a Git repository; run `git init` in your project folder "
            "(or move the notebook into a Git work tree) and try again"
        )
    return repo


def list_versions(path: Path, name: str | None = None) -> list[Version]:
    """Versions of ``name`` (all dsops pipelines if None) in the repository containing ``path``,
    sorted by name, then number."""
    with open_repo(path) as repo:
        return _versions(repo, name)


def last_version(repo: git.Repo, name: str) -> Version | None:
    versions = _versions(repo, name)
    return versions[-1] if versions else None


_REF_FIELDS = (
    "refname",
    "objecttype",
    "objectname",
    "*objecttype",
    "*objectname",
    "committerdate:unix",
    "*committerdate:unix",
    "contents",
    "*contents",
)


def _versions(repo: git.Repo, name: str | None) -> list[Version]:
    """One ``for-each-ref`` call: fast even with many tags (no per-tag object reads)."""
    pattern = f"refs/tags/{TAG_NAMESPACE}" + (f"/{name}" if name else "")
    fmt = "".join(f"%({field})%00" for field in _REF_FIELDS)
    out = _git(repo, "for-each-ref", f"--format={fmt}", pattern)
    chunks = out.split("\0")
    found = []
    for i in range(0, len(chunks) - len(_REF_FIELDS) + 1, len(_REF_FIELDS)):
        record = dict(zip(_REF_FIELDS, chunks[i : i + len(_REF_FIELDS)], strict=True))
        version = _parse_ref(record)
        if version is not None and (name is None or version.name == name):
            found.append(version)
    return sorted(found, key=lambda v: (v.name, v.number))


def _parse_ref(record: dict[str, str]) -> Version | None:
    match = _TAG_RE.match(record["refname"].lstrip("\n"))
    if match is None:
        return None
    prefix = "*" if record["objecttype"] == "tag" else ""  # annotated: read the tagged commit
    if record[f"{prefix}objecttype"] != "commit":
        return None
    commit = record[f"{prefix}objectname"]
    return Version(
        name=match["name"],
        number=int(match["number"]),
        tag=tag_name(match["name"], int(match["number"])),
        commit=commit,
        short=commit[:7],
        epoch=int(record[f"{prefix}committerdate:unix"]),
        message=record[f"{prefix}contents"].strip(),
    )


# --- committing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """Where the version goes: repository root, folder (posix, relative), branch and its tip."""

    repo: git.Repo
    root: Path
    rel: str
    branch: str
    head: str | None  # None: unborn branch (no commit yet)

    def path(self, name: str) -> str:
        return f"{self.rel}/{name}"


def commit_package(
    pkg: GeneratedPackage, *, force: bool = False, on_event: OnEvent = ignore
) -> tuple[Version, bool]:
    """Write ``pkg`` into its folder and make it version N+1; ``(version, created)``.

    An unchanged package returns ``(last_version, False)``: no commit, no tag. Generated files
    changed by hand since the last version are refused (HandEditError) unless ``force``.
    """
    _check_package(pkg)
    with open_repo(pkg.directory) as repo:
        target = _target(repo, pkg.directory)
        _check_identity(repo)
        return _commit(target, pkg, force, on_event)


def _commit(
    target: _Target, pkg: GeneratedPackage, force: bool, on_event: OnEvent
) -> tuple[Version, bool]:
    repo = target.repo
    stage(on_event, f"Checking {target.rel}/ against the last version of {pkg.name}")
    last = last_version(repo, pkg.name)
    base_rev = last.commit if last is not None else target.head
    baseline = _tree_blobs(repo, base_rev, target.rel) if base_rev else {}
    wanted = {name: _blob_sha(data) for name, data in pkg.files.items()}
    if not force:
        since = last.tag if last is not None else "the last commit"
        _refuse_hand_edits(target, pkg.files, baseline, since)
    if last is not None and baseline == wanted:
        write_files(pkg.directory, pkg.files)  # restores deleted generated files; no-op otherwise
        result(on_event, f"{pkg.name} is unchanged since {last.tag}", version=last.to_json())
        return last, False
    stage(on_event, f"Writing {len(pkg.files)} files to {target.rel}/")
    write_files(pkg.directory, pkg.files)
    _remove_stale(Path(pkg.directory), [name for name in baseline if name not in wanted])
    version = _record(target, pkg, (last.number + 1) if last is not None else 1, on_event)
    result(on_event, f"Committed {version.tag} ({version.short})", version=version.to_json())
    return version, True


def _record(target: _Target, pkg: GeneratedPackage, number: int, on_event: OnEvent) -> Version:
    """Commit + tag the package; on any failure (or Ctrl-C) undo the ref and index updates."""
    repo, tag = target.repo, tag_name(pkg.name, number)
    stage(on_event, f"Committing {target.rel}/ as {tag}")
    blobs = _store_blobs(repo, pkg.files)
    tree = _write_tree(target, blobs)
    message = _commit_message(target, pkg, number)
    commit = _git(repo, "commit-tree", tree, *_parents(target), input=message.encode()).strip()
    committer = _committer(_git(repo, "cat-file", "commit", commit))
    tag_object = _make_tag(repo, commit, tag, committer, _tag_message(pkg, number))
    snapshot: list[str] | None = None
    try:
        stage(on_event, f"Updating {target.branch} and {tag}")
        _update_refs(target, commit, tag, tag_object, f"dsops: {pkg.name} v{number}")
        stage(on_event, "Updating the index")
        snapshot = _index_entries(target)
        _replace_index_entries(target, snapshot, blobs)
    except BaseException:
        _rollback(target, commit, tag, tag_object, snapshot, blobs)
        raise
    return Version(
        name=pkg.name,
        number=number,
        tag=tag,
        commit=commit,
        short=commit[:7],
        epoch=int(committer.rsplit(" ", 2)[1]),
        message=message.strip(),
    )


def _target(repo: git.Repo, directory: Path) -> _Target:
    root = Path(str(repo.working_tree_dir)).resolve()
    folder = Path(directory).resolve()
    try:
        rel = folder.relative_to(root).as_posix()
    except ValueError:
        raise VcsError(f"{directory} is outside the Git work tree {root}") from None
    if rel in ("", ".") or rel == ".git" or rel.startswith(".git/"):
        raise VcsError(f"{directory} cannot hold generated files: use a subfolder of {root}")
    if repo.head.is_detached:
        raise VcsError(
            f"HEAD is detached in {root}; check out a branch (`git switch <branch>`) "
            "before committing a version"
        )
    branch = repo.head.reference.path
    head = repo.head.commit.hexsha if repo.head.is_valid() else None
    return _Target(repo, root, rel, branch, head)


def _check_package(pkg: GeneratedPackage) -> None:
    if not _NAME_RE.match(pkg.name) or ".." in pkg.name or pkg.name.endswith(".lock"):
        raise VcsError(f"{pkg.name!r} cannot be part of a Git tag name; rename the notebook")
    for name in pkg.files:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or {".", "..", ".git"} & set(parts) or "\\" in name:
            raise VcsError(f"generated file name {name!r} is not a plain relative path")


def _check_identity(repo: git.Repo) -> None:
    """Refuse before writing anything if git would not know who commits."""
    out = _git(
        repo, "config", "-z", "--get-regexp", r"^(user|author|committer)\.(name|email)$", ok=(0, 1)
    )
    entries = (entry.partition("\n") for entry in out.split("\0") if entry)
    configured = {key.lower() for key, _, value in entries if value.strip()}

    def known(role: str, field: str) -> bool:
        env = os.environ.get(f"GIT_{role.upper()}_{field.upper()}")
        if field == "email":
            env = env or os.environ.get("EMAIL")
        return bool(env) or bool(configured & {f"user.{field}", f"{role}.{field}"})

    roles = ("author", "committer")
    if not all(known(role, field) for role in roles for field in ("name", "email")):
        raise VcsError(f"Git does not know who you are; {_IDENTITY_HELP}")


# --- hand edits --------------------------------------------------------------------------------
def _refuse_hand_edits(
    target: _Target, files: Mapping[str, bytes], baseline: Mapping[str, str], since: str
) -> None:
    """On-disk files that are neither the last version's bytes nor the new bytes were edited by
    hand (or added): overwriting them would lose work, so refuse unless --force."""
    directory = target.root / target.rel
    edited, extra = [], []
    for name in sorted(_disk_files(directory)):
        data = (directory / name).read_bytes()
        if files.get(name) == data or baseline.get(name) == _blob_sha(data):
            continue
        (edited if name in files or name in baseline else extra).append(name)
    extra = _not_ignored(target, extra)
    if edited:
        raise HandEditError(
            f"{_listing(target, edited)} changed by hand since {since}; "
            "use --force to overwrite with the generated version"
        )
    if extra:
        raise HandEditError(
            f"{_listing(target, extra)} in the generated folder {target.rel}/ but not generated "
            f"(not in {since}); move it out of the folder or use --force"
        )


def _listing(target: _Target, names: list[str]) -> str:
    more = f" and {len(names) - 1} more file(s)" if len(names) > 1 else ""
    return f"{target.path(names[0])}{more}"


def _disk_files(directory: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = [d for d in dirnames if d not in _JUNK_DIRS]
        rel = Path(dirpath).relative_to(directory)
        for name in filenames:
            if name.endswith(".pyc") or (name.startswith(".") and name.endswith(".tmp")):
                continue  # bytecode, or a temp file of an interrupted atomic_write
            found.append((rel / name).as_posix())
    return found


def _not_ignored(target: _Target, names: list[str]) -> list[str]:
    if not names:
        return []
    paths = [target.path(name) for name in names]
    out = _git(
        target.repo,
        "check-ignore",
        "-z",
        "--stdin",
        input="\0".join(paths).encode() + b"\0",
        env={"GIT_LITERAL_PATHSPECS": "0"},  # check-ignore rejects the literal magic
        ok=(0, 1),
    )
    ignored = set(out.split("\0"))
    return [name for name, path in zip(names, paths, strict=True) if path not in ignored]


def _remove_stale(directory: Path, names: list[str]) -> None:
    """Delete files of the last version that the new package no longer has (and empty dirs)."""
    for name in names:
        path = directory / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        parent = path.parent
        while parent != directory and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


# --- git objects -------------------------------------------------------------------------------
def _blob_sha(data: bytes) -> str:
    """Git's object id of ``data`` as a blob: compares files with trees without reading blobs."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def _tree_blobs(repo: git.Repo, rev: str, rel: str) -> dict[str, str]:
    """``{name relative to rel: blob sha}`` of the files under ``rel`` in ``rev``."""
    out = _git(repo, "ls-tree", "-r", "-z", "--full-tree", rev, "--", rel)
    blobs = {}
    for entry in filter(None, out.split("\0")):
        meta, path = entry.split("\t", 1)
        _mode, kind, sha = meta.split()
        if kind == "blob" and path.startswith(f"{rel}/"):
            blobs[path[len(rel) + 1 :]] = sha
    return blobs


def _store_blobs(repo: git.Repo, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write the exact bytes (no clean filters) as loose objects; ``{name: sha}``."""
    return {
        name: repo.odb.store(IStream(b"blob", len(data), io.BytesIO(data))).hexsha.decode()
        for name, data in files.items()
    }


def _write_tree(target: _Target, blobs: Mapping[str, str]) -> str:
    """HEAD's tree with the folder replaced by ``blobs``, built in a throwaway index."""
    repo = target.repo
    with tempfile.TemporaryDirectory(prefix="dsops-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", *([target.head] if target.head else ["--empty"]), env=env)
        _git(repo, "rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", target.rel, env=env)
        _git(
            repo,
            "update-index",
            "-z",
            "--index-info",
            input=_index_info(target, [], blobs),
            env=env,
        )
        return _git(repo, "write-tree", env=env).strip()


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


def _make_tag(repo: git.Repo, commit: str, tag: str, tagger: str, message: str) -> str:
    """The annotated tag object only (its ref is created together with the branch update)."""
    body = f"object {commit}\ntype commit\ntag {tag}\ntagger {tagger}\n\n{message}"
    return _git(repo, "mktag", input=body.encode()).strip()


def _committer(raw_commit: str) -> str:
    """``Name <email> epoch tz`` of a raw commit: the tagger too, same identity and time."""
    line = next(line for line in raw_commit.splitlines() if line.startswith("committer "))
    return line.removeprefix("committer ")


# --- refs and index ----------------------------------------------------------------------------
def _update_refs(target: _Target, commit: str, tag: str, tag_object: str, reason: str) -> None:
    """Branch and tag in one transaction: both move or neither does. The old values make it a
    compare-and-swap: a commit made meanwhile, or a tag created meanwhile, fails the update."""
    old = target.head or _NULL_SHA
    commands = f"update {target.branch} {commit} {old}\ncreate refs/tags/{tag} {tag_object}\n"
    try:
        _git(target.repo, "update-ref", "-m", reason, "--stdin", input=commands.encode())
    except GitFailed as err:
        raise VcsError(
            f"could not move {target.branch} and create {tag} ({err.reason}); "
            "nothing was committed, try again"
        ) from err


def _index_entries(target: _Target) -> list[str]:
    """``ls-files --stage`` lines of the folder in the real index (to replace and to restore)."""
    out = _git(target.repo, "ls-files", "--stage", "-z", "--", target.rel)
    return [entry for entry in out.split("\0") if entry]


def _replace_index_entries(target: _Target, snapshot: list[str], blobs: Mapping[str, str]) -> None:
    """Make the real index agree with the version for the folder only, so `git status` shows
    the generated files clean and leaves every other entry (the user's staging) alone."""
    removals = [f"0 {_NULL_SHA}\t{entry.split(chr(9), 1)[1]}" for entry in snapshot]
    try:
        _git(
            target.repo,
            "update-index",
            "-z",
            "--index-info",
            input=_index_info(target, removals, blobs),
        )
    except GitFailed as err:
        raise VcsError(
            f"could not update the Git index ({err.reason}); nothing was committed"
        ) from err


def _rollback(
    target: _Target,
    commit: str,
    tag: str,
    tag_object: str,
    snapshot: list[str] | None,
    blobs: Mapping[str, str],
) -> None:
    """Undo whatever of the ref and index updates happened. Each step is a compare-and-swap
    (only undo our own value), best effort: the original error is what the user must see."""
    repo = target.repo
    undo = [
        ("update-ref", "-d", f"refs/tags/{tag}", tag_object),
        (
            ("update-ref", target.branch, target.head, commit)
            if target.head
            else ("update-ref", "-d", target.branch, commit)
        ),
    ]
    for args in undo:
        with contextlib.suppress(GitFailed):
            _git(repo, *args)
    if snapshot is not None:
        removals = [f"0 {_NULL_SHA}\t{target.path(name)}" for name in blobs]
        restore = "".join(f"{line}\0" for line in [*removals, *snapshot]).encode()
        with contextlib.suppress(GitFailed):
            _git(repo, "update-index", "-z", "--index-info", input=restore)


# --- running git -------------------------------------------------------------------------------
class GitFailed(VcsError):
    """A git command exited non-zero; ``reason`` is the meaningful line of its stderr."""

    def __init__(self, command: str, status: int, stderr: bytes):
        self.command, self.status = command, status
        lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
        lines = [line for line in lines if line and not line.startswith("hint:")]
        fatal = [
            line.split(":", 1)[1].strip() for line in lines if line.startswith(("fatal:", "error:"))
        ]
        self.reason = (fatal or lines or [f"exit status {status}"])[0]
        super().__init__(f"git {command} failed: {self.reason}")


def _git(
    repo: git.Repo,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
) -> str:
    """Run a git plumbing command at the work tree root (stdin-friendly, unlike Git.execute)."""
    command = [git.Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    full_env = {**os.environ, "GIT_LITERAL_PATHSPECS": "1", **(env or {})}
    proc = subprocess.run(
        command,
        cwd=repo.working_tree_dir,
        input=input,
        capture_output=True,
        env=full_env,
        check=False,
    )
    if proc.returncode not in ok:
        raise GitFailed(args[0], proc.returncode, proc.stderr)
    return proc.stdout.decode("utf-8", "surrogateescape")
