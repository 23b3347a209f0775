"""Pure archive assembly: deterministic layers, base image formats, wheel unpacking, layout.

No engine and no network: the base is a tiny synthetic rootfs (a fake python3.11 and a fake
libc that names its symbol versions), the dependency a hand-made wheel.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import random
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsops_jupyter import oci
from dsops_jupyter import wheelhouse as wh
from dsops_jupyter.errors import ImageError, LockError
from dsops_jupyter.model import ImageResult
from dsops_jupyter.oci.blob import MEDIA_CONFIG, MEDIA_LAYER_GZIP, canonical_json, sha256_digest
from dsops_jupyter.oci.layer import GZIP_LEVEL, write_layer
from tests.docker_engine import ensure_rootfs_tarball

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z
ROOTFS_TAR = Path("/var/cache/dsops-tests/bookworm-rootfs.tar")


# --- helpers ------------------------------------------------------------------------------------
def make_rootfs(path: Path, *, glibc: int = 31, python: str = "3.11", extra: bytes = b"") -> Path:
    """A rootfs tarball with just enough for inspect_base: python3.X and a libc.so.6."""
    spec = oci.LayerSpec()
    spec.add_file(f"usr/bin/python{python}", b"#!fake python\n", mode=0o755)
    libc = b"\x7fELF..." + b"".join(b"GLIBC_2.%d\x00" % v for v in (2, 17, glibc))
    spec.add_file("usr/lib/x86_64-linux-gnu/libc.so.6", libc, mode=0o755)
    spec.add_dir("tmp", mode=0o1777)
    if extra:
        spec.add_file("etc/extra", extra)
    blob = write_layer(spec, 0, path.parent / "rootfs-blobs", compress=False)
    shutil.copyfile(blob.path, path)
    return path


def make_wheel(directory: Path, name: str = "tinydep", version: str = "1.0") -> Path:
    """A pure-python wheel with a .data/purelib file, a script, bytecode and an executable."""
    dist = f"{name}-{version}.dist-info"
    members = {
        f"{name}/__init__.py": b"VALUE = 42\n",
        f"{name}/__pycache__/__init__.cpython-311.pyc": b"bytecode",
        f"{name}/tool.sh": b"#!/bin/sh\necho hi\n",
        f"{name}-{version}.data/purelib/{name}_extra.py": b"EXTRA = 1\n",
        f"{name}-{version}.data/scripts/{name}-cli": b"#!python\nprint('cli')\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    return write_wheel(directory / f"{name}-{version}-py3-none-any.whl", members, dist)


def write_wheel(path: Path, members: dict[str, bytes], dist: str) -> Path:
    """A wheel of ``members`` plus the RECORD that lists their sha256 and sizes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"{member},sha256={record_hash(data)},{len(data)}" for member, data in members.items()]
    members = {**members, f"{dist}/RECORD": "".join(f"{row}\n" for row in rows).encode()}
    members[f"{dist}/RECORD"] += f"{dist}/RECORD,,\n".encode()
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(2020, 1, 2, 3, 4, 6))
            mode = 0o755 if member.endswith(".sh") else 0o644
            info.external_attr = (stat.S_IFREG | mode) << 16  # as wheel builders write it
            archive.writestr(info, data)
    return path


def record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def tiny_package(tmp: Path, lock: str = "", script: str = "print('hi')\n") -> SimpleNamespace:
    files = {
        "tiny.py": script.encode(),
        "pipeline.json": json.dumps({"notebook": "nb/tiny.ipynb"}).encode(),
        "requirements.lock": f"# generated\n{lock}".encode(),
        "Dockerfile": b"FROM somewhere\n",
        ".dockerignore": b"*\n",
    }
    return SimpleNamespace(
        name="tiny",
        directory=tmp / "pipelines" / "tiny",
        files=files,
        notebook_path=tmp / "nb" / "tiny.ipynb",
        content_hash="sha256:abc",
    )


def version(number: int = 1, epoch: int = EPOCH) -> SimpleNamespace:
    commit = hashlib.sha1(str(number).encode()).hexdigest()
    return SimpleNamespace(
        number=number, commit=commit, short=commit[:7], epoch=epoch, tag=f"dsops/tiny/v{number}"
    )


def layer_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as archive:
        return archive.getmembers()


def archive_files(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {
            m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
            for m in archive.getmembers()
            if m.isfile()
        }


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("DSOPS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_rootfs(tmp_path / "rootfs.tar")


# --- layers -------------------------------------------------------------------------------------
def test_layer_bytes_do_not_depend_on_insertion_order(tmp_path: Path) -> None:
    files = {f"app/{name}.py": name.encode() * 3 for name in "qwertyuiop"}
    blobs = []
    for seed in (1, 2):
        names = list(files)
        random.Random(seed).shuffle(names)
        spec = oci.LayerSpec()
        for name in names:
            spec.add_file(name, files[name])
        blobs.append(write_layer(spec, EPOCH, tmp_path / f"run{seed}"))
    assert blobs[0].digest == blobs[1].digest
    assert blobs[0].diff_id == blobs[1].diff_id
    assert blobs[0].path.read_bytes() == blobs[1].path.read_bytes()
    assert blobs[0].path.name == blobs[0].digest.split(":")[1]


def test_layer_entries_are_sorted_owned_by_root_and_clamped(tmp_path: Path) -> None:
    spec = oci.LayerSpec()
    spec.add_file("b/z.txt", b"z", mtime=EPOCH + 1000)  # newer than the epoch: clamped
    spec.add_file("b/a.txt", b"a", mtime=1_000_000)  # older: kept
    spec.add_file("a-b/c", b"c", mode=0o755)
    spec.add_dir("work", uid=10001, gid=10001)
    blob = write_layer(spec, EPOCH, tmp_path)
    members = layer_members(blob.path.read_bytes())
    names = [m.name for m in members]
    assert names == ["a-b", "a-b/c", "b", "b/a.txt", "b/z.txt", "work"]
    by_name = {m.name: m for m in members}
    assert by_name["b/z.txt"].mtime == EPOCH
    assert by_name["b/a.txt"].mtime == 1_000_000
    assert by_name["a-b"].mtime == EPOCH and by_name["a-b"].isdir()
    assert by_name["a-b/c"].mode == 0o755 and by_name["b/a.txt"].mode == 0o644
    assert (by_name["work"].uid, by_name["work"].gid) == (10001, 10001)
    for member in members:
        assert member.pax_headers == {}
        assert member.uname == member.gname == ""
        if member.name != "work":
            assert (member.uid, member.gid) == (0, 0)
    assert hashlib.sha256(gzip.decompress(blob.path.read_bytes())).hexdigest() in blob.diff_id


def test_gzip_header_has_no_name_no_time_and_matches_gzipfile(tmp_path: Path) -> None:
    spec = oci.LayerSpec()
    spec.add_file("data.bin", bytes(range(256)) * 5000)
    blob = write_layer(spec, EPOCH, tmp_path)
    data = blob.path.read_bytes()
    # magic, deflate, flags=0 (no FNAME), mtime=0, XFL=4 (level 1), OS=255
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\xff"
    reference = io.BytesIO()
    with gzip.GzipFile("", "wb", GZIP_LEVEL, reference, mtime=0) as stream:
        stream.write(gzip.decompress(data))
    assert reference.getvalue() == data


def test_long_names_use_gnu_headers_not_pax(tmp_path: Path) -> None:
    long_name = "site/" + "/".join(["directory_with_a_long_name"] * 8) + "/module.py"
    spec = oci.LayerSpec()
    spec.add_file(long_name, b"x = 1\n")
    blob = write_layer(spec, EPOCH, tmp_path, compress=False)
    raw = blob.path.read_bytes()
    assert b"././@LongLink" in raw and b"PaxHeader" not in raw and b"mtime=" not in raw
    assert layer_members(raw)[-1].name == long_name


def test_layer_paths_cannot_escape(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="invalid path"):
        oci.LayerSpec().add_file("../etc/passwd", b"")


# --- base images --------------------------------------------------------------------------------
def test_rootfs_tarball_is_a_one_layer_base(rootfs: Path, cache: Path) -> None:
    base = oci.read_base(rootfs, cache=cache)
    assert len(base.layers) == 1
    assert base.layers[0].diff_id == "sha256:" + hashlib.sha256(rootfs.read_bytes()).hexdigest()
    assert base.config["history"][0]["created"] == "1970-01-01T00:00:00Z"
    assert base.digest == oci.read_base(rootfs, cache=cache).digest
    facts = oci.inspect_base(base, cache)
    assert (facts.python, facts.python_version) == ("/usr/bin/python3.11", (3, 11))
    assert (facts.libc, facts.libc_version) == ("glibc", (2, 31))
    assert str(facts.target()) == "cp311-manylinux_2_31_x86_64"


def test_docker_archive_and_oci_layout_read_back_identically(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    base = oci.read_base(rootfs, cache=cache)
    archive = oci.base_archive(base, tmp_path / "base.tar", "tiny-base:1")
    from_archive = oci.read_base(archive, cache=cache)
    layout = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    (layout / "manifest.json").unlink()  # a pure OCI layout directory
    from_layout = oci.read_base(layout, cache=cache)
    for other in (from_archive, from_layout):
        assert other.digest == base.digest
        assert other.name == "tiny-base:1"
        assert [b.diff_id for b in other.layers] == [b.diff_id for b in base.layers]


def test_gzipped_oci_layers_are_inflated_to_the_canonical_uncompressed_form(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    base = oci.read_base(rootfs, cache=cache)
    layout = tmp_path / "gz-layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    zipped = gzip.compress(rootfs.read_bytes(), mtime=0)
    layer_digest = hashlib.sha256(zipped).hexdigest()
    (blobs / layer_digest).write_bytes(zipped)
    (blobs / base.digest.split(":")[1]).write_bytes(base.config_bytes)
    manifest = canonical_json(
        {
            "schemaVersion": 2,
            "config": {"mediaType": MEDIA_CONFIG, "digest": base.digest, "size": 1},
            "layers": [{"mediaType": MEDIA_LAYER_GZIP, "digest": f"sha256:{layer_digest}"}],
        }
    )
    (blobs / hashlib.sha256(manifest).hexdigest()).write_bytes(manifest)
    index = {"schemaVersion": 2, "manifests": [{"digest": sha256_digest(manifest)}]}
    (layout / "index.json").write_text(json.dumps(index))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    read = oci.read_base(layout, cache=cache)
    assert read.digest == base.digest
    assert read.layers[0].digest == read.layers[0].diff_id == base.layers[0].diff_id
    assert read.layers[0].path.read_bytes() == rootfs.read_bytes()


def test_missing_base_without_engine_names_the_fix(cache: Path) -> None:
    with pytest.raises(ImageError, match="no Docker engine runs; pass a docker-archive"):
        oci.read_base("no-such-image:1", cache=cache)


def test_rootfs_whose_root_others_cannot_enter_is_refused(tmp_path: Path, cache: Path) -> None:
    """A tarball of a mkdtemp folder: the image's non-root user would fail every exec."""
    tarball = tmp_path / "rootfs.tar"
    with tarfile.open(tarball, "w") as archive:
        for name, mode in (("./", 0o700), ("./usr/", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            archive.addfile(info)
    with pytest.raises(ImageError, match=r"root folder has mode 0700.*chmod 755"):
        oci.read_base(tarball, cache=cache)


def test_base_without_python_is_refused(tmp_path: Path, cache: Path) -> None:
    spec = oci.LayerSpec()
    spec.add_file("usr/lib/x86_64-linux-gnu/libc.so.6", b"GLIBC_2.36\x00")
    blob = write_layer(spec, 0, tmp_path / "b", compress=False)
    base = oci.read_base(blob.path, cache=cache)
    with pytest.raises(ImageError, match=r"has no python3\.X"):
        oci.inspect_base(base, cache)


def test_bookworm_rootfs_has_python_311_and_glibc_236(tmp_path: Path) -> None:
    base = oci.read_base(ensure_rootfs_tarball(), cache=tmp_path)
    facts = oci.inspect_base(base, tmp_path)
    assert facts.python == "/usr/bin/python3.11"
    assert facts.libc_version == (2, 36)
    assert "manylinux2014_x86_64" in facts.target().platforms()


# --- wheelhouse ---------------------------------------------------------------------------------
def test_parse_lock_pins_markers_and_errors() -> None:
    target = wh.Target((3, 11))
    text = (
        "# comment\n\nSix==1.16.0\nnumpy==2.0.0 ; python_version >= '3.9'\n"
        "tomli==2.0.1; python_version < '3.11'\nscikit_learn==1.5.0  # inline\n"
    )
    reqs = wh.parse_lock(text, target)
    assert [r.line for r in reqs] == ["numpy==2.0.0", "scikit-learn==1.5.0", "six==1.16.0"]
    with pytest.raises(LockError, match="line 2: 'pandas>=2' is not pinned"):
        wh.parse_lock("six==1.16.0\npandas>=2\n")
    with pytest.raises(LockError, match="line 1: 'latest' is not a valid version of six"):
        wh.parse_lock("six==latest\n")


def test_target_platforms_and_wheel_choice(tmp_path: Path) -> None:
    target = wh.Target((3, 11), libc_version=(2, 28))
    platforms = target.platforms()
    assert platforms[0] == "manylinux_2_28_x86_64"
    assert "manylinux2014_x86_64" in platforms and "manylinux1_x86_64" in platforms
    assert "manylinux_2_31_x86_64" not in platforms
    for name in (
        "numpy-2.0.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "numpy-2.0.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "numpy-2.0.0-cp311-cp311-manylinux_2_31_x86_64.whl",  # too new a glibc
        "numpy-2.0.0-cp312-cp312-manylinux_2_28_x86_64.whl",  # other Python
        "numpy-1.0.0-cp311-cp311-manylinux_2_28_x86_64.whl",  # other version
        "not-a-wheel.whl",
    ):
        (tmp_path / name).write_bytes(b"")
    reqs = wh.parse_lock("numpy==2.0.0\nsix==1.16.0\n")
    chosen, missing = wh.select_wheels(reqs, target, tmp_path)
    assert chosen["numpy"].name.startswith("numpy-2.0.0-cp311-cp311-manylinux_2_27")
    assert [r.name for r in missing] == ["six"]


def test_installed_files_follow_the_wheel_spec_without_bytecode(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels")
    with wh.installed_files([wheel]) as files:
        paths = {f.path: f for f in files}
        contents = {path: f.read() for path, f in paths.items()}
    site = wh.SITE_PACKAGES
    assert contents[f"{site}/tinydep/__init__.py"] == b"VALUE = 42\n"
    assert contents[f"{site}/tinydep_extra.py"] == b"EXTRA = 1\n"  # .data/purelib
    assert f"{site}/tinydep-1.0.dist-info/METADATA" in paths
    assert not any(p.endswith(".pyc") or "__pycache__" in p or "-cli" in p for p in paths)
    assert paths[f"{site}/tinydep/tool.sh"].mode == 0o755
    assert paths[f"{site}/tinydep/__init__.py"].mode == 0o644
    assert paths[f"{site}/tinydep/__init__.py"].mtime == 1577934246  # 2020-01-02T03:04:06Z


def test_installed_record_lists_what_was_installed(tmp_path: Path) -> None:
    """RECORD is rewritten as pip writes it: .data/purelib relocated, scripts and bytecode gone."""
    with wh.installed_files([make_wheel(tmp_path / "wheels")]) as files:
        (record,) = [f for f in files if f.path.endswith(".dist-info/RECORD")]
        rows = [line.split(",")[0] for line in record.read().decode().splitlines()]
    assert rows == [
        "tinydep-1.0.dist-info/METADATA",
        "tinydep-1.0.dist-info/RECORD",
        "tinydep-1.0.dist-info/WHEEL",
        "tinydep/__init__.py",
        "tinydep/tool.sh",
        "tinydep_extra.py",
    ]


def tamper(wheel: Path) -> Path:
    """The wheel rewritten with one file changed and its RECORD left as it was (a valid zip)."""
    with zipfile.ZipFile(wheel) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(wheel, "w") as archive:
        for info, data in members:
            changed = data.replace(b"VALUE = 42", b"VALUE = 43")
            archive.writestr(info, changed)
    return wheel


def test_tampered_wheel_is_refused_by_its_record_hash(tmp_path: Path) -> None:
    wheel = tamper(make_wheel(tmp_path / "wheels"))
    with wh.installed_files([wheel]) as files:
        (init,) = [f for f in files if f.path.endswith("tinydep/__init__.py")]
        with pytest.raises(LockError) as caught:
            init.read()
    message = str(caught.value)
    assert "tinydep/__init__.py does not match its RECORD hash" in message
    assert "\n" not in message


def test_tampered_wheel_fails_the_image_and_leaves_no_layer(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    tamper(make_wheel(tmp_path / "wheelhouse"))
    with pytest.raises(LockError, match="does not match its RECORD hash"):
        build(tmp_path, rootfs, lock="tinydep==1.0\n")
    assert not (tmp_path / "image.tar").exists()
    assert not list((cache / "blobs" / "sha256").glob("*"))


def test_wheel_missing_from_its_record_is_refused(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels")
    with zipfile.ZipFile(wheel, "a") as archive:
        archive.writestr("tinydep/extra.py", b"smuggled = True\n")
    with (
        pytest.raises(LockError, match=r"extra\.py is not mentioned in RECORD"),
        wh.installed_files([wheel]),
    ):
        pass


def test_unsafe_wheel_member_is_refused(tmp_path: Path) -> None:
    dist = "evil-1.0.dist-info"
    members = {
        "../../etc/cron.d/evil": b"",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    wheel = write_wheel(tmp_path / "evil-1.0-py3-none-any.whl", members, dist)
    with pytest.raises(LockError, match="unsafe member"), wh.installed_files([wheel]):
        pass


# --- whole images -------------------------------------------------------------------------------
def build(tmp: Path, base: Path, **kw: object) -> ImageResult:
    pkg = kw.pop("pkg", None) or tiny_package(tmp, lock=str(kw.pop("lock", "")))
    return oci.build_reproducible(
        pkg,
        kw.pop("ver", None) or version(),
        base_image=str(base),
        output=kw.pop("output", tmp / "image.tar"),
        wheelhouse=kw.pop("wheelhouse", tmp / "wheelhouse"),
        **kw,  # type: ignore[arg-type]
    )


def test_archive_is_a_docker_archive_and_an_oci_layout(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    make_wheel(tmp_path / "wheelhouse")
    info = build(tmp_path, rootfs, lock="tinydep==1.0\n", parameters={"alpha": 0.5})
    files = archive_files(tmp_path / "image.tar")
    for name, data in files.items():  # every blob is what its name says
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    assert {m["digest"] for m in index["manifests"]} == {info.manifest_digest}
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["tiny:v1", f"tiny:{version().short}"] == info.tags
    manifest = json.loads(files[f"blobs/sha256/{info.manifest_digest[7:]}"])
    assert manifest["config"]["digest"] == info.id
    assert [layer["digest"] for layer in manifest["layers"]] == info.layers
    (docker_item,) = json.loads(files["manifest.json"])
    assert docker_item["Config"] == f"blobs/sha256/{info.id[7:]}"
    assert docker_item["RepoTags"] == info.tags
    assert docker_item["Layers"] == [f"blobs/sha256/{d[7:]}" for d in info.layers]
    config = json.loads(files[docker_item["Config"]])
    check_config(config, files, manifest)


def check_config(config: dict, files: dict[str, bytes], manifest: dict) -> None:
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert all(
        h["created"] in ("1970-01-01T00:00:00Z", config["created"]) for h in config["history"]
    )
    run = config["config"]
    assert run["Entrypoint"] == ["/usr/bin/python3.11", "/opt/dsops/tiny.py"]
    assert run["Cmd"] == ["--alpha", "0.5"]
    assert run["User"] == "10001:10001" and run["WorkingDir"] == "/work"
    assert "PYTHONPATH=/opt/dsops/site-packages" in run["Env"]
    labels = run["Labels"]
    assert labels["org.opencontainers.image.revision"] == version().commit
    assert labels["org.opencontainers.image.base.digest"].startswith("sha256:")
    assert labels["io.dsops.notebook"] == "nb/tiny.ipynb"
    diff_ids = []
    for layer in manifest["layers"]:
        data = files[f"blobs/sha256/{layer['digest'][7:]}"]
        if layer["mediaType"].endswith("+gzip"):
            data = gzip.decompress(data)
        diff_ids.append("sha256:" + hashlib.sha256(data).hexdigest())
    assert config["rootfs"]["diff_ids"] == diff_ids
    deps, code = (
        layer_members(files[f"blobs/sha256/{x['digest'][7:]}"]) for x in manifest["layers"][1:]
    )
    assert "opt/dsops/site-packages/tinydep/__init__.py" in [m.name for m in deps]
    assert not any(m.name.endswith(".pyc") for m in deps)
    assert [m.name for m in code] == [
        "opt",
        "opt/dsops",
        "opt/dsops/bin",
        "opt/dsops/bin/python",
        "opt/dsops/pipeline.json",
        "opt/dsops/requirements.lock",
        "opt/dsops/tiny.py",
        "work",
    ]
    assert all(m.mtime == EPOCH for m in code)


def test_two_builds_with_separate_caches_are_byte_identical(
    rootfs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_wheel(tmp_path / "wheelhouse")
    outputs = []
    for run in ("one", "two"):
        monkeypatch.setenv("DSOPS_CACHE_DIR", str(tmp_path / f"cache-{run}"))
        build(tmp_path, rootfs, lock="tinydep==1.0\n", output=tmp_path / f"{run}.tar")
        outputs.append((tmp_path / f"{run}.tar").read_bytes())
    assert outputs[0] == outputs[1]


def test_digest_follows_code_lock_parameters_and_base_only(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    make_wheel(tmp_path / "wheelhouse")
    make_wheel(tmp_path / "wheelhouse", version="2.0")
    first = build(tmp_path, rootfs, lock="tinydep==1.0\n")
    same = build(tmp_path, rootfs, lock="tinydep==1.0\n")
    assert (same.id, same.manifest_digest) == (first.id, first.manifest_digest)
    code = build(tmp_path, rootfs, pkg=tiny_package(tmp_path, "tinydep==1.0\n", "print(2)\n"))
    lock = build(tmp_path, rootfs, lock="tinydep==2.0\n")
    params = build(tmp_path, rootfs, lock="tinydep==1.0\n", parameters={"alpha": 2})
    other_base = make_rootfs(tmp_path / "rootfs2.tar", extra=b"patched")
    base = build(tmp_path, other_base, lock="tinydep==1.0\n")
    digests = {x.manifest_digest for x in (first, code, lock, params, base)}
    assert len(digests) == 5
    assert code.layers[:2] == first.layers[:2] and code.layers[2] != first.layers[2]
    assert lock.layers[1] != first.layers[1]  # (the code layer holds the lock file too)
    assert params.layers == first.layers and params.id != first.id
    assert base.layers[0] != first.layers[0] and base.layers[1:] == first.layers[1:]


def test_dependency_layer_is_shared_by_later_versions(
    rootfs: Path, cache: Path, tmp_path: Path
) -> None:
    """mtimes are the wheels' own (clamped): a new version with the same lock reuses the layer."""
    make_wheel(tmp_path / "wheelhouse")
    v1 = build(tmp_path, rootfs, lock="tinydep==1.0\n", ver=version(1, EPOCH))
    shutil.rmtree(cache)  # no cache: the equality below is not a cache hit
    v2 = build(tmp_path, rootfs, lock="tinydep==1.0\n", ver=version(2, EPOCH + 86400))
    assert v1.layers[1] == v2.layers[1]
    assert v1.layers[2] != v2.layers[2] and v1.id != v2.id


def test_missing_wheel_without_network_is_a_lock_error(
    rootfs: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(LockError, match="no-such-dist-dsops"):
        build(tmp_path, rootfs, lock="no-such-dist-dsops==1.0\n")
    assert not (tmp_path / "image.tar").exists()


def test_corrupt_base_layer_is_detected(rootfs: Path, cache: Path, tmp_path: Path) -> None:
    base = oci.read_base(rootfs, cache=cache)
    archive = oci.base_archive(base, tmp_path / "base.tar", "tiny-base:1")
    data = bytearray(archive.read_bytes())
    position = data.index(b"#!fake python")
    data[position] ^= 0xFF
    archive.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupt"):
        build(tmp_path, archive)
    assert not (tmp_path / "image.tar").exists()


def test_umoci_unpacks_the_layout(rootfs: Path, cache: Path, tmp_path: Path) -> None:
    """An independent OCI implementation reads the layout and sees our files and owners."""
    assert shutil.which("umoci"), "umoci is not installed (apt-get install umoci; .ci/run does)"
    make_wheel(tmp_path / "wheelhouse")
    build(tmp_path, rootfs, lock="tinydep==1.0\n")
    layout = tmp_path / "layout"
    with tarfile.open(tmp_path / "image.tar") as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)],
        check=True,
        capture_output=True,
    )
    root = bundle / "rootfs"
    assert (root / "opt/dsops/tiny.py").read_text() == "print('hi')\n"
    assert (root / "opt/dsops/site-packages/tinydep_extra.py").is_file()
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/usr/bin/python3.11", "/opt/dsops/tiny.py"]
