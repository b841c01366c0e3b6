"""Published kinetics: the tisacel-like B-ALL example against Stein 2019 and ELIANA.

Tolerances (model/published ratio) and the reason for each are in
validation/kinetics_vs_published.py (TOLERANCE); the same script prints the comparison.
"""

import math

import numpy as np
import pytest
from kinetics_measures import measures
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


def test_stein_measures_recover_a_known_curve():
    """The measures read back the phases of a curve built from them: exponential growth with a
    0.78-day doubling to a peak on day 9, then a biexponential fall whose fast phase has a 4.3-day
    and whose slow phase a 220-day half-life (Stein's typical values). The fast phase is read
    over the two weeks after the peak, where the slow one still adds a little: 5% allowed."""
    t = np.arange(0.0, 366.0)
    peak, c0 = 9.0, 24000.0
    a, b = np.log(2) / 4.3, np.log(2) / 220.0
    rise = c0 * np.exp(np.log(2) / 0.78 * (t - peak))
    fall = c0 * (0.99 * np.exp(-a * (t - peak)) + 0.01 * np.exp(-b * (t - peak)))
    m = measures(t, np.where(t <= peak, rise, fall))
    assert m["tmax_days"] == peak and m["cmax_copies_per_ug"] == pytest.approx(c0)
    assert m["doubling_time_days"] == pytest.approx(0.78, rel=1e-6)
    assert m["initial_decline_half_life_days"] == pytest.approx(4.3, rel=0.05)
    assert m["persistence_half_life_days"] == pytest.approx(220.0, rel=0.05)


def test_stein_measures_are_nan_without_a_curve_to_read():
    """A patient whose curve ends early (death: zeros after day 5) has no persistence phase to
    read: NaN, not an error and not a number."""
    t = np.arange(0.0, 366.0)
    c = np.where(t <= 5, 100.0 * 2.0 ** t, 0.0)
    m = measures(t, c)
    assert m["tmax_days"] == 5.0
    assert math.isnan(m["initial_decline_half_life_days"]) and math.isnan(m["persistence_half_life_days"])
