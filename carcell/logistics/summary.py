"""What a trial or a logistics run reports about the chain, its cost, and access.

* :func:`chain_summary`: per route, patients referred, infused, not infused by reason, still
  waiting; vein-to-vein and referral-to-infusion times; waits; resource use.
* :func:`trial_costs`: each patient's cost (carcell.logistics.cost) by arm, summaries per
  patient, per infused patient and per responder, life years, QALYs and the ICER of each arm
  against the reference arm.
* :func:`trial_access`: the region's eligible patients with their fate, per stratum and arm.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from carcell.knowledge import load_knowledge
from carcell.logistics.access import equity_gaps, equity_table
from carcell.logistics.cost import COMPONENTS, comparator_costs, cost_summary, icer, life_years, patient_costs, qalys

REASONS = ("ineligible", "progression", "death", "manufacturing_failure", "no_product")
# comparators whose care comparator_costs prices (second-line LBCL salvage and transplant)
COSTED_COMPARATORS = ("LBCL_2L_salvage_ASCT",)


def _quartiles(x: pd.Series) -> dict:
    x = pd.to_numeric(x, errors="coerce").dropna()
    if x.empty:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": int(x.size)}


def chain_summary(patients: pd.DataFrame, usage: pd.DataFrame) -> dict:
    """Per route: flow, times, waits and the use of each finite resource."""
    out = {}
    for route, g in patients.groupby("route", sort=True):
        infused = g[g["state"] == "infused"]
        lost = g[g["state"] == "not_infused"]
        u = usage[usage["route"] == route] if "route" in usage else usage.iloc[0:0]
        resources = {}
        for res, r in u.groupby("resource", sort=True):
            cap = r["capacity"].to_numpy(float)
            finite = np.isfinite(cap) & (cap > 0)
            resources[res] = {
                "capacity": float(np.nanmax(cap)) if finite.any() else None,
                "mean_utilisation": float(np.mean(r["in_use"].to_numpy(float)[finite] / cap[finite]))
                if finite.any() else None,
                "mean_in_use": float(r["in_use"].mean()),
                "max_queue": int(r["queue"].max()) if r["queue"].notna().any() else 0,
            }
        span_months = max((g["arrival_day"].max() - g["arrival_day"].min()) / 30.4375, 1e-9)
        out[str(route)] = {
            "referred": int(len(g)),
            "infused": int(len(infused)),
            "infused_share": float(len(infused) / len(g)) if len(g) else None,
            "not_infused": {r: int((lost["reason"] == r).sum()) for r in REASONS},
            "still_waiting": int((g["state"] == "waiting").sum()),
            "vein_to_vein_days": _quartiles(infused["vein_to_vein_days"]),
            "referral_to_infusion_days": _quartiles(infused["referral_to_infusion_days"]),
            "wait_for_slot_days": _quartiles(g["wait_for_slot_days"]) if "wait_for_slot_days" in g else None,
            "remanufactured": int((g["attempts"] > 1).sum()) if "attempts" in g else 0,
            "out_of_spec": int(infused["out_of_spec"].astype(bool).sum()) if "out_of_spec" in g else 0,
            "bridged": int(g["bridged"].astype(bool).sum()) if "bridged" in g else 0,
            "infusions_per_month": float(len(infused) / span_months) if len(g) > 1 else None,
            "resources": resources,
        }
    return out


def _product_of(arm) -> str:
    p = arm.scenario.product
    return p.preset or p.name


def price_key(product: str, route_kind: str) -> str:
    """What a product is priced as: its list price when made centrally; when made at the point
    of care or taken off the shelf, the route's cost-based price (a commercial list price is
    for the commercial process, not for the same cells made another way)."""
    return product if route_kind == "autologous" else route_kind


def trial_costs(result) -> tuple[pd.DataFrame, dict]:
    """Costs per patient (``costs.parquet``) and per arm, with life years, QALYs and ICERs.

    Survival in chained arms is counted from enrolment, which is the right origin for the
    effects; the index stay and follow-up costs use time from infusion."""
    k = load_knowledge()
    sc = result.scenario
    horizon = sc.trial.follow_up_days
    frames, arms = [], {}
    for arm in result.arms:
        df = result.patients[result.patients["arm"] == arm.name].copy()
        if df.empty:
            continue
        if arm.kind == "soc":
            if arm.standard_of_care not in COSTED_COMPARATORS:
                arms[arm.name] = {"product": arm.standard_of_care, "route_kind": "standard_of_care",
                                  "note": f"no cost data for {arm.standard_of_care} in costs.yaml (costed: "
                                          f"{', '.join(COSTED_COMPARATORS)})"}
                continue
            costs = comparator_costs(df, k)
            for c in COMPONENTS:   # the comparator's own components (salvage, transplant) come first
                costs[c] = 0.0
            costs = costs[["patient_id", "salvage", "transplant", *COMPONENTS, "total"]]
            product, kind = arm.standard_of_care, "standard_of_care"
        else:
            kind = "autologous"
            if result.chain is not None and arm.name in result.chain.arms:
                kind = result.chain.arms[arm.name].route.kind
                flow = result.chain.arm_patients(arm.name).set_index("patient_id").loc[df["patient_id"]]
                df["apheresis_day"] = flow["apheresis_day"].to_numpy(float)
                offset = np.nan_to_num(df["referral_to_infusion_days"].to_numpy(float))
                df["os_days"] = df["os_days"].to_numpy(float) - np.where(df["infused"].astype(bool), offset, 0.0)
            product = price_key(_product_of(arm), kind)
            costs = patient_costs(df, product, kind, k)
        costs.insert(1, "arm", arm.name)
        frames.append(costs)
        effects = result.patients[result.patients["arm"] == arm.name]
        arms[arm.name] = {
            "product": product, "route_kind": kind,
            **cost_summary(costs, df),
            "life_years": life_years(effects, horizon, k=k),
            "qalys": qalys(effects, horizon, k=k),
            "horizon_days": horizon,
        }
    ref = result.reference_arm
    if ref in arms and "per_patient" in arms[ref]:
        for name, a in arms.items():
            if name != ref and "per_patient" in a:
                a["vs_reference"] = {"reference": ref,
                                     "per_life_year": icer(a["per_patient"], a["life_years"],
                                                           arms[ref]["per_patient"], arms[ref]["life_years"]),
                                     "per_qaly": icer(a["per_patient"], a["qalys"],
                                                      arms[ref]["per_patient"], arms[ref]["qalys"])}
    costs = pd.concat(frames, ignore_index=True).fillna({"salvage": 0.0, "transplant": 0.0}) if frames else pd.DataFrame()
    return costs, arms


def population_fates(population: pd.DataFrame, flow: pd.DataFrame | None,
                     costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """The eligible patients with what became of them: ``state`` ("not_referred" unless the
    chain says otherwise), ``reason``, ``referral_to_infusion_days`` and, given costs,
    ``cost_total``."""
    pop = population.copy()
    ids = pop["patient_id"].to_numpy()
    pop["state"] = "not_referred"
    pop["reason"] = ""
    if flow is not None:
        f = flow.set_index("patient_id")
        seen = np.isin(ids, f.index)
        for col in ("state", "reason", "referral_to_infusion_days"):
            pop.loc[seen, col] = f.loc[ids[seen], col].to_numpy()
    if costs is not None and not costs.empty:
        pop["cost_total"] = pop["patient_id"].map(dict(zip(costs["patient_id"], costs["total"])))
    return pop


def trial_access(result, costs: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """The eligible population with each patient's fate (``access.parquet``) and the equity
    tables per arm and stratum, with the gaps to the best-served stratum."""
    trial = result.patients.set_index("patient_id")
    ids = result.population["patient_id"].to_numpy()
    in_trial = np.isin(ids, trial.index)
    pop = population_fates(result.population, result.chain.result.patients if result.chain else None, costs)
    pop["arm"] = None
    pop.loc[in_trial, "arm"] = trial.loc[ids[in_trial], "arm"].to_numpy()
    tables = {}
    # every eligible patient is allocated to an arm, referred or not, so each arm's table
    # counts its own eligible patients and what became of them
    alloc = result.allocation_of(ids)
    for arm in [a.name for a in result.arms]:
        g = pop[alloc == arm].reset_index(drop=True)
        if g.empty:
            continue
        table = equity_table(g, by="stratum")
        best = table.loc[table["fraction_treated"].idxmax(), "stratum"]
        tables[arm] = {"strata": table.to_dict(orient="records"),
                       "gaps": equity_gaps(table, best).to_dict(orient="records"),
                       "overall": {"n_eligible": int(len(g)), "n_referred": int(g["referred"].sum()),
                                   "n_infused": int((g["state"] == "infused").sum()),
                                   "fraction_treated": float((g["state"] == "infused").mean())}}
    pop["allocated_arm"] = alloc
    return pop, tables
