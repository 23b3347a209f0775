"""Versions of generated packages: one Git commit of the generated folder + an annotated tag.

A version of pipeline ``<name>`` is a commit that touches only its generated files, tagged
``dsops/<name>/v<N>``. The commit is built in a temporary index (``GIT_INDEX_FILE``) from HEAD's
tree, so the user's staged and unstaged changes to other files stay exactly as they were; the
branch and the tag then move together in one atomic ``git update-ref --stdin`` transaction whose
old values act as compare-and-swap.

dsops only ever replaces or removes files it generated (pipeline.json lists them). Versions are
made one at a time per repository (a lock under ``.git/``). The generated files and the index
change only after the refs moved, under Git's index lock and a journal in ``.git/dsops/``: a
failure or Ctrl-C undoes everything, and the leftovers of a killed commit are finished (its tag
exists) or undone by the next one. Hooks and signing follow the repository's Git settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import git
from gitdb import IStream

from dsops_jupyter import escape
from dsops_jupyter.convert import GeneratedPackage
from dsops_jupyter.errors import NotARepositoryError, VcsError
from dsops_jupyter.events import OnEvent, ignore, log, result, stage
from dsops_jupyter.fsutil import (
    Written,
    atomic_write,
    blob_sha,
    ignored_by_git,
    left_alone_note,
    refuse_overwrites,
    write_files,
    written_by_convert,
)

TAG_NAMESPACE = "dsops"
_TAG_RE = re.compile(r"^refs/tags/dsops/(?P<name>[^/]+)/v(?P<number>[1-9][0-9]*)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_NULL_SHA = "0" * 40
_FILE_MODE = "100644"
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
    message = record[f"{prefix}contents"].strip()
    if not re.match(rf"dsops: {re.escape(match['name'])} v[1-9][0-9]*$", message.split("\n")[0]):
        return None  # a tag in our namespace on a commit dsops did not make is no version
    return Version(
        name=match["name"],
        number=int(match["number"]),
        tag=tag_name(match["name"], int(match["number"])),
        commit=commit,
        short=commit[:7],
        epoch=int(record[f"{prefix}committerdate:unix"]),
        message=message,
    )


# --- committing --------------------------------------------------------------------------------
# How long a commit waits for another dsops commit in the same repository to finish (seconds).
LOCK_WAIT = 30.0
_LOCK_POLL = 0.05


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

    @property
    def directory(self) -> Path:
        return self.root / self.rel


def commit_package(
    pkg: GeneratedPackage, *, force: bool = False, on_event: OnEvent = ignore
) -> tuple[Version, bool]:
    """Write ``pkg`` into its folder and make it version N+1; ``(version, created)``.

    An unchanged package returns ``(last_version, False)``: no commit, no tag. Generated files
    changed by hand since the last version, and files in the folder dsops did not write, are
    refused (HandEditError) unless ``force``; even then dsops removes only files it generated.
    One commit at a time per repository (a lock under ``.git/``); leftovers of a killed commit
    are finished or undone first.
    """
    _check_package(pkg)
    with open_repo(pkg.directory) as repo, _repository_lock(repo):
        _recover(repo)
        target = _target(repo, pkg.directory)
        _check_identity(repo)
        return _commit(target, pkg, force, on_event)


def _commit(
    target: _Target, pkg: GeneratedPackage, force: bool, on_event: OnEvent
) -> tuple[Version, bool]:
    repo = target.repo
    stage(on_event, f"Checking {target.rel}/ against the last version of {pkg.name}")
    last = last_version(repo, pkg.name)
    baseline = _tree_blobs(repo, last.commit, target.rel) if last is not None else {}
    owned = _owned(repo, last.commit, target.rel, baseline) if last is not None else set()
    written = _written(target.directory, owned, baseline)
    left_alone = refuse_overwrites(
        target.directory,
        pkg.files,
        written,
        since=last.tag if last is not None else "the last commit",
        force=force,
        shown=target.path,
        ignored=lambda names: ignored_by_git(target.directory, names),
    )
    if left_alone:
        log(on_event, left_alone_note(target.path, left_alone))
    wanted = {name: blob_sha(data) for name, data in pkg.files.items()}
    if last is not None and {n: baseline[n] for n in owned if n in baseline} == wanted:
        write_files(target.directory, pkg.files)  # restores deleted generated files
        result(on_event, f"{pkg.name} is unchanged since {last.tag}", version=last.to_json())
        return last, False
    number = last.number + 1 if last is not None else 1
    _check_tag_is_free(repo, pkg.name, number)
    stale = sorted(set(written) - set(pkg.files))
    version = _record(target, pkg, number, stale, on_event)
    result(on_event, f"Committed {version.tag} ({version.short})", version=version.to_json())
    return version, True


def _owned(repo: git.Repo, commit: str, rel: str, baseline: Mapping[str, str]) -> set[str]:
    """The files dsops generated in the folder at a version: its pipeline.json's ``files``. A
    version made before pipeline.json listed them holds only generated files in the folder (dsops
    then replaced the whole folder); a commit with no pipeline.json there owns nothing."""
    if "pipeline.json" not in baseline:
        return set()
    raw = _git(repo, "cat-file", "blob", baseline["pipeline.json"])
    try:
        names = json.loads(raw).get("files")
    except (ValueError, AttributeError, RecursionError):
        names = None
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return set(names)
    return set(baseline)


def _written(directory: Path, owned: set[str], baseline: Mapping[str, str]) -> Written:
    """What dsops wrote in the folder: the last version's files with their committed bytes, and
    what ``dsops convert`` recorded since. A file of the version keeps its committed bytes as
    the reference even when convert could not record its new bytes (a hand edit stays one)."""
    known: dict[str, frozenset[str] | None] = {
        name: frozenset({baseline[name]}) if name in baseline else frozenset() for name in owned
    }
    for name, shas in written_by_convert(directory).items():
        if name not in known:
            known[name] = shas
        elif shas:
            known[name] = (known[name] or frozenset()) | shas
    return known


def _check_tag_is_free(repo: git.Repo, name: str, number: int) -> None:
    """A tag with the next version's name that is no dsops version blocks every commit: say so."""
    tag = tag_name(name, number)
    kind = _git(repo, "cat-file", "-t", f"refs/tags/{tag}", ok=(0, 1, 128)).strip()
    if kind:
        raise VcsError(
            f"tag {tag} already exists but is not a dsops version of {name} (it names a {kind} "
            f"dsops did not commit); delete it (`git tag -d {tag}`) or rename it, then commit again"
        )


def _record(
    target: _Target, pkg: GeneratedPackage, number: int, stale: list[str], on_event: OnEvent
) -> Version:
    """Commit + tag the package, then write it to disk and the index.

    Git objects (and the hooks) come first: a refusal leaves nothing. Then a journal, the index
    lock, the refs (one compare-and-swap transaction), the files, the index. A failure or Ctrl-C
    undoes what this process did; after kill -9 the journal lets the next commit finish the
    version (its tag exists) or undo the rest (it does not).
    """
    repo, tag = target.repo, tag_name(pkg.name, number)
    scratch = _scratch_dir(repo)
    stage(on_event, f"Committing {target.rel}/ as {tag}")
    journal: dict[str, Any] | None = None
    try:
        blobs = _store_blobs(repo, pkg.files)
        index = scratch / "index"
        tree = _write_tree(target, blobs, stale, index)
        message = _run_commit_hooks(target, scratch, index, _commit_message(target, pkg, number))
        commit = _commit_tree(target, tree, message)
        committer = _committer(_git(repo, "cat-file", "commit", commit))
        tag_object = _make_tag(repo, scratch, commit, tag, committer, _tag_message(pkg, number))
        stage(on_event, f"Updating {target.branch} and {tag}")
        journal = _journal(target, scratch, pkg.files, blobs, stale, commit, tag, tag_object)
        _lock_index(repo, journal)
        _build_next_index(repo, journal)
        try:
            _update_refs(target, commit, tag, tag_object, f"dsops: {pkg.name} v{number}")
        except VcsError:
            journal["refs_refused"] = True  # Git said no: whatever the refs hold is not ours
            raise
        stage(on_event, f"Writing {len(pkg.files)} files to {target.rel}/")
        _disk_forward(repo, journal)
        stage(on_event, "Updating the index")
        _install_index(repo, journal)
    except BaseException:
        if journal is not None:
            _settle(repo, journal, undo=True)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
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


# --- one commit at a time, and what a killed one left ------------------------------------------
@contextlib.contextmanager
def _repository_lock(repo: git.Repo) -> Iterator[None]:
    """An exclusive lock on ``.git/dsops.lock`` for the whole transaction. The kernel releases
    it when the holder dies, so a killed commit never blocks the next one; the holder's pid is
    recorded in the file to name it."""
    path = Path(repo.common_dir) / "dsops.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(errors="replace").strip() or "unknown"
                    raise VcsError(
                        f"another dsops commit is running in {repo.working_tree_dir} "
                        f"(pid {holder}); try again when it finishes"
                    ) from None
                time.sleep(_LOCK_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)


def _state_dir(repo: git.Repo) -> Path:
    return Path(repo.git_dir) / "dsops"


def _scratch_dir(repo: git.Repo) -> Path:
    """This process's folder for temporary indexes, the message file and the journal: under
    ``.git/`` (same file system, never the system temp folder), named after the process."""
    owner = _process_token()
    scratch = _state_dir(repo) / f"txn-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    (scratch / "owner").write_text(owner)
    return scratch


def _process_token() -> str:
    """``dsops <pid> <start time>``: names this process even after its pid is reused."""
    return f"dsops {os.getpid()} {_start_time(os.getpid())}\n"


def _start_time(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "-"
    return stat.rsplit(")", 1)[1].split()[19]


def _is_dead(token: str) -> bool:
    """Whether the process a token names is gone (a live pid with another start time is a new
    process that reused the pid)."""
    parts = token.split()
    if len(parts) != 3 or not parts[1].isdigit():
        return True
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    start = _start_time(pid)
    return parts[2] != "-" and start != "-" and start != parts[2]


def _recover(repo: git.Repo) -> None:
    """Finish or undo the transactions of dsops processes that died (kill -9) mid-commit, and
    drop their temporary files. Runs under the repository lock, so none of them is running."""
    state = _state_dir(repo)
    if not state.is_dir():
        return
    for scratch in sorted(state.glob("txn-*")):
        try:
            owner = (scratch / "owner").read_text()
        except OSError:
            owner = f"dsops {scratch.name.removeprefix('txn-')} -"
        if owner != _process_token() and not _is_dead(owner):
            continue
        try:
            journal = json.loads((scratch / "journal.json").read_bytes())
        except (OSError, ValueError):
            journal = None
        if isinstance(journal, dict):
            _settle(repo, journal, undo=False)
        shutil.rmtree(scratch, ignore_errors=True)


# --- the transaction ---------------------------------------------------------------------------
def _journal(
    target: _Target,
    scratch: Path,
    files: Mapping[str, bytes],
    blobs: Mapping[str, str],
    stale: list[str],
    commit: str,
    tag: str,
    tag_object: str,
) -> dict[str, Any]:
    """Everything needed to finish or undo the transaction, written before anything moves.

    ``writes``: ``{path: [old blob or None, new blob]}`` of the files to write (the old bytes
    are stored as blobs first, so they can be restored); ``removes``: ``{path: old blob}``.
    """
    repo, directory = target.repo, target.directory
    writes: dict[str, list[str | None]] = {}
    removes: dict[str, str] = {}
    for name in sorted({*files, *stale}):
        path = directory / name
        old = path.read_bytes() if path.is_file() else None
        if name in files and old == files[name]:
            continue
        old_sha = _store_blobs(repo, {name: old})[name] if old is not None else None
        if name in files:
            writes[target.path(name)] = [old_sha, blobs[name]]
        elif old_sha is not None:
            removes[target.path(name)] = old_sha
    touched = [target.path(name) for name in sorted({*files, *stale})]
    journal = {
        "owner": _process_token(),
        "started": time.time() - 1,  # file times may be coarser than the clock
        "root": str(target.root),
        "branch": target.branch,
        "old": target.head,
        "commit": commit,
        "tag": f"refs/tags/{tag}",
        "tag_object": tag_object,
        "index": str(target.root / _git(repo, "rev-parse", "--git-path", "index").strip()),
        "next_index": str(scratch / "next-index"),
        "index_info": [f"0 {_NULL_SHA}\t{path}" for path in touched]
        + [f"{_FILE_MODE} {sha}\t{target.path(name)}" for name, sha in sorted(blobs.items())],
        "writes": writes,
        "removes": removes,
    }
    atomic_write(scratch / "journal.json", json.dumps(journal, indent=1).encode())
    return journal


def _lock_index(repo: git.Repo, journal: dict[str, Any]) -> None:
    """Take Git's own index lock (as `git commit` does) until the index holds the version:
    no one can commit the folder's old entries on top of the new version meanwhile. The lock
    file holds this process's token, so a killed commit's lock is recognised and removed."""
    lock = Path(journal["index"] + ".lock")
    token = Path(journal["next_index"]).with_name("index-lock")
    token.write_text(journal["owner"])
    try:
        os.link(token, lock)  # like O_EXCL, but the lock holds the token from its first instant
    except FileExistsError:
        raise VcsError(
            f"could not update the Git index ({lock} exists: another git process is running, "
            "or one crashed; remove the file if no git command is running); "
            "nothing was committed"
        ) from None


def _build_next_index(repo: git.Repo, journal: dict[str, Any]) -> None:
    """The real index with the folder's entries replaced, built beside it (installed last)."""
    index, next_index = Path(journal["index"]), Path(journal["next_index"])
    if index.exists():
        shutil.copyfile(index, next_index)
    info = "".join(f"{line}\0" for line in journal["index_info"]).encode()
    env = {"GIT_INDEX_FILE": str(next_index)}
    try:
        _git(repo, "update-index", "-z", "--index-info", input=info, env=env)
    except GitFailed as err:
        raise VcsError(
            f"could not update the Git index ({err.reason}); nothing was committed"
        ) from err


def _install_index(repo: git.Repo, journal: dict[str, Any]) -> None:
    """Put the next index in place (under our lock), or, if someone removed our lock since,
    apply the folder's entries to the current index the ordinary way."""
    index, next_index = Path(journal["index"]), Path(journal["next_index"])
    if next_index.exists():
        if _own_index_lock(journal):
            os.replace(next_index, index)
        else:
            info = "".join(f"{line}\0" for line in journal["index_info"]).encode()
            with contextlib.suppress(GitFailed):
                _git(repo, "update-index", "-z", "--index-info", input=info)
    _release_index_lock(journal)


def _own_index_lock(journal: dict[str, Any]) -> bool:
    try:
        return Path(journal["index"] + ".lock").read_text(errors="replace") == journal["owner"]
    except OSError:
        return False


def _release_index_lock(journal: dict[str, Any]) -> None:
    if _own_index_lock(journal):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(journal["index"] + ".lock")


def _settle(repo: git.Repo, journal: dict[str, Any], *, undo: bool) -> None:
    """End an interrupted transaction consistently. If its tag exists, the version exists:
    finish it (files and index), unless ``undo`` and the index is not installed yet, then move
    the refs back (only if they still hold exactly this transaction's values). Otherwise put
    back the files it wrote. Either way its lock files go."""
    if not undo:  # a killed process's git may have died holding ref locks
        _drop_own_ref_locks(repo, journal)
    refused = journal.get("refs_refused", False)
    committed = not refused and _ref(repo, journal["tag"]) == journal["tag_object"]
    installed = not Path(journal["next_index"]).exists()
    if committed and undo and not installed:
        committed = not _rollback_refs(repo, journal)
    if committed:
        _disk_forward(repo, journal)
        _install_index(repo, journal)
    else:
        _disk_back(repo, journal)
        _release_index_lock(journal)


def _ref(repo: git.Repo, ref: str) -> str | None:
    out = _git(repo, "rev-parse", "-q", "--verify", ref, ok=(0, 1)).strip()
    return out or None


def _rollback_refs(repo: git.Repo, journal: dict[str, Any]) -> bool:
    """Branch back and tag gone in one compare-and-swap transaction: refs that changed since
    (someone else's) are never touched. True if the refs were rolled back."""
    branch, old, commit = journal["branch"], journal["old"], journal["commit"]
    commands = (
        f"update {branch} {old} {commit}\n" if old else f"delete {branch} {commit}\n"
    ) + f"delete {journal['tag']} {journal['tag_object']}\n"
    try:
        _git(repo, "update-ref", "--stdin", input=commands.encode())
    except GitFailed:
        return False
    return True


def _drop_own_ref_locks(repo: git.Repo, journal: dict[str, Any]) -> None:
    """A git killed inside `update-ref` leaves ``<ref>.lock`` files: remove ours, or the branch
    could never move again. Ours: holding our new value, or empty (killed before writing it)
    and made during our transaction, at least a second ago (a live git holds one for far less).
    """
    common = Path(repo.common_dir)
    ours = {journal["commit"], journal["tag_object"]}
    for ref in (journal["branch"], journal["tag"]):
        lock = common / f"{ref}.lock"
        with contextlib.suppress(OSError):
            content = lock.read_text(errors="replace").strip()
            if content in ours or (not content and _abandoned(lock, journal["started"])):
                lock.unlink()


def _abandoned(lock: Path, since: float) -> bool:
    """An empty lock made since ``since`` that stays empty and untouched for a second."""
    before = lock.stat().st_mtime
    if before < since:
        return False
    time.sleep(max(0.0, before + 1 - time.time()))
    return lock.stat().st_mtime == before and lock.stat().st_size == 0


def _disk_forward(repo: git.Repo, journal: dict[str, Any]) -> None:
    """Write the version's files and remove the stale ones, each only while it still holds the
    bytes the transaction found (never over something written since)."""
    root = Path(journal["root"])
    for path, (old, new) in journal["writes"].items():
        if _disk_blob(root / path) == old:
            atomic_write(root / path, _blob_bytes(repo, new))
    for path, old in journal["removes"].items():
        if _disk_blob(root / path) == old:
            _unlink_and_prune(root / path, root)


def _disk_back(repo: git.Repo, journal: dict[str, Any]) -> None:
    """Put back what :func:`_disk_forward` changed."""
    root = Path(journal["root"])
    for path, (old, new) in journal["writes"].items():
        if _disk_blob(root / path) == new:
            if old is None:
                _unlink_and_prune(root / path, root)
            else:
                atomic_write(root / path, _blob_bytes(repo, old))
    for path, old in journal["removes"].items():
        if not (root / path).exists():
            atomic_write(root / path, _blob_bytes(repo, old))


def _disk_blob(path: Path) -> str | None:
    try:
        return blob_sha(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _blob_bytes(repo: git.Repo, sha: str) -> bytes:
    return bytes(repo.odb.stream(bytes.fromhex(sha)).read())


def _unlink_and_prune(path: Path, root: Path) -> None:
    """Delete a file, then the folders it leaves empty (up to the generated folder's parent)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


# --- git objects -------------------------------------------------------------------------------
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


def _write_tree(target: _Target, blobs: Mapping[str, str], stale: list[str], index: Path) -> str:
    """HEAD's tree with the generated files replaced (and the stale ones removed), built in a
    throwaway index: the user's files in the folder stay as HEAD has them."""
    repo = target.repo
    env = {"GIT_INDEX_FILE": str(index)}
    _git(repo, "read-tree", *([target.head] if target.head else ["--empty"]), env=env)
    removals = [f"0 {_NULL_SHA}\t{target.path(name)}" for name in sorted({*blobs, *stale})]
    _git(
        repo,
        "update-index",
        "-z",
        "--index-info",
        input=_index_info(target, removals, blobs),
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


def _run_commit_hooks(target: _Target, scratch: Path, index: Path, message: str) -> str:
    """The repository's pre-commit and commit-msg hooks, run as `git commit` runs them
    (pre-commit sees the version's index as GIT_INDEX_FILE; commit-msg gets the message file
    and may edit it). A failing hook refuses the version before anything moved."""
    env = {"GIT_INDEX_FILE": str(index), "GIT_EDITOR": ":"}
    _run_hook(target, "pre-commit", [], env)
    message_file = scratch / "COMMIT_EDITMSG"
    message_file.write_text(message, encoding="utf-8")
    if _run_hook(target, "commit-msg", [str(message_file)], env):
        message = message_file.read_text(encoding="utf-8", errors="surrogateescape")
        if not message.strip():
            raise VcsError(
                "the commit-msg hook emptied the version's message; nothing was committed"
            )
    return message


def _run_hook(target: _Target, name: str, args: list[str], env: Mapping[str, str]) -> bool:
    """Run one hook if the repository has it (executable, as Git requires); True if it ran."""
    found = _git(target.repo, "rev-parse", "--git-path", f"hooks/{name}").strip()
    hook = target.root / found
    if not hook.is_file() or not os.access(hook, os.X_OK):
        return False
    clean = {k: v for k, v in os.environ.items() if k != "GIT_LITERAL_PATHSPECS"}
    proc = subprocess.run(
        [str(hook), *args],
        cwd=target.root,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        said = f": {last}" if last else f" (exit status {proc.returncode})"
        raise VcsError(
            f"the {name} hook refused the version{said}; fix what it reports and commit again "
            "(nothing was committed)"
        )
    return True


def _signing(repo: git.Repo, key: str) -> bool:
    return _git(repo, "config", "--type=bool", "--get", key, ok=(0, 1)).strip() == "true"


def _commit_tree(target: _Target, tree: str, message: str) -> str:
    """The version commit, signed when ``commit.gpgSign`` asks for it (as `git commit` would)."""
    sign = ["-S"] if _signing(target.repo, "commit.gpgsign") else []
    try:
        out = _git(
            target.repo, "commit-tree", *sign, tree, *_parents(target), input=message.encode()
        )
    except GitFailed as err:
        if not sign:
            raise
        raise _signing_error("commit.gpgsign", err) from err
    return out.strip()


def _signing_error(key: str, err: GitFailed) -> VcsError:
    return VcsError(
        f"{key} is true but Git could not sign the version ({err.reason}); set up your "
        f"signing key (user.signingkey, gpg.program), or switch signing off with "
        f"`git config {key} false`; nothing was committed"
    )


def _make_tag(
    repo: git.Repo, scratch: Path, commit: str, tag: str, tagger: str, message: str
) -> str:
    """The annotated tag object only (its ref is created together with the branch update);
    signed, as `git tag -s` signs, when ``tag.gpgSign``/``tag.forceSignAnnotated`` ask."""
    if _signing(repo, "tag.gpgsign") or _signing(repo, "tag.forcesignannotated"):
        return _signed_tag(repo, scratch, commit, tag, message)
    body = f"object {commit}\ntype commit\ntag {tag}\ntagger {tagger}\n\n{message}"
    return _git(repo, "mktag", input=body.encode()).strip()


def _signed_tag(repo: git.Repo, scratch: Path, commit: str, tag: str, message: str) -> str:
    """Let `git tag -s` sign it (gpg, ssh or x509, the user's key and program) in a scratch
    repository that borrows our objects and config, so no ref of ours is created; then store
    the exact signed object here."""
    side = scratch / "sign.git"
    _git(repo, "init", "-q", "--bare", str(side))
    objects = Path(repo.common_dir).resolve() / "objects"
    (side / "objects/info/alternates").write_text(f"{objects}\n")
    config = Path(repo.common_dir).resolve() / "config"
    with (side / "config").open("a") as handle:
        handle.write(f"[include]\n\tpath = {json.dumps(str(config), ensure_ascii=False)}\n")
    env = {"GIT_DIR": str(side)}
    try:
        _git(
            repo,
            *("tag", "-s", "--cleanup=verbatim", "-F", "-", tag, commit),
            input=message.encode(),
            env=env,
        )
    except GitFailed as err:
        raise _signing_error("tag.gpgsign", err) from err
    raw = subprocess.run(
        ["git", "cat-file", "tag", f"refs/tags/{tag}"],
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    ).stdout
    return _git(repo, "mktag", input=raw).strip()


def _committer(raw_commit: str) -> str:
    """``Name <email> epoch tz`` of a raw commit: the tagger too, same identity and time."""
    line = next(line for line in raw_commit.splitlines() if line.startswith("committer "))
    return line.removeprefix("committer ")


# --- refs --------------------------------------------------------------------------------------
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
