"""The right-hand side of ONE patient in ``jax.numpy``: a mirror of carcell/model/rhs.py.

:func:`rhs_one` computes, for one patient (``y`` of shape (21,), ``p`` of shape (P,)), exactly
what :func:`carcell.model.rhs.rhs` computes for one row of its batch: the same equations, the
same guards (``_MAX_LOG_RATIO``, the clamps of cytokines and drugs at 0, the alive flags) and,
as far as the expressions allow, the same order of floating-point operations.
:func:`carcell.solve.jax_kernel` maps it over patients with ``jax.vmap`` and compiles it with
``jax.jit``, for a GPU or the CPU. tests/test_backend_jax.py compares it with rhs.py on real
and on randomly perturbed patients, so an edit of rhs.py not repeated here fails a test. Each
block names the block of rhs.py it mirrors; the science is explained there and in docs/model.md.

State and parameter positions come from :data:`carcell.model.states.INDEX` and
:data:`~carcell.model.states.PARAM_INDEX`; they are looked up while JAX traces the function, so
the compiled code holds plain constants.

This module imports jax and switches it to 64-bit floats (``jax_enable_x64``): in 32 bits the
log-cell states (ln of up to 1e12 cells) keep only about 6 significant digits, far from the
solver's tolerance. Import it only when the JAX backend is asked for.
"""

from __future__ import annotations

import jax

jax.config.update("jax_enable_x64", True)   # before any array exists; see the module docstring

import jax.numpy as jnp  # noqa: E402 - after the precision switch

from carcell.model.rhs import _MAX_LOG_RATIO  # noqa: E402
from carcell.model.states import INDEX, N_STATES, NORMAL_SLOTS, NORMAL_STATES, PARAM_INDEX  # noqa: E402

_NB = slice(INDEX[NORMAL_STATES[0]], INDEX[NORMAL_STATES[0]] + NORMAL_SLOTS)
_CAR_ROWS = ("car_memory", "car_effector", "car_exhausted", "car_site", "car_lung_liver")


class _Row:
    """One patient's parameters read by name, as :class:`carcell.model.states.Params` reads a
    batch: ``p.k_kill`` is a scalar, ``p.block("normal_baseline_")`` the three slots."""

    __slots__ = ("values",)

    def __init__(self, values: jax.Array) -> None:
        self.values = values

    def __getattr__(self, name: str) -> jax.Array:
        try:
            return self.values[PARAM_INDEX[name]]
        except KeyError:
            raise AttributeError(name) from None

    def block(self, prefix: str) -> jax.Array:
        i = PARAM_INDEX[f"{prefix}1"]
        return self.values[i:i + NORMAL_SLOTS]


def _ratio(log_a: jax.Array, log_b: jax.Array) -> jax.Array:
    """a / b from their logarithms, overflow-safe (rhs._ratio)."""
    return jnp.exp(jnp.minimum(log_a - log_b, _MAX_LOG_RATIO))


def _hill(x: jax.Array, half: jax.Array, n: jax.Array) -> jax.Array:
    r = (x / half) ** n
    return r / (1.0 + r)


def _state(y: jax.Array, name: str) -> jax.Array:
    return y[INDEX[name]]


# ---- drug effects (rhs.py: il15_drive_at_baseline, il6_receptor_occupancy, ...) -------------

def _il15_drive_at_baseline(p: _Row) -> jax.Array:
    return p.il15_baseline / (p.il15_baseline + p.il15_half_saturation)


def _myeloid_drive(ifng: jax.Array, killed: jax.Array, p: _Row) -> jax.Array:
    """rhs._myeloid_drive for one patient."""
    n = p.myeloid_hill
    return _hill(ifng, p.ifng_half_activation, n) + p.damp_weight * _hill(killed, p.damp_half_activation, n)


def _il6_receptor_occupancy(y: jax.Array, p: _Row) -> jax.Array:
    c = jnp.maximum(_state(y, "tocilizumab"), 0.0)
    return c / (c + p.toci_kd)


def _steroid_effect(y: jax.Array, p: _Row) -> jax.Array:
    d = jnp.maximum(_state(y, "corticosteroid"), 0.0)
    return d / (d + p.steroid_ed50)


def _il1_block(y: jax.Array, p: _Row) -> jax.Array:
    a = jnp.maximum(_state(y, "anakinra"), 0.0)
    return p.anakinra_emax * a / (a + p.anakinra_ed50)


def _dasatinib_block(y: jax.Array, p: _Row) -> jax.Array:
    c = jnp.maximum(_state(y, "dasatinib"), 0.0)
    return _hill(c, p.dasatinib_ic50, p.dasatinib_hill)


# ---- rhs.derived --------------------------------------------------------------------------

def _derived(y: jax.Array, p: _Row) -> dict[str, jax.Array]:
    """Stimulus, kill rates and the other shared quantities of rhs.derived, one patient."""
    te = jnp.exp(_state(y, "car_effector")) * p.alive_car
    site = jnp.exp(_state(y, "car_site")) * p.alive_car * p.solid
    tp = jnp.exp(_state(y, "tumour_pos")) * p.alive_tumour_pos
    tl = jnp.exp(_state(y, "tumour_low")) * p.alive_tumour_low
    tn = jnp.exp(_state(y, "tumour_neg")) * p.alive_tumour_neg
    normal = jnp.exp(y[_NB])                                   # (3,) normal-tissue slots
    rec_normal = p.block("recognition_normal_")
    act_normal = p.block("activation_normal_")
    haem = 1.0 - p.solid
    tumour_act = p.activation_tumour * tp + p.activation_low * tl
    tumour_kill = p.recognition_tumour * tp + p.recognition_low * tl
    normal_act = jnp.sum(act_normal * normal)
    normal_kill = jnp.sum(rec_normal * normal)
    block = _dasatinib_block(y, p)
    signalling = 1.0 - block
    stimulus = _hill(haem * tumour_act + normal_act, p.antigen_half_stimulation + te, p.stimulus_hill) * signalling
    tumour_all = tp + tl + tn
    local = p.site_volume_per_tumour_cell * jnp.maximum(tumour_all, 1.0)   # at least one cell's volume
    site_stimulus = _hill(tumour_act, p.antigen_half_stimulation * (local + haem) + site,
                          p.stimulus_hill) * signalling * p.solid
    killers = haem * te + site
    half_kill = p.effector_half_kill * (haem + p.solid * local)
    engaged = killers / (killers + half_kill + p.k_kill * (tumour_kill + haem * normal_kill)
                         / p.serial_kill_max) * signalling * (1.0 - p.tme_kill)
    engaged_normal = te / (te + p.effector_half_kill + p.k_kill * (normal_kill + haem * tumour_kill)
                           / p.serial_kill_max) * signalling
    kill_tumour = p.k_kill * p.recognition_tumour * engaged
    kill_low = p.k_kill * p.recognition_low * engaged
    antigen_free = p.k_kill * p.natural_kill * engaged + p.bystander_kill * (
        kill_tumour * tp + kill_low * tl) / jnp.maximum(tumour_all, 1e-300)
    kill_normal = rec_normal * (p.k_kill * engaged_normal)
    il15 = jnp.maximum(_state(y, "il15"), 0.0)
    autocrine = p.il15_autocrine / (p.il15_autocrine + p.il15_half_saturation)
    return {
        "te": te, "site": site, "local": local, "tp": tp, "tl": tl, "tn": tn, "tumour_all": tumour_all,
        "normal": normal,
        "stimulus": stimulus, "site_stimulus": site_stimulus, "block": block,
        "kill_tumour": kill_tumour + antigen_free, "kill_low": kill_low + antigen_free,
        "kill_negative": antigen_free, "kill_normal": kill_normal,
        "il15_drive": il15 / (il15 + p.il15_half_saturation),
        "car_survival": 1.0 - autocrine,
    }


# ---- rhs.rhs --------------------------------------------------------------------------------

def rhs_one(y: jax.Array, values: jax.Array) -> jax.Array:
    """dy/dt of one patient.

    Parameters
    ----------
    y : jax.Array, shape (N_STATES,)
        Log-cell counts and cytokine/drug levels (carcell.model.states.STATES).
    values : jax.Array, shape (n_parameters,)
        One row of :class:`carcell.model.states.Params`.

    Returns
    -------
    jax.Array, shape (N_STATES,)
    """
    p = _Row(values)
    d = _derived(y, p)
    s = d["stimulus"]
    ltm, lte, ltx = _state(y, "car_memory"), _state(y, "car_effector"), _state(y, "car_exhausted")
    lts, ltq, lhl = _state(y, "car_site"), _state(y, "car_lung_liver"), _state(y, "host_lymphocytes")
    dy: dict[str, jax.Array] = {}

    # CAR T cells (memory, effector, exhausted; inside a solid tumour; held in lung and liver)
    homeostatic = p.rho_il15 * (d["il15_drive"] - _il15_drive_at_baseline(p))
    survival = d["car_survival"]
    host_share = jnp.exp(lhl) / p.host_baseline
    rejection = p.rejection_rate * host_share
    rest = p.k_rest * d["block"]
    tumour_all = d["tumour_all"]
    entering = p.traffic_per_tumour_cell * tumour_all * p.solid
    dy["car_memory"] = (
        (p.rho_memory - p.k_differentiation) * s + homeostatic - p.d_memory * survival - rejection
        + p.k_reversion * (1.0 - s) * _ratio(lte, ltm)
    )
    steroid = _steroid_effect(y, p)
    expansion = 1.0 - p.steroid_expansion_emax * steroid
    dy["car_effector"] = (
        p.k_differentiation * s * _ratio(ltm, lte)
        + p.rho_effector * expansion * s + homeostatic
        - p.d_effector * survival - p.k_exhaustion * s - p.k_reversion * (1.0 - s) - rejection
        + rest * _ratio(ltx, lte) - entering + p.solid * p.site_egress * _ratio(lts, lte)
        + p.solid * p.first_pass_return * _ratio(ltq, lte)
    )
    dy["car_exhausted"] = p.k_exhaustion * s * _ratio(lte, ltx) - p.d_exhausted - rejection - rest
    ss = d["site_stimulus"]
    dy["car_site"] = p.solid * (
        entering * _ratio(lte, lts)
        + p.rho_effector * expansion * (1.0 - p.tme_proliferation) * ss + homeostatic
        - p.d_effector * survival - p.k_exhaustion * (1.0 + p.tme_exhaustion) * ss
        - rejection - p.site_egress
    )
    dy["car_lung_liver"] = p.solid * (-p.first_pass_return - p.d_effector * survival - rejection)
    for name in _CAR_ROWS:
        dy[name] = dy[name] * p.alive_car

    # Tumour clones
    growth = p.tumour_growth_rate * (1.0 - tumour_all / p.tumour_capacity)
    dy["tumour_pos"] = (growth - d["kill_tumour"]) * p.alive_tumour_pos
    dy["tumour_low"] = (growth - d["kill_low"]) * p.alive_tumour_low
    dy["tumour_neg"] = (growth - d["kill_negative"]) * p.alive_tumour_neg

    # Normal tissues carrying a target antigen (three slots)
    normal = p.block("normal_turnover_") * (p.block("normal_baseline_") / d["normal"] - 1.0) - d["kill_normal"]
    for j, name in enumerate(NORMAL_STATES):
        dy[name] = normal[j]

    # Host lymphocytes
    il15_drive_0 = _il15_drive_at_baseline(p)
    dy["host_lymphocytes"] = p.host_turnover * (
        _ratio(jnp.log(p.host_baseline), lhl) - 1.0
        + (d["il15_drive"] - il15_drive_0) / il15_drive_0
    )

    # IL-15
    car_cells = (jnp.exp(ltm) + d["te"]) * p.alive_car + d["site"]
    consumers = (jnp.exp(lhl) + car_cells) / p.host_baseline
    car_cells = car_cells + (jnp.exp(ltx) + jnp.exp(ltq) * p.solid) * p.alive_car
    k_clear = p.il15_elimination * (1.0 - p.il15_uptake_fraction)
    k_uptake = p.il15_elimination * p.il15_uptake_fraction
    secreted = p.il15_secretion * car_cells / 1e10
    dy["il15"] = (p.il15_elimination * p.il15_baseline + secreted
                  - (k_clear + k_uptake * consumers) * _state(y, "il15"))

    # IFN-gamma
    dampen = 1.0 - p.steroid_cytokine_emax * steroid
    engaged_cells = d["te"] * s + d["site"] * ss
    dy["ifng"] = p.ifng_secretion * dampen * engaged_cells / 1e10 - p.ifng_clearance * _state(y, "ifng")

    # Myeloid activation
    killed_tumour = d["kill_tumour"] * d["tp"] + d["kill_low"] * d["tl"] + d["kill_negative"] * d["tn"]
    killed = killed_tumour + jnp.sum(d["kill_normal"] * d["normal"])
    ifng = jnp.maximum(_state(y, "ifng"), 0.0)
    drive = _myeloid_drive(ifng, killed, p)
    il1 = 1.0 - _il1_block(y, p)
    m = _state(y, "macrophage_activation")
    dy["macrophage_activation"] = p.macrophage_on * drive * il1 * (1.0 - m) - p.macrophage_off * m
    # Tumour-associated macrophages: the tumour's signals at the tumour's concentration
    concentrate = p.solid / (d["local"] + 1.0 - p.solid)
    ifng_site = ifng + concentrate * p.ifng_secretion * dampen * d["site"] * ss / 1e10 / p.tam_ifng_exchange
    drive_site = _myeloid_drive(ifng_site, concentrate * killed_tumour, p)
    ms = _state(y, "macrophage_site")
    dy["macrophage_site"] = p.solid * (p.macrophage_on * drive_site * il1 * (1.0 - ms) - p.macrophage_off * ms)

    # IL-6
    occupancy = _il6_receptor_occupancy(y, p)
    clearance = p.il6_clearance * (1.0 - p.il6_receptor_clearance * occupancy)
    out = _state(y, "myeloid_il6_output")
    dy["myeloid_il6_output"] = p.il6_synthesis_rate * (m - out)
    tam = p.solid * p.tam_il6 * ms * d["tumour_all"] / 1e10
    dy["il6"] = (p.il6_clearance * (p.il6_baseline + p.il6_max * dampen * out + tam * dampen)
                 - clearance * _state(y, "il6"))

    # Endothelial activation
    e = _state(y, "endothelial_activation")
    il6 = jnp.maximum(_state(y, "il6"), 0.0)
    injury = jnp.sum(p.block("neurovascular_normal_") * d["kill_normal"])
    x = il6 / p.endothelial_half + injury / p.endothelial_injury_half
    drive = _hill(x, 1.0, p.endothelial_hill) * dampen * il1
    dy["endothelial_activation"] = p.endothelial_on * drive * (1.0 - e) - p.endothelial_off * e

    # Drugs: first-order loss
    dy["tocilizumab"] = -p.toci_elimination * _state(y, "tocilizumab")
    dy["corticosteroid"] = -p.steroid_elimination * _state(y, "corticosteroid")
    dy["dasatinib"] = -p.dasatinib_elimination * _state(y, "dasatinib")
    dy["anakinra"] = -p.anakinra_elimination * _state(y, "anakinra")

    assert len(dy) == N_STATES, sorted(set(INDEX) - set(dy))
    return jnp.stack([dy[name] for name in sorted(dy, key=INDEX.__getitem__)])


def rhs_batch(y: jax.Array, values: jax.Array) -> jax.Array:
    """:func:`rhs_one` over a batch: y (n, N_STATES), values (n, n_parameters) -> (n, N_STATES)."""
    return jax.vmap(rhs_one)(y, values)
