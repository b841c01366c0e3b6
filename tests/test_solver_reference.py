"""The batched integrator against SciPy solve_ivp (DOP853, rtol 1e-10) on 20 sampled patients.

Difference measure, at every output time and for every state: for log-cell states the
absolute difference of ln N (equal to the relative difference of the cell count); for
cytokines |a - b| / max(|b|, 1e-3 pg/mL); for the macrophage fraction |a - b| / max(|b|, 1e-6).
Bound: 1e-4.
"""

import numpy as np
import pytest

from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import load_knowledge
from carcell.model.states import IS_LOG, PARAM_INDEX, STATE_NAMES
from carcell.scenario.load import validate_raw
from carcell.solve.rounds import simulate_batch, simulate_reference

TIMES = np.arange(0.0, 121.0)
ROUNDS = np.array([0, 7, 14, 21, 28, 90, 120.0])
FLOOR = np.array([0.0 if log else (1e-6 if n == "macrophage_activation" else 1e-3)
                  for log, n in zip(IS_LOG, STATE_NAMES)])


def rel_diff(a, b):
    d = np.abs(a - b)
    scale = np.where(np.array(IS_LOG), 1.0, np.maximum(np.abs(b), FLOOR))
    return d / scale


def cohort(disease, costim, n=20):
    sc = validate_raw({"indication": {"disease": disease}, "product": {"car": {"costim": costim}},
                       "population": {"n": n, "seed": 5}})
    return compile_chunk(resolve_design(sc, load_knowledge()), 0, n)


@pytest.mark.parametrize("disease,costim", [("B-ALL", "4-1BB"), ("LBCL", "CD28")])
def test_matches_solve_ivp(disease, costim):
    c = cohort(disease, costim)
    Y, status, _ = simulate_batch(c.params, c.y0, TIMES, ROUNDS, rtol=1e-10, atol=1e-12)
    R = simulate_reference(c.params, c.y0, TIMES, ROUNDS, method="DOP853", rtol=1e-10, atol=1e-12)
    assert (status == 0).all()
    worst = rel_diff(Y, R).max(axis=(0, 1))
    assert np.all(worst <= 1e-4), dict(zip(STATE_NAMES, worst))


def test_matches_radau_on_a_few_patients():
    c = cohort("MM", "4-1BB", n=3)
    Y, _, _ = simulate_batch(c.params, c.y0, TIMES, ROUNDS, rtol=1e-10, atol=1e-12)
    R = simulate_reference(c.params, c.y0, TIMES, ROUNDS, method="Radau", rtol=1e-10, atol=1e-12)
    assert rel_diff(Y, R).max() <= 1e-4


def test_invariants():
    c = cohort("LBCL", "4-1BB")
    Y, status, _ = simulate_batch(c.params, c.y0, TIMES, ROUNDS, rtol=1e-6, atol=1e-8)
    assert (status == 0).all() and np.isfinite(Y).all()
    lin = ~np.array(IS_LOG)
    assert (Y[:, :, lin] >= -1e-6).all()
    m = Y[:, :, STATE_NAMES.index("macrophage_activation")]
    assert ((m >= -1e-9) & (m <= 1 + 1e-9)).all()


def test_failed_patient_is_flagged_and_does_not_sink_the_cohort():
    c = cohort("B-ALL", "4-1BB", n=6)
    good, status0, _ = simulate_batch(c.params, c.y0, TIMES, ROUNDS, rtol=1e-6, atol=1e-8, max_steps=2000)
    c.params.values[2, PARAM_INDEX["rho_effector"]] = 1e6
    c.params.values[2, PARAM_INDEX["effector_half_kill"]] = 1e30
    bad, status, _ = simulate_batch(c.params, c.y0, TIMES, ROUNDS, rtol=1e-6, atol=1e-8, max_steps=2000)
    assert (status0 == 0).all()
    assert status[2] != 0
    others = [0, 1, 3, 4, 5]
    assert (status[others] == 0).all()
    np.testing.assert_array_equal(bad[others], good[others])
