"""SBML import: BioModels CAR-T models run on carcell's solver against libRoadRunner trajectories.

Reference data: ../shared/reference/biomodels/ (SBML files from BioModels, CC0, and one
libRoadRunner 2.10.0 CVODE trajectory per model at rtol 1e-10, atol 1e-14, 201 points; see
its README). The trajectories are another solver's output, not figures from the papers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("libsbml")

from typer.testing import CliRunner  # noqa: E402

from carcell.errors import ScenarioError  # noqa: E402
from carcell.interop import ModelDomainError, load_sbml, run_sbml_cohort  # noqa: E402
from carcell.interop.cli import app  # noqa: E402
from carcell.interop.sbml_cohort import draw_table  # noqa: E402

REF = Path(__file__).resolve().parents[2] / "shared" / "reference" / "biomodels"
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="reference BioModels folder not present")

#: end of each reference trajectory in days (BIOMD0000000837 runs 720 h = 30 days)
END_DAYS = {
    "BIOMD0000000837": 30.0, "BIOMD0000001011": 60.0, "BIOMD0000001014": 360.0, "BIOMD0000001019": 500.0,
    "BIOMD0000001024": 360.0, "BIOMD0000001025": 360.0, "BIOMD0000001041": 200.0, "MODEL2009230001": 100.0,
}
SOLVER = {"rtol": 1e-10, "atol": 1e-14}   # as the reference CSVs were made
RTOL = 1e-6          # measured worst 9e-8 over the seven non-cycling models (docs/sbml.md)
RTOL_CYCLES = 1e-4   # BIOMD0000001024: neutral Lotka-Volterra cycles drift in phase; measured 1.6e-5
FLOOR = 1e-6         # relative error only where |reference| > FLOOR * max |reference| (undershoot, README)


def _reference(mid: str) -> pd.DataFrame:
    return pd.read_csv(REF / f"{mid}.trajectory.csv")


def _max_errors(result, ref: pd.DataFrame) -> tuple[float, float]:
    """Worst relative error above the floor, and worst absolute error / species max, over species."""
    rel = absn = 0.0
    for sid in result.model.species_ids:
        a, b = result.species(sid)[0], ref[sid].to_numpy()
        scale = np.max(np.abs(b))
        if scale == 0:
            absn = max(absn, float(np.max(np.abs(a))))
            continue
        big = np.abs(b) > FLOOR * scale
        rel = max(rel, float(np.max(np.abs(a - b)[big] / np.abs(b[big]))))
        absn = max(absn, float(np.max(np.abs(a - b)) / scale))
    return rel, absn


def _run_default(mid: str, **kw):
    method = "lsoda" if mid == "MODEL2009230001" else "dopri5"   # stiff: see carcell/interop/sbml_stiff.py
    return run_sbml_cohort(load_sbml(REF / f"{mid}.xml"), 1, t_end_days=END_DAYS[mid], n_points=201,
                           method=method, **SOLVER, **kw)


@pytest.mark.parametrize("mid", sorted(END_DAYS))
def test_default_patient_against_libroadrunner(mid):
    """Default patient vs the libRoadRunner CSV at its 201 time points (time axis of the CSV,
    hours for BIOMD0000000837)."""
    ref = _reference(mid)
    result = _run_default(mid)
    assert list(ref.columns[1:]) == list(result.model.species_ids)
    np.testing.assert_allclose(result.times_model, ref["time"].to_numpy(), rtol=1e-12, atol=1e-12)
    assert result.solver_status[0] == "ok"
    tol = RTOL_CYCLES if mid == "BIOMD0000001024" else RTOL
    rel, absn = _max_errors(result, ref)
    assert rel < tol, f"{mid}: max relative error {rel:.2e} >= {tol:.0e}"
    assert absn < tol, f"{mid}: max absolute error / species max {absn:.2e} >= {tol:.0e}"


def test_changing_one_parameter_fails_the_comparison():
    """The comparison can fail: Hanson 2016 with tumour growth r_1 changed by 1%."""
    ref = _reference("BIOMD0000000837")
    rel, _ = _max_errors(_run_default("BIOMD0000000837", parameters={"r_1": 0.003 * 1.01}), ref)
    assert rel > 100 * RTOL


def test_hanson_time_is_hours_and_reported_in_days():
    m = load_sbml(REF / "BIOMD0000000837.xml")
    assert m.time_unit == "hour"
    assert m.days_per_time_unit == pytest.approx(1 / 24, rel=1e-15)
    result = run_sbml_cohort(m, 1, t_end_days=30.0, n_points=31)
    ds = result.trajectories
    assert ds["time"].attrs["units"] == "day"
    assert float(ds["time"][-1]) == pytest.approx(30.0, rel=1e-15)
    assert float(ds["time_model"][-1]) == pytest.approx(720.0, rel=1e-15)
    assert ds["B"].attrs["units"] == "item/(0.001 litre)"   # substance 'item', volume 'litre' scale -3
    assert ds.attrs["model_time_unit"] == "hour"


def test_events_set_values_at_their_time():
    """Barros 2021: at day 45 Ct is set to 2e6 (the dose), at day 250 T to 1e6 (rechallenge);
    outputs at an event time are after the event, as in the CSV."""
    result = _run_default("BIOMD0000001019")
    t = result.times_days
    ct, tumour = result.species("Ct")[0], result.species("T")[0]
    i45, i250 = int(np.flatnonzero(t == 45.0)[0]), int(np.flatnonzero(t == 250.0)[0])
    assert ct[i45 - 1] == 0.0 and ct[i45] == pytest.approx(2e6, rel=1e-12)
    assert tumour[i250 - 1] < 1e-6 and tumour[i250] == pytest.approx(1e6, rel=1e-12)


def test_model_with_log_of_vanishing_tumour_stops_with_a_clear_message():
    """MODEL2109110005: ln(U) with U falling to zero near day 8.4 (README); the error names
    the formula, the species, the time and the fix."""
    m = load_sbml(REF / "MODEL2109110005.xml")
    with pytest.raises(ModelDomainError, match=r"ln\(U\) in reaction 'Tumor_cell_growth'.* at t = 8\.\d+ day.*"
                                               r"give U a floor.*--floor U=1e-9"):
        run_sbml_cohort(m, 1, t_end_days=360.0)


def test_model_with_log_runs_with_a_floor():
    m = load_sbml(REF / "MODEL2109110005.xml")
    result = run_sbml_cohort(m, 1, t_end_days=360.0, floors={"U": 1e-9})
    assert result.solver_status[0] == "ok"
    u = result.species("U")[0]
    assert np.all(np.isfinite(u)) and u.min() >= 1e-9
    # C_E does not depend on U: 10 * exp(rho t) until T_max, then decay at k_EP + k_E (analytic)
    p = dict(zip(m.columns, m.defaults))
    t = result.times_days
    peak = 10.0 * np.exp(p["rho"] * p["T_max"])
    expected = np.where(t <= p["T_max"], 10.0 * np.exp(p["rho"] * t),
                        peak * np.exp(-(p["k_EP"] + p["k_E"]) * (t - p["T_max"])))
    np.testing.assert_allclose(result.species("C_E")[0], expected, rtol=1e-6, atol=1e-9)  # solver atol 1e-12


def test_model_with_log_matches_partial_csv_before_the_failure():
    """Up to 8.4 days (the CSV's span) the model is well defined; a floor far below U keeps
    the run identical to libRoadRunner's."""
    ref = _reference("MODEL2109110005")
    m = load_sbml(REF / "MODEL2109110005.xml")
    result = run_sbml_cohort(m, 1, t_end_days=8.4, n_points=201, floors={"U": 1e-30}, **SOLVER)
    rel, absn = _max_errors(result, ref)
    assert rel < RTOL and absn < RTOL


def test_stiff_patient_is_handed_to_lsoda():
    """Hardiansyah 2019 is stiff (B-cell killing ~1e8/day): in 'auto' the explicit solver gives
    up after max_steps and LSODA takes over; the result matches the CSV's first 10 days."""
    ref = _reference("MODEL2009230001").iloc[:21]
    m = load_sbml(REF / "MODEL2009230001.xml")
    result = run_sbml_cohort(m, 1, t_end_days=10.0, n_points=21, max_steps=200, **SOLVER)
    assert result.patients["solver"].tolist() == ["lsoda"]
    rel, absn = _max_errors(result, ref)
    assert rel < RTOL and absn < RTOL


# --- variability -----------------------------------------------------------------------
def test_variability_is_reproducible_and_independent_of_cohort_size():
    m = load_sbml(REF / "BIOMD0000001011.xml")
    kw = dict(t_end_days=20.0, n_points=11, variability={"alpha": 0.3, "rho_L": 0.2})
    a = run_sbml_cohort(m, 5, seed=3, **kw)
    b = run_sbml_cohort(m, 5, seed=3, **kw)
    c = run_sbml_cohort(m, 9, seed=3, **kw)
    d = run_sbml_cohort(m, 5, seed=4, **kw)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, c.values[:5])
    assert not np.array_equal(a.drawn["alpha"].to_numpy()[1:], d.drawn["alpha"].to_numpy()[1:])
    # patient 0 is the typical patient
    assert a.drawn.loc[0, "alpha"] == m.defaults[m.columns.index("alpha")]
    # a patient's draw of one parameter does not depend on which other parameters vary
    e = run_sbml_cohort(m, 5, seed=3, t_end_days=20.0, n_points=11, variability={"alpha": 0.3})
    np.testing.assert_array_equal(a.drawn["alpha"], e.drawn["alpha"])


def test_variability_is_lognormal_with_the_asked_cv():
    """Median = typical value, coefficient of variation = cv (4000 draws; tolerances ~4 SE)."""
    m = load_sbml(REF / "BIOMD0000001011.xml")
    table, drawn = draw_table(m, 4000, seed=11, variability={"alpha": 0.5})
    x = drawn["alpha"].to_numpy()[1:]
    typical = m.defaults[m.columns.index("alpha")]
    assert np.median(x) / typical == pytest.approx(1.0, abs=0.05)
    assert np.std(x) / np.mean(x) == pytest.approx(0.5, abs=0.05)
    sigma = np.sqrt(np.log1p(0.25))
    assert np.std(np.log(x / typical)) == pytest.approx(sigma, rel=0.05)


def test_varying_an_initial_value_and_a_rule_driven_parameter():
    """Species initial values vary by their id; a parameter set by a rule cannot be varied."""
    m = load_sbml(REF / "BIOMD0000001011.xml")
    r = run_sbml_cohort(m, 4, variability={"CAR_T_cells": 0.5}, t_end_days=1.0, n_points=2)
    np.testing.assert_allclose(r.species("CAR_T_cells")[:, 0], r.drawn["CAR_T_cells"], rtol=0)
    with pytest.raises(ScenarioError, match="rho_C.*assignment rule"):
        run_sbml_cohort(m, 2, variability={"rho_C": 0.3}, t_end_days=1.0)
    with pytest.raises(ScenarioError, match="did you mean alpha"):
        run_sbml_cohort(m, 2, variability={"alpah": 0.3}, t_end_days=1.0)


# --- rejected input ----------------------------------------------------------------------
def _edited(tmp_path: Path, mid: str, edit) -> Path:
    import libsbml

    doc = libsbml.readSBMLFromFile(str(REF / f"{mid}.xml"))
    edit(doc.getModel(), libsbml)
    path = tmp_path / f"{mid}_edited.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    return path


def test_unsupported_constructs_are_rejected_with_one_line(tmp_path):
    def state_trigger(m, L):
        m.getEvent(0).getTrigger().setMath(L.parseL3Formula("T >= 1e7"))

    def delayed(m, L):
        m.getEvent(0).createDelay().setMath(L.parseL3Formula("2"))

    def algebraic(m, L):
        m.createAlgebraicRule().setMath(L.parseL3Formula("Cm - Ct"))

    def fast(m, L):
        m.getReaction(0).setFast(True)

    cases = [(state_trigger, r"event 'event1' has the trigger 'T >= 1e\+?0?7'.*time >= c"),
             (delayed, "event 'event1' has a delay"),
             (algebraic, "algebraic rule"),
             (fast, "reaction 'R3_Cm_activation_into_Ct' is marked fast")]
    for edit, message in cases:
        path = _edited(tmp_path, "BIOMD0000001019", edit)
        with pytest.raises(ScenarioError, match=message) as err:
            load_sbml(path)
        assert "\n" not in str(err.value)


def test_bad_files_give_clear_messages(tmp_path):
    with pytest.raises(ScenarioError, match="no such file"):
        load_sbml(tmp_path / "missing.xml")
    not_sbml = tmp_path / "model.xml"
    not_sbml.write_text("population:\n  n: 3\n")
    with pytest.raises(ScenarioError, match="not a valid SBML file"):
        load_sbml(not_sbml)


def test_undeclared_time_unit_is_assumed_days_and_can_be_given(tmp_path):
    path = _edited(tmp_path, "BIOMD0000001011", lambda m, L: m.removeUnitDefinition("time"))
    assert any("assumed days" in note for note in load_sbml(path).notes)
    assert load_sbml(path, time_unit="hour").days_per_time_unit == pytest.approx(1 / 24)
    with pytest.raises(ScenarioError, match="time_unit = 'fortnight'"):
        load_sbml(path, time_unit="fortnight")


# --- command line -------------------------------------------------------------------------
def test_cli_run_writes_tables_trajectories_and_plot(tmp_path):
    out = tmp_path / "run"
    model = tmp_path / "leon.xml"
    shutil.copy(REF / "BIOMD0000001011.xml", model)
    res = CliRunner().invoke(app, ["run", str(model), "--out", str(out), "-n", "6", "--seed", "2", "--days", "30",
                                   "--points", "31", "--vary", "alpha=0.3", "--set", "tao_C=25"])
    assert res.exit_code == 0, res.output
    import xarray as xr

    patients = pd.read_parquet(out / "patients.parquet")
    assert len(patients) == 6 and {"patient_id", "alpha", "CAR_T_cells_max", "CAR_T_cells_time_of_max_days",
                                   "CAR_T_cells_final", "solver_status"} <= set(patients.columns)
    with xr.open_dataset(out / "trajectories.nc") as ds:
        assert dict(ds.sizes) == {"patient": 6, "time": 31}
        assert float(ds["time"][-1]) == 30.0
    assert (out / "trajectories.png").stat().st_size > 10_000
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["settings"]["parameters"] == {"tao_C": 25.0}
    assert prov["species_units"]["CAR_T_cells"]["units"] == "item/litre"


def test_cli_errors_are_carcell_errors(tmp_path):
    model = REF / "MODEL2109110005.xml"
    res = CliRunner().invoke(app, ["run", str(model), "--out", str(tmp_path / "a"), "--floor", "Q=1"])
    assert isinstance(res.exception, ScenarioError) and "floor Q=1" in str(res.exception)
    res = CliRunner().invoke(app, ["run", str(model), "--out", str(tmp_path / "b"), "--vary", "g"])
    assert isinstance(res.exception, ScenarioError) and "write NAME=NUMBER" in str(res.exception)
    res = CliRunner().invoke(app, ["run", str(model), "--out", str(tmp_path / "c"), "--days", "360"])
    assert isinstance(res.exception, ModelDomainError) and "--floor U=1e-9" in str(res.exception)
    res = CliRunner().invoke(app, ["run", str(model), "--out", str(tmp_path / "d"), "--days", "360",
                                   "--floor", "U=1e-9", "--no-plots"])
    assert res.exit_code == 0, res.output
