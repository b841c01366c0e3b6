"""Run a virtual trial: randomise, simulate each CAR arm, draw comparator arms, add deaths.

A scenario without ``trial.arms`` is a single-arm trial of its product. Patients are numbered
0..n-1 in order of enrolment and randomised in permuted blocks; each keeps its number in its
arm, so a patient's covariates and draws depend only on (seed, id), never on the arm sizes,
the chunking or the number of worker processes.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carcell.cohort.run import CohortResult, run_cohort
from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import load_knowledge
from carcell.scenario.load import validate_raw
from carcell.scenario.schema import Scenario
from carcell.solve.workers import process_pool
from carcell.trial.soc import soc_patients
from carcell.logistics.run import TrialChain, from_enrolment, referrals, run_trial_chain, with_chain_columns
from carcell.trial.survival import DeathModel, endpoints, not_infused, uniforms

_RANDOMISATION_ENTROPY = 0x7A11   # mixed with the seed: the allocation stream, apart from every patient's


@dataclass
class ArmSpec:
    name: str
    kind: str                       # "car" or "soc"
    ratio: int
    scenario: Scenario              # the arm's own scenario (for SOC: the trial scenario)
    standard_of_care: str | None = None
    not_infused_fraction: float = 0.0
    manufacturing: dict | None = None   # the arm's keys over the scenario's manufacturing section


@dataclass
class TrialResult:
    scenario: Scenario
    arms: list[ArmSpec]
    patients: pd.DataFrame                       # one row per randomised patient
    events: pd.DataFrame
    times: np.ndarray | None                     # output grid of the CAR arms
    trajectories: dict[str, np.ndarray]          # CAR-arm patients only, in patients' order
    trajectory_ids: np.ndarray
    cohorts: dict[str, CohortResult] = field(default_factory=dict)
    chain: TrialChain | None = None              # the manufacturing chain, when one was simulated
    population: pd.DataFrame | None = None       # an access region's eligible patients, when given
    allocation: np.ndarray | None = None         # arm index of every patient id 0..n-1
    # (arm index, part, columns) of each table the patient rows were assembled from, in
    # assembly order: what fixes the column order of the whole trial's table (carcell.scale)
    column_parts: list[tuple[int, str, list[str]]] = field(default_factory=list)

    def allocation_of(self, ids: np.ndarray) -> np.ndarray:
        """The arm each patient id was allocated to (referred or not)."""
        names = np.array([a.name for a in self.arms], dtype=object)
        return names[self.allocation[np.asarray(ids, dtype=np.int64)]]

    @property
    def reference_arm(self) -> str | None:
        if self.scenario.trial.reference_arm:
            return self.scenario.trial.reference_arm
        soc = [a.name for a in self.arms if a.kind == "soc"]
        return soc[0] if soc else (self.arms[0].name if len(self.arms) > 1 else None)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def arm_specs(scenario: Scenario) -> list[ArmSpec]:
    """Each arm's own scenario: the trial scenario with the arm's product/regimen overrides."""
    if not scenario.trial.arms:
        name = scenario.product.preset or scenario.product.name
        return [ArmSpec(name, "car", 1, scenario)]
    raw = scenario.model_dump(mode="json", exclude_none=True)
    raw["trial"].pop("arms", None)
    raw["trial"].pop("reference_arm", None)
    specs = []
    for i, arm in enumerate(scenario.trial.arms):
        if arm.standard_of_care is not None:
            specs.append(ArmSpec(arm.name, "soc", arm.ratio, scenario, arm.standard_of_care))
            continue
        arm_raw = copy.deepcopy(raw)
        if arm.product:   # a preset named in the arm replaces the product, other keys refine it
            arm_raw["product"] = (copy.deepcopy(arm.product) if "preset" in arm.product
                                  else _merge(arm_raw["product"], arm.product))
        if arm.regimen:
            arm_raw["regimen"] = _merge(arm_raw["regimen"], arm.regimen)
        if arm.calibration:
            arm_raw["population"]["calibration"] = arm.calibration
        arm_raw["name"] = f"{scenario.name}: {arm.name}"
        sc = validate_raw(arm_raw, f"trial.arms[{i}] ({arm.name})")
        specs.append(ArmSpec(arm.name, "car", arm.ratio, sc, None, arm.not_infused_fraction, arm.manufacturing))
    return specs


def randomise(n: int, ratios: list[int], seed: int) -> np.ndarray:
    """Arm index per patient: permuted blocks of twice the ratio sum (e.g. 4 for 1:1, 6 for 2:1)."""
    block = np.repeat(np.arange(len(ratios)), [2 * r for r in ratios])
    if len(ratios) == 1:
        return np.zeros(n, dtype=int)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _RANDOMISATION_ENTROPY]))
    blocks = -(-n // block.size)
    return np.concatenate([rng.permutation(block) for _ in range(blocks)])[:n]


def _simulate(args) -> CohortResult:
    scenario, ids, factor = args
    return run_cohort(scenario, ids=ids, burden_factor=factor)


def _concat(parts: list[CohortResult]) -> CohortResult:
    first = parts[0]
    return CohortResult(
        first.scenario, first.design, first.times,
        pd.concat([p.patients for p in parts], ignore_index=True),
        {q: np.concatenate([p.trajectories[q] for p in parts]) for q in first.trajectories},
        pd.concat([p.events for p in parts if not p.events.empty] or [first.events], ignore_index=True),
    )


def simulate_arm(scenario: Scenario, ids: np.ndarray, workers: int,
                 progress: Callable[[int, int], None] | None,
                 burden_factor: np.ndarray | None = None) -> CohortResult:
    """Simulate the given patients, in worker processes when asked; the result is the same.
    ``burden_factor`` scales each patient's burden at referral to the burden at infusion."""
    if workers <= 1 or ids.size < 2 * workers:
        return run_cohort(scenario, progress=progress, ids=ids, burden_factor=burden_factor)
    # one piece per process: the batched integrator's cost per step is mostly fixed, so more,
    # smaller pieces would multiply the steps taken
    pieces = [p for p in np.array_split(np.arange(ids.size), workers) if p.size]
    args = [(scenario, ids[p], None if burden_factor is None else burden_factor[p]) for p in pieces]
    done, parts = 0, []
    with process_pool(workers) as pool:
        for piece, res in zip(pieces, pool.map(_simulate, args)):
            parts.append(res)
            done += piece.size
            if progress is not None:
                progress(done, ids.size)
    return _concat(parts)


@dataclass
class TrialPlan:
    """What every patient of a trial shares, drawn once: the arms, the randomisation, who enters
    the trial (an access region's referrals) and the manufacturing chain. A chunk of patients is
    simulated from the plan and its patient ids alone (``run_trial_ids``), so chunks can run in
    any order, in other processes or on other machines, and be retried."""

    scenario: Scenario
    arms: list[ArmSpec]
    allocation: np.ndarray                       # arm index of every patient id 0..n-1
    in_trial: np.ndarray                         # bool per patient id: referred (all without access)
    chain: TrialChain | None = None
    population: pd.DataFrame | None = None

    @property
    def n(self) -> int:
        return int(self.allocation.size)


def plan_trial(scenario: Scenario) -> TrialPlan:
    """Randomise ``population.n`` patients over the arms and, with a ``manufacturing`` section,
    run the chain from referral to infusion for the whole trial (its slots are shared)."""
    k = load_knowledge()
    specs = arm_specs(scenario)
    n, seed = scenario.population.n, scenario.population.seed
    allocation = randomise(n, [a.ratio for a in specs], seed)
    ids_all = np.arange(n, dtype=np.int64)
    population, in_trial, arrival = referrals(scenario, specs)
    chain = None
    if arrival is not None:
        chained = [(a.name, a.scenario, a.manufacturing, ids_all[(allocation == j) & in_trial])
                   for j, a in enumerate(specs) if a.kind == "car"]
        chain = run_trial_chain(k, scenario, chained, arrival)
    return TrialPlan(scenario, specs, allocation, in_trial, chain, population)


def run_trial(scenario: Scenario, progress: Callable[[str, int, int], None] | None = None) -> TrialResult:
    """Randomise ``population.n`` patients over the arms and follow each to the end of follow-up.

    With a ``manufacturing`` section, CAR-arm patients first go through the chain from referral
    to infusion (carcell.logistics): it decides who is infused and when, their burden at
    infusion, and who never gets there; survival is then counted from enrolment. With an
    ``access`` section, ``population.n`` is a region's eligible patients, and only those referred
    are randomised. ``progress(arm, done, total)`` reports each CAR arm's simulation."""
    plan = plan_trial(scenario)
    return run_trial_ids(plan, np.arange(plan.n, dtype=np.int64), workers=scenario.trial.workers,
                         progress=progress)


def run_trial_ids(plan: TrialPlan, ids: np.ndarray, *, workers: int = 1,
                  progress: Callable[[str, int, int], None] | None = None) -> TrialResult:
    """The trial's patients with the given ids (ascending), exactly as the whole trial has them:
    every draw depends on (seed, patient id) only, so a chunk of ids gives the rows, events and
    trajectories of those patients in the full run (carcell.scale relies on it)."""
    k = load_knowledge()
    scenario, specs, chain, allocation = plan.scenario, plan.arms, plan.chain, plan.allocation
    t = scenario.trial
    seed, follow = scenario.population.seed, t.follow_up_days
    deaths = DeathModel.from_knowledge(k, scenario.indication.disease)
    ids_all = np.asarray(ids, dtype=np.int64)
    in_trial = plan.in_trial[ids_all]
    allocation_here = allocation[ids_all]

    frames, event_parts, cohorts, column_parts = [], [], {}, []
    traj_parts, traj_ids, times = [], [], None
    for j, arm in enumerate(specs):
        ids = ids_all[(allocation_here == j) & in_trial]
        if ids.size == 0:
            continue
        design = resolve_design(arm.scenario, k)
        if arm.kind == "soc":
            base = compile_chunk(design, 0, 0, ids=ids).covariates   # covariates only, not simulated
            first = float(min(design.response["assessment_days"]))
            df = soc_patients(k, arm.standard_of_care, ids, base["age_years"].to_numpy(),
                              base["weight_kg"].to_numpy(), seed, follow, first, deaths)
            df["baseline_burden_cells"] = np.nan
            column_parts.append((j, "soc", list(df.columns)))
        else:
            through_chain = chain is not None and arm.name in chain.arms
            if through_chain:
                flow = chain.arm_patients(arm.name).set_index("patient_id").loc[ids].reset_index()
                skipped = (flow["state"] != "infused").to_numpy()
            else:
                skipped = uniforms(seed, ids)[:, 7] < arm.not_infused_fraction
            infused_ids = ids[~skipped]
            df_parts = []
            if infused_ids.size:
                report = (lambda d, tot, name=arm.name: progress(name, d, tot)) if progress else None
                factor = chain.burden_factor(arm.name, infused_ids) if through_chain else None
                res = simulate_arm(arm.scenario, infused_ids, workers, report, factor)
                cohorts[arm.name] = res
                times = res.times
                first = float(min(res.design.response["assessment_days"]))
                no_response = "NR" if res.design.response_criteria == "marrow_blasts" else "SD"
                part = endpoints(res.patients, res.events, deaths, seed, follow, first, no_response)
                if through_chain:
                    offset = flow.set_index("patient_id").loc[infused_ids, "referral_to_infusion_days"]
                    part = from_enrolment(part, offset.to_numpy(float), follow)
                df_parts.append(part)
                column_parts.append((j, "infused", list(part.columns)))
                traj_parts.append(res.trajectories)
                traj_ids.append(infused_ids)
                event_parts.append(res.events)
            if skipped.any():
                cov = compile_chunk(design, 0, 0, ids=ids[skipped]).covariates
                if through_chain:
                    lost = flow[skipped]
                    ended = lost["ended_day"].fillna(chain.result_horizon).to_numpy(float)
                    cause = np.where(lost["reason"] == "death", lost["death_cause_waiting"], "")
                    ni = not_infused(ids[skipped], cov["age_years"].to_numpy(), deaths, seed, follow,
                                     ended - lost["arrival_day"].to_numpy(float), cause)
                else:
                    ni = not_infused(ids[skipped], cov["age_years"].to_numpy(), deaths, seed, follow)
                ni["weight_kg"] = cov["weight_kg"].to_numpy()
                ni["baseline_burden_cells"] = cov["baseline_burden_cells"].to_numpy()
                df_parts.append(ni)
                column_parts.append((j, "not_infused", list(ni.columns)))
            df = pd.concat(df_parts, ignore_index=True)
            if through_chain:
                df = with_chain_columns(df, flow)
                column_parts.append((j, "chain", list(df.columns)))
        df.insert(1, "arm", arm.name)
        df.insert(2, "arm_kind", arm.kind)
        frames.append(df)

    patients = pd.concat(frames, ignore_index=True).sort_values("patient_id", ignore_index=True)
    # progression of patients who were not simulated (comparator arms, never infused)
    drawn = patients[~patients["patient_id"].isin(np.concatenate(traj_ids) if traj_ids else [])
                     & patients["progression_day"].notna()]
    event_parts.append(pd.DataFrame({"patient_id": drawn["patient_id"].to_numpy(),
                                     "day": drawn["progression_day"].to_numpy(float), "event": "progression",
                                     "value": np.nan, "detail": "none"}))
    death_events = patients.loc[patients["death_day"].notna(), ["patient_id", "death_day", "death_cause"]]
    event_parts.append(pd.DataFrame({"patient_id": death_events["patient_id"].to_numpy(),
                                     "day": death_events["death_day"].to_numpy(), "event": "death",
                                     "value": np.nan, "detail": death_events["death_cause"].to_numpy()}))
    fatal = death_events[death_events["death_cause"].isin(["crs", "icans"])]
    event_parts.append(pd.DataFrame({   # the grade-5 change that a fatal CRS or ICANS is
        "patient_id": fatal["patient_id"].to_numpy(), "day": fatal["death_day"].to_numpy(),
        "event": fatal["death_cause"].map({"crs": "crs_grade", "icans": "icans_grade"}).to_numpy(),
        "value": 5.0, "detail": fatal["death_cause"].map(
            {"crs": "CRS grade 4 -> 5 (ASTCT)", "icans": "ICANS grade 4 -> 5 (ASTCT)"}).to_numpy()}))
    events = pd.concat([e for e in event_parts if not e.empty] or event_parts[-1:], ignore_index=True)
    death_of = events["patient_id"].map(dict(zip(patients["patient_id"], patients["death_day"])))
    events = events[~(events["day"] > death_of)]   # nothing is observed after death
    events = events.sort_values(["patient_id", "day"], kind="stable", ignore_index=True)
    events.insert(1, "arm", events["patient_id"].map(dict(zip(patients["patient_id"], patients["arm"]))))
    trajectories, order = {}, np.array([], dtype=np.int64)
    if traj_parts:
        order = np.concatenate(traj_ids)
        sort = np.argsort(order, kind="stable")
        trajectories = {q: np.concatenate([p[q] for p in traj_parts])[sort] for q in traj_parts[0]}
        order = order[sort]
    return TrialResult(scenario, specs, patients, events, times, trajectories, order, cohorts, chain,
                       plan.population, allocation, column_parts)
