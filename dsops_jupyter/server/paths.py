"""Confinement: a server job reads and writes only under the server root.

Reads are confined when the request comes in (the notebook path, symlinks resolved). Writes
are confined the same way: the folders a job will write (the generated package, a run's
output folder) are resolved to real paths, so a symlinked ``pipelines/`` or ``.dsops/runs/``
pointing elsewhere is refused instead of followed. Checked when the job is posted and again in
the job's process right before the core writes.
"""

from __future__ import annotations

from pathlib import Path

from dsops_jupyter.errors import DsopsError
from dsops_jupyter.model import PackageOptions, RunOptions


class OutsideRootError(DsopsError):
    """A path the job would read or write resolves outside the server root."""

    http_status = 403


def inside(path: Path, root: Path) -> bool:
    """True when ``path``, with every symlink resolved, is ``root`` or under it."""
    return path.resolve().is_relative_to(root)


def write_targets(notebook: Path, options: PackageOptions | RunOptions) -> list[Path]:
    """The folders a job writes: the package folder, or the run's output folder (the server
    lets no client choose another: out_dir and output are not options it accepts)."""
    from dsops_jupyter.config import load_config
    from dsops_jupyter.markers import pipeline_name

    config = load_config(notebook)
    if isinstance(options, PackageOptions):
        return [config.package_dir(pipeline_name(notebook, options.name))]
    return [config.runs_dir / pipeline_name(notebook)]


def check_writes(notebook: Path, root: Path, options: PackageOptions | RunOptions) -> None:
    """OutsideRootError unless every folder the job writes resolves under ``root``."""
    for target in write_targets(notebook, options):
        if not inside(target, root):
            shown = target.relative_to(root) if target.is_relative_to(root) else target
            raise OutsideRootError(
                f"{notebook.name}: the job would write to {shown}, which resolves outside the"
                f" server root ({target.resolve()}); remove the symlink or change [tool.dsops]"
                " output"
            )
