"""CD8 and CD4 CAR-T cells, inflammation and B-ALL: toxicity management.

Hanson S, Grimes DR, Taylor-King JP, et al. (2016). Toxicity management in CAR T cell therapy
for B-ALL: mathematical modelling as a new avenue for improvement. bioRxiv 049908.
doi:10.1101/049908. Encoded in BioModels as BIOMD0000000837.

The only published CAR-T model with an explicit anti-inflammatory drug term. Time is in HOURS
(as in the SBML); populations and inflammation are in arbitrary units. Integrated with
carcell's batched DOPRI5.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from carcell.published.base import Check, Citation, PublishedModel, dataset, resolve, within
from carcell.published.ode import Columns, integrate

STATES = ("C_m", "C_e", "H_m", "H_e", "L", "I", "B")
IDX = {s: i for i, s in enumerate(STATES)}
RTOL = 1e-9
ATOL = 1e-9           # au
RTOL_VALUE = 0.01     # peaks and the final tumour vs the BioModels run (same model, rtol 1e-10)
RTOL_HOUR = 0.03      # hour of the inflammation peak: the BioModels grid is 3.6 h (2% at 162 h)


class Hanson2016(PublishedModel):
    r"""CD8 memory/effector C_m, C_e; CD4 memory/effector H_m, H_e; other lymphocytes L;
    inflammation I; tumour B (arbitrary units); t in hours.

    With the inflammation switch  S(I) = I^2/(I^2 + b^2)  and the lymphocyte niche
    N = max(0, 1 - (B + C_e + C_m + H_e + H_m + L)/l):

    dB/dt   = r_1 B (1 - B/k) - d_1 B C_e
    dI/dt   = p_0 + p_1 B (C_e + H_e) - d_2 I - D
    dC_e/dt = 2^n a_1 B C_m S(I) (1 + a_2 H_e) - d_3 C_e
    dC_m/dt = r_2 C_m N - a_1 B C_m S(I) (1 + a_2 H_e)
    dH_e/dt = 2^n a_3 B H_m S(I) - d_4 H_e
    dH_m/dt = r_3 H_m N - a_3 B H_m S(I)
    dL/dt   = p_2 + r_4 L N - d_5 L

    D is a constant anti-inflammatory drug input (``drug``, au/h; 0 in the curated file). As
    written, D > 0 can push I below zero; here the drug acts only while I > 0.
    """

    name = "hanson2016"
    citation = Citation(
        authors="Hanson S, Grimes DR, Taylor-King JP, et al.", year=2016,
        title="Toxicity management in CAR T cell therapy for B-ALL: mathematical modelling as a new "
              "avenue for improvement", journal="bioRxiv 049908", doi="10.1101/049908")
    reproduces = "BIOMD0000000837 run (hours): inflammation peak and its hour, CD8 effector peak, tumour at 720 h"
    states = STATES
    state_units = "au"
    time_unit = "h"
    default_set = "default"
    default_protocol = "default"
    solver = "carcell.solve.dopri5 (batched DOPRI5, rtol 1e-9), time in hours"

    def default_days(self) -> float:
        return float(self.protocol()["hours"].value) / 24.0

    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        proto = self.protocol(protocol)
        if t is None:
            t = np.linspace(0.0, float(proto["hours"].value), 201)
        p = resolve(self, params, set_name)
        n = len(p["k"])
        y0 = np.tile([float(proto[s].value) for s in STATES], (n, 1))
        y, status = integrate(_rhs, y0, t, Columns(p), rtol=RTOL, atol=ATOL)
        return dataset(self, t, y, status)

    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        pub = self.published()
        t = np.round(np.arange(0.0, 720.0 + 1e-9, 0.5), 10)
        ds = self.simulate(params, t)
        infl = ds["I"].to_numpy()[0]
        i = int(np.argmax(infl))
        return [
            within("peak inflammation, au", infl[i], pub["inflammation_peak"], RTOL_VALUE),
            within("hour of the inflammation peak", t[i], pub["inflammation_peak_hour"], RTOL_HOUR),
            within("peak CD8 effector CAR-T, au", float(ds["C_e"].max()), pub["cd8_effector_peak"], RTOL_VALUE),
            within("tumour at 720 h, au", float(ds["B"].to_numpy()[0, -1]), pub["tumour_hour_720"], RTOL_VALUE),
        ]


def _rhs(t: np.ndarray, y: np.ndarray, p: Columns) -> np.ndarray:
    cm, ce, hm, he, lym, infl, b = (y[:, i] for i in range(7))
    switch = infl**2 / (infl**2 + p.b**2)
    niche = np.maximum(0.0, 1.0 - (b + ce + cm + he + hm + lym) / p.l)
    act_cd8 = p.a_1 * b * cm * switch * (1.0 + p.a_2 * he)
    act_cd4 = p.a_3 * b * hm * switch
    d = np.empty_like(y)
    d[:, IDX["B"]] = p.r_1 * b * (1.0 - b / p.k) - p.d_1 * b * ce
    d[:, IDX["I"]] = p.p_0 + p.p_1 * b * (ce + he) - p.d_2 * infl - np.where(infl > 0, p.drug, 0.0)
    d[:, IDX["C_e"]] = 2.0**p.n * act_cd8 - p.d_3 * ce
    d[:, IDX["C_m"]] = p.r_2 * cm * niche - act_cd8
    d[:, IDX["H_e"]] = 2.0**p.n * act_cd4 - p.d_4 * he
    d[:, IDX["H_m"]] = p.r_3 * hm * niche - act_cd4
    d[:, IDX["L"]] = p.p_2 + p.r_4 * lym * niche - p.d_5 * lym
    return d
