"""Simulated CRS and neurotoxicity beside the pivotal trials, each on the trial's own CRS scale.

    python validation/toxicity_vs_trials.py [--n 200]

Runs the axi-cel LBCL, tisa-cel LBCL, tisa-cel B-ALL and ide-cel myeloma examples under the
default protocol (ASCO 2021) and prints each rate with the trial's value and its 95%
Clopper-Pearson interval for the trial's size (validation/targets/toxicity.yaml). The
toxicity parameters are not calibrated yet, so many rates fall outside; this script is the
yardstick the calibration will use.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from carcell.cohort import run_cohort
from carcell.io.yamlio import load_yaml
from carcell.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def simulated(p, scale: str) -> dict[str, float]:
    ok = p[p["solver_status"] == "ok"]
    crs = ok["crs_max_grade" if scale == "astct" else f"crs_max_grade_{scale}"]
    return {
        "crs_any": float((crs >= 1).mean()), "crs_grade3plus": float((crs >= 3).mean()),
        "neuro_any": float((ok["icans_max_grade"] >= 1).mean()),
        "neuro_grade3plus": float((ok["icans_max_grade"] >= 3).mean()),
        "tocilizumab_use": float((ok["tocilizumab_doses"] > 0).mean()),
        "steroid_use": float((ok["steroid_days"] > 0).mean()),
        "crs_onset_median_days": float(ok["crs_onset_day"].median()),
        "crs_duration_median_days": float(ok["crs_duration_days"].median()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    n = ap.parse_args().n
    targets = load_yaml(ROOT / "validation" / "targets" / "toxicity.yaml")
    print(f"{n} virtual patients per trial, ASCO 2021 management; 95% CI: Clopper-Pearson for the trial size\n")
    print(f"{'trial':8s} {'measure':26s} {'model':>7s} {'trial':>7s} {'95% CI':>13s}  within  tag")
    for trial, t in targets.items():
        sc = load_scenario(ROOT / t["example"], [f"population.n={n}", "trial.follow_up_days=60"])
        sim = simulated(run_cohort(sc).patients, t["crs_scale"])
        for measure, target in t.items():
            if not isinstance(target, dict):
                continue
            value, model = float(target["value"]), sim[measure]
            if measure.endswith("_days"):
                print(f"{trial:8s} {measure:26s} {model:7.1f} {value:7.1f} {'':>13s}  {'':6s}  {target['tag']}")
                continue
            k = int(round(value * t["infused"]))
            ci = binomtest(k, t["infused"]).proportion_ci(0.95, method="exact")
            inside = ci.low <= model <= ci.high
            print(f"{trial:8s} {measure:26s} {model:7.2f} {value:7.2f} {ci.low:6.2f}-{ci.high:4.2f}  "
                  f"{'yes' if inside else 'NO':6s}  {target['tag']}")
    print("\nCRS on the trial's scale (ZUMA-1, KarMMa: Lee 2014; JULIET, ELIANA: Penn); neurotoxicity "
          "as ASTCT ICANS against the trials' CTCAE counts.")


if __name__ == "__main__":
    main()
