"""Mutation probes: a value changed in place by one step reaches the later steps, every way run.

Each probe notebook (tests/corpus/probes/mutation_*.ipynb) binds a value in one step, mutates it
in another without rebinding it, and a third step writes what it sees to outputs/result.json.
Papermill, the whole generated script and the script run one step per process through a workdir
must write the same files. The probes run at once in a small thread pool (kernels and scripts are
separate processes).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dsops_jupyter.notebook import read_pipeline
from tests.helpers import RESULTS, assert_ok, dsops, three_way

PROBES = Path(__file__).parent / "corpus" / "probes"
MUTATION_PROBES = sorted(p.name for p in PROBES.glob("mutation_*.ipynb"))
# The step that mutates, the name it mutates, the step that reads the mutated value.
MUTATORS = {
    "mutation_append.ipynb": ("grow", "rows", "report"),
    "mutation_inplace_rename.ipynb": ("rename", "df", "report"),
    "mutation_loop_alias.ipynb": ("derive", "rows", "report"),
    "mutation_helper.ipynb": ("total", "values", "report"),
    "mutation_shuffle.ipynb": ("shuffle", "deck", "report"),
    "mutation_del_item.ipynb": ("prune_inner", "config", "prune"),
    "mutation_augassign.ipynb": ("bump", "table", "report"),
}


def test_every_probe_is_listed() -> None:
    assert sorted(MUTATORS) == MUTATION_PROBES


@pytest.mark.parametrize("probe", MUTATION_PROBES)
def test_the_mutating_step_passes_the_value_on(probe: str) -> None:
    """``dsops steps`` shows the name as written by the mutating step; the reader needs it."""
    mutator, name, reader = MUTATORS[probe]
    pipeline = read_pipeline(PROBES / probe)
    assert name in pipeline.step(mutator).writes
    assert name in pipeline.step(mutator).outputs
    assert (name, mutator) in pipeline.step(reader).inputs
    assert mutator in pipeline.step(reader).depends_on
    order = [s.name for s in pipeline.steps]
    assert order.index(mutator) < order.index(reader)


def test_dsops_steps_shows_the_mutating_step_as_writer(tmp_path: Path) -> None:
    shown = assert_ok(dsops("steps", PROBES / "mutation_loop_alias.ipynb", cwd=tmp_path)).stdout
    derive = shown.split("derive", 1)[1].split("report", 1)[0]
    assert "reads: rows" in derive
    assert "writes: rows" in derive
    report = shown.split("report", 1)[1]
    assert "needs: derive" in report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("probes")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(three_way, PROBES / name, root) for name in MUTATION_PROBES}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("probe", MUTATION_PROBES)
@pytest.mark.parametrize("kind", ["script", "stepwise"])
def test_probe_gives_papermills_result(runs: dict[str, dict], probe: str, kind: str) -> None:
    found = runs[probe]
    papermill = found["papermill"]
    assert isinstance(papermill, dict), papermill
    result = (RESULTS / "result.json").as_posix()
    assert result in papermill, f"papermill wrote no {result}: {sorted(papermill)}"
    assert isinstance(found[kind], dict), found[kind]
    assert found[kind] == papermill, (
        f"{kind}: {found[kind].get(result)!r} != papermill: {papermill[result]!r}"
    )


def test_probes_record_the_mutation(runs: dict[str, dict]) -> None:
    """Guards against every run being equally wrong: papermill saw the in-place changes."""
    key = (RESULTS / "result.json").as_posix()
    seen = {name: json.loads(found["papermill"][key]) for name, found in runs.items()}
    assert seen["mutation_append.ipynb"]["rows"] == [1, 2, 3, 4]
    assert seen["mutation_inplace_rename.ipynb"] == {"columns": ["b"], "total": 6}
    assert seen["mutation_loop_alias.ipynb"]["z"] == [10, 20]
    assert seen["mutation_helper.ipynb"]["values"] == [1, 2, 3, 6]
    assert sorted(seen["mutation_shuffle.ipynb"]["deck"]) == list(range(10))
    assert seen["mutation_shuffle.ipynb"]["deck"] != list(range(10))
    assert seen["mutation_del_item.ipynb"]["config"] == {"keep": 1, "inner": {"a": 1}}
    assert seen["mutation_augassign.ipynb"] == {
        "counts": {"a": 6},
        "table": [{"n": 101}, {"n": 102}],
    }
