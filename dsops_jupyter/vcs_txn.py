"""One dsops commit at a time per repository, and its journaled, recoverable transaction."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dsops_jupyter.errors import VcsError
from dsops_jupyter.fsutil import atomic_write, blob_sha
from dsops_jupyter.gitobjects import _FILE_MODE, _NULL_SHA, _Target
from dsops_jupyter.gitrun import GitFailed, Repository

# --- one commit at a time, and what a killed one left ------------------------------------------
_LOCK_POLL = 0.05


@contextlib.contextmanager
def _repository_lock(repo: Repository, wait: float) -> Iterator[None]:
    """An exclusive lock on ``.git/dsops.lock`` for the whole transaction. The kernel releases
    it when the holder dies, so a killed commit never blocks the next one; the holder's pid is
    recorded in the file to name it. Waits up to ``wait`` seconds (vcs.LOCK_WAIT) for a holder."""
    path = repo.common_dir / "dsops.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = path.read_text(errors="replace").strip() or "unknown"
                    raise VcsError(
                        f"another dsops commit is running in {repo.root} "
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


def _state_dir(repo: Repository) -> Path:
    return repo.git_dir / "dsops"


def _scratch_dir(repo: Repository) -> Path:
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


def _recover(repo: Repository) -> None:
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
    changed: dict[str, bytes | None] = {}
    for name in sorted({*files, *stale}):
        path = directory / name
        old = path.read_bytes() if path.is_file() else None
        if not (name in files and old == files[name]):
            changed[name] = old
    stored = repo.store_blobs({n: old for n, old in changed.items() if old is not None}, scratch)
    for name in changed:
        old_sha = stored.get(name)
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
        "index": str(target.root / repo.run("rev-parse", "--git-path", "index").strip()),
        "next_index": str(scratch / "next-index"),
        "index_info": [f"0 {_NULL_SHA}\t{path}" for path in touched]
        + [f"{_FILE_MODE} {sha}\t{target.path(name)}" for name, sha in sorted(blobs.items())],
        "writes": writes,
        "removes": removes,
    }
    atomic_write(scratch / "journal.json", json.dumps(journal, indent=1).encode())
    return journal


def _lock_index(repo: Repository, journal: dict[str, Any]) -> None:
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


def _build_next_index(repo: Repository, journal: dict[str, Any]) -> None:
    """The real index with the folder's entries replaced, built beside it (installed last)."""
    index, next_index = Path(journal["index"]), Path(journal["next_index"])
    if index.exists():
        shutil.copyfile(index, next_index)
    info = "".join(f"{line}\0" for line in journal["index_info"]).encode()
    env = {"GIT_INDEX_FILE": str(next_index)}
    try:
        repo.run("update-index", "-z", "--index-info", input=info, env=env)
    except GitFailed as err:
        raise VcsError(
            f"could not update the Git index ({err.reason}); nothing was committed"
        ) from err


def _install_index(repo: Repository, journal: dict[str, Any]) -> None:
    """Put the next index in place (under our lock), or, if someone removed our lock since,
    apply the folder's entries to the current index the ordinary way."""
    index, next_index = Path(journal["index"]), Path(journal["next_index"])
    if next_index.exists():
        if _own_index_lock(journal):
            os.replace(next_index, index)
        else:
            info = "".join(f"{line}\0" for line in journal["index_info"]).encode()
            with contextlib.suppress(GitFailed):
                repo.run("update-index", "-z", "--index-info", input=info)
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


def _settle(repo: Repository, journal: dict[str, Any], *, undo: bool) -> None:
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


def _ref(repo: Repository, ref: str) -> str | None:
    out = repo.run("rev-parse", "-q", "--verify", ref, ok=(0, 1)).strip()
    return out or None


def _rollback_refs(repo: Repository, journal: dict[str, Any]) -> bool:
    """Branch back and tag gone in one compare-and-swap transaction: refs that changed since
    (someone else's) are never touched. True if the refs were rolled back."""
    branch, old, commit = journal["branch"], journal["old"], journal["commit"]
    commands = (
        f"update {branch} {old} {commit}\n" if old else f"delete {branch} {commit}\n"
    ) + f"delete {journal['tag']} {journal['tag_object']}\n"
    try:
        repo.run("update-ref", "--stdin", input=commands.encode())
    except GitFailed:
        return False
    return True


def _drop_own_ref_locks(repo: Repository, journal: dict[str, Any]) -> None:
    """A git killed inside `update-ref` leaves ``<ref>.lock`` files: remove ours, or the branch
    could never move again. Ours: holding our new value, or empty (killed before writing it)
    and made during our transaction, at least a second ago (a live git holds one for far less).
    Moving the branch HEAD names also locks ``HEAD`` (for its reflog): that lock is ours only
    when made during our transaction and left untouched, whatever git had written into it.
    """
    common = repo.common_dir
    ours = {journal["commit"], journal["tag_object"]}
    for ref in (journal["branch"], journal["tag"]):
        lock = common / f"{ref}.lock"
        with contextlib.suppress(OSError):
            content = lock.read_text(errors="replace").strip()
            if content in ours or (not content and _abandoned(lock, journal["started"])):
                lock.unlink()
    head_lock = repo.git_dir / "HEAD.lock"
    with contextlib.suppress(OSError):
        if _abandoned(head_lock, journal["started"], empty=False):
            head_lock.unlink()


def _abandoned(lock: Path, since: float, *, empty: bool = True) -> bool:
    """A lock made since ``since`` that stays untouched (and, by default, empty) for a second."""
    before = lock.stat().st_mtime
    if before < since:
        return False
    time.sleep(max(0.0, before + 1 - time.time()))
    after = lock.stat()
    return after.st_mtime == before and (not empty or after.st_size == 0)


def _disk_forward(repo: Repository, journal: dict[str, Any]) -> None:
    """Write the version's files and remove the stale ones, each only while it still holds the
    bytes the transaction found (never over something written since)."""
    root = Path(journal["root"])
    for path, (old, new) in journal["writes"].items():
        if _disk_blob(root / path) == old:
            atomic_write(root / path, repo.blob(new))
    for path, old in journal["removes"].items():
        if _disk_blob(root / path) == old:
            _unlink_and_prune(root / path, root)


def _disk_back(repo: Repository, journal: dict[str, Any]) -> None:
    """Put back what :func:`_disk_forward` changed."""
    root = Path(journal["root"])
    for path, (old, new) in journal["writes"].items():
        if _disk_blob(root / path) == new:
            if old is None:
                _unlink_and_prune(root / path, root)
            else:
                atomic_write(root / path, repo.blob(old))
    for path, old in journal["removes"].items():
        if not (root / path).exists():
            atomic_write(root / path, repo.blob(old))


def _disk_blob(path: Path) -> str | None:
    try:
        return blob_sha(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _unlink_and_prune(path: Path, root: Path) -> None:
    """Delete a file, then the folders it leaves empty (up to the generated folder's parent)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    parent = path.parent
    while parent != root and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
