"""Random inputs for the mirror tests of the right-hand side (tests/test_backend_numba.py,
tests/test_backend_jax.py): states and parameters around real patients, perturbed so that every
term and guard of rhs.py is exercised."""

from __future__ import annotations

import numpy as np

from carcell.model.states import INDEX, IS_LOG, LOG_EXTINCT, PARAM_INDEX

_IS_LOG = np.array(IS_LOG)


def perturbed_inputs(rng: np.random.Generator, y_real: np.ndarray, real: np.ndarray,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (states, parameter rows) drawn around the real ones: every parameter perturbed
    (those at 0 drawn anew so their terms are exercised), extinction and solid-tumour flags
    flipped at random, drugs present, some populations extinct and some cytokines slightly
    negative (the clamps)."""
    pick = rng.integers(0, len(real), n)
    values = real[pick] * rng.lognormal(0.0, 0.5, (n, real.shape[1]))
    scale = np.where((real == 0).all(axis=0), 1.0, np.abs(real).max(axis=0))
    zero = values == 0
    values[zero] = (rng.uniform(0.1, 1.0, values.shape) * scale)[zero]
    for name in ("alive_car", "alive_tumour_pos", "alive_tumour_neg", "alive_tumour_low", "solid"):
        values[:, PARAM_INDEX[name]] = rng.integers(0, 2, n)
    for name in ("tme_kill", "tme_proliferation", "il15_uptake_fraction", "anakinra_emax",
                 "steroid_cytokine_emax", "steroid_expansion_emax", "il6_receptor_clearance"):
        values[:, PARAM_INDEX[name]] = rng.uniform(0.0, 1.0, n)
    y = y_real[pick].copy()
    n_log = int(_IS_LOG.sum())
    y[:, _IS_LOG] += rng.normal(0.0, 3.0, (n, n_log))
    y[:, _IS_LOG] = np.where(rng.random((n, n_log)) < 0.1, LOG_EXTINCT, y[:, _IS_LOG])
    y[:, ~_IS_LOG] = rng.lognormal(0.0, 2.0, (n, int((~_IS_LOG).sum())))
    for name in ("macrophage_activation", "macrophage_site", "endothelial_activation", "myeloid_il6_output"):
        y[:, INDEX[name]] = rng.uniform(0.0, 1.0, n)
    for name in ("il15", "ifng", "il6", "tocilizumab", "corticosteroid", "dasatinib", "anakinra"):
        y[rng.random(n) < 0.1, INDEX[name]] = -1e-9
    return y, values
