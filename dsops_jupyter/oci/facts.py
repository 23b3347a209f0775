"""What a base image offers: its python3.X and its libc, read from its layers, never by running it.

They decide which wheels fit the image (the wheelhouse `Target`) and the entrypoint's interpreter.
"""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

from dsops_jupyter import wheelhouse as wh
from dsops_jupyter.errors import ImageError
from dsops_jupyter.fsutil import atomic_write
from dsops_jupyter.oci.blob import canonical_json, hex_of, host_architecture
from dsops_jupyter.oci.source import BaseImage, normalize_member


@dataclass(frozen=True)
class BaseFacts:
    """The interpreter and platform of a base image."""

    architecture: str
    python: str
    python_version: tuple[int, int]
    libc: str
    libc_version: tuple[int, int]

    def target(self) -> wh.Target:
        machine = {"amd64": "x86_64", "arm64": "aarch64", "386": "i686"}.get(
            self.architecture, self.architecture
        )
        return wh.Target(self.python_version, self.python, machine, self.libc, self.libc_version)


_PYTHON = re.compile(r"^(usr/local/bin|usr/bin|bin)/python3\.(\d+)$")
_LIBC = re.compile(
    r"^(usr/)?lib(64|32)?(/[a-z0-9_]+-linux-gnu[a-z0-9]*)?/libc(\.so\.6|-2\.\d+\.so)$"
)
_MUSL = re.compile(r"^(usr/)?lib/ld-musl-[a-z0-9_]+\.so\.1$")
_PYTHON_DIRS = ("usr/local/bin", "usr/bin", "bin")


def inspect_base(base: BaseImage, cache: Path) -> BaseFacts:
    """Find python3.X and the libc version in the base's layers (cached by base digest)."""
    memo = cache / "bases" / f"{hex_of(base.digest)}.facts.json"
    if memo.is_file():
        data = json.loads(memo.read_text())
        return BaseFacts(
            data["architecture"],
            data["python"],
            tuple(data["python_version"]),
            data["libc"],
            tuple(data["libc_version"]),
        )
    facts = _scan_layers(base)
    atomic_write(memo, canonical_json(asdict(facts)))
    return facts


def _scan_layers(base: BaseImage) -> BaseFacts:
    pythons: dict[str, tuple[int, int]] = {}
    glibc: tuple[int, int] | None = None
    musl = False
    for layer in base.layers:
        with layer.open() as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                name = normalize_member(member.name)
                match = _PYTHON.match(name)
                if match:
                    pythons[name] = (3, int(match.group(2)))
                elif _LIBC.match(name):
                    glibc = _glibc_version(archive, member) or glibc
                elif _MUSL.match(name):
                    musl = True
    return _facts(base, pythons, glibc, musl)


def _glibc_version(archive: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[int, int] | None:
    named = re.search(r"libc-2\.(\d+)\.so", member.name + " " + member.linkname)
    if named:
        return (2, int(named.group(1)))
    if not member.isfile():
        return None
    handle = archive.extractfile(member)
    data = handle.read() if handle else b""
    versions = [int(v) for v in re.findall(rb"GLIBC_2\.(\d+)", data)]
    return (2, max(versions)) if versions else None


def _facts(
    base: BaseImage, pythons: dict[str, tuple[int, int]], glibc: tuple[int, int] | None, musl: bool
) -> BaseFacts:
    for folder in _PYTHON_DIRS:
        found = {n: v for n, v in pythons.items() if n.startswith(folder + "/")}
        if found:
            name = max(found, key=lambda n: found[n])
            break
    else:
        raise ImageError(
            f"base image {base.label} has no python3.X in /usr/local/bin or /usr/bin; use a base"
            " image with Python 3 installed"
        )
    if glibc is None and not musl:
        raise ImageError(
            f"base image {base.label} has neither glibc nor musl; wheels cannot run there"
        )
    libc, version = ("glibc", glibc) if glibc else ("musl", (1, 2))
    arch = base.config.get("architecture") or host_architecture()
    return BaseFacts(arch, "/" + name, pythons[name], libc, version)
