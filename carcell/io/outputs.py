"""Write a cohort result to its output directory (parquet, netCDF, JSON)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

import carcell
from carcell.cohort.metrics import quantity_info
from carcell.cohort.run import CohortResult
from carcell.design.explain import citations
from carcell.scenario.load import scenario_hash

PATIENT_UNITS = {
    "weight_kg": "kg", "age_years": "years", "baseline_burden_cells": "cells",
    "antigen_density": "molecules/cell", "antigen_negative_fraction": "1", "dose_cells": "cells",
    "cmax_cells_per_ul": "cells/uL", "cmax_copies_per_ug": "copies/ug", "tmax_days": "day",
    "auc_0_28_copies_day_per_ug": "copies*day/ug", "response_day": "day",
    "progression_day": "day", "best_change_in_burden": "1", "il6_peak_pg_per_ml": "pg/mL",
    "ifng_peak_pg_per_ml": "pg/mL", "b_cell_aplasia_days": "day",
    "crs_max_grade": "ASTCT grade", "icans_max_grade": "ASTCT grade", "crs_max_grade_lee2014": "Lee 2014 grade",
    "crs_max_grade_penn": "Penn grade", "crs_max_grade_ctcae5": "CTCAE v5 grade", "tocilizumab_doses": "doses",
    "hematotox_score": "CAR-HEMATOTOX points", "anc_nadir_per_ul": "cells/uL", "icaht_grade": "ICAHT grade",
    "platelet_nadir_e9_per_l": "1e9/L", "igg_nadir": "mg/dL", "ivig_doses": "doses",
    "baseline_anc_per_ul": "cells/uL", "baseline_platelets_e9_per_l": "1e9/L", "baseline_hb_g_dl": "g/dL",
    "baseline_crp_mg_dl": "mg/dL", "baseline_ferritin_ng_ml": "ng/mL", "baseline_ldh_u_l": "U/L",
    "baseline_igg_mg_dl": "mg/dL",
}


def patient_units(columns) -> dict[str, str]:
    """Units of the per-patient table's columns, including per-antigen and per-tissue ones."""
    units = {}
    for c in columns:
        if c in PATIENT_UNITS:
            units[c] = PATIENT_UNITS[c]
        elif c.endswith("_density"):
            units[c] = "molecules/cell"
        elif c.endswith(("_fraction", "_nadir_fraction")):
            units[c] = "1"
        elif c.endswith(("_days", "_day")):
            units[c] = "day"
    return units


def _q(x: pd.Series) -> dict:
    v = x.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return {"median": None, "p5": None, "p95": None}
    p5, med, p95 = np.percentile(v, [5, 50, 95])
    return {"median": float(med), "p5": float(p5), "p95": float(p95)}


def kaplan_meier_median(time: np.ndarray, event: np.ndarray) -> float | None:
    """Median of a Kaplan-Meier curve (None if not reached)."""
    order = np.argsort(time, kind="stable")
    t, e = time[order], event[order]
    at_risk = t.size
    s = 1.0
    for ti in np.unique(t):
        here = t == ti
        d = int(e[here].sum())
        if d:
            s *= 1 - d / at_risk
        if s <= 0.5:
            return float(ti)
        at_risk -= int(here.sum())
    return None


def _share(mask: pd.Series) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _toxicity_summary(ok: pd.DataFrame) -> dict:
    """What a trial's safety table reports: CRS and ICANS (ASTCT), drugs, ICU."""
    return {
        "crs_any": _share(ok["crs_max_grade"] >= 1), "crs_grade3plus": _share(ok["crs_max_grade"] >= 3),
        "icans_any": _share(ok["icans_max_grade"] >= 1), "icans_grade3plus": _share(ok["icans_max_grade"] >= 3),
        "crs_onset_day": _q(ok["crs_onset_day"]), "crs_duration_days": _q(ok["crs_duration_days"]),
        "tocilizumab_use": _share(ok["tocilizumab_doses"] > 0), "steroid_use": _share(ok["steroid_days"] > 0),
        "icu_admission": _share(ok["icu_days"] > 0),
    }


def _haematology_summary(ok: pd.DataFrame) -> dict:
    return {
        "hematotox_high_risk": _share(ok["hematotox_high_risk"].astype(bool)),
        "severe_neutropenia_days": _q(ok["severe_neutropenia_days"]),
        "icaht_grade3plus": _share(ok["icaht_grade"] >= 3),
        "ivig_use": _share(ok["ivig_doses"] > 0),
        "igg_nadir_mg_dl": _q(ok["igg_nadir"]),
    }


def summary(result: CohortResult) -> dict:
    df = result.patients
    ok = df[df["solver_status"] == "ok"]
    n_ok = len(ok)
    counts = ok["best_response"].value_counts().to_dict()
    rates = {k: v / n_ok for k, v in sorted(counts.items())} if n_ok else {}
    follow = float(result.times[-1])
    prog = ok["progression_day"].to_numpy(dtype=float)
    event = ~np.isnan(prog)
    ttp = kaplan_meier_median(np.where(event, prog, follow), event)
    return {
        "scenario": result.scenario.name,
        "disease": result.design.disease,
        "response_criteria": result.design.response_criteria,
        "cohort_size": int(len(df)),
        "solver_failures": int(len(df) - n_ok),
        "follow_up_days": follow,
        "response_rates": rates,
        "objective_response_rate": float(ok["best_response"].isin(["CR", "VGPR", "PR"]).mean()) if n_ok else None,
        "complete_response_rate": float((ok["best_response"] == "CR").mean()) if n_ok else None,
        "cmax_copies_per_ug": _q(ok["cmax_copies_per_ug"]),
        "cmax_cells_per_ul": _q(ok["cmax_cells_per_ul"]),
        "tmax_days": _q(ok["tmax_days"]),
        "auc_0_28_copies_day_per_ug": _q(ok["auc_0_28_copies_day_per_ug"]),
        "il6_peak_pg_per_ml": _q(ok["il6_peak_pg_per_ml"]),
        "toxicity": _toxicity_summary(ok),
        "haematology": _haematology_summary(ok),
        "median_time_to_progression_days": ttp,
        "progression_events": int(event.sum()),
        "antigen_negative_relapses": int((ok["relapse_antigen"] == "negative").sum()),
    }


def write_outputs(result: CohortResult, out: Path, extra_provenance: dict | None = None) -> dict:
    """Write every output file; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    df = result.patients
    table = df.copy()
    for c in table.columns:
        if table[c].dtype == object:
            table[c] = table[c].astype("string")
    table.attrs = {}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pa_table = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(pa_table.schema.metadata or {})
    meta[b"carcell.units"] = json.dumps(patient_units(table.columns)).encode()
    pq.write_table(pa_table.replace_schema_metadata(meta), out / "patients.parquet")

    ds = xr.Dataset(
        {
            q: (("patient", "time"), v, dict(zip(("units", "long_name"), quantity_info(q, result.design))))
            for q, v in result.trajectories.items()
        },
        coords={
            "patient": ("patient", df["patient_id"].to_numpy(), {"long_name": "patient id"}),
            "time": ("time", result.times, {"units": "day", "long_name": "days after infusion"}),
        },
        attrs={"title": f"carcell trajectories: {result.scenario.name}",
               "carcell_version": carcell.__version__},
    )
    ds.to_netcdf(out / "trajectories.nc", engine="netcdf4",
                 encoding={q: {"zlib": True, "complevel": 1} for q in result.trajectories})

    ev = result.events.copy()
    ev["event"] = ev["event"].astype("string")
    ev["detail"] = ev["detail"].astype("string")
    ev.to_parquet(out / "events.parquet", index=False)

    summ = summary(result)
    (out / "summary.json").write_text(json.dumps(summ, indent=2) + "\n")

    sc = result.scenario
    prov = {
        "carcell_version": carcell.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scenario": sc.model_dump(mode="json"),
        "scenario_sha256": scenario_hash(sc),
        "seed": sc.population.seed,
        "design": {
            "construct": result.design.construct.summary(),
            "antigens": [a.name for a in result.design.antigens],
            "normal_tissues_simulated": [t.name for t in result.design.tissues],
            "response_criteria": result.design.response_criteria,
            "typical_parameters": result.design.typical,
            "recognition_half_density": result.design.recognition_half_density,
            "variability": result.design.variability,
            "parameters": result.design.ledger.rows(),
            "warnings": result.design.warnings,
        },
        "sources": result.design.knowledge.sources(),
        "citations": citations(result.design),
        **(extra_provenance or {}),
    }
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    return summ
