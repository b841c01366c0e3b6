"""Virtual cohorts: sample patients, simulate them in chunks, summarise, write the results."""

from carcell.cohort.run import CohortResult, run_cohort

__all__ = ["CohortResult", "run_cohort"]
