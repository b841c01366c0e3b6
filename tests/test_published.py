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
    "kirouac2023": {"TK50": 1.0e10},        # killing half-maximal only at 1e10 T_E2: CR no longer clears
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


# -- Kirouac 2023: phenotype toggle, CR/PR/NR parameter sets -------------------------------------
# Its figure checks (Fig 1c-d PCA shares and PC1 signs, Fig 1b group order and tumour response)
# run in test_preset_reproduces_its_paper; sources in kirouac2023.yaml, section ``published``.

def test_kirouac_fig1b_checks_fail_on_their_own():
    """N = 4 divisions for every set leaves the PCA shares (Fig 1c) within 0.05 point but
    breaks the Fig 1b response checks: the dynamic checks can fail, not only the PCA."""
    checks = get("kirouac2023").checks({"N": 4.0})
    failed = {c.quantity for c in checks if not c.passed}
    assert not any("Fig 1c" in q for q in failed)
    assert any("Fig 1b" in q for q in failed), failed


def test_kirouac_sets_match_the_cr_set_1_table_of_models_md():
    """CR set 1 as ../shared/reference/models.md section 2.3 tabulates it (3 significant digits),
    a transcription independent of the data file."""
    table = {"B50": 3.24e9, "mu_B": 0.0500, "k_kill": 0.958, "f_loss": 314.6, "TK50": 1e9, "k_t": 0.254,
             "k_B1": 0.997, "k_B2": 0.257, "mu_M": 0.253, "k_M": 0.721, "f_max": 0.580, "k_E": 2.71,
             "mu_E": 0.938, "N": 5.13, "k_ex": 0.160, "d_M": 0.0748, "d_E1": 0.291, "d_E2": 0.00757,
             "d_X": 0.0010, "B_max": 2.27e8, "k_X": 3.00, "r_M": 0.395, "k_R": 2.80, "f_TM": 1.0,
             "f_TE1": 1.13, "f_TE2": 45.0, "f_TX": 14.9}
    m = get("kirouac2023")
    got = m.typical("CR-1")
    assert set(got) == set(table)
    for k, v in table.items():
        assert got[k] == pytest.approx(v, rel=5e-3), k
    values, labels = m.fitted("all")
    assert len(labels) == 36 and all(len(v) == 36 for v in values.values())


def _kirouac_full_rhs(p):
    """The 8-state system of models.md section 2.3 (dose and engrafting compartments as ODEs)."""
    def hill(x, n, k):
        x = max(x, 0.0)
        return x**n / (k**n + x**n)

    def f(t, y):
        tm, te1, te2, tx, b, ba, dose, x = (max(v, 0.0) for v in y)
        s = p["f_max"] * (1 - hill(ba, p["k_M"], p["B50"]))
        reg = p["r_M"] * (1 - hill(ba, p["k_R"], p["B50"])) * te2
        burst = p["mu_E"] * hill(ba, p["k_E"], p["B50"]) * te1
        exh = p["k_ex"] * hill(ba, p["k_X"], p["B50"]) * te2
        total_f = p["f_TM"] + p["f_TE1"] + p["f_TE2"] + p["f_TX"]
        return [p["mu_M"] * s * tm - p["mu_M"] * (1 - s) * tm - p["d_M"] * tm + reg + p["f_TM"] * x,
                2 * p["mu_M"] * (1 - s) * tm - burst - p["d_E1"] * te1 + p["f_TE1"] * x,
                burst * 2 ** p["N"] - exh - p["d_E2"] * te2 - reg + p["f_TE2"] * x,
                exh - p["d_X"] * tx + p["f_TX"] * x,
                p["mu_B"] * b * (1 - b / p["B_max"]) - p["k_kill"] * b * hill(te2, p["k_t"], p["TK50"]),
                p["k_B1"] * b - p["k_B2"] * ba,
                -(p["f_loss"] + 1) * dose,
                dose - total_f * x]
    return f


@pytest.mark.parametrize("set_name", ["CR-1", "PR-2", "NR-3"])
def test_kirouac_closed_form_infusion_and_dopri5_match_the_full_ode(set_name):
    """carcell's run (infusion in closed form, DOPRI5 rtol 1e-8) vs the 8-state ODE with SciPy's
    Radau (rtol 1e-10): CAR-T total and tumour within 1e-6 relative wherever above one cell."""
    m = get("kirouac2023")
    proto = m.protocol()
    t = np.linspace(0.0, 120.0, 121)
    ds = m.simulate(t=t, set_name=set_name)
    y0 = [0, 0, 0, 0, proto["tumour_cells"].value, proto["antigen"].value, proto["dose_cells"].value, 0]
    ref = solve_ivp(_kirouac_full_rhs(m.typical(set_name)), (0, 120), y0, method="Radau", rtol=1e-10,
                    atol=1e-8, t_eval=t)
    assert ref.success
    for name, r in (("car_t", ref.y[:4].sum(axis=0)), ("B", ref.y[4])):
        got = ds[name].to_numpy()[0]
        mask = r > 1.0
        assert mask.sum() > 100
        np.testing.assert_allclose(got[mask], r[mask], rtol=1e-6, err_msg=name)


def test_kirouac_cohort_draws_whole_fitted_sets_of_one_group():
    m = get("kirouac2023")
    a = m.cohort(10, seed=4, days=30, set_name="NR")
    b = m.cohort(10, seed=4, days=30, set_name="NR")
    pd.testing.assert_frame_equal(a.patients, b.patients)
    assert set(a.patients["response_group"]) == {"NR"}
    assert a.patients["fitted_set"].isin([f"NR-{i}" for i in range(1, 13)]).all()
    assert (a.patients["solver_status"] == "ok").all()
    # a drawn patient is its fitted set: same CAR-T peak as that set run alone
    row = a.patients.iloc[0]
    alone = m.simulate(t=a.trajectories["time"].to_numpy(), set_name=row["fitted_set"])
    assert float(alone["car_t"].max()) == pytest.approx(row["car_t_peak"], rel=1e-9)


def test_kirouac_beyond_the_sets_keeps_only_plausible_patients():
    """Perturbed sets (variability section) pass the plausible-patient filter of models.md 2.3:
    solver ok and CAR-T peak within the fitted sets' range widened by the stated factor."""
    m = get("kirouac2023")
    c = m.cohort(8, seed=3, days=40, set_name="CR", beyond_sets=True)
    t = c.trajectories["time"].to_numpy()
    lo, hi = m._plausible_peaks(t, None)
    peaks = c.patients["car_t_peak"].to_numpy()
    assert ((peaks >= lo) & (peaks <= hi)).all() and (c.patients["solver_status"] == "ok").all()
    fitted = m.fitted("CR")[0]["TK50"]
    assert not np.isin(c.patients["TK50"].to_numpy(), fitted).any()      # sampled beyond the sets
    assert m._implausible(c.trajectories, lo=2 * peaks.max(), hi=np.inf).all()   # the filter can reject


def test_kirouac_cli_run_show_and_errors(tmp_path):
    res = invoke("run", "kirouac2023", "--out", tmp_path / "k", "-n", 6, "--seed", 1, "--days", 30, "--set", "CR")
    assert res.exit_code == 0, res.output
    patients = pd.read_parquet(tmp_path / "k" / "patients.parquet")
    assert len(patients) == 6 and set(patients["response_group"]) == {"CR"}
    assert (patients["car_t_peak"] > 0).all() and (patients["B_last"] < patients["B_peak"]).all()
    assert (tmp_path / "k" / "kirouac2023.png").stat().st_size > 1000
    show = invoke("show", "kirouac2023", "--set", "CR-1")
    assert show.exit_code == 0, show.output
    assert "dB/dt" in show.stdout and "3.23608e+09" in show.stdout and "10.1038/s41587-023-01687-x" in show.stdout
    bad = invoke("run", "kirouac2023", "--out", tmp_path / "x", "--set", "CR-13")
    assert isinstance(bad.exception, CarcellError) and "--set 'CR-13'" in str(bad.exception)
    with pytest.raises(CarcellError, match="did you mean 'k_kill'"):
        get("kirouac2023").simulate({"k_kil": 0.5})
