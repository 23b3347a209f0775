"""Project settings from ``[tool.dsops]`` in the repository's pyproject.toml.

The project root is the nearest folder above the notebook holding a pyproject.toml with a
``[tool.dsops]`` table, else the Git work tree's top, else the notebook's own folder. Generated
packages go to ``<root>/<output>/<name>/`` and run folders to ``<root>/<runs-dir>/<name>/<stamp>/``
(``.dsops/runs`` unless set), so their place never depends on the caller's cwd.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dsops_jupyter.errors import DsopsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT_CACHE_SIZE = 5 * 1000**3
DEFAULT_RUNS = ".dsops/runs"  # git-ignored (see dotdsops.py)
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
_SIZE_UNITS |= {"KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "TIB": 1024**4}
T = TypeVar("T")
D = TypeVar("D")


class ConfigError(DsopsError):
    """``[tool.dsops]`` holds a value of the wrong kind."""


@dataclass(frozen=True)
class Config:
    root: Path
    output: str = "pipelines"
    notebooks: list[str] = field(default_factory=list)
    base_image: str | None = None
    keep_magics: bool = False
    cache_size: int = DEFAULT_CACHE_SIZE  # bytes the step cache may hold (`cache-size`)
    runs: str = DEFAULT_RUNS  # `runs-dir`, relative to the root

    def package_dir(self, name: str) -> Path:
        return self.root / self.output / name

    @property
    def runs_dir(self) -> Path:
        """The folder holding the run folders ``<pipeline>/<stamp>/`` (absolute)."""
        return self.root / self.runs

    def notebook_paths(self) -> list[Path]:
        """The notebooks `dsops check` scans when given no paths."""
        found: set[Path] = set()
        for pattern in self.notebooks:
            found.update(p for p in self.root.glob(pattern) if p.suffix == ".ipynb")
        return sorted(found, key=str)


def project_path(path: Path, root: Path) -> str:
    """A path as pipeline.json and image labels record it: relative to the project root (its
    name alone when outside), so neither depends on where the project is checked out."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def find_root(start: Path) -> tuple[Path, dict]:
    """Return the project root and its ``[tool.dsops]`` table (empty when there is none)."""
    start = start.resolve()
    folder = start if start.is_dir() else start.parent
    git_top = None
    for candidate in (folder, *folder.parents):
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file():
            table = _read_table(pyproject)
            if table is not None:
                return candidate, table
        if git_top is None and (candidate / ".git").exists():
            git_top = candidate
    return (git_top or folder), {}


def _read_table(pyproject: Path) -> dict | None:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{pyproject}: cannot read it as TOML ({err})") from None
    table = data.get("tool", {}).get("dsops")
    return table if isinstance(table, dict) else None


def load_config(
    start: Path, *, keep_magics: bool | None = None, base_image: str | None = None
) -> Config:
    """Settings for the project holding ``start``; the non-None arguments (CLI flags) win, but
    the table is checked whole either way."""
    root, table = find_root(start)
    output = _typed(table, "output", str, "pipelines")
    notebooks = _typed(table, "notebooks", list, [])
    own_base_image = _typed(table, "base-image", str, None)
    own_keep_magics = _typed(table, "keep-magics", bool, False)
    cache_size = _size(table.get("cache-size", DEFAULT_CACHE_SIZE))
    runs = _typed(table, "runs-dir", str, DEFAULT_RUNS)
    return Config(
        root=root,
        output=output,
        notebooks=notebooks,
        base_image=own_base_image if base_image is None else base_image,
        keep_magics=own_keep_magics if keep_magics is None else keep_magics,
        cache_size=cache_size,
        runs=runs,
    )


def _typed(table: dict, key: str, kind: type[T], default: D) -> T | D:
    value = table.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise ConfigError(f"[tool.dsops] {key} must be a {kind.__name__}, not {value!r}")
    return value


def _size(value: object) -> int:
    """A size in bytes from ``cache-size``: a number of bytes or text such as "5GB", "500 MiB"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        number = text.rstrip("KMGTIB")
        unit = text[len(number) :]
        try:
            amount = float(number)
        except ValueError:
            amount = -1.0
        if unit in _SIZE_UNITS and amount >= 0:
            return int(amount * _SIZE_UNITS[unit])
    raise ConfigError(f'[tool.dsops] cache-size must be a size such as "5GB", not {value!r}')
