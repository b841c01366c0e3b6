"""Response criteria on hand-made burden curves, checked against the written rules."""

import numpy as np

from carcell.clinical.response import assess

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
