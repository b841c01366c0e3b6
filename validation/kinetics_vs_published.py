"""Run the tisagenlecleucel-like B-ALL example and compare its kinetics with published values.

Published values (../shared/reference/trials.yaml):
* Stein 2019 (doi:10.1002/psp4.12388), typical values of the ELIANA+ENSIGN population model:
  Tmax 9.3 d, Cmax 24,000 copies/ug, doubling time 0.78 d, initial decline half-life 4.3 d,
  persistence half-life about 220 d.
* ELIANA (Mueller 2018, doi:10.1158/1078-0432.CCR-18-0758), geometric means by response:
  Cmax 34,700 (responders) and 20,000 (non-responders) copies/ug; AUC0-28 318,000 and
  156,000 copies*day/ug.

The simulated cohort is summarised the way the papers did: medians of per-patient Tmax and
Cmax; half-lives and doubling time from the cohort's median curve; geometric means of Cmax and
AUC0-28 split by best response (CR = responder, NR = non-responder).

    python validation/kinetics_vs_published.py [-n 400] [--seed 2018]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from kinetics_measures import measures  # noqa: E402

from carcell.cohort.run import run_cohort  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

PUBLISHED = {
    "tmax_days": 9.3,
    "cmax_copies_per_ug": 24000.0,
    "doubling_time_days": 0.78,
    "initial_decline_half_life_days": 4.3,
    "persistence_half_life_days": 220.0,
    "cmax_responders": 34700.0,
    "cmax_nonresponders": 20000.0,
    "auc0_28_responders": 318000.0,
    "auc0_28_nonresponders": 156000.0,
}

#: allowed model/published ratio, and why
TOLERANCE = {
    "tmax_days": (0.75, 1.33, "Stein's Tmax IIV omega^2=0.38 (SD about 60%); a quarter either way"),
    "cmax_copies_per_ug": (0.5, 2.0, "Cmax IIV omega^2=0.65 plus qPCR conversion assumptions (VCN, WBC)"),
    "doubling_time_days": (0.5, 2.0, "not fitted; the median curve mixes patients with different peaks"),
    "initial_decline_half_life_days": (0.5, 2.0, "not fitted; alpha IIV omega^2=0.91"),
    "persistence_half_life_days": (0.5, 2.0, "beta IIV omega^2=0.86; the median curve over days 180-365"),
    "cmax_responders": (0.33, 3.0, "geometric means of skewed groups; response is not calibrated in this issue"),
    "cmax_nonresponders": (0.2, 5.0, "few simulated non-responders (and 7 in ELIANA)"),
    "auc0_28_responders": (0.33, 3.0, "as Cmax"),
    "auc0_28_nonresponders": (0.2, 5.0, "as Cmax, non-responders"),
}


def gmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.mean(np.log(x)))) if x.size else float("nan")


def simulate(n: int = 400, seed: int = 2018) -> dict[str, float]:
    sc = load_scenario(ROOT / "examples" / "tisacel_ball.yaml",
                       [f"population.n={n}", f"population.seed={seed}", "trial.follow_up_days=365"])
    r = run_cohort(sc)
    df = r.patients[r.patients["solver_status"] == "ok"]
    median_curve = np.nanmedian(r.trajectories["car_copies_per_ug"].astype(float), axis=0)
    m = measures(r.times, median_curve)
    resp = df["best_response"] == "CR"
    return {
        "tmax_days": float(df["tmax_days"].median()),
        "cmax_copies_per_ug": float(df["cmax_copies_per_ug"].median()),
        "doubling_time_days": m["doubling_time_days"],
        "initial_decline_half_life_days": m["initial_decline_half_life_days"],
        "persistence_half_life_days": m["persistence_half_life_days"],
        "cmax_responders": gmean(df.loc[resp, "cmax_copies_per_ug"].to_numpy()),
        "cmax_nonresponders": gmean(df.loc[~resp, "cmax_copies_per_ug"].to_numpy()),
        "auc0_28_responders": gmean(df.loc[resp, "auc_0_28_copies_day_per_ug"].to_numpy()),
        "auc0_28_nonresponders": gmean(df.loc[~resp, "auc_0_28_copies_day_per_ug"].to_numpy()),
        "n_responders": int(resp.sum()),
        "n_nonresponders": int((~resp).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=2018)
    a = ap.parse_args()
    sim = simulate(a.n, a.seed)
    print(f"tisacel-like B-ALL, {a.n} virtual patients "
          f"({sim['n_responders']} CR, {sim['n_nonresponders']} NR)\n")
    print(f"{'measure':34s} {'model':>10s} {'published':>10s} {'ratio':>7s}  allowed   within")
    for k, pub in PUBLISHED.items():
        lo, hi, why = TOLERANCE[k]
        ratio = sim[k] / pub
        ok = lo <= ratio <= hi
        print(f"{k:34s} {sim[k]:10.4g} {pub:10.4g} {ratio:7.2f}  {lo:.2f}-{hi:.2f}  {'yes' if ok else 'NO'}")


if __name__ == "__main__":
    main()
