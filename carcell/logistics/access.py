"""Who among a region's eligible patients reaches a CAR-T centre, when, and how fair that is.

A region (``knowledge/data/access.yaml``) is a set of strata (income low/high x residence
urban/rural) with population shares and log-normal travel times to the nearest treatment
centre. Each eligible patient is referred with probability

    logit P(referred) = intercept + distance_coefficient x travel_minutes
                        + income_coefficient x [income is "high"]

where the distance and income coefficients are derived from Chung et al. 2025 (see the notes in
access.yaml) and the intercept is solved when the region is loaded, so that the population's
referral fraction times the preset's typical infusion fraction equals its published treated
fraction. The chain (chain.py) then loses some referred patients on its own; access.py knows
nothing of that.

Levers (:func:`region_with`):

``centres_factor`` (> 0)
    f times as many centres, spread like the existing ones. If centres are scattered over the
    plane with density lambda, the distance from a random home to the nearest one scales as
    1/sqrt(lambda) (for a Poisson pattern its mean is 1/(2 sqrt(lambda))); at a fixed driving
    speed every travel time is multiplied by 1/sqrt(f).
``satellite_sites`` (0..1)
    Share of far patients (travel > ``levers.far_threshold``) who get a satellite site: their
    travel becomes at most ``levers.satellite_travel``.
``travel_support`` (0..1, or true for ``levers.travel_support_share``)
    Share of the distance effect on referral removed (the distance coefficient times 1 - share).
``route``, ``slots_factor``
    Handled by the orchestrator (run.py); kept in ``Region.levers`` untouched.

Random numbers: patient ``i`` draws from ``default_rng(SeedSequence([seed, i, ACCESS_STREAM]))``,
so a patient's stratum, travel, referral and days do not depend on ``n`` or on other patients,
and the same patient meets every lever set with the same draws (common random numbers).

References
----------
Chung AP et al. Inequalities in CAR T-cell therapy access for US patients with relapsed/refractory
DLBCL: a SEER-Medicare data analysis. Blood Adv 2025;9(18):4727-4735.
doi:10.1182/bloodadvances.2024015634
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from scipy.stats import norm

from carcell.errors import ScenarioError, TrialDataError
from carcell.knowledge import Knowledge, load_knowledge

ACCESS_STREAM = 0xACCE55          # this module's random stream, apart from every other draw
ACCESS_LEVERS: tuple[str, ...] = ("centres_factor", "satellite_sites", "travel_support")
PASS_THROUGH_LEVERS: tuple[str, ...] = ("route", "slots_factor")
WAITING_DEATHS: frozenset[str] = frozenset({"death", "progression"})
_U_STRATUM, _U_TRAVEL, _U_SATELLITE, _U_REFERRAL, _U_DELAY, _U_ELIGIBLE = range(6)
_N_UNIFORMS = 6
_HERMITE = np.polynomial.hermite.hermgauss(80)   # E[f(lognormal)] by Gauss-Hermite quadrature


@dataclass(frozen=True)
class Stratum:
    """One population group of a region."""

    name: str
    income: str                  # "low" | "high"
    residence: str               # "urban" | "rural"
    share: float                 # of the region's eligible patients
    travel_median_minutes: float
    travel_log_sd: float


@dataclass(frozen=True)
class Region:
    """A region's eligible population, its referral model and the levers applied to it."""

    name: str
    description: str
    indication: str
    strata: tuple[Stratum, ...]
    intercept: float                       # log-odds of referral at 0 min, low income
    distance_coefficient: float            # log-odds per minute of travel
    income_coefficient: float              # log-odds, high versus low income
    referral_delay: tuple[float, float]    # eligibility -> referral, log-normal [median days, log_sd]
    treated_fraction: float                # published treated / eligible (calibration target)
    infusion_fraction: float               # typical infused / referred
    far_threshold_minutes: float
    satellite_minutes: float
    travel_support_default: float
    travel_scale: float = 1.0              # centres lever: travel times x this
    satellite_share: float = 0.0
    travel_support: float = 0.0
    levers: Mapping[str, object] = field(default_factory=dict)

    @property
    def referral_target(self) -> float:
        """Referral fraction the intercept was solved for: treated fraction / infusion fraction."""
        return self.treated_fraction / self.infusion_fraction

    def stratum(self, name: str) -> Stratum:
        for s in self.strata:
            if s.name == name:
                return s
        raise ScenarioError(f"region {self.name} has no stratum {name!r}; known: "
                            f"{', '.join(s.name for s in self.strata)}")


def region_names(k: Knowledge | None = None) -> list[str]:
    """The regions of knowledge/data/access.yaml."""
    return (k or load_knowledge(fresh=False)).names("access.regions")


def _mean_referral(strata: tuple[Stratum, ...], intercept: float, distance: float, income: float,
                   scale: float = 1.0) -> float:
    """Population referral fraction, exact up to quadrature (no satellites)."""
    x, w = _HERMITE
    total = 0.0
    for s in strata:
        t = scale * s.travel_median_minutes * np.exp(s.travel_log_sd * math.sqrt(2.0) * x)
        p = expit(intercept + distance * t + (income if s.income == "high" else 0.0))
        total += s.share * float(np.sum(w * p)) / math.sqrt(math.pi)
    return total


def load_region(name: str, k: Knowledge | None = None) -> Region:
    """A region preset of access.yaml, with its referral intercept solved.

    Raises
    ------
    ScenarioError
        Unknown region (the message lists the known ones), or strata whose shares do not sum to 1.
    """
    k = k or load_knowledge()
    known = k.names("access.regions")
    if name not in known:
        raise ScenarioError(f"access region {name!r} is unknown; known: {', '.join(known)}")
    base = f"access.regions.{name}"
    v = lambda path: float(k.value(path))  # noqa: E731
    strata = []
    for s in k.names(f"{base}.strata"):
        node = k.node(f"{base}.strata.{s}")
        median, log_sd = k.value(f"{base}.strata.{s}.travel_minutes")
        if node.get("income") not in ("low", "high") or node.get("residence") not in ("urban", "rural"):
            raise ScenarioError(f"{base}.strata.{s}: income must be low|high and residence urban|rural")
        strata.append(Stratum(s, node["income"], node["residence"], v(f"{base}.strata.{s}.share"),
                              float(median), float(log_sd)))
    shares = sum(s.share for s in strata)
    if not strata or abs(shares - 1.0) > 1e-6:
        raise ScenarioError(f"{base}.strata: shares sum to {shares:.6f}, not 1")
    rm = "access.referral_model"
    per_mile = v(f"{rm}.distance_log_odds_per_mile")
    distance = per_mile * v(f"{rm}.reference_drive_miles") / v(f"{rm}.reference_drive_minutes")
    income = math.log(v(f"{rm}.income_odds_ratio")) * v(f"{rm}.income_steps")
    treated = v(f"{base}.calibration.treated") / v(f"{base}.calibration.eligible")
    infusion = v(f"{base}.calibration.infusion_fraction")
    target = treated / infusion
    if not 0.0 < target < 1.0:
        raise ScenarioError(f"{base}.calibration: treated fraction {treated:.4f} / infusion fraction "
                            f"{infusion:.4f} = {target:.4f} is not a probability")
    intercept = brentq(lambda a: _mean_referral(tuple(strata), a, distance, income) - target,
                       -40.0, 40.0, xtol=1e-12)
    delay = k.value("access.referral_delay.eligibility_to_referral")
    return Region(
        name=name, description=str(k.node(f"{base}.description")), indication=str(k.node(f"{base}.indication")),
        strata=tuple(strata), intercept=float(intercept), distance_coefficient=distance, income_coefficient=income,
        referral_delay=(float(delay[0]), float(delay[1])), treated_fraction=treated, infusion_fraction=infusion,
        far_threshold_minutes=v("access.levers.far_threshold"), satellite_minutes=v("access.levers.satellite_travel"),
        travel_support_default=v("access.levers.travel_support_share"),
    )


def _share(lever: str, value: object, default: float | None = None) -> float:
    if value is True and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        allowed = "a share in [0, 1] or true" if default is not None else "a share in [0, 1]"
        raise ScenarioError(f"access lever {lever} = {value!r}: must be {allowed}")
    return float(value)


def region_with(region: Region, levers: Mapping[str, object] | None) -> Region:
    """The region with levers applied on top of those it already has (see the module docstring).

    Raises
    ------
    ScenarioError
        An unknown lever (the message lists the known ones) or a value out of range.
    """
    levers = dict(levers or {})
    unknown = sorted(set(levers) - set(ACCESS_LEVERS) - set(PASS_THROUGH_LEVERS))
    if unknown:
        raise ScenarioError(f"access levers {unknown} are unknown; known: "
                            f"{', '.join(ACCESS_LEVERS + PASS_THROUGH_LEVERS)}")
    changes: dict[str, object] = {}
    if "centres_factor" in levers:
        f = levers["centres_factor"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < float(f) <= 1000.0:
            raise ScenarioError(f"access lever centres_factor = {f!r}: must be a number in (0, 1000] "
                                f"(2 = twice as many centres)")
        changes["travel_scale"] = region.travel_scale / math.sqrt(float(f))
    if "satellite_sites" in levers:
        s = _share("satellite_sites", levers["satellite_sites"])
        changes["satellite_share"] = 1.0 - (1.0 - region.satellite_share) * (1.0 - s)
    if "travel_support" in levers:
        q = _share("travel_support", levers["travel_support"], region.travel_support_default)
        changes["travel_support"] = 1.0 - (1.0 - region.travel_support) * (1.0 - q)
    if "slots_factor" in levers:
        f = levers["slots_factor"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or float(f) <= 0.0:
            raise ScenarioError(f"access lever slots_factor = {f!r}: must be a positive number")
    if "route" in levers and not isinstance(levers["route"], str):
        raise ScenarioError(f"access lever route = {levers['route']!r}: must be a route name")
    return replace(region, levers={**dict(region.levers), **levers}, **changes)


def _uniforms(ids: np.ndarray, seed: int) -> np.ndarray:
    """(n, 6) uniforms in (0, 1), row i from patient ids[i]'s own stream."""
    u = np.array([np.random.default_rng(np.random.SeedSequence([int(seed), int(i), ACCESS_STREAM])).random(_N_UNIFORMS)
                  for i in ids]).reshape(len(ids), _N_UNIFORMS)
    return np.clip(u, 1e-12, 1.0 - 1e-12)


def _population(region: Region, ids: np.ndarray, u: np.ndarray, horizon_days: float) -> pd.DataFrame:
    shares = np.array([s.share for s in region.strata])
    cum = np.cumsum(shares) / shares.sum()
    which = np.minimum(np.searchsorted(cum, u[:, _U_STRATUM], side="right"), len(cum) - 1)
    strata = region.strata
    median = np.array([s.travel_median_minutes for s in strata])[which]
    log_sd = np.array([s.travel_log_sd for s in strata])[which]
    high = np.array([s.income == "high" for s in strata])[which]
    travel = region.travel_scale * median * np.exp(log_sd * norm.ppf(u[:, _U_TRAVEL]))
    satellite = (travel > region.far_threshold_minutes) & (u[:, _U_SATELLITE] < region.satellite_share)
    travel = np.where(satellite, np.minimum(travel, region.satellite_minutes), travel)
    distance = region.distance_coefficient * (1.0 - region.travel_support)
    p = expit(region.intercept + distance * travel + region.income_coefficient * high)
    referred = u[:, _U_REFERRAL] < p
    eligible_day = u[:, _U_ELIGIBLE] * float(horizon_days)
    delay = region.referral_delay[0] * np.exp(region.referral_delay[1] * norm.ppf(u[:, _U_DELAY]))
    return pd.DataFrame({
        "patient_id": ids.astype(np.int64),
        "stratum": np.array([s.name for s in strata], dtype=object)[which],
        "income": np.array([s.income for s in strata], dtype=object)[which],
        "residence": np.array([s.residence for s in strata], dtype=object)[which],
        "travel_minutes": travel,
        "satellite": satellite,
        "referral_probability": p,
        "eligible_day": eligible_day,
        "referred": referred,
        "arrival_day": np.where(referred, eligible_day + delay, np.nan),
    })


def sample_population(region: Region, n: int, horizon_days: float, seed: int, *, first_id: int = 0) -> pd.DataFrame:
    """``n`` eligible patients of the region and who among them is referred, when.

    Parameters
    ----------
    region : Region
        From :func:`load_region`, levers applied with :func:`region_with`.
    n : int
        Eligible patients, with ids ``first_id .. first_id + n - 1``.
    horizon_days : float
        Calendar span over which patients become eligible (uniformly).
    seed : int
        Root seed; each patient's draws come from (seed, patient_id).

    Returns
    -------
    DataFrame, one row per eligible patient
        ``patient_id`` (int64), ``stratum``, ``income`` ("low"/"high"), ``residence``
        ("urban"/"rural"), ``travel_minutes`` (after levers), ``satellite`` (served by a satellite
        site), ``referral_probability``, ``eligible_day`` (calendar day of eligibility),
        ``referred`` (bool), ``arrival_day`` (calendar day of referral = eligible_day + the
        eligibility-to-referral delay; NaN if not referred). The referred rows are the chain's
        ``referrals`` (plus ``route`` and the waiting columns the orchestrator adds); the others
        stay here for the equity tables (not referred).
    """
    if n < 0 or horizon_days <= 0:
        raise ScenarioError(f"sample_population(n={n}, horizon_days={horizon_days}): need n >= 0 and horizon_days > 0")
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return _population(region, ids, _uniforms(ids, seed), horizon_days)


def _truthy(values: pd.Series) -> np.ndarray:
    """Boolean flags with missing values (None, NaN, pd.NA) as False."""
    return (values.notna() & values.astype(bool)).to_numpy(bool)


def _median(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.median()) if len(v) else float("nan")


def equity_table(df: pd.DataFrame, by: str = "stratum") -> pd.DataFrame:
    """Access outcomes per group of eligible patients.

    Parameters
    ----------
    df : DataFrame, one row per eligible patient
        ``by``; ``referred`` (absent: every row was referred); the outcome as ``state``
        ("infused", "not_infused", "waiting"; NaN or "not_referred" for patients never referred)
        or, without ``state``, ``infused`` (bool). Optional: ``reason`` or ``not_infused_reason``
        (deaths while waiting), ``referral_to_infusion_days``, ``cost_total``.
    by : str
        Column to group by.

    Returns
    -------
    DataFrame, one row per group (sorted)
        ``by``, ``n_eligible``, ``n_referred``, ``n_infused``, ``fraction_referred``,
        ``fraction_treated`` (infused / eligible), ``median_referral_to_infusion_days`` (over
        infused patients; NaN without the column), ``deaths_waiting`` (referred, not infused,
        reason death or progression; NaN without a reason column), ``mean_cost`` (mean of
        ``cost_total`` over rows that have one; NaN without the column).
    """
    if by not in df.columns:
        raise TrialDataError(f"equity_table: no column {by!r} to group by; "
                             f"the table has: {', '.join(map(str, df.columns))}")
    referred = _truthy(df["referred"]) if "referred" in df.columns else np.ones(len(df), bool)
    if "state" in df.columns:
        state = df["state"].astype("string").fillna("not_referred")
        infused = (state == "infused").to_numpy(bool)
        not_infused = (state == "not_infused").to_numpy(bool)
    elif "infused" in df.columns:
        infused = _truthy(df["infused"]) & referred
        not_infused = referred & ~infused
    else:
        raise TrialDataError("equity_table needs a 'state' or an 'infused' column")
    reason_col = next((c for c in ("reason", "not_infused_reason") if c in df.columns), None)
    work = pd.DataFrame({by: df[by].to_numpy(), "referred": referred, "infused": infused})
    if reason_col is not None:
        died_of = df[reason_col].astype("string").isin(sorted(WAITING_DEATHS)).to_numpy(bool)
        work["died"] = not_infused & referred & died_of
    rows = []
    for key, g in work.groupby(by, sort=True):
        n = len(g)
        row = {by: key, "n_eligible": n, "n_referred": int(g["referred"].sum()), "n_infused": int(g["infused"].sum())}
        row["fraction_referred"] = row["n_referred"] / n
        row["fraction_treated"] = row["n_infused"] / n
        idx = g.index[g["infused"].to_numpy(bool)]
        row["median_referral_to_infusion_days"] = (_median(df["referral_to_infusion_days"].iloc[idx])
                                                   if "referral_to_infusion_days" in df.columns else float("nan"))
        row["deaths_waiting"] = float(g["died"].sum()) if reason_col is not None else float("nan")
        row["mean_cost"] = (float(pd.to_numeric(df["cost_total"].iloc[g.index], errors="coerce").mean())
                            if "cost_total" in df.columns else float("nan"))
        rows.append(row)
    return pd.DataFrame(rows)


def equity_gaps(table: pd.DataFrame, reference: str, *, by: str = "stratum") -> pd.DataFrame:
    """Gaps in the fraction treated between each group and a reference group.

    Returns
    -------
    DataFrame
        One row per group of ``table`` (from :func:`equity_table`), then a row ``worst_vs_best``:
        ``by``, ``compared_with`` (the reference, or the best group), ``fraction_treated``,
        ``ratio`` (fraction / the compared group's; NaN if that is 0) and ``difference``
        (fraction - the compared group's). Identical groups give ratio 1 and difference 0.
    """
    for col in (by, "fraction_treated"):
        if col not in table.columns:
            raise TrialDataError(f"equity_gaps needs table[{col!r}] (use equity_table first)")
    if table.empty:
        raise TrialDataError("equity_gaps: the table is empty")
    names = table[by].tolist()
    if reference not in names:
        raise ScenarioError(f"equity_gaps: reference {reference!r} is not a group; "
                            f"groups: {', '.join(map(str, names))}")
    f = table["fraction_treated"].to_numpy(float)
    ref = f[names.index(reference)]
    ratio = lambda a, b: a / b if b > 0 else float("nan")  # noqa: E731
    rows = [{by: name, "compared_with": reference, "fraction_treated": x, "ratio": ratio(x, ref),
             "difference": x - ref} for name, x in zip(names, f)]
    best, worst = int(np.argmax(f)), int(np.argmin(f))
    rows.append({by: "worst_vs_best", "compared_with": names[best], "fraction_treated": f[worst],
                 "ratio": ratio(f[worst], f[best]), "difference": f[worst] - f[best]})
    return pd.DataFrame(rows)


def compare_levers(region: Region, scenarios: Mapping[str, Mapping[str, object]], n: int, horizon_days: float,
                   seed: int) -> pd.DataFrame:
    """Referral per stratum under each lever set, with the same patients and draws in every set.

    ``scenarios`` maps a name to levers applied to ``region`` (include ``{"baseline": {}}`` to see
    the region as given). Returns one row per scenario and stratum plus a stratum ``"all"``:
    ``scenario``, ``stratum``, ``n_eligible``, ``n_referred``, ``fraction_referred``,
    ``mean_travel_minutes``, ``expected_treated`` (fraction referred x the region's typical
    infusion fraction; the chain gives the real one).
    """
    ids = np.arange(n, dtype=np.int64)
    u = _uniforms(ids, seed)
    rows = []
    for name, levers in scenarios.items():
        r = region_with(region, levers)
        pop = _population(r, ids, u, horizon_days)
        groups = [(s.name, pop[pop["stratum"] == s.name]) for s in r.strata] + [("all", pop)]
        for stratum, g in groups:
            m = len(g)
            referred = int(g["referred"].sum())
            frac = referred / m if m else float("nan")
            rows.append({"scenario": name, "stratum": stratum, "n_eligible": m, "n_referred": referred,
                         "fraction_referred": frac,
                         "mean_travel_minutes": float(g["travel_minutes"].mean()) if m else float("nan"),
                         "expected_treated": frac * r.infusion_fraction})
    return pd.DataFrame(rows)
