"""Clinical risk scores around CAR-T infusion (reference/clinical.md section 3).

* CAR-HEMATOTOX (Rejeski 2021, doi:10.1182/blood.2020010543): haematotoxicity risk from
  five labs taken before lymphodepletion; score 0-7, high risk at >= 2.
* EASIX family: EASIX = LDH x creatinine / platelets (cut-off > 4.67, Korell 2022,
  doi:10.3389/fimmu.2022.877477); m-EASIX = LDH x CRP / platelets and s-EASIX = LDH /
  platelets (Pennisi 2021, doi:10.1182/bloodadvances.2020003885).
* N-ICAHT (Rejeski 2023, doi:10.1182/blood.2023020578): grade 0-4 of neutropenia, early
  (days 0-30) and late (after day 30), from a daily ANC series.

Every threshold is read from ``carcell/knowledge/data/risk_scores.yaml``. The functions take
scalars, lists, numpy arrays or pandas Series; a scalar input gives a Python scalar, anything
else a numpy array. Negative or non-finite inputs raise ValueError naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from carcell.knowledge import load_knowledge


def _v(path: str) -> float:
    """A threshold from risk_scores.yaml (the knowledge base is loaded once and cached)."""
    return load_knowledge(False).value(f"risk_scores.{path}")


def _check(name: str, x: Any, unit_hint: str) -> np.ndarray:
    """``x`` as a float array; ValueError naming ``name`` if it is not numeric, finite and >= 0."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {x!r} is not a number; {unit_hint}") from None
    if (bad := ~np.isfinite(a)).any():
        raise ValueError(f"{name}: {a[bad].flat[0]:g} is not a finite number; {unit_hint}")
    if (bad := a < 0).any():
        raise ValueError(f"{name}: {a[bad].flat[0]:g} is negative; {unit_hint}")
    return a


def _out(result: np.ndarray, *inputs: Any) -> Any:
    """A Python scalar when every input was a scalar, else the numpy array."""
    return result.item() if all(np.ndim(x) == 0 for x in inputs) else result


# -- CAR-HEMATOTOX ------------------------------------------------------------------------

def car_hematotox(platelets_e9_per_l, anc_per_ul, hb_g_dl, crp_mg_dl, ferritin_ng_ml):
    """CAR-HEMATOTOX score (0-7) from labs taken before lymphodepletion.

    Units: platelets 1e9/L (= 1e3/uL), ANC cells/uL, haemoglobin g/dL, CRP mg/dL,
    ferritin ng/mL. Each threshold crossed adds one point:

    ========== ======================= ===============
    marker     1 point                 2 points
    ========== ======================= ===============
    platelets  75 <= p <= 175          p < 75
    ANC        ANC < 1200              --
    Hb         Hb < 9.0                --
    CRP        CRP > 3.0               --
    ferritin   650 <= f <= 2000        f > 2000
    ========== ======================= ===============

    Boundary convention (clinical.md 3.1): the ranges 75-175 and 650-2000 are inclusive,
    the other inequalities strict, so ANC 1200, Hb 9.0 and CRP 3.0 score 0.
    Inputs broadcast against each other.
    """
    p = _check("platelets_e9_per_l", platelets_e9_per_l, "give the count in 1e9/L")
    anc = _check("anc_per_ul", anc_per_ul, "give the count in cells/uL")
    hb = _check("hb_g_dl", hb_g_dl, "give haemoglobin in g/dL")
    crp = _check("crp_mg_dl", crp_mg_dl, "give CRP in mg/dL")
    fer = _check("ferritin_ng_ml", ferritin_ng_ml, "give ferritin in ng/mL")
    t = "car_hematotox."
    score = (
        (p <= _v(t + "platelets.one_point_at_or_below")).astype(int)
        + (p < _v(t + "platelets.two_points_below"))
        + (anc < _v(t + "anc.one_point_below"))
        + (hb < _v(t + "haemoglobin.one_point_below"))
        + (crp > _v(t + "crp.one_point_above"))
        + (fer >= _v(t + "ferritin.one_point_at_or_above"))
        + (fer > _v(t + "ferritin.two_points_above"))
    )
    return _out(score, platelets_e9_per_l, anc_per_ul, hb_g_dl, crp_mg_dl, ferritin_ng_ml)


def car_hematotox_risk(score):
    """"low" (score 0-1) or "high" (score >= 2) for a CAR-HEMATOTOX score."""
    s = _check("score", score, "give a CAR-HEMATOTOX score (0-7)")
    risk = np.where(s >= _v("car_hematotox.high_risk_from"), "high", "low")
    return _out(risk, score)


# -- EASIX family ---------------------------------------------------------------------------

def creatinine_umol_to_mg_dl(creatinine_umol_l):
    """Creatinine from umol/L to mg/dL (divide by 88.42)."""
    c = _check("creatinine_umol_l", creatinine_umol_l, "give creatinine in umol/L")
    return _out(c / _v("units.creatinine_umol_l_per_mg_dl"), creatinine_umol_l)


def crp_mg_l_to_mg_dl(crp_mg_l):
    """CRP from mg/L to mg/dL (divide by 10)."""
    c = _check("crp_mg_l", crp_mg_l, "give CRP in mg/L")
    return _out(c / _v("units.crp_mg_l_per_mg_dl"), crp_mg_l)


def _platelets_for_ratio(platelets_e9_per_l) -> np.ndarray:
    p = _check("platelets_e9_per_l", platelets_e9_per_l, "give the count in 1e9/L")
    if (p == 0).any():
        raise ValueError("platelets_e9_per_l: 0 cannot be divided by; give the count in 1e9/L")
    return p


def easix(ldh_u_l, creatinine_mg_dl, platelets_e9_per_l):
    """EASIX = LDH (U/L) x creatinine (mg/dL) / platelets (1e9/L), untransformed.

    Convert creatinine in umol/L with :func:`creatinine_umol_to_mg_dl`; platelets in
    1e3/uL are the same number as in 1e9/L. Platelets must be > 0.
    """
    ldh = _check("ldh_u_l", ldh_u_l, "give LDH in U/L")
    cr = _check("creatinine_mg_dl", creatinine_mg_dl, "give creatinine in mg/dL")
    p = _platelets_for_ratio(platelets_e9_per_l)
    return _out(ldh * cr / p, ldh_u_l, creatinine_mg_dl, platelets_e9_per_l)


def m_easix(ldh_u_l, crp_mg_dl, platelets_e9_per_l):
    """m-EASIX = LDH (U/L) x CRP (mg/dL) / platelets (1e9/L); convert CRP in mg/L with
    :func:`crp_mg_l_to_mg_dl`. No sourced cut-off exists; platelets must be > 0."""
    ldh = _check("ldh_u_l", ldh_u_l, "give LDH in U/L")
    crp = _check("crp_mg_dl", crp_mg_dl, "give CRP in mg/dL")
    p = _platelets_for_ratio(platelets_e9_per_l)
    return _out(ldh * crp / p, ldh_u_l, crp_mg_dl, platelets_e9_per_l)


def s_easix(ldh_u_l, platelets_e9_per_l):
    """s-EASIX = LDH (U/L) / platelets (1e9/L). No sourced cut-off exists; platelets > 0."""
    ldh = _check("ldh_u_l", ldh_u_l, "give LDH in U/L")
    p = _platelets_for_ratio(platelets_e9_per_l)
    return _out(ldh / p, ldh_u_l, platelets_e9_per_l)


def easix_high_risk(value, cutoff=None):
    """True where EASIX is strictly above the cut-off (default 4.67, Korell 2022, for EASIX
    before lymphodepletion on the untransformed scale); exactly at the cut-off is not high."""
    x = _check("value", value, "give an untransformed EASIX value")
    c = _v("easix.high_risk_above") if cutoff is None else _check("cutoff", cutoff, "give an EASIX cut-off")
    return _out(x > c, value)


# -- N-ICAHT ----------------------------------------------------------------------------------

def _anc_series(anc_per_ul_daily, days) -> tuple[np.ndarray, np.ndarray]:
    """Check a daily ANC series: ANC (..., n) and days (n,), strictly increasing."""
    anc = _check("anc_per_ul_daily", anc_per_ul_daily, "give ANC in cells/uL, one value per day")
    d = np.asarray(days, dtype=float)
    if d.ndim != 1 or anc.ndim == 0 or anc.shape[-1] != d.size:
        raise ValueError(f"anc_per_ul_daily has {anc.shape[-1] if anc.ndim else 0} values per "
                         f"patient but days has {d.size}; give one ANC value per day")
    if not np.isfinite(d).all():
        raise ValueError("days: every day must be a finite number (days after infusion)")
    if (np.diff(d) <= 0).any():
        i = int(np.argmax(np.diff(d) <= 0))
        raise ValueError(f"days must be strictly increasing (one value per day): day {d[i + 1]:g} "
                         f"follows day {d[i]:g}")
    return anc, d


def icaht_early(anc_per_ul_daily, days):
    """Early N-ICAHT grade (0-4) from daily ANC (cells/uL) over days 0-30 after infusion.

    ``days`` are days after infusion, strictly increasing, one ANC value per day; values
    outside days 0-30 are ignored. A "day" is one value meeting the condition; days need
    not be consecutive (the total counts). Grade 1: ANC <= 500 on 1-6 days; 2: 7-13 days;
    3: >= 14 days; 4: ANC <= 100 on >= 7 days. ``anc_per_ul_daily`` may be 2-D
    (patients x days, sharing ``days``); it then gives one grade per patient.
    """
    anc, d = _anc_series(anc_per_ul_daily, days)
    e = "icaht.early."
    window = (d >= 0) & (d <= _v("icaht.early_last_day"))
    severe = ((anc <= _v(e + "severe_anc")) & window).sum(axis=-1)
    profound = ((anc <= _v(e + "profound_anc")) & window).sum(axis=-1)
    grade = np.select(
        [profound >= _v(e + "grade4_from_days"), severe >= _v(e + "grade3_from_days"),
         severe >= _v(e + "grade2_from_days"), severe >= 1],
        [4, 3, 2, 1], default=0)
    return grade.item() if grade.ndim == 0 else grade


def icaht_late(anc_per_ul_daily, days):
    """Late N-ICAHT grade (0-4) from daily ANC (cells/uL) after day 30 after infusion.

    ``days`` as in :func:`icaht_early`; values on days <= 30 are ignored. A grade needs a
    non-transient fall: at least 2 consecutive measurements at or below its level
    (grade 1: ANC <= 1500, 2: <= 1000, 3: <= 500, 4: <= 100), so a single dip does not count.
    """
    anc, d = _anc_series(anc_per_ul_daily, days)
    late = anc[..., d > _v("icaht.early_last_day")]
    run = int(_v("icaht.late.min_consecutive_measurements"))
    grade = np.zeros(late.shape[:-1], dtype=int)
    for g in (1, 2, 3, 4):
        below = late <= _v(f"icaht.late.grade{g}_anc")
        # a run of `run` consecutive values at or below the level somewhere in the series
        sustained = np.ones(below[..., run - 1:].shape, dtype=bool)
        for k in range(run):
            sustained &= below[..., k:below.shape[-1] - run + 1 + k]
        grade[sustained.any(axis=-1)] = g
    return grade.item() if grade.ndim == 0 else grade
