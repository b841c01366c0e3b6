"""Run an imported SBML model as a virtual cohort on carcell's batched Dormand-Prince solver.

Each virtual patient is one row of the model's parameter table. Named parameters vary
log-normally between patients: ``value = typical * exp(sigma * z)`` with
``sigma = sqrt(ln(1 + cv^2))`` (so ``cv`` is the coefficient of variation and the typical value
is the median), and ``z`` drawn from a generator seeded by ``(seed, parameter name, patient
id)``: a patient's draw does not depend on the cohort size or on which other parameters vary.
Patient 0 is the typical patient unless ``typical_first=False``.

The whole cohort is integrated at once with :func:`carcell.solve.dopri5.integrate_interval`,
output interval by output interval (model time units), stopping exactly at each event time to
apply its assignments. When the solver fails because a logarithm (or root) met a
non-positive value, the run stops with :class:`ModelDomainError`, which names the formula, the
species, the time and the fix (a floor).
"""

from __future__ import annotations

import difflib
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from carcell.errors import ScenarioError
from carcell.interop.sbml_compile import (
    CompiledSbml,
    ModelDomainError,
    apply_events,
    check_start,
    compile_model,
    domain_error,
    segment_rhs,
)
from carcell.interop.sbml_import import SbmlModel
from carcell.model.states import Params
from carcell.interop.sbml_stiff import integrate_lsoda
from carcell.solve.dopri5 import (
    STATUS_MAX_STEPS,
    STATUS_NAMES,
    STATUS_NONFINITE,
    STATUS_OK,
    initial_step,
    integrate_interval,
)

METHODS = ("auto", "dopri5", "lsoda")


@dataclass
class SbmlCohortResult:
    """Trajectories of every species for every virtual patient.

    Attributes
    ----------
    model : SbmlModel
    times_days : ndarray, shape (n_points,)
        Output times in days (carcell's unit of time).
    times_model : ndarray, shape (n_points,)
        The same times in the model's own time unit (``model.time_unit``).
    values : ndarray, shape (n_patients, n_points, n_species)
        Species values (concentration, or amount for amount-only species), in the units of
        ``model.species[i].units``. NaN after a patient's solver failure.
    drawn : DataFrame
        ``patient_id`` and the value each patient got for every varied parameter.
    solver_status : ndarray of str, shape (n_patients,)
    settings : dict
        Seed, variability, overrides, floors and solver tolerances of the run.
    """

    model: SbmlModel
    times_days: np.ndarray
    times_model: np.ndarray
    values: np.ndarray
    drawn: pd.DataFrame
    solver_status: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.drawn["patient_id"].to_numpy()

    def species(self, sid: str) -> np.ndarray:
        """Trajectories of one species, shape (n_patients, n_points)."""
        try:
            return self.values[:, :, self.model.species_ids.index(sid)]
        except ValueError:
            raise ScenarioError(f"'{sid}' is not a species of {self.model.path.name}; "
                                f"species: {', '.join(self.model.species_ids)}") from None

    @property
    def patients(self) -> pd.DataFrame:
        """One row per patient: drawn parameters, and each species' max, time of max and final value."""
        df = self.drawn.copy()
        t = self.times_days
        for i, sid in enumerate(self.model.species_ids):
            x = self.values[:, :, i]
            finite = np.isfinite(x)
            safe = np.where(finite, x, -np.inf)
            has = finite.any(axis=1)
            at = np.argmax(safe, axis=1)
            df[f"{sid}_max"] = np.where(has, safe[np.arange(len(x)), at], np.nan)
            df[f"{sid}_time_of_max_days"] = np.where(has, t[at], np.nan)
            df[f"{sid}_final"] = x[:, -1]
        df["solver_status"] = self.solver_status
        return df

    @property
    def trajectories(self) -> xr.Dataset:
        """patient x time, one variable per species, time in days."""
        m = self.model
        data = {
            sp.id: (("patient", "time"), self.values[:, :, i],
                    {"units": sp.units, "long_name": sp.name, "compartment": sp.compartment,
                     "value": "amount" if sp.is_amount else "concentration"})
            for i, sp in enumerate(m.species)
        }
        return xr.Dataset(
            data,
            coords={
                "patient": ("patient", self.patient_ids, {"long_name": "patient id"}),
                "time": ("time", self.times_days, {"units": "day", "long_name": "days from the start of the model"}),
                "time_model": ("time", self.times_model, {"units": m.time_unit,
                                                          "long_name": "time in the model's own unit"}),
            },
            attrs={"title": f"carcell SBML cohort: {m.name}", "sbml_model_id": m.model_id,
                   "sbml_file": m.path.name, "sbml_sha256": m.sha256, "model_time_unit": m.time_unit},
        )


# --- parameter table -----------------------------------------------------------------------
def _column(model: SbmlModel, name: str, what: str) -> int:
    if name in model.columns:
        if name in model.initial_assignments:
            raise ScenarioError(f"{what} {name}: '{name}' is computed by an initial assignment in "
                                f"{model.path.name}; vary or set the parameters its formula uses instead")
        return model.columns.index(name)
    if name in model.rules:
        raise ScenarioError(f"{what} {name}: '{name}' is set by an assignment rule in {model.path.name}; "
                            "vary or set the parameters its rule uses instead")
    close = difflib.get_close_matches(name, model.columns, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ScenarioError(f"{what} {name}: '{name}' is not a parameter, compartment or species of "
                        f"{model.path.name}; {hint}known: {', '.join(model.columns)}")


def _standard_normal(seed: int, name: str, patient_id: int) -> float:
    """One N(0, 1) draw for (seed, parameter, patient), independent of everything else."""
    ss = np.random.SeedSequence([seed, zlib.crc32(name.encode()), patient_id])
    return float(np.random.default_rng(ss).standard_normal())


def draw_table(
    model: SbmlModel,
    n: int,
    *,
    seed: int = 0,
    variability: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
    typical_first: bool = True,
) -> tuple[np.ndarray, pd.DataFrame]:
    """The parameter table of ``n`` patients (before initial assignments) and the drawn values.

    Returns
    -------
    table : ndarray, shape (n, len(model.columns))
    drawn : DataFrame with ``patient_id`` and one column per varied parameter
    """
    if n < 1:
        raise ScenarioError(f"n = {n}: give at least one patient")
    if seed < 0:
        raise ScenarioError(f"seed = {seed}: give a non-negative integer")
    base = model.defaults.copy()
    for name, value in (parameters or {}).items():
        if not np.isfinite(value):
            raise ScenarioError(f"set {name}={value}: give a finite number")
        base[_column(model, name, "set")] = value
    table = np.tile(base, (n, 1))
    drawn = pd.DataFrame({"patient_id": np.arange(n)})
    for name, cv in (variability or {}).items():
        j = _column(model, name, "vary")
        if not (np.isfinite(cv) and cv >= 0):
            raise ScenarioError(f"vary {name}={cv}: the coefficient of variation must be a number >= 0, e.g. 0.3")
        sigma = np.sqrt(np.log1p(cv * cv))
        z = np.array([0.0 if (typical_first and i == 0) else _standard_normal(seed, name, i) for i in range(n)])
        table[:, j] = base[j] * np.exp(sigma * z)
        drawn[name] = table[:, j]
    return table, drawn


# --- the run ---------------------------------------------------------------------------------
def run_sbml_cohort(
    model: SbmlModel,
    n: int = 1,
    *,
    seed: int = 0,
    variability: Mapping[str, float] | None = None,
    parameters: Mapping[str, float] | None = None,
    floors: Mapping[str, float] | None = None,
    t_end_days: float = 100.0,
    n_points: int = 201,
    rtol: float = 1e-8,
    atol: float = 1e-12,
    method: str = "auto",
    typical_first: bool = True,
    max_steps: int = 2_000,
    progress: Callable[[int, int], None] | None = None,
) -> SbmlCohortResult:
    """Simulate ``n`` virtual patients of an SBML model.

    Parameters
    ----------
    model : SbmlModel
        From :func:`carcell.interop.load_sbml`.
    n : int
        Number of patients (ids 0 .. n-1).
    seed : int
        Seed of the parameter draws.
    variability : dict, optional
        ``{column: cv}``: log-normal variability with coefficient of variation ``cv`` for a
        parameter, compartment, local parameter (``reaction.parameter``) or a species'
        initial value (its id).
    parameters : dict, optional
        ``{column: value}``: typical values replacing those in the file.
    floors : dict, optional
        ``{species: value}``: keep an integrated species at or above ``value`` (a change of
        the model; see :mod:`carcell.interop.sbml_compile`).
    t_end_days : float
        End of the simulation, days from the model's time 0.
    n_points : int
        Output times, evenly spaced from 0 to ``t_end_days``.
    rtol, atol : float
        Tolerances of the Dormand-Prince solver (``atol`` in the species' own units).
    method : str
        ``auto`` (carcell's batched Dormand-Prince; a patient that needs more than
        ``max_steps`` steps in one output interval, the mark of a stiff model, is redone with
        LSODA, see :mod:`carcell.interop.sbml_stiff`), ``dopri5`` (never hand over) or
        ``lsoda`` (every patient with LSODA). ``result.patients["solver"]`` says which ran.
    typical_first : bool
        Patient 0 gets the typical values (no draw).
    max_steps : int
        Dormand-Prince step attempts allowed per patient and output interval.
    progress : callable, optional
        ``progress(done, total)`` after each output interval.

    Returns
    -------
    SbmlCohortResult

    Raises
    ------
    ScenarioError
        An option names an unknown parameter or has an impossible value.
    ModelDomainError
        A logarithm or root of the model met a non-positive value and the solver could not
        continue; the message names the formula, species and time and suggests a floor.
    """
    if not (np.isfinite(t_end_days) and t_end_days > 0):
        raise ScenarioError(f"t_end_days = {t_end_days}: give a positive number of days")
    if n_points < 2:
        raise ScenarioError(f"n_points = {n_points}: give at least 2 output times")
    if not (0 < rtol < 1) or not (atol > 0):
        raise ScenarioError(f"rtol = {rtol}, atol = {atol}: give 0 < rtol < 1 and atol > 0")
    if method not in METHODS:
        raise ScenarioError(f"method = {method!r}: use one of {', '.join(METHODS)}")
    compiled = compile_model(model, dict(floors or {}))
    table, drawn = draw_table(model, n, seed=seed, variability=variability, parameters=parameters,
                              typical_first=typical_first)
    t_end = t_end_days * 86400.0 / model.time_unit_seconds
    times = np.linspace(0.0, t_end, n_points)
    pristine = table.copy()
    solver = np.full(n, "dopri5", dtype=object)
    if method == "lsoda":
        values = np.empty((n, n_points, len(model.species)))
        names = np.full(n, "", dtype=object)
        ev_times, sw_times = _event_schedule(model, compiled, table.copy(), times)
        stiff = np.arange(n)
    else:
        with np.errstate(divide="ignore"):  # dopri5's step factor takes 0 ** -0.2 when a step is exact
            values, status, ev_times, sw_times = _integrate(model, compiled, table, times, rtol=rtol, atol=atol,
                                                  max_steps=max_steps, progress=progress)
        names = np.array([STATUS_NAMES[int(v)] for v in status], dtype=object)
        stiff = np.flatnonzero(status == STATUS_MAX_STEPS) if method == "auto" else np.zeros(0, dtype=int)
    if stiff.size:
        values[stiff], lsoda_status = integrate_lsoda(model, compiled, pristine[stiff], times, rtol=rtol, atol=atol,
                                                      event_times=ev_times[stiff], switch_times=sw_times[stiff],
                                                      patient_ids=stiff)
        names[stiff] = lsoda_status
        solver[stiff] = "lsoda"
    drawn = drawn.assign(solver=solver)
    return SbmlCohortResult(
        model=model, times_days=times * model.days_per_time_unit, times_model=times, values=values,
        drawn=drawn, solver_status=names,
        settings={"n": n, "seed": seed, "variability": dict(variability or {}),
                  "parameters": dict(parameters or {}), "floors": dict(floors or {}),
                  "t_end_days": t_end_days, "n_points": n_points, "rtol": rtol, "atol": atol,
                  "method": method, "typical_first": typical_first, "max_steps": max_steps},
    )


def _event_schedule(model: SbmlModel, c: CompiledSbml, table: np.ndarray, times: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Each patient's event times (model units, snapped onto output times), shape (n, n_events),
    and the times where a formula switches (``time <= c``), shape (n, n_switches).
    ``table`` is initialised in place."""
    c.initialise(np.full(table.shape[0], float(times[0])), table)
    ev = c.event_times(table) if model.events else np.zeros((table.shape[0], 0))
    return _snap(times, ev), _snap(times, c.switch_times(table))


def _snap(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Times within rounding of an output time are moved onto it."""
    snapped = np.array(at, dtype=float, copy=True)
    tol = 1e-12 * max(1.0, abs(times[-1]))
    if snapped.size:
        idx = np.clip(np.searchsorted(times, snapped), 1, times.size - 1)
        for cand in (idx - 1, idx):
            near = np.abs(times[cand] - snapped) <= tol
            snapped[near] = times[cand][near]
    return snapped


def _breakpoints(times: np.ndarray, *stops: np.ndarray) -> np.ndarray:
    """Output times merged with the stop times (events, switches) inside (0, t_end]."""
    inside = [s[(s > times[0]) & (s <= times[-1])] for s in stops]
    return np.unique(np.concatenate([times[1:], *inside]))


def _integrate(model: SbmlModel, c: CompiledSbml, table: np.ndarray, times: np.ndarray, *, rtol: float,
               atol: float, max_steps: int, progress: Callable[[int, int], None] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = table.shape[0]
    t0 = float(times[0])
    ev_times, sw_times = _event_schedule(model, c, table, times)
    p = Params(table)
    y = table[:, [c.column_index[s] for s in model.states]].copy()
    bad = ~np.isfinite(y).all(axis=1) | ~np.isfinite(table).all(axis=1)
    if bad.any():
        raise ScenarioError(f"{model.path.name}: patient {int(np.flatnonzero(bad)[0])} starts with a value that "
                            "is not a finite number (check the initial values and assignments)")
    starts = np.array([e.fires_at_start for e in model.events], dtype=bool)
    apply_events(model, c, t0, (ev_times <= t0) & starts, y, p)
    breaks = _breakpoints(times, ev_times.ravel(), sw_times.ravel())
    np.maximum(y, c.floors, out=y)
    check_start(model, c, t0, y, p)
    out = np.full((n, times.size, len(model.species)), np.nan)
    out[:, 0] = c.observe(np.full(n, t0), y, p)
    status = np.full(n, STATUS_OK, dtype=np.int8)
    tol = np.full(len(model.states), atol)
    h: np.ndarray | None = None
    a = t0
    j = 1
    for b in breaks:
        rhs = segment_rhs(c.rhs, a, float(b)) if model.time_switches else c.rhs
        y, h, status = integrate_interval(rhs, y, a, float(b), p, rtol=rtol, atol=tol, h=h,
                                          max_steps=max_steps, status=status)
        if c.domain_hits:
            raise _located(model, c, p.values)
        broken = ~np.isfinite(y).all(axis=1)
        status[broken & (status == STATUS_OK)] = STATUS_NONFINITE
        ok = status == STATUS_OK
        np.maximum(y, c.floors, out=y, where=ok[:, None])
        due = (ev_times == b) & ok[:, None]
        if due.any() and h is not None:
            touched = apply_events(model, c, float(b), due, y, p)
            sub = p.take(touched)
            tt = np.full(touched.size, float(b))
            f0 = rhs(tt, y[touched], sub)
            h[touched] = initial_step(rhs, float(b), y[touched], sub, f0, rtol, tol)
        if j < times.size and b == times[j]:
            out[ok, j] = c.observe(np.full(int(ok.sum()), float(b)), y[ok], p.take(np.flatnonzero(ok)))
            if progress is not None:
                progress(j, times.size - 1)
            j += 1
        a = float(b)
    return out, status, ev_times, sw_times


def _located(model: SbmlModel, c: CompiledSbml, table: np.ndarray) -> ModelDomainError:
    """The domain error of the first hit, with the patient found by its parameter row."""
    hit = c.domain_hits[0]
    rows = np.flatnonzero(np.all((table == hit.params) | (np.isnan(table) & np.isnan(hit.params)), axis=1))
    return domain_error(model, hit, int(rows[0]) if rows.size else -1)
