"""The step artifact store's overhead on a ~1 GB pandas DataFrame: Parquet against pickle.

Run on demand (deselected by default):
``pytest -m benchmarks tests/benchmarks/test_bench_artifacts.py -s``.

Three ways to hand the same frame (10 float columns, an int column and a text column) to the
next step: ``_artifacts.save``/``load`` (Parquet, with its sample check, fsync and sha256 on
both sides), bare pyarrow ``write_table``/``read_table`` (what the layer adds on top of it), and
plain ``pickle.dump``/``load`` to a file (what the generated script did before typed artifacts).
Write time, read time and file size, each the median of REPEATS interleaved runs, with ratios
to pickle. A benchmark reports: it asserts the values came back equal, never that a goal was met.
"""

from __future__ import annotations

import gc
import os
import pickle
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as parquet
import pytest

from dsops_jupyter.runtime import artifacts as _artifacts

pytestmark = pytest.mark.benchmarks

REPEATS = 3
ROWS = 10_000_000  # 11 numeric columns (880 MB) + a text column: about 1 GB in memory


def big_frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({f"x{i}": rng.standard_normal(ROWS) for i in range(10)})
    frame["n"] = rng.integers(0, 1_000_000, ROWS)
    frame["label"] = pd.Series(rng.choice([f"class-{k:03d}" for k in range(500)], ROWS))
    return frame


def pickle_write(frame: pd.DataFrame, folder: Path) -> Path:
    path = folder / "frame.pkl"
    with open(path, "wb") as handle:
        pickle.dump(frame, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def pickle_read(folder: Path) -> Any:
    with open(folder / "frame.pkl", "rb") as handle:
        return pickle.load(handle)


def arrow_write(frame: pd.DataFrame, folder: Path) -> Path:
    import pyarrow

    path = folder / "frame.parquet"
    parquet.write_table(pyarrow.Table.from_pandas(frame), path)
    return path


def arrow_read(folder: Path) -> Any:
    return parquet.read_table(folder / "frame.parquet", memory_map=True).to_pandas()


def store_write(frame: pd.DataFrame, folder: Path) -> Path:
    described = _artifacts.save(folder, "frame", frame, "bench")
    assert described["format"] == "parquet", described["note"]
    return folder / "frame" / "data.parquet"


def store_read(folder: Path) -> Any:
    return _artifacts.load(folder, "frame")


SIDES: dict[str, tuple[Callable[[pd.DataFrame, Path], Path], Callable[[Path], Any]]] = {
    "_artifacts (Parquet)": (store_write, store_read),
    "bare pyarrow Parquet": (arrow_write, arrow_read),
    "pickle (before)": (pickle_write, pickle_read),
}


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def test_artifact_store_on_a_1gb_dataframe(tmp_path: Path) -> None:
    frame = big_frame()
    in_memory = frame.memory_usage(deep=True).sum()
    writes: dict[str, list[float]] = {side: [] for side in SIDES}
    reads: dict[str, list[float]] = {side: [] for side in SIDES}
    sizes: dict[str, int] = {}
    for rep in range(REPEATS):
        for side, (write, read) in SIDES.items():
            folder = tmp_path / f"{rep}-{side.split()[0]}"
            folder.mkdir()
            seconds, path = timed(lambda w=write, f=folder: w(frame, f))  # type: ignore[misc]
            writes[side].append(seconds)
            sizes[side] = path.stat().st_size
            seconds, back = timed(lambda r=read, f=folder: r(f))  # type: ignore[misc]
            reads[side].append(seconds)
            if rep == 0:
                pd.testing.assert_frame_equal(back, frame, check_exact=True)
            del back
            for item in sorted(folder.rglob("*"), reverse=True):
                item.unlink() if item.is_file() else item.rmdir()
    base = "pickle (before)"
    write_base, read_base = (statistics.median(t[base]) for t in (writes, reads))
    lines = [
        f"\n  artifact store, {in_memory / 1e9:.2f} GB DataFrame ({ROWS:,} rows), "
        f"median of {REPEATS}, {os.cpu_count()} cores",
        f"  {'':<22}{'write s':>9}{'x pickle':>10}{'read s':>9}{'x pickle':>10}"
        f"{'file MB':>10}{'x pickle':>10}",
    ]
    for side in SIDES:
        write, read = statistics.median(writes[side]), statistics.median(reads[side])
        lines.append(
            f"  {side:<22}{write:>9.2f}{write / write_base:>10.2f}{read:>9.2f}"
            f"{read / read_base:>10.2f}{sizes[side] / 1e6:>10.0f}{sizes[side] / sizes[base]:>10.2f}"
        )
    print("\n".join(lines))
