"""The published-model library: each preset reproduces its paper, and the checks can fail.

Expected values live in ``carcell/knowledge/data/published/<preset>.yaml`` (section
``published``) with their sources: the paper's tables and results text (Stein 2019), the
paper's figures read as stated relations (Barros 2021), or the libRoadRunner run of the
curated BioModels encoding (Hanson 2016, Leon-Triana 2021), never a run of this code.
Tolerances are named in each preset module. Where ``../shared/reference/biomodels`` is
present, whole trajectories are also compared with its CSVs (CVODE, rtol 1e-10).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.integrate import solve_ivp
from typer.testing import CliRunner

from carcell.errors import CarcellError, KnowledgeError
from carcell.published import PRESETS, get
from carcell.published.cartmath2021 import crosscheck_biomodels
from carcell.published.cli import app
from carcell.published.ode import Columns
from carcell.published.params import PUBLISHED_UNITS, _entry, parameter_set, preset_tree, section

BIOMODELS = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "biomodels"
needs_biomodels = pytest.mark.skipif(not BIOMODELS.is_dir(), reason="../shared/reference/biomodels not present")


def failures(checks) -> list[str]:
    return [f"{c.quantity}: reproduced {c.reproduced:.6g}, published {c.published:.6g} ({c.tolerance}; {c.source})"
            for c in checks if not c.passed]


# -- each preset against its paper -------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_reproduces_its_paper(name):
    """Every check of the preset passes (see each module for the figure/table and tolerance)."""
    checks = get(name).checks()
    assert len(checks) >= 3
    assert not failures(checks), "\n".join(failures(checks))


# mutation: one parameter changed, at least one figure check must fail
MUTATIONS = {
    "stein2019": {"alpha": 0.2},            # initial decline half-life 3.5 d instead of 4.3 d
    "cartmath2021": {"theta": 0.0},         # no memory re-activation: the rechallenge grows
    "hanson2016": {"p_1": 0.003},           # more inflammation per encounter: higher peak
    "leon_triana2021": {"alpha_2": 2.75e-10},  # 10% stronger killing: earlier, lower CAR-T peak
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_changing_one_parameter_breaks_a_figure_check(name):
    assert set(MUTATIONS) == set(PRESETS), "every preset needs a mutation test"
    assert failures(get(name).checks(MUTATIONS[name]))


# -- whole trajectories against the BioModels runs --------------------------------------------

@needs_biomodels
def test_cartmath_hdlm2_against_biomd0000001019():
    """Barros 2021 as encoded in BIOMD0000001019 (events at days 45 and 250); log-scale 2%."""
    checks = crosscheck_biomodels(BIOMODELS / "BIOMD0000001019.trajectory.csv")
    assert not failures(checks), "\n".join(failures(checks))


def _compare(ref: pd.DataFrame, ds: xr.Dataset, columns: dict[str, str], floor: float, rtol: float) -> list[str]:
    bad = []
    for state, col in columns.items():
        r, m = ref[col].to_numpy(), ds[state].to_numpy()[0]
        mask = np.abs(r) > floor
        rel = np.abs(m[mask] - r[mask]) / np.abs(r[mask])
        if rel.max() > rtol:
            bad.append(f"{col}: worst relative difference {rel.max():.3g} at t={ref['time'][mask].iloc[rel.argmax()]}")
    return bad


@needs_biomodels
def test_hanson_against_biomd0000000837_in_hours():
    """Hanson 2016, all seven dynamic species over 0-720 h; relative 1e-5 (both rtol <= 1e-9)."""
    ref = pd.read_csv(BIOMODELS / "BIOMD0000000837.trajectory.csv")
    ds = get("hanson2016").simulate(t=ref["time"].to_numpy())
    cols = {"C_m": "C_m", "C_e": "C_e", "H_m": "H_m", "H_e": "H_e", "L": "L", "I": "Inflam", "B": "B"}
    assert not _compare(ref, ds, cols, floor=1e-6, rtol=1e-5)


@needs_biomodels
def test_leon_triana_against_biomd0000001014():
    """Leon-Triana 2021, every species above one cell over 0-360 d; relative 1e-4."""
    ref = pd.read_csv(BIOMODELS / "BIOMD0000001014.trajectory.csv")
    ds = get("leon_triana2021").simulate(t=ref["time"].to_numpy())
    cols = {"car_on_tumour": "CAR_T_cells_on_tumour", "tumour": "Tumour_cells",
            "car_off_tumour": "CAR_T_cells_off_tumour", "b_cells": "B_cells"}
    assert not _compare(ref, ds, cols, floor=1.0, rtol=1e-4)


# -- the solver --------------------------------------------------------------------------------

def test_batched_cohort_equals_single_solves_and_scipy():
    """Three patients at once == each alone == SciPy DOP853 (rtol 1e-11); relative 1e-6."""
    from carcell.published.leon_triana2021 import _rhs

    m = get("leon_triana2021")
    t = np.linspace(0.0, 60.0, 61)
    alpha_1 = np.array([0.01, 0.02, 0.05])
    batch = m.simulate({"alpha_1": alpha_1}, t)["car_on_tumour"].to_numpy()
    proto = m.protocol()
    for i, a in enumerate(alpha_1):
        alone = m.simulate({"alpha_1": a}, t)["car_on_tumour"].to_numpy()[0]
        np.testing.assert_allclose(batch[i], alone, rtol=1e-12)
        p = Columns({k: np.array([v]) for k, v in {**m.typical(), "alpha_1": a}.items()})
        y0 = [0.0, proto["tumour_cells"].value, proto["car_t_cells"].value, proto["b_cells"].value]
        ref = solve_ivp(lambda tt, y: _rhs(np.array([tt]), y[None, :], p)[0], (0, 60), y0, method="DOP853",
                        rtol=1e-11, atol=1e-6, t_eval=t)
        np.testing.assert_allclose(batch[i, 1:], ref.y[0, 1:], rtol=1e-6)


def test_stein_closed_form_is_continuous_at_tmax():
    """Both pieces give Cmax at Tmax (the expansion reaches Cmax; the decline starts there)."""
    m = get("stein2019")
    p = m.typical()
    c = m.simulate(t=np.array([p["tmax"] - 1e-9, p["tmax"]]))["transgene"].to_numpy()[0]
    np.testing.assert_allclose(c, p["cmax"], rtol=1e-6)


# -- cohorts -----------------------------------------------------------------------------------

def test_cohort_is_reproducible_and_varies_between_patients():
    m = get("stein2019")
    a, b, c = m.cohort(30, seed=5, days=30), m.cohort(30, seed=5, days=30), m.cohort(30, seed=6, days=30)
    pd.testing.assert_frame_equal(a.patients, b.patients)
    assert not np.allclose(a.patients["cmax"], c.patients["cmax"])
    assert a.patients["transgene_peak"].nunique() == 30
    assert (a.patients["solver_status"] == "ok").all()


def test_unknown_parameter_names_the_nearest():
    with pytest.raises(CarcellError, match="did you mean 'gamma'"):
        get("cartmath2021").simulate({"gama": 1e-6})


def test_unknown_preset_suggests_the_nearest():
    with pytest.raises(CarcellError, match="did you mean 'stein2019'"):
        get("stein2109")


# -- the data files ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_number_of_a_preset_is_sourced(name):
    """Each entry of every section passes the house checker (units: KNOWN_UNITS + PUBLISHED_UNITS)."""
    tree = preset_tree(name)
    n = 0
    for set_name in tree.get("parameter_sets", {}):
        n += len(parameter_set(name, set_name))
    for sec in ("variability", "published"):
        n += len(section(name, sec))
    for proto in tree.get("protocols", {}) or {}:
        n += len(get(name).protocol(proto))
    assert n >= 8


def test_an_unsourced_entry_is_rejected_with_its_path():
    with pytest.raises(KnowledgeError, match="published.x.y.gamma: no 'source'"):
        _entry("published.x.y.gamma", {"value": 1.0, "unit": "1/(cells*day)"})
    with pytest.raises(KnowledgeError, match="unit"):
        _entry("published.x.y.gamma", {"value": 1.0, "unit": "furlongs", "source": "doi:10.1/x"})
    assert "1/(cells*day)" in PUBLISHED_UNITS


# -- the command line --------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_list_names_every_preset_with_its_doi():
    res = invoke("list")
    assert res.exit_code == 0, res.output
    for name, m in PRESETS.items():
        assert name in res.stdout
        assert m.citation.doi.split("/")[0] in res.stdout


def test_cli_show_prints_equations_and_sourced_parameters():
    res = invoke("show", "cartmath2021", "--set", "RAJI")
    assert res.exit_code == 0, res.output
    assert "dT/dt" in res.stdout and "gamma" in res.stdout and "3.36539e-08" in res.stdout
    assert "10.3390/cancers13122941" in res.stdout


def test_cli_run_writes_patients_trajectories_and_plot(tmp_path):
    res = invoke("run", "stein2019", "--out", tmp_path / "out", "-n", 12, "--seed", 3, "--days", 40)
    assert res.exit_code == 0, res.output
    patients = pd.read_parquet(tmp_path / "out" / "patients.parquet")
    assert len(patients) == 12 and (patients["transgene_peak"] > 0).all()
    ds = xr.open_dataset(tmp_path / "out" / "trajectories.nc")
    assert ds["transgene"].shape[0] == 12 and float(ds["time"][-1]) == 40.0
    ds.close()
    assert (tmp_path / "out" / "stein2019.png").stat().st_size > 1000
    assert (tmp_path / "out" / "provenance.json").exists()


@pytest.mark.parametrize("args,match", [
    (("run", "stien2019", "--out", "x"), "did you mean 'stein2019'"),
    (("run", "cartmath2021", "--out", "x", "--protocol", "hdlm2"), "--protocol 'hdlm2'"),
    (("run", "cartmath2021", "--out", "x", "--set", "raji"), "--set 'raji'"),
    (("run", "stein2019", "--out", "x", "-n", 0), "at least one patient"),
])
def test_cli_errors_are_carcell_errors(args, match):
    res = invoke(*args)
    assert isinstance(res.exception, CarcellError)
    assert match in str(res.exception)
