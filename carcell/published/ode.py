"""Batched integration of a published model's ODEs, with doses and rechallenges as events.

All virtual patients of a cohort advance together through carcell's own batched
Dormand-Prince 5(4) (:mod:`carcell.solve.dopri5`), each with its own adaptive step. The
output grid is split at event days (an infusion, a tumour rechallenge); an event adds to (or
sets) one state at that instant, and the stored output at an event day is the state just
after the event, as BioModels' SBML events and CARTmath's dosing loop both record it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

import scipy.sparse
from scipy.integrate import solve_ivp

from carcell.solve.dopri5 import STATUS_NAMES, STATUS_NONFINITE, STATUS_OK, integrate_interval


class Columns:
    """Per-patient parameters addressed by name (``p.gamma`` has shape (n,)).

    The batched solver takes subsets of patients with :meth:`take` at every step.
    """

    __slots__ = ("_v",)

    def __init__(self, values: Mapping[str, np.ndarray]):
        object.__setattr__(self, "_v", {k: np.asarray(v, dtype=float) for k, v in values.items()})

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._v[name]
        except KeyError:
            raise AttributeError(name) from None

    def take(self, idx: np.ndarray) -> Columns:
        return Columns({k: v[idx] for k, v in self._v.items()})

    def __len__(self) -> int:
        return len(next(iter(self._v.values()))) if self._v else 0

    def as_dict(self) -> dict[str, np.ndarray]:
        return dict(self._v)


@dataclass(frozen=True)
class Event:
    """At ``day``, add ``amount`` to state ``state`` (or set it, ``mode='set'``)."""

    day: float
    state: int
    amount: float | np.ndarray
    mode: str = "add"


RHS = Callable[[np.ndarray, np.ndarray, Columns], np.ndarray]


def integrate(
    rhs: RHS,
    y0: np.ndarray,
    times: np.ndarray,
    params: Columns,
    *,
    events: Sequence[Event] = (),
    rtol: float = 1e-8,
    atol: np.ndarray | float = 1e-6,
    after_step: Callable[[np.ndarray], None] | None = None,
    max_steps: int = 200_000,
    method: str = "dopri5",
    check_every: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate every patient and return the states at ``times``.

    Parameters
    ----------
    rhs : callable ``rhs(t, y, p)`` -> dy/dt, shape (n, n_states)
    y0 : ndarray, shape (n, n_states)
    times : ndarray, shape (n_times,)
        Output times, increasing, starting at the initial time.
    params : Columns, n patients
    events : sequence of Event
        Their days need not be output times (they are added to the internal grid).
    rtol, atol : tolerances of the step control; ``atol`` per state or scalar.
    after_step : callable, optional
        Called in place on the states at every grid point (detection thresholds, floors);
        with ``method='bdf'`` at event days and every ``check_every`` time units.
    method : 'dopri5' or 'bdf'
        ``dopri5``: carcell's batched explicit solver, each patient with its own step.
        ``bdf``: SciPy's implicit BDF on the whole cohort as one block-diagonal system (its
        Jacobian sparsity declared), for stiff models; output by BDF's dense interpolant.

    Returns
    -------
    y : ndarray, shape (n, n_times, n_states); NaN after a patient's solver failure
    status : ndarray of str, shape (n,)  ('ok', 'max_steps', 'step_too_small', 'nonfinite')
    """
    times = np.asarray(times, dtype=float)
    n, n_states = y0.shape
    if method == "bdf":
        return _integrate_bdf(rhs, np.array(y0, dtype=float), times, params, events, rtol, atol,
                              after_step, check_every)
    grid = np.union1d(times, [e.day for e in events if times[0] < e.day <= times[-1]])
    keep = np.searchsorted(grid, times)
    by_day: dict[float, list[Event]] = {}
    for e in events:
        by_day.setdefault(float(e.day), []).append(e)
    tol = np.broadcast_to(np.asarray(atol, dtype=float), (n_states,)).copy()
    out = np.empty((n, grid.size, n_states))
    y = np.array(y0, dtype=float)
    _apply(by_day.get(float(grid[0]), []), y)
    if after_step is not None:
        after_step(y)
    out[:, 0] = y
    status = np.full(n, STATUS_OK, dtype=np.int8)
    h = None
    for j in range(1, grid.size):
        y, h, status = integrate_interval(rhs, y, float(grid[j - 1]), float(grid[j]), params, rtol=rtol,
                                          atol=tol, h=h, max_steps=max_steps, status=status)
        status[~np.all(np.isfinite(y), axis=1) & (status == STATUS_OK)] = STATUS_NONFINITE
        _apply(by_day.get(float(grid[j]), []), y)
        if after_step is not None:
            after_step(y)
        out[:, j] = y
        out[status != STATUS_OK, j] = np.nan
    return out[:, keep], np.array([STATUS_NAMES[int(s)] for s in status])


def _integrate_bdf(rhs, y0, times, params, events, rtol, atol, after_step, check_every):
    n, k = y0.shape
    end = float(times[-1])
    cuts = {float(times[0]), end} | {float(e.day) for e in events if times[0] < e.day < end}
    if check_every:
        cuts |= set(np.arange(times[0], end, check_every).tolist())
    cuts_arr = np.array(sorted(cuts))
    by_day: dict[float, list[Event]] = {}
    for e in events:
        by_day.setdefault(float(e.day), []).append(e)
    tol = np.tile(np.broadcast_to(np.asarray(atol, dtype=float), (k,)), n)
    sparsity = scipy.sparse.kron(scipy.sparse.identity(n), np.ones((k, k)), format="csr")

    def f(t, z):
        return rhs(np.full(n, t), z.reshape(n, k), params).ravel()

    out = np.full((n, times.size, k), np.nan)
    y = y0.copy()
    status = np.full(n, STATUS_OK, dtype=np.int8)
    for a, b in zip(cuts_arr[:-1], cuts_arr[1:]):
        _apply(by_day.get(float(a), []), y)
        if after_step is not None:
            after_step(y)
        at_a = np.isclose(times, a, rtol=0, atol=1e-12)
        out[:, at_a] = y[:, None, :]
        inside = (times > a) & (times <= b)
        sol = solve_ivp(f, (a, b), y.ravel(), method="BDF", rtol=rtol, atol=tol, jac_sparsity=sparsity,
                        dense_output=True)
        if not sol.success:
            status[:] = STATUS_NONFINITE
            break
        if inside.any():
            out[:, inside] = sol.sol(times[inside]).T.reshape(inside.sum(), n, k).transpose(1, 0, 2)
        y = sol.y[:, -1].reshape(n, k).copy()
    at_end = np.isclose(times, end, rtol=0, atol=1e-12)
    _apply(by_day.get(end, []), y)
    if after_step is not None:
        after_step(y)
    if status[0] == STATUS_OK:
        out[:, at_end] = y[:, None, :]
    if after_step is not None:
        for j in range(times.size):
            after_step(out[:, j])
    return out, np.array([STATUS_NAMES[int(s)] for s in status])


def _apply(events: list[Event], y: np.ndarray) -> None:
    for e in events:
        if e.mode == "set":
            y[:, e.state] = e.amount
        else:
            y[:, e.state] = y[:, e.state] + e.amount


def floor_at_zero(y: np.ndarray) -> None:
    """Populations cannot be negative: undershoots of the integrator are set to 0, in place."""
    np.maximum(y, 0.0, out=y)


def below(threshold: float) -> Callable[[np.ndarray], None]:
    """A detection threshold: populations below it count as gone (set to 0), in place."""

    def clamp(y: np.ndarray) -> None:
        y[y < threshold] = 0.0

    return clamp
