"""Compile a scenario into typical values, then into per-patient parameters and initial states.

Two steps:

1. :func:`resolve_design` reads every number the scenario needs from the knowledge base
   (recording its source) and applies the scenario's choices: costimulation multipliers,
   binder affinity, lymphodepletion, disease. The result is a :class:`Design` of typical values.
2. :func:`compile_chunk` draws patients ``start..stop`` from the design. Patient ``i`` draws
   from its own random stream (``SeedSequence(seed, spawn_key=(i,))``), so a patient's
   numbers do not depend on how the cohort is cut into chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carcell.knowledge import Knowledge
from carcell.model.rhs import il15_drive_at_baseline
from carcell.model.states import INDEX, LOG_EXTINCT, N_STATES, PARAM_INDEX, PARAMETER_NAMES, Params
from carcell.scenario.schema import Scenario
from carcell.units import UL_PER_ML

# Model parameters that are read straight from car_t.yaml (then scaled by costimulation).
_CAR_KINETICS = (
    "rho_effector", "rho_memory", "k_differentiation", "k_reversion", "k_exhaustion",
    "d_effector", "d_memory", "d_exhausted", "rho_il15", "il15_half_saturation",
    "antigen_half_stimulation", "stimulus_hill", "k_kill", "effector_half_kill", "serial_kill_max", "ifng_secretion",
)
_PHYSIOLOGY = {
    "host_turnover": "physiology.host.lymphocyte_turnover",
    "il15_baseline": "physiology.il15.baseline",
    "il15_elimination": "physiology.il15.elimination",
    "il15_uptake_fraction": "physiology.il15.uptake_fraction",
    "ifng_clearance": "physiology.ifng.clearance",
    "macrophage_on": "physiology.myeloid.activation_rate",
    "macrophage_off": "physiology.myeloid.deactivation_rate",
    "ifng_half_activation": "physiology.myeloid.ifng_half_activation",
    "damp_weight": "physiology.myeloid.damp_weight",
    "damp_half_activation": "physiology.myeloid.damp_half_activation",
    "myeloid_hill": "physiology.myeloid.activation_hill",
    "il6_baseline": "physiology.il6.baseline",
    "il6_max": "physiology.il6.max_from_myeloid",
    "il6_clearance": "physiology.il6.clearance",
}


def recognition(density: np.ndarray | float, half_density: float, hill: float) -> np.ndarray:
    """Share of maximal CAR signal at a given antigen density (Hill function)."""
    d = np.asarray(density, dtype=float) ** hill
    return d / (d + half_density**hill)


@dataclass
class Design:
    """Typical values of one scenario, before inter-individual variability."""

    scenario: Scenario
    disease: str
    antigen: str
    response_criteria: str
    typical: dict[str, float]            # model parameters that do not depend on the patient
    per_kg: dict[str, float]             # normal_baseline, host_baseline per kg
    weight: tuple[float, float]          # median, log-sd
    age: tuple[float, float]
    burden: tuple[float, float]
    density: tuple[float, float]
    antigen_negative_fraction: tuple[float, float]  # median, log-sd
    recognition_half_density: float
    recognition_hill: float
    normal_density: float
    host_survival: float
    memory_fraction: float
    exhausted_fraction: float
    variability: dict[str, float]
    response: dict[str, object]
    conversion: dict[str, float]
    knowledge: Knowledge = field(repr=False)


def _lognormal(k: Knowledge, path: str, override) -> tuple[float, float]:
    median, log_sd = k.value(path)
    if override is not None:
        median = override.median if override.median is not None else median
        log_sd = override.log_sd if override.log_sd is not None else log_sd
    return float(median), float(log_sd)


def resolve_design(scenario: Scenario, k: Knowledge) -> Design:
    """Typical parameter values of a scenario, each read (and recorded) from the knowledge base."""
    ind = scenario.indication
    car = scenario.product.car
    ip = f"indications.{ind.disease}"
    antigen = car.target or k.text(f"{ip}.antigen")
    ap = f"antigens.{antigen}"
    cp = f"costim.{car.costim}"

    typical: dict[str, float] = {}
    for name in _CAR_KINETICS:
        typical[name] = float(k.value(f"car_t.kinetics.{name}"))
    for name, node in k.node(f"{cp}.multipliers").items():
        typical[name] *= float(k.value(f"{cp}.multipliers.{name}"))
    for name, path in _PHYSIOLOGY.items():
        typical[name] = float(k.value(path))
    typical["tumour_growth_rate"] = float(k.value(f"{ip}.tumour.growth_rate"))
    typical["tumour_capacity"] = float(k.value(f"{ip}.tumour.capacity"))
    normal_cells = k.text(f"{ap}.normal_cells")
    typical["normal_turnover"] = float(k.value(f"physiology.{normal_cells}.turnover"))

    # Antigen recognition: the half-recognition density of the antigen's reference binder,
    # shifted by costimulation (CD28 lowers the threshold) and by binder affinity.
    kd_ref = float(k.value(f"{ap}.reference_kd_nm"))
    kd = car.binder.kd_nm if car.binder.kd_nm is not None else kd_ref
    half = (
        float(k.value(f"{ap}.recognition_half_density"))
        * float(k.value(f"{cp}.antigen_threshold_multiplier"))
        * (kd / kd_ref) ** float(k.value("car_t.binding.affinity_threshold_exponent"))
    )

    if ind.antigen_negative_fraction is None:
        neg = _lognormal(k, f"{ip}.tumour.antigen_negative_fraction", None)
    else:
        neg = (float(ind.antigen_negative_fraction), 0.0)
    memory_fraction = scenario.product.memory_fraction
    if memory_fraction is None:
        memory_fraction = float(k.value(f"{cp}.memory_fraction"))

    variability = {
        name: float(k.value(f"car_t.variability.{name}")) for name in k.names("car_t.variability")
    }
    variability.update(scenario.population.variability)

    criteria = k.text(f"{ip}.response_criteria")
    response = {}
    for name in k.names(f"{ip}.response"):
        response[name] = k.value(f"{ip}.response.{name}")
    if criteria == "marrow_blasts":
        response["marrow_cells"] = k.value(f"{ip}.tumour.marrow_cells")

    conversion = {
        "blood_ml_per_kg": float(k.value("physiology.blood.volume_per_kg")),
        "lymphocyte_blood_fraction": float(k.value("physiology.blood.lymphocyte_fraction_in_blood")),
        "non_lymphoid_per_ul": float(k.value("physiology.blood.non_lymphoid_leukocytes")),
        "cells_per_ug": float(k.value("physiology.blood.dna_per_diploid_cell_cells_per_ug")),
        "vcn": float(k.value("car_t.product.vector_copies_per_cell")),
    }
    return Design(
        scenario=scenario,
        disease=ind.disease,
        antigen=antigen,
        response_criteria=criteria,
        typical=typical,
        per_kg={
            "normal_baseline": float(k.value(f"physiology.{normal_cells}.per_kg")),
            "host_baseline": float(k.value("physiology.host.lymphocytes_per_kg")),
        },
        weight=_lognormal(k, f"{ip}.patients.weight_kg", scenario.population.covariates.weight_kg),
        age=_lognormal(k, f"{ip}.patients.age_years", scenario.population.covariates.age_years),
        burden=_lognormal(k, f"{ip}.tumour.baseline_burden", ind.baseline_burden),
        density=_lognormal(k, f"{ip}.tumour.antigen_density", ind.antigen_density),
        antigen_negative_fraction=neg,
        recognition_half_density=half,
        recognition_hill=float(k.value(f"{ap}.recognition_hill")),
        normal_density=float(k.value(f"{ap}.normal_density")),
        host_survival=float(k.value(f"regimens.lymphodepletion.{scenario.regimen.lymphodepletion}.host_survival")),
        memory_fraction=float(memory_fraction),
        exhausted_fraction=float(k.value("car_t.product.exhausted_fraction")),
        variability=variability,
        response=response,
        conversion=conversion,
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


def compile_chunk(design: Design, start: int, stop: int) -> CompiledCohort:
    """Draw patients ``start..stop`` (0-based) and build their parameters and initial states."""
    sc = design.scenario
    n = stop - start
    omega_names = sorted(design.variability)
    draws = np.empty((n, 5 + len(omega_names)))
    for row, i in enumerate(range(start, stop)):
        draws[row] = patient_rng(sc.population.seed, i).standard_normal(draws.shape[1])
    z_weight, z_age, z_burden, z_density = draws[:, 0], draws[:, 1], draws[:, 2], draws[:, 3]
    weight = design.weight[0] * np.exp(design.weight[1] * z_weight)
    age = design.age[0] * np.exp(design.age[1] * z_age)
    burden = design.burden[0] * np.exp(design.burden[1] * z_burden)
    density = design.density[0] * np.exp(design.density[1] * z_density)
    neg = np.minimum(1.0, design.antigen_negative_fraction[0]
                     * np.exp(design.antigen_negative_fraction[1] * draws[:, 4]))

    values = np.zeros((n, len(PARAMETER_NAMES)))
    for name, v in design.typical.items():
        values[:, PARAM_INDEX[name]] = v
    for j, name in enumerate(omega_names):
        values[:, PARAM_INDEX[name]] *= np.exp(design.variability[name] * draws[:, 5 + j])
    values[:, PARAM_INDEX["normal_baseline"]] = design.per_kg["normal_baseline"] * weight
    values[:, PARAM_INDEX["host_baseline"]] = design.per_kg["host_baseline"] * weight
    values[:, PARAM_INDEX["recognition_tumour"]] = recognition(
        density, design.recognition_half_density, design.recognition_hill)
    values[:, PARAM_INDEX["recognition_normal"]] = recognition(
        design.normal_density, design.recognition_half_density, design.recognition_hill)
    values[:, PARAM_INDEX["alive_car"]] = 1.0
    values[:, PARAM_INDEX["alive_tumour_pos"]] = (neg < 1).astype(float)
    values[:, PARAM_INDEX["alive_tumour_neg"]] = (neg > 0).astype(float)
    p = Params(values)

    dose = sc.product.dose
    cells = dose.cells * np.ones(n) if dose.cells is not None else dose.cells_per_kg * weight
    y0 = np.zeros((n, N_STATES))
    fx = design.exhausted_fraction
    fm = design.memory_fraction * (1 - fx)
    y0[:, INDEX["car_memory"]] = np.log(cells * fm) if fm > 0 else LOG_EXTINCT
    y0[:, INDEX["car_effector"]] = np.log(cells * (1 - fm - fx))
    y0[:, INDEX["car_exhausted"]] = np.log(cells * fx) if fx > 0 else LOG_EXTINCT
    with np.errstate(divide="ignore"):
        y0[:, INDEX["tumour_pos"]] = np.where(neg < 1, np.log(burden * (1 - neg)), LOG_EXTINCT)
        y0[:, INDEX["tumour_neg"]] = np.where(neg > 0, np.log(burden * neg), LOG_EXTINCT)
    y0 = np.maximum(y0, LOG_EXTINCT)
    y0[:, INDEX["normal_pos"]] = np.log(p.normal_baseline)
    host0 = p.host_baseline * design.host_survival
    y0[:, INDEX["host_lymphocytes"]] = np.log(host0)
    # IL-15 at infusion: the quasi-steady level for the depleted lymphocyte compartment
    # (lymphodepletion ends about 3 days before infusion, several IL-15 half-lives).
    consumers = (host0 + cells * (1 - fx)) / p.host_baseline
    k_el, f_up = p.il15_elimination, p.il15_uptake_fraction
    y0[:, INDEX["il15"]] = k_el * p.il15_baseline / (k_el * (1 - f_up) + k_el * f_up * consumers)
    y0[:, INDEX["ifng"]] = 0.0
    y0[:, INDEX["macrophage_activation"]] = 0.0
    y0[:, INDEX["il6"]] = p.il6_baseline
    assert np.all(il15_drive_at_baseline(p) > 0)

    cov = pd.DataFrame({
        "patient_id": np.arange(start, stop, dtype=np.int64),
        "weight_kg": weight,
        "age_years": age,
        "baseline_burden_cells": burden,
        "antigen_density": density,
        "antigen_negative_fraction": neg,
        "dose_cells": cells,
        "blood_volume_ul": weight * design.conversion["blood_ml_per_kg"] * UL_PER_ML,
    })
    return CompiledCohort(covariates=cov, params=p, y0=y0)
