"""Host-side wheelhouse: the locked wheels, fetched once for the base image's Python and platform.

Why: ``pip install`` inside ``docker build`` needs the network, a resolver and the wall clock at
build time. Fetching exactly the pinned wheels on the host (``pip download --only-binary=:all:
--platform ...``) and unpacking them with pypa ``installer`` into a layer makes the image build
hermetic (no network once the wheelhouse holds the wheels) and deterministic (the layer is a pure
function of the wheel bytes, each checked against its RECORD hash).
"""

from __future__ import annotations

import calendar
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from installer import install
from installer.destinations import WheelDestination
from installer.exceptions import InstallerError
from installer.records import InvalidRecordEntry, RecordEntry, parse_record_file
from installer.sources import WheelFile
from installer.utils import Scheme, construct_record_file
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as PackagingRequirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from dsops_jupyter.errors import LockError
from dsops_jupyter.events import OnEvent, ignore, log

SITE_PACKAGES = "opt/dsops/site-packages"
_MANYLINUX_LEGACY = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
_OLDEST_GLIBC = {"x86_64": 5, "i686": 5}  # other architectures start at manylinux2014 (2.17)


def cache_dir() -> Path:
    """Where dsops keeps wheels, extracted base images and built layers (``DSOPS_CACHE_DIR``)."""
    explicit = os.environ.get("DSOPS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "dsops"


def default_wheelhouse(cache: Path | None = None) -> Path:
    """``DSOPS_WHEELHOUSE``, else ``<cache>/wheelhouse``: one folder for every target, since
    wheel file names already carry version, Python and platform tags."""
    explicit = os.environ.get("DSOPS_WHEELHOUSE")
    return Path(explicit) if explicit else (cache or cache_dir()) / "wheelhouse"


# --- the lock ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    """One ``name==version`` line of requirements.lock (name canonicalized)."""

    name: str
    version: str

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}"


def parse_lock(text: str | bytes, target: Target | None = None) -> list[Requirement]:
    """Pinned requirements, sorted by name; lines whose marker excludes ``target`` are dropped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    found: dict[str, Requirement] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        req = _pinned(line, f"requirements.lock line {number}", raw)
        if req.marker and target is not None and not req.marker.evaluate(target.environment()):
            continue
        name = canonicalize_name(req.name)
        found[name] = Requirement(name, next(iter(req.specifier)).version)
    return [found[name] for name in sorted(found)]


def _pinned(line: str, where: str, raw: str) -> PackagingRequirement:
    """The line as a PEP 508 requirement pinned to one valid version, or LockError."""
    try:
        req = PackagingRequirement(line)
    except InvalidRequirement:
        raise LockError(_refusal(line, where, raw)) from None
    specs = list(req.specifier)
    if req.url or req.extras or len(specs) != 1 or specs[0].operator not in ("==", "==="):
        raise LockError(_unpinned(where, raw))
    try:
        Version(specs[0].version)
    except InvalidVersion:
        raise LockError(
            f"{where}: {specs[0].version!r} is not a valid version of {req.name}"
        ) from None
    return req


def _refusal(line: str, where: str, raw: str) -> str:
    """Why packaging refused a line; ``six==latest`` is said to have a bad version."""
    name, pinned, version = (part.strip() for part in line.partition("=="))
    if pinned and _is_name(name):
        return f"{where}: {version.split(';', 1)[0].strip()!r} is not a valid version of {name}"
    return _unpinned(where, raw)


def _unpinned(where: str, raw: str) -> str:
    return (
        f"{where}: {raw.strip()!r} is not pinned as name==version; regenerate the lock with "
        "dsops convert"
    )


def _is_name(text: str) -> bool:
    try:
        return PackagingRequirement(text).name == text
    except InvalidRequirement:
        return False


# --- the target interpreter --------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The Python inside the base image: what wheels it can import."""

    python_version: tuple[int, int]
    interpreter: str = "/usr/bin/python3"
    machine: str = "x86_64"
    libc: str = "glibc"
    libc_version: tuple[int, int] = (2, 17)

    @property
    def abi(self) -> str:
        return f"cp{self.python_version[0]}{self.python_version[1]}"

    def __str__(self) -> str:
        libc = "manylinux" if self.libc == "glibc" else "musllinux"
        major, minor = self.libc_version
        return f"{self.abi}-{libc}_{major}_{minor}_{self.machine}"

    def platforms(self) -> list[str]:
        """Platform tags the base's libc accepts, most specific first."""
        major, newest = self.libc_version
        if self.libc == "musl":
            return [f"musllinux_{major}_{minor}_{self.machine}" for minor in range(newest, -1, -1)]
        tags = []
        for minor in range(newest, _OLDEST_GLIBC.get(self.machine, 17) - 1, -1):
            tags.append(f"manylinux_{major}_{minor}_{self.machine}")
            if minor in _MANYLINUX_LEGACY:
                tags.append(f"{_MANYLINUX_LEGACY[minor]}_{self.machine}")
        return tags

    def tags(self) -> list[Tag]:
        """Every wheel tag the target accepts, best first (pip's own order)."""
        platforms = self.platforms()
        ordered = list(cpython_tags(self.python_version, [self.abi], platforms))
        ordered += list(compatible_tags(self.python_version, self.abi, platforms))
        return ordered

    def environment(self) -> dict[str, str]:
        """PEP 508 marker environment of the target (for ``; python_version < ...`` lines)."""
        version = ".".join(map(str, self.python_version))
        return {
            "implementation_name": "cpython",
            "implementation_version": version,
            "os_name": "posix",
            "platform_machine": self.machine,
            "platform_python_implementation": "CPython",
            "platform_system": "Linux",
            "python_full_version": f"{version}.0",
            "python_version": version,
            "sys_platform": "linux",
        }


# --- choosing and fetching wheels --------------------------------------------------------------
def select_wheels(
    requirements: Iterable[Requirement], target: Target, directory: Path
) -> tuple[dict[str, Path], list[Requirement]]:
    """The best wheel in ``directory`` for each requirement, and the requirements with none."""
    rank = {tag: index for index, tag in enumerate(target.tags())}
    candidates: dict[tuple[str, Version], list[tuple[int, str, Path]]] = {}
    for path in sorted(directory.glob("*.whl")) if directory.is_dir() else []:
        try:
            name, version, _build, tags = parse_wheel_filename(path.name)
        except (InvalidWheelFilename, InvalidVersion):
            continue
        best = min((rank[tag] for tag in tags if tag in rank), default=None)
        if best is not None:
            candidates.setdefault((name, version), []).append((best, path.name, path))
    chosen, missing = {}, []
    for req in requirements:
        options = candidates.get((req.name, Version(req.version)))
        if options:
            chosen[req.name] = min(options)[2]
        else:
            missing.append(req)
    return chosen, missing


def download(
    requirements: list[Requirement], target: Target, directory: Path, on_event: OnEvent = ignore
) -> None:
    """``pip download`` the wheels into ``directory`` (atomically: whole files or nothing)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=directory) as tmp:
        lock = Path(tmp) / "requirements.txt"
        lock.write_text("".join(f"{req.line}\n" for req in requirements))
        dest = Path(tmp) / "wheels"
        _run_pip(_pip_download_args(target, lock, dest), target, on_event)
        for wheel in sorted(dest.glob("*.whl")):
            os.replace(wheel, directory / wheel.name)


def _pip_download_args(target: Target, lock: Path, dest: Path) -> list[str]:
    major, minor = target.python_version
    args = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    args += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
    args += ["--python-version", f"{major}.{minor}", "--implementation", "cp"]
    for abi in (target.abi, "abi3", "none"):
        args += ["--abi", abi]
    for platform in target.platforms():
        args += ["--platform", platform]
    return [*args, "--dest", str(dest), "-r", str(lock)]


def _run_pip(args: list[str], target: Target, on_event: OnEvent) -> None:
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:  # the build's "step k of n" is the progress: these are its log
        line = raw.rstrip()
        lines.append(line)
        log(on_event, line)
    if proc.wait() != 0:
        raise LockError(_pip_failure(lines, target))


def _pip_failure(lines: list[str], target: Target) -> str:
    for line in lines:
        match = re.search(r"No matching distribution found for (\S+)", line)
        if match:
            return (
                f"no wheel of {match.group(1)} for {target} on the package index; pick a version"
                " that ships one or a base image with another Python"
            )
    errors = [line for line in lines if line.startswith("ERROR")] or lines[-1:]
    return f"pip download failed for {target}: {errors[0] if errors else 'no output'}"


def ensure_wheels(
    requirements: list[Requirement],
    target: Target,
    directory: Path | None = None,
    on_event: OnEvent = ignore,
) -> list[Path]:
    """One wheel per requirement (sorted by name), downloading only what the wheelhouse lacks.

    A full wheelhouse means no network access at all: that is the hermetic mode.
    """
    directory = directory or default_wheelhouse()
    chosen, missing = select_wheels(requirements, target, directory)
    if missing:
        log(on_event, f"fetching {len(missing)} wheel(s) for {target} into {directory}")
        download(missing, target, directory, on_event)
        chosen, missing = select_wheels(requirements, target, directory)
    if missing:
        names = ", ".join(req.line for req in missing)
        raise LockError(f"no wheel compatible with {target} for {names} in {directory}")
    return [chosen[req.name] for req in requirements]


# --- unpacking wheels: pypa installer, into a layer instead of a folder ------------------------
_INSTALLED = ("purelib", "platlib")  # site-packages; scripts, headers and data are left out


@dataclass(frozen=True)
class InstalledFile:
    """One file a wheel puts into site-packages; ``read`` gives its bytes on demand."""

    path: str
    mode: int
    mtime: int
    read: Callable[[], bytes]


@contextlib.contextmanager
def installed_files(
    wheels: Iterable[Path], site_packages: str = SITE_PACKAGES
) -> Iterator[list[InstalledFile]]:
    """The files of ``pip install --target site_packages --no-deps --no-compile`` of the wheels.

    pypa ``installer`` reads each wheel (its WHEEL file, ``.data`` schemes and RECORD); each
    file's bytes are checked against their RECORD hash when read, so a tampered wheel is refused
    while its layer is written. Console-script wrappers and ``.data/{scripts,headers,data}`` are
    left out (the image runs ``python /opt/dsops/<name>.py``), and so is any bytecode: ``.pyc``
    stays absent. Later wheels (in the given order) win when two write the same path, as with pip.
    """
    with contextlib.ExitStack() as stack:
        files: dict[str, InstalledFile] = {}
        for wheel in wheels:
            try:
                archive = stack.enter_context(zipfile.ZipFile(wheel))
                source = WheelFile(archive)
                source.validate_record(validate_contents=False)
                destination = _LayerDestination(wheel, archive, source, site_packages)
                with warnings.catch_warnings():  # installer warns of the __pycache__ it skips
                    warnings.simplefilter("ignore", RuntimeWarning)
                    install(source, destination, additional_metadata={})
            except (InstallerError, InvalidRecordEntry, ValueError, zipfile.BadZipFile) as err:
                raise LockError(
                    f"wheel {wheel.name} is malformed ({_first_issue(err)}); delete {wheel} so "
                    "it is fetched again"
                ) from None
            files.update(destination.files)
        yield [files[path] for path in sorted(files)]


def _first_issue(err: Exception) -> str:
    issues = getattr(err, "issues", None)
    return str(issues[0] if issues else err)


class _LayerDestination(WheelDestination):
    """installer's destination for a layer: notes where each file goes and reads nothing yet."""

    def __init__(
        self, wheel: Path, archive: zipfile.ZipFile, source: WheelFile, site_packages: str
    ) -> None:
        self.wheel, self.archive, self.site_packages = wheel, archive, site_packages
        self.records = {
            row[0]: RecordEntry.from_elements(*row)
            for row in parse_record_file(source.read_dist_info("RECORD").splitlines())
        }
        self.record_mtime = self._mtime(f"{source.dist_info_dir}/RECORD")
        self.files: dict[str, InstalledFile] = {}

    def write_script(self, name: str, module: str, attr: str, section: str) -> RecordEntry:
        return RecordEntry(name, None, None)  # left out: the image runs the script directly

    def write_file(
        self, scheme: Scheme, path: str | os.PathLike[str], stream: BinaryIO, is_executable: bool
    ) -> RecordEntry:
        member, dest = stream.name, PurePosixPath(path).as_posix()
        parts = PurePosixPath(dest).parts
        if dest.startswith("/") or ".." in parts:
            raise LockError(
                f"wheel {self.wheel.name} has an unsafe member {member!r}; remove it from "
                f"{self.wheel}"
            )
        record = self.records.get(member)  # None: RECORD.jws/.p7s, a signature of the old RECORD
        if record is None:
            return RecordEntry(dest, None, None)
        if scheme in _INSTALLED and not dest.endswith(".pyc"):
            self.files[f"{self.site_packages}/{dest}"] = InstalledFile(
                f"{self.site_packages}/{dest}",
                0o755 if is_executable else 0o644,
                self._mtime(member),
                partial(self._read, member, record),
            )
        return RecordEntry(dest, record.hash_, record.size)

    def finalize_installation(
        self, scheme: Scheme, record_file_path: str, records: Iterable[tuple[Scheme, RecordEntry]]
    ) -> None:
        """RECORD lists what was installed (relocated ``.data/purelib`` files, no scripts)."""
        kept = [
            (where, entry)
            for where, entry in records
            if where in _INSTALLED
            and (
                f"{self.site_packages}/{entry.path}" in self.files or entry.path == record_file_path
            )
        ]
        with construct_record_file(kept) as stream:
            data = stream.read()
        path = f"{self.site_packages}/{record_file_path}"
        self.files[path] = InstalledFile(path, 0o644, self.record_mtime, lambda: data)

    def _mtime(self, member: str) -> int:
        return calendar.timegm((*self.archive.getinfo(member).date_time, 0, 0, 0))

    def _read(self, member: str, record: RecordEntry) -> bytes:
        data = self.archive.read(member)
        if not record.validate_stream(io.BytesIO(data)):
            raise LockError(
                f"wheel {self.wheel.name}: {member} does not match its RECORD hash; delete "
                f"{self.wheel} so it is fetched again"
            )
        return data
