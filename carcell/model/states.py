"""The state vector of one patient and the parameter names the right-hand side reads.

Cell populations are integrated as natural logarithms of whole-body counts: counts span about
12 orders of magnitude (one residual leukaemic cell to 1e12 blasts) and log space keeps them
positive. Cytokines and the macrophage activation fraction are integrated in their own units.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: (name, unit, is_log_cells, description)
STATES: tuple[tuple[str, str, bool, str], ...] = (
    ("car_memory", "cells", True, "CAR T cells, memory/stem-like phenotype"),
    ("car_effector", "cells", True, "CAR T cells, effector phenotype (kill, secrete, expand)"),
    ("car_exhausted", "cells", True, "CAR T cells, exhausted (no killing or proliferation)"),
    ("tumour_pos", "cells", True, "tumour cells carrying the target antigen"),
    ("tumour_neg", "cells", True, "tumour cells without the target antigen (escape clone)"),
    ("normal_1", "cells", True, "first normal tissue carrying a target antigen (e.g. B cells)"),
    ("normal_2", "cells", True, "second normal tissue carrying a target antigen (unused: 1 cell)"),
    ("normal_3", "cells", True, "third normal tissue carrying a target antigen (unused: 1 cell)"),
    ("host_lymphocytes", "cells", True, "host (non-CAR) lymphocytes"),
    ("il15", "pg/mL", False, "serum IL-15"),
    ("ifng", "pg/mL", False, "serum IFN-gamma"),
    ("macrophage_activation", "1", False, "fraction of myeloid cells activated (0-1)"),
    ("il6", "pg/mL", False, "serum IL-6"),
    ("endothelial_activation", "1", False, "fraction of endothelium activated (0-1), drives ICANS"),
    ("tocilizumab", "ug/mL", False, "serum tocilizumab"),
    ("corticosteroid", "mg", False, "corticosteroid in its effect compartment, dexamethasone-equivalent"),
    ("dasatinib", "nM", False, "plasma dasatinib"),
    ("anakinra", "mg", False, "anakinra (IL-1 receptor antagonist) in the body"),
    ("car_site", "cells", True, "CAR effector cells inside a solid tumour (unused in haematological disease)"),
    ("tumour_low", "cells", True, "antigen-low tumour cells (solid tumours with heterogeneous antigen)"),
    ("car_lung_liver", "cells", True, "CAR effectors held in lung and liver after an infusion into blood "
     "(first pass; solid tumours)"),
    ("macrophage_site", "1", False, "fraction of tumour-associated macrophages activated (0-1; solid tumours)"),
    ("myeloid_il6_output", "1", False, "IL-6 secretion of the body's myeloid cells, as a fraction of all of them "
     "activated: follows activation with the hours IL-6 synthesis takes"),
)

STATE_NAMES: tuple[str, ...] = tuple(s[0] for s in STATES)
#: the CAR-cell states, in the order doses and extinction use them (circulating, in a tumour,
#: held in lung and liver)
CAR_STATES: tuple[str, ...] = ("car_memory", "car_effector", "car_exhausted", "car_site", "car_lung_liver")
N_STATES = len(STATES)
IS_LOG = tuple(s[2] for s in STATES)
INDEX = {name: i for i, name in enumerate(STATE_NAMES)}

#: normal-tissue compartments; the design decides which tissue each one holds
NORMAL_SLOTS = 3
NORMAL_STATES = tuple(f"normal_{j}" for j in range(1, NORMAL_SLOTS + 1))

#: value written into a log-cell state once the population is extinct (fewer than one cell)
LOG_EXTINCT = -50.0

#: Names of every per-patient parameter the right-hand side and the clinical layer read.
PARAMETER_NAMES: tuple[str, ...] = (
    # CAR T-cell phenotype kinetics (1/day unless noted)
    "rho_effector", "rho_memory", "k_differentiation", "k_reversion", "k_exhaustion",
    "d_effector", "d_memory", "d_exhausted", "rho_il15", "il15_half_saturation",
    "antigen_half_stimulation", "stimulus_hill", "k_kill", "effector_half_kill", "serial_kill_max",
    # recognition (0-1) of each target through the construct's logic gate: for killing, and
    # for activation (proliferation, cytokines), which needs about 10x more antigen
    "recognition_tumour", "activation_tumour",
    *(f"recognition_normal_{j}" for j in range(1, 4)),
    *(f"activation_normal_{j}" for j in range(1, 4)),
    # 1 where the normal tissue is part of the neurovascular unit (its killing adds to ICANS)
    *(f"neurovascular_normal_{j}" for j in range(1, 4)),
    # tumour
    "tumour_growth_rate", "tumour_capacity",
    # normal tissues carrying a target antigen (cells, 1/day)
    *(f"normal_baseline_{j}" for j in range(1, 4)),
    *(f"normal_turnover_{j}" for j in range(1, 4)),
    # armour: IL-15 signal (pg/mL) CAR cells see on top of serum IL-15, and what secreted IL-15
    # adds to serum (pg/mL/day per 1e10 CAR cells)
    "il15_autocrine", "il15_secretion",
    # host lymphocytes and IL-15
    "host_baseline", "host_turnover", "il15_baseline", "il15_elimination", "il15_uptake_fraction",
    # cytokines and myeloid activation
    "ifng_secretion", "ifng_clearance", "macrophage_on", "macrophage_off", "il6_synthesis_rate",
    "ifng_half_activation", "damp_weight", "damp_half_activation", "myeloid_hill",
    "il6_baseline", "il6_max", "il6_clearance",
    # endothelial activation (ICANS substrate) and the drugs that act in the model
    "endothelial_on", "endothelial_off", "endothelial_half", "endothelial_hill", "endothelial_injury_half",
    "toci_elimination", "toci_kd", "il6_receptor_clearance",
    "steroid_elimination", "steroid_ed50", "steroid_cytokine_emax", "steroid_expansion_emax",
    "dasatinib_elimination", "dasatinib_ic50", "dasatinib_hill",
    "anakinra_elimination", "anakinra_ed50", "anakinra_emax",
    # solid tumours (docs/solid.md): 1 when the tumour sits in a site compartment the CAR cells
    # must reach; per-capita trafficking into it per tumour cell (1/day/cell) and egress (1/day);
    # the microenvironment's share of killing and proliferation removed, and its exhaustion gain
    "solid", "traffic_per_tumour_cell", "site_egress", "tme_kill", "tme_proliferation", "tme_exhaustion",
    # return to blood of the effectors held in lung and liver after the infusion (1/day)
    "first_pass_return",
    # IL-6 the tumour's own macrophages add to serum when all are activated, per 1e10 tumour
    # cells (pg/mL); they see the tumour's signals at the tumour's concentration, IFN-gamma
    # leaving the tumour at tam_ifng_exchange (1/day)
    "tam_il6", "tam_ifng_exchange",
    # inside a tumour, CAR and tumour cells share the tumour's volume: the systemic half-
    # stimulation and TK50 (whole-body counts) shrink by tumour volume / systemic volume, i.e.
    # scale with the tumour's cells (this per-tumour-cell factor, 1/cell)
    "site_volume_per_tumour_cell",
    # antigen-low clone's recognition; killing of antigen-negative neighbours (share of CAR killing);
    # CAR-independent (NKG2D) killing of NK cells (share of k_kill)
    "recognition_low", "activation_low", "bystander_kill", "natural_kill",
    # host-versus-graft rejection at full host lymphocyte recovery (1/day); dasatinib rest of
    # exhausted cells (1/day at full block)
    "rejection_rate", "k_rest",
    # patient susceptibility: thresholds of the clinical signs (read at assessments, not in rhs)
    "fever_il6_half", "leak_il6_half", "icans_half",
    # extinction flags (1 = population alive, 0 = extinct), set at clinical rounds
    "alive_car", "alive_tumour_pos", "alive_tumour_neg", "alive_tumour_low",
)
PARAM_INDEX = {name: i for i, name in enumerate(PARAMETER_NAMES)}
for _prefix in ("recognition_normal_", "activation_normal_", "neurovascular_normal_", "normal_baseline_",
                "normal_turnover_"):
    assert [PARAM_INDEX[f"{_prefix}{j}"] for j in range(1, NORMAL_SLOTS + 1)] == list(
        range(PARAM_INDEX[f"{_prefix}1"], PARAM_INDEX[f"{_prefix}1"] + NORMAL_SLOTS)), _prefix


@dataclass(frozen=True)
class Params:
    """Per-patient parameters as one 2-D array, shape (n_patients, n_parameters).

    Columns are read by name (``p.k_kill`` is a view of shape (n_patients,)); taking a subset
    of patients is one fancy-index (``p.take(idx)``), which the batched solver does every step.
    """

    values: np.ndarray

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self.values[:, PARAM_INDEX[name]]
        except KeyError:
            raise AttributeError(name) from None

    def block(self, prefix: str) -> np.ndarray:
        """Columns ``prefix1..prefix3`` (the normal-tissue slots) as one (n, 3) view."""
        i = PARAM_INDEX[f"{prefix}1"]
        return self.values[:, i:i + NORMAL_SLOTS]

    def take(self, idx: np.ndarray) -> Params:
        return Params(self.values[idx])

    def __getstate__(self) -> dict:
        return {"values": self.values}

    def __setstate__(self, state: dict) -> None:
        object.__setattr__(self, "values", state["values"])

    def __len__(self) -> int:
        return self.values.shape[0]

