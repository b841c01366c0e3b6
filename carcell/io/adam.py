"""CDISC ADaM-style analysis datasets from a virtual trial's output directory.

A statistician's tools (SAS, R ``admiral``/``survival``, ``pharmaverse``) read analysis data
in the ADaM shape: one subject-level table (ADSL) and one table per analysis (ADTTE for
time to event, ADAE for adverse events, ADPC for concentrations). :func:`build_adam` derives
them from the files of ``docs/trial-outputs.md``; :func:`write_adam` writes them to
``DIR/adam/`` as CSV and/or parquet with a ``define.json`` (a light define-XML substitute);
:func:`validate_adam` checks them against :data:`ADAM_SPEC`, the single variable table that
also labels the columns and is printed in ``docs/adam.md`` (:func:`spec_markdown`).

Day convention: ``--DY`` variables are CDISC study days, integers with day 1 = the day of
infusion (or randomisation) and no day 0: ``floor(day) + 1`` for a simulator ``day >= 0``.
Exact times stay exact where an analysis needs them: ``AVAL`` of ADTTE, ``ADURN`` of ADAE
and ``ARELTM`` of ADPC are in days after infusion, as in the simulator's files.

Examples
--------
>>> ADAM_SPEC["ADTTE"].keys
('USUBJID', 'PARAMCD')
>>> study_day(np.array([0.0, 0.5, 6.0]))
array([1., 1., 7.])
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Mapping, Sequence

import numpy as np
import pandas as pd

from carcell.errors import CarcellError

__all__ = ["ADAM_SPEC", "DEFAULT_LLOQ_COPIES_PER_UG", "DEFAULT_PK_SCHEDULE_DAYS", "DatasetSpec", "Variable",
           "build_adam", "spec_markdown", "study_day", "study_slug", "validate_adam", "write_adam"]

# -- the specification ------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    """One ADaM variable: name (upper case, <= 8 characters), label (<= 40), type, derivation."""

    name: str
    label: str
    type: Literal["num", "char"]
    required: bool
    derivation: str


@dataclass(frozen=True)
class DatasetSpec:
    """One ADaM dataset: its label, structure, key variables and variables in column order."""

    name: str
    label: str
    structure: str
    keys: tuple[str, ...]
    variables: tuple[Variable, ...]

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)


def _dataset(name: str, label: str, structure: str, keys: tuple[str, ...], rows) -> DatasetSpec:
    return DatasetSpec(name, label, structure, keys, tuple(Variable(*r) for r in rows))


Y, N = True, False  # required, optional: short, so that each variable stays on one line
_COMMON = (
    ("STUDYID", "Study Identifier", "char", Y, "trial name slugged (trial.json, else summary.json), or study_id"),
    ("USUBJID", "Unique Subject Identifier", "char", Y, "STUDYID-patient_id"),
)

#: The variables of every dataset: name, label, type, required, derivation. Labels the columns
#: (parquet metadata, define.json), drives :func:`validate_adam` and is printed in docs/adam.md.
ADAM_SPEC: dict[str, DatasetSpec] = {d.name: d for d in (
    _dataset("ADSL", "Subject-Level Analysis Dataset", "one record per subject", ("USUBJID",), (
        *_COMMON,
        ("SUBJID", "Subject Identifier for the Study", "char", Y, "patient_id"),
        ("ARM", "Description of Planned Arm", "char", Y, "arm (randomised arm)"),
        ("ARMCD", "Planned Arm Code", "char", Y, "arm upper-cased, letters and digits only, <= 20 characters"),
        ("ACTARM", "Description of Actual Arm", "char", Y, "arm if infused, else 'Not Treated'"),
        ("TRT01P", "Planned Treatment for Period 01", "char", Y, "arm"),
        ("TRT01A", "Actual Treatment for Period 01", "char", Y, "arm if infused, else missing"),
        ("ITTFL", "Intent-To-Treat Population Flag", "char", Y, "'Y' for every randomised patient"),
        ("SAFFL", "Safety Population Flag", "char", Y, "'Y' if infused (SOC arms: SOC received), else 'N'"),
        ("MITTFL", "Modified Intent-To-Treat Population Flag", "char", Y, "'Y' if infused, else 'N'"),
        ("AGE", "Age", "num", Y, "age_years"),
        ("AGEU", "Age Units", "char", Y, "'YEARS'"),
        ("WEIGHTBL", "Weight (kg) at Baseline", "num", N, "weight_kg"),
        ("BURDENBL", "Baseline Tumour Burden (cells)", "num", N, "baseline_burden_cells"),
        ("BESTRSP", "Best Overall Response", "char", N, "best_response (CR, VGPR, PR, SD, PD, NR, NE)"),
        ("RSPFL", "Responder Flag", "char", N, "'Y' if BESTRSP is CR, VGPR or PR, else 'N'"),
        ("CRFL", "Complete Response Flag", "char", N, "'Y' if BESTRSP is CR, else 'N'"),
        ("TRTSDY", "Study Day of Start of Treatment", "num", Y, "1 if infused (infusion is study day 1), else missing"),
        ("DTHFL", "Subject Death Flag", "char", N, "'Y' if death_day is given, else missing"),
        ("DTHDY", "Study Day of Death", "num", N, "study day of death_day"),
        ("DTHCAUS", "Cause of Death", "char", N, "death_cause in words, upper case; missing if alive"),
        ("EOSSTT", "End of Study Status", "char", N, "'DISCONTINUED' if died during follow-up, else 'COMPLETED'"),
        ("DCSREAS", "Reason for Discontinuation from Study", "char", N, "'DEATH' if died, else missing"),
        ("CMAX", "Cmax CAR Transgene (copies/ug)", "num", N, "cmax_copies_per_ug"),
        ("AUC028", "AUC Day 0-28 CAR Transgene (copies*d/ug)", "num", N, "auc_0_28_copies_day_per_ug"),
        ("HTXSCORE", "CAR-HEMATOTOX Score", "num", N, "hematotox_score"),
    )),
    _dataset("ADTTE", "Time-to-Event Analysis Dataset", "one record per subject per parameter",
             ("USUBJID", "PARAMCD"), (
        *_COMMON,
        ("PARAMCD", "Parameter Code", "char", Y, "PFS, OS, EFS (if efs_* columns), DOR (responders only)"),
        ("PARAM", "Parameter", "char", Y, "parameter name with unit"),
        ("AVAL", "Analysis Value", "num", Y, "pfs_days, os_days, efs_days or dor_days (exact days)"),
        ("AVALU", "Analysis Value Unit", "char", Y, "'DAYS'"),
        ("CNSR", "Censor", "num", Y, "1 - <endpoint>_event: 0 = event, 1 = censored"),
        ("EVNTDESC", "Event or Censoring Description", "char", Y,
         "DEATH, DISEASE PROGRESSION OR RELAPSE, CENSORED, ..."),
        ("CNSDTDSC", "Censor Date Description", "char", Y, "'END OF FOLLOW-UP' if censored, else missing"),
        ("STARTDY", "Time-to-Event Origin Study Day", "num", Y, "1 (infusion/randomisation); DOR: day of response_day"),
        ("ADY", "Analysis Relative Day", "num", Y, "study day of the event or censoring"),
        ("ARM", "Description of Planned Arm", "char", Y, "ADSL.ARM"),
        ("TRTP", "Planned Treatment", "char", Y, "ADSL.TRT01P"),
        ("ITTFL", "Intent-To-Treat Population Flag", "char", Y, "ADSL.ITTFL"),
        ("SAFFL", "Safety Population Flag", "char", Y, "ADSL.SAFFL"),
        ("MITTFL", "Modified Intent-To-Treat Population Flag", "char", N, "ADSL.MITTFL"),
    )),
    _dataset("ADAE", "Adverse Events Analysis Dataset", "one record per adverse-event episode",
             ("USUBJID", "AESEQ"), (
        *_COMMON,
        ("AESEQ", "Sequence Number", "num", Y, "1, 2, ... per subject in order of onset"),
        ("AETERM", "Reported Term for the Adverse Event", "char", Y, "as AEDECOD"),
        ("AEDECOD", "Dictionary-Derived Term", "char", Y, "MedDRA preferred term of the episode's toxicity"),
        ("AEBODSYS", "Body System or Organ Class", "char", Y, "MedDRA system organ class"),
        ("AETOXGR", "Standard Toxicity Grade", "char", Y, "ATOXGRN as text"),
        ("ATOXGRN", "Analysis Toxicity Grade (N)", "num", Y, "maximum grade of the episode (ASTCT for CRS, ICANS)"),
        ("ASTDY", "Analysis Start Relative Day", "num", Y, "study day of onset"),
        ("AENDY", "Analysis End Relative Day", "num", Y, "study day of resolution; missing if ongoing"),
        ("ADURN", "Analysis Duration (N)", "num", Y, "resolution minus onset, exact days; missing if ongoing"),
        ("ADURU", "Analysis Duration Units", "char", Y, "'DAYS'"),
        ("TRTEMFL", "Treatment Emergent Analysis Flag", "char", Y, "'Y' (every episode starts after infusion)"),
        ("AESER", "Serious Event", "char", Y, "'Y' if grade >= 3, else 'N' (proxy)"),
        ("AEOUT", "Outcome of Adverse Event", "char", N, "FATAL, RECOVERED/RESOLVED, NOT RECOVERED/NOT RESOLVED"),
        ("AEACN", "Action Taken with Study Treatment", "char", N, "'NOT APPLICABLE' (single infusion)"),
        ("AECONTRT", "Concomitant or Additional Trtmnt Given", "char", Y, "'Y' if AECMTRT is not missing, else 'N'"),
        ("AECMTRT", "Concomitant Treatments in Episode", "char", Y, "drugs from onset to resolution, '; '-separated"),
        ("ARM", "Description of Planned Arm", "char", Y, "ADSL.ARM"),
        ("TRTA", "Actual Treatment", "char", Y, "ADSL.TRT01A"),
        ("SAFFL", "Safety Population Flag", "char", Y, "ADSL.SAFFL"),
    )),
    _dataset("ADPC", "Pharmacokinetic Concentrations Dataset", "one record per subject per parameter per time point",
             ("USUBJID", "PARAMCD", "ATPTN"), (
        *_COMMON,
        ("ARM", "Description of Planned Arm", "char", Y, "ADSL.ARM"),
        ("TRTA", "Actual Treatment", "char", Y, "ADSL.TRT01A"),
        ("PARAMCD", "Parameter Code", "char", Y, "CARCOPY (car_copies_per_ug), CARCELL (car_cells_per_ul)"),
        ("PARAM", "Parameter", "char", Y, "parameter name with unit"),
        ("AVAL", "Analysis Value", "num", Y, "trajectory value at the sampled time (BLQ values kept)"),
        ("AVALU", "Analysis Value Unit", "char", Y, "copies/ug or cells/uL"),
        ("ATPT", "Analysis Timepoint", "char", Y, "'DAY <nominal day>'"),
        ("ATPTN", "Analysis Timepoint (N)", "num", Y, "nominal day of the sampling schedule"),
        ("ARELTM", "Actual Relative Time", "num", Y, "trajectory time nearest the nominal day, days after infusion"),
        ("ARELTMU", "Actual Relative Time Units", "char", Y, "'DAYS'"),
        ("BLQFL", "Below Lower Limit of Quantitation Flag", "char", Y,
         "'Y' if AVAL < ALLOQ, else 'N' (no LLOQ: missing)"),
        ("ALLOQ", "Analysis Lower Limit of Quantitation", "num", Y, "assumed assay LLOQ (5 copies/ug; none for cells)"),
    )),
)}

#: nominal sampling days of CAR kinetics (the schedule of the pivotal CD19/BCMA CAR-T trials)
DEFAULT_PK_SCHEDULE_DAYS: tuple[float, ...] = (0, 1, 4, 7, 11, 14, 21, 28, 56, 90, 180, 270, 365, 545, 730)
#: assumed lower limit of quantification of the transgene qPCR, copies/ug genomic DNA
DEFAULT_LLOQ_COPIES_PER_UG = 5.0

_PK_PARAMETERS = (  # PARAMCD, trajectory variable, PARAM, AVALU
    ("CARCOPY", "car_copies_per_ug", "CAR Transgene in Blood (copies/ug gDNA)", "copies/ug"),
    ("CARCELL", "car_cells_per_ul", "CAR-Positive Cells in Blood (cells/uL)", "cells/uL"),
)
_TTE_PARAMETERS = (  # PARAMCD, column stem, PARAM
    ("PFS", "pfs", "Progression-Free Survival (days)"),
    ("OS", "os", "Overall Survival (days)"),
    ("EFS", "efs", "Event-Free Survival (days)"),
    ("DOR", "dor", "Duration of Response (days)"),
)
_RESPONDER = ("CR", "VGPR", "PR")
_DEATH_CAUSES = {"progression": "DISEASE PROGRESSION", "crs": "CYTOKINE RELEASE SYNDROME",
                 "icans": "ICANS", "infection": "INFECTION", "other": "OTHER"}
_TOXICITIES = (  # event kind, AEDECOD, AEBODSYS
    ("crs_grade", "Cytokine release syndrome", "Immune system disorders"),
    ("icans_grade", "Immune effector cell-associated neurotoxicity syndrome", "Nervous system disorders"),
)
#: grade given to hypogammaglobulinaemia treated with IVIG (assumption: intervention indicated)
HYPOGAMMA_GRADE = 2
_EPS = 1e-9


# -- helpers ----------------------------------------------------------------------------------


def study_day(day) -> np.ndarray:
    """CDISC study day of simulator days after infusion: day 1 = infusion day, no day 0."""
    d = np.asarray(day, dtype=float)
    return np.where(d >= 0, np.floor(d) + 1, np.floor(d))


def study_slug(name: str) -> str:
    """A STUDYID from a trial name: upper case, runs of other characters become one '-'."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").upper()
    return slug or "CARCELL"


def _num(p: pd.DataFrame, col: str) -> np.ndarray | None:
    return pd.to_numeric(p[col], errors="coerce").to_numpy(dtype=float) if col in p else None


def _flag(p: pd.DataFrame, col: str) -> np.ndarray:
    return p[col].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _yn(mask) -> np.ndarray:
    return np.where(np.asarray(mask, dtype=bool), "Y", "N").astype(object)


def _frame(spec: DatasetSpec, columns: Mapping[str, object], n: int) -> pd.DataFrame:
    """Columns in specification order, typed: char -> pandas string, num -> number."""
    data = {}
    for v in spec.variables:
        if v.name not in columns or columns[v.name] is None:
            continue
        value = columns[v.name]
        if np.ndim(value) == 0:
            value = [value] * n
        if v.type == "char":
            s = pd.Series(list(value), dtype=object)
            data[v.name] = s.where(s.notna(), None).astype("string")
        else:
            data[v.name] = pd.Series(np.asarray(value))
    df = pd.DataFrame(data)
    for v in spec.variables:  # an empty table still has its required columns
        if v.required and v.name not in df:
            df[v.name] = pd.Series(dtype="string" if v.type == "char" else float)
    return df[[v.name for v in spec.variables if v.name in df]]


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        raise CarcellError(f"{path}: cannot be read as parquet ({str(err).splitlines()[0]})") from err


def _read_inputs(out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise CarcellError(f"{out_dir}: no such directory; give the output directory of a carcell run or trial")
    pfile, efile = out_dir / "patients.parquet", out_dir / "events.parquet"
    if not pfile.is_file():
        raise CarcellError(f"{pfile}: missing; give the output directory of a carcell run or trial")
    patients = _read_parquet(pfile)
    if "patient_id" not in patients:
        raise CarcellError(f"{pfile}: has no patient_id column (docs/trial-outputs.md)")
    if patients["patient_id"].isna().any() or patients["patient_id"].duplicated().any():
        raise CarcellError(f"{pfile}: patient_id is missing or repeated; it must be unique")
    events = _read_parquet(efile) if efile.is_file() else pd.DataFrame(
        columns=["patient_id", "day", "event", "value", "detail"])
    missing = {"patient_id", "day", "event", "value", "detail"} - set(events.columns)
    if missing:
        raise CarcellError(f"{efile}: lacks column(s) {', '.join(sorted(missing))} (docs/trial-outputs.md)")
    meta: dict = {}
    for name in ("trial.json", "summary.json"):
        f = out_dir / name
        if f.is_file():
            try:
                meta = json.loads(f.read_text())
            except (OSError, ValueError) as err:
                raise CarcellError(f"{f}: not valid JSON ({err})") from err
            if not isinstance(meta, dict):
                raise CarcellError(f"{f}: not a JSON object")
            break
    return patients, events, meta


# -- ADSL -------------------------------------------------------------------------------------


def _arm_codes(arms: Iterable[str]) -> dict[str, str]:
    codes: dict[str, str] = {}
    for arm in dict.fromkeys(arms):
        base = re.sub(r"[^A-Z0-9]", "", arm.upper())[:18] or "ARM"
        code, k = base, 1
        while code in codes.values():
            k += 1
            code = f"{base}{k}"
        codes[arm] = code
    return codes


def _adsl(p: pd.DataFrame, studyid: str, default_arm: str) -> pd.DataFrame:
    n = len(p)
    subjid = p["patient_id"].astype("int64").astype(str).to_numpy()
    arm = (p["arm"].astype(object).where(p["arm"].notna(), default_arm).astype(str).to_numpy()
           if "arm" in p else np.full(n, default_arm, dtype=object))
    infused = _flag(p, "infused") if "infused" in p else np.ones(n, dtype=bool)
    codes = _arm_codes(arm)
    cols: dict[str, object] = {
        "STUDYID": studyid, "USUBJID": [f"{studyid}-{s}" for s in subjid], "SUBJID": subjid,
        "ARM": arm, "ARMCD": [codes[a] for a in arm],
        "ACTARM": np.where(infused, arm, "Not Treated"), "TRT01P": arm,
        "TRT01A": np.where(infused, arm, None), "ITTFL": "Y", "SAFFL": _yn(infused), "MITTFL": _yn(infused),
        "AGE": _num(p, "age_years"), "AGEU": "YEARS",
        "WEIGHTBL": _num(p, "weight_kg"), "BURDENBL": _num(p, "baseline_burden_cells"),
        "TRTSDY": np.where(infused, 1.0, np.nan),
        "CMAX": _num(p, "cmax_copies_per_ug"), "AUC028": _num(p, "auc_0_28_copies_day_per_ug"),
        "HTXSCORE": _num(p, "hematotox_score"),
    }
    if "best_response" in p:
        best = p["best_response"].astype(object).where(p["best_response"].notna(), None).to_numpy()
        cols["BESTRSP"] = best
        cols["RSPFL"] = _yn(np.isin(best, _RESPONDER))
        cols["CRFL"] = _yn(best == "CR")
    if "death_day" in p:
        death = _num(p, "death_day")
        died = ~np.isnan(death)
        cause = (p["death_cause"].astype(object).to_numpy() if "death_cause" in p
                 else np.full(n, "other", dtype=object))
        cols["DTHFL"] = np.where(died, "Y", None)
        cols["DTHDY"] = study_day(death)
        cols["DTHCAUS"] = [(_DEATH_CAUSES.get(str(c), str(c).upper()) if d else None) for c, d in zip(cause, died)]
        cols["EOSSTT"] = np.where(died, "DISCONTINUED", "COMPLETED")
        cols["DCSREAS"] = np.where(died, "DEATH", None)
    return _frame(ADAM_SPEC["ADSL"], cols, n)


# -- ADTTE ------------------------------------------------------------------------------------


def _event_description(code: str, p: pd.DataFrame, end: np.ndarray, event: np.ndarray) -> list[str | None]:
    death = _num(p, "death_day") if "death_day" in p else np.full(len(p), np.nan)
    prog = _num(p, "progression_day") if "progression_day" in p else np.full(len(p), np.nan)
    best = p["best_response"].astype(object).to_numpy() if "best_response" in p else np.full(len(p), None)
    out: list[str | None] = []
    for i in range(len(p)):
        if not event[i]:
            out.append("CENSORED")
        elif code == "OS" or (abs(death[i] - end[i]) < 1e-6 and not prog[i] <= end[i] + 1e-6):
            out.append("DEATH")
        elif code == "EFS" and best[i] not in _RESPONDER and abs(end[i] - 28) < 1e-6:
            out.append("NO REMISSION BY DAY 28")
        else:
            out.append("DISEASE PROGRESSION OR RELAPSE")
    return out


def _adtte(p: pd.DataFrame, adsl: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for code, stem, param in _TTE_PARAMETERS:
        if f"{stem}_days" not in p or f"{stem}_event" not in p:
            continue
        aval = _num(p, f"{stem}_days")
        keep = ~np.isnan(aval)  # DOR: responders only
        if not keep.any():
            continue
        q, aval = p[keep], aval[keep]
        event = _flag(q, f"{stem}_event")
        origin = _num(q, "response_day") if code == "DOR" and "response_day" in q else np.zeros(len(q))
        s = adsl[keep]
        parts.append(_frame(ADAM_SPEC["ADTTE"], {
            "STUDYID": s["STUDYID"], "USUBJID": s["USUBJID"], "PARAMCD": code, "PARAM": param,
            "AVAL": aval, "AVALU": "DAYS", "CNSR": (~event).astype("int64"),
            "EVNTDESC": _event_description(code, q, origin + aval, event),
            "CNSDTDSC": np.where(event, None, "END OF FOLLOW-UP"),
            "STARTDY": study_day(origin), "ADY": study_day(origin + aval),
            "ARM": s["ARM"], "TRTP": s["TRT01P"], "ITTFL": s["ITTFL"], "SAFFL": s["SAFFL"], "MITTFL": s["MITTFL"],
        }, len(q)))
    if not parts:
        return _frame(ADAM_SPEC["ADTTE"], {}, 0)
    df = pd.concat(parts, ignore_index=True)  # per subject: PFS, OS, EFS, DOR (parameter order)
    order = np.argsort(df["USUBJID"].to_numpy(dtype=object), kind="stable")
    return df.iloc[order].reset_index(drop=True)


# -- ADAE -------------------------------------------------------------------------------------


def _episodes(days: np.ndarray, grades: np.ndarray) -> list[tuple[float, float, int]]:
    """(onset, end, max grade) of each run of grade > 0; end NaN if still open at the last event."""
    out, onset, top = [], None, 0
    for day, g in zip(days, grades):
        if np.isnan(g):
            continue
        if g > 0:
            onset, top = (day, int(g)) if onset is None else (onset, max(top, int(g)))
        elif onset is not None:
            out.append((float(onset), float(day), top))
            onset = None
    if onset is not None:
        out.append((float(onset), np.nan, top))
    return out


def _drugs_in(drugs: pd.DataFrame, onset: float, end: float) -> str | None:
    """Drugs given from onset up to (not including) resolution; those given at the assessment
    that found the toxicity resolved were for something else."""
    if np.isnan(onset):
        return None
    stop = np.inf if np.isnan(end) else end - _EPS
    names = drugs.loc[(drugs["day"] >= onset - _EPS) & (drugs["day"] <= stop), "drug"]
    return "; ".join(dict.fromkeys(names)) or None


def _first_below(traj: Path | None, patients: Sequence[int], variable: str, level: float) -> dict[int, float]:
    """First output time >= 0 at which ``variable`` < ``level``, per patient (absent: never)."""
    if traj is None or not len(patients):
        return {}
    import xarray as xr

    with xr.open_dataset(traj) as ds:
        if variable not in ds:
            return {}
        ids = ds["patient"].to_numpy().astype("int64")
        rows = [k for k, pid in enumerate(ids) if pid in set(patients)]
        x = ds[variable].transpose("patient", "time").isel(patient=rows).to_numpy()
        t = ds["time"].to_numpy().astype(float)
    out = {}
    for k, row in zip(rows, x):
        hit = np.flatnonzero((t >= 0) & (row < level))
        if hit.size:
            out[int(ids[k])] = float(t[hit[0]])
    return out


def _adae(p: pd.DataFrame, ev: pd.DataFrame, adsl: pd.DataFrame, traj: Path | None) -> pd.DataFrame:
    ev = ev.assign(day=pd.to_numeric(ev["day"], errors="coerce"), value=pd.to_numeric(ev["value"], errors="coerce"),
                   event=ev["event"].astype(str)).sort_values(["patient_id", "day"], kind="stable")
    drugs = ev[ev["event"] == "drug"].assign(
        drug=lambda d: d["detail"].astype(str).str.split(" (", n=1, regex=False).str[0].str.strip())
    ivig = ev[ev["event"] == "ivig"].assign(drug="ivig")
    treatments = pd.concat([drugs, ivig]).sort_values(["patient_id", "day"], kind="stable")
    by_patient = {pid: g for pid, g in treatments.groupby("patient_id")}
    none = treatments.iloc[:0]
    rows = []  # patient_id, decod, bodsys, grade, onset, end

    for kind, decod, bodsys in _TOXICITIES:
        for pid, g in ev[ev["event"] == kind].groupby("patient_id", sort=True):
            for onset, end, grade in _episodes(g["day"].to_numpy(float), g["value"].to_numpy(float)):
                rows.append((pid, decod, bodsys, grade, onset, end))
    if {"severe_neutropenia_days", "anc_nadir_per_ul"} <= set(p.columns):
        nadir = _num(p, "anc_nadir_per_ul")
        recovery = _num(p, "anc_recovery_day") if "anc_recovery_day" in p else np.full(len(p), np.nan)
        severe = np.flatnonzero(_num(p, "severe_neutropenia_days") > 0)
        onsets = _first_below(traj, [int(p["patient_id"].iloc[i]) for i in severe], "anc_per_ul", 500.0)
        for i in severe:
            pid = int(p["patient_id"].iloc[i])
            onset = onsets.get(pid, np.nan)
            end = recovery[i] if recovery[i] > onset else np.nan
            rows.append((pid, "Neutrophil count decreased", "Investigations", 4 if nadir[i] < 500 else 3, onset, end))
    for pid, g in ivig.groupby("patient_id", sort=True):
        rows.append((pid, "Hypogammaglobulinaemia", "Immune system disorders", HYPOGAMMA_GRADE,
                     float(g["day"].min()), np.nan))

    if not rows:
        return _frame(ADAM_SPEC["ADAE"], {}, 0)
    ae = pd.DataFrame(rows, columns=["patient_id", "decod", "bodsys", "grade", "onset", "end"])
    ae = ae.sort_values(["patient_id", "onset", "decod"], kind="stable", na_position="last").reset_index(drop=True)
    subj = adsl.assign(patient_id=adsl["SUBJID"].astype("int64")).set_index("patient_id")
    studyid = str(adsl["STUDYID"].iloc[0]) if len(adsl) else "CARCELL"
    known = ae["patient_id"].isin(subj.index).to_numpy()
    usubjid = [f"{studyid}-{int(x)}" for x in ae["patient_id"]]
    look = lambda col: [subj.at[x, col] if k else None for x, k in zip(ae["patient_id"], known)]  # noqa: E731
    cm = [_drugs_in(by_patient.get(x, none), o, e) for x, o, e in zip(ae["patient_id"], ae["onset"], ae["end"])]
    grade = ae["grade"].to_numpy(dtype="int64")
    onset, end = ae["onset"].to_numpy(float), ae["end"].to_numpy(float)
    return _frame(ADAM_SPEC["ADAE"], {
        "STUDYID": studyid, "USUBJID": usubjid,
        "AESEQ": ae.groupby("patient_id").cumcount().to_numpy(dtype="int64") + 1,
        "AETERM": ae["decod"], "AEDECOD": ae["decod"], "AEBODSYS": ae["bodsys"],
        "AETOXGR": [str(g) for g in grade], "ATOXGRN": grade,
        "ASTDY": study_day(onset), "AENDY": study_day(end), "ADURN": end - onset, "ADURU": "DAYS",
        "TRTEMFL": "Y", "AESER": _yn(grade >= 3),
        "AEOUT": np.where(grade >= 5, "FATAL", np.where(np.isnan(end), "NOT RECOVERED/NOT RESOLVED",
                                                        "RECOVERED/RESOLVED")),
        "AEACN": "NOT APPLICABLE", "AECONTRT": _yn([c is not None for c in cm]), "AECMTRT": cm,
        "ARM": look("ARM"), "TRTA": look("TRT01A"), "SAFFL": look("SAFFL"),
    }, len(ae))


# -- ADPC -------------------------------------------------------------------------------------


def _nominal_samples(times: np.ndarray, schedule: Sequence[float], last: float) -> list[tuple[float, int]]:
    """(nominal day, index of the nearest output time), one per distinct output time."""
    out, used = [], set()
    for nominal in sorted(float(s) for s in schedule):
        if nominal > last + _EPS or nominal < times[0] - 0.5:
            continue
        i = int(np.argmin(np.abs(times - nominal)))
        if i not in used:  # a coarse output grid would otherwise report one sample twice
            used.add(i)
            out.append((nominal, i))
    return out


def _adpc(traj: Path, p: pd.DataFrame, adsl: pd.DataFrame, follow_up: float | None,
          schedule: Sequence[float], lloq_copies_per_ug: float | None,
          lloq_cells_per_ul: float | None) -> pd.DataFrame:
    import xarray as xr

    lloq = {"CARCOPY": lloq_copies_per_ug, "CARCELL": lloq_cells_per_ul}
    try:
        ds = xr.open_dataset(traj)
    except Exception as err:  # netCDF4 and h5py raise their own kinds
        raise CarcellError(f"{traj}: cannot be read as netCDF ({str(err).splitlines()[0]})") from err
    with ds:
        if "time" not in ds.coords or "patient" not in ds.coords:
            raise CarcellError(f"{traj}: needs coordinates patient and time (docs/trial-outputs.md)")
        times = ds["time"].to_numpy().astype(float)
        ids = ds["patient"].to_numpy().astype("int64")
        last = times[-1] if follow_up is None else min(times[-1], follow_up)
        samples = _nominal_samples(times, schedule, last)
        idx = [i for _, i in samples]
        values = {code: ds[var].transpose("patient", "time").isel(time=idx).to_numpy().astype(float)
                  for code, var, _, _ in _PK_PARAMETERS if var in ds}
    if not values or not samples:
        return _frame(ADAM_SPEC["ADPC"], {}, 0)
    death = dict(zip(p["patient_id"].astype("int64"), _num(p, "death_day"))) if "death_day" in p else {}
    subj = adsl.assign(patient_id=adsl["SUBJID"].astype("int64")).set_index("patient_id")
    studyid = str(adsl["STUDYID"].iloc[0]) if len(adsl) else "CARCELL"
    nominal = np.array([n for n, _ in samples])
    actual = times[idx]
    parts = []
    for code, _, param, unit in _PK_PARAMETERS:
        if code not in values:
            continue
        for k, pid in enumerate(ids):
            aval = values[code][k]
            dies = death.get(int(pid), np.nan)
            keep = ~np.isnan(aval) & ~(actual > dies + _EPS)  # no samples from the dead
            m = int(keep.sum())
            if not m:
                continue
            known = int(pid) in subj.index
            limit = lloq[code]
            parts.append(_frame(ADAM_SPEC["ADPC"], {
                "STUDYID": studyid, "USUBJID": f"{studyid}-{int(pid)}",
                "ARM": subj.at[int(pid), "ARM"] if known else None,
                "TRTA": subj.at[int(pid), "TRT01A"] if known else None,
                "PARAMCD": code, "PARAM": param, "AVAL": aval[keep], "AVALU": unit,
                "ATPT": [f"DAY {n:g}" for n in nominal[keep]], "ATPTN": nominal[keep],
                "ARELTM": actual[keep], "ARELTMU": "DAYS",
                "BLQFL": None if limit is None else _yn(aval[keep] < limit),
                "ALLOQ": np.full(m, np.nan if limit is None else float(limit)),
            }, m))
    if not parts:
        return _frame(ADAM_SPEC["ADPC"], {}, 0)
    df = pd.concat(parts, ignore_index=True)
    df["BLQFL"] = df["BLQFL"].astype("string") if "BLQFL" in df else pd.Series(pd.NA, index=df.index, dtype="string")
    cols = [v.name for v in ADAM_SPEC["ADPC"].variables if v.name in df]
    return df[cols].sort_values(["USUBJID", "PARAMCD", "ATPTN"], kind="stable").reset_index(drop=True)


# -- the API ----------------------------------------------------------------------------------


def build_adam(out_dir: Path, study_id: str | None = None, *,
               pk_schedule_days: Sequence[float] = DEFAULT_PK_SCHEDULE_DAYS,
               lloq_copies_per_ug: float | None = DEFAULT_LLOQ_COPIES_PER_UG,
               lloq_cells_per_ul: float | None = None) -> dict[str, pd.DataFrame]:
    """ADaM-style datasets of a virtual trial's output directory.

    Parameters
    ----------
    out_dir : Path
        Directory with ``patients.parquet`` (required), ``events.parquet``, ``trajectories.nc``
        and ``trial.json`` or ``summary.json`` (optional), see ``docs/trial-outputs.md``.
    study_id : str, optional
        STUDYID; default: the trial name (``trial.json``, else ``summary.json``, else the
        directory name), upper case with runs of other characters replaced by '-'.
    pk_schedule_days : sequence of float
        Nominal days of the CAR kinetics samples in ADPC; days after the end of follow-up
        are dropped.
    lloq_copies_per_ug, lloq_cells_per_ul : float or None
        Lower limits of quantification setting BLQFL (an assumption about the assay);
        None leaves BLQFL missing.

    Returns
    -------
    dict of str to DataFrame
        ``ADSL``, ``ADTTE``, ``ADAE`` and, when ``trajectories.nc`` exists, ``ADPC``; columns
        in :data:`ADAM_SPEC` order, character variables as pandas ``string``.

    Raises
    ------
    CarcellError
        The directory or ``patients.parquet`` is missing, or a file cannot be read.
    """
    out_dir = Path(out_dir)
    patients, events, meta = _read_inputs(out_dir)
    name = meta.get("name") or meta.get("scenario") or out_dir.resolve().name
    studyid = study_slug(str(study_id if study_id is not None else name))
    adsl = _adsl(patients, studyid, default_arm=str(meta.get("scenario") or meta.get("name") or "CAR-T"))
    traj = out_dir / "trajectories.nc"
    traj = traj if traj.is_file() else None
    datasets = {"ADSL": adsl, "ADTTE": _adtte(patients, adsl), "ADAE": _adae(patients, events, adsl, traj)}
    if traj is not None:
        follow = meta.get("follow_up_days")
        datasets["ADPC"] = _adpc(traj, patients, adsl, float(follow) if follow is not None else None,
                                 pk_schedule_days, lloq_copies_per_ug, lloq_cells_per_ul)
    return datasets


_NAME = re.compile(r"^[A-Z][A-Z0-9]{0,7}$")


def _is_char(s: pd.Series) -> bool:
    if isinstance(s.dtype, pd.StringDtype):
        return True
    return s.dtype == object and all(isinstance(x, str) for x in s.dropna())


def validate_adam(datasets: Mapping[str, pd.DataFrame], *,
                  spec: Mapping[str, DatasetSpec] = ADAM_SPEC) -> list[str]:
    """Problems of ADaM datasets against their specification; an empty list means valid.

    Checks: ADSL given; every dataset and variable in the specification; names upper case,
    <= 8 characters; labels <= 40; required variables present; numeric and character types;
    keys unique and never missing; flags ``*FL`` in Y/N; ADTTE ``CNSR`` in {0, 1} and
    ``AVAL >= 0``; ADAE grades 1-5 with ``AETOXGR`` = ``ATOXGRN``; every USUBJID in ADSL.

    Examples
    --------
    >>> adsl = pd.DataFrame({"USUBJID": ["S-1", "S-1"]})
    >>> [p for p in validate_adam({"ADSL": adsl}) if "USUBJID" in p and "unique" in p]
    ['ADSL: key USUBJID is not unique: S-1']
    """
    problems: list[str] = []
    if "ADSL" not in datasets:
        problems.append("ADSL: missing; every other dataset refers to it")
    for name, df in datasets.items():
        ds = spec.get(name)
        if ds is None:
            problems.append(f"{name}: not a dataset of the specification ({', '.join(spec)})")
            continue
        if not _NAME.match(name):
            problems.append(f"{name}: dataset name must be upper case, at most 8 characters")
        if len(ds.label) > 40:
            problems.append(f"{name}: dataset label longer than 40 characters: {ds.label!r}")
        for v in ds.variables:
            if len(v.label) > 40:
                problems.append(f"{name}.{v.name}: label longer than 40 characters: {v.label!r}")
            if v.required and v.name not in df.columns:
                problems.append(f"{name}.{v.name}: required variable missing")
        for col in df.columns:
            v = ds.variable(str(col))
            if not _NAME.match(str(col)):
                problems.append(f"{name}.{col}: variable name must be upper case, at most 8 characters")
            if v is None:
                problems.append(f"{name}.{col}: not in the specification (no label, no type)")
                continue
            s = df[col]
            if v.type == "num" and not (pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)):
                problems.append(f"{name}.{col}: must be numeric, is {s.dtype}")
            elif v.type == "char" and not _is_char(s):
                problems.append(f"{name}.{col}: must be character, is {s.dtype}")
            elif col.endswith("FL") and v.type == "char":
                bad = set(s.dropna()) - {"Y", "N"}
                if bad:
                    problems.append(f"{name}.{col}: flags must be 'Y', 'N' or missing, found {sorted(map(str, bad))}")
        keys = [k for k in ds.keys if k in df.columns]
        if len(keys) == len(ds.keys) and len(df):
            if df[keys].isna().any().any():
                problems.append(f"{name}: key {'+'.join(keys)} has missing values")
            dup = df[df.duplicated(keys, keep=False)]
            if len(dup):
                first = ", ".join(str(x) for x in dup[keys].iloc[0])
                problems.append(f"{name}: key {'+'.join(keys)} is not unique: {first}")
        problems += _value_checks(name, df)
    adsl = datasets.get("ADSL")
    if adsl is not None and "USUBJID" in adsl:
        known = set(adsl["USUBJID"].dropna())
        for name, df in datasets.items():
            if name != "ADSL" and "USUBJID" in df:
                stray = sorted(set(df["USUBJID"].dropna()) - known)
                if stray:
                    problems.append(f"{name}: {len(stray)} USUBJID(s) not in ADSL, e.g. {stray[0]}")
    return problems


def _value_checks(name: str, df: pd.DataFrame) -> list[str]:
    problems = []

    def numeric(col):
        return pd.to_numeric(df[col], errors="coerce") if col in df else None

    if name == "ADTTE":
        cnsr, aval = numeric("CNSR"), numeric("AVAL")
        if cnsr is not None and not cnsr.isin([0, 1]).all():
            problems.append(f"ADTTE.CNSR: must be 0 (event) or 1 (censored), found "
                            f"{sorted(set(df['CNSR'][~cnsr.isin([0, 1])].astype(str)))}")
        if aval is not None and not (aval >= 0).all():
            problems.append(f"ADTTE.AVAL: must be a time >= 0, {int((~(aval >= 0)).sum())} record(s) are not")
    if name == "ADAE":
        grade = numeric("ATOXGRN")
        if grade is not None and not grade.isin([1, 2, 3, 4, 5]).all():
            problems.append(f"ADAE.ATOXGRN: grades must be 1-5, found "
                            f"{sorted(set(df['ATOXGRN'][~grade.isin([1, 2, 3, 4, 5])].astype(str)))}")
        if grade is not None and "AETOXGR" in df:
            text = pd.to_numeric(df["AETOXGR"], errors="coerce")
            if not (text == grade).all():
                problems.append("ADAE.AETOXGR: must equal ATOXGRN written as text")
    if name == "ADPC":
        aval = numeric("AVAL")
        if aval is not None and aval.isna().any():
            problems.append("ADPC.AVAL: missing values; a sample not taken has no record")
    return problems


def _variables(name: str, df: pd.DataFrame) -> list[dict]:
    ds = ADAM_SPEC.get(name)
    out = []
    for col in df.columns:
        v = ds.variable(str(col)) if ds else None
        kind = v.type if v else ("num" if pd.api.types.is_numeric_dtype(df[col]) else "char")
        out.append({"name": str(col), "label": v.label if v else "", "type": kind,
                    "required": bool(v.required) if v else False, "derivation": v.derivation if v else ""})
    return out


def _write_parquet(name: str, df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    variables = _variables(name, df)
    fields = [f.with_metadata({b"label": v["label"].encode(), b"type": v["type"].encode()})
              for f, v in zip(table.schema, variables)]
    ds = ADAM_SPEC.get(name)
    meta = dict(table.schema.metadata or {})
    meta[b"adam"] = json.dumps({"dataset": name, "label": ds.label if ds else "",
                                "keys": list(ds.keys) if ds else [], "variables": variables}).encode()
    pq.write_table(pa.Table.from_arrays(table.columns, schema=pa.schema(fields, metadata=meta)), path)


def write_adam(out_dir: Path, formats: Sequence[str] = ("csv", "parquet"), *,
               datasets: Mapping[str, pd.DataFrame] | None = None,
               study_id: str | None = None) -> list[Path]:
    """Write ``out_dir/adam/<DATASET>.csv|.parquet`` and ``out_dir/adam/define.json``.

    Parameters
    ----------
    out_dir : Path
        A trial output directory (see :func:`build_adam`).
    formats : sequence of {"csv", "parquet"}
        File formats to write. CSV: missing values are empty fields; parquet: nulls, with
        dataset and variable labels in the schema metadata (key ``adam``, field key ``label``).
    datasets : mapping, optional
        Datasets already built by :func:`build_adam`; built here when not given.
    study_id : str, optional
        Passed to :func:`build_adam` when ``datasets`` is not given.

    Returns
    -------
    list of Path
        The files written, ``define.json`` last.
    """
    formats = tuple(dict.fromkeys(formats))
    unknown = set(formats) - {"csv", "parquet"}
    if unknown or not formats:
        raise CarcellError(f"formats {list(formats)}: use 'csv' and/or 'parquet'")
    out_dir = Path(out_dir)
    if datasets is None:
        datasets = build_adam(out_dir, study_id)
    target = out_dir / "adam"
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    define = {
        "standard": "CDISC ADaM (carcell export; define-XML substitute)",
        "studyid": next((str(df["STUDYID"].iloc[0]) for df in datasets.values()
                         if "STUDYID" in df and len(df)), None),
        "source": str(out_dir),
        "missing_values": "empty field in CSV, null in parquet",
        "study_days": "--DY variables: study day, 1 = day of infusion (randomisation), no day 0",
        "datasets": [],
    }
    for name, df in datasets.items():
        files = []
        if "csv" in formats:
            files.append(target / f"{name}.csv")
            df.to_csv(files[-1], index=False, na_rep="")
        if "parquet" in formats:
            files.append(target / f"{name}.parquet")
            _write_parquet(name, df, files[-1])
        written += files
        ds = ADAM_SPEC.get(name)
        define["datasets"].append({
            "name": name, "label": ds.label if ds else "", "structure": ds.structure if ds else "",
            "keys": list(ds.keys) if ds else [], "records": int(len(df)),
            "subjects": int(df["USUBJID"].nunique()) if "USUBJID" in df else None,
            "files": [f.name for f in files], "variables": _variables(name, df),
        })
    (target / "define.json").write_text(json.dumps(define, indent=2) + "\n")
    return written + [target / "define.json"]


def spec_markdown() -> str:
    """The variable tables of :data:`ADAM_SPEC` as Markdown (the body of docs/adam.md's reference)."""
    lines = []
    for ds in ADAM_SPEC.values():
        lines += [f"### {ds.name}: {ds.label}", "",
                  f"{ds.structure[0].upper()}{ds.structure[1:]}; key {' + '.join(ds.keys)}.", "",
                  "Variable | Label | Type | Required | Derivation",
                  "---------|-------|------|----------|-----------"]
        lines += [f"{v.name} | {v.label} | {v.type} | {'yes' if v.required else 'no'} | {v.derivation}"
                  for v in ds.variables]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
