"""Interoperability: run models written for other tools as carcell cohorts.

SBML import (:func:`load_sbml`, :func:`run_sbml_cohort`; files and plots with
:func:`carcell.interop.sbml_outputs.write_sbml_outputs`) reads a model with python-libsbml
(the ``sbml`` extra, imported only when a file is read), compiles it for carcell's batched
Dormand-Prince solver and writes carcell's usual tables, trajectories and plots.
See docs/sbml.md.
"""

from __future__ import annotations

from carcell.lazy import lazy_attributes

# imported on first use: every carcell command imports this package for the `sbml` and
# `export-model` commands, and must not pay for the SBML compiler and pandas behind it
_WHERE = {
    "SbmlCohortResult": "carcell.interop.sbml_cohort",
    "run_sbml_cohort": "carcell.interop.sbml_cohort",
    "ModelDomainError": "carcell.interop.sbml_compile",
    "SbmlModel": "carcell.interop.sbml_import",
    "load_sbml": "carcell.interop.sbml_import",
}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
