"""Known directions of design effects, shown in simulation (the numbers behind tests/test_design.py).

    python validation/design_directions.py [--n 60]

Each row pairs two designs on the same virtual patients (same seed) and prints the measure
that the literature says should move, with the direction expected.
"""

from __future__ import annotations

import argparse

import numpy as np

from carcell.cohort import run_cohort
from carcell.scenario.load import validate_raw


def cohort(raw: dict, n: int, days: float, seed: int = 5):
    return run_cohort(validate_raw({**raw, "population": {"n": n, "seed": seed},
                                    "trial": {"follow_up_days": days}}, "design_directions"))


def at(result, quantity: str, day: float) -> float:
    i = int(np.searchsorted(result.times, day))
    return float(np.nanmedian(result.trajectories[quantity][:, i]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60, help="patients per design")
    n = ap.parse_args().n
    rows = []

    lbcl = {"indication": {"disease": "LBCL"}}
    tisa = cohort({**lbcl, "product": {"preset": "tisa-cel", "dose": {"cells_per_kg": 2e6}}}, n, 240)
    axi = cohort({**lbcl, "product": {"preset": "axi-cel", "dose": {"cells_per_kg": 2e6}}}, n, 240)
    for day in (28, 90, 180):
        rows.append((f"CAR copies/ug at day {day}, LBCL 2e6/kg", "tisa-cel (4-1BB)", at(tisa, "car_copies_per_ug", day),
                     "axi-cel (CD28)", at(axi, "car_copies_per_ug", day), "4-1BB higher (Guedan 2020; Stein 2019)"))

    low = {"indication": {"disease": "LBCL", "antigen_density": {"median": 400, "log_sd": 0}}}
    hi = cohort({**low, "product": {"car": {"binders": [{"name": "FMC63"}]}}}, n, 28)
    lo = cohort({**low, "product": {"car": {"binders": [{"name": "FMC63", "kd_nm": 30}]}}}, n, 28)
    ratio = lambda r: float(np.median(r.trajectories["tumour_total_cells"][:, -1] / r.trajectories["tumour_total_cells"][:, 0]))  # noqa: E731
    rows.append(("tumour day 28 / day 0 at 400 CD19/cell", "KD 0.3 nM", ratio(hi), "KD 30 nM", ratio(lo),
                 "weaker binder kills less (Liu 2015; Caruso 2015)"))

    ball = {"indication": {"disease": "B-ALL"}}
    single = cohort({**ball, "product": {"car": {"binders": ["FMC63"]}}}, n, 365)
    dual = cohort({**ball, "product": {"car": {"binders": ["FMC63", "m971"], "logic": {"gate": "OR"}}}}, n, 365)
    neg = lambda r: float((r.patients["relapse_antigen"] == "negative").sum())  # noqa: E731
    rows.append(("antigen-negative relapses in a year, B-ALL", "CD19", neg(single), "CD19 OR CD22", neg(dual),
                 "OR fewer (Spiegel 2021; Cordoba 2021)"))

    mm = {"indication": {"disease": "MM"}}
    g = cohort({**mm, "product": {"car": {"binders": ["MCARH109_scFv"]}, "dose": {"cells": 4.5e8}}}, n, 90)
    both = cohort({**mm, "product": {"car": {"binders": ["ide-cel_BCMA", "MCARH109_scFv"],
                                             "logic": {"gate": "AND", "mode": "split"}}, "dose": {"cells": 4.5e8}}}, n, 90)
    col = "keratinised_epithelia_nadir_fraction"
    rows.append(("keratinised epithelia nadir (share of baseline)", "GPRC5D", float(g.patients[col].median()),
                 "BCMA AND GPRC5D", float(both.patients[col].median()), "AND spares GPRC5D-only tissue (Kloss 2013)"))

    cb = {"indication": {"disease": "LBCL"}}
    armed = cohort({**cb, "product": {"preset": "CB-CAR19-IL15-NK"}}, n, 120)
    plain = cohort({**cb, "product": {"preset": "CB-CAR19-IL15-NK", "armour": []}}, n, 120)
    rows.append(("CAR-NK copies/ug at day 90, cord-blood NK", "IL-15 armour", at(armed, "car_copies_per_ug", 90),
                 "no armour", at(plain, "car_copies_per_ug", 90), "IL-15 longer persistence (Liu 2020)"))

    print(f"{n} virtual patients per design, seed 5\n")
    print(f"{'measure':48s} {'design A':>18s} {'A':>10s} {'design B':>18s} {'B':>10s}  expected")
    for measure, a, va, b, vb, why in rows:
        print(f"{measure:48s} {a:>18s} {va:10.3g} {b:>18s} {vb:10.3g}  {why}")


if __name__ == "__main__":
    main()
