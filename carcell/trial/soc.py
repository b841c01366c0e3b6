"""Standard-of-care comparator arms, drawn from published rates (not simulated mechanistically).

Each patient draws one uniform ``u`` and its event time solves ``S(T) = u`` for the arm's
mixture-cure curve ``S(t) = pi + (1 - pi) exp(-lam t)`` (``u < pi``: no event). Response uses
the same uniform: responder if ``u < ORR``, complete responder if ``u < CR``. Response and event
time are therefore perfectly rank-correlated (the longest remissions belong to the complete
responders), the simplest coupling that reproduces both published rates and the published
curve. A patient with an event then lives an exponential post-progression time; background
mortality applies throughout (knowledge/data/standard_of_care.yaml, docs/trials.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from carcell.trial.survival import MONTH_DAYS, DeathModel, uniforms


def soc_patients(k, regimen: str, ids: np.ndarray, ages: np.ndarray, weights: np.ndarray, seed: int,
                 follow_up: float, first_assessment: float, deaths: DeathModel) -> pd.DataFrame:
    base = f"standard_of_care.regimens.{regimen}"
    orr, cr = float(k.value(f"{base}.orr")), float(k.value(f"{base}.cr"))
    pi, lam = float(k.value(f"{base}.cure_fraction")), float(k.value(f"{base}.event_rate")) / MONTH_DAYS
    pps_median = float(k.value(f"{base}.post_progression_median")) * MONTH_DAYS
    u = uniforms(seed, ids)
    v = u[:, 6]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_event = np.where(v < pi, np.inf, -np.log((v - pi) / (1 - pi)) / lam)
    best = np.where(v < cr, "CR", np.where(v < orr, "PR", "PD")).astype(object)
    responded = v < orr
    response_day = np.where(responded, np.minimum(first_assessment, t_event), np.nan)
    pps = t_event + (-np.log1p(-u[:, 4]) * pps_median / np.log(2.0))
    other = deaths.background_death_day(ages, u[:, 5])
    death = np.minimum(pps, other)
    died = death <= follow_up
    event_day = np.minimum(t_event, death)
    pfs_event = event_day <= follow_up
    pfs = np.where(pfs_event, event_day, follow_up)
    return pd.DataFrame({
        "patient_id": ids, "infused": True, "age_years": ages, "weight_kg": weights,
        "best_response": best, "response_day": response_day,
        "progression_day": np.where(np.isfinite(t_event) & (t_event <= np.minimum(death, follow_up)), t_event, np.nan),
        "pfs_days": pfs, "pfs_event": pfs_event, "efs_days": pfs, "efs_event": pfs_event,
        "os_days": np.where(died, death, follow_up), "os_event": died,
        "dor_days": np.where(responded, pfs - response_day, np.nan),
        "dor_event": np.where(responded, pfs_event, False),
        "death_day": np.where(died, death, np.nan),
        "death_cause": np.where(died, np.where(pps <= other, "progression", "other"), "none"),
    })
