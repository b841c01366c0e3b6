"""Interoperability: run models written for other tools as carcell cohorts.

SBML import (:func:`load_sbml`, :func:`run_sbml_cohort`; files and plots with
:func:`carcell.interop.sbml_outputs.write_sbml_outputs`) reads a model with python-libsbml
(the ``sbml`` extra, imported only when a file is read), compiles it for carcell's batched
Dormand-Prince solver and writes carcell's usual tables, trajectories and plots.
See docs/sbml.md.
"""

from carcell.interop.sbml_cohort import SbmlCohortResult, run_sbml_cohort
from carcell.interop.sbml_compile import ModelDomainError
from carcell.interop.sbml_import import SbmlModel, load_sbml

__all__ = ["ModelDomainError", "SbmlCohortResult", "SbmlModel", "load_sbml", "run_sbml_cohort"]
