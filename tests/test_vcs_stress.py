"""`dsops commit` under stress: two real commits at once, and real commits killed with SIGKILL
or interrupted with SIGINT at random moments (bounded loops, seeded, figures printed).

After every case: `git fsck` is clean, the user's files and index are exactly as they were, the
next commit succeeds, and branch, tags, index and files agree.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import assert_ok, clean_env, dsops, git, init_repo, make_notebook
from tests.test_vcs_hardening import assert_consistent, isolated_git, notebook_cells

__all__ = ["isolated_git"]  # the autouse fixture, shared

TRIALS = 10
KILLS_PER_SIGNAL = 20
# Each killed case is followed by a full commit: on a busy machine 20 cases may not fit in this
# budget; the loop then stops early (never before MIN_KILLS cases) and prints what it did.
KILL_BUDGET_SECONDS = float(os.environ.get("DSOPS_STRESS_BUDGET", "45"))
MIN_KILLS = 8


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Two notebooks and the user's work: committed, staged, unstaged and untracked changes."""
    root = init_repo(tmp_path / "project", commit=False)
    make_notebook(root / "demo.ipynb", notebook_cells(0))
    make_notebook(root / "other.ipynb", notebook_cells(0))
    for name in ("staged.py", "unstaged.py", "data.csv"):
        (root / name).write_text(f"# {name}\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    (root / "staged.py").write_text("# staged change\n")
    git(root, "add", "staged.py")
    (root / "unstaged.py").write_text("# unstaged change\n")
    (root / "untracked.txt").write_text("untracked\n")
    return root


def user_state(root: Path) -> dict[str, object]:
    outside = ["--", ".", ":(exclude)pipelines", ":(exclude)*.ipynb"]
    return {
        "cached": git(root, "diff", "--cached", "--binary", *outside),
        "diff": git(root, "diff", "--binary", *outside),
        "status": git(root, "status", "--porcelain", "--untracked-files=all", *outside),
        "files": {
            name: (root / name).read_bytes()
            for name in ("staged.py", "unstaged.py", "data.csv", "untracked.txt")
        },
    }


def start_commit(root: Path, notebook: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "dsops_jupyter", "commit", notebook, "--json"],
        cwd=root,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: signals reach its git children too
    )


def versions(root: Path, name: str) -> dict[str, str]:
    """``{tag: commit}`` of every version tag of ``name``."""
    out = git(
        root, "for-each-ref", "--format=%(refname:short) %(*objectname)", f"refs/tags/dsops/{name}"
    )
    return dict(line.split() for line in out.splitlines())


# --- two commits at once (issue 8 item 2) ------------------------------------------------------
def test_two_concurrent_commits_never_lose_a_version(project: Path) -> None:
    before = user_state(project)
    reported: list[tuple[str, str]] = []
    figures = {"trials": 0, "both ok": 0, "created": 0, "unchanged": 0}
    for trial in range(1, TRIALS + 1):
        same = trial % 2 == 1  # odd trials: the same notebook twice; even: two notebooks
        make_notebook(project / "demo.ipynb", notebook_cells(trial))
        make_notebook(project / "other.ipynb", notebook_cells(trial))
        pair = ("demo.ipynb", "demo.ipynb") if same else ("demo.ipynb", "other.ipynb")
        procs = [start_commit(project, notebook) for notebook in pair]
        outputs = [proc.communicate(timeout=120) for proc in procs]
        figures["trials"] += 1
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, f"trial {trial}: {err}"
            data = json.loads(out)
            reported.append((data["tag"], data["commit"]))
            figures["created" if data["created"] else "unchanged"] += 1
        figures["both ok"] += 1
        created = [json.loads(out)["created"] for out, _ in outputs]
        assert sorted(created) == ([False, True] if same else [True, True]), (trial, created)
        tags = {**versions(project, "demo"), **versions(project, "other")}
        for tag, commit in reported:  # every version ever reported is still there, unmoved
            assert tags.get(tag) == commit, (trial, tag, commit, tags)
    print(f"\nconcurrent commits: {figures}")
    assert len(versions(project, "demo")) == TRIALS
    assert len(versions(project, "other")) == TRIALS // 2
    assert git(project, "rev-list", "--count", "HEAD") == str(1 + TRIALS + TRIALS // 2)
    assert user_state(project) == before
    assert_consistent(project)


# --- killed and interrupted commits (issue 8, "never stuck") -----------------------------------
def full_run_seconds(root: Path) -> float:
    """How long one commit takes here (the machine may be busy): the kill window scales to it."""
    make_notebook(root / "demo.ipynb", notebook_cells(-1))
    start = time.perf_counter()
    assert_ok(dsops("commit", "demo.ipynb", cwd=root))
    return time.perf_counter() - start


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_commits_never_lose_files_or_leave_the_repository_stuck(
    project: Path, sig: signal.Signals
) -> None:
    seed = int(os.environ.get("DSOPS_STRESS_SEED", "8"))
    rng = random.Random(seed * 100 + sig)
    before = user_state(project)
    duration = full_run_seconds(project)
    figures = {"cases": 0, "finished before the signal": 0, "killed": 0, "clean": 0}
    deadline = time.monotonic() + KILL_BUDGET_SECONDS
    for case in range(KILLS_PER_SIGNAL):
        if case >= MIN_KILLS and time.monotonic() > deadline:
            break
        make_notebook(project / "demo.ipynb", notebook_cells(case))
        proc = start_commit(project, "demo.ipynb")
        # Most of a run is start-up: half the signals land late in it, where Git works.
        window = (0.6, 0.95) if case % 2 else (0.2, 0.95)
        time.sleep(duration * rng.uniform(*window))
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=60)
        figures["cases"] += 1
        figures["finished before the signal" if proc.returncode == 0 else "killed"] += 1
        assert "Traceback" not in err, f"case {case}: {err}"

        fsck = subprocess.run(["git", "fsck", "--no-progress"], cwd=project, capture_output=True)
        assert fsck.returncode == 0, (case, fsck.stderr)
        assert user_state(project) == before, f"case {case}"
        # The notebook moves on: files the signal left behind must not pass for hand edits.
        make_notebook(project / "demo.ipynb", notebook_cells(1000 + case))
        start = time.perf_counter()
        done = assert_ok(dsops("commit", "demo.ipynb", "--json", cwd=project))
        duration = time.perf_counter() - start  # the machine's pace now: aim the next signal
        data = json.loads(done.stdout)
        assert data["tag"] == f"dsops/demo/v{len(versions(project, 'demo'))}"
        assert git(project, "rev-parse", "HEAD") == data["commit"]
        assert user_state(project) == before, f"case {case}"
        assert_consistent(project)
        figures["clean"] += 1
    print(f"\n{sig.name} ({seed=}, last run {duration:.2f}s): {figures}")
    assert figures["killed"] >= max(2, figures["cases"] // 5), figures  # signals hit commits
