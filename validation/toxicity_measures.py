"""Toxicity measures of a simulated trial arm and their distance to the trial (shared by the
calibration and validation scripts).

Rates are shares of patients whose solver finished. CRS is read on the trial's own scale
(``crs_scale`` in validation/targets/toxicity.yaml: lee2014, penn or astct); neurotoxicity is
ASTCT ICANS. Onset and duration are medians over the patients with CRS (with ICANS, for the
``icans_...`` ones); the rates named ``..._among_crs`` (drugs, vasopressors, oxygen) are shares
of the patients with CRS. Tocilizumab response is the share of patients given tocilizumab for
severe CRS (grade >= 3 on the trial's scale: the population of the FDA's analysis, Le et al.
2018) whose CRS resolved as that analysis defined it (carcell.clinical.management, column
``tocilizumab_response``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import beta, binom, binomtest, norm

from carcell.knowledge import load_knowledge
from carcell.trial.calibrate import level_on_day, rates_by_crs

#: fever (degC), ASTCT 2019 (knowledge/data/grading.yaml)
FEVER_C = float(load_knowledge(False).value("grading.astct2019.fever_celsius"))
#: follow-up of the toxicity runs (days): CRS and ICANS are graded to day 28
FOLLOW_UP_DAYS = 35
#: management for a trial whose own is not published (validation/targets/toxicity.yaml ``protocol``)
DEFAULT_PROTOCOL = "asco2021"


def management_sets(trial: dict) -> list[str]:
    """``--set`` overrides that run a trial's example as the toxicity targets are measured: the
    follow-up and the trial's own management."""
    return [f"trial.follow_up_days={FOLLOW_UP_DAYS}", f"regimen.protocol={trial.get('protocol', DEFAULT_PROTOCOL)}"]


#: spread allowed around a trial's median onset or duration (days): the trials report medians
#: of about 100 patients with wide ranges; 1 day (onset) and 1.5 days (duration) are assumptions
MEDIAN_SD_DAYS = {"crs_onset_median_days": 1.0, "crs_duration_median_days": 1.5,
                  "icans_onset_median_days": 1.0, "icans_duration_median_days": 1.5,
                  "crs_onset_to_tocilizumab_median_days": 1.0, "crs_duration_grade3plus_median_days": 1.5}


#: checks printed beside a published statement, with no interval and never fitted
CHECKS = {"il6_day_28_fold_median"}


def il6_fold(times: np.ndarray, il6: np.ndarray, day: float = 28.0) -> np.ndarray:
    """Each patient's serum IL-6 on ``day`` over its value at infusion (day 0), linear between
    output times: 1 when the cytokine is back where it started."""
    return level_on_day(times, il6, day) / il6[:, 0]


def simulated(p: pd.DataFrame, scale: str) -> dict[str, float]:
    ok = p[p["solver_status"] == "ok"]
    crs = ok["crs_max_grade" if scale == "astct" else f"crs_max_grade_{scale}"]
    icans_any = float((ok["icans_max_grade"] >= 1).mean())
    return {
        "crs_any": float((crs >= 1).mean()), "crs_grade3plus": float((crs >= 3).mean()),
        "neuro_any": icans_any, "icans_any_astct": icans_any,
        "neuro_grade3plus": float((ok["icans_max_grade"] >= 3).mean()),
        "tocilizumab_use": float((ok["tocilizumab_doses"] > 0).mean()),
        "steroid_use": float((ok["steroid_days"] > 0).mean()),
        # shares of the patients with CRS (on the trial's scale), as the pooled ELIANA/ENSIGN
        # safety analysis reports them; steroids for ICANS count too, as the model gives them
        "tocilizumab_use_among_crs": float((ok["tocilizumab_doses"] > 0)[crs >= 1].mean()),
        "steroid_use_among_crs": float((ok["steroid_days"] > 0)[crs >= 1].mean()),
        # the most support a patient with CRS needed: several vasopressors at once (Penn's
        # high-dose) and any oxygen
        "high_dose_vasopressors_among_crs": float((ok["vasopressors_max"] >= 2)[crs >= 1].mean()),
        "oxygen_among_crs": float((ok["oxygen_support_max"] >= 1)[crs >= 1].mean()),
        # patients whose CRS came with a fever (the labels' "manifestations of CRS"); ASTCT and
        # the model's grading open CRS only with one, a trial on an older scale need not have
        "crs_with_fever": float(((crs >= 1) & (ok["temperature_max_c"] >= FEVER_C)).mean()),
        "crs_onset_median_days": float(ok["crs_onset_day"].median()),
        "crs_duration_median_days": float(ok["crs_duration_days"].median()),
        # how long severe CRS lasted: the median duration of CRS among the patients whose CRS
        # reached grade >= 3 on the trial's scale
        "crs_duration_grade3plus_median_days": float(ok["crs_duration_days"][crs >= 3].median()),
        # how long CRS ran before its first tocilizumab, among the patients given tocilizumab for
        # severe CRS (grade >= 3 on the trial's scale), the FDA analysis's population
        "crs_onset_to_tocilizumab_median_days": onset_to_tocilizumab(ok, crs),
        # ICANS onset and duration, medians over the patients with ICANS (their days, all
        # episodes together, as for CRS)
        "icans_onset_median_days": float(ok["icans_onset_day"].median()),
        "icans_duration_median_days": float(ok["icans_duration_days"].median()),
        # of the patients with ICANS, those whose ICANS began after their CRS had ended (ASTCT
        # CRS, its end taken as onset plus the CRS days: exact for one episode)
        "icans_after_crs_among_icans": icans_after_crs(ok),
        # the FDA's analysis population: patients given tocilizumab for severe CRS (grade >= 3 on
        # the trial's scale; NaN when there were none), its response definition
        "tocilizumab_response": float(ok["tocilizumab_response"][crs >= 3].mean()),
        # serum IL-6 on day 28 over its value at infusion, median over all patients (a column
        # the validation adds from the trajectories, il6_fold; NaN without it)
        "il6_day_28_fold_median": float(ok["il6_day_28_fold"].median()) if "il6_day_28_fold" in ok else float("nan"),
    }


def onset_to_tocilizumab(p: pd.DataFrame, crs: pd.Series) -> float:
    """Median days from CRS onset to the first tocilizumab among the patients with severe CRS
    (grade >= 3 on the trial's scale, ``crs``) given it during CRS (NaN when none; also when the
    column is missing, a run from before it was written)."""
    if "tocilizumab_first_day" not in p:
        return float("nan")
    gap = p["tocilizumab_first_day"] - p["crs_onset_day"]
    return float(gap[(crs >= 3) & (gap >= 0)].median())


def icans_after_crs(p: pd.DataFrame) -> float:
    """Share of the patients with ICANS whose ICANS began once their CRS was over (NaN when no
    patient had ICANS). A patient with ICANS and no CRS counts in the denominator only."""
    icans = p["icans_max_grade"] >= 1
    crs_end = p["crs_onset_day"] + p["crs_duration_days"]
    after = (p["icans_onset_day"] >= crs_end) & (p["crs_max_grade"] >= 1)
    return float(after[icans].mean()) if icans.any() else float("nan")


def target_size(target: dict, size: int) -> int:
    """A target's own sample size (``n``: a subset of the trial, e.g. its tocilizumab-treated
    patients) or the trial's infused count."""
    return int(target.get("n", size))


def binomial_deviance(model: float, observed: float, size: int) -> float:
    """2 x log-likelihood ratio of the trial's count under its own rate vs the model's rate."""
    m = min(max(model, 0.5 / size), 1 - 0.5 / size)
    k = observed * size
    a = k * np.log(observed / m) if observed > 0 else 0.0
    b = (size - k) * np.log((1 - observed) / (1 - m)) if observed < 1 else 0.0
    return float(2 * (a + b))


def discrepancy(measure: str, model: float, target: dict, size: int) -> float:
    """One term of the calibration objective (deviance units).

    A measure the simulated arm cannot give (NaN: no patient in its denominator, e.g. a
    tocilizumab response where nobody had severe CRS, or a median onset where nobody had CRS)
    counts as far off as it can be: 25 for a median (5 of its spreads), the larger deviance of
    the two ends of the range for a rate."""
    value, size = float(target["value"]), target_size(target, size)
    if target.get("fit") is False or measure in CHECKS:   # reported beside the model, not fitted
        return 0.0
    if measure in MEDIAN_SD_DAYS:
        if np.isnan(model):
            return 25.0
        return float(((model - value) / MEDIAN_SD_DAYS[measure]) ** 2)
    if np.isnan(model):
        return max(discrepancy(measure, end, target, size) for end in (0.0, 1.0))
    if target.get("compare") == "upper_bound":   # a CTCAE count bounds the ASTCT one from above
        return binomial_deviance(model, value, size) if model > value else 0.0
    return binomial_deviance(model, value, size)


def clopper_pearson(k, n: int, level: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper-Pearson) ``1 - level`` interval of ``k`` events in ``n``, for one count or
    an array of them."""
    k = np.asarray(k)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = np.where(k > 0, beta.ppf(level / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - level / 2, k + 1, n - k), 1.0)
    return low, high


def interval(target: dict, size: int) -> tuple[float, float]:
    """95% Clopper-Pearson interval of a trial rate for its size."""
    size = target_size(target, size)
    low, high = clopper_pearson(int(round(float(target["value"]) * size)), size)
    return float(low), float(high)


def agrees(measure: str, model: float, target: dict, size: int) -> bool | None:
    """Within the trial's 95% CI (below its upper limit for an upper bound); None for medians
    and checks."""
    if measure in MEDIAN_SD_DAYS or measure in CHECKS:
        return None
    low, high = interval(target, size)
    if target.get("compare") == "upper_bound":
        return model <= high
    return low <= model <= high


def chance_outside(model: float, target: dict, size: int, level: float = 0.05) -> float:
    """Probability that a trial of the target's size, whose true rate is the model's, reports a
    rate whose 95% Clopper-Pearson interval leaves the model's rate out (:func:`agrees` would say
    no). Exact, over every count the trial could have seen; at most ``level`` (the interval's
    coverage). For an upper bound (a CTCAE count bounding the ASTCT rate from above) the trial's
    own rate is only known to be at least the model's; taken equal to it, the chance that the
    interval's upper limit falls below the model's rate is the largest the truth allows."""
    n = target_size(target, size)
    k = np.arange(n + 1)
    low, high = clopper_pearson(k, n, level)
    out = high < model if target.get("compare") == "upper_bound" else (model < low) | (model > high)
    return float(binom.pmf(k, n, model)[out].sum())


def p_value(model: float, target: dict, size: int) -> float:
    """How surprising the trial's count is were the model's rate the truth: the exact binomial
    test of the count against the model's rate, two-sided (one-sided for an upper bound: a CTCAE
    count is surprising only if it is below what the model's ASTCT rate gives)."""
    n = target_size(target, size)
    k = int(round(float(target["value"]) * n))
    side = "less" if target.get("compare") == "upper_bound" else "two-sided"
    return float(binomtest(k, n, min(max(model, 1e-12), 1 - 1e-12), alternative=side).pvalue)


def chance_of_at_least(misses: int, chances: list[float]) -> float:
    """Probability of ``misses`` or more events among independent ones with these chances (the
    Poisson-binomial tail, by convolution)."""
    dist = np.array([1.0])
    for c in chances:
        dist = np.convolve(dist, [1.0 - c, c])
    return float(dist[misses:].sum())


def chance_of_no_difference(rate_with: float, rate_without: float, n_with: int, n_without: int,
                            level: float = 0.05) -> float:
    """Probability that a study with ``n_with`` and ``n_without`` patients, whose true response
    rates are ``rate_with`` and ``rate_without``, finds no significant difference between them:
    a two-sided Pearson chi-squared test (two-proportion z-test, pooled variance, no continuity
    correction) at ``level``. Computed exactly over every pair of counts; a table whose pooled
    rate is 0 or 1 shows no difference."""
    k1, k2 = np.arange(n_with + 1)[:, None], np.arange(n_without + 1)[None, :]
    pooled = (k1 + k2) / (n_with + n_without)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_with + 1 / n_without))
    diff = np.abs(k1 / n_with - k2 / n_without)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, diff / se, 0.0)
    same = z < norm.ppf(1 - level / 2)
    weight = binom.pmf(k1, n_with, rate_with) * binom.pmf(k2, n_without, rate_without)
    return float((weight * same).sum())


def no_difference_deviance(chance: float, level: float = 0.05) -> float:
    """Deviance of a study's finding of no significant difference, given the chance the model
    gives it (:func:`chance_of_no_difference`): 2 x log(best chance / chance), the best being
    1 - ``level`` (equal rates). Zero when the model's groups respond alike."""
    return float(2.0 * np.log((1.0 - level) / max(chance, 1e-12))) if chance < 1.0 - level else 0.0


def no_difference_check(rate_with: float, rate_without: float, study: dict) -> tuple[float, float]:
    """The real-world study's finding of no significant difference (validation/targets/
    crs_and_response.yaml) under the model's two response rates: (chance of that finding,
    its deviance as a calibration term)."""
    level = float(study["level"])
    chance = chance_of_no_difference(rate_with, rate_without, int(study["with_crs"]), int(study["without_crs"]), level)
    return chance, no_difference_deviance(chance, level)


def response_by_crs(p: pd.DataFrame, responses: list[str]) -> tuple[float, float]:
    """Share of patients whose best response is in ``responses``, among those with CRS (any
    grade, ASTCT) and those without."""
    ok = p[p["solver_status"] == "ok"]
    return rates_by_crs(ok, ok["best_response"].isin(responses).to_numpy())
