"""The Docker engine as a source and a sink: ``docker save`` a base once, ``docker load`` images.

The engine is optional: an assembled image is complete without one; loading it only makes it
runnable there, and the engine must then agree on the image ID.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsops_jupyter.errors import ImageError
from dsops_jupyter.events import OnEvent, log
from dsops_jupyter.fsutil import atomic_stream
from dsops_jupyter.oci.archive import Assembled, write_archive
from dsops_jupyter.oci.blob import CHUNK, hex_of, sha256_digest

if TYPE_CHECKING:
    from docker import DockerClient


def save_base(
    client: DockerClient, ref: str, folder: Path, on_event: OnEvent
) -> tuple[Path, str, list[str]]:
    """``docker save`` of ``ref`` into ``folder``, once per image ID: (archive, ID, its tags)."""
    from docker.errors import DockerException, ImageNotFound

    try:
        image = client.images.get(ref)
    except ImageNotFound as err:
        raise ImageError(
            f"base image {ref} is not in the Docker engine; docker load or pull it first"
        ) from err
    except DockerException as err:
        raise ImageError(f"cannot read base image {ref} from Docker: {err}") from err
    target = folder / f"{hex_of(image.id)}.tar"
    if not target.is_file():
        log(on_event, f"saving base image {ref} ({image.id[:19]}) from the engine")
        with atomic_stream(target) as out:
            for chunk in image.save(chunk_size=CHUNK):
                out.write(chunk)
    return target, image.id, list(image.tags)


def load_into_engine(
    client: DockerClient,
    image: Assembled,
    tags: list[str],
    epoch: int,
    *,
    base_in_engine: bool,
    output: Path | None,
    tmp: Path,
) -> None:
    """``docker load`` the archive and check the engine agrees on the image ID.

    Layers the engine holds already (the base it came from, the dependency layer of an earlier
    version of this image) are left out of what is sent: the classic image store never opens a
    layer file whose chain it has, so a code-only change sends only the code layer. An engine
    that wants them anyway (containerd image store) gets the complete archive on a second try.
    """
    from docker.errors import DockerException

    complete = Path(output) if output is not None else tmp / "image.tar"
    try:
        held = _layers_held(client, image, tags[0], image.base_layers if base_in_engine else 0)
        if held:
            try:
                _load(client, _archive(tmp / "thin.tar", image, tags, epoch, skip=held))
            except DockerException:
                _load(client, _ensure_archive(complete, image, tags, epoch, output))
        else:
            _load(client, _ensure_archive(complete, image, tags, epoch, output))
        loaded = client.images.get(tags[0])
        for tag in tags[1:]:
            repo, _, name = tag.rpartition(":")
            loaded.tag(repo, name)
    except DockerException as err:
        raise ImageError(f"docker load of {tags[0]} failed: {err}") from err
    # The classic store names images by config digest, the containerd store by manifest digest.
    if loaded.id not in (image.config_digest, sha256_digest(image.manifest)):
        raise ImageError(f"engine reports {loaded.id} for {tags[0]}, not {image.config_digest}")


def _layers_held(client: DockerClient, image: Assembled, tag: str, at_least: int) -> int:
    """How many leading layers of ``image`` the engine holds: the longest prefix of its diff_ids
    shared with an image of the same repository (earlier versions), at least ``at_least``."""
    diff_ids = [layer.diff_id for layer in image.layers]
    held = at_least
    for other in client.images.list(name=tag.rpartition(":")[0]):
        layers = (other.attrs.get("RootFS") or {}).get("Layers") or []
        shared = 0
        while shared < min(len(layers), len(diff_ids) - 1) and layers[shared] == diff_ids[shared]:
            shared += 1
        held = max(held, shared)
    return held


def _archive(path: Path, image: Assembled, tags: list[str], epoch: int, skip: int) -> Path:
    write_archive(path, image, tags, epoch, skip_layers=skip)
    return path


def _ensure_archive(
    path: Path, image: Assembled, tags: list[str], epoch: int, output: Path | None
) -> Path:
    """The complete archive: ``output`` when it was already written, else a temp file."""
    return path if output is not None else _archive(path, image, tags, epoch, skip=0)


def _load(client: DockerClient, archive: Path) -> None:
    with archive.open("rb") as handle:
        client.images.load(handle)
