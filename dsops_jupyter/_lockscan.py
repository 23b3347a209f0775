"""Map imported modules to installed distributions and their dependencies (stdlib only).

Importable in-process, and runnable as a script under another interpreter (the kernel's):
``python _lockscan.py numpy sklearn`` prints JSON. It must not import dsops_jupyter.
"""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib import metadata


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_ok(requirement: str) -> bool:
    """Keep a requirement unless its marker is false here; extras are never pulled in."""
    if ";" not in requirement:
        return True
    marker = requirement.split(";", 1)[1]
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate()
    except Exception:  # no packaging, or a marker it cannot read: keep the requirement
        return True


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s;<>=!~\[(@]", requirement.strip(), maxsplit=1)[0]


def resolve(modules: list[str], with_dependencies: bool = True) -> dict:
    by_module = metadata.packages_distributions()
    installed = {_canonical(d.metadata["Name"]): d for d in metadata.distributions()}
    pins: dict[str, str] = {}
    unknown: list[str] = []
    pending: list[str] = []
    for module in modules:
        names = by_module.get(module)
        if not names:
            unknown.append(module)
        pending.extend(_canonical(n) for n in names or [])
    while pending:
        name = pending.pop()
        dist = installed.get(name)
        if dist is None or dist.metadata["Name"] in pins:
            continue
        pins[dist.metadata["Name"]] = dist.version
        if with_dependencies:
            requirements = [r for r in dist.requires or [] if _marker_ok(r)]
            pending.extend(_canonical(_requirement_name(r)) for r in requirements)
    return {"pins": pins, "unknown": sorted(unknown), "python": platform.python_version()}


DIRECT_ONLY = "--direct-only"  # the distributions imported, not their dependencies

if __name__ == "__main__":
    arguments = sys.argv[1:]
    direct = DIRECT_ONLY in arguments
    modules = [a for a in arguments if a != DIRECT_ONLY]
    json.dump(resolve(modules, with_dependencies=not direct), sys.stdout)
