"""Response criteria on hand-made burden curves, checked against the written rules."""

import numpy as np

import pytest

from carcell.clinical.response import assess, baseline_m_protein

T = np.arange(0.0, 366.0)
LUGANO = {"pr_spd_fraction": 0.5, "pd_spd_increase": 0.5, "cr_detectable_cells": 1e9,
          "assessment_days": [28, 90, 180, 365]}
IMWG = {"pr_fraction": 0.5, "vgpr_fraction": 0.1, "cr_fraction": 0.005, "pd_increase": 0.25,
        "scr_fraction": 2.5e-4, "mrd_negative_fraction": 2.5e-5, "assessment_days": [28, 90, 180, 365]}
BALL = {"cr_blast_fraction": 0.05, "mrd_negative_fraction": 1e-4, "marrow_cells": 1e12,
        "assessment_days": [28, 90, 180, 365]}


def run(criteria, curves, rules, neg=None):
    b = np.array(curves, dtype=float)
    neg = np.zeros_like(b) if neg is None else np.array(neg, dtype=float)
    return assess(criteria, T, b, b - neg, neg, rules, 365)


def test_lugano_cr_pr_sd_pd():
    base = 1e11
    flat = np.full(T.size, base)
    cr = np.where(T < 20, base, 1e8)
    # PR needs SPD <= 50%: burden <= 0.5^(3/2) = 0.354 of baseline
    pr = np.where(T < 20, base, 0.3 * base)
    sd = np.where(T < 20, base, 0.4 * base)  # SPD 54%: not a PR
    pd = base * np.exp(0.02 * T)             # at day 28 burden x1.75, SPD x1.45; day 90 PD
    r = run("lugano", [cr, pr, sd, pd, flat], LUGANO)
    assert list(r.best_response) == ["CR", "PR", "SD", "SD", "SD"]
    assert r.progression_day[3] == 90
    assert np.isnan(r.progression_day[:3]).all()


def test_lugano_relapse_after_cr_is_progression_with_antigen():
    base = 1e11
    b = np.where(T < 20, base, np.where(T < 150, 1e7, 5e10))
    neg = np.where(T < 150, 0.0, 4.9e10)
    r = run("lugano", [b], LUGANO, [neg])
    assert r.best_response[0] == "CR"
    assert r.progression_day[0] == 180
    assert r.relapse_antigen[0] == "negative"


def test_imwg_categories():
    base = 1e11
    curves = [np.where(T < 20, base, f * base) for f in (0.001, 0.05, 0.4, 0.8)]
    r = run("imwg", curves, IMWG)
    assert list(r.best_response) == ["CR", "VGPR", "PR", "SD"]
    assert not r.stringent_cr.any() and not r.mrd_negative.any()   # 1e-3 of baseline: CR only


def test_imwg_stringent_cr_and_mrd_need_deeper_responses_than_cr():
    """Burden at 1e-3, 1e-4 and 1e-6 of baseline: CR; CR + sCR (below 2.5e-4); CR + sCR + MRD
    negative (below 2.5e-5). A stringent CR later lost to progression stays recorded."""
    base = 1e11
    curves = [np.where(T < 20, base, f * base) for f in (1e-3, 1e-4, 1e-6)]
    curves.append(np.where(T < 20, base, np.where(T < 100, 1e-6 * base, base)))
    r = run("imwg", curves, IMWG)
    assert list(r.best_response) == ["CR", "CR", "CR", "CR"]
    assert list(r.stringent_cr) == [False, True, True, True]
    assert list(r.mrd_negative) == [False, False, True, True]
    assert r.progression_day[3] == 180


def test_imwg_progression_needs_an_absolute_rise_of_half_a_gram_per_decilitre():
    """IMWG 2016 PD: +25% from the nadir and at least +0.5 g/dL of serum M-protein. With 2.5 g/dL
    at baseline, 0.5 g/dL is a fifth of the baseline burden: a CR regrowing to 10% of baseline
    (+0.25 g/dL) is not progression; at 30% (+0.75 g/dL) it is. A patient at 10 g/dL needs only
    5% of baseline. Without baseline M-protein the relative rule alone applies, as before."""
    base = 1e11
    def regrow(level):
        return np.where(T < 20, base, np.where(T < 150, 1e-3 * base, level * base))
    curves = [regrow(0.1), regrow(0.3), regrow(0.1)]
    rules = IMWG | {"pd_absolute_increase": 0.5}
    b = np.array(curves)
    r = assess("imwg", T, b, b, np.zeros_like(b), rules, 365, m_protein=np.array([2.5, 2.5, 10.0]))
    assert np.isnan(r.progression_day[0])
    assert r.progression_day[1] == 180 and r.progression_day[2] == 180
    relative_only = run("imwg", curves, IMWG)
    assert (relative_only.progression_day == 180).all()


def test_baseline_m_protein_is_each_patients_own_draw_above_the_measurable_floor():
    """Log-normal around the median, held at or above 1 g/dL, the same for an id whatever the
    other ids drawn with it; None without a baseline_m_protein entry."""
    r = {"baseline_m_protein": [2.5, 0.6], "measurable_m_protein": 1.0}
    ids = np.arange(4000)
    m = baseline_m_protein(r, 42, ids)
    assert m.min() >= 1.0
    assert np.median(m) == pytest.approx(2.5, rel=0.05)        # the floor is below the median
    assert np.mean(m <= 1.0) == pytest.approx(0.063, abs=0.015)  # P(z < ln(1/2.5)/0.6) = 0.063
    assert np.array_equal(baseline_m_protein(r, 42, ids[[17, 3]]), m[[17, 3]])
    assert not np.array_equal(baseline_m_protein(r, 43, ids[:50]), m[:50])
    assert baseline_m_protein({}, 42, ids) is None


def test_ball_cr_mrd_and_relapse():
    base = 3e11
    mrd_neg = np.where(T < 20, base, 1e7)            # blasts 1e-5 -> MRD-negative CR
    mrd_pos = np.where(T < 20, base, 1e10)           # blasts ~1% -> CR, MRD-positive
    nr = np.full(T.size, base)                       # 23% blasts -> NR, failure at day 28
    relapse = np.where(T < 20, base, np.where(T < 100, 1e7, 2e11))
    r = run("marrow_blasts", [mrd_neg, mrd_pos, nr, relapse], BALL)
    assert list(r.best_response) == ["CR", "CR", "NR", "CR"]
    assert list(r.mrd_negative) == [True, False, False, True]
    assert r.progression_day[2] == 28 and r.relapse_antigen[2] == "none"
    assert r.progression_day[3] == 180 and r.relapse_antigen[3] == "positive"


# RECIST 1.1 and RANO on equal spheres: 3 lesions at 1e8 cells/mL. One lesion's diameter is
# (6 V / pi)^(1/3); the sum of diameters scales as burden^(1/3), the RANO sum of products as
# burden^(2/3). Boundaries below are worked from the criteria's thresholds, not from the code.
RECIST = {"lesions": 3, "cells_per_ml": 1e8, "cr_detectable_cells": 1e6, "pr_fraction": 0.3,
          "pd_increase": 0.2, "pd_absolute_mm": 5.0, "assessment_days": [28, 90, 180, 365]}
RANO = {**RECIST, "pr_fraction": 0.5, "pd_increase": 0.25}


def _sum_of_diameters_mm(burden, lesions=3, cells_per_ml=1e8):
    per_lesion_mm3 = burden / cells_per_ml * 1000.0 / lesions
    return lesions * (6 * per_lesion_mm3 / np.pi) ** (1 / 3)


def test_recist_sum_of_diameters_of_three_spheres():
    from carcell.clinical.response import lesion_measure

    # 3 spheres of 10 mL: diameter (6 x 10000 / pi)^(1/3) = 26.73 mm each, 80.2 mm in all
    burden = np.array([3 * 10 * 1e8])
    assert np.allclose(lesion_measure("recist", burden, RECIST), 3 * 26.730, rtol=1e-4)
    assert np.allclose(lesion_measure("rano", burden, RANO), 3 * 26.730 ** 2, rtol=1e-4)


def test_recist_pr_at_30_percent_shrinkage_of_the_sum():
    base = 3e9
    # a 30% smaller sum of diameters is 0.7^3 = 0.343 of the burden: PR just below, SD just above
    pr = np.where(T < 20, base, 0.340 * base)
    sd = np.where(T < 20, base, 0.350 * base)
    cr = np.where(T < 20, base, 5e5)
    r = run("recist", [pr, sd, cr], RECIST)
    assert list(r.best_response) == ["PR", "SD", "CR"]


def test_recist_progression_needs_20_percent_and_5_mm():
    base = 3e9                       # sum of diameters 38.6 mm
    nadir = 0.5 * base               # 30.6 mm after shrinkage (SD)
    # +20% of a 30.6 mm sum is 6.1 mm (> 5 mm): PD at 1.2^3 = 1.728x the nadir burden
    pd = np.where(T < 20, base, np.where(T < 150, nadir, 1.75 * nadir))
    sd = np.where(T < 20, base, np.where(T < 150, nadir, 1.70 * nadir))
    # a small tumour: +20% of a 10 mm sum is only 2 mm, so growth of 1.8x the burden is not PD yet
    small = 3 * 1e8 * (np.pi / 6 * (10 / 3) ** 3) / 1000
    assert np.isclose(_sum_of_diameters_mm(small), 10.0)
    tiny = np.where(T < 150, small, 1.8 * small)
    r = run("recist", [pd, sd, tiny], RECIST)
    assert r.progression_day[0] == 180 and np.isnan(r.progression_day[1]) and np.isnan(r.progression_day[2])
    assert (_sum_of_diameters_mm(1.8 * small) - 10.0) < 5.0


def test_rano_thresholds_on_the_sum_of_products():
    base = 3e9
    # PR: products down 50% -> burden 0.5^(3/2) = 0.354; PD: products up 25% -> 1.25^(3/2) = 1.398
    pr = np.where(T < 20, base, 0.35 * base)
    sd = np.where(T < 20, base, 0.36 * base)
    pd = np.where(T < 150, base, 1.41 * base)
    not_pd = np.where(T < 150, base, 1.38 * base)
    r = run("rano", [pr, sd, pd, not_pd], RANO)
    assert list(r.best_response[:2]) == ["PR", "SD"]
    assert r.progression_day[2] == 180 and np.isnan(r.progression_day[3])


def test_relapse_labelled_by_largest_clone_including_antigen_low():
    base = 3e9
    b = np.where(T < 20, base, np.where(T < 150, 1e5, 2e9))
    low = np.where(T < 150, 0.0, 1.5e9)
    neg = np.where(T < 150, 0.0, 0.2e9)
    r = assess("recist", T, b[None], (b - low - neg)[None], neg[None], RECIST, 365, tumour_low=low[None])
    assert r.best_response[0] == "CR" and r.relapse_antigen[0] == "low"
