"""Never lose a user's file: what `dsops commit`/`dsops convert` may replace or remove, Git
policy (hooks, signing), blocked tags and failures that must not leave the repository stuck.

Real Git repositories in temporary folders, real notebooks, the real CLI in child processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsops_jupyter import vcs
from dsops_jupyter.assemble import generate_package
from dsops_jupyter.convert import package_files
from dsops_jupyter.errors import HandEditError, VcsError
from dsops_jupyter.vcs import commit_package
from tests.helpers import (
    assert_ok,
    clean_env,
    dsops,
    error_line,
    git,
    init_repo,
    isolate_git_config,
    make_notebook,
    tree_snapshot,
)

PACKAGE = "pipelines/demo"


def notebook_cells(alpha: int) -> list:
    return [
        (f"alpha = {alpha}", ["parameters"]),
        ("x = alpha + 1", ["step:load"]),
        ("print(x)", ["step:show"]),
    ]


@pytest.fixture(autouse=True)
def isolated_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No global config of the machine (signing, hooks path) leaks into these repositories."""
    isolate_git_config(tmp_path, monkeypatch)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A project with a notebook, the user's sources and notes, all committed."""
    root = init_repo(tmp_path / "project", commit=False)
    make_notebook(root / "demo.ipynb", notebook_cells(1))
    (root / "src").mkdir()
    (root / "src/a.py").write_text("A = 1\n")
    (root / "notes.md").write_text("# notes\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def set_alpha(root: Path, alpha: int, notebook: str = "demo.ipynb") -> None:
    make_notebook(root / notebook, notebook_cells(alpha))


def head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD")


def tracked(root: Path, rev: str = "HEAD") -> list[str]:
    return git(root, "ls-tree", "-r", "--name-only", rev).split("\n")


def assert_consistent(root: Path) -> None:
    """Branch, tags, index and disk agree: every version tag names its own dsops commit, the
    index and the files of the package are the committed ones, no lock or scratch is left."""
    for line in git(root, "tag", "--list", "dsops/*", "--format=%(refname:short)").split():
        name, number = line.removeprefix("dsops/").rsplit("/v", 1)
        subject = git(root, "log", "-1", "--format=%s", line)
        assert subject == f"dsops: {name} v{number}", (line, subject)
    assert git(root, "status", "--porcelain", "--", PACKAGE) == ""
    assert git(root, "diff", "--cached", "--name-only", "HEAD", "--", PACKAGE) == ""
    assert not (root / ".git/index.lock").exists()
    assert list((root / ".git").glob("dsops/txn-*")) == []
    fsck = subprocess.run(
        ["git", "fsck", "--no-dangling", "--no-progress"], cwd=root, capture_output=True, text=True
    )
    assert fsck.returncode == 0 and "error" not in fsck.stderr, fsck.stderr


# --- only ever remove what dsops generated (issue 8 item 1) ------------------------------------
def test_tracked_user_file_in_the_package_folder_is_refused_then_left_alone(repo: Path) -> None:
    assert_ok(dsops("commit", "demo.ipynb", cwd=repo))
    loader = repo / PACKAGE / "loader.py"
    loader.write_text("def load():\n    return 1\n")
    git(repo, "add", str(loader))
    git(repo, "commit", "-q", "-m", "my loader")
    set_alpha(repo, 2)
    tip = head(repo)

    line = error_line(dsops("commit", "demo.ipynb", cwd=repo))
    assert "pipelines/demo/loader.py" in line and "not written by dsops" in line
    assert "--force" in line
    assert head(repo) == tip and loader.exists()

    forced = assert_ok(dsops("commit", "demo.ipynb", "--force", cwd=repo))
    assert "left alone" in forced.stderr and "pipelines/demo/loader.py" in forced.stderr
    assert loader.read_text() == "def load():\n    return 1\n"
    assert f"{PACKAGE}/loader.py" in tracked(repo)
    assert git(repo, "tag", "--list") == "dsops/demo/v1\ndsops/demo/v2"
    assert_consistent(repo)


@pytest.mark.parametrize("out", ["notebooks", "src"])
def test_output_folder_holding_the_users_files(tmp_path: Path, out: str) -> None:
    """`--out notebooks` (where the notebook and notes live) or `--out src`: refused; --force
    writes the package beside the user's files and never deletes or commits them away."""
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "src").mkdir()
    git(root, "init", "-q", "-b", "main")
    make_notebook(root / "notebooks/demo.ipynb", notebook_cells(1))
    (root / "notebooks/notes.md").write_text("my notes\n")
    (root / "src/model.py").write_text("MODEL = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    users = {p: (root / p).read_bytes() for p in tracked(root)}

    line = error_line(dsops("commit", "notebooks/demo.ipynb", "--out", out, cwd=root))
    assert f"{out}/" in line and "not written by dsops" in line
    assert git(root, "tag", "--list") == "" and git(root, "status", "--porcelain") == ""

    for alpha in (1, 2):  # v1, then v2 removes nothing of the user's either
        set_alpha(root, alpha, "notebooks/demo.ipynb")
        done = assert_ok(dsops("commit", "notebooks/demo.ipynb", "--out", out, "--force", cwd=root))
        assert "left alone" in done.stderr
    current = tracked(root)
    for path, data in users.items():
        if path != "notebooks/demo.ipynb":  # the notebook itself changed (alpha)
            assert (root / path).read_bytes() == data
        assert path in current, path
    assert git(root, "log", "--diff-filter=D", "--name-only", "--format=") == ""


def test_only_files_listed_by_the_last_version_are_removed(repo: Path) -> None:
    """A version's pipeline.json lists its files: a later version removes only those."""
    manifest = {"name": "demo", "files": ["demo.py", "old.py", "pipeline.json"]}
    files = {
        "demo.py": b"print(1)\n",
        "old.py": b"OLD = 1\n",
        "pipeline.json": json.dumps(manifest).encode(),
    }
    pkg = generate_package(repo / "demo.ipynb")
    pkg.files = dict(files)
    commit_package(pkg)
    mine = repo / PACKAGE / "mine.py"
    mine.write_text("MINE = 1\n")
    git(repo, "add", str(mine))
    git(repo, "commit", "-q", "-m", "mine")

    manifest["files"] = ["demo.py", "pipeline.json"]
    pkg.files = {"demo.py": b"print(2)\n", "pipeline.json": json.dumps(manifest).encode()}
    with pytest.raises(HandEditError, match=r"pipelines/demo/mine\.py"):
        commit_package(pkg)
    version, created = commit_package(pkg, force=True)

    assert created and version.number == 2
    assert not (repo / PACKAGE / "old.py").exists() and mine.exists()
    assert sorted(git(repo, "ls-tree", "--name-only", "HEAD", f"{PACKAGE}/").split()) == [
        f"{PACKAGE}/demo.py",
        f"{PACKAGE}/mine.py",
        f"{PACKAGE}/pipeline.json",
    ]


def test_pipeline_json_lists_exactly_the_package_files(repo: Path) -> None:
    pkg = generate_package(repo / "demo.ipynb")
    spec = json.loads(pkg.files["pipeline.json"])
    assert spec["files"] == sorted(pkg.files) == package_files("demo")


# --- dsops convert (issue 9 item 11) -----------------------------------------------------------
def test_convert_refuses_to_overwrite_a_hand_edited_script(repo: Path) -> None:
    assert_ok(dsops("convert", "demo.ipynb", cwd=repo))
    set_alpha(repo, 2)
    assert_ok(dsops("convert", "demo.ipynb", cwd=repo))  # its own output is replaced
    script = repo / PACKAGE / "demo.py"
    script.write_text(script.read_text() + "# my fix\n")
    set_alpha(repo, 3)

    line = error_line(dsops("convert", "demo.ipynb", cwd=repo))
    assert "demo.py changed by hand" in line and "--force" in line
    assert script.read_text().endswith("# my fix\n")

    assert_ok(dsops("convert", "demo.ipynb", "--force", cwd=repo))
    assert "# my fix" not in script.read_text() and "alpha=3" in script.read_text()


def test_convert_replaces_a_package_written_before_pipeline_json_listed_its_files(
    repo: Path,
) -> None:
    from dsops_jupyter.spec import spec_bytes, spec_digest

    assert_ok(dsops("convert", "demo.ipynb", cwd=repo))
    spec_path = repo / PACKAGE / "pipeline.json"
    spec = json.loads(spec_path.read_bytes())
    del spec["files"]
    spec["format"] = 1
    spec["spec_sha256"] = spec_digest(spec)
    spec_path.write_bytes(spec_bytes(spec))  # as dsops 1 wrote it
    (repo / PACKAGE / "Dockerfile").write_text("FROM an-older-base\n")
    set_alpha(repo, 2)
    assert_ok(dsops("convert", "demo.ipynb", cwd=repo))
    assert json.loads(spec_path.read_bytes())["files"] == package_files("demo")


def test_convert_refuses_to_overwrite_the_users_dockerfile(repo: Path) -> None:
    dockerfile = repo / "Dockerfile"
    dockerfile.write_text("FROM my-own-image\n")
    line = error_line(dsops("convert", "demo.ipynb", "--out", ".", cwd=repo))
    assert "Dockerfile" in line and "not written by dsops" in line
    assert dockerfile.read_text() == "FROM my-own-image\n"
    assert not (repo / "demo.py").exists()

    forced = assert_ok(dsops("convert", "demo.ipynb", "--out", ".", "--force", cwd=repo))
    assert "left alone" in forced.stderr and "notes.md" in forced.stderr
    assert dockerfile.read_text() != "FROM my-own-image\n"
    assert (repo / "notes.md").read_text() == "# notes\n"


# --- failed commits never leave the repository stuck (issue 8, "never stuck") ------------------
def test_failed_commit_leaves_the_old_files_and_the_next_one_succeeds(repo: Path) -> None:
    assert_ok(dsops("commit", "demo.ipynb", cwd=repo))
    before = tree_snapshot(repo / PACKAGE)
    lock = repo / ".git/index.lock"
    lock.write_text("")  # someone else's git is running
    set_alpha(repo, 2)

    line = error_line(dsops("commit", "demo.ipynb", cwd=repo))
    assert "index" in line and "nothing was committed" in line
    assert tree_snapshot(repo / PACKAGE) == before
    assert lock.read_text() == ""  # the user's lock is not ours to remove

    lock.unlink()
    set_alpha(repo, 3)  # the notebook moved on: the old failure must not look like a hand edit
    assert "committed dsops/demo/v2" in assert_ok(dsops("commit", "demo.ipynb", cwd=repo)).stdout
    assert_consistent(repo)


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from dsops_jupyter.assemble import generate_package
    from dsops_jupyter.vcs import commit_package

    def on_event(event):
        if event.kind == "progress" and event.message.lower().startswith(sys.argv[2].lower()):
            os.kill(os.getpid(), signal.SIGKILL)

    commit_package(generate_package(sys.argv[1]), on_event=on_event)
    """
)


@pytest.mark.parametrize(
    ("stage", "committed"),
    [
        ("Committing", False),
        ("Updating refs/heads/main", False),
        ("Writing", True),
        ("Updating the index", True),
    ],
)
def test_kill_9_at_each_stage_is_finished_or_undone_by_the_next_commit(
    repo: Path, stage: str, committed: bool
) -> None:
    assert_ok(dsops("commit", "demo.ipynb", cwd=repo))
    (repo / "src/a.py").write_text("A = 2\n")
    git(repo, "add", "src/a.py")
    staged = git(repo, "diff", "--cached", "--binary", "--", "src")
    v1_files = tree_snapshot(repo / PACKAGE)
    set_alpha(repo, 2)

    killed = subprocess.run(
        [sys.executable, "-c", KILLER, str(repo / "demo.ipynb"), stage],
        cwd=repo,
        env=clean_env(),
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL
    leftovers = list((repo / ".git/dsops").glob("txn-*"))
    assert leftovers, "the killed commit's scratch folder lives under .git/dsops"
    tags = git(repo, "tag", "--list").split()
    assert tags == (["dsops/demo/v1", "dsops/demo/v2"] if committed else ["dsops/demo/v1"])
    if committed:  # killed between moving the refs and installing the index: git add must wait
        assert (repo / ".git/index.lock").read_text().startswith("dsops ")
    else:
        assert tree_snapshot(repo / PACKAGE) == v1_files

    done = assert_ok(dsops("commit", "demo.ipynb", "--json", cwd=repo))
    data = json.loads(done.stdout)
    assert data["tag"] == "dsops/demo/v2" and data["created"] is not committed
    assert git(repo, "diff", "--cached", "--binary", "--", "src") == staged
    assert (repo / "src/a.py").read_text() == "A = 2\n"
    assert_consistent(repo)
    assert git(repo, "rev-parse", "dsops/demo/v2^{commit}") == head(repo)


DIES_IN_UPDATE_REF = textwrap.dedent(
    """
    import os, signal, sys
    from dsops_jupyter import vcs
    from dsops_jupyter.assemble import generate_package

    def killed_inside_update_ref(*args, **kwargs):  # git died there holding HEAD.lock
        open(os.path.join(sys.argv[2], "HEAD.lock"), "w").write("ref: refs/heads/main\\n")
        os.kill(os.getpid(), signal.SIGKILL)

    vcs._update_refs = killed_inside_update_ref
    vcs.commit_package(generate_package(sys.argv[1]))
    """
)


def test_head_lock_left_by_a_git_killed_inside_update_ref_is_dropped(repo: Path) -> None:
    """Moving the branch HEAD names also locks HEAD; a git killed there leaves HEAD.lock (seen in
    the SIGKILL loop). A kill inside git cannot be timed, so the process dies where update-ref
    would run, leaving the lock as git leaves it."""
    assert_ok(dsops("commit", "demo.ipynb", cwd=repo))
    set_alpha(repo, 2)
    killed = subprocess.run(
        [sys.executable, "-c", DIES_IN_UPDATE_REF, str(repo / "demo.ipynb"), str(repo / ".git")],
        cwd=repo,
        env=clean_env(),
        capture_output=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (repo / ".git/HEAD.lock").exists()
    done = assert_ok(dsops("commit", "demo.ipynb", "--json", cwd=repo))
    assert json.loads(done.stdout)["tag"] == "dsops/demo/v2"
    assert not (repo / ".git/HEAD.lock").exists()
    assert_consistent(repo)


# --- one commit at a time (issue 8 item 2) -----------------------------------------------------
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"%d\\n" % os.getpid())
    print("locked", flush=True)
    time.sleep(60)
    """
)


def test_a_running_commit_makes_the_next_wait_then_fail_with_one_line(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(repo / ".git/dsops.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        monkeypatch.setattr(vcs, "LOCK_WAIT", 0.3)
        with pytest.raises(VcsError) as info:
            commit_package(generate_package(repo / "demo.ipynb"))
        assert str(info.value) == (
            f"another dsops commit is running in {repo} (pid {holder.pid}); "
            "try again when it finishes"
        )
        assert git(repo, "tag", "--list") == "" and not (repo / PACKAGE).exists()
    finally:
        holder.kill()
        holder.wait()
    version, created = commit_package(generate_package(repo / "demo.ipynb"))  # lock released
    assert created and version.number == 1


# --- Git policy: hooks and signing (issue 8) ---------------------------------------------------
def add_hook(root: Path, name: str, body: str, folder: str = ".git/hooks") -> None:
    hook = root / folder / name
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)


def test_failing_pre_commit_hook_refuses_the_version(repo: Path) -> None:
    add_hook(
        repo, "pre-commit", 'echo "checking..."\necho "lint: demo.py is too long" >&2\nexit 1\n'
    )
    line = error_line(dsops("commit", "demo.ipynb", cwd=repo))
    assert "pre-commit hook refused the version: lint: demo.py is too long" in line
    assert git(repo, "tag", "--list") == "" and git(repo, "rev-list", "--count", "HEAD") == "1"
    assert not (repo / PACKAGE).exists() and git(repo, "status", "--porcelain") == ""
    assert list((repo / ".git/dsops").glob("txn-*")) == []


def test_pre_commit_hook_sees_the_version_being_committed(repo: Path, tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    git(repo, "config", "core.hooksPath", "my-hooks")
    add_hook(repo, "pre-commit", f'git diff --cached --name-only > "{seen}"\n', "my-hooks")
    version, _ = commit_package(generate_package(repo / "demo.ipynb"))
    assert sorted(seen.read_text().split()) == [f"{PACKAGE}/{n}" for n in package_files("demo")]
    assert version.number == 1


def test_commit_msg_hook_refuses_or_edits_the_message(repo: Path) -> None:
    add_hook(repo, "commit-msg", 'echo "missing ticket number" >&2\nexit 1\n')
    with pytest.raises(VcsError, match="commit-msg hook refused the version: missing ticket"):
        commit_package(generate_package(repo / "demo.ipynb"))
    assert git(repo, "tag", "--list") == ""

    add_hook(repo, "commit-msg", 'echo "Signed-off-by: Dana <dana@example.com>" >> "$1"\n')
    version, _ = commit_package(generate_package(repo / "demo.ipynb"))
    body = git(repo, "log", "-1", "--format=%B", version.commit)
    assert body.startswith("dsops: demo v1") and "Signed-off-by: Dana" in body
    assert "Signed-off-by: Dana" in version.message


@pytest.fixture
def gnupg(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty GNUPGHOME (short path: gpg-agent's socket must fit), its agent stopped after."""
    home = Path(tempfile.mkdtemp(prefix="gpg", dir="/tmp"))
    home.chmod(0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    yield home
    if shutil.which("gpgconf"):
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ}, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("key", ["commit.gpgsign", "tag.gpgsign"])
def test_signing_that_cannot_work_is_refused(repo: Path, gnupg: Path, key: str) -> None:
    git(repo, "config", key, "true")
    line = error_line(dsops("commit", "demo.ipynb", cwd=repo))
    assert f"{key} is true but Git could not sign the version" in line
    assert f"git config {key} false" in line
    assert git(repo, "tag", "--list") == "" and not (repo / PACKAGE).exists()
    assert git(repo, "rev-list", "--count", "HEAD") == "1"


def test_versions_are_signed_when_configured(repo: Path, gnupg: Path) -> None:
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "Dana Scientist <dana@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    git(repo, "config", "user.signingkey", "dana@example.com")
    git(repo, "config", "commit.gpgsign", "true")
    git(repo, "config", "tag.gpgsign", "true")
    pkg = generate_package(repo / "demo.ipynb")
    version, _ = commit_package(pkg)
    git(repo, "verify-commit", version.commit)
    git(repo, "verify-tag", version.tag)
    raw = git(repo, "cat-file", "tag", version.tag)
    assert "tag dsops/demo/v1" in raw and "-----BEGIN PGP SIGNATURE-----" in raw
    manifest = pkg.files["pipeline.json"].decode()
    assert f"\n\ndsops: demo v1\n\n{manifest}-----BEGIN PGP SIGNATURE-----" in raw
    assert git(repo, "rev-parse", f"{version.tag}^{{commit}}") == version.commit == head(repo)
    assert git(repo, "tag", "--list") == "dsops/demo/v1"  # no scratch tag leaked


# --- a tag in the way (issue 8) ----------------------------------------------------------------
@pytest.mark.parametrize("target", ["user commit", "blob"])
def test_foreign_tag_with_the_next_version_name_is_named(repo: Path, target: str) -> None:
    commit_package(generate_package(repo / "demo.ipynb"))
    obj = "HEAD~1" if target == "user commit" else git(repo, "hash-object", "-w", "notes.md")
    git(repo, "tag", "dsops/demo/v2", obj)
    set_alpha(repo, 2)
    for _ in range(2):  # the same clear answer every time, not "try again"
        with pytest.raises(VcsError) as info:
            commit_package(generate_package(repo / "demo.ipynb"))
        message = str(info.value)
        assert message.startswith("tag dsops/demo/v2 already exists but is not a dsops version")
        assert "git tag -d dsops/demo/v2" in message and "try again" not in message
    git(repo, "tag", "-d", "dsops/demo/v2")
    version, created = commit_package(generate_package(repo / "demo.ipynb"))
    assert created and version.tag == "dsops/demo/v2"
