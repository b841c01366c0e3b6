"""The compiled CPU backend (carcell/solve/numba_kernel.py, carcell/model/rhs_numba.py) against
the NumPy backend.

What is compared, and how closely:

* the right-hand side, one patient at a time, against ``carcell.model.rhs.rhs`` on random states
  and parameters and on real patients' states along their course: ``|a - b| <= 1e-12 max(|b|,
  1e-6)`` per derivative (1/day for log-cell states, units/day otherwise). It is a mirror, so an
  edit of rhs.py not repeated in rhs_numba.py fails here;
* one interval of the integrator, statuses and failures included, against dopri5.py;
* ``simulate_batch`` over half a year (raw states; the difference measure of
  tests/test_solver_reference.py: ln-count difference for cells, relative with a floor for
  cytokines) and whole cohorts through ``run_cohort`` with closed-loop toxicity management
  (trajectories, the patients table and the events): relative difference <= 1e-6, the bound
  issue 8 sets for backends. Values below a billionth of their quantity's largest value in the
  cohort are compared against that floor instead of themselves.

Where NumPy and Numba use the same libm (as here) the backends agree to the bit; the bounds leave
room for a machine where they do not. Everything needs numba and is skipped without it.
"""

from __future__ import annotations

import functools
import multiprocessing

import numpy as np
import pandas as pd
import pytest

import carcell.cohort.run as cohort_run
from carcell.design import compile_chunk, resolve_design
from carcell.errors import ScenarioError
from carcell.knowledge import load_knowledge
from carcell.model.rhs import rhs
from carcell.model.states import IS_LOG, N_STATES, PARAM_INDEX, STATE_NAMES, Params
from carcell.scenario.load import load_scenario
from carcell.solve import rounds
from carcell.solve.dopri5 import STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK, integrate_interval
from carcell.solve.rounds import atol_vector, simulate_batch

from mirror_inputs import perturbed_inputs

# NumPy runs float64 exp, log and pow with its own AVX-512 code on CPUs that have AVX-512, which
# rounds the last bit differently from the C library Numba calls (bit-identical on a CPU without
# it). Cancellation in a derivative (IL-15 near its steady state) magnifies that to ~2e-12, and
# 20 days of adaptive steps to ~1e-10 in the states and ~5e-8 in the next step size (seen on an
# AVX-512 machine, numba 0.68).
RHS_RTOL = 1e-10
INTERVAL_STATE_RTOL = 1e-9
INTERVAL_STEP_RTOL = 1e-6
RHS_FLOOR = 1e-6          # 1/day (log-cell states) or units/day: smaller derivatives are noise
BACKEND_RTOL = 1e-6       # issue 8: backends agree within 1e-6 relative on per-patient outputs
PRODUCTION_TOL = {"rtol": 1e-6, "atol": 1e-8}
EXAMPLES = {"axicel (LBCL, closed loop)": "examples/axicel_lbcl.yaml",
            "satri-cel (gastric, solid)": "examples/satricel_gastric.yaml"}

_IS_LOG = np.array(IS_LOG)
_STATE_FLOOR = np.array([0.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                         for log, name in zip(IS_LOG, STATE_NAMES)])


@pytest.fixture(scope="module")
def kernel():
    pytest.importorskip("numba")
    from carcell.solve import numba_kernel  # noqa: PLC0415 - optional extra

    return numba_kernel


@pytest.fixture(scope="module")
def rhs_rows():
    pytest.importorskip("numba")
    from carcell.model.rhs_numba import rhs_rows  # noqa: PLC0415 - optional extra

    return rhs_rows


@functools.cache
def patients(example: str, n: int):
    design = resolve_design(load_scenario(EXAMPLES[example]), load_knowledge())
    return compile_chunk(design, 0, n)


def rhs_numba(rhs_rows, y: np.ndarray, values: np.ndarray) -> np.ndarray:
    dy = np.empty_like(y)
    rhs_rows(np.ascontiguousarray(y), np.ascontiguousarray(values), dy)
    return dy


def assert_rhs_equal(a: np.ndarray, b: np.ndarray) -> None:
    """Equal within RHS_RTOL, or NaN in both (the guards of rhs.py are mirrored, gaps included)."""
    bad = ~((np.abs(a - b) <= RHS_RTOL * np.maximum(np.abs(b), RHS_FLOOR)) | (np.isnan(a) & np.isnan(b)))
    assert not bad.any(), [(int(i), STATE_NAMES[j], a[i, j], b[i, j]) for i, j in np.argwhere(bad)[:5]]


def random_inputs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs around two real cohorts, haematological and solid (tests/mirror_inputs.py)."""
    real = np.concatenate([patients(e, 16).params.values for e in EXAMPLES])
    y_real = np.concatenate([patients(e, 16).y0 for e in EXAMPLES])
    return perturbed_inputs(rng, y_real, real, n)


def test_rhs_mirror_on_random_states_and_parameters(rhs_rows):
    y, values = random_inputs(np.random.default_rng(8), 4000)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a solid tumour with every population extinct gives 0/0 in rhs.py (see docs/backends.md)
        expected = rhs(np.zeros(len(y)), y, Params(values))
    assert np.isfinite(expected).all(axis=1).mean() > 0.9
    assert_rhs_equal(rhs_numba(rhs_rows, y, values), expected)


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_rhs_mirror_on_real_patients_along_their_course(rhs_rows, example):
    c = patients(example, 16)
    times = np.arange(0.0, 61.0)
    Y, status, p_end = simulate_batch(c.params, c.y0, times, np.array([0, 7, 14, 21, 28, 60.0]),
                                      **PRODUCTION_TOL)
    assert (status == STATUS_OK).all()
    states = Y[:, ::3].reshape(-1, N_STATES)
    values = np.repeat(p_end.values, Y[:, ::3].shape[1], axis=0)
    assert_rhs_equal(rhs_numba(rhs_rows, states, values), rhs(None, states, Params(values)))
    assert_rhs_equal(rhs_numba(rhs_rows, c.y0, c.params.values), rhs(None, c.y0, c.params))


def test_one_interval_matches_dopri5_including_failures(kernel):
    """Fresh and carried step sizes, frozen patients, and patients that fail (as in
    tests/test_solver_reference.py's ABSURD cases) fail the same way, with the same state."""
    c = patients("axicel (LBCL, closed loop)", 16)
    values = c.params.values.copy()
    values[1, PARAM_INDEX["rho_effector"]] = 1e6        # stiff: runs out of 200 steps
    values[2, PARAM_INDEX["ifng_clearance"]] = -50.0    # IFN-gamma overflows within 3000 steps
    values[3, PARAM_INDEX["rho_effector"]] = np.nan
    p = Params(values)
    status0 = np.zeros(16, dtype=np.int8)
    status0[4] = STATUS_MAX_STEPS                       # frozen: not integrated
    tol = atol_vector(1e-8)
    seen = set()
    for h, max_steps in ((None, 200), (np.full(16, 0.05), 3000)):
        run = {"rtol": 1e-6, "atol": tol, "h": h, "max_steps": max_steps, "status": status0}
        with np.errstate(all="ignore"):
            expected = integrate_interval(rhs, c.y0, 0.0, 20.0, p, **run)
        got = kernel.integrate_interval(c.y0, 0.0, 20.0, p, **run)
        np.testing.assert_array_equal(got[2], expected[2])
        assert got[2][3] != STATUS_OK and got[2][4] == STATUS_MAX_STEPS and np.array_equal(got[0][4], c.y0[4])
        seen |= set(got[2][1:3].tolist())
        np.testing.assert_allclose(got[0], expected[0], rtol=INTERVAL_STATE_RTOL, atol=0.0, equal_nan=True)
        np.testing.assert_allclose(got[1], expected[1], rtol=INTERVAL_STEP_RTOL, atol=0.0, equal_nan=True)
    assert {STATUS_MAX_STEPS, STATUS_NONFINITE} <= seen, seen


def test_threads_do_not_change_a_bit(kernel):
    c = patients("satri-cel (gastric, solid)", 64)
    run = functools.partial(kernel.integrate_interval, c.y0, 0.0, 30.0, c.params, rtol=1e-6,
                            atol=atol_vector(1e-8))
    serial = run(threads=1)
    for threads in (2, 3):
        for a, b in zip(run(threads=threads), serial):
            assert np.array_equal(a, b)


def _state_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ln-count difference for cells, relative (with a floor) otherwise; NaN counts as inf."""
    d = np.abs(a - b) / np.where(_IS_LOG, 1.0, np.maximum(np.abs(b), _STATE_FLOOR))
    return np.where(np.isnan(a) & np.isnan(b), 0.0, np.where(np.isnan(d), np.inf, d))


def test_simulate_batch_half_a_year_agrees_with_numpy():
    """Raw states, 8 patients, 180 days with extinction rounds (open loop; the solid tumour
    is covered by the cohort test below). At rtol 1e-7: at the production 1e-6, a last-bit
    difference in exp (RHS_RTOL's comment) can flip one step's accept/reject and move a level
    near its baseline by ~2e-6 over months, as between the JAX and NumPy backends
    (docs/backend-jax.md); at 1e-7 the largest difference seen was 1.7e-7."""
    pytest.importorskip("numba")
    c = patients("axicel (LBCL, closed loop)", 8)
    times = np.arange(0.0, 181.0)
    rounds_ = np.array([0, 7, 14, 21, 28, 90, 180.0])
    tol = {"rtol": 1e-7, "atol": 1e-9}
    ref = simulate_batch(c.params, c.y0, times, rounds_, **tol)
    Y, status, p_end = simulate_batch(c.params, c.y0, times, rounds_, backend="numba", **tol)
    np.testing.assert_array_equal(status, ref[1])
    np.testing.assert_array_equal(p_end.values, ref[2].values)   # the same extinctions
    flags = [PARAM_INDEX[f] for f in ("alive_car", "alive_tumour_pos", "alive_tumour_neg", "alive_tumour_low")]
    assert (p_end.values[:, flags] == 0).any()   # extinctions happened
    worst = _state_diff(Y, ref[0]).max(axis=(0, 1))
    assert (worst <= BACKEND_RTOL).all(), dict(zip(STATE_NAMES, worst))


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    finite = np.abs(b[np.isfinite(b)])
    floor = max(1e-9 * (finite.max() if finite.size else 0.0), 1e-300)
    d = np.abs(a - b) / np.maximum(np.abs(b), floor)
    same_missing = (np.isnan(a) & np.isnan(b)) | (a == b)
    return np.where(same_missing, 0.0, np.where(np.isnan(d), np.inf, d))


def assert_frames_agree(got: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    assert list(got.columns) == list(expected.columns) and len(got) == len(expected), what
    for col in expected.columns:
        if pd.api.types.is_numeric_dtype(expected[col]) and not pd.api.types.is_bool_dtype(expected[col]):
            worst = _relative(got[col].to_numpy(dtype=float), expected[col].to_numpy(dtype=float)).max()
            assert worst <= BACKEND_RTOL, (what, col, worst)
        else:
            assert got[col].astype(str).tolist() == expected[col].astype(str).tolist(), (what, col)


@pytest.mark.parametrize("example", list(EXAMPLES))
def test_cohort_with_toxicity_management_agrees_with_numpy(example, monkeypatch):
    """run_cohort, 20 patients, 60 days, the ASCO 2021 management protocol acting on twice-daily
    assessments: trajectories, patients table and events as with the NumPy backend."""
    pytest.importorskip("numba")
    scenario = load_scenario(EXAMPLES[example], ["population.n=20", "trial.follow_up_days=60",
                                                 "trial.solver.backend=numpy"])
    assert scenario.regimen.protocol == "asco2021"
    expected = cohort_run.run_cohort(scenario)

    def numba_batch(*args, **kwargs):
        return simulate_batch(*args, **{**kwargs, "backend": "numba"})

    monkeypatch.setattr(cohort_run, "simulate_batch", numba_batch)
    got = cohort_run.run_cohort(scenario)
    if example.startswith("axicel"):   # the loop acts: someone got tocilizumab
        assert expected.patients["tocilizumab_doses"].sum() > 0
    assert (got.patients["solver_status"] == "ok").all()
    assert set(got.trajectories) == set(expected.trajectories)
    for q, v in expected.trajectories.items():
        worst = _relative(got.trajectories[q], v).max()
        assert worst <= BACKEND_RTOL, (q, worst)
    assert_frames_agree(got.patients, expected.patients, "patients")
    assert_frames_agree(got.events, expected.events, "events")


def test_unknown_or_missing_backend_is_one_clear_error(monkeypatch):
    c = patients("axicel (LBCL, closed loop)", 16)
    args = (c.params, c.y0, np.arange(0.0, 3.0), np.array([0.0, 2.0]))
    with pytest.raises(ScenarioError, match="'cuda' is unknown; use auto or one of numpy, numba, numba-serial"):
        simulate_batch(*args, backend="cuda", **PRODUCTION_TOL)
    monkeypatch.setattr(rounds, "available_backends", lambda: ("numpy",))
    with pytest.raises(ScenarioError, match=r"needs numba.*pip install 'carcell\[numba\]'"):
        simulate_batch(*args, backend="numba", **PRODUCTION_TOL)


def test_available_backends_lists_numba_when_installed():
    pytest.importorskip("numba")
    assert rounds.available_backends()[:3] == ("numpy", "numba", "numba-serial")


def test_auto_runs_the_compiled_kernel_when_installed_and_numpy_otherwise(monkeypatch):
    pytest.importorskip("numba")
    assert load_scenario(EXAMPLES["axicel (LBCL, closed loop)"]).trial.solver.backend == "auto"
    assert rounds.resolve_backend("auto") == "numba"
    assert rounds.resolve_backend("numpy") == "numpy"
    monkeypatch.setattr(rounds, "available_backends", lambda: ("numpy",))
    assert rounds.resolve_backend("auto") == "numpy"


def _child_run(kernel, c, queue) -> None:
    y, _, status = kernel.integrate_interval(c.y0, 0.0, 5.0, c.params, rtol=1e-6, atol=atol_vector(1e-8),
                                             threads=2)
    queue.put((y, status))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_numba_threads_survive_a_fork(kernel):
    """A process pool forks workers from a parent that may have run the kernel on threads; the
    child must be able to run it too (Numba's OpenMP layer aborts there, see numba_kernel.py)."""
    c = patients("axicel (LBCL, closed loop)", 40)
    parent = kernel.integrate_interval(c.y0, 0.0, 5.0, c.params, rtol=1e-6, atol=atol_vector(1e-8), threads=2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_run, args=(kernel, c, queue))
    child.start()
    child.join()   # the result is a few kB: it fits the pipe, so the child exits before it is read
    assert child.exitcode == 0
    y, status = queue.get()
    assert np.array_equal(y, parent[0]) and np.array_equal(status, parent[2])
