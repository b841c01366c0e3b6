"""Compile an :class:`~carcell.interop.sbml_import.SbmlModel` into batched NumPy functions.

The translated formulas are assembled into the source of a few plain Python functions
(right-hand side, observed species, initial assignments, event times and assignments) and
compiled once per run. Each function evaluates one NumPy expression per formula for the
whole batch of virtual patients, so the cost per call does not grow with the number of
nodes walked in a syntax tree. The generated source is kept on the result
(:attr:`CompiledSbml.source`) so that what is integrated can be read.

Signatures follow :mod:`carcell.solve.dopri5`: ``rhs(t, y, p)`` with ``t`` shape (n,), ``y``
shape (n, n_states) and ``p`` a :class:`carcell.model.states.Params` whose ``values`` are
the parameter table, shape (n, n_columns).

A *floor* (``floors={species: value}``) is a documented change of the model for species that
fall towards zero inside a logarithm: formulas see ``max(species, floor)`` and the species
cannot decrease while at or below its floor.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import gamma

from carcell.errors import ScenarioError, SolverError
from carcell.model.states import Params
from carcell.interop.sbml_import import SbmlModel, _toposort

_FLUX = re.compile(r"\bv(\d+)\b")


class ModelDomainError(SolverError):
    """A formula of an SBML model left its domain (log or root of a non-positive value)."""


@dataclass(frozen=True)
class DomainHit:
    """The first right-hand-side evaluation in which a checked logarithm met an argument <= 0:
    time (model units), index into ``model.log_sites``, the argument, and that patient's state
    and parameter row."""

    t: float
    site: int
    value: float
    y: np.ndarray
    params: np.ndarray


@dataclass
class CompiledSbml:
    """Batched functions of one model (with its floors).

    Attributes
    ----------
    rhs : callable ``rhs(t, y, p) -> dy``, shape (n, n_states)
    observe : callable ``observe(t, y, p) -> values``, shape (n, n_species): every species
        (integrated, fixed or set by a rule) in document order.
    initialise : callable ``initialise(t, table) -> None``: evaluates the initial assignments
        per patient, writing their targets' columns of ``table`` in place.
    log_arguments : callable ``(t, y, p) -> list of arrays``, one per
        :attr:`SbmlModel.log_sites`.
    event_times : callable ``(table) -> times``, shape (n, n_events), model time units.
    switch_times : callable ``(table) -> times``, shape (n, n_switches): fixed times at which
        a formula may jump (``time <= c`` in a piecewise), where integration stops.
    event_assignments : list of callables ``(t, y, p) -> list of arrays``, one per event.
    state_index, column_index : dict
        Position of each integrated SBML id in ``y`` and of each column in the table.
    floors : ndarray, shape (n_states,)
        ``-inf`` where a state has no floor.
    source : str
        The generated Python source.
    domain_hits : list of DomainHit
        Filled by ``rhs`` when a logarithm outside any piecewise, whose argument changes
        during the run, meets a value <= 0 (even at a trial stage the solver then rejects);
        see :func:`domain_error`.
    """

    rhs: Callable
    observe: Callable
    initialise: Callable
    log_arguments: Callable
    event_times: Callable
    switch_times: Callable
    event_assignments: list[Callable]
    state_index: dict[str, int]
    column_index: dict[str, int]
    floors: np.ndarray
    source: str
    domain_hits: list[DomainHit]


class _Writer:
    def __init__(self, model: SbmlModel, floors: dict[str, float]) -> None:
        self.m = model
        self.state_index = {s: i for i, s in enumerate(model.states)}
        self.column_index = {c: j for j, c in enumerate(model.columns)}
        self.col_of_py = {model.column_python[c]: j for j, c in enumerate(model.columns)}
        self.state_of_py = {f"x_{s}": i for i, s in enumerate(model.states)}
        self.rule_of_py = {f"x_{r}": r for r in model.rules}
        self.floors = floors
        self.lines: list[str] = []
        dynamic = set(self.state_of_py) | set(self.rule_of_py)
        self.checked = [k for k, site in enumerate(model.log_sites)
                        if not site.guarded and dynamic & set(self.closure(set(site.symbols)))]

    def emit(self, line: str, depth: int = 2) -> None:
        self.lines.append("    " * depth + line)

    def closure(self, names: set[str]) -> set[str]:
        """``names`` plus every name the assignment rules among them need, recursively."""
        need = set(names)
        todo = [n for n in need if n in self.rule_of_py]
        while todo:
            for s in self.m.rules[self.rule_of_py[todo.pop()]][1]:
                if s not in need:
                    need.add(s)
                    if s in self.rule_of_py:
                        todo.append(s)
        return need

    def bind(self, names: set[str], *, dynamic: bool = True) -> None:
        """Bind every Python name used (states from ``y``, columns from the table, rules)."""
        need = self.closure(names)
        for py in sorted(need):
            if dynamic and py in self.state_of_py:
                i = self.state_of_py[py]
                sid = self.m.states[i]
                if sid in self.floors:
                    self.emit(f"{py} = np.maximum(y[:, {i}], np.float64({self.floors[sid]!r}))")
                else:
                    self.emit(f"{py} = y[:, {i}]")
            elif py in self.col_of_py:
                self.emit(f"{py} = tab[:, {self.col_of_py[py]}]")
            elif py not in self.rule_of_py and py != "t":
                raise ScenarioError(f"{self.m.path}: '{self.m.sbml_name(py)}' is used but has no value "
                                    "(no rule, state or parameter); define it")
        for r in self.m.rules:
            if f"x_{r}" in need:
                self.emit(f"x_{r} = {self.m.rules[r][0]}")

    def header(self, signature: str) -> None:
        self.lines.append(f"def {signature}:")
        self.emit("n = t.shape[0]", 1)
        self.emit("with np.errstate(all='ignore'):", 1)

    # --- functions --------------------------------------------------------------------
    def rhs(self) -> None:
        m = self.m
        fluxes = sorted({int(k) for r in m.state_rates for k in _FLUX.findall(r)})
        names = set(m.rate_symbols) | {s for k in fluxes for s in m.reactions[k][2]}
        names |= {s for k in self.checked for s in m.log_sites[k].symbols}
        self.header("rhs(t, y, p)")
        self.emit("tab = p.values")
        self.bind(names)
        for k in self.checked:
            self.emit(f"_a = {m.log_sites[k].argument}")
            self.emit(f"if not np.all(_a > 0.0): _domain(t, {k}, _a, y, tab)")
        for k in fluxes:
            self.emit(f"v{k} = {m.reactions[k][1]}")
        self.emit("dy = np.empty_like(y)")
        for i, expr in enumerate(m.state_rates):
            self.emit(f"dy[:, {i}] = {expr}")
            sid = m.states[i]
            if sid in self.floors:
                f = f"np.float64({self.floors[sid]!r})"
                self.emit(f"dy[:, {i}] = np.where((y[:, {i}] <= {f}) & (dy[:, {i}] < 0.0), 0.0, dy[:, {i}])")
        self.emit("return dy")

    def observe(self) -> None:
        m = self.m
        names = {f"x_{s.id}" for s in m.species}
        self.header("observe(t, y, p)")
        self.emit("tab = p.values")
        self.bind(names)
        cols = ", ".join(f"np.broadcast_to(x_{s.id}, (n,))" for s in m.species)
        self.emit(f"return np.column_stack([{cols}]) if {len(m.species)} else np.zeros((n, 0))")

    def initialise(self) -> None:
        m = self.m
        nodes = {**{k: v for k, v in m.initial_assignments.items()}, **{k: v for k, v in m.rules.items()}}
        deps = {k: frozenset(s[2:] for s in v[1] if s.startswith("x_")) for k, v in nodes.items()}
        order = _toposort(deps, "initial assignments and assignment rules", m.path)
        names = {s for v in nodes.values() for s in v[1]}
        self.lines.append("def initialise(t, tab):")
        self.emit("n = t.shape[0]", 1)
        self.emit("with np.errstate(all='ignore'):", 1)
        # bind table columns only; rules are evaluated below in the combined order
        saved, self.rule_of_py = self.rule_of_py, {}
        self.bind({s for s in names if s in self.col_of_py}, dynamic=False)
        self.rule_of_py = saved
        for k in order:
            self.emit(f"x_{k} = {nodes[k][0]}")
            if k in m.initial_assignments:
                self.emit(f"tab[:, {self.column_index[k]}] = x_{k}")
        self.emit("return None")

    def log_arguments(self) -> None:
        m = self.m
        self.header("log_arguments(t, y, p)")
        self.emit("tab = p.values")
        self.bind({s for site in m.log_sites for s in site.symbols})
        args = ", ".join(f"np.broadcast_to({site.argument}, (n,))" for site in m.log_sites)
        self.emit(f"return [{args}]")

    def event_functions(self) -> None:
        m = self.m
        self.lines.append("def event_times(tab):")
        self.emit("n = tab.shape[0]", 1)
        self.emit("with np.errstate(all='ignore'):", 1)
        self.bind({s for e in m.events for s in e.time_symbols}, dynamic=False)
        cols = ", ".join(f"np.broadcast_to({e.time_expr}, (n,))" for e in m.events)
        self.emit(f"return np.column_stack([{cols}]) if {len(m.events)} else np.zeros((n, 0))")
        self.lines.append("def switch_times(tab):")
        self.emit("n = tab.shape[0]", 1)
        self.emit("with np.errstate(all='ignore'):", 1)
        self.bind({s for sw in m.time_switches for s in sw[1]}, dynamic=False)
        cols = ", ".join(f"np.broadcast_to({expr}, (n,))" for expr, _ in m.time_switches)
        self.emit(f"return np.column_stack([{cols}]) if {len(m.time_switches)} else np.zeros((n, 0))")
        for k, e in enumerate(m.events):
            self.header(f"event_{k}(t, y, p)")
            self.emit("tab = p.values")
            self.bind(set(e.symbols))
            vals = ", ".join(f"np.array(np.broadcast_to({expr}, (n,)))" for _, expr in e.assignments)
            self.emit(f"return [{vals}]")


def compile_model(model: SbmlModel, floors: dict[str, float] | None = None) -> CompiledSbml:
    """Compile ``model`` (with optional floors on integrated species) into batched functions.

    Raises
    ------
    ScenarioError
        A floor names something that is not an integrated species, or is not a finite number.
    """
    floors = dict(floors or {})
    for sid, value in floors.items():
        if sid not in model.states:
            known = ", ".join(s for s in model.states)
            raise ScenarioError(f"floor {sid}={value}: '{sid}' is not a species integrated by {model.path.name}; "
                                f"floors apply to: {known}")
        if not np.isfinite(value):
            raise ScenarioError(f"floor {sid}={value}: give a finite number, e.g. {sid}=1e-9")
    w = _Writer(model, floors)
    w.rhs()
    w.observe()
    w.initialise()
    w.log_arguments()
    w.event_functions()
    source = "\n".join(w.lines) + "\n"
    hits: list[DomainHit] = []

    def record(t: np.ndarray, k: int, arg: np.ndarray, y: np.ndarray, tab: np.ndarray) -> None:
        if not hits:
            arg = np.broadcast_to(arg, t.shape)
            i = int(np.flatnonzero(~(arg > 0.0))[0])
            hits.append(DomainHit(float(t[i]), k, float(arg[i]), y[i].copy(), tab[i].copy()))

    namespace: dict = {"np": np, "_domain": record,
                       "_factorial": lambda x: gamma(np.asarray(x, dtype=float) + 1.0)}
    exec(compile(source, f"<sbml {model.model_id}>", "exec"), namespace)  # noqa: S102 - our own generated source
    floor_arr = np.full(len(model.states), -np.inf)
    for sid, value in floors.items():
        floor_arr[w.state_index[sid]] = value
    return CompiledSbml(
        rhs=namespace["rhs"], observe=namespace["observe"], initialise=namespace["initialise"],
        log_arguments=namespace["log_arguments"], event_times=namespace["event_times"],
        switch_times=namespace["switch_times"],
        event_assignments=[namespace[f"event_{k}"] for k in range(len(model.events))],
        state_index=w.state_index, column_index=w.column_index, floors=floor_arr, source=source,
        domain_hits=hits,
    )


def domain_error(model: SbmlModel, hit: DomainHit, patient: int) -> ModelDomainError:
    """The one-line error for a logarithm that met a non-positive argument: what, which
    species, when, and the fix (a floor on the species that falls to zero)."""
    site = model.log_sites[hit.site]
    species = [model.sbml_name(s) for s in site.symbols if model.sbml_name(s) in model.states]
    days = model.days_per_time_unit
    value = "a value that is not a number" if np.isnan(hit.value) else f"{hit.value:.3g}"
    where = (f"{model.path.name}: {site.function}({site.text}) in {site.where} met {value} (it must be > 0) "
             f"at t = {hit.t * days:.4g} day (model time {hit.t:.4g} {model.time_unit}; patient {patient})")
    if species:
        sid = species[0]
        shown = ", ".join(f"{s} = {hit.y[model.states.index(s)]:.3g}" for s in species)
        return ModelDomainError(
            f"{where}, where {shown}: {sid} falls towards zero faster than the solver can follow and the "
            f"model is undefined at or below it; give {sid} a floor, e.g. floors={{'{sid}': 1e-9}} "
            f"(CLI: --floor {sid}=1e-9), or change the model so that the argument stays positive")
    return ModelDomainError(f"{where}; change the model (or its parameters) so that the argument stays positive")


def segment_rhs(rhs: Callable, a: float, b: float) -> Callable:
    """``rhs`` seen from inside the open interval (a, b): time is moved at most one ulp off
    the ends, so at a switch ``time <= c`` the interval before ``c`` sees the left branch and
    the one after it the right branch, including the stages evaluated at the ends."""
    lo, hi = np.nextafter(a, np.inf), np.nextafter(b, -np.inf)
    if not lo < hi:
        return rhs

    def inside(t: np.ndarray, y: np.ndarray, p: Params) -> np.ndarray:
        return rhs(np.clip(t, lo, hi), y, p)

    return inside


def apply_events(model: SbmlModel, c: CompiledSbml, t: float, due: np.ndarray, y: np.ndarray,
                  p: Params) -> np.ndarray:
    """Apply, in document order, the events due at ``t`` (``due`` shape (n, n_events), bool).
    Returns the patients touched."""
    touched = np.zeros(y.shape[0], dtype=bool)
    for k, event in enumerate(model.events):
        idx = np.flatnonzero(due[:, k])
        if idx.size == 0:
            continue
        new = c.event_assignments[k](np.full(idx.size, t), y[idx], p.take(idx))
        for (target, _), value in zip(event.assignments, new):
            if target in c.state_index:
                y[idx, c.state_index[target]] = value
            else:
                p.values[idx, c.column_index[target]] = value
        touched[idx] = True
    return np.flatnonzero(touched)


def check_start(model: SbmlModel, c: CompiledSbml, t0: float, y: np.ndarray, p: Params) -> None:
    """Every logarithm must have a positive argument at the start (any patient)."""
    for k, arg in enumerate(c.log_arguments(np.full(y.shape[0], t0), y, p)):
        bad = np.flatnonzero(~(arg > 0.0))
        if bad.size and not model.log_sites[k].guarded:
            i = int(bad[0])
            c.domain_hits.append(DomainHit(t0, k, float(arg[i]), y[i].copy(), p.values[i].copy()))
            raise domain_error(model, c.domain_hits[0], i)
