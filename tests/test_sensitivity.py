"""Global sensitivity analysis (carcell.sensitivity): index plumbing against analytic indices,
carcell's own outcomes against what the model's equations imply, reproducibility across
worker counts, one-line errors, and the command writing its files.

Expected values come from outside the code under test: the Ishigami function's analytic
Sobol' indices (Ishigami & Homma 1990; Sobol' & Levitan 1999, doi:10.1016/S0010-4655(98)00156-8),
exact elementary effects of linear, logarithmic and categorical test functions, and, for
carcell, the transgene copy number, which enters Cmax in copies/ug only as a factor
(carcell/clinical/blood.py copies_per_ug), so log10 Cmax moves by exactly log10 of its factor.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("SALib")

from carcell.errors import ScenarioError  # noqa: E402
from carcell.knowledge import load_knowledge  # noqa: E402
from carcell.sensitivity import (analyse_scenario, knowledge_values, load_params_file, make_parameter,  # noqa: E402
                                 parse_param, resolve_parameters, run_sensitivity)
from carcell.sensitivity.cli import read_raw, sensitivity  # noqa: E402
from carcell.sensitivity.evaluate import scenario_at  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "examples" / "axicel_lbcl.yaml"
FAST = ["trial.follow_up_days=30"]
N_PATIENTS, SEED = 8, 11
DOSE = "product.dose.cells_per_kg=1e5:1e7:log"
VCN = "knowledge:car_t.product.vector_copies_per_cell=x0.5:2:log"
UNUSED = "knowledge:armour.IL-12.multipliers.k_kill=x0.5:2"   # axi-cel carries no armour
CMAX = "log10_cmax_median_copies_per_ug"

# Ishigami (a=7, b=0.1), inputs uniform on [-pi, pi]: analytic first-order and total indices
ISHIGAMI_S1 = [0.3139, 0.4424, 0.0]
ISHIGAMI_ST = [0.5576, 0.4424, 0.2437]
SOBOL_ATOL = 0.03   # N=1024 base points: bootstrap half-widths are 0.02-0.08; observed errors < 0.01


def ishigami(point: dict) -> dict:
    x1, x2, x3 = point["x1"], point["x2"], point["x3"]
    return {"y": math.sin(x1) + 7.0 * math.sin(x2) ** 2 + 0.1 * x3 ** 4 * math.sin(x1)}


def test_sobol_recovers_ishigami_analytic_indices():
    params = [make_parameter(f"x{i}", low=-math.pi, high=math.pi) for i in (1, 2, 3)]
    res = run_sensitivity(params, ishigami, method="sobol", n_samples=1024, seed=3)
    ind = res.indices.set_index("parameter")
    np.testing.assert_allclose(ind["S1"], ISHIGAMI_S1, atol=SOBOL_ATOL)
    np.testing.assert_allclose(ind["ST"], ISHIGAMI_ST, atol=SOBOL_ATOL)
    assert len(res.points) == 1024 * (3 + 2)
    # convergence: the same indices on the first 128, 256, 512 and 1024 base points, intervals narrowing
    conv = res.convergence
    assert sorted(conv["n_base"].unique()) == [128, 256, 512, 1024]
    width = conv.groupby("n_base")["ST_conf"].mean()
    assert width[1024] < width[128]


def test_sobol_linear_model_shares_variance_by_squared_weights():
    """y = 3 a + b (+ 0 c) with a, b, c uniform on [0, 2]: S1 = ST = 9/10, 1/10, 0."""
    params = [make_parameter(p, low=0.0, high=2.0) for p in ("a", "b", "c")]
    res = run_sensitivity(params, lambda p: {"y": 3 * p["a"] + p["b"]}, method="sobol", n_samples=256, seed=1)
    ind = res.indices.set_index("parameter")
    np.testing.assert_allclose(ind["S1"], [0.9, 0.1, 0.0], atol=0.02)
    np.testing.assert_allclose(ind["ST"], [0.9, 0.1, 0.0], atol=0.02)


def test_morris_exact_elementary_effects_of_linear_log_and_categorical_inputs():
    """Per unit of the sampled interval: linear a (hi - lo); log10 of a log-uniform input over
    two decades: 2; a two-level choice worth 1: 1 / (2/3) (each move of a 4-level grid is 2/3)."""
    params = [make_parameter("lin", low=1.0, high=4.0), make_parameter("dose", low=1e5, high=1e7, scale="log"),
              make_parameter("choice", levels=["A", "B"])]

    def f(p):
        return {"y": 2.0 * p["lin"] + math.log10(p["dose"]) + (p["choice"] == "B")}

    res = run_sensitivity(params, f, method="morris", n_samples=6, seed=2)
    ind = res.indices.set_index("parameter")
    np.testing.assert_allclose(ind["mu_star"], [6.0, 2.0, 1.5], rtol=1e-9)
    np.testing.assert_allclose(ind["sigma"], 0.0, atol=1e-9)
    assert len(res.points) == 6 * (3 + 1)
    assert set(res.convergence["trajectories"]) == {2, 3, 4, 6}


def test_parameter_forms_and_params_file(tmp_path):
    p = parse_param("knowledge:tme.proliferation_weight=x0.5:1.5")
    assert p.path == "knowledge:tme.proliferation_weight"
    assert (p.low, p.high, p.relative, p.scale) == (0.5, 1.5, True, "linear")
    dose = parse_param(DOSE)
    assert dose.scale == "log" and (dose.low, dose.high) == (1e5, 1e7)
    assert dose.value(0.5) == pytest.approx(1e6, rel=1e-12)
    costim = parse_param("product.car.costim=[CD28,4-1BB]")
    assert costim.levels == ("CD28", "4-1BB")
    f = tmp_path / "params.yaml"
    f.write_text("params:\n  - product.dose.cells_per_kg=1e5:1e7:log\n"
                 "  - {path: knowledge:tme.proliferation_weight, range: [0.5, 1.5], relative: true}\n"
                 "  - {path: product.car.costim, levels: [CD28, 4-1BB]}\n")
    assert load_params_file(f) == [dose, p, costim]


def test_resolution_makes_bounds_absolute_and_categorical_levels_valid():
    raw = read_raw(SCENARIO, FAST)
    nominal = float(load_knowledge().value("car_t.product.vector_copies_per_cell"))
    vcn, costim = resolve_parameters([parse_param(VCN), parse_param("product.car.costim=[CD28,4-1BB]")], raw)
    assert (vcn.low, vcn.high) == pytest.approx((0.5 * nominal, 2 * nominal))
    assert costim.levels == (["CD28"], ["4-1BB"])   # a list field takes one-item lists
    sc = scenario_at(raw, {costim.path: costim.value(0.9)}, 4, 1)
    assert sc.product.car.costim == ["4-1BB"] and sc.population.n == 4


def test_knowledge_values_are_restored_even_after_an_error():
    path = "car_t.product.vector_copies_per_cell"
    before = load_knowledge().value(path)
    with pytest.raises(RuntimeError):
        with knowledge_values({path: 99.0}):
            assert load_knowledge().value(path) == 99.0
            raise RuntimeError("boom")
    assert load_knowledge().value(path) == before


@pytest.mark.parametrize("spec, match", [
    ("knowledge:car_t.kinetics.rho_efector=0.5:1",
     r"--param knowledge:car_t.kinetics.rho_efector: .*did you mean 'rho_effector'"),
    ("product.dose.cells_per_kgg=1e5:1e7", r"--param product.dose.cells_per_kgg: .*did you mean 'cells_per_kg'"),
    ("product.car.costim=[CD-28,4-1BB]", r"--param product.car.costim: at \['CD-28'\].*did you mean 'CD28'"),
    ("knowledge:car_t.kinetics=0.5:1", r"knowledge car_t.kinetics is a section"),
    ("population.n=5:50", r"population.n defines the cohort"),
])
def test_bad_parameter_is_one_line_naming_it(spec, match):
    raw = read_raw(SCENARIO, FAST)
    with pytest.raises(ScenarioError, match=match) as err:
        resolve_parameters([parse_param(spec)], raw, str(SCENARIO))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("spec", ["product.dose.cells_per_kg", "product.dose.cells_per_kg=1e7:1e5",
                                  "product.dose.cells_per_kg=0:1e7:log", "product.dose.cells_per_kg=a:b",
                                  "product.dose.cells_per_kg=1:2:cubic"])
def test_malformed_range_is_one_line(spec):
    with pytest.raises(ScenarioError, match="--param product.dose.cells_per_kg") as err:
        parse_param(spec)
    assert "\n" not in str(err.value)


def test_sobol_needs_a_power_of_two():
    with pytest.raises(ScenarioError, match="power of 2"):
        analyse_scenario(read_raw(SCENARIO, FAST), [parse_param(DOSE)], method="sobol", n_samples=10)


@pytest.fixture(scope="module")
def morris_cohorts():
    """Morris over dose, transgene copies per cell and an armour parameter the product lacks:
    2 trajectories x 4 points = 8 cohorts of 8 patients, 30 days, in this process."""
    raw = read_raw(SCENARIO, FAST)
    params = [parse_param(s) for s in (DOSE, VCN, UNUSED)]
    return analyse_scenario(raw, params, method="morris", n_samples=2, n_patients=N_PATIENTS, seed=SEED,
                            source=str(SCENARIO))


def test_carcell_indices_match_what_the_equations_imply(morris_cohorts):
    ind = morris_cohorts.indices.set_index(["outcome", "parameter"])
    mu = ind["mu_star"]
    # the armour the product does not carry changes nothing, for every outcome (same patients)
    assert (mu.xs(UNUSED.split("=")[0], level="parameter") == 0.0).all()
    # copies per cell scale Cmax in copies/ug and nothing else: log10(2 / 0.5) per unit interval
    vcn = VCN.split("=")[0]
    assert mu[(CMAX, vcn)] == pytest.approx(math.log10(4.0), rel=1e-9)
    assert ind.loc[(CMAX, vcn), "sigma"] == pytest.approx(0.0, abs=1e-9)
    assert mu[("cr_rate", vcn)] == 0.0
    # dose moves Cmax clearly (observed about 0.09 log10 per unit interval of two decades)
    assert mu[(CMAX, DOSE.split("=")[0])] > 0.02
    assert morris_cohorts.values["solver_failures"].sum() == 0


def test_cli_writes_files_and_worker_count_does_not_change_indices(morris_cohorts, tmp_path):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(sensitivity)
    out = tmp_path / "sens"
    args = [str(SCENARIO), "-o", str(out), "-p", DOSE, "-p", VCN, "-p", UNUSED, "--method", "morris",
            "-N", "2", "-n", str(N_PATIENTS), "--seed", str(SEED), "--workers", "2", "--set", FAST[0]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in ("indices.csv", "convergence.csv", "samples.parquet", "sensitivity.json",
                 "morris_tornado.png", "convergence.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "morris_tornado.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = pd.read_csv(out / "indices.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(written, morris_cohorts.indices, check_dtype=False, rtol=0, atol=0)
    samples = pd.read_parquet(out / "samples.parquet")
    assert len(samples) == 8 and {DOSE.split("=")[0], CMAX, "cr_rate", "pfs_landmark"} <= set(samples.columns)
    np.testing.assert_array_equal(samples[CMAX].to_numpy(), morris_cohorts.values[CMAX].to_numpy())


def test_cli_bad_parameter_raises_one_line_error(tmp_path):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(sensitivity)
    out = tmp_path / "bad"
    result = CliRunner().invoke(app, [str(SCENARIO), "-o", str(out), "-p", "product.dose.cells_per_kgg=1e5:1e7"])
    assert isinstance(result.exception, ScenarioError)
    assert "cells_per_kgg" in str(result.exception) and "\n" not in str(result.exception)
    assert not out.exists()   # nothing written before the inputs are checked


def test_sobol_plot_and_json_from_an_analytic_run(tmp_path):
    import json

    params = [make_parameter(f"x{i}", low=-math.pi, high=math.pi) for i in (1, 2, 3)]
    res = run_sensitivity(params, ishigami, method="sobol", n_samples=64, seed=5)
    files = res.write(tmp_path)
    assert {f.name for f in files} >= {"sobol_indices.png", "convergence.png", "indices.csv", "samples.parquet"}
    meta = json.loads((tmp_path / "sensitivity.json").read_text())
    assert (meta["method"], meta["N"], meta["seed"], meta["evaluations"]) == ("sobol", 64, 5, 320)
    assert [p["path"] for p in meta["params"]] == ["x1", "x2", "x3"]


def test_executor_hook_gives_the_same_indices():
    """Any executor(fn, points) returning results in order (a Dask client's map/gather) plugs in;
    here a thread pool, which runs the points out of order."""
    from concurrent.futures import ThreadPoolExecutor

    params = [make_parameter(f"x{i}", low=-math.pi, high=math.pi) for i in (1, 2, 3)]
    used = []

    def executor(fn, points):
        used.append(len(points))
        with ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(fn, points))

    base = run_sensitivity(params, ishigami, method="sobol", n_samples=32, seed=9)
    hooked = run_sensitivity(params, ishigami, method="sobol", n_samples=32, seed=9, executor=executor)
    assert used == [32 * 5]
    pd.testing.assert_frame_equal(hooked.indices, base.indices, rtol=0, atol=0)


def test_sample_points_on_a_dask_cluster_give_the_same_indices(morris_cohorts, tmp_path):
    """The same Morris run with its points on a real local Dask cluster (loopback, two worker
    processes of one thread each, through --scheduler) gives the in-process indices exactly."""
    distributed = pytest.importorskip("distributed")
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command()(sensitivity)
    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        args = [str(SCENARIO), "-o", str(out), "-p", DOSE, "-p", VCN, "-p", UNUSED, "--method", "morris",
                "-N", "2", "-n", str(N_PATIENTS), "--seed", str(SEED), "--scheduler", cluster.scheduler_address,
                "--set", FAST[0], "--no-plots"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out / "indices.csv", float_precision="round_trip")
    pd.testing.assert_frame_equal(written, morris_cohorts.indices, check_dtype=False, rtol=0, atol=0)
