"""Published kinetics: the tisacel-like B-ALL example against Stein 2019 and ELIANA.

Tolerances (model/published ratio) and the reason for each are in
validation/kinetics_vs_published.py (TOLERANCE); the same script prints the comparison.
"""

import math

import pytest
from kinetics_vs_published import PUBLISHED, TOLERANCE, simulate


@pytest.fixture(scope="module")
def sim():
    return simulate(n=200, seed=2018)


# The non-responder subgroup is left out: with response not yet calibrated (the virtual-trial
# issue) this example has no simulated non-responders, so its Cmax and AUC cannot be formed.
# validation/kinetics_vs_published.py still prints them.
MEASURES = [m for m in PUBLISHED if not m.endswith("_nonresponders")]


@pytest.mark.parametrize("measure", MEASURES)
def test_within_published_tolerance(sim, measure):
    lo, hi, why = TOLERANCE[measure]
    ratio = sim[measure] / PUBLISHED[measure]
    assert math.isfinite(ratio)
    assert lo <= ratio <= hi, f"{measure}: model {sim[measure]:.4g} vs {PUBLISHED[measure]:.4g} ({why})"


def test_biphasic_decline(sim):
    # Stein: the persistence phase is about 50x slower than the initial decline
    assert sim["persistence_half_life_days"] > 10 * sim["initial_decline_half_life_days"]
