"""Notebook -> script and spec (deterministic: same notebook, same bytes).

The notebook-derived files of a package only: the generated script, checked to compile, and
its pipeline.json. `assemble` adds the lock and the image recipe and writes the package.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from pathlib import Path

from dsops_jupyter import escape, flow
from dsops_jupyter.cache import script_table
from dsops_jupyter.config import Config, project_path
from dsops_jupyter.errors import ConversionError
from dsops_jupyter.ipysyntax import TIME_HELPER, TIMEIT_HELPER, WRITEFILE_HELPER, indent_code
from dsops_jupyter.params import Parameter, parameter_options
from dsops_jupyter.pipeline import Cell, Pipeline, Step
from dsops_jupyter.spec import SCRIPT_FORMAT, spec_bytes, spec_digest

RESERVED = frozenset({"run", "run_step", "run_cached", "main", "STEPS", "STEP_CACHE", "PARAMETERS"})
RAISES_EXCEPTION = "raises-exception"  # nbclient's tag: the cell's error does not stop the run
_RUNTIME = Path(__file__).parent / "templates" / "script_runtime.py.txt"
_RUNTIME_START = "\n# --- command line (generated; the same in every dsops script)"
_DISPLAY_FALLBACK = """

def display(*objs, **kwargs):
    \"\"\"The notebook's display(): outside IPython it prints, so the script needs no IPython.\"\"\"
    for obj in objs:
        print(obj)
"""
_TIMING = f'''

import time as _time


def _dsops_format_time(seconds):
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("\u00b5s", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            return f"{{seconds / scale:.3g}} {{unit}}"


class {TIME_HELPER}:
    """%time / %%time in plain Python: a clock started before the code; stop() prints IPython's
    two timing lines (not reached when the code fails, as in IPython)."""

    def __init__(self):
        self.wall, self.cpu = _time.perf_counter(), _os.times()

    def stop(self):
        wall, cpu = _time.perf_counter() - self.wall, _os.times()
        user, system = cpu.user - self.cpu.user, cpu.system - self.cpu.system
        print(
            f"CPU times: user {{_dsops_format_time(user)}}, sys: "
            f"{{_dsops_format_time(system)}}, total: {{_dsops_format_time(user + system)}}"
        )
        print(f"Wall time: {{_dsops_format_time(wall)}}")

    def value(self, compute):
        result = compute()
        self.stop()
        return result


def {TIMEIT_HELPER}(body):
    """%timeit in plain Python: the body runs once (IPython repeats it), one timing line."""
    start = _time.perf_counter()
    body()
    spent = _dsops_format_time(_time.perf_counter() - start)
    print(f"{{spent}} \u00b1 0 ns per loop (mean \u00b1 std. dev. of 1 run, 1 loop each)")
'''
# A kernel imports modules from the folder it started in (papermill: the notebook's): so does
# the script, or `%%writefile mylib.py` then `import mylib` would work only in the notebook.
_KERNEL_PATH = "if _os.getcwd() not in _sys.path:\n    _sys.path.insert(1, _os.getcwd())\n"
_IPYTHON_SHIM = '''

def get_ipython():
    """The notebook's magics (kept with --keep-magics) run in IPython, seeing the names of the
    step that runs them, as the notebook's magics see its namespace."""
    import sys
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    caller = sys._getframe(1)
    shell.user_ns.update(caller.f_globals)
    shell.user_ns.update(caller.f_locals)
    return shell
'''
_WRITEFILE = f'''

def {WRITEFILE_HELPER}(filename, text, append=False):
    """%%writefile in plain Python: the file and the message IPython's magic gives."""
    filename = _os.path.expanduser(filename)
    if _os.path.exists(filename):
        print(("Appending to " if append else "Overwriting ") + filename)
    else:
        print("Writing " + filename)
    with open(filename, "a" if append else "w", encoding="utf-8") as handle:
        handle.write(text)
'''


def package_files(name: str) -> list[str]:
    """Every file of a package. pipeline.json lists them: the files dsops may replace or remove
    (assemble.generate_package must produce exactly these; a test holds it to that)."""
    return sorted(
        {f"{name}.py", "pipeline.json", "requirements.lock", "Dockerfile", ".dockerignore"}
    )


def render_files(pipeline: Pipeline, config: Config) -> dict[str, bytes]:
    """The notebook-derived files (script and spec): fast, no environment lookups."""
    _check_convertible(pipeline, config.keep_magics)
    notebook = project_path(pipeline.notebook_path, config.root)
    text = render_script(pipeline, notebook, config.keep_magics)
    check_compiles(text, pipeline)
    script = text.encode("utf-8")
    spec = {
        "format": SCRIPT_FORMAT,
        **pipeline.to_json(),
        "notebook": notebook,
        "script": f"{pipeline.name}.py",
        "order": [s.name for s in pipeline.steps],
        "keep_magics": config.keep_magics,
        "script_sha256": hashlib.sha256(script).hexdigest(),
        "files": package_files(pipeline.name),
    }
    spec["spec_sha256"] = spec_digest(spec)
    return {f"{pipeline.name}.py": script, "pipeline.json": spec_bytes(spec)}


def _check_convertible(pipeline: Pipeline, keep_magics: bool) -> None:
    where = pipeline.notebook_path.name
    _check_top_level_flow(pipeline)
    for cell in _converted_cells(pipeline):
        if cell.unsupported and not keep_magics:
            raise ConversionError(
                f"{where}, {cell.label}: `{cell.unsupported[0]}` is IPython syntax plain Python "
                f"cannot run; rewrite it in Python, mark the cell skip, or pass --keep-magics"
            )
    clash = pipeline.module_names & (
        RESERVED | _runtime_names() | {f"step_{s.name}" for s in pipeline.steps}
    )
    if clash:
        raise ConversionError(
            f"{where} defines {sorted(clash)[0]!r}, a name the generated script needs; rename it"
        )
    for param in pipeline.parameters:
        escape.json_text(param.to_json(), f"{where}: parameter {param.name}", allow_nan=True)
    _check_parameter_options(pipeline)


def _check_parameter_options(pipeline: Pipeline) -> None:
    """Each parameter gets options of its own (``step`` is ``--param-step``: then a parameter
    ``param_step`` would share it; refused rather than one silently shadowing the other)."""
    owner: dict[str, str] = {}
    for param in pipeline.parameters:
        for option in parameter_options(param.name):
            if option in owner:
                raise ConversionError(
                    f"{pipeline.notebook_path.name}: parameters {owner[option]!r} and "
                    f"{param.name!r} would both be set by the script's {option}; rename one"
                )
            owner[option] = param.name


def check_compiles(script: str, pipeline: Pipeline) -> None:
    """The generated script compiles, or one ConversionError naming the cell that breaks it.

    Every path that writes or commits a script renders it here, so none can ship code that
    fails on `python script.py`; "Scripts generated here always compile" (DESIGN.md).
    """
    # The runtime at the end is the same fixed, tested text in every script: compiling what
    # precedes it (everything that comes from the notebook) halves the cost.
    ours = script.rpartition(_RUNTIME_START)[0] or script
    try:
        compile(ours, f"{pipeline.name}.py", "exec", dont_inherit=True)
    except SyntaxError as err:  # IndentationError and TabError too
        fix = (
            "put `from ... import *` on its own line at the top level of the cell"
            if "import *" in err.msg
            else "rewrite it in plain Python or mark the cell skip"
        )
        raise ConversionError(
            f"{_script_culprit(pipeline, script, err.lineno)} would not compile as a script "
            f"({err.msg}); {fix}"
        ) from None
    except (RecursionError, MemoryError, ValueError) as err:
        reason = "nested too deeply" if not isinstance(err, ValueError) else str(err)
        raise ConversionError(
            f"{pipeline.notebook_path.name}: the generated script would not compile ({reason}); "
            f"split the deepest expression"
        ) from None


def _script_culprit(pipeline: Pipeline, script: str, lineno: int | None) -> str:
    """The notebook cell a line of the generated script comes from (`# cell N` above it)."""
    where = pipeline.notebook_path.name
    lines = script.split("\n")[: lineno or 0]
    for line in reversed(lines):
        match = re.fullmatch(r"\s*# cell (\d+)", line)
        if match:
            return f"{where}, cell {match[1]}"
        if line.startswith(("PARAMETERS = ", "def run(")) and pipeline.parameters:
            return f"{where}, cell {pipeline.parameters[0].cell} (parameters)"
        if line.startswith("STEPS = "):
            break
    return f"{where} (line {lineno} of the generated script)"


def _check_top_level_flow(pipeline: Pipeline) -> None:
    """`return`, `yield` and `await` outside any function: IPython refuses the first two, and a
    step function would silently change meaning (a generator that never runs, an early exit);
    top-level `await` only runs under IPython's event loop."""
    where = pipeline.notebook_path.name
    for cell in _converted_cells(pipeline):
        if not _FLOW_WORDS.search(cell.code):
            continue  # most cells: no walk of their tree needed
        found = _outside_function(cell.tree.body if cell.tree else [])
        if found is None:
            continue
        word, line = found
        fix = (
            "put the code in an `async def` and call it with asyncio.run(...)"
            if word == "await"
            else "put it inside a function (the notebook cannot run it either)"
        )
        raise ConversionError(
            f"{where}, {cell.label}, line {line}: `{word}` outside a function; {fix}"
        )


_FLOW_WORDS = re.compile(r"\b(?:return|yield|await|async)\b")
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _outside_function(nodes: list[ast.stmt]) -> tuple[str, int] | None:
    """The word and line of the first return/yield/await not inside a def or lambda (iterative:
    trees may be deep). `async for`/`async with` and async comprehensions are awaits too."""
    pending: list[ast.AST] = list(reversed(nodes))
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return):
            return "return", node.lineno
        if isinstance(node, ast.Yield | ast.YieldFrom):
            return "yield", node.lineno
        if isinstance(node, ast.Await | ast.AsyncFor | ast.AsyncWith):
            return "await", node.lineno
        if isinstance(node, ast.comprehension) and node.is_async:
            return "await", node.iter.lineno  # a comprehension part has no position of its own
        if isinstance(node, _SCOPES):
            pending.extend(reversed([*_decorators(node), *_defaults(node)]))
            continue
        pending.extend(reversed(list(ast.iter_child_nodes(node))))
    return None


def _decorators(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.expr]:
    return [] if isinstance(node, ast.Lambda) else node.decorator_list


def _defaults(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.expr]:
    """Parts of a def/lambda evaluated where it is defined: default values."""
    args = node.args
    return [*args.defaults, *(d for d in args.kw_defaults if d is not None)]


@functools.cache
def _runtime_names() -> frozenset[str]:
    """Module-level names of the script's own machinery, which notebook code must not replace."""
    names = flow.scan(ast.parse(_RUNTIME.read_text(encoding="utf-8")).body).writes
    return frozenset({*names, "_argparse", "_ast", "_os", "_pickle", "_sys", "_Path"})


def _converted_cells(pipeline: Pipeline) -> list[Cell]:
    """Cells whose code ends up in the script: step cells and cells with hoisted code."""
    used = {i for step in pipeline.steps for i in step.cells} | {i for i, _ in pipeline.hoisted}
    return [cell for cell in pipeline.cells if cell.index in used]


STAR_HELPER = "_dsops_import_star"
_STAR = f'''

def {STAR_HELPER}(module, level=0):
    """The names `from module import *` binds (its __all__, else its public names): Python
    allows the statement only at module level, and a step is a function."""
    import importlib

    found = importlib.import_module("." * level + module, __package__ if level else None)
    names = getattr(found, "__all__", None)
    if names is None:
        names = [name for name in vars(found) if not name.startswith("_")]
    return {{name: getattr(found, name) for name in names}}
'''


def _inline_star_imports(code: str, local: set[str]) -> str:
    """Each top-level `from m import *` of a step's code, run when the step gets there: the
    module's names go to the script's globals (where the step's free names are looked up, so
    later steps of a whole run see them as the notebook's later cells did) and onto the step's
    own local names the module also binds. Nested ones are left for check_compiles to name."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return code
    lines = code.split("\n")
    for node in reversed(body):
        if not (isinstance(node, ast.ImportFrom) and node.names[0].name == "*"):
            continue
        first, last = node.lineno, node.end_lineno or node.lineno
        if any(n is not node and n.lineno <= last and (n.end_lineno or 0) >= first for n in body):
            continue  # shares a line (`a = 1; from m import *`): not ours to cut
        call = f"{STAR_HELPER}({node.module or ''!r}{f', {node.level}' if node.level else ''})"
        new = [f"{STAR_HELPER}_names = {call}", f"globals().update({STAR_HELPER}_names)"]
        for name in sorted(local):
            new.append(f"if {name!r} in {STAR_HELPER}_names:")
            new.append(f"    {name} = {STAR_HELPER}_names[{name!r}]")
        lines[first - 1 : last] = new
    return "\n".join(lines)


def _step_locals(step: Step, chunks: list[str]) -> set[str]:
    """Names local to a step's function: its arguments and what its code binds."""
    trees = []
    for code in chunks:
        try:
            trees += ast.parse(code).body
        except SyntaxError:
            continue
    return {name for name, _ in step.inputs} | set(flow.scan(trees).binds)


# --- the script -------------------------------------------------------------------------------
def render_script(pipeline: Pipeline, notebook: str, keep_magics: bool = False) -> str:
    futures, imports, shared = _module_level(pipeline)
    parts = [
        _header(pipeline, notebook),
        *futures,
        "import argparse as _argparse\nimport ast as _ast\nimport os as _os\n"
        "import pickle as _pickle\nimport sys as _sys\nfrom pathlib import Path as _Path\n",
        _KERNEL_PATH,
    ]
    if any(re.match(r"\s*(import|from)\s+matplotlib\b", text) for text in imports):
        parts.append('_os.environ.setdefault("MPLBACKEND", "Agg")  # no screen in a script\n')
    if imports:
        parts.append("\n".join(imports) + "\n")
    if "display" in pipeline.free_reads and "display" not in pipeline.bound_names:
        parts.append(_DISPLAY_FALLBACK)
    cells = _converted_cells(pipeline)
    if keep_magics and any(cell.unsupported or cell.magic_code for cell in cells):
        parts.append(_IPYTHON_SHIM)
    bodies = [code for step in pipeline.steps for _, code in step.body]
    if any("import *" in code for code in bodies):
        parts.append(_STAR)
    if any(WRITEFILE_HELPER in code for code in bodies):
        parts.append(_WRITEFILE)
    if any(TIME_HELPER in code for code in bodies):  # also the prefix of TIMEIT_HELPER
        parts.append(_TIMING)
    parts += [f"\n# cell {index + 1}\n{code.strip()}\n" for index, code in shared]
    parts.append(_parameters_table(pipeline))
    raising = {c.index for c in pipeline.cells if RAISES_EXCEPTION in c.tags}
    parts += [_step_function(step, keep_magics, raising) for step in pipeline.steps]
    parts.append(_run_function(pipeline))
    parts += [_steps_table(pipeline), script_table(pipeline)]
    parts.append(_RUNTIME.read_text(encoding="utf-8"))
    return _tidy("\n".join(parts))


def _header(pipeline: Pipeline, notebook: str) -> str:
    order = " -> ".join(s.name for s in pipeline.steps) or "(no steps)"
    return (
        f"# Generated by dsops-jupyter from {escape.python_comment(notebook)} "
        f"({pipeline.content_hash[:19]}).\n"
        f"# Do not edit: change the notebook and run `dsops convert` again.\n"
        f'"""Pipeline {pipeline.name}: {order}.\n\n'
        f"Run every step:  python {pipeline.name}.py [--PARAMETER VALUE ...]\n"
        f"Run one step:    python {pipeline.name}.py --step NAME --workdir DIR\n"
        f'"""\n'
    )


def _module_level(pipeline: Pipeline) -> tuple[list[str], list[str], list[tuple[int, str]]]:
    """Split hoisted code into __future__ imports, other imports and shared definitions."""
    futures: list[str] = []
    imports: list[str] = []
    shared: list[tuple[int, str]] = []
    for index, code in pipeline.hoisted:
        body = ast.parse(code).body
        if body and all(isinstance(n, ast.Import | ast.ImportFrom) for n in body):
            is_future = all(getattr(n, "module", None) == "__future__" for n in body)
            (futures if is_future else imports).append(code.strip())
        else:
            shared.append((index, code))
    return [f + "\n" for f in futures], imports, shared


def _parameters_table(pipeline: Pipeline) -> str:
    rows = "".join(f"    {p.name!r}: ({p.type!r}, {_default(p)}),\n" for p in pipeline.parameters)
    body = f"{{\n{rows}}}" if rows else "{}"
    return f"\n# The notebook's parameters: name -> (type, default).\nPARAMETERS = {body}\n"


def _default(param: Parameter) -> str:
    """A parameter's default as Python source: `float('inf')`, never a bare `inf`."""
    return escape.python_literal(param.default, f"parameter {param.name}'s default")


def _step_function(step: Step, keep_magics: bool = False, raising: set[int] | None = None) -> str:
    args = ", ".join(name for name, _ in step.inputs)
    cells = ", ".join(str(i + 1) for i in step.cells)
    plural = "s" if len(step.cells) > 1 else ""
    doc = f'    """Step {step.name} (cell{plural} {cells})."""'
    lines = [f"\n\ndef step_{step.name}({args}):", doc]
    body = step.magic_body if keep_magics else step.body
    local = _step_locals(step, [code for *_, code in step.rebound] + [code for _, code in body])
    if step.replays:
        lines.append("    if _STEP_ALONE:  # a fresh process: set it up as the earlier steps did")
        for index, source, code in step.replays:
            code = _inline_star_imports(code, set())
            lines += [f"        # cell {index + 1} (step {source})", indent_code(code, " " * 8)]
    for index, source, code in step.rebound:
        lines += [
            f"    # cell {index + 1} again: step {source} defines it, this step uses it",
            indent_code(code.strip("\n")),
        ]
    for index, code in body:
        code = _inline_star_imports(code.strip("\n"), local)
        if code.strip() and index in (raising or ()):
            lines += _raising_cell(index, code)
        elif code.strip():
            lines += [f"    # cell {index + 1}", indent_code(code)]
    if step.outputs:
        lines.append(f"    return {', '.join(step.outputs)}")
    elif not any(code.strip() for _, code in step.body):
        lines.append("    pass")
    return "\n".join(lines) + "\n"


def _raising_cell(index: int, code: str) -> list[str]:
    """A cell tagged ``raises-exception``: nbclient shows its error and runs on, papermill fails
    at the end of the run naming it; the script does both (``_dsops_raised`` in the runtime)."""
    return [
        f"    # cell {index + 1} (tagged {RAISES_EXCEPTION}: an error is shown, the run goes on)",
        "    try:",
        indent_code(code, " " * 8),
        "    except Exception as _dsops_error:",
        f"        _dsops_raised({index + 1}, _dsops_error)",
    ]


def _run_function(pipeline: Pipeline) -> str:
    signature, prelude = [], []
    for param in pipeline.parameters:
        if isinstance(param.default, list | dict):  # no mutable defaults in a signature
            signature.append(f"{param.name}=None")
            prelude.append(
                f"    {param.name} = {_default(param)} if {param.name} is None else {param.name}"
            )
        else:
            signature.append(f"{param.name}={_default(param)}")
    lines = [
        f"\n\ndef run({', '.join(signature)}):",
        '    """Run every step in order; returns the values the steps pass on."""',
        *prelude,
    ]
    produced: list[str] = []
    for step in pipeline.steps:
        call = f"step_{step.name}({', '.join(name for name, _ in step.inputs)})"
        if step.outputs:
            lines.append(f"    {', '.join(step.outputs)} = {call}")
            produced += [n for n in step.outputs if n not in produced]
        else:
            lines.append(f"    {call}")
    lines.append("    return {" + ", ".join(f"{n!r}: {n}" for n in produced) + "}")
    return "\n".join(lines) + "\n"


def _steps_table(pipeline: Pipeline) -> str:
    rows = []
    for step in pipeline.steps:
        inputs, outputs = list(step.inputs), list(step.outputs)
        rows.append(f"    {step.name!r}: (step_{step.name}, {inputs!r}, {outputs!r}),")
    return (
        "\n\n# Each step: its function, its inputs as (name, step that writes it; None for a\n"
        "# parameter), and the outputs later steps read. Used by --step NAME --workdir DIR.\n"
        "STEPS = {\n" + "\n".join(rows) + "\n}\n"
    )


def _tidy(text: str) -> str:
    """Exactly one newline at the end (blank lines inside are code, and may sit in strings)."""
    return text.strip("\n") + "\n"
