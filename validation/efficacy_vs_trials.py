"""Calibrated efficacy beside the published trials, re-simulated with fresh seeds.

For each trial with a bundled calibration (carcell/knowledge/data/calibrations), the trial
example is re-simulated (N patients, the seed given here, not the calibration's) and every
target of validation/targets/efficacy_*.yaml is printed with the trial's 95% interval; then
the trial's other published endpoints that were not fitted (overall survival, safety) as a
check out of sample. Safety is simulated on the same patients under the trial's own management
(validation/targets/toxicity.yaml ``protocol``), as in the toxicity validation.

    python validation/efficacy_vs_trials.py [--n 300] [--seed 20261129] [--trials ZUMA-1 KarMMa]

Exits 1 when a calibrated endpoint falls outside its interval.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from carcell.io.yamlio import load_yaml
from carcell.knowledge import load_knowledge
from carcell.scenario.load import load_scenario
from carcell.trial.calibrate import Target, TargetSet, check_table, load_targets, with_levels
from carcell.trial.run import run_trial

HERE = Path(__file__).parent
ROOT = HERE.parent
W = 44   # width of the endpoint column (auc_0_28_copies_day_per_ug_responder_ratio and the like)
sys.path.insert(0, str(HERE))
from kinetics_measures import measures  # noqa: E402
from kinetics_vs_published import PUBLISHED as STEIN  # noqa: E402
from toxicity_measures import DEFAULT_PROTOCOL, agrees, interval, management_sets, simulated  # noqa: E402

# kinetics published per trial (../shared/reference/trials.yaml): column, responders only?, value
KINETICS = {
    "ELIANA": [("cmax_copies_per_ug", True, 34700.0, "Cmax geomean, responders (Mueller 2018, secondary)"),
               ("cmax_copies_per_ug", False, 20000.0, "Cmax geomean, non-responders (secondary)"),
               ("auc_0_28_copies_day_per_ug", True, 318000.0, "AUC0-28 geomean, responders (secondary)")],
}

# Stein 2019's typical phases of the blood curve, not fitted: the median over the infused patients
# of each one's measure (validation/kinetics_measures.py) over the first year, printed beside the
# typical value. The persistence phase is left to validation/kinetics_vs_published.py, which
# reads it from the median curve: one patient's curve from day 180 often does not fall at all
# (a relapse that re-stimulates the cells, or the coexistence with regenerating B cells of
# docs/model.md, section 8).
PHASES = {"ELIANA": ["doubling_time_days", "initial_decline_half_life_days"]}

# trial -> (scenario, targets, calibration, extra --set, published endpoints not fitted)
TRIALS = {
    "ZUMA-1": ("examples/axicel_lbcl.yaml", "efficacy_zuma1.yaml", "axi-cel_LBCL", ["trial.follow_up_days=1095"],
               {"os_median_days": (785.3, 101, "doi:10.1182/blood.2022018893", "25.8 months")}),
    "JULIET": ("examples/tisacel_lbcl.yaml", "efficacy_juliet.yaml", "tisa-cel_LBCL", [], {}),
    "ELIANA": ("examples/tisacel_ball.yaml", "efficacy_eliana_kinetics.yaml", "tisa-cel_B-ALL",
               ["trial.follow_up_days=1095"], {}),
    "KarMMa": ("examples/idecel_mm.yaml", "efficacy_karmma_kinetics.yaml", "ide-cel_MM", ["trial.follow_up_days=1095"],
               {"os_median_days": (754.9, 128, "doi:10.1056/NEJMoa2024850", "24.8 months")}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=20261129)
    ap.add_argument("--trials", nargs="*", default=list(TRIALS))
    args = ap.parse_args(argv)
    shipped = set(load_knowledge(False).names("calibrations"))
    failures = 0
    for name in args.trials:
        scenario, targets, calibration, sets, extra = TRIALS[name]
        if calibration not in shipped:
            print(f"\n{name}: no bundled calibration {calibration!r} yet; skipped")
            continue
        cohort = [*sets, f"population.n={args.n}", f"population.seed={args.seed}", f"population.calibration={calibration}"]
        sc = load_scenario(ROOT / scenario, cohort)
        ts = load_targets(HERE / "targets" / targets)
        result = run_trial(sc)
        patients = with_levels(result, ts)
        table = check_table(patients[patients["infused"]], ts)
        print(f"\n{name}: {sc.name}, {args.n} infused virtual patients, seed {args.seed}, "
              f"calibration {calibration}")
        print(f"{'endpoint':<{W}}{'published':>11}{'95% CI':>20}{'model':>10}  inside")
        for r in table.itertuples():
            print(f"{r.target:<{W}}{r.published:>11.3g}{f'{r.ci95_low:.3g}-{r.ci95_high:.3g}':>20}"
                  f"{r.model:>10.3g}  {'yes' if r.inside else 'NO'}")
            failures += not r.inside
        if extra:   # published, not fitted: a check out of sample
            ts_extra = TargetSet(name, {}, [Target(m, v, nn, None, src, note) for m, (v, nn, src, note) in extra.items()])
            for r in check_table(patients[patients["infused"]], ts_extra).itertuples():
                print(f"{r.target + ' (not fitted)':<{W}}{r.published:>11.3g}"
                      f"{f'{r.ci95_low:.3g}-{r.ci95_high:.3g}':>20}{r.model:>10.3g}  {'yes' if r.inside else 'no'}")
        infused = patients[patients["infused"]]
        safety = load_yaml(HERE / "targets" / "toxicity.yaml").get(name)
        if safety:   # safety on the trial's own scale (fitted in the toxicity calibration, issue 4)
            protocol = safety.get("protocol", DEFAULT_PROTOCOL)
            treated = infused
            if protocol != sc.regimen.protocol:   # the same patients under the trial's own management
                treated = run_trial(load_scenario(ROOT / scenario, [*cohort, *management_sets(safety)])).patients
                treated = treated[treated["infused"]]
            print(f"safety under the trial's management (protocol {protocol}):")
            sim = simulated(treated, safety["crs_scale"])
            for m, target in safety.items():
                if not isinstance(target, dict) or agrees(m, sim[m], target, int(safety["infused"])) is None:
                    continue
                lo, hi = interval(target, int(safety["infused"]))
                ok = agrees(m, sim[m], target, int(safety["infused"]))
                print(f"{m + ' (safety)':<{W}}{target['value']:>11.3g}{f'{lo:.3g}-{hi:.3g}':>20}"
                      f"{sim[m]:>10.3g}  {'yes' if ok else 'no'}")
        for col, responders, value, what in KINETICS.get(name, []):
            sel = infused["best_response"].isin(["CR", "VGPR", "PR"]) == responders
            x = infused.loc[sel, col].to_numpy(float)
            x = x[np.isfinite(x) & (x > 0)]
            model = float(np.exp(np.mean(np.log(x)))) if x.size else float("nan")
            print(f"{col[:16] + (' R' if responders else ' NR'):<{W}}{value:>11.3g}{'':>20}{model:>10.3g}  "
                  f"ratio {model / value:.2f} ({what})")
        if PHASES.get(name):
            rows = pd.Index(result.trajectory_ids).get_indexer(infused["patient_id"].to_numpy())
            times = np.asarray(result.times, float)
            year = times <= 365.0
            curves = result.trajectories["car_copies_per_ug"][rows[rows >= 0]][:, year]
            per_patient = pd.DataFrame([measures(times[year], c) for c in curves])
            for m in PHASES[name]:
                x = per_patient[m].to_numpy(float)
                model = float(np.median(x[~np.isnan(x)]))   # a curve that does not fall: inf, counted
                print(f"{m + ' median':<{W}}{STEIN[m]:>11.3g}{'':>20}{model:>10.3g}  "
                      f"ratio {model / STEIN[m]:.2f} (Stein 2019 typical value, not fitted)")
        deaths = patients.loc[patients["infused"], "death_cause"].value_counts().to_dict()
        print(f"deaths by cause (infused): {deaths}")
        dead = patients["death_day"].notna()
        print(f"non-relapse mortality: {np.mean(dead & ~patients['death_cause'].isin(['progression', 'none'])):.3f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
