"""Calibrate a product's population to a published trial by reweighting a virtual population.

The method (docs/calibration.md) follows the virtual-population idea of Allen et al. 2016
(CPT:PSP, doi:10.1002/psp4.12063) with importance weights in place of accept/reject:

1. Plausible population. The scenario is simulated once with a wide prior on each calibrated
   parameter: its log multiplier is ``l = omega0 * z`` with ``z`` the patient's own standard
   normal (the same one the compiler uses).
2. Weights. For a candidate population, each parameter's log multiplier is normal with mean
   ``mu`` and SD ``omega``; a plausible patient's weight is the density ratio
   ``prod_p N(l_p; mu_p, omega_p) / N(l_p; 0, omega0_p)``, normalised.
3. Fit. ``mu`` (product level: the typical value becomes ``exp(mu)`` times the design's) and
   ``omega`` (population level: the spread between patients) minimise the sum of squared
   standardised differences between the weighted endpoints and the targets (the targets' own
   binomial or CI-derived standard errors), with a penalty that keeps the effective sample
   size of the weights above a floor. Nelder-Mead, from several fixed starts.
4. Check. A fresh cohort, with a different seed and the fitted values in the compiler (not the
   weights), is simulated and compared with the targets' 95% intervals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from carcell.design import omega_deviates, resolve_design
from carcell.errors import ScenarioError
from carcell.io.yamlio import load_yaml
from carcell.knowledge import load_knowledge
from carcell.model.states import PARAMETER_NAMES
from carcell.scenario.schema import Scenario
from carcell.trial.stats import binomial_rate

RESPONDERS = ("CR", "VGPR", "PR")


# -- targets ------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str            # e.g. orr, cr, pfs_at_180, os_median_days, cmax_copies_per_ug_geomean
    value: float
    n: int | None
    ci95: tuple[float, float] | None
    source: str
    note: str = ""

    @property
    def kind(self) -> str:
        if self.name.endswith(("_median_days", "_geomean", "_median", "_responder_ratio")):
            return "log"
        return "rate"

    def se(self) -> float:
        """Standard error on the fit scale (rate, or natural log for medians and means)."""
        if self.ci95 is not None:
            lo, hi = self.ci95
            if self.kind == "log":
                return (np.log(hi) - np.log(lo)) / (2 * 1.96)
            return (hi - lo) / (2 * 1.96)
        if self.kind == "log":   # a median from n patients with about half of them events
            return 1.0 / np.sqrt(max(self.n * 0.5, 1.0))
        p = min(max(self.value, 1.0 / self.n), 1 - 1.0 / self.n)
        return float(np.sqrt(p * (1 - p) / self.n))

    def interval(self) -> tuple[float, float]:
        """The target's 95% interval: given, or Clopper-Pearson for a rate, or from the SE."""
        if self.ci95 is not None:
            return self.ci95
        if self.kind == "rate":
            lo, hi = binomial_rate(round(self.value * self.n), self.n)["ci95"]
            return float(lo), float(hi)
        s = self.se()
        return float(self.value * np.exp(-1.96 * s)), float(self.value * np.exp(1.96 * s))


@dataclass
class TargetSet:
    trial: str
    parameters: dict[str, float]          # calibrated parameter -> prior omega0
    targets: list[Target]
    path: str = ""
    sources: list[str] = field(default_factory=list)
    #: parameters held, not fitted: name -> (multiplier, omega, why), applied to every plausible
    #: population and written into the calibration
    held: dict[str, tuple[float, float, str]] = field(default_factory=dict)


def load_targets(path: Path) -> TargetSet:
    """Read a targets file (format: docs/calibration.md)."""
    if not path.exists():
        raise ScenarioError(f"--targets {path}: no such file")
    node = load_yaml(path)
    if not isinstance(node, dict) or "targets" not in node or "parameters" not in node:
        raise ScenarioError(f"{path}: a targets file needs 'trial', 'parameters' (name: prior_omega) and "
                            "'targets' (name: {value, n or ci95, source})")
    params = node["parameters"]
    known = [p for p in PARAMETER_NAMES if not p.startswith("alive_")]
    for p, w in params.items():
        if p not in known:
            raise ScenarioError(f"{path}: parameters: {p!r} is not a model parameter")
        if not (isinstance(w, (int, float)) and 0 < w <= 3):
            raise ScenarioError(f"{path}: parameters.{p}: give the prior log-SD (0 < omega0 <= 3), got {w!r}")
    targets = []
    for name, t in node["targets"].items():
        if not isinstance(t, dict) or "value" not in t or "source" not in t:
            raise ScenarioError(f"{path}: targets.{name} needs 'value' and 'source'")
        if t.get("n") is None and t.get("ci95") is None:
            raise ScenarioError(f"{path}: targets.{name} needs 'n' (patients) or 'ci95' [low, high] for its uncertainty")
        measure_name_check(name, path)
        if (BY_CRS.match(name) or RESPONDER_RATIO.match(name)) and t.get("ci95") is None:
            raise ScenarioError(f"{path}: targets.{name} compares two groups; give its 'ci95' "
                                "[low, high] (a single 'n' does not say how large each group was)")
        targets.append(Target(name, float(t["value"]), t.get("n"), tuple(t["ci95"]) if t.get("ci95") else None,
                              str(t["source"]), str(t.get("note", ""))))
    held = {}
    for p, h in (node.get("held") or {}).items():
        if p not in known or p in params:
            raise ScenarioError(f"{path}: held.{p}: give a model parameter that is not also fitted")
        if not (isinstance(h, dict) and {"multiplier", "omega", "note"} <= set(h)):
            raise ScenarioError(f"{path}: held.{p} needs multiplier, omega and note (why it is held)")
        mult, omega = h["multiplier"], h["omega"]
        if not (isinstance(mult, (int, float)) and mult > 0 and isinstance(omega, (int, float)) and 0 <= omega <= 3):
            raise ScenarioError(f"{path}: held.{p}: multiplier must be > 0 and omega in [0, 3], got {mult!r}, {omega!r}")
        held[p] = (float(mult), float(omega), str(h["note"]))
    return TargetSet(str(node.get("trial", path.stem)), {p: float(w) for p, w in params.items()}, targets,
                     str(path), list(node.get("sources", [])), held)


# -- measures on a (weighted) patient table -------------------------------------------------------

_SIMPLE = {
    "orr": lambda df: df["best_response"].isin(RESPONDERS).to_numpy(float),
    "cr": lambda df: (df["best_response"] == "CR").to_numpy(float),
    "vgpr_or_better": lambda df: df["best_response"].isin(("CR", "VGPR")).to_numpy(float),
}


#: a trajectory's level on a day across patients, e.g. car_cells_per_ul_day_7_median
LEVEL = re.compile(r"^(?P<quantity>[a-z0-9_]+?)_day_(?P<day>\d+(?:\.\d+)?)_(?:median|geomean)$")
#: a response rate among patients with CRS (any grade, ASTCT) minus among those without, e.g.
#: cr_difference_by_crs: how closely the toxicity goes with the response
BY_CRS = re.compile(r"^(?P<response>orr|cr|vgpr_or_better)_difference_by_crs$")
#: per-patient timing columns whose median (or geometric mean) over the patients that have one
#: can be a target, e.g. icans_duration_days_median or response_day_median, the median time to
#: first response of the responders (docs/calibration.md)
TIMING_COLUMNS = ("crs_onset_day", "crs_duration_days", "icans_onset_day", "icans_duration_days", "tmax_days",
                  "response_day")
#: a kinetics column's median among responders (PR or better) over its median among the others, as
#: labels report exposure by response, e.g. cmax_copies_per_ug_responder_ratio
RESPONDER_RATIO = re.compile(r"^(?P<column>(?:cmax|auc)_[a-z0-9_]+)_responder_ratio$")


def measure_name_check(name: str, where) -> None:
    from carcell.cohort.metrics import QUANTITIES

    level = LEVEL.match(name)
    if level and level["quantity"] not in QUANTITIES:
        raise ScenarioError(f"{where}: targets.{name}: {level['quantity']!r} is not a trajectory quantity; "
                            f"use one of {', '.join(sorted(QUANTITIES))}")
    ok = (name in _SIMPLE or name.startswith(("pfs_at_", "os_at_", "efs_at_"))
          or name in ("pfs_median_days", "os_median_days", "efs_median_days")
          or name.startswith(("cmax_", "auc_") + TIMING_COLUMNS) and name.endswith(("_geomean", "_median"))
          or level or BY_CRS.match(name) or RESPONDER_RATIO.match(name))
    if not ok:
        raise ScenarioError(f"{where}: targets.{name}: unknown measure; use orr, cr, vgpr_or_better, "
                            "pfs_at_DAYS, os_at_DAYS, efs_at_DAYS, pfs_median_days, os_median_days, "
                            "efs_median_days, COLUMN_geomean / COLUMN_median for cmax_*/auc_* columns "
                            f"and {', '.join(TIMING_COLUMNS)}, "
                            "QUANTITY_day_DAY_median / _geomean for a trajectory's level on a day "
                            "(e.g. car_cells_per_ul_day_7_median), RESPONSE_difference_by_crs "
                            "(orr, cr or vgpr_or_better among patients with CRS minus among those without), "
                            "or COLUMN_responder_ratio for cmax_*/auc_* columns (median among responders "
                            "over median among the others)")


def level_on_day(times: np.ndarray, traj: np.ndarray, day: float) -> np.ndarray:
    """Each row of ``traj`` (patients x ``times``) on ``day``, linear between output times; NaN
    for a day outside ``times``."""
    times = np.asarray(times, float)
    if not times[0] <= day <= times[-1]:
        return np.full(traj.shape[0], np.nan)
    j = min(int(np.searchsorted(times, day, side="right")), times.size - 1)
    i = max(j - 1, 0)
    f = 0.0 if j == i else (day - times[i]) / (times[j] - times[i])
    return (1 - f) * traj[:, i] + f * traj[:, j]


def with_levels(result, targets: TargetSet) -> pd.DataFrame:
    """The result's patient table with a column QUANTITY_day_DAY for every level-on-a-day target,
    read from the trajectories (linear interpolation between output times; NaN for a patient
    without trajectories, e.g. a control arm, or a day outside the follow-up)."""
    patients = result.patients
    matches = (LEVEL.match(t.name) for t in targets.targets)
    wanted = {m.string.rsplit("_", 1)[0]: m for m in matches if m}
    if not wanted:
        return patients
    patients = patients.copy()
    rows = pd.Index(result.trajectory_ids).get_indexer(patients["patient_id"].to_numpy())
    times = np.asarray(result.times, float)
    for col, m in wanted.items():
        q, day = m["quantity"], float(m["day"])
        if q not in result.trajectories:
            raise ScenarioError(f"targets.{col}: the run has no {q!r} trajectories")
        x = np.full(len(patients), np.nan)
        ok = rows >= 0
        x[ok] = level_on_day(times, result.trajectories[q][rows[ok]], day)
        patients[col] = x
    return patients


def _wquantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x, kind="stable")
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, q * cw[-1])])


def _median_time(t: np.ndarray, event: np.ndarray, w: np.ndarray) -> float:
    """Where the weighted event-free curve crosses one half, interpolated linearly between
    event days (progression is only seen at assessments, so the raw curve is a staircase);
    infinity if it never does. Censoring happens only at the end of follow-up here."""
    days = np.unique(t[event])
    surv = np.array([1.0 - np.sum(w[event & (t <= d)]) for d in days])
    x, y = np.concatenate([[0.0], days]), np.concatenate([[1.0], surv])
    below = np.nonzero(y <= 0.5)[0]
    if below.size == 0:
        return float("inf")
    k = below[0]
    return float(x[k - 1] + (y[k - 1] - 0.5) / (y[k - 1] - y[k]) * (x[k] - x[k - 1]))


def rates_by_crs(df: pd.DataFrame, hit: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    """(Weighted) share of ``hit`` among patients with CRS (any grade, ASTCT) and among those
    without; NaN for an empty group."""
    w = np.full(len(df), 1.0 / len(df)) if w is None else w
    crs = df["crs_max_grade"].to_numpy(float) >= 1
    with_, without = (float(np.sum(w[g] * hit[g]) / np.sum(w[g])) if np.sum(w[g]) > 0 else float("nan")
                      for g in (crs, ~crs))
    return with_, without


def measure(df: pd.DataFrame, name: str, w: np.ndarray | None = None) -> float:
    """A target's measure on a patient table, optionally weighted (weights sum to 1)."""
    w = np.full(len(df), 1.0 / len(df)) if w is None else w
    if name in _SIMPLE:
        return float(np.sum(w * _SIMPLE[name](df)))
    by_crs = BY_CRS.match(name)
    if by_crs:
        if "crs_max_grade" not in df.columns:
            raise ScenarioError(f"targets.{name}: the patient table has no crs_max_grade column")
        with_, without = rates_by_crs(df, _SIMPLE[by_crs["response"]](df), w)
        return with_ - without
    ratio = RESPONDER_RATIO.match(name)
    if ratio:
        col = ratio["column"]
        if col not in df.columns:
            raise ScenarioError(f"targets.{name}: the patient table has no column {col!r}")
        x = df[col].to_numpy(float)
        hit = _SIMPLE["orr"](df).astype(bool)
        return _positive_median(x, w, hit) / _positive_median(x, w, ~hit)
    for ep in ("pfs", "os", "efs"):
        if name.startswith(f"{ep}_at_"):   # event-free share at a day (censoring only at the end)
            day = float(name.removeprefix(f"{ep}_at_"))
            event_by = df[f"{ep}_event"].to_numpy(bool) & (df[f"{ep}_days"].to_numpy(float) <= day)
            return float(np.sum(w * ~event_by))
        if name == f"{ep}_median_days":
            return _median_time(df[f"{ep}_days"].to_numpy(float), df[f"{ep}_event"].to_numpy(bool), w)
    col = name.rsplit("_", 1)[0]
    if col not in df.columns:
        hint = (" (a level on a day: add it from the run's trajectories with with_levels(result, targets))"
                if LEVEL.match(name) else "")
        raise ScenarioError(f"targets.{name}: the patient table has no column {col!r}{hint}")
    x = df[col].to_numpy(float)
    if name.endswith("_geomean"):
        ok = np.isfinite(x) & (x > 0)
        if not np.sum(w[ok]) > 0:      # nobody (with weight) has a value, e.g. no ICANS at all
            return float("nan")
        return float(np.exp(np.sum(w[ok] * np.log(x[ok])) / np.sum(w[ok])))
    return _positive_median(x, w, np.ones(len(x), bool))


def _positive_median(x: np.ndarray, w: np.ndarray, rows: np.ndarray) -> float:
    """Weighted median of the finite, positive values of ``x`` among ``rows``; NaN when none
    of them (with weight) has one, e.g. no ICANS at all."""
    ok = rows & np.isfinite(x) & (x > 0)
    if not np.sum(w[ok]) > 0:
        return float("nan")
    return _wquantile(x[ok], w[ok] / np.sum(w[ok]), 0.5)


# -- the fit --------------------------------------------------------------------------------------

@dataclass
class Fit:
    parameters: dict[str, tuple[float, float]]     # name -> (multiplier exp(mu), omega)
    table: pd.DataFrame                            # target, observed, interval, weighted model
    ess: float
    objective: float
    weights: np.ndarray
    log_multipliers: dict[str, np.ndarray]


def plausible_scenario(scenario: Scenario, targets: TargetSet, n: int, seed: int) -> Scenario:
    variability = dict(scenario.population.variability)
    variability.update(targets.parameters)
    return scenario.model_copy(update={"population": scenario.population.model_copy(
        update={"n": n, "seed": seed, "variability": variability})})


def log_multipliers(scenario: Scenario, targets: TargetSet, ids: np.ndarray) -> dict[str, np.ndarray]:
    design = resolve_design(scenario, load_knowledge())
    z = omega_deviates(design, ids)
    return {p: targets.parameters[p] * z[p] for p in targets.parameters}


def _omega(x: float, omega0: float) -> float:
    """The fitted omega, kept inside (0, omega0): importance weights from a narrower prior
    towards a wider population would rest on a few tail patients."""
    return float(omega0 / (1.0 + np.exp(-x)))


def weights_for(theta: np.ndarray, logm: dict[str, np.ndarray], prior: dict[str, float]) -> np.ndarray:
    names = list(prior)
    logw = np.zeros(next(iter(logm.values())).size)
    for j, p in enumerate(names):
        mu, omega = theta[2 * j], _omega(theta[2 * j + 1], prior[p])
        l = logm[p]
        logw += (-0.5 * ((l - mu) / omega) ** 2 - np.log(omega)) - (-0.5 * (l / prior[p]) ** 2 - np.log(prior[p]))
    logw -= logw.max()
    w = np.exp(logw)
    return w / w.sum()


def fit_weights(patients: pd.DataFrame, logm: dict[str, np.ndarray], targets: TargetSet,
                ess_floor: float = 60.0) -> Fit:
    prior = targets.parameters
    obs = np.array([t.value for t in targets.targets])
    se = np.array([t.se() for t in targets.targets])
    logs = np.array([t.kind == "log" for t in targets.targets])

    def model(w):
        return np.array([measure(patients, t.name, w) for t in targets.targets])

    def objective(theta):
        w = weights_for(theta, logm, prior)
        m = model(w)
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = np.where(logs, (np.log(np.maximum(m, 1e-12)) - np.log(obs)) / se, (m - obs) / se)
        resid = np.where(np.isfinite(resid), resid, 10.0)
        ess = 1.0 / np.sum(w ** 2)
        penalty = 0.0 if ess >= ess_floor else 50.0 * (ess_floor / ess - 1.0) ** 2
        return float(np.sum(resid ** 2) + penalty)

    starts = []
    for shift in (0.0, -0.5, 0.5):
        for frac in (0.5, 0.8):
            starts.append(np.concatenate([[shift * prior[p], np.log(frac / (1 - frac))] for p in prior]))
    best = None
    for x0 in starts:
        r = minimize(objective, x0, method="Nelder-Mead",
                     options={"maxiter": 1500, "xatol": 1e-3, "fatol": 1e-4})
        if best is None or r.fun < best.fun:
            best = r
    w = weights_for(best.x, logm, prior)
    m = model(w)
    rows = []
    for t, v in zip(targets.targets, m):
        lo, hi = t.interval()
        rows.append({"target": t.name, "published": t.value, "ci95_low": lo, "ci95_high": hi,
                     "model_weighted": float(v), "inside": bool(lo <= v <= hi), "source": t.source})
    params = {p: (float(np.exp(best.x[2 * j])), _omega(best.x[2 * j + 1], prior[p])) for j, p in enumerate(prior)}
    return Fit(params, pd.DataFrame(rows), float(1.0 / np.sum(w ** 2)), float(best.fun), w, logm)


def check_table(patients: pd.DataFrame, targets: TargetSet) -> pd.DataFrame:
    rows = []
    for t in targets.targets:
        v = measure(patients, t.name)
        lo, hi = t.interval()
        rows.append({"target": t.name, "published": t.value, "ci95_low": lo, "ci95_high": hi,
                     "model": float(v), "inside": bool(lo <= v <= hi), "source": t.source})
    return pd.DataFrame(rows)


def calibration_yaml(fit: Fit, targets: TargetSet, scenario_name: str, n_plausible: int, seed: int,
                     rounds: int = 1) -> str:
    """The calibration file that scenarios use via population.calibration."""
    lines = [
        f"# Population calibration of {scenario_name!r} to {targets.trial}, written by `carcell calibrate`.",
        "# Method: importance-reweighted virtual population (docs/calibration.md); multipliers scale the",
        "# design's typical values, omegas are the between-patient log-SDs.",
        f"# targets: {targets.path}; plausible patients: {n_plausible} per round, {rounds} round(s); seed: {seed};",
        f"# effective sample size of the weights: {fit.ess:.1f}; objective: {fit.objective:.3f}",
        "# fit (published [95% CI] -> reweighted model):",
    ]
    for r in fit.table.itertuples():
        lines.append(f"#   {r.target}: {r.published:.4g} [{r.ci95_low:.4g}, {r.ci95_high:.4g}] -> "
                     f"{r.model_weighted:.4g} ({r.source})")
    lines.append("parameters:")
    note = (f"fitted to {targets.trial} ({', '.join(t.name for t in targets.targets)}) by importance-reweighted "
            f"virtual population, {rounds} round(s) of {n_plausible} plausible patients, seed {seed}")
    for p, (mult, omega) in fit.parameters.items():
        lines += [f"  {p}:",
                  f"    multiplier: {{value: {mult:.4g}, unit: \"1\", source: fit, note: \"{note}\"}}",
                  f"    omega: {{value: {omega:.4g}, unit: \"1\", source: fit, note: \"{note}\"}}"]
    return "\n".join(lines + held_lines(targets)) + "\n"


def held_lines(targets: TargetSet) -> list[str]:
    """The calibration file's entries of the targets' held parameters."""
    lines = []
    for p, (mult, omega, why) in targets.held.items():
        note = f"held, not fitted: {why}".replace('"', "'")
        lines += [f"  {p}:",
                  f"    multiplier: {{value: {mult:.6g}, unit: \"1\", source: derived, note: \"{note}\"}}",
                  f"    omega: {{value: {omega:.6g}, unit: \"1\", source: derived, note: \"{note}\"}}"]
    return lines


def diagnostics_figure(fit: Fit, prior: dict[str, float], check: pd.DataFrame | None = None):
    """Prior vs fitted distribution of each calibrated log multiplier (weighted histogram of the
    plausible population), and every target's interval beside the weighted and re-simulated model."""
    from matplotlib.figure import Figure   # not pyplot: nothing is left open in the caller

    names = list(prior)
    fig = Figure(figsize=(4 * (len(names) + 1), 3.6))
    axes = fig.subplots(1, len(names) + 1)
    for ax, p in zip(axes, names):
        l = fit.log_multipliers[p]
        bins = np.linspace(l.min(), l.max(), 30)
        ax.hist(l, bins=bins, density=True, alpha=0.4, color="grey", label="plausible (prior)")
        ax.hist(l, bins=bins, weights=fit.weights, density=True, alpha=0.6, color="C0", label="reweighted")
        mult, omega = fit.parameters[p]
        x = np.linspace(l.min(), l.max(), 200)
        ax.plot(x, np.exp(-0.5 * ((x - np.log(mult)) / omega) ** 2) / (omega * np.sqrt(2 * np.pi)), "C0-")
        ax.set_xlabel(f"ln multiplier of {p}")
        ax.set_title(f"x{mult:.2g}, omega {omega:.2g}", fontsize=9)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    t = fit.table
    y = np.arange(len(t))
    pub = t["published"].to_numpy(float)
    # a difference (RESPONSE_difference_by_crs, often published as 0) is drawn as 1 + its distance
    # from the published value; everything else as a ratio to it
    diff = np.array([bool(BY_CRS.match(name)) for name in t["target"]])

    def scaled(v):
        return np.where(diff, 1.0 + v - pub, v / np.where(diff, 1.0, pub))

    low, high = scaled(t["ci95_low"].to_numpy(float)), scaled(t["ci95_high"].to_numpy(float))
    ax.errorbar(np.ones(len(t)), y, xerr=np.vstack([1 - low, high - 1]), fmt="ks", capsize=3,
                label="published (95% CI)")
    ax.plot(scaled(t["model_weighted"].to_numpy(float)), y + 0.15, "C0o", label="reweighted")
    if check is not None:
        ax.plot(scaled(check["model"].to_numpy(float)), y - 0.15, "C3^", label="re-simulated")
    ax.set_yticks(y, list(t["target"]))
    ax.set_xlabel("model / published (differences: 1 + model - published)")
    ax.legend(fontsize=7)
    ax.set_title(f"fit (ESS {fit.ess:.0f})", fontsize=9)
    fig.tight_layout()
    return fig


def calibrate_population(scenario: Scenario, targets: TargetSet, n: int, seed: int, rounds: int,
                         simulate, out: Path) -> Fit:
    """Fit in ``rounds`` rounds: each round simulates a fresh plausible population centred on the
    previous round's typical values (sequential importance sampling), so the weights of the last
    round stay close to even even when the fit moves far from the design's values.

    ``simulate(scenario, label)`` runs a scenario and returns a trial result."""
    if scenario.population.calibration is not None:
        raise ScenarioError("calibrate a scenario without population.calibration (the fit replaces it)")
    centre = {p: 1.0 for p in targets.parameters}
    base, fit = scenario, None
    for r in range(rounds):
        if fit is not None or targets.held:
            path = out / f"round{r}.yaml"
            path.write_text(calibration_yaml(fit, targets, scenario.name, n, seed) if fit is not None
                            else "\n".join(["# held parameters only (first round)", "parameters:",
                                             *held_lines(targets)]) + "\n")
            base = scenario.model_copy(update={"population": scenario.population.model_copy(
                update={"calibration": str(path.resolve())})})
        plausible = plausible_scenario(base, targets, n, seed + r)
        patients = with_levels(simulate(plausible, f"plausible population, round {r + 1} of {rounds} ({n})"),
                               targets)
        logm = log_multipliers(plausible, targets, patients["patient_id"].to_numpy())
        fit = fit_weights(patients, logm, targets)
        fit.parameters = {p: (centre[p] * m, om) for p, (m, om) in fit.parameters.items()}
        # the round's plausible patients on the same scale as the fitted multipliers (relative
        # to the design, not to this round's centre), for the diagnostics figure
        fit.log_multipliers = {p: l + np.log(centre[p]) for p, l in fit.log_multipliers.items()}
        centre = {p: m for p, (m, _) in fit.parameters.items()}
    return fit
