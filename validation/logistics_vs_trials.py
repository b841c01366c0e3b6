"""The manufacturing chain beside the pivotal trials: vein-to-vein times and the share of
enrolled patients never infused, for ZUMA-1, JULIET, ELIANA and KarMMa.

    python validation/logistics_vs_trials.py [--n 1000]        # compare
    python validation/logistics_vs_trials.py --fit [--n 2000]  # refit progression_fold

Each trial's conditions come from knowledge/data/manufacturing.yaml (``trials``): the route,
the enrolment rate (enrolled / enrolment months), the bridging share. Enrolment is taken as
leukapheresis (``referral_to_apheresis`` = 0, and no screen failures: the trials count patients
enrolled after screening). The virtual patients are the
trial's example population (examples/trial_*.yaml, with its calibration), whose tumours grow
while they wait (carcell/logistics/waiting.py). Capacity is the route's default (unlimited).

Targets and tolerances:
* time medians: within 20% of the published median (a trial's median from ~100 patients, and
  a median of trial medians, are themselves uncertain by about that much);
* share never infused: inside the 95% Clopper-Pearson interval of the trial's count.

Calibration: ``infusion_scheduling`` (shared by every route) was sized on the axi-cel trials'
vein-to-vein median, so ZUMA-1's vein-to-vein is in-sample; the other times are checks.
``waiting.eligibility.progression_fold`` (one value for all diseases) is fitted here, with
``--fit``, by a grid search minimising the summed binomial deviance of the four trials'
not-infused counts; everything else about who is not infused (manufacturing failure,
bridging, growth) comes from sourced data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from carcell.io.yamlio import load_yaml
from carcell.knowledge import load_knowledge
from carcell.logistics.routes import load_routes
from carcell.logistics.run import referral_days, run_trial_chain
from carcell.scenario.load import validate_raw
from carcell.trial.stats import binomial_rate

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {"ZUMA-1": "trial_zuma1.yaml", "JULIET": "trial_juliet.yaml",
            "ELIANA": "trial_eliana.yaml", "KarMMa": "trial_karmma.yaml"}
SEED = 20261130
TIME_TOLERANCE = 0.20


def trial_scenario(k, trial: str, n: int, fold: float | None):
    """The trial's example scenario, sent through its route under the trial's conditions."""
    t = k.node(f"manufacturing.trials.{trial}")
    raw = load_yaml(ROOT / "examples" / EXAMPLES[trial])
    raw["population"].update(n=n, seed=SEED)
    for arm in raw.get("trial", {}).get("arms", []):
        arm.pop("not_infused_fraction", None)
    rate = float(t["enrolled"]["value"]) / float(t["enrolment_months"]["value"])
    raw["manufacturing"] = {
        "route": t["route"], "referrals_per_month": rate, "eligibility_fold": fold,
        "steps": {"referral_to_apheresis": {"kind": "fixed", "value": 0.0}, "screen_failure": 0.0,
                  "bridging_fraction": float(t["bridging_fraction"]["value"])}}
    return validate_raw(raw, f"{trial} ({EXAMPLES[trial]})")


def simulate(k, trial: str, n: int, fold: float | None):
    """The chain's patients for the trial's virtual population."""
    sc = trial_scenario(k, trial, n, fold)
    arms = [(sc.trial.arms[0].name if sc.trial.arms else "arm", sc, None, np.arange(n, dtype=np.int64))]
    chain = run_trial_chain(k, sc, arms, referral_days(n, sc.manufacturing.referrals_per_month, SEED))
    return chain.result.patients


def measured(df, interval: str, route) -> float:
    """The simulated counterpart of a published time (see the trials' targets)."""
    inf = df[df["state"] == "infused"]
    if interval == "apheresis_to_infusion":
        return float(inf["vein_to_vein_days"].median())
    if interval == "enrolment_to_infusion":
        return float(inf["referral_to_infusion_days"].median())
    released = df.dropna(subset=["release_day"])
    span = released["release_day"] - released["apheresis_day"]
    if interval == "apheresis_to_release":
        return float(span.median())
    if interval == "apheresis_to_delivery":   # a mean, as ZUMA-1 reports it: release, then shipping back
        return float(span.mean()) + route.shipping_back.mean
    raise ValueError(f"unknown interval {interval!r}")


def deviance(k, frames: dict, n: int) -> float:
    total = 0.0
    for trial, df in frames.items():
        t = k.node(f"manufacturing.trials.{trial}")
        enrolled, infused = int(t["enrolled"]["value"]), int(t["targets"]["infused"]["value"])
        p = np.clip((df["state"] != "infused").mean(), 0.5 / n, 1 - 0.5 / n)
        lost = enrolled - infused
        total += -2 * (lost * np.log(p) + infused * np.log1p(-p))
    return float(total)


def fit(k, n: int) -> float:
    grid = np.round(np.exp(np.linspace(np.log(3.0), np.log(30.0), 25)), 3)
    print(f"fitting waiting.eligibility.progression_fold on {n} virtual patients per trial")
    print(f"{'fold':>7s}  {'deviance':>9s}  " + "  ".join(f"{t:>7s}" for t in EXAMPLES))
    best = (np.inf, None)
    for fold in grid:
        frames = {t: simulate(k, t, n, float(fold)) for t in EXAMPLES}
        d = deviance(k, frames, n)
        shares = "  ".join(f"{(f['state'] != 'infused').mean():7.3f}" for f in frames.values())
        print(f"{fold:7.3f}  {d:9.2f}  {shares}")
        best = min(best, (d, float(fold)))
    print(f"\nbest progression_fold = {best[1]:g} (summed binomial deviance {best[0]:.2f})")
    return best[1]


def compare(k, n: int, fold: float | None) -> int:
    misses = 0
    print(f"{n} virtual patients per trial (seed {SEED}); times: within {TIME_TOLERANCE:.0%} of the "
          "published value; never infused: inside the trial's 95% CI\n")
    print(f"{'trial':7s} {'measure':34s} {'model':>7s} {'trial':>7s} {'accepted':>13s}  agrees")
    for trial in EXAMPLES:
        t = k.node(f"manufacturing.trials.{trial}")
        df = simulate(k, trial, n, fold)
        for name, target in t["targets"].items():
            if target["interval"] == "enrolled_infused":
                enrolled, infused = int(t["enrolled"]["value"]), int(target["value"])
                ci = binomial_rate(enrolled - infused, enrolled)
                model = float((df["state"] != "infused").mean())
                ok = ci["ci95"][0] <= model <= ci["ci95"][1]
                print(f"{trial:7s} {'never infused (share of enrolled)':34s} {model:7.3f} "
                      f"{ci['estimate']:7.3f} {ci['ci95'][0]:6.3f}-{ci['ci95'][1]:.3f}  {'yes' if ok else 'NO'}")
                reasons = df.loc[df["state"] != "infused", "reason"].value_counts(normalize=False)
                split = ", ".join(f"{r} {c / len(df):.3f}" for r, c in reasons.items()) or "none"
                print(f"{'':7s}   by reason: {split}")
            else:
                model = measured(df, target["interval"], load_routes(k)[t["route"]])
                value = float(target["value"])
                lo, hi = value * (1 - TIME_TOLERANCE), value * (1 + TIME_TOLERANCE)
                ok = lo <= model <= hi
                label = f"{target['interval'].replace('_', ' ')} ({target['statistic']})"
                print(f"{trial:7s} {label:34s} {model:7.1f} {value:7.1f} {lo:6.1f}-{hi:<6.1f}  {'yes' if ok else 'NO'}")
            misses += not ok
    print(f"\n{'all inside' if not misses else f'{misses} outside'} their accepted ranges")
    return misses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--fit", action="store_true", help="refit waiting.eligibility.progression_fold")
    args = ap.parse_args()
    k = load_knowledge()
    fold = fit(k, args.n) if args.fit else None
    print()
    compare(k, args.n, fold)


if __name__ == "__main__":
    main()
