"""What the repository's Git settings ask of a version: an identity, its hooks, signing."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from dsops_jupyter.errors import VcsError
from dsops_jupyter.gitobjects import _parents, _Target
from dsops_jupyter.gitrun import GitFailed, Repository, run_git

_IDENTITY_HELP = (
    'run `git config --global user.name "Your Name"` and '
    '`git config --global user.email "you@example.com"` (or set GIT_AUTHOR_NAME/GIT_AUTHOR_EMAIL '
    "and GIT_COMMITTER_NAME/GIT_COMMITTER_EMAIL), then try again"
)


def _check_identity(repo: Repository) -> None:
    """Refuse before writing anything if git would not know who commits."""
    out = repo.run(
        "config", "-z", "--get-regexp", r"^(user|author|committer)\.(name|email)$", ok=(0, 1)
    )
    entries = (entry.partition("\n") for entry in out.split("\0") if entry)
    configured = {key.lower() for key, _, value in entries if value.strip()}

    def known(role: str, field: str) -> bool:
        env = os.environ.get(f"GIT_{role.upper()}_{field.upper()}")
        if field == "email":
            env = env or os.environ.get("EMAIL")
        return bool(env) or bool(configured & {f"user.{field}", f"{role}.{field}"})

    roles = ("author", "committer")
    if not all(known(role, field) for role in roles for field in ("name", "email")):
        raise VcsError(f"Git does not know who you are; {_IDENTITY_HELP}")


def _run_commit_hooks(target: _Target, scratch: Path, index: Path, message: str) -> str:
    """The repository's pre-commit and commit-msg hooks, run as `git commit` runs them
    (pre-commit sees the version's index as GIT_INDEX_FILE; commit-msg gets the message file
    and may edit it). A failing hook refuses the version before anything moved."""
    env = {"GIT_INDEX_FILE": str(index), "GIT_EDITOR": ":"}
    _run_hook(target, "pre-commit", [], env)
    message_file = scratch / "COMMIT_EDITMSG"
    message_file.write_text(message, encoding="utf-8")
    if _run_hook(target, "commit-msg", [str(message_file)], env):
        message = message_file.read_text(encoding="utf-8", errors="surrogateescape")
        if not message.strip():
            raise VcsError(
                "the commit-msg hook emptied the version's message; nothing was committed"
            )
    return message


def _run_hook(target: _Target, name: str, args: list[str], env: Mapping[str, str]) -> bool:
    """Run one hook if the repository has it (executable, as Git requires); True if it ran."""
    found = target.repo.run("rev-parse", "--git-path", f"hooks/{name}").strip()
    hook = target.root / found
    if not hook.is_file() or not os.access(hook, os.X_OK):
        return False
    clean = {k: v for k, v in os.environ.items() if k != "GIT_LITERAL_PATHSPECS"}
    proc = subprocess.run(
        [str(hook), *args],
        cwd=target.root,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if proc.returncode != 0:
        lines = proc.stdout.decode("utf-8", "replace").splitlines()
        last = next((line.strip() for line in reversed(lines) if line.strip()), "")
        said = f": {last}" if last else f" (exit status {proc.returncode})"
        raise VcsError(
            f"the {name} hook refused the version{said}; fix what it reports and commit again "
            "(nothing was committed)"
        )
    return True


def _signing(repo: Repository, key: str) -> bool:
    return repo.run("config", "--type=bool", "--get", key, ok=(0, 1)).strip() == "true"


def _commit_tree(target: _Target, tree: str, message: str) -> str:
    """The version commit, signed when ``commit.gpgSign`` asks for it (as `git commit` would)."""
    sign = ["-S"] if _signing(target.repo, "commit.gpgsign") else []
    try:
        out = target.repo.run("commit-tree", *sign, tree, *_parents(target), input=message.encode())
    except GitFailed as err:
        if not sign:
            raise
        raise _signing_error("commit.gpgsign", err) from err
    return out.strip()


def _signing_error(key: str, err: GitFailed) -> VcsError:
    return VcsError(
        f"{key} is true but Git could not sign the version ({err.reason}); set up your "
        f"signing key (user.signingkey, gpg.program), or switch signing off with "
        f"`git config {key} false`; nothing was committed"
    )


def _make_tag(
    repo: Repository, scratch: Path, commit: str, tag: str, tagger: str, message: str
) -> str:
    """The annotated tag object only (its ref is created together with the branch update);
    signed, as `git tag -s` signs, when ``tag.gpgSign``/``tag.forceSignAnnotated`` ask."""
    if _signing(repo, "tag.gpgsign") or _signing(repo, "tag.forcesignannotated"):
        return _signed_tag(repo, scratch, commit, tag, message)
    body = f"object {commit}\ntype commit\ntag {tag}\ntagger {tagger}\n\n{message}"
    return repo.run("mktag", input=body.encode()).strip()


def _signed_tag(repo: Repository, scratch: Path, commit: str, tag: str, message: str) -> str:
    """Let `git tag -s` sign it (gpg, ssh or x509, the user's key and program) in a scratch
    repository that borrows our objects and config, so no ref of ours is created; then store
    the exact signed object here."""
    side = scratch / "sign.git"
    repo.run("init", "-q", "--bare", str(side))
    objects = repo.common_dir.resolve() / "objects"
    (side / "objects/info/alternates").write_text(f"{objects}\n")
    config = repo.common_dir.resolve() / "config"
    with (side / "config").open("a") as handle:
        handle.write(f"[include]\n\tpath = {json.dumps(str(config), ensure_ascii=False)}\n")
    env = {"GIT_DIR": str(side)}
    try:
        repo.run(
            *("tag", "-s", "--cleanup=verbatim", "-F", "-", tag, commit),
            input=message.encode(),
            env=env,
        )
    except GitFailed as err:
        raise _signing_error("tag.gpgsign", err) from err
    raw = run_git(repo.root, "cat-file", "tag", f"refs/tags/{tag}", env=env)
    return repo.run("mktag", input=raw).strip()
