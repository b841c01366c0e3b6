"""Tisagenlecleucel population cellular kinetics: exponential expansion, biexponential decline.

Stein AM, Grupp SA, Levine JE, Laetsch TW, Pulsipher MA, Boyer MW, et al. (2019).
Tisagenlecleucel Model-Based Cellular Kinetic Analysis of Chimeric Antigen Receptor-T Cells.
CPT Pharmacometrics Syst Pharmacol 8(5):285-295. doi:10.1002/psp4.12388.

A descriptive (not mechanistic) population model fitted to 90 paediatric and young-adult
patients with r/r B-ALL (ELIANA, ENSIGN). Reproduces the typical profile (Cmax, Tmax, fold
expansion, doubling time, both decline half-lives) and the inter-individual variability of
Table 1. Closed form: evaluated directly, no integrator.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from carcell.published.base import Check, Citation, PublishedModel, dataset, resolve, within

RTOL_TYPICAL = 0.01    # Cmax, Tmax, fold expansion: read off a 0.01-day grid of the closed form
RTOL_RATES = 0.05      # doubling time and half-lives: the paper rounds to two significant digits
RTOL_OMEGA = 0.10      # SD of log Cmax over 4000 virtual patients (sampling error about 2%)
COHORT_CHECK = 4000


class Stein2019(PublishedModel):
    r"""Transgene level C(t) in copies per ug of genomic DNA, t in days after infusion.

    For t < T_max (expansion):
        C(t) = (C_max / foldx) exp(\rho t),  \rho = ln(foldx) / T_max
    For t >= T_max (contraction and persistence):
        C(t) = C_max [ (1 - F_B) exp(-\alpha (t - T_max)) + F_B exp(-\beta (t - T_max)) ]

    Each patient's C_max, foldx, T_max, alpha, F_B and beta are log-normal around the typical
    values (omega from Table 1); F_B is capped at 1. The residual error of the fit (0.56 on
    the log scale) is not added: trajectories are the model's predictions, not observations.
    The tocilizumab and corticosteroid effects of the paper are left out (the paper found none
    on expansion).
    """

    name = "stein2019"
    citation = Citation(
        authors="Stein AM, Grupp SA, Levine JE, Laetsch TW, Pulsipher MA, Boyer MW, et al.", year=2019,
        title="Tisagenlecleucel Model-Based Cellular Kinetic Analysis of Chimeric Antigen Receptor-T Cells",
        journal="CPT Pharmacometrics Syst Pharmacol 8(5):285-295", doi="10.1002/psp4.12388")
    reproduces = "typical Cmax, Tmax, fold expansion, doubling time and half-lives (Table 1, Results); IIV"
    states = ("transgene",)
    state_units = "copies/ug"
    default_set = "typical"
    solver = "closed form (no integrator)"

    def default_days(self) -> float:
        return 365.0

    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        if t is None:
            t = np.linspace(0.0, 365.0, 1461)
        p = resolve(self, params, set_name)
        t = np.asarray(t, dtype=float)
        tt = t[None, :]
        tmax, cmax = p["tmax"][:, None], p["cmax"][:, None]
        rho = np.log(p["foldx"])[:, None] / tmax
        fb = np.minimum(p["fb"], 1.0)[:, None]
        since = np.maximum(tt - tmax, 0.0)
        expansion = cmax / p["foldx"][:, None] * np.exp(rho * np.minimum(tt, tmax))
        decline = cmax * ((1 - fb) * np.exp(-p["alpha"][:, None] * since) + fb * np.exp(-p["beta"][:, None] * since))
        c = np.where(tt < tmax, expansion, decline)
        return dataset(self, t, c[:, :, None], np.full(c.shape[0], "ok"))

    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        pub = self.published()
        t = np.arange(0.0, 365.0 + 1e-9, 0.01)
        c = self.simulate(params, t)["transgene"].to_numpy()[0]
        i = int(np.argmax(c))
        out = [within("typical Cmax (Table 1), copies/ug", c[i], pub["cmax"], RTOL_TYPICAL),
               within("typical Tmax (Table 1), days", t[i], pub["tmax"], RTOL_TYPICAL),
               within("typical fold expansion (Table 1)", c[i] / c[0], pub["fold_expansion"], RTOL_TYPICAL)]
        log_c = np.log(c)

        def slope(a: float, b: float) -> float:
            m = (t >= a) & (t <= b)
            return float(np.polyfit(t[m], log_c[m], 1)[0])

        tm = t[i]
        out.append(within("doubling time of the expansion, days", np.log(2) / slope(1.0, tm - 1.0),
                          pub["doubling_time"], RTOL_RATES))
        out.append(within("half-life of the initial decline, days", np.log(2) / -slope(tm, tm + 5.0),
                          pub["initial_half_life"], RTOL_RATES))
        out.append(within("half-life of the persistence phase, days", np.log(2) / -slope(300.0, 365.0),
                          pub["terminal_half_life"], RTOL_RATES))
        cohort = self.cohort(COHORT_CHECK, seed=2019, days=60)
        out.append(within("SD of log Cmax over virtual patients (IIV, Table 1)",
                          float(np.std(np.log(cohort.patients["transgene_peak"]))), pub["cmax_omega"], RTOL_OMEGA))
        return out
