"""Statistics of a virtual trial: response rates, Kaplan-Meier endpoints, arm comparisons.

Every function takes a patients table laid out as in ``docs/trial-outputs.md`` (one row
per randomised patient) and returns plain, JSON-safe Python data: floats, ints, strings,
lists, dicts and ``None`` where a quantity is undefined (never NaN or numpy scalars).
Times are in days. Kaplan-Meier, Cox and log-rank computations use lifelines.

References
----------
Clopper CJ, Pearson ES. The use of confidence or fiducial limits illustrated in the case of
the binomial. Biometrika 1934;26:404-413. doi:10.1093/biomet/26.4.404
Brookmeyer R, Crowley J. A confidence interval for the median survival time.
Biometrics 1982;38:29-41. doi:10.2307/2530286
Rejeski K, et al. CAR-HEMATOTOX: a model for CAR T-cell-related hematologic toxicity in
relapsed/refractory large B-cell lymphoma. Blood 2021;138:2499-2513.
doi:10.1182/blood.2020010543 (low risk 0-1, high risk >=2)
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from scipy.special import expit
from scipy.stats import binomtest, norm

from carcell.errors import TrialDataError

#: best_response categories counted as objective response
RESPONDER_CATEGORIES = ("CR", "VGPR", "PR")
#: response criteria a trial may use
CRITERIA = ("lugano", "imwg", "marrow_blasts", "recist", "rano")
#: causes of death of the contract, always reported (possibly 0)
DEATH_CAUSES = ("progression", "crs", "icans", "infection", "other")
#: age threshold of the default age subgroup, years
AGE_SPLIT_YEARS = 65.0
#: CAR-HEMATOTOX high-risk threshold (Rejeski 2021)
HEMATOTOX_HIGH_RISK = 2.0


# ---------------------------------------------------------------- helpers

def _float(x: Any) -> float | None:
    """A finite Python float, or None for NaN, +-inf and None."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def json_safe(obj: Any) -> Any:
    """``obj`` with numpy scalars turned into Python ones and NaN/inf into None, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def _require(df: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TrialDataError(f"{what} needs column(s) {', '.join(missing)} in the patients table "
                             f"(see docs/trial-outputs.md); it has: {', '.join(map(str, df.columns))}")


def event_flags(values: Any) -> np.ndarray:
    """Event flags (bool, 0/1, or object with missing values) as a bool array; missing = censored."""
    s = pd.Series(values)
    return s.where(s.notna(), False).astype(bool).to_numpy()


def rows_where(frame: pd.DataFrame, mask: Any, renumber: bool = False) -> pd.DataFrame:
    """The rows of ``frame`` where ``mask`` holds: the frame itself when that is every row (a
    large run's statistics frame, 10^6 patients, is then not copied), else a copy; with
    ``renumber``, indexed 0..n-1 either way."""
    mask = np.asarray(mask, dtype=bool)
    if mask.all() and not (renumber and not frame.index.equals(pd.RangeIndex(len(frame)))):
        return frame
    rows = frame[mask]
    return rows.reset_index(drop=True) if renumber else rows


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise TrialDataError(f"confidence level = {level!r} must lie strictly between 0 and 1, e.g. 0.95")
    return float(norm.ppf(0.5 + level / 2.0))


def arms_in_order(patients: pd.DataFrame) -> list[str]:
    """Arm names in order of first appearance in the patients table."""
    _require(patients, ["arm"], "arms_in_order")
    return [str(a) for a in pd.unique(patients["arm"].astype(str))]


def default_reference_arm(patients: pd.DataFrame) -> str | None:
    """The comparator arm: the first SOC arm if any, else None for a single arm, else the first arm."""
    arms = arms_in_order(patients)
    if "arm_kind" in patients.columns:
        kinds = patients.drop_duplicates("arm").set_index("arm")["arm_kind"].astype(str)
        for a in arms:
            if kinds.get(a) == "soc":
                return a
    if len(arms) < 2:
        return None
    return arms[0]


# ---------------------------------------------------------------- rates

def binomial_rate(events: int, n: int, level: float = 0.95) -> dict:
    """Proportion ``events / n`` with its Clopper-Pearson exact confidence interval.

    Parameters
    ----------
    events, n : int
        Number of patients with the outcome and the denominator, ``0 <= events <= n``.
    level : float
        Confidence level of the interval (stored under ``"ci95"`` whatever the level).

    Returns
    -------
    dict
        ``{"estimate", "ci95": [lo, hi], "events", "n"}``; estimate and bounds are None when n == 0.

    Examples
    --------
    >>> r = binomial_rate(82, 101)
    >>> round(r["estimate"], 3), [round(b, 3) for b in r["ci95"]]
    (0.812, [0.722, 0.883])
    """
    events, n = int(events), int(n)
    if n < 0 or events < 0 or events > n:
        raise TrialDataError(f"binomial_rate(events={events}, n={n}): need 0 <= events <= n")
    _z(level)
    if n == 0:
        return {"estimate": None, "ci95": [None, None], "events": 0, "n": 0}
    ci = binomtest(events, n).proportion_ci(confidence_level=level, method="exact")
    return {"estimate": events / n, "ci95": [float(ci.low), float(ci.high)], "events": events, "n": n}


# ---------------------------------------------------------------- Kaplan-Meier

def km_summary(time: Any, event: Any, landmarks_days: Sequence[float] = (180, 365, 730),
               level: float = 0.95) -> dict:
    """Kaplan-Meier median and landmark survival of one group.

    Parameters
    ----------
    time : array-like of float, shape (n,)
        Time to event or censoring, days; rows with a missing time are left out.
    event : array-like of bool, shape (n,)
        True where the event was observed; missing flags count as censored.
    landmarks_days : sequence of float
        Times at which to read the survival estimate.
    level : float
        Confidence level (Greenwood log(-log) intervals of lifelines for S(t); the median's
        interval is where these bands cross 0.5, Brookmeyer-Crowley style).

    Returns
    -------
    dict
        ``{"n", "events", "median_days", "median_ci95": [lo, hi], "landmarks": {"180":
        {"estimate", "ci95"}, ...}}``. The median (or a bound) is None where the curve
        (or band) never falls to 0.5. A landmark after the last observed time is None
        (estimate and bounds), except after a curve that already fell to 0, where it is 0.
    """
    t = np.asarray(time, dtype=float).ravel()
    e = event_flags(np.asarray(event, dtype=object))
    if t.shape != e.shape:
        raise TrialDataError(f"km_summary: time has {t.size} values but event has {e.size}")
    keep = np.isfinite(t)
    t, e = t[keep], e[keep]
    none_landmark = {"estimate": None, "ci95": [None, None]}
    keys = [str(int(round(float(d)))) for d in landmarks_days]
    out: dict[str, Any] = {"n": int(t.size), "events": int(e.sum()), "median_days": None,
                           "median_ci95": [None, None], "landmarks": {k: dict(none_landmark) for k in keys}}
    if t.size == 0:
        return out
    if (t < 0).any():
        raise TrialDataError(f"km_summary: {int((t < 0).sum())} negative time(s); times are days from day 0")
    kmf = KaplanMeierFitter(alpha=1.0 - level).fit(t, e)
    out["median_days"] = _float(kmf.median_survival_time_)
    med_ci = median_survival_times(kmf.confidence_interval_)
    out["median_ci95"] = [_float(med_ci.iloc[0, 0]), _float(med_ci.iloc[0, 1])]
    sf = kmf.survival_function_.iloc[:, 0]
    ci = kmf.confidence_interval_
    timeline = sf.index.to_numpy(dtype=float)
    last = float(t.max())
    for key, day in zip(keys, landmarks_days):
        day = float(day)
        if day > last:
            if float(sf.iloc[-1]) == 0.0:   # every patient had the event: S stays 0
                out["landmarks"][key] = {"estimate": 0.0, "ci95": [0.0, 0.0]}
            continue
        i = int(np.searchsorted(timeline, day, side="right")) - 1
        out["landmarks"][key] = {"estimate": _float(sf.iloc[i]),
                                 "ci95": [_float(ci.iloc[i, 0]), _float(ci.iloc[i, 1])]}
    return out


# ---------------------------------------------------------------- comparisons

def _endpoint_columns(endpoint: str) -> tuple[str, str]:
    return f"{endpoint}_days", f"{endpoint}_event"


def compare_arms(patients: pd.DataFrame, arm: str, reference: str, endpoint: str = "pfs") -> dict:
    """Hazard ratio (Cox) and log-rank p of ``arm`` against ``reference`` for one endpoint.

    The Cox model has one binary covariate (1 = ``arm``, 0 = ``reference``; Efron ties);
    all randomised patients with a recorded time are analysed (intention to treat).

    Returns
    -------
    dict
        ``{"arm", "reference", "endpoint", "hazard_ratio", "ci95": [lo, hi], "logrank_p",
        "n_arm", "n_reference", "events_arm", "events_reference", "reason"}``; where the
        hazard ratio cannot be estimated (no events in an arm, no convergence) it and its
        bounds are None and ``reason`` says why (``reason`` is None otherwise). ``logrank_p``
        is None only when there are no events at all.
    """
    tcol, ecol = _endpoint_columns(endpoint)
    _require(patients, ["arm", tcol, ecol], f"compare_arms(endpoint={endpoint!r})")
    arms = arms_in_order(patients)
    for a in (arm, reference):
        if a not in arms:
            raise TrialDataError(f"arm {a!r} is not in the patients table; arms: {', '.join(arms)}")
    if arm == reference:
        raise TrialDataError(f"compare_arms: arm and reference are both {arm!r}; pick two different arms")
    names = patients["arm"].astype(str)
    sub = patients[names.isin([arm, reference])]
    t = pd.to_numeric(sub[tcol], errors="coerce").to_numpy(dtype=float)
    e = event_flags(sub[ecol].to_numpy(dtype=object))
    x = (sub["arm"].astype(str) == arm).to_numpy()
    keep = np.isfinite(t)
    t, e, x = t[keep], e[keep], x[keep]
    out: dict[str, Any] = {
        "arm": arm, "reference": reference, "endpoint": endpoint,
        "hazard_ratio": None, "ci95": [None, None], "logrank_p": None,
        "n_arm": int(x.sum()), "n_reference": int((~x).sum()),
        "events_arm": int(e[x].sum()), "events_reference": int(e[~x].sum()), "reason": None,
    }
    if out["n_arm"] == 0 or out["n_reference"] == 0:
        out["reason"] = f"no patients with a recorded {tcol} in arm {arm if out['n_arm'] == 0 else reference!r}"
        return out
    if out["events_arm"] + out["events_reference"] == 0:
        out["reason"] = f"no {endpoint} events in either arm"
        return out
    out["logrank_p"] = _float(logrank_test(t[x], t[~x], e[x], e[~x]).p_value)
    if out["events_arm"] == 0 or out["events_reference"] == 0:
        empty = arm if out["events_arm"] == 0 else reference
        out["reason"] = (f"no {endpoint} events in arm {empty!r}: the hazard ratio is not estimable "
                         f"(partial likelihood has no maximum)")
        return out
    hr, lo, hi, reason = _cox_hazard_ratio(t, e, x)
    out.update(hazard_ratio=hr, ci95=[lo, hi], reason=reason)
    return out


def _cox_hazard_ratio(t: np.ndarray, e: np.ndarray, x: np.ndarray
                      ) -> tuple[float | None, float | None, float | None, str | None]:
    df = pd.DataFrame({"t": t, "e": e.astype(int), "x": x.astype(float)})
    try:
        with warnings.catch_warnings():
            # lifelines warns on near-separation; a non-finite interval below reports it instead
            warnings.simplefilter("ignore")
            cph = CoxPHFitter().fit(df, duration_col="t", event_col="e")
    except (ConvergenceError, np.linalg.LinAlgError) as err:
        return None, None, None, f"Cox model did not converge: {err}".splitlines()[0]
    coef = float(cph.params_["x"])
    lo, hi = (float(v) for v in cph.confidence_intervals_.loc["x"])
    if not all(math.isfinite(v) and abs(v) < 50 for v in (coef, lo, hi)):
        return None, None, None, "Cox model did not converge (near-complete separation between arms)"
    return math.exp(coef), math.exp(lo), math.exp(hi), None


def _default_subgroups(pair: pd.DataFrame) -> dict[str, Callable[[pd.DataFrame], pd.Series]]:
    """Baseline splits available in both arms of ``pair``: age, baseline burden, HEMATOTOX."""

    def available(column: str) -> bool:
        return column in pair.columns and bool(
            pair.groupby(pair["arm"].astype(str))[column].apply(lambda s: s.notna().any()).all())

    def split(column: str, threshold: float, below: str, above: str) -> Callable[[pd.DataFrame], pd.Series]:
        def labels(df: pd.DataFrame) -> pd.Series:
            v = pd.to_numeric(df[column], errors="coerce")
            lab = pd.Series(np.where(v < threshold, below, above), index=df.index)
            return pd.Series(pd.Categorical(lab.where(v.notna()), categories=[below, above]), index=df.index)
        return labels

    out: dict[str, Callable[[pd.DataFrame], pd.Series]] = {}
    if available("age_years"):
        out["age"] = split("age_years", AGE_SPLIT_YEARS, f"<{AGE_SPLIT_YEARS:g} y", f">={AGE_SPLIT_YEARS:g} y")
    if available("baseline_burden_cells"):
        median = float(pd.to_numeric(pair["baseline_burden_cells"], errors="coerce").median())
        out["baseline burden"] = split("baseline_burden_cells", median,
                                       f"below median ({median:.2g} cells)", "at or above median")
    if available("hematotox_score"):
        out["CAR-HEMATOTOX"] = split("hematotox_score", HEMATOTOX_HIGH_RISK, "low (0-1)", "high (>=2)")
    return out


def subgroup_hazard_ratios(patients: pd.DataFrame, arm: str, reference: str, endpoint: str = "pfs",
                           subgroups: Mapping[str, Callable[[pd.DataFrame], pd.Series]] | None = None
                           ) -> pd.DataFrame:
    """Hazard ratios of ``arm`` vs ``reference`` overall and within baseline subgroups.

    Parameters
    ----------
    subgroups : mapping of name -> function, optional
        Each function takes the two-arm patients table and returns a Series of level labels
        (missing label = patient left out of that subgroup); levels appear in category order
        for a Categorical, else sorted. Default: age (<65 vs >=65 years), baseline burden
        (below / at or above the pooled median) and CAR-HEMATOTOX (0-1 vs >=2), each only
        when the column is present with values in both arms.

    Returns
    -------
    DataFrame
        Columns subgroup, level, n, events, hazard_ratio, ci_low, ci_high; the overall row
        (subgroup "overall", level "all") first; NaN hazard ratio where not estimable.
    """
    tcol, ecol = _endpoint_columns(endpoint)
    _require(patients, ["arm", tcol, ecol], f"subgroup_hazard_ratios(endpoint={endpoint!r})")
    pair = patients[patients["arm"].astype(str).isin([arm, reference])]
    if subgroups is None:
        subgroups = _default_subgroups(pair)

    def row(subgroup: str, level: str, df: pd.DataFrame) -> dict:
        if df["arm"].astype(str).nunique() < 2:     # a level with one arm only: counts, no ratio
            timed = pd.to_numeric(df[tcol], errors="coerce").notna().to_numpy()
            n = int(timed.sum())
            ev = int(event_flags(df[ecol].to_numpy(dtype=object))[timed].sum())
            hr, lo, hi = None, None, None
        else:
            c = compare_arms(df, arm, reference, endpoint)
            n = c["n_arm"] + c["n_reference"]
            ev = c["events_arm"] + c["events_reference"]
            hr, (lo, hi) = c["hazard_ratio"], c["ci95"]
        nan = float("nan")
        return {"subgroup": subgroup, "level": level, "n": n, "events": ev,
                "hazard_ratio": nan if hr is None else hr,
                "ci_low": nan if lo is None else lo, "ci_high": nan if hi is None else hi}

    rows = [row("overall", "all", pair)]
    for name, labels_of in subgroups.items():
        labels = labels_of(pair)
        if isinstance(labels.dtype, pd.CategoricalDtype):
            levels = [str(c) for c in labels.cat.categories]
            labels = labels.astype(object)
        else:
            levels = sorted({str(v) for v in labels.dropna()})
        labels = labels.where(labels.isna(), labels.astype(str))
        for level in levels:
            df = pair[(labels == level).to_numpy()]
            if len(df):
                rows.append(row(name, level, df))
    return pd.DataFrame(rows, columns=["subgroup", "level", "n", "events", "hazard_ratio", "ci_low", "ci_high"])


# ---------------------------------------------------------------- exposure-response

def _grade_at_least(grade: float) -> Callable[[pd.Series], pd.Series]:
    def outcome(values: pd.Series) -> pd.Series:
        g = pd.to_numeric(values, errors="coerce")
        return (g >= grade).astype(float).where(g.notna())
    return outcome


def _category_in(categories: tuple[str, ...]) -> Callable[[pd.Series], pd.Series]:
    def outcome(values: pd.Series) -> pd.Series:
        return values.astype(str).isin(categories).astype(float)
    return outcome


#: binary outcomes of exposure_response: name -> (column, function(column) -> 1/0, NaN = unknown)
OUTCOMES: dict[str, tuple[str, Callable[[pd.Series], pd.Series]]] = {
    "responder": ("best_response", _category_in(RESPONDER_CATEGORIES)),
    "complete_response": ("best_response", _category_in(("CR",))),
    "crs_grade3plus": ("crs_max_grade", _grade_at_least(3)),
    "icans_grade3plus": ("icans_max_grade", _grade_at_least(3)),
    "crs_any": ("crs_max_grade", _grade_at_least(1)),
    "icans_any": ("icans_max_grade", _grade_at_least(1)),
}

#: fewest patients for which exposure_response fits a slope
MIN_PATIENTS_LOGISTIC = 10


def _fit_logistic(x: np.ndarray, y: np.ndarray, max_iter: int = 100, tol: float = 1e-10
                  ) -> tuple[np.ndarray, np.ndarray] | str:
    """Maximum-likelihood (Newton-Raphson) fit of logit P(y=1) = b0 + b1 x.

    Returns (beta, covariance) or a note saying why there is no fit.
    """
    centre = float(x.mean())
    X = np.column_stack([np.ones_like(x), x - centre])  # centred: well-conditioned Hessian
    beta = np.zeros(2)
    for _ in range(max_iter):
        p = expit(X @ beta)
        hess = X.T @ (X * (p * (1.0 - p))[:, None])
        try:
            step = np.linalg.solve(hess, X.T @ (y - p))
        except np.linalg.LinAlgError:
            return "singular information matrix (exposure or outcome without variation)"
        beta = beta + step
        if np.max(np.abs(step)) < tol:
            break
    else:
        return f"no convergence in {max_iter} Newton steps (complete or quasi-complete separation)"
    if np.max(np.abs(beta)) > 30:
        return "slope diverges (complete or quasi-complete separation of outcome by exposure)"
    p = expit(X @ beta)
    cov_c = np.linalg.inv(X.T @ (X * (p * (1.0 - p))[:, None]))
    # back from centred x: b0 = a0 - a1 * centre
    J = np.array([[1.0, -centre], [0.0, 1.0]])
    return np.array([beta[0] - beta[1] * centre, beta[1]]), J @ cov_c @ J.T


def exposure_response(patients: pd.DataFrame, exposure: str = "auc_0_28_copies_day_per_ug",
                      outcome: str = "responder") -> dict:
    """Logistic regression of a binary outcome on log10(exposure), and rates by exposure quartile.

    Patients with a finite positive exposure and a known outcome are analysed. The model is
    logit P(outcome) = intercept + slope * log10(exposure), fitted by maximum likelihood
    (Newton-Raphson); ``odds_ratio_per_10fold`` = exp(slope) with a 95% Wald interval, and
    ``p_value`` is the two-sided Wald test of slope = 0.

    Parameters
    ----------
    outcome : str
        One of ``OUTCOMES``: responder (CR/VGPR/PR), complete_response, crs_grade3plus,
        icans_grade3plus, crs_any, icans_any.

    Returns
    -------
    dict
        ``{"exposure", "outcome", "n", "events", "intercept", "slope", "slope_se",
        "odds_ratio_per_10fold", "odds_ratio_ci95", "p_value", "quartiles", "note"}``;
        ``quartiles`` is a list of ``{"quartile", "low", "high", "median", "n", "events",
        "rate", "ci95"}``. Without a fit (fewer than 10 patients, outcome all 0 or all 1,
        separation) the model entries are None and ``note`` says why; ``note`` is None otherwise.
    """
    if outcome not in OUTCOMES:
        raise TrialDataError(f"exposure_response(outcome={outcome!r}) is unknown; known: {', '.join(OUTCOMES)}")
    column, is_event = OUTCOMES[outcome]
    _require(patients, [exposure, column], f"exposure_response(outcome={outcome!r})")
    expo = pd.to_numeric(patients[exposure], errors="coerce").to_numpy(dtype=float)
    y_all = is_event(patients[column]).to_numpy(dtype=float)
    keep = np.isfinite(expo) & (expo > 0) & np.isfinite(y_all)
    expo, y = expo[keep], y_all[keep]
    out: dict[str, Any] = {"exposure": exposure, "outcome": outcome, "n": int(y.size), "events": int(y.sum()),
                           "intercept": None, "slope": None, "slope_se": None, "odds_ratio_per_10fold": None,
                           "odds_ratio_ci95": [None, None], "p_value": None, "quartiles": [], "note": None}
    if y.size:
        single = np.unique(expo).size == 1     # qcut has no bin for a single value
        bins = np.zeros(expo.size) if single else pd.qcut(expo, 4, labels=False, duplicates="drop")
        for q in range(int(np.nanmax(bins)) + 1):
            inq = bins == q
            if not inq.any():                   # fewer patients than quartiles
                continue
            rate = binomial_rate(int(y[inq].sum()), int(inq.sum()))
            out["quartiles"].append({"quartile": len(out["quartiles"]) + 1, "low": float(expo[inq].min()), "high": float(expo[inq].max()),
                                     "median": float(np.median(expo[inq])), "n": rate["n"], "events": rate["events"],
                                     "rate": rate["estimate"], "ci95": rate["ci95"]})
    if y.size < MIN_PATIENTS_LOGISTIC:
        out["note"] = f"{y.size} patients with positive {exposure} and known {outcome}; need >= {MIN_PATIENTS_LOGISTIC}"
        return out
    if y.min() == y.max():
        out["note"] = f"{outcome} is {'present' if y[0] else 'absent'} in all {y.size} patients: no slope to fit"
        return out
    x = np.log10(expo)
    if np.ptp(x) == 0:
        out["note"] = f"all {y.size} patients have the same {exposure}: no slope to fit"
        return out
    fit = _fit_logistic(x, y)
    if isinstance(fit, str):
        out["note"] = fit
        return out
    beta, cov = fit
    se = math.sqrt(float(cov[1, 1]))
    z = _z(0.95)
    slope = float(beta[1])
    out.update(intercept=float(beta[0]), slope=slope, slope_se=se,
               odds_ratio_per_10fold=math.exp(slope),
               odds_ratio_ci95=[math.exp(slope - z * se), math.exp(slope + z * se)],
               p_value=float(2.0 * norm.sf(abs(slope / se))))
    return out


# ---------------------------------------------------------------- arms and trial

def _rate_where(df: pd.DataFrame, column: str, test: Callable[[pd.Series], pd.Series], kind: str) -> dict | None:
    """binomial_rate of ``test`` over rows with a recorded value; None for a SOC arm without values."""
    if column not in df.columns:
        return None if kind == "soc" else binomial_rate(0, 0)
    v = pd.to_numeric(df[column], errors="coerce")
    known = v.notna()
    if kind == "soc" and not known.any():
        return None
    return binomial_rate(int(test(v[known]).sum()), int(known.sum()))


def arm_summary(patients: pd.DataFrame, criteria: str, landmarks_days: Sequence[float] = (180, 365, 730)) -> dict:
    """Summary of one arm: response rates, survival endpoints, toxicity and deaths.

    Response rates use the randomised (ITT) denominator; ``orr_infused`` and ``cr_infused``
    use the infused patients. Toxicity rates are over infused patients with a recorded grade
    or dose (None for a SOC arm where these columns are empty). PFS, OS and EFS are over all
    randomised patients, DOR over responders.

    Parameters
    ----------
    patients : DataFrame
        Rows of a single arm (docs/trial-outputs.md).
    criteria : {"lugano", "imwg", "marrow_blasts", "recist", "rano"}
        Adds ``cr_cri`` (and ``mrd_negative`` if the column exists) for marrow_blasts,
        ``cr_or_better``, ``vgpr_or_better`` (and ``stringent_cr``, ``mrd_negative`` if the
        columns exist) for imwg, ``disease_control`` (CR, PR or SD as best response) for
        recist and rano.
    """
    if criteria not in CRITERIA:
        raise TrialDataError(f"response criteria {criteria!r} are unknown; known: {', '.join(CRITERIA)}")
    _require(patients, ["arm", "arm_kind", "infused", "best_response", "pfs_days", "pfs_event",
                        "os_days", "os_event"], "arm_summary")
    arms = arms_in_order(patients)
    if len(arms) > 1:
        raise TrialDataError(f"arm_summary takes the rows of one arm; got arms {', '.join(arms)}")
    kind = str(patients["arm_kind"].iloc[0]) if len(patients) else "car"
    n = len(patients)
    infused = event_flags(patients["infused"].to_numpy(dtype=object))
    best = patients["best_response"].astype(str).to_numpy()
    responders = np.isin(best, RESPONDER_CATEGORIES)
    cr = best == "CR"
    out: dict[str, Any] = {
        "kind": kind, "n_randomised": n, "n_infused": int(infused.sum()),
        "orr": binomial_rate(int(responders.sum()), n),
        "cr": binomial_rate(int(cr.sum()), n),
        "orr_infused": binomial_rate(int((responders & infused).sum()), int(infused.sum())),
        "cr_infused": binomial_rate(int((cr & infused).sum()), int(infused.sum())),
    }
    if criteria == "marrow_blasts":
        out["cr_cri"] = binomial_rate(int(cr.sum()), n)
        if "mrd_negative" in patients.columns:
            mrd_negative = event_flags(patients["mrd_negative"].to_numpy(dtype=object))
            out["mrd_negative"] = binomial_rate(int(mrd_negative.sum()), n)
    elif criteria in ("recist", "rano"):
        out["disease_control"] = binomial_rate(int(np.isin(best, ("CR", "PR", "SD")).sum()), n)
    elif criteria == "imwg":
        out["cr_or_better"] = binomial_rate(int(cr.sum()), n)
        out["vgpr_or_better"] = binomial_rate(int(np.isin(best, ("CR", "VGPR")).sum()), n)
        for col in ("stringent_cr", "mrd_negative"):   # absent in comparator-only tables
            if col in patients.columns:
                flag = event_flags(patients[col].to_numpy(dtype=object))
                out[col] = binomial_rate(int(flag.sum()), n)

    def km(endpoint: str, rows: np.ndarray | slice = slice(None)) -> dict:
        tcol, ecol = _endpoint_columns(endpoint)
        return km_summary(patients[tcol].to_numpy(dtype=float)[rows],
                          patients[ecol].to_numpy(dtype=object)[rows], landmarks_days)

    out["pfs"] = km("pfs")
    out["os"] = km("os")
    out["efs"] = km("efs") if {"efs_days", "efs_event"} <= set(patients.columns) else km("pfs")
    if {"dor_days", "dor_event"} <= set(patients.columns):
        out["dor"] = km("dor", responders)
    else:
        out["dor"] = km_summary([], [], landmarks_days)

    tox = rows_where(patients, infused)
    out["toxicity"] = {
        "crs_any": _rate_where(tox, "crs_max_grade", lambda g: g >= 1, kind),
        "crs_grade3plus": _rate_where(tox, "crs_max_grade", lambda g: g >= 3, kind),
        "icans_any": _rate_where(tox, "icans_max_grade", lambda g: g >= 1, kind),
        "icans_grade3plus": _rate_where(tox, "icans_max_grade", lambda g: g >= 3, kind),
        "tocilizumab_use": _rate_where(tox, "tocilizumab_doses", lambda d: d > 0, kind),
        "steroid_use": _rate_where(tox, "steroid_days", lambda d: d > 0, kind),
    }
    causes = (patients["death_cause"].fillna("none").astype(str) if "death_cause" in patients.columns
              else pd.Series(["none"] * n))
    counts = causes[causes != "none"].value_counts()
    deaths = {"total": int(counts.sum()), **{c: int(counts.get(c, 0)) for c in DEATH_CAUSES}}
    deaths.update({str(c): int(k) for c, k in counts.items() if c not in deaths})
    out["deaths"] = deaths
    return json_safe(out)


def trial_summary(patients: pd.DataFrame, *, name: str, disease: str, criteria: str, follow_up_days: float,
                  seed: int, reference_arm: str | None = None,
                  landmarks_days: Sequence[float] = (180, 365, 730),
                  arm_order: Sequence[str] | None = None) -> dict:
    """The ``trial.json`` dictionary of docs/trial-outputs.md.

    Every arm is summarised with :func:`arm_summary`; every arm other than the reference is
    compared with it (:func:`compare_arms`) for PFS and OS, and EFS under marrow_blasts
    criteria. The reference defaults to :func:`default_reference_arm` (first SOC arm, else
    the first arm; none for a single-arm trial). Arms come in ``arm_order`` when given (the
    scenario's), else in order of first appearance. The result is JSON-safe
    (``json.dumps(..., allow_nan=False)`` works).
    """
    arms = arms_in_order(patients)
    if arm_order is not None:   # the scenario's order, for the arms that have patients
        arms = [a for a in arm_order if a in arms] + [a for a in arms if a not in arm_order]
    if reference_arm is None:
        reference_arm = default_reference_arm(patients)
    elif reference_arm not in arms:
        raise TrialDataError(f"reference_arm {reference_arm!r} is not in the patients table; arms: {', '.join(arms)}")
    names = patients["arm"].astype(str)
    summaries = {a: arm_summary(rows_where(patients, names == a), criteria, landmarks_days) for a in arms}
    endpoints = ("pfs", "os", "efs") if criteria == "marrow_blasts" else ("pfs", "os")
    comparisons = [compare_arms(patients, a, reference_arm, ep)
                   for a in arms if reference_arm is not None and a != reference_arm for ep in endpoints]
    mitt = int(event_flags(patients["infused"].to_numpy(dtype=object)).sum())
    return json_safe({
        "name": name, "disease": disease, "response_criteria": criteria,
        "follow_up_days": float(follow_up_days), "seed": int(seed),
        "arms": summaries, "comparisons": comparisons,
        "populations": {"itt": len(patients), "mitt": mitt},
    })
