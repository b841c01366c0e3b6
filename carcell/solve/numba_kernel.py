"""Compiled CPU kernel: the batched Dormand-Prince 5(4) of dopri5.py, one patient at a time in
machine code.

:func:`integrate_interval` takes and returns what :func:`carcell.solve.dopri5.integrate_interval`
does and runs the same algorithm: the same tableau (imported from dopri5.py), error norm, starting
step, step-factor clipping, rejection rule, landing on the interval's end, step budget and
status codes. The NumPy version advances every patient together and drops those that finish;
here a compiled loop takes the patients one by one and runs each to the end of the interval,
which spends no time on array bookkeeping and keeps a patient's 22 states in cache.

Patients are independent (no step, norm or decision looks at another patient), so the results
do not depend on the order in which they are taken, nor on how many threads take them. Threads
are plain Python threads running the compiled loop with the GIL released, each on its own block
of patients; Numba's ``parallel=True`` (``prange``) was not used because its default OpenMP layer
(GNU libgomp) kills a forked child that launches threads after its parent did ("fork() called
from a process already using GNU OpenMP"), which a local process pool would hit, and its
workqueue layer aborts when two Python threads (a Dask worker's) enter it at once.

The right-hand side is :func:`carcell.model.rhs_numba.rhs_one`, a mirror of
:func:`carcell.model.rhs.rhs`, and the error norm sums in NumPy's order, so where NumPy and Numba
call the same ``exp`` and ``pow`` (glibc's, as on this project's machines) the two backends take
the same steps and agree to the bit; elsewhere they differ by rounding (docs/backends.md).

This module imports numba; :mod:`carcell.solve.rounds` imports it only for ``backend="numba"``.
Compilation happens on the first call and is cached on disk (see :func:`_compile_kernel`).
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np

from carcell.model.rhs_numba import rhs_one
from carcell.model.states import N_STATES, Params
from carcell.solve.dopri5 import (
    _A, _E, _MAX_FACTOR, _MIN_FACTOR, _SAFETY, STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK,
    STATUS_STEP_TOO_SMALL,
)

_jit = numba.njit(cache=False, fastmath=False, error_model="numpy")

# the tableau of dopri5.py as dense arrays the compiled code can index (zeros are skipped there
# and here alike, so the stage sums add the same terms in the same order)
_A_DENSE = np.zeros((7, 7))
for _i, _row in enumerate(_A):
    _A_DENSE[_i, :len(_row)] = _row
_E_DENSE = np.asarray(_E, dtype=np.float64)

# rows of the per-patient work array
_K0 = 0           # k[0..6]: the seven stages
_Y_STAGE = 7      # the state at which a stage is evaluated; after stage 7 the 5th-order solution
_ERR = 8          # error estimate, then error / scale
_WORK_ROWS = 9

_MIN_BLOCK = 16          # patients per block of work handed to a thread, at least
_BLOCKS_PER_THREAD = 4


@_jit
def _mean_square(x) -> float:
    """mean(x**2) over the states in NumPy's order (pairwise sum with 8 accumulators).

    ``np.mean(v**2, axis=1)`` over a row of 22 sums the squares into 8 partial sums, combines
    them pairwise and adds the remaining 6 one by one; doing the same here keeps the error norm,
    and with it every accept/reject decision, identical to the NumPy backend's.
    """
    n = x.size
    if n < 8:
        s = 0.0
        for j in range(n):
            s += x[j] * x[j]
        return s / n
    r0, r1, r2, r3 = x[0] * x[0], x[1] * x[1], x[2] * x[2], x[3] * x[3]
    r4, r5, r6, r7 = x[4] * x[4], x[5] * x[5], x[6] * x[6], x[7] * x[7]
    full = n - n % 8
    for i in range(8, full, 8):
        r0 += x[i] * x[i]
        r1 += x[i + 1] * x[i + 1]
        r2 += x[i + 2] * x[i + 2]
        r3 += x[i + 3] * x[i + 3]
        r4 += x[i + 4] * x[i + 4]
        r5 += x[i + 5] * x[i + 5]
        r6 += x[i + 6] * x[i + 6]
        r7 += x[i + 7] * x[i + 7]
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(full, n):
        s += x[i] * x[i]
    return s / n


@_jit
def _initial_step(y0, p, f0, rtol: float, atol, w) -> float:
    """Starting step of one patient (dopri5.initial_step; Hairer, Norsett & Wanner, Sec. II.4)."""
    scaled, y1, f1 = w[_ERR], w[_Y_STAGE], w[_K0 + 1]
    for j in range(y0.size):
        scaled[j] = y0[j] / (atol[j] + rtol * np.abs(y0[j]))
    d0 = np.sqrt(_mean_square(scaled))
    for j in range(y0.size):
        scaled[j] = f0[j] / (atol[j] + rtol * np.abs(y0[j]))
    d1 = np.sqrt(_mean_square(scaled))
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / np.maximum(d1, 1e-300)
    for j in range(y0.size):
        y1[j] = y0[j] + h0 * f0[j]
    rhs_one(y1, p, f1)
    for j in range(y0.size):
        scaled[j] = (f1[j] - f0[j]) / (atol[j] + rtol * np.abs(y0[j]))
    d2 = np.sqrt(_mean_square(scaled)) / h0
    dmax = np.maximum(d1, d2)
    h1 = np.maximum(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / np.maximum(dmax, 1e-300)) ** 0.2
    return np.minimum(100 * h0, h1)


@_jit
def _dopri5_one(y, p, t0: float, t1: float, h: float, rtol: float, atol, max_steps: int, w):
    """Advance one patient from ``t0`` to ``t1`` in place; returns (next step, status).

    The body of dopri5.integrate_interval's while loop for one row of its batch.
    """
    n = y.size
    k = w[_K0:_K0 + 7]
    y_new, err_vec = w[_Y_STAGE], w[_ERR]
    tiny = 1e-12 * max(1.0, abs(t1))
    floor = 1e-14 * max(1.0, abs(t1))
    t = t0
    h_next = h
    steps = 0
    status = STATUS_OK
    while True:
        remaining = t1 - t
        # land exactly on t1: a step that would pass it (or stop just short) is cut to it
        ha = np.minimum(h, remaining)
        if remaining - ha < tiny:
            ha = remaining
        for i in range(1, 7):
            for j in range(n):
                acc = 0.0
                first = True
                for m in range(i):
                    a = _A_DENSE[i, m]
                    if a != 0.0:
                        acc = a * k[m, j] if first else acc + a * k[m, j]
                        first = False
                y_new[j] = y[j] + ha * acc
            rhs_one(y_new, p, k[i])   # stage 7 evaluates at the 5th-order solution (FSAL)
        finite = True
        for j in range(n):
            acc = 0.0
            first = True
            for m in range(7):
                e = _E_DENSE[m]
                if e != 0.0:
                    acc = e * k[m, j] if first else acc + e * k[m, j]
                    first = False
            scale = atol[j] + rtol * np.maximum(np.abs(y[j]), np.abs(y_new[j]))
            err_vec[j] = ha * acc / scale
            finite = finite and np.isfinite(y_new[j])
        err = np.sqrt(_mean_square(err_vec))
        finite = finite and np.isfinite(err)
        accept = finite and err <= 1.0
        if err == 0.0:
            factor = _MAX_FACTOR
        else:
            e = err if (finite and err > 0.0) else 1e300
            factor = np.minimum(np.maximum(_SAFETY * np.power(e, -0.2), _MIN_FACTOR), _MAX_FACTOR)
        if not accept:
            factor = np.minimum(factor, 1.0)   # after a rejection never grow the step
        if not finite:
            factor = 0.1
        h_new = ha * factor
        if accept:
            y[:] = y_new
            k[0, :] = k[6]
            t = t1 if (t1 - t) - ha <= 0.0 else t + ha
            # remember the step the patient would have taken had the interval not ended
            h_next = h_new if ha < remaining else np.maximum(h_new, h_next)
        h = h_new
        steps += 1
        done = t >= t1
        if (not accept) and h_new < floor:
            status = STATUS_STEP_TOO_SMALL
        if (not finite) and not (h_new >= 1e-10):   # a NaN step is a failure too
            status = STATUS_NONFINITE
        if steps >= max_steps and not done:
            status = STATUS_MAX_STEPS
        if done or status != STATUS_OK:
            return h_next, status


def _sources_fingerprint() -> int:
    """A hash of every file the compiled kernel is built from (see :func:`_compile_kernel`)."""
    from carcell.model import rhs, rhs_numba, states  # noqa: PLC0415
    from carcell.solve import dopri5  # noqa: PLC0415

    digest = hashlib.sha256()
    for module in (rhs, rhs_numba, states, dopri5, sys.modules[__name__]):
        digest.update(Path(module.__file__).read_bytes())
    return int.from_bytes(digest.digest()[:7], "little")


def _compile_kernel():
    """The kernel's entry point, compiled with an on-disk cache that cannot go stale.

    Compiling takes seconds (each process, each worker), so the machine code is cached on disk.
    Numba checks only the entry point's own file before reusing a cached kernel, not the files
    it calls into (rhs_numba.py, the state and parameter order in states.py, dopri5.py's
    tableau), but it does key the cache on the values a function closes over: the entry point
    closes over a hash of all those files, so editing any of them compiles afresh. Without a
    writable cache location the kernel compiles in memory.
    """
    fingerprint = _sources_fingerprint()

    def integrate_rows(y, p, t0, t1, h, have_h, rtol, atol, max_steps, status) -> None:
        """Every patient whose status is OK, from t0 to t1, in place; releases the GIL."""
        if fingerprint < 0:   # never: the hash is in the closure, hence in the cache key
            return
        span = t1 - t0
        w = np.empty((_WORK_ROWS, y.shape[1]))
        for i in range(y.shape[0]):
            if status[i] != STATUS_OK:
                h[i] = np.minimum(h[i] if have_h else span, span)
                continue
            yi, pi = y[i], p[i]
            rhs_one(yi, pi, w[_K0])
            hi = h[i] if have_h else _initial_step(yi, pi, w[_K0], rtol, atol, w)
            h[i], status[i] = _dopri5_one(yi, pi, t0, t1, np.minimum(hi, span), rtol, atol, max_steps, w)

    options = {"error_model": "numpy", "nogil": True}
    try:
        return numba.njit(cache=True, **options)(integrate_rows)
    except RuntimeError:   # "cannot cache function ...: no locator available"
        return numba.njit(cache=False, **options)(integrate_rows)


_integrate_rows = _compile_kernel()


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def integrate_interval(
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
    threads: int | None = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Advance every patient from ``t0`` to ``t1``: :func:`carcell.solve.dopri5.integrate_interval`
    compiled (same arguments less ``rhs``, same results).

    Parameters
    ----------
    threads : int or None
        Threads that share the patients (None: every core this process may use). The compiled
        loop releases the GIL, so Python threads run it in parallel; each patient is integrated
        by one thread from start to end, so the numbers do not depend on ``threads``.

    Returns
    -------
    y1 : ndarray, shape (n, N_STATES)
    h : ndarray, shape (n,)
        Step size each patient would take next.
    status : ndarray of int8, shape (n,)
    """
    n, n_states = y0.shape
    if n_states != N_STATES:
        raise ValueError(f"y0 has {n_states} states per patient, the model has {N_STATES}")
    y = np.array(y0, dtype=np.float64, order="C", copy=True)
    status = np.zeros(n, dtype=np.int8) if status is None else np.array(status, dtype=np.int8, copy=True)
    span = t1 - t0
    if span <= 0 or n == 0:
        return y, (np.full(n, 1e-3) if h is None else np.array(h, dtype=np.float64, copy=True)), status
    have_h = h is not None
    h_out = np.array(h, dtype=np.float64, copy=True) if have_h else np.empty(n)
    values = np.ascontiguousarray(p.values, dtype=np.float64)
    if not values.flags.writeable:   # one compiled signature: writable C arrays throughout
        values = values.copy()
    tol = np.array(np.broadcast_to(np.asarray(atol, dtype=np.float64), (N_STATES,)))
    fixed = (float(t0), float(t1))
    options = (have_h, float(rtol), tol, int(max_steps))

    def run(a: int, b: int) -> None:
        _integrate_rows(y[a:b], values[a:b], *fixed, h_out[a:b], *options, status[a:b])

    threads = default_threads() if threads is None else int(threads)
    if threads <= 1 or n < 2 * _MIN_BLOCK:
        run(0, n)
        return y, h_out, status
    # several blocks per thread: patients differ in cost, small blocks even the load out
    edges = np.linspace(0, n, min(n // _MIN_BLOCK, _BLOCKS_PER_THREAD * threads) + 1).astype(int)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(run, a, b) for a, b in zip(edges[:-1], edges[1:])]:
            f.result()
    return y, h_out, status
