"""Value types shared by convert, vcs, image and package, importing nothing of the package.

They live here, not in the module that makes them, so that the modules that only pass them on
(vcs commits a generated package, image labels a version) need not import their makers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from dsops_jupyter.events import OnEvent
    from dsops_jupyter.notebook import Pipeline


@dataclass
class GeneratedPackage:
    """The files of one generated package, in memory until written (so failures write nothing)."""

    name: str
    directory: Path
    files: dict[str, bytes]
    notebook_path: Path
    content_hash: str
    pipeline: Pipeline | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Version:
    """One tagged version of a generated package (``epoch``: committer time, for reproducible
    image timestamps; ``message``: the version commit's message)."""

    name: str
    number: int
    tag: str
    commit: str
    short: str
    epoch: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ImageResult:
    """A built image: from either builder, or found in the engine by `dsops images`.

    An engine image carries what its labels say (version, commit, created); an assembled image
    (``reproducible``) adds its manifest digest, base, layers and archive. `to_json` gives the
    first kind's keys only, so `dsops images --json` and Dockerfile builds keep their shape.
    """

    id: str  # "sha256:<config digest>": the image ID an engine reports
    tags: list[str]
    size: int  # bytes: the engine's size, or the uncompressed layers of an assembled image
    version: str = ""  # "v<N>"
    commit: str = ""
    created: str = ""
    name: str = ""
    manifest_digest: str = ""
    base: str = ""
    base_digest: str = ""
    layers: list[str] = field(default_factory=list)
    archive: Path | None = None
    loaded: bool = False
    reproducible: bool = False

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[-1][:12]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        if not self.reproducible:
            return {key: data[key] for key in _ENGINE_KEYS}
        data["archive"] = str(self.archive) if self.archive else None
        return data


_ENGINE_KEYS = ("id", "tags", "size", "version", "commit", "created", "name")


class ImageBuilder(Protocol):
    """How `package` builds the image of a committed version, whichever builder it picked."""

    def build(
        self,
        pkg: GeneratedPackage,
        version: Version,
        parameters: dict[str, Any],
        on_event: OnEvent,
    ) -> ImageResult: ...


@dataclass
class SmokeResult:
    """What a smoke run printed; `workdir` holds the container's /work when it was copied out."""

    exit_code: int
    log: list[str] = field(default_factory=list)
    workdir: Path | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir) if self.workdir else None
        return data
