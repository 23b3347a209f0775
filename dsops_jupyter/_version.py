"""The installed version, read once from the package metadata (package.json is its one source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:  # written once, in package.json; the build puts it in the installed metadata
    __version__ = version("dsops-jupyter")
except PackageNotFoundError:  # a source checkout on sys.path that was never installed
    __version__ = "0+unknown"
