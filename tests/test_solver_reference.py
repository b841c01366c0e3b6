"""The batched DOPRI5 integrator (``simulate_batch``) against SciPy ``solve_ivp``, one patient at a time.

Setting: 12 sampled patients per scenario (B-ALL with a 4-1BB CAR at 3.1e6 cells/kg, LBCL with
a CD28 CAR at 2e6 cells/kg, population seed 1), 60 days of follow-up with daily outputs and
clinical rounds (extinction checks) on days 0, 7, 14, 21, 28 and 60.

Batched run (NumPy backend): rtol 1e-9, atol 1e-11. References: ``simulate_reference`` with
DOP853 at rtol 1e-10, atol 1e-12, and Radau (implicit, a different method family) at rtol 1e-9,
atol 1e-11, each on every patient of the scenario (patient 0's tumour goes extinct at a round,
patient 5's does not). Either reference's own error is orders of magnitude below the bound.

The references evaluate the right-hand side with its compiled mirror
(``carcell.model.rhs_numba.rhs_one``, the ``numba`` extra), which computes the same floats as
``carcell.model.rhs`` here (tests/test_backend_numba.py) about fifty times faster per call, so a
tight-tolerance SciPy solve takes a fraction of a second per patient instead of 4-17 s. What is
compared is then the integrators on the same equations; a mirror that drifted would fail here
too. Without numba the references use ``carcell.model.rhs`` on patients 0 and 5 only.

Difference measure, at every output time, for every patient and every state separately:

* log-cell states (the first 7, ln of cell counts): ``|a - b|``, the absolute difference of
  ln N, which is the relative difference of the cell count (to first order);
* cytokines IL-15, IFN-gamma, IL-6 (pg/mL): ``|a - b| / max(|b|, 1e-3 pg/mL)``;
* macrophage activation fraction (0-1): ``|a - b| / max(|b|, 1e-6)``;

with ``a`` the batched and ``b`` the reference value. A NaN in either counts as an infinite
difference. Bound: the maximum over patients and times must be <= 1e-4 for every state.

Radau note: solve_ivp's Radau builds its Jacobian by finite differences (``num_jac``); for an
extinct population (ln N = -50, alive flag 0, derivative 0) ``num_jac`` keeps enlarging the
perturbation until ln N is about 7,400, where ``exp`` overflows and ``inf * 0`` makes the
right-hand side NaN, so Radau aborts. The Radau reference therefore gets a central-difference
Jacobian with a bounded step (``RadauFD`` below); the solution it computes is still controlled
by Radau's own error estimate.

The other tests: invariants of a production-tolerance run (a year, rtol 1e-6), and a patient with
absurd parameters failing alone, with the other patients bit-identical to a run without it.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.integrate import Radau

from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import load_knowledge
from carcell.model.states import INDEX, IS_LOG, LOG_EXTINCT, PARAM_INDEX, STATE_NAMES, Params
from carcell.scenario.load import validate_raw
from carcell.solve.dopri5 import STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK
from carcell.solve.rounds import simulate_batch, simulate_reference

TIMES = np.arange(0.0, 121.0)
ROUNDS = np.array([0, 7, 14, 21, 28, 90, 120.0])
# the batched-vs-reference comparisons: the first two months, where expansion, CRS, drugs and
# most extinctions happen (the batched run at rtol 1e-9 is slow; a year adds little but minutes)
REF_TIMES = np.arange(0.0, 61.0)
REF_ROUNDS = np.array([0, 7, 14, 21, 28, 60.0])
N_PATIENTS = 12
try:
    from carcell.model.rhs_numba import rhs_one as REF_RHS_ONE
    REF_PATIENTS = np.arange(N_PATIENTS)
except ImportError:   # the NumPy right-hand side: 4-17 s of CPU per patient with DOP853
    REF_RHS_ONE = None
    REF_PATIENTS = np.array([0, 5])
BOUND = 1e-4

BATCH_TOL = {"rtol": 1e-9, "atol": 1e-11}
REF_TOL = {"rtol": 1e-10, "atol": 1e-12}
RADAU_TOL = {"rtol": 1e-9, "atol": 1e-11}   # Radau, 5th order, pays more steps per digit than DOP853
PRODUCTION_TOL = {"rtol": 1e-6, "atol": 1e-8}

SCENARIOS = {
    "B-ALL/4-1BB": ("B-ALL", "4-1BB", 3.1e6),
    "LBCL/CD28": ("LBCL", "CD28", 2.0e6),
}

_IS_LOG = np.array(IS_LOG)
#: denominator floor of the relative difference of the non-log states (unused for log states)
FLOOR = np.array([0.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                  for log, name in zip(IS_LOG, STATE_NAMES)])
_CYTOKINES = [INDEX["il15"], INDEX["ifng"], INDEX["il6"]]
_MAC = INDEX["macrophage_activation"]


def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Difference measure of the module docstring, elementwise; NaN becomes +inf."""
    d = np.abs(a - b) / np.where(_IS_LOG, 1.0, np.maximum(np.abs(b), FLOOR))
    return np.where(np.isnan(d), np.inf, d)


def worst_per_state(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    worst = rel_diff(a, b).max(axis=(0, 1))
    return {name: float(w) for name, w in zip(STATE_NAMES, worst)}


@functools.cache
def cohort(key: str, n: int = N_PATIENTS):
    disease, costim, dose = SCENARIOS[key]
    sc = validate_raw({
        "indication": {"disease": disease},
        "product": {"car": {"costim": costim}, "dose": {"cells_per_kg": dose}},
        "population": {"n": n, "seed": 1},
    })
    return compile_chunk(resolve_design(sc, load_knowledge()), 0, n)


@functools.cache
def batched(key: str):
    c = cohort(key)
    return simulate_batch(c.params, c.y0, REF_TIMES, REF_ROUNDS, **BATCH_TOL)


def _reference_chunk(values, y0, method):
    # plain arrays in and out keep what crosses the process boundary small
    return simulate_reference(Params(values), y0, REF_TIMES, REF_ROUNDS, method=method, rhs_one=REF_RHS_ONE,
                              **REF_TOL)


def reference_dop853(params: Params, y0: np.ndarray) -> np.ndarray:
    """``simulate_reference`` (DOP853) for every patient."""
    return _reference_chunk(params.values, y0, "DOP853")


def _fd_jacobian(fun):
    def jac(t, y):
        J = np.empty((y.size, y.size))
        for j in range(y.size):
            h = 1e-6 * max(1.0, abs(y[j]))
            e = np.zeros(y.size)
            e[j] = h
            J[:, j] = (fun(t, y + e) - fun(t, y - e)) / (2 * h)
        return J
    return jac


class RadauFD(Radau):
    """Radau with a bounded-step central-difference Jacobian (see the module docstring)."""

    def __init__(self, fun, t0, y0, t_bound, **options):
        options.pop("jac", None)
        super().__init__(fun, t0, y0, t_bound, jac=_fd_jacobian(fun), **options)


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_batched_matches_dop853(key):
    c = cohort(key)
    Y, status, _ = batched(key)
    idx = REF_PATIENTS
    R = reference_dop853(c.params.take(idx), c.y0[idx])
    assert (status == STATUS_OK).all(), status
    assert np.isfinite(R).all(), "reference DOP853 failed for some patient"
    worst = worst_per_state(Y[idx], R)
    assert all(w <= BOUND for w in worst.values()), worst


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_batched_matches_radau(key):
    c = cohort(key)
    Y, status, _ = batched(key)
    idx = REF_PATIENTS
    R = simulate_reference(c.params.take(idx), c.y0[idx], REF_TIMES, REF_ROUNDS, method=RadauFD,
                           rhs_one=REF_RHS_ONE, **RADAU_TOL)
    assert (status[idx] == STATUS_OK).all()
    assert np.isfinite(R).all(), "reference Radau failed"
    worst = worst_per_state(Y[idx], R)
    assert all(w <= BOUND for w in worst.values()), worst


@pytest.mark.parametrize("key", list(SCENARIOS))
def test_invariants_at_production_tolerance(key):
    """A year at rtol 1e-6: finite, cytokines >= 0 and the macrophage fraction in [0, 1] (each
    within 1e-6 pg/mL resp. 1e-9), no population below LOG_EXTINCT, an extinct population stays
    extinct, and every patient solved (status 0)."""
    c = cohort(key)
    times = np.arange(0.0, 366.0)
    rounds = np.array([0, 7, 14, 21, 28, 90, 180, 270, 365.0])
    Y, status, p = simulate_batch(c.params, c.y0, times, rounds, **PRODUCTION_TOL)
    assert (status == STATUS_OK).all(), status
    assert np.isfinite(Y).all()
    assert Y[:, :, _CYTOKINES].min() >= -1e-6, Y[:, :, _CYTOKINES].min(axis=(0, 1))
    m = Y[:, :, _MAC]
    assert m.min() >= -1e-9 and m.max() <= 1 + 1e-9, (m.min(), m.max())
    assert Y[:, :, _IS_LOG].min() >= LOG_EXTINCT
    for name in ("tumour_pos", "tumour_neg", "car_memory", "car_effector", "car_exhausted"):
        gone = Y[:, :, INDEX[name]] == LOG_EXTINCT
        # once extinct, extinct at every later output (no regrowth from a fraction of a cell)
        first = np.where(gone.any(axis=1), np.argmax(gone, axis=1), times.size)
        after = np.arange(times.size)[None, :] >= first[:, None]
        assert gone[after].all(), name
    # the extinction flags returned agree with the trajectories at the last output
    for flag, name in (("alive_tumour_pos", "tumour_pos"), ("alive_tumour_neg", "tumour_neg")):
        assert np.array_equal(p.values[:, PARAM_INDEX[flag]] == 0, Y[:, -1, INDEX[name]] == LOG_EXTINCT)


ABSURD = [
    # (parameter, value, max_steps, expected status)
    ("rho_effector", 1e6, 200, STATUS_MAX_STEPS),   # stiff but bounded: runs out of steps
    ("ifng_clearance", -50.0, 100_000, STATUS_NONFINITE),  # IFN-gamma grows as exp(50 t) to inf
    ("rho_effector", np.nan, 200, None),             # any nonzero status
]


BAD_PATIENT, N_FAIL = 2, 6
FAIL_KW = dict(max_steps=100_000, **PRODUCTION_TOL)


@functools.cache
def runs_without_a_failure():
    """The first N_FAIL patients of B-ALL/4-1BB over the first two months, all of them and all but
    BAD_PATIENT: what every absurd case below is compared with."""
    c = cohort("B-ALL/4-1BB")
    keep = np.array([i for i in range(N_FAIL) if i != BAD_PATIENT])
    params, y0 = c.params.take(np.arange(N_FAIL)), c.y0[:N_FAIL]
    clean = simulate_batch(params, y0, REF_TIMES, REF_ROUNDS, **FAIL_KW)[:2]
    without = simulate_batch(params.take(keep), y0[keep], REF_TIMES, REF_ROUNDS, **FAIL_KW)[:2]
    return keep, clean, without


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow / NaN of the absurd patient
@pytest.mark.parametrize("name,value,max_steps,expected", ABSURD)
def test_failed_patient_does_not_sink_the_cohort(name, value, max_steps, expected):
    c = cohort("B-ALL/4-1BB")
    keep, (Y_clean, status_clean), (Y_without, status_without) = runs_without_a_failure()
    values = c.params.take(np.arange(N_FAIL)).values.copy()
    values[BAD_PATIENT, PARAM_INDEX[name]] = value
    kw = {**FAIL_KW, "max_steps": max_steps}
    Y, status, _ = simulate_batch(Params(values), c.y0[:N_FAIL], REF_TIMES, REF_ROUNDS, **kw)

    assert status[BAD_PATIENT] != STATUS_OK
    if expected is not None:
        assert status[BAD_PATIENT] == expected, status[BAD_PATIENT]
    assert (status[keep] == STATUS_OK).all() and (status_without == STATUS_OK).all()
    assert (status_clean == STATUS_OK).all()
    # bit-identical: the failed patient changes nothing for the others (max_steps stops only a
    # patient that needs more steps, so the runs without a failure keep the default budget)
    np.testing.assert_array_equal(Y[keep], Y_without)
    np.testing.assert_array_equal(Y[keep], Y_clean[keep])
    assert np.isfinite(Y[keep]).all()
    # the failed patient: finite up to its failure, NaN from the failing interval on
    finite = np.isfinite(Y[BAD_PATIENT]).all(axis=1)
    first_bad = int(np.argmin(finite))
    assert 0 < first_bad and finite[:first_bad].all() and np.isnan(Y[BAD_PATIENT, first_bad:]).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_parameter_is_reported_nonfinite_promptly():
    c = cohort("B-ALL/4-1BB")
    values = c.params.values[:2].copy()
    values[1, PARAM_INDEX["rho_effector"]] = np.nan
    _, status, _ = simulate_batch(Params(values), c.y0[:2], TIMES[:2], np.array([0.0]),
                                  max_steps=1_000, **PRODUCTION_TOL)
    assert status[1] == STATUS_NONFINITE, status


def test_reference_applies_extinction_only_on_round_days():
    c = cohort("B-ALL/4-1BB")
    idx = np.array([7, 9])  # tumour below one cell on day 120, last round on day 28
    params, y0 = c.params.take(idx), c.y0[idx]
    rounds = np.array([0, 7, 14, 21, 28.0])
    Y, status, _ = simulate_batch(params, y0, TIMES, rounds, rtol=1e-8, atol=1e-10)
    R = simulate_reference(params, y0, TIMES, rounds, method="RK45", rtol=1e-8, atol=1e-10, rhs_one=REF_RHS_ONE)
    last = Y[:, -1, INDEX["tumour_pos"]]
    if not ((status == STATUS_OK).all() and (last < 0).all() and (last > LOG_EXTINCT).all()):
        pytest.fail("precondition: both tumours below one cell but not extinct on day 120")
    assert rel_diff(Y, R).max() <= 1e-4
