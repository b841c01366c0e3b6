"""Batched Dormand-Prince 5(4) with per-patient adaptive steps.

All patients of a batch advance together, each with its own time, step size and accept/reject
decision (Hairer, Norsett & Wanner, Solving ODEs I, 2nd ed., Sec. II.4; the coefficients are
those of Dormand & Prince 1980, doi:10.1016/0771-050X(80)90013-3). The step lands exactly on
the end of each interval, so no dense output is needed for the outputs. Patients that finish
drop out of the working set, so a slow patient costs only its own steps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from carcell.model.states import Params

RHS = Callable[[np.ndarray, np.ndarray, Params], np.ndarray]

# Butcher tableau of DOPRI5
_C = np.array([0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0])
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
# 5th-order weights are the last row of A (FSAL); E = b5 - b4 gives the error estimate.
_E = np.array(
    [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]
)

#: solver_status codes
STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_TOO_SMALL = 2
STATUS_NONFINITE = 3
STATUS_NAMES = {
    STATUS_OK: "ok",
    STATUS_MAX_STEPS: "max_steps",
    STATUS_STEP_TOO_SMALL: "step_too_small",
    STATUS_NONFINITE: "nonfinite",
}

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0


def initial_step(
    rhs: RHS, t0: float, y0: np.ndarray, p: Params, f0: np.ndarray, rtol: float,
    atol: np.ndarray,
) -> np.ndarray:
    """Per-patient starting step (Hairer, Norsett & Wanner, Sec. II.4, algorithm 'starting step')."""
    scale = atol + rtol * np.abs(y0)
    d0 = np.sqrt(np.mean((y0 / scale) ** 2, axis=1))
    d1 = np.sqrt(np.mean((f0 / scale) ** 2, axis=1))
    h0 = np.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / np.maximum(d1, 1e-300))
    y1 = y0 + h0[:, None] * f0
    f1 = rhs(np.full(len(y0), t0) + h0, y1, p)
    d2 = np.sqrt(np.mean(((f1 - f0) / scale) ** 2, axis=1)) / h0
    dmax = np.maximum(d1, d2)
    h1 = np.where(dmax <= 1e-15, np.maximum(1e-6, h0 * 1e-3), (0.01 / np.maximum(dmax, 1e-300)) ** 0.2)
    return np.minimum(100 * h0, h1)


def integrate_interval(
    rhs: RHS,
    y0: np.ndarray,
    t0: float,
    t1: float,
    p: Params,
    *,
    rtol: float,
    atol: np.ndarray,
    h: np.ndarray | None = None,
    max_steps: int = 100_000,
    status: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance every patient from ``t0`` to ``t1``.

    Parameters
    ----------
    rhs : callable ``rhs(t, y, p)`` returning dy/dt, shape (n, n_states)
    y0 : ndarray, shape (n, n_states)
    t0, t1 : float
        Interval ends, days.
    p : Params, n rows
    rtol : float
        Relative tolerance.
    atol : ndarray, shape (n_states,)
        Absolute tolerance per state.
    h : ndarray, shape (n,), optional
        Step sizes to start with (for example the last accepted step of the previous interval);
        computed when missing.
    max_steps : int
        Step attempts allowed per patient in this interval.
    status : ndarray of int, shape (n,), optional
        Patients whose status is not ``STATUS_OK`` are not integrated (their state is frozen).

    Returns
    -------
    y1 : ndarray, shape (n, n_states)
    h : ndarray, shape (n,)
        Step size each patient would take next.
    status : ndarray of int, shape (n,)
    """
    n, n_states = y0.shape
    y = y0.copy()
    status = np.zeros(n, dtype=np.int8) if status is None else status.copy()
    span = t1 - t0
    if span <= 0 or n == 0:
        return y, (np.full(n, 1e-3) if h is None else h.copy()), status
    active = np.flatnonzero(status == STATUS_OK)
    f = np.zeros_like(y)
    f[active] = rhs(np.full(active.size, t0), y[active], p.take(active))
    if h is None:
        h = np.full(n, span)
        if active.size:
            h[active] = initial_step(rhs, t0, y[active], p.take(active), f[active], rtol, atol)
    h = np.minimum(h.copy(), span)
    t = np.full(n, float(t0))   # an int start time would freeze time in an int array
    steps = np.zeros(n, dtype=np.int64)
    h_next = h.copy()

    while active.size:
        ya, ta, pa, fa = y[active], t[active], p.take(active), f[active]
        remaining = t1 - ta
        # Land exactly on t1: a step that would pass it (or stop just short) is cut to it.
        ha = np.minimum(h[active], remaining)
        ha = np.where(remaining - ha < 1e-12 * max(1.0, abs(t1)), remaining, ha)
        hc = ha[:, None]
        k = [fa]
        for i in range(1, 7):
            yi = ya + hc * sum(a * kj for a, kj in zip(_A[i], k) if a != 0.0)
            k.append(rhs(ta + _C[i] * ha, yi, pa))
        y_new = yi  # stage 7 evaluates at the 5th-order solution (FSAL)
        f_new = k[6]
        err_vec = hc * sum(e * kj for e, kj in zip(_E, k) if e != 0.0)
        scale = atol + rtol * np.maximum(np.abs(ya), np.abs(y_new))
        err = np.sqrt(np.mean((err_vec / scale) ** 2, axis=1))

        finite = np.isfinite(err) & np.all(np.isfinite(y_new), axis=1)
        accept = finite & (err <= 1.0)
        factor = np.where(
            err == 0.0, _MAX_FACTOR,
            np.clip(_SAFETY * np.power(np.where(finite & (err > 0.0), err, 1e300), -0.2), _MIN_FACTOR, _MAX_FACTOR),
        )
        # after a rejection never grow the step
        factor = np.where(accept, factor, np.minimum(factor, 1.0))
        factor = np.where(finite, factor, 0.1)
        h_new = ha * factor

        acc_idx = active[accept]
        y[acc_idx] = y_new[accept]
        f[acc_idx] = f_new[accept]
        t[acc_idx] = np.where(
            (t1 - ta[accept]) - ha[accept] <= 0.0, t1, ta[accept] + ha[accept]
        )
        h[active] = h_new
        # remember the step a patient would have taken had the interval not ended
        h_next[acc_idx] = np.where(ha[accept] < remaining[accept], h_new[accept],
                                   np.maximum(h_new[accept], h_next[acc_idx]))
        steps[active] += 1

        done = t[active] >= t1
        too_small = (~accept) & (h_new < 1e-14 * max(1.0, abs(t1)))
        nonfinite_fail = (~finite) & ~(h_new >= 1e-10)  # a NaN step is a failure too
        too_many = steps[active] >= max_steps
        status[active[too_small]] = STATUS_STEP_TOO_SMALL
        status[active[nonfinite_fail]] = STATUS_NONFINITE
        status[active[too_many & ~done]] = STATUS_MAX_STEPS
        keep = ~done & (status[active] == STATUS_OK)
        active = active[keep]

    return y, h_next, status
