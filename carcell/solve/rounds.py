"""Integrate a batch of patients from one clinical round to the next.

A *round* is a day on which something may happen to a patient: the infusion (day 0) and each
response assessment. Between rounds the model is a plain ODE, integrated output interval by
output interval with the step size carried over. At every round boundary populations that
have fallen below one cell are declared extinct: their flag in the parameters goes to 0 and
their state to ``LOG_EXTINCT``, so a cleared tumour cannot regrow from a fraction of a cell.

:func:`simulate_batch` is the batched NumPy path; :func:`simulate_reference` does the same
rounds with SciPy's ``solve_ivp`` one patient at a time, for tests and the benchmark.

The integration between output times has interchangeable backends (docs/backends.md): the
NumPy batched Dormand-Prince (``"numpy"``, the default, no extra dependency) and the same
algorithm compiled with Numba (``"numba"`` on every core, ``"numba-serial"`` on one thread;
``pip install 'carcell[numba]'``). Rounds, extinction, assessments and later infusions are the
same code whichever backend integrates.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

from carcell.errors import ScenarioError
from carcell.model.rhs import rhs
from carcell.model.states import CAR_STATES, INDEX, IS_LOG, LOG_EXTINCT, N_STATES, PARAM_INDEX, Params
from carcell.solve.dopri5 import STATUS_NONFINITE, STATUS_OK, integrate_interval

_CAR = [INDEX[s] for s in CAR_STATES]
_EXTINCTION = (
    ("alive_tumour_pos", [INDEX["tumour_pos"]]),
    ("alive_tumour_low", [INDEX["tumour_low"]]),
    ("alive_tumour_neg", [INDEX["tumour_neg"]]),
    ("alive_car", _CAR),
)


#: every integration backend carcell knows, whether or not its extra is installed
BACKENDS: tuple[str, ...] = ("numpy", "numba", "numba-serial", "jax")
#: what ``trial.solver.backend: auto`` (the scenario default) runs: the first one installed
AUTO_ORDER: tuple[str, ...] = ("numba", "numpy")
_one_thread = False   # set in the worker processes of a pool or a Dask cluster (use_one_thread)


def use_one_thread() -> None:
    """Say that this process is one of several sharing the cores (a local pool's or a Dask
    cluster's worker), so ``auto`` takes the compiled kernel's one-thread form, numba-serial."""
    global _one_thread   # noqa: PLW0603 - a property of the whole process, set once by its starter
    _one_thread = True


def available_backends() -> tuple[str, ...]:
    """The backends that can run here: ``"numpy"`` always, the Numba ones with numba installed,
    ``"jax"`` with jax installed (on a GPU when jax sees one, docs/backend-jax.md)."""
    needs = {"numba": "numba", "numba-serial": "numba", "jax": "jax"}
    return tuple(b for b in BACKENDS if b == "numpy" or importlib.util.find_spec(needs[b]) is not None)


def resolve_backend(backend: str) -> str:
    """The backend that runs for ``backend``: itself, or for ``"auto"`` the compiled kernel when
    numba is installed and NumPy otherwise. The two compute the same numbers (to the bit where
    they share a libm; docs/backends.md), so ``auto`` changes the speed, not the results. In a
    worker process that shares the cores with others (:func:`use_one_thread`) the compiled
    kernel runs on one thread."""
    if backend != "auto":
        return backend
    installed = available_backends()
    chosen = next(b for b in AUTO_ORDER if b in installed)
    return "numba-serial" if chosen == "numba" and _one_thread else chosen


def _integrator(backend: str) -> Callable:
    """``integrate_interval`` of a backend, with dopri5.integrate_interval's signature less ``rhs``."""
    backend = resolve_backend(backend)
    if backend == "numpy":
        return functools.partial(integrate_interval, rhs)
    if backend not in BACKENDS:
        raise ScenarioError(f"trial.solver.backend = {backend!r} is unknown; use auto or one of {', '.join(BACKENDS)}")
    if backend not in available_backends():
        extra, package = ("gpu", "jax") if backend == "jax" else ("numba", "numba")
        raise ScenarioError(f"trial.solver.backend = {backend!r} needs {package}, which is not installed; "
                            f"install it with pip install 'carcell[{extra}]' or use backend 'numpy'")
    if backend == "jax":
        from carcell.solve import jax_kernel  # noqa: PLC0415 - optional extra, imported on demand

        return jax_kernel.integrate_interval_jax
    from carcell.solve import numba_kernel  # noqa: PLC0415 - optional extra, imported on demand

    return functools.partial(numba_kernel.integrate_interval, threads=None if backend == "numba" else 1)


def atol_vector(atol: float) -> np.ndarray:
    """Absolute tolerance per state: in log space an absolute error is a relative error of the count."""
    return np.full(N_STATES, atol)


def apply_extinction(y: np.ndarray, values: np.ndarray) -> None:
    """Populations below one cell (ln N < 0) become extinct, in place."""
    for flag, cols in _EXTINCTION:
        total = np.logaddexp.reduce(y[:, cols], axis=1) if len(cols) > 1 else y[:, cols[0]]
        gone = (total < 0.0) & (values[:, PARAM_INDEX[flag]] > 0)
        if gone.any():
            values[gone, PARAM_INDEX[flag]] = 0.0
            for c in cols:
                y[gone, c] = LOG_EXTINCT


def _round_plan(times: np.ndarray, rounds: np.ndarray) -> set[int]:
    """Indices into ``times`` at which a round boundary falls (every round must be an output time)."""
    idx = np.searchsorted(times, rounds)
    ok = (idx < times.size) & np.isclose(times[np.minimum(idx, times.size - 1)], rounds)
    if not ok.all():
        raise ValueError(f"round days {rounds[~ok]} are not output times")
    return set(int(i) for i in idx)


def simulate_batch(
    params: Params,
    y0: np.ndarray,
    times: np.ndarray,
    rounds: np.ndarray,
    *,
    rtol: float,
    atol: float,
    max_steps: int = 100_000,
    progress=None,
    assess=None,
    assessment_days: np.ndarray | None = None,
    infusions: list[tuple[float, np.ndarray]] | None = None,
    backend: str = "numpy",
) -> tuple[np.ndarray, np.ndarray, Params]:
    """Integrate every patient over ``times`` (days, starting at 0).

    ``assess(day, y, followed)``, when given, is called at each of ``assessment_days`` (output
    times) with the current states and the indices of patients still integrating; it may change
    ``y`` in place (drug doses). The stored output is the state after the assessment.
    ``backend`` chooses what integrates between output times (see :data:`BACKENDS`; ``"auto"``:
    :func:`resolve_backend`).

    Returns the trajectories, shape (n, len(times), N_STATES), the solver status per patient,
    and the parameters with the extinction flags as they ended.
    """
    integrate = _integrator(backend)
    values = params.values.copy()
    p = Params(values)
    n = y0.shape[0]
    out = np.empty((n, times.size, N_STATES))
    y = y0.copy()
    apply_extinction(y, values)
    out[:, 0] = y
    status = np.full(n, STATUS_OK, dtype=np.int8)
    boundaries = _round_plan(times, rounds)
    assess_at = _round_plan(times, assessment_days) if (assess is not None and assessment_days is not None
                                                          and len(assessment_days)) else set()
    if 0 in assess_at:
        assess(float(times[0]), y, np.flatnonzero(status == STATUS_OK))
        out[:, 0] = y
    doses = {}
    for day, add in infusions or []:
        (at,) = _round_plan(times, np.array([day]))
        doses[at] = add
    h = None
    tol = atol_vector(atol)
    failed_at = np.full(n, times.size)
    for j in range(1, times.size):
        y, h, status = integrate(
            y, float(times[j - 1]), float(times[j]), p, rtol=rtol, atol=tol, h=h,
            max_steps=max_steps, status=status,
        )
        if j in boundaries:
            apply_extinction(y, values)
        bad = ~np.all(np.isfinite(y), axis=1)
        status[bad & (status == STATUS_OK)] = STATUS_NONFINITE
        if j in doses:
            ok = status == STATUS_OK
            for c, col in enumerate(_CAR):
                y[ok, col] = np.logaddexp(y[ok, col], doses[j][ok, c])
            values[ok, PARAM_INDEX["alive_car"]] = 1.0
        if j in assess_at:
            assess(float(times[j]), y, np.flatnonzero(status == STATUS_OK))
        failed_at[(status != STATUS_OK) & (failed_at == times.size)] = j
        out[:, j] = y
        if progress is not None:
            progress(j)
    # a failed patient keeps its trajectory up to the failure and is NaN after it
    for i in np.flatnonzero(failed_at < times.size):
        out[i, failed_at[i]:] = np.nan
    return out, status, p


def simulate_reference(
    params: Params,
    y0: np.ndarray,
    times: np.ndarray,
    rounds: np.ndarray,
    *,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-12,
    rhs_one: Callable | None = None,
) -> np.ndarray:
    """The same rounds with ``scipy.integrate.solve_ivp``, one patient at a time.

    ``rhs_one(y, p_row, dy)``, when given, computes one patient's derivative in place instead of
    :func:`carcell.model.rhs.rhs` (e.g. the compiled mirror ``carcell.model.rhs_numba.rhs_one``,
    which the tests use to make their tight-tolerance references affordable)."""
    n = y0.shape[0]
    out = np.empty((n, times.size, N_STATES))
    round_set = _round_plan(times, rounds)
    round_idx = sorted(round_set | {0, times.size - 1})
    for i in range(n):
        values = params.values[i : i + 1].copy()
        p = Params(values)
        y = y0[i : i + 1].copy()
        apply_extinction(y, values)
        out[i, 0] = y[0]

        if rhs_one is None:
            def f(t, yy, p=p):
                return rhs(np.array([t]), yy[None, :], p)[0]
        else:
            def f(t, yy, row=values[0]):   # a view of values: sees the extinction flags set below
                dy = np.empty_like(yy)
                rhs_one(yy, row, dy)
                return dy

        for a, b in zip(round_idx[:-1], round_idx[1:]):
            sol = solve_ivp(f, (times[a], times[b]), y[0], method=method, rtol=rtol,
                            atol=atol, t_eval=times[a : b + 1])
            if not sol.success:
                out[i, a + 1 :] = np.nan
                break
            out[i, a + 1 : b + 1] = sol.y.T[1:]
            y = sol.y.T[-1:].copy()
            if b in round_set:  # extinction only on round days, as in simulate_batch
                apply_extinction(y, values)
            out[i, b] = y[0]
    return out


assert all(IS_LOG[c] for c in _CAR)
