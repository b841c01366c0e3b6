"""Known behaviours of CAR-T therapy that the model must show (cohort medians, fixed seeds)."""

import numpy as np
import pytest

from carcell.cohort.run import run_cohort
from carcell.scenario.load import validate_raw


def cohort(disease="LBCL", costim="4-1BB", n=60, seed=11, days=120, **kw):
    raw = {
        "indication": {"disease": disease, **kw.pop("indication", {})},
        "product": {"car": {"costim": costim}, "dose": kw.pop("dose", {"cells_per_kg": 2e6})},
        "regimen": {"lymphodepletion": kw.pop("ld", "flu_cy")},
        "population": {"n": n, "seed": seed, **kw.pop("population", {})},
        "trial": {"follow_up_days": days},
    }
    assert not kw
    r = run_cohort(validate_raw(raw))
    assert (r.patients["solver_status"] == "ok").all()
    return r


def test_tenfold_dose_raises_median_cmax():
    low = cohort(dose={"cells_per_kg": 5e5}).patients["cmax_cells_per_ul"].median()
    high = cohort(dose={"cells_per_kg": 5e6}).patients["cmax_cells_per_ul"].median()
    assert high > low


def _median_curve(r):
    return np.median(r.trajectories["car_cells_per_ul"], axis=0)


def test_cd28_peaks_earlier_and_contracts_faster_than_4_1bb():
    bb = cohort(costim="4-1BB")
    cd28 = cohort(costim="CD28")
    assert cd28.patients["tmax_days"].median() < bb.patients["tmax_days"].median()
    # contraction: fall over the three weeks after each patient's own peak
    def contraction(r):
        c = r.trajectories["car_cells_per_ul"].astype(float)
        i = np.argmax(c, axis=1)
        rows = np.arange(c.shape[0])
        return np.median(np.log(c[rows, i] / c[rows, i + 21]) / 21)
    assert contraction(cd28) > contraction(bb)


def test_no_lymphodepletion_lowers_median_cmax():
    with_ld = cohort(ld="flu_cy").patients["cmax_cells_per_ul"].median()
    without = cohort(ld="none").patients["cmax_cells_per_ul"].median()
    assert without < with_ld


def test_no_antigen_negative_cells_no_antigen_negative_relapse():
    r = cohort(disease="B-ALL", n=80, days=365, indication={"antigen_negative_fraction": 0.0})
    assert (r.patients["relapse_antigen"] != "negative").all()
    # and the same cohort with an escape clone does relapse antigen-negative
    r2 = cohort(disease="B-ALL", n=80, days=365, indication={"antigen_negative_fraction": 1e-3})
    assert (r2.patients["relapse_antigen"] == "negative").sum() > 0


def test_higher_baseline_burden_gives_higher_il6_peaks():
    low = cohort(indication={"baseline_burden": {"median": 1e10}})
    high = cohort(indication={"baseline_burden": {"median": 3e11}})
    assert high.patients["il6_peak_pg_per_ml"].median() > low.patients["il6_peak_pg_per_ml"].median()


@pytest.mark.parametrize("disease", ["LBCL", "B-ALL", "MM"])
def test_trajectories_are_finite_nonnegative(disease):
    r = cohort(disease=disease, n=20, costim="4-1BB",
               dose={"cells": 3e8})
    for q, v in r.trajectories.items():
        assert np.all(np.isfinite(v)), q
        assert np.all(v >= -1e-6), q
    assert np.all(np.diff(r.times) > 0)
