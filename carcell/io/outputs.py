"""Write a cohort result to its output directory (parquet, netCDF, JSON)."""

from __future__ import annotations

import dataclasses
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
from carcell.solve.rounds import resolve_backend

PATIENT_UNITS = {
    "weight_kg": "kg", "age_years": "years", "baseline_burden_cells": "cells",
    "antigen_density": "molecules/cell", "antigen_negative_fraction": "1", "dose_cells": "cells",
    "cmax_cells_per_ul": "cells/uL", "cmax_copies_per_ug": "copies/ug", "tmax_days": "day",
    "auc_0_28_copies_day_per_ug": "copies*day/ug", "response_day": "day",
    "progression_day": "day", "best_change_in_burden": "1", "il6_peak_pg_per_ml": "pg/mL",
    "ifng_peak_pg_per_ml": "pg/mL", "b_cell_aplasia_days": "day",
    "crs_max_grade": "ASTCT grade", "icans_max_grade": "ASTCT grade", "crs_max_grade_lee2014": "Lee 2014 grade",
    "crs_max_grade_penn": "Penn grade", "crs_max_grade_ctcae5": "CTCAE v5 grade", "tocilizumab_doses": "doses", "tocilizumab_first_day": "day",
    "tocilizumab_response": "1", "temperature_max_c": "degC",
    "hematotox_score": "CAR-HEMATOTOX points", "anc_nadir_per_ul": "cells/uL", "icaht_grade": "ICAHT grade",
    "platelet_nadir_e9_per_l": "1e9/L", "igg_nadir": "mg/dL", "ivig_doses": "doses",
    "baseline_anc_per_ul": "cells/uL", "baseline_platelets_e9_per_l": "1e9/L", "baseline_hb_g_dl": "g/dL",
    "baseline_crp_mg_dl": "mg/dL", "baseline_ferritin_ng_ml": "ng/mL", "baseline_ldh_u_l": "U/L",
    "baseline_igg_mg_dl": "mg/dL", "baseline_m_protein_g_dl": "g/dL",
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
        # of the patients given tocilizumab during CRS: resolved as the FDA's analysis defined it
        # (None for tables written before the column existed, e.g. chunks of a resumed run)
        "tocilizumab_response": (_share(ok["tocilizumab_response"].dropna() == 1)
                                 if "tocilizumab_response" in ok else None),
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
    from carcell.trial.stats import rows_where   # lifelines is imported only where it is needed

    ok = rows_where(df, df["solver_status"] == "ok")
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


def write_table(df: pd.DataFrame, path: Path) -> None:
    """A table to Parquet, text columns as strings (object columns mix None and str)."""
    table = df.copy()
    for c in table.columns:
        if table[c].dtype == object:
            table[c] = table[c].astype("string")
    table.to_parquet(path, index=False)


def _write_patients(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = df.copy()
    for c in table.columns:
        if table[c].dtype == object:
            table[c] = table[c].astype("string")
    table.attrs = {}
    pa_table = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(pa_table.schema.metadata or {})
    meta[b"carcell.units"] = json.dumps(patient_units(table.columns)).encode()
    pq.write_table(pa_table.replace_schema_metadata(meta), path)


def _write_trajectories(trajectories: dict, ids: np.ndarray, times: np.ndarray, design, title: str,
                        path: Path, arms: np.ndarray | None = None) -> None:
    ds = xr.Dataset(
        {q: (("patient", "time"), v, dict(zip(("units", "long_name"), quantity_info(q, design))))
         for q, v in trajectories.items()},
        coords={
            "patient": ("patient", ids, {"long_name": "patient id"}),
            "time": ("time", times, {"units": "day", "long_name": "days after infusion"}),
        },
        attrs={"title": title, "carcell_version": carcell.__version__},
    )
    if arms is not None:
        ds["arm"] = ("patient", arms.astype(str), {"long_name": "trial arm"})
    ds.to_netcdf(path, engine="netcdf4", encoding={q: {"zlib": True, "complevel": 1} for q in trajectories})


def _write_events(events: pd.DataFrame, path: Path) -> None:
    ev = events.copy()
    for c in ("event", "detail", "arm"):
        if c in ev:
            ev[c] = ev[c].astype("string")
    ev.to_parquet(path, index=False)


def _design_provenance(design) -> dict:
    return {
        "construct": design.construct.summary(),
        "antigens": [a.name for a in design.antigens],
        "normal_tissues_simulated": [t.name for t in design.tissues],
        "response_criteria": design.response_criteria,
        "typical_parameters": design.typical,
        "recognition_half_density": design.recognition_half_density,
        "variability": design.variability,
        "parameters": design.ledger.rows(),
        "warnings": design.warnings,
    }


def _provenance(sc, design, sources: dict, extra: dict | None) -> dict:
    return {
        "carcell_version": carcell.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "backend": resolve_backend(sc.trial.solver.backend),   # what integrated ("auto" resolved)
        "scenario": sc.model_dump(mode="json"),
        "scenario_sha256": scenario_hash(sc),
        "seed": sc.population.seed,
        "design": _design_provenance(design),
        "sources": sources,
        "citations": citations(design),
        **(extra or {}),
    }


def write_outputs(result: CohortResult, out: Path, extra_provenance: dict | None = None, *,
                  tables: bool = True) -> dict:
    """Write every output file of a cohort; returns the summary. ``tables=False`` writes only
    summary.json and provenance.json (a large run streams its tables itself, carcell.scale)."""
    out.mkdir(parents=True, exist_ok=True)
    df = result.patients
    if tables:
        _write_patients(df, out / "patients.parquet")
        _write_trajectories(result.trajectories, df["patient_id"].to_numpy(), result.times, result.design,
                            f"carcell trajectories: {result.scenario.name}", out / "trajectories.nc")
        _write_events(result.events, out / "events.parquet")
    summ = summary(result)
    (out / "summary.json").write_text(json.dumps(summ, indent=2) + "\n")
    prov = _provenance(result.scenario, result.design, result.design.knowledge.sources(), extra_provenance)
    (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    return summ


def write_trial_outputs(result, out: Path, extra_provenance: dict | None = None, *, tables: bool = True) -> dict:
    """Write a virtual trial (carcell.trial.run.TrialResult): the cohort files of a single-arm
    trial (summary.json included) or the pooled files of a multi-arm one, plus trial.json with
    endpoints per arm and comparisons (docs/trial-outputs.md). Returns trial.json's content.
    ``tables=False`` leaves out patients.parquet, events.parquet and trajectories.nc (a large
    run streams them from its chunks, carcell.scale)."""
    from carcell.trial.stats import rows_where, trial_summary

    out.mkdir(parents=True, exist_ok=True)
    sc = result.scenario
    car = [a for a in result.arms if a.kind == "car" and a.name in result.cohorts]
    single = len(result.arms) == 1 and car
    if single:   # the cohort files, with the infused patients' endpoints (deaths included)
        cohort = result.cohorts[car[0].name]
        infused = rows_where(result.patients, result.patients["infused"].astype(bool), renumber=True)
        assert np.array_equal(infused["patient_id"].to_numpy(), cohort.patients["patient_id"].to_numpy())
        write_outputs(dataclasses.replace(cohort, patients=infused), out, extra_provenance, tables=tables)
    else:
        if result.trajectories and tables:
            arm_of = dict(zip(result.patients["patient_id"], result.patients["arm"]))
            design = result.cohorts[car[0].name].design
            _write_trajectories(result.trajectories, result.trajectory_ids, result.times, design,
                                f"carcell trajectories: {sc.name}", out / "trajectories.nc",
                                np.array([arm_of[i] for i in result.trajectory_ids], dtype=object))
        first = result.cohorts[car[0].name].design if car else None
        prov = _provenance(sc, first, first.knowledge.sources(), extra_provenance) if first else {
            "carcell_version": carcell.__version__, "scenario": sc.model_dump(mode="json"),
            "scenario_sha256": scenario_hash(sc), "seed": sc.population.seed, **(extra_provenance or {})}
        prov["arms"] = {a.name: ({"kind": "car", "design": _design_provenance(result.cohorts[a.name].design)}
                                 if a.name in result.cohorts else {"kind": a.kind, "standard_of_care": a.standard_of_care})
                        for a in result.arms}
        (out / "provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    if tables:
        _write_patients(result.patients, out / "patients.parquet")
        _write_events(result.events, out / "events.parquet")
    from carcell.knowledge import load_knowledge

    criteria = load_knowledge(False).text(f"indications.{sc.indication.disease}.response_criteria")
    trial = trial_summary(result.patients, name=sc.name, disease=sc.indication.disease, criteria=criteria,
                          follow_up_days=sc.trial.follow_up_days, seed=sc.population.seed,
                          reference_arm=result.reference_arm,
                          landmarks_days=tuple(int(d) for d in sc.trial.landmarks_days),
                          arm_order=[a.name for a in result.arms])
    trial.update(_write_logistics(result, out))
    (out / "trial.json").write_text(json.dumps(trial, indent=2, allow_nan=False) + "\n")
    return trial


def _write_logistics(result, out: Path) -> dict:
    """The chain's, cost and access files of a trial with a manufacturing section, and their
    summaries for trial.json (docs/logistics.md); nothing without one."""
    if result.chain is None:
        return {}
    from carcell.logistics.summary import chain_summary, trial_access, trial_costs
    from carcell.trial.stats import json_safe

    chain = result.chain.result
    write_table(chain.patients, out / "logistics.parquet")
    write_table(chain.usage, out / "usage.parquet")
    costs, cost = trial_costs(result)
    write_table(costs, out / "costs.parquet")
    extra = {"logistics": chain_summary(chain.patients, chain.usage), "cost": cost}
    if result.population is not None:
        pop, equity = trial_access(result, costs)
        write_table(pop, out / "access.parquet")
        extra["access"] = equity
    return json_safe(extra)
