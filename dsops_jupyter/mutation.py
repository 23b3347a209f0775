"""Which code may change a value in place: the rule, and the alias tracking a scan applies it with.

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
from abc import ABC, abstractmethod
from collections.abc import Iterable

from dsops_jupyter.scopes import (
    BUILTINS,
    Comprehension,
    Context,
    Definition,
    Names,
    Summary,
    comprehension_parts,
)

Roots = dict[str, None]  # an ordered set of names: scans give the same order every time

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


class MutationTracker(ABC):
    """The in-place half of a scan (dsops_jupyter.flow's scanner is the other): which outside
    values a name may alias, and which of them a call, a store or a comprehension changes.

    ``aliases`` maps a name bound here to the outside values it may be (a part of), so changing
    it changes them. A call of a notebook function changes what its body changes; reading that
    body takes the whole scan, which the scanner supplies as ``_summarise``.
    """

    def __init__(self, names: Names, bound: set[str], context: Context):
        self.names = names
        self.bound = bound
        self.context = context
        self.aliases: dict[str, Roots] = {}

    @abstractmethod
    def _summarise(self, node: Definition) -> Summary:
        """What calling the notebook's ``node`` may change, from a scan of its body."""

    def _summary(self, name: str) -> Summary:
        """What calling ``name`` may change; a body is read the first time it is called."""
        node = self.context.functions[name]
        summaries = self.context.summaries
        if id(node) not in summaries:
            summaries[id(node)] = Summary()  # a recursive call changes nothing more
            summaries[id(node)] = self._summarise(node)
        return summaries[id(node)]

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
                self._summary_mutations(self._summary(callee), call)
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

    def _comprehension_mutations(self, node: Comprehension) -> None:
        """``[r.update(k=1) for r in rows]``: calls inside change what their names alias."""
        saved_bound, saved_aliases = set(self.bound), dict(self.aliases)
        for gen in node.generators:
            roots = self._roots(gen.iter)
            self._expr_mutations(gen.iter)
            for target in ast.walk(gen.target):
                if isinstance(target, ast.Name):
                    self.bound.add(target.id)
            self._alias(gen.target, roots)
            for condition in gen.ifs:
                self._expr_mutations(condition)
        for part in comprehension_parts(node):
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
