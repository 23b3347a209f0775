"""A whole generated package: script and spec, requirements.lock and image recipe, then written.

convert renders what comes from the notebook alone; the lock and the recipe describe the
environment. Everything is made in memory first, so a failure anywhere writes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dsops_jupyter import recipe
from dsops_jupyter.config import load_config
from dsops_jupyter.convert import render_files
from dsops_jupyter.events import OnEvent, ignore, log
from dsops_jupyter.fsutil import left_alone_note, refuse_overwrites, write_files, written_by_convert
from dsops_jupyter.lock import lock_for
from dsops_jupyter.model import GeneratedPackage
from dsops_jupyter.notebook import read_pipeline
from dsops_jupyter.vcs import ignored_by_git


def generate_package(
    path: str | Path,
    *,
    out_dir: Path | None = None,
    name: str | None = None,
    keep_magics: bool | None = None,
    base_image: str | None = None,
    image_parameters: dict[str, Any] | None = None,
) -> GeneratedPackage:
    """Every file of the package, in memory: script, spec, lock, image recipe."""
    path = Path(path).resolve()
    pipeline = read_pipeline(path, name=name)
    config = load_config(path, keep_magics=keep_magics, base_image=base_image)
    files = render_files(pipeline, config)
    lock = lock_for(pipeline)
    files["requirements.lock"] = lock.render()
    base = config.base_image or recipe.default_base_image(lock.python)  # the kernel's Python
    files.update(recipe.render_recipe(pipeline, base, image_parameters))
    directory = (out_dir or config.package_dir(pipeline.name)).resolve()
    return GeneratedPackage(pipeline.name, directory, files, path, pipeline.content_hash, pipeline)


def write_package(
    pkg: GeneratedPackage, *, force: bool = False, on_event: OnEvent = ignore
) -> list[Path]:
    """Write the files atomically (unchanged files untouched); the paths that changed.

    Refuses (HandEditError) to replace a file dsops did not write, or one changed since dsops
    wrote it, unless ``force``: the same rule as `dsops commit`.
    """
    directory = pkg.directory

    def shown(name: str) -> str:
        return f"{directory}/{name}"

    left_alone = refuse_overwrites(
        directory,
        pkg.files,
        written_by_convert(directory),
        since="the last `dsops convert`",
        force=force,
        shown=shown,
        ignored=lambda names: ignored_by_git(directory, names),
    )
    if left_alone:
        log(on_event, left_alone_note(shown, left_alone))
    return write_files(directory, pkg.files)


def convert(
    path: str | Path,
    *,
    out_dir: Path | None = None,
    name: str | None = None,
    keep_magics: bool | None = None,
    base_image: str | None = None,
    image_parameters: dict[str, Any] | None = None,
    force: bool = False,
    on_event: OnEvent = ignore,
) -> GeneratedPackage:
    """`dsops convert`: generate the package and write it (nothing is committed)."""
    pkg = generate_package(
        path,
        out_dir=out_dir,
        name=name,
        keep_magics=keep_magics,
        base_image=base_image,
        image_parameters=image_parameters,
    )
    write_package(pkg, force=force, on_event=on_event)
    return pkg
