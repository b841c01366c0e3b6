"""Each published-model preset beside its paper: reproduced quantity, published value, tolerance.

    python validation/published_models.py            # every preset
    python validation/published_models.py stein2019   # one

Published values and their sources are in carcell/knowledge/data/published/<preset>.yaml;
tolerances are named in each preset module (carcell/published/<preset>.py). Where
../shared/reference/biomodels is present, the BioModels trajectories are compared as well.
"""

from __future__ import annotations

import sys
from pathlib import Path

from carcell.published import PRESETS, get
from carcell.published.cartmath2021 import crosscheck_biomodels

BIOMODELS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "biomodels"


def report(name: str) -> bool:
    m = get(name)
    checks = m.checks()
    if name == "cartmath2021" and BIOMODELS.is_dir():
        checks += crosscheck_biomodels(BIOMODELS / "BIOMD0000001019.trajectory.csv")
    print(f"\n{name}: {m.citation.short}, {m.citation.journal}, doi:{m.citation.doi}")
    print(f"  {'quantity':<66} {'reproduced':>12} {'published':>12}  tolerance            ok")
    for c in checks:
        print(f"  {c.quantity:<66} {c.reproduced:>12.5g} {c.published:>12.5g}  {c.tolerance:<20} "
              f"{'yes' if c.passed else 'NO'}")
    if name == "kirouac2023":
        kirouac_groups(m)
    return all(c.passed for c in checks)


def kirouac_groups(m) -> None:
    """Fig 1b as reproduced: the group-mean CAR-T and tumour curves of the 12 sets per group."""
    print("  Fig 1b group means (12 sets each; the paper's curve values are not stored, no reference column):")
    print(f"  {'group':<6} {'CAR-T peak':>12} {'day':>6} {'tumour d28/d0':>14} {'nadir d0-90/d0':>15} "
          f"{'tumour d365/d0':>15}")
    for g, c in m.group_means().items():
        t, car, b = c["time"], c["car_t"], c["B"]
        i = int(car.argmax())
        print(f"  {g:<6} {car[i]:>12.4g} {t[i]:>6.1f} {b[t == 28.0][0] / b[0]:>14.3g} "
              f"{b[t <= 90.0].min() / b[0]:>15.3g} {b[-1] / b[0]:>15.3g}")


def main(names: list[str]) -> int:
    ok = [report(n) for n in (names or list(PRESETS))]
    print(f"\n{sum(ok)} of {len(ok)} presets reproduce every checked value")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
