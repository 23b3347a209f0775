"""Fixtures for the server extension tests: a real Jupyter server with dsops enabled, whose root
dir is a real Git repository holding real notebooks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

# jp_fetch, jp_serverapp and their hooks, for these tests only: their autouse event-loop
# fixture must not reach the Playwright browser tests.
from pytest_jupyter.jupyter_server import *  # noqa: F403

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"dsops_jupyter": True}}}


@pytest.fixture(autouse=True)
def _importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels started by jobs (papermill) must import dsops_jupyter from this checkout."""
    path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(REPO_ROOT), path) if p))
    if str(REPO_ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(REPO_ROOT))


@pytest.fixture
def git():
    return run_git


def run_git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def write_notebook(jp_root_dir: Path):
    """Write a notebook of code cells under the root; a (source, tags) tuple tags its cell."""

    def write(rel: str, *cells: str | tuple[str, list[str]]) -> Path:
        nb = nbformat.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        for cell in cells:
            source, tags = cell if isinstance(cell, tuple) else (cell, [])
            node = nbformat.v4.new_code_cell(source)
            if tags:
                node.metadata["tags"] = tags
            nb.cells.append(node)
        path = jp_root_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        return path

    return write


@pytest.fixture
def repo(jp_root_dir: Path) -> Path:
    """The server root as a Git work tree with examples/wine.ipynb committed."""
    git = run_git
    git(jp_root_dir, "init", "-q", "-b", "main")
    git(jp_root_dir, "config", "user.name", "Dsops Test")
    git(jp_root_dir, "config", "user.email", "dsops-test@example.invalid")
    git(jp_root_dir, "config", "commit.gpgsign", "false")
    (jp_root_dir / "examples").mkdir()
    shutil.copy(EXAMPLES / "wine.ipynb", jp_root_dir / "examples" / "wine.ipynb")
    git(jp_root_dir, "add", "examples/wine.ipynb")
    git(jp_root_dir, "commit", "-q", "-m", "add the wine notebook")
    return jp_root_dir
