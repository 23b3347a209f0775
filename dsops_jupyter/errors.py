"""Every failure a user can cause is a DsopsError: one line that names the culprit and the fix.

Adapters catch DsopsError only: the CLI prints ``str(err)`` and exits with ``err.exit_code``,
the server answers ``err.http_status`` with ``{"error": str(err)}``, the magics show it in the cell.
Anything else escaping is a bug in dsops, not a user error.
"""

from __future__ import annotations

from typing import Any


class DsopsError(Exception):
    """Root of all user-facing errors."""

    exit_code = 2
    http_status = 400

    def __str__(self) -> str:
        # One line, always: a multi-line cause would break the CLI and JSON contract.
        return " ".join(super().__str__().split())


# --- reading notebooks -------------------------------------------------------------------------
class NotebookError(DsopsError):
    """The file is not a usable notebook (bad JSON, not a notebook, unsupported format)."""


class MarkerError(NotebookError):
    """A step/parameters/skip marker is malformed (bad step name, duplicate step, ...)."""


class ParameterError(DsopsError):
    """A parameters cell is not literal, or a parameter value has the wrong type."""


class UnknownStepError(DsopsError):
    """A step name given by the user (``--step``, ``after:``) does not exist."""

    http_status = 404


class UnknownAfterError(UnknownStepError, MarkerError):
    """An ``after:`` marker names a step the notebook does not have: a marker error, so 400."""

    http_status = 400


class CycleError(DsopsError):
    """Explicit and inferred dependencies between steps form a cycle."""


# --- converting / running ----------------------------------------------------------------------
class ConversionError(DsopsError):
    """A cell cannot become plain Python (shell escapes, magics, syntax errors)."""


class ExecutionError(DsopsError):
    """A cell failed while papermill ran the notebook; the executed notebook is kept."""

    exit_code = 1
    http_status = 422

    def __init__(
        self,
        message: str,
        *,
        output_path: str | None = None,
        step: str | None = None,
        record: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.output_path = output_path
        self.step = step
        self.record = record  # the failed run's RunRecord.to_json(), also in its run.json


class RunInterruptedError(ExecutionError):
    """The user stopped a run (Ctrl-C): the executed notebook and run record are kept."""

    exit_code = 130


class ResumeError(DsopsError):
    """``--resume`` cannot continue that run: none failed, it is unknown, or a step it would
    restore changed since."""


# --- versions ----------------------------------------------------------------------------------
class VcsError(DsopsError):
    """Git refused or the repository is not in a state where a version can be made."""

    http_status = 409


class NotARepositoryError(VcsError):
    """The notebook does not live inside a Git work tree."""


class HandEditError(VcsError):
    """Generated files were edited by hand since the last version (use --force to overwrite)."""


# --- images ------------------------------------------------------------------------------------
class ImageError(DsopsError):
    """Building, running or describing an image failed."""

    exit_code = 1
    http_status = 422


class EngineUnavailableError(ImageError):
    """No Docker engine answers at DOCKER_HOST or the default socket."""

    http_status = 503


class BaseImageError(ImageError):
    """The base image given is not a pinned reference or a readable image archive (bad input)."""

    exit_code = 2
    http_status = 400


class BuildError(ImageError):
    """``docker build`` failed; the message names the failing instruction."""


class LockError(ImageError):
    """The dependency lock cannot be made (unknown import, missing distribution)."""


class JobConflictError(DsopsError):
    """Another job already works on the same notebook."""

    http_status = 409


class OptionsError(DsopsError):
    """A job option is unknown or of the wrong type (a server request, a magic's options)."""
