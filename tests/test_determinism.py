"""The same seed gives the same patients whatever the chunk size or cohort size."""

import pandas as pd

from carcell.cohort.run import run_cohort
from carcell.scenario.load import validate_raw


def run(n=15, seed=3, chunk=15):
    return run_cohort(validate_raw({
        "indication": {"disease": "B-ALL"},
        "population": {"n": n, "seed": seed},
        "trial": {"follow_up_days": 60, "solver": {"chunk_size": chunk}},
    })).patients


def test_chunk_size_does_not_change_results():
    ref = run(chunk=15)
    for chunk in (1, 7):
        pd.testing.assert_frame_equal(run(chunk=chunk), ref)


def test_seed_reproducible_and_different_seeds_differ():
    pd.testing.assert_frame_equal(run(seed=3), run(seed=3))
    assert not run(seed=4)["cmax_copies_per_ug"].equals(run(seed=3)["cmax_copies_per_ug"])


def test_patient_draws_do_not_depend_on_cohort_size():
    pd.testing.assert_frame_equal(run(n=5, chunk=5), run(n=15).iloc[:5])
