"""Small helpers shared by the assay and mouse modes: reference volumes and parameter edits."""

from __future__ import annotations

import numpy as np

from carcell.knowledge import Knowledge
from carcell.model.states import PARAM_INDEX

HOSTS = "preclinical.hosts"
LINES = "preclinical.lines"
HUMAN = f"{HOSTS}.human_reference"


def human_plasma_ml(k: Knowledge) -> float:
    """Plasma volume (mL) of the adult the IFN-gamma secretion rate refers to.

    ``ifng_secretion`` (car_t.yaml) is a rise of plasma concentration per 1e10 engaged cells, so
    the amount one cell secretes is that rate times this volume.
    """
    return (float(k.value("physiology.blood.volume_per_kg")) * float(k.value(f"{HUMAN}.weight"))
            * float(k.value(f"{HUMAN}.plasma_fraction")))


def systemic_ml(k: Knowledge) -> float:
    """Volume (mL) over which the whole-body half-stimulation and TK50 of the human model are spread."""
    return float(k.value("tme.systemic_volume")) * 1000.0


def set_column(values: np.ndarray, name: str, value) -> None:
    """Set one parameter column of a (n, P) parameter array, in place."""
    values[:, PARAM_INDEX[name]] = value


def scale_column(values: np.ndarray, name: str, factor) -> None:
    """Multiply one parameter column of a (n, P) parameter array, in place."""
    values[:, PARAM_INDEX[name]] *= factor


def in_vitro_growth_rate(k: Knowledge, line: str) -> float:
    """Net growth rate (1/day) of a line in culture, from its doubling time."""
    return float(np.log(2.0) / float(k.value(f"{LINES}.{line}.in_vitro_doubling_time")))
