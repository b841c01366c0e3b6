"""Turn SBML math (libsbml abstract syntax trees) into vectorised NumPy expressions.

Every symbol of a model is one value per virtual patient, an array of shape (n,), so an SBML
formula becomes one NumPy expression evaluated for the whole batch at once. The translation
is text: ``k1 * S / (Km + S)`` becomes ``(x_k1 * x_S) / (x_Km + x_S)``, where the caller
decides what each name stands for (a column of the state, a column of the parameter table, a
local variable holding an assignment rule's value). Function definitions are expanded in
place (their formal arguments replaced by the translated actual arguments), so every
expression refers to model symbols only and the argument of every logarithm can be
evaluated on its own when a run fails (:attr:`MathTranslator.log_sites`).

Numbers are emitted as ``np.float64`` literals so that ``1/0`` or ``(-8)**(1/3)`` follow IEEE
rules (inf, nan) as they do for arrays, instead of raising or turning complex.

What is not translated raises :class:`carcell.errors.ScenarioError` naming the construct and
where it appears: delays, ``rateOf``, the Avogadro constant, stochastic distributions and the
MathML constructs that SBML does not allow.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from carcell.errors import ScenarioError

#: one-argument MathML functions and the NumPy expression each becomes ({0} is the argument)
_UNARY: dict[str, str] = {
    "abs": "np.abs({0})", "exp": "np.exp({0})", "ln": "np.log({0})",
    "floor": "np.floor({0})", "ceiling": "np.ceil({0})", "factorial": "_factorial({0})",
    "sin": "np.sin({0})", "cos": "np.cos({0})", "tan": "np.tan({0})",
    "sec": "(1.0 / np.cos({0}))", "csc": "(1.0 / np.sin({0}))", "cot": "(1.0 / np.tan({0}))",
    "sinh": "np.sinh({0})", "cosh": "np.cosh({0})", "tanh": "np.tanh({0})",
    "sech": "(1.0 / np.cosh({0}))", "csch": "(1.0 / np.sinh({0}))", "coth": "(1.0 / np.tanh({0}))",
    "arcsin": "np.arcsin({0})", "arccos": "np.arccos({0})", "arctan": "np.arctan({0})",
    "arcsinh": "np.arcsinh({0})", "arccosh": "np.arccosh({0})", "arctanh": "np.arctanh({0})",
    "arcsec": "np.arccos(1.0 / {0})", "arccsc": "np.arcsin(1.0 / {0})", "arccot": "np.arctan(1.0 / {0})",
    "arcsech": "np.arccosh(1.0 / {0})", "arccsch": "np.arcsinh(1.0 / {0})",
    "arccoth": "np.arctanh(1.0 / {0})",
}

#: a formal argument of a function definition: (NumPy text, model symbols, SBML display text)
Bound = dict[str, tuple[str, frozenset[str], str]]
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

_RELATIONAL: dict[str, str] = {"eq": "==", "neq": "!=", "gt": ">", "lt": "<", "geq": ">=", "leq": "<="}


@dataclass(frozen=True)
class LogSite:
    """One logarithm in the model: where it is and its argument, for run-time diagnosis.

    Attributes
    ----------
    where : str
        The element holding it, e.g. ``reaction 'Tumor_cell_growth'``.
    function : str
        ``ln``, ``log10``, ``log`` (other base) or ``root`` (a square root of a negative
        number is undefined too).
    argument : str
        The translated NumPy expression of the argument.
    text : str
        The argument as SBML formula text (after expanding function definitions' arguments
        as written at the call), for messages.
    symbols : tuple of str
        Python names (as the translator's ``resolve`` gives them) of the model symbols the
        argument depends on.
    guarded : bool
        The logarithm sits inside a piecewise, which may select another branch whenever the
        argument is not positive; it is then not checked during integration.
    """

    where: str
    function: str
    argument: str
    text: str
    symbols: tuple[str, ...]
    guarded: bool = False


@dataclass
class MathTranslator:
    """Translate libsbml ASTs to NumPy expression text.

    Parameters
    ----------
    resolve : callable
        ``resolve(sbml_id) -> str``: the Python expression that stands for a model symbol.
        It raises :class:`ScenarioError` for ids that may not appear in math.
    functions : dict
        Function definitions by id: ``(argument ids, body AST)``.
    libsbml : module
        The imported ``libsbml`` module (optional dependency, passed in by the loader).
    """

    resolve: Callable[[str], str]
    functions: dict[str, tuple[list[str], Any]]
    libsbml: Any
    log_sites: list[LogSite] = field(default_factory=list)
    #: ``(expression, Python names)`` of every ``c`` compared with time (``time <= c`` ...):
    #: where a formula may jump, so integration can stop there
    time_switches: list[tuple[str, frozenset[str]]] = field(default_factory=list)
    _piecewise_depth: int = 0

    def translate(self, ast: Any, where: str) -> tuple[str, frozenset[str]]:
        """The NumPy expression of ``ast`` and the Python names (as ``resolve`` gives them)
        of the model symbols it depends on.

        ``where`` names the element (for error messages and log sites), e.g.
        ``"assignment rule for 'F_cure'"``.
        """
        if ast is None:
            raise ScenarioError(f"{where}: has no math; give it a formula")
        symbols: set[str] = set()
        text = self._node(ast, where, {}, symbols)
        return text, frozenset(symbols)

    # --- nodes ------------------------------------------------------------------------
    def _node(self, node: Any, where: str, bound: Bound,
              symbols: set[str]) -> str:
        L = self.libsbml
        t = node.getType()
        kids = [node.getChild(i) for i in range(node.getNumChildren())]

        def sub(k: Any) -> str:
            return self._node(k, where, bound, symbols)

        if t in (L.AST_INTEGER, L.AST_REAL, L.AST_REAL_E, L.AST_RATIONAL):
            return _number(node.getValue())
        if t == L.AST_NAME:
            name = node.getName()
            if name in bound:
                text, syms, _ = bound[name]
                symbols.update(syms)
                return text
            resolved = self.resolve(name)
            symbols.add(resolved)
            return resolved
        if t == L.AST_NAME_TIME:
            return "t"
        if t == L.AST_CONSTANT_E:
            return "np.float64(np.e)"
        if t == L.AST_CONSTANT_PI:
            return "np.float64(np.pi)"
        if t == L.AST_CONSTANT_TRUE:
            return "True"
        if t == L.AST_CONSTANT_FALSE:
            return "False"
        if t == L.AST_PLUS:
            return "(" + " + ".join(sub(k) for k in kids) + ")" if kids else _number(0.0)
        if t == L.AST_TIMES:
            return "(" + " * ".join(sub(k) for k in kids) + ")" if kids else _number(1.0)
        if t == L.AST_MINUS:
            if len(kids) == 1:
                return f"(-{sub(kids[0])})"
            return f"({sub(kids[0])} - {sub(kids[1])})"
        if t == L.AST_DIVIDE:
            return f"np.divide({sub(kids[0])}, {sub(kids[1])})"
        if t in (L.AST_POWER, L.AST_FUNCTION_POWER):
            return f"np.power({sub(kids[0])}, {sub(kids[1])})"
        if t == L.AST_FUNCTION_ROOT:
            degree, arg = kids
            self._log_site(where, "root", arg, sub(arg), bound)
            return f"np.power({sub(arg)}, np.divide(1.0, {sub(degree)}))"
        if t == L.AST_FUNCTION_LN:
            self._log_site(where, "ln", kids[0], sub(kids[0]), bound)
            return f"np.log({sub(kids[0])})"
        if t == L.AST_FUNCTION_LOG:
            base, arg = (kids[0], kids[1]) if len(kids) == 2 else (None, kids[0])
            base_text = _number(10.0) if base is None else sub(base)
            is10 = base is None or (base.isNumber() and base.getValue() == 10.0)
            self._log_site(where, "log10" if is10 else "log", arg, sub(arg), bound)
            if is10:
                return f"np.log10({sub(arg)})"
            return f"np.divide(np.log({sub(arg)}), np.log({base_text}))"
        if t == L.AST_FUNCTION_PIECEWISE:
            self._piecewise_depth += 1
            try:
                return self._piecewise([sub(k) for k in kids])
            finally:
                self._piecewise_depth -= 1
        if t in (L.AST_LOGICAL_AND, L.AST_LOGICAL_OR, L.AST_LOGICAL_XOR):
            op = {L.AST_LOGICAL_AND: "np.logical_and", L.AST_LOGICAL_OR: "np.logical_or",
                  L.AST_LOGICAL_XOR: "np.logical_xor"}[t]
            if not kids:
                return "True" if t == L.AST_LOGICAL_AND else "False"
            out = sub(kids[0])
            for k in kids[1:]:
                out = f"{op}({out}, {sub(k)})"
            return out
        if t == L.AST_LOGICAL_NOT:
            return f"np.logical_not({sub(kids[0])})"
        if t == L.AST_LOGICAL_IMPLIES:
            return f"np.logical_or(np.logical_not({sub(kids[0])}), {sub(kids[1])})"
        if t in (L.AST_RELATIONAL_EQ, L.AST_RELATIONAL_NEQ, L.AST_RELATIONAL_GT,
                 L.AST_RELATIONAL_LT, L.AST_RELATIONAL_GEQ, L.AST_RELATIONAL_LEQ):
            op = _RELATIONAL[node.getName()]
            parts = [sub(k) for k in kids]
            self._time_switch(kids, where, bound)
            pairs = [f"({a} {op} {b})" for a, b in zip(parts, parts[1:])]
            out = pairs[0]
            for pr in pairs[1:]:
                out = f"np.logical_and({out}, {pr})"
            return out
        if t in (L.AST_FUNCTION_MIN, L.AST_FUNCTION_MAX):
            op = "np.minimum" if t == L.AST_FUNCTION_MIN else "np.maximum"
            out = sub(kids[0])
            for k in kids[1:]:
                out = f"{op}({out}, {sub(k)})"
            return out
        if t == L.AST_FUNCTION_REM:
            return f"np.fmod({sub(kids[0])}, {sub(kids[1])})"
        if t == L.AST_FUNCTION_QUOTIENT:
            return f"np.trunc(np.divide({sub(kids[0])}, {sub(kids[1])}))"
        if t == L.AST_FUNCTION:
            return self._call(node, kids, where, bound, symbols)
        name = (node.getName() or "").lower()
        if name in _UNARY and len(kids) == 1:
            return _UNARY[name].format(sub(kids[0]))
        if t == L.AST_FUNCTION_DELAY:
            raise ScenarioError(f"{where}: uses delay(), which carcell does not support; "
                                "rewrite the delay as a chain of compartments (linear chain trick)")
        if t == L.AST_FUNCTION_RATE_OF:
            raise ScenarioError(f"{where}: uses rateOf(), which carcell does not support; "
                                "write the rate out as a formula")
        if t == L.AST_NAME_AVOGADRO:
            raise ScenarioError(f"{where}: uses the avogadro csymbol, which carcell does not support; "
                                "replace it by a parameter holding the value you intend")
        raise ScenarioError(f"{where}: the MathML construct "
                            f"'{node.getName() or self.libsbml.formulaToL3String(node)}' is not supported "
                            "by carcell's SBML import; rewrite it with arithmetic, piecewise or functions")

    def _call(self, node: Any, kids: list[Any], where: str,
              bound: Bound, symbols: set[str]) -> str:
        fid = node.getName()
        if fid not in self.functions:
            raise ScenarioError(f"{where}: calls '{fid}', which is not a function definition of the model")
        args, body = self.functions[fid]
        if len(args) != len(kids):
            raise ScenarioError(f"{where}: calls '{fid}' with {len(kids)} arguments; "
                                f"its definition takes {len(args)} ({', '.join(args)})")
        inner: Bound = {}
        for a, k in zip(args, kids):
            s: set[str] = set()
            text = self._node(k, where, bound, s)
            symbols.update(s)
            inner[a] = (f"({text})", frozenset(s), self._display(k, bound))
        return "(" + self._node(body, f"{where} (in function '{fid}')", inner, symbols) + ")"

    def _piecewise(self, parts: list[str]) -> str:
        """``piecewise(v1, c1, v2, c2, ..., otherwise)``: the first true condition wins."""
        otherwise = parts[-1] if len(parts) % 2 == 1 else "np.float64(np.nan)"
        pairs = list(zip(parts[0:-1:2], parts[1::2])) if len(parts) % 2 == 1 else \
            list(zip(parts[0::2], parts[1::2]))
        out = otherwise
        for value, cond in reversed(pairs):
            out = f"np.where({cond}, {value}, {out})"
        return out

    def _time_switch(self, kids: list[Any], where: str, bound: Bound) -> None:
        if len(kids) != 2:
            return
        times = [k.getType() == self.libsbml.AST_NAME_TIME for k in kids]
        if times.count(True) != 1:
            return
        other = kids[times.index(False)]
        syms: set[str] = set()
        text = self._node(other, where, bound, syms)
        entry = (text, frozenset(syms))
        if entry not in self.time_switches:
            self.time_switches.append(entry)

    def _log_site(self, where: str, function: str, arg: Any, arg_text: str, bound: Bound) -> None:
        syms: set[str] = set()
        self._collect(arg, bound, syms)
        site = LogSite(where, function, arg_text, self._display(arg, bound), tuple(sorted(syms)),
                       self._piecewise_depth > 0)
        if site not in self.log_sites:
            self.log_sites.append(site)

    def _collect(self, node: Any, bound: Bound, out: set[str]) -> None:
        if node.getType() == self.libsbml.AST_NAME:
            name = node.getName()
            out.update(bound[name][1] if name in bound else {self.resolve(name)})
        for i in range(node.getNumChildren()):
            self._collect(node.getChild(i), bound, out)

    def _display(self, node: Any, bound: Bound) -> str:
        """SBML formula text of ``node`` with a function's formal arguments replaced by the
        actual ones (one pass, so an actual argument is never substituted again)."""
        text = self.libsbml.formulaToL3String(node)
        if not bound:
            return text

        def swap(m: re.Match) -> str:
            name = m.group(0)
            if name not in bound:
                return name
            shown = bound[name][2]
            return shown if _IDENT.fullmatch(shown) else f"({shown})"

        return _IDENT.sub(swap, text)


def _number(value: float) -> str:
    v = float(value)
    if v != v:
        return "np.float64(np.nan)"
    if v in (float("inf"), float("-inf")):
        return "np.float64(np.inf)" if v > 0 else "np.float64(-np.inf)"
    return f"np.float64({v!r})"
