"""`dsops run --grid`'s rendering: a progress bar per combination, then the summary table.

Part of the command line (cli.py hands a sweep over here); the sweep itself is sweep.py's.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsops_jupyter.events import Event
    from dsops_jupyter.model import RunOptions
    from dsops_jupyter.sweep import SweepResult

MAX_METRIC_COLUMNS = 6


def add_sweep_options(run: argparse.ArgumentParser) -> None:
    """`dsops run`'s sweep options."""
    run.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="sweep: run every combination of these values (repeatable), each its own run",
    )
    run.add_argument("--jobs", type=int, help="sweep: runs at once (default: the CPU count)")


def run_grid(args: argparse.Namespace, options: RunOptions) -> int:
    """Run the sweep; 0 when every combination succeeded, 1 when any failed."""
    from dsops_jupyter.errors import ParameterError
    from dsops_jupyter.sweep import run_sweep

    if not args.grid:
        raise ParameterError("--jobs is for sweeps: add --grid NAME=V1,V2,...")

    if args.json:
        result = run_sweep(args.notebook, args.grid, options, args.jobs)
        print(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str))
        return 0 if result.status == "succeeded" else 1
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    bars: dict[int, TaskID] = {}

    def on_event(event: Event) -> None:
        run = event.data.get("run")
        if event.kind == "progress" and run is not None:
            if run not in bars:
                bars[run] = progress.add_task(event.message.partition("started: ")[2], total=1.0)
            progress.update(bars[run], completed=event.data["run_fraction"])
        elif event.kind == "stage":
            progress.console.print(event.message, markup=False, highlight=False)
        elif event.kind == "log" and run is None:  # cell outputs stay in the executed notebooks
            progress.console.print(event.message, markup=False, highlight=False, style="dim")

    with progress:
        result = run_sweep(args.notebook, args.grid, options, args.jobs, on_event)
    Console().print(summary_table(result))
    print(f"summary: {result.summary_path}")
    failed = [run for run in result.runs if run.status != "succeeded"]
    for run in failed:
        print(f"run {run.index} {run.status}: {run.error}", file=sys.stderr)
    return 1 if failed else 0


def summary_table(result: SweepResult) -> Any:
    """Parameters, status, duration and the scalar metrics of each run, one row a run."""
    from rich.table import Table

    names = result.grid.names
    metrics = _metric_columns(result, names)
    table = Table(title=f"{result.notebook.name}: {len(result.runs)} runs, {result.status}")
    for column in ["#", *names, "status", "duration", *metrics]:
        table.add_column(column, justify="right" if column != "status" else "left")
    for run in result.runs:
        values = [repr(run.parameters[name]) for name in names]
        shown = [_cell(run.metrics.get(key)) for key in metrics]
        status = run.status if run.status == "succeeded" else f"[red]{run.status}[/red]"
        table.add_row(str(run.index), *values, status, f"{run.duration:.1f}s", *shown)
    return table


def _metric_columns(result: SweepResult, names: list[str]) -> list[str]:
    """Scalar metric keys in first-seen order, the swept parameters' own echoes left out."""
    keys: list[str] = []
    for run in result.runs:
        for key, value in run.metrics.items():
            scalar = isinstance(value, int | float | str | bool)
            if scalar and key not in names and key not in keys:
                keys.append(key)
    return keys[:MAX_METRIC_COLUMNS]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(round(value, 6)) if isinstance(value, float) else str(value)
