"""The NONMEM/Monolix dataset export (carcell.io.nonmem) of a real run: records checked against
the run's own per-patient table and trajectories, read independently here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from typer.testing import CliRunner

from carcell.cli import app

ROOT = Path(__file__).resolve().parents[1]
DOSE_DAYS = [0, 7, 14]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nonmem") / "run"
    r = CliRunner().invoke(app, ["run", str(ROOT / "examples" / "nk92_2b4_dap12_ball.yaml"), "--out", str(out),
                                 "-n", "5", "--no-plots", "--set", "trial.follow_up_days=30",
                                 "--set", f"regimen.infusion_days={DOSE_DAYS}"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["export", str(out), "--format", "nonmem"])
    assert r.exit_code == 0, r.output
    return out


def test_every_infusion_is_a_dose_record_with_its_cells(run_dir):
    df = pd.read_csv(run_dir / "nonmem" / "nonmem.csv")
    p = pd.read_parquet(run_dir / "patients.parquet")
    doses = df[df["EVID"] == 1]
    assert (doses["MDV"] == 1).all() and (doses["CMT"] == 1).all() and (doses["DV"] == 0).all()
    for pid, dose in zip(p["patient_id"], p["dose_cells"]):
        mine = doses[doses["ID"] == pid + 1]
        assert list(mine["TIME"]) == DOSE_DAYS
        assert np.allclose(mine["AMT"], dose, rtol=1e-9)


def test_observations_are_the_log_kinetics_with_blq_censored_at_the_limit(run_dir):
    df = pd.read_csv(run_dir / "nonmem" / "nonmem.csv")
    obs = df[df["EVID"] == 0]
    assert (obs["MDV"] == 0).all() and (obs["CMT"] == 2).all() and (obs["AMT"] == 0).all()
    lloq = 5.0   # the ADaM export's default limit (copies/ug), docs/adam.md
    assert np.allclose(obs["LLOQ"], np.log(lloq))
    below = obs["DVOR"] < lloq
    assert (obs["BLQ"] == below.astype(int)).all() and (obs["CENS"] == obs["BLQ"]).all()
    assert np.allclose(obs.loc[below, "DV"], np.log(lloq))
    assert np.allclose(obs.loc[~below, "DV"], np.log(obs.loc[~below, "DVOR"]), rtol=1e-8)
    # each observed value is the run's own trajectory at that time
    with xr.open_dataset(run_dir / "trajectories.nc") as ds:
        copies = ds["car_copies_per_ug"].transpose("patient", "time")
        times = ds["time"].to_numpy()
        ids = list(ds["patient"].to_numpy())
        for _, row in obs.iterrows():
            j = int(np.argmin(np.abs(times - row["TIME"])))
            assert times[j] == pytest.approx(row["TIME"])
            assert row["DVOR"] == pytest.approx(float(copies[ids.index(row["ID"] - 1), j]), rel=1e-6)


def test_records_are_numeric_ordered_and_carry_covariates(run_dir):
    df = pd.read_csv(run_dir / "nonmem" / "nonmem.csv")
    p = pd.read_parquet(run_dir / "patients.parquet").set_index("patient_id")
    assert all(pd.api.types.is_numeric_dtype(df[c]) for c in df.columns)
    for pid, g in df.groupby("ID"):
        assert g["TIME"].is_monotonic_increasing
        assert g["WT"].nunique() == 1 and g["WT"].iloc[0] == pytest.approx(p.at[pid - 1, "weight_kg"])
        assert g["LBURDEN"].iloc[0] == pytest.approx(np.log10(p.at[pid - 1, "baseline_burden_cells"]))
        first = g.groupby("TIME")["EVID"].first()   # a dose comes before an observation at its time
        assert first.loc[0.0] == 1


def test_bad_nonmem_options_are_one_line(run_dir, tmp_path):
    r = CliRunner().invoke(app, ["export", str(run_dir), "--format", "nonmem", "--analyte", "IL6"])
    assert r.exit_code == 2 and "--analyte IL6: use one of CARCOPY, CARCELL" in r.output
    r = CliRunner().invoke(app, ["export", str(run_dir), "--format", "nonmem", "--analyte", "CARCELL"])
    assert r.exit_code == 2 and "--lloq" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path), "--format", "nonmem"])
    assert r.exit_code == 2 and "trajectories.nc: missing" in r.output
