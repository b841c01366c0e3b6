"""Fit the toxicity sign thresholds to the CRS and neurotoxicity rates of the pivotal trials.

    python validation/calibrate_toxicity.py [--n 100] [--evals 40]

Parameters (knowledge/data/toxicity.yaml, typical values): ``signs.fever_il6_half``,
``signs.leak_il6_half``, ``signs.icans_half``, ``endothelium.half_activation``.
Targets (validation/targets/toxicity.yaml): CRS any grade and grade >= 3 on each trial's own
scale, and grade >= 3 neurotoxicity, for ZUMA-1, JULIET, ELIANA and KarMMa, under the ASCO
2021 protocol. Any-grade neurotoxicity is left out: the trials counted it with CTCAE, which
finds 2-3 times more events than ASTCT ICANS (reference/clinical.md 1.9).

Method: binomial deviance between the simulated rate and the trial's count (events out of
patients infused), summed over trials and measures; Nelder-Mead on the logarithms of the
parameters, with common random numbers (the same virtual patients at every evaluation). The
script prints the fit beside the data and the values to write into toxicity.yaml.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from carcell.cohort import run_cohort
from carcell.io.yamlio import load_yaml
from carcell.knowledge import load_knowledge
from carcell.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("signs.fever_il6_half", "signs.leak_il6_half", "signs.icans_half", "endothelium.half_activation")
MEASURES = ("crs_any", "crs_grade3plus", "neuro_grade3plus")


def _set(params: dict[str, float]) -> None:
    """Write parameter values into the cached knowledge tree used by the next runs."""
    k = load_knowledge(False)
    for path, v in params.items():
        node = k.node(f"toxicity.{path}")
        node["value"] = float(v)


def rates(trial: dict, n: int) -> dict[str, float]:
    sc = load_scenario(ROOT / trial["example"], [f"population.n={n}", "trial.follow_up_days=45"])
    p = run_cohort(sc).patients
    ok = p[p["solver_status"] == "ok"]
    crs = ok[f"crs_max_grade_{trial['crs_scale']}"]
    return {"crs_any": float((crs >= 1).mean()), "crs_grade3plus": float((crs >= 3).mean()),
            "neuro_grade3plus": float((ok["icans_max_grade"] >= 3).mean())}


def deviance(model: float, observed: float, size: int) -> float:
    m = min(max(model, 0.5 / size), 1 - 0.5 / size)
    k = observed * size
    with np.errstate(divide="ignore", invalid="ignore"):
        a = k * np.log(observed / m) if observed > 0 else 0.0
        b = (size - k) * np.log((1 - observed) / (1 - m)) if observed < 1 else 0.0
    return 2 * (a + b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--evals", type=int, default=40)
    args = ap.parse_args()
    targets = load_yaml(ROOT / "validation" / "targets" / "toxicity.yaml")
    k = load_knowledge(False)
    start = {p: float(k.value(f"toxicity.{p}")) for p in PARAMS}
    original = copy.deepcopy(start)
    history = []

    def objective(x: np.ndarray) -> float:
        _set(dict(zip(PARAMS, np.exp(x))))
        total = 0.0
        for t in targets.values():
            sim = rates(t, args.n)
            total += sum(deviance(sim[m], float(t[m]["value"]), int(t["infused"])) for m in MEASURES if m in t)
        history.append((total, np.exp(x)))
        print(f"  eval {len(history):3d}: deviance {total:8.2f}  " +
              "  ".join(f"{p.split('.')[-1]}={v:.4g}" for p, v in zip(PARAMS, np.exp(x))), flush=True)
        return total

    x0 = np.log([start[p] for p in PARAMS])
    # a wide first simplex (each parameter x3): the priors may be far off
    simplex = np.vstack([x0] + [x0 + np.log(3.0) * np.eye(len(x0))[i] for i in range(len(x0))])
    res = minimize(objective, x0, method="Nelder-Mead",
                   options={"maxfev": args.evals, "xatol": 0.02, "fatol": 0.5, "initial_simplex": simplex})
    best = dict(zip(PARAMS, np.exp(res.x)))
    _set(best)
    print(f"\nstart deviance {history[0][0]:.2f}, best {res.fun:.2f} after {len(history)} evaluations\n")
    print(f"{'trial':8s} {'measure':18s} {'model':>6s} {'trial':>6s}")
    for name, t in targets.items():
        sim = rates(t, args.n)
        for m in MEASURES:
            if m in t:
                print(f"{name:8s} {m:18s} {sim[m]:6.2f} {float(t[m]['value']):6.2f}")
    print("\nvalues for knowledge/data/toxicity.yaml (source: fit):")
    for p in PARAMS:
        print(f"  {p}: {best[p]:.4g}   (was {original[p]:.4g})")


if __name__ == "__main__":
    main()
