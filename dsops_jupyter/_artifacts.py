"""Step artifacts shared by scripts, runs, images and exports (standard library only).

Never imports dsops_jupyter: this source also ships inside every generated script package, so
the script and the core compute the same step cache keys from the same bytes.
"""

from __future__ import annotations

import hashlib
import json


# --- step cache keys ---------------------------------------------------------------------------
def canonical(value: object) -> str:
    """A parameter value as the cache key sees it: sorted JSON, else its repr."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return repr(value)


def static_of(code_key: str, lock_sha256: str) -> str:
    """A step's static key: its normalised code (with the hoisted code it uses) and the lock."""
    return hashlib.sha256(f"dsops-static-1\n{code_key}\n{lock_sha256}".encode()).hexdigest()


def step_key(static: str, parameters: dict[str, object], input_hashes: dict[str, str]) -> str:
    """A step's cache key: its static key, the values of the parameters it reads and the sha256
    of its inputs. The script and the core both call this one function."""
    parts = {
        "static": static,
        "parameters": {name: canonical(value) for name, value in parameters.items()},
        "inputs": dict(input_hashes),
    }
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"dsops-step-1\n{text}".encode()).hexdigest()
