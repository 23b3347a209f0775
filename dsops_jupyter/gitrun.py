"""Running git plumbing commands, and the error a failed one raises."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

import git

from dsops_jupyter.errors import VcsError


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
