"""CARTmath: effector and memory CAR-T cells against a xenografted lymphoma.

Barros LRC, Paixao EA, Valli AMP, Naozuka GT, Fassoni AC, Almeida RC (2021). CARTmath - A
Mathematical Model of CAR-T Immunotherapy in Preclinical Studies of Hematological Cancers.
Cancers 13(12):2941. doi:10.3390/cancers13122941. Encoded in BioModels as BIOMD0000001019.

Reproduces the paper's mouse experiments: HDLM-2 (Hodgkin lymphoma, CAR-T 123) with a single
dose, fractionated doses and a tumour rechallenge; RAJI (Burkitt lymphoma, CAR-T 19) with and
without IDO expression and the IDO inhibitor 1-MT. Integrated with carcell's batched DOPRI5.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from carcell.published.base import Check, Citation, PublishedModel, dataset, holds, resolve
from carcell.published.ode import Columns, Event, below, integrate

EFFECTOR, MEMORY, TUMOUR = 0, 1, 2
RTOL = 1e-7           # solver relative tolerance (implicit BDF)
ATOL = 1e-7           # cells; below CARTmath's own detection threshold of 1e-6 cells
BIOMODELS_RTOL = 0.02  # vs the libRoadRunner run of BIOMD0000001019 (rtol 1e-10), log-scale
CHECK_EVERY = 10.0    # days between applications of the detection threshold (CARTmath: every step)


class Cartmath2021(PublishedModel):
    r"""Effector CAR-T :math:`C_T`, memory CAR-T :math:`C_M` and tumour :math:`T` (cells).

    dC_T/dt = \phi C_T - \rho C_T - \mu_T C_T + \theta T C_M - \alpha T C_T
    dC_M/dt = \epsilon \rho C_T - \theta T C_M - \mu_M C_M
    dT/dt   = r T (1 - b T) - \gamma C_T T

    Effectors proliferate (phi), leave the pool towards memory (rho; each gives epsilon memory
    cells), die (mu_T) and are inhibited by tumour cells (alpha T, the lumped tumour
    microenvironment). Memory cells die slowly (mu_M) and turn back into effectors on meeting
    antigen (theta T), which is what rejects a tumour rechallenge. The tumour grows
    logistically (r, capacity 1/b) and effectors kill it by mass action (gamma).

    CAR-T doses are added to C_T on their day; a rechallenge adds tumour cells to T. As in the
    authors' code, populations below ``detection_threshold`` (1e-6 cells) count as zero (applied
    on every output day here). BioModels' BIOMD0000001019 writes the same model with
    pi = rho + mu_T and epsilon' = epsilon * rho.
    """

    name = "cartmath2021"
    citation = Citation(
        authors="Barros LRC, Paixao EA, Valli AMP, Naozuka GT, Fassoni AC, Almeida RC", year=2021,
        title="CARTmath - A Mathematical Model of CAR-T Immunotherapy in Preclinical Studies of "
              "Hematological Cancers", journal="Cancers 13(12):2941", doi="10.3390/cancers13122941")
    reproduces = ("xenograft curves (HDLM-2 single, fractionated and rechallenge; RAJI with IDO and 1-MT), "
                  "BIOMD0000001019 trajectory")
    states = ("effector_car", "memory_car", "tumour")
    default_set = "HDLM-2"
    default_protocol = "hdlm2_rechallenge"
    solver = "carcell.solve.dopri5 (batched DOPRI5, rtol 1e-9), output every 0.25 day"

    def default_days(self) -> float:
        return float(self.protocol()["days"].value)

    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        proto = self.protocol(protocol)
        if t is None:
            t = np.linspace(0.0, float(proto["days"].value), int(4 * proto["days"].value) + 1)
        p = resolve(self, params, set_name)
        n = len(p["r"])
        y0 = np.zeros((n, 3))
        y0[:, TUMOUR] = proto["tumour_cells"].value
        events = [Event(float(d), EFFECTOR, float(c))
                  for d, c in zip(proto["dose_days"].value, proto["dose_cells"].value)]
        if "rechallenge_day" in proto:
            events.append(Event(float(proto["rechallenge_day"].value), TUMOUR,
                                float(proto["rechallenge_cells"].value)))
        threshold = float(p["detection_threshold"][0])
        y, status = integrate(_rhs, y0, t, Columns(p), events=events, rtol=RTOL, atol=ATOL,
                              after_step=below(threshold), method="bdf", check_every=CHECK_EVERY)
        return dataset(self, t, y, status)

    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        pub = self.published()
        p = dict(params or {})
        out = []
        re = self.simulate(p, protocol="hdlm2_rechallenge")
        after = re["tumour"].sel(time=slice(300, None)).to_numpy()
        out.append(holds("HDLM-2 rechallenge (Fig 3a): largest tumour after day 300, cells",
                         float(np.nanmax(after)), pub["rechallenge_tumour_after_day_250"].value,
                         bool(np.nanmax(after) < 1.0), "below 1 cell", _src(pub["rechallenge_tumour_after_day_250"])))
        single = self.simulate(p, protocol="hdlm2_single")
        last = float(single["tumour"].to_numpy()[0, -1])
        out.append(holds("HDLM-2 single dose (Fig 4a): tumour on day 200, cells", last,
                         pub["single_dose_tumour_day_200"].value, bool(last < 1.0), "below 1 cell",
                         _src(pub["single_dose_tumour_day_200"])))
        day15 = {}
        for s in ("RAJI", "RAJI-IDO-1MT", "RAJI-IDO"):
            ds = self.simulate({k: v for k, v in p.items() if k != "alpha"} if s != "RAJI" else p,
                               protocol="raji_single", set_name=s)
            day15[s] = float(ds["tumour"].to_numpy()[0, -1])
        ordered = day15["RAJI"] < day15["RAJI-IDO-1MT"] < day15["RAJI-IDO"]
        out.append(holds("RAJI day 15 (Fig 3b-d): tumour IDO+ / RAJI", day15["RAJI-IDO"] / day15["RAJI"],
                         pub["ido_inhibits_car_t"].value, ordered, "order RAJI < IDO+1-MT < IDO",
                         _src(pub["ido_inhibits_car_t"])))
        return out


def _src(p) -> str:
    return f"{p.source} ({p.note})"


def _rhs(t: np.ndarray, y: np.ndarray, p: Columns) -> np.ndarray:
    ct, cm, tu = y[:, EFFECTOR], y[:, MEMORY], y[:, TUMOUR]
    d = np.empty_like(y)
    d[:, EFFECTOR] = (p.phi - p.rho - p.mu_T) * ct + p.theta * tu * cm - p.alpha * tu * ct
    d[:, MEMORY] = p.epsilon * p.rho * ct - p.theta * tu * cm - p.mu_M * cm
    d[:, TUMOUR] = p.r * tu * (1.0 - p.b * tu) - p.gamma * ct * tu
    return d


def crosscheck_biomodels(csv: Path, params: Mapping[str, float] | None = None) -> list[Check]:
    """Compare with the libRoadRunner trajectory of BIOMD0000001019 (same model, SBML events).

    Every state is compared on a log scale wherever the reference is above one cell; the
    tolerance is relative (``BIOMODELS_RTOL``).
    """
    ref = pd.read_csv(csv)
    model = Cartmath2021()
    ds = model.simulate(params, ref["time"].to_numpy(), protocol="biomodels_1019")
    out = []
    for state, col in (("effector_car", "Ct"), ("memory_car", "Cm"), ("tumour", "T")):
        r = ref[col].to_numpy()
        m = ds[state].to_numpy()[0]
        mask = r > 1.0
        rel = np.abs(m[mask] - r[mask]) / r[mask]
        worst = int(np.argmax(rel))
        out.append(Check(f"BIOMD0000001019 {col}: worst relative difference (reference > 1 cell)",
                         float(rel[worst]), 0.0, f"<= {BIOMODELS_RTOL:.0%}", bool(rel.max() <= BIOMODELS_RTOL),
                         f"{csv.name}, libRoadRunner CVODE rtol 1e-10"))
    return out
