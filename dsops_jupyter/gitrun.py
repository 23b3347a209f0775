"""The one way dsops runs git: GitPython's command runner, and the error a failed command raises.

Every git command goes through :func:`run_git`, which lets GitPython's ``git.cmd.Git`` find
git (``GIT_PYTHON_GIT_EXECUTABLE``), build its environment (English messages, so the stderr
line a GitFailed quotes is stable) and start it. It is started as a process (``as_process``)
so the standard input can be fed bytes and, on any exception (Ctrl-C included), git is killed
and reaped before the exception goes on: no git keeps writing while dsops undoes a version.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from git.cmd import Git
from git.exc import GitCommandNotFound

from dsops_jupyter.errors import VcsError

# Paths given to git are file names, never patterns (`*.py` is a file called `*.py`).
_LITERAL = {"GIT_LITERAL_PATHSPECS": "1"}


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


def run_git(
    cwd: Path,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    ok: tuple[int, ...] = (0,),
) -> bytes:
    """Run ``git ARGS`` in ``cwd``; its standard output, or GitFailed for a status not in ``ok``.

    ``env`` adds to (never replaces) the environment; set a variable to "0" to switch it off.
    """
    if not cwd.is_dir():  # GitPython would run git in the process's cwd instead
        raise VcsError(f"{cwd} is not a folder: git cannot run there")
    command = [Git.GIT_PYTHON_GIT_EXECUTABLE or "git", *args]
    try:
        handle = Git(cwd).execute(
            command,
            istream=subprocess.PIPE if input is not None else None,
            as_process=True,
            env={**_LITERAL, **(env or {})},
        )
    except GitCommandNotFound:
        raise VcsError("git is not installed (or not on PATH); install Git and try again") from None
    process = handle.proc
    assert process is not None  # None only once the handle is finalized
    try:
        out, err = process.communicate(input)
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode not in ok:
        raise GitFailed(args[0], process.returncode, err)
    return out


@dataclass(frozen=True)
class Repository:
    """A Git work tree as git reports it: its top folder, its git dir and the common dir that
    worktrees share (refs, objects, config). A plain value: nothing to close."""

    root: Path
    git_dir: Path
    common_dir: Path

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        env: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> str:
        """``git ARGS`` at the work tree's top; its output as text (undecodable bytes kept)."""
        out = run_git(self.root, *args, input=input, env=env, ok=ok)
        return out.decode("utf-8", "surrogateescape")

    def blob(self, sha: str) -> bytes:
        """The exact bytes of a blob."""
        return run_git(self.root, "cat-file", "blob", sha)

    def store_blobs(self, blobs: Mapping[str, bytes], scratch: Path) -> dict[str, str]:
        """Write each value as a blob, exactly (no clean filters); ``{key: sha}``. One git for
        all: the bytes go through files in ``scratch`` (a folder of the caller's)."""
        if not blobs:
            return {}
        paths = [scratch.resolve() / f"blob-{number}" for number in range(len(blobs))]
        for path, data in zip(paths, blobs.values(), strict=True):
            path.write_bytes(data)
        out = self.run("hash-object", "-w", "--no-filters", "--", *map(str, paths))
        for path in paths:
            path.unlink()
        return dict(zip(blobs, out.split(), strict=True))
