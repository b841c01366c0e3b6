"""Trial statistics (carcell.trial.stats) against hand calculations, published values and lifelines."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.statistics import logrank_test
from lifelines.utils import median_survival_times
from scipy.optimize import minimize
from scipy.stats import binomtest, norm

from carcell.trial.stats import (
    TrialDataError,
    arm_summary,
    binomial_rate,
    compare_arms,
    exposure_response,
    km_summary,
    subgroup_hazard_ratios,
    trial_summary,
)

Z95 = norm.ppf(0.975)

# ---------------------------------------------------------------- synthetic trial tables

#: best_response probabilities of a CAR arm (infused patients)
CAR_RESPONSES = {"lugano": {"CR": 0.5, "PR": 0.25, "SD": 0.1, "PD": 0.15},
                 "imwg": {"CR": 0.4, "VGPR": 0.3, "PR": 0.15, "SD": 0.05, "PD": 0.1},
                 "marrow_blasts": {"CR": 0.8, "NR": 0.2}}
SOC_RESPONSES = {"lugano": {"CR": 0.2, "PR": 0.2, "SD": 0.3, "PD": 0.3},
                 "imwg": {"CR": 0.1, "VGPR": 0.2, "PR": 0.2, "SD": 0.3, "PD": 0.2},
                 "marrow_blasts": {"CR": 0.4, "NR": 0.6}}


def make_patients(seed: int = 0, arms: dict | None = None, criteria: str = "lugano",
                  follow_up_days: float = 730.0) -> pd.DataFrame:
    """A patients table per docs/trial-outputs.md.

    ``arms`` maps name -> (kind, n, median PFS in days); PFS is exponential, OS adds an
    exponential post-progression survival, censoring at ``follow_up_days``.
    """
    arms = arms or {"car-A": ("car", 120, 300.0), "SOC": ("soc", 120, 150.0)}
    rng = np.random.default_rng(seed)
    frames, next_id = [], 1
    for arm, (kind, n, median_pfs) in arms.items():
        car = kind == "car"
        infused = rng.random(n) < 0.9 if car else np.ones(n, bool)
        probs = (CAR_RESPONSES if car else SOC_RESPONSES)[criteria]
        best = rng.choice(list(probs), size=n, p=list(probs.values())).astype(object)
        best[~infused] = "NE"
        responder = np.isin(best, ["CR", "VGPR", "PR"])
        pfs_raw = rng.exponential(median_pfs / math.log(2), n)
        pfs_raw = np.where(responder, pfs_raw * 1.5 + 30, pfs_raw)
        os_raw = pfs_raw + rng.exponential(200.0, n)
        pfs_days = np.minimum(pfs_raw, follow_up_days)
        pfs_event = pfs_raw <= follow_up_days
        os_days = np.minimum(os_raw, follow_up_days)
        os_event = os_raw <= follow_up_days
        response_day = np.where(responder, np.minimum(28.0, 0.5 * pfs_days), np.nan)
        if criteria == "marrow_blasts":
            nr = best == "NR"
            efs_days = np.where(nr, 28.0, pfs_days)
            efs_event = nr | pfs_event
        else:
            efs_days, efs_event = pfs_days, pfs_event
        change = {"CR": -1.0, "VGPR": -0.95, "PR": -0.7, "SD": -0.1, "PD": 0.6, "NR": 0.2, "NE": np.nan}
        best_change = np.array([change[b] for b in best]) + rng.normal(0, 0.05, n)
        best_change = np.where(best == "CR", -1.0, best_change)
        auc = np.where(infused, 10 ** rng.normal(5.0, 0.5, n), np.nan) if car else np.full(n, np.nan)
        crs = np.where(infused, rng.choice([0, 1, 2, 3, 4], n, p=[0.3, 0.3, 0.25, 0.1, 0.05]), np.nan) if car \
            else np.full(n, np.nan)
        icans = np.where(infused, rng.choice([0, 1, 2, 3], n, p=[0.6, 0.2, 0.1, 0.1]), np.nan) if car \
            else np.full(n, np.nan)
        cause = np.where(os_event, rng.choice(["progression", "infection", "other"], n, p=[0.8, 0.1, 0.1]), "none")
        frames.append(pd.DataFrame({
            "patient_id": np.arange(next_id, next_id + n, dtype=np.int64),
            "arm": arm, "arm_kind": kind, "infused": infused,
            "age_years": rng.normal(62, 10, n), "weight_kg": rng.normal(75, 12, n),
            "baseline_burden_cells": 10 ** rng.normal(11, 0.5, n) if car else np.full(n, np.nan),
            "best_response": best, "response_day": response_day,
            "best_change_in_burden": np.where(car, best_change, np.nan),
            "pfs_days": pfs_days, "pfs_event": pfs_event, "efs_days": efs_days, "efs_event": efs_event,
            "os_days": os_days, "os_event": os_event,
            "dor_days": np.where(responder, pfs_days - response_day, np.nan),
            "dor_event": np.where(responder, pfs_event, False),
            "death_day": np.where(os_event, os_days, np.nan), "death_cause": cause,
            "cmax_copies_per_ug": auc / 10, "cmax_cells_per_ul": auc / 1000,
            "auc_0_28_copies_day_per_ug": auc, "tmax_days": np.where(np.isfinite(auc), 10.0, np.nan),
            "crs_max_grade": crs, "icans_max_grade": icans,
            "crs_onset_day": np.where(crs >= 1, rng.uniform(1, 7, n), np.nan),
            "crs_duration_days": np.where(crs >= 1, rng.uniform(2, 10, n), np.nan),
            "icans_onset_day": np.where(icans >= 1, rng.uniform(4, 10, n), np.nan),
            "icans_duration_days": np.where(icans >= 1, rng.uniform(2, 10, n), np.nan),
            "tocilizumab_doses": np.where(crs >= 2, 2.0, 0.0), "steroid_days": np.where(icans >= 2, 3.0, 0.0),
            "icu_days": np.where(crs >= 3, 2.0, 0.0),
            "hematotox_score": rng.integers(0, 5, n).astype(float), "icaht_grade": rng.integers(0, 4, n).astype(float),
            "igg_nadir": rng.normal(500, 100, n), "severe_neutropenia_days": rng.uniform(0, 20, n),
            "solver_status": "ok",  # an extra cohort column: must be tolerated
        }))
        next_id += n
    return pd.concat(frames, ignore_index=True)


def make_events(patients: pd.DataFrame) -> pd.DataFrame:
    """An events table per docs/trial-outputs.md, consistent with ``patients``."""
    rows = []
    for p in patients.itertuples():
        if p.infused and p.arm_kind == "car":
            rows.append((p.patient_id, p.arm, 0.0, "infusion", 2e8, ""))
        if np.isfinite(p.response_day):
            rows.append((p.patient_id, p.arm, p.response_day, "response_assessment", np.nan, p.best_response))
        if p.pfs_event and not (p.os_event and p.os_days == p.pfs_days):
            rows.append((p.patient_id, p.arm, p.pfs_days, "progression", np.nan, "positive"))
        for tox in ("crs", "icans"):
            grade = getattr(p, f"{tox}_max_grade")
            if np.isfinite(grade) and grade >= 1:
                onset = getattr(p, f"{tox}_onset_day")
                for g in range(1, int(grade) + 1):
                    rows.append((p.patient_id, p.arm, onset + 0.5 * (g - 1), f"{tox}_grade", float(g),
                                 f"{tox.upper()} grade {g - 1} -> {g} (ASTCT)"))
        if p.os_event:
            rows.append((p.patient_id, p.arm, p.os_days, "death", np.nan, p.death_cause))
        rows.append((p.patient_id, p.arm, 1.0, "ivig", 30.0, ""))  # a kind the plots do not use
    ev = pd.DataFrame(rows, columns=["patient_id", "arm", "day", "event", "value", "detail"])
    return ev.sort_values(["patient_id", "day"], kind="stable", ignore_index=True)


# ---------------------------------------------------------------- binomial_rate

@pytest.mark.parametrize(("events", "n", "low", "high"), [(15, 148, 0.0578, 0.1617), (0, 20, 0.0, 0.1684),
                                                          (1, 29, 0.0009, 0.1776)])
def test_binomial_rate_against_newcombe_1998(events, n, low, high):
    """Newcombe RG, Stat Med 1998;17:857-872, doi:10.1002/(SICI)1097-0258(19980430)17:8<857::AID-SIM777>3.0.CO;2-E,
    Table II, method 5 (Clopper-Pearson 'exact'), printed to 4 decimals."""
    r = binomial_rate(events, n)
    assert r["ci95"] == pytest.approx([low, high], abs=5e-5)
    assert r["estimate"] == pytest.approx(events / n, rel=1e-12)
    assert (r["events"], r["n"]) == (events, n)


def test_binomial_rate_82_of_101_against_beta_quantiles_and_scipy():
    from scipy.stats import beta
    r = binomial_rate(82, 101)
    # Clopper-Pearson bounds written as beta quantiles
    assert r["ci95"][0] == pytest.approx(beta.ppf(0.025, 82, 20), rel=1e-9)
    assert r["ci95"][1] == pytest.approx(beta.ppf(0.975, 83, 19), rel=1e-9)
    assert [round(b, 3) for b in r["ci95"]] == [0.722, 0.883]
    for k, n, level in [(0, 5, 0.95), (5, 5, 0.95), (37, 80, 0.9)]:
        ci = binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
        assert binomial_rate(k, n, level)["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-12)


def test_binomial_rate_empty_and_invalid():
    assert binomial_rate(0, 0) == {"estimate": None, "ci95": [None, None], "events": 0, "n": 0}
    with pytest.raises(TrialDataError, match="0 <= events <= n"):
        binomial_rate(5, 3)


# ---------------------------------------------------------------- km_summary

HAND_T = [2, 3, 3, 5, 7, 9]
HAND_E = [1, 1, 0, 1, 0, 1]


def _hand_km_band(at_risk_deaths: list[tuple[int, int]]) -> tuple[float, float, float]:
    """S, and the log(-log) Greenwood 95% band, after the given (at risk, deaths) steps."""
    s = math.prod(1 - d / n for n, d in at_risk_deaths)
    greenwood = sum(d / (n * (n - d)) for n, d in at_risk_deaths)
    half = Z95 * math.sqrt(greenwood) / abs(math.log(s))
    centre = math.log(-math.log(s))
    return s, math.exp(-math.exp(centre + half)), math.exp(-math.exp(centre - half))


def test_km_summary_against_hand_computed_kaplan_meier():
    """6 patients: events at 2, 3, 5, 9; censored at 3 and 7.
    S(2) = 5/6, S(3) = 5/6 * 4/5 = 2/3, S(5) = 2/3 * 2/3 = 4/9, S(9) = 0; median = 5."""
    r = km_summary(HAND_T, HAND_E, landmarks_days=(1, 4, 5, 6, 8, 12))
    assert (r["n"], r["events"]) == (6, 4)
    assert r["median_days"] == 5.0
    lm = r["landmarks"]
    # right-continuous: at day 5 the death on day 5 already counts
    assert [lm[k]["estimate"] for k in ("1", "4", "5", "6", "8")] == pytest.approx([1.0, 2 / 3, 4 / 9, 4 / 9, 4 / 9],
                                                                                   abs=1e-12)
    s, lo, hi = _hand_km_band([(6, 1), (5, 1)])
    assert s == pytest.approx(2 / 3)
    assert lm["4"]["ci95"] == pytest.approx([lo, hi], abs=1e-9)
    s, lo, hi = _hand_km_band([(6, 1), (5, 1), (3, 1)])
    assert lm["6"]["ci95"] == pytest.approx([lo, hi], abs=1e-9)
    # after the last time (9) the curve is 0 for good
    assert lm["12"] == {"estimate": 0.0, "ci95": [0.0, 0.0]}
    # median CI: lower band is below 0.5 from t=2 (0.27), upper band from t=9 only (0.78 at 5 and 7)
    assert _hand_km_band([(6, 1)])[1] < 0.5 < _hand_km_band([(6, 1), (5, 1), (3, 1)])[2]
    assert r["median_ci95"] == [2.0, 9.0]


def test_km_summary_not_reached_and_beyond_follow_up_are_none():
    r = km_summary([10, 20, 30, 40, 50], [0, 1, 0, 0, 0], landmarks_days=(25, 60))
    assert r["median_days"] is None and r["median_ci95"][1] is None
    assert r["landmarks"]["25"]["estimate"] == pytest.approx(1 - 1 / 4, abs=1e-12)  # 4 at risk at day 20
    assert r["landmarks"]["60"] == {"estimate": None, "ci95": [None, None]}
    json.dumps(r, allow_nan=False)
    empty = km_summary([], [])
    assert empty["n"] == 0 and empty["median_days"] is None and empty["landmarks"]["365"]["estimate"] is None


def test_km_summary_matches_lifelines_on_random_data():
    rng = np.random.default_rng(7)
    t = rng.exponential(300, 250)
    c = rng.uniform(100, 900, 250)
    time, event = np.minimum(t, c), t <= c
    r = km_summary(time, event, landmarks_days=(180, 365, 730))
    kmf = KaplanMeierFitter().fit(time, event)
    assert r["median_days"] == pytest.approx(kmf.median_survival_time_, rel=1e-12)
    med_ci = median_survival_times(kmf.confidence_interval_)
    assert r["median_ci95"] == pytest.approx([med_ci.iloc[0, 0], med_ci.iloc[0, 1]], rel=1e-12)
    for day in (180, 365, 730):
        if day > time.max():
            assert r["landmarks"][str(day)]["estimate"] is None
            continue
        assert r["landmarks"][str(day)]["estimate"] == pytest.approx(
            float(kmf.survival_function_at_times(day).iloc[0]), rel=1e-12)
        band = kmf.confidence_interval_.loc[:day].iloc[-1]
        assert r["landmarks"][str(day)]["ci95"] == pytest.approx(list(band), rel=1e-12)


def test_km_median_of_exponential_is_ln2_over_rate():
    """n = 20000, rate 1/300 per day, uniform censoring: median within 3% (about 3.5 standard
    errors) of ln 2 / rate = 207.9 days, S(365) within 0.01 of exp(-365/300)."""
    rate = 1 / 300
    rng = np.random.default_rng(2024)
    t = rng.exponential(1 / rate, 20000)
    c = rng.uniform(0, 1500, 20000)
    r = km_summary(np.minimum(t, c), t <= c, landmarks_days=(365,))
    assert r["median_days"] == pytest.approx(math.log(2) / rate, rel=0.03)
    lo, hi = r["median_ci95"]
    assert lo < math.log(2) / rate < hi
    assert r["landmarks"]["365"]["estimate"] == pytest.approx(math.exp(-365 * rate), abs=0.01)


# ---------------------------------------------------------------- compare_arms

def _two_arms(rng: np.random.Generator, n: int, rate_a: float, rate_b: float, censor_days: float = 730.0):
    ta, tb = rng.exponential(1 / rate_a, n), rng.exponential(1 / rate_b, n)
    t = np.r_[ta, tb]
    return pd.DataFrame({"arm": ["A"] * n + ["B"] * n, "pfs_days": np.minimum(t, censor_days),
                         "pfs_event": t <= censor_days})


def test_compare_arms_same_distribution_gives_hr_near_one():
    """40 seeds, 100 patients per arm, identical exponential PFS: median |log HR| < 0.2 (its
    standard error is about 0.16) and log-rank p >= 0.05 in at least 36 of 40 seeds (expected 38)."""
    log_hr, not_significant = [], 0
    for seed in range(40):
        c = compare_arms(_two_arms(np.random.default_rng(seed), 100, 1 / 300, 1 / 300), "A", "B")
        log_hr.append(math.log(c["hazard_ratio"]))
        not_significant += c["logrank_p"] >= 0.05
    assert np.median(np.abs(log_hr)) < 0.2
    assert not_significant >= 36


def test_compare_arms_half_hazard():
    """n = 500 per arm, hazard of A half that of B: |log(HR / 0.5)| < 0.2 (about 2.8 standard errors), p < 0.001."""
    c = compare_arms(_two_arms(np.random.default_rng(11), 500, 1 / 600, 1 / 300), "A", "B")
    assert abs(math.log(c["hazard_ratio"] / 0.5)) < 0.2
    assert c["ci95"][0] < c["hazard_ratio"] < c["ci95"][1] < 1.0
    assert c["logrank_p"] < 1e-3
    assert (c["n_arm"], c["n_reference"]) == (500, 500)


def test_compare_arms_agrees_with_lifelines_directly():
    df = _two_arms(np.random.default_rng(3), 80, 1 / 250, 1 / 400, censor_days=365)
    c = compare_arms(df, "A", "B")
    direct = CoxPHFitter().fit(pd.DataFrame({"T": df["pfs_days"], "E": df["pfs_event"].astype(int),
                                             "is_a": (df["arm"] == "A").astype(float)}), "T", "E")
    assert c["hazard_ratio"] == pytest.approx(math.exp(direct.params_["is_a"]), rel=1e-6)
    assert c["ci95"] == pytest.approx(list(np.exp(direct.confidence_intervals_.loc["is_a"])), rel=1e-6)
    a, b = df[df["arm"] == "A"], df[df["arm"] == "B"]
    lr = logrank_test(a["pfs_days"], b["pfs_days"], a["pfs_event"], b["pfs_event"])
    assert c["logrank_p"] == pytest.approx(lr.p_value, rel=1e-9)
    assert c["events_arm"] == int(a["pfs_event"].sum()) and c["events_reference"] == int(b["pfs_event"].sum())
    assert c["reason"] is None


def test_compare_arms_without_events_reports_a_reason():
    df = pd.DataFrame({"arm": ["A"] * 5 + ["B"] * 5, "pfs_days": [2.0, 4, 6, 8, 10, 1, 3, 5, 7, 9],
                       "pfs_event": [False] * 10})
    c = compare_arms(df, "A", "B")
    assert c["hazard_ratio"] is None and c["logrank_p"] is None and "no pfs events" in c["reason"]
    df["pfs_event"] = [False] * 5 + [True] * 5
    c = compare_arms(df, "A", "B")
    assert c["hazard_ratio"] is None and c["ci95"] == [None, None] and "'A'" in c["reason"]
    assert 0 < c["logrank_p"] < 0.05  # 5 events in B, none in A
    json.dumps(c, allow_nan=False)
    with pytest.raises(TrialDataError, match="arms: A, B"):
        compare_arms(df, "C", "B")


# ---------------------------------------------------------------- subgroups

def test_subgroup_hazard_ratios_rows_and_consistency():
    patients = make_patients(5, {"car-A": ("car", 150, 400.0), "SOC": ("soc", 150, 150.0)})
    sg = subgroup_hazard_ratios(patients, "car-A", "SOC")
    assert list(sg.columns) == ["subgroup", "level", "n", "events", "hazard_ratio", "ci_low", "ci_high"]
    assert tuple(sg.iloc[0][["subgroup", "level"]]) == ("overall", "all")
    overall = compare_arms(patients, "car-A", "SOC")
    assert sg.iloc[0]["hazard_ratio"] == pytest.approx(overall["hazard_ratio"], rel=1e-12)
    # baseline burden is NaN in the SOC arm, so only age and HEMATOTOX are split
    assert list(dict.fromkeys(sg["subgroup"])) == ["overall", "age", "CAR-HEMATOTOX"]
    for name in ("age", "CAR-HEMATOTOX"):
        rows = sg[sg["subgroup"] == name]
        assert len(rows) == 2 and rows["n"].sum() == 300 and rows["events"].sum() == sg.iloc[0]["events"]
    young = patients[patients["age_years"] < 65]
    assert sg[(sg["subgroup"] == "age")].iloc[0]["n"] == len(young)
    assert sg[(sg["subgroup"] == "age")].iloc[0]["hazard_ratio"] == pytest.approx(
        compare_arms(young, "car-A", "SOC")["hazard_ratio"], rel=1e-12)
    # two CAR arms: the burden split at the pooled median appears
    two_car = make_patients(6, {"car-A": ("car", 100, 300.0), "car-B": ("car", 100, 300.0)})
    sg2 = subgroup_hazard_ratios(two_car, "car-B", "car-A")
    burden = sg2[sg2["subgroup"] == "baseline burden"]
    assert len(burden) == 2 and burden["n"].sum() == 200


# ---------------------------------------------------------------- exposure-response

def test_exposure_response_recovers_known_logistic_slope():
    """n = 4000, log10 AUC ~ N(5, 0.7), logit p = -8 + 1.5 log10 AUC: slope within 0.2 (about
    4 standard errors) of 1.5; the fit equals an independent maximum of the log-likelihood."""
    rng = np.random.default_rng(99)
    x = rng.normal(5.0, 0.7, 4000)
    p = 1 / (1 + np.exp(-(-8 + 1.5 * x)))
    y = rng.random(4000) < p
    patients = pd.DataFrame({"auc_0_28_copies_day_per_ug": 10 ** x,
                             "best_response": np.where(y, "CR", "PD")})
    r = exposure_response(patients)
    assert r["note"] is None and r["n"] == 4000 and r["events"] == int(y.sum())
    assert abs(r["slope"] - 1.5) < 0.2
    assert abs(r["intercept"] + 8) < 1.0

    def nll(b):
        eta = b[0] + b[1] * x
        return float(np.sum(np.logaddexp(0, eta) - y * eta))
    oracle = minimize(nll, [0.0, 0.0], method="BFGS", options={"gtol": 1e-8}).x
    assert [r["intercept"], r["slope"]] == pytest.approx(list(oracle), abs=1e-3)
    assert r["odds_ratio_per_10fold"] == pytest.approx(math.exp(r["slope"]), rel=1e-12)
    lo, hi = r["odds_ratio_ci95"]
    assert math.log(lo) == pytest.approx(r["slope"] - Z95 * r["slope_se"], rel=1e-9)
    assert lo < r["odds_ratio_per_10fold"] < hi and r["p_value"] < 1e-10
    q = r["quartiles"]
    assert [e["quartile"] for e in q] == [1, 2, 3, 4] and sum(e["n"] for e in q) == 4000
    assert q[0]["rate"] < q[1]["rate"] < q[2]["rate"] < q[3]["rate"]
    assert all(q[i]["high"] <= q[i + 1]["low"] for i in range(3))
    json.dumps(r, allow_nan=False)


def test_exposure_response_degenerate_cases_give_a_note():
    patients = make_patients(1)
    r = exposure_response(patients, outcome="crs_grade3plus")
    assert r["n"] == int((patients["auc_0_28_copies_day_per_ug"] > 0).sum())  # SOC and not infused left out
    all_zero = patients.assign(crs_max_grade=np.where(patients["crs_max_grade"].notna(), 0.0, np.nan))
    r = exposure_response(all_zero, outcome="crs_any")
    assert r["slope"] is None and "absent in all" in r["note"]
    r = exposure_response(patients.head(8))
    assert r["slope"] is None and "need >= 10" in r["note"]
    with pytest.raises(TrialDataError, match="known: responder"):
        exposure_response(patients, outcome="pfs")


# ---------------------------------------------------------------- arm and trial summaries

def test_arm_summary_counts_and_denominators():
    patients = make_patients(2, criteria="imwg")
    car = patients[patients["arm"] == "car-A"]
    s = arm_summary(car, "imwg")
    n, infused = len(car), int(car["infused"].sum())
    responders = car["best_response"].isin(["CR", "VGPR", "PR"])
    assert (s["kind"], s["n_randomised"], s["n_infused"]) == ("car", n, infused)
    assert (s["orr"]["events"], s["orr"]["n"]) == (int(responders.sum()), n)
    assert s["orr_infused"]["n"] == infused and s["orr_infused"]["events"] == int(responders.sum())
    assert s["vgpr_or_better"]["events"] == int(car["best_response"].isin(["CR", "VGPR"]).sum())
    assert s["cr_or_better"] == s["cr"]
    assert s["dor"]["n"] == int(responders.sum())
    for key, column, threshold in [("crs_any", "crs_max_grade", 1), ("crs_grade3plus", "crs_max_grade", 3),
                                   ("icans_any", "icans_max_grade", 1), ("icans_grade3plus", "icans_max_grade", 3),
                                   ("tocilizumab_use", "tocilizumab_doses", 0.5), ("steroid_use", "steroid_days", 0.5)]:
        rate = s["toxicity"][key]
        assert (rate["events"], rate["n"]) == (int((car[column] >= threshold).sum()), infused), key
    assert s["deaths"]["total"] == int(car["os_event"].sum()) == sum(
        v for k, v in s["deaths"].items() if k != "total")
    soc = arm_summary(patients[patients["arm"] == "SOC"], "imwg")
    assert soc["toxicity"]["crs_any"] is None and soc["toxicity"]["icans_grade3plus"] is None
    assert soc["toxicity"]["tocilizumab_use"]["estimate"] == 0.0  # recorded as 0 doses, not missing
    with pytest.raises(TrialDataError, match="one arm"):
        arm_summary(patients, "imwg")


def test_trial_summary_is_strict_json_with_comparisons():
    patients = make_patients(3, {"car-A": ("car", 80, 300.0), "car-B": ("car", 80, 200.0),
                                 "SOC": ("soc", 80, 150.0)}, criteria="marrow_blasts")
    t = trial_summary(patients, name="virtual ELIANA", disease="b_all", criteria="marrow_blasts",
                      follow_up_days=730, seed=3)
    text = json.dumps(t, allow_nan=False)
    assert json.loads(text) == t
    assert list(t["arms"]) == ["car-A", "car-B", "SOC"]
    assert t["populations"] == {"itt": 240, "mitt": int(patients["infused"].sum())}
    assert [(c["arm"], c["reference"], c["endpoint"]) for c in t["comparisons"]] == [
        (a, "SOC", ep) for a in ("car-A", "car-B") for ep in ("pfs", "os", "efs")]
    assert "cr_cri" in t["arms"]["car-A"] and set(t["arms"]["SOC"]["pfs"]["landmarks"]) == {"180", "365", "730"}
    # EFS counts non-remission at day 28 as an event (ELIANA convention)
    assert t["arms"]["SOC"]["efs"]["events"] > t["arms"]["SOC"]["pfs"]["events"]
    single = trial_summary(patients[patients["arm"] == "car-A"], name="x", disease="b_all",
                           criteria="marrow_blasts", follow_up_days=730, seed=3)
    assert single["comparisons"] == []
    two_car = trial_summary(patients[patients["arm"] != "SOC"], name="x", disease="b_all",
                            criteria="marrow_blasts", follow_up_days=730, seed=3)
    assert {c["reference"] for c in two_car["comparisons"]} == {"car-A"}
    with pytest.raises(TrialDataError, match="reference_arm 'nope'"):
        trial_summary(patients, name="x", disease="b_all", criteria="marrow_blasts", follow_up_days=730,
                      seed=3, reference_arm="nope")
