"""GPU path: the batched Dormand-Prince 5(4) of dopri5.py, compiled with JAX (XLA).

:func:`integrate_interval_jax` takes and returns what
:func:`carcell.solve.dopri5.integrate_interval` does (less the ``rhs`` argument: the right-hand
side is :func:`carcell.model.rhs_jax.rhs_one`, a mirror of :func:`carcell.model.rhs.rhs`) and
runs the same algorithm: the same tableau (imported from dopri5.py), root-mean-square error
norm, starting step (Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.4), step-factor
clipping, rejection rule, landing on the interval's end, step budget, status codes and the
same order of status updates.

How it runs. One patient's integration over the interval is a ``lax.while_loop`` over step
attempts; ``jax.vmap`` maps it over patients and ``jax.jit`` compiles the whole interval into
one XLA program, in float64. Under ``vmap`` the loop runs until the batch's last patient has
finished, each step evaluating the right-hand side for every patient with a mask that keeps
the finished (and the frozen, status != ok) patients where they are; a patient's own steps,
decisions and result do not depend on the others, as in dopri5.py. This suits a GPU (many
patients in lock step, no Python loop over patients, fixed shapes); on a CPU it is slower than
the NumPy and Numba backends, because every patient pays for the slowest one's steps
(docs/backend-jax.md).

Shapes are part of what XLA compiles: each distinct number of patients compiles once per
process (seconds), with a second program for calls that pass no starting step ``h``.

jax is imported lazily: ``carcell`` imports, and :func:`available` answers, without it.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any

import numpy as np

from carcell.errors import SolverError
from carcell.model.states import N_STATES, Params
from carcell.solve.dopri5 import (
    _A, _E, _MAX_FACTOR, _MIN_FACTOR, _SAFETY, STATUS_MAX_STEPS, STATUS_NONFINITE, STATUS_OK,
    STATUS_STEP_TOO_SMALL,
)

# the tableau of dopri5.py as dense arrays a compiled stage loop can index
_A_DENSE = np.zeros((7, 7))
for _i, _row in enumerate(_A):
    _A_DENSE[_i, :len(_row)] = _row
_E_DENSE = np.asarray(_E, dtype=np.float64)


def available() -> bool:
    """True when jax is installed (``pip install 'carcell[jax]'``, or ``'carcell[gpu]'`` for CUDA)."""
    try:
        return importlib.util.find_spec("jax") is not None
    except ValueError:      # jax was imported and then removed from sys.modules (None)
        return False


def _jax() -> Any:
    """jax, switched to 64-bit floats (importing rhs_jax does that) before any array is made."""
    import jax  # noqa: PLC0415 - optional extra

    importlib.import_module("carcell.model.rhs_jax")   # sets jax_enable_x64

    return jax


def device() -> str:
    """The device JAX computes on by default, e.g. ``'cuda:0 (NVIDIA H200)'`` or ``'cpu:0 (cpu)'``."""
    d = _jax().devices()[0]
    return f"{d.platform}:{d.id} ({getattr(d, 'device_kind', d.platform)})"


@functools.cache
def _compiled(has_h: bool) -> Any:
    """The jitted, vmapped interval integrator (built on first use, once per process)."""
    jax = _jax()
    jnp = jax.numpy

    from carcell.model.rhs_jax import rhs_one  # noqa: PLC0415

    tableau = jnp.asarray(_A_DENSE)
    error_weights = jnp.asarray(_E_DENSE)

    def _combine(weights, ks):
        """sum_j weights[j] * ks[j] over the non-zero weights, left to right."""
        total = jnp.where(weights[0] != 0.0, weights[0] * ks[0], 0.0)
        for j in range(1, 7):
            total = total + jnp.where(weights[j] != 0.0, weights[j] * ks[j], 0.0)
        return total

    def initial_step(y0, values, f0, rtol, atol):
        """dopri5.initial_step for one patient."""
        scale = atol + rtol * jnp.abs(y0)
        d0 = jnp.sqrt(jnp.mean((y0 / scale) ** 2))
        d1 = jnp.sqrt(jnp.mean((f0 / scale) ** 2))
        h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-300))
        f1 = rhs_one(y0 + h0 * f0, values)
        d2 = jnp.sqrt(jnp.mean(((f1 - f0) / scale) ** 2)) / h0
        dmax = jnp.maximum(d1, d2)
        h1 = jnp.where(dmax <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.maximum(dmax, 1e-300)) ** 0.2)
        return jnp.minimum(100 * h0, h1)

    def one_patient(y0, values, h_in, status0, t0, t1, rtol, atol, max_steps):
        span = t1 - t0
        end_scale = jnp.maximum(1.0, jnp.abs(t1))
        running = status0 == STATUS_OK
        f0 = rhs_one(y0, values)
        if has_h:
            h = h_in
        else:   # a frozen patient keeps the whole span, as in dopri5.py
            h = jnp.where(running, initial_step(y0, values, f0, rtol, atol), span)
        h = jnp.minimum(h, span)
        carry = (y0, f0, jnp.asarray(t0, y0.dtype), h, h, jnp.zeros((), jnp.int64), status0, running)

        def step(carry):
            y, f, t, h, h_next, steps, status, running = carry
            remaining = t1 - t
            # land exactly on t1: a step that would pass it (or stop just short) is cut to it
            ha = jnp.minimum(h, remaining)
            ha = jnp.where(remaining - ha < 1e-12 * end_scale, remaining, ha)
            # the six new stages in one loop, so the right-hand side is compiled once, not six
            # times; stage i adds a_ij * k_j in the order of dopri5.py (terms with a_ij = 0 are
            # masked, as dopri5.py skips them: 0 * inf would be NaN)
            def stage(i, ks_yi):
                ks, _ = ks_yi
                yi = y + ha * _combine(tableau[i], ks)
                return ks.at[i].set(rhs_one(yi, values)), yi

            ks = jnp.zeros((7, y.shape[0]), y.dtype).at[0].set(f)
            ks, y_new = jax.lax.fori_loop(1, 7, stage, (ks, y))
            f_new = ks[6]                    # FSAL: stage 7 is evaluated at the 5th-order solution
            err_vec = ha * _combine(error_weights, ks)
            scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
            err = jnp.sqrt(jnp.mean((err_vec / scale) ** 2))

            finite = jnp.isfinite(err) & jnp.all(jnp.isfinite(y_new))
            accept = finite & (err <= 1.0)
            factor = jnp.where(
                err == 0.0, _MAX_FACTOR,
                jnp.clip(_SAFETY * jnp.power(jnp.where(finite & (err > 0.0), err, 1e300), -0.2),
                         _MIN_FACTOR, _MAX_FACTOR),
            )
            factor = jnp.where(accept, factor, jnp.minimum(factor, 1.0))   # never grow after a rejection
            factor = jnp.where(finite, factor, 0.1)
            h_new = ha * factor

            y_out = jnp.where(accept, y_new, y)
            f_out = jnp.where(accept, f_new, f)
            t_out = jnp.where(accept, jnp.where(remaining - ha <= 0.0, t1, t + ha), t)
            # the step a patient would have taken had the interval not ended
            h_next_out = jnp.where(accept, jnp.where(ha < remaining, h_new, jnp.maximum(h_new, h_next)), h_next)
            steps = steps + 1

            done = t_out >= t1
            too_small = (~accept) & (h_new < 1e-14 * end_scale)
            nonfinite_fail = (~finite) & ~(h_new >= 1e-10)     # a NaN step is a failure too
            too_many = steps >= max_steps
            status = jnp.where(too_small, jnp.int8(STATUS_STEP_TOO_SMALL), status)
            status = jnp.where(nonfinite_fail, jnp.int8(STATUS_NONFINITE), status)
            status = jnp.where(too_many & ~done, jnp.int8(STATUS_MAX_STEPS), status)
            running = ~done & (status == STATUS_OK)
            return (y_out, f_out, t_out, h_new, h_next_out, steps, status, running)

        y, _, _, _, h_next, _, status, _ = jax.lax.while_loop(lambda c: c[-1], step, carry)
        return y, h_next, status

    batched = jax.vmap(one_patient, in_axes=(0, 0, 0, 0, None, None, None, None, None))
    return jax.jit(batched)


def to_device(array: Any) -> Any:
    """``array`` as a float64 JAX array on the default device (a GPU when there is one).

    Use this (or create arrays after the first call into this module) to keep states and
    parameters on the device: an array made by ``jax.device_put`` before carcell switched JAX
    to 64-bit floats is float32, which :func:`integrate_interval_jax` refuses.
    """
    jax = _jax()
    return jax.device_put(jax.numpy.asarray(array, dtype=jax.numpy.float64))


def integrate_interval_jax(
    y0: Any,
    t0: float,
    t1: float,
    values: Any,
    *,
    rtol: float,
    atol: np.ndarray,
    h: Any = None,
    max_steps: int = 100_000,
    status: Any = None,
    to_host: bool = True,
) -> tuple[Any, Any, Any]:
    """Advance every patient from ``t0`` to ``t1``, as :func:`carcell.solve.dopri5.integrate_interval`.

    Parameters
    ----------
    y0 : array, shape (n, N_STATES)
    t0, t1 : float
        Interval ends, days.
    values : array, shape (n, n_parameters), or :class:`~carcell.model.states.Params`
        Per-patient parameters (``Params.values``). A JAX array already on the device is used
        where it is, so a caller looping over intervals can keep parameters on a GPU.
    rtol : float
        Relative tolerance.
    atol : ndarray, shape (N_STATES,)
        Absolute tolerance per state.
    h : array, shape (n,), optional
        Step sizes to start with; computed when missing.
    max_steps : int
        Step attempts allowed per patient in this interval.
    status : array of int8, shape (n,), optional
        Patients whose status is not ``STATUS_OK`` are not integrated (their state is frozen).
    to_host : bool
        Return NumPy arrays (default, as dopri5.py) or, with False, JAX arrays left on the device.

    Returns
    -------
    y1 : array, shape (n, N_STATES)
    h : array, shape (n,)
        Step size each patient would take next.
    status : array of int8, shape (n,)
    """
    jnp = _jax().numpy
    kernel = _compiled(h is not None)
    if isinstance(values, Params):
        values = values.values
    n = y0.shape[0]
    if y0.ndim != 2 or y0.shape[1] != N_STATES or values.shape[0] != n:
        raise SolverError(f"y0 must be (n, {N_STATES}) and values (n, n_parameters); "
                          f"got {y0.shape} and {values.shape}")
    for name, a in (("y0", y0), ("values", values), ("h", h)):
        # float32 would round the states to 7 digits, silently: a JAX array made before
        # carcell enabled float64 is float32 (jax_kernel.to_device makes float64 ones)
        if a is not None and a.dtype != np.float64:
            raise SolverError(f"integrate_interval_jax: {name} is {a.dtype}, not float64; "
                              "pass NumPy arrays or arrays from carcell.solve.jax_kernel.to_device")
    if status is None:
        status = np.zeros(n, dtype=np.int8)
    span = float(t1) - float(t0)
    if span <= 0 or n == 0:
        out = (y0, jnp.full(n, 1e-3) if h is None else h, status)
        return tuple(np.array(a) for a in out) if to_host else tuple(jnp.asarray(a) for a in out)
    y, h_next, status = kernel(
        jnp.asarray(y0, jnp.float64), jnp.asarray(values, jnp.float64),
        jnp.asarray(h if h is not None else np.zeros(n), jnp.float64), jnp.asarray(status, jnp.int8),
        float(t0), float(t1), float(rtol), jnp.asarray(atol, jnp.float64), int(max_steps),
    )
    if to_host:
        return np.array(y), np.array(h_next), np.array(status)
    return y, h_next, status
