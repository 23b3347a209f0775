"""Versions of generated packages, against real Git repositories in temporary folders."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dsops_jupyter.errors import HandEditError, NotARepositoryError, VcsError
from dsops_jupyter.events import Event
from dsops_jupyter.gitrun import run_git
from dsops_jupyter.model import GeneratedPackage, Version
from dsops_jupyter.vcs import (
    commit_package,
    ignored_by_git,
    last_version,
    list_versions,
    open_repo,
    remote_url,
    work_tree_state,
)
from tests.helpers import isolate_git_config

MANIFEST = b'{\n  "name": "demo",\n  "steps": ["load", "train"]\n}\n'
FILES = {
    "demo.py": b"def main():\n    print('v1')\n",
    "pipeline.json": MANIFEST,
    "requirements.lock": b"numpy==1.26.4\n",
    "Dockerfile": b"FROM python:3.11-slim\n",
    ".dockerignore": b"*\n!demo.py\n",
}
ENV_IDENTITY = (
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "EMAIL",
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global/system config or identity variables of the machine leak into the tests."""
    isolate_git_config(tmp_path, monkeypatch)
    for var in (*ENV_IDENTITY, "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE", "GIT_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit of user files and a notebook."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Dana Scientist")
    git(root, "config", "user.email", "dana@example.com")
    for name, text in {
        "README.md": "# project\n",
        "src/a.py": "A = 1\n",
        "src/b.py": "B = 2\n",
        "data.csv": "x,y\n1,2\n",
        "demo.ipynb": "{}\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial")
    return root


def package(
    root: Path, files: dict[str, bytes] | None = None, name: str = "demo"
) -> GeneratedPackage:
    return GeneratedPackage(
        name=name,
        directory=root / "pipelines" / name,
        files=dict(FILES if files is None else files),
        notebook_path=root / f"{name}.ipynb",
        content_hash="sha256:" + "ab" * 8,
    )


def changed(files: dict[str, bytes] | None = None, **edits: bytes) -> dict[str, bytes]:
    return {
        **(FILES if files is None else files),
        **{k.replace("_", "."): v for k, v in edits.items()},
    }


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def tags(root: Path) -> list[str]:
    return git(root, "tag", "--list").split()


def user_state(root: Path) -> dict[str, str]:
    """Everything `git` says about the user's files (the generated folder excluded)."""
    outside = ["--", ".", ":(exclude)pipelines"]
    return {
        "diff": git(root, "diff", "--binary", *outside),
        "cached": git(root, "diff", "--cached", "--binary", *outside),
        "status": git(root, "status", "--porcelain", "--untracked-files=all", *outside),
    }


def make_user_changes(root: Path) -> None:
    """Staged, unstaged, both, a staged deletion, a staged new file and an untracked file."""
    (root / "src/a.py").write_text("A = 10\n")
    git(root, "add", "src/a.py")
    (root / "src/b.py").write_text("B = 20\n")
    (root / "README.md").write_text("# staged\n")
    git(root, "add", "README.md")
    (root / "README.md").write_text("# staged\nand unstaged\n")
    git(root, "rm", "-q", "--cached", "data.csv")
    (root / "new.txt").write_text("new\n")
    git(root, "add", "new.txt")
    (root / "scratch.txt").write_text("untracked\n")


def raise_at(prefix: str, exc: BaseException | Callable[[], None]) -> Callable[[Event], None]:
    """An on_event sink that raises (or runs an action) when the commit reports a step starting
    with ``prefix`` (any case): how Ctrl-C and concurrent Git users are simulated at precise
    points."""

    def on_event(event: Event) -> None:
        if event.kind == "progress" and event.message.lower().startswith(prefix.lower()):
            if isinstance(exc, BaseException):
                raise exc
            exc()

    return on_event


# --- making versions ---------------------------------------------------------------------------
def test_first_version_commits_only_the_folder_and_tags_it(repo: Path) -> None:
    before = head(repo)
    events: list[Event] = []
    version, created = commit_package(package(repo), on_event=events.append)

    assert created
    assert (version.name, version.number, version.tag) == ("demo", 1, "dsops/demo/v1")
    assert version.commit == head(repo) and version.short == version.commit[:7]
    assert git(repo, "rev-parse", "HEAD^").strip() == before
    touched = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "HEAD").split()
    assert sorted(touched) == sorted(f"pipelines/demo/{name}" for name in FILES)
    for name, data in FILES.items():
        assert (repo / "pipelines/demo" / name).read_bytes() == data
        assert git(repo, "show", f"HEAD:pipelines/demo/{name}").encode() == data
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert git(repo, "log", "-1", "--format=%B", "HEAD") == (
        "dsops: demo v1\n\nnotebook: demo.ipynb\ncontent: sha256:abababababababab\n\n"
    )
    assert (
        version.message
        == "dsops: demo v1\n\nnotebook: demo.ipynb\ncontent: sha256:abababababababab"
    )
    assert [e.kind for e in events][-1] == "result"
    assert events[-1].data["version"] == version.to_json()


def test_tag_is_annotated_and_carries_the_manifest(repo: Path) -> None:
    version, _ = commit_package(package(repo))
    assert git(repo, "cat-file", "-t", version.tag).strip() == "tag"
    raw = subprocess.run(
        ["git", "cat-file", "tag", version.tag], cwd=repo, check=True, capture_output=True
    ).stdout
    header, _, message = raw.partition(b"\n\n")
    assert b"tagger Dana Scientist <dana@example.com>" in header
    assert message == b"dsops: demo v1\n\n" + MANIFEST
    assert git(repo, "rev-parse", f"{version.tag}^{{commit}}").strip() == version.commit


def test_epoch_is_the_version_commit_time(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_COMMITTER_DATE", "@1700000000 +0000")
    version, _ = commit_package(package(repo))
    assert version.epoch == 1700000000
    assert git(repo, "log", "-1", "--format=%ct", version.tag).strip() == "1700000000"
    assert list_versions(repo)[0].epoch == 1700000000


def test_next_version_replaces_the_folder(repo: Path) -> None:
    v1, _ = commit_package(package(repo, {**FILES, "old/helper.py": b"x = 1\n"}))
    files = changed(demo_py=b"print('v2')\n")
    v2, created = commit_package(package(repo, files))

    assert created and v2.number == 2 and v2.tag == "dsops/demo/v2"
    assert git(repo, "rev-parse", "HEAD^").strip() == v1.commit
    assert not (repo / "pipelines/demo/old").exists()  # stale file and its folder removed
    tree = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "pipelines/demo").split()
    assert sorted(tree) == sorted(f"pipelines/demo/{name}" for name in files)
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    assert [v.number for v in list_versions(repo / "demo.ipynb", "demo")] == [1, 2]


def test_unchanged_package_makes_no_commit_and_no_tag(repo: Path) -> None:
    v1, _ = commit_package(package(repo))
    tip, tag_list = head(repo), tags(repo)
    (repo / "pipelines/demo/Dockerfile").unlink()  # a deleted generated file is just restored

    again, created = commit_package(package(repo))

    assert not created and again == v1
    assert (head(repo), tags(repo)) == (tip, tag_list)
    assert (repo / "pipelines/demo/Dockerfile").read_bytes() == FILES["Dockerfile"]


def test_user_changes_elsewhere_stay_exactly_as_they_were(repo: Path) -> None:
    make_user_changes(repo)
    before = user_state(repo)
    assert before["diff"] and before["cached"] and before["status"]

    commit_package(package(repo))
    assert user_state(repo) == before
    commit_package(package(repo, changed(demo_py=b"print('v2')\n")))
    assert user_state(repo) == before

    # Nothing of the user's work went into the version commits.
    for rev in ("HEAD", "HEAD^"):
        touched = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", rev).split()
        assert touched and all(path.startswith("pipelines/demo/") for path in touched)
    assert git(repo, "show", "HEAD:src/a.py") == "A = 1\n"
    # The whole status, folder included: generated files are clean, the user's are untouched.
    status = git(repo, "status", "--porcelain", "--untracked-files=all")
    assert "pipelines" not in status and status == before["status"]


def test_root_commit_on_unborn_branch_keeps_staged_files(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "trunk")
    git(root, "config", "user.name", "Dana Scientist")
    git(root, "config", "user.email", "dana@example.com")
    (root / "staged.py").write_text("staged = True\n")
    git(root, "add", "staged.py")

    version, created = commit_package(package(root))

    assert created and version.number == 1
    assert git(root, "rev-parse", "refs/heads/trunk").strip() == version.commit
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    tree = git(root, "ls-tree", "-r", "--name-only", "HEAD").split()
    assert sorted(tree) == sorted(f"pipelines/demo/{name}" for name in FILES)
    assert git(root, "status", "--porcelain") == "A  staged.py\n"


def test_relative_package_directory(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "src")
    pkg = package(repo)
    pkg.directory = Path("../pipelines/demo")
    version, _ = commit_package(pkg)
    assert git(repo, "ls-tree", "--name-only", version.commit, "pipelines/demo/demo.py").strip()


def test_identity_from_environment_only(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "CI Bot")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "ci@example.com")
    version, _ = commit_package(package(repo))
    assert git(repo, "log", "-1", "--format=%an <%ae> %cn", version.commit).strip() == (
        "CI Bot <ci@example.com> CI Bot"
    )


def test_commit_is_fast(repo: Path) -> None:
    commit_package(package(repo))
    timings = []
    for i in range(3):
        start = time.perf_counter()
        commit_package(package(repo, changed(demo_py=f"print({i})\n".encode())))
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.5, timings


# --- hand edits --------------------------------------------------------------------------------
def test_hand_edit_is_refused_before_writing(repo: Path) -> None:
    commit_package(package(repo))
    edited = repo / "pipelines/demo/demo.py"
    edited.write_bytes(b"# my fix\n")
    tip = head(repo)

    with pytest.raises(HandEditError, match=r"pipelines/demo/demo\.py.*use --force") as info:
        commit_package(package(repo, changed(pipeline_json=b"{}\n")))

    assert "dsops/demo/v1" in str(info.value) and "\n" not in str(info.value)
    assert edited.read_bytes() == b"# my fix\n"
    assert (repo / "pipelines/demo/pipeline.json").read_bytes() == MANIFEST  # nothing written
    assert (head(repo), tags(repo)) == (tip, ["dsops/demo/v1"])


def test_force_overwrites_hand_edit(repo: Path) -> None:
    commit_package(package(repo))
    (repo / "pipelines/demo/demo.py").write_bytes(b"# my fix\n")
    version, created = commit_package(package(repo, changed(pipeline_json=b"{}\n")), force=True)
    assert created and version.number == 2
    assert (repo / "pipelines/demo/demo.py").read_bytes() == FILES["demo.py"]
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_hand_edit_of_an_unchanged_package_is_refused(repo: Path) -> None:
    commit_package(package(repo))
    (repo / "pipelines/demo/Dockerfile").write_bytes(b"FROM mine\n")
    with pytest.raises(HandEditError, match="Dockerfile"):
        commit_package(package(repo))
    version, created = commit_package(package(repo), force=True)
    assert not created and version.number == 1
    assert (repo / "pipelines/demo/Dockerfile").read_bytes() == FILES["Dockerfile"]


def test_edit_matching_the_new_package_is_not_a_hand_edit(repo: Path) -> None:
    commit_package(package(repo))
    files = changed(demo_py=b"print('v2')\n")
    (repo / "pipelines/demo/demo.py").write_bytes(files["demo.py"])  # e.g. `dsops convert` ran
    version, created = commit_package(package(repo, files))
    assert created and version.number == 2


def test_edited_file_that_the_new_package_drops_is_refused(repo: Path) -> None:
    commit_package(package(repo, {**FILES, "extra.py": b"x = 1\n"}))
    (repo / "pipelines/demo/extra.py").write_bytes(b"x = 2\n")
    with pytest.raises(HandEditError, match=r"pipelines/demo/extra\.py"):
        commit_package(package(repo))
    assert (repo / "pipelines/demo/extra.py").read_bytes() == b"x = 2\n"


def test_extra_file_in_the_folder_is_refused_unless_ignored(repo: Path) -> None:
    commit_package(package(repo))
    folder = repo / "pipelines/demo"
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__/demo.cpython-311.pyc").write_bytes(b"\0bytecode")
    (repo / ".gitignore").write_text("*.log\n")
    (folder / "run.log").write_text("log\n")
    (folder / "notes.md").write_text("mine\n")
    files = changed(demo_py=b"print('v2')\n")

    with pytest.raises(HandEditError, match=r"pipelines/demo/notes\.md.*--force"):
        commit_package(package(repo, files))

    (folder / "notes.md").unlink()
    version, created = commit_package(package(repo, files))
    assert created and version.number == 2
    assert (folder / "run.log").exists() and (folder / "__pycache__").exists()


def test_untracked_old_output_before_the_first_version_is_refused(repo: Path) -> None:
    folder = repo / "pipelines/demo"
    folder.mkdir(parents=True)
    (folder / "demo.py").write_bytes(b"# hand written\n")
    with pytest.raises(HandEditError, match="the last commit"):
        commit_package(package(repo))
    assert (folder / "demo.py").read_bytes() == b"# hand written\n"
    version, _ = commit_package(package(repo), force=True)
    assert version.number == 1


# --- refusals ----------------------------------------------------------------------------------
def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotARepositoryError, match=r"not inside a Git repository; run `git init`"):
        commit_package(package(plain))
    assert not (plain / "pipelines").exists()
    with pytest.raises(NotARepositoryError, match="plain"):
        list_versions(plain / "demo.ipynb")


def test_detached_head_is_refused(repo: Path) -> None:
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(VcsError, match=r"check out a branch"):
        commit_package(package(repo))
    assert tags(repo) == [] and not (repo / "pipelines").exists()


def test_missing_identity_names_the_git_config_commands(repo: Path) -> None:
    git(repo, "config", "--unset", "user.name")
    git(repo, "config", "--unset", "user.email")
    with pytest.raises(VcsError) as info:
        commit_package(package(repo))
    message = str(info.value)
    assert 'git config --global user.name "Your Name"' in message
    assert 'git config --global user.email "you@example.com"' in message
    assert tags(repo) == [] and not (repo / "pipelines").exists()


def test_name_that_cannot_be_a_tag_is_refused(repo: Path) -> None:
    with pytest.raises(VcsError, match="tag name"):
        commit_package(package(repo, name="my model"))
    assert not (repo / "pipelines").exists()


def test_folder_must_be_a_subfolder(repo: Path) -> None:
    root_pkg = package(repo)
    root_pkg.directory = repo
    with pytest.raises(VcsError, match="subfolder"):
        commit_package(root_pkg)
    assert tags(repo) == []


# --- failures leave nothing behind -------------------------------------------------------------
def assert_nothing_committed(repo: Path, tip: str, tag_list: list[str], state: dict) -> None:
    assert head(repo) == tip
    assert tags(repo) == tag_list
    assert user_state(repo) == state
    assert git(repo, "ls-files", "--stage", "pipelines") == git(
        repo,
        "ls-tree",
        "-r",
        "--format=%(objectmode) %(objectname) 0\t%(path)",
        "HEAD",
        "pipelines",
    )


@pytest.mark.parametrize(
    "stage", ["Writing", "Committing", "Updating refs/heads/main", "Updating the index"]
)
def test_ctrl_c_at_any_stage_rolls_back(repo: Path, stage: str) -> None:
    v1, _ = commit_package(package(repo))
    make_user_changes(repo)
    tip, tag_list, state = head(repo), tags(repo), user_state(repo)

    with pytest.raises(KeyboardInterrupt):
        commit_package(
            package(repo, changed(demo_py=b"print('v2')\n")),
            on_event=raise_at(stage, KeyboardInterrupt()),
        )

    assert_nothing_committed(repo, tip, tag_list, state)
    assert last_version(open_repo(repo), "demo") == v1
    # The generated files on disk may be new; a retry is not mistaken for a hand edit.
    version, created = commit_package(package(repo, changed(demo_py=b"print('v2')\n")))
    assert created and version.number == 2 and user_state(repo) == state


def test_tag_created_meanwhile_aborts_without_moving_the_branch(repo: Path) -> None:
    commit_package(package(repo))
    make_user_changes(repo)
    tip, state = head(repo), user_state(repo)

    def competitor() -> None:
        git(repo, "tag", "dsops/demo/v2", "HEAD~1")

    with pytest.raises(VcsError, match=r"dsops/demo/v2.*nothing was committed"):
        commit_package(
            package(repo, changed(demo_py=b"print('v2')\n")),
            on_event=raise_at("Updating refs", competitor),
        )
    assert head(repo) == tip
    assert (
        git(repo, "rev-parse", "dsops/demo/v2").strip() == git(repo, "rev-parse", "HEAD~1").strip()
    )
    assert user_state(repo) == state


def test_branch_moved_meanwhile_aborts(repo: Path) -> None:
    commit_package(package(repo))
    make_user_changes(repo)

    def competitor() -> None:
        git(repo, "commit", "-q", "-m", "user commit")

    with pytest.raises(VcsError, match="refs/heads/main"):
        commit_package(
            package(repo, changed(demo_py=b"print('v2')\n")),
            on_event=raise_at("Updating refs", competitor),
        )
    assert git(repo, "log", "-1", "--format=%s").strip() == "user commit"
    assert tags(repo) == ["dsops/demo/v1"]


def test_locked_branch_ref_fails_cleanly(repo: Path) -> None:
    commit_package(package(repo))
    make_user_changes(repo)
    tip, state = head(repo), user_state(repo)
    lock = repo / ".git/refs/heads/main.lock"
    lock.write_text("")

    with pytest.raises(VcsError, match="nothing was committed"):
        commit_package(package(repo, changed(demo_py=b"print('v2')\n")))

    lock.unlink()
    assert_nothing_committed(repo, tip, ["dsops/demo/v1"], state)


def test_index_update_failure_rolls_back_branch_and_tag(repo: Path) -> None:
    """The index is the last step, after the refs moved: its failure must undo them."""
    commit_package(package(repo))
    make_user_changes(repo)
    tip, state = head(repo), user_state(repo)
    lock = repo / ".git/index.lock"
    lock.write_text("")

    with pytest.raises(VcsError, match="index"):
        commit_package(package(repo, changed(demo_py=b"print('v2')\n")))

    lock.unlink()
    assert_nothing_committed(repo, tip, ["dsops/demo/v1"], state)


def test_failure_on_unborn_branch_leaves_it_unborn(tmp_path: Path) -> None:
    root = tmp_path / "fresh"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.name", "Dana Scientist")
    git(root, "config", "user.email", "dana@example.com")
    with pytest.raises(KeyboardInterrupt):
        commit_package(package(root), on_event=raise_at("Updating the index", KeyboardInterrupt()))
    assert git(root, "for-each-ref") == ""
    assert git(root, "ls-files") == ""


# --- listing versions --------------------------------------------------------------------------
def test_list_versions_sorted_filtered_and_parsed(repo: Path) -> None:
    commit_package(package(repo))
    commit_package(package(repo, name="other"))
    commit_package(package(repo, changed(demo_py=b"print('v2')\n")))
    for tag in ("dsops/demo/v10", "dsops/demo/v9"):
        git(repo, "tag", "-a", "-m", "by hand", tag)
    for noise in ("v1.0", "dsops/demo/v0", "dsops/demo/latest", "dsops/demo/v01", "dsops/v3"):
        git(repo, "tag", noise)

    demo = list_versions(repo / "demo.ipynb", "demo")
    assert [v.number for v in demo] == [1, 2, 9, 10]
    assert demo[-1].commit == head(repo) and demo[-1].tag == "dsops/demo/v10"
    everything = list_versions(repo / "src")
    assert [(v.name, v.number) for v in everything] == [
        ("demo", 1),
        ("demo", 2),
        ("demo", 9),
        ("demo", 10),
        ("other", 1),
    ]
    assert list_versions(repo, "dem") == [] and list_versions(repo, "missing") == []
    version, _ = commit_package(package(repo, changed(demo_py=b"print('v11')\n")))
    assert version.number == 11


def test_version_to_json(repo: Path) -> None:
    version, _ = commit_package(package(repo))
    data = version.to_json()
    assert set(data) == {"name", "number", "tag", "commit", "short", "epoch", "message"}
    assert Version(**data) == version == list_versions(repo)[0]


# --- the one Git runner ------------------------------------------------------------------------
def test_repository_lookups(repo: Path, tmp_path: Path) -> None:
    """open_repo, remote_url, work_tree_state and ignored_by_git ask git itself."""
    found = open_repo(repo / "pipelines" / "demo")  # not created yet: its nearest folder counts
    assert (found.root, found.git_dir, found.common_dir) == (repo, repo / ".git", repo / ".git")
    assert remote_url(repo / "src") == "" and remote_url(tmp_path / "elsewhere") == ""
    git(repo, "remote", "add", "origin", "https://bot:s3cret@example.com/x.git")
    assert remote_url(repo / "src") == "https://bot:s3cret@example.com/x.git"
    assert work_tree_state(repo / "src") == {"commit": head(repo), "dirty": False}
    (repo / "new.txt").write_text("untracked\n")
    assert work_tree_state(repo) == {"commit": head(repo), "dirty": True}
    outside = tmp_path / "outside"
    outside.mkdir()
    assert work_tree_state(outside) is None
    (repo / ".gitignore").write_text("*.tmp\n")
    assert ignored_by_git(repo, ["a.tmp", "a.py", "[x].tmp"]) == {"a.tmp", "[x].tmp"}
    assert ignored_by_git(outside, ["a.tmp"]) == set()
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    for path in (outside, bare, repo / ".git"):
        with pytest.raises(NotARepositoryError):
            open_repo(path)


def test_interrupted_git_is_killed_and_reaped_before_the_exception_goes_on(
    tmp_path: Path,
) -> None:
    """Ctrl-C while git runs: no git may go on writing while dsops undoes a version."""
    pids = tmp_path / "pids"
    slow = f"alias.slow=!echo $PPID $$ > {pids}; exec sleep 20"

    def interrupt(_signum: int, _frame: object) -> None:
        if not pids.exists() or not pids.read_text().strip():
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # git has not started yet
            return
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt) as caught:  # its frames, and git's handle, live on
            run_git(tmp_path, "-c", slow, "slow")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    git_pid, sleep_pid = map(int, pids.read_text().split())
    try:
        assert time.monotonic() - started < 15
        with pytest.raises(ProcessLookupError):
            os.kill(git_pid, 0)  # killed and reaped: not even a zombie is left
        assert caught.traceback  # (as in vcs, where the undo runs while the exception is live)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sleep_pid, signal.SIGKILL)  # the alias's command, which git leaves behind
