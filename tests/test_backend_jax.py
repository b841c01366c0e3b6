"""The GPU path (carcell/solve/jax_kernel.py, carcell/model/rhs_jax.py) against the NumPy backend,
run here on JAX's CPU device.

What is compared, and how closely:

* the right-hand side, on real compiled patients (three examples: haematological CAR-T, solid
  tumour, IL-15-armoured CAR-NK) at infusion and along their first 60 days, and on randomly
  perturbed states and parameters, against ``carcell.model.rhs.rhs``: ``|a - b| <= 1e-12
  max(|b|, 1)`` per derivative (1/day for log-cell states, units/day otherwise). The floor of 1
  is the scale of the terms that cancel near a steady state (rates of 0.01-10 per day), where
  XLA and NumPy round each term by an ulp differently. It is a mirror, so an edit of rhs.py not
  repeated in rhs_jax.py fails here;
* one interval of the integrator against dopri5.py, with fresh and carried step sizes, frozen
  patients and the three failure statuses: statuses equal, states within 1e-10, next step
  sizes within 1e-5 (see STEP_RTOL);
* a daily grid over days 0-28 at carcell's default tolerances, and the same followed by one
  interval over days 28-365 at rtol 1e-7 (see COURSES for why): counts (exp of the log-cell
  states, floor 1 cell) and the linear states (floors as in tests/test_backend_numba.py) within
  1e-6 relative, the bound issue 8 sets for backends;
* ``rounds.simulate_batch`` over 60 days with the JAX integrator in place of NumPy's (what
  ``backend="jax"`` will call): same statuses and extinctions, trajectories within 1e-6;
* patients are independent: the same patients in another order, or inside a larger batch, give
  the same numbers, bit for bit;
* float32 input is refused, and carcell imports without jax.

Every test needs jax and is skipped without it. The kernel compiles once per module (one batch
size, 16 patients; two programs: with and without a starting step), and once more for a batch
of 48.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from carcell.design import compile_chunk, resolve_design
from carcell.errors import SolverError
from carcell.knowledge import load_knowledge
from carcell.model.rhs import rhs
from carcell.model.states import INDEX, IS_LOG, N_STATES, PARAM_INDEX, STATE_NAMES, Params
from carcell.scenario.load import load_scenario
from carcell.solve.dopri5 import (
    STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK, STATUS_STEP_TOO_SMALL, integrate_interval,
)
from carcell.solve.rounds import atol_vector, simulate_batch

from mirror_inputs import perturbed_inputs

jax = pytest.importorskip("jax")

RHS_RTOL = 1e-10          # a mirror: rounding only (XLA's exp and pow are not glibc's, and near a
                          # steady state production and clearance cancel: IL-6's terms can be 1e4
                          # times their difference, so an ulp of a term is 1e-12 of the result)
RHS_FLOOR = 1.0           # 1/day or units/day: the size of the terms that cancel at a steady state
INTERVAL_RTOL = 1e-10     # one interval, same steps: rounding only, over tens of steps
# the next step size is h * (0.9 err^-1/5), and err is a small difference of stage derivatives,
# so rounding in the derivatives (1e-16 relative) reaches it magnified (1e-7 seen here)
STEP_RTOL = 1e-5
BACKEND_RTOL = 1e-6       # issue 8: backends agree within 1e-6 relative on per-patient outputs
PRODUCTION_TOL = {"rtol": 1e-6, "atol": 1e-8}    # carcell's defaults (trial.solver)
PRODUCTION_TOL_VEC = {"rtol": PRODUCTION_TOL["rtol"], "atol": atol_vector(PRODUCTION_TOL["atol"])}
N = 16                    # one batch size for the whole module: the kernel compiles once
EXAMPLES = {
    "axicel (LBCL, CAR-T)": "examples/axicel_lbcl.yaml",
    "satri-cel (gastric, solid)": "examples/satricel_gastric.yaml",
    "CB-NK IL-15 (LBCL, CAR-NK)": "examples/cbnk_il15_lbcl.yaml",
}

_IS_LOG = np.array(IS_LOG)
# below these a linear state is compared with the floor, not with itself (pg/mL, ug/mL, mg, nM, 0-1)
_LINEAR_FLOOR = np.array([0.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                          for log, name in zip(IS_LOG, STATE_NAMES)])
_COUNT_FLOOR = 1.0        # cells: below one cell a population is extinct in the model


@pytest.fixture(scope="module")
def kernel():
    from carcell.solve import jax_kernel  # noqa: PLC0415 - optional extra

    return jax_kernel


@pytest.fixture(scope="module")
def rhs_jax():
    from carcell.model.rhs_jax import rhs_batch  # noqa: PLC0415 - optional extra

    compiled = jax.jit(rhs_batch)
    block = 256       # evaluate in blocks of one size, so the function compiles once

    def evaluate(y: np.ndarray, values: np.ndarray) -> np.ndarray:
        n = len(y)
        pad = -n % block
        y_pad = np.concatenate([y, np.repeat(y[:1], pad, axis=0)])
        v_pad = np.concatenate([values, np.repeat(values[:1], pad, axis=0)])
        return np.concatenate([np.asarray(compiled(y_pad[i:i + block], v_pad[i:i + block]))
                               for i in range(0, n + pad, block)])[:n]

    return evaluate


@functools.cache
def patients(example: str, n: int):
    design = resolve_design(load_scenario(EXAMPLES[example]), load_knowledge())
    return compile_chunk(design, 0, n)


def mixed_batch() -> tuple[np.ndarray, np.ndarray]:
    """N patients drawn from the three examples (6 + 5 + 5): states and parameter rows."""
    sizes = (6, 5, 5)
    chunks = [patients(e, k) for e, k in zip(EXAMPLES, sizes)]
    return np.concatenate([c.y0 for c in chunks]), np.concatenate([c.params.values for c in chunks])


def assert_rhs_equal(a: np.ndarray, b: np.ndarray) -> None:
    """Equal within RHS_RTOL, or NaN in both (the guards of rhs.py are mirrored, gaps included)."""
    bad = ~((np.abs(a - b) <= RHS_RTOL * np.maximum(np.abs(b), RHS_FLOOR)) | (np.isnan(a) & np.isnan(b)))
    assert not bad.any(), [(int(i), STATE_NAMES[j], a[i, j], b[i, j]) for i, j in np.argwhere(bad)[:5]]


def output_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relative difference per state on what a user reads: counts for cells (exp of the log
    state, floor one cell), the value itself for cytokines, drugs and fractions (with a floor)."""
    a_out, b_out = a.copy(), b.copy()
    a_out[..., _IS_LOG], b_out[..., _IS_LOG] = np.exp(a[..., _IS_LOG]), np.exp(b[..., _IS_LOG])
    floor = np.where(_IS_LOG, _COUNT_FLOOR, _LINEAR_FLOOR)
    d = np.abs(a_out - b_out) / np.maximum(np.abs(b_out), floor)
    return np.where(np.isnan(d), np.inf, d)


# ---- the right-hand side ------------------------------------------------------------------------

@pytest.mark.parametrize("example", list(EXAMPLES))
def test_rhs_mirror_on_real_patients_along_their_course(rhs_jax, example):
    c = patients(example, 8)
    times = np.arange(0.0, 61.0)
    Y, status, p_end = simulate_batch(c.params, c.y0, times, np.array([0, 7, 14, 21, 28, 60.0]),
                                      **PRODUCTION_TOL)
    assert (status == STATUS_OK).all()
    states = Y[:, ::4].reshape(-1, N_STATES)
    values = np.repeat(p_end.values, Y[:, ::4].shape[1], axis=0)
    expected = rhs(None, states, Params(values))
    assert np.abs(expected).max() > 1.0          # the course is not at rest
    assert_rhs_equal(rhs_jax(states, values), expected)
    assert_rhs_equal(rhs_jax(c.y0, c.params.values), rhs(None, c.y0, c.params))


def random_inputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs around the three examples' patients (tests/mirror_inputs.py)."""
    y_real, real = mixed_batch()
    return perturbed_inputs(rng, y_real, real, n)


def test_rhs_mirror_on_random_states_and_parameters(rhs_jax):
    y, values = random_inputs(np.random.default_rng(8), 2000)
    expected = rhs(np.zeros(len(y)), y, Params(values))
    assert np.isfinite(expected).all()   # the guards hold, extinct solid tumours included
    assert_rhs_equal(rhs_jax(y, values), expected)


def test_rhs_mirror_sees_a_changed_parameter(rhs_jax):
    """The comparison can fail: 1% more killing changes the tumour's derivative beyond the bound."""
    y, values = mixed_batch()
    changed = values.copy()
    changed[:, PARAM_INDEX["k_kill"]] *= 1.01
    got, expected = rhs_jax(y, changed), rhs(None, y, Params(values))
    with pytest.raises(AssertionError):
        assert_rhs_equal(got, expected)


# ---- the integrator -----------------------------------------------------------------------------

def test_one_interval_matches_dopri5_including_failures(kernel):
    """Fresh and carried step sizes, frozen patients, and patients that fail (as in
    tests/test_solver_reference.py's absurd cases) end with the same status and state."""
    y0, values = mixed_batch()
    values = values.copy()
    values[1, PARAM_INDEX["rho_effector"]] = 1e6        # stiff: runs out of steps
    values[2, PARAM_INDEX["ifng_clearance"]] = -50.0    # IFN-gamma overflows: nonfinite
    y0 = y0.copy()
    y0[2, INDEX["ifng"]] = 1e300
    values[3, PARAM_INDEX["rho_effector"]] = np.nan
    status0 = np.zeros(N, dtype=np.int8)
    status0[4] = STATUS_MAX_STEPS                       # frozen: not integrated
    status0[7] = STATUS_STEP_TOO_SMALL
    tol = atol_vector(1e-8)
    for h in (None, np.full(N, 0.05)):
        with np.errstate(all="ignore"):    # the failing patients overflow, as they should
            expected = integrate_interval(rhs, y0, 0.0, 20.0, Params(values), rtol=1e-6, atol=tol, h=h,
                                          max_steps=300, status=status0)
        got = kernel.integrate_interval_jax(y0, 0.0, 20.0, values, rtol=1e-6, atol=tol, h=h,
                                            max_steps=300, status=status0)
        assert got[2].dtype == np.int8
        np.testing.assert_array_equal(got[2], expected[2])
        assert got[2][1] == STATUS_MAX_STEPS and got[2][2] == STATUS_NONFINITE and got[2][3] != STATUS_OK
        assert (got[2][[4, 7]] == status0[[4, 7]]).all()
        assert np.array_equal(got[0][[4, 7]], y0[[4, 7]])
        assert (got[2][8:] == STATUS_OK).all()
        ok = expected[2] == STATUS_OK       # a failed patient's state is discarded by rounds.py
        np.testing.assert_allclose(got[0][ok], expected[0][ok], rtol=INTERVAL_RTOL, atol=0.0)
        np.testing.assert_allclose(got[1][ok], expected[1][ok], rtol=STEP_RTOL, atol=0.0)


def test_empty_interval_returns_the_state(kernel):
    y0, values = mixed_batch()
    y, h, status = kernel.integrate_interval_jax(y0, 5.0, 5.0, values, **PRODUCTION_TOL_VEC)
    assert np.array_equal(y, y0) and (h == 1e-3).all() and (status == STATUS_OK).all()


def _course(integrate, y0: np.ndarray, values: np.ndarray, tol: dict, last_day: float) -> np.ndarray:
    """Days 0-28 on a daily grid (step carried over), then days 28-``last_day`` in one interval."""
    grid = [*np.arange(0.0, 29.0), *([last_day] if last_day > 28 else [])]
    y, h, status = y0, None, None
    states = [y0]
    for t0, t1 in zip(grid[:-1], grid[1:]):
        y, h, status = integrate(y, t0, t1, values, h=h, status=status, **tol)
        states.append(y)
    assert (status == STATUS_OK).all()
    return np.stack(states, axis=1)


# Over a year at rtol 1e-6 the two backends can part by a few 1e-6: step decisions sit on a
# knife edge, and a last-bit difference (XLA's exp is not glibc's) flips one now and then. NumPy
# itself moves as much when its initial state moves by 1e-15 (1,000 axi-cel patients, day 365:
# 3.8e-6 at most, 142 patients above 1e-6; JAX vs NumPy: 2.2e-6, 158; docs/backend-jax.md). So
# the year is checked at rtol 1e-7, where the same measurement gives 2.0e-7 (1.9e-8 at rtol
# 1e-8), and the first month at carcell's default tolerances.
COURSES = {
    "days 0-28, rtol 1e-6": (PRODUCTION_TOL_VEC, 28.0),
    "days 0-28 and 28-365, rtol 1e-7": ({"rtol": 1e-7, "atol": atol_vector(1e-9)}, 365.0),
}


@pytest.mark.parametrize("course", list(COURSES))
def test_course_agrees_with_numpy_on_counts_and_levels(kernel, course):
    tol, last_day = COURSES[course]
    y0, values = mixed_batch()
    expected = _course(lambda y, t0, t1, v, **kw: integrate_interval(rhs, y, t0, t1, Params(v), **kw),
                       y0, values, tol, last_day)
    got = _course(kernel.integrate_interval_jax, y0, values, tol, last_day)
    worst = output_diff(got, expected).max(axis=(0, 1))
    assert (worst <= BACKEND_RTOL).all(), {k: v for k, v in zip(STATE_NAMES, worst) if v > BACKEND_RTOL}
    # the course moves: CAR cells expand by orders of magnitude in the first month
    car = np.exp(expected[:, :, INDEX["car_effector"]])
    assert (car[:, :29].max(axis=1) / car[:, 0] > 10).mean() > 0.5


def test_simulate_batch_with_the_jax_integrator(kernel):
    """rounds.simulate_batch (extinction at round days, carried steps, failures) with
    ``backend="jax"``: same statuses and extinctions; trajectories within BACKEND_RTOL."""
    y0, values = mixed_batch()
    times = np.arange(0.0, 61.0)
    args = (Params(values), y0, times, np.array([0, 7, 14, 21, 28, 60.0]))
    expected, status_np, p_np = simulate_batch(*args, **PRODUCTION_TOL)
    got, status, p_end = simulate_batch(*args, backend="jax", **PRODUCTION_TOL)
    np.testing.assert_array_equal(status, status_np)
    np.testing.assert_array_equal(p_end.values, p_np.values)
    assert (p_np.values[:, PARAM_INDEX["alive_tumour_pos"]] == 0).any()    # extinction happened
    worst = output_diff(got, expected).max(axis=(0, 1))
    assert (worst <= BACKEND_RTOL).all(), {k: v for k, v in zip(STATE_NAMES, worst) if v > BACKEND_RTOL}


def test_patients_are_independent_of_their_neighbours(kernel):
    y0, values = mixed_batch()
    order = np.random.default_rng(3).permutation(N)
    tol = PRODUCTION_TOL_VEC
    straight = kernel.integrate_interval_jax(y0, 0.0, 14.0, values, **tol)
    shuffled = kernel.integrate_interval_jax(y0[order], 0.0, 14.0, values[order], **tol)
    for a, b in zip(straight, shuffled):
        assert np.array_equal(a[order], b)


def test_a_patient_computes_the_same_floats_in_a_larger_batch(kernel):
    """As with the NumPy backend (docs/scale.md), a patient's numbers do not depend on the chunk
    it is simulated in: 16 patients alone and inside a batch of 48 (a second compilation)."""
    y0, values = mixed_batch()
    alone = kernel.integrate_interval_jax(y0, 0.0, 10.0, values, **PRODUCTION_TOL_VEC)
    big = kernel.integrate_interval_jax(np.concatenate([y0[::-1], y0, y0]), 0.0, 10.0,
                                        np.concatenate([values[::-1], values, values]), **PRODUCTION_TOL_VEC)
    for a, b in zip(alone, big):
        assert np.array_equal(b[N:2 * N], a) and np.array_equal(b[:N], a[::-1])


def test_device_arrays_stay_on_the_device(kernel):
    """to_host=False hands back JAX arrays that feed the next interval unchanged."""
    y0, values = mixed_batch()
    v = kernel.to_device(values)
    y, h, status = kernel.integrate_interval_jax(y0, 0.0, 1.0, v, to_host=False, **PRODUCTION_TOL_VEC)
    assert isinstance(y, jax.Array) and y.dtype == np.float64
    y2, _, _ = kernel.integrate_interval_jax(y, 1.0, 2.0, v, h=h, status=status, **PRODUCTION_TOL_VEC)
    ref, h_ref, s_ref = integrate_interval(rhs, y0, 0.0, 1.0, Params(values), **PRODUCTION_TOL_VEC)
    ref2, _, _ = integrate_interval(rhs, ref, 1.0, 2.0, Params(values), h=h_ref, status=s_ref,
                                   **PRODUCTION_TOL_VEC)
    np.testing.assert_allclose(y2, ref2, rtol=INTERVAL_RTOL, atol=0.0)


def test_float32_arrays_are_refused(kernel):
    """A JAX array made before float64 was switched on is float32: refused with a pointer to
    to_device, never rounded to 7 digits in silence."""
    y0, values = mixed_batch()
    with pytest.raises(SolverError, match="y0 is float32, not float64.*to_device"):
        kernel.integrate_interval_jax(jax.numpy.asarray(y0, dtype=jax.numpy.float32), 0.0, 1.0, values,
                                      **PRODUCTION_TOL_VEC)
    assert kernel.to_device(y0).dtype == np.float64


def test_carcell_imports_without_jax():
    """With jax unavailable, carcell and the kernel module import and available() says False."""
    code = ("import sys; sys.modules['jax'] = None\n"
            "import carcell, carcell.solve.rounds, carcell.solve.jax_kernel as k\n"
            "assert not k.available(); print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
