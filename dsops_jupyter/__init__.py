"""dsops-jupyter: notebooks to production — steps, papermill runs, versioned scripts, images.

The core modules import no Jupyter server, IPython or widget code; the extension hooks below
import their adapters lazily so `import dsops_jupyter` stays cheap for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsops_jupyter._version import __version__

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["__version__"]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "dsops-jupyter"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from dsops_jupyter.server.app import DsopsExtension

    return [{"module": "dsops_jupyter", "app": DsopsExtension}]


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """`%load_ext dsops_jupyter` registers the %%dsops / %dsops magics."""
    from dsops_jupyter.magics import load_ipython_extension as load

    load(ipython)
