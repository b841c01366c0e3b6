"""Per-patient trajectories in clinical units, and the per-patient metrics table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from carcell.clinical.blood import copies_per_ug, per_ul
from carcell.clinical.response import assess, baseline_m_protein
from carcell.design.compile import Design
from carcell.model.states import INDEX, NORMAL_STATES, STATES

#: quantity -> (unit, description) of trajectories.nc
QUANTITIES: dict[str, tuple[str, str]] = {
    "car_cells_per_ul": ("cells/uL", "CAR T cells in peripheral blood"),
    "car_copies_per_ug": ("copies/ug", "CAR transgene copies per ug genomic DNA (qPCR)"),
    "car_total_cells": ("cells", "whole-body CAR cells (circulating and, in a solid tumour, inside it)"),
    "tumour_total_cells": ("cells", "whole-body tumour cells (every clone)"),
    "anc_per_ul": ("cells/uL", "absolute neutrophil count (marrow model)"),
    "platelets_e9_per_l": ("1e9/L", "platelet count (marrow model)"),
    "igg_mg_dl": ("mg/dL", "serum IgG before any IVIG dose that day"),
    **{name: (unit, desc) for name, unit, _, desc in STATES},
}


def clinical_trajectories(Y: np.ndarray, design: Design, blood_volume_ul: np.ndarray) -> dict[str, np.ndarray]:
    """Trajectories (n, T) in clinical units from the solver's states (n, T, S)."""
    conv = design.conversion
    with np.errstate(over="ignore", invalid="ignore"):
        cells = {name: np.exp(Y[:, :, INDEX[name]]) for name, _, is_log, _ in STATES if is_log}
    car = cells["car_memory"] + cells["car_effector"] + cells["car_exhausted"]   # circulating
    car_ul = per_ul(car, blood_volume_ul, conv["lymphocyte_blood_fraction"])
    host_ul = per_ul(cells["host_lymphocytes"], blood_volume_ul, conv["lymphocyte_blood_fraction"])
    out = {
        "car_cells_per_ul": car_ul,
        "car_copies_per_ug": copies_per_ug(car_ul, host_ul + conv["non_lymphoid_per_ul"],
                                           conv["vcn"], conv["cells_per_ug"]),
        "car_total_cells": car + (cells["car_site"] + cells["car_lung_liver"] if design.site is not None else 0.0),
        "tumour_total_cells": cells["tumour_pos"] + cells["tumour_neg"] + (
            cells["tumour_low"] if design.site is not None else 0.0),
    }
    for name, _, is_log, _ in STATES:
        out[name] = cells[name] if is_log else Y[:, :, INDEX[name]]
    for state, tissue in zip(NORMAL_STATES, design.tissues):
        out[f"{tissue.name}_cells"] = cells[state]
    for state in NORMAL_STATES:  # the generic compartments are reported under tissue names
        del out[state]
    return out


def quantity_info(name: str, design: Design) -> tuple[str, str]:
    """(unit, description) of a trajectory quantity."""
    if name in QUANTITIES:
        return QUANTITIES[name]
    for t in design.tissues:
        if name == f"{t.name}_cells":
            return "cells", f"normal tissue {t.name} ({', '.join(t.antigens)}+); risk: {t.consequence}"
    raise KeyError(name)


def _peak(times: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak value and time; the time is refined by a parabola through log values around the grid maximum."""
    i = np.nanargmax(np.where(np.isnan(x), -np.inf, x), axis=1)
    rows = np.arange(x.shape[0])
    cmax = x[rows, i]
    tmax = times[i].astype(float)
    inner = (i > 0) & (i < times.size - 1)
    if inner.any():
        r = rows[inner]
        with np.errstate(divide="ignore", invalid="ignore"):
            lm, l0, lp = (np.log(x[r, i[inner] + k]) for k in (-1, 0, 1))
            denom = lm - 2 * l0 + lp
            shift = np.where(denom < 0, 0.5 * (lm - lp) / denom, 0.0)
        dt = times[i[inner]] - times[i[inner] - 1]
        tmax[inner] = times[i[inner]] + np.clip(np.nan_to_num(shift), -0.5, 0.5) * dt
    return cmax, tmax


def patient_metrics(times: np.ndarray, traj: dict[str, np.ndarray], design: Design,
                    covariates: pd.DataFrame, status_names: np.ndarray) -> tuple[pd.DataFrame, object]:
    sc = design.scenario
    cmax_ul, _ = _peak(times, traj["car_cells_per_ul"])
    cmax_cp, tmax = _peak(times, traj["car_copies_per_ug"])
    in28 = times <= 28.0 + 1e-9
    # Row reductions run on C-contiguous copies: NumPy sums a contiguous row pairwise but a
    # strided one sequentially, so without this a patient's AUC would depend on chunk layout.
    auc28 = np.trapezoid(np.ascontiguousarray(traj["car_copies_per_ug"][:, in28]), times[in28], axis=1)
    m_protein = (baseline_m_protein(design.response, sc.population.seed, covariates["patient_id"].to_numpy())
                 if design.response_criteria == "imwg" else None)
    resp = assess(design.response_criteria, times, traj["tumour_total_cells"], traj["tumour_pos"],
                  traj["tumour_neg"], design.response, sc.trial.follow_up_days,
                  tumour_low=traj["tumour_low"] if design.site is not None else None, m_protein=m_protein)
    aplasia_cut = design.knowledge.value("physiology.aplasia.fraction_of_baseline")
    dt = np.diff(times, prepend=times[0])
    tissue_cols = {}
    for t in design.tissues:
        x = traj[f"{t.name}_cells"]
        fraction = x / x[:, :1]
        tissue_cols[f"{t.name}_nadir_fraction"] = np.nanmin(fraction, axis=1)
        # days below the aplasia cut-off (for B cells: B-cell aplasia)
        tissue_cols[f"{t.name}_depleted_days"] = np.ascontiguousarray((fraction < aplasia_cut) * dt).sum(axis=1)
    df = covariates.drop(columns=["blood_volume_ul"]).copy()
    df["solver_status"] = status_names
    df["cmax_cells_per_ul"] = cmax_ul
    df["cmax_copies_per_ug"] = cmax_cp
    df["tmax_days"] = tmax
    df["auc_0_28_copies_day_per_ug"] = auc28
    df["best_response"] = resp.best_response.astype(str)
    df["response_day"] = resp.response_day
    df["progression_day"] = resp.progression_day
    df["relapse_antigen"] = resp.relapse_antigen.astype(str)
    df["best_change_in_burden"] = resp.best_change
    if design.response_criteria in ("marrow_blasts", "imwg"):
        df["mrd_negative"] = resp.mrd_negative
    if design.response_criteria == "imwg":
        df["stringent_cr"] = resp.stringent_cr
        if m_protein is not None:
            df["baseline_m_protein_g_dl"] = m_protein
    df["il6_peak_pg_per_ml"] = np.nanmax(traj["il6"], axis=1)
    df["il15_peak_pg_per_ml"] = np.nanmax(traj["il15"], axis=1)
    df["ifng_peak_pg_per_ml"] = np.nanmax(traj["ifng"], axis=1)
    for col, v in tissue_cols.items():
        df[col] = v
    if "b_cells_depleted_days" in tissue_cols:
        df["b_cell_aplasia_days"] = tissue_cols["b_cells_depleted_days"]
    failed = status_names != "ok"
    metric_cols = [c for c in df.columns if c not in covariates.columns and c != "solver_status"]
    for c in metric_cols:  # a failed patient has no trustworthy metrics
        if df[c].dtype.kind == "f":
            df.loc[failed, c] = np.nan
        else:
            df[c] = df[c].astype(object)
            df.loc[failed, c] = None
    return df, resp
