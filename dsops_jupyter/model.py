"""Value types shared by convert, vcs, image and package, importing nothing of the package.

They live here, not in the module that makes them, so that the modules that only pass them on
(vcs commits a generated package, image labels a version) need not import their makers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsops_jupyter.pipeline import Pipeline


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
class ImageInfo:
    """A built image as `dsops images` shows it; version/commit/created come from its labels."""

    id: str
    tags: list[str]
    size: int
    version: str = ""
    commit: str = ""
    created: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
