"""fsutil.atomic_stream: a target is written whole or left as it was, with no temp file behind."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from dsops_jupyter import fsutil
from dsops_jupyter.fsutil import atomic_stream, atomic_write


def test_stream_lands_whole_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"
    with atomic_stream(target) as handle:
        for chunk in (b"a" * 1000, b"b" * 1000):
            handle.write(chunk)
        assert not target.exists()  # nothing visible until the body succeeded
    assert target.read_bytes() == b"a" * 1000 + b"b" * 1000
    assert target.stat().st_mode & 0o777 == 0o666 & ~fsutil._UMASK
    assert os.listdir(target.parent) == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_mid_write_leaves_no_file_and_no_temp(tmp_path: Path, error: BaseException) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(type(error)), atomic_stream(target) as handle:
        handle.write(b"half of it")
        raise error
    assert os.listdir(tmp_path) == []


def test_failure_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write(target, b"old")
    os.chmod(target, 0o600)
    with pytest.raises(RuntimeError), atomic_stream(target) as handle:
        handle.write(b"new")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    atomic_write(target, b"new")
    assert target.stat().st_mode & 0o777 == 0o600  # a replaced file keeps its mode


def test_full_disk_at_fsync_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC cannot be produced for real here: the fsync that would report it is mocked."""

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"), atomic_stream(tmp_path / "out") as handle:
        handle.write(b"data")
    assert os.listdir(tmp_path) == []


def test_content_addressed_name_is_decided_after_writing(tmp_path: Path) -> None:
    digest = hashlib.sha256()
    with atomic_stream(tmp_path / "blob", final_name=digest.hexdigest) as handle:
        for chunk in (b"x", b"y"):
            digest.update(chunk)
            handle.write(chunk)
    assert os.listdir(tmp_path) == [hashlib.sha256(b"xy").hexdigest()]
