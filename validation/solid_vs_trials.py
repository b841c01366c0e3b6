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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

sys.path.insert(0, str(Path(__file__).parent))
from toxicity_measures import binomial_deviance, interval  # noqa: E402

from carcell.cohort import run_cohort  # noqa: E402
from carcell.io.yamlio import load_yaml  # noqa: E402
from carcell.knowledge import load_knowledge  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261130
FOLLOW_UP_DAYS = 180      # best response within six months, as in the phase 1 report
NEGATIVE = "antigens.CLDN18.2.indications.gastric.negative_cell_fraction"
WEIGHT, GAIN = "tme.proliferation_weight", "tme.exhaustion_gain"


def set_values(weight: float, negative: float, gain_ratio: float) -> None:
    """Write the two fitted values into the cached knowledge tree the next run reads
    (``exhaustion_gain`` = ``gain_ratio`` x the proliferation weight)."""
    k = load_knowledge(False)
    k.node(WEIGHT)["value"] = weight
    k.node(GAIN)["value"] = weight * gain_ratio
    k.node(NEGATIVE)["value"] = [negative, k.node(NEGATIVE)["value"][1]]


def simulate(n: int, seed: int = SEED) -> dict[str, float]:
    t = load_yaml(ROOT / "validation" / "targets" / "solid_ct041.yaml")
    sc = load_scenario(ROOT / t["example"], [f"population.n={n}", f"population.seed={seed}",
                                             f"trial.follow_up_days={FOLLOW_UP_DAYS}"])
    p = run_cohort(sc).patients
    p = p[p["solver_status"] == "ok"]
    best = p["best_response"]
    return {"orr": float(best.isin(["CR", "PR"]).mean()),
            "disease_control": float(best.isin(["CR", "PR", "SD"]).mean()),
            "crs_any": float((p["crs_max_grade"] >= 1).mean()),
            "crs_grade3plus": float((p["crs_max_grade"] >= 3).mean()),
            "icans_any": float((p["icans_max_grade"] >= 1).mean())}


def report(sim: dict[str, float]) -> None:
    t = load_yaml(ROOT / "validation" / "targets" / "solid_ct041.yaml")
    print(f"{'measure':18s} {'model':>6s} {'CT041':>6s} {'95% CI':>11s}  agrees")
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--fit", action="store_true")
    ap.add_argument("--evals", type=int, default=30)
    args = ap.parse_args()
    if args.fit:
        fit(args.n, args.evals)
    else:
        print(f"{args.n} virtual patients (seed {SEED}), satri-cel 2.5e8 CAR T cells, follow-up {FOLLOW_UP_DAYS} days\n")
        report(simulate(args.n))


if __name__ == "__main__":
    main()
