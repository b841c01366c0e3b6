"""Haematotoxicity and immunoglobulins after CAR-T: blood counts, neutropenia patterns, IgG, IVIG.

This module is a layer on top of a cohort simulation. It reads what the mechanistic model
produced (the myeloid activation state, and B-cell and plasma-cell numbers when the CAR
targets them) together with each patient's labs before lymphodepletion, and reports what a
haematologist would: daily ANC and platelets, how long and how deep the neutropenia was, the
recovery pattern, the early ICAHT grade, the IgG course and the IVIG doses given.

Every number comes from ``carcell/knowledge/data/haematology.yaml`` (read through
``k.value("haematology....")``); the CAR-HEMATOTOX score and the ICAHT grade come from
:mod:`carcell.clinical.risk`. All functions are pure and vectorised over patients: patient
``i`` of every output depends only on row ``i`` of every input, so results do not depend on how
a cohort is chunked.

Overview (equations in docs/haematology.md)
-------------------------------------------

1. Baseline labs (:func:`draw_baseline_labs`). Seven lognormal labs per patient. The marrow
   labs share a latent standard normal *z* (the patient's marrow reserve): a lab's standardised
   log value is ``rho * s * z + sqrt(1 - rho**2) * e`` with its own loading ``rho``
   (``lab_correlation``), sign ``s`` (+1 for ANC, platelets, haemoglobin; -1 for CRP, ferritin,
   LDH) and its own noise ``e``. Patients with poor reserve are thus cytopenic *and* inflamed,
   which is what makes them CAR-HEMATOTOX high.

2. Marrow reserve index (:func:`marrow_reserve_index`). From the labs alone (so observed labs
   work too): a weighted mean of standardised log labs, weights = the CAR-HEMATOTOX points of
   each marker. ``R < 0`` is poorer reserve than the typical LBCL patient.

3. Myelosuppression (:func:`integrate_friberg`, :func:`marrow_recovery`). The Friberg et al.
   2002 model (J Clin Oncol 20:4713, doi:10.1200/JCO.2002.02.140) for neutrophils and, with its
   own constants, platelets: a proliferating pool ``P``, three transit compartments ``T1..T3``
   and the circulating count ``C``, all divided by their steady state so that 1 = baseline::

       dP/dt  = k_tr * P * ((1 - E_inf(t)) * C**(-gamma) - 1) - k_kill(t) * P
       dT1/dt = k_tr * (P - T1);  dT2/dt = k_tr * (T1 - T2);  dT3/dt = k_tr * (T2 - T3)
       dC/dt  = k_circ * (T3 - C)

   ``k_tr = 4 / MTT``. Three drivers: (a) lymphodepletion kills the proliferating pool at
   ``k_kill`` from its start day for its duration; (b) inflammation after infusion, the model's
   ``macrophage_activation`` m(t), reaches the marrow with a delay (effect site
   ``dI/dt = k_I * (m - I)``, :func:`inflammation_effect_site`) and suppresses proliferation by
   ``E_inf = Emax * I / (I + m50)`` (the second dip of the biphasic pattern, weeks 3-4); (c) the
   reserve index scales the kill by
   ``exp(-a * R)`` and the feedback exponent by ``exp(b * R)``: poor reserve means a deeper
   hit and a weaker rebound (the aplastic pattern). The model starts at steady state on day -5
   and is integrated by classical fourth-order Runge-Kutta with a fixed step of 0.1 day (the
   proliferating pool in log space, so it stays positive). Fixed steps make it deterministic.

4. IgG (:func:`igg_course`). ``dIgG/dt = k_el * (IgG0 * (f * PC(t)/PC0 + (1 - f) * B(t)/B0) - IgG)``
   with ``k_el = ln 2 / half-life``: long-lived plasma cells make a share ``f`` of IgG and
   B-cell-derived plasmablasts the rest. IgG is checked on day 0 and then every ``check_every``
   days; at a check with IgG <= the trigger and no dose in the last ``ivig_min_interval`` days
   an IVIG dose is given, which raises IgG by dose / distribution volume.

5. :func:`haematology_outputs` puts it together for a cohort: per-patient table, event log,
   daily trajectories.

Daily grid: every daily output is on ``days = haematology_days(times)`` = 0, 1, ..., D with
``D = floor(min(times[-1], pattern.last_day))``; column ``j`` of a trajectory is day ``j``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.clinical.risk import car_hematotox, car_hematotox_risk, icaht_early

#: columns of :func:`draw_baseline_labs` (units in the names: /uL, 1e9/L, g/dL, mg/dL, ng/mL, U/L)
LAB_COLUMNS: tuple[str, ...] = (
    "anc_per_ul", "platelets_e9_per_l", "hb_g_dl", "crp_mg_dl", "ferritin_ng_ml", "ldh_u_l",
    "igg_mg_dl",
)
#: sign of each lab on the latent marrow reserve (+1: falls with poor reserve; -1: rises)
_RESERVE_SIGN = {"anc_per_ul": 1.0, "platelets_e9_per_l": 1.0, "hb_g_dl": 1.0,
                 "crp_mg_dl": -1.0, "ferritin_ng_ml": -1.0, "ldh_u_l": -1.0}
#: labs in the marrow reserve index, with the name of their weight entry
_RESERVE_WEIGHTS = {"platelets_e9_per_l": "weight_platelets", "anc_per_ul": "weight_anc",
                    "hb_g_dl": "weight_hb", "crp_mg_dl": "weight_crp",
                    "ferritin_ng_ml": "weight_ferritin"}
#: neutrophil recovery patterns (see :func:`neutropenia_pattern`)
PATTERNS: tuple[str, ...] = ("quick", "intermittent", "aplastic", "not_recovered")
#: Runge-Kutta steps per day of the marrow model (step 0.1 day)
STEPS_PER_DAY = 10
#: key of the draw stream in the SeedSequence spawn key (patient id, stream)
_LAB_STREAM = 7

_H = "haematology."


def _val(k, path: str) -> float:
    return float(k.value(_H + path))


# -- baseline labs ----------------------------------------------------------------------------

def indications(k) -> list[str]:
    """Indications with baseline lab distributions in haematology.yaml (``LBCL``, ``B-ALL``, ``MM``)."""
    return k.names(_H + "baseline_labs")


def lymphodepletion_names(k) -> list[str]:
    """Lymphodepletion regimens known to both regimens/lymphodepletion.yaml and haematology.yaml."""
    return sorted(set(k.names("regimens.lymphodepletion")) & set(k.names(_H + "lymphodepletion")))


def draw_baseline_labs(k, indication: str, seed: int, patient_ids: np.ndarray) -> pd.DataFrame:
    """Labs before lymphodepletion for each patient, one row per id in ``patient_ids``.

    Columns (see :data:`LAB_COLUMNS`): ``patient_id``, ``anc_per_ul`` (cells/uL),
    ``platelets_e9_per_l`` (1e9/L), ``hb_g_dl`` (g/dL), ``crp_mg_dl`` (mg/dL),
    ``ferritin_ng_ml`` (ng/mL), ``ldh_u_l`` (U/L), ``igg_mg_dl`` (mg/dL; polyclonal IgG, for
    myeloma the uninvolved immunoglobulin).

    Each lab is lognormal with the ``[median, log-sd]`` of ``baseline_labs.<indication>``. The
    marrow labs are correlated through one latent standard normal per patient, the marrow
    reserve ``z``: ``ln x = ln median + logsd * (rho * s * z + sqrt(1 - rho**2) * e)`` with the
    loading ``rho`` of ``lab_correlation`` and ``s`` = +1 for ANC, platelets and haemoglobin,
    -1 for CRP, ferritin and LDH. IgG has no loading (independent of the marrow).

    Patient ``pid`` draws ``z`` and then one ``e`` per lab in column order from its own stream
    ``np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(pid, 7)))``, so a patient's
    labs are the same whatever other ids are drawn with it (chunking invariance).
    """
    if (indication not in indications(k) and indication in k.names("indications")
            and "baseline_labs" in k.node(f"indications.{indication}")):
        indication = k.text(f"indications.{indication}.baseline_labs")   # shared labs, e.g. solid
    if indication not in indications(k):
        raise ValueError(f"indication.disease: no baseline labs for {indication!r}; "
                         f"known: {', '.join(indications(k))}")
    ids = np.asarray(patient_ids).astype(np.int64).ravel()
    median = np.array([k.value(f"{_H}baseline_labs.{indication}.{c}")[0] for c in LAB_COLUMNS], float)
    logsd = np.array([k.value(f"{_H}baseline_labs.{indication}.{c}")[1] for c in LAB_COLUMNS], float)
    rho = np.array([_val(k, f"lab_correlation.{c}") * _RESERVE_SIGN[c] if c in _RESERVE_SIGN else 0.0
                    for c in LAB_COLUMNS])
    draws = np.empty((ids.size, 1 + len(LAB_COLUMNS)))
    for i, pid in enumerate(ids):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(pid), _LAB_STREAM)))
        draws[i] = rng.standard_normal(1 + len(LAB_COLUMNS))
    z, e = draws[:, :1], draws[:, 1:]
    u = rho * z + np.sqrt(1.0 - rho**2) * e
    labs = np.exp(np.log(median) + logsd * u)
    df = pd.DataFrame(labs, columns=list(LAB_COLUMNS))
    df.insert(0, "patient_id", ids)
    return df


def hematotox_scores(labs: pd.DataFrame) -> np.ndarray:
    """CAR-HEMATOTOX score (0-7) of each row of a labs frame (via carcell.clinical.risk)."""
    return np.asarray(car_hematotox(labs["platelets_e9_per_l"].to_numpy(float),
                                    labs["anc_per_ul"].to_numpy(float), labs["hb_g_dl"].to_numpy(float),
                                    labs["crp_mg_dl"].to_numpy(float),
                                    labs["ferritin_ng_ml"].to_numpy(float)), dtype=int)


def marrow_reserve_index(k, labs: pd.DataFrame) -> np.ndarray:
    """Marrow reserve index R of each patient from its labs (dimensionless; 0 = typical LBCL).

    ``R = sum_m w_m * s_m * (ln x_m - ln median_m) / logsd_m / sum_m w_m`` over platelets, ANC,
    haemoglobin, CRP and ferritin, with ``median_m`` and ``logsd_m`` of
    ``baseline_labs.<marrow.reserve.reference_indication>``, signs ``s_m`` (+1 for counts, -1
    for CRP and ferritin) and weights ``w_m`` = the marker's maximum CAR-HEMATOTOX points. Low
    counts and high inflammation give R < 0 (poor reserve). Works on observed labs too.
    """
    ref = str(k.text(_H + "marrow.reserve.reference_indication"))
    total, weights = 0.0, 0.0
    for col, wname in _RESERVE_WEIGHTS.items():
        w = _val(k, f"marrow.reserve.{wname}")
        med, sd = k.value(f"{_H}baseline_labs.{ref}.{col}")
        x = labs[col].to_numpy(float)
        if (x <= 0).any() or not np.isfinite(x).all():
            raise ValueError(f"labs.{col}: every value must be a positive finite number")
        total = total + w * _RESERVE_SIGN[col] * (np.log(x) - math.log(med)) / sd
        weights += w
    return np.asarray(total / weights, dtype=float)


# -- the Friberg marrow model -------------------------------------------------------------------

@dataclass(frozen=True)
class Lineage:
    """Per-patient constants of one lineage of the Friberg model (arrays of shape (n,)).

    ``k_tr`` and ``k_circ`` are in 1/day, ``gamma`` is the feedback exponent, ``kill_rate`` the
    lymphodepletion kill of the proliferating pool (1/day) while ``kill_start <= t <
    kill_start + kill_days`` (days relative to infusion).
    """

    k_tr: np.ndarray
    k_circ: np.ndarray
    gamma: np.ndarray
    kill_rate: np.ndarray
    kill_start: float
    kill_days: float


def friberg_rates(y: np.ndarray, kill: np.ndarray, suppression: np.ndarray, k_tr: np.ndarray,
                  k_circ: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """Time derivative of the normalised Friberg state ``y`` = (ln P, T1, T2, T3, C), shape (5, n).

    ``P`` is integrated as ``ln P``: ``d ln P/dt = k_tr * ((1 - suppression) * C**-gamma - 1) - kill``.
    Every compartment is divided by its steady state, so ``y = (0, 1, 1, 1, 1)`` is baseline
    and ``C`` is the circulating count relative to baseline.
    """
    p = np.exp(y[0])
    c = y[4]
    d = np.empty_like(y)
    d[0] = k_tr * ((1.0 - suppression) * np.exp(-gamma * np.log(c)) - 1.0) - kill
    d[1] = k_tr * (p - y[1])
    d[2] = k_tr * (y[1] - y[2])
    d[3] = k_tr * (y[2] - y[3])
    d[4] = k_circ * (y[3] - c)
    return d


def inflammation_effect_site(inflammation: np.ndarray, times: np.ndarray, rate: float) -> np.ndarray:
    """Inflammation at the marrow, I(t), (n, T): ``dI/dt = rate * (m(t) - I)`` from I = 0.

    ``m`` (n, T) is taken as linear between ``times``; each interval is solved exactly
    (``I1 = I0 e^(-rh) + m0 (1 - e^(-rh)) + (m1 - m0) (1 - (1 - e^(-rh)) / (rh))``). The delay
    lets marrow suppression outlast the cytokine peak, as the second neutrophil dip does.
    """
    m = np.asarray(inflammation, dtype=float)
    out = np.empty_like(m)
    y = np.zeros(m.shape[0])
    out[:, 0] = y
    for j in range(1, m.shape[1]):
        h = float(times[j] - times[j - 1])
        e = math.exp(-rate * h)
        g = 1.0 - (1.0 - e) / (rate * h)
        y = y * e + m[:, j - 1] * (1.0 - e) + (m[:, j] - m[:, j - 1]) * g
        out[:, j] = y
    return out


def _interp_rows(times: np.ndarray, values: np.ndarray, t: float) -> np.ndarray:
    """Row-wise linear interpolation of ``values`` (n, T) at time ``t``; 0 before times[0],
    the last value after times[-1]."""
    if t < times[0]:
        return np.zeros(values.shape[0])
    j = int(np.searchsorted(times, t, side="right")) - 1
    if j >= times.size - 1:
        return values[:, -1]
    w = (t - times[j]) / (times[j + 1] - times[j])
    return values[:, j] * (1.0 - w) + values[:, j + 1] * w


def integrate_friberg(lineage: Lineage, last_day: int, inflammation: np.ndarray | None = None,
                      times: np.ndarray | None = None, inflammation_half: float = 1.0,
                      inflammation_max: float = 0.0, start_day: int = -5) -> np.ndarray:
    """Circulating count relative to baseline, C, on each whole day ``start_day .. last_day``.

    Classical RK4 with :data:`STEPS_PER_DAY` fixed steps per day from steady state at
    ``start_day``. The kill window starts and ends on step boundaries (whole or tenth days), so
    no step straddles it. ``inflammation`` (n, T) on ``times`` (days after infusion) is
    interpolated linearly inside each step; it is 0 before ``times[0]`` and held at its last
    value after ``times[-1]``; values are clipped to [0, 1]. Returns an array (n, last_day -
    start_day + 1).
    """
    n = lineage.k_tr.shape[0]
    y = np.zeros((5, n))
    y[1:] = 1.0
    h = 1.0 / STEPS_PER_DAY
    n_steps = (last_day - start_day) * STEPS_PER_DAY
    out = np.empty((n, last_day - start_day + 1))
    out[:, 0] = y[4]
    if inflammation is not None:
        m_rows = np.clip(np.asarray(inflammation, dtype=float), 0.0, 1.0)
        t_in = np.asarray(times, dtype=float)
    zero = np.zeros(n)

    def supp(t: float) -> np.ndarray:
        if inflammation is None or inflammation_max == 0.0:
            return zero
        m = _interp_rows(t_in, m_rows, t)
        return inflammation_max * m / (m + inflammation_half)

    k_start = round(lineage.kill_start * STEPS_PER_DAY)
    k_end = k_start + round(lineage.kill_days * STEPS_PER_DAY)
    s_next = supp(start_day)
    for j in range(n_steps):
        i = start_day * STEPS_PER_DAY + j          # step j covers [i, i + 1] / STEPS_PER_DAY
        t = i / STEPS_PER_DAY
        kill = lineage.kill_rate if k_start <= i < k_end else zero
        s0, s_mid, s1 = s_next, supp(t + 0.5 * h), supp((i + 1) / STEPS_PER_DAY)
        s_next = s1
        k1 = friberg_rates(y, kill, s0, lineage.k_tr, lineage.k_circ, lineage.gamma)
        k2 = friberg_rates(y + 0.5 * h * k1, kill, s_mid, lineage.k_tr, lineage.k_circ, lineage.gamma)
        k3 = friberg_rates(y + 0.5 * h * k2, kill, s_mid, lineage.k_tr, lineage.k_circ, lineage.gamma)
        k4 = friberg_rates(y + h * k3, kill, s1, lineage.k_tr, lineage.k_circ, lineage.gamma)
        y = y + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        if (j + 1) % STEPS_PER_DAY == 0:
            out[:, (j + 1) // STEPS_PER_DAY] = y[4]
    return out


def _check_regimen(k, lymphodepletion: str) -> None:
    allowed = lymphodepletion_names(k)
    if lymphodepletion not in allowed:
        raise ValueError(f"regimen.lymphodepletion: unknown regimen {lymphodepletion!r}; "
                         f"allowed: {', '.join(allowed)}")


def marrow_lineages(k, labs: pd.DataFrame, lymphodepletion: str,
                    kill_sensitivity: float | None = None,
                    feedback_sensitivity: float | None = None) -> dict[str, Lineage]:
    """Per-patient Friberg constants for ``"neutrophil"`` and ``"platelet"``.

    The reserve index R (:func:`marrow_reserve_index`) scales the regimen's kill rate by
    ``exp(-kill_sensitivity * R)`` and the feedback exponent by ``exp(feedback_sensitivity * R)``
    (defaults: ``marrow.reserve.*`` in haematology.yaml; the calibration passes its own).
    """
    _check_regimen(k, lymphodepletion)
    a = _val(k, "marrow.reserve.kill_sensitivity") if kill_sensitivity is None else kill_sensitivity
    b = _val(k, "marrow.reserve.feedback_sensitivity") if feedback_sensitivity is None else feedback_sensitivity
    r = marrow_reserve_index(k, labs)
    reg = f"lymphodepletion.{lymphodepletion}."
    kill = _val(k, reg + "kill_rate") * np.exp(-a * r)
    start, days = _val(k, reg + "start_day"), _val(k, reg + "duration")
    fb = np.exp(b * r)
    ones = np.ones_like(r)
    k_tr_n = 4.0 / _val(k, "marrow.neutrophil.mean_transit_time") * ones
    neut = Lineage(k_tr=k_tr_n, k_circ=k_tr_n * _val(k, "marrow.neutrophil.circulation_rate_over_transit_rate"),
                   gamma=_val(k, "marrow.neutrophil.feedback_gamma") * fb, kill_rate=kill,
                   kill_start=start, kill_days=days)
    plat = Lineage(k_tr=4.0 / _val(k, "marrow.platelet.mean_transit_time") * ones,
                   k_circ=_val(k, "marrow.platelet.circulation_rate") * ones,
                   gamma=_val(k, "marrow.platelet.feedback_gamma") * fb,
                   kill_rate=kill * _val(k, "marrow.platelet.kill_relative_to_neutrophil"),
                   kill_start=start, kill_days=days)
    return {"neutrophil": neut, "platelet": plat}


def haematology_days(times: np.ndarray, k) -> np.ndarray:
    """The daily output grid 0, 1, ..., D with D = floor(min(times[-1], pattern.last_day))."""
    last = _val(k, "pattern.last_day")
    d = int(math.floor(min(float(np.asarray(times)[-1]), last) + 1e-9))
    return np.arange(0.0, d + 1.0)


def marrow_recovery(k, labs: pd.DataFrame, lymphodepletion: str, inflammation: np.ndarray,
                    times: np.ndarray, lineages: tuple[str, ...] = ("neutrophil", "platelet"),
                    last_day: int | None = None, **sensitivities) -> dict[str, np.ndarray]:
    """Daily blood counts from day 0 to min(follow-up, pattern.last_day) (or ``last_day``) after infusion.

    ``inflammation`` (n, T) is the model's ``macrophage_activation`` (0-1) on ``times`` (days
    after infusion); it acts through its effect site (:func:`inflammation_effect_site` with
    ``marrow.inflammation.effect_rate``). Returns ``{"days": (D+1,), "anc_per_ul": (n, D+1),
    "platelets_e9_per_l": (n, D+1)}`` (only the lineages asked for). Counts are the baseline
    lab times the Friberg circulating compartment. ``sensitivities`` may override
    ``kill_sensitivity``, ``feedback_sensitivity``, ``inflammation_half``, ``effect_rate``
    (calibration and exploration only; the defaults are the haematology.yaml values).
    """
    times = np.asarray(times, dtype=float)
    inflammation = np.asarray(inflammation, dtype=float)
    if inflammation.shape != (len(labs), times.size):
        raise ValueError(f"inflammation has shape {inflammation.shape}; expected (patients, times) = "
                         f"({len(labs)}, {times.size})")
    days = haematology_days(times, k) if last_day is None else np.arange(0.0, last_day + 1.0)
    start = int(_val(k, "marrow.simulation_start_day"))
    lin = marrow_lineages(k, labs, lymphodepletion, sensitivities.get("kill_sensitivity"),
                          sensitivities.get("feedback_sensitivity"))
    m50 = sensitivities.get("inflammation_half")
    m50 = _val(k, "marrow.inflammation.half_effect") if m50 is None else m50
    emax = _val(k, "marrow.inflammation.max_effect")
    rate = sensitivities.get("effect_rate")
    rate = _val(k, "marrow.inflammation.effect_rate") if rate is None else rate
    site = inflammation_effect_site(np.clip(inflammation, 0.0, 1.0), times, rate)
    out: dict[str, np.ndarray] = {"days": days}
    for name, col, lab in (("neutrophil", "anc_per_ul", "anc_per_ul"),
                           ("platelet", "platelets_e9_per_l", "platelets_e9_per_l")):
        if name not in lineages:
            continue
        c = integrate_friberg(lin[name], int(days[-1]), site, times, m50, emax, start)
        out[col] = c[:, -start:] * labs[lab].to_numpy(float)[:, None]
    return out


# -- reading the daily ANC -------------------------------------------------------------------

def _first_sustained(ok: np.ndarray, after: np.ndarray, run: int) -> np.ndarray:
    """Per row, the first column j > after[row] with ok[row, j:j+run] all True; -1 if none."""
    n, d = ok.shape
    sustained = np.zeros((n, max(d - run + 1, 0)), dtype=bool)
    if sustained.shape[1]:
        sustained[:] = True
        for s in range(run):
            sustained &= ok[:, s:d - run + 1 + s]
    cols = np.arange(sustained.shape[1])
    cand = sustained & (cols[None, :] > after[:, None])
    first = np.where(cand.any(axis=1), cand.argmax(axis=1), -1)
    return first


def _longest_run(mask: np.ndarray) -> np.ndarray:
    """Per row, the length of the longest run of consecutive True values."""
    n, d = mask.shape
    best = np.zeros(n, dtype=int)
    cur = np.zeros(n, dtype=int)
    for j in range(d):
        cur = np.where(mask[:, j], cur + 1, 0)
        best = np.maximum(best, cur)
    return best


def anc_recovery_day(k, anc: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Day of neutrophil recovery: the first of ``pattern.sustained_days`` (3) consecutive days
    with ANC >= 500/uL after the first day with ANC < 500/uL (the engraftment convention).

    0.0 when ANC never falls below 500 in the window (nothing to recover from); NaN when it has
    not recovered by the end of the window.
    """
    severe = anc < _val(k, "pattern.severe_anc")
    run = int(_val(k, "pattern.sustained_days"))
    ever = severe.any(axis=1)
    first_low = np.where(ever, severe.argmax(axis=1), -1)
    j = _first_sustained(~severe, first_low, run)
    out = np.where(j >= 0, days[np.maximum(j, 0)], np.nan)
    return np.where(ever, out, 0.0)


def neutropenia_pattern(k, anc: np.ndarray, days: np.ndarray, baseline_anc: np.ndarray) -> np.ndarray:
    """Neutrophil recovery pattern of each patient from daily ANC (cells/uL) on ``days`` >= 0.

    Definitions (Rejeski 2021/2023 phenotypes, made computable):

    * ``"aplastic"``: continuous severe neutropenia, ANC < 500/uL on at least 14 consecutive
      days (``pattern.aplastic_min_days``). Checked first.
    * recovery level ``L = min(1000/uL, 0.8 x baseline ANC)`` (a patient whose own baseline is
      below 1250/uL cannot pass 1000 at steady state). *Recovery* is the first of 3 consecutive
      days with ANC >= L after the first day with ANC < L.
    * ``"intermittent"``: recovery, then a second dip: ANC < L on any later day.
    * ``"quick"``: recovery without a second dip, or ANC never below L.
    * ``"not_recovered"``: not aplastic and no recovery by the end of the window (happens only
      when follow-up ends before recovery).
    """
    level = np.minimum(_val(k, "pattern.recovery_anc"),
                       _val(k, "pattern.recovery_fraction_of_baseline") * np.asarray(baseline_anc, float))
    low = anc < level[:, None]
    run = int(_val(k, "pattern.sustained_days"))
    fell = low.any(axis=1)
    first_low = np.where(fell, low.argmax(axis=1), -1)
    rec = _first_sustained(~low, first_low, run)
    cols = np.arange(anc.shape[1])
    second_dip = (low & (cols[None, :] > rec[:, None]) & (rec[:, None] >= 0)).any(axis=1)
    aplastic = _longest_run(anc < _val(k, "pattern.severe_anc")) >= _val(k, "pattern.aplastic_min_days")
    out = np.where(~fell, "quick",
                   np.where(rec < 0, "not_recovered", np.where(second_dip, "intermittent", "quick")))
    return np.where(aplastic, "aplastic", out).astype(object)


# -- immunoglobulin G ----------------------------------------------------------------------------

def igg_course(k, days: np.ndarray, igg0: np.ndarray, weight_kg: np.ndarray,
               b_fraction: np.ndarray | None = None, pc_fraction: np.ndarray | None = None,
               ivig: bool = True) -> tuple[np.ndarray, list[tuple[int, float, float]]]:
    """Serum IgG (mg/dL) on whole ``days`` (0, 1, ..., D) and the IVIG doses given.

    ``dIgG/dt = k_el * (IgG0 * (f * PC(t)/PC0 + (1 - f) * B(t)/B0) - IgG)``, ``k_el = ln 2 /
    igg.half_life``, ``f = igg.long_lived_plasma_cell_fraction``. ``b_fraction`` and
    ``pc_fraction`` (n, D+1) are B(t)/B0 and PC(t)/PC0 on ``days`` (None = not targeted = 1),
    clipped to [0, 1]: production never exceeds the patient's baseline. Between whole days the
    production is taken as linear and the step is solved exactly:
    ``y1 = y0 e^(-kh) + u0 (1 - e^(-kh)) + (u1 - u0) (1 - (1 - e^(-kh)) / (kh))``.

    IVIG (when ``ivig``): on day 0 and every ``igg.check_every`` days, if IgG <= ``igg.ivig_trigger``
    and the last dose was at least ``igg.ivig_min_interval`` days ago, ``igg.ivig_dose`` mg/kg
    is given and IgG rises by dose / ``igg.distribution_volume`` at once. The trajectory holds
    the level measured *before* the dose on a dosing day (the trough). Returns the (n, D+1)
    trajectory and a list of (row, day, grams).
    """
    days = np.asarray(days, dtype=float)
    igg0 = np.asarray(igg0, dtype=float)
    n, nd = igg0.size, days.size
    f = _val(k, "igg.long_lived_plasma_cell_fraction")
    kel = math.log(2.0) / _val(k, "igg.half_life")
    b = np.ones((n, nd)) if b_fraction is None else np.clip(np.asarray(b_fraction, float), 0.0, 1.0)
    pc = np.ones((n, nd)) if pc_fraction is None else np.clip(np.asarray(pc_fraction, float), 0.0, 1.0)
    prod = igg0[:, None] * (f * pc + (1.0 - f) * b)
    trigger = _val(k, "igg.ivig_trigger")
    dose_mg_kg = _val(k, "igg.ivig_dose")
    rise = dose_mg_kg / (_val(k, "igg.distribution_volume") * 10.0)   # mg/kg / (dL/kg) = mg/dL
    every = _val(k, "igg.check_every")
    min_gap = _val(k, "igg.ivig_min_interval")
    weight = np.asarray(weight_kg, dtype=float) * np.ones(n)
    out = np.empty((n, nd))
    doses: list[tuple[int, float, float]] = []
    last_dose = np.full(n, -np.inf)
    y = igg0.copy()
    for j in range(nd):
        if j > 0:
            hdt = days[j] - days[j - 1]
            e = math.exp(-kel * hdt)
            g = 1.0 - (1.0 - e) / (kel * hdt)
            y = y * e + prod[:, j - 1] * (1.0 - e) + (prod[:, j] - prod[:, j - 1]) * g
        out[:, j] = y
        check = abs(days[j] / every - round(days[j] / every)) < 1e-9
        if ivig and check:
            give = (y <= trigger) & (days[j] - last_dose >= min_gap - 1e-9) & np.isfinite(y)
            for i in np.flatnonzero(give):
                doses.append((int(i), float(days[j]), float(dose_mg_kg * weight[i] / 1000.0)))
            last_dose = np.where(give, days[j], last_dose)
            y = y + rise * give
    return out, doses


def _fraction_on_days(times: np.ndarray, x: np.ndarray, days: np.ndarray) -> np.ndarray:
    """x(t)/x(0) per row, linearly interpolated on ``days``."""
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = x / x[:, :1]
    j = np.clip(np.searchsorted(times, days, side="right") - 1, 0, times.size - 2)
    w = np.clip((days - times[j]) / (times[j + 1] - times[j]), 0.0, 1.0)
    return frac[:, j] * (1.0 - w) + frac[:, j + 1] * w


# -- everything for a cohort ----------------------------------------------------------------------

def haematology_outputs(times: np.ndarray, trajectories: dict[str, np.ndarray], labs: pd.DataFrame,
                        weight_kg, lymphodepletion: str, patient_ids, k
                        ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Haematotoxicity and IgG outputs of a simulated cohort.

    Inputs: ``times`` (T,) days after infusion of the simulation output; ``trajectories``
    {name: (n, T)} with ``macrophage_activation`` (always) and ``b_cells_cells`` /
    ``plasma_cells_cells`` when the CAR's antigen is on B cells / plasma cells (their absence
    means that compartment is untouched); ``labs`` from :func:`draw_baseline_labs` (or observed,
    same columns, rows in patient order); ``weight_kg`` (n,) or scalar; ``lymphodepletion`` a
    regimen name (``flu_cy``, ``bendamustine``, ``none``); ``patient_ids`` (n,).

    Returns ``(patients, events, daily)``:

    * ``patients``, one row per patient: ``patient_id``; ``hematotox_score`` (int 0-7);
      ``hematotox_high_risk`` (bool, score >= 2); ``anc_nadir_per_ul`` (cells/uL, days 0-D);
      ``severe_neutropenia_days`` (days with ANC < 500/uL in days 0-30); ``anc_recovery_day``
      (day, see :func:`anc_recovery_day`; NaN if not recovered); ``neutropenia_pattern``
      (:func:`neutropenia_pattern`); ``icaht_grade`` (early N-ICAHT 0-4, days 0-30, via
      :func:`carcell.clinical.risk.icaht_early`);
      ``platelet_nadir_e9_per_l`` (1e9/L); ``igg_nadir`` (mg/dL, lowest measured level);
      ``ivig_doses`` (count).
    * ``events`` with columns ``patient_id, day, event, value, detail``: one ``"ivig"`` row per
      dose, value = grams, detail ``"IgG <= 400 mg/dL"``.
    * ``daily`` {``anc_per_ul``, ``platelets_e9_per_l``, ``igg_mg_dl``}: (n, D+1) arrays on the
      grid ``haematology_days(times, k)`` = 0..D, D = floor(min(times[-1], pattern.last_day = 1095)).

    ``severe_neutropenia_days`` and ``icaht_grade`` are whole numbers stored as float so that a
    failed patient can hold NaN. A patient whose ``macrophage_activation`` row is not finite (a
    failed solve) gets NaN metrics, ``None`` pattern, no IVIG and NaN trajectories. Raises ValueError naming
    ``regimen.lymphodepletion`` for an unknown regimen.
    """
    _check_regimen(k, lymphodepletion)
    times = np.asarray(times, dtype=float)
    ids = np.asarray(patient_ids)
    n = ids.size
    if len(labs) != n:
        raise ValueError(f"labs has {len(labs)} rows but there are {n} patients")
    if "patient_id" in labs and not np.array_equal(labs["patient_id"].to_numpy(), ids):
        raise ValueError("labs.patient_id: rows must be in the order of patient_ids")
    if "macrophage_activation" not in trajectories:
        raise ValueError("trajectories: 'macrophage_activation' is required (the inflammation input)")
    m = np.asarray(trajectories["macrophage_activation"], dtype=float)
    failed = ~np.isfinite(m).all(axis=1)
    m = np.where(failed[:, None], 0.0, m)
    days = haematology_days(times, k)
    counts = marrow_recovery(k, labs, lymphodepletion, m, times)
    anc, plt = counts["anc_per_ul"], counts["platelets_e9_per_l"]

    b_frac = pc_frac = None
    if "b_cells_cells" in trajectories:
        b_frac = _fraction_on_days(times, trajectories["b_cells_cells"], days)
    if "plasma_cells_cells" in trajectories:
        pc_frac = _fraction_on_days(times, trajectories["plasma_cells_cells"], days)
    for frac in (b_frac, pc_frac):
        if frac is not None:
            failed |= ~np.isfinite(frac).all(axis=1)
            frac[failed] = 1.0
    igg, doses = igg_course(k, days, labs["igg_mg_dl"].to_numpy(float), weight_kg, b_frac, pc_frac)
    doses = [d for d in doses if not failed[d[0]]]

    score = hematotox_scores(labs)
    window = days <= _val(k, "pattern.severe_window_last_day")
    early = days <= float(k.value("risk_scores.icaht.early_last_day"))
    df = pd.DataFrame({
        "patient_id": ids,
        "hematotox_score": score,
        "hematotox_high_risk": np.asarray(car_hematotox_risk(score)) == "high",
        "anc_nadir_per_ul": anc.min(axis=1),
        "severe_neutropenia_days": (anc[:, window] < _val(k, "pattern.severe_anc")).sum(axis=1).astype(float),
        "anc_recovery_day": anc_recovery_day(k, anc, days),
        "neutropenia_pattern": neutropenia_pattern(k, anc, days, labs["anc_per_ul"].to_numpy(float)),
        "icaht_grade": np.asarray(icaht_early(anc[:, early], days[early])).astype(float),
        "platelet_nadir_e9_per_l": plt.min(axis=1),
        "igg_nadir": igg.min(axis=1),
        "ivig_doses": np.bincount([d[0] for d in doses], minlength=n).astype(int),
    })
    for col in ("anc_nadir_per_ul", "severe_neutropenia_days", "anc_recovery_day", "icaht_grade",
                "platelet_nadir_e9_per_l", "igg_nadir"):
        df.loc[failed, col] = np.nan
    df["neutropenia_pattern"] = df["neutropenia_pattern"].where(~failed, None)
    trigger = _val(k, "igg.ivig_trigger")
    events = pd.DataFrame([(ids[i], day, "ivig", grams, f"IgG <= {trigger:g} mg/dL")
                           for i, day, grams in doses],
                          columns=["patient_id", "day", "event", "value", "detail"])
    events = events.astype({"day": float, "value": float})
    daily = {"anc_per_ul": anc, "platelets_e9_per_l": plt, "igg_mg_dl": igg}
    for v in daily.values():
        v[failed] = np.nan
    return df, events, daily
