"""From whole-body cell numbers to what a blood sample reads.

Cells/uL: a fraction of the body's lymphocytes circulates (Westermann & Pabst 1992), so
``blood = total * fraction / blood volume``. qPCR: transgene copies per ug of genomic DNA is
``VCN * (cells per ug DNA) * CAR cells / all nucleated blood cells``.
"""

from __future__ import annotations

import numpy as np


def per_ul(total_cells: np.ndarray, blood_volume_ul: np.ndarray, blood_fraction: float) -> np.ndarray:
    return total_cells * blood_fraction / np.asarray(blood_volume_ul)[..., None]


def copies_per_ug(car_per_ul: np.ndarray, other_leukocytes_per_ul: np.ndarray, vcn: float,
                  cells_per_ug: float) -> np.ndarray:
    return vcn * cells_per_ug * car_per_ul / (car_per_ul + other_leukocytes_per_ul)
