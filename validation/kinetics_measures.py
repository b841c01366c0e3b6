"""Stein-style kinetic measures of a CAR curve (shared by the calibration and validation scripts).

From a concentration curve C(t) in copies/ug on a daily grid:
* Tmax, Cmax: the peak;
* doubling time: log-linear slope from day 1 to the day before the peak;
* initial decline half-life: log-linear slope over the two weeks after the peak (Stein's
  alpha phase);
* persistence half-life: log-linear slope from day 180 to the end of follow-up (beta phase).
"""

from __future__ import annotations

import numpy as np


def _slope(t: np.ndarray, c: np.ndarray, a: float, b: float) -> float:
    """Log-linear slope of C over [a, b]; NaN with fewer than two positive points there (a
    patient who died, or a window past the follow-up)."""
    m = (t >= a) & (t <= b) & (c > 0)
    if m.sum() < 2:
        return float("nan")
    return float(np.polyfit(t[m], np.log(c[m]), 1)[0])


def _ln2_over(rate: float) -> float:
    """ln 2 / rate: a doubling time or a half-life; inf for a curve that does not move that way,
    NaN where no slope could be read."""
    if np.isnan(rate):
        return float("nan")
    return float(np.log(2) / rate) if rate > 0 else np.inf


def measures(t: np.ndarray, c: np.ndarray) -> dict[str, float]:
    i = int(np.argmax(c))
    tmax = float(t[i])
    grow = _slope(t, c, 1.0, max(2.0, tmax - 1.0))
    fast = _slope(t, c, tmax + 1.0, tmax + 14.0)
    slow = _slope(t, c, 180.0, float(t[-1]))
    return {
        "tmax_days": tmax,
        "cmax_copies_per_ug": float(c[i]),
        "doubling_time_days": _ln2_over(grow),
        "initial_decline_half_life_days": _ln2_over(-fast),
        "persistence_half_life_days": _ln2_over(-slow),
    }
