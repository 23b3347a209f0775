"""What an export is made from: the notebook's latest version, its spec and its image.

The spec is the version's committed ``pipeline.json`` (what the image holds), never the notebook
as it is now; the image is the one built from that version's commit, found in the engine by its
labels, or the reference ``--image`` gives, which must exist (locally or in its registry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsops_jupyter.config import load_config, project_path
from dsops_jupyter.errors import DsopsError, ImageError
from dsops_jupyter.image import connect, engine_address, image_tags
from dsops_jupyter.markers import pipeline_name
from dsops_jupyter.model import Version
from dsops_jupyter.recipe import check_base_image
from dsops_jupyter.vcs import list_versions, open_repo

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.images import Image


class ExportError(DsopsError):
    """The pipeline cannot be exported as asked (no version yet, a bad grid, a bad extra)."""


class ExtraMissingError(ExportError):
    """The engine's Python package is not installed: name the extra that installs it."""


@dataclass(frozen=True)
class ImageRef:
    """The image every step runs in: ``reference`` is what the engine pulls (a digest-pinned
    ``repo@sha256:...`` when a registry knows it, else the version's tag); ``image_id`` the
    engine's config digest, recorded so a tag that moved can be told apart."""

    reference: str
    image_id: str = ""
    digest: str = ""

    @property
    def pinned(self) -> bool:
        return "@sha256:" in self.reference


def latest_version(notebook: Path, name: str | None = None) -> tuple[Version, Path]:
    """The notebook's newest version and its package folder; one line when there is none."""
    pipeline = pipeline_name(notebook, name)
    versions = list_versions(notebook, pipeline)
    if not versions:
        raise ExportError(
            f"{notebook.name} has no version yet: run `dsops package {notebook}` first "
            "(an export runs a committed version's image)"
        )
    return versions[-1], load_config(notebook.resolve()).package_dir(pipeline)


def version_spec(notebook: Path, version: Version, package_dir: Path) -> dict[str, Any]:
    """The ``pipeline.json`` committed in ``version``."""
    repo = open_repo(package_dir)
    rel = project_path(package_dir.resolve() / "pipeline.json", repo.root)
    text = repo.run("show", f"{version.commit}:{rel}", ok=(0, 128))
    try:
        spec = json.loads(text)
    except ValueError:
        spec = None
    if not isinstance(spec, dict) or "steps" not in spec:
        raise ExportError(
            f"{version.tag} has no readable {rel}: package {notebook.name} again (`dsops package`)"
        )
    return spec


def resolve_image(version: Version, reference: str | None) -> ImageRef:
    """The image of ``version`` in the engine, or ``reference``; refuse one that does not exist."""
    client = connect()
    if reference is None:
        return _version_image(client, version)
    check_base_image(reference)  # a name:tag or name@sha256:digest, nothing else
    import docker.errors

    try:
        return _ref(client.images.get(reference), reference)
    except docker.errors.ImageNotFound:
        pass
    try:  # not built here: ask its registry, and pin the digest the registry reports
        data = client.images.get_registry_data(reference)
    except docker.errors.APIError:
        raise ImageError(
            f"image {reference} does not exist: not in the Docker engine at {engine_address()} "
            "and no registry has it; build it with `dsops package`, or push it first"
        ) from None
    return ImageRef(reference=f"{_repository(reference)}@{data.id}", digest=str(data.id))


def _version_image(client: DockerClient, version: Version) -> ImageRef:
    """The image `dsops package` built from ``version`` (its labels name the tag and commit)."""
    labels = [f"io.dsops.name={version.name}", f"io.dsops.tag={version.tag}"]
    found = [
        image
        for image in client.images.list(filters={"label": labels})
        if image.labels.get("org.opencontainers.image.revision") == version.commit and image.tags
    ]
    if not found:
        raise ImageError(
            f"no image of {version.name} v{version.number} in the Docker engine at "
            f"{engine_address()}: build it with `dsops package`, or pass --image REF"
        )
    image = found[0]
    tag = image_tags(version.name, version)[0]
    return _ref(image, tag if tag in image.tags else image.tags[0])


def _ref(image: Image, reference: str) -> ImageRef:
    """Pinned by the registry digest when the image was pushed (``repo@sha256:...``); a locally
    built image has none an engine could pull by, so its tag, with its ID recorded."""
    digests = [str(d) for d in image.attrs.get("RepoDigests") or []]
    if "@sha256:" in reference or not digests:
        return ImageRef(reference=reference, image_id=str(image.id))
    return ImageRef(reference=digests[0], image_id=str(image.id), digest=digests[0].split("@")[1])


def _repository(reference: str) -> str:
    """``registry/repo`` of ``registry/repo:tag`` or ``registry/repo@sha256:...``."""
    name = reference.split("@", 1)[0]
    head, _, tail = name.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]
