"""Clinical risk scores against the published tables (reference/clinical.md section 3).

Expected values are written out by hand from the tables, not computed with the code:

* CAR-HEMATOTOX (Rejeski 2021): platelets > 175 = 0, 75-175 = 1, < 75 = 2; ANC < 1200/uL = 1;
  Hb < 9.0 g/dL = 1; CRP > 3.0 mg/dL = 1; ferritin < 650 = 0, 650-2000 = 1, > 2000 = 2 ng/mL;
  high risk >= 2. At equality (clinical.md 3.1): ANC 1200, Hb 9.0, CRP 3.0 -> 0;
  platelets 75 and 175 -> 1; ferritin 650 and 2000 -> 1.
* EASIX = LDH x creatinine / platelets, high risk > 4.67; m-EASIX = LDH x CRP / platelets;
  s-EASIX = LDH / platelets; creatinine 88.42 umol/L = 1 mg/dL, CRP 10 mg/L = 1 mg/dL.
* N-ICAHT early (days 0-30): ANC <= 500 for 1-6 days G1, 7-13 G2, >= 14 G3; ANC <= 100 for
  >= 7 days G4. Late (after day 30, >= 2 consecutive measurements): <= 1500 G1, <= 1000 G2,
  <= 500 G3, <= 100 G4.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from carcell.clinical.risk import (
    car_hematotox,
    car_hematotox_risk,
    creatinine_umol_to_mg_dl,
    crp_mg_l_to_mg_dl,
    easix,
    easix_high_risk,
    icaht_early,
    icaht_late,
    m_easix,
    s_easix,
)
from carcell.knowledge import load_knowledge

# all markers well inside the 0-point range: platelets, ANC, Hb, CRP, ferritin
NORMAL = dict(platelets_e9_per_l=250, anc_per_ul=3000, hb_g_dl=13.0, crp_mg_dl=0.5, ferritin_ng_ml=200)


# -- CAR-HEMATOTOX ---------------------------------------------------------------------------

@pytest.mark.parametrize("marker,value,points", [
    ("platelets_e9_per_l", 175.1, 0), ("platelets_e9_per_l", 175, 1), ("platelets_e9_per_l", 174.9, 1),
    ("platelets_e9_per_l", 75.1, 1), ("platelets_e9_per_l", 75, 1), ("platelets_e9_per_l", 74.9, 2),
    ("platelets_e9_per_l", 0, 2),
    ("anc_per_ul", 1201, 0), ("anc_per_ul", 1200, 0), ("anc_per_ul", 1199, 1), ("anc_per_ul", 0, 1),
    ("hb_g_dl", 9.1, 0), ("hb_g_dl", 9.0, 0), ("hb_g_dl", 8.9, 1),
    ("crp_mg_dl", 2.9, 0), ("crp_mg_dl", 3.0, 0), ("crp_mg_dl", 3.1, 1),
    ("ferritin_ng_ml", 649, 0), ("ferritin_ng_ml", 650, 1), ("ferritin_ng_ml", 651, 1),
    ("ferritin_ng_ml", 1999, 1), ("ferritin_ng_ml", 2000, 1), ("ferritin_ng_ml", 2001, 2),
])
def test_hematotox_each_boundary(marker, value, points):
    """One marker moved across its cut-off, the others normal: the score is that marker's points."""
    assert car_hematotox(**{**NORMAL, marker: value}) == points


def test_hematotox_worked_examples():
    assert car_hematotox(**NORMAL) == 0
    # 2 + 1 + 1 + 1 + 2: every marker in its worst class
    assert car_hematotox(60, 1000, 8.5, 5, 2500) == 7
    # E2-like: every marker exactly on a cut-off -> platelets 75 (1) + ferritin 650 (1) = 2;
    # the FHIRPath reading (CRP 3.0 -> 1) would give 3, still high risk
    assert car_hematotox(75, 1200, 9.0, 3.0, 650) == 2
    assert car_hematotox(175, 1200, 9.0, 3.0, 2000) == 2
    # platelets 120 (1) + ANC 800 (1) + Hb 10 (0) + CRP 1 (0) + ferritin 500 (0) = 2
    assert car_hematotox(120, 800, 10.0, 1.0, 500) == 2
    # platelets 50 (2) + ferritin 300 (0), rest normal = 2
    assert car_hematotox(50, 3000, 12.0, 0.2, 300) == 2


def test_hematotox_scalar_gives_python_int():
    s = car_hematotox(**NORMAL)
    assert type(s) is int


def test_hematotox_risk_class():
    assert car_hematotox_risk(0) == "low"
    assert car_hematotox_risk(1) == "low"
    assert car_hematotox_risk(2) == "high"
    assert car_hematotox_risk(7) == "high"
    assert list(car_hematotox_risk([0, 1, 2, 3])) == ["low", "low", "high", "high"]
    assert car_hematotox_risk(car_hematotox(75, 1200, 9.0, 3.0, 650)) == "high"


def test_hematotox_vectorised_equals_scalar_calls():
    cases = [(250, 3000, 13, 0.5, 200), (60, 1000, 8.5, 5, 2500), (75, 1200, 9.0, 3.0, 650),
             (175.1, 1199, 9.1, 3.1, 2001), (74.9, 1201, 8.9, 2.9, 649)]
    cols = list(zip(*cases))
    expected = [car_hematotox(*c) for c in cases]
    assert expected == [0, 7, 2, 4, 3]  # last two by hand: 0+1+0+1+2, 2+0+1+0+0
    as_arrays = car_hematotox(*(np.array(c) for c in cols))
    as_lists = car_hematotox(*(list(c) for c in cols))
    as_series = car_hematotox(*(pd.Series(c) for c in cols))
    for out in (as_arrays, as_lists, as_series):
        assert isinstance(out, np.ndarray)
        assert out.tolist() == expected


def test_hematotox_broadcasts_one_array_against_scalars():
    out = car_hematotox([200, 175, 75, 74], 3000, 13.0, 0.5, 200)
    assert out.tolist() == [0, 1, 1, 2]


def test_hematotox_thresholds_in_data_file_match_published_table():
    k = load_knowledge(False)
    t = "risk_scores.car_hematotox."
    assert k.value(t + "platelets.one_point_at_or_below") == 175
    assert k.value(t + "platelets.two_points_below") == 75
    assert k.value(t + "anc.one_point_below") == 1200
    assert k.value(t + "haemoglobin.one_point_below") == 9.0
    assert k.value(t + "crp.one_point_above") == 3.0
    assert k.value(t + "ferritin.one_point_at_or_above") == 650
    assert k.value(t + "ferritin.two_points_above") == 2000
    assert k.value(t + "high_risk_from") == 2
    assert k.value("risk_scores.easix.high_risk_above") == 4.67


@pytest.mark.parametrize("args,match", [
    ((-3, 3000, 13, 0.5, 200), r"platelets_e9_per_l: -3 is negative; give the count in 1e9/L"),
    ((250, -1, 13, 0.5, 200), r"anc_per_ul: -1 is negative"),
    ((250, 3000, float("nan"), 0.5, 200), r"hb_g_dl: nan is not a finite number"),
    ((250, 3000, 13, float("inf"), 200), r"crp_mg_dl: inf is not a finite number"),
    ((250, 3000, 13, 0.5, [200, -5]), r"ferritin_ng_ml: -5 is negative"),
    ((250, 3000, 13, 0.5, "high"), r"ferritin_ng_ml: 'high' is not a number"),
])
def test_hematotox_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        car_hematotox(*args)


def test_hematotox_risk_rejects_negative_score():
    with pytest.raises(ValueError, match=r"score: -1 is negative"):
        car_hematotox_risk(-1)


# -- EASIX family ----------------------------------------------------------------------------

def test_unit_conversions():
    assert creatinine_umol_to_mg_dl(88.42) == pytest.approx(1.0)
    assert creatinine_umol_to_mg_dl(176.84) == pytest.approx(2.0)
    assert crp_mg_l_to_mg_dl(30) == pytest.approx(3.0)
    assert np.allclose(crp_mg_l_to_mg_dl([10, 55]), [1.0, 5.5])


def test_easix_hand_computed():
    # 250 x 1.0 / 50 = 5.0 > 4.67
    assert easix(250, 1.0, 50) == pytest.approx(5.0)
    assert easix_high_risk(easix(250, 1.0, 50)) is True
    # same patient with creatinine in umol/L
    assert easix(250, creatinine_umol_to_mg_dl(88.42), 50) == pytest.approx(5.0)
    # 200 x 0.8 / 160 = 1.0 -> low risk
    assert easix(200, 0.8, 160) == pytest.approx(1.0)
    assert easix_high_risk(easix(200, 0.8, 160)) is False


def test_easix_cutoff_is_strict():
    assert easix_high_risk(4.67) is False
    assert easix_high_risk(4.671) is True
    assert easix_high_risk(4.66) is False
    assert easix_high_risk([1.0, 4.67, 5.0]).tolist() == [False, False, True]
    assert easix_high_risk(3.0, cutoff=2.5) is True
    assert easix_high_risk(3.0, cutoff=3.5) is False


def test_m_easix_and_s_easix_hand_computed():
    # CRP 20 mg/L = 2.0 mg/dL; 300 x 2.0 / 100 = 6.0
    assert m_easix(300, crp_mg_l_to_mg_dl(20), 100) == pytest.approx(6.0)
    assert m_easix(300, 2.0, 100) == pytest.approx(6.0)
    # 300 / 100 = 3.0; 450 / 25 = 18
    assert s_easix(300, 100) == pytest.approx(3.0)
    assert s_easix(450, 25) == pytest.approx(18.0)


def test_easix_vectorised_equals_scalar_calls():
    ldh, cr, plt = [250, 200, 600], [1.0, 0.8, 1.5], [50, 160, 30]
    out = easix(np.array(ldh), pd.Series(cr), plt)
    assert isinstance(out, np.ndarray)
    assert np.allclose(out, [5.0, 1.0, 30.0])
    assert np.allclose(out, [easix(a, b, c) for a, b, c in zip(ldh, cr, plt)])
    assert np.allclose(m_easix(ldh, cr, plt), [m_easix(a, b, c) for a, b, c in zip(ldh, cr, plt)])
    assert np.allclose(s_easix(ldh, plt), [250 / 50, 200 / 160, 600 / 30])


@pytest.mark.parametrize("call,match", [
    (lambda: easix(-250, 1.0, 50), r"ldh_u_l: -250 is negative"),
    (lambda: easix(250, float("nan"), 50), r"creatinine_mg_dl: nan is not a finite number"),
    (lambda: easix(250, 1.0, -3), r"platelets_e9_per_l: -3 is negative; give the count in 1e9/L"),
    (lambda: easix(250, 1.0, 0), r"platelets_e9_per_l: 0 cannot be divided by"),
    (lambda: m_easix(250, -2, 50), r"crp_mg_dl: -2 is negative"),
    (lambda: s_easix(250, [50, 0]), r"platelets_e9_per_l: 0 cannot be divided by"),
    (lambda: creatinine_umol_to_mg_dl(-1), r"creatinine_umol_l: -1 is negative"),
    (lambda: crp_mg_l_to_mg_dl(float("inf")), r"crp_mg_l: inf is not a finite number"),
    (lambda: easix_high_risk(float("nan")), r"value: nan is not a finite number"),
])
def test_easix_rejects_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- N-ICAHT ---------------------------------------------------------------------------------

DAYS = np.arange(0, 101)  # day 0 (infusion) to day 100, one value a day


def series(low: dict[int, float], baseline: float = 2000.0) -> np.ndarray:
    """ANC 2000/uL every day except the days given."""
    anc = np.full(DAYS.size, baseline)
    for day, value in low.items():
        anc[day] = value
    return anc


@pytest.mark.parametrize("low,grade", [
    ({}, 0),
    ({d: 400 for d in range(1, 7)}, 1),           # 6 days <= 500
    ({d: 400 for d in range(1, 8)}, 2),           # 7 days
    ({d: 400 for d in range(1, 14)}, 2),          # 13 days
    ({d: 400 for d in range(1, 15)}, 3),          # 14 days
    ({d: 50 for d in range(1, 8)}, 4),            # 7 days <= 100
    ({d: 50 for d in range(1, 7)}, 1),            # 6 days <= 100 (and only 6 <= 500)
    ({**{d: 50 for d in range(1, 7)}, **{d: 300 for d in range(7, 21)}}, 3),  # 20 days <= 500, 6 <= 100
    ({d: 500 for d in range(1, 8)}, 2),           # exactly 500 counts
    ({d: 100 for d in range(1, 8)}, 4),           # exactly 100 counts
    ({d: 501 for d in range(1, 20)}, 0),          # 501 does not count
    ({**{d: 400 for d in range(2, 6)}, **{d: 400 for d in range(20, 23)}}, 2),  # 4 + 3 days in total
    ({d: 400 for d in range(31, 60)}, 0),         # after day 30: late, not early
    ({d: 400 for d in range(25, 39)}, 1),         # days 25-30 count (6), 31-38 do not
])
def test_icaht_early_grades(low, grade):
    assert icaht_early(series(low), DAYS) == grade


def test_icaht_early_ignores_days_before_infusion():
    days = np.arange(-10, 31)
    anc = np.where(days < 0, 50.0, 2000.0)  # 10 profound days before infusion only
    assert icaht_early(anc, days) == 0


@pytest.mark.parametrize("low,grade", [
    ({}, 0),
    ({50: 400}, 0),                               # single transient dip
    ({50: 50, 70: 50, 90: 50}, 0),                # three separate single dips
    ({50: 400, 51: 400}, 3),                      # two consecutive <= 500
    ({50: 1500, 51: 1500}, 1),                    # exactly 1500 counts
    ({50: 1501, 51: 1501}, 0),
    ({50: 1200, 51: 1200}, 1),
    ({50: 900, 51: 900}, 2),
    ({50: 80, 51: 80}, 4),
    ({50: 1200, 51: 50}, 1),                      # the dip to 50 is single; the pair is <= 1500
    ({50: 50, 51: 900, 52: 50}, 2),               # <= 1000 three days running, <= 100 never twice
    ({29: 50, 30: 50}, 0),                        # early days do not count
    ({30: 50, 31: 50}, 0),                        # only day 31 is late: one measurement
])
def test_icaht_late_grades(low, grade):
    assert icaht_late(series(low), DAYS) == grade


def test_icaht_late_with_weekly_measurements():
    """Consecutive measurements, not consecutive days: two weekly values in a row count."""
    days = [35, 42, 49, 56]
    assert icaht_late([2000, 800, 700, 2000], days) == 2
    assert icaht_late([800, 2000, 700, 2000], days) == 0


def test_icaht_vectorised_over_patients_equals_single_calls():
    patients = [series({}), series({d: 400 for d in range(1, 15)}), series({d: 50 for d in range(1, 8)}),
                series({50: 900, 51: 900}), series({50: 400})]
    stacked = np.vstack(patients)
    early, late = icaht_early(stacked, DAYS), icaht_late(stacked, DAYS)
    assert isinstance(early, np.ndarray) and isinstance(late, np.ndarray)
    assert early.tolist() == [icaht_early(p, DAYS) for p in patients] == [0, 3, 4, 0, 0]
    assert late.tolist() == [icaht_late(p, DAYS) for p in patients] == [0, 0, 0, 2, 0]
    assert icaht_early(list(patients[1]), pd.Series(DAYS)) == 3
    assert type(icaht_early(patients[1], DAYS)) is int


@pytest.mark.parametrize("func", [icaht_early, icaht_late])
@pytest.mark.parametrize("anc,days,match", [
    ([2000, 400, 400], [0, 1], r"3 values per patient but days has 2"),
    ([2000, 400, 400], [0, 2, 1], r"strictly increasing.*day 1 follows day 2"),
    ([2000, 400, 400], [0, 1, 1], r"strictly increasing.*day 1 follows day 1"),
    ([2000, -400, 400], [0, 1, 2], r"anc_per_ul_daily: -400 is negative"),
    ([2000, float("nan"), 400], [0, 1, 2], r"anc_per_ul_daily: nan is not a finite number"),
    ([2000, 400, 400], [0, float("nan"), 2], r"days: every day must be a finite number"),
])
def test_icaht_rejects_bad_series(func, anc, days, match):
    with pytest.raises(ValueError, match=match):
        func(anc, days)
