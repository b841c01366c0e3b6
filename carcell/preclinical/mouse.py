"""Mouse xenograft mode (``species: mouse``): the patient model in an NSG mouse (docs/preclinical.md).

The equations and the solver are the patient's. What changes is what a mouse changes:

* the host: body weight and blood volume of a mouse; no T, B or NK cells (no competition for
  IL-15, no recovery, no rejection) and so no lymphodepletion; no human myeloid cells, so no
  human IL-6 and no CRS; IL-15 held at an assumed level; the human CAR sees no mouse tissue;
* scale: whole-body half-stimulation and TK50 shrink with the mouse's systemic volume (body
  weight ratio), and IFN-gamma from the same cells reaches higher levels in a mouse's plasma;
* the tumour: the line's growth rate and capacity (CARTmath fits where they exist); a
  subcutaneous tumour is a solid site (trafficking, egress) without a human microenvironment,
  an intravenous leukaemia is haematological; tumour volume = cells / cells per mm3;
* read-outs: tumour volume (the caliper's L x W^2 / 2 is how it is measured; carcell reports
  the volume), survival to the humane endpoint against untreated control mice, and the disease's
  response criteria with a mouse's measurement schedule and detection limit.

Two entry points: :func:`xenograft_design` and :func:`xenograft_chunk` are the hook
``carcell.cohort.run.run_cohort`` calls for a mouse scenario; :func:`run_xenograft` runs the
treated mice through that pipeline, simulates the untreated controls and computes survival.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carcell.design import compile_chunk
from carcell.design.compile import CompiledCohort, Design, SolidSite
from carcell.knowledge import Knowledge
from carcell.model.states import CAR_STATES, INDEX, LOG_EXTINCT, PARAM_INDEX
from carcell.preclinical.common import HOSTS, HUMAN, LINES, human_plasma_ml, systemic_ml
from carcell.scenario.schema import Scenario, Xenograft

_XENO = f"{HOSTS}.xenograft"
_TME = {"tme_kill": "kill_weight", "tme_proliferation": "proliferation_weight", "tme_exhaustion": "exhaustion_gain"}


@dataclass(frozen=True)
class MouseSetup:
    """The numbers of one xenograft experiment, read from the scenario and hosts/lines.yaml."""

    x: Xenograft
    host: str                  # knowledge path of the strain, e.g. preclinical.hosts.NSG
    line: str                  # knowledge path of the tumour line
    weight: tuple[float, float]
    cells_per_mm3: float
    subcutaneous: bool
    endpoint: float            # humane endpoint: mm3 (subcutaneous) or leukaemic cells (intravenous)
    measure_every: float       # days between measurements
    il15: float                # pg/mL the human cells see
    burden_at_dose: float      # tumour cells at the first CAR dose (median mouse)
    burden_log_sd: float

    @property
    def endpoint_cells(self) -> float:
        return self.endpoint * self.cells_per_mm3 if self.subcutaneous else self.endpoint

    def size(self, cells: np.ndarray) -> np.ndarray:
        """What is measured: volume in mm3 (subcutaneous) or leukaemic cells (intravenous)."""
        return cells / self.cells_per_mm3 if self.subcutaneous else cells

    @property
    def size_label(self) -> str:
        return "tumour volume, mm3" if self.subcutaneous else "leukaemic cells"

    @property
    def size_column(self) -> str:
        """Column-name stem of what is measured (with its unit)."""
        return "volume_mm3" if self.subcutaneous else "leukaemic_cells"


def xenograft_setup(scenario: Scenario, k: Knowledge) -> MouseSetup:
    """Read the experiment's numbers: host, line, endpoint, schedule, and the burden at the first dose."""
    x = scenario.xenograft if scenario.xenograft is not None else Xenograft()
    host, line = f"{HOSTS}.{x.strain}", f"{LINES}.{x.tumour_line}"
    median, log_sd = (float(v) for v in k.value(f"{host}.weight"))
    given = scenario.population.covariates.weight_kg
    weight = (given.median or median, given.log_sd if given.log_sd is not None else log_sd)
    per_mm3 = float(k.value(f"{_XENO}.cells_per_mm3"))
    sc = x.site == "subcutaneous"
    if sc:
        endpoint = x.endpoint_volume_mm3 or float(k.value(f"{_XENO}.endpoint_volume"))
    else:
        endpoint = x.endpoint_cells or float(k.value(f"{_XENO}.endpoint_leukaemia"))
    if x.starting_volume_mm3 is not None:
        burden = x.starting_volume_mm3 * per_mm3
    else:   # logistic growth of the implant until the first dose
        r, cap = float(k.value(f"{line}.in_vivo_growth_rate")), float(k.value(f"{line}.in_vivo_capacity"))
        burden = cap / (1.0 + (cap / x.implanted_cells - 1.0) * np.exp(-r * x.days_from_implant))
    return MouseSetup(
        x=x, host=host, line=line, weight=weight, cells_per_mm3=per_mm3, subcutaneous=sc, endpoint=endpoint,
        measure_every=x.measure_every_days or float(k.value(f"{_XENO}.measure_every")),
        il15=x.il15_pg_ml if x.il15_pg_ml is not None else float(k.value(f"{host}.il15")),
        burden_at_dose=float(burden), burden_log_sd=float(k.value(f"{_XENO}.burden_log_sd")))


def _mouse_host(L, k: Knowledge, m: MouseSetup) -> float:
    """Body scale, host and tumour line of the mouse, written to the ledger; returns the mouse's
    weight over the human reference weight."""
    ratio = m.weight[0] / float(k.value(f"{HUMAN}.weight"))
    why = f"{m.host}.weight / {HUMAN}.weight"
    for name in ("antigen_half_stimulation", "effector_half_kill", "damp_half_activation"):
        L.scale_by(name, ratio, why, "derived", "whole-body count spread over the mouse's systemic volume "
                   "(tme.systemic_volume x body-weight ratio)")
    mouse_plasma = float(k.value(f"{m.host}.blood_volume_per_kg")) * m.weight[0] * float(
        k.value(f"{HUMAN}.plasma_fraction"))
    L.scale_by("ifng_secretion", human_plasma_ml(k) / mouse_plasma, f"human / mouse plasma volume ({m.host})",
               "derived", "the same cells secrete into a mouse's plasma volume")
    L.base("macrophage_on", f"{m.host}.human_myeloid_activation")
    L.base("il6_baseline", f"{m.host}.human_il6")
    L.base("rejection_rate", f"{m.host}.rejection_rate")
    L.rule("host_turnover", 0.0, "1/day", f"{m.host}: no host lymphocytes to recover")
    L.rule("il15_elimination", 0.0, "1/day", f"IL-15 held at {m.il15:g} pg/mL (xenograft.il15_pg_ml or {m.host}.il15)")
    L.base("tumour_growth_rate", f"{m.line}.in_vivo_growth_rate")
    L.base("tumour_capacity", f"{m.line}.in_vivo_capacity")
    for name in ("recognition_low", "activation_low"):
        L.rule(name, 0.0, "1", "a xenograft line is taken as one clone at the indication's median density")
    for name in _TME:
        L.rule(name, 0.0, "1", f"{_XENO}.tme_suppression: no human microenvironment in a xenograft")
    return ratio


def _mouse_site(L, k: Knowledge, m: MouseSetup, ratio: float) -> SolidSite | None:
    """A subcutaneous tumour is a solid site the cells must reach; an intravenous leukaemia is not."""
    if not m.subcutaneous:
        L.rule("solid", 0.0, "1", "intravenous leukaemia: the CAR cells meet it in blood and marrow")
        for name, unit in (("site_egress", "1/day"), ("traffic_per_tumour_cell", "1/(cells*day)"),
                           ("site_volume_per_tumour_cell", "1/cells"), ("first_pass_return", "1/day")):
            L.rule(name, 0.0, unit, "no tumour site")
        return None
    per_ml = m.cells_per_mm3 * 1000.0
    mouse_ml = systemic_ml(k) * ratio
    L.rule("solid", 1.0, "1", "subcutaneous xenograft: the CAR cells must reach the tumour from blood")
    L.base("site_egress", f"{_XENO}.egress")
    L.base("first_pass_return", "tme.first_pass.return_rate")
    L.rule("traffic_per_tumour_cell", 0.0, "1/(cells*day)", f"per mouse: {_XENO}.trafficking / "
           f"({_XENO}.cells_per_mm3 x 1000 x weight)")
    L.rule("site_volume_per_tumour_cell", 1.0 / (per_ml * mouse_ml), "1/cells",
           f"1 / ({_XENO}.cells_per_mm3 x 1000 x mouse systemic volume {mouse_ml:.3g} mL)")
    return SolidSite(trafficking=float(k.value(f"{_XENO}.trafficking")), cells_per_ml=per_ml, heterogeneity=0.0,
                     suppression=float(k.value(f"{_XENO}.tme_suppression")), suppression_omega=0.0,
                     growth_log_sd=0.0,   # one xenograft line: mice differ by take, not by growth law
                     weights={n: float(k.value(f"tme.{w}")) for n, w in _TME.items()}, components={},
                     first_pass=float(k.value("tme.first_pass.fraction")))   # Lee 2020 measured it in mice


def _mouse_response(design: Design, k: Knowledge, m: MouseSetup) -> dict:
    """The indication's response criteria read as in a mouse: measurement schedule, caliper limit,
    one lesion, a mouse's marrow."""
    sc = design.scenario
    response = dict(design.response)
    if sc.trial.assessment_days is None:
        every = m.measure_every
        response["assessment_days"] = [float(d) for d in np.arange(every, sc.trial.follow_up_days + 1e-9, every)]
    if "cr_detectable_cells" in response:
        response["cr_detectable_cells"] = float(k.value(f"{_XENO}.detection_volume")) * m.cells_per_mm3
    if "marrow_cells" in response:
        response["marrow_cells"] = float(k.value(f"{_XENO}.marrow_cells"))
    if "cells_per_ml" in response:
        response["cells_per_ml"] = m.cells_per_mm3 * 1000.0
    if "lesions" in response:
        response["lesions"] = 1.0
    return response


def xenograft_design(design: Design) -> Design:
    """The patient design rescaled to an NSG mouse carrying the scenario's tumour line.

    Every change is written to the design's ledger with its source, so ``provenance.json``
    shows how each mouse parameter came from the human one."""
    k, L, sc = design.knowledge, design.ledger, design.scenario
    m = xenograft_setup(sc, k)
    ratio = _mouse_host(L, k, m)
    site = _mouse_site(L, k, m, ratio)
    typical = {name: L.value(name) for name in L.records
               if name in PARAM_INDEX and not name.startswith(("recognition_", "activation_", "normal_"))}
    conversion = {**design.conversion,
                  "blood_ml_per_kg": float(k.value(f"{m.host}.blood_volume_per_kg")),
                  "non_lymphoid_per_ul": float(k.value(f"{m.host}.non_lymphoid_leukocytes"))}
    construct = dataclasses.replace(design.construct, notes=[
        *design.construct.notes,
        f"mouse: {sc.name} runs in an {m.x.strain} mouse with {m.x.tumour_line} ({m.x.site}); the CAR's "
        "binder is taken not to recognise mouse tissue, so there is no on-target, off-tumour killing"])
    infusion = design.infusion if site is not None else dataclasses.replace(design.infusion, site_fraction=0.0)
    return dataclasses.replace(
        design, typical=typical, weight=m.weight, age=tuple(float(v) for v in k.value(f"{m.host}.age_years")),
        burden=(m.burden_at_dose, m.burden_log_sd), tissues=[], tissues_not_simulated=[], host_survival=1.0,
        response=_mouse_response(design, k, m), conversion=conversion, site=site, infusion=infusion,
        construct=construct)


def xenograft_chunk(design: Design, start: int, stop: int, ids: np.ndarray | None = None,
                    burden_factor: np.ndarray | None = None) -> CompiledCohort:
    """Mice ``start..stop`` (or ``ids``), compiled as patients are, then given a mouse's starting
    states: no host lymphocytes and IL-15 at the mouse's level."""
    m = xenograft_setup(design.scenario, design.knowledge)
    # IL-15 is held (no elimination), so the patient's quasi-steady IL-15 at infusion is 0/0 here;
    # it is replaced below
    with np.errstate(invalid="ignore", divide="ignore"):
        c = compile_chunk(design, start, stop, ids=ids, burden_factor=burden_factor)
    host = float(design.knowledge.value(f"{m.host}.host_lymphocytes"))
    c.y0[:, INDEX["host_lymphocytes"]] = np.log(host)
    c.y0[:, INDEX["il15"]] = m.il15
    c.covariates[f"{m.size_column}_at_first_dose"] = m.size(c.covariates["baseline_burden_cells"].to_numpy())
    return c


@dataclass
class XenograftResult:
    """Treated mice (the standard cohort result), untreated controls, and the per-mouse table."""

    cohort: object                     # carcell.cohort.run.CohortResult of the treated mice
    setup: MouseSetup
    times: np.ndarray
    size: dict[str, np.ndarray]        # group -> (mice, times): volume (mm3) or leukaemic cells
    mice: pd.DataFrame                 # one row per mouse, treated and control
    summary: dict


def endpoint_days(times: np.ndarray, size: np.ndarray, limit: float) -> np.ndarray:
    """Day each mouse's tumour first reaches ``limit`` (log-linear between read-outs); NaN if never."""
    out = np.full(size.shape[0], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(np.maximum(size, 1e-300))
    for i, row in enumerate(logs):
        hit = np.flatnonzero(row >= np.log(limit))
        if hit.size == 0:
            continue
        j = hit[0]
        if j == 0:
            out[i] = times[0]
            continue
        f = (np.log(limit) - row[j - 1]) / (row[j] - row[j - 1])
        out[i] = times[j - 1] + f * (times[j] - times[j - 1])
    return out


def _controls(design: Design, ids: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Tumour cells (mice, times) of untreated mice: the same mice, no CAR cells."""
    from carcell.cohort.metrics import clinical_trajectories
    from carcell.cohort.run import round_days
    from carcell.solve.rounds import simulate_batch

    c = xenograft_chunk(design, 0, 0, ids=ids)
    for s in CAR_STATES:
        c.y0[:, INDEX[s]] = LOG_EXTINCT
    c.params.values[:, PARAM_INDEX["alive_car"]] = 0.0
    solver = design.scenario.trial.solver
    Y, _, _ = simulate_batch(c.params, c.y0, times, round_days(design, times), rtol=solver.rtol,
                             atol=solver.atol, max_steps=solver.max_steps)
    return clinical_trajectories(Y, design, c.covariates["blood_volume_ul"].to_numpy())["tumour_total_cells"]


def _km(mice: pd.DataFrame) -> dict:
    """Median survival per group (None: not reached) and the log-rank test treated vs control."""
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import logrank_test

    out: dict = {"median_survival_days": {}}
    for group, g in mice.groupby("group", sort=False):
        km = KaplanMeierFitter().fit(g["survival_days"], g["endpoint_reached"].astype(bool))
        med = float(km.median_survival_time_)
        out["median_survival_days"][group] = None if not np.isfinite(med) else med
    groups = set(mice["group"])
    if {"CAR", "control"} <= groups:
        a, b = mice[mice["group"] == "CAR"], mice[mice["group"] == "control"]
        test = logrank_test(a["survival_days"], b["survival_days"], a["endpoint_reached"].astype(bool),
                            b["endpoint_reached"].astype(bool))
        out["logrank_p_car_vs_control"] = float(test.p_value)
    return out


def run_xenograft(scenario: Scenario, progress: Callable[[int, int], None] | None = None) -> XenograftResult:
    """Simulate the treated mice (population.n) and the untreated controls; compute survival."""
    from carcell.cohort.run import run_cohort

    treated = run_cohort(scenario, progress=progress)
    design, times = treated.design, treated.times
    m = xenograft_setup(scenario, design.knowledge)
    n = len(treated.patients)
    n_ctrl = m.x.controls if m.x.controls is not None else n
    size = {"CAR": m.size(treated.trajectories["tumour_total_cells"].astype(float))}
    # the controls are the same virtual mice without CAR cells (common random numbers): the
    # difference between the groups is the treatment's alone, not a different draw of tumours
    ids = treated.patients["patient_id"].to_numpy()
    ctrl_ids = ids[:n_ctrl] if n_ctrl <= n else np.arange(n_ctrl, dtype=np.int64)
    if n_ctrl:
        size["control"] = m.size(_controls(design, ctrl_ids, times))
    follow = float(times[-1])
    frames = []
    for group, x in size.items():
        ids = treated.patients["patient_id"].to_numpy() if group == "CAR" else ctrl_ids
        end = endpoint_days(times, x, m.endpoint)
        df = pd.DataFrame({"mouse_id": ids, "group": group})
        df[f"{m.size_column}_at_first_dose"] = x[:, 0]
        for d in (7, 14, 21, 28):
            if d <= follow:
                j = int(np.searchsorted(times, d))
                df[f"{m.size_column}_day_{d}"] = np.where(np.isnan(end) | (end > d), x[:, j], np.nan)
        df["nadir_fraction"] = np.nanmin(x / x[:, :1], axis=1)
        df["endpoint_day"] = end
        df["endpoint_reached"] = ~np.isnan(end)
        df["survival_days"] = np.where(np.isnan(end), follow, end)
        df["dose_cells"] = treated.patients["dose_cells"].to_numpy() if group == "CAR" else 0.0
        frames.append(df)
    mice = pd.concat(frames, ignore_index=True)
    summary = {
        "species": "mouse", "strain": m.x.strain, "tumour_line": m.x.tumour_line, "site": m.x.site,
        "measured_as": m.size_label, "humane_endpoint": m.endpoint,
        "tumour_size_at_first_dose_median": float(np.median(size["CAR"][:, 0])),
        "mice": {g: int((mice["group"] == g).sum()) for g in size},
        "endpoint_reached": {g: int(mice.loc[mice["group"] == g, "endpoint_reached"].sum()) for g in size},
        **_km(mice),
    }
    for d in (7, 14, 21, 28):   # medians over the mice still alive that day
        col = f"{m.size_column}_day_{d}"
        if col in mice:
            summary[f"median_size_day_{d}"] = {g: _median_or_none(mice.loc[mice["group"] == g, col].to_numpy())
                                               for g in size}
    return XenograftResult(treated, m, times, size, mice, summary)


def _median_or_none(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


#: human-only outputs: computed by the shared pipeline, not meaningful for an NSG mouse
NOT_APPLICABLE = {
    "toxicity": "ASTCT CRS/ICANS grading and its management are for patients; NSG mice have no human "
                "myeloid cells, so no human IL-6 is made and every grade is 0 by construction",
    "haematology": "baseline labs, neutropenia and IgG are drawn for patients of the indication; not a mouse's",
    "trial_survival_model": "post-progression and background deaths of patients are not simulated; mice end at "
                            "the humane endpoint (summary.xenograft, mice.parquet)",
    "response_rates": "the indication's criteria read on the mouse's tumour with a mouse's measurement schedule "
                      "and detection limit (docs/preclinical.md); a descriptive read-out only",
}


def write_xenograft(result: XenograftResult, out: Path, extra_provenance: dict | None = None,
                    plots: bool = True) -> dict:
    """The cohort files of the treated mice (as ``carcell run``), plus mice.parquet/csv, the
    tumour size table, the xenograft summary and the mouse plots. Returns summary.json's content."""
    from carcell.io.outputs import write_outputs, write_table

    m = result.setup
    cohort = result.cohort
    ended = result.mice[(result.mice["group"] == "CAR") & result.mice["endpoint_reached"]]
    deaths = pd.DataFrame({"patient_id": ended["mouse_id"].to_numpy(), "day": ended["endpoint_day"].to_numpy(),
                           "event": "death", "value": np.nan,
                           "detail": f"humane endpoint ({m.endpoint:g} {'mm3' if m.subcutaneous else 'cells'})"})
    events = pd.concat([cohort.events, deaths], ignore_index=True).sort_values(
        ["patient_id", "day"], kind="stable", ignore_index=True)
    summ = write_outputs(dataclasses.replace(cohort, events=events), out, extra_provenance)
    summ["species"] = "mouse"
    summ["not_applicable"] = NOT_APPLICABLE
    summ["xenograft"] = result.summary
    (out / "summary.json").write_text(json.dumps(summ, indent=2) + "\n")
    write_table(result.mice, out / "mice.parquet")
    result.mice.to_csv(out / "mice.csv", index=False)
    long = pd.concat([pd.DataFrame({"mouse_id": np.repeat(ids, len(result.times)), "group": g,
                                    "day": np.tile(result.times, len(ids)), "size": x.ravel()})
                      for g, x in result.size.items()
                      for ids in [result.mice.loc[result.mice["group"] == g, "mouse_id"].to_numpy()]],
                     ignore_index=True)
    long = long.rename(columns={"size": "tumour_volume_mm3" if m.subcutaneous else "leukaemic_cells"})
    write_table(long, out / "tumour_size.parquet")
    if plots:
        from carcell.preclinical.plots import survival_plot, volume_plot
        from carcell.report.plots import write_plots

        write_plots(cohort, out)
        ends = {g: result.mice.loc[result.mice["group"] == g, "endpoint_day"].to_numpy() for g in result.size}
        where = f"{m.x.tumour_line} {m.x.site} in {m.x.strain} mice"
        volume_plot(result.times, result.size, m.endpoint, m.size_label, f"{cohort.scenario.name}: {where}",
                    out / ("tumour_volume.png" if m.subcutaneous else "leukaemic_burden.png"), ends)
        survival_plot(result.mice, float(result.times[-1]), f"survival to the humane endpoint: {where}",
                      out / "survival.png")
    return summ
