"""Run one step of a dsops script in its image, moving artifacts between an engine and a workdir.

Standard library only, and self-contained: the exports pass this file's source to
``python -c`` in the version's image, which holds the script but not dsops. Every engine uses
it the same way (see ``ExportContext.step_command``):

    python -c SRC --script /opt/dsops/wine.py --step train --workdir /tmp/dsops/work
        [--in NAME=PATH]... [--out NAME=PATH]... [--files PATH] [--metrics NAME=PATH
        --metric-names a,b] [--executor-input JSON] -- [--alpha=0.5 ...]

An artifact NAME is the folder ``WORKDIR/NAME`` (manifest + data, see runtime/artifacts.py):
each ``--in`` folder is copied there before the step, each ``--out`` copied from there after it.
The step runs in a fresh current folder; ``--files`` receives what it wrote there (a
``metrics.json``, plots). ``--metrics`` receives the numbers the notebook's ``pipeline-metrics``
cell names, read from the step function's locals as it returns. ``--executor-input`` is the
executor input KFP substitutes for its placeholder: the runner writes the ExecutorOutput file
that input names (artifact URIs, metrics metadata), which is how kfp.local learns a container's
outputs; a KFP backend reads it too. (This source must not contain KFP's placeholder syntax:
KFP substitutes it anywhere in a command, this text included.)
"""

import argparse
import json
import os
import runpy
import shutil
import sys
import tempfile
from pathlib import Path


def parse(argv):
    own, script_args = _split(argv)
    parser = argparse.ArgumentParser(prog="dsops-step")
    parser.add_argument("--script", required=True)
    parser.add_argument("--step", required=True)
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--in", dest="inputs", action="append", default=[], type=_pair)
    parser.add_argument("--out", dest="outputs", action="append", default=[], type=_pair)
    parser.add_argument("--files", type=Path)
    parser.add_argument("--metrics", type=_pair)
    parser.add_argument("--metric-names", default="")
    parser.add_argument("--executor-input")
    args = parser.parse_args(own)
    args.script_args = script_args
    return args


def _split(argv):
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


def _pair(text):
    name, sep, path = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def copy_tree(source, target):
    """``source`` (a folder or a file) to ``target``, replacing what was there."""
    if target.is_dir():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


def run_step(script, step, workdir, script_args, metric_names):
    """The script's ``--step`` run, in this process; returns the metrics the step bound."""
    wanted = [name for name in metric_names.split(",") if name]
    captured = {}
    code_name, code_file = f"step_{step}", script

    def watch(frame, event, _arg):
        code = frame.f_code
        if event == "return" and code.co_name == code_name and code.co_filename == code_file:
            captured.update({n: frame.f_locals[n] for n in wanted if n in frame.f_locals})

    sys.argv = [script, "--step", step, "--workdir", str(workdir), *script_args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` does
    if wanted:
        sys.setprofile(watch)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.setprofile(None)
    return {name: _number(name, value) for name, value in captured.items()}


def _number(name, value):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SystemExit(f"error: metric {name} is not a number: {value!r}") from None


def write_executor_output(executor_input, metrics_name, metrics):
    """ExecutorOutput for KFP: each output artifact as the executor input announced it, the
    metrics artifact with the numbers as its metadata."""
    outputs = json.loads(executor_input).get("outputs", {})
    artifacts = {}
    for name, spec in outputs.get("artifacts", {}).items():
        items = []
        for artifact in spec.get("artifacts", []):
            item = {key: artifact[key] for key in ("name", "uri") if key in artifact}
            item["metadata"] = dict(artifact.get("metadata") or {})
            if name == metrics_name:
                item["metadata"].update(metrics)
            items.append(item)
        artifacts[name] = {"artifacts": items}
    target = Path(outputs["outputFile"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"artifacts": artifacts}), encoding="utf-8")


def main(argv):
    args = parse(argv)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    for name, path in args.inputs:
        copy_tree(path, args.workdir / name)
    here = Path(tempfile.mkdtemp(prefix="dsops-step-"))
    os.chdir(here)
    metrics = run_step(args.script, args.step, args.workdir, args.script_args, args.metric_names)
    for name, path in args.outputs:
        copy_tree(args.workdir / name, path)
    if args.files is not None:
        copy_tree(here, args.files)
    metrics_name = None
    if args.metrics is not None:
        metrics_name, path = args.metrics
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, sort_keys=True), encoding="utf-8")
    if args.executor_input:
        write_executor_output(args.executor_input, metrics_name, metrics)


if __name__ == "__main__":
    main(sys.argv[1:])
