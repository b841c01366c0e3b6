"""The command line end to end on every example, and its error paths."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
ALLOWED = {"LBCL": {"CR", "PR", "SD", "PD"}, "MM": {"CR", "VGPR", "PR", "SD", "PD"},
           "B-ALL": {"CR", "NR", "PD"}}


def carcell(*args):
    return subprocess.run([sys.executable, "-m", "carcell", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_run_example(example, tmp_path):
    out = tmp_path / "out"
    r = carcell("run", example, "--out", out, "-n", 12, "--set", "trial.follow_up_days=120")
    assert r.returncode == 0, r.stderr
    assert "Cmax" in r.stdout
    for f in ("patients.parquet", "trajectories.nc", "events.parquet", "summary.json",
              "provenance.json", "kinetics.png", "tumour_burden.png", "waterfall.png"):
        assert (out / f).stat().st_size > 0, f
    df = pd.read_parquet(out / "patients.parquet")
    assert len(df) == 12
    for c in ("patient_id", "solver_status", "cmax_cells_per_ul", "cmax_copies_per_ug", "tmax_days",
              "auc_0_28_copies_day_per_ug", "best_response", "response_day", "progression_day",
              "relapse_antigen", "il6_peak_pg_per_ml", "ifng_peak_pg_per_ml", "b_cell_aplasia_days"):
        assert c in df.columns, c
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cohort_size"] == 12
    assert set(df["best_response"]) <= ALLOWED[summary["disease"]]
    ds = xr.open_dataset(out / "trajectories.nc")
    assert set(ds.dims) == {"patient", "time"}
    assert all("units" in ds[v].attrs for v in ds.data_vars)
    assert (ds["time"].diff("time") > 0).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert len(prov["scenario_sha256"]) == 64 and prov["sources"]
    assert all(e["source"] for e in prov["sources"].values())


def test_validate_and_set(tmp_path):
    r = carcell("validate", ROOT / "examples" / "axicel_lbcl.yaml")
    assert r.returncode == 0 and "axicel-like" in r.stdout
    out = tmp_path / "o"
    r = carcell("run", ROOT / "examples" / "minimal.yaml", "--out", out, "-n", 3, "--no-plots",
                "--set", "product.dose.cells_per_kg=5e6", "--set", "trial.follow_up_days=30")
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["scenario"]["product"]["dose"]["cells_per_kg"] == 5e6


BAD = {
    "costim": ("indication: {disease: LBCL}\nproduct: {car: {costim: CD-28}}\n",
               ["product.car.costim", "did you mean 'CD28'"]),
    "disease": ("indication: {disease: DLBCL}\n", ["indication.disease", "did you mean 'LBCL'"]),
    "section": ("indication: {disease: LBCL}\nprodcut: {}\n", ["prodcut", "did you mean 'product'"]),
    "negative_dose": ("indication: {disease: LBCL}\nproduct: {dose: {cells_per_kg: -1}}\n",
                      ["product.dose.cells_per_kg", "greater than 0"]),
    "two_doses": ("indication: {disease: LBCL}\nproduct: {dose: {cells_per_kg: 1e6, cells: 1e8}}\n",
                  ["product.dose", "exactly one"]),
    "variability": ("indication: {disease: LBCL}\npopulation: {variability: {k_kil: 0.3}}\n",
                    ["population.variability", "did you mean 'k_kill'"]),
    "yaml": ("indication: {disease: LBCL\n", ["not valid YAML", "line"]),
    "empty": ("", ["empty"]),
    "follow_up": ("indication: {disease: LBCL}\ntrial: {follow_up_days: -5}\n", ["trial.follow_up_days"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_scenario_one_clear_line(case, tmp_path):
    text, needles = BAD[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    r = carcell("run", f, "--out", out)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    for needle in needles:
        assert needle in r.stderr, (needle, r.stderr)
    assert (out / "keep.txt").read_text() == "earlier results"


@pytest.mark.parametrize("args,needle", [
    (["--set", "population.n"], "dotted.path=value"),
    (["--set", "population.n=many"], "population.n"),
    ([], "no such scenario file"),
])
def test_bad_command_line(tmp_path, args, needle):
    scen = ROOT / "examples" / "minimal.yaml" if args else tmp_path / "missing.yaml"
    r = carcell("run", scen, "--out", tmp_path / "o", *args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
