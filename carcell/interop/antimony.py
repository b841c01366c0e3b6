"""carcell's model for one patient as Antimony, the human-readable text form of SBML.

Antimony (Smith et al. 2009, doi:10.1093/bioinformatics/btp401) is what Tellurium users read
and edit. The text here is libAntimony's translation of :func:`carcell.interop.sbml_export.
export_patient`, so it holds the same rate rules (``ln_car_memory' = ...``), assignment rules
(``stimulus := ...``), units, values and notes; libAntimony may order the rules differently.
"""

from __future__ import annotations

from pathlib import Path

from carcell.design import CompiledCohort, Design
from carcell.errors import CarcellError
from carcell.interop.sbml_export import export_patient
from carcell.scenario.schema import Scenario


def _antimony():
    try:
        import antimony  # noqa: PLC0415 - optional extra
    except ImportError:
        raise CarcellError("the antimony package is not installed; install the sbml extra: "
                           "pip install -e '.[sbml]'") from None
    return antimony


def sbml_to_antimony(sbml: str) -> str:
    """Antimony text of an SBML document (libAntimony's translation)."""
    ant = _antimony()
    ant.clearPreviousLoads()
    if ant.loadSBMLString(sbml) < 0:
        raise CarcellError(f"libAntimony could not read the SBML: {ant.getLastError().strip()}")
    text = ant.getAntimonyString(ant.getMainModuleName())
    ant.clearPreviousLoads()
    return text


def antimony_to_sbml(text: str) -> str:
    """SBML text of an Antimony model (to run an edited Antimony file in any SBML tool)."""
    ant = _antimony()
    ant.clearPreviousLoads()
    if ant.loadAntimonyString(text) < 0:
        raise CarcellError(f"libAntimony could not read the Antimony text: {ant.getLastError().strip()}")
    sbml = ant.getSBMLString(ant.getMainModuleName())
    ant.clearPreviousLoads()
    return sbml


def export_antimony(source: Scenario | str | Path | CompiledCohort, patient: int, *,
                    design: Design | None = None) -> str:
    """One patient's model as Antimony text (arguments as :func:`~carcell.interop.sbml_export.export_patient`)."""
    return sbml_to_antimony(export_patient(source, patient, design=design))
