"""``%%dsops`` / ``%dsops`` IPython magics and the ipywidgets panel.

Cell magics (``%%dsops step NAME [--after A,B]``, ``%%dsops parameters``, ``%%dsops skip``)
only check their first line and run the body in the live kernel: the core reads the same line
from the saved notebook, so interactive work and pipelines see one vocabulary.

Line magics act on the notebook this kernel belongs to (found from the Jupyter session):
``%dsops steps``, ``%dsops run``, ``%dsops package``, ``%dsops panel``. Runs and packages
execute the saved notebook in another kernel (papermill), never in this one.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import shlex
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, line_cell_magic, magics_class

from dsops_jupyter.errors import DsopsError
from dsops_jupyter.events import Event, OnEvent, OverallProgress
from dsops_jupyter.model import BUILDERS, PackageOptions, PackageResult, RunOptions, RunRecord

if TYPE_CHECKING:
    from dsops_jupyter.params import Parameter
    from dsops_jupyter.pipeline import Pipeline


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as a one-line UsageError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"%dsops {self.prog}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise UsageError(message or f"%dsops {self.prog}: see %dsops help")


def _parser(name: str) -> _Parser:
    return _Parser(prog=name, add_help=False)


def _run_parser() -> _Parser:
    parser = _parser("run")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[])
    parser.add_argument("--step", action="append", default=[])
    parser.add_argument("--cache", action="store_true")
    parser.add_argument("--force", action="append", default=[])
    parser.add_argument("--resume", nargs="?", const="")
    return parser


def _package_parser() -> _Parser:
    parser = _parser("package")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[])
    parser.add_argument("--name")
    parser.add_argument("--no-commit", dest="commit", action="store_false")
    parser.add_argument("--no-build", dest="build", action="store_false")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--export", choices=("kfp", "airflow", "argo"))
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("--builder", choices=BUILDERS, default=BUILDERS[0])
    return parser


@magics_class
class DsopsMagics(Magics):
    """The ``dsops`` line and cell magic."""

    @property
    def _ipython(self) -> InteractiveShell:
        """The shell these magics were registered with (Magics allows none; IPython never)."""
        if self.shell is None:
            raise UsageError("%dsops: not running in an IPython shell")
        return self.shell

    @line_cell_magic
    def dsops(self, line: str, cell: str | None = None) -> Any:
        """dsops: notebook steps, papermill runs, versioned packages.

        %%dsops step NAME [--after A,B]   this cell starts step NAME (then it runs as usual)
        %%dsops parameters                this cell holds the parameters (literals only)
        %%dsops skip                      exploration: never run by pipelines
        %dsops steps                      the steps of this notebook, as saved
        %dsops run [-p NAME VALUE]... [--step NAME]... [--cache [--force STEP]...] [--resume [RUN]]
        %dsops package [--name N] [--no-commit] [--no-build] [--smoke] [--force]
                       [--export kfp|airflow|argo] [--verify] [--builder assemble|dockerfile]
                       [-p NAME VALUE]...
        %dsops panel                      a form to run or package this notebook

        run/package/steps/panel read the SAVED notebook and execute it in another kernel.
        """
        try:
            if cell is None:
                return self._line(line)
            return self._cell(line, cell)
        except DsopsError as err:
            raise UsageError(str(err)) from None

    # --- cell magics ---------------------------------------------------------------------------
    def _cell(self, line: str, cell: str) -> None:
        check_marker(line)
        result = self._ipython.run_cell(cell)
        error = result.error_before_exec or result.error_in_exec
        if error is not None:
            # The body's own traceback is already shown; fail this cell too, in one line, so
            # papermill and "run all" stop here.
            raise UsageError(f"%%dsops {line.strip()}: the cell failed ({type(error).__name__})")

    # --- line magics ---------------------------------------------------------------------------
    def _line(self, line: str) -> Any:
        words = _split(line)
        command, args = (words[0], words[1:]) if words else ("help", [])
        handlers: dict[str, Callable[[list[str]], Any]] = {
            "steps": self._steps,
            "run": self._run,
            "package": self._package,
            "panel": self._panel,
            "help": lambda _args: print(inspect.cleandoc(self.dsops.__doc__ or "")),
        }
        if command not in handlers:
            raise UsageError(f"%dsops: unknown command {command!r}; try %dsops help")
        return handlers[command](args)

    def _steps(self, args: list[str]) -> None:
        from dsops_jupyter.notebook import read_pipeline

        _parser("steps").parse_args(args)
        print(format_steps(read_pipeline(current_notebook(self._ipython))))

    def _run(self, args: list[str]) -> None:
        parsed = _run_parser().parse_args(args)
        options = RunOptions(
            parameters=dict(parsed.parameter),
            steps=tuple(parsed.step),
            cache=parsed.cache,
            force=tuple(parsed.force),
            resume=parsed.resume,
        )
        notebook = current_notebook(self._ipython)
        view = ProgressView(len(options.stage_plan()))
        view.show()
        with view.failing():
            record = call_run(notebook, options, view.on_event)
        view.done("Run finished")
        print(format_run(record.to_json()))

    def _package(self, args: list[str]) -> None:
        parsed = vars(_package_parser().parse_args(args))
        options = PackageOptions(parameters=dict(parsed.pop("parameter")), **parsed)
        notebook = current_notebook(self._ipython)
        view = ProgressView(len(options.stage_plan()))
        view.show()
        with view.failing():
            result = call_package(notebook, options, view.on_event)
        view.done("Packaged")
        print(format_package(result.to_json()))

    def _panel(self, args: list[str]) -> Panel:
        from dsops_jupyter.notebook import read_pipeline

        _parser("panel").parse_args(args)
        notebook = current_notebook(self._ipython)
        return Panel(notebook, read_pipeline(notebook))


def load_ipython_extension(ipython: InteractiveShell) -> None:
    ipython.register_magics(DsopsMagics)


# --- arguments ---------------------------------------------------------------------------------
def _split(line: str) -> list[str]:
    try:
        return shlex.split(line)
    except ValueError as err:
        raise UsageError(f"%dsops: cannot parse {line.strip()!r}: {err}") from None


def check_marker(line: str) -> None:
    """Validate a ``%%dsops`` first line with the core's own reader of that line, so the live
    kernel and the saved notebook can never disagree about a marker."""
    from dsops_jupyter.markers import parse_marker_line

    parse_marker_line(f"%%dsops {line.strip()}")


# --- which notebook ----------------------------------------------------------------------------
def current_notebook(shell: InteractiveShell) -> Path:
    """The notebook file this kernel belongs to, from the Jupyter session (or VS Code)."""
    ns = shell.user_ns
    for value in (
        os.environ.get("JPY_SESSION_NAME"),
        ns.get("__session__"),
        ns.get("__vsc_ipynb_file__"),
    ):
        found = _resolve(value) if isinstance(value, str) and value else None
        if found is not None:
            return found
    raise UsageError(
        "%dsops: cannot tell which notebook this kernel belongs to (no Jupyter session);"
        " open the notebook in JupyterLab, or use the dsops command line"
    )


def _resolve(value: str) -> Path | None:
    """A session path is absolute, or relative to the server root (an ancestor of the cwd)."""
    path = Path(value).expanduser()
    if path.suffix != ".ipynb":
        return None
    if path.is_absolute():
        return path if path.is_file() else None
    cwd = Path.cwd()
    for base in (cwd, *cwd.parents):
        if (base / path).is_file():
            return (base / path).resolve()
    return None


# --- calling the core --------------------------------------------------------------------------
def call_run(notebook: Path, options: RunOptions, on_event: OnEvent) -> RunRecord:
    from dsops_jupyter.execute import run_notebook

    return run_notebook(notebook, options, on_event)


def call_package(notebook: Path, options: PackageOptions, on_event: OnEvent) -> PackageResult:
    from dsops_jupyter.package import package_notebook

    return package_notebook(notebook, options, on_event)


# --- rendering ---------------------------------------------------------------------------------
def format_steps(pipeline: Pipeline) -> str:
    """The steps with the values they receive and pass on (not every name they write)."""
    rows = [("step", "cells", "depends on", "receives", "passes")]
    for step in pipeline.steps:
        rows.append(
            (
                step.name,
                ",".join(str(c + 1) for c in step.cells),  # 1-based, as in error messages
                ",".join(step.depends_on) or "-",
                ",".join(step.reads) or "-",
                ",".join(step.outputs) or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    params = ", ".join(f"{p.name}: {p.type} = {p.default!r}" for p in pipeline.parameters)
    head = f"{pipeline.name}: {len(pipeline.steps)} step(s)"
    notes = [f"note: {note}" for note in pipeline.notes]
    return "\n".join([head, *lines, f"parameters: {params or '-'}", *notes])


def format_run(record: dict[str, Any]) -> str:
    lines = [f"run {record.get('status')}: {record.get('output_notebook')}"]
    for step in record.get("steps") or []:
        duration = step.get("duration")
        took = f" ({duration:.1f}s)" if isinstance(duration, int | float) else ""
        origin = {"cache": ", restored from cache", "run": ", restored from the failed run"}
        how = origin.get(str(step.get("restored")), "")
        lines.append(f"  {step.get('name')}: {step.get('status')}{took}{how}")
    return "\n".join(lines)


def format_package(result: dict[str, Any]) -> str:
    version = result.get("version")
    if isinstance(version, dict):
        tag = f"{version.get('tag')} ({version.get('short')})"
        state = "new version" if result.get("created") else "unchanged, no new version"
        head = f"{tag}: {state}"
    else:
        head = "written, not committed (no version)"
    lines = [head, f"script: {result.get('script')}"]
    image = result.get("image")
    if image:
        lines.append(f"image: {', '.join(image.get('tags') or [])} {image.get('id', '')}".rstrip())
    exported = result.get("exported")
    if exported:
        lines.append(f"{exported.get('engine')} pipeline: {exported.get('path')}")
    return "\n".join(lines)


# --- widgets -----------------------------------------------------------------------------------
class ProgressView:
    """A progress bar and a stage label fed by the core's events; log lines go to ``log``."""

    def __init__(self, expected_stages: int = 1, log: Callable[[str], None] | None = None):
        import ipywidgets as w

        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="dsops")
        self.label = w.Label("Starting")
        self.box = w.HBox([self.bar, self.label])
        self._overall = OverallProgress(expected_stages)
        self._log = log or print

    def show(self) -> None:
        from IPython.display import display

        display(self.box)

    def reset(self, expected_stages: int = 1) -> None:
        self.bar.value, self.bar.bar_style, self.label.value = 0.0, "", "Starting"
        self._overall = OverallProgress(expected_stages)

    @contextlib.contextmanager
    def failing(self) -> Iterator[None]:
        """Mark the bar failed (red, with the one-line message) if the body raises."""
        try:
            yield
        except DsopsError as err:
            self.failed(str(err))
            raise

    def on_event(self, event: Event) -> None:
        if event.kind == "stage":
            self.label.value = event.message
            self.bar.value = self._overall.on_stage()
        elif event.kind == "progress" and event.fraction is not None:
            self.bar.value = self._overall.on_fraction(event.fraction)
            if event.message:
                self.label.value = event.message
        elif event.kind == "log":
            self._log(event.message)

    def done(self, message: str) -> None:
        self.bar.value, self.bar.bar_style, self.label.value = 1.0, "success", message

    def failed(self, message: str) -> None:
        self.bar.bar_style, self.label.value = "danger", message


class Panel:
    """``%dsops panel``: typed parameter widgets, a step picker, Run / Package buttons.

    The buttons work in a background thread so the kernel stays responsive during a run or
    a build; ``wait()`` joins it (for scripts and tests).
    """

    def __init__(self, notebook: Path, pipeline: Pipeline) -> None:
        import ipywidgets as w

        self.notebook = notebook
        self.pipeline = pipeline
        self.inputs = {p.name: parameter_widget(p) for p in pipeline.parameters}
        self.steps = w.SelectMultiple(
            options=[s.name for s in pipeline.steps], description="Steps", rows=5
        )
        self.build = w.Checkbox(value=PackageOptions().build, description="Build image")
        self.smoke = w.Checkbox(value=False, description="Smoke test")
        self.verify = w.Checkbox(value=PackageOptions().verify, description="Run it first")
        self.run_button = w.Button(description="Run", icon="play", button_style="primary")
        self.package_button = w.Button(description="Package", icon="archive")
        self.log = w.Output(layout={"border": "1px solid #ddd", "max_height": "16em"})
        self.progress = ProgressView(log=self._append)
        self.status: str = "idle"
        self.error: str | None = None
        self.result: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self.run_button.on_click(lambda _b: self._start_run())
        self.package_button.on_click(lambda _b: self._start_package())
        title = w.HTML(f"<b>{pipeline.name}</b> <code>{notebook.name}</code>")
        self.widget = w.VBox(
            [
                title,
                *self.inputs.values(),
                self.steps,
                w.HBox([self.run_button, self.package_button, self.build, self.smoke, self.verify]),
                self.progress.box,
                self.log,
            ]
        )

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def parameters(self) -> dict[str, Any]:
        return {name: widget.value for name, widget in self.inputs.items()}

    def _start_run(self) -> None:
        options = RunOptions(parameters=self.parameters(), steps=tuple(self.steps.value))
        self.start(lambda: self._do_run(options), len(options.stage_plan()))

    def _start_package(self) -> None:
        options = PackageOptions(
            parameters=self.parameters(),
            build=self.build.value,
            smoke=self.smoke.value,
            verify=self.verify.value,
        )
        self.start(lambda: self._do_package(options), len(options.stage_plan()))

    def start(self, action: Callable[[], dict[str, Any]], expected_stages: int = 1) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._append("busy: wait for the current run to finish")
            return
        self.status, self.error, self.result = "running", None, None
        self.run_button.disabled = self.package_button.disabled = True
        self.progress.reset(expected_stages)
        self._thread = threading.Thread(target=self._work, args=(action,), daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.status

    def _work(self, action: Callable[[], dict[str, Any]]) -> None:
        try:
            self.result = action()
        except DsopsError as err:
            self._fail(str(err))
        except Exception as err:  # a bug in dsops: say it in the panel, keep the kernel alive
            self._fail(f"internal error: {type(err).__name__}: {err}")
        else:
            self.status = "succeeded"
            self.progress.done("Done")
        finally:
            self.run_button.disabled = self.package_button.disabled = False

    def _fail(self, message: str) -> None:
        self.status, self.error = "failed", message
        self.progress.failed(message)
        self._append(f"error: {message}")

    def _do_run(self, options: RunOptions) -> dict[str, Any]:
        record = call_run(self.notebook, options, self.progress.on_event)
        data = record.to_json()
        self._append(format_run(data))
        return data

    def _do_package(self, options: PackageOptions) -> dict[str, Any]:
        result = call_package(self.notebook, options, self.progress.on_event)
        data = result.to_json()
        self._append(format_package(data))
        return data

    def _append(self, line: str) -> None:
        # append_stdout works from any thread (a `with output:` block would not).
        self.log.append_stdout(line.rstrip("\n") + "\n")


def parameter_widget(param: Parameter) -> Any:
    """A typed input for one parameter; list/dict/any values are edited as Python literals."""
    import ipywidgets as w

    label = {"description": param.name, "style": {"description_width": "initial"}}
    default = param.default
    if param.type == "bool":
        return w.Checkbox(value=bool(default), **label)
    if param.type == "int" and isinstance(default, int):
        return w.IntText(value=default, **label)
    if param.type == "float" and isinstance(default, int | float):
        return w.FloatText(value=float(default), **label)
    if param.type == "str":
        return w.Text(value="" if default is None else str(default), **label)
    return w.Text(value=repr(default), **label)
