"""Read an SBML model into a plain description that carcell can compile and integrate.

:func:`load_sbml` reads a file with python-libsbml, rejects what carcell cannot simulate
faithfully (with one line naming the element and what to do instead), and translates every
formula into a vectorised NumPy expression (:mod:`carcell.interop.sbml_math`). The result,
:class:`SbmlModel`, is plain data: symbol tables, expression text, events and units.

How SBML maps onto carcell's batched solver:

* **State**: every species that is not ``constant`` and not set by an assignment rule, and
  every parameter with a rate rule. A species' value is its concentration (amount divided
  by the compartment size) unless it has ``hasOnlySubstanceUnits``, as in libRoadRunner's
  ``[S]`` output. Reactions change a concentration at ``sum(stoichiometry * rate) / size``.
* **Parameter table**: one column per symbol that is fixed between events: global
  parameters, compartment sizes, constant species, the initial value of every species
  (column named after the species), and each kinetic law's local parameters
  (``reaction.parameter``). Each virtual patient is one row, so variability is a draw per
  column; initial assignments are evaluated per patient after the draw.
* **Assignment rules** are evaluated in dependency order wherever a formula needs them.
* **Events** whose trigger is ``time >= c`` (or ``>``; ``c`` a formula of fixed symbols) are
  applied exactly at ``c``: integration stops there, the assignments *set* their targets,
  and integration restarts.

Time runs in the model's own unit (read from its unit definitions); carcell reports days.

References
----------
Hucka M. et al. (2019) The Systems Biology Markup Language (SBML): Language Specification
for Level 3 Version 2 Core. J Integr Bioinform 16(2). doi:10.1515/jib-2019-0021
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carcell.errors import CarcellError, ScenarioError
from carcell.interop.sbml_math import LogSite, MathTranslator

SECONDS_PER_DAY = 86400.0

#: time units a user may name when a file does not declare one (``time_unit=``), in seconds
TIME_UNITS: dict[str, float] = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": SECONDS_PER_DAY,
                                "week": 7 * SECONDS_PER_DAY}


@dataclass(frozen=True)
class SbmlSpecies:
    """One species as carcell reports it.

    ``is_amount`` is SBML's ``hasOnlySubstanceUnits``: the value is an amount, otherwise a
    concentration (amount per compartment size). ``units`` describes the value's unit from
    the file's unit definitions, e.g. ``item/(1e-06 litre)``.
    """

    id: str
    name: str
    compartment: str
    is_amount: bool
    boundary: bool
    constant: bool
    units: str


@dataclass(frozen=True)
class SbmlEvent:
    """An event with a time trigger ``time >= c``.

    ``time_expr`` is the NumPy expression of ``c`` over the parameter table; ``assignments``
    are ``(target SBML id, NumPy expression)`` evaluated with the values just before the
    event and then all set at once.
    """

    id: str
    trigger: str
    time_expr: str
    time_symbols: frozenset[str]
    fires_at_start: bool
    assignments: tuple[tuple[str, str], ...]
    symbols: frozenset[str]


@dataclass
class SbmlModel:
    """An SBML model translated for carcell (see the module docstring for the mapping).

    Python names in the expressions: ``x_<id>`` for a model symbol, ``lp<k>_<id>`` for a
    local parameter of reaction number ``k``, ``t`` for time (model units).
    """

    path: Path
    sha256: str
    model_id: str
    name: str
    level: int
    version: int
    time_unit_seconds: float
    time_unit: str
    species: tuple[SbmlSpecies, ...]
    #: parameter table: column names (SBML ids; ``reaction.parameter`` for local ones),
    #: the values written in the file, what each column is, and the Python name of each
    columns: tuple[str, ...]
    defaults: np.ndarray
    column_kinds: dict[str, str]
    column_python: dict[str, str]
    #: integrated symbols (SBML ids), their table column of initial values, d/dt expressions
    states: tuple[str, ...]
    state_rates: tuple[str, ...]
    #: assignment rules: target SBML id -> (expression, Python names it uses)
    rules: dict[str, tuple[str, frozenset[str]]]
    #: initial assignments: target SBML id -> (expression, Python names it uses)
    initial_assignments: dict[str, tuple[str, frozenset[str]]]
    reactions: tuple[tuple[str, str, frozenset[str]], ...]
    events: tuple[SbmlEvent, ...]
    log_sites: tuple[LogSite, ...]
    rate_symbols: frozenset[str]
    #: SBML text of every assignment and rate rule, for display
    rule_text: dict[str, str] = field(default_factory=dict)
    #: ``(expression, Python names)`` of fixed times where a formula switches (``time <= c``)
    time_switches: tuple[tuple[str, frozenset[str]], ...] = ()
    notes: list[str] = field(default_factory=list)

    @property
    def days_per_time_unit(self) -> float:
        """Days in one unit of model time (1/24 for a model in hours)."""
        return self.time_unit_seconds / SECONDS_PER_DAY

    @property
    def species_ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.species)

    def python_name(self, sbml_id: str) -> str:
        return self.column_python.get(sbml_id, f"x_{sbml_id}")

    def sbml_name(self, python_name: str) -> str:
        """The SBML id (or ``reaction.parameter``) behind a Python name of the expressions."""
        for col, py in self.column_python.items():
            if py == python_name:
                return col
        return python_name[2:] if python_name.startswith("x_") else python_name


def _libsbml() -> Any:
    try:
        import libsbml
    except ImportError:  # pragma: no cover - the sbml extra is part of the test extras
        raise CarcellError("SBML import needs python-libsbml; install it with: pip install 'carcell[sbml]'") from None
    return libsbml


def _read_document(path: Path, L: Any) -> Any:
    if not path.is_file():
        raise ScenarioError(f"{path}: no such file; give the path of an SBML (.xml) model")
    doc = L.readSBMLFromFile(str(path))
    fatal = [doc.getError(i) for i in range(doc.getNumErrors())
             if doc.getError(i).getSeverity() >= L.LIBSBML_SEV_ERROR]
    if fatal:
        first = " ".join(fatal[0].getMessage().split())
        raise ScenarioError(f"{path}: not a valid SBML file ({len(fatal)} libsbml error(s); first, line "
                            f"{fatal[0].getLine()}: {first}); check that it is SBML exported by a modelling tool")
    if doc.getModel() is None:
        raise ScenarioError(f"{path}: the SBML document holds no <model>; give a file with a model")
    for i in range(doc.getNumPlugins() if doc.getLevel() >= 3 else 0):
        prefix = doc.getPlugin(i).getPackageName()
        if doc.getPackageRequired(prefix):
            raise ScenarioError(f"{path}: uses the SBML package '{prefix}', which changes the model's meaning "
                                "and is not supported; flatten it first (e.g. libsbml's CompFlatteningConverter)")
    return doc


def _unit_text(model: Any, unit_id: str, default: str, L: Any) -> str:
    """A unit id written out from its definition, e.g. ``1e-06 litre`` or ``item``."""
    uid = unit_id or default
    ud = model.getUnitDefinition(uid)
    if ud is None:
        return {"substance": "mole", "volume": "litre", "time": "second"}.get(uid, uid)
    parts = []
    for u in ud.getListOfUnits():
        kind = L.UnitKind_toString(u.getKind())
        factor = u.getMultiplier() * 10.0 ** u.getScale()
        base = kind if factor == 1 else f"{factor:g} {kind}"
        exp = u.getExponentAsDouble() if hasattr(u, "getExponentAsDouble") else u.getExponent()
        if exp == 1:
            parts.append(base)
        else:
            parts.append(f"({base})^{exp:g}" if factor != 1 else f"{base}^{exp:g}")
    return "*".join(parts) if parts else "dimensionless"


def _time_unit(model: Any, level: int, override: str | None, path: Path, L: Any) -> tuple[float, str, str | None]:
    """Seconds per model time unit, its label, and a note when it had to be assumed."""
    if override is not None:
        if override not in TIME_UNITS:
            raise ScenarioError(f"time_unit = {override!r} is not known; use one of {', '.join(TIME_UNITS)}")
        return TIME_UNITS[override], override, None
    uid = model.getTimeUnits() if level >= 3 else ("time" if model.getUnitDefinition("time") else "")
    if uid in TIME_UNITS:
        return TIME_UNITS[uid], uid, None
    ud = model.getUnitDefinition(uid) if uid else None
    if ud is not None and ud.getNumUnits() == 1:
        u = ud.getUnit(0)
        exp = u.getExponentAsDouble() if hasattr(u, "getExponentAsDouble") else u.getExponent()
        if L.UnitKind_toString(u.getKind()) == "second" and exp == 1:
            seconds = u.getMultiplier() * 10.0 ** u.getScale()
            label = next((k for k, v in TIME_UNITS.items() if np.isclose(v, seconds, rtol=1e-12)),
                         f"{seconds:g} second")
            return seconds, label, None
    if ud is not None:
        raise ScenarioError(f"{path}: the time unit '{uid}' is not a multiple of the second; "
                            f"give the unit yourself (time_unit= / --time-unit, one of {', '.join(TIME_UNITS)})")
    return SECONDS_PER_DAY, "day", (f"{path.name} declares no time unit; assumed days "
                                    "(pass time_unit= / --time-unit to say otherwise)")


def _toposort(nodes: dict[str, frozenset[str]], what: str, path: Path) -> list[str]:
    """Order ``nodes`` (name -> names it depends on) so that dependencies come first."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            loop = " -> ".join(chain[chain.index(n):] + [n])
            raise ScenarioError(f"{path}: the {what} form a loop ({loop}); an SBML model may not define "
                                "a value through itself; break the loop")
        state[n] = 1
        for d in sorted(nodes[n]):
            if d in nodes:
                visit(d, chain + [n])
        state[n] = 2
        order.append(n)

    for n in nodes:
        visit(n, [])
    return order


def load_sbml(path: str | Path, *, time_unit: str | None = None) -> SbmlModel:
    """Read an SBML file into an :class:`SbmlModel`.

    Parameters
    ----------
    path : str or Path
        The SBML file (Level 2 or 3, core).
    time_unit : str, optional
        The model's time unit when the file does not declare one: ``second``, ``minute``,
        ``hour``, ``day`` or ``week``. A declared unit is read from the file (SBML Level 2:
        the ``time`` unit definition; Level 3: the model's ``timeUnits``). When neither is
        given, days are assumed and :attr:`SbmlModel.notes` says so.

    Returns
    -------
    SbmlModel

    Raises
    ------
    ScenarioError
        The file is missing, is not valid SBML, or uses a construct carcell does not
        simulate (algebraic rules, fast reactions, delays, events not triggered by time,
        compartments that change size, variable stoichiometry, required SBML packages).

    Examples
    --------
    >>> from carcell.interop import load_sbml
    >>> m = load_sbml("../shared/reference/biomodels/BIOMD0000000837.xml")  # doctest: +SKIP
    >>> m.time_unit, m.days_per_time_unit  # doctest: +SKIP
    ('hour', 0.041666666666666664)
    """
    L = _libsbml()
    path = Path(path)
    doc = _read_document(path, L)
    return _Builder(path, doc, time_unit, L).build()


class _Builder:
    """The work of :func:`load_sbml`, one step per method."""

    def __init__(self, path: Path, doc: Any, time_unit: str | None, L: Any) -> None:
        self.path, self.doc, self.L = path, doc, L
        self.m = doc.getModel()
        self.level = doc.getLevel()
        self.time_unit_request = time_unit
        self.notes: list[str] = []

    def fail(self, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.path}: {msg}")

    # --- validation of what carcell supports ------------------------------------------------
    def check_supported(self) -> None:
        m, L = self.m, self.L
        for r in m.getListOfRules():
            if r.isAlgebraic():
                raise self.fail(f"has an algebraic rule ({L.formulaToL3String(r.getMath())} = 0); carcell "
                                "integrates ODEs only; rewrite it as an assignment rule or drop it")
        for r in m.getListOfReactions():
            if r.isSetFast() and r.getFast():
                raise self.fail(f"reaction '{r.getId()}' is marked fast; carcell does not compute "
                                "quasi-steady states; set fast=\"false\" or replace it by its equilibrium")
            for sr in list(r.getListOfReactants()) + list(r.getListOfProducts()):
                if self.level == 2 and sr.isSetStoichiometryMath():
                    raise self.fail(f"reaction '{r.getId()}' has stoichiometryMath for '{sr.getSpecies()}'; "
                                    "only constant stoichiometry is supported; write a number")
                if self.level >= 3 and sr.isSetId() and (m.getRule(sr.getId()) is not None or
                                                         m.getInitialAssignment(sr.getId()) is not None):
                    raise self.fail(f"reaction '{r.getId()}' has variable stoichiometry ('{sr.getId()}'); "
                                    "only constant stoichiometry is supported; write a number")
        if self.level >= 3:
            if m.isSetConversionFactor() or any(s.isSetConversionFactor() for s in m.getListOfSpecies()):
                raise self.fail("uses conversionFactor, which carcell does not support; fold the factor into "
                                "the kinetic laws")
        for c in m.getListOfCompartments():
            if m.getRule(c.getId()) is not None or any(
                    ea.getVariable() == c.getId() for e in m.getListOfEvents() for ea in e.getListOfEventAssignments()):
                raise self.fail(f"compartment '{c.getId()}' changes size (rule or event); only compartments of "
                                "constant size are supported; fix its size")

    # --- symbols ------------------------------------------------------------------------------
    def classify(self) -> None:
        m = self.m
        self.rule_targets = {r.getVariable() for r in m.getListOfRules() if r.isAssignment()}
        self.rate_targets = {r.getVariable(): r for r in m.getListOfRules() if r.isRate()}
        self.reaction_ids = {r.getId() for r in m.getListOfReactions()}
        self.function_defs: dict[str, tuple[list[str], Any]] = {}
        for fd in m.getListOfFunctionDefinitions():
            lam = fd.getMath()
            if lam is None or fd.getBody() is None:
                raise self.fail(f"function definition '{fd.getId()}' has no body; give it a lambda")
            args = [lam.getChild(i).getName() for i in range(lam.getNumChildren() - 1)]
            self.function_defs[fd.getId()] = (args, fd.getBody())

        columns: list[str] = []
        defaults: list[float] = []
        kinds: dict[str, str] = {}
        python: dict[str, str] = {}
        ia = {a.getSymbol() for a in m.getListOfInitialAssignments()}

        def add(col: str, value: float, kind: str, py: str) -> None:
            columns.append(col)
            defaults.append(value)
            kinds[col] = kind
            python[col] = py

        for c in m.getListOfCompartments():
            size = c.getSize() if c.isSetSize() else (None if c.getId() in ia else 1.0)
            if size is None:
                size = np.nan
            elif not c.isSetSize() and c.getSpatialDimensionsAsDouble() != 0:
                self.notes.append(f"compartment '{c.getId()}' has no size; assumed 1")
            add(c.getId(), float(size), "compartment size", f"x_{c.getId()}")
        sizes = {c: v for c, v in zip(columns, defaults)}
        for s in m.getListOfSpecies():
            sid = s.getId()
            if sid in self.rule_targets:
                continue
            value = self.species_initial(s, sizes, sid in ia)
            kind = "constant species" if s.getConstant() else "species initial value"
            add(sid, value, kind, f"x_{sid}")
        for p in m.getListOfParameters():
            pid = p.getId()
            if pid in self.rule_targets:
                continue
            if not p.isSetValue() and pid not in ia:
                raise self.fail(f"parameter '{pid}' has no value and no initial assignment; give it a value")
            kind = "parameter (rate rule: initial value)" if pid in self.rate_targets else "parameter"
            add(pid, float(p.getValue()) if p.isSetValue() else np.nan, kind, f"x_{pid}")
        for k, r in enumerate(m.getListOfReactions()):
            kl = r.getKineticLaw()
            if kl is None:
                raise self.fail(f"reaction '{r.getId()}' has no kinetic law; give it a rate formula")
            local = kl.getListOfLocalParameters() if self.level >= 3 else kl.getListOfParameters()
            for lp in local:
                add(f"{r.getId()}.{lp.getId()}", float(lp.getValue()), "local parameter", f"lp{k}_{lp.getId()}")
        self.columns, self.defaults, self.kinds, self.python = columns, defaults, kinds, python

    def species_initial(self, s: Any, sizes: dict[str, float], has_ia: bool) -> float:
        """The species' initial value as carcell holds it (concentration unless amount-only)."""
        size = sizes[s.getCompartment()]
        if s.isSetInitialConcentration():
            conc = s.getInitialConcentration()
            return float(conc * size if s.getHasOnlySubstanceUnits() else conc)
        if s.isSetInitialAmount():
            amount = s.getInitialAmount()
            return float(amount if s.getHasOnlySubstanceUnits() else amount / size)
        if has_ia:
            return np.nan
        raise self.fail(f"species '{s.getId()}' has no initial amount, concentration or assignment; give one")

    def resolver(self, local: dict[str, str] | None = None):
        m = self.m

        def resolve(name: str) -> str:
            if local and name in local:
                return local[name]
            if name in self.reaction_ids:
                raise ScenarioError(f"{self.path}: a formula uses the rate of reaction '{name}' by its id, "
                                    "which carcell does not support; repeat the kinetic law instead")
            if m.getElementBySId(name) is None or name in self.function_defs:
                raise ScenarioError(f"{self.path}: a formula uses '{name}', which is not a species, "
                                    "compartment or parameter of the model; define it")
            return f"x_{name}"

        return resolve

    # --- formulas -------------------------------------------------------------------------
    def translate_all(self) -> None:
        m, L = self.m, self.L
        tr = MathTranslator(self.resolver(), self.function_defs, L)
        self.translator = tr
        self.rules: dict[str, tuple[str, frozenset[str]]] = {}
        for r in m.getListOfRules():
            if r.isAssignment():
                self.rules[r.getVariable()] = tr.translate(r.getMath(), f"assignment rule for '{r.getVariable()}'")
        self.rule_order = _toposort({k: frozenset(s[2:] for s in v[1] if s.startswith("x_"))
                                     for k, v in self.rules.items()}, "assignment rules", self.path)
        self.rules = {k: self.rules[k] for k in self.rule_order}
        self.ias = {a.getSymbol(): tr.translate(a.getMath(), f"initial assignment for '{a.getSymbol()}'")
                    for a in m.getListOfInitialAssignments()}
        reactions = []
        for k, r in enumerate(m.getListOfReactions()):
            kl = r.getKineticLaw()
            local_params = kl.getListOfLocalParameters() if self.level >= 3 else kl.getListOfParameters()
            local = {lp.getId(): f"lp{k}_{lp.getId()}" for lp in local_params}
            rtr = MathTranslator(self.resolver(local), self.function_defs, L, tr.log_sites, tr.time_switches)
            expr, syms = rtr.translate(kl.getMath(), f"reaction '{r.getId()}'")
            reactions.append((r.getId(), expr, syms))
        self.reactions = tuple(reactions)
        self.rate_rules = {v: tr.translate(r.getMath(), f"rate rule for '{v}'") for v, r in self.rate_targets.items()}

    def build_states(self) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
        """Integrated symbols and the NumPy expression of each one's time derivative."""
        m = self.m
        states, rates = [], []
        used: set[str] = set()
        net: dict[str, list[str]] = {}
        for k, r in enumerate(m.getListOfReactions()):
            for sign, refs in ((-1, r.getListOfReactants()), (1, r.getListOfProducts())):
                for sr in refs:
                    st = sr.getStoichiometry() if sr.isSetStoichiometry() or self.level == 2 else 1.0
                    if self.level >= 3 and not sr.isSetStoichiometry():
                        raise self.fail(f"reaction '{r.getId()}' gives no stoichiometry for '{sr.getSpecies()}'; "
                                        "write one (e.g. stoichiometry=\"1\")")
                    net.setdefault(sr.getSpecies(), []).append(f"np.float64({sign * st!r}) * v{k}")
        for s in m.getListOfSpecies():
            sid = s.getId()
            if s.getConstant() or sid in self.rule_targets:
                continue
            states.append(sid)
            if sid in self.rate_rules:
                expr, syms = self.rate_rules[sid]
                used.update(syms)
            elif s.getBoundaryCondition() or sid not in net:
                expr = "np.float64(0.0)"
            else:
                terms = " + ".join(net[sid])
                expr = terms if s.getHasOnlySubstanceUnits() else f"np.divide({terms}, x_{s.getCompartment()})"
                used.add(f"x_{s.getCompartment()}")
            rates.append(expr)
        for pid, (expr, syms) in self.rate_rules.items():
            if m.getSpecies(pid) is not None:
                continue
            if m.getParameter(pid) is None:
                raise self.fail(f"rate rule for '{pid}': only species and parameters may have rate rules here")
            states.append(pid)
            rates.append(expr)
            used.update(syms)
        return tuple(states), tuple(rates), frozenset(used)

    # --- events ---------------------------------------------------------------------------
    def build_events(self) -> tuple[SbmlEvent, ...]:
        m, L = self.m, self.L
        out = []
        for e in m.getListOfEvents():
            eid = e.getId() or f"event #{len(out) + 1}"
            if e.isSetDelay():
                raise self.fail(f"event '{eid}' has a delay; carcell applies events at their trigger time "
                                "only; move the delay into the trigger (time >= t + delay)")
            trig = e.getTrigger()
            if trig is None or trig.getMath() is None:
                raise self.fail(f"event '{eid}' has no trigger; give it one such as time >= 10")
            text = L.formulaToL3String(trig.getMath())
            time_ast = self.time_threshold(trig.getMath(), eid, text)
            time_expr, time_syms = self.translator.translate(time_ast, f"trigger of event '{eid}'")
            fixed = set(self.python.values())
            bad = [self.sbml_of(s) for s in time_syms if s not in fixed or self.sbml_of(s) in self.states_set]
            if bad:
                raise self.fail(f"event '{eid}': trigger '{text}' depends on {', '.join(sorted(bad))}, which "
                                "change during the run; only triggers time >= c with c fixed are supported")
            initial_value = trig.getInitialValue() if (self.level >= 3 and trig.isSetInitialValue()) else True
            assigns, syms = [], set()
            for ea in e.getListOfEventAssignments():
                var = ea.getVariable()
                if var in self.rule_targets:
                    raise self.fail(f"event '{eid}' assigns '{var}', which an assignment rule sets")
                if var not in self.python and var not in self.states_set:
                    raise self.fail(f"event '{eid}' assigns '{var}', which is not a species or parameter")
                expr, s = self.translator.translate(ea.getMath(), f"event '{eid}' assignment to '{var}'")
                assigns.append((var, expr))
                syms.update(s)
            out.append(SbmlEvent(eid, text, time_expr, time_syms, not initial_value, tuple(assigns), frozenset(syms)))
        return tuple(out)

    def sbml_of(self, py: str) -> str:
        for col, p in self.python.items():
            if p == py:
                return col
        return py[2:] if py.startswith("x_") else py

    def time_threshold(self, ast: Any, eid: str, text: str) -> Any:
        """``c`` of a trigger ``time >= c`` (also ``>``, ``c <= time``, ``c < time``)."""
        L = self.L
        t = ast.getType()
        if ast.getNumChildren() == 2:
            a, b = ast.getChild(0), ast.getChild(1)
            if t in (L.AST_RELATIONAL_GEQ, L.AST_RELATIONAL_GT) and a.getType() == L.AST_NAME_TIME:
                return b
            if t in (L.AST_RELATIONAL_LEQ, L.AST_RELATIONAL_LT) and b.getType() == L.AST_NAME_TIME:
                return a
        raise self.fail(f"event '{eid}' has the trigger '{text}'; carcell supports only triggers of the form "
                        "time >= c (c a fixed value or formula of parameters); rewrite the trigger or remove the event")

    def build(self) -> SbmlModel:
        m, L = self.m, self.L
        self.check_supported()
        self.classify()
        self.translate_all()
        states, rates, rate_syms = self.build_states()
        self.states_set = set(states)
        events = self.build_events()
        seconds, label, note = _time_unit(m, self.level, self.time_unit_request, self.path, L)
        if note:
            self.notes.append(note)
        species = []
        for s in m.getListOfSpecies():
            substance_default = m.getSubstanceUnits() if self.level >= 3 else "substance"
            substance = _unit_text(m, s.getSubstanceUnits(), substance_default, L)
            comp = m.getCompartment(s.getCompartment())
            volume_default = m.getVolumeUnits() if self.level >= 3 else "volume"
            volume = _unit_text(m, comp.getUnits() if comp is not None else "", volume_default, L)
            simple = " " not in volume and "*" not in volume and "^" not in volume
            units = substance if s.getHasOnlySubstanceUnits() else (
                f"{substance}/{volume}" if simple else f"{substance}/({volume})")
            species.append(SbmlSpecies(s.getId(), s.getName() or s.getId(), s.getCompartment(),
                                       bool(s.getHasOnlySubstanceUnits()), bool(s.getBoundaryCondition()),
                                       bool(s.getConstant()), units))
        return SbmlModel(
            path=self.path, sha256=hashlib.sha256(self.path.read_bytes()).hexdigest(),
            model_id=m.getId(), name=m.getName() or m.getId(), level=self.level, version=self.doc.getVersion(),
            time_unit_seconds=seconds, time_unit=label, species=tuple(species),
            columns=tuple(self.columns), defaults=np.array(self.defaults, dtype=float),
            column_kinds=self.kinds, column_python=self.python,
            states=states, state_rates=rates, rules=self.rules, initial_assignments=self.ias,
            reactions=self.reactions, events=events, log_sites=tuple(self.translator.log_sites),
            rate_symbols=rate_syms, notes=self.notes,
            rule_text={r.getVariable(): ("d/dt " if r.isRate() else "") + L.formulaToL3String(r.getMath())
                       for r in m.getListOfRules() if r.getMath() is not None},
            time_switches=tuple(sw for sw in self.translator.time_switches
                                if all(self.sbml_of(x) not in self.states_set and x in self.python.values()
                                       for x in sw[1])),
        )
