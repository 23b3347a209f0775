"""The typed step artifact layer (``_artifacts.py``): formats, notes, hashes, atomic sharing.

Values go through real files and, where it matters, real processes: a library is made missing
by ``sys.modules[name] = None`` in a child process (the import really fails there), a writer is
killed with SIGKILL mid-write, and concurrent writers are separate processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal, assert_series_equal
from sklearn.linear_model import LogisticRegression

from dsops_jupyter.runtime import artifacts as _artifacts
from dsops_jupyter.runtime.artifacts import (
    ArtifactError,
    UnstorableError,
    entries,
    entry,
    load,
    save,
)

MODULE = Path(_artifacts.__file__)


def frames() -> dict[str, Any]:
    """pandas values Parquet gives back exactly."""
    tz = pd.date_range("2024-01-01", periods=3, freq="h", tz="Europe/Paris")
    return {
        "numbers_and_text": pd.DataFrame(
            {"a": [1, 2, 3], "b": [0.5, np.nan, 2.0], "s": list("xyz")}
        ),
        "typed": pd.DataFrame(
            {
                "when": list(tz),
                "cat": pd.Categorical(["a", "b", "a"]),
                "n": pd.array([1, None, 3], dtype="Int64"),
                "flag": [True, False, True],
            },
            index=pd.Index(["p", "q", "r"], name="key"),
        ),
        "series": pd.Series([1.5, 2.5], name="target"),
        "unnamed_series": pd.Series([1, 2, 3]),
    }


def check_manifest(workdir: Path, name: str, described: dict, fmt: str) -> None:
    data = workdir / name / _artifacts.DATA_FILES[fmt]
    assert described == json.loads((workdir / name / "manifest.json").read_text())
    assert described["format"] == fmt and described["name"] == name and described["step"] == "s"
    assert described["size"] == data.stat().st_size
    assert described["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert sorted(p.name for p in (workdir / name).iterdir()) == sorted(
        ["manifest.json", data.name]
    )


@pytest.mark.parametrize("key", list(frames()))
def test_pandas_values_go_to_parquet(tmp_path: Path, key: str) -> None:
    value = frames()[key]
    described = save(tmp_path, key, value, "s")
    check_manifest(tmp_path, key, described, "parquet")
    assert described["note"] == ""
    assert described["type"] == f"{type(value).__module__}.{type(value).__qualname__}"
    back = load(tmp_path, key)
    if isinstance(value, pd.Series):
        assert_series_equal(back, value, check_exact=True)
    else:
        assert_frame_equal(back, value, check_exact=True, check_index_type=True)
        assert isinstance(back.index, type(value.index))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("int_names", pd.DataFrame({0: [1, 2], 1: [3, 4]}), "column names are not all strings"),
        ("mixed", pd.DataFrame({"m": pd.Series([1, "a", 2.5], dtype=object)}), "mixed types"),
        ("seconds", pd.DataFrame({"t": pd.to_datetime(["2020-01-01"]).astype("M8[s]")}), "change"),
        ("object_text", pd.DataFrame({"s": pd.Series(["a", "b"], dtype=object)}), "change"),
    ],
)
def test_frames_parquet_would_change_fall_back_with_a_note(
    tmp_path: Path, key: str, value: pd.DataFrame, reason: str
) -> None:
    described = save(tmp_path, key, value, "s")
    check_manifest(tmp_path, key, described, "cloudpickle")
    assert reason in described["note"] and described["note"].endswith("stored with cloudpickle")
    back = load(tmp_path, key)
    assert_frame_equal(back, value, check_exact=True, check_column_type=True)
    assert list(back.dtypes) == list(value.dtypes)


def test_arrays_go_to_npy_exactly(tmp_path: Path) -> None:
    values = {
        "fortran": np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),
        "record": np.array([(1, 2.5)], dtype=[("i", "<i8"), ("f", "<f4")]),
        "scalar": np.array(7, dtype=np.uint16),
    }
    for name, value in values.items():
        check_manifest(tmp_path, name, save(tmp_path, name, value, "s"), "npy")
        back = load(tmp_path, name)
        assert back.dtype == value.dtype and back.shape == value.shape
        assert back.flags.f_contiguous == value.flags.f_contiguous and (back == value).all()
    objects = np.array([{"a": 1}, None], dtype=object)  # npy would need pickle
    assert save(tmp_path, "objects", objects, "s")["format"] == "cloudpickle"
    assert list(load(tmp_path, "objects")) == list(objects)


def test_json_only_for_exact_round_trips(tmp_path: Path) -> None:
    exact = {"a": [1, 2.5, None, True, "é"], "nested": {"k": []}, "big": 10**30}
    for name, value in {"exact": exact, "text": "hello", "number": 3, "none": None}.items():
        described = save(tmp_path, name, value, "s")
        check_manifest(tmp_path, name, described, "json")
        assert load(tmp_path, name) == value and type(load(tmp_path, name)) is type(value)
    inexact = {
        "tuple": (1, 2),
        "nan": [float("nan")],
        "int_keys": {1: "a"},
        "numpy_float": np.float64(1.5),
        "bool_subclass_key": {True: 1},
        "set": {1, 2},
    }
    for name, value in inexact.items():
        assert save(tmp_path, name, value, "s")["format"] == "cloudpickle", name
        back = load(tmp_path, name)
        assert type(back) is type(value) and repr(back) == repr(value)


def test_estimators_and_arrays_in_containers_go_to_joblib(tmp_path: Path) -> None:
    features = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(features, [0, 0, 1, 1])
    check_manifest(tmp_path, "model", save(tmp_path, "model", model, "s"), "joblib")
    assert (load(tmp_path, "model").predict_proba(features) == model.predict_proba(features)).all()
    split = [features[:2], features[2:]]
    check_manifest(tmp_path, "split", save(tmp_path, "split", split, "s"), "joblib")
    assert all((a == b).all() for a, b in zip(load(tmp_path, "split"), split, strict=True))


def run_child(code: str, *, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Python code in a fresh process, with the artifact module loaded from its file as ``A``."""
    prelude = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('dsops_artifacts', {str(MODULE)!r})\n"
        "A = importlib.util.module_from_spec(spec); spec.loader.exec_module(A)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def test_closures_and_lambdas_cross_processes(tmp_path: Path) -> None:
    run_child(
        """
        from pathlib import Path
        def make(k):
            def scale(v):
                return v * k
            return scale
        A.save(Path("w"), "scale", make(3), "s")
        A.save(Path("w"), "lam", lambda v: v + 1, "s")
        """,
        cwd=tmp_path,
    )
    assert entry(tmp_path / "w", "scale")["format"] == "cloudpickle"  # type: ignore[index]
    code = (
        "from pathlib import Path\nw = Path('w')\nprint(A.load(w, 'scale')(2), A.load(w, 'lam')(2))"
    )
    done = run_child(code, cwd=tmp_path)
    assert done.stdout.split() == ["6", "3"]


def test_main_classes_stay_the_scripts_classes(tmp_path: Path) -> None:
    """An instance of a class the running script defines at its top level keeps that class in
    the next process (cloudpickle alone would rebuild a copy: isinstance would be False)."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import importlib.util, sys
            from pathlib import Path
            spec = importlib.util.spec_from_file_location("a", {str(MODULE)!r})
            A = importlib.util.module_from_spec(spec); spec.loader.exec_module(A)
            class Box:
                made = 0
            if sys.argv[1] == "save":
                A.save(Path("w"), "box", [Box(), lambda: Box], "s")
            else:
                box, factory = A.load(Path("w"), "box")
                print(isinstance(box, Box), factory() is Box)
            """
        )
    )
    subprocess.run([sys.executable, script, "save"], cwd=tmp_path, check=True, timeout=60)
    assert entry(tmp_path / "w", "box")["format"] == "cloudpickle"  # type: ignore[index]
    done = subprocess.run(
        [sys.executable, script, "load"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["True", "True"], done.stderr


@pytest.mark.parametrize(
    ("blocked", "value", "expected", "note"),
    [
        ("pyarrow", "pd.DataFrame({'a': [1, 2]})", "cloudpickle", "pyarrow is not installed"),
        ("joblib", "[np.zeros(2)]", "cloudpickle", "joblib is not installed"),
        ("cloudpickle", "(1, 2)", "pickle", "cloudpickle is not installed"),
    ],
)
def test_a_missing_library_falls_back_with_a_note(
    tmp_path: Path, blocked: str, value: str, expected: str, note: str
) -> None:
    run_child(
        f"""
        sys.modules[{blocked!r}] = None  # import {blocked} now fails, as when not installed
        from pathlib import Path
        import numpy as np, pandas as pd
        A.save(Path("w"), "v", {value}, "s")
        """,
        cwd=tmp_path,
    )
    described = entry(tmp_path / "w", "v")
    assert described is not None and described["format"] == expected
    assert note in described["note"] and described["note"].endswith(f"stored with {expected}")
    assert repr(load(tmp_path / "w", "v")) == repr(eval(value))


def test_reading_without_the_formats_library_is_one_line(tmp_path: Path) -> None:
    save(tmp_path / "w", "frame", pd.DataFrame({"a": [1]}), "s")
    done = run_child(
        "sys.modules['pyarrow'] = None\nfrom pathlib import Path\nA.load(Path('w'), 'frame')",
        cwd=tmp_path,
        check=False,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("reading frame (parquet) in w needs pyarrow: pip install pyarrow"), last


def test_a_changed_byte_is_refused(tmp_path: Path) -> None:
    save(tmp_path, "frame", pd.DataFrame({"a": range(100)}), "s")
    data = tmp_path / "frame" / "data.parquet"
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError) as caught:
        load(tmp_path, "frame")
    message = str(caught.value)
    assert "\n" not in message and "frame" in message and str(tmp_path) in message
    assert "does not match its manifest" in message


def test_a_missing_artifact_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"^x is not in .*: run the step that writes it first$"):
        load(tmp_path, "x")
    assert entry(tmp_path, "x") is None and entries(tmp_path / "nowhere") == {}


@pytest.mark.parametrize("kind", ["file", "socket", "generator", "lock", "nested file"])
def test_values_no_format_can_store(tmp_path: Path, kind: str) -> None:
    with open(tmp_path / "f.txt", "w") as handle, socket.socket() as sock:
        value = {
            "file": handle,
            "socket": sock,
            "generator": (i for i in range(3)),
            "lock": threading.Lock(),
            "nested file": {"handle": handle},
        }[kind]
        with pytest.raises(UnstorableError) as caught:
            save(tmp_path / "w", "thing", value, "s")
    message = str(caught.value)
    assert message.startswith(f"cannot store thing (a {type(value).__name__})"), message
    assert "\n" not in message
    assert os.listdir(tmp_path / "w") == [], "a refused value left files behind"


def test_copy_hard_links_and_checks(tmp_path: Path) -> None:
    described = save(tmp_path / "a", "frame", pd.DataFrame({"a": [1, 2]}), "s")
    assert _artifacts.copy(tmp_path / "a", tmp_path / "b", "frame") == described
    source, copied = (tmp_path / d / "frame" / "data.parquet" for d in "ab")
    assert source.stat().st_ino == copied.stat().st_ino  # same file system: a hard link
    assert_frame_equal(load(tmp_path / "b", "frame"), pd.DataFrame({"a": [1, 2]}))
    raw = bytearray(source.read_bytes())
    raw[-20] ^= 0xFF
    (tmp_path / "a" / "frame" / "data.parquet").unlink()  # break the link, then corrupt the source
    source.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        _artifacts.copy(tmp_path / "a", tmp_path / "c", "frame")
    assert entries(tmp_path / "c") == {}


def test_copy_to_another_file_system_copies_the_bytes(tmp_path: Path) -> None:
    shm = Path("/dev/shm")  # a tmpfs on every Linux this suite runs on (.ci/run: Debian)
    assert shm.is_dir() and os.stat(shm).st_dev != os.stat(tmp_path).st_dev, (
        "needs /dev/shm on a file system of its own (a hard link cannot cross)"
    )
    value = np.arange(10_000)
    described = save(tmp_path, "array", value, "s")
    with tempfile.TemporaryDirectory(dir=shm) as other:
        assert _artifacts.copy(tmp_path, Path(other), "array") == described
        copied = Path(other) / "array" / "data.npy"
        assert copied.stat().st_ino != (tmp_path / "array" / "data.npy").stat().st_ino
        assert (load(Path(other), "array") == value).all()


def test_artifacts_have_the_umasks_modes(tmp_path: Path) -> None:
    """A shared workdir (a volume, another uid in an image) needs readable artifacts."""
    umask = os.umask(0o022)
    try:
        save(tmp_path, "v", [1], "s")
    finally:
        os.umask(umask)
    assert (tmp_path / "v").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "v" / "data.json").stat().st_mode & 0o777 == 0o644


def test_replacing_keeps_one_whole_artifact(tmp_path: Path) -> None:
    save(tmp_path, "v", pd.DataFrame({"a": [1]}), "first")
    save(tmp_path, "v", [1, 2], "second")
    assert load(tmp_path, "v") == [1, 2] and entry(tmp_path, "v")["step"] == "second"  # type: ignore[index]
    assert sorted(os.listdir(tmp_path)) == ["v"] and sorted(os.listdir(tmp_path / "v")) == [
        "data.json",
        "manifest.json",
    ]


def hidden(workdir: Path) -> list[str]:
    return [n for n in os.listdir(workdir) if n.startswith(".")]


def test_a_killed_writer_leaves_nothing_readable(tmp_path: Path) -> None:
    """SIGKILL while a 400 MB array is being written: the old artifact stays the one read."""
    workdir = tmp_path / "w"
    save(workdir, "big", [1, 2, 3], "before")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import importlib.util, numpy as np\nfrom pathlib import Path\n"
            f"spec = importlib.util.spec_from_file_location('a', {str(MODULE)!r})\n"
            "A = importlib.util.module_from_spec(spec); spec.loader.exec_module(A)\n"
            "value = np.ones(50_000_000)\n"
            "A.save(Path('w'), 'big', value, 'killed')\n",
        ],
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 60
    data = None
    while time.monotonic() < deadline and data is None:
        for name in hidden(workdir):
            candidate = workdir / name / "data.npy"
            if candidate.is_file() and candidate.stat().st_size > 1_000_000:
                data = candidate
        time.sleep(0.005)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    assert data is not None, "the writer never got to write its data"
    assert not (data.parent / "manifest.json").exists()
    assert load(workdir, "big") == [1, 2, 3]
    assert list(entries(workdir)) == ["big"] and entry(workdir, "big")["step"] == "before"  # type: ignore[index]


CONCURRENT_WRITER = """
import os
from pathlib import Path
import numpy as np
if {no_exchange}:
    A._exchange = lambda first, second: False  # as on a system without renameat2
me = int(sys.argv[1])
for round in range(40):
    value = np.full(200_000, me * 1000 + round, dtype=np.int64)
    A.save(Path("w"), "shared", value, f"writer{{me}}")
    A.save(Path("w"), f"own{{me}}", value, f"writer{{me}}")
"""


@pytest.mark.parametrize("no_exchange", [False, True], ids=["exchange", "aside"])
def test_concurrent_writers_leave_only_whole_artifacts(tmp_path: Path, no_exchange: bool) -> None:
    code = CONCURRENT_WRITER.format(no_exchange=no_exchange)
    prelude = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('a', {str(MODULE)!r})\n"
        "A = importlib.util.module_from_spec(spec); spec.loader.exec_module(A)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", prelude + code, str(me)], cwd=tmp_path)
        for me in (1, 2)
    ]
    seen = 0
    while any(w.poll() is None for w in writers):
        time.sleep(0.002)
        if entry(tmp_path / "w", "shared") is None:
            continue
        value = load(tmp_path / "w", "shared")  # never half-written, never a hash mismatch
        assert isinstance(value, np.ndarray) and len(set(value.tolist())) == 1
        seen += 1
    assert [w.wait() for w in writers] == [0, 0]
    assert seen > 0
    assert hidden(tmp_path / "w") == [], "a partial or replaced folder was left behind"
    assert sorted(entries(tmp_path / "w")) == ["own1", "own2", "shared"]
    for name in ("own1", "own2"):
        assert load(tmp_path / "w", name).tolist() == [int(name[-1]) * 1000 + 39] * 200_000
    assert load(tmp_path / "w", "shared")[0] in (1039, 2039)
