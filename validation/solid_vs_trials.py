"""Claudin18.2 CAR T cells in gastric cancer beside the CT041 phase 1 trial, and the fit of the
solid-tumour layer's two least-known numbers to it.

    python validation/solid_vs_trials.py [--n 200]          # simulated vs trial, 95% CIs
    python validation/solid_vs_trials.py --fit [--n 100]    # refit, print values for the data files

Targets (validation/targets/solid_ct041.yaml, Qi 2022 Nat Med): objective response in gastric
cancer by RECIST, disease control, CRS any grade and grade >= 3, ICANS.

Fitted parameters (everything else is as the data files say):

- ``tme.proliferation_weight``: how strongly the tumour microenvironment's suppression S slows
  CAR-cell proliferation inside the tumour (``exhaustion_gain`` is tied to it: the same signals,
  PD-L1 and TGF-beta, slow expansion and drive exhaustion, so both move by one factor);
- ``antigens.CLDN18.2.indications.gastric.negative_cell_fraction`` (median): the share of
  tumour cells with no claudin18.2 at all. Immunohistochemistry gives only a cut-off (>=2+ in
  >=40% of cells for CT041), not how many of the remaining cells carry none.

Objective: binomial deviance of ORR and disease control for their trial sizes. Method: Nelder-
Mead on logit/log scales with common random numbers (the same virtual patients each time).

Two more fitted parameters (``--fit-tam``), the toxicity side (docs/solid.md, "CRS from the
tumour's macrophages"):

- ``tme.macrophages.il6_per_tumour_cells``: the serum IL-6 that the tumour's own macrophages
  add when all of them are activated, per 1e10 tumour cells;
- ``tme.macrophages.ifng_exchange``: the rate at which IFN-gamma secreted in the tumour leaves
  the macrophages' surroundings (it sets how strongly engaged CAR cells activate them).

In CT041 almost every patient had CRS and none had grade 3 or more: many mild cases, which a
tumour-sized source explains. Objective: binomial deviance of CRS any grade, CRS grade >= 3 and
ICANS. Method: Nelder-Mead on their logs with common random numbers. ``--write`` puts the
values into tme.yaml.

One more (``--fit-tonic``), on GD2-CART01 in neuroblastoma (validation/targets/solid_gd2.yaml):

- ``costim.4-1BB.tonic_exhaustion_weight``: the share of a tonically signalling binder's excess
  exhaustion that a 4-1BB domain keeps (Long 2015: CD28 augments it, 4-1BB relieves it; the
  size is unknown). GD2-CART01's 14G2a binder is the only tonic one among the targets.

Objective: binomial deviance of ORR and CR. Method: bounded scalar search on [0, 1] with common
random numbers, and the nearer end point. CRS is left out of the fit and reported beside it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit, logit

sys.path.insert(0, str(Path(__file__).parent))
from calibrate_toxicity import write_fit  # noqa: E402
from toxicity_measures import binomial_deviance, interval  # noqa: E402

from carcell.cohort import run_cohort  # noqa: E402
from carcell.io.yamlio import load_yaml  # noqa: E402
from carcell.knowledge import load_knowledge  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261130
CT041, GD2 = "solid_ct041.yaml", "solid_gd2.yaml"   # validation/targets/
FOLLOW_UP_DAYS = 180      # best response within six months, as in the phase 1 report
NEGATIVE = "antigens.CLDN18.2.indications.gastric.negative_cell_fraction"
WEIGHT, GAIN = "tme.proliferation_weight", "tme.exhaustion_gain"
TAM = ("tme.macrophages.il6_per_tumour_cells", "tme.macrophages.ifng_exchange")
TOXICITY = ("crs_any", "crs_grade3plus", "icans_any")
TONIC = "costim.4-1BB.tonic_exhaustion_weight"
#: search bounds. IFN-gamma leaves a tissue within about a day at the slowest (serum half-life of
#: hours; a tumour's interstitium drains slowly, so less than the serum rate is allowed): below
#: 1/day the macrophages would be fully activated by any CAR cell in the tumour, NK cells too,
#: which CAR-NK trials do not show (no CRS, docs/solid.md)
TAM_BOUNDS = {"tme.macrophages.il6_per_tumour_cells": (1.0, 1e5), "tme.macrophages.ifng_exchange": (1.0, 50.0)}


def set_values(weight: float, negative: float, gain_ratio: float) -> None:
    """Write the two fitted values into the cached knowledge tree the next run reads
    (``exhaustion_gain`` = ``gain_ratio`` x the proliferation weight)."""
    k = load_knowledge(False)
    k.node(WEIGHT)["value"] = weight
    k.node(GAIN)["value"] = weight * gain_ratio
    k.node(NEGATIVE)["value"] = [negative, k.node(NEGATIVE)["value"][1]]


def simulate(n: int, seed: int = SEED, targets: str = CT041) -> dict[str, float]:
    t = load_yaml(ROOT / "validation" / "targets" / targets)
    sc = load_scenario(ROOT / t["example"], [f"population.n={n}", f"population.seed={seed}",
                                             f"trial.follow_up_days={FOLLOW_UP_DAYS}"])
    p = run_cohort(sc).patients
    p = p[p["solver_status"] == "ok"]
    best = p["best_response"]
    return {"orr": float(best.isin(["CR", "PR"]).mean()), "cr": float((best == "CR").mean()),
            "disease_control": float(best.isin(["CR", "PR", "SD"]).mean()),
            "crs_any": float((p["crs_max_grade"] >= 1).mean()),
            "crs_grade3plus": float((p["crs_max_grade"] >= 3).mean()),
            "icans_any": float((p["icans_max_grade"] >= 1).mean())}


def report(sim: dict[str, float], targets: str = CT041, trial: str = "CT041") -> None:
    t = load_yaml(ROOT / "validation" / "targets" / targets)
    print(f"{'measure':18s} {'model':>6s} {trial:>6s} {'95% CI':>11s}  agrees")
    inside = 0
    for m, target in ((m, v) for m, v in t.items() if isinstance(v, dict)):
        lo, hi = interval(target, int(target["size"]))
        ok = lo <= sim[m] <= hi
        inside += ok
        print(f"{m:18s} {sim[m]:6.2f} {float(target['value']):6.2f} {lo:5.2f}-{hi:4.2f}  {'yes' if ok else 'NO'}")
    print(f"\n{inside} of {sum(isinstance(v, dict) for v in t.values())} inside the trial's 95% interval")


def fit(n: int, evals: int) -> None:
    t = load_yaml(ROOT / "validation" / "targets" / "solid_ct041.yaml")
    k = load_knowledge(False)
    x0 = np.array([np.log(k.value(WEIGHT)), logit(k.value(NEGATIVE)[0])])
    ratio = float(k.value(GAIN)) / float(k.value(WEIGHT))

    def objective(x: np.ndarray) -> float:
        weight, negative = float(np.exp(x[0])), float(expit(x[1]))
        set_values(weight, negative, ratio)
        sim = simulate(n, seed=SEED + 1)   # fit on other patients than the report
        total = sum(binomial_deviance(sim[m], float(t[m]["value"]), int(t[m]["size"]))
                    for m in ("orr", "disease_control"))
        print(f"  weight {weight:.3f}  negative {negative:.3f}: ORR {sim['orr']:.2f} DCR "
              f"{sim['disease_control']:.2f} CRS {sim['crs_any']:.2f}  deviance {total:.2f}", flush=True)
        return total

    simplex = np.array([x0, x0 + [np.log(0.5), 0.0], x0 + [0.0, -1.0]])
    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"maxfev": evals, "xatol": 0.03, "fatol": 0.2, "initial_simplex": simplex})
    weight, negative = float(np.exp(res.x[0])), float(expit(res.x[1]))
    set_values(weight, negative, ratio)
    print(f"\nbest deviance {res.fun:.2f} after {res.nfev} evaluations; values for the data files "
          f"(source: fit):\n  {WEIGHT}: {weight:.3g} ({GAIN} = the same x its ratio)\n  {NEGATIVE}: median {negative:.3g}\n")
    report(simulate(200))


def fit_tam(n: int, evals: int, write: bool) -> None:
    """Fit the tumour macrophages' IL-6 capacity and the IFN-gamma exchange of the tumour to
    CT041's CRS and ICANS rates (Nelder-Mead on their logs, common random numbers)."""
    t = load_yaml(ROOT / "validation" / "targets" / "solid_ct041.yaml")
    k = load_knowledge(False)
    lo, hi = np.log([TAM_BOUNDS[p][0] for p in TAM]), np.log([TAM_BOUNDS[p][1] for p in TAM])
    x0 = np.clip(np.log([float(k.value(p)) for p in TAM]), lo, hi)

    def objective(x: np.ndarray) -> float:
        inside = np.clip(x, lo, hi)
        for path, v in zip(TAM, np.exp(inside)):
            k.node(path)["value"] = float(v)
        sim = simulate(n, seed=SEED + 1)   # fit on other patients than the report
        total = sum(binomial_deviance(sim[m], float(t[m]["value"]), int(t[m]["size"])) for m in TOXICITY)
        total += 100.0 * float(np.sum(np.abs(x - inside)))   # outside the bounds: pushed back
        print("  " + "  ".join(f"{p.rsplit('.', 1)[1]} {v:8.4g}" for p, v in zip(TAM, np.exp(inside)))
              + f": CRS any {sim['crs_any']:.2f}, >= 3 {sim['crs_grade3plus']:.2f}, ICANS {sim['icans_any']:.2f}"
              f"  deviance {total:.2f}", flush=True)
        return total

    before = objective(x0)
    simplex = np.array([x0, x0 + [np.log(10.0), 0.0], x0 + [0.0, np.log(3.0)]])
    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"maxfev": evals, "xatol": 0.05, "fatol": 0.2, "initial_simplex": simplex})
    values = dict(zip(TAM, (float(v) for v in np.exp(np.clip(res.x, lo, hi)))))
    for path, v in values.items():
        k.node(path)["value"] = v
    summary = (f"{res.nfev + 1} evaluations, objective {before:.3g} -> {res.fun:.3g}, Nelder-Mead on the logs "
               f"of both, {n} virtual patients, common random numbers")
    print(f"\n{summary}\n" + "\n".join(f"  {p}: {v:.4g}" for p, v in values.items()) + "\n")
    if write:
        write_fit(values, summary)
    report(simulate(200))


def fit_tonic(n: int, evals: int, write: bool) -> None:
    """Fit the share of a tonically signalling binder's excess exhaustion that a 4-1BB domain
    keeps to GD2-CART01's response (bounded scalar search on [0, 1], common random numbers)."""
    t = load_yaml(ROOT / "validation" / "targets" / GD2)
    k = load_knowledge(False)

    def objective(w: float) -> float:
        k.node(TONIC)["value"] = float(w)
        sim = simulate(n, seed=SEED + 1, targets=GD2)   # fit on other patients than the report
        total = sum(binomial_deviance(sim[m], float(t[m]["value"]), int(t[m]["size"])) for m in ("orr", "cr"))
        print(f"  4-1BB tonic weight {w:.3f}: ORR {sim['orr']:.2f}, CR {sim['cr']:.2f}, "
              f"CRS {sim['crs_any']:.2f}  deviance {total:.2f}", flush=True)
        return total

    before = objective(float(k.value(TONIC)))
    res = minimize_scalar(objective, bounds=(0.0, 1.0), method="bounded",
                          options={"maxiter": evals, "xatol": 0.02})
    # the bounded search never evaluates an end point; compare the nearer one explicitly
    edge = 0.0 if res.x < 0.5 else 1.0
    at_edge = objective(edge)
    best, fun = (edge, at_edge) if at_edge < res.fun else (float(res.x), float(res.fun))
    k.node(TONIC)["value"] = best
    summary = (f"{res.nfev + 2} evaluations, objective {before:.3g} -> {fun:.3g}, bounded scalar search on "
               f"[0, 1] (scipy minimize_scalar, and the nearer end point), {n} virtual patients, "
               f"common random numbers")
    print(f"\n{summary}\n  {TONIC}: {best:.4g}\n")
    if write:
        write_fit({TONIC: best}, summary)
    report(simulate(200, targets=GD2), GD2, "GD2")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--evals", type=int, default=30)
    ap.add_argument("--fit-tam", action="store_true", help="fit the tumour macrophages' IL-6 to CT041's CRS")
    ap.add_argument("--without-tam", action="store_true",
                    help="baseline: the same patients with the tumour macrophages' IL-6 set to 0")
    ap.add_argument("--fit-tonic", action="store_true",
                    help="fit 4-1BB's relief of tonic-signalling exhaustion to GD2-CART01's response")
    ap.add_argument("--write", action="store_true", help="with --fit-tam or --fit-tonic: write the values into the data files")
    args = ap.parse_args()
    if args.without_tam:
        load_knowledge(False).node(TAM[0])["value"] = 0.0
        print(f"baseline: {TAM[0]} = 0 (no IL-6 from the tumour's macrophages)")
    if args.fit_tam:
        fit_tam(args.n, args.evals, args.write)
    elif args.fit_tonic:
        fit_tonic(args.n, args.evals, args.write)
    elif args.fit:
        fit(args.n, args.evals)
    else:
        print(f"{args.n} virtual patients (seed {SEED}), satri-cel 2.5e8 CAR T cells, follow-up {FOLLOW_UP_DAYS} days\n")
        report(simulate(args.n))
        print(f"\nGD2-CART01 in neuroblastoma (Del Bufalo 2023), 1e7 CAR T cells/kg, {args.n} virtual "
              f"patients; one parameter fitted to its ORR and CR ({TONIC}, --fit-tonic)\n")
        report(simulate(args.n, targets=GD2), GD2, "GD2")


if __name__ == "__main__":
    main()
