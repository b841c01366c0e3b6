"""carcell's own mechanistic model for one virtual patient, written as SBML Level 3 Version 2.

:func:`export_patient` turns a scenario and a patient id into a self-contained SBML document:
the right-hand side of :mod:`carcell.model.rhs` written out as rate rules, the patient's
parameters as constants with units and provenance, the patient's initial state, and the
patient's later infusions as events. :func:`sbml_diagnostics` runs libsbml's consistency
checks (units included). The SBML runs in libRoadRunner (:mod:`carcell.interop.rr`), COPASI or
any other SBML tool; docs/sbml-export.md shows how, and how close it comes to carcell's solver.

How the model is written
------------------------
* **States are SBML parameters with rate rules, exactly what carcell integrates.** A cell
  population X is integrated as its natural log, ``ln_X`` (dimensionless: the log of the count
  in cells), with ``d ln_X/dt`` in 1/day; the count itself, ``X = exp(ln_X)`` in cells, is an
  assignment rule. Cytokines, activation fractions and drugs are integrated in their own units
  (pg/mL, 1, ug/mL, mg, nM). Log space keeps populations that span twelve orders of magnitude
  positive and lets a solver control their *relative* error with one absolute tolerance.
* **Derived quantities are assignment rules** with the names used in the code and in
  docs/model.md: the stimulus, kill rates per target cell, the IL-15 drive, the IL-6 receptor
  occupancy by tocilizumab, the steroid and anakinra effects, and so on.
* **Every per-patient parameter** (``PARAMETER_NAMES``) is a constant parameter with its unit;
  its notes hold its provenance (the design ledger's derivation and sources, or how the patient
  draw made it).
* **Later infusions** of a multi-dose regimen are events at their days that add one dose to
  each CAR state (``ln_X <- ln(exp(ln_X) + dose)``), as carcell does.

What is not exported (carcell applies these between integration intervals, outside the ODE):
toxicity management at the twice-daily assessments, prophylaxis included (tocilizumab,
steroid, anakinra and dasatinib doses; the drug states only decay here), extinction of populations that fall below
one cell at the clinical rounds (the ``alive_*`` flags are the patient's flags at infusion and
stay constant), and the clinical read-outs (grades, response). Over a window without clinical
events the export and carcell integrate the same equations.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carcell.design import CompiledCohort, Design
from carcell.errors import CarcellError
from carcell.model.states import CAR_STATES, INDEX, IS_LOG, N_STATES, PARAMETER_NAMES, STATE_NAMES, STATES, Params
from carcell.scenario.schema import Scenario

#: XML namespace of carcell's own SBML annotations
ANNOTATION_NS = "urn:carcell:sbml-export:1"


class ExportError(CarcellError, ValueError):
    """An export was asked for something carcell cannot write as SBML; the message says what to do."""


# -- units ------------------------------------------------------------------------------------
#: SBML unit definitions: id -> list of (kind, exponent, scale, multiplier); value in SI =
#: product of (multiplier * 10**scale * kind) ** exponent
UNIT_DEFINITIONS: dict[str, list[tuple[str, float, int, float]]] = {
    "day": [("second", 1, 0, 86400.0)],
    "per_day": [("second", -1, 0, 86400.0)],
    "cell": [("item", 1, 0, 1.0)],
    "per_cell": [("item", -1, 0, 1.0)],
    "cell_per_day": [("item", 1, 0, 1.0), ("second", -1, 0, 86400.0)],
    "per_cell_per_day": [("item", -1, 0, 1.0), ("second", -1, 0, 86400.0)],
    "pg_per_mL": [("gram", 1, -12, 1.0), ("litre", -1, -3, 1.0)],
    "pg_per_mL_per_day": [("gram", 1, -12, 1.0), ("litre", -1, -3, 1.0), ("second", -1, 0, 86400.0)],
    "ug_per_mL": [("gram", 1, -6, 1.0), ("litre", -1, -3, 1.0)],
    "mg": [("gram", 1, -3, 1.0)],
    "nM": [("mole", 1, -9, 1.0), ("litre", -1, 0, 1.0)],
}

#: carcell's unit strings (carcell/units.py) -> SBML unit ids
_SBML_UNIT = {
    "1": "dimensionless", "1/day": "per_day", "cells": "cell", "1/cells": "per_cell",
    "cells/day": "cell_per_day", "1/(cells*day)": "per_cell_per_day", "pg/mL": "pg_per_mL",
    "pg/mL/day": "pg_per_mL_per_day", "ug/mL": "ug_per_mL", "mg": "mg", "nM": "nM", "day": "day",
}

_RATE = "1/day"
_DIMLESS = "1"
#: The unit of each parameter as the right-hand side uses it (dimensional analysis of rhs.py).
#: Where the design ledger records a typical value in another unit (``traffic_per_tumour_cell``
#: is per patient divided by the tumour's cells; ``site_volume_per_tumour_cell`` is a volume
#: ratio per tumour cell), the unit here is the one of the per-patient value the model reads.
PARAMETER_UNITS: dict[str, str] = {
    **dict.fromkeys(("rho_effector", "rho_memory", "k_differentiation", "k_reversion", "k_exhaustion",
                     "d_effector", "d_memory", "d_exhausted", "rho_il15", "k_kill", "serial_kill_max",
                     "tumour_growth_rate", "host_turnover", "il15_elimination", "ifng_clearance",
                     "macrophage_on", "macrophage_off", "il6_synthesis_rate", "il6_clearance", "endothelial_on", "endothelial_off",
                     "endothelial_injury_half", "toci_elimination", "steroid_elimination",
                     "dasatinib_elimination", "anakinra_elimination", "site_egress", "first_pass_return",
                     "rejection_rate", "k_rest", "tam_ifng_exchange"), _RATE),
    **{f"normal_turnover_{j}": _RATE for j in (1, 2, 3)},
    **dict.fromkeys(("antigen_half_stimulation", "effector_half_kill", "tumour_capacity", "host_baseline"), "cells"),
    **{f"normal_baseline_{j}": "cells" for j in (1, 2, 3)},
    **dict.fromkeys(("il15_half_saturation", "il15_autocrine", "il15_baseline", "ifng_half_activation",
                     "il6_baseline", "il6_max", "tam_il6", "endothelial_half", "fever_il6_half",
                     "leak_il6_half"), "pg/mL"),
    **dict.fromkeys(("il15_secretion", "ifng_secretion"), "pg/mL/day"),
    "damp_half_activation": "cells/day",
    "toci_kd": "ug/mL", "steroid_ed50": "mg", "anakinra_ed50": "mg", "dasatinib_ic50": "nM",
    "traffic_per_tumour_cell": "1/(cells*day)", "site_volume_per_tumour_cell": "1/cells",
}
PARAMETER_UNITS.update({name: _DIMLESS for name in PARAMETER_NAMES if name not in PARAMETER_UNITS})
assert set(PARAMETER_UNITS) == set(PARAMETER_NAMES)

#: SBML unit of each integrated state (log-states are dimensionless logs of counts in cells)
STATE_UNITS = {name: ("dimensionless" if log else _SBML_UNIT[unit]) for name, unit, log, _ in STATES}


def state_id(name: str) -> str:
    """SBML id of a state as integrated: ``ln_<name>`` for log-cell states, ``<name>`` otherwise."""
    return f"ln_{name}" if IS_LOG[INDEX[name]] else name


STATE_IDS: tuple[str, ...] = tuple(state_id(n) for n in STATE_NAMES)
_LOG_STATES = [n for n in STATE_NAMES if IS_LOG[INDEX[n]]]


# -- equations --------------------------------------------------------------------------------
# SBML L3 infix, term for term as in carcell/model/rhs.py (derived() and rhs()); names and
# symbols as in docs/model.md and docs/solid.md. R(a, b) is rhs._ratio, b/a of two log-states
# with its overflow guard; H(x, half, n) is rhs._hill. Bare numbers are unit-less except where a
# unit is needed for the dimensional check (1e10 cells in the secretion rates).
_MAX_LOG_RATIO = 60   # rhs._MAX_LOG_RATIO


def _r(log_a: str, log_b: str) -> str:
    return f"exp(min({log_a} - {log_b}, {_MAX_LOG_RATIO}))"


def _h(x: str, half: str, n: str) -> str:
    return f"(({x}) / ({half}))^({n}) / (1 + (({x}) / ({half}))^({n}))"


def _myeloid_drive(ifng: str, killed: str) -> str:
    """rhs._myeloid_drive: Hill(IFN-gamma) + DAMP weight x Hill(cells killed per day)."""
    return (_h(ifng, "ifng_half_activation", "myeloid_hill") + " + damp_weight * "
            + _h(killed, "damp_half_activation", "myeloid_hill"))


def _sum3(fmt: str) -> str:
    return "(" + " + ".join(fmt.format(j=j) for j in (1, 2, 3)) + ")"


#: (id, formula, unit, meaning), in evaluation order
ASSIGNMENTS: list[tuple[str, str, str, str]] = [
    *[(n, f"exp(ln_{n}) * 1 cell", "cell", f"{n} as a count (whole body)") for n in _LOG_STATES],
    ("te", "car_effector * alive_car", "cell", "live circulating CAR effectors, E_a"),
    ("site", "car_site * alive_car * solid", "cell", "live CAR effectors inside a solid tumour, S"),
    ("tp", "tumour_pos * alive_tumour_pos", "cell", "live antigen-positive tumour cells"),
    ("tl", "tumour_low * alive_tumour_low", "cell", "live antigen-low tumour cells"),
    ("tn", "tumour_neg * alive_tumour_neg", "cell", "live antigen-negative tumour cells"),
    ("haem", "1 - solid", "dimensionless", "1 in haematological disease, 0 in a solid tumour"),
    ("tumour_act", "activation_tumour * tp + activation_low * tl", "cell", "tumour antigen that activates CAR cells"),
    ("tumour_kill", "recognition_tumour * tp + recognition_low * tl", "cell", "tumour antigen CAR cells can kill"),
    ("normal_act", _sum3("activation_normal_{j} * normal_{j}"), "cell", "normal-tissue antigen that activates"),
    ("normal_kill", _sum3("recognition_normal_{j} * normal_{j}"), "cell", "normal-tissue antigen that can be killed"),
    ("dasatinib_block", _h("max(dasatinib, 0 nM)", "dasatinib_ic50", "dasatinib_hill"), "dimensionless",
     "share of CAR signalling blocked by dasatinib"),
    ("signalling", "1 - dasatinib_block", "dimensionless", "share of CAR signalling left"),
    ("antigen", "haem * tumour_act + normal_act", "cell", "antigen seen by circulating CAR cells, A"),
    ("stimulus", _h("antigen", "antigen_half_stimulation + te", "stimulus_hill") + " * signalling",
     "dimensionless", "stimulus per circulating CAR cell, S"),
    ("tumour_all", "tp + tl + tn", "cell", "live tumour cells"),
    ("local", "site_volume_per_tumour_cell * max(tumour_all, 1 cell)", "dimensionless",
     "tumour volume (at least one cell's) / systemic volume"),
    ("site_stimulus", _h("tumour_act", "antigen_half_stimulation * (local + haem) + site", "stimulus_hill")
     + " * signalling * solid", "dimensionless", "stimulus per CAR cell inside the tumour"),
    ("killers", "haem * te + site", "cell", "effectors that reach the tumour"),
    ("half_kill", "effector_half_kill * (haem + solid * local)", "cell", "TK50 where the killing happens"),
    ("engaged", "killers / (killers + half_kill + k_kill * (tumour_kill + haem * normal_kill) / serial_kill_max)"
     " * signalling * (1 - tme_kill)", "dimensionless", "engagement of tumour cells, theta"),
    ("engaged_normal", "te / (te + effector_half_kill + k_kill * (normal_kill + haem * tumour_kill) / serial_kill_max)"
     " * signalling", "dimensionless", "engagement of normal-tissue cells"),
    ("kill_tumour_car", "k_kill * recognition_tumour * engaged", "per_day", "CAR killing per antigen-positive cell"),
    ("kill_low_car", "k_kill * recognition_low * engaged", "per_day", "CAR killing per antigen-low cell"),
    ("kill_negative", "k_kill * natural_kill * engaged + bystander_kill * (kill_tumour_car * tp + kill_low_car * tl)"
     " / max(tumour_all, 1e-300 cell)", "per_day", "antigen-independent killing per tumour cell (NK, bystander)"),
    ("kill_tumour", "kill_tumour_car + kill_negative", "per_day", "killing per antigen-positive tumour cell, kappa_T"),
    ("kill_low", "kill_low_car + kill_negative", "per_day", "killing per antigen-low tumour cell"),
    *[(f"kill_normal_{j}", f"recognition_normal_{j} * (k_kill * engaged_normal)", "per_day",
       f"killing per cell of normal tissue {j}") for j in (1, 2, 3)],
    ("il15_pos", "max(il15, 0 pg_per_mL)", "pg_per_mL", "serum IL-15, clipped at 0"),
    ("autocrine", "il15_autocrine / (il15_autocrine + il15_half_saturation)", "dimensionless",
     "IL-15 armour's autocrine signal"),
    ("il15_drive", "il15_pos / (il15_pos + il15_half_saturation)", "dimensionless", "IL-15 drive, phi(I)"),
    ("il15_drive_0", "il15_baseline / (il15_baseline + il15_half_saturation)", "dimensionless",
     "IL-15 drive at baseline, phi_0"),
    ("car_survival", "1 - autocrine", "dimensionless", "death-rate factor of the IL-15 armour, sigma"),
    ("homeostatic", "rho_il15 * (il15_drive - il15_drive_0)", "per_day", "IL-15 homeostatic proliferation, h"),
    ("host_share", "host_lymphocytes / host_baseline", "dimensionless", "host lymphocytes / baseline"),
    ("rejection", "rejection_rate * host_share", "per_day", "host-versus-graft rejection"),
    ("rest", "k_rest * dasatinib_block", "per_day", "dasatinib rest of exhausted cells"),
    ("entering", "traffic_per_tumour_cell * tumour_all * solid", "per_day", "per-capita trafficking into the tumour"),
    ("steroid_effect", "max(corticosteroid, 0 mg) / (max(corticosteroid, 0 mg) + steroid_ed50)", "dimensionless",
     "corticosteroid effect (Emax)"),
    ("expansion", "1 - steroid_expansion_emax * steroid_effect", "dimensionless", "steroid-damped expansion"),
    ("growth", "tumour_growth_rate * (1 - tumour_all / tumour_capacity)", "per_day", "logistic tumour growth"),
    ("car_cells_il15", "(car_memory + te) * alive_car + site", "cell", "CAR cells taking up IL-15"),
    ("consumers", "(host_lymphocytes + car_cells_il15) / host_baseline", "dimensionless", "IL-15 consumers, C"),
    ("car_cells", "car_cells_il15 + (car_exhausted + car_lung_liver * solid) * alive_car", "cell",
     "every CAR cell (secreting armour)"),
    ("il15_secreted", "il15_secretion * car_cells / 1e10 cell", "pg_per_mL_per_day", "IL-15 from secreting armour"),
    ("dampen", "1 - steroid_cytokine_emax * steroid_effect", "dimensionless", "steroid damping of cytokine production"),
    ("engaged_cells", "te * stimulus + site * site_stimulus", "cell", "antigen-engaged effectors"),
    ("killed_tumour", "kill_tumour * tp + kill_low * tl + kill_negative * tn", "cell_per_day",
     "tumour cells killed per day"),
    ("killed", "killed_tumour + " + _sum3("kill_normal_{j} * normal_{j}"), "cell_per_day",
     "cells killed per day (DAMPs)"),
    ("ifng_pos", "max(ifng, 0 pg_per_mL)", "pg_per_mL", "serum IFN-gamma, clipped at 0"),
    ("myeloid_drive", _myeloid_drive("ifng_pos", "killed"), "dimensionless", "myeloid activation drive, D"),
    ("concentrate", "solid / (local + 1 - solid)", "dimensionless",
     "systemic volume / tumour volume in a solid tumour (0 in haematological disease)"),
    ("ifng_site", "ifng_pos + concentrate * ifng_secretion * dampen * site * site_stimulus / 1e10 cell"
     " / tam_ifng_exchange", "pg_per_mL", "IFN-gamma the tumour's macrophages see"),
    ("myeloid_drive_site", _myeloid_drive("ifng_site", "concentrate * killed_tumour"), "dimensionless",
     "activation drive of tumour-associated macrophages"),
    ("il6_from_tam", "solid * tam_il6 * macrophage_site * tumour_all / 1e10 cell", "pg_per_mL",
     "serum IL-6 from tumour-associated macrophages at steady state"),
    ("il1_block", "anakinra_emax * max(anakinra, 0 mg) / (max(anakinra, 0 mg) + anakinra_ed50)", "dimensionless",
     "share of IL-1 amplification blocked by anakinra"),
    ("il1", "1 - il1_block", "dimensionless", "IL-1 amplification left"),
    ("il6_receptor_occupancy", "max(tocilizumab, 0 ug_per_mL) / (max(tocilizumab, 0 ug_per_mL) + toci_kd)",
     "dimensionless", "share of IL-6 receptors bound by tocilizumab"),
    ("il6_removal", "il6_clearance * (1 - il6_receptor_clearance * il6_receptor_occupancy)", "per_day",
     "IL-6 clearance left with tocilizumab"),
    ("il6_pos", "max(il6, 0 pg_per_mL)", "pg_per_mL", "serum IL-6, clipped at 0"),
    ("injury", _sum3("neurovascular_normal_{j} * kill_normal_{j}"), "per_day", "killing of neurovascular cells"),
    ("endothelial_x", "il6_pos / endothelial_half + injury / endothelial_injury_half", "dimensionless",
     "endothelial activation signal, x"),
    ("endothelial_drive", _h("endothelial_x", "1", "endothelial_hill") + " * dampen * il1", "dimensionless",
     "endothelial activation drive"),
]

#: state id -> d(state)/dt
RATES: dict[str, str] = {
    "ln_car_memory": "((rho_memory - k_differentiation) * stimulus + homeostatic - d_memory * car_survival - rejection"
                     f" + k_reversion * (1 - stimulus) * {_r('ln_car_effector', 'ln_car_memory')}) * alive_car",
    "ln_car_effector": (f"(k_differentiation * stimulus * {_r('ln_car_memory', 'ln_car_effector')}"
                        " + rho_effector * expansion * stimulus + homeostatic - d_effector * car_survival"
                        " - k_exhaustion * stimulus - k_reversion * (1 - stimulus) - rejection"
                        f" + rest * {_r('ln_car_exhausted', 'ln_car_effector')} - entering"
                        f" + solid * site_egress * {_r('ln_car_site', 'ln_car_effector')}"
                        f" + solid * first_pass_return * {_r('ln_car_lung_liver', 'ln_car_effector')}) * alive_car"),
    "ln_car_exhausted": (f"(k_exhaustion * stimulus * {_r('ln_car_effector', 'ln_car_exhausted')}"
                         " - d_exhausted - rejection - rest) * alive_car"),
    "ln_car_site": (f"solid * (entering * {_r('ln_car_effector', 'ln_car_site')}"
                    " + rho_effector * expansion * (1 - tme_proliferation) * site_stimulus + homeostatic"
                    " - d_effector * car_survival - k_exhaustion * (1 + tme_exhaustion) * site_stimulus"
                    " - rejection - site_egress) * alive_car"),
    "ln_car_lung_liver": "solid * (-first_pass_return - d_effector * car_survival - rejection) * alive_car",
    "ln_tumour_pos": "(growth - kill_tumour) * alive_tumour_pos",
    "ln_tumour_low": "(growth - kill_low) * alive_tumour_low",
    "ln_tumour_neg": "(growth - kill_negative) * alive_tumour_neg",
    **{f"ln_normal_{j}": f"normal_turnover_{j} * (normal_baseline_{j} / normal_{j} - 1) - kill_normal_{j}"
       for j in (1, 2, 3)},
    "ln_host_lymphocytes": (f"host_turnover * ({_r('ln(host_baseline / 1 cell)', 'ln_host_lymphocytes')} - 1"
                            " + (il15_drive - il15_drive_0) / il15_drive_0)"),
    "il15": "il15_elimination * il15_baseline + il15_secreted - (il15_elimination * (1 - il15_uptake_fraction)"
            " + il15_elimination * il15_uptake_fraction * consumers) * il15",
    "ifng": "ifng_secretion * dampen * engaged_cells / 1e10 cell - ifng_clearance * ifng",
    "macrophage_activation": "macrophage_on * myeloid_drive * il1 * (1 - macrophage_activation)"
                             " - macrophage_off * macrophage_activation",
    "macrophage_site": "solid * (macrophage_on * myeloid_drive_site * il1 * (1 - macrophage_site)"
                       " - macrophage_off * macrophage_site)",
    "myeloid_il6_output": "il6_synthesis_rate * (macrophage_activation - myeloid_il6_output)",
    "il6": "il6_clearance * (il6_baseline + il6_max * dampen * myeloid_il6_output + il6_from_tam * dampen)"
           " - il6_removal * il6",
    "endothelial_activation": "endothelial_on * endothelial_drive * (1 - endothelial_activation)"
                              " - endothelial_off * endothelial_activation",
    "tocilizumab": "-toci_elimination * tocilizumab",
    "corticosteroid": "-steroid_elimination * corticosteroid",
    "dasatinib": "-dasatinib_elimination * dasatinib",
    "anakinra": "-anakinra_elimination * anakinra",
}
assert set(RATES) == set(STATE_IDS)


# -- one patient --------------------------------------------------------------------------------
@dataclass
class PatientModel:
    """Everything the export writes for one patient: parameters, initial state, doses, provenance.

    ``params`` and ``y0`` are what carcell integrates from day 0 (after the extinction check
    carcell makes at infusion); ``infusions`` are the later doses as (day, log-cells per CAR
    state in ``CAR_STATES`` order).
    """

    patient: int
    scenario_name: str
    params: Params                                   # one row
    y0: np.ndarray                                   # (N_STATES,)
    infusions: list[tuple[float, np.ndarray]]
    covariates: dict[str, float]
    provenance: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    seed: int | None = None

    @property
    def values(self) -> dict[str, float]:
        return {name: float(v) for name, v in zip(PARAMETER_NAMES, self.params.values[0])}


def _load(source: Scenario | str | Path) -> Scenario:
    if isinstance(source, Scenario):
        return source
    from carcell.scenario import load_scenario  # noqa: PLC0415 - only for paths

    return load_scenario(source)


def _per_patient_notes(design: Design) -> dict[str, str]:
    """How the compiler makes the parameters that are not typical values (compile_chunk)."""
    notes = {
        "host_baseline": "physiology lymphocytes per kg x this patient's drawn body weight",
        "recognition_tumour": "logic gate over this patient's drawn antigen densities and shares (killing threshold)",
        "activation_tumour": "logic gate over this patient's drawn antigen densities and shares (activation threshold)",
        "recognition_low": "as recognition_tumour, for the antigen-low half of a heterogeneous solid tumour",
        "activation_low": "as activation_tumour, for the antigen-low half of a heterogeneous solid tumour",
        "alive_car": "1: CAR cells alive at infusion (carcell sets it to 0 at a clinical round below one cell; "
                     "not exported)",
        "alive_tumour_pos": "1 when part of the tumour is recognised at infusion",
        "alive_tumour_low": "1 when a solid tumour is split into antigen-high and antigen-low clones",
        "alive_tumour_neg": "1 when part of the tumour escapes recognition at infusion",
    }
    if design.site is not None:
        notes["traffic_per_tumour_cell"] = ("solid site trafficking / (tumour cells per mL x this patient's "
                                            "body weight): delivery follows the tumour's share of body mass")
        for name in design.site.weights:
            notes[name] = "share of the site's microenvironment suppression drawn for this patient"
        notes["tumour_growth_rate"] = "typical growth rate x this patient's drawn solid-tumour growth factor"
    if design.inflammation_correlation != 0.0:
        notes["il6_max"] = (f"its draw z is correlated ({design.inflammation_correlation:g}, indications."
                            f"{design.disease}.patients.inflammation_correlation) with the patient's CAR expansion "
                            "potential: host inflammation")
    for j in (1, 2, 3):
        if j <= len(design.tissues):
            t = design.tissues[j - 1]
            k = design.knowledge.entry(f"tissues.{t.name}.cells_per_kg")
            notes[f"normal_baseline_{j}"] = f"{t.name}: tissues.{t.name}.cells_per_kg [{k.source}] x body weight"
            for what in ("normal_turnover", "recognition_normal", "activation_normal", "neurovascular_normal"):
                notes[f"{what}_{j}"] = f"normal tissue {j}: {t.name} ({', '.join(t.antigens)}), from the design"
        else:
            for what in ("normal_baseline", "normal_turnover", "recognition_normal", "activation_normal",
                         "neurovascular_normal"):
                notes[f"{what}_{j}"] = f"normal tissue slot {j} unused: one cell that nobody recognises"
    return notes


def _provenance(design: Design) -> tuple[dict[str, str], dict[str, str]]:
    """Per parameter: a derivation text and its sources (the design ledger, `carcell design explain`)."""
    text, sources = {}, {}
    rows = {r["parameter"]: r for r in design.ledger.rows()}
    for name in PARAMETER_NAMES:
        if name in rows:
            r = rows[name]
            text[name] = f"typical value {r['value']:.6g} {r['unit']} = {r['derivation']}"
            if r["notes"]:
                text[name] += f" | notes: {r['notes']}"
            sources[name] = str(r["sources"])
        omega = design.variability.get(name, 0.0)
        if omega > 0:
            text[name] = text.get(name, "") + (f" | varies between patients: typical x exp({omega:g} z), "
                                               f"z this patient's standard normal draw")
    for name, how in _per_patient_notes(design).items():
        text[name] = (text[name] + " | per patient: " + how) if name in text else how
    return text, sources


def patient_model(source: Scenario | str | Path | CompiledCohort, patient: int, *,
                  design: Design | None = None) -> PatientModel:
    """Parameters, initial state and later doses of one patient of a scenario.

    Parameters
    ----------
    source : Scenario, path of a scenario file, or CompiledCohort
        A scenario (patient ``patient`` is drawn as ``carcell run`` draws it: from the seed and
        the id only), or an already compiled cohort (``patient`` is then its row; pass the
        ``design`` it was compiled from for provenance and later infusions).
    patient : int
        Patient id (0 .. population.n - 1) or row of the compiled cohort.

    Raises
    ------
    ExportError
        Unknown patient, or a scenario with randomised trial arms (export one arm's scenario).
    """
    from carcell.cohort.run import later_infusions, scenario_design  # noqa: PLC0415 - cohort sits above model
    from carcell.knowledge import load_knowledge  # noqa: PLC0415
    from carcell.solve.rounds import apply_extinction  # noqa: PLC0415

    if isinstance(patient, bool) or not isinstance(patient, (int, np.integer)) or patient < 0:
        raise ExportError(f"patient {patient!r}: give a patient id, an integer >= 0")
    patient = int(patient)
    if isinstance(source, CompiledCohort):
        c, name, seed = source, (design.scenario.name if design is not None else "compiled cohort"), None
        if patient >= len(c.params):
            raise ExportError(f"patient {patient}: the compiled cohort has {len(c.params)} patients "
                              f"(rows 0..{len(c.params) - 1})")
        row = patient
        if design is not None:
            seed = design.scenario.population.seed
    else:
        scenario = _load(source)
        if scenario.trial.arms:
            raise ExportError(f"{scenario.name}: trial.arms randomises patients between products; export one "
                              "arm: write its product and regimen in a scenario without trial.arms")
        n = scenario.population.n
        if patient >= n:
            raise ExportError(f"patient {patient}: the scenario has population.n = {n} (ids 0..{n - 1}); "
                              f"choose one of them or raise population.n")
        design, compile_ = scenario_design(scenario, load_knowledge())
        c = compile_(design, patient, patient + 1, ids=np.array([patient]))
        name, seed, row = scenario.name, scenario.population.seed, 0
    values = c.params.values[row:row + 1].copy()
    y0 = c.y0[row:row + 1].copy()
    apply_extinction(y0, values)     # what simulate_batch does before the first step
    infusions = []
    if design is not None:
        infusions = [(float(day), add[row].copy()) for day, add in later_infusions(design, c)]
    covariates = {k: float(v) for k, v in c.covariates.iloc[row].items()
                  if isinstance(v, (int, float, np.integer, np.floating)) and k != "patient_id"}
    text, sources = _provenance(design) if design is not None else ({}, {})
    pid = int(c.covariates["patient_id"].iat[row]) if "patient_id" in c.covariates else patient
    return PatientModel(pid, name, Params(values), y0[0], infusions, covariates, text, sources, seed)


# -- the SBML document --------------------------------------------------------------------------
def _libsbml():
    try:
        import libsbml  # noqa: PLC0415 - optional extra
    except ImportError:
        raise CarcellError("python-libsbml is not installed; install the sbml extra: pip install -e '.[sbml]'") from None
    return libsbml


def _check(code: int, what: str) -> None:
    libsbml = _libsbml()

    if code != libsbml.LIBSBML_OPERATION_SUCCESS:
        raise ExportError(f"libsbml refused {what}: {libsbml.OperationReturnValue_toString(code)}")


def _math(formula: str, what: str):
    libsbml = _libsbml()

    ast = libsbml.parseL3Formula(formula)
    if ast is None:
        raise ExportError(f"internal formula of {what} does not parse: {libsbml.getLastParseL3Error()}")
    _dimensionless_literals(ast)
    return ast


def _dimensionless_literals(node) -> None:
    """Give every literal number without a unit the unit dimensionless (1, 60, 1e-300...), so
    libsbml checks the units of every expression fully instead of giving up on it."""
    if node.isNumber() and not node.hasUnits():
        node.setUnits("dimensionless")
    for i in range(node.getNumChildren()):
        _dimensionless_literals(node.getChild(i))


def _notes(lines: list[str]) -> str:
    body = "".join(f"<p>{html.escape(line, quote=False)}</p>" for line in lines)
    return f'<body xmlns="http://www.w3.org/1999/xhtml">{body}</body>'


def _scope_notes(pm: PatientModel) -> list[str]:
    from carcell import __version__  # noqa: PLC0415

    lines = [
        f"carcell {__version__} mechanistic model, scenario '{pm.scenario_name}', patient {pm.patient}"
        + (f" (population seed {pm.seed})" if pm.seed is not None else "") + ".",
        "Time in days. Cell populations are integrated as natural logs of whole-body counts: ln_X is "
        "dimensionless (the log of the count in cells) with d ln_X/dt in 1/day; X = exp(ln_X) cells is an "
        "assignment rule. Cytokines in pg/mL of serum, tocilizumab in ug/mL, corticosteroid (dexamethasone-"
        "equivalent) and anakinra in mg, dasatinib in nM, activation fractions dimensionless.",
        "Exported: the autonomous model between clinical events (carcell/model/rhs.py, docs/model.md, "
        "docs/solid.md) and the later infusions of the regimen as events.",
        "Not exported: toxicity management at the twice-daily assessments, prophylaxis included (drug doses: "
        "the drug states only decay here), extinction of populations below one cell at the clinical rounds (the alive_* flags are "
        "this patient's flags at infusion, held constant), response assessment and clinical read-outs.",
        "Compared with carcell's own solver over days 0-28 without clinical events: see docs/sbml-export.md.",
    ]
    if pm.covariates:
        lines.append("Patient: " + ", ".join(f"{k} = {v:.6g}" for k, v in pm.covariates.items()) + ".")
    return lines


def _annotation(attrs: dict[str, object], tag: str) -> str:
    body = " ".join(f'{k}="{html.escape(str(v), quote=True)}"' for k, v in attrs.items())
    return f'<carcell:{tag} xmlns:carcell="{ANNOTATION_NS}" {body}/>'


def build_sbml(pm: PatientModel, *, check: bool = True) -> str:
    """The SBML L3V2 text of one patient's model (see the module docstring for its layout).

    With ``check`` (the default), libsbml's consistency checks run on the text and any error
    raises :class:`ExportError`; they take most of the time of an export.
    """
    from carcell import __version__  # noqa: PLC0415

    libsbml = _libsbml()
    doc = libsbml.SBMLDocument(3, 2)
    model = doc.createModel()
    mid = f"carcell_patient_{pm.patient}"
    _check(model.setId(mid), "the model id")
    model.setName(f"carcell: {pm.scenario_name}, patient {pm.patient}")
    _check(model.setTimeUnits("day"), "the time unit")
    _check(model.setNotes(_notes(_scope_notes(pm))), "the model notes")
    _check(model.setAnnotation(_annotation(
        {"version": __version__, "scenario": pm.scenario_name, "patient": pm.patient,
         "seed": "" if pm.seed is None else pm.seed}, "export")), "the model annotation")
    for uid, parts in UNIT_DEFINITIONS.items():
        ud = model.createUnitDefinition()
        ud.setId(uid)
        for kind, exponent, scale, multiplier in parts:
            u = ud.createUnit()
            u.setKind(libsbml.UnitKind_forName(kind))
            u.setExponent(exponent)
            u.setScale(scale)
            u.setMultiplier(multiplier)
    comp = model.createCompartment()
    comp.setId("body")
    comp.setName("whole body, well mixed (no species live in it: states are rate-rule parameters)")
    comp.setConstant(True)
    comp.setSpatialDimensions(3)
    comp.setSize(1.0)
    comp.setUnits("litre")

    values = pm.values
    for name in PARAMETER_NAMES:
        par = model.createParameter()
        par.setId(name)
        par.setConstant(True)
        par.setValue(values[name])
        par.setUnits(_SBML_UNIT[PARAMETER_UNITS[name]])
        if name in pm.provenance:
            _check(par.setNotes(_notes([pm.provenance[name]])), f"the notes of {name}")
            par.setMetaId(f"meta_{name}")
            _check(par.setAnnotation(_annotation({"sources": pm.sources.get(name, "")}, "provenance")),
                   f"the annotation of {name}")
    for name, sid, value in zip(STATE_NAMES, STATE_IDS, pm.y0):
        par = model.createParameter()
        par.setId(sid)
        par.setConstant(False)
        par.setValue(float(value))
        par.setUnits(STATE_UNITS[name])
        par.setName(STATES[INDEX[name]][3] + (" (natural log of the count in cells)" if sid != name else ""))
    for rid, _, unit, meaning in ASSIGNMENTS:
        par = model.createParameter()
        par.setId(rid)
        par.setConstant(False)
        par.setUnits(unit)
        par.setName(meaning)
    for rid, formula, _, _ in ASSIGNMENTS:
        rule = model.createAssignmentRule()
        rule.setVariable(rid)
        _check(rule.setMath(_math(formula, rid)), f"the rule of {rid}")
    for sid in STATE_IDS:
        formula = RATES[sid]
        rule = model.createRateRule()
        rule.setVariable(sid)
        _check(rule.setMath(_math(formula, f"d{sid}/dt")), f"the rate rule of {sid}")
    _add_infusions(model, pm)
    text = libsbml.writeSBMLToString(doc)
    if not check:
        return text
    errors = [m for m in sbml_diagnostics(text) if m[0] == "error"]
    if errors:
        raise ExportError(f"the exported SBML fails libsbml's checks ({len(errors)} errors), first: {errors[0][2]}")
    return text


def _add_infusions(model, pm: PatientModel) -> None:
    """Each later dose adds log-cells to the CAR states at its day: ln X <- ln(exp(ln X) + dose)."""
    for k, (day, add) in enumerate(pm.infusions, start=1):
        for state, ln_dose in zip(CAR_STATES, add):
            par = model.createParameter()
            par.setId(f"dose{k}_ln_{state}")
            par.setConstant(True)
            par.setValue(float(ln_dose))
            par.setUnits("dimensionless")
            par.setName(f"infusion {k + 1} (day {day:g}): natural log of the cells it adds to {state}")
        ev = model.createEvent()
        ev.setId(f"infusion_{k + 1}")
        ev.setName(f"infusion {k + 1} on day {day:g}")
        ev.setUseValuesFromTriggerTime(True)
        trig = ev.createTrigger()
        trig.setInitialValue(False)
        trig.setPersistent(True)
        _check(trig.setMath(_math(f"time >= {day!r} day", f"infusion {k + 1}")), "an infusion trigger")
        for state in CAR_STATES:
            sid = state_id(state)
            ea = ev.createEventAssignment()
            ea.setVariable(sid)
            _check(ea.setMath(_math(f"ln(exp({sid}) + exp(dose{k}_ln_{state}))", sid)), f"the dose of {sid}")


def sbml_diagnostics(sbml: str) -> list[tuple[str, str, str]]:
    """libsbml's consistency checks (units included): (severity, category, message) per finding."""
    libsbml = _libsbml()

    doc = libsbml.readSBMLFromString(sbml)
    doc.checkConsistency()
    out = []
    for i in range(doc.getNumErrors()):
        e = doc.getError(i)
        severity = "error" if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR else (
            "warning" if e.getSeverity() == libsbml.LIBSBML_SEV_WARNING else "info")
        out.append((severity, e.getCategoryAsString(), e.getMessage().strip().replace("\n", " ")))
    return out


def export_patient(source: Scenario | str | Path | CompiledCohort, patient: int, *,
                   design: Design | None = None) -> str:
    """One patient's model as SBML Level 3 Version 2 text.

    Parameters
    ----------
    source : Scenario, path of a scenario file, or CompiledCohort
        See :func:`patient_model`.
    patient : int
        Patient id (or row of a compiled cohort).
    design : Design, optional
        With a compiled cohort: the design it came from (provenance, later infusions).

    Returns
    -------
    str
        SBML L3V2 with zero libsbml consistency errors (warnings: :func:`sbml_diagnostics`).

    Examples
    --------
    >>> from carcell.interop.sbml_export import export_patient
    >>> text = export_patient("examples/axicel_lbcl.yaml", 3)   # doctest: +SKIP
    """
    return build_sbml(patient_model(source, patient, design=design))


assert len(STATE_IDS) == N_STATES
