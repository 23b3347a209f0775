"""The `dsops` command: parse arguments, call the core, render the result.

Exit codes: 0 success; 1 the work ran and failed (a cell raised, a build or smoke run failed,
`check` found drift); 2 bad input (notebook, markers, parameters, options, Git state); 130
interrupted. Errors are one line on stderr (or ``{"error": ...}`` on stdout with --json).
Heavy modules are imported inside the commands so `dsops check` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsops_jupyter._version import __version__
from dsops_jupyter.cli_runs import cmd_runs
from dsops_jupyter.cli_sweep import add_sweep_options, run_grid
from dsops_jupyter.console import print_package_result
from dsops_jupyter.errors import DsopsError, NotARepositoryError, ParameterError
from dsops_jupyter.model import BUILDERS

if TYPE_CHECKING:  # events imports dataclasses (and inspect): not needed to start
    from dsops_jupyter.events import Event, OnEvent
    from dsops_jupyter.model import GeneratedPackage

FORCE_HELP = "with --cache: re-run STEP and every step after it (repeatable)"
RESUME_HELP = "continue the last (or the named) failed run from its failing step"
EPILOG = """exit codes: 0 success, 1 the run/build/check failed, 2 bad input, 130 interrupted.
docs: `dsops COMMAND --help`; settings live in [tool.dsops] of your pyproject.toml."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DsopsError as err:
        return _fail(args, str(err), err.exit_code)
    except KeyboardInterrupt as err:
        # Objects the interrupted work left behind (GitPython's cat-file streams) complain from
        # their finalizers at exit; the one line below (with what a package rolled back) is the
        # whole story.
        sys.unraisablehook = lambda _unraisable: None
        return _fail(args, f"interrupted; {err or 'nothing was left half-written'}", 130)


def _fail(args: argparse.Namespace, message: str, code: int) -> int:
    if getattr(args, "json", False):
        print(json.dumps({"error": message}))
    else:
        print(f"error: {message}", file=sys.stderr)
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsops",
        description="Notebooks to production: steps, papermill runs, versioned scripts, images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"dsops-jupyter {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], text: str):
        sub = commands.add_parser(name, help=text, description=text, epilog=EPILOG)
        sub.add_argument("--json", action="store_true", help="print machine-readable JSON")
        sub.set_defaults(handler=handler)
        return sub

    sub = command("steps", cmd_steps, "show a notebook's steps, fresh or stale against the cache")
    sub.add_argument("notebook", type=Path)
    _parameter_options(sub)

    sub = command("run", cmd_run, "execute the notebook (or chosen steps) with papermill")
    sub.add_argument("notebook", type=Path)
    _parameter_options(sub)
    sub.add_argument(
        "--step",
        action="append",
        default=[],
        metavar="NAME",
        help="run this step and what it needs (repeatable)",
    )
    sub.add_argument("--out", type=Path, help="folder for the executed notebook and run.json")
    sub.add_argument("--kernel", help="kernel name (default: the notebook's)")
    sub.add_argument(
        "--strict",
        action="store_true",
        help="fail when a step changes a value the analysis says it only reads",
    )
    sub.add_argument("--cache", action="store_true", help="restore unchanged steps (.dsops/cache)")
    sub.add_argument("--force", action="append", default=[], metavar="STEP", help=FORCE_HELP)
    sub.add_argument("--resume", nargs="?", const="", metavar="RUN", help=RESUME_HELP)
    add_sweep_options(sub)

    sub = command("runs", cmd_runs, "list a notebook's past runs, newest first")
    sub.add_argument("notebook", type=Path)

    sub = command("convert", cmd_convert, "write the generated script package")
    _package_options(sub)
    sub.add_argument("--commit", action="store_true", help="also commit and tag a version")

    sub = command("commit", cmd_commit, "convert, then commit and tag a version with Git")
    _package_options(sub)

    sub = command("versions", cmd_versions, "list the versions committed for a notebook")
    sub.add_argument("notebook", type=Path)
    sub.add_argument("--name", help="pipeline name (default: from the notebook file name)")

    sub = command(
        "check", cmd_check, "fail when a generated package no longer matches its notebook"
    )
    sub.add_argument(
        "paths", nargs="*", type=Path, help="notebooks or folders (default: [tool.dsops] notebooks)"
    )
    sub.add_argument(
        "--strict", action="store_true", help="also fail for notebooks that were never converted"
    )
    sub.add_argument(
        "--full", action="store_true", help="regenerate every package instead of trusting hashes"
    )

    sub = command("package", cmd_package, "convert, commit and build a Docker image")
    _package_options(sub)
    _parameter_options(sub)
    sub.add_argument("--base-image", help="base image, a tag or name@sha256:... digest")
    sub.add_argument("--no-build", action="store_true", help="write the recipe, build nothing")
    sub.add_argument("--no-commit", action="store_true", help="do not make a Git version")
    sub.add_argument("--smoke", action="store_true", help="run the built image once")
    sub.add_argument("--push", metavar="REGISTRY", help="push the tags to this registry")
    sub.add_argument("--reproducible", action="store_true", help="same digest every time")
    sub.add_argument("--output", type=Path, metavar="TAR", help="write an image archive here")
    sub.add_argument("--verify", action="store_true", help="run the notebook first (papermill)")
    sub.add_argument("--builder", choices=BUILDERS, default=BUILDERS[0], help="image builder")
    sub.add_argument(
        "--export",
        choices=("kfp", "airflow", "argo"),
        help="also write the version's pipeline for this engine (see `dsops export`)",
    )

    text = "write the latest version as a Kubeflow, Airflow or Argo pipeline"
    sub = command("export", cmd_export, text)
    sub.add_argument("notebook", type=Path)
    sub.add_argument("--to", required=True, choices=("kfp", "airflow", "argo"), help="engine")
    sub.add_argument("--image", metavar="REF", help="run the steps in this image instead")
    sub.add_argument("--out", type=Path, help="folder to write (default: pipelines/NAME/ENGINE)")
    grid = "sweep a parameter over these values (repeatable: every combination)"
    sub.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2", help=grid)
    sub.add_argument("--name", help="pipeline name (default: from the notebook file name)")
    sub.add_argument("--airflow-operator", choices=("docker", "k8s"), default="docker")
    sub.add_argument("--artifacts", metavar="URI", default="", help="airflow: an object store")

    sub = command("cache", cmd_cache, "show, prune or clear the step and build caches")
    sub.add_argument("action", nargs="?", choices=("show", "prune", "clear"), default="show")
    sub.add_argument("--project", type=Path, default=Path(), help="a folder or notebook in it")

    sub = command("images", cmd_images, "list the images built for a notebook")
    sub.add_argument("notebook", type=Path)
    sub.add_argument("--name", help="pipeline name (default: from the notebook file name)")
    return parser


def _parameter_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter (repeatable)",
    )
    sub.add_argument(
        "-f",
        "--parameters-file",
        type=Path,
        metavar="YAML",
        help="parameters from a YAML file (-p wins)",
    )


def _package_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("notebook", type=Path)
    sub.add_argument("--out", type=Path, help="package folder (default: <output>/<name>)")
    sub.add_argument("--name", help="pipeline name (default: from the notebook file name)")
    sub.add_argument(
        "--keep-magics",
        action="store_true",
        default=None,
        help="keep IPython magics and !shell lines (the script then needs IPython)",
    )
    sub.add_argument(
        "--force",
        action="store_true",
        help="overwrite hand edits of generated files; other files in the folder are left alone",
    )


# --- commands ---------------------------------------------------------------------------------
def cmd_steps(args: argparse.Namespace) -> int:
    from dsops_jupyter.cache import freshness, open_cache
    from dsops_jupyter.notebook import read_pipeline

    pipeline = read_pipeline(args.notebook)
    states = {s.name: s for s in freshness(pipeline, _parameters(args), open_cache(args.notebook))}
    if args.json:
        data = pipeline.to_json()
        for step in data["steps"]:
            step["state"] = states[step["name"]].to_json()
        _print_json(data)
        return 0
    print(f"{pipeline.name}: {len(pipeline.steps)} step(s) from {args.notebook}")
    if pipeline.parameters:
        print("parameters:")
        for p in pipeline.parameters:
            print(f"  {p.name}: {p.type} = {p.default!r}")
    if pipeline.computed:
        computed = ", ".join(pipeline.computed)
        print(f"computed: {computed} (code of the parameters cell, run as papermill runs it)")
    print("steps, in run order:")
    for number, step in enumerate(pipeline.steps, 1):
        cells = ", ".join(str(i + 1) for i in step.cells)
        state = states[step.name]
        mark = "fresh" if state.fresh else f"stale: {', '.join(state.reasons)}"
        print(f"  {number}. {step.name}  (cell{'s' * (len(step.cells) > 1)} {cells})  [{mark}]")
        needs = [f"{d} (after)" if d in step.after else d for d in step.depends_on]
        for label, names in (
            ("needs", needs),
            ("reads", step.reads),
            ("parameters", step.parameters),
            ("writes", step.outputs),
        ):
            if names:
                print(f"       {label}: {', '.join(names)}")
    for note in pipeline.notes:
        print(f"note: {note}")
    for warning in pipeline.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from dsops_jupyter import cacheadmin

    if args.action == "show":
        data = cacheadmin.report(args.project)
        lines = cacheadmin.describe(data)
    else:
        done = (
            cacheadmin.prune(args.project)
            if args.action == "prune"
            else cacheadmin.clear(args.project)
        )
        data, lines = done.to_json(), done.describe()
    if args.json:
        _print_json(data)
    else:
        print("\n".join(lines))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dsops_jupyter.execute import run_notebook
    from dsops_jupyter.model import RunOptions

    options = RunOptions(
        parameters=_parameters(args),
        steps=tuple(args.step),
        out_dir=args.out,
        kernel_name=args.kernel,
        strict=args.strict,
        cache=args.cache,
        force=tuple(args.force),
        resume=args.resume,
    )
    if args.grid or args.jobs is not None:
        return run_grid(args, options)
    with _reporter(args) as on_event:
        record = run_notebook(args.notebook, options, on_event)
    if args.json:
        _print_json(record.to_json())
        return 0
    for warning in record.details["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    how = {"cache": "restored from cache", "run": f"restored from {record.resumed_from}"}
    for step in record.steps:
        done = how.get(step["restored"], "executed" if step["executed"] else "")
        print(f"  {step['name']:<20} {step['status']:<10} {step['duration']:>7.2f}s  {done}")
    print(f"executed notebook: {record.output_notebook}\nrun record:        {record.record_path}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    if args.commit:
        return cmd_commit(args)
    from dsops_jupyter.assemble import convert

    pkg = convert(
        args.notebook,
        out_dir=args.out,
        name=args.name,
        keep_magics=args.keep_magics,
        force=args.force,
        on_event=_print_notes,
    )
    _warn_lock(pkg)
    if args.json:
        _print_json({"name": pkg.name, "directory": str(pkg.directory), "files": sorted(pkg.files)})
        return 0
    print(f"wrote {pkg.directory} ({', '.join(sorted(pkg.files))})")
    for warning in pkg.pipeline.warnings if pkg.pipeline else []:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def cmd_commit(args: argparse.Namespace) -> int:
    from dsops_jupyter.assemble import generate_package
    from dsops_jupyter.vcs import commit_package

    pkg = generate_package(
        args.notebook, out_dir=args.out, name=args.name, keep_magics=args.keep_magics
    )
    _warn_lock(pkg)
    version, created = commit_package(pkg, force=args.force, on_event=_print_notes)
    if args.json:
        _print_json({**version.to_json(), "created": created, "directory": str(pkg.directory)})
        return 0
    if created:
        print(f"committed {version.tag} ({version.short}) with {pkg.directory}")
    else:
        print(f"unchanged: {pkg.name} is still {version.tag} ({version.short}); nothing committed")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    from dsops_jupyter.markers import pipeline_name
    from dsops_jupyter.vcs import list_versions

    versions = list_versions(args.notebook, pipeline_name(args.notebook, args.name))
    if args.json:
        _print_json([v.to_json() for v in versions])
        return 0
    if not versions:
        print(f"no versions yet: run `dsops commit {args.notebook}`")
    for v in versions:
        summary = v.message.strip().splitlines()[0] if v.message.strip() else ""
        print(f"  {v.tag:<28} {v.short}  {_when(v.epoch)}  {summary}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from dsops_jupyter.check import check_paths

    report = check_paths(args.paths, strict=args.strict, full=args.full)
    if args.json:
        _print_json(report.to_json())
    else:
        for item in report.items:
            if item.diff:
                sys.stdout.write(item.diff)
            if item.status == "ok":
                continue
            print(
                f"{item.status:>10}  {item.notebook}" + (f"  ({item.note})" if item.note else ""),
                file=sys.stderr,
            )
        print(f"{report.summary()}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_package(args: argparse.Namespace) -> int:
    from dsops_jupyter.model import PackageOptions
    from dsops_jupyter.package import package_notebook

    options = PackageOptions(
        parameters=_parameters(args),
        name=args.name,
        out_dir=args.out,
        commit=not args.no_commit,
        build=not args.no_build,
        smoke=args.smoke,
        base_image=args.base_image,
        push=args.push,
        force=args.force,
        reproducible=args.reproducible,
        output=args.output,
        export=args.export,
        verify=args.verify,
        builder=args.builder,
    )
    with _reporter(args) as on_event:
        result = package_notebook(args.notebook, options, on_event)
    data = result.to_json()
    if args.json:
        _print_json(data)
        return 0
    print_package_result(data)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dsops_jupyter.export import export

    options = {"image": args.image, "out_dir": args.out, "grid": args.grid, "name": args.name}
    options["options"] = {"airflow_operator": args.airflow_operator, "artifacts": args.artifacts}
    with _reporter(args) as on_event:
        result = export(args.notebook, args.to, on_event=on_event, **options)
    if args.json:
        _print_json(result.to_json())
    else:
        print(f"wrote {result.path} ({result.version.tag}, image {result.image.reference})")
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    from dsops_jupyter.image import list_images
    from dsops_jupyter.vcs import list_versions

    try:
        versions = list_versions(args.notebook, args.name)
    except NotARepositoryError:
        versions = None  # no repository to ask: every image labelled with the notebook
    images = list_images(args.notebook, args.name, versions=versions)
    if args.json:
        _print_json([i.to_json() for i in images])
        return 0
    if not images:
        print(f"no images yet: run `dsops package {args.notebook}`")
    for info in images:
        data = info.to_json()
        print(
            f"  {', '.join(data.get('tags', [])):<40} {str(data.get('commit', ''))[:7]}  "
            f"{data.get('size', 0) / 1e6:8.1f} MB  {str(data.get('id', ''))[:19]}"
        )
    return 0


# --- helpers ---------------------------------------------------------------------------------
def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    """-f YAML values, then -p NAME VALUE pairs (strings, coerced later by the core)."""
    values: dict[str, Any] = {}
    if args.parameters_file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(args.parameters_file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ParameterError(
                f"{args.parameters_file}: cannot read parameters ({err})"
            ) from None
        if not isinstance(loaded, dict | None):
            raise ParameterError(f"{args.parameters_file}: expected a mapping of name: value")
        values.update(loaded or {})
    values.update(dict(args.parameter))
    return values


def _warn_lock(pkg: GeneratedPackage) -> None:
    text = pkg.files.get("requirements.lock", b"").decode("utf-8")
    for line in text.splitlines():
        if line.startswith("# unresolved import"):
            print(f"warning: {line[2:]}", file=sys.stderr)


@contextmanager
def _reporter(args: argparse.Namespace) -> Iterator[OnEvent]:
    """Rich progress on stderr for people (see console.py); silence for --json."""
    if args.json:
        yield lambda event: None
        return
    from dsops_jupyter.console import progress_bars

    with progress_bars() as on_event:
        yield on_event


def _print_notes(event: Event) -> None:
    """Log lines of a command that shows no progress (what --force left alone): on stderr."""
    if event.kind == "log":
        print(f"note: {event.message}", file=sys.stderr)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _when(epoch: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M")
