"""Right-hand side of the carcell mechanistic model (equations in docs/model.md).

All patients of a batch are evaluated at once: ``y`` has shape (n, N_STATES) and every
parameter is a column of shape (n,). Cell states are natural logarithms of whole-body counts,
so each cell equation below is the per-capita rate d(ln X)/dt = (dX/dt) / X.
"""

from __future__ import annotations

import numpy as np

from carcell.model.states import INDEX, N_STATES, NORMAL_STATES, Params

# Exponent guard: ratios of log-states are exponentiated; cap them so an extinct population
# (ln X = -50) next to a large one cannot overflow.
_MAX_LOG_RATIO = 60.0

_TM, _TE, _TX = INDEX["car_memory"], INDEX["car_effector"], INDEX["car_exhausted"]
_TS, _TL, _TQ = INDEX["car_site"], INDEX["tumour_low"], INDEX["car_lung_liver"]
_TP, _TN, _HL = INDEX["tumour_pos"], INDEX["tumour_neg"], INDEX["host_lymphocytes"]
_NB = slice(INDEX[NORMAL_STATES[0]], INDEX[NORMAL_STATES[-1]] + 1)
assert _NB.stop - _NB.start == len(NORMAL_STATES)
_IL15, _IFNG, _MAC, _IL6 = INDEX["il15"], INDEX["ifng"], INDEX["macrophage_activation"], INDEX["il6"]
_ENDO, _TOCI, _STER = INDEX["endothelial_activation"], INDEX["tocilizumab"], INDEX["corticosteroid"]
_DASA, _ANAK, _MACS = INDEX["dasatinib"], INDEX["anakinra"], INDEX["macrophage_site"]
_IL6OUT = INDEX["myeloid_il6_output"]


def _ratio(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """a / b from their logarithms, overflow-safe."""
    return np.exp(np.minimum(log_a - log_b, _MAX_LOG_RATIO))


def _hill(x: np.ndarray, half: np.ndarray, n: np.ndarray) -> np.ndarray:
    r = (x / half) ** n
    return r / (1.0 + r)


def _myeloid_drive(ifng: np.ndarray, killed: np.ndarray, p: Params) -> np.ndarray:
    """Myeloid activation drive D from the IFN-gamma a myeloid cell sees (pg/mL) and the cells
    killed around it (per day): Hill(IFN-gamma) + DAMP weight x Hill(killed)."""
    n = p.myeloid_hill
    return _hill(ifng, p.ifng_half_activation, n) + p.damp_weight * _hill(killed, p.damp_half_activation, n)


def il15_drive_at_baseline(p: Params) -> np.ndarray:
    return p.il15_baseline / (p.il15_baseline + p.il15_half_saturation)


def il6_receptor_occupancy(y: np.ndarray, p: Params) -> np.ndarray:
    """Share of IL-6 receptors bound by tocilizumab."""
    c = np.maximum(y[:, _TOCI], 0.0)
    return c / (c + p.toci_kd)


def steroid_effect(y: np.ndarray, p: Params) -> np.ndarray:
    """Corticosteroid effect, 0-1 (Emax model on the dexamethasone-equivalent amount)."""
    d = np.maximum(y[:, _STER], 0.0)
    return d / (d + p.steroid_ed50)


def il1_block(y: np.ndarray, p: Params) -> np.ndarray:
    """Share of the IL-1 amplification removed by anakinra (Emax model on the amount in the body)."""
    a = np.maximum(y[:, _ANAK], 0.0)
    return p.anakinra_emax * a / (a + p.anakinra_ed50)


def dasatinib_block(y: np.ndarray, p: Params) -> np.ndarray:
    """Share of CAR signalling blocked by dasatinib (0-1), reversible and dose-dependent."""
    c = np.maximum(y[:, _DASA], 0.0)
    return _hill(c, p.dasatinib_ic50, p.dasatinib_hill)


def derived(y: np.ndarray, p: Params) -> dict[str, np.ndarray]:
    """Quantities shared by the right-hand side and the outputs (stimulus, kill rates...)."""
    te = np.exp(y[:, _TE]) * p.alive_car
    site = np.exp(y[:, _TS]) * p.alive_car * p.solid       # CAR effectors inside a solid tumour
    tp = np.exp(y[:, _TP]) * p.alive_tumour_pos
    tl = np.exp(y[:, _TL]) * p.alive_tumour_low
    tn = np.exp(y[:, _TN]) * p.alive_tumour_neg
    normal = np.exp(y[:, _NB])                     # (n, 3) normal-tissue compartments
    rec_normal = p.block("recognition_normal_")
    act_normal = p.block("activation_normal_")
    haem = 1.0 - p.solid
    # Antigen seen by CAR cells, weighted by how fully the construct recognises each target
    # (its logic gate over the antigen densities). Activation (proliferation, cytokines) needs
    # more antigen than killing, so each target has two recognition weights. Effectors
    # compete for antigen (ratio dependence): once effectors outnumber their targets, the
    # stimulus per cell falls, so expansion is limited by antigen. In a solid tumour the
    # circulating cells meet only normal tissue; the tumour is seen by the cells inside it.
    tumour_act = p.activation_tumour * tp + p.activation_low * tl
    tumour_kill = p.recognition_tumour * tp + p.recognition_low * tl
    normal_act = (act_normal * normal).sum(axis=1)
    normal_kill = (rec_normal * normal).sum(axis=1)
    # Dasatinib blocks CAR signalling (LCK): the cells behave as if they saw no antigen, so
    # they stop expanding, killing and secreting, and revert towards memory ("rest").
    block = dasatinib_block(y, p)
    signalling = 1.0 - block
    stimulus = _hill(haem * tumour_act + normal_act, p.antigen_half_stimulation + te, p.stimulus_hill) * signalling
    tumour_all = tp + tl + tn
    # Inside a solid tumour the cells meet at the tumour's own density: the half-stimulation
    # and TK50 are the systemic ones scaled down to the tumour's volume (at least one cell's, so
    # a cleared tumour next to extinct CAR cells is not 0/0).
    local = p.site_volume_per_tumour_cell * np.maximum(tumour_all, 1.0)
    # (haem keeps the half positive so the unused site stimulus is 0, not 0/0)
    site_stimulus = _hill(tumour_act, p.antigen_half_stimulation * (local + haem) + site,
                          p.stimulus_hill) * signalling * p.solid
    # Killing per target cell (1/day): saturates in effectors (TK50, Kirouac 2023) and is
    # limited by how many targets one effector can kill per day (serial killing), so a large
    # tumour is not cleared by a handful of cells. The tumour's killers are the circulating
    # effectors (haematological disease) or those inside it, slowed by its microenvironment.
    killers = haem * te + site
    half_kill = p.effector_half_kill * (haem + p.solid * local)
    engaged = killers / (killers + half_kill + p.k_kill * (tumour_kill + haem * normal_kill)
                         / p.serial_kill_max) * signalling * (1.0 - p.tme_kill)
    engaged_normal = te / (te + p.effector_half_kill + p.k_kill * (normal_kill + haem * tumour_kill)
                           / p.serial_kill_max) * signalling
    kill_tumour = p.k_kill * p.recognition_tumour * engaged
    kill_low = p.k_kill * p.recognition_low * engaged
    # Antigen-independent killing: NK cells through NKG2D and other activating receptors (the
    # share of tumour cells carrying their ligands is in natural_kill), and bystander killing of
    # antigen-negative neighbours next to CAR killing (IFN-gamma/FAS; armour such as IL-12).
    # Bystander killing is a share of the CAR's kills per day, spread over every tumour cell.
    antigen_free = p.k_kill * p.natural_kill * engaged + p.bystander_kill * (
        kill_tumour * tp + kill_low * tl) / np.maximum(tumour_all, 1e-300)
    kill_normal = rec_normal * (p.k_kill * engaged_normal)[:, None]
    il15 = np.maximum(y[:, _IL15], 0.0)
    # IL-15 armour: an autocrine signal only the CAR cells see. It acts on survival (the
    # Bcl-2/Mcl-1 arm of IL-15 signalling), so it slows CAR-cell loss but cannot drive
    # antigen-independent growth without bound.
    autocrine = p.il15_autocrine / (p.il15_autocrine + p.il15_half_saturation)
    return {
        "te": te, "site": site, "local": local, "tp": tp, "tl": tl, "tn": tn, "tumour_all": tumour_all,
        "normal": normal,
        "antigen": haem * tumour_act + normal_act,
        "stimulus": stimulus, "site_stimulus": site_stimulus, "block": block,
        "kill_tumour": kill_tumour + antigen_free, "kill_low": kill_low + antigen_free,
        "kill_negative": antigen_free, "kill_normal": kill_normal,
        "il15_drive": il15 / (il15 + p.il15_half_saturation),
        "car_survival": 1.0 - autocrine,
    }


def rhs(t: np.ndarray, y: np.ndarray, p: Params) -> np.ndarray:
    """dy/dt for every patient; ``t`` is unused (autonomous system) but kept for the solver API."""
    d = derived(y, p)
    s = d["stimulus"]
    ltm, lte, ltx, lts, ltq = y[:, _TM], y[:, _TE], y[:, _TX], y[:, _TS], y[:, _TQ]
    dy = np.empty_like(y)

    # CAR T cells: antigen drives memory -> effector differentiation, effector expansion and
    # exhaustion; without antigen, effectors revert to memory (the Kirouac 2023 toggle).
    # IL-15 above its baseline adds homeostatic proliferation (below it, removes some), so
    # d_memory is the net loss of memory cells at baseline IL-15. Allogeneic cells are also
    # rejected by the host's recovering lymphocytes; dasatinib rests exhausted cells back into
    # functional effectors (Weber 2021).
    homeostatic = p.rho_il15 * (d["il15_drive"] - il15_drive_at_baseline(p))
    survival = d["car_survival"]
    host_share = np.exp(y[:, _HL]) / p.host_baseline
    rejection = p.rejection_rate * host_share
    rest = p.k_rest * d["block"]
    tumour_all = d["tumour_all"]
    entering = p.traffic_per_tumour_cell * tumour_all * p.solid   # per circulating effector, 1/day
    dy[:, _TM] = (
        (p.rho_memory - p.k_differentiation) * s + homeostatic - p.d_memory * survival - rejection
        + p.k_reversion * (1.0 - s) * _ratio(lte, ltm)
    )
    steroid = steroid_effect(y, p)
    expansion = 1.0 - p.steroid_expansion_emax * steroid
    dy[:, _TE] = (
        p.k_differentiation * s * _ratio(ltm, lte)
        + p.rho_effector * expansion * s + homeostatic
        - p.d_effector * survival - p.k_exhaustion * s - p.k_reversion * (1.0 - s) - rejection
        + rest * _ratio(ltx, lte) - entering + p.solid * p.site_egress * _ratio(lts, lte)
        + p.solid * p.first_pass_return * _ratio(ltq, lte)
    )
    dy[:, _TX] = p.k_exhaustion * s * _ratio(lte, ltx) - p.d_exhausted - rejection - rest
    # CAR effectors inside a solid tumour: arrive from blood, expand on the tumour's antigen
    # and exhaust faster under its microenvironment, die, and leave. Exhausted cells stop
    # counting as effectors there.
    ss = d["site_stimulus"]
    dy[:, _TS] = p.solid * (
        entering * _ratio(lte, lts)
        + p.rho_effector * expansion * (1.0 - p.tme_proliferation) * ss + homeostatic
        - p.d_effector * survival - p.k_exhaustion * (1.0 + p.tme_exhaustion) * ss
        - rejection - p.site_egress
    )
    # Effectors held in lung and liver after the infusion (first pass) return to blood; they
    # die at the effector rate while held and are rejected like the others.
    dy[:, _TQ] = p.solid * (-p.first_pass_return - p.d_effector * survival - rejection)
    for c in (_TM, _TE, _TX, _TS, _TQ):
        dy[:, c] *= p.alive_car

    # Tumour: logistic growth shared by every clone; each clone is killed as the construct
    # recognises it (and antigen-independently, see derived).
    growth = p.tumour_growth_rate * (1.0 - tumour_all / p.tumour_capacity)
    dy[:, _TP] = (growth - d["kill_tumour"]) * p.alive_tumour_pos
    dy[:, _TL] = (growth - d["kill_low"]) * p.alive_tumour_low
    dy[:, _TN] = (growth - d["kill_negative"]) * p.alive_tumour_neg

    # Normal tissues carrying a target antigen: constant production from precursors, turnover,
    # killing. An unused compartment holds one cell with recognition 0 and stays put.
    dy[:, _NB] = p.block("normal_turnover_") * (p.block("normal_baseline_") / d["normal"] - 1.0) - d["kill_normal"]

    # Host lymphocytes: output from precursors plus IL-15-driven homeostatic proliferation,
    # balanced at baseline.
    il15_drive_0 = il15_drive_at_baseline(p)
    dy[:, _HL] = p.host_turnover * (
        _ratio(np.log(p.host_baseline), y[:, _HL]) - 1.0
        + (d["il15_drive"] - il15_drive_0) / il15_drive_0
    )

    # IL-15: constant production, removed by clearance and by lymphocyte uptake; the uptake
    # share at baseline sets how much lymphodepletion raises IL-15. CAR cells count with their
    # exhausted ones here (they still carry the IL-15 transgene).
    car_cells = (np.exp(ltm) + d["te"]) * p.alive_car + d["site"]
    consumers = (np.exp(y[:, _HL]) + car_cells) / p.host_baseline
    car_cells = car_cells + (np.exp(ltx) + np.exp(ltq) * p.solid) * p.alive_car
    k_clear = p.il15_elimination * (1.0 - p.il15_uptake_fraction)
    k_uptake = p.il15_elimination * p.il15_uptake_fraction
    # Secreting armour adds the CAR cells' own IL-15 to serum: systemic exposure that drives
    # every IL-15-dependent cell, the CAR cells included (benefit and, at large numbers, toxicity).
    secreted = p.il15_secretion * car_cells / 1e10
    dy[:, _IL15] = (p.il15_elimination * p.il15_baseline + secreted
                    - (k_clear + k_uptake * consumers) * y[:, _IL15])

    # IFN-gamma from antigen-engaged effectors, in blood and inside a solid tumour (secretion
    # per 1e10 engaged cells); corticosteroids dampen cytokine production.
    dampen = 1.0 - p.steroid_cytokine_emax * steroid
    engaged_cells = d["te"] * s + d["site"] * ss
    dy[:, _IFNG] = p.ifng_secretion * dampen * engaged_cells / 1e10 - p.ifng_clearance * y[:, _IFNG]

    # Myeloid activation by IFN-gamma and by DAMPs from killed cells (Santurio 2025 structure).
    killed_tumour = d["kill_tumour"] * d["tp"] + d["kill_low"] * d["tl"] + d["kill_negative"] * d["tn"]
    killed = killed_tumour + (d["kill_normal"] * d["normal"]).sum(axis=1)
    ifng = np.maximum(y[:, _IFNG], 0.0)
    drive = _myeloid_drive(ifng, killed, p)
    # Activated monocytes amplify their own activation through IL-1 (Giavridis 2018, Norelli
    # 2018); anakinra blocks the IL-1 receptor and slows activation of myeloid cells and the
    # endothelium, but leaves IFN-gamma and the CAR cells alone.
    il1 = 1.0 - il1_block(y, p)
    m = y[:, _MAC]
    dy[:, _MAC] = p.macrophage_on * drive * il1 * (1.0 - m) - p.macrophage_off * m
    # Tumour-associated macrophages (solid tumours) are activated the same way, but by the
    # signals of the CAR cells inside the tumour at the tumour's own concentration: what those
    # cells secrete and the DAMPs of the cells killed there, concentrated by systemic volume /
    # tumour volume (IFN-gamma leaving the macrophages' surroundings at tam_ifng_exchange,
    # fitted), on top of serum IFN-gamma. Their IL-6 reaches serum in proportion to their number, taken
    # as proportional to the tumour's cells (CRS IL-6 comes from the recipient's macrophages,
    # not the CAR cells: Giavridis 2018).
    concentrate = p.solid / (d["local"] + 1.0 - p.solid)
    ifng_site = ifng + concentrate * p.ifng_secretion * dampen * d["site"] * ss / 1e10 / p.tam_ifng_exchange
    drive_site = _myeloid_drive(ifng_site, concentrate * killed_tumour, p)
    ms = y[:, _MACS]
    dy[:, _MACS] = p.solid * (p.macrophage_on * drive_site * il1 * (1.0 - ms) - p.macrophage_off * ms)

    # IL-6: production at baseline plus the myeloid cells' output (dampened by steroids), which
    # follows their activation with the hours IL-6 synthesis takes (first order); part of its
    # clearance goes through the IL-6 receptor, so tocilizumab raises serum IL-6.
    out = y[:, _IL6OUT]
    dy[:, _IL6OUT] = p.il6_synthesis_rate * (m - out)
    occupancy = il6_receptor_occupancy(y, p)
    clearance = p.il6_clearance * (1.0 - p.il6_receptor_clearance * occupancy)
    tam = p.solid * p.tam_il6 * ms * tumour_all / 1e10
    dy[:, _IL6] = p.il6_clearance * (p.il6_baseline + p.il6_max * dampen * out + tam * dampen) - clearance * y[:, _IL6]

    # Endothelial activation follows serum IL-6 (with IFN-gamma and angiopoietin-2 a marker and
    # driver of the endothelial injury behind ICANS, Gust 2017). Serum IL-6, not its signalling:
    # tocilizumab does not protect the endothelium, and by raising serum IL-6 it can worsen
    # ICANS (ZUMA-1 cohort 3, reference/clinical.md 2.6). Killing of neurovascular cells that
    # carry the target (CD19 on brain mural cells, Parker 2020) adds injury, measured as their
    # per-cell killing rate. Steroids and IL-1 blockade damp the activation.
    e = y[:, _ENDO]
    il6 = np.maximum(y[:, _IL6], 0.0)
    injury = (p.block("neurovascular_normal_") * d["kill_normal"]).sum(axis=1)
    x = il6 / p.endothelial_half + injury / p.endothelial_injury_half
    drive = _hill(x, 1.0, p.endothelial_hill) * dampen * il1
    dy[:, _ENDO] = p.endothelial_on * drive * (1.0 - e) - p.endothelial_off * e

    # Drugs: first-order loss; doses arrive as jumps at clinical assessments.
    dy[:, _TOCI] = -p.toci_elimination * y[:, _TOCI]
    dy[:, _STER] = -p.steroid_elimination * y[:, _STER]
    dy[:, _DASA] = -p.dasatinib_elimination * y[:, _DASA]
    dy[:, _ANAK] = -p.anakinra_elimination * y[:, _ANAK]
    return dy


assert N_STATES == 23
