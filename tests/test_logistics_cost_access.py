"""Costs, effects and access of the logistics layer (carcell/logistics/cost.py, access.py).

Expected values come from the data files read directly (costs.yaml, access.yaml), from the
published figures those files quote, or from closed forms (exponential survival), never from
the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest, norm

from carcell.errors import ScenarioError, TrialDataError
from carcell.io.yamlio import load_yaml
from carcell.knowledge.store import DATA_DIR
from carcell.logistics.access import (compare_levers, equity_gaps, equity_table, load_region, region_names,
                                      region_with, sample_population)
from carcell.logistics.cost import (COMPONENTS, comparator_costs, cost_summary, icer, life_years,
                                    patient_costs, qalys)

COSTS = load_yaml(DATA_DIR / "costs.yaml")
ACCESS = load_yaml(DATA_DIR / "access.yaml")
IVIG_MG_PER_KG = load_yaml(DATA_DIR / "haematology.yaml")["igg"]["ivig_dose"]["value"]
DAYS_PER_MONTH = 30.4375
USD = 1e-6          # relative tolerance of sums of USD amounts (floating point only)


def c(*path: str) -> float:
    node = COSTS
    for p in path:
        node = node[p]
    return float(node["value"])


def a(*path: str):
    node = ACCESS
    for p in path:
        node = node[p]
    return node["value"]


def patient(**over) -> dict:
    row = {"patient_id": 1, "infused": True, "attempts": 1, "bridged": False, "apheresis_day": 10.0,
           "icu_days": 0.0, "tocilizumab_doses": 0.0, "steroid_days": 0.0, "ivig_doses": 0.0,
           "weight_kg": 70.0, "os_days": 30.0, "os_event": False, "best_response": "CR"}
    row.update(over)
    return row


def costs_of(rows: list[dict], product: str = "axi-cel", route_kind: str = "autologous", **kw) -> pd.DataFrame:
    return patient_costs(pd.DataFrame(rows), product, route_kind, **kw)


# -- costs of one patient -------------------------------------------------------------------

def test_infused_patient_without_toxicity_pays_product_apheresis_lymphodepletion_and_stay():
    """os_days = 30 < 1 month: no follow-up yet, a full 15-day stay."""
    got = costs_of([patient()]).iloc[0]
    expected = (c("products", "axi-cel", "list_price") + c("procedures", "apheresis")
                + c("procedures", "lymphodepletion") + c("hospital", "baseline_stay") * c("hospital", "ward_day"))
    assert got["total"] == pytest.approx(expected, rel=USD)
    assert got["product"] == c("products", "axi-cel", "list_price")
    others = ["manufacturing_reattempts", "bridging", "icu", "tocilizumab", "steroids", "ivig", "follow_up"]
    assert got[others].sum() == 0


def test_icu_days_add_icu_cost_linearly():
    """Each ICU day costs the ICU rate and replaces a ward day of the index stay."""
    rows = [patient(patient_id=i, icu_days=float(i)) for i in range(6)]
    got = costs_of(rows)
    assert got["icu"].to_numpy() == pytest.approx(np.arange(6) * c("hospital", "icu_day"), rel=USD)
    steps = np.diff(got["total"].to_numpy())
    assert steps == pytest.approx(np.full(5, c("hospital", "icu_day") - c("hospital", "ward_day")), rel=USD)


def test_never_infused_patient_pays_what_was_incurred_but_no_product_or_stay():
    rows = [patient(infused=False, attempts=2, bridged=True, icu_days=np.nan, tocilizumab_doses=np.nan,
                    steroid_days=np.nan, os_days=200.0)]
    got = costs_of(rows).iloc[0]
    assert got["product"] == 0
    for comp in ("lymphodepletion", "hospital", "icu", "tocilizumab", "steroids", "ivig", "follow_up"):
        assert got[comp] == 0, comp
    assert got["apheresis"] == c("procedures", "apheresis")
    assert got["manufacturing_reattempts"] == c("cost_of_goods", "autologous")     # one re-attempt
    assert got["bridging"] == c("procedures", "bridging_course")


def test_off_the_shelf_patient_pays_no_apheresis_and_a_cost_based_price():
    """Even a table that records a collection day and two attempts: off the shelf has neither."""
    got = costs_of([patient(apheresis_day=3.0, attempts=2)], product="allo-CAR-NK",
                   route_kind="off_the_shelf").iloc[0]
    assert got["apheresis"] == 0 and got["manufacturing_reattempts"] == 0
    per_dose = c("cost_of_goods", "allogeneic_batch") / c("cost_of_goods", "allogeneic_doses_per_batch")
    assert got["product"] == pytest.approx(per_dose * c("products", "off_the_shelf", "price_markup"), rel=USD)


def test_point_of_care_patient_pays_the_academic_price():
    got = costs_of([patient(attempts=2)], product="ARI-0001", route_kind="point_of_care").iloc[0]
    assert got["product"] == c("products", "point_of_care", "price")
    assert got["manufacturing_reattempts"] == c("cost_of_goods", "point_of_care")


def test_drugs_are_billed_per_dose_in_whole_vials():
    """70 kg: tocilizumab 8 mg/kg = 560 mg = 7 vials of 80 mg; 120 kg: capped at 800 mg = 10
    vials; IVIG 0.4 g/kg x 70 kg = 28 g -> 3 vials of 10 g."""
    got = costs_of([patient(patient_id=1, tocilizumab_doses=2.0, ivig_doses=1.0, steroid_days=3.0),
                    patient(patient_id=2, weight_kg=120.0, tocilizumab_doses=1.0)])
    vial = c("drugs", "tocilizumab", "vial_price")
    assert c("drugs", "tocilizumab", "dose") * 70 / c("drugs", "tocilizumab", "vial") == 7
    assert got["tocilizumab"].tolist() == pytest.approx([2 * 7 * vial, 10 * vial], rel=USD)
    grams = IVIG_MG_PER_KG / 1000 * 70
    vials = math.ceil(grams / c("drugs", "ivig", "vial"))
    assert vials == 3
    assert got["ivig"].iloc[0] == pytest.approx(vials * c("drugs", "ivig", "vial_price"), rel=USD)
    assert got["steroids"].iloc[0] == pytest.approx(3 * c("drugs", "steroid_day"), rel=USD)


def test_follow_up_accrues_from_month_one_at_two_rates():
    os_days = 365.0
    got = costs_of([patient(os_days=os_days)], discount_rate=0.0)["follow_up"].iloc[0]
    start, end = c("follow_up", "early_start") * DAYS_PER_MONTH, c("follow_up", "early_end") * DAYS_PER_MONTH
    expected = (end - start) * c("follow_up", "early_per_day") + (os_days - end) * c("follow_up", "late_per_day")
    assert got == pytest.approx(expected, rel=USD)
    discounted = costs_of([patient(os_days=os_days)], discount_rate=0.03)["follow_up"].iloc[0]
    assert 0.97 * expected < discounted < expected


def test_components_sum_to_total():
    rng = np.random.default_rng(3)
    rows = [patient(patient_id=i, infused=bool(rng.random() < 0.7), attempts=int(rng.integers(1, 3)),
                    bridged=bool(rng.random() < 0.5), icu_days=float(rng.integers(0, 5)),
                    tocilizumab_doses=float(rng.integers(0, 3)), steroid_days=float(rng.integers(0, 6)),
                    ivig_doses=float(rng.integers(0, 3)), weight_kg=float(rng.uniform(45, 110)),
                    os_days=float(rng.uniform(5, 900))) for i in range(200)]
    got = costs_of(rows)
    assert list(got.columns) == ["patient_id", *COMPONENTS, "total"]
    assert got[list(COMPONENTS)].sum(axis=1).to_numpy() == pytest.approx(got["total"].to_numpy(), rel=1e-12)
    assert (got[list(COMPONENTS)] >= 0).all().all()


def test_patient_costs_errors_name_the_problem():
    with pytest.raises(ScenarioError, match="known"):
        costs_of([patient()], route_kind="home_made")
    with pytest.raises(ScenarioError, match="no list price"):
        costs_of([patient()], product="mystery-cel")
    with pytest.raises(TrialDataError, match="weight_kg"):
        costs_of([patient(weight_kg=np.nan, tocilizumab_doses=1.0)])
    with pytest.raises(TrialDataError, match="icu_days"):
        patient_costs(pd.DataFrame([patient()]).drop(columns="icu_days"), "axi-cel", "autologous")


def test_cost_summary_counts_responders_and_divides_by_the_right_denominators():
    responses = ["CR", "PR", "VGPR", "sCR", "CRi", "SD", "PD", "NR", "NE", None]
    rows = [patient(patient_id=i, best_response=r, infused=i < 8) for i, r in enumerate(responses)]
    df = pd.DataFrame(rows)
    costs = patient_costs(df, "tisa-cel", "autologous")
    s = cost_summary(costs, df)
    assert (s["n"], s["n_infused"], s["n_responders"]) == (10, 8, 5)
    total = float(costs["total"].sum())
    assert s["total"] == pytest.approx(total)
    assert s["per_patient"] == pytest.approx(total / 10)
    assert s["per_infused"] == pytest.approx(total / 8)
    assert s["per_responder"] == pytest.approx(total / 5)
    assert s["components"]["product"] == pytest.approx(8 * c("products", "tisa-cel", "list_price") / 10)


def test_comparator_transplants_responders_only():
    df = pd.DataFrame({"patient_id": [1, 2, 3], "best_response": ["CR", "PD", "PR"]})
    got = comparator_costs(df)
    salvage, asct = c("comparator", "salvage_course"), c("comparator", "autologous_transplant")
    assert got["total"].tolist() == pytest.approx([salvage + asct, salvage, salvage + asct])


# -- life years, QALYs, ICER ---------------------------------------------------------------

LAMBDA = 1.0 / 365.0       # per day: median survival about 253 days
HORIZON = 730.0


def exponential_cohort(n: int) -> pd.DataFrame:
    """Deaths at the mid-quantiles of an exponential: the empirical curve is the exact one,
    stepped, so no sampling noise."""
    q = (np.arange(n) + 0.5) / n
    t = -np.log1p(-q) / LAMBDA
    return pd.DataFrame({"os_days": t, "os_event": True, "pfs_days": t, "pfs_event": True})


def test_restricted_mean_of_exponential_survival_matches_closed_form():
    """RMST to T of S(t) = exp(-lambda t) is (1 - exp(-lambda T)) / lambda."""
    got_years = life_years(exponential_cohort(20000), HORIZON, discount_rate=0.0)
    expected_days = (1 - math.exp(-LAMBDA * HORIZON)) / LAMBDA
    assert got_years * 365.25 == pytest.approx(expected_days, rel=2e-3)   # step curve vs smooth, n = 20000


def test_restricted_mean_by_hand_with_ties_and_censoring():
    """Deaths at 2, 4, 6; censored at 4 (at risk at the death on day 4) and 8. Kaplan-Meier:
    S = 0.8 from day 2, 0.8 x 3/4 = 0.6 from day 4, 0.6 x 1/2 = 0.3 from day 6; area to day 10 =
    2 x 1 + 2 x 0.8 + 2 x 0.6 + 4 x 0.3 = 6.0 days."""
    df = pd.DataFrame({"os_days": [2.0, 4.0, 4.0, 6.0, 8.0], "os_event": [True, True, False, True, False]})
    assert life_years(df, 10.0, discount_rate=0.0) * 365.25 == pytest.approx(6.0, rel=1e-12)


def test_restricted_mean_agrees_with_lifelines():
    """lifelines as an independent oracle, on tied, censored times."""
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    rng = np.random.default_rng(12)
    t = np.round(rng.exponential(300, 400))            # whole days: many ties
    e = rng.random(400) < 0.7
    kmf = KaplanMeierFitter().fit(t, e)
    expected = restricted_mean_survival_time(kmf, t=500.0)
    got = life_years(pd.DataFrame({"os_days": t, "os_event": e}), 500.0, discount_rate=0.0) * 365.25
    assert got == pytest.approx(float(expected), rel=1e-9)


def test_restricted_mean_with_random_censoring():
    """Kaplan-Meier handles censoring: exponential deaths, uniform censoring over 3 years."""
    rng = np.random.default_rng(11)
    n = 20000
    death = rng.exponential(1 / LAMBDA, n)
    censor = rng.uniform(0, 3 * 365, n)
    df = pd.DataFrame({"os_days": np.minimum(death, censor), "os_event": death <= censor})
    expected_days = (1 - math.exp(-LAMBDA * HORIZON)) / LAMBDA
    # standard error of the estimate is about 2 days here; 4 standard errors
    assert life_years(df, HORIZON, discount_rate=0.0) * 365.25 == pytest.approx(expected_days, abs=8.0)


def test_discounting_lowers_life_years_as_the_closed_form_says():
    df = exponential_cohort(20000)
    r = c("discount_rate")
    plain = life_years(df, HORIZON, discount_rate=0.0)
    discounted = life_years(df, HORIZON)        # the file's 3% a year
    assert discounted < plain
    rate = LAMBDA + math.log1p(r) / 365.25
    assert discounted * 365.25 == pytest.approx((1 - math.exp(-rate * HORIZON)) / rate, rel=2e-3)


def test_qalys_weight_progression_free_and_progressed_time():
    df = exponential_cohort(5000)
    ly = life_years(df, HORIZON, discount_rate=0.0)
    u_pf, u_prog = c("utilities", "progression_free"), c("utilities", "progressed")
    assert qalys(df, HORIZON, discount_rate=0.0) == pytest.approx(u_pf * ly, rel=1e-12)     # never progressed alive
    progressed_at_once = df.assign(pfs_days=0.0, pfs_event=True)
    assert qalys(progressed_at_once, HORIZON, discount_rate=0.0) == pytest.approx(u_prog * ly, rel=1e-12)
    half = df.assign(pfs_days=df["os_days"] / 2)
    pf_years = life_years(half.assign(os_days=half["pfs_days"]), HORIZON, discount_rate=0.0)
    expected = u_pf * pf_years + u_prog * (ly - pf_years)
    assert qalys(half, HORIZON, discount_rate=0.0) == pytest.approx(expected, rel=1e-9)


def test_icer_arithmetic_and_dominance():
    r = icer(500_000, 3.0, 100_000, 1.0)
    assert (r["incremental_cost"], r["incremental_effect"], r["icer"]) == (400_000, 2.0, 200_000)
    assert r["quadrant"] == "more costly, more effective"
    dominant = icer(90_000, 3.0, 100_000, 1.0)
    assert dominant["quadrant"] == "dominant" and dominant["icer"] is None and "dominates" in dominant["note"]
    dominated = icer(110_000, 0.5, 100_000, 1.0)
    assert dominated["quadrant"] == "dominated" and dominated["icer"] is None and "dominated" in dominated["note"]
    south_west = icer(50_000, 0.5, 100_000, 1.0)
    assert south_west["icer"] == pytest.approx(100_000) and south_west["quadrant"] == "less costly, less effective"
    assert icer(1.0, 1.0, 1.0, 1.0)["quadrant"] == "equivalent"


# -- access: the data ----------------------------------------------------------------------

def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_distance_coefficient_is_the_slope_through_chungs_two_points():
    rm = "referral_model"
    slope = ((logit(a(rm, "use_at_better_access")) - logit(a(rm, "use_at_poor_access")))
             / (a(rm, "better_access_distance") - a(rm, "poor_access_distance")))
    assert slope == pytest.approx(-0.004962, rel=1e-3)          # as written in access.yaml's note
    assert a(rm, "distance_log_odds_per_mile") == pytest.approx(slope, rel=1e-3)
    region = load_region("US_DLBCL_3L")
    per_minute = slope * a(rm, "reference_drive_miles") / a(rm, "reference_drive_minutes")
    assert region.distance_coefficient == pytest.approx(per_minute, rel=1e-3)
    assert region.income_coefficient == pytest.approx(math.log(1.176) * a(rm, "income_steps"), rel=1e-12)


def _stratum_mass(region: str, cond) -> float:
    """Share of the region's population with cond(stratum node, travel-time law)."""
    total = 0.0
    for node in ACCESS["regions"][region]["strata"].values():
        median, log_sd = node["travel_minutes"]["value"]
        total += node["share"]["value"] * cond(node, lambda x, m=median, s=log_sd: norm.cdf(math.log(x / m) / s))
    return total


def test_dlbcl_strata_reproduce_the_ispor_travel_figures():
    """29.02% of the US population > 120 min from a centre; 11.61% low-income and > 120 min."""
    over = _stratum_mass("US_DLBCL_3L", lambda n, cdf: 1 - cdf(120))
    low_over = _stratum_mass("US_DLBCL_3L", lambda n, cdf: (1 - cdf(120)) * (n["income"] == "low"))
    assert over == pytest.approx(0.2902, abs=0.002)
    assert low_over == pytest.approx(0.1161, abs=0.002)


def test_myeloma_strata_reproduce_the_drive_time_bands():
    """59.2% within 1 h, 81.9% within 2 h of a BCMA CAR-T centre (ASH 2025)."""
    assert _stratum_mass("US_MM", lambda n, cdf: cdf(60)) == pytest.approx(0.592, abs=0.002)
    assert _stratum_mass("US_MM", lambda n, cdf: cdf(120)) == pytest.approx(0.592 + 0.227, abs=0.002)


def test_stratum_shares_follow_the_population_inputs():
    pop = ACCESS["population"]
    rural, low_r, low_u = (pop[k]["value"] for k in ("rural_share", "low_income_share_rural", "low_income_share_urban"))
    expected = {("low", "rural"): rural * low_r, ("high", "rural"): rural * (1 - low_r),
                ("low", "urban"): (1 - rural) * low_u, ("high", "urban"): (1 - rural) * (1 - low_u)}
    for name in region_names():
        strata = ACCESS["regions"][name]["strata"].values()
        got = {(s["income"], s["residence"]): s["share"]["value"] for s in strata}
        assert got == pytest.approx(expected), name


# -- access: the population ----------------------------------------------------------------

def test_default_preset_treats_about_the_published_share():
    """SEER-Medicare 3L+ DLBCL: 122/2241 (5.4%) treated (Chung et al. 2025). Referral x the
    preset's infusion fraction (0.59: 41% of community referrals never infused, Blood Adv
    2025;9:429) must fall inside the 95% binomial interval of 122/2241."""
    region = load_region("US_DLBCL_3L")
    pop = sample_population(region, 40000, 730, seed=5)
    treated = pop["referred"].mean() * a("regions", "US_DLBCL_3L", "calibration", "infusion_fraction")
    ci = binomtest(122, 2241).proportion_ci(method="exact")
    assert ci.low < treated < ci.high, (treated, ci)


def test_far_strata_are_referred_less():
    region = load_region("US_DLBCL_3L")
    pop = sample_population(region, 40000, 730, seed=2)
    p = pop.groupby("stratum")["referral_probability"].mean()
    assert p["low_rural"] < p["low_urban"] and p["high_rural"] < p["high_urban"]
    by_residence = pop.groupby("residence")["referred"].mean()
    assert by_residence["rural"] < by_residence["urban"]
    travel = pop.groupby("stratum")["travel_minutes"].median()
    assert travel["low_rural"] > travel["low_urban"] and travel["high_rural"] > travel["high_urban"]


def test_more_centres_shorten_travel_and_raise_referral_of_far_patients():
    """Twice the centres: every travel time x 1/sqrt(2); same draws, so nobody referred before
    is lost and the far strata gain."""
    region = load_region("US_DLBCL_3L")
    base = sample_population(region, 20000, 730, seed=4)
    more = sample_population(region_with(region, {"centres_factor": 2}), 20000, 730, seed=4)
    shorter = base["travel_minutes"].to_numpy() / math.sqrt(2)
    assert more["travel_minutes"].to_numpy() == pytest.approx(shorter, rel=1e-12)
    assert (more["referral_probability"] > base["referral_probability"]).all()
    assert not (base["referred"] & ~more["referred"]).any()
    far = base["residence"] == "rural"
    assert more.loc[far, "referred"].sum() > base.loc[far, "referred"].sum()


def test_satellite_sites_cut_far_travel_only():
    region = load_region("US_DLBCL_3L")
    base = sample_population(region, 5000, 730, seed=4)
    sat = sample_population(region_with(region, {"satellite_sites": 1.0}), 5000, 730, seed=4)
    far = base["travel_minutes"] > a("levers", "far_threshold")
    assert (sat.loc[far, "travel_minutes"] <= a("levers", "satellite_travel") + 1e-9).all()
    assert sat.loc[~far, "travel_minutes"].to_numpy() == pytest.approx(base.loc[~far, "travel_minutes"].to_numpy())


def _rural_urban_gap(region) -> float:
    pop = sample_population(region, 20000, 730, seed=8)
    p = pop.groupby("residence")["referral_probability"].mean()
    return float(p["urban"] - p["rural"])


def test_travel_support_narrows_the_gap_and_full_support_removes_distance():
    region = load_region("US_DLBCL_3L")
    gap = _rural_urban_gap(region)
    assert gap > 0
    assert 0 < _rural_urban_gap(region_with(region, {"travel_support": True})) < gap
    full = sample_population(region_with(region, {"travel_support": 1.0}), 2000, 730, seed=8)
    assert full.groupby("income")["referral_probability"].nunique().eq(1).all()


def test_levers_pass_through_and_bad_levers_are_named():
    region = load_region("US_DLBCL_3L")
    r = region_with(region, {"route": "point_of_care", "slots_factor": 2})
    assert r.levers == {"route": "point_of_care", "slots_factor": 2}
    assert (r.travel_scale, r.satellite_share, r.travel_support) == (1.0, 0.0, 0.0)
    with pytest.raises(ScenarioError, match="known: centres_factor"):
        region_with(region, {"more_doctors": 2})
    with pytest.raises(ScenarioError, match="satellite_sites"):
        region_with(region, {"satellite_sites": 1.5})
    with pytest.raises(ScenarioError, match="known"):
        load_region("Atlantis")


def test_population_is_reproducible_and_independent_of_n():
    region = load_region("US_DLBCL_3L")
    small = sample_population(region, 1000, 730, seed=9)
    big = sample_population(region, 2000, 730, seed=9)
    pd.testing.assert_frame_equal(small, big.iloc[:1000].reset_index(drop=True))
    pd.testing.assert_frame_equal(small, sample_population(region, 1000, 730, seed=9))
    other = sample_population(region, 1000, 730, seed=10)
    assert not np.allclose(small["travel_minutes"], other["travel_minutes"])


def test_referred_patients_arrive_after_eligibility_within_the_horizon_start():
    pop = sample_population(load_region("US_MM"), 3000, 365, seed=1)
    ref = pop[pop["referred"]]
    assert ((pop["eligible_day"] >= 0) & (pop["eligible_day"] < 365)).all()
    assert (ref["arrival_day"] > ref["eligible_day"]).all()
    assert pop.loc[~pop["referred"], "arrival_day"].isna().all()
    assert pop["patient_id"].dtype == np.int64


# -- access: equity ------------------------------------------------------------------------

def test_equity_gaps_are_one_and_zero_for_identical_strata():
    df = pd.DataFrame({"stratum": ["a"] * 10 + ["b"] * 10,
                       "referred": [True] * 6 + [False] * 4 + [True] * 6 + [False] * 4,
                       "state": (["infused"] * 3 + ["not_infused"] * 3 + [None] * 4) * 2,
                       "reason": (["", "", "", "death", "progression", "manufacturing_failure"] + [""] * 4) * 2,
                       "cost_total": [100.0] * 20})
    table = equity_table(df)
    assert table["n_eligible"].tolist() == [10, 10] and table["n_infused"].tolist() == [3, 3]
    assert table["fraction_treated"].tolist() == [0.3, 0.3] and table["deaths_waiting"].tolist() == [2, 2]
    assert table["mean_cost"].tolist() == [100.0, 100.0]
    gaps = equity_gaps(table, "a")
    assert gaps["ratio"].tolist() == [1.0, 1.0, 1.0] and gaps["difference"].tolist() == [0.0, 0.0, 0.0]


def test_equity_gaps_against_a_reference_and_best_versus_worst():
    table = pd.DataFrame({"stratum": ["far", "near", "mid"], "fraction_treated": [0.02, 0.08, 0.04]})
    gaps = equity_gaps(table, "near").set_index("stratum")
    assert gaps.loc["far", "ratio"] == pytest.approx(0.25) and gaps.loc["far", "difference"] == pytest.approx(-0.06)
    assert gaps.loc["worst_vs_best", "compared_with"] == "near"
    assert gaps.loc["worst_vs_best", "ratio"] == pytest.approx(0.25)
    with pytest.raises(ScenarioError, match="groups"):
        equity_gaps(table, "moon")


def test_equity_table_of_a_sampled_population_counts_every_eligible_patient():
    pop = sample_population(load_region("US_DLBCL_3L"), 3000, 730, seed=3)
    pop["infused"] = pop["referred"] & (pop["patient_id"] % 2 == 0)
    table = equity_table(pop)
    assert table["n_eligible"].sum() == 3000
    assert table["n_referred"].sum() == pop["referred"].sum()
    assert table["n_infused"].sum() == pop["infused"].sum()


def test_compare_levers_uses_the_same_patients_in_every_scenario():
    region = load_region("US_DLBCL_3L")
    out = compare_levers(region, {"baseline": {}, "more_centres": {"centres_factor": 4}}, 5000, 730, seed=6)
    base = out[out["scenario"] == "baseline"].set_index("stratum")
    more = out[out["scenario"] == "more_centres"].set_index("stratum")
    assert (base["n_eligible"] == more["n_eligible"]).all() and base.loc["all", "n_eligible"] == 5000
    assert (more["n_referred"] >= base["n_referred"]).all()
    assert more.loc["all", "mean_travel_minutes"] == pytest.approx(base.loc["all", "mean_travel_minutes"] / 2, rel=1e-9)
