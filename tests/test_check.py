"""`dsops check` (CI, pre-commit) and the [tool.dsops] settings it and `convert` honour."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from dsops_jupyter.assemble import convert
from dsops_jupyter.check import check_paths
from tests.helpers import assert_ok, dsops, error_line, init_repo, make_notebook

PYPROJECT = """\
[project]
name = "analysis"

[tool.dsops]
output = "gen"
notebooks = ["nbs/*.ipynb"]
"""


def notebook(path: Path, alpha: float = 1.0) -> Path:
    return make_notebook(
        path,
        [
            (f"alpha = {alpha}", ["parameters"]),
            ("xs = [1, 2]", ["step:load"]),
            ("print(sum(xs) * alpha)", ["step:show"]),
        ],
    )


def set_alpha(path: Path, alpha: float) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[0].source = f"alpha = {alpha}"
    nbformat.write(nb, str(path))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A repository with [tool.dsops] settings, two listed notebooks and one unlisted."""
    (tmp_path / "pyproject.toml").write_text(PYPROJECT, encoding="utf-8")
    notebook(tmp_path / "nbs" / "first.ipynb")
    notebook(tmp_path / "nbs" / "second.ipynb")
    notebook(tmp_path / "scratch" / "other.ipynb")
    return init_repo(tmp_path)


def convert_all(root: Path) -> None:
    """In-process (fast): the CLI path of convert is tested below and in test_cli.py."""
    for name in ("first", "second"):
        convert(root / "nbs" / f"{name}.ipynb")


def test_output_setting_places_packages(project: Path) -> None:
    assert_ok(dsops("convert", "nbs/first.ipynb", cwd=project))
    assert (project / "gen" / "first" / "first.py").is_file()
    assert not (project / "pipelines").exists()
    spec = json.loads((project / "gen" / "first" / "pipeline.json").read_text())
    assert spec["notebook"] == "nbs/first.ipynb"


def test_convert_out_overrides_the_setting(project: Path) -> None:
    assert_ok(dsops("convert", "nbs/first.ipynb", "--out", "custom/place", cwd=project))
    assert (project / "custom" / "place" / "first.py").is_file()
    assert not (project / "gen").exists()


def test_convert_from_a_subfolder_still_uses_the_project_root(project: Path) -> None:
    assert_ok(dsops("convert", "first.ipynb", cwd=project / "nbs"))
    assert (project / "gen" / "first" / "first.py").is_file()
    assert not (project / "nbs" / "gen").exists()


def test_never_converted_is_reported_and_fails_only_when_strict(project: Path) -> None:
    done = dsops("check", cwd=project)
    assert done.returncode == 0 and done.stdout == ""
    assert "missing  nbs/first.ipynb" in done.stderr and "missing  nbs/second.ipynb" in done.stderr
    assert "other.ipynb" not in done.stderr  # not in the notebooks setting
    assert dsops("check", "--strict", cwd=project).returncode == 1


def test_all_matching_exits_0(project: Path) -> None:
    convert_all(project)
    done = assert_ok(dsops("check", cwd=project))
    assert done.stdout == ""
    assert "dsops check: 2 ok" in done.stderr
    assert_ok(dsops("check", "--strict", cwd=project))


def test_drift_exits_1_with_a_unified_diff(project: Path) -> None:
    convert_all(project)
    set_alpha(project / "nbs" / "second.ipynb", 2.5)
    done = dsops("check", cwd=project)
    assert done.returncode == 1
    out = done.stdout
    assert out.startswith("--- ") and "\n+++ " in out and "\n@@ " in out
    assert "\n-    'alpha': ('float', 1.0),\n" in out
    assert "\n+    'alpha': ('float', 2.5),\n" in out
    assert "second.py" in out and "first.py" not in out
    assert "drift  nbs/second.ipynb" in done.stderr and "first.ipynb" not in done.stderr
    assert "1 drift, 1 ok" in done.stderr
    assert "dsops convert" in done.stderr.splitlines()[-1]


@pytest.mark.parametrize("edited", ["script", "spec"])
def test_hand_edits_defeat_the_hash_fast_path(project: Path, edited: str) -> None:
    """The notebook is unchanged, so its content hash matches: an edited script (or spec, with
    the script hash field itself rewritten) must still be caught and shown as a diff."""
    convert_all(project)
    package = project / "gen" / "first"  # [tool.dsops] output = "gen"
    if edited == "script":
        script = package / "first.py"
        script.write_text(script.read_text().replace("def run(", "def run(  "))
    else:
        spec = json.loads((package / "pipeline.json").read_text())
        spec["order"] = list(reversed(spec["order"]))
        (package / "pipeline.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    done = dsops("check", cwd=project)
    assert done.returncode == 1, done.stderr
    assert "drift  nbs/first.ipynb" in done.stderr
    assert done.stdout.startswith("--- ")


def test_hand_edited_or_deleted_script_is_drift(project: Path) -> None:
    convert_all(project)
    script = project / "gen" / "first" / "first.py"
    script.write_text(script.read_text() + "# my fix\n", encoding="utf-8")
    assert "-# my fix" in dsops("check", cwd=project).stdout
    (project / "gen" / "second" / "second.py").unlink()
    done = dsops("check", "--json", cwd=project)
    assert done.returncode == 1
    statuses = {i["notebook"]: i["status"] for i in json.loads(done.stdout)["items"]}
    assert statuses == {"nbs/first.ipynb": "drift", "nbs/second.ipynb": "drift"}


def test_environment_files_are_not_compared(project: Path) -> None:
    """The lock and image recipe describe an environment that differs between laptop and CI."""
    convert_all(project)
    lock = project / "gen" / "first" / "requirements.lock"
    lock.write_text("numpy==0.0.1\n", encoding="utf-8")
    (project / "gen" / "first" / "Dockerfile").write_text("FROM scratch\n", encoding="utf-8")
    assert_ok(dsops("check", cwd=project))


def test_paths_choose_what_is_checked(project: Path) -> None:
    convert_all(project)
    set_alpha(project / "nbs" / "second.ipynb", 3.0)
    assert_ok(dsops("check", "nbs/first.ipynb", cwd=project))
    assert dsops("check", "nbs", cwd=project).returncode == 1
    done = assert_ok(dsops("check", "scratch", "--json", cwd=project))
    assert json.loads(done.stdout)["items"][0]["status"] == "missing"


def test_renamed_package_is_found_through_its_spec(project: Path) -> None:
    convert(project / "nbs" / "first.ipynb", name="renamed")
    assert (project / "gen" / "renamed" / "renamed.py").is_file()
    report = check_paths([project / "nbs" / "first.ipynb"])
    assert [(i.package, i.status) for i in report.items] == [("gen/renamed", "ok")]
    set_alpha(project / "nbs" / "first.ipynb", 9.0)
    assert check_paths([project / "nbs" / "first.ipynb"]).ok is False


def test_keep_magics_setting_is_honoured(tmp_path: Path) -> None:
    make_notebook(tmp_path / "m.ipynb", ["x = 1\n!echo hi"])
    init_repo(tmp_path)
    assert "--keep-magics" in error_line(dsops("convert", "m.ipynb", cwd=tmp_path))
    (tmp_path / "pyproject.toml").write_text("[tool.dsops]\nkeep-magics = true\n")
    assert_ok(dsops("convert", "m.ipynb", cwd=tmp_path))
    assert "get_ipython().system('echo hi')" in (tmp_path / "pipelines/m/m.py").read_text()


@pytest.mark.parametrize(
    ("table", "fragment"),
    [("output = 3", "output must be a str"), ('notebooks = "nbs"', "notebooks must be a list")],
)
def test_bad_settings_are_one_line_errors(tmp_path: Path, table: str, fragment: str) -> None:
    notebook(tmp_path / "a.ipynb")
    (tmp_path / "pyproject.toml").write_text(f"[tool.dsops]\n{table}\n", encoding="utf-8")
    assert fragment in error_line(dsops("convert", "a.ipynb", cwd=tmp_path))
    assert fragment in error_line(dsops("check", cwd=tmp_path))
    assert not (tmp_path / "pipelines").exists()


def test_unreadable_pyproject_is_a_one_line_error(tmp_path: Path) -> None:
    notebook(tmp_path / "a.ipynb")
    (tmp_path / "pyproject.toml").write_text("[tool.dsops\n", encoding="utf-8")
    assert "cannot read it as TOML" in error_line(dsops("check", cwd=tmp_path))


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b'{"notebook": "nbs/fir', "not valid JSON"), (b"[1, 2]\n", "not a pipeline spec")],
)
def test_a_corrupt_spec_is_drift_naming_the_file(
    project: Path, content: bytes, reason: str
) -> None:
    """A spec that cannot be read hides its package: that is drift (exit 1), not 'missing'."""
    convert_all(project)
    (project / "gen" / "first" / "pipeline.json").write_bytes(content)
    done = dsops("check", cwd=project)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "first" in line]
    assert len(lines) == 1, done.stderr
    assert "drift  nbs/first.ipynb" in lines[0] and "never converted" not in lines[0]
    assert f"gen/first/pipeline.json: {reason}" in lines[0]
    assert "1 drift, 1 ok" in done.stderr


def test_a_corrupt_spec_of_a_renamed_package_is_drift(project: Path) -> None:
    convert(project / "nbs" / "first.ipynb", name="renamed")
    (project / "gen" / "renamed" / "pipeline.json").write_text("{", encoding="utf-8")
    done = dsops("check", "nbs/first.ipynb", cwd=project)
    assert done.returncode == 1, done.stderr
    assert "drift  gen/renamed/pipeline.json  (gen/renamed/pipeline.json: not valid" in done.stderr
