"""Pytest plugin: a private Docker engine for the session, and a local base image.

The suite never uses a Docker engine it did not start: `docker_engine` runs its own dockerd
(no bridge, no iptables) with a unique socket and data root under a temp dir, points DOCKER_HOST
at it for the session, and kills its process group at the end. Storage is overlay2 when the
kernel and the temp dir's filesystem allow it (about ten times faster builds: vfs copies the whole
filesystem at every build step), else vfs; DSOPS_TEST_STORAGE_DRIVER forces one. No registry is
reachable, so the base image is imported from a Debian rootfs tarball (made by debootstrap when
missing) and given the host's CA bundle so pip can reach PyPI during builds — a test-only layer,
never part of the product's Dockerfile.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOTFS_CACHE = Path("/var/cache/dsops-tests")
ROOTFS_TAR = ROOTFS_CACHE / "bookworm-rootfs.tar"
ROOTFS_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_IMAGE = "dsops-test-base:bookworm"
CA_BASE_IMAGE = "dsops-test-base:bookworm-ca"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
START_TIMEOUT = 60.0
STORAGE_DRIVERS = ("overlay2", "vfs")


@dataclass
class DockerEngine:
    """A running private dockerd: its address, a client, and where its files live."""

    host: str
    root: Path
    process: subprocess.Popen[bytes]
    client: object
    storage_driver: str = "vfs"

    @property
    def log_path(self) -> Path:
        return self.root / "dockerd.log"


def _start_dockerd(root: Path, driver: str = "vfs") -> subprocess.Popen[bytes]:
    command = [
        "dockerd",
        f"--storage-driver={driver}",
        "--iptables=false",
        "--ip6tables=false",
        "--bridge=none",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{root / 'docker.sock'}",
    ]
    with (root / "dockerd.log").open("ab") as log:
        return subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def start_engine(root: Path) -> DockerEngine:
    """dockerd on the first storage driver that starts here (see STORAGE_DRIVERS)."""
    forced = os.environ.get("DSOPS_TEST_STORAGE_DRIVER")
    host = f"unix://{root / 'docker.sock'}"
    errors = []
    for driver in (forced,) if forced else STORAGE_DRIVERS:
        process = _start_dockerd(root, driver)
        try:
            client = _wait_for_ping(process, host, root / "dockerd.log")
        except RuntimeError as err:
            _stop_dockerd(process, root)
            shutil.rmtree(root / "data", ignore_errors=True)
            errors.append(f"{driver}: {err}")
            continue
        return DockerEngine(host, root, process, client, driver)
    raise RuntimeError("no storage driver worked:\n" + "\n".join(errors))


def _wait_for_ping(process: subprocess.Popen[bytes], host: str, log: Path) -> object:
    import docker

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(Exception):
            client = docker.DockerClient(base_url=host, timeout=600)
            if client.ping():
                return client
        time.sleep(0.3)
    tail = log.read_text(errors="replace").splitlines()[-15:]
    raise RuntimeError("dockerd did not answer ping:\n" + "\n".join(tail))


def _stop_dockerd(process: subprocess.Popen[bytes], root: Path) -> None:
    """SIGTERM the group (dockerd stops its containerd), SIGKILL whatever is left, unmount."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    # dockerd's managed containerd runs in its own session: stop it by its recorded pid.
    pid_file = root / "exec" / "containerd" / "containerd.pid"
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pid = int(pid_file.read_text().strip())
        if _is_containerd_of(pid, root):
            os.kill(pid, signal.SIGKILL)
    for mount in _mounts_under(root):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def _is_containerd_of(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except FileNotFoundError:
        return False
    return "containerd" in cmdline and str(root) in cmdline


def _mounts_under(root: Path) -> list[str]:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    return sorted((m for m in mounts if m.startswith(str(root))), reverse=True)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd for the whole session; DOCKER_HOST points at it meanwhile."""
    if shutil.which("dockerd") is None:
        pytest.fail("dockerd is not installed (apt-get install docker.io; .ci/run does)")
    root = Path(tempfile.mkdtemp(prefix="dsops-dockerd-", dir="/tmp"))
    previous = os.environ.get("DOCKER_HOST")
    engine = None
    try:
        engine = start_engine(root)
        os.environ["DOCKER_HOST"] = engine.host
        yield engine
    finally:
        if previous is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = previous
        if engine is not None:
            _stop_dockerd(engine.process, root)
        if not os.environ.get("DSOPS_KEEP_DOCKER_ROOT"):
            shutil.rmtree(root, ignore_errors=True)


def ensure_rootfs_tarball() -> Path:
    """The cached Debian rootfs tarball; debootstrap makes it once when missing (~2 min)."""
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    with (ROOTFS_CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be making it right now
        if ROOTFS_TAR.is_file() and _root_mode(ROOTFS_TAR) == 0o755:
            return ROOTFS_TAR
        if shutil.which("debootstrap") is None:
            pytest.fail(
                f"{ROOTFS_TAR} is missing and debootstrap is not installed (.ci/run installs it)"
            )
        target = Path(tempfile.mkdtemp(prefix="rootfs-", dir=ROOTFS_CACHE))
        try:
            command = ["debootstrap", "--variant=minbase", f"--include={ROOTFS_PACKAGES}"]
            subprocess.run([*command, "bookworm", str(target), DEBIAN_MIRROR], check=True)
            target.chmod(0o755)  # mkdtemp made it 0700: the image's non-root user could not enter /
            partial = ROOTFS_TAR.with_suffix(".tar.partial")
            subprocess.run(["tar", "-C", str(target), "-cf", str(partial), "."], check=True)
            os.replace(partial, ROOTFS_TAR)
        finally:
            shutil.rmtree(target, ignore_errors=True)
    return ROOTFS_TAR


def _root_mode(tarball: Path) -> int:
    """The mode of the tarball's ``./``; a cache made before the 0755 fix is made again."""
    with tarfile.open(tarball) as archive:
        first = archive.next()
    return first.mode if first is not None and first.isdir() else -1


def _context(files: dict[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


@pytest.fixture(scope="session")
def docker_base_image(docker_engine: DockerEngine) -> str:
    """`dsops-test-base:bookworm-ca`: the imported rootfs plus the host CA bundle for pip."""
    client = docker_engine.client
    client.api.import_image_from_file(
        str(ensure_rootfs_tarball()), repository=BASE_IMAGE.split(":")[0], tag="bookworm"
    )
    dockerfile = (
        f"FROM {BASE_IMAGE}\n"
        "COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        "COPY pip.conf /etc/pip.conf\n"
    )
    pip_conf = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\n"
    context = _context(
        {
            "Dockerfile": dockerfile.encode(),
            "ca-certificates.crt": HOST_CA_BUNDLE.read_bytes(),
            "pip.conf": pip_conf.encode(),
        }
    )
    for chunk in client.api.build(
        fileobj=context, custom_context=True, tag=CA_BASE_IMAGE, decode=True, rm=True
    ):
        if "error" in chunk:
            raise RuntimeError(f"building {CA_BASE_IMAGE} failed: {chunk['error']}")
    return CA_BASE_IMAGE
