"""Haematotoxicity and IgG layer (carcell/clinical/haematology.py) against invariants, reference
solutions and the published directions.

* Marrow model: with no kill and no inflammation the Friberg state stays at its steady state
  (to 1e-12 relative); the fixed-step RK4 agrees within 1e-3 relative with scipy's DOP853 at
  rtol 1e-10 on the Friberg equations written out again here, independently of the module,
  with a lymphodepletion kill and with an inflammation input.
* Drivers: no lymphodepletion gives no neutropenia; Flu/Cy gives a nadir in the first two
  weeks; more inflammation gives longer severe neutropenia; poorer marrow reserve gives longer
  neutropenia, and CAR-HEMATOTOX high patients reach >= 14 days far more often than low ones
  (published 48% vs 5%, Rejeski 2021).
* Labs: a patient's labs do not depend on which other patients are drawn with it; low-reserve
  patients are the CAR-HEMATOTOX high ones.
* IgG: constant with B cells present; with B-cell aplasia it falls to the long-lived plasma-cell
  floor as the analytic exponential with the 21-day half-life; lower still without plasma
  cells; IVIG only at IgG <= 400 mg/dL, never more often than the minimum interval, and each
  dose adds dose / volume that then decays with the IgG half-life.
* Errors name the scenario field.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import solve_ivp

from carcell.clinical import haematology as H
from carcell.knowledge import load_knowledge

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def k():
    return load_knowledge()


def crs_like(n: int, times: np.ndarray, amplitude) -> np.ndarray:
    """A CRS-like myeloid activation: Gaussian pulse peaking on day 7 (sd 2.5 days)."""
    return np.clip(np.asarray(amplitude, float).reshape(-1, 1) * np.ones((n, 1))
                   * np.exp(-0.5 * ((times - 7.0) / 2.5) ** 2), 0.0, 1.0)


def typical_labs(n: int = 1, **over) -> pd.DataFrame:
    row = {"anc_per_ul": 3000.0, "platelets_e9_per_l": 200.0, "hb_g_dl": 11.0, "crp_mg_dl": 1.0,
           "ferritin_ng_ml": 400.0, "ldh_u_l": 250.0, "igg_mg_dl": 800.0}
    row.update(over)
    return pd.DataFrame([row] * n)


# -- the Friberg model -------------------------------------------------------------------------

def reference_rhs(t, y, k_tr, k_circ, gamma, kill, suppression):
    """Friberg 2002 written out from the paper (states relative to baseline, P not in logs)."""
    p, t1, t2, t3, c = y
    return [k_tr * p * ((1.0 - suppression(t)) * c ** (-gamma) - 1.0) - kill(t) * p,
            k_tr * (p - t1), k_tr * (t1 - t2), k_tr * (t2 - t3), k_circ * (t3 - c)]


def test_no_kill_no_inflammation_stays_at_steady_state(k):
    """Tolerance: 1e-12 relative over 60 days (the rates are exactly zero at steady state)."""
    n = 3
    lin = H.Lineage(k_tr=np.array([0.5, 1.08, 2.0]), k_circ=np.array([0.5, 1.08, 0.14]),
                    gamma=np.array([0.1, 0.163, 0.3]), kill_rate=np.zeros(n), kill_start=-5, kill_days=3)
    c = H.integrate_friberg(lin, 60)
    assert c.shape == (n, 66)
    np.testing.assert_allclose(c, 1.0, rtol=1e-12, atol=0)
    labs = typical_labs(2)
    times = np.arange(0.0, 31.0)
    out = H.marrow_recovery(k, labs, "none", np.zeros((2, times.size)), times)
    np.testing.assert_allclose(out["anc_per_ul"], 3000.0, rtol=1e-12)
    np.testing.assert_allclose(out["platelets_e9_per_l"], 200.0, rtol=1e-12)


@pytest.mark.parametrize("with_inflammation", [False, True])
def test_rk4_matches_dop853_reference(k, with_inflammation):
    labs = pd.concat([typical_labs(), typical_labs(platelets_e9_per_l=60.0, ferritin_ng_ml=2500.0,
                                                   anc_per_ul=1000.0, crp_mg_dl=5.0)], ignore_index=True)
    lins = H.marrow_lineages(k, labs, "flu_cy")
    times = np.arange(0.0, 41.0, 0.5)
    m = crs_like(2, times, [0.5, 0.8]) if with_inflammation else None
    half, emax = 0.3, 1.0
    for name, lin in lins.items():
        ours = H.integrate_friberg(lin, 40, m, times, half, emax if with_inflammation else 0.0)
        for i in range(2):
            def kill(t, i=i, lin=lin):
                return lin.kill_rate[i] if lin.kill_start <= t < lin.kill_start + lin.kill_days else 0.0

            def supp(t, i=i):
                if m is None or t < 0:
                    return 0.0
                mi = np.interp(t, times, m[i])
                return emax * mi / (mi + half)

            # integrate piece by piece so no step crosses the kill window's edges or the
            # corners of the piecewise-linear inflammation input
            edges = np.union1d([-5.0, lin.kill_start + lin.kill_days, 40.0],
                               times if m is not None else [])
            y = [1.0] * 5
            ref = [1.0]
            for a, b in zip(edges[:-1], edges[1:]):
                mid = 0.5 * (a + b)
                sol = solve_ivp(lambda t, yy: reference_rhs(t, yy, lin.k_tr[i], lin.k_circ[i], lin.gamma[i],
                                                            lambda _t: kill(mid), supp),
                                (a, b), y, method="DOP853", rtol=1e-10, atol=1e-13, dense_output=True)
                assert sol.success
                days = np.arange(math.floor(a) + 1, math.floor(b) + 1)
                days = days[(days > a) & (days <= b)]
                if days.size:
                    ref.extend(sol.sol(days)[4])
                y = sol.y[:, -1]
            ref = np.array(ref)
            assert ref.size == ours.shape[1]
            rel = np.abs(ours[i] - ref) / ref
            assert rel.max() < 1e-3, f"{name} patient {i}: max relative error {rel.max():.2e}"
            assert ref.min() < 0.5, "the reference case must contain a real nadir"


def test_effect_site_matches_ode():
    times = np.array([0.0, 1.0, 2.5, 4.0, 7.0, 9.0, 14.0, 20.0])
    m = np.array([[0.0, 0.1, 0.4, 0.2, 0.6, 0.3, 0.05, 0.0]])
    rate = 0.15
    got = H.inflammation_effect_site(m, times, rate)[0]
    ref = [0.0]
    y = [0.0]
    for a, b in zip(times[:-1], times[1:]):
        sol = solve_ivp(lambda t, yy: [rate * (np.interp(t, times, m[0]) - yy[0])], (a, b), y,
                        method="DOP853", rtol=1e-11, atol=1e-14)
        y = sol.y[:, -1]
        ref.append(y[0])
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-12)


# -- drivers -------------------------------------------------------------------------------------

def test_no_lymphodepletion_no_severe_neutropenia(k):
    ids = np.arange(60)
    labs = H.draw_baseline_labs(k, "LBCL", 11, ids)
    times = np.arange(0.0, 61.0, 0.5)
    traj = {"macrophage_activation": np.zeros((ids.size, times.size))}
    df, _, daily = H.haematology_outputs(times, traj, labs, 70.0, "none", ids, k)
    base = labs["anc_per_ul"].to_numpy()
    np.testing.assert_allclose(daily["anc_per_ul"], base[:, None] * np.ones((1, 61)), rtol=1e-12)
    assert (df.loc[base >= 500, "severe_neutropenia_days"] == 0).all()
    assert (df.loc[base >= 1250, "neutropenia_pattern"] == "quick").all()


def test_flu_cy_gives_a_nadir_in_the_first_two_weeks(k):
    labs = typical_labs()
    times = np.arange(0.0, 61.0)
    out = H.marrow_recovery(k, labs, "flu_cy", np.zeros((1, times.size)), times)
    anc = out["anc_per_ul"][0]
    assert anc.min() < 0.2 * 3000.0
    assert 0 <= int(anc.argmin()) <= 14
    assert anc[-1] > 0.8 * 3000.0, "ANC recovers by day 60 without inflammation"
    bend = H.marrow_recovery(k, labs, "bendamustine", np.zeros((1, times.size)), times)["anc_per_ul"][0]
    assert anc.min() < bend.min() < 3000.0, "bendamustine is less myelotoxic than Flu/Cy"


def test_more_inflammation_longer_neutropenia(k):
    ids = np.arange(80)
    labs = H.draw_baseline_labs(k, "LBCL", 5, ids)
    times = np.arange(0.0, 61.0, 0.5)
    means = []
    for amp in (0.0, 0.2, 0.6):
        anc = H.marrow_recovery(k, labs, "flu_cy", crs_like(ids.size, times, amp), times,
                                lineages=("neutrophil",))["anc_per_ul"]
        means.append((anc[:, :61] < 500).sum(axis=1).mean())
    assert means[0] < means[1] < means[2], means


def test_second_dip_comes_from_inflammation(k):
    """A late inflammatory pulse after recovery makes the pattern intermittent (a pulse strong
    enough to hold ANC below 500 for two weeks would count as aplastic instead)."""
    labs = typical_labs()
    times = np.arange(0.0, 91.0, 0.5)
    quiet = H.marrow_recovery(k, labs, "flu_cy", np.zeros((1, times.size)), times)
    late = np.clip(0.5 * np.exp(-0.5 * ((times - 25.0) / 3.0) ** 2), 0, 1)[None, :]
    dip = H.marrow_recovery(k, labs, "flu_cy", late, times)
    pat = [H.neutropenia_pattern(k, o["anc_per_ul"], o["days"], np.array([3000.0]))[0] for o in (quiet, dip)]
    assert pat == ["quick", "intermittent"]


def test_poor_reserve_longer_neutropenia_and_published_ordering(k):
    times = np.arange(0.0, 61.0, 0.5)
    good = typical_labs()
    poor = typical_labs(platelets_e9_per_l=60.0, ferritin_ng_ml=2500.0, anc_per_ul=3000.0)
    assert H.hematotox_scores(poor)[0] >= 2 > H.hematotox_scores(good)[0]
    dur = [(H.marrow_recovery(k, labs, "flu_cy", crs_like(1, times, 0.2), times,
                              lineages=("neutrophil",))["anc_per_ul"] < 500).sum() for labs in (good, poor)]
    assert dur[1] > dur[0]
    # cohort: share with >= 14 days of ANC < 500 (days 0-60), HT-high vs HT-low, with the
    # inflammation of simulated axi-cel patients (published: 48% vs 5%, Rejeski 2021)
    from carcell.cohort import run_cohort
    from carcell.scenario import load_scenario

    r = run_cohort(load_scenario(ROOT / "examples" / "axicel_lbcl.yaml",
                                 ["population.n=160", "trial.follow_up_days=60"]))
    ids = r.patients["patient_id"].to_numpy()
    labs = H.draw_baseline_labs(k, "LBCL", 2021, ids)
    anc = H.marrow_recovery(k, labs, "flu_cy", r.trajectories["macrophage_activation"].astype(float), r.times,
                            lineages=("neutrophil",), last_day=60)["anc_per_ul"]
    long = (anc < 500).sum(axis=1) >= 14
    high = H.hematotox_scores(labs) >= 2
    share_high, share_low = long[high].mean(), long[~high].mean()
    assert share_high > 0.3 and share_low < 0.15 and share_high > 4 * share_low, (share_high, share_low)


# -- baseline labs -------------------------------------------------------------------------------

def test_labs_do_not_depend_on_the_other_patients(k):
    all_ = H.draw_baseline_labs(k, "LBCL", 42, np.arange(20)).set_index("patient_id")
    some = H.draw_baseline_labs(k, "LBCL", 42, np.array([17, 3, 5])).set_index("patient_id")
    one = H.draw_baseline_labs(k, "LBCL", 42, np.array([9])).set_index("patient_id")
    pd.testing.assert_frame_equal(some, all_.loc[[17, 3, 5]])
    pd.testing.assert_frame_equal(one, all_.loc[[9]])
    other = H.draw_baseline_labs(k, "LBCL", 43, np.arange(20)).set_index("patient_id")
    assert not np.allclose(other.to_numpy(), all_.to_numpy())
    assert list(all_.columns) == list(H.LAB_COLUMNS)


def test_lab_correlation_and_reserve(k):
    labs = H.draw_baseline_labs(k, "LBCL", 7, np.arange(3000))
    logs = np.log(labs[list(H.LAB_COLUMNS)])
    r = logs.corr()
    rho = {c: float(k.value(f"haematology.lab_correlation.{c}")) for c in ("platelets_e9_per_l", "ferritin_ng_ml",
                                                                           "anc_per_ul")}
    # two labs correlate with rho_a * rho_b * sign_a * sign_b (sampling sd about 0.02 at n = 3000)
    assert r.loc["platelets_e9_per_l", "ferritin_ng_ml"] == pytest.approx(
        -rho["platelets_e9_per_l"] * rho["ferritin_ng_ml"], abs=0.07)
    assert r.loc["platelets_e9_per_l", "anc_per_ul"] == pytest.approx(
        rho["platelets_e9_per_l"] * rho["anc_per_ul"], abs=0.07)
    assert abs(r.loc["igg_mg_dl", "platelets_e9_per_l"]) < 0.07
    reserve = H.marrow_reserve_index(k, labs)
    high = H.hematotox_scores(labs) >= 2
    assert reserve[high].mean() < 0 < reserve[~high].mean()
    assert 0.3 < high.mean() < 0.7, "about half of LBCL patients are HT-high (46-54% published)"


def test_myeloma_igg_is_suppressed(k):
    mm = H.draw_baseline_labs(k, "MM", 1, np.arange(500))["igg_mg_dl"].median()
    lbcl = H.draw_baseline_labs(k, "LBCL", 1, np.arange(500))["igg_mg_dl"].median()
    assert mm < 400 < lbcl


def test_unknown_indication_names_the_field(k):
    with pytest.raises(ValueError, match="indication.disease"):
        H.draw_baseline_labs(k, "CLL", 1, np.arange(3))


# -- neutrophil read-outs ------------------------------------------------------------------------

def test_pattern_and_recovery_definitions(k):
    days = np.arange(0.0, 41.0)
    base = np.full(40 + 1, 3000.0)
    quick = base.copy(); quick[2:7] = 200.0                       # 5 days < 500, then back
    inter = base.copy(); inter[2:7] = 200.0; inter[20:24] = 700.0  # recovery, then dip < 1000
    aplas = base.copy(); aplas[1:17] = 300.0                      # 16 consecutive days < 500
    lowbase = np.full(41, 1100.0); lowbase[3:6] = 300.0           # own baseline below 1250
    anc = np.vstack([quick, inter, aplas, lowbase])
    pat = H.neutropenia_pattern(k, anc, days, np.array([3000.0, 3000.0, 3000.0, 1100.0]))
    assert list(pat) == ["quick", "intermittent", "aplastic", "quick"]
    rec = H.anc_recovery_day(k, anc, days)
    np.testing.assert_array_equal(rec, [7.0, 7.0, 17.0, 6.0])
    never = np.full((1, 41), 3000.0)
    assert H.anc_recovery_day(k, never, days)[0] == 0.0
    stuck = np.full((1, 41), 200.0)
    assert np.isnan(H.anc_recovery_day(k, stuck, days)[0])
    short = np.full((1, 10), 3000.0); short[0, 3:] = 600.0       # follow-up ends before recovery
    assert H.neutropenia_pattern(k, short, days[:10], np.array([3000.0]))[0] == "not_recovered"


# -- IgG and IVIG --------------------------------------------------------------------------------

def test_igg_constant_with_b_cells(k):
    days = np.arange(0.0, 121.0)
    igg, doses = H.igg_course(k, days, np.array([500.0, 900.0]), 70.0, np.ones((2, days.size)), None)
    np.testing.assert_allclose(igg, [[500.0], [900.0]] * np.ones((1, days.size)), rtol=1e-12)
    assert doses == []


def test_igg_falls_to_long_lived_floor_with_half_life(k):
    days = np.arange(0.0, 181.0)
    igg0 = np.array([1200.0])
    half = float(k.value("haematology.igg.half_life"))
    f = float(k.value("haematology.igg.long_lived_plasma_cell_fraction"))
    assert half == pytest.approx(21, abs=3), "IgG half-life is about 3 weeks"
    b = np.zeros((1, days.size)); b[0, 0] = 1.0     # B cells gone from day 0 (linear fall over day 0-1)
    igg, _ = H.igg_course(k, days, igg0, 70.0, b, None, ivig=False)
    # analytic solution with production dropping linearly from IgG0 to f*IgG0 over day 0-1
    kel = math.log(2) / half
    floor = f * igg0[0]
    e1 = math.exp(-kel)
    y1 = igg0[0] * e1 + igg0[0] * (1 - e1) + (floor - igg0[0]) * (1 - (1 - e1) / kel)
    expected = floor + (y1 - floor) * np.exp(-kel * (days[1:] - 1.0))
    np.testing.assert_allclose(igg[0, 1:], expected, rtol=1e-10)
    # after one half-life the excess above the floor has halved
    assert (igg[0, 1 + 21] - floor) / (igg[0, 1] - floor) == pytest.approx(0.5 ** (21 / half), rel=1e-9)
    assert floor < igg[0, -1] < floor * 1.01
    # plasma cells depleted as well: lower at every later day, falling towards zero
    both, _ = H.igg_course(k, days, igg0, 70.0, b, b.copy(), ivig=False)
    assert (both[0, 1:] < igg[0, 1:]).all()
    assert both[0, -1] < 0.01 * igg0[0]


def test_ivig_rules(k):
    days = np.arange(0.0, 151.0)
    n = 3
    igg0 = np.array([50.0, 650.0, 450.0])       # far below trigger at day 0 / falls later / never
    zero = np.zeros((n, days.size)); zero[:, 0] = 1.0
    zero[2] = 1.0                               # third patient keeps B and plasma cells
    weight = np.array([60.0, 80.0, 70.0])
    with_, doses = H.igg_course(k, days, igg0, weight, zero, zero.copy())
    without, none_ = H.igg_course(k, days, igg0, weight, zero, zero.copy(), ivig=False)
    assert none_ == []
    trigger = float(k.value("haematology.igg.ivig_trigger"))
    gap = float(k.value("haematology.igg.ivig_min_interval"))
    every = float(k.value("haematology.igg.check_every"))
    dose_mg_kg = float(k.value("haematology.igg.ivig_dose"))
    rise = dose_mg_kg / (float(k.value("haematology.igg.distribution_volume")) * 10.0)
    assert rise == pytest.approx(400 / 0.7, rel=0.3), "400 mg/kg raises IgG by several hundred mg/dL"
    assert trigger == 400
    kel = math.log(2) / float(k.value("haematology.igg.half_life"))
    by_patient = {i: [d for j, d, _ in doses if j == i] for i in range(n)}
    assert by_patient[0][0] == 0.0 and by_patient[1] and not by_patient[2]
    for i, ds in by_patient.items():
        assert all(d % every == 0 for d in ds)
        assert all(b - a >= gap for a, b in zip(ds[:-1], ds[1:]))
        for d in ds:
            assert with_[i, int(d)] <= trigger                       # given only at or below the trigger
        # every check at or below the trigger with the last dose >= gap ago got a dose
        last = -np.inf
        for d in np.arange(0, days[-1] + 1, every):
            if with_[i, int(d)] <= trigger and d - last >= gap:
                assert d in ds
                last = d
        # the doses add rise * exp(-kel (t - d)) on top of the course without IVIG
        t = days[:, None]
        extra = (rise * np.exp(-kel * (t - np.array(ds)[None, :])) * (t > np.array(ds)[None, :])).sum(axis=1)
        np.testing.assert_allclose(with_[i], without[i] + extra, rtol=1e-9, atol=1e-9)
    grams = {j: g for j, _, g in doses}
    assert grams[0] == pytest.approx(dose_mg_kg * 60 / 1000)


# -- the cohort function ---------------------------------------------------------------------

def _cohort_inputs(k, n=12, follow_up=120.0):
    ids = np.arange(100, 100 + n)
    labs = H.draw_baseline_labs(k, "LBCL", 3, ids)
    times = np.union1d(np.arange(0.0, follow_up + 1e-9, 1.0), np.arange(0.0, 28.0, 0.5))
    b = np.exp(-np.minimum(times, 20.0) / 2.0)[None, :] * np.ones((n, 1)) * 5e10
    traj = {"macrophage_activation": crs_like(n, times, np.linspace(0.05, 0.5, n)), "b_cells_cells": b}
    return ids, labs, times, traj


def test_outputs_columns_events_and_grid(k):
    ids, labs, times, traj = _cohort_inputs(k)
    weight = np.linspace(50, 100, ids.size)
    df, events, daily = H.haematology_outputs(times, traj, labs, weight, "flu_cy", ids, k)
    assert list(df.columns) == ["patient_id", "hematotox_score", "hematotox_high_risk", "anc_nadir_per_ul",
                                "severe_neutropenia_days", "anc_recovery_day", "neutropenia_pattern",
                                "icaht_grade", "platelet_nadir_e9_per_l", "igg_nadir", "ivig_doses"]
    assert list(events.columns) == ["patient_id", "day", "event", "value", "detail"]
    days = H.haematology_days(times, k)   # daily to the end of follow-up (120 days here)
    np.testing.assert_array_equal(days, np.arange(0.0, times[-1] + 1.0))
    for v in daily.values():
        assert v.shape == (ids.size, days.size)
    assert set(df["neutropenia_pattern"]) <= set(H.PATTERNS)
    assert (df["hematotox_high_risk"] == (df["hematotox_score"] >= 2)).all()
    assert (df["anc_nadir_per_ul"] == daily["anc_per_ul"].min(axis=1)).all()
    assert (df["severe_neutropenia_days"] <= 31).all()
    assert (events["event"] == "ivig").all() and (events["detail"] == "IgG <= 400 mg/dL").all()
    counts = events.groupby("patient_id").size().reindex(ids, fill_value=0).to_numpy()
    np.testing.assert_array_equal(df["ivig_doses"].to_numpy(), counts)
    w = dict(zip(ids, weight))
    np.testing.assert_allclose(events["value"], [0.4 * w[p] for p in events["patient_id"]])
    assert len(events) > 0, "B-cell aplasia over 120 days must bring some IgG to the trigger"
    # a short follow-up ends the grid early
    short = times <= 20.0
    _, _, d20 = H.haematology_outputs(times[short], {q: v[:, short] for q, v in traj.items()}, labs,
                                      weight, "flu_cy", ids, k)
    assert d20["anc_per_ul"].shape == (ids.size, 21)


def test_outputs_do_not_depend_on_chunking(k):
    ids, labs, times, traj = _cohort_inputs(k)
    full, ev_full, d_full = H.haematology_outputs(times, traj, labs, 70.0, "flu_cy", ids, k)
    part = slice(3, 7)
    sub, ev_sub, d_sub = H.haematology_outputs(times, {q: v[part] for q, v in traj.items()},
                                               labs.iloc[part].reset_index(drop=True), 70.0, "flu_cy",
                                               ids[part], k)
    pd.testing.assert_frame_equal(sub, full.iloc[part].reset_index(drop=True))
    for q in d_full:
        np.testing.assert_array_equal(d_sub[q], d_full[q][part])
    mine = ev_full[ev_full["patient_id"].isin(ids[part])].reset_index(drop=True)
    pd.testing.assert_frame_equal(ev_sub.sort_values(["patient_id", "day"]).reset_index(drop=True),
                                  mine.sort_values(["patient_id", "day"]).reset_index(drop=True))


def test_failed_patient_gets_nan(k):
    ids, labs, times, traj = _cohort_inputs(k, n=3)
    traj["macrophage_activation"] = traj["macrophage_activation"].copy()
    traj["macrophage_activation"][1, 10:] = np.nan
    df, events, daily = H.haematology_outputs(times, traj, labs, 70.0, "flu_cy", ids, k)
    assert np.isnan(df.loc[1, "anc_nadir_per_ul"]) and df.loc[1, "neutropenia_pattern"] is None
    assert np.isnan(daily["igg_mg_dl"][1]).all() and ids[1] not in set(events["patient_id"])
    assert np.isfinite(df.loc[[0, 2], "anc_nadir_per_ul"]).all()


def test_unknown_regimen_names_the_field(k):
    ids, labs, times, traj = _cohort_inputs(k, n=2)
    with pytest.raises(ValueError, match=r"regimen\.lymphodepletion") as e:
        H.haematology_outputs(times, traj, labs, 70.0, "flu_cyy", ids, k)
    assert "flu_cy" in str(e.value) and "bendamustine" in str(e.value) and "none" in str(e.value)


def test_cohort_run_reports_haematology_and_igg_from_the_simulated_course():
    """Wired into run_cohort: the score is CAR-HEMATOTOX of the patient's own baseline labs,
    a CD19 CAR's B-cell aplasia lowers IgG, and IVIG is logged only at IgG <= 400 mg/dL."""
    from carcell.clinical.risk import car_hematotox
    from carcell.cohort import run_cohort
    from carcell.scenario.load import validate_raw

    raw = {"indication": {"disease": "LBCL"}, "product": {"preset": "tisa-cel"},
           "population": {"n": 8, "seed": 5}, "trial": {"follow_up_days": 90}}
    r = run_cohort(validate_raw(raw, "haematology"))
    p = r.patients
    score = car_hematotox(p["baseline_platelets_e9_per_l"].to_numpy(), p["baseline_anc_per_ul"].to_numpy(),
                          p["baseline_hb_g_dl"].to_numpy(), p["baseline_crp_mg_dl"].to_numpy(),
                          p["baseline_ferritin_ng_ml"].to_numpy())
    assert np.array_equal(np.asarray(score), p["hematotox_score"].to_numpy())
    t = r.times
    day = lambda d: int(np.argmin(np.abs(t - d)))  # noqa: E731
    b = r.trajectories["b_cells_cells"]
    aplastic = b[:, day(60)] < 0.1 * b[:, 0]
    assert aplastic.any()
    igg = r.trajectories["igg_mg_dl"]
    no_ivig = p["ivig_doses"].to_numpy() == 0
    sel = aplastic & no_ivig
    assert np.all(igg[sel, day(90)] < 0.8 * igg[sel, 0])
    ivig = r.events[r.events["event"] == "ivig"]
    assert ivig.groupby("patient_id").size().reindex(p["patient_id"], fill_value=0).tolist() == p["ivig_doses"].tolist()
    for pid, d in zip(ivig["patient_id"], ivig["day"]):
        assert igg[int(pid) - int(p["patient_id"].iloc[0]), day(d)] <= 400 + 1e-6
    assert np.all(p["anc_nadir_per_ul"] < p["baseline_anc_per_ul"])
