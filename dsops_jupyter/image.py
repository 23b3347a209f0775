"""Images through the Docker engine: the Dockerfile builder, smoke run, listing and push.

The recipe (recipe.py) is rendered at convert time and committed with the package, so it holds
nothing that depends on the version (commit, time): those arrive as build args of its one LABEL
instruction, placed just before the code so they never invalidate the dependency layers. The
build context is made in memory from the generated files only, so nothing else (notebook
outputs, .git, .env) can reach the image.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsops_jupyter import escape, events
from dsops_jupyter.config import load_config, project_path
from dsops_jupyter.errors import BuildError, EngineUnavailableError, ImageError
from dsops_jupyter.events import OnEvent
from dsops_jupyter.model import GeneratedPackage, ImageResult, SmokeResult, Version
from dsops_jupyter.recipe import check_base_image, cli_args, recipe_base_image
from dsops_jupyter.vcs import remote_url

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container
    from docker.models.images import Image

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
LABEL_PREFIX = "org.opencontainers.image."
DSOPS_LABEL = "io.dsops."
WORKDIR = "/work"
LOG_TAIL = 6

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def context_files(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The generated files the recipe's .dockerignore lets in (an allow-list), and nothing else."""
    ignore = files.get(".dockerignore", b"").decode().splitlines()
    allowed = [line[1:].strip() for line in ignore if line.startswith("!")]
    return {
        name: data for name, data in files.items() if any(fnmatchcase(name, p) for p in allowed)
    }


def build_context(files: Mapping[str, bytes]) -> io.BytesIO:
    """A tar of the allowed files with fixed metadata, so unchanged files hit the layer cache."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(context_files(files).items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


# --- engine ------------------------------------------------------------------------------------
def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET


def connect() -> DockerClient:
    """A client for the engine DOCKER_HOST (or the default socket) names, known to answer."""
    import docker  # lazy: the SDK pulls in requests; most commands never need it

    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except Exception as err:  # DockerException, requests' ConnectionError, socket errors
        raise EngineUnavailableError(
            f"no Docker engine at {engine_address()}: start one or set "
            "DOCKER_HOST=unix:///path/docker.sock (or tcp://...)"
        ) from err
    return client


def repository_name(name: str) -> str:
    """Docker repository names are lowercase; pipeline names are Python identifiers."""
    return name.lower().strip("_") or "pipeline"


def image_tags(name: str, version: Version, registry: str | None = None) -> list[str]:
    """`<name>:v<N>` and `<name>:<short-sha>` (prefixed with the registry when pushing)."""
    repo = repository_name(name)
    if registry:
        repo = f"{registry.rstrip('/')}/{repo}"
    return [f"{repo}:v{version.number}", f"{repo}:{version.short}"]


def image_labels(pkg: GeneratedPackage, version: Version, base_image: str) -> dict[str, str]:
    """The image's labels for a version; `created` is the version commit's time, never the clock.

    Nothing host-specific: the notebook is its project-relative path, the source the `origin`
    remote ("" without one). The Dockerfile sets them from build args (`build_args`).
    """
    args = build_args(pkg, version)
    return {
        LABEL_PREFIX + "title": pkg.name,
        LABEL_PREFIX + "base.name": escape.label_value(base_image, LABEL_PREFIX + "base.name"),
        LABEL_PREFIX + "source": args["DSOPS_SOURCE"],
        LABEL_PREFIX + "revision": args["DSOPS_REVISION"],
        LABEL_PREFIX + "version": args["DSOPS_VERSION"],
        LABEL_PREFIX + "created": args["DSOPS_CREATED"],
        DSOPS_LABEL + "name": pkg.name,
        DSOPS_LABEL + "notebook": args["DSOPS_NOTEBOOK"],
        DSOPS_LABEL + "tag": args["DSOPS_TAG"],
    }


def rfc3339(epoch: int) -> str:
    """SOURCE_DATE_EPOCH as the RFC 3339 UTC time OCI configs and labels use."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_args(pkg: GeneratedPackage, version: Version) -> dict[str, str]:
    """Values of the recipe's version ARGs: they only feed its one LABEL instruction.

    Passed as build args (never spliced into the Dockerfile text), so quotes and line breaks
    arrive unchanged; text with no UTF-8 form is refused by `escape.label_value`.
    """
    values = {
        "DSOPS_SOURCE": source_url(Path(pkg.directory)),
        "DSOPS_REVISION": version.commit,
        "DSOPS_VERSION": f"v{version.number}",
        "DSOPS_CREATED": rfc3339(int(version.epoch)),
        "DSOPS_NOTEBOOK": notebook_label(pkg.files, Path(pkg.notebook_path)),
        "DSOPS_TAG": version.tag,
    }
    return {key: escape.label_value(value, key) for key, value in values.items()}


def notebook_label(files: Mapping[str, bytes], notebook_path: Path) -> str:
    """The notebook's project-relative path, as pipeline.json records it."""
    try:
        return str(json.loads(files["pipeline.json"])["notebook"])
    except (KeyError, ValueError, TypeError):
        return notebook_path.name


def source_url(directory: Path) -> str:
    """The repository's `origin` URL without credentials; "" when it has none."""
    return re.sub(r"^([a-z+]+://)[^/@]*@", r"\1", remote_url(directory, "origin"))


# --- build -------------------------------------------------------------------------------------
def build_image(
    pkg: GeneratedPackage,
    version: Version,
    *,
    base_image: str | None = None,
    on_event: OnEvent = events.ignore,
    client: DockerClient | None = None,
) -> ImageResult:
    """Build the committed package's recipe; every log line is an event, each step a progress."""
    files = pkg.files
    if "Dockerfile" not in files:
        raise ImageError(f"{pkg.name} has no Dockerfile: run `dsops convert` again")
    base = recipe_base_image(files["Dockerfile"])
    if base_image and check_base_image(base_image) != base:
        raise ImageError(
            f"{pkg.name}'s Dockerfile builds FROM {base}, not {base_image}: convert again "
            "with --base-image to change it"
        )
    client = client or connect()
    tags = image_tags(pkg.name, version)
    label = f"{pkg.name} v{version.number}"
    stream = client.api.build(
        fileobj=build_context(files),
        custom_context=True,
        tag=tags[0],
        buildargs=build_args(pkg, version),
        network_mode="host",
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    image_id = _follow_build(stream, label, on_event)
    for tag in tags[1:]:
        repo, _, tag_name = tag.rpartition(":")
        client.api.tag(image_id, repo, tag_name)
    info = describe(client.images.get(image_id))
    events.result(on_event, f"built {', '.join(info.tags)}", **info.to_json())
    return info


@dataclass(frozen=True)
class DockerfileBuilder:
    """The `ImageBuilder` of a plain `dsops package`: the committed recipe, built by the engine.

    ``parameters`` are not passed on: convert baked them into the recipe's CMD already.
    """

    client: DockerClient | None

    def build(
        self,
        pkg: GeneratedPackage,
        version: Version,
        parameters: dict[str, Any],
        on_event: OnEvent,
    ) -> ImageResult:
        events.stage(on_event, f"Building image {image_tags(pkg.name, version)[0]}")
        return build_image(pkg, version, on_event=on_event, client=self.client)


class BuildSteps:
    """A build's "step k of n" progress, the same from both builders (and "phase k of n" of a
    smoke run): the fraction done as step k starts, and its name logged."""

    def __init__(self, on_event: OnEvent, total: int, word: str = "step") -> None:
        self.on_event, self.total, self.done, self.word = on_event, total, 0, word

    def next(self, what: str | None, *, number: int | None = None) -> None:
        """Step ``number`` (default: the next) starts; ``what`` None: the engine logged it."""
        self.done = number or self.done + 1
        message = f"{self.word} {self.done} of {self.total}"
        events.progress(self.on_event, (self.done - 1) / self.total, message)
        if what is not None:
            events.log(self.on_event, f"{message}: {what}")

    def finish(self) -> None:
        events.progress(self.on_event, 1.0, f"{self.word} {self.total} of {self.total}")


def _follow_build(stream: Iterable[dict[str, Any]], label: str, on_event: OnEvent) -> str:
    """Turn the engine's build stream into events; the image id, or BuildError."""
    tail: list[str] = []
    step = ""
    image_id = ""
    steps: BuildSteps | None = None
    for line, chunk in _lines(stream):
        if chunk.get("error") or chunk.get("errorDetail"):
            message = chunk.get("error") or chunk["errorDetail"].get("message", "")
            last = " | ".join(tail[-LOG_TAIL:])
            raise BuildError(
                f"image build of {label} failed at {step or 'the start'}: {message.strip()}"
                f" — last log lines: {last or '(none)'}"
            )
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        if line is None:
            continue
        events.log(on_event, line)
        if line.strip():
            tail.append(line.strip())
        match = _STEP.match(line)
        if match:
            number, total = int(match[1]), int(match[2])
            step = f"step {number}/{total} `{match[3].strip()}`"
            steps = steps or BuildSteps(on_event, total)
            steps.next(None, number=number)
    if not image_id:
        raise BuildError(f"image build of {label} ended without an image id")
    if steps is not None:
        steps.finish()
    return image_id


def _lines(stream: Iterable[dict[str, Any]]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """Whole log lines out of `stream` chunks (the engine splits lines across chunks)."""
    pending = ""
    for chunk in stream:
        text = chunk.get("stream") or ""
        if "status" in chunk:  # pulls report status lines, not stream text
            text = f"{chunk['status']} {chunk.get('progress', '')}".rstrip() + "\n"
        pending += text
        *complete, pending = pending.split("\n")
        for line in complete:
            yield _ANSI.sub("", line).rstrip("\r"), {}
        yield None, chunk
    if pending:
        yield _ANSI.sub("", pending), {}


def describe(image: Image) -> ImageResult:
    """ImageResult from an SDK image: size from the engine, version facts from the labels."""
    labels = image.labels or {}
    return ImageResult(
        id=image.id,
        tags=sorted(image.tags, key=_tag_order),
        size=int(image.attrs.get("Size", 0)),
        version=labels.get(LABEL_PREFIX + "version", ""),
        commit=labels.get(LABEL_PREFIX + "revision", ""),
        created=labels.get(LABEL_PREFIX + "created", ""),
        name=labels.get(DSOPS_LABEL + "name", ""),
    )


def _tag_order(tag: str) -> tuple[bool, str]:
    """`:vN` tags before `:<sha>` tags, so the first tag is the readable one."""
    return (not re.search(r":v\d+$", tag), tag)


# --- run / list / push -------------------------------------------------------------------------
def smoke_run(
    image: ImageResult | str,
    parameters: Mapping[str, Any] | None = None,
    on_event: OnEvent = events.ignore,
    *,
    copy_out: Path | None = None,
    types: Mapping[str, str] | None = None,
    client: DockerClient | None = None,
) -> SmokeResult:
    """Run the image once without network (given parameters, else its baked defaults).

    Progress is its four phases (create, run, exit, remove: "phase k of 4"); the script's
    output arrives as log events; ImageError when it exits non-zero. With
    `copy_out`, the container's work directory (the script's results) is copied there first.
    """
    client = client or connect()
    ref = image if isinstance(image, str) else image.id
    command = cli_args(parameters, types) if parameters else None
    phases = BuildSteps(on_event, 4, "phase")
    phases.next("creating the container")
    container = client.containers.create(ref, command=command, network_mode="none", **_PYCACHE)
    try:
        phases.next("running the script")
        container.start()
        log = []
        for line in _container_lines(container):
            events.log(on_event, line)
            log.append(line)
        code = int(container.wait().get("StatusCode", -1))
        phases.next(f"exit code {code}")
        workdir = _copy_workdir(container, copy_out) if copy_out else None
    finally:
        container.remove(force=True)
    phases.next("container removed")
    if code != 0:
        last = " | ".join(x.strip() for x in log[-LOG_TAIL:] if x.strip())
        raise ImageError(
            f"smoke run of {_display(image)} failed with exit code {code}: {last or '(no output)'}"
        )
    phases.finish()
    events.result(on_event, f"smoke run of {_display(image)} passed", exit_code=code)
    return SmokeResult(exit_code=code, log=log, workdir=workdir)


#: Smoke runs keep the bytecode Python compiles in one engine volume, mounted where Debian-like
#: bases have a world-writable /var/tmp (a new volume copies its mode): the image itself ships
#: no .pyc (bytecode is not reproducible), so without it every smoke run compiles numpy, pandas
#: and sklearn again (~5 s of CPU); with it only changed sources are compiled. Bytecode does not
#: change what runs; where the folder is not writable Python silently compiles in memory.
#: `docker volume rm dsops-smoke-pycache` empties it.
PYCACHE_VOLUME = "dsops-smoke-pycache"
_PYCACHE: dict[str, Any] = {
    "volumes": {PYCACHE_VOLUME: {"bind": "/var/tmp", "mode": "rw"}},
    "environment": {"PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": "/var/tmp/pycache"},
}


def _display(image: ImageResult | str) -> str:
    """The first tag of an ImageResult, else the reference given."""
    return image if isinstance(image, str) else (image.tags or [image.id])[0]


def _container_lines(container: Container) -> Iterator[str]:
    pending = b""
    for chunk in container.logs(stream=True, follow=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", "replace").rstrip("\r")
    if pending:
        yield pending.decode("utf-8", "replace")


def _copy_workdir(container: Container, target: Path) -> Path:
    """Extract the stopped container's /work into `target` (its files, without the folder)."""
    stream, _ = container.get_archive(WORKDIR + "/.")
    data = io.BytesIO(b"".join(stream))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=data) as tar:
        tar.extractall(target, filter="data")
    return target


def list_images(
    notebook_path: str | Path,
    name: str | None = None,
    *,
    versions: Iterable[Version] | None,
    client: DockerClient | None = None,
) -> list[ImageResult]:
    """The images built from a notebook's versions, oldest version first.

    Found by label (project-relative notebook path, pipeline name), then kept only when their
    revision is one of ``versions`` (this repository's: another clone's `wine.ipynb` is not
    this one); ``versions=None`` (no repository to ask) keeps every image found.
    """
    path = Path(notebook_path).resolve()
    relative = project_path(path, load_config(path).root)
    client = client or connect()
    filters = [f"{DSOPS_LABEL}notebook={relative}"]
    if name:
        filters.append(f"{DSOPS_LABEL}name={name}")
    images = [describe(image) for image in client.images.list(filters={"label": filters})]
    if versions is not None:
        commits = {v.commit for v in versions}
        images = [i for i in images if i.commit in commits]
    return sorted(images, key=lambda i: (i.name, _version_number(i.version), i.id))


def _version_number(version: str) -> int:
    return int(version[1:]) if re.fullmatch(r"v\d+", version) else -1


def push_image(
    info: ImageResult,
    registry: str,
    version: Version,
    on_event: OnEvent = events.ignore,
    *,
    client: DockerClient | None = None,
) -> list[str]:
    """Tag the image for `registry` and push both tags; ImageError naming the registry if not."""
    client = client or connect()
    pushed = []
    for tag in image_tags(info.name, version, registry):
        repo, _, tag_name = tag.rpartition(":")
        client.api.tag(info.id, repo, tag_name)
        try:
            for chunk in client.api.push(repo, tag=tag_name, stream=True, decode=True):
                if "error" in chunk:
                    raise ImageError(f"push of {tag} failed: {chunk['error'].strip()}")
                if "status" in chunk:
                    events.log(on_event, f"{chunk['status']} {chunk.get('progress', '')}".strip())
        except ImageError:
            raise
        except Exception as err:  # the SDK raises APIError / requests errors before streaming
            raise ImageError(f"push of {tag} to {registry} failed: {err}") from err
        pushed.append(tag)
    events.result(on_event, f"pushed {', '.join(pushed)}", tags=pushed)
    return pushed
