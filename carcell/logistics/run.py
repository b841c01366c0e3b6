"""Tie the chain to scenarios and trials: who is referred when, how their disease grows while
they wait, and what the chain decides for each (infused on a day, or not infused and why).

A CAR arm with a manufacturing route (the scenario's ``manufacturing`` section, refined by the
arm's) sends its patients through :func:`carcell.logistics.chain.simulate_chain`. Arms naming
the same route without step overrides share its capacity, as products made in one facility do.
Referral days come from a Poisson process over patient ids (patients are numbered in order of
enrolment) or, with an ``access`` section, from the region's eligible population.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import Knowledge
from carcell.logistics.access import load_region, region_with, sample_population
from carcell.logistics.chain import ChainResult, simulate_chain
from carcell.logistics.routes import Route, capacity_with, load_routes, route_with
from carcell.logistics.waiting import WaitingDisease
from carcell.scenario.schema import Manufacturing, Scenario
from carcell.trial.survival import DeathModel, uniforms
from carcell.units import DAYS_PER_MONTH

_ARRIVAL_ENTROPY = 0xA441   # the referral-gap stream, apart from every other draw


def referral_days(n: int, per_month: float, seed: int) -> np.ndarray:
    """Calendar day of referral of patients 0..n-1: a Poisson process in id order, each gap
    drawn from its patient's own stream (so patient i's day depends only on ids <= i)."""
    gaps = np.array([np.random.default_rng(np.random.SeedSequence([seed, _ARRIVAL_ENTROPY, i])).exponential()
                     for i in range(n)])
    return np.cumsum(gaps) * DAYS_PER_MONTH / per_month


def arm_manufacturing(scenario: Scenario, arm_override: dict | None) -> Manufacturing | None:
    """The arm's manufacturing section: the scenario's, with the arm's keys over it."""
    if scenario.manufacturing is None and arm_override is None:
        return None
    base = scenario.manufacturing.model_dump() if scenario.manufacturing else {}
    return Manufacturing.model_validate({**base, **(arm_override or {})})


def route_key(m: Manufacturing, arm: str) -> str:
    """The chain's name for an arm's route: shared unless the arm changes its steps or capacity."""
    return m.route if not (m.steps or m.capacity) else f"{m.route} ({arm})"


@dataclass
class ArmWaiting:
    """One arm's patients as they enter the chain."""

    arm: str
    ids: np.ndarray
    route: Route
    disease: WaitingDisease


@dataclass
class TrialChain:
    """The chain of a whole trial, and each arm's waiting disease (to grow the burden to infusion)."""

    result: ChainResult
    arms: dict[str, ArmWaiting]
    result_horizon: float        # calendar day the chain stopped

    def arm_patients(self, arm: str) -> pd.DataFrame:
        df = self.result.patients
        return df[df["arm"] == arm].set_index("patient_id").loc[self.arms[arm].ids].reset_index()

    def burden_factor(self, arm: str, ids: np.ndarray) -> np.ndarray:
        """Burden at infusion / burden at referral, for infused patients ``ids`` of the arm."""
        w = self.arms[arm]
        rows = self.arm_patients(arm).set_index("patient_id")
        days = rows.loc[ids, "referral_to_infusion_days"].to_numpy(float)
        sub = w.disease.take(pd.Index(w.ids).get_indexer(ids))
        return sub.burden_at(days) / sub.burden


def plan_arm(k: Knowledge, scenario: Scenario, arm: str, m: Manufacturing, ids: np.ndarray,
             arrival: np.ndarray, deaths: DeathModel) -> tuple[pd.DataFrame, ArmWaiting, Route]:
    """The referral rows of one arm: arrival, when each would drop out, and who is bridged."""
    route = route_with(load_routes(k)[m.route], m.steps)
    design = resolve_design(scenario, k)
    c = compile_chunk(design, 0, 0, ids=ids)
    cov = c.covariates
    disease = WaitingDisease.draw(
        k, scenario.indication.disease, cov["baseline_burden_cells"].to_numpy(), c.params.tumour_growth_rate,
        c.params.tumour_capacity, route.bridging_fraction, ids, scenario.population.seed, m.eligibility_fold)
    u = uniforms(scenario.population.seed, ids)
    other = deaths.background_death_day(cov["age_years"].to_numpy(), u[:, 5])
    disease_death = disease.disease_death_after()
    rows = pd.DataFrame({
        "patient_id": ids, "arm": arm, "route": route_key(m, arm), "arrival_day": arrival,
        "ineligible_after_days": disease.ineligible_after(),
        "death_after_days": np.minimum(disease_death, other),
        "death_cause_waiting": np.where(disease_death <= other, "progression", "other"),
        "bridged": disease.bridged, "age_years": cov["age_years"].to_numpy(),
        "weight_kg": cov["weight_kg"].to_numpy(), "referral_burden_cells": cov["baseline_burden_cells"].to_numpy(),
    })
    return rows, ArmWaiting(arm, ids, route, disease), route


def run_trial_chain(k: Knowledge, scenario: Scenario, arms: list[tuple[str, Scenario, dict | None, np.ndarray]],
                    arrival_of: np.ndarray) -> TrialChain | None:
    """Send every chained CAR arm's patients through one chain. ``arms`` lists (name, the arm's
    scenario, its manufacturing override, its patient ids); ``arrival_of[id]`` is each
    patient's referral day."""
    deaths = DeathModel.from_knowledge(k, scenario.indication.disease)
    frames, waiting, routes, capacity = [], {}, {}, {}
    for name, arm_scenario, override, ids in arms:
        m = arm_manufacturing(scenario, override)
        if m is None or ids.size == 0:
            continue
        rows, w, route = plan_arm(k, arm_scenario, name, m, ids, arrival_of[ids], deaths)
        key = route_key(m, name)
        routes[key] = route
        capacity[key] = capacity_with(route.capacity, m.capacity)
        frames.append(rows)
        waiting[name] = w
    if not frames:
        return None
    referrals = pd.concat(frames, ignore_index=True)
    horizon = float(referrals["arrival_day"].max()) + scenario.trial.follow_up_days
    result = simulate_chain(referrals, routes, capacity, horizon, scenario.population.seed)
    return TrialChain(result, waiting, horizon)


def referrals(scenario: Scenario, specs: list, region_levers: dict | None = None
              ) -> tuple[pd.DataFrame | None, np.ndarray, np.ndarray | None]:
    """Who enters the trial, and when each patient id is referred.

    Returns the access region's eligible patients (``population.n`` of them; None without an
    access section), a mask of the ids that enter the trial (the referred ones; all without
    access), and each id's referral day (None when no CAR arm has a manufacturing chain)."""
    n, seed = scenario.population.n, scenario.population.seed
    chained = [m for a in specs if a.kind == "car"
               and (m := arm_manufacturing(scenario, a.manufacturing)) is not None]
    a = scenario.access
    if a is not None:
        region = region_with(region_with(load_region(a.region), a.levers), region_levers)
        population = sample_population(region, n, a.period_days, seed)
        return population, population["referred"].to_numpy(bool), population["arrival_day"].to_numpy(float)
    arrival = referral_days(n, chained[0].referrals_per_month, seed) if chained else None
    return None, np.ones(n, dtype=bool), arrival


def from_enrolment(df: pd.DataFrame, offset: np.ndarray, follow_up: float) -> pd.DataFrame:
    """Count an infused patient's PFS, EFS and OS from enrolment (referral), not infusion, and
    censor at the end of follow-up after enrolment; a death after that is not observed."""
    df = df.copy()
    for e in ("pfs", "efs", "os"):
        days = df[f"{e}_days"].to_numpy(float) + offset
        df[f"{e}_event"] = df[f"{e}_event"].to_numpy(bool) & (days <= follow_up)
        df[f"{e}_days"] = np.minimum(days, follow_up)
    unseen = df["death_day"].notna().to_numpy() & ~df["os_event"].to_numpy(bool)
    df.loc[unseen, "death_day"] = np.nan
    df.loc[unseen, "death_cause"] = "none"
    return df


def with_chain_columns(df: pd.DataFrame, flow: pd.DataFrame) -> pd.DataFrame:
    """Add each patient's path through the chain to the trial's patient rows."""
    f = flow.set_index("patient_id").loc[df["patient_id"].to_numpy()]
    infused = (f["state"] == "infused").to_numpy()
    out = df.copy()
    out["route"] = f["route"].to_numpy()
    out["referral_day"] = f["arrival_day"].to_numpy(float)
    out["referral_to_infusion_days"] = f["referral_to_infusion_days"].to_numpy(float)
    out["vein_to_vein_days"] = f["vein_to_vein_days"].to_numpy(float)
    out["not_infused_reason"] = np.where(infused, "", np.where(f["state"] == "waiting", "still_waiting",
                                                               f["reason"].to_numpy(object)))
    out["bridged"] = f["bridged"].to_numpy(bool)
    out["manufacturing_attempts"] = f["attempts"].to_numpy(int)
    out["out_of_spec"] = f["out_of_spec"].to_numpy(bool)
    return out


# -- the chain alone: `carcell logistics` ---------------------------------------------------------

ROUTE_LEVERS = ("route", "slots_factor")


def with_levers(scenario: Scenario, levers: dict) -> tuple[Scenario, dict]:
    """The scenario with the manufacturing levers applied (``route``: every CAR arm uses that
    route; ``slots_factor``: each route's manufacturing slots per month are multiplied, rounded
    up), and the levers left for the access region."""
    from carcell.scenario.load import validate_raw   # noqa: PLC0415 - the schema imports this package

    levers = dict(levers or {})
    route_levers = {key: levers.pop(key) for key in ROUTE_LEVERS if key in levers}
    if not route_levers:
        return scenario, levers
    raw = scenario.model_dump(mode="json", exclude_none=True)
    sections = [raw["manufacturing"]] if "manufacturing" in raw else []
    sections += [a["manufacturing"] for a in raw["trial"].get("arms", []) if a.get("manufacturing")]
    for m in sections:
        if "route" in route_levers:
            m["route"] = route_levers["route"]
        if "slots_factor" in route_levers:
            base = load_routes()[m["route"]].capacity.slots_per_month
            current = m.get("capacity", {}).get("slots_per_month", base)
            if current is not None:
                m.setdefault("capacity", {})["slots_per_month"] = int(np.ceil(current * float(route_levers["slots_factor"])))
    if "access" in raw:
        raw["access"]["levers"] = {key: v for key, v in raw["access"].get("levers", {}).items() if key not in ROUTE_LEVERS}
    return validate_raw(raw, "levers"), levers


@dataclass
class LogisticsRun:
    """The chain under each compared lever set (``baseline`` first)."""

    scenario: Scenario
    patients: pd.DataFrame      # chain patients of every lever set, column ``scenario``
    usage: pd.DataFrame
    population: pd.DataFrame | None   # eligible patients with their fate, column ``scenario``
    costs: pd.DataFrame


def run_logistics(k: Knowledge, scenario: Scenario,
                  progress: Callable[[str], None] | None = None) -> LogisticsRun:
    """Referral, the chain and chain costs, without the clinical course after infusion."""
    from carcell.logistics.cost import patient_costs   # noqa: PLC0415
    from carcell.logistics.summary import population_fates, price_key   # noqa: PLC0415
    from carcell.trial.run import arm_specs, randomise  # noqa: PLC0415 - the trial layer imports this module

    sets = {"baseline": {}}
    if scenario.access is not None:
        sets.update(scenario.access.compare)
    flows, usages, pops, costs = [], [], [], []
    for name, levers in sets.items():
        if progress is not None:
            progress(name)
        sc, region_levers = with_levers(scenario, levers)
        n, seed = sc.population.n, sc.population.seed
        specs = arm_specs(sc)
        allocation = randomise(n, [a.ratio for a in specs], seed)
        population, in_trial, arrival = referrals(sc, specs, region_levers)
        if arrival is None:
            raise ValueError("no CAR arm has a manufacturing route; add a manufacturing section")
        arms = [(a.name, a.scenario, a.manufacturing, np.flatnonzero((allocation == j) & in_trial))
                for j, a in enumerate(specs) if a.kind == "car"]
        chain = run_trial_chain(k, sc, arms, arrival)
        flow = chain.result.patients.copy()
        flow.insert(0, "scenario", name)
        for arm_name, w in chain.arms.items():
            rows = flow[flow["arm"] == arm_name].copy()
            rows["infused"] = rows["state"] == "infused"
            # the chain alone: no clinical course, so the index stay without toxicity and no follow-up
            rows["os_days"] = float(k.value("costs.hospital.baseline_stay"))
            for col in ("icu_days", "tocilizumab_doses", "steroid_days"):
                rows[col] = 0.0
            spec = next(a for a in specs if a.name == arm_name)
            c = patient_costs(rows, price_key(spec.scenario.product.preset or spec.scenario.product.name,
                                              w.route.kind), w.route.kind, k)
            c.insert(0, "scenario", name)
            c.insert(2, "arm", arm_name)
            c.insert(3, "route", rows["route"].to_numpy())
            costs.append(c)
        usage = chain.result.usage.copy()
        usage.insert(0, "scenario", name)
        flows.append(flow)
        usages.append(usage)
        if population is not None:
            scenario_costs = pd.concat([c for c in costs if c["scenario"].iat[0] == name])
            pop = population_fates(population, chain.result.patients, scenario_costs)
            pop.insert(0, "scenario", name)
            pop["arm"] = np.array([a.name for a in specs], dtype=object)[allocation]
            pops.append(pop)
    return LogisticsRun(scenario, pd.concat(flows, ignore_index=True), pd.concat(usages, ignore_index=True),
                        pd.concat(pops, ignore_index=True) if pops else None, pd.concat(costs, ignore_index=True))
