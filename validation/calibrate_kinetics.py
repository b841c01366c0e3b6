"""Fit three CAR T-cell rates to the Stein 2019 typical tisagenlecleucel kinetics.

Method: the typical patient of examples/tisacel_ball.yaml (every covariate at its median,
no inter-individual variability) is simulated for 365 days; three named parameters of
carcell/knowledge/data/car_t.yaml are fitted by weighted least squares on log scale
(scipy.optimize.least_squares) to three named targets from reference/trials.yaml
(Stein 2019, doi:10.1002/psp4.12388):

    parameter                 target
    rho_effector              Tmax = 9.3 d
    antigen_half_stimulation  Cmax = 24,000 copies/ug
    k_reversion               persistence half-life = 220 d (beta = 0.0032/d)

The initial decline half-life (4.3 d) and doubling time (0.78 d) are not fitted: they are
reported beside the data as checks. Run:

    python validation/calibrate_kinetics.py

and copy the fitted values into car_t.yaml (entries marked ``source: fit``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).parent))
from kinetics_measures import measures  # noqa: E402

from carcell.cohort.run import run_cohort  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"tmax_days": 9.3, "cmax_copies_per_ug": 24000.0, "persistence_half_life_days": 220.0}
FITTED = ("rho_effector", "antigen_half_stimulation", "k_reversion")


def typical_overrides() -> list[str]:
    sets = ["population.n=1", "trial.follow_up_days=365"]
    for name in ("weight_kg", "age_years"):
        sets.append(f"population.covariates.{name}.log_sd=0")
    sets += ["indication.baseline_burden.log_sd=0", "indication.antigen_density.log_sd=0",
             "indication.antigen_negative_fraction=0"]
    return sets


def typical_curve(values: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    from carcell.knowledge import load_knowledge

    k = load_knowledge(fresh=False)
    sets = typical_overrides()
    for name in k.names("car_t.variability"):
        sets.append(f"population.variability.{name}=0")
    sc = load_scenario(ROOT / "examples" / "tisacel_ball.yaml", sets)
    # Override typical values in the knowledge tree for this evaluation only.
    node = k.tree["car_t"]["kinetics"]
    saved = {n: node[n]["value"] for n in values}
    try:
        for n, v in values.items():
            node[n]["value"] = float(v)
        r = run_cohort(sc)
    finally:
        for n, v in saved.items():
            node[n]["value"] = v
    return r.times, r.trajectories["car_copies_per_ug"][0].astype(float)


def residuals(logx: np.ndarray) -> np.ndarray:
    t, c = typical_curve(dict(zip(FITTED, np.exp(logx))))
    m = measures(t, c)
    return np.array([np.log(min(m[k], 1e6) / v) for k, v in TARGETS.items()])


def main() -> None:
    from carcell.knowledge import load_knowledge

    k = load_knowledge(fresh=False)
    x0 = np.log([float(k.value(f"car_t.kinetics.{n}")) for n in FITTED])
    fit = least_squares(residuals, x0, diff_step=0.05, x_scale=1.0, max_nfev=60)
    best = dict(zip(FITTED, np.exp(fit.x)))
    t, c = typical_curve(best)
    m = measures(t, c)
    print("fitted parameters (copy into carcell/knowledge/data/car_t.yaml):")
    for n, v in best.items():
        print(f"  {n:26s} {v:.4g}   (start {float(k.value(f'car_t.kinetics.{n}')):.4g})")
    print("\nfit beside the data (Stein 2019 typical values):")
    ref = {**TARGETS, "initial_decline_half_life_days": 4.3, "doubling_time_days": 0.78}
    for key, v in ref.items():
        tag = "target" if key in TARGETS else "check"
        print(f"  {key:32s} model {m[key]:10.4g}   Stein {v:10.4g}   ({tag})")
    print(f"\nleast_squares status {fit.status}, cost {fit.cost:.3g}, evaluations {fit.nfev}")


if __name__ == "__main__":
    main()
