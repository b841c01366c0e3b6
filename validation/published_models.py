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
    return all(c.passed for c in checks)


def main(names: list[str]) -> int:
    ok = [report(n) for n in (names or list(PRESETS))]
    print(f"\n{sum(ok)} of {len(ok)} presets reproduce every checked value")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
