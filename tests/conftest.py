"""Shared pytest setup: the private Docker engine plugin, and Git identity for test repositories."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.docker_engine"]


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits made by tests need an identity even on a machine with no global git config."""
    for var, value in {
        "GIT_AUTHOR_NAME": "dsops tests",
        "GIT_AUTHOR_EMAIL": "tests@dsops.invalid",
        "GIT_COMMITTER_NAME": "dsops tests",
        "GIT_COMMITTER_EMAIL": "tests@dsops.invalid",
    }.items():
        monkeypatch.setenv(var, value)
