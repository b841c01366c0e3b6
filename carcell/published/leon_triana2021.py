"""Dual-target CAR-T cells with on- and off-tumour activity against a suppressive solid tumour.

Leon-Triana O, Perez-Martinez A, Ramirez-Orellana M, Perez-Garcia VM (2021). Dual-Target
CAR-Ts with On- and Off-Tumour Activity May Override Immune Suppression in Solid Cancers: A
Mathematical Proof of Concept. Cancers 13(4):703. doi:10.3390/cancers13040703. Encoded in
BioModels as BIOMD0000001014.

A CAR recognising both a solid-tumour antigen and CD19 expands on healthy B cells outside the
tumour (a "booster" reservoir) and migrates into the tumour, where immunosuppression would
otherwise exhaust a single-target CAR. Theory only, not calibrated to patients. Integrated
with carcell's batched DOPRI5.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

from carcell.published.base import Check, Citation, PublishedModel, dataset, resolve, within
from carcell.published.ode import Columns, integrate

ON, TUMOUR, OFF, B_CELLS = 0, 1, 2, 3
RTOL = 1e-9          # solver rtol; the tumour falls eleven orders of magnitude and regrows
ATOL = 1e-6          # cells
RTOL_PEAK = 0.01     # CAR-T peaks vs the BioModels run (its 1.8-day grid vs our 0.2-day grid)
RTOL_DAY = 0.12      # day of the peak: one step of the BioModels output grid (1.8 d) at day 16
RTOL_LATE = 0.02     # tumour and B cells on day 360 vs the BioModels run (same times)


class LeonTriana2021(PublishedModel):
    r"""On-tumour CAR-T C, tumour T, off-tumour CAR-T \bar C and B cells B (cells), t in days.

    dC/dt      = k \bar C + \rho_C C T/(g_T + T) - \alpha_1 C T/(g_C + C) - C/\tau_C
    dT/dt      = \rho_T T - \alpha_2 C T
    d\bar C/dt = \bar\rho_C \bar C B/(g_B + B) - \bar C/\tau_C - k \bar C
    dB/dt      = -\alpha_B B \bar C - B/\tau_B

    The infused cells start off-tumour, expand on B cells (saturating in B), move into the
    tumour at rate k, expand there on tumour antigen and are suppressed by the tumour
    (alpha_1, saturating in C). B cells are not replenished in this variant, so B-cell aplasia
    is permanent. Populations that undershoot below zero are set to zero at output times.
    """

    name = "leon_triana2021"
    citation = Citation(
        authors="Leon-Triana O, Perez-Martinez A, Ramirez-Orellana M, Perez-Garcia VM", year=2021,
        title="Dual-Target CAR-Ts with On- and Off-Tumour Activity May Override Immune Suppression "
              "in Solid Cancers: A Mathematical Proof of Concept", journal="Cancers 13(4):703",
        doi="10.3390/cancers13040703")
    reproduces = "BIOMD0000001014 default run: CAR-T peaks, tumour relapse after a sub-cell nadir, B-cell aplasia"
    states = ("car_on_tumour", "tumour", "car_off_tumour", "b_cells")
    default_set = "default"
    default_protocol = "default"
    solver = "carcell.solve.dopri5 (batched DOPRI5, rtol 1e-9)"

    def default_days(self) -> float:
        return float(self.protocol()["days"].value)

    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        proto = self.protocol(protocol)
        if t is None:
            t = np.linspace(0.0, float(proto["days"].value), int(proto["days"].value) + 1)
        p = resolve(self, params, set_name)
        n = len(p["k"])
        y0 = np.zeros((n, 4))
        y0[:, TUMOUR] = proto["tumour_cells"].value
        y0[:, OFF] = proto["car_t_cells"].value
        y0[:, B_CELLS] = proto["b_cells"].value
        y, status = integrate(_rhs, y0, t, Columns(p), rtol=RTOL, atol=ATOL,
                              after_step=lambda v: np.maximum(v, 0.0, out=v))
        return dataset(self, t, y, status)

    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        pub = self.published()
        t = np.round(np.arange(0.0, 360.0 + 1e-9, 0.2), 10)
        ds = self.simulate(params, t)
        on = ds["car_on_tumour"].to_numpy()[0]
        i = int(np.argmax(on))
        return [
            within("peak of on-tumour CAR-T, cells", on[i], pub["on_tumour_car_peak"], RTOL_PEAK),
            within("day of that peak", t[i], pub["on_tumour_car_peak_day"], RTOL_DAY),
            within("peak of off-tumour CAR-T, cells", float(ds["car_off_tumour"].max()),
                   pub["off_tumour_car_peak"], RTOL_PEAK),
            within("tumour on day 360 (relapse after a sub-cell nadir), cells",
                   float(ds["tumour"].to_numpy()[0, -1]), pub["tumour_day_360"], RTOL_LATE),
            within("B cells on day 360 (aplasia), cells", float(ds["b_cells"].to_numpy()[0, -1]),
                   pub["b_cells_day_360"], RTOL_LATE),
        ]


def _rhs(t: np.ndarray, y: np.ndarray, p: Columns) -> np.ndarray:
    c, tu, cb, b = y[:, ON], y[:, TUMOUR], y[:, OFF], y[:, B_CELLS]
    d = np.empty_like(y)
    d[:, ON] = (p.k * cb + p.rho_C * c * tu / (p.g_T + tu) - p.alpha_1 * c * tu / (p.g_C + c) - c / p.tau_C)
    d[:, TUMOUR] = p.rho_T * tu - p.alpha_2 * c * tu
    d[:, OFF] = p.rho_C_bar * cb * b / (p.g_B + b) - cb / p.tau_C - p.k * cb
    d[:, B_CELLS] = -p.alpha_B * b * cb - b / p.tau_B
    return d
