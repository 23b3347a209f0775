"""requirements.lock follows the interpreter jupyter_client really starts for the kernel.

jupyter_client swaps a kernelspec's argv[0] ``python``/``python3``/``python3.X`` for its own
``sys.executable``; dsops replicates that rule (importing jupyter_client costs ~1 s per convert),
so jupyter_client itself is the oracle here, and a real unactivated venv the end-to-end case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from dsops_jupyter.lock import kernel_interpreter
from tests.helpers import REPO_ROOT, assert_ok, clean_env, make_notebook

MINOR = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def write_kernelspec(data_dir: Path, name: str, argv0: str) -> Path:
    folder = data_dir / "kernels" / name
    folder.mkdir(parents=True)
    argv = [argv0, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = {"argv": argv, "display_name": name, "language": "python"}
    (folder / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    return folder


def jupyter_client_command(name: str) -> str:
    """argv[0] of the command jupyter_client's KernelManager would launch, found on PATH."""
    import shutil

    from jupyter_client.manager import KernelManager

    command = KernelManager(kernel_name=name).format_kernel_cmd()[0]
    return shutil.which(command) or command


@pytest.mark.parametrize(
    ("folder", "argv0"),
    [
        ("custom", "python"),
        ("custom", "python3"),
        ("custom", MINOR),
        ("custom", "python2.7-not-here"),
        ("custom", sys.executable),
        ("custom", "{prefix}/bin/python3"),
        ("Custom", "/bin/sh"),  # jupyter_client matches kernel names case-insensitively
    ],
)
def test_kernel_interpreter_agrees_with_jupyter_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str, argv0: str
) -> None:
    decoy = tmp_path / "decoy-bin"
    decoy.mkdir()
    for name in ("python", "python3", MINOR):
        (decoy / name).symlink_to("/bin/sh")  # first on PATH, and not this interpreter
    monkeypatch.setenv("PATH", f"{decoy}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "data"))
    write_kernelspec(tmp_path / "data", folder, argv0)
    notebook = make_notebook(
        tmp_path / "nb.ipynb",
        ["x = 1"],
        metadata={"kernelspec": {"name": "custom", "display_name": "c", "language": "python"}},
    )
    expected = jupyter_client_command("custom")
    assert kernel_interpreter(notebook) == expected
    if argv0 in ("python", "python3", MINOR):
        assert expected == sys.executable  # the swap, not the decoy first on PATH


# --- end to end: an unactivated venv's dsops -----------------------------------------------------
@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A venv seeing this interpreter's packages, with its ``dsops`` console script (as pip
    writes it) and its python3 kernelspec as ipykernel's wheel installs it (argv[0] "python");
    a decoy venv (copied binary) whose ``python`` comes first on PATH, and another venv
    (symlinked binary, the same file as the first venv's): neither has pandas."""
    root = tmp_path_factory.mktemp("venv")
    envs = {"env": ["--system-site-packages"], "decoy": ["--copies"], "other": []}
    base = getattr(sys, "_base_executable", sys.executable)
    for name, options in envs.items():
        command = [base, "-m", "venv", "--without-pip", *options, str(root / name)]
        subprocess.run(command, check=True)
    env_dir = root / "env"
    script = env_dir / "bin" / "dsops"
    script.write_text(
        f"#!{env_dir / 'bin' / 'python'}\nimport sys\nfrom dsops_jupyter.cli import main\n"
        "sys.exit(main())\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    data = env_dir / "share" / "jupyter"
    write_kernelspec(data, "python3", "python")
    write_kernelspec(data, "other", str(root / "other" / "bin" / "python"))
    notebook = make_notebook(
        root / "project" / "train.ipynb",
        ["import sys\nimport pandas as pd\nfrom sklearn import tree\nprint(sys.executable)"],
    )
    return {**{name: root / name for name in envs}, "dsops": script, "notebook": notebook}


def unactivated(venv: dict[str, Path]) -> dict[str, str]:
    """The venv is not activated: the decoy's python is first on PATH; our code via PYTHONPATH."""
    path = f"{venv['decoy'] / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    return clean_env(
        PATH=path,
        PYTHONPATH=str(REPO_ROOT),
        JUPYTER_PATH=str(venv["env"] / "share" / "jupyter"),
    )


def test_unactivated_venv_locks_the_venv_kernel(venv: dict[str, Path]) -> None:
    project = venv["notebook"].parent
    done = subprocess.run(
        [venv["dsops"], "convert", "train.ipynb", "--out", "pkg"],
        cwd=project, capture_output=True, text=True, env=unactivated(venv), timeout=300,
    )  # fmt: skip
    assert_ok(done)
    lock = (project / "pkg" / "requirements.lock").read_text(encoding="utf-8")
    assert f"pandas=={version('pandas')}" in lock, lock
    assert f"scikit-learn=={version('scikit-learn')}" in lock, lock
    assert "unresolved" not in lock + done.stderr, lock + done.stderr


def test_a_kernel_in_another_venv_is_locked_there(venv: dict[str, Path]) -> None:
    """The other venv's python is the same binary as this venv's, but not the same packages."""
    project = venv["notebook"].parent
    nb = json.loads(venv["notebook"].read_text(encoding="utf-8"))
    nb["metadata"]["kernelspec"] = {"name": "other", "display_name": "other", "language": "python"}
    (project / "other.ipynb").write_text(json.dumps(nb), encoding="utf-8")
    done = subprocess.run(
        [venv["dsops"], "convert", "other.ipynb", "--out", "other-pkg"],
        cwd=project, capture_output=True, text=True, env=unactivated(venv), timeout=300,
    )  # fmt: skip
    assert_ok(done)
    lock = (project / "other-pkg" / "requirements.lock").read_text(encoding="utf-8")
    assert "# unresolved import: pandas" in lock and "pandas==" not in lock, lock


def test_lock_and_run_record_name_the_kernel_that_really_ran(venv: dict[str, Path]) -> None:
    """The real kernel started by the venv's dsops prints its sys.executable: the lock's rule
    names the same interpreter, and the run record's packages come from it."""
    project = venv["notebook"].parent
    done = subprocess.run(
        [venv["dsops"], "run", "train.ipynb", "--out", "out", "--json"],
        cwd=project, capture_output=True, text=True, env=unactivated(venv), timeout=300,
    )  # fmt: skip
    assert_ok(done)
    executed = json.loads((project / "out" / "train.ipynb").read_text(encoding="utf-8"))
    printed = "".join(executed["cells"][0]["outputs"][0]["text"]).strip()
    assert Path(printed) == venv["env"] / "bin" / "python"
    record = json.loads(done.stdout)
    assert record["packages"]["pandas"] == version("pandas")
    assert record["packages"]["scikit-learn"] == version("scikit-learn")
