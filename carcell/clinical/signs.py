"""What a clinician sees at the bedside of a simulated patient, from the model's states.

At every assessment the simulated patient gets the same observation row a nurse would record
for a real one (temperature, hypotension and vasopressors, oxygen device, ICE score,
consciousness, seizures, drugs given), and is then graded by the same code
(:mod:`carcell.clinical.grading`). The mapping (``knowledge/data/toxicity.yaml``):

- IL-6 *signalling*, serum IL-6 times the share of IL-6 receptors not blocked by
  tocilizumab, drives temperature (a Hill curve over 37 degC) and, with endothelial
  activation, a vascular-leak index (0-1). The endothelium's part is not blocked by
  tocilizumab, so hypotension and hypoxia can outlast it. The leak index crosses fixed levels
  for hypotension needing fluids, one vasopressor and several; hypoxia follows the same index a
  little later: low-flow cannula, high-flow oxygen, positive pressure.
- Endothelial activation drives encephalopathy (0-1): the ICE score falls from 10 as it
  rises, consciousness is depressed at higher levels, seizures and cerebral oedema at the top.
- Each patient has their own thresholds (``fever_il6_half``, ``leak_il6_half``,
  ``icans_half``: susceptibility, drawn with the other parameters).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.clinical.observations import COLUMNS
from carcell.errors import KnowledgeError
from carcell.knowledge import Knowledge
from carcell.model.rhs import il6_receptor_occupancy
from carcell.model.states import INDEX, Params

_CONSCIOUSNESS = np.array(["alert", "awakens_spontaneously", "awakens_to_voice", "awakens_to_tactile", "unarousable"])


@dataclass(frozen=True)
class SignModel:
    baseline_c: float
    fever_rise: float
    leak_hill: float
    leak_endothelial_half: float
    leak_levels: tuple[float, float, float]
    several_vasopressors_level: float
    hypoxia_offset: float
    icans_hill: float
    consciousness_levels: tuple[float, float, float, float]
    seizure_level: float
    oedema_level: float

    @classmethod
    def from_knowledge(cls, k: Knowledge) -> SignModel:
        s = "toxicity.signs"
        levels = k.value(f"{s}.leak_levels")
        several = float(k.value(f"{s}.several_vasopressors_level"))
        if len(levels) != 3 or not 0 < levels[0] < levels[1] < several <= 1 or not levels[1] < levels[2] <= 1:
            raise KnowledgeError(
                f"{s}.leak_levels {list(levels)} and {s}.several_vasopressors_level {several}: give three "
                "rising levels in (0, 1] (fluids, one vasopressor, positive pressure) and a "
                "several-vasopressor level above the one-vasopressor level")
        return cls(
            baseline_c=float(k.value(f"{s}.baseline_temperature")),
            fever_rise=float(k.value(f"{s}.fever_max_rise")),
            leak_hill=float(k.value(f"{s}.leak_hill")),
            leak_endothelial_half=float(k.value(f"{s}.leak_endothelial_half")),
            leak_levels=tuple(float(v) for v in levels),
            several_vasopressors_level=several,
            hypoxia_offset=float(k.value(f"{s}.hypoxia_offset")),
            icans_hill=float(k.value(f"{s}.icans_hill")),
            consciousness_levels=tuple(float(v) for v in k.value(f"{s}.consciousness_levels")),
            seizure_level=float(k.value(f"{s}.seizure_level")),
            oedema_level=float(k.value(f"{s}.oedema_level")))


def _hill(x: np.ndarray, half: np.ndarray, n: float) -> np.ndarray:
    r = (np.maximum(x, 0.0) / half) ** n
    return r / (1.0 + r)


def observe(model: SignModel, y: np.ndarray, p: Params, patient_ids: np.ndarray, day: float,
            age_years: np.ndarray) -> pd.DataFrame:
    """One observation row per patient from states ``y`` (n, N_STATES) at ``day``.

    Drug columns (tocilizumab, corticosteroid...) are left False here; the management loop
    fills in what it gave since the last assessment.
    """
    il6 = np.maximum(y[:, INDEX["il6"]], 0.0)
    signal = il6 * (1.0 - il6_receptor_occupancy(y, p))
    temperature = model.baseline_c + model.fever_rise * _hill(signal, p.fever_il6_half, 2.0)
    endothelium = np.maximum(y[:, INDEX["endothelial_activation"]], 0.0)
    leak = _hill(signal / p.leak_il6_half + endothelium / model.leak_endothelial_half, 1.0, model.leak_hill)
    l0, l1, l3 = model.leak_levels
    l2 = model.several_vasopressors_level
    off = model.hypoxia_offset
    vasopressors = np.select([leak >= l2, leak >= l1], [2, 1], 0)
    device = np.select([leak >= l3, leak >= l1 + off, leak >= l0 + off],
                       ["bipap", "high_flow_nasal_cannula", "nasal_cannula"], "none")
    flow = np.select([device == "high_flow_nasal_cannula", device == "nasal_cannula"], [30.0, 3.0], np.nan)
    enceph = _hill(y[:, INDEX["endothelial_activation"]], p.icans_half, model.icans_hill)
    levels = np.searchsorted(np.array(model.consciousness_levels), enceph, side="right")
    unarousable = levels >= 4
    ice = np.where(unarousable, -1, np.round(10.0 * (1.0 - enceph))).astype(int)   # 10 until 5% encephalopathy
    n = len(patient_ids)
    dtypes = {"bool": bool, "int": int, "float": float, "choice": object, "text": object}
    data = {name: np.full(n, np.nan if col.default is None else col.default, dtype=dtypes[col.kind])
            for name, col in COLUMNS.items()}
    data.update({
        "patient": patient_ids.astype(str), "day": np.full(n, float(day)), "age_years": age_years,
        "temperature_c": temperature, "hypotension": leak >= l0, "vasopressors": vasopressors,
        "oxygen_device": device, "oxygen_flow_l_min": flow, "ice_score": ice,
        # CAPD on the same severity scale as ICE: >= 9 (grade 3) where ICE falls to 2 or less
        "capd_score": np.where(unarousable, -1, np.clip(np.floor(12 * enceph + 1e-9).astype(int), 0, 32)),
        "unable_to_perform_assessment": unarousable, "consciousness": _CONSCIOUSNESS[levels],
        "seizure": np.where(enceph >= model.seizure_level, "rapidly_resolving", "none"),
        "cerebral_oedema": np.where(enceph >= model.oedema_level, "diffuse", "none"),
    })
    return pd.DataFrame(data)
