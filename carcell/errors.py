"""Exceptions raised by carcell.

Every error a user can cause is a :class:`CarcellError`; the CLI prints its message on one
line and exits with status 2.
"""


class CarcellError(Exception):
    """Base class for every error carcell raises on purpose."""


class ScenarioError(CarcellError, ValueError):
    """A scenario file or override is invalid; the message names the field and the fix."""


class KnowledgeError(CarcellError, ValueError):
    """A knowledge data file is malformed or a requested entry does not exist."""


class SolverError(CarcellError, RuntimeError):
    """The integrator could not proceed (raised only with ``throw=True``)."""


class DesignError(CarcellError, ValueError):
    """A product design is contradictory or impossible; the message names the field and why."""


class ObservationError(CarcellError, ValueError):
    """A table of bedside observations is malformed; the message names rows, columns and fixes."""


class TrialDataError(CarcellError, ValueError):
    """A patients table lacks a column or value a trial statistic needs."""
