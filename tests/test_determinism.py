"""The same seed gives the same patients whatever the chunk size or cohort size.

Patient ``i`` draws from its own random stream, and the batched integrator treats each patient
independently, so cutting the cohort into chunks of 1, 7 or 15 must not change one bit of the
patients table; neither must the size of the cohort a patient is drawn in.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from carcell.cohort.run import run_cohort
from carcell.scenario.load import validate_raw

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def run(n: int = 15, seed: int = 3, chunk: int = 15):
    """A small B-ALL cohort (cached: the result objects are only read)."""
    return run_cohort(validate_raw({
        "indication": {"disease": "B-ALL"},
        "population": {"n": n, "seed": seed},
        "trial": {"follow_up_days": 60, "solver": {"chunk_size": chunk}},
    }))


def fresh(n: int = 15, seed: int = 3, chunk: int = 15):
    return run.__wrapped__(n, seed, chunk)


def test_cohort_is_sane():
    df = run().patients
    assert len(df) == 15 and list(df["patient_id"]) == list(range(15))
    assert (df["solver_status"] == "ok").all()


@pytest.mark.parametrize("chunk", [1, 4, 7, 8])
def test_chunk_size_does_not_change_patients(chunk):
    """9 patients: chunks of 1, 4, 7 and 8 all leave a remainder (1, 1, 2, 1 patients)."""
    pd.testing.assert_frame_equal(run(n=9, chunk=chunk).patients, run(n=9, chunk=9).patients,
                                  check_exact=True)


@pytest.mark.parametrize("chunk", [1, 7])
def test_chunk_size_does_not_change_trajectories_or_events(chunk):
    a, b = run(n=9, chunk=chunk), run(n=9, chunk=9)   # the runs of the test above (cached)
    np.testing.assert_array_equal(a.times, b.times)
    assert a.trajectories.keys() == b.trajectories.keys()
    for q in b.trajectories:
        np.testing.assert_array_equal(a.trajectories[q], b.trajectories[q], err_msg=q)
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)


def test_same_seed_twice_is_identical():
    # two independent runs (not the cached one) of the same scenario
    a, b = fresh(seed=3), fresh(seed=3)
    pd.testing.assert_frame_equal(a.patients, b.patients, check_exact=True)
    pd.testing.assert_frame_equal(a.events, b.events, check_exact=True)
    pd.testing.assert_frame_equal(a.patients, run(seed=3).patients, check_exact=True)


def test_different_seed_gives_different_patients():
    a, b = run(seed=3).patients, run(seed=4).patients
    assert not a.equals(b)
    # every patient is a new draw, not only some
    for col in ("weight_kg", "baseline_burden_cells", "antigen_density", "cmax_copies_per_ug"):
        assert (a[col].to_numpy() != b[col].to_numpy()).all(), col


def test_patient_draws_do_not_depend_on_cohort_size():
    small = run(n=5, chunk=5).patients
    big = run(n=15).patients
    pd.testing.assert_frame_equal(small, big.iloc[:5], check_exact=True)


def test_patients_are_not_all_the_same():
    """Guard against a trivially 'deterministic' cohort: patients differ from each other."""
    df = run().patients
    assert df["weight_kg"].nunique() == 15 and df["cmax_copies_per_ug"].nunique() == 15


# -- the same through the command line ------------------------------------------------------

def _cli_run(out: Path, chunk: int) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    return subprocess.run(
        [sys.executable, "-m", "carcell", "run", str(ROOT / "examples" / "tisacel_ball.yaml"),
         "--out", str(out), "-n", "9", "--seed", "41", "--no-plots",
         "--set", "trial.follow_up_days=60", "--set", f"trial.solver.chunk_size={chunk}"],
        capture_output=True, text=True, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)


def test_cli_chunk_size_does_not_change_outputs(tmp_path):
    # 3 and 9 cut 9 patients into chunks of several patients each (a chunk of one patient
    # hits the AUC bug above)
    a, b = tmp_path / "chunk3", tmp_path / "chunk9"
    for out, chunk in ((a, 3), (b, 9)):
        r = _cli_run(out, chunk)
        assert r.returncode == 0, r.stderr
    pa, pb = pd.read_parquet(a / "patients.parquet"), pd.read_parquet(b / "patients.parquet")
    assert len(pa) == 9
    pd.testing.assert_frame_equal(pa, pb, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "events.parquet"),
                                  pd.read_parquet(b / "events.parquet"), check_exact=True)
    for f in ("patients.parquet", "events.parquet", "summary.json"):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    with xr.open_dataset(a / "trajectories.nc") as da, xr.open_dataset(b / "trajectories.nc") as db:
        xr.testing.assert_identical(da, db)
