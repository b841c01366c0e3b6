"""In-vitro cytotoxicity assays with the patient model (docs/preclinical.md).

A killing assay puts a number of CAR cells (E:T ratio x target cells) with a tumour line in a
well and follows how many targets are left, hour by hour, as an xCELLigence or Incucyte
read-out does. carcell simulates each well as one "patient" of the same model, integrated by
the same solver; only what a well changes is overridden:

* no host lymphocytes, no myeloid cells (so no IL-6), no normal tissue carrying the antigen;
* IL-15 is held at the medium's level (IL-2 counted as IL-15); IFN-gamma accumulates in the
  well's volume and decays slowly;
* the whole-body half-stimulation and TK50 (cell counts spread over the systemic volume) are
  scaled to the well's volume, so the cells meet at the well's own densities;
* the target line grows at its culture doubling time up to the well's capacity;
* dasatinib is present at a constant concentration (it is not eliminated in a well) until a
  washout, and a product pretreatment (product.pretreatment) rests cells before the assay.

Every E:T ratio runs next to a well without effectors (the same targets, the same drug), and
% specific lysis is 1 - targets / targets without effectors, the normalised read-out of a
real-time assay. Serial restimulation adds the same number of fresh targets at fixed hours.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carcell.design import compile_chunk, resolve_design
from carcell.design.compile import Design, initial_car_states
from carcell.errors import ScenarioError
from carcell.knowledge import load_knowledge
from carcell.model.states import CAR_STATES, INDEX, LOG_EXTINCT, NORMAL_SLOTS, PARAM_INDEX, Params
from carcell.preclinical.common import (
    human_plasma_ml, in_vitro_growth_rate, scale_column, set_column, systemic_ml,
)
from carcell.scenario.schema import Assay, LogNormal, Scenario, line_for
from carcell.solve.dopri5 import STATUS_NAMES
from carcell.solve.rounds import simulate_batch

ASSAY = "preclinical.assay"
_CAR = CAR_STATES
_TUMOUR = ("tumour_pos", "tumour_low", "tumour_neg")
_TUMOUR_FLAGS = ("alive_tumour_pos", "alive_tumour_low", "alive_tumour_neg")


@dataclass
class AssayResult:
    """One assay: its wells, the time course of every well and the per-round killing."""

    scenario: Scenario
    assay: Assay
    design: Design
    wells: pd.DataFrame        # one row per well: well, effector_to_target, dasatinib_nm, effector_cells
    timecourse: pd.DataFrame   # one row per well and read-out hour
    rounds: pd.DataFrame       # one row per well (with effectors) and target round
    summary: dict


def assay_of(scenario: Scenario) -> Assay:
    """The scenario's assay section, or the defaults with the line that stands for its indication."""
    if scenario.assay is not None:
        return scenario.assay
    line = line_for(scenario.indication.disease)
    if line is None:
        raise ScenarioError(f"assay.target_line: no tumour line stands for {scenario.indication.disease}; "
                            "add an assay section with target_line (knowledge/data/preclinical/lines.yaml)")
    return Assay(target_line=line)


def _cell_line_scenario(scenario: Scenario) -> Scenario:
    """The scenario with a cell line for a tumour: every patient-to-patient spread switched off,
    every target antigen present on every cell at the indication's median density."""
    design = resolve_design(scenario, load_knowledge())
    sc = scenario.model_copy(deep=True)
    sc.population.variability = {name: 0.0 for name in design.variability}
    ind = sc.indication
    ind.antigen_density = LogNormal(median=ind.antigen_density.median, log_sd=0.0)
    ind.antigen_negative_fraction = 0.0
    for a in design.antigens[1:]:
        over = dict(ind.antigens)
        old = over.get(a.name)
        median = old.density.median if old is not None else None
        over[a.name] = {"density": {"median": median, "log_sd": 0.0}, "negative_fraction": 0.0,
                        "patients_positive": 1.0}
        ind.antigens = over
    return sc


def _well_parameters(design: Design, a: Assay, row: np.ndarray, n: int) -> np.ndarray:
    """The one compiled 'patient' row, tiled to n wells, with what a well changes."""
    k = design.knowledge
    v = np.repeat(row[None, :], n, axis=0)
    well_ml = a.well_volume_ul / 1000.0
    # cells meet at the well's densities: whole-body counts spread over the systemic volume
    # become counts in the well's volume
    for name in ("antigen_half_stimulation", "effector_half_kill", "damp_half_activation"):
        scale_column(v, name, well_ml / systemic_ml(k))
    # IFN-gamma: the amount secreted per cell (plasma rate x plasma volume) into the well's volume
    scale_column(v, "ifng_secretion", human_plasma_ml(k) / well_ml)
    set_column(v, "ifng_clearance", float(k.value(f"{ASSAY}.ifng_decay")))
    # nothing of the host: no lymphocytes (one cell), no myeloid cells, no IL-15 turnover
    for name, value in (("host_baseline", 1.0), ("host_turnover", 0.0), ("rejection_rate", 0.0),
                        ("macrophage_on", 0.0), ("il6_baseline", 0.0), ("il15_elimination", 0.0),
                        ("dasatinib_elimination", 0.0)):
        set_column(v, name, value)
    # the target line in culture; cells mix in the well (no tumour site)
    set_column(v, "tumour_growth_rate", in_vitro_growth_rate(k, a.target_line))
    set_column(v, "tumour_capacity", float(k.value(f"{ASSAY}.well.max_density")) * well_ml)
    for name in ("solid", "traffic_per_tumour_cell", "site_egress", "site_volume_per_tumour_cell", "first_pass_return",
                 "tme_kill", "tme_proliferation", "tme_exhaustion"):
        set_column(v, name, 0.0)
    # no normal tissue in a well: each compartment holds one cell nobody recognises
    for j in range(1, NORMAL_SLOTS + 1):
        for name, value in ((f"recognition_normal_{j}", 0.0), (f"activation_normal_{j}", 0.0),
                            (f"neurovascular_normal_{j}", 0.0), (f"normal_baseline_{j}", 1.0),
                            (f"normal_turnover_{j}", 1.0)):
            set_column(v, name, value)
    return v


def medium_il15(design: Design, a: Assay) -> float:
    """IL-15 the cells see in the medium (pg/mL): IL-15 plus IL-2 counted as IL-15 (assay.yaml)."""
    k = design.knowledge
    il15 = a.medium_il15_pg_ml if a.medium_il15_pg_ml is not None else float(k.value(f"{ASSAY}.medium.il15"))
    il2 = a.medium_il2_iu_ml * float(k.value(f"{ASSAY}.medium.il2_pg_per_iu")) * float(
        k.value(f"{ASSAY}.medium.il2_il15_equivalence")) if a.medium_il2_iu_ml > 0 else 0.0
    return il15 + il2


def _wells(a: Assay) -> pd.DataFrame:
    """Every (dasatinib, E:T) pair, each E:T list with an effector-free well for normalisation."""
    ratios = sorted(set([0.0, *a.effector_to_target]))
    rows = [(d, r) for d in a.dasatinib_nm for r in ratios]
    df = pd.DataFrame(rows, columns=["dasatinib_nm", "effector_to_target"])
    df.insert(0, "well", np.arange(len(df)))
    df["effector_cells"] = df["effector_to_target"] * a.target_cells
    return df


def _hours(a: Assay) -> tuple[np.ndarray, list[float], list[float]]:
    """Read-out hours, restimulation hours and segment boundaries."""
    restim = [a.restimulate_every_hours * (i + 1) for i in range(a.restimulations)]
    washout = [a.dasatinib_washout_hours] if a.dasatinib_washout_hours is not None else []
    grid = np.arange(0.0, a.hours + 1e-9, a.readout_every_hours)
    grid = np.unique(np.round(np.concatenate([grid, [a.hours], restim, washout]), 9))
    bounds = sorted(set([0.0, a.hours, *restim, *washout]))
    return grid, restim, bounds


def _starting_states(design: Design, a: Assay, one, p: Params,
                     wells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each well at hour 0: targets split into clones as the compiled tumour was (and their share,
    for restimulation), effectors by the product's phenotype mix, medium IL-15, the drug."""
    n = len(wells)
    values = p.values
    # the product is all put in the well: no tumour site, no locoregional share
    well_design = dataclasses.replace(design, site=None,
                                      infusion=dataclasses.replace(design.infusion, site_fraction=0.0))
    has_car = wells["effector_cells"].to_numpy() > 0
    y = np.repeat(one.y0, n, axis=0)
    t0 = np.array([np.exp(one.y0[0, INDEX[s]]) if one.params.values[0, PARAM_INDEX[f]] > 0 else 0.0
                   for s, f in zip(_TUMOUR, _TUMOUR_FLAGS)])
    shares = t0 / t0.sum()
    for s, f, share in zip(_TUMOUR, _TUMOUR_FLAGS, shares):
        y[:, INDEX[s]] = np.log(a.target_cells * share) if share > 0 else LOG_EXTINCT
        set_column(values, f, float(share > 0))
    cells = np.maximum(wells["effector_cells"].to_numpy(), 1.0)
    car = initial_car_states(well_design, cells, p, np.full(n, a.target_cells))
    for j, s in enumerate(_CAR):
        y[:, INDEX[s]] = np.where(has_car, car[:, j], LOG_EXTINCT)
    y[:, INDEX["car_site"]] = y[:, INDEX["car_lung_liver"]] = LOG_EXTINCT
    for j in range(1, NORMAL_SLOTS + 1):
        y[:, INDEX[f"normal_{j}"]] = 0.0
    y[:, INDEX["host_lymphocytes"]] = 0.0
    y[:, INDEX["il15"]] = medium_il15(design, a)
    for s in ("ifng", "macrophage_activation", "il6", "endothelial_activation", "tocilizumab",
              "corticosteroid", "anakinra"):
        y[:, INDEX[s]] = 0.0
    y[:, INDEX["dasatinib"]] = wells["dasatinib_nm"].to_numpy()
    return y, shares


def run_assay(scenario: Scenario) -> AssayResult:
    """Simulate the scenario's assay: every well over the assay's hours, restimulations included."""
    a = assay_of(scenario)
    k = load_knowledge()
    design = resolve_design(_cell_line_scenario(scenario), k)
    one = compile_chunk(design, 0, 1)
    wells = _wells(a)
    n = len(wells)
    values = _well_parameters(design, a, one.params.values[0], n)
    has_car = wells["effector_cells"].to_numpy() > 0
    set_column(values, "alive_car", has_car.astype(float))
    p = Params(values)   # a view: the starting states also set the tumour clones' flags

    y, shares = _starting_states(design, a, one, p, wells)

    grid, restim, bounds = _hours(a)
    solver = scenario.trial.solver
    states = [y[:, None, :].copy()]
    status = np.zeros(n, dtype=np.int8)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        if start in restim:       # fresh targets, the same number, into every well
            for s, f, share in zip(_TUMOUR, _TUMOUR_FLAGS, shares):
                if share > 0:
                    y[:, INDEX[s]] = np.logaddexp(y[:, INDEX[s]], np.log(a.target_cells * share))
                    set_column(values, f, 1.0)
        if a.dasatinib_washout_hours is not None and np.isclose(start, a.dasatinib_washout_hours):
            y[:, INDEX["dasatinib"]] = 0.0
        hours = grid[(grid >= start - 1e-9) & (grid <= stop + 1e-9)]
        days = (hours - start) / 24.0
        out, seg_status, p_end = simulate_batch(Params(values), y, days, days, rtol=solver.rtol,
                                                atol=solver.atol, max_steps=solver.max_steps)
        values = p_end.values
        status = np.maximum(status, seg_status)
        states.append(out[:, 1:])
        y = out[:, -1].copy()
    Y = np.concatenate(states, axis=1)
    timecourse = _timecourse(Y, grid, wells, restim)
    timecourse["solver_status"] = np.repeat([STATUS_NAMES[s] for s in status], grid.size)
    rounds = _rounds(timecourse, a, restim)
    summary = _summary(scenario, a, design, wells, timecourse, rounds, medium_il15(design, a))
    return AssayResult(scenario, a, design, wells, timecourse, rounds, summary)


def _timecourse(Y: np.ndarray, hours: np.ndarray, wells: pd.DataFrame, restim: list[float]) -> pd.DataFrame:
    """Long table: targets, lysis, IFN-gamma and effector phenotypes per well and hour."""
    with np.errstate(over="ignore"):
        cells = {s: np.exp(Y[:, :, INDEX[s]]) for s in (*_TUMOUR, "car_memory", "car_effector", "car_exhausted")}
    targets = sum(np.where(Y[:, :, INDEX[s]] > LOG_EXTINCT / 2, cells[s], 0.0) for s in _TUMOUR)
    car = {s: np.where(Y[:, :, INDEX[s]] > LOG_EXTINCT / 2, cells[s], 0.0)
           for s in ("car_memory", "car_effector", "car_exhausted")}
    control = {d: targets[i] for i, d in zip(wells.index[wells["effector_to_target"] == 0],
                                              wells.loc[wells["effector_to_target"] == 0, "dasatinib_nm"])}
    ctrl = np.stack([control[d] for d in wells["dasatinib_nm"]])
    round_no = np.searchsorted(np.asarray(restim), hours, side="left")   # a restimulation hour ends its round
    n, T = targets.shape
    return pd.DataFrame({
        "well": np.repeat(wells["well"].to_numpy(), T),
        "effector_to_target": np.repeat(wells["effector_to_target"].to_numpy(), T),
        "dasatinib_nm": np.repeat(wells["dasatinib_nm"].to_numpy(), T),
        "hour": np.tile(hours, n),
        "round": np.tile(round_no, n),
        "target_cells": targets.ravel(),
        "target_cells_no_effectors": ctrl.ravel(),
        "lysis_percent": (100.0 * (1.0 - targets / ctrl)).ravel(),
        "ifng_pg_per_ml": Y[:, :, INDEX["ifng"]].ravel(),
        "car_memory_cells": car["car_memory"].ravel(),
        "car_effector_cells": car["car_effector"].ravel(),
        "car_exhausted_cells": car["car_exhausted"].ravel(),
        "car_cells": (car["car_memory"] + car["car_effector"] + car["car_exhausted"]).ravel(),
    })


def _rounds(tc: pd.DataFrame, a: Assay, restim: list[float]) -> pd.DataFrame:
    """Killing per target round: lysis at the end of each round (just before fresh targets)."""
    ends = [*restim, a.hours]
    starts = [0.0, *restim]
    rows = []
    for (well, ratio, drug), g in tc[tc["effector_to_target"] > 0].groupby(
            ["well", "effector_to_target", "dasatinib_nm"], sort=True):
        g = g.set_index("hour")
        for r, (s, e) in enumerate(zip(starts, ends)):
            end = g.loc[e]
            rows.append({"well": well, "effector_to_target": ratio, "dasatinib_nm": drug, "round": r,
                         "start_hour": s, "end_hour": e, "lysis_percent": end["lysis_percent"],
                         "ifng_pg_per_ml": end["ifng_pg_per_ml"], "car_cells": end["car_cells"],
                         "exhausted_share": end["car_exhausted_cells"] / max(end["car_cells"], 1e-300)})
    return pd.DataFrame(rows)


def _summary(sc: Scenario, a: Assay, design: Design, wells, tc: pd.DataFrame, rounds: pd.DataFrame,
             il15: float) -> dict:
    end = tc[(tc["hour"] == a.hours) & (tc["effector_to_target"] > 0)]
    return {
        "scenario": sc.name,
        "product": design.construct.summary(),
        "target_line": a.target_line,
        "antigen": design.antigen,
        "target_cells": a.target_cells,
        "well_volume_ul": a.well_volume_ul,
        "hours": a.hours,
        "restimulations": a.restimulations,
        "medium_il15_equivalent_pg_per_ml": il15,
        "pretreatment_rested_share": design.infusion.pretreatment_rested,
        "wells": int(len(wells)),
        "solver_failures": int((tc.groupby("well")["solver_status"].first() != "ok").sum()),
        "lysis_percent_at_end": [
            {"effector_to_target": float(r.effector_to_target), "dasatinib_nm": float(r.dasatinib_nm),
             "lysis_percent": float(r.lysis_percent), "ifng_pg_per_ml": float(r.ifng_pg_per_ml)}
            for r in end.itertuples()],
        "rounds": rounds.to_dict(orient="records") if a.restimulations else [],
    }


def write_assay(result: AssayResult, out: Path, plots: bool = True, extra: dict | None = None) -> list[Path]:
    """Tables (parquet and csv), assay.json and the plots, into ``out``; returns the files written."""
    from carcell.io.outputs import write_table
    from carcell.scenario.load import scenario_hash

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for name, df in (("assay_timecourse", result.timecourse), ("assay_rounds", result.rounds),
                     ("assay_wells", result.wells)):
        write_table(df, out / f"{name}.parquet")
        df.to_csv(out / f"{name}.csv", index=False)
        files += [out / f"{name}.parquet", out / f"{name}.csv"]
    doc = {**result.summary, "scenario_sha256": scenario_hash(result.scenario),
           "scenario_file": result.scenario.model_dump(mode="json"),
           "sources": result.design.knowledge.sources(), **(extra or {})}
    (out / "assay.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    files.append(out / "assay.json")
    if plots:
        from carcell.preclinical.plots import assay_plots

        files += assay_plots(result, out)
    return files
