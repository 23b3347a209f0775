"""Versions of generated packages: one Git commit of the generated folder + an annotated tag.

A version of pipeline ``<name>`` is a commit that touches only its generated files, tagged
``dsops/<name>/v<N>``. The commit is built in a temporary index (``GIT_INDEX_FILE``) from HEAD's
tree, so the user's staged and unstaged changes to other files stay exactly as they were; the
branch and the tag then move together in one atomic ``git update-ref --stdin`` transaction whose
old values act as compare-and-swap. A gate (package.py: the image build and smoke run) runs
between making the commit and tag objects and moving the refs: a version exists only once
its image passed, and a failed gate leaves nothing but unreachable objects.

dsops only ever replaces or removes files it generated (pipeline.json lists them). Versions are
made one at a time per repository (a lock under ``.git/``). The generated files and the index
change only after the refs moved, under Git's index lock and a journal in ``.git/dsops/``: a
failure or Ctrl-C undoes everything, and the leftovers of a killed commit are finished (its tag
exists) or undone by the next one. Hooks and signing follow the repository's Git settings.

All Git I/O of dsops goes through this module's functions, and they run git through one runner
(``gitrun.run_git``), built on GitPython's command runner ``git.cmd.Git``: GitPython finds the
git executable and sets up its environment; the plumbing commands (stdin-fed, exit statuses
checked) are ours. No ``git.Repo`` objects: lookups are git commands too, so there is one way
to reach Git, and no Repo finalizer runs (or prints) after a Ctrl-C.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from dsops_jupyter.errors import NotARepositoryError, VcsError
from dsops_jupyter.events import OnEvent, ignore, log, progress, result
from dsops_jupyter.fsutil import (
    Written,
    blob_sha,
    left_alone_note,
    refuse_overwrites,
    write_files,
    written_by_convert,
)
from dsops_jupyter.gitobjects import (
    _NULL_SHA,
    _commit_message,
    _committer,
    _tag_message,
    _Target,
    _tree_blobs,
    _write_tree,
)
from dsops_jupyter.gitpolicy import _check_identity, _commit_tree, _make_tag, _run_commit_hooks
from dsops_jupyter.gitrun import GitFailed, Repository, run_git
from dsops_jupyter.model import GeneratedPackage, Version
from dsops_jupyter.vcs_txn import (
    _build_next_index,
    _disk_forward,
    _install_index,
    _journal,
    _lock_index,
    _recover,
    _repository_lock,
    _scratch_dir,
    _settle,
)

TAG_NAMESPACE = "dsops"
_TAG_RE = re.compile(r"^refs/tags/dsops/(?P<name>[^/]+)/v(?P<number>[1-9][0-9]*)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def tag_name(name: str, number: int) -> str:
    return f"{TAG_NAMESPACE}/{name}/v{number}"


# --- the repository ---------------------------------------------------------------------------
def open_repo(path: Path) -> Repository:
    """The work tree containing ``path`` (which may not exist yet, e.g. a package folder)."""
    try:
        out = run_git(
            _existing_folder(path),
            *("rev-parse", "--path-format=absolute", "--show-toplevel"),
            *("--absolute-git-dir", "--git-common-dir"),
        )
    except GitFailed:  # not in a work tree: none at all, a bare repository, or inside .git/
        raise NotARepositoryError(
            f"{path} is not inside a Git repository; run `git init` in your project folder "
            "(or move the notebook into a Git work tree) and try again"
        ) from None
    root, git_dir, common_dir = out.decode("utf-8", "surrogateescape").splitlines()
    return Repository(Path(root), Path(git_dir), Path(common_dir))


def _existing_folder(path: Path) -> Path:
    start = Path(path).absolute()
    while not start.is_dir() and start != start.parent:
        start = start.parent
    return start


def remote_url(path: Path, remote: str = "origin") -> str:
    """The configured URL of ``remote`` in the repository holding ``path``; "" without one."""
    try:
        repo = open_repo(path)
    except NotARepositoryError:
        return ""
    return repo.run("config", "--get", f"remote.{remote}.url", ok=(0, 1)).strip()


def work_tree_state(folder: Path) -> dict[str, Any] | None:
    """``{"commit": HEAD's sha, "dirty": uncommitted changes?}`` of the work tree holding
    ``folder`` (a run record's provenance); None outside a repository or before a commit."""
    try:
        head = run_git(folder, "rev-parse", "HEAD").decode().strip()
        status = run_git(folder, "status", "--porcelain")
    except VcsError:
        return None
    return {"commit": head, "dirty": bool(status.strip())}


def ignored_by_git(directory: Path, names: list[str]) -> set[str]:
    """The names (relative to ``directory``) Git ignores; none outside a work tree."""
    if not names or not directory.is_dir():
        return set()
    paths = b"".join(name.encode("utf-8", "surrogateescape") + b"\0" for name in names)
    try:  # .gitignore patterns are patterns: not literal paths here
        out = run_git(
            directory,
            *("check-ignore", "-z", "--stdin"),
            input=paths,
            env={"GIT_LITERAL_PATHSPECS": "0"},
            ok=(0, 1),
        )
    except VcsError:
        return set()
    return set(out.decode("utf-8", "surrogateescape").split("\0")) & set(names)


# --- reading versions --------------------------------------------------------------------------
def list_versions(path: Path, name: str | None = None) -> list[Version]:
    """Versions of ``name`` (all dsops pipelines if None) in the repository containing ``path``,
    sorted by name, then number."""
    return _versions(open_repo(path), name)


def last_version(repo: Repository, name: str) -> Version | None:
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


def _versions(repo: Repository, name: str | None) -> list[Version]:
    """One ``for-each-ref`` call: fast even with many tags (no per-tag object reads)."""
    pattern = f"refs/tags/{TAG_NAMESPACE}" + (f"/{name}" if name else "")
    fmt = "".join(f"%({field})%00" for field in _REF_FIELDS)
    out = repo.run("for-each-ref", f"--format={fmt}", pattern)
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


#: Called with the version whose commit and tag objects exist but whose refs have not moved:
#: building and smoke-running its image. Raising (or Ctrl-C) makes no version.
Gate = Callable[[Version], None]


def commit_package(
    pkg: GeneratedPackage,
    *,
    force: bool = False,
    on_event: OnEvent = ignore,
    gate: Gate | None = None,
) -> tuple[Version, bool]:
    """Write ``pkg`` into its folder and make it version N+1; ``(version, created)``.

    An unchanged package returns ``(last_version, False)``: no commit, no tag, no gate. Generated
    files changed by hand since the last version, and files in the folder dsops did not write,
    are refused (HandEditError) unless ``force``; even then dsops removes only files it generated.
    One commit at a time per repository (a lock under ``.git/``); leftovers of a killed commit
    are finished or undone first.

    ``gate`` runs between making the commit object and moving the refs, still under the
    repository lock. Holding the lock through a long image build is deliberate: the version
    number N is reserved while the image ``<name>:vN`` is built and tagged, so a second packager
    cannot build (and tag, or on rollback remove) an image of the same vN, and its refs update
    cannot fail the compare-and-swap after a wasted build. It waits LOCK_WAIT seconds, then is
    told another commit is running; the lock dies with its holder, so a killed build blocks no one.
    """
    _check_package(pkg)
    repo = open_repo(pkg.directory)
    with _repository_lock(repo, LOCK_WAIT):
        _recover(repo)
        target = _target(repo, pkg.directory)
        _check_identity(repo)
        return _commit(target, pkg, force, on_event, gate)


def _commit(
    target: _Target, pkg: GeneratedPackage, force: bool, on_event: OnEvent, gate: Gate | None
) -> tuple[Version, bool]:
    repo = target.repo
    progress(on_event, 0.0, f"checking {target.rel}/ against the last version of {pkg.name}")
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
    version = _record(target, pkg, number, stale, on_event, gate)
    result(on_event, f"Committed {version.tag} ({version.short})", version=version.to_json())
    return version, True


def _owned(repo: Repository, commit: str, rel: str, baseline: Mapping[str, str]) -> set[str]:
    """The files dsops generated in the folder at a version: its pipeline.json's ``files``. A
    version made before pipeline.json listed them holds only generated files in the folder (dsops
    then replaced the whole folder); a commit with no pipeline.json there owns nothing."""
    if "pipeline.json" not in baseline:
        return set()
    raw = repo.blob(baseline["pipeline.json"])
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


def _check_tag_is_free(repo: Repository, name: str, number: int) -> None:
    """A tag with the next version's name that is no dsops version blocks every commit: say so."""
    tag = tag_name(name, number)
    kind = repo.run("cat-file", "-t", f"refs/tags/{tag}", ok=(0, 1, 128)).strip()
    if kind:
        raise VcsError(
            f"tag {tag} already exists but is not a dsops version of {name} (it names a {kind} "
            f"dsops did not commit); delete it (`git tag -d {tag}`) or rename it, then commit again"
        )


def _record(
    target: _Target,
    pkg: GeneratedPackage,
    number: int,
    stale: list[str],
    on_event: OnEvent,
    gate: Gate | None,
) -> Version:
    """Commit + tag the package, then write it to disk and the index.

    Git objects (and the hooks) come first: a refusal leaves nothing. Then the ``gate`` (the
    image build and smoke run): a failure there leaves only unreachable objects. Then a
    journal, the index lock, the refs (one compare-and-swap transaction), the files, the index.
    A failure or Ctrl-C undoes what this process did; after kill -9 the journal lets the next
    commit finish the version (its tag exists) or undo the rest (it does not).
    """
    repo, tag = target.repo, tag_name(pkg.name, number)
    scratch = _scratch_dir(repo)
    progress(on_event, 0.2, f"committing {target.rel}/ as {tag}")
    journal: dict[str, Any] | None = None
    try:
        blobs = repo.store_blobs(pkg.files, scratch)
        index = scratch / "index"
        tree = _write_tree(target, blobs, stale, index)
        message = _run_commit_hooks(target, scratch, index, _commit_message(target, pkg, number))
        commit = _commit_tree(target, tree, message)
        committer = _committer(repo.run("cat-file", "commit", commit))
        tag_object = _make_tag(repo, scratch, commit, tag, committer, _tag_message(pkg, number))
        version = Version(
            name=pkg.name,
            number=number,
            tag=tag,
            commit=commit,
            short=commit[:7],
            epoch=int(committer.rsplit(" ", 2)[1]),
            message=message.strip(),
        )
        if gate is not None:
            gate(version)
        progress(on_event, 0.6, f"updating {target.branch} and {tag}")
        journal = _journal(target, scratch, pkg.files, blobs, stale, commit, tag, tag_object)
        _lock_index(repo, journal)
        _build_next_index(repo, journal)
        try:
            _update_refs(target, commit, tag, tag_object, f"dsops: {pkg.name} v{number}")
        except VcsError:
            journal["refs_refused"] = True  # Git said no: whatever the refs hold is not ours
            raise
        progress(on_event, 0.8, f"writing {len(pkg.files)} files to {target.rel}/")
        _disk_forward(repo, journal)
        progress(on_event, 0.9, "updating the index")
        _install_index(repo, journal)
    except BaseException:
        if journal is not None:
            _settle(repo, journal, undo=True)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    shutil.rmtree(scratch, ignore_errors=True)
    return version


def _target(repo: Repository, directory: Path) -> _Target:
    root = repo.root.resolve()
    folder = Path(directory).resolve()
    try:
        rel = folder.relative_to(root).as_posix()
    except ValueError:
        raise VcsError(f"{directory} is outside the Git work tree {root}") from None
    if rel in ("", ".") or rel == ".git" or rel.startswith(".git/"):
        raise VcsError(f"{directory} cannot hold generated files: use a subfolder of {root}")
    branch = repo.run("symbolic-ref", "-q", "HEAD", ok=(0, 1)).strip()
    if not branch:
        raise VcsError(
            f"HEAD is detached in {root}; check out a branch (`git switch <branch>`) "
            "before committing a version"
        )
    head = repo.run("rev-parse", "-q", "--verify", "HEAD^{commit}", ok=(0, 1)).strip() or None
    return _Target(repo, root, rel, branch, head)


def _check_package(pkg: GeneratedPackage) -> None:
    if not _NAME_RE.match(pkg.name) or ".." in pkg.name or pkg.name.endswith(".lock"):
        raise VcsError(f"{pkg.name!r} cannot be part of a Git tag name; rename the notebook")
    for name in pkg.files:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or {".", "..", ".git"} & set(parts) or "\\" in name:
            raise VcsError(f"generated file name {name!r} is not a plain relative path")


# --- refs --------------------------------------------------------------------------------------
def _update_refs(target: _Target, commit: str, tag: str, tag_object: str, reason: str) -> None:
    """Branch and tag in one transaction: both move or neither does. The old values make it a
    compare-and-swap: a commit made meanwhile, or a tag created meanwhile, fails the update."""
    old = target.head or _NULL_SHA
    commands = f"update {target.branch} {commit} {old}\ncreate refs/tags/{tag} {tag_object}\n"
    try:
        target.repo.run("update-ref", "-m", reason, "--stdin", input=commands.encode())
    except GitFailed as err:
        raise VcsError(
            f"could not move {target.branch} and create {tag} ({err.reason}); "
            "nothing was committed, try again"
        ) from err
