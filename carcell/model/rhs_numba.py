"""The right-hand side of ONE patient, compiled with Numba: a mirror of carcell/model/rhs.py.

:func:`rhs_one` computes exactly what :func:`carcell.model.rhs.rhs` computes for one row of
its batch: same equations, same guards (``_MAX_LOG_RATIO``, the ``np.maximum`` clamps, the
alive flags) and, as far as Python's operator order allows, the same order of floating-point
operations, so the two agree to the last bit or two (tests/test_backend_numba.py checks this
on random and on real patients, so an edit of rhs.py that is not repeated here fails a test).
Each block below names the block of rhs.py it mirrors; the science is explained there.

Indices come from :mod:`carcell.model.states` at import time: ``S.car_effector`` is
``INDEX["car_effector"]`` and ``K.k_kill`` is ``PARAM_INDEX["k_kill"]``. Numba freezes these
module-level tuples into compile-time constants, so nothing is looked up while integrating.

This module imports numba; import it only when the numba backend is asked for.
"""

from __future__ import annotations

from collections import namedtuple

import numba
import numpy as np

from carcell.model.rhs import _MAX_LOG_RATIO
from carcell.model.states import N_STATES, NORMAL_SLOTS, PARAMETER_NAMES, STATE_NAMES

#: state indices by name (INDEX as a tuple Numba can freeze)
S = namedtuple("StateIndex", STATE_NAMES)(*range(N_STATES))
#: parameter indices by name (PARAM_INDEX as a tuple Numba can freeze)
K = namedtuple("ParamIndex", PARAMETER_NAMES)(*range(len(PARAMETER_NAMES)))
assert NORMAL_SLOTS == 3 and (S.normal_2, S.normal_3) == (S.normal_1 + 1, S.normal_1 + 2)

_jit = numba.njit(cache=False, fastmath=False, error_model="numpy")

#: what rhs.derived returns, for one patient; the normal-tissue entries are 3-tuples (slots)
Derived = namedtuple("Derived", (
    "te", "site", "local", "tp", "tl", "tn", "tumour_all", "normal", "stimulus", "site_stimulus", "block",
    "kill_tumour", "kill_low", "kill_negative", "kill_normal", "il15_drive", "car_survival",
))


# ---- helpers (rhs.py: _ratio, _hill and the drug effects) -------------------------------------

@_jit
def _ratio(log_a: float, log_b: float) -> float:
    """a / b from their logarithms, overflow-safe (rhs._ratio)."""
    return np.exp(np.minimum(log_a - log_b, _MAX_LOG_RATIO))


@_jit
def _hill(x: float, half: float, n: float) -> float:
    r = (x / half) ** n
    return r / (1.0 + r)


@_jit
def _slots(p, first: int):
    """Parameters ``first .. first+2`` (one per normal-tissue slot) as a 3-tuple (Params.block)."""
    return (p[first], p[first + 1], p[first + 2])


@_jit
def _sum3(a, b) -> float:
    """sum_j a_j b_j in numpy's order for a 3-long row: (a0 b0 + a1 b1) + a2 b2."""
    return (a[0] * b[0] + a[1] * b[1]) + a[2] * b[2]


@_jit
def _myeloid_drive(ifng: float, killed: float, p) -> float:
    """rhs._myeloid_drive for one patient."""
    n = p[K.myeloid_hill]
    return _hill(ifng, p[K.ifng_half_activation], n) + p[K.damp_weight] * _hill(killed, p[K.damp_half_activation], n)


@_jit
def il15_drive_at_baseline(p) -> float:
    return p[K.il15_baseline] / (p[K.il15_baseline] + p[K.il15_half_saturation])


@_jit
def il6_receptor_occupancy(y, p) -> float:
    c = np.maximum(y[S.tocilizumab], 0.0)
    return c / (c + p[K.toci_kd])


@_jit
def steroid_effect(y, p) -> float:
    d = np.maximum(y[S.corticosteroid], 0.0)
    return d / (d + p[K.steroid_ed50])


@_jit
def il1_block(y, p) -> float:
    a = np.maximum(y[S.anakinra], 0.0)
    return p[K.anakinra_emax] * a / (a + p[K.anakinra_ed50])


@_jit
def dasatinib_block(y, p) -> float:
    c = np.maximum(y[S.dasatinib], 0.0)
    return _hill(c, p[K.dasatinib_ic50], p[K.dasatinib_hill])


# ---- rhs.derived -----------------------------------------------------------------------------

@_jit
def derived(y, p) -> Derived:
    """Stimulus, kill rates and the counts the equations share (rhs.derived, one patient)."""
    alive_car, solid = p[K.alive_car], p[K.solid]
    te = np.exp(y[S.car_effector]) * alive_car
    site = np.exp(y[S.car_site]) * alive_car * solid
    tp = np.exp(y[S.tumour_pos]) * p[K.alive_tumour_pos]
    tl = np.exp(y[S.tumour_low]) * p[K.alive_tumour_low]
    tn = np.exp(y[S.tumour_neg]) * p[K.alive_tumour_neg]
    normal = (np.exp(y[S.normal_1]), np.exp(y[S.normal_2]), np.exp(y[S.normal_3]))
    rec_normal = _slots(p, K.recognition_normal_1)
    act_normal = _slots(p, K.activation_normal_1)
    haem = 1.0 - solid
    tumour_act = p[K.activation_tumour] * tp + p[K.activation_low] * tl
    tumour_kill = p[K.recognition_tumour] * tp + p[K.recognition_low] * tl
    normal_act = _sum3(act_normal, normal)
    normal_kill = _sum3(rec_normal, normal)
    block = dasatinib_block(y, p)
    signalling = 1.0 - block
    half_stim, hill = p[K.antigen_half_stimulation], p[K.stimulus_hill]
    stimulus = _hill(haem * tumour_act + normal_act, half_stim + te, hill) * signalling
    tumour_all = tp + tl + tn
    local = p[K.site_volume_per_tumour_cell] * max(tumour_all, 1.0)   # rhs.py: at least one cell
    site_stimulus = _hill(tumour_act, half_stim * (local + haem) + site, hill) * signalling * solid
    k_kill, serial = p[K.k_kill], p[K.serial_kill_max]
    killers = haem * te + site
    half_kill = p[K.effector_half_kill] * (haem + solid * local)
    engaged = killers / (killers + half_kill + k_kill * (tumour_kill + haem * normal_kill)
                         / serial) * signalling * (1.0 - p[K.tme_kill])
    engaged_normal = te / (te + p[K.effector_half_kill] + k_kill * (normal_kill + haem * tumour_kill)
                           / serial) * signalling
    kill_tumour = k_kill * p[K.recognition_tumour] * engaged
    kill_low = k_kill * p[K.recognition_low] * engaged
    antigen_free = k_kill * p[K.natural_kill] * engaged + p[K.bystander_kill] * (
        kill_tumour * tp + kill_low * tl) / np.maximum(tumour_all, 1e-300)
    ke = k_kill * engaged_normal
    kill_normal = (rec_normal[0] * ke, rec_normal[1] * ke, rec_normal[2] * ke)
    il15 = np.maximum(y[S.il15], 0.0)
    autocrine = p[K.il15_autocrine] / (p[K.il15_autocrine] + p[K.il15_half_saturation])
    return Derived(
        te, site, local, tp, tl, tn, tumour_all, normal, stimulus, site_stimulus, block,
        kill_tumour + antigen_free, kill_low + antigen_free, antigen_free, kill_normal,
        il15 / (il15 + p[K.il15_half_saturation]), 1.0 - autocrine,
    )


# ---- rhs.rhs, block by block -----------------------------------------------------------------

@_jit
def _car_cells(y, p, d: Derived, steroid: float, dy) -> None:
    """CAR T cells: memory, effector, exhausted, inside a solid tumour, held in lung and liver."""
    s, ss = d.stimulus, d.site_stimulus
    ltm, lte, ltx = y[S.car_memory], y[S.car_effector], y[S.car_exhausted]
    lts, ltq = y[S.car_site], y[S.car_lung_liver]
    solid = p[K.solid]
    homeostatic = p[K.rho_il15] * (d.il15_drive - il15_drive_at_baseline(p))
    survival = d.car_survival
    host_share = np.exp(y[S.host_lymphocytes]) / p[K.host_baseline]
    rejection = p[K.rejection_rate] * host_share
    rest = p[K.k_rest] * d.block
    entering = p[K.traffic_per_tumour_cell] * d.tumour_all * solid
    dy[S.car_memory] = (
        (p[K.rho_memory] - p[K.k_differentiation]) * s + homeostatic - p[K.d_memory] * survival - rejection
        + p[K.k_reversion] * (1.0 - s) * _ratio(lte, ltm)
    )
    expansion = 1.0 - p[K.steroid_expansion_emax] * steroid
    dy[S.car_effector] = (
        p[K.k_differentiation] * s * _ratio(ltm, lte)
        + p[K.rho_effector] * expansion * s + homeostatic
        - p[K.d_effector] * survival - p[K.k_exhaustion] * s - p[K.k_reversion] * (1.0 - s) - rejection
        + rest * _ratio(ltx, lte) - entering + solid * p[K.site_egress] * _ratio(lts, lte)
        + solid * p[K.first_pass_return] * _ratio(ltq, lte)
    )
    dy[S.car_exhausted] = (p[K.k_exhaustion] * s * _ratio(lte, ltx) - p[K.d_exhausted] - rejection
                           - rest)
    dy[S.car_site] = solid * (
        entering * _ratio(lte, lts)
        + p[K.rho_effector] * expansion * (1.0 - p[K.tme_proliferation]) * ss + homeostatic
        - p[K.d_effector] * survival - p[K.k_exhaustion] * (1.0 + p[K.tme_exhaustion]) * ss
        - rejection - p[K.site_egress]
    )
    dy[S.car_lung_liver] = solid * (-p[K.first_pass_return] - p[K.d_effector] * survival - rejection)
    alive = p[K.alive_car]
    for c in (S.car_memory, S.car_effector, S.car_exhausted, S.car_site, S.car_lung_liver):
        dy[c] *= alive


@_jit
def _tumour(p, d: Derived, dy) -> None:
    """Tumour clones: shared logistic growth minus each clone's killing."""
    growth = p[K.tumour_growth_rate] * (1.0 - d.tumour_all / p[K.tumour_capacity])
    dy[S.tumour_pos] = (growth - d.kill_tumour) * p[K.alive_tumour_pos]
    dy[S.tumour_low] = (growth - d.kill_low) * p[K.alive_tumour_low]
    dy[S.tumour_neg] = (growth - d.kill_negative) * p[K.alive_tumour_neg]


@_jit
def _normal_tissues(p, d: Derived, dy) -> None:
    """Normal tissues carrying a target antigen: production, turnover, killing."""
    for j in range(NORMAL_SLOTS):
        dy[S.normal_1 + j] = (p[K.normal_turnover_1 + j] * (p[K.normal_baseline_1 + j] / d.normal[j] - 1.0)
                              - d.kill_normal[j])


@_jit
def _host_lymphocytes(y, p, d: Derived, dy) -> None:
    il15_drive_0 = il15_drive_at_baseline(p)
    dy[S.host_lymphocytes] = p[K.host_turnover] * (
        _ratio(np.log(p[K.host_baseline]), y[S.host_lymphocytes]) - 1.0
        + (d.il15_drive - il15_drive_0) / il15_drive_0
    )


@_jit
def _il15(y, p, d: Derived, dy) -> None:
    """IL-15: production, clearance, uptake by lymphocytes, secretion by armoured CAR cells."""
    alive, solid = p[K.alive_car], p[K.solid]
    car_cells = (np.exp(y[S.car_memory]) + d.te) * alive + d.site
    consumers = (np.exp(y[S.host_lymphocytes]) + car_cells) / p[K.host_baseline]
    car_cells = car_cells + (np.exp(y[S.car_exhausted]) + np.exp(y[S.car_lung_liver]) * solid) * alive
    elim, uptake = p[K.il15_elimination], p[K.il15_uptake_fraction]
    k_clear = elim * (1.0 - uptake)
    k_uptake = elim * uptake
    secreted = p[K.il15_secretion] * car_cells / 1e10
    dy[S.il15] = (elim * p[K.il15_baseline] + secreted
                  - (k_clear + k_uptake * consumers) * y[S.il15])


@_jit
def _ifng(y, p, d: Derived, dampen: float, dy) -> None:
    engaged_cells = d.te * d.stimulus + d.site * d.site_stimulus
    dy[S.ifng] = p[K.ifng_secretion] * dampen * engaged_cells / 1e10 - p[K.ifng_clearance] * y[S.ifng]


@_jit
def _myeloid(y, p, d: Derived, dampen: float, il1: float, dy) -> None:
    """Myeloid activation by IFN-gamma and by DAMPs from killed cells, amplified through IL-1;
    the tumour's own macrophages see the tumour's signals at the tumour's concentration."""
    killed_tumour = d.kill_tumour * d.tp + d.kill_low * d.tl + d.kill_negative * d.tn
    killed = killed_tumour + _sum3(d.kill_normal, d.normal)
    ifng = np.maximum(y[S.ifng], 0.0)
    drive = _myeloid_drive(ifng, killed, p)
    m = y[S.macrophage_activation]
    dy[S.macrophage_activation] = p[K.macrophage_on] * drive * il1 * (1.0 - m) - p[K.macrophage_off] * m
    solid = p[K.solid]
    concentrate = solid / (d.local + 1.0 - solid)
    ifng_site = ifng + concentrate * p[K.ifng_secretion] * dampen * d.site * d.site_stimulus / 1e10 / p[
        K.tam_ifng_exchange]
    drive_site = _myeloid_drive(ifng_site, concentrate * killed_tumour, p)
    ms = y[S.macrophage_site]
    dy[S.macrophage_site] = solid * (p[K.macrophage_on] * drive_site * il1 * (1.0 - ms) - p[K.macrophage_off] * ms)


@_jit
def _il6(y, p, d: Derived, dampen: float, dy) -> None:
    occupancy = il6_receptor_occupancy(y, p)
    clearance = p[K.il6_clearance] * (1.0 - p[K.il6_receptor_clearance] * occupancy)
    out = y[S.myeloid_il6_output]
    dy[S.myeloid_il6_output] = p[K.il6_synthesis_rate] * (y[S.macrophage_activation] - out)
    tam = p[K.solid] * p[K.tam_il6] * y[S.macrophage_site] * d.tumour_all / 1e10
    dy[S.il6] = (p[K.il6_clearance] * (p[K.il6_baseline] + p[K.il6_max] * dampen * out + tam * dampen)
                 - clearance * y[S.il6])


@_jit
def _endothelium(y, p, d: Derived, dampen: float, il1: float, dy) -> None:
    """Endothelial activation from serum IL-6 and from killing of neurovascular target cells."""
    e = y[S.endothelial_activation]
    il6 = np.maximum(y[S.il6], 0.0)
    injury = _sum3(_slots(p, K.neurovascular_normal_1), d.kill_normal)
    x = il6 / p[K.endothelial_half] + injury / p[K.endothelial_injury_half]
    drive = _hill(x, 1.0, p[K.endothelial_hill]) * dampen * il1
    dy[S.endothelial_activation] = p[K.endothelial_on] * drive * (1.0 - e) - p[K.endothelial_off] * e


@_jit
def _drugs(y, p, dy) -> None:
    dy[S.tocilizumab] = -p[K.toci_elimination] * y[S.tocilizumab]
    dy[S.corticosteroid] = -p[K.steroid_elimination] * y[S.corticosteroid]
    dy[S.dasatinib] = -p[K.dasatinib_elimination] * y[S.dasatinib]
    dy[S.anakinra] = -p[K.anakinra_elimination] * y[S.anakinra]


@_jit
def rhs_one(y, p, dy) -> None:
    """dy/dt of one patient into ``dy`` (shape (N_STATES,)); ``p`` is its parameter row."""
    d = derived(y, p)
    steroid = steroid_effect(y, p)
    dampen = 1.0 - p[K.steroid_cytokine_emax] * steroid
    il1 = 1.0 - il1_block(y, p)
    _car_cells(y, p, d, steroid, dy)
    _tumour(p, d, dy)
    _normal_tissues(p, d, dy)
    _host_lymphocytes(y, p, d, dy)
    _il15(y, p, d, dy)
    _ifng(y, p, d, dampen, dy)
    _myeloid(y, p, d, dampen, il1, dy)
    _il6(y, p, d, dampen, dy)
    _endothelium(y, p, d, dampen, il1, dy)
    _drugs(y, p, dy)


@_jit
def rhs_rows(y, p, dy) -> None:
    """:func:`rhs_one` for every row of ``y`` (n, N_STATES) and ``p`` (n, P); for tests."""
    for i in range(y.shape[0]):
        rhs_one(y[i], p[i], dy[i])
