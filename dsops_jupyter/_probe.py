"""Content fingerprints of kernel values, for `dsops run`'s check of the static analysis.

`dsops run` checks that each step changes only the values the analysis predicted. This file's
source is sent to the kernel once per run and executed there as module ``_dsops_probe`` (the
user's namespace gains no name). It must not import dsops_jupyter and
needs only the standard library; pandas and numpy values get a content hash when the kernel
has already imported those libraries, anything else is hashed through its pickle stream
(cloudpickle when plain pickle refuses), streamed into the hash so no copy is kept in memory.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
import types
from typing import Any, Protocol

# Bound names that are code, not data: a step may rebind them (the analysis sees that) but
# never mutates them in place, and they pickle by reference or not at all.
_CODE = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
UNFINGERPRINTABLE = "?"


class _Digest(Protocol):
    """What the fingerprints need of a hashlib object (sha256, blake2b)."""

    def update(self, data: bytes | memoryview, /) -> None: ...


class _HashSink:
    """A file-like target for pickle.Pickler that feeds the digest instead of keeping bytes."""

    def __init__(self, digest: _Digest) -> None:
        self.write = digest.update


def _pandas_digest(value: Any, digest: _Digest) -> bool:
    pandas = sys.modules.get("pandas")
    if pandas is None or not isinstance(value, (pandas.DataFrame, pandas.Series, pandas.Index)):
        return False
    hashes = pandas.util.hash_pandas_object(value, index=True)
    digest.update(type(value).__name__.encode())
    digest.update(repr(getattr(value, "dtypes", getattr(value, "dtype", None))).encode())
    digest.update(repr(list(getattr(value, "columns", [getattr(value, "name", None)]))).encode())
    digest.update(hashes.to_numpy().tobytes())
    return True


def _numpy_digest(value: Any, digest: _Digest) -> bool:
    numpy = sys.modules.get("numpy")
    if numpy is None or not isinstance(value, numpy.ndarray) or value.dtype.hasobject:
        return False
    digest.update(f"{value.dtype.str}{value.shape}".encode())
    digest.update(memoryview(numpy.ascontiguousarray(value)).cast("B"))
    return True


def _pickle_digest(value: Any, digest: _Digest) -> None:
    try:
        pickle.Pickler(_HashSink(digest), protocol=4).dump(value)
    except Exception:
        import cloudpickle  # ImportError: the value cannot be fingerprinted

        cloudpickle.CloudPickler(_HashSink(digest), protocol=4).dump(value)


def fingerprint(value: Any) -> str | None:
    """A digest of the value's content; None for code; "?" when it cannot be fingerprinted."""
    if isinstance(value, _CODE):
        return None
    digest = hashlib.blake2b(digest_size=16)
    try:
        if not (_pandas_digest(value, digest) or _numpy_digest(value, digest)):
            _pickle_digest(value, digest)
    except Exception:
        return UNFINGERPRINTABLE
    return digest.hexdigest()


def fingerprints(names: list[str], namespace: dict[str, Any]) -> str:
    """JSON {name: digest} for the names bound in ``namespace`` that hold data."""
    found = {}
    for name in names:
        if name in namespace:
            digest = fingerprint(namespace[name])
            if digest is not None:
                found[name] = digest
    return json.dumps(found)
