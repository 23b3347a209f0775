"""What the Versions view shows: a notebook's versions with their images, and their files.

Versions are the core's (vcs.list_versions); this adds, for the view, each version's image as
the engine knows it (asked once, with a short timeout: an absent engine must not hold a listing
up) and reads a file of a version's package folder from the tag's Git tree, nothing outside it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path, PurePosixPath
from typing import Any

from dsops_jupyter.errors import DsopsError
from dsops_jupyter.gitrun import Repository
from dsops_jupyter.model import Version, quoted

#: Seconds the engine gets to answer (a listing must stay quick without one).
ENGINE_TIMEOUT = 2.0
#: Largest file the view reads (a script, a lock file; not a data file committed by mistake).
MAX_FILE_BYTES = 2 * 1024 * 1024
#: Git tree modes of regular files (a symlink's target is no file of the version).
FILE_MODES = ("100644", "100755")


class VersionNotFoundError(DsopsError):
    """No such version of the notebook, or no such file in the version's package folder."""

    http_status = 404


def version_entries(notebook: Path, name: str | None = None) -> list[dict[str, Any]]:
    """The notebook's versions, newest first: each version's JSON, its image (``{ref, id}``,
    ``id`` None when no engine answers; None when the engine answers and has no such image)
    and its script's path in the tree (repository-relative)."""
    from dsops_jupyter.image import image_tags, repository_name
    from dsops_jupyter.vcs import list_versions

    pipeline, folder = _package_folder(notebook, name)
    versions = list_versions(notebook, pipeline)
    known = engine_images(repository_name(pipeline)) if versions else None
    entries = []
    for version in reversed(versions):
        ref = image_tags(pipeline, version)[0]
        image: dict[str, Any] | None = {"ref": ref, "id": None}
        if known is not None:
            image = {"ref": ref, "id": known[ref]} if ref in known else None
        script = (folder / f"{pipeline}.py").as_posix()
        entries.append({**version.to_json(), "image": image, "script": script})
    return entries


def version_file(
    notebook: Path, tag: str, file: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """``{tag, file, content}``: a file of the version's package folder (default: its script),
    read from the tag's tree; VersionNotFoundError for another tag or any other file."""
    from dsops_jupyter.vcs import list_versions, open_repo

    pipeline, folder = _package_folder(notebook, name)
    version = next((v for v in list_versions(notebook, pipeline) if v.tag == tag), None)
    if version is None:
        raise VersionNotFoundError(f"{notebook.name} has no version {quoted(tag)}")
    file = f"{pipeline}.py" if file is None else file
    parts = PurePosixPath(file).parts
    if not parts or file.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in file:
        raise VersionNotFoundError(f"{quoted(file)} is not a file of {tag}'s package folder")
    data = _blob(open_repo(notebook), version, (folder / file).as_posix())
    if data is None:
        raise VersionNotFoundError(f"{tag} has no file {quoted(file)} in {folder.as_posix()}/")
    if len(data) > MAX_FILE_BYTES:
        raise VersionNotFoundError(f"{tag}: {quoted(file)} is over {MAX_FILE_BYTES} bytes")
    return {"tag": tag, "file": file, "content": data.decode("utf-8", "replace")}


def engine_images(repository: str) -> dict[str, str] | None:
    """``{"<repository>:<tag>": image id}`` as the engine knows them; None if no engine
    answers within ENGINE_TIMEOUT seconds."""
    try:
        import docker

        client = docker.from_env(timeout=ENGINE_TIMEOUT)
    except Exception:  # DockerException: no engine configured or reachable
        return None
    try:
        return {
            tag: image.id for image in client.images.list(name=repository) for tag in image.tags
        }
    except Exception:  # requests' ConnectionError / ReadTimeout, APIError
        return None
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _package_folder(notebook: Path, name: str | None) -> tuple[str, PurePosixPath]:
    """The pipeline's name and its package folder relative to the repository root."""
    from dsops_jupyter.config import load_config
    from dsops_jupyter.markers import pipeline_name
    from dsops_jupyter.vcs import open_repo

    pipeline = pipeline_name(notebook, name)
    folder = load_config(notebook).package_dir(pipeline).resolve()
    root = open_repo(notebook).root.resolve()
    if not folder.is_relative_to(root):
        raise VersionNotFoundError(f"{notebook.name}: its package folder is outside the repository")
    return pipeline, PurePosixPath(folder.relative_to(root).as_posix())


def _blob(repo: Repository, version: Version, path: str) -> bytes | None:
    """The bytes of regular file ``path`` in the version's commit; None if it is not one."""
    listing = repo.run("ls-tree", "-z", version.commit, "--", path).rstrip("\0")
    if not listing or "\0" in listing:
        return None
    meta, _, listed = listing.partition("\t")
    mode, kind, sha = meta.split()
    if kind != "blob" or mode not in FILE_MODES or listed != path:
        return None
    return repo.blob(sha)
