"""The Dockerfile recipe: deterministic text from a pipeline, committed with its package."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from dsops_jupyter import escape
from dsops_jupyter.errors import BaseImageError, ImageError
from dsops_jupyter.params import parameter_options

if TYPE_CHECKING:
    from dsops_jupyter.pipeline import Pipeline

# A Docker image reference, [registry[:port]/]path[:tag][@sha256:<64 hex>]: no spaces or quotes,
# so it cannot break out of the FROM line or the LABEL value.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?\Z"
)
# Pipeline names become file names in COPY and ENTRYPOINT: word characters only.
_RECIPE_NAME = re.compile(r"[A-Za-z0-9_]{1,100}\Z")


class _AtTemplate(Template):
    """`@{name}` placeholders: Dockerfiles use `$VAR` themselves."""

    delimiter = "@"


def default_base_image(python_version: str | None = None) -> str:
    """A slim official Python image with the kernel's minor version (the lock's wheels fit it)."""
    if python_version is None:
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    parts = python_version.strip().split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise ImageError(f"cannot derive a base image from Python version {python_version!r}")
    return f"python:{parts[0]}.{parts[1]}-slim"


def check_base_image(reference: str) -> str:
    """Refuse references that are not a plain image name, tag or digest (they end up in FROM)."""
    reference = reference.strip()
    match = _REFERENCE.match(reference)
    if not match or not (match["tag"] or match["digest"]):
        raise BaseImageError(
            f"invalid base image {escape.shown(reference, 200)}: pin it as name:tag or "
            "name@sha256:<digest> (--base-image or [tool.dsops] base-image)"
        )
    return reference


def check_recipe_name(name: str) -> str:
    """The pipeline name names files in the recipe: refuse anything but word characters."""
    if not _RECIPE_NAME.match(name):
        raise BaseImageError(
            f"pipeline name {escape.shown(name)} cannot name the image's files: "
            "use at most 100 letters, digits and _"
        )
    return name


def cli_args(
    parameters: Mapping[str, Any] | None, types: Mapping[str, str] | None = None
) -> list[str]:
    """Parameters as the generated script's options (`--alpha 0.7`), in a stable order.

    Each value is spelled the way the script's option type parses it: strings as they are,
    bools `true`/`false`, other values (and anything typed `any`) as Python literals.
    """
    args: list[str] = []
    values, kinds = parameters or {}, types or {}
    for key in sorted(values):
        text = _arg_text(values[key], kinds.get(key))
        option = parameter_options(key)[0]
        # `--x=-1`: argparse would read a separate "-..." value as an option.
        args += [f"{option}={text}"] if text.startswith("-") else [option, text]
    return args


def _arg_text(value: Any, kind: str | None) -> str:
    if kind == "any":
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def parameter_types(pipeline: Pipeline) -> dict[str, str]:
    return {p.name: p.type for p in pipeline.parameters}


def render_recipe(
    pipeline: Pipeline, base_image: str | None = None, parameters: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """Dockerfile and .dockerignore for a pipeline: deterministic text, committed with it."""
    base = check_base_image(base_image or default_base_image())
    name = check_recipe_name(pipeline.name)
    values = {
        "base_image": base,
        "base_image_label": escape.dockerfile_quoted(base, "base image"),
        "name": escape.dockerfile_quoted(name, "pipeline name"),
        "script": f"{name}.py",
        "notebook": escape.dockerfile_comment(Path(pipeline.notebook_path).name),
        "cmd": escape.dockerfile_json(cli_args(parameters, parameter_types(pipeline)), "parameter"),
    }
    return {
        "Dockerfile": _render("Dockerfile.tmpl", values),
        ".dockerignore": _render("dockerignore.tmpl", values),
    }


def _render(template: str, values: Mapping[str, str]) -> bytes:
    text = (resources.files("dsops_jupyter") / "templates" / template).read_text("utf-8")
    return _AtTemplate(text).substitute(values).encode()


def recipe_base_image(dockerfile: bytes) -> str:
    """The image the recipe builds FROM (the one the package was rendered for)."""
    for line in dockerfile.decode().splitlines():
        if line.upper().startswith("FROM "):
            return line.split()[1]
    raise ImageError("the generated Dockerfile has no FROM line: run `dsops convert` again")
