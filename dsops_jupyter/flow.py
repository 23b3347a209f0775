"""Data flow between steps: which names a block of code reads and writes, and a DAG order.

The analysis is static (ast), in statement order, so ``x = x + 1`` reads ``x`` from an earlier
step and writes it back.

A step that may change, in place, a value it reads writes that name too: the generated step
function returns it, so a step run alone (``--step NAME --workdir DIR``) hands the changed value
on, and the steps that read it afterwards depend on this step. When the analysis cannot tell, it
passes the value on (an extra artifact is cheap, a wrong answer is not). The rule:

- Stores and deletes through a value change it: ``a[k] = v``, ``a.b = v``, ``a[k] += v``,
  ``del a[k]``, ``del a.b``; so does ``a += v`` (lists, arrays and frames add in place).
- A call with ``inplace=`` (anything but ``False``/``None``) changes its receiver; so does a
  method named in ``MUTATING_METHODS`` (``append``, ``update``, ``pop``, ``sort``, ``fit``, ...),
  whether or not its result is used.
- A call whose result is dropped (a statement of its own) changes its receiver and every value
  passed to it, unless its name says it only shows, saves, copies or queries (``PURE_CALLS``,
  names containing ``plot``, or starting with one of ``PURE_PREFIXES``: ``to_``, ``is``, ...):
  ``random.shuffle(deck)``, ``rng.shuffle(x)`` and ``helper(rows)`` change their arguments,
  ``print(df.head())``, ``plt.plot(x)``, ``df.to_csv(p)`` change nothing. Builtins change nothing
  except ``next``, ``setattr``, ``delattr``, ``exec`` and ``eval``.
- A function or class defined in the notebook is read: a call changes the arguments its body
  (``__init__`` for a class) may change, and the notebook names it may change, result used or
  not. A call of anything else the analysis cannot see through (a value from an earlier step, a
  lambda, ``fns[0](x)``) may change every value passed to it. Other library calls whose result
  is used (``np.log(x)``, ``df.merge(other)``) are taken to leave their arguments alone.
- Aliases count: a name bound to a part of another value (``r`` in ``for r in rows``,
  ``x = rows[0]``, ``x = d.get(k)``, ``y = arr.reshape(...)``, ``pair = [rows, other]``) changes
  that value when it is changed. Results of library calls are taken as new values, ``copy()``
  included, and so are the results of arithmetic (``rows + more`` shares elements: not seen).
- Modules (names bound by ``import``), notebook definitions hoisted to module level, names no
  earlier step or parameter supplies, and ``int``/``float``/``str``/``bool`` parameters never
  changed by a step are never passed on as changed.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dsops_jupyter.errors import CycleError

BUILTINS = frozenset(dir(builtins)) | {"__file__", "__name__"}
Roots = dict[str, None]  # an ordered set of names: scans give the same order every time
Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef

# Methods that change their receiver whatever is done with their result; their arguments are
# only read.
MUTATING_METHODS = frozenset(
    {
        *("append", "extend", "insert", "remove", "pop", "popitem", "clear", "update"),
        *("setdefault", "add", "discard", "sort", "reverse", "appendleft", "extendleft"),
        *("popleft", "rotate", "move_to_end", "difference_update", "intersection_update"),
        *("symmetric_difference_update", "fill", "resize", "put", "itemset", "setflags"),
        *("fit", "partial_fit", "fit_transform", "fit_predict", "set_params", "seed"),
        *("send", "write", "writelines", "__setitem__", "__delitem__"),
    }
)
# Callables that change neither their receiver nor their arguments, even with the result
# dropped: they show, save, copy or query. ``inplace=`` still counts.
PURE_CALLS = frozenset(
    {
        *("print", "display", "pprint", "repr", "len", "isinstance", "str", "format", "warn"),
        *("head", "tail", "sample", "describe", "info", "summary", "show", "hist", "copy"),
        *("get", "keys", "values", "items", "count", "index", "unique", "nunique"),
        *("value_counts", "sum", "mean", "median", "std", "var", "min", "max", "corr", "cov"),
        *("isna", "isnull", "notna", "notnull", "equals", "memory_usage", "astype", "round"),
        *("rename", "drop", "dropna", "fillna", "replace", "sort_values", "sort_index"),
        *("reset_index", "set_index", "drop_duplicates", "duplicated", "merge", "join"),
        *("groupby", "agg", "aggregate", "apply", "map", "query", "filter", "pivot", "melt"),
        *("pivot_table", "clip", "where", "mask", "nlargest", "nsmallest", "isin"),
        *("predict", "predict_proba", "transform", "score", "evaluate", "dump", "dumps"),
        *("figure", "subplots", "title", "suptitle", "xlabel", "ylabel", "legend", "grid"),
        *("tight_layout", "close", "scatter", "bar", "barh", "pie", "imshow", "heatmap"),
        *("colorbar", "annotate", "text", "axhline", "axvline", "fill_between", "errorbar"),
        *("set_title", "set_xlabel", "set_ylabel", "set_xlim", "set_ylim", "xlim", "ylim"),
        *("xticks", "yticks", "set_xticks", "set_yticks", "savefig", "manual_seed"),
        *("set_seed", "makedirs", "mkdir", "rmtree", "copyfile", "copytree", "move"),
        *("unlink", "chdir", "sleep", "exists", "touch", "write_text", "write_bytes"),
        *("tolist", "toarray", "todense", "tobytes", "select_dtypes", "corrcoef", "quantile"),
        *("idxmax", "idxmin", "argmax", "argmin", "argsort", "cumsum", "cumprod", "diff"),
        *("shift", "rolling", "resample", "mode", "prod", "dot", "matmul", "allclose"),
        *("crosstab", "concat", "split", "strip", "lower", "upper", "startswith", "endswith"),
        "find",
    }
)
PURE_PREFIXES = ("to_", "save", "assert", "log_", "print", "show", "read_", "get_", "is", "has")
# Builtins that change an argument; every other builtin changes nothing.
MUTATING_BUILTINS = frozenset({"next", "setattr", "delattr", "exec", "eval"})
# Builtins whose result is a new value holding no part of their arguments.
FRESH_BUILTINS = frozenset(
    {
        *("len", "str", "int", "float", "bool", "complex", "repr", "ascii", "abs", "round"),
        *("hash", "id", "isinstance", "issubclass", "callable", "ord", "chr", "format", "sum"),
        *("range", "any", "all", "hex", "bin", "oct", "divmod", "pow", "input", "open", "print"),
        *("bytes", "type", "hasattr"),
    }
)
# Methods and functions whose result may be (a part of) their receiver or first argument.
VIEW_CALLS = frozenset(
    {
        *("get", "setdefault", "pop", "popitem", "popleft", "values", "items", "keys"),
        *("iterrows", "itertuples", "iteritems", "to_numpy", "reshape", "ravel", "view"),
        *("transpose", "squeeze", "swapaxes", "moveaxis", "expand_dims", "asarray"),
        *("asanyarray", "ascontiguousarray", "atleast_1d", "atleast_2d", "__getitem__"),
        *("__iter__", "__next__", "fit"),
    }
)
# Names IPython gives a notebook whose calls change nothing.
KNOWN_PURE_NAMES = frozenset({"display"})
COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def is_pure_call(name: str) -> bool:
    """A call of this name shows, saves, copies or queries: it changes no value it is given."""
    return name in PURE_CALLS or "plot" in name or name.startswith(PURE_PREFIXES)


@dataclass(frozen=True)
class Summary:
    """What calling a function or class defined in the notebook may change."""

    positional: tuple[str, ...] = ()  # parameters that take positional arguments, in order
    parameters: frozenset[str] = frozenset()  # every parameter name
    vararg: str | None = None
    kwarg: str | None = None
    mutated: tuple[str, ...] = ()  # parameters and notebook names changed in place, in order


@dataclass
class Context:
    """What scans in notebook order share: imported names and the notebook's own callables."""

    modules: set[str] = field(default_factory=set)  # bound by import: never passed on
    functions: dict[str, Definition] = field(default_factory=dict)
    summaries: dict[int, Summary] = field(default_factory=dict)  # by id of the definition

    def summary(self, name: str) -> Summary:
        """What calling ``name`` may change; a body is read the first time it is called."""
        node = self.functions[name]
        if id(node) not in self.summaries:
            self.summaries[id(node)] = Summary()  # a recursive call changes nothing more
            self.summaries[id(node)] = summarise(node, self)
        return self.summaries[id(node)]


@dataclass
class Names:
    """Names read before being bound (``reads``) and names bound or changed (``writes``).

    ``binds`` are the names bound (assigned, imported, defined, deleted), ``mutated`` the names
    whose earlier value may be changed in place; ``writes`` holds both, first-seen order.
    """

    reads: list[str] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    binds: list[str] = field(default_factory=list)
    mutated: list[str] = field(default_factory=list)

    def read(self, name: str, bound: set[str]) -> None:
        if name not in bound and name not in self.reads:
            self.reads.append(name)

    def write(self, name: str, bound: set[str]) -> None:
        bound.add(name)
        for found in (self.writes, self.binds):
            if name not in found:
                found.append(name)

    def mutate(self, name: str) -> None:
        """The value ``name`` held when this code started may be changed in place."""
        if name not in self.reads:  # not a value from outside (a comprehension's own name)
            return
        for found in (self.writes, self.mutated):
            if name not in found:
                found.append(name)


class _Scanner(ast.NodeVisitor):
    """Walks module-level statements in execution order; nested scopes contribute free names.

    ``aliases`` maps a name bound here to the outside values it may be (a part of), so changing
    it changes them.
    """

    def __init__(self, names: Names, bound: set[str], context: Context):
        self.names = names
        self.bound = bound
        self.context = context
        self.aliases: dict[str, Roots] = {}

    # -- aliases and in-place changes ---------------------------------------------------------
    def _roots(self, node: ast.AST | None) -> Roots:
        """Outside values that ``node``'s value may be, or hold, or be a part of (in order)."""
        if isinstance(node, ast.Name):
            own: Roots = {} if node.id in self.bound else {node.id: None}
            return {**own, **self.aliases.get(node.id, {})}
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred | ast.Await):
            return self._roots(node.value)
        if isinstance(node, ast.NamedExpr):
            return self._roots(node.value)
        if isinstance(node, ast.Call):
            return self._call_roots(node)
        parts: list[ast.AST | None] = []
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            parts = list(node.elts)
        elif isinstance(node, ast.Dict | ast.BoolOp):
            parts = list(node.values)
        elif isinstance(node, ast.IfExp):
            parts = [node.body, node.orelse]
        elif isinstance(node, COMPREHENSIONS):
            parts = [gen.iter for gen in node.generators]
        return self._all_roots(parts)

    def _all_roots(self, nodes: Iterable[ast.AST | None]) -> Roots:
        found: Roots = {}
        for node in nodes:
            found.update(self._roots(node))
        return found

    def _call_roots(self, call: ast.Call) -> Roots:
        """What a call's result may share: views return their source, unknown code anything."""
        func = call.func
        arguments = [*call.args, *(k.value for k in call.keywords)]
        if isinstance(func, ast.Attribute):
            if func.attr not in VIEW_CALLS:
                return {}  # library and method results are new values
            if self._is_namespace(func.value):  # np.asarray(a)
                return self._all_roots(arguments[:1])
            return self._all_roots([func.value, *arguments[1:]])  # d.get(k, default)
        if (
            isinstance(func, ast.Name)
            and func.id not in self.context.functions
            and (func.id in self.context.modules or func.id in FRESH_BUILTINS)
        ):
            return {}  # library results are new values
        return self._all_roots(arguments)

    def _mutate(self, node: ast.AST | None) -> None:
        """``node``'s value may be changed in place: so are the outside values it holds."""
        for name in self._roots(node):
            if name not in self.context.modules and name not in BUILTINS:
                self.names.mutate(name)

    def _alias(self, target: ast.AST, roots: Roots) -> None:
        """Bind the names in ``target`` as aliases of ``roots``; a container store adds them."""
        if isinstance(target, ast.Name):
            self.aliases[target.id] = dict(roots)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._alias(element, roots)
        elif isinstance(target, ast.Starred):
            self._alias(target.value, roots)
        elif isinstance(target, ast.Attribute | ast.Subscript):
            base = target.value
            while isinstance(base, ast.Attribute | ast.Subscript):
                base = base.value
            if isinstance(base, ast.Name) and roots:
                self.aliases[base.id] = {**self.aliases.get(base.id, {}), **roots}

    def _call_mutations(self, call: ast.Call, *, discarded: bool) -> None:
        """Apply the module docstring's rule to one call."""
        func = call.func
        arguments: list[ast.expr] = [*call.args, *(k.value for k in call.keywords)]
        changed: list[ast.expr] = []
        if isinstance(func, ast.Name):
            callee = func.id
            if callee in self.context.functions:
                self._summary_mutations(self.context.summary(callee), call)
            elif callee in self.context.modules:  # an imported function
                changed = arguments if discarded and not is_pure_call(callee) else []
            elif callee in BUILTINS and callee not in self.bound:
                changed = arguments[:1] if callee in MUTATING_BUILTINS else []
                changed = arguments if callee in ("exec", "eval") else changed
            elif callee not in KNOWN_PURE_NAMES:  # a value the analysis cannot see through
                changed = arguments
        elif isinstance(func, ast.Attribute):
            method = func.attr
            inplace = any(
                k.arg == "inplace" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                for k in call.keywords
            )
            if self._is_namespace(func.value):  # np.random.shuffle(x), sys.path.append(p)
                if discarded and method not in MUTATING_METHODS and not is_pure_call(method):
                    changed = arguments
            elif inplace or method in MUTATING_METHODS:
                changed = [func.value]
            elif discarded and not is_pure_call(method):
                changed = [func.value, *arguments]
        else:  # fns[0](x), make()(x): cannot tell
            changed = arguments
        for node in changed:
            self._mutate(node)

    def _is_namespace(self, node: ast.expr) -> bool:
        """``np.random`` or ``Helper``: a module or a notebook callable, never data."""
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name) and (
            node.id in self.context.modules or node.id in self.context.functions
        )

    def _summary_mutations(self, summary: Summary, call: ast.Call) -> None:
        """A notebook function changes the arguments its body changes, and notebook names."""
        for name in summary.mutated:
            if name not in summary.parameters:
                self._mutate(ast.Name(id=name, ctx=ast.Load()))
        changes_a_parameter = any(name in summary.parameters for name in summary.mutated)
        for index, arg in enumerate(call.args):
            if isinstance(arg, ast.Starred):
                parameter = summary.vararg if changes_a_parameter else None
                changed = changes_a_parameter
            else:
                positional = summary.positional
                parameter = positional[index] if index < len(positional) else summary.vararg
                changed = parameter in summary.mutated
            if changed:
                self._mutate(arg)
        for keyword in call.keywords:
            if keyword.arg is None:
                changed = changes_a_parameter
            elif keyword.arg in summary.parameters:
                changed = keyword.arg in summary.mutated
            else:
                changed = summary.kwarg in summary.mutated
            if changed:
                self._mutate(keyword.value)

    # -- plain names ------------------------------------------------------------------------
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            self.names.read(node.id, self.bound)
        else:
            self.names.write(node.id, self.bound)
            self.aliases.pop(node.id, None)

    def _store_through(self, node: ast.Attribute | ast.Subscript) -> None:
        """``a.b = v`` / ``a[k] = v`` / ``del a[k]`` read ``a`` and change it in place."""
        if isinstance(node, ast.Subscript):
            self.visit(node.slice)
        self.visit(node.value)
        self._mutate(node.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.ctx, ast.Load):
            self.visit(node.value)
        else:
            self._store_through(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.ctx, ast.Load):
            self.generic_visit(node)
        else:
            self._store_through(node)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        self._call_mutations(node, discarded=False)

    def visit_Expr(self, node: ast.Expr) -> None:
        call = node.value.value if isinstance(node.value, ast.Await) else node.value
        if isinstance(call, ast.Call):
            self.generic_visit(call)
            self._call_mutations(call, discarded=True)
        else:
            self.visit(node.value)

    # -- statements whose value runs before the target is bound ------------------------------
    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        roots = self._roots(node.value)
        for target in node.targets:
            self.visit(target)
            self._alias(target, roots)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            roots = self._roots(node.target)
            self.names.read(node.target.id, self.bound)
            self._mutate(node.target)  # lists, arrays and frames add in place
            self.visit(node.target)
            self._alias(node.target, roots | self._roots(node.value))
        else:
            self.visit(node.target)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            roots = self._roots(node.value)
            self.visit(node.target)
            self._alias(node.target, roots)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        roots = self._roots(node.value)
        self.visit(node.target)
        self._alias(node.target, roots)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        roots = self._roots(node.iter)
        self.visit(node.target)
        self._alias(node.target, roots)
        for stmt in (*node.body, *node.orelse):
            self.visit(stmt)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                roots = self._roots(item.context_expr)
                self.visit(item.optional_vars)
                self._alias(item.optional_vars, roots)
        for stmt in node.body:
            self.visit(stmt)

    visit_AsyncWith = visit_With

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name != "*":
                name = (alias.asname or alias.name).split(".")[0]
                self.names.write(name, self.bound)
                self.context.modules.add(name)

    visit_ImportFrom = visit_Import

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.type is not None:
            self.visit(node.type)
        if node.name:
            self.names.write(node.name, self.bound)
        for stmt in node.body:
            self.visit(stmt)

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        return

    visit_Nonlocal = visit_Global

    # -- nested scopes: only their free names matter here --------------------------------------
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for expr in (*node.decorator_list, *_defaults(node.args)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)
        self.aliases.pop(node.name, None)
        self.context.functions[node.name] = node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for expr in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)
        self.names.write(node.name, self.bound)
        self.aliases.pop(node.name, None)
        self.context.functions[node.name] = node

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for expr in _defaults(node.args):
            self.visit(expr)
        for name in free_names(node):
            self.names.read(name, self.bound)

    def _comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        self.visit(node.generators[0].iter)  # evaluated in the enclosing scope
        for name in free_names(node):
            self.names.read(name, self.bound)
        self._comprehension_mutations(node)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comprehension

    def _comprehension_mutations(self, node: ast.AST) -> None:
        """``[r.update(k=1) for r in rows]``: calls inside change what their names alias."""
        saved_bound, saved_aliases = set(self.bound), dict(self.aliases)
        for gen in node.generators:  # type: ignore[attr-defined]
            roots = self._roots(gen.iter)
            self._expr_mutations(gen.iter)
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    self.bound.add(target.id)
            self._alias(gen.target, roots)
            for condition in gen.ifs:
                self._expr_mutations(condition)
        for part in _comprehension_parts(node):
            self._expr_mutations(part)
        self.bound.clear()
        self.bound.update(saved_bound)
        self.aliases = saved_aliases

    def _expr_mutations(self, node: ast.AST) -> None:
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, COMPREHENSIONS):
            self._comprehension_mutations(node)
            return
        for child in ast.iter_child_nodes(node):
            self._expr_mutations(child)
        if isinstance(node, ast.Call):
            self._call_mutations(node, discarded=False)


def summarise(node: Definition, context: Context) -> Summary:
    """What calling ``node`` may change: scan its body (a class: its ``__init__``)."""
    function = node
    if isinstance(node, ast.ClassDef):
        inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        if not inits:
            return Summary()
        function = inits[-1]
    args = function.args  # type: ignore[union-attr]
    positional = tuple(a.arg for a in (*args.posonlyargs, *args.args))
    everything = [*positional, *(a.arg for a in args.kwonlyargs)]
    vararg = args.vararg.arg if args.vararg else None
    kwarg = args.kwarg.arg if args.kwarg else None
    inner = Names()
    scope = Context(set(context.modules), dict(context.functions), context.summaries)
    scanner = _Scanner(inner, set(), scope)
    for stmt in function.body:  # type: ignore[union-attr]
        scanner.visit(stmt)
    mutated = tuple(inner.mutated)
    if isinstance(node, ast.ClassDef) and positional:  # self is the new object
        mutated = tuple(name for name in mutated if name != positional[0])
        positional = positional[1:]
    names = {*everything, *(n for n in (vararg, kwarg) if n)}
    return Summary(positional, frozenset(names), vararg, kwarg, mutated)


def _defaults(args: ast.arguments) -> list[ast.expr]:
    return [d for d in (*args.defaults, *args.kw_defaults) if d is not None]


def free_names(node: ast.AST) -> list[str]:
    """Names a function, class, lambda or comprehension reads from its enclosing scope."""
    local: set[str] = set()
    loads: list[str] = []
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        args = node.args
        for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
            if arg is not None:
                local.add(arg.arg)
        body: Sequence[ast.AST] = node.body if isinstance(node.body, list) else [node.body]
    elif isinstance(node, ast.ClassDef):
        body = node.body
    else:  # comprehension: the first iterator belongs to the enclosing scope
        generators = node.generators  # type: ignore[attr-defined]
        body = [*_comprehension_parts(node), *generators[1:]]
        body = [*body, *generators[0].ifs]
        for gen in generators:
            _collect_stores(gen.target, local)
    declared_global: set[str] = set()
    for child in body:
        _collect(child, local, loads, declared_global)
    return [name for name in dict.fromkeys(loads) if name not in local or name in declared_global]


def _comprehension_parts(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.DictComp):
        return [node.key, node.value]
    return [node.elt]  # type: ignore[attr-defined]


def _collect_stores(target: ast.AST, local: set[str]) -> None:
    for sub in ast.walk(target):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            local.add(sub.id)


def _collect(node: ast.AST, local: set[str], loads: list[str], declared_global: set[str]) -> None:
    """Gather one scope's bindings and loads; nested scopes add only their free names."""
    if isinstance(node, ast.Global):
        declared_global.update(node.names)
        return
    if isinstance(node, ast.Name):
        (loads.append if isinstance(node.ctx, ast.Load) else local.add)(node.id)
        return
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        local.add(node.name)
        for expr in node.decorator_list:
            _collect(expr, local, loads, declared_global)
        if not isinstance(node, ast.ClassDef):
            for expr in _defaults(node.args):
                _collect(expr, local, loads, declared_global)
        loads.extend(free_names(node))
        return
    if isinstance(node, ast.Lambda | ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        if not isinstance(node, ast.Lambda):
            _collect(node.generators[0].iter, local, loads, declared_global)
        loads.extend(free_names(node))
        return
    if isinstance(node, ast.Import | ast.ImportFrom):
        local.update((a.asname or a.name).split(".")[0] for a in node.names)
        return
    if isinstance(node, ast.ExceptHandler) and node.name:
        local.add(node.name)
    for child in ast.iter_child_nodes(node):
        _collect(child, local, loads, declared_global)


def scan(
    statements: Iterable[ast.stmt],
    bound: set[str] | None = None,
    context: Context | None = None,
) -> Names:
    """Reads and writes of module-level ``statements`` run in order (``bound``: already set).

    ``context`` carries imports and notebook functions from code scanned before (notebook
    order); the scan adds the ones it finds.
    """
    names = Names()
    scanner = _Scanner(names, set() if bound is None else bound, context or Context())
    for stmt in statements:
        scanner.visit(stmt)
    return names


def topological_order(order: Sequence[str], depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """Stable topological sort: keeps notebook order wherever dependencies allow it."""
    position = {name: i for i, name in enumerate(order)}
    remaining = {name: set(depends_on.get(name, ())) for name in order}
    result: list[str] = []
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps]
        if not ready:
            raise CycleError(f"steps depend on each other in a cycle: {_cycle(remaining)}")
        first = min(ready, key=position.__getitem__)
        result.append(first)
        del remaining[first]
        for deps in remaining.values():
            deps.discard(first)
    return result


def _cycle(remaining: Mapping[str, set[str]]) -> str:
    """Name one cycle, e.g. ``a -> b -> a``, so the user knows which marker to change."""
    start = min(remaining)
    path = [start]
    while True:
        step = min(remaining[path[-1]])
        if step in path:
            loop = [*path[path.index(step) :], step]
            return " -> ".join(loop) + " (remove an after: marker or a data dependency)"
        path.append(step)
