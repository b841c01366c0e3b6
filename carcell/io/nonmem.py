"""A NONMEM / Monolix-style dataset of simulated CAR kinetics, for pharmacometricians.

One row per event, the layout both tools read (NONMEM ``$INPUT``, Monolix column types):

======  ===============================================================================
ID      subject number, patient_id + 1 (NONMEM needs positive integers)
TIME    days after the first infusion
DV      natural log of the observed value (0 on dose rows); a BLQ sample carries ln(LLOQ)
AMT     CAR+ cells infused (dose rows), 0 otherwise
EVID    1 dose, 0 observation
MDV     1 on dose rows, 0 on observations
CMT     1 the infused product, 2 blood (the observed compartment)
BLQ     1 when the sample is below the LLOQ (for Beal's M3 method), else 0
CENS    Monolix censoring flag: 1 for a BLQ sample (DV is then the limit), else 0
LLOQ    the limit of quantification on the DV scale, ln(LLOQ)
DVOR    the observation in its own unit (copies/ug or cells/uL), 0 on dose rows
AGE     years; WT kg; LBURDEN log10 tumour cells at infusion (covariates)
ARMN    arm number (1, 2, ... in order of first appearance)
BESTCR  1 when the best response was a complete response, else 0
======  ===============================================================================

Observations are the CAR kinetics samples of ADPC (the same nominal schedule and LLOQ as the
ADaM export, docs/adam.md), so both exports agree; patients never infused are left out (they
have no kinetics). Every column is numeric; ``nonmem.json`` describes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from carcell.errors import CarcellError
from carcell.io.adam import DEFAULT_LLOQ_COPIES_PER_UG, DEFAULT_PK_SCHEDULE_DAYS, build_adam

#: the analytes one can export: ADPC parameter code -> unit
ANALYTES = {"CARCOPY": "copies/ug", "CARCELL": "cells/uL"}

COLUMNS = {
    "ID": "subject number: patient_id + 1",
    "TIME": "days after the first infusion",
    "DV": "natural log of the observation (ln(LLOQ) when below it; 0 on dose rows)",
    "AMT": "CAR+ cells infused on dose rows, else 0",
    "EVID": "1 dose, 0 observation",
    "MDV": "1 dose row, 0 observation",
    "CMT": "1 infused product, 2 blood",
    "BLQ": "1 below the LLOQ (M3), else 0",
    "CENS": "Monolix censoring: 1 below the LLOQ, else 0",
    "LLOQ": "ln of the limit of quantification",
    "DVOR": "observation in its own unit (0 on dose rows)",
    "AGE": "age, years",
    "WT": "body weight, kg",
    "LBURDEN": "log10 tumour cells at infusion",
    "ARMN": "arm number, in order of first appearance",
    "BESTCR": "1 if the best response was a complete response",
}


def build_nonmem(run_dir: Path, *, analyte: str = "CARCOPY",
                 schedule: Sequence[float] = DEFAULT_PK_SCHEDULE_DAYS,
                 lloq: float | None = None) -> pd.DataFrame:
    """The dataset of a carcell run or trial directory (needs ``trajectories.nc``).

    ``analyte`` is ``CARCOPY`` (transgene copies/ug, default) or ``CARCELL`` (CAR+ cells/uL);
    ``lloq`` defaults to the ADaM export's 5 copies/ug for CARCOPY and must be given for
    CARCELL.
    """
    if analyte not in ANALYTES:
        raise CarcellError(f"--analyte {analyte}: use one of {', '.join(ANALYTES)}")
    if lloq is None:
        if analyte != "CARCOPY":
            raise CarcellError(f"--lloq: give the limit of quantification for {analyte} ({ANALYTES[analyte]})")
        lloq = DEFAULT_LLOQ_COPIES_PER_UG
    if not lloq > 0:
        raise CarcellError(f"--lloq {lloq}: must be positive (the assay's limit, in {ANALYTES[analyte]})")
    run_dir = Path(run_dir)
    if not (run_dir / "trajectories.nc").is_file():
        raise CarcellError(f"{run_dir / 'trajectories.nc'}: missing; the kinetics come from a run's trajectories")
    adam = build_adam(run_dir, pk_schedule_days=schedule)
    adsl, adpc = adam["ADSL"], adam["ADPC"]
    patients = pd.read_parquet(run_dir / "patients.parquet")
    events = pd.read_parquet(run_dir / "events.parquet") if (run_dir / "events.parquet").is_file() else None

    pc = adpc[adpc["PARAMCD"] == analyte]
    infused = adsl[adsl["SAFFL"] == "Y"]
    arms = {a: i + 1 for i, a in enumerate(dict.fromkeys(adsl["ARM"].astype(str)))}
    by_id = patients.set_index(patients["patient_id"].astype("int64"))
    rows = []
    for _, s in infused.iterrows():
        pid = int(s["SUBJID"])
        cov = {"AGE": float(s["AGE"]), "WT": float(s["WEIGHTBL"]),
               "LBURDEN": float(np.log10(s["BURDENBL"])) if s["BURDENBL"] > 0 else np.nan,
               "ARMN": arms[str(s["ARM"])], "BESTCR": int(s.get("CRFL", "N") == "Y")}
        for day, amount in _doses(pid, by_id, events):
            rows.append({"ID": pid + 1, "TIME": day, "DV": 0.0, "AMT": amount, "EVID": 1, "MDV": 1, "CMT": 1,
                         "BLQ": 0, "CENS": 0, "LLOQ": np.log(lloq), "DVOR": 0.0, **cov})
        obs = pc[pc["USUBJID"] == s["USUBJID"]]
        for t, v in zip(obs["ARELTM"].to_numpy(float), obs["AVAL"].to_numpy(float)):
            below = bool(v < lloq)
            rows.append({"ID": pid + 1, "TIME": t, "DV": float(np.log(lloq if below else v)), "AMT": 0.0,
                         "EVID": 0, "MDV": 0, "CMT": 2, "BLQ": int(below), "CENS": int(below),
                         "LLOQ": np.log(lloq), "DVOR": float(v), **cov})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    if df.empty:
        return df
    # doses before observations at the same time (NONMEM's order of records)
    return df.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable",
                          ignore_index=True)


def _doses(pid: int, patients: pd.DataFrame, events: pd.DataFrame | None) -> list[tuple[float, float]]:
    """(day, cells) of each infusion: the logged infusion events, else one dose on day 0."""
    if events is not None and len(events):
        mine = events[(events["patient_id"] == pid) & (events["event"] == "infusion")]
        if len(mine):
            return [(float(d), float(v)) for d, v in zip(mine["day"], mine["value"])]
    return [(0.0, float(patients.at[pid, "dose_cells"]))]


def write_nonmem(run_dir: Path, df: pd.DataFrame, *, analyte: str, lloq: float | None) -> Path:
    """``RUN_DIR/nonmem/nonmem.csv`` (numeric, header row) and ``nonmem.json`` (columns, units)."""
    out = Path(run_dir) / "nonmem"
    out.mkdir(exist_ok=True)
    path = out / "nonmem.csv"
    tmp = path.with_suffix(".csv.part")
    df.to_csv(tmp, index=False, float_format="%.10g", na_rep=".")   # '.' is NONMEM's missing value
    tmp.replace(path)
    limit = DEFAULT_LLOQ_COPIES_PER_UG if lloq is None else lloq
    (out / "nonmem.json").write_text(json.dumps({
        "analyte": analyte, "unit": ANALYTES[analyte], "lloq": limit, "dv": "natural log",
        "input": "$INPUT " + " ".join(df.columns if len(df.columns) else COLUMNS), "columns": COLUMNS,
    }, indent=2))
    return path
