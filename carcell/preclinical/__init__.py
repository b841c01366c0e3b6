"""Preclinical modes: in-vitro killing assays and mouse xenografts (docs/preclinical.md).

Both run the patient model unchanged (same right-hand side, same solver); they only change the
parameters and starting states that a culture well or an NSG mouse changes:

* :mod:`carcell.preclinical.assay` - cytotoxicity assays (E:T ratios, real-time killing curves,
  serial restimulation, IFN-gamma in the supernatant, dasatinib during the assay);
* :mod:`carcell.preclinical.mouse` - ``species: mouse`` scenarios: tumour volume curves and
  survival to the humane endpoint, against untreated control mice.
"""

from carcell.preclinical.assay import AssayResult, run_assay, write_assay
from carcell.preclinical.mouse import XenograftResult, run_xenograft, write_xenograft

__all__ = ["AssayResult", "run_assay", "write_assay", "XenograftResult", "run_xenograft", "write_xenograft"]
