"""Solve the standard-of-care arm parameters from the published medians and landmarks.

The comparator arms of a virtual trial are not simulated mechanistically: each patient's
event-free (or progression-free) time is drawn from a mixture-cure model

    S(t) = pi + (1 - pi) * exp(-lam * t)

and a patient whose disease progresses then lives for an exponential post-progression time
with median m. This script solves pi and lam from two published points of the EFS/PFS curve
(the median and one landmark) and m from the published overall-survival median, and prints
the values stored in carcell/knowledge/data/standard_of_care.yaml (source: derived).

    python validation/derive_standard_of_care.py
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

MONTH = 30.4375


def mixture_cure(median: float, landmark: float, surviving: float) -> tuple[float, float]:
    """pi and lam (per month) with S(median) = 0.5 and S(landmark) = surviving."""
    def gap(pi: float) -> float:
        lam = np.log((1 - pi) / (0.5 - pi)) / median
        return pi + (1 - pi) * np.exp(-lam * landmark) - surviving
    pi = brentq(gap, 1e-9, min(surviving, 0.5) - 1e-9)
    return pi, float(np.log((1 - pi) / (0.5 - pi)) / median)


def os_median(pi: float, lam: float, pps_median: float) -> float:
    """Median of T_event + PPS for the non-cured; the cured survive (no background here)."""
    mu = np.log(2) / pps_median

    def surv(t: float) -> float:   # P(T + P > t), T ~ Exp(lam) (non-cured), P ~ Exp(mu)
        if abs(lam - mu) < 1e-12:
            s_nc = np.exp(-lam * t) * (1 + lam * t)
        else:
            s_nc = (mu * np.exp(-lam * t) - lam * np.exp(-mu * t)) / (mu - lam)
        return pi + (1 - pi) * s_nc
    return brentq(lambda t: surv(t) - 0.5, 1e-6, 1e4)


def solve_pps(pi: float, lam: float, target_os_median: float) -> float:
    return brentq(lambda m: os_median(pi, lam, m) - target_os_median, 0.1, 1e3)


ARMS = {
    # ZUMA-7 standard care (Locke 2022 NEJM doi:10.1056/NEJMoa2116133; OS Westin 2023 NEJM
    # doi:10.1056/NEJMoa2301665): EFS median 2.0 months, 24-month EFS 16%, OS median 31.1 months.
    "LBCL_2L_salvage_ASCT": dict(median=2.0, landmark=24.0, surviving=0.16, os_median=31.1),
    # KarMMa-3 standard regimens (Rodriguez-Otero 2023 NEJM doi:10.1056/NEJMoa2213614; final
    # PFS Ailawadhi 2024 Blood 144:2389): PFS median 4.4 months, 18-month PFS 19%; OS median
    # 37.9 months (with 56% crossover to ide-cel after progression).
    "MM_standard_regimens": dict(median=4.4, landmark=18.0, surviving=0.19, os_median=37.9),
}


def main() -> None:
    for name, a in ARMS.items():
        pi, lam = mixture_cure(a["median"], a["landmark"], a["surviving"])
        m = solve_pps(pi, lam, a["os_median"])
        print(f"{name}: cure fraction {pi:.4f}, event rate {lam:.4f}/month "
              f"(median {a['median']} mo, S({a['landmark']:g} mo) = {a['surviving']}), "
              f"post-progression median {m:.2f} months (OS median {a['os_median']} mo)")


if __name__ == "__main__":
    main()
