"""Run a scenario's virtual cohort in chunks and collect everything the outputs need."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.clinical.haematology import LAB_COLUMNS, draw_baseline_labs, haematology_days, haematology_outputs
from carcell.clinical.management import Manager, load_protocol
from carcell.clinical.signs import SignModel
from carcell.cohort.metrics import clinical_trajectories, patient_metrics
from carcell.design import Design, compile_chunk, resolve_design
from carcell.design.compile import initial_car_states
from carcell.knowledge import load_knowledge
from carcell.scenario.schema import Scenario
from carcell.solve.dopri5 import STATUS_NAMES
from carcell.solve.rounds import simulate_batch

ProgressFn = Callable[[int], None]


@dataclass
class CohortResult:
    scenario: Scenario
    design: Design
    times: np.ndarray
    patients: pd.DataFrame
    trajectories: dict[str, np.ndarray]   # quantity -> (n, T), float32
    events: pd.DataFrame


def scenario_design(scenario: Scenario, k) -> tuple[Design, Callable]:
    """The scenario's design and the function that draws its patients: a patient's, or for
    ``species: mouse`` the same model at NSG-mouse scale (docs/preclinical.md)."""
    design = resolve_design(scenario, k)
    if scenario.species != "mouse":
        return design, compile_chunk
    from carcell.preclinical.mouse import xenograft_chunk, xenograft_design  # noqa: PLC0415 - optional mode

    return xenograft_design(design), xenograft_chunk


def output_times(scenario: Scenario, assessments: np.ndarray | None = None) -> np.ndarray:
    """The output grid: every ``output_every_days``, plus the toxicity assessment times and the
    infusion days."""
    t = scenario.trial
    times = np.arange(0.0, t.follow_up_days + 1e-9, t.output_every_days)
    if times[-1] < t.follow_up_days:
        times = np.append(times, t.follow_up_days)
    if assessments is not None:
        times = np.union1d(times, assessments[assessments <= t.follow_up_days])
    return np.union1d(times, np.asarray(scenario.regimen.infusion_days, dtype=float))


def assessment_days(k) -> np.ndarray:
    """Twice-daily toxicity assessments for the first weeks (toxicity.yaml signs)."""
    every = float(k.value("toxicity.signs.assessment_every_days"))
    until = float(k.value("toxicity.signs.assessment_until_day"))
    return np.round(np.arange(0.0, until + 1e-9, every), 9)


def round_days(design: Design, times: np.ndarray) -> np.ndarray:
    """Infusion, the first weeks, and each response assessment (snapped to the output grid)."""
    wanted = [0.0, 7.0, 14.0, 21.0, *design.response["assessment_days"], times[-1]]
    wanted = [d for d in wanted if d <= times[-1]]
    snapped = times[np.abs(times[None, :] - np.array(wanted)[:, None]).argmin(axis=1)]
    return np.unique(snapped)


def later_infusions(design: Design, c) -> list[tuple[float, np.ndarray]]:
    """The doses after day 0 of a multi-dose regimen, as log-cells per CAR state."""
    days = design.infusion.days[1:]
    if not days:
        return []
    cells = c.covariates["dose_cells"].to_numpy()
    # a later dose meets the tumour as it is then; its distribution phase is taken at baseline burden
    add = initial_car_states(design, cells, c.params, c.covariates["baseline_burden_cells"].to_numpy())
    return [(d, add) for d in days]


def make_manager(k, design: Design, c, protocol, signs: SignModel) -> Manager:
    """The clinical team of one chunk of compiled patients ``c``: assesses, grades and treats
    them by ``protocol`` at every assessment (docs/toxicity.md)."""
    return Manager(
        protocol=protocol, signs=signs, params=c.params,
        weight_kg=c.covariates["weight_kg"].to_numpy(), age_years=c.covariates["age_years"].to_numpy(),
        patient_ids=c.covariates["patient_id"].to_numpy(),
        toci_volume_l_per_kg=float(k.value("toxicity.drugs.tocilizumab.volume")),
        mp_per_dex=float(k.value("toxicity.drugs.methylprednisolone_per_dexamethasone")),
        interval_h=24.0 * float(k.value("toxicity.signs.assessment_every_days")),
        dasatinib_nm_per_mg=1e6 / (float(k.value("toxicity.drugs.dasatinib.volume"))
                                   * float(k.value("toxicity.drugs.dasatinib.molar_mass"))),
        icasp9_removed=(float(k.value("safety.iCasp9.fraction_removed"))
                        if "iCasp9" in design.construct.safety else 0.0))


def _events(df: pd.DataFrame, resp, design: Design) -> pd.DataFrame:
    rows = []
    route = design.infusion.route
    what = "CAR+ cells" + ("" if route == "intravenous" else f" ({route})")
    for pid, dose in zip(df["patient_id"], df["dose_cells"]):
        for day in design.infusion.days:
            rows.append((pid, float(day), "infusion", float(dose), what))
    days = resp.assessment_days
    for k, pid in enumerate(df["patient_id"]):
        if df["solver_status"].iat[k] != "ok":
            continue
        prog = resp.progression_day[k]
        for j, d in enumerate(days):
            if not np.isnan(prog) and d > prog:
                break
            rows.append((pid, float(d), "response_assessment", np.nan, str(resp.categories[k, j])))
        if not np.isnan(prog):
            kind = "relapse" if resp.best_response[k] == "CR" else "progression"
            rows.append((pid, float(prog), kind, np.nan, str(resp.relapse_antigen[k])))
    return pd.DataFrame(rows, columns=["patient_id", "day", "event", "value", "detail"])


def run_cohort(scenario: Scenario, progress: Callable[[int, int], None] | None = None,
               ids: np.ndarray | None = None, burden_factor: np.ndarray | None = None) -> CohortResult:
    """Simulate ``scenario.population.n`` patients (ids 0..n-1), or the given patient ids;
    ``progress(done, total)`` reports work units. ``burden_factor`` (one per patient, aligned
    with ``ids``) scales each burden at referral to the burden at infusion."""
    k = load_knowledge()
    design, compile_ = scenario_design(scenario, k)
    assessments = assessment_days(k)
    times = output_times(scenario, assessments)
    assessments = assessments[assessments <= times[-1]]
    rounds = round_days(design, times)
    protocol = load_protocol(k, scenario.regimen.protocol)
    signs = SignModel.from_knowledge(k)
    cohort_ids = np.arange(scenario.population.n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    n = cohort_ids.size
    solver = scenario.trial.solver
    chunk = solver.chunk_size
    total = n * (times.size - 1)
    frames, traj_parts, event_parts = [], [], []
    done = 0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        c = compile_(design, start, stop, ids=cohort_ids[start:stop],
                     burden_factor=None if burden_factor is None else burden_factor[start:stop])

        def step(j: int, base=done, m=stop - start) -> None:
            if progress is not None and (j % 5 == 0 or j == times.size - 1):
                progress(base + j * m, total)

        manager = make_manager(k, design, c, protocol, signs)
        Y, status, _ = simulate_batch(c.params, c.y0, times, rounds, rtol=solver.rtol,
                                      atol=solver.atol, max_steps=solver.max_steps, progress=step,
                                      backend=solver.backend,
                                      assess=manager, assessment_days=assessments,
                                      infusions=later_infusions(design, c))
        done += (stop - start) * (times.size - 1)
        traj = clinical_trajectories(Y, design, c.covariates["blood_volume_ul"].to_numpy())
        names = np.array([STATUS_NAMES[s] for s in status], dtype=object)
        df, resp = patient_metrics(times, traj, design, c.covariates, names)
        tox = manager.patient_table()
        failed = names != "ok"
        for col in tox.columns:   # a failed patient has no trustworthy toxicity either
            df[col] = np.where(failed, np.nan, tox[col].to_numpy(dtype=float))
        # haematotoxicity and immunoglobulins, from baseline labs and the simulated course
        ids = c.covariates["patient_id"].to_numpy()
        labs = draw_baseline_labs(k, scenario.indication.disease, scenario.population.seed, ids)
        haem, haem_events, daily = haematology_outputs(
            times, traj, labs, c.covariates["weight_kg"].to_numpy(), scenario.regimen.lymphodepletion, ids, k)
        for col in LAB_COLUMNS:
            if col != "patient_id":
                df[f"baseline_{col}"] = labs[col].to_numpy()
        for col in haem.columns.drop("patient_id"):
            df[col] = haem[col].to_numpy()
        event_parts.append(haem_events)
        grid = haematology_days(times, k)
        for q, v in daily.items():   # daily counts onto the output grid (NaN after the last day)
            traj[q] = np.array([np.interp(times, grid, row, right=np.nan) for row in v])
        frames.append(df)
        event_parts.append(_events(df, resp, design))
        event_parts.append(manager.events())
        traj_parts.append({q: v.astype(np.float32) for q, v in traj.items()})
    patients = pd.concat(frames, ignore_index=True)
    trajectories = {q: np.concatenate([t[q] for t in traj_parts]) for q in traj_parts[0]}
    events = pd.concat([e for e in event_parts if not e.empty] or event_parts[:1], ignore_index=True).sort_values(
        ["patient_id", "day"], kind="stable", ignore_index=True)
    return CohortResult(scenario, design, times, patients, trajectories, events)
