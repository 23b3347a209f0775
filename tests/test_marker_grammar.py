"""The marker grammar, case by case from tests/marker_cases.json (the frontend's jest test reads
the same file, so the badges in JupyterLab and the core agree on every marker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dsops_jupyter.errors import MarkerError
from dsops_jupyter.notebook import read_markers

CASES = json.loads((Path(__file__).parent / "marker_cases.json").read_text(encoding="utf-8"))
DEFAULTS: dict[str, Any] = {"step": None, "after": [], "extras": {}}


@pytest.mark.parametrize("case", CASES["cases"], ids=lambda case: case["name"])
def test_marker_case(case: dict[str, Any]) -> None:
    tags, line = case.get("tags", []), case.get("line", "")
    if case["expect"] == "refused":
        with pytest.raises(MarkerError) as caught:
            read_markers(tags, line, "nb.ipynb, cell 1")
        assert "\n" not in str(caught.value)
        assert str(caught.value).startswith("nb.ipynb, cell 1")
        return
    cell = read_markers(tags, line, "nb.ipynb, cell 1")
    found = {"role": cell.role, "step": cell.step, "after": cell.after, "extras": cell.extras}
    assert found == {**DEFAULTS, **case["expect"]}


def test_cases_cover_both_vocabularies() -> None:
    """Every tag and first-line form of DESIGN.md's vocabulary has a case, refused ones too."""
    words = json.dumps(CASES["cases"])
    for form in (
        "step:", "after:", "block:", "prev:", "parameters", "pipeline-parameters", "skip",
        "imports", "functions", "pipeline-metrics", "injected-parameters", "image:", "limit:",
        "cache:", "label:", "annotation:", "secret:", "volume:", "%%dsops step", "--after",
        "%%dsops parameters", "%%dsops skip",
    ):  # fmt: skip
        assert form in words, form
    assert sum(case["expect"] == "refused" for case in CASES["cases"]) >= 20
