"""Identity of a generated package: the package format, hashes of the notebook and the spec.

Kept apart from the converter so `dsops check` can verify a package's recorded hashes without
importing the parser and code generator (its fast path is mostly process start-up).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from dsops_jupyter import escape

# Bump whenever the generated files change for the same notebook: `dsops check` trusts a
# package's recorded hashes only when its format is the current one.
# 2: pipeline.json lists the package's files (what dsops may replace or remove).
# 3: the dsops_runtime/ folder (step artifacts, step cache entries) ships beside the script.
SCRIPT_FORMAT = 3
RUNTIME_DIR = "dsops_runtime"  # dsops_jupyter/runtime/ as a generated package holds it
_RUNTIME_PACKAGE = Path(__file__).parent / "runtime"


def runtime_files() -> dict[str, bytes]:
    """dsops_jupyter/runtime/*.py byte for byte, as the package's dsops_runtime/ folder: the
    script's --step and --cache run the very code `dsops run` runs."""
    sources = sorted(_RUNTIME_PACKAGE.glob("*.py"))
    return {f"{RUNTIME_DIR}/{path.name}": path.read_bytes() for path in sources}


def source_of(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def content_hash(nb: dict[str, Any]) -> str:
    """Hash of what defines the pipeline: code and tags, not outputs or execution counts."""
    parts = [
        [source_of(c), sorted(c.get("metadata", {}).get("tags", []))]
        for c in nb["cells"]
        if c.get("cell_type") == "code"
    ]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def spec_bytes(spec: dict[str, Any]) -> bytes:
    """pipeline.json: ASCII JSON (escape.json_text), so no value can break a line or the file.

    Non-finite parameter defaults keep Python's ``Infinity`` spelling: the script reads them back.
    """
    text = escape.json_text(spec, "pipeline.json", allow_nan=True, indent=2, sort_keys=True)
    return (text + "\n").encode("ascii")


def spec_digest(spec: dict[str, Any]) -> str:
    """Digest of the spec without its own digest field: `check` trusts only untouched specs."""
    rest = {k: v for k, v in spec.items() if k != "spec_sha256"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    # surrogatepass: a parameter default may be a str holding a lone surrogate ('\ud800').
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
