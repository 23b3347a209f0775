"""The project's ``.dsops/`` folder (step cache, run folders, the server's jobs), never committed.

The folder ignores itself in Git with its own ``.gitignore`` holding ``*`` (as ``.pytest_cache``
does): nothing under it shows up in ``git status``, in a repository or a sub-folder of one, and
the user's own ``.gitignore`` is never touched. Every writer of the folder goes through
``prepare``, so the rule holds whichever of them creates it first.
"""

from __future__ import annotations

from pathlib import Path

from dsops_jupyter.fsutil import atomic_write

FOLDER = ".dsops"
IGNORE_ALL = b"# dsops state (step cache, runs, server jobs); never committed\n*\n"


def prepare(folder: Path) -> Path:
    """Create ``folder``; when it lies in (or is) a ``.dsops`` folder, that folder ignores
    itself in Git. A folder configured elsewhere (``[tool.dsops] runs-dir``) is only created."""
    folder.mkdir(parents=True, exist_ok=True)
    for candidate in (folder, *folder.parents):
        if candidate.name == FOLDER:
            ignore = candidate / ".gitignore"
            if not ignore.exists():
                atomic_write(ignore, IGNORE_ALL)
            break
    return folder
