"""Compile a scenario into typical values, then into per-patient parameters and initial states.

Two steps:

1. :func:`resolve_design` resolves the product (construct, chassis, armour, logic gate; see
   :mod:`carcell.design.construct`), reads every number the scenario needs from the knowledge
   base and records how each model parameter was derived (:mod:`carcell.design.provenance`).
   The result is a :class:`Design` of typical values.
2. :func:`compile_chunk` draws patients ``start..stop`` from the design. Patient ``i`` draws
   from its own random stream (``SeedSequence(seed, spawn_key=(i,))``), so a patient's
   numbers do not depend on how the cohort is cut into chunks.

The mapping rules are documented, with their sources, in docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import ndtr

from carcell.design.construct import Construct, resolve_construct
from carcell.design.gates import gate_population, recognition
from carcell.design.provenance import Ledger
from carcell.errors import KnowledgeError, ScenarioError
from carcell.io.yamlio import load_yaml
from carcell.knowledge import Knowledge
from carcell.knowledge.store import Entry, check_entry
from carcell.model.rhs import il15_drive_at_baseline
from carcell.model.states import (
    CAR_STATES, INDEX, LOG_EXTINCT, N_STATES, NORMAL_SLOTS, NORMAL_STATES, PARAM_INDEX, PARAMETER_NAMES, Params,
)
from carcell.scenario.schema import Scenario
from carcell.units import UL_PER_ML

__all__ = ["Design", "resolve_design", "compile_chunk", "recognition", "SCALABLE"]

# Model parameters that are read straight from car_t.yaml (then scaled by the design).
_CAR_KINETICS = (
    "rho_effector", "rho_memory", "k_differentiation", "k_reversion", "k_exhaustion",
    "d_effector", "d_memory", "d_exhausted", "rho_il15", "il15_half_saturation",
    "antigen_half_stimulation", "stimulus_hill", "k_kill", "effector_half_kill", "serial_kill_max", "ifng_secretion",
)
#: parameters a design part (costim, chassis, binder, hinge, armour) may multiply
SCALABLE = ("rho_effector", "rho_memory", "k_differentiation", "k_reversion", "k_exhaustion",
            "d_effector", "d_memory", "d_exhausted", "rho_il15", "k_kill", "serial_kill_max",
            "ifng_secretion", "damp_weight")
_PHYSIOLOGY = {
    "host_turnover": "physiology.host.lymphocyte_turnover",
    "il15_baseline": "physiology.il15.baseline",
    "il15_elimination": "physiology.il15.elimination",
    "il15_uptake_fraction": "physiology.il15.uptake_fraction",
    "ifng_clearance": "physiology.ifng.clearance",
    "macrophage_on": "physiology.myeloid.activation_rate",
    "macrophage_off": "physiology.myeloid.deactivation_rate",
    "il6_synthesis_rate": "physiology.il6.synthesis_rate",
    "ifng_half_activation": "physiology.myeloid.ifng_half_activation",
    "damp_weight": "physiology.myeloid.damp_weight",
    "damp_half_activation": "physiology.myeloid.damp_half_activation",
    "myeloid_hill": "physiology.myeloid.activation_hill",
    "il6_baseline": "physiology.il6.baseline",
    "il6_max": "physiology.il6.max_from_myeloid",
    "il6_clearance": "physiology.il6.clearance",
}
_TOXICITY = {
    "endothelial_on": "toxicity.endothelium.activation_rate",
    "endothelial_off": "toxicity.endothelium.deactivation_rate",
    "endothelial_half": "toxicity.endothelium.half_activation",
    "endothelial_hill": "toxicity.endothelium.hill",
    "endothelial_injury_half": "toxicity.endothelium.injury_half",
    "toci_elimination": "toxicity.drugs.tocilizumab.elimination",
    "toci_kd": "toxicity.drugs.tocilizumab.kd",
    "il6_receptor_clearance": "toxicity.drugs.tocilizumab.il6_receptor_clearance",
    "steroid_elimination": "toxicity.drugs.dexamethasone.elimination",
    "steroid_ed50": "toxicity.drugs.dexamethasone.ed50",
    "steroid_cytokine_emax": "toxicity.drugs.dexamethasone.cytokine_emax",
    "steroid_expansion_emax": "toxicity.drugs.dexamethasone.expansion_emax",
    "dasatinib_elimination": "toxicity.drugs.dasatinib.elimination",
    "dasatinib_ic50": "toxicity.drugs.dasatinib.ic50",
    "dasatinib_hill": "toxicity.drugs.dasatinib.hill",
    "anakinra_elimination": "toxicity.drugs.anakinra.elimination",
    "anakinra_ed50": "toxicity.drugs.anakinra.ed50",
    "anakinra_emax": "toxicity.drugs.anakinra.emax",
    "fever_il6_half": "toxicity.signs.fever_il6_half",
    "leak_il6_half": "toxicity.signs.leak_il6_half",
    "icans_half": "toxicity.signs.icans_half",
}
_PROLIFERATION = ("rho_effector", "rho_memory", "rho_il15")


@dataclass
class AntigenInTumour:
    """One antigen of the construct in the indication's tumours (atlas + scenario overrides)."""

    name: str
    role: str                              # activating | inhibitory
    binder: str
    patients_positive: float
    density: tuple[float, float]           # median, log-sd (molecules per positive cell)
    negative_fraction: tuple[float, float]  # median, log-sd of the share of cells without it
    half_activation: float                 # molecules/cell for half-maximal activation
    half_kill: float                       # molecules/cell for half-maximal killing
    hill: float


@dataclass
class TissueSlot:
    """A normal tissue the construct recognises, simulated in one normal_j compartment."""

    name: str
    antigens: list[str]
    cells_per_kg: float
    turnover: float
    recognition_kill: float                # gate recognition x accessibility
    recognition_activation: float
    consequence: str
    severity: str
    neurovascular: bool = False            # its killing injures the blood-brain barrier (ICANS)


@dataclass
class SolidSite:
    """Where a solid tumour sits and how it treats the CAR cells that reach it (docs/solid.md)."""

    trafficking: float          # 1/day per (g tumour per kg body) for circulating effectors
    cells_per_ml: float         # tumour cells per mL (taken as per g) of tumour
    heterogeneity: float        # log-SD of antigen density across one tumour's positive cells
    suppression: float          # typical combined microenvironment suppression S (0-1)
    suppression_omega: float    # patient-to-patient log-SD of S's odds
    growth_log_sd: float        # patient-to-patient log-SD of the tumour's growth rate
    weights: dict[str, float]   # tme_kill / tme_proliferation / tme_exhaustion per unit S
    components: dict[str, float]  # each component's strength after armour relief
    first_pass: float = 0.0     # share of the effectors given into blood held first in lung and liver


@dataclass
class Infusion:
    """How and when the product is given."""

    route: str
    site_fraction: float        # share of each dose placed straight into the tumour site
    days: list[float]
    pretreatment_rested: float  # share of the product's exhausted cells rested before infusion


@dataclass
class Design:
    """Typical values of one scenario, before inter-individual variability."""

    scenario: Scenario
    disease: str
    antigen: str                          # first activating antigen
    construct: Construct
    response_criteria: str
    typical: dict[str, float]            # model parameters that do not depend on the patient
    per_kg: dict[str, float]             # host_baseline per kg
    weight: tuple[float, float]          # median, log-sd
    age: tuple[float, float]
    burden: tuple[float, float]
    antigens: list[AntigenInTumour]
    tissues: list[TissueSlot]            # simulated normal tissues (at most NORMAL_SLOTS)
    tissues_not_simulated: list[TissueSlot]
    host_survival: float
    memory_fraction: float
    exhausted_fraction: float
    minimum_phenotype_share: float
    variability: dict[str, float]
    omega_order: list[str]               # order of the per-patient variability draws
    inflammation_correlation: float      # of myeloid IL-6 capacity with expansion potential (draws)
    response: dict[str, object]
    conversion: dict[str, float]
    site: SolidSite | None                # the tumour site of a solid tumour (None: haematological)
    infusion: Infusion
    ledger: Ledger = field(repr=False)
    knowledge: Knowledge = field(repr=False)

    @property
    def warnings(self) -> list[str]:
        return self.construct.warnings

    @property
    def infused_exhausted_fraction(self) -> float:
        """Exhausted share of the cells as infused, after any pretreatment rested part of them."""
        return self.exhausted_fraction * (1.0 - self.infusion.pretreatment_rested)

    @property
    def recognition_half_density(self) -> float:
        """Half-activation density of the first antigen's binder (molecules/cell)."""
        return self.antigens[0].half_activation

    @property
    def density(self) -> tuple[float, float]:
        return self.antigens[0].density

    @property
    def antigen_negative_fraction(self) -> tuple[float, float]:
        return self.antigens[0].negative_fraction


def _lognormal(k: Knowledge, path: str, override) -> tuple[float, float]:
    median, log_sd = k.value(path)
    if override is not None:
        median = override.median if override.median is not None else median
        log_sd = override.log_sd if override.log_sd is not None else log_sd
    return float(median), float(log_sd)


def _car_kinetics(ledger: Ledger, k: Knowledge, disease: str, c: Construct) -> None:
    """CAR-cell kinetics: car_t.yaml, scaled by every part of the design in a fixed order."""
    for name in _CAR_KINETICS:
        ledger.base(name, f"car_t.kinetics.{name}")
    parts = [f"chassis.{c.chassis}", *(f"costim.{d}" for d in c.costim),
             f"construct.hinges.{c.hinge}", f"construct.transmembrane.{c.transmembrane}",
             f"construct.activation.{c.activation}",
             *(f"binders.{b.name}" for b in c.binders + c.inhibitory)]
    solid = k.text(f"antigens._indications.{disease}.category") != "haematological"
    for a in c.armour:
        # Armour against the tumour microenvironment acts only where there is one.
        if k.text(f"armour.{a}.acts_in") == "systemic" or solid:
            parts.append(f"armour.{a}")
    for part in parts:
        node = k.node(part)
        mult = node.get("multipliers") if isinstance(node, dict) else None
        for name in (mult or {}):
            if name not in SCALABLE:
                raise KnowledgeError(f"{part}.multipliers.{name}: not a parameter a design part may "
                                     f"scale; use one of {', '.join(SCALABLE)}")
            ledger.scale(name, f"{part}.multipliers.{name}")
    _tonic_exhaustion(ledger, k, c)
    if c.irradiated:
        for name in _PROLIFERATION:
            ledger.rule(name, 0.0, ledger.records[name].unit,
                        "irradiated before infusion: the cells cannot divide", keep_steps=True)
    act = k.node(f"construct.activation.{c.activation}")
    if not act.get("kills", True) and not (c.gate.kind == "AND" and c.gate.mode == "synnotch"):
        ledger.rule("k_kill", 0.0, ledger.records["k_kill"].unit,
                    f"{c.activation} drives transcription, not killing", keep_steps=True)
    _from_armour(ledger, k, c, "il15_autocrine", "pg/mL", "no IL-15 armour")
    _from_armour(ledger, k, c, "il15_secretion", "pg/mL/day", "no secreted IL-15 armour")


def _tonic_exhaustion(ledger: Ledger, k: Knowledge, c: Construct) -> None:
    """A binder that signals without antigen (tonic signalling) exhausts its cells faster, by
    its ``tonic_exhaustion`` as measured with CD28; each costimulatory domain keeps a share of
    that excess (Long 2015: CD28 augments it, 4-1BB relieves it), so the factor is
    1 + (tonic_exhaustion - 1) x the product of the domains' ``tonic_exhaustion_weight``."""
    for b in c.binders:
        if "tonic_exhaustion" not in k.node(f"binders.{b.name}"):
            continue
        path = f"binders.{b.name}.tonic_exhaustion"
        tonic = k.entry(path)
        excess = float(tonic.value) - 1.0
        weights = {d: float(k.value(f"costim.{d}.tonic_exhaustion_weight")) for d in c.costim}
        factor = 1.0 + excess * float(np.prod(list(weights.values())))
        kept = " x ".join(f"{w:.3g} ({d})" for d, w in weights.items()) or "1 (no costimulatory domain)"
        ledger.scale_by("k_exhaustion", factor, path, tonic.source,
                        f"tonic signalling: 1 + {excess:.3g} excess x {kept} kept by the costimulatory "
                        f"domains (costim.*.tonic_exhaustion_weight)")


def _from_armour(ledger: Ledger, k: Knowledge, c: Construct, name: str, unit: str, otherwise: str) -> None:
    """A parameter only armour supplies: the first armour of the construct that has it, else 0."""
    having = [a for a in c.armour if name in k.node(f"armour.{a}")]
    if having:
        ledger.base(name, f"armour.{having[0]}.{name}")
    else:
        ledger.rule(name, 0.0, unit, otherwise)


def _half_densities(ledger: Ledger, k: Knowledge, c: Construct) -> dict[str, tuple[float, float]]:
    """Half-activation and half-killing densities of each binder on this construct.

    Start from the antigen's reference binder (recognition_half_density), scale by affinity
    ((KD / KD_ref) ** exponent), by the threshold multipliers of the costimulatory domains,
    hinge and transmembrane domain, and by the logic mode; killing needs
    ``kill_threshold_ratio`` times the activation density.
    """
    exponent_path = "car_t.binding.affinity_threshold_exponent"
    exponent = float(k.value(exponent_path))
    out = {}
    for pos, b in enumerate(c.binders + c.inhibitory):
        key = f"half_activation[{b.target}]"
        ledger.base(key, f"antigens.{b.target}.recognition_half_density")
        ref = k.text(f"antigens.{b.target}.reference_binder")
        kd_ref = float(k.value(f"binders.{ref}.kd_nm"))
        if b.kd_nm != kd_ref:
            factor = (b.kd_nm / kd_ref) ** exponent
            src = "scenario" if b.kd_overridden else f"binders.{b.name}.kd_nm"
            ledger.rule(key, ledger.value(key) * factor, "molecules/cell",
                        f"x {factor:.4g} for affinity: ({b.kd_nm:g} nM [{src}] / {kd_ref:g} nM "
                        f"[binders.{ref}.kd_nm]) ** {exponent:g} [{exponent_path}]", keep_steps=True)
        for d in c.costim:
            ledger.scale(key, f"costim.{d}.antigen_threshold_multiplier")
        ledger.scale(key, f"construct.hinges.{c.hinge}.antigen_threshold_multiplier")
        ledger.scale(key, f"construct.transmembrane.{c.transmembrane}.antigen_threshold_multiplier")
        if c.gate.kind == "OR" and c.gate.mode == "tandem" and pos == 1:
            ledger.scale(key, "logic.OR.tandem.second_binder_threshold_multiplier")
        if c.gate.kind == "OR" and c.gate.mode == "bicistronic":
            ledger.scale(key, "logic.OR.bicistronic.expression_threshold_multiplier")
        kill_key = f"half_kill[{b.target}]"
        ledger.rule(kill_key, ledger.value(key), "molecules/cell", f"= {key}")
        ledger.scale(kill_key, "car_t.binding.kill_threshold_ratio")
        out[b.target] = (ledger.value(key), ledger.value(kill_key))
    return out


def _tumour_antigens(k: Knowledge, sc: Scenario, c: Construct,
                     halves: dict[str, tuple[float, float]]) -> list[AntigenInTumour]:
    ind = sc.indication
    out = []
    for pos, b in enumerate(c.binders + c.inhibitory):
        ap = f"antigens.{b.target}.indications.{ind.disease}"
        over = ind.antigens.get(b.target)
        density_override = over.density if over is not None else None
        if pos == 0 and density_override is None:
            density_override = ind.antigen_density
        density = _lognormal(k, f"{ap}.density", density_override)
        fixed_neg = over.negative_fraction if over is not None else None
        if pos == 0 and fixed_neg is None:
            fixed_neg = ind.antigen_negative_fraction
        neg = ((float(fixed_neg), 0.0) if fixed_neg is not None
               else _lognormal(k, f"{ap}.negative_cell_fraction", None))
        positive = over.patients_positive if over is not None else None
        if positive is None:
            positive = float(k.value(f"{ap}.patients_positive"))
        out.append(AntigenInTumour(
            name=b.target, role=b.role, binder=b.name, patients_positive=float(positive),
            density=density, negative_fraction=neg, half_activation=halves[b.target][0],
            half_kill=halves[b.target][1], hill=float(k.value(f"antigens.{b.target}.recognition_hill"))))
    return out


def _normal_tissues(k: Knowledge, antigen: str) -> dict:
    return k.node(f"antigens.{antigen}").get("normal_tissues") or {}


def _tissues(k: Knowledge, c: Construct, antigens: list[AntigenInTumour]) -> list[TissueSlot]:
    """Normal tissues carrying any antigen of the construct, with their gate recognition.

    Every cell of a tissue carries the antigens the atlas lists for it, at the atlas density;
    the gate then gives the tissue's recognition, scaled by its accessibility.
    """
    names: list[str] = []
    for a in antigens:
        names += [t for t in _normal_tissues(k, a.name) if t not in names]
    slots = []
    for t in names:
        carried, neg, r_kill, r_act = [], [], [], []
        for a in antigens:
            here = t in _normal_tissues(k, a.name)
            dens = float(k.value(f"antigens.{a.name}.normal_tissues.{t}.density")) if here else 0.0
            if here:
                carried.append(a.name)
            neg.append(np.array([0.0 if here else 1.0]))
            r_kill.append(recognition(np.array([dens]), a.half_kill, a.hill))
            r_act.append(recognition(np.array([dens]), a.half_activation, a.hill))
        seen = gate_population(c.gate, neg, r_kill, r_act)
        access = float(k.value(f"tissues.{t}.accessibility"))
        slots.append(TissueSlot(
            name=t, antigens=carried, cells_per_kg=float(k.value(f"tissues.{t}.cells_per_kg")),
            turnover=float(k.value(f"tissues.{t}.turnover")),
            recognition_kill=float(seen.kill[0] * seen.share[0]) * access,
            recognition_activation=float(seen.activation[0] * seen.share[0]) * access,
            consequence=k.text(f"tissues.{t}.consequence"), severity=k.text(f"tissues.{t}.severity"),
            neurovascular=bool(k.node(f"tissues.{t}").get("neurovascular") and k.value(f"tissues.{t}.neurovascular"))))
    return slots


def _dose_warnings(sc: Scenario, k: Knowledge, weight_kg: float) -> list[str]:
    """Warn when the dose lies outside the preset's or the chassis's published range."""
    dose = sc.product.dose
    per_kg = dose.cells_per_kg if dose.cells_per_kg is not None else dose.cells / weight_kg
    flat = dose.cells if dose.cells is not None else dose.cells_per_kg * weight_kg
    ranges = [f"chassis.{sc.product.chassis}.dose_range"]
    if sc.product.preset:
        ranges.insert(0, f"products.{sc.product.preset}.dose_range")
    out = []
    for path in ranges:
        try:
            e = k.entry(path)
        except KnowledgeError:
            continue
        lo, hi = (float(v) for v in e.value)
        given = {"cells/kg": per_kg, "cells": flat}.get(e.unit)
        if given is None:  # cells/m2 ranges need a body-surface area carcell does not draw
            continue
        if not lo * (1 - 1e-9) <= given <= hi * (1 + 1e-9):
            shown = f"{given:.3g} {e.unit}" + ("" if (e.unit == "cells") == (dose.cells is not None)
                                              else f" at the median weight {weight_kg:g} kg")
            out.append(f"product.dose: {shown} is outside the range {lo:.3g}-{hi:.3g} {e.unit} of {path} "
                       f"({e.source})")
    return out


_TME_EFFECTS = {"tme_kill": "kill_weight", "tme_proliferation": "proliferation_weight",
                "tme_exhaustion": "exhaustion_gain"}


def is_solid(k: Knowledge, disease: str) -> bool:
    return k.text(f"antigens._indications.{disease}.category") != "haematological"


def _solid_site(ledger: Ledger, k: Knowledge, sc: Scenario, c: Construct) -> SolidSite | None:
    """Tumour site, trafficking and microenvironment of a solid tumour; None for blood cancers.

    Suppression combines the indication's components (TGF-beta, adenosine, hypoxia, Tregs,
    MDSCs, PD-L1), each lowered by armour that relieves it: S = 1 - prod(1 - s_c (1 - relief_c)).
    NK cells feel TGF-beta more (tme.yaml nk_sensitivity)."""
    disease = sc.indication.disease
    ip = f"indications.{disease}"
    if not is_solid(k, disease):
        ledger.rule("solid", 0.0, "1", "haematological disease: the CAR cells meet the tumour in blood, "
                    "marrow and nodes")
        ledger.rule("site_egress", 0.0, "1/day", "no tumour site")
        ledger.rule("traffic_per_tumour_cell", 0.0, "1/(cells*day)", "no tumour site")
        ledger.rule("site_volume_per_tumour_cell", 0.0, "1/cells", "no tumour site")
        ledger.rule("tam_il6", 0.0, "pg/mL", "no tumour site: the myeloid cells near the CAR cells are the "
                    "systemic ones (physiology.il6.max_from_myeloid)")
        ledger.rule("tam_ifng_exchange", 1.0, "1/day", "no tumour site (unused)")
        ledger.rule("first_pass_return", 0.0, "1/day", "blood cancer: the calibrated blood kinetics already "
                    "include the first pass through lung and liver (tme.first_pass.fraction)")
        for name in _TME_EFFECTS:
            ledger.rule(name, 0.0, "1", "no solid-tumour microenvironment")
        for name in ("recognition_low", "activation_low"):
            ledger.rule(name, 0.0, "1", "no antigen-low clone: haematological tumours are taken as homogeneous")
        return None
    ledger.rule("solid", 1.0, "1", f"{disease} is a solid tumour (antigens._indications.{disease}.category): "
                "the CAR cells must reach its site")
    ledger.base("site_egress", f"{ip}.site.egress")
    ledger.base("first_pass_return", "tme.first_pass.return_rate")
    ledger.base("tam_il6", "tme.macrophages.il6_per_tumour_cells")
    ledger.base("tam_ifng_exchange", "tme.macrophages.ifng_exchange")
    ledger.rule("traffic_per_tumour_cell", 0.0, "1/(cells*day)",
                f"per patient: {ip}.site.trafficking / ({ip}.tumour.cells_per_ml x weight), delivery in "
                "proportion to the tumour's share of body mass")
    volume = float(k.value("tme.systemic_volume")) * 1000.0   # mL
    ledger.rule("site_volume_per_tumour_cell", 1.0 / (float(k.value(f"{ip}.tumour.cells_per_ml")) * volume), "1/cells",
                f"1 / ({ip}.tumour.cells_per_ml x tme.systemic_volume): the tumour's volume per cell over the "
                "volume the systemic half-stimulation and TK50 refer to")
    for name in ("recognition_low", "activation_low"):
        ledger.rule(name, 0.0, "1", f"per patient: as recognition of the positive clone, at the mean density "
                    f"of the lower half ({ip}.tumour.antigen_heterogeneity)")
    nk = k.text(f"chassis.{c.chassis}.cell_type") == "NK"
    components = {}
    for comp in k.names(f"{ip}.tme"):
        strength = float(k.value(f"{ip}.tme.{comp}"))
        if nk and comp in k.names("tme.nk_sensitivity"):
            strength = min(1.0, strength * float(k.value(f"tme.nk_sensitivity.{comp}")))
        relief = 0.0
        for a in c.armour:
            if comp in (k.node(f"armour.{a}").get("relieves") or {}):
                relief = 1.0 - (1.0 - relief) * (1.0 - float(k.value(f"armour.{a}.relieves.{comp}")))
        components[comp] = strength * (1.0 - relief)
    suppression = 1.0 - float(np.prod([1.0 - v for v in components.values()]))
    weights = {}
    for name, w in _TME_EFFECTS.items():
        weights[name] = float(k.value(f"tme.{w}"))
        ledger.rule(name, weights[name] * suppression, "1",
                    f"tme.{w} x suppression {suppression:.3g} = 1 - prod(1 - component x (1 - armour relief)) over "
                    + ", ".join(f"{ip}.tme.{comp} ({v:.2g})" for comp, v in components.items())
                    + ("; NK chassis: tme.nk_sensitivity" if nk else "")
                    + (f"; armour {', '.join(c.armour)}" if c.armour else ""))
    return SolidSite(
        trafficking=float(k.value(f"{ip}.site.trafficking")),
        cells_per_ml=float(k.value(f"{ip}.tumour.cells_per_ml")),
        heterogeneity=float(k.value(f"{ip}.tumour.antigen_heterogeneity")),
        suppression=suppression, suppression_omega=float(k.value("tme.variability")),
        growth_log_sd=float(k.value(f"{ip}.tumour.growth_rate_log_sd")),
        weights=weights, components=components, first_pass=float(k.value("tme.first_pass.fraction")))


def _antigen_free_killing(ledger: Ledger, k: Knowledge, disease: str, c: Construct) -> None:
    """NK cells kill through NKG2D whatever the CAR sees; armour such as IL-12 adds bystander killing."""
    node = k.node(f"chassis.{c.chassis}")
    ligands = k.node("antigens.NKG2DL").get("indications") or {}
    if "natural_kill" not in node:
        ledger.rule("natural_kill", 0.0, "1", f"chassis {c.chassis}: no CAR-independent killing")
    elif any(b.target == "NKG2DL" for b in c.binders):
        ledger.rule("natural_kill", 0.0, "1", "the CAR is built on NKG2D itself: its ligands are the CAR's target")
    elif disease not in ligands:
        ledger.rule("natural_kill", 0.0, "1", f"no NKG2D-ligand data for {disease} in antigens/NKG2DL.yaml")
    else:
        lp = f"antigens.NKG2DL.indications.{disease}"
        share = float(k.value(f"{lp}.patients_positive")) * (1.0 - float(k.value(f"{lp}.negative_cell_fraction")[0]))
        ledger.base("natural_kill", f"chassis.{c.chassis}.natural_kill")
        ledger.rule("natural_kill", ledger.value("natural_kill") * share, "1",
                    f"x {share:.3g}, the share of {disease} cells carrying NKG2D ligands "
                    f"({lp}.patients_positive x (1 - median negative_cell_fraction))", keep_steps=True)
    _from_armour(ledger, k, c, "bystander_kill", "1", "no armour that kills antigen-negative neighbours")


def _chassis_host(ledger: Ledger, k: Knowledge, c: Construct) -> None:
    """Host-versus-graft rejection of allogeneic cells, and dasatinib rest of exhausted cells."""
    if "rejection_rate" in k.node(f"chassis.{c.chassis}"):
        ledger.base("rejection_rate", f"chassis.{c.chassis}.rejection_rate")
    else:
        ledger.rule("rejection_rate", 0.0, "1/day", f"chassis {c.chassis}: the patient's own cells are not rejected")
    ledger.base("k_rest", "toxicity.drugs.dasatinib.rest_rate")


def _exhausted_fraction(k: Knowledge, c: Construct) -> float:
    """Exhausted share of the product: the chassis's own (tonic signalling in long culture) or car_t.yaml's."""
    if "exhausted_fraction" in k.node(f"chassis.{c.chassis}"):
        return float(k.value(f"chassis.{c.chassis}.exhausted_fraction"))
    return float(k.value("car_t.product.exhausted_fraction"))


def _infusion(k: Knowledge, sc: Scenario, c: Construct, site: SolidSite | None) -> Infusion:
    """Route (checked against the disease), infusion days and any pretreatment of the cells."""
    route, disease = sc.regimen.route, sc.indication.disease
    rp = f"regimens.routes.{route}"
    category = k.text(f"antigens._indications.{disease}.category")
    def reaches(r: str) -> bool:
        node = k.node(f"regimens.routes.{r}")
        return category in (node.get("categories") or []) and (not node.get("sites") or disease in node["sites"])

    if not reaches(route):
        fits = [r for r in k.names("regimens.routes") if reaches(r)]
        raise ScenarioError(f"regimen.route: {route} does not reach {disease} ({category}); use one of {', '.join(fits)}")
    fraction = float(k.value(f"{rp}.site_fraction")) if site is not None else 0.0
    rested = 0.0
    pre = sc.product.pretreatment
    if pre is not None:
        ic50, hill = float(k.value("toxicity.drugs.dasatinib.ic50")), float(k.value("toxicity.drugs.dasatinib.hill"))
        block = (pre.concentration_nm / ic50) ** hill / (1.0 + (pre.concentration_nm / ic50) ** hill)
        rested = 1.0 - float(np.exp(-float(k.value("toxicity.drugs.dasatinib.rest_rate")) * block * pre.hours / 24.0))
    return Infusion(route=route, site_fraction=fraction, days=list(sc.regimen.infusion_days),
                    pretreatment_rested=rested)


def read_calibration(name: str, k: Knowledge) -> dict[str, tuple[Entry, Entry]]:
    """(multiplier, omega) entries per parameter of a calibration: a bundled name
    (knowledge/data/calibrations) or a YAML file written by `carcell calibrate`."""
    if not name.endswith((".yaml", ".yml")):
        base = f"calibrations.{name}.parameters"
        return {p: (k.entry(f"{base}.{p}.multiplier"), k.entry(f"{base}.{p}.omega")) for p in k.names(base)}
    path = Path(name)
    if not path.exists():
        raise ScenarioError(f"population.calibration: no such file {path}; give a bundled calibration "
                            f"({', '.join(k.names('calibrations'))}) or the path of a file from `carcell calibrate`")
    node = load_yaml(path)
    params = node.get("parameters") if isinstance(node, dict) else None
    if not isinstance(params, dict) or not params:
        raise ScenarioError(f"{path}: a calibration file needs a 'parameters' mapping (name: {{multiplier, omega}})")
    out = {}
    for p, entry in params.items():
        try:
            out[p] = (check_entry(f"{path}:{p}.multiplier", entry["multiplier"]),
                      check_entry(f"{path}:{p}.omega", entry["omega"]))
        except (KeyError, TypeError):
            raise ScenarioError(f"{path}: parameter {p!r} needs 'multiplier' and 'omega' entries") from None
    return out


def _correlation(k: Knowledge, path: str) -> float:
    r = float(k.value(path))
    if not -1.0 < r < 1.0:
        raise KnowledgeError(f"{path} is {r:g}: a correlation must lie strictly between -1 and 1")
    return r


def resolve_design(scenario: Scenario, k: Knowledge) -> Design:
    """Typical parameter values of a scenario, each read (and recorded) from the knowledge base."""
    ind = scenario.indication
    ip = f"indications.{ind.disease}"
    construct = resolve_construct(scenario.product, ind.disease, k)
    ledger = Ledger(k)

    for name, path in {**_PHYSIOLOGY, **_TOXICITY}.items():
        ledger.base(name, path)
    _car_kinetics(ledger, k, ind.disease, construct)   # design parts may scale damp_weight too
    ledger.base("tumour_growth_rate", f"{ip}.tumour.growth_rate")
    ledger.base("tumour_capacity", f"{ip}.tumour.capacity")

    halves = _half_densities(ledger, k, construct)
    antigens = _tumour_antigens(k, scenario, construct, halves)
    site = _solid_site(ledger, k, scenario, construct)
    _antigen_free_killing(ledger, k, ind.disease, construct)
    _chassis_host(ledger, k, construct)
    # Every tissue carrying an antigen of the construct is a candidate, the most exposed first
    # (a tissue the gate spares, recognition 0, is still simulated when a slot is free, so
    # its sparing shows in the results).
    candidates = sorted(_tissues(k, construct, antigens), key=lambda t: -t.recognition_kill * t.cells_per_kg)
    tissues, dropped = candidates[:NORMAL_SLOTS], candidates[NORMAL_SLOTS:]
    dropped = [t for t in dropped if t.recognition_kill > 0]
    for t in dropped:
        construct.warnings.append(
            f"normal tissue {t.name} ({', '.join(t.antigens)}) is recognised but not simulated: carcell "
            f"simulates the {NORMAL_SLOTS} most exposed tissues ({', '.join(s.name for s in tissues)}); "
            f"risk: {t.consequence}")
    for j, t in enumerate(tissues, start=1):
        ledger.rule(f"recognition_normal_{j}", t.recognition_kill, "1",
                    f"{t.name}: gate recognition of {', '.join(t.antigens)} at atlas density x "
                    f"tissues.{t.name}.accessibility")
        ledger.rule(f"activation_normal_{j}", t.recognition_activation, "1",
                    f"{t.name}: as recognition_normal_{j}, at the activation threshold")
        ledger.base(f"normal_turnover_{j}", f"tissues.{t.name}.turnover")

    weight = _lognormal(k, f"{ip}.patients.weight_kg", scenario.population.covariates.weight_kg)
    construct.warnings.extend(_dose_warnings(scenario, k, weight[0]))

    memory_fraction = scenario.product.memory_fraction
    if memory_fraction is not None:
        ledger.rule("memory_fraction", memory_fraction, "1", "scenario product.memory_fraction")
    elif "memory_fraction" in k.node(f"chassis.{construct.chassis}"):
        ledger.base("memory_fraction", f"chassis.{construct.chassis}.memory_fraction")
    else:
        fractions = [float(k.value(f"costim.{d}.memory_fraction")) for d in construct.costim]
        ledger.rule("memory_fraction", float(np.mean(fractions)), "1",
                    "mean of " + ", ".join(f"costim.{d}.memory_fraction" for d in construct.costim))

    variability = {name: float(k.value(f"car_t.variability.{name}")) for name in k.names("car_t.variability")}
    if scenario.population.calibration is not None:
        for name, (mult, omega) in read_calibration(scenario.population.calibration, k).items():
            if name not in ledger.records:
                raise ScenarioError(f"population.calibration: {name!r} is not a parameter of this design")
            ledger.scale_by(name, mult.value, mult.path, mult.source, mult.citation)
            variability[name] = float(omega.value)
    variability.update(scenario.population.variability)
    # Draw order: the kinetic omegas first (sorted), then the toxicity susceptibilities, so
    # adding the toxicity layer left every patient's kinetic draws as they were.
    omega_order = sorted(variability)
    for name in k.names("toxicity.variability"):
        if name not in variability:
            variability[name] = float(k.value(f"toxicity.variability.{name}"))
            omega_order.append(name)

    criteria = k.text(f"{ip}.response_criteria")
    response = {}
    for name in k.names(f"{ip}.response"):
        response[name] = k.value(f"{ip}.response.{name}")
    if criteria == "marrow_blasts":
        response["marrow_cells"] = k.value(f"{ip}.tumour.marrow_cells")
    if criteria in ("recist", "rano"):
        response["cells_per_ml"] = k.value(f"{ip}.tumour.cells_per_ml")
    if scenario.trial.assessment_days is not None:   # the trial's own schedule
        response["assessment_days"] = [float(d) for d in scenario.trial.assessment_days]

    conversion = {
        "blood_ml_per_kg": float(k.value("physiology.blood.volume_per_kg")),
        "lymphocyte_blood_fraction": float(k.value("physiology.blood.lymphocyte_fraction_in_blood")),
        "non_lymphoid_per_ul": float(k.value("physiology.blood.non_lymphoid_leukocytes")),
        "cells_per_ug": float(k.value("physiology.blood.dna_per_diploid_cell_cells_per_ug")),
        "vcn": float(k.value("car_t.product.vector_copies_per_cell")),
    }
    typical = {name: ledger.value(name) for name in ledger.records
               if name in PARAM_INDEX and not name.startswith(("recognition_", "activation_", "normal_"))}
    return Design(
        scenario=scenario,
        disease=ind.disease,
        antigen=antigens[0].name,
        construct=construct,
        response_criteria=criteria,
        typical=typical,
        per_kg={"host_baseline": float(k.value("physiology.host.lymphocytes_per_kg"))},
        weight=weight,
        age=_lognormal(k, f"{ip}.patients.age_years", scenario.population.covariates.age_years),
        burden=_lognormal(k, f"{ip}.tumour.baseline_burden", ind.baseline_burden),
        antigens=antigens,
        tissues=tissues,
        tissues_not_simulated=dropped,
        host_survival=float(k.value(f"regimens.lymphodepletion.{scenario.regimen.lymphodepletion}.host_survival")),
        memory_fraction=float(ledger.value("memory_fraction")),
        exhausted_fraction=_exhausted_fraction(k, construct),
        minimum_phenotype_share=float(k.value("car_t.product.minimum_phenotype_share")),
        variability=variability,
        omega_order=omega_order,
        inflammation_correlation=_correlation(k, f"{ip}.patients.inflammation_correlation"),
        response=response,
        conversion=conversion,
        site=site,
        infusion=_infusion(k, scenario, construct, site),
        ledger=ledger,
        knowledge=k,
    )


@dataclass
class CompiledCohort:
    """Patients ``start..stop`` ready to integrate."""

    covariates: pd.DataFrame
    params: Params
    y0: np.ndarray


def patient_rng(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient,)))


# Columns of each patient's standard-normal draws: 5 fixed, then one per variability omega,
# then three per additional antigen (density, negative share, patient positivity), then the
# solid tumour's microenvironment suppression and growth rate (appended last, so earlier draws
# stay as they were).
_FIXED_DRAWS = 5
_SOLID_DRAWS = 2


def patient_draws(design: Design, ids: np.ndarray) -> np.ndarray:
    """Each patient's standard normals, one row per id, from the patient's own stream, with the
    myeloid IL-6 capacity's draw correlated with the expansion potential's (:func:`expansion_potential`)."""
    n_draws = _FIXED_DRAWS + len(design.omega_order) + 3 * (len(design.antigens) - 1) + _SOLID_DRAWS
    draws = np.empty((len(ids), n_draws))
    for row, i in enumerate(ids):
        draws[row] = patient_rng(design.scenario.population.seed, int(i)).standard_normal(n_draws)
    r = design.inflammation_correlation
    if r == 0.0 or "il6_max" not in design.omega_order:
        return draws
    potential = expansion_potential(design, draws)
    if potential is not None:
        col = _FIXED_DRAWS + design.omega_order.index("il6_max")
        draws[:, col] = r * potential + np.sqrt(1.0 - r * r) * draws[:, col]
    return draws


#: how each varied kinetic parameter moves CAR expansion: faster proliferation raises it, faster
#: effector death and a higher antigen threshold for stimulation lower it
_EXPANSION_SIGNS = {"rho_effector": 1.0, "d_effector": -1.0, "antigen_half_stimulation": -1.0}


def expansion_potential(design: Design, draws: np.ndarray) -> np.ndarray | None:
    """A patient's expansion potential as a standard normal: the sum of the draws behind the
    parameters of :data:`_EXPANSION_SIGNS`, each signed by its effect on expansion and weighted
    by its omega (the log-scale spread it gives), scaled to unit variance. None when none varies.

    Host systemic inflammation ties it to myeloid IL-6 capacity (docs/toxicity.md, "Host
    inflammation"): a negative ``inflammation_correlation`` gives the patients whose CAR T cells
    expand less more capacity to make IL-6."""
    total = np.zeros(draws.shape[0])
    weight2 = 0.0
    for name, sign in _EXPANSION_SIGNS.items():
        omega = design.variability.get(name, 0.0)
        if name in design.omega_order and omega > 0:
            total += sign * omega * draws[:, _FIXED_DRAWS + design.omega_order.index(name)]
            weight2 += omega * omega
    return total / np.sqrt(weight2) if weight2 > 0 else None


#: E[Z | Z > 0] for a standard normal: the mean log-density offset of each half of a tumour's
#: positive cells, split at the median into an antigen-high and an antigen-low clone
_HALF_NORMAL_MEAN = float(np.sqrt(2.0 / np.pi))


def initial_car_states(design: Design, cells: np.ndarray, y_params: Params, burden: np.ndarray) -> np.ndarray:
    """Log-cells of one dose in each CAR state (memory, effector, exhausted, in-tumour, held in
    lung and liver), shape (n, 5).

    The dose's phenotype mix comes from the design (a pretreatment rests part of the exhausted
    cells into effectors). A locoregional route places ``site_fraction`` of the cells in the
    tumour. With a solid tumour, ``site.first_pass`` of the effectors given into blood stop in
    lung and liver first; of the rest, the share trafficking into the tumour before they are
    lost (r / (r + egress + d_effector), r the per-cell influx at baseline burden) starts there
    too, the distribution phase of the first day."""
    inf = design.infusion
    fx = design.infused_exhausted_fraction
    floor = design.minimum_phenotype_share
    fm = min(max(design.memory_fraction * (1 - design.exhausted_fraction), floor), 1 - design.exhausted_fraction - floor)
    out = np.full((cells.size, len(CAR_STATES)), LOG_EXTINCT)
    p = y_params
    blood = cells * (1.0 - inf.site_fraction)
    effectors = blood * (1 - fm - fx)
    if design.site is not None:
        held = effectors * design.site.first_pass
        effectors = effectors - held
        if design.site.first_pass > 0:
            out[:, 4] = np.log(np.maximum(held, 1.0))
        r = p.traffic_per_tumour_cell * burden
        arriving = effectors * r / (r + p.site_egress + p.d_effector)
        effectors = effectors - arriving
        out[:, 3] = np.log(np.maximum(cells * inf.site_fraction * (1 - fx) + arriving, 1.0))
    out[:, 0] = np.log(blood * fm)
    out[:, 1] = np.log(effectors)
    if fx > 0:
        out[:, 2] = np.log(blood * fx)
    return np.maximum(out, LOG_EXTINCT)


def omega_deviates(design: Design, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The standard normal behind each varied parameter, per patient (for calibration weights)."""
    draws = patient_draws(design, ids)
    return {name: draws[:, _FIXED_DRAWS + j] for j, name in enumerate(design.omega_order)}


def dose_cells(design: Design, weight: np.ndarray) -> np.ndarray:
    """CAR+ cells in one dose per patient (flat or per kg)."""
    dose = design.scenario.product.dose
    return dose.cells * np.ones(weight.size) if dose.cells is not None else dose.cells_per_kg * weight


def compile_chunk(design: Design, start: int, stop: int, ids: np.ndarray | None = None,
                  burden_factor: np.ndarray | None = None) -> CompiledCohort:
    """Draw patients ``start..stop`` (0-based), or the given patient ids, and build their
    parameters and initial states. A patient's numbers depend only on the seed and the id.

    ``burden_factor`` (one per patient) scales the drawn burden, which is then the burden at
    referral, to the burden at infusion (growth and bridging while the product was made)."""
    ids = np.arange(start, stop, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
    n = ids.size
    omega_names = design.omega_order
    extra = design.antigens[1:]
    draws = patient_draws(design, ids)
    z_weight, z_age, z_burden = draws[:, 0], draws[:, 1], draws[:, 2]
    weight = design.weight[0] * np.exp(design.weight[1] * z_weight)
    age = design.age[0] * np.exp(design.age[1] * z_age)
    referral_burden = design.burden[0] * np.exp(design.burden[1] * z_burden)
    burden = referral_burden if burden_factor is None else referral_burden * np.asarray(burden_factor, float)

    # Per antigen: density on positive tumour cells and share of tumour cells without it. The
    # first antigen defines eligibility (trials enrol patients positive for the target); each
    # further antigen is present in a patient with the atlas's patients_positive probability.
    densities, negatives = [], []
    for a, (zd, zn, zp) in zip(design.antigens, [(draws[:, 3], draws[:, 4], None)] + [
            tuple(draws[:, _FIXED_DRAWS + len(omega_names) + 3 * m + q] for q in range(3))
            for m in range(len(extra))]):
        densities.append(a.density[0] * np.exp(a.density[1] * zd))
        neg = np.minimum(1.0, a.negative_fraction[0] * np.exp(a.negative_fraction[1] * zn))
        if zp is not None:
            neg = np.where(ndtr(zp) < a.patients_positive, neg, 1.0)
        negatives.append(neg)
    def seen_at(first_density: np.ndarray):
        dens = [first_density, *densities[1:]]
        r_kill = [recognition(d, a.half_kill, a.hill) for d, a in zip(dens, design.antigens)]
        r_act = [recognition(d, a.half_activation, a.hill) for d, a in zip(dens, design.antigens)]
        return gate_population(design.construct.gate, negatives, r_kill, r_act)

    seen = seen_at(densities[0])
    unseen = seen.missed   # tumour share the construct cannot recognise: the escape clone
    # A solid tumour's positive cells carry the antigen at very different densities: split them
    # at the median into an antigen-high and an antigen-low clone, each recognised at the mean
    # density of its half, so antigen-low cells can escape.
    sigma = design.site.heterogeneity if design.site is not None else 0.0
    split = sigma > 0
    if split:
        offset = np.exp(_HALF_NORMAL_MEAN * sigma)
        seen, low = seen_at(densities[0] * offset), seen_at(densities[0] / offset)

    values = np.zeros((n, len(PARAMETER_NAMES)))
    for name, v in design.typical.items():
        values[:, PARAM_INDEX[name]] = v
    for j, name in enumerate(omega_names):
        values[:, PARAM_INDEX[name]] *= np.exp(design.variability[name] * draws[:, _FIXED_DRAWS + j])
    values[:, PARAM_INDEX["host_baseline"]] = design.per_kg["host_baseline"] * weight
    values[:, PARAM_INDEX["recognition_tumour"]] = seen.kill
    values[:, PARAM_INDEX["activation_tumour"]] = seen.activation
    if split:
        values[:, PARAM_INDEX["recognition_low"]] = low.kill
        values[:, PARAM_INDEX["activation_low"]] = low.activation
    if design.site is not None:
        # delivery follows the tumour's share of body mass (cells per mL taken as per gram)
        values[:, PARAM_INDEX["traffic_per_tumour_cell"]] = design.site.trafficking / (design.site.cells_per_ml * weight)
        st = design.site
        z_tme, z_growth = draws[:, -2], draws[:, -1]
        odds = st.suppression / max(1.0 - st.suppression, 1e-12) * np.exp(st.suppression_omega * z_tme)
        suppression = odds / (1.0 + odds)
        tme_suppression = suppression
        for name, w in st.weights.items():
            values[:, PARAM_INDEX[name]] = w * suppression
        # solid tumours grow at very different rates from patient to patient
        values[:, PARAM_INDEX["tumour_growth_rate"]] *= np.exp(st.growth_log_sd * z_growth)
    for j in range(1, NORMAL_SLOTS + 1):
        if j <= len(design.tissues):
            t = design.tissues[j - 1]
            base, turnover, rk, ra = t.cells_per_kg * weight, t.turnover, t.recognition_kill, t.recognition_activation
            nv = float(t.neurovascular)
        else:  # an unused compartment: one cell nobody recognises
            base, turnover, rk, ra, nv = 1.0, 1.0, 0.0, 0.0, 0.0
        values[:, PARAM_INDEX[f"normal_baseline_{j}"]] = base
        values[:, PARAM_INDEX[f"normal_turnover_{j}"]] = turnover
        values[:, PARAM_INDEX[f"recognition_normal_{j}"]] = rk
        values[:, PARAM_INDEX[f"activation_normal_{j}"]] = ra
        values[:, PARAM_INDEX[f"neurovascular_normal_{j}"]] = nv
    values[:, PARAM_INDEX["alive_car"]] = 1.0
    values[:, PARAM_INDEX["alive_tumour_pos"]] = (unseen < 1).astype(float)
    values[:, PARAM_INDEX["alive_tumour_low"]] = ((unseen < 1) & split).astype(float)
    values[:, PARAM_INDEX["alive_tumour_neg"]] = (unseen > 0).astype(float)
    p = Params(values)

    cells = dose_cells(design, weight)
    y0 = np.zeros((n, N_STATES))
    car = initial_car_states(design, cells, p, burden)
    for j, state in enumerate(CAR_STATES):
        y0[:, INDEX[state]] = car[:, j]
    positive = burden * (1 - unseen) / (2.0 if split else 1.0)
    with np.errstate(divide="ignore"):
        y0[:, INDEX["tumour_pos"]] = np.where(unseen < 1, np.log(positive), LOG_EXTINCT)
        y0[:, INDEX["tumour_low"]] = np.where((unseen < 1) & split, np.log(positive), LOG_EXTINCT)
        y0[:, INDEX["tumour_neg"]] = np.where(unseen > 0, np.log(burden * unseen), LOG_EXTINCT)
    y0 = np.maximum(y0, LOG_EXTINCT)
    fx = design.infused_exhausted_fraction
    for j, state in enumerate(NORMAL_STATES, start=1):
        y0[:, INDEX[state]] = np.log(getattr(p, f"normal_baseline_{j}"))
    host0 = p.host_baseline * design.host_survival
    y0[:, INDEX["host_lymphocytes"]] = np.log(host0)
    # IL-15 at infusion: the quasi-steady level for the depleted lymphocyte compartment
    # (lymphodepletion ends about 3 days before infusion, several IL-15 half-lives).
    consumers = (host0 + cells * (1 - fx)) / p.host_baseline
    f_up = p.il15_uptake_fraction
    removal = (1 - f_up) + f_up * consumers   # relative to the baseline removal rate
    y0[:, INDEX["il15"]] = p.il15_baseline / removal
    y0[:, INDEX["ifng"]] = 0.0
    y0[:, INDEX["macrophage_activation"]] = 0.0
    y0[:, INDEX["il6"]] = p.il6_baseline
    assert np.all(il15_drive_at_baseline(p) > 0)

    cov = pd.DataFrame({
        "patient_id": ids,
        "weight_kg": weight,
        "age_years": age,
        "baseline_burden_cells": burden,
        "antigen_density": densities[0],
        "antigen_negative_fraction": negatives[0],
    })
    if burden_factor is not None:
        cov["referral_burden_cells"] = referral_burden
    for a, d, q in zip(design.antigens[1:], densities[1:], negatives[1:]):
        cov[f"{a.name}_density"] = d
        cov[f"{a.name}_negative_fraction"] = q
    if len(design.antigens) > 1:
        cov["unrecognised_fraction"] = unseen
    if design.site is not None:
        cov["tme_suppression"] = tme_suppression
        cov["tumour_growth_rate"] = values[:, PARAM_INDEX["tumour_growth_rate"]]
    cov["dose_cells"] = cells
    cov["blood_volume_ul"] = weight * design.conversion["blood_ml_per_kg"] * UL_PER_ML
    return CompiledCohort(covariates=cov, params=p, y0=y0)
