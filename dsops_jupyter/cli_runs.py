"""`dsops runs NOTEBOOK`: the notebook's past runs, newest first (history.py reads them).

Part of the command line (cli.py registers the command here).
"""

from __future__ import annotations

import argparse
import json


def cmd_runs(args: argparse.Namespace) -> int:
    from dsops_jupyter.history import list_runs

    runs = list_runs(args.notebook)
    if args.json:
        print(json.dumps({"runs": runs}, indent=2, default=str))
        return 0
    if not runs:
        print(f"no runs of {args.notebook} yet (`dsops run {args.notebook}` makes one)")
    for run in runs:
        took = run["duration"]
        took = f"{took:7.1f}s" if isinstance(took, int | float) else " " * 8
        values = ", ".join(f"{k}={v!r}" for k, v in run["parameters"].items())
        print(f"{run['started'] or '?':<25} {run['status'] or '?':<11} {took}  {values}")
        for step in run["steps"]:
            if step["status"] == "failed":
                where = f"cell {step['cell'] + 1}" if isinstance(step["cell"], int) else ""
                where += f", line {step['line']}" if step["line"] else ""
                print(f"    step {step['name']} failed ({where}): {step['error']}")
        print(f"    {run['dir']}")
    return 0
