"""Virtual trials: randomisation, comparator arms, deaths, ITT/mITT, reproducibility, calibration
by reweighting. Simulated CAR arms are kept small and short; the statistics live in test_trial_stats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.statistics import logrank_test

from carcell.knowledge import load_knowledge
from carcell.scenario.load import validate_raw
from carcell.trial.calibrate import Target, TargetSet, fit_weights, measure
from carcell.trial.run import randomise, run_trial
from carcell.trial.soc import soc_patients
from carcell.trial.survival import MONTH_DAYS, DeathModel

K = load_knowledge()


def _scenario(**trial) -> object:
    raw = {"name": "t", "product": {"preset": "axi-cel", "dose": {"cells_per_kg": 2e6}},
           "indication": {"disease": "LBCL"}, "population": {"n": 16, "seed": 5},
           "trial": {"follow_up_days": 120, **trial}}
    return validate_raw(raw)


def test_randomisation_keeps_the_ratio_in_every_block_and_is_reproducible():
    a = randomise(600, [2, 1], seed=3)
    assert np.array_equal(a, randomise(600, [2, 1], seed=3))
    assert not np.array_equal(a, randomise(600, [2, 1], seed=4))
    for b in range(100):                       # blocks of 6: four to arm 0, two to arm 1
        block = a[6 * b:6 * b + 6]
        assert (block == 0).sum() == 4 and (block == 1).sum() == 2


def test_background_mortality_matches_the_life_table_at_its_anchor():
    d = DeathModel.from_knowledge(K, "LBCL")
    u = (np.arange(200_000) + 0.5) / 200_000
    days = d.background_death_day(np.full(u.size, 84.0), u)
    q = np.mean(days <= 365.25)
    assert q == pytest.approx(float(K.value("survival.background.death_probability_at_reference_age")), rel=0.06)
    # mortality at 60 is an order of magnitude lower (Gompertz doubling ~8 years)
    assert np.mean(d.background_death_day(np.full(u.size, 60.0), u) <= 365.25) < q / 5


def _soc(n=6000, regimen="LBCL_2L_salvage_ASCT", follow=4000.0):
    d = DeathModel.from_knowledge(K, "LBCL")
    ids = np.arange(n)
    return soc_patients(K, regimen, ids, np.full(n, 58.0), np.full(n, 80.0), 11, follow, 28.0, d)


def test_standard_of_care_arm_reproduces_zuma7_published_numbers():
    """ZUMA-7 standard care (doi:10.1056/NEJMoa2116133): ORR 50%, CR 32%, EFS median 2.0 mo,
    24-month EFS 16%, OS median 31.1 mo; tolerances are sampling error at n=6000 plus the
    small extra loss from background mortality at age 58."""
    from lifelines import KaplanMeierFitter

    df = _soc()
    assert df["best_response"].isin(["CR", "PR"]).mean() == pytest.approx(0.50, abs=0.02)
    assert (df["best_response"] == "CR").mean() == pytest.approx(0.32, abs=0.02)
    km = KaplanMeierFitter().fit(df["efs_days"], df["efs_event"])
    assert km.median_survival_time_ / MONTH_DAYS == pytest.approx(2.0, abs=0.2)
    assert float(km.predict(24 * MONTH_DAYS)) == pytest.approx(0.16, abs=0.02)
    km_os = KaplanMeierFitter().fit(df["os_days"], df["os_event"])
    assert km_os.median_survival_time_ / MONTH_DAYS == pytest.approx(31.1, rel=0.08)
    assert (df["os_days"] >= df["pfs_days"] - 1e-9).all()


def test_two_identical_arms_differ_only_by_chance():
    """Identical comparator arms: the log-rank test rejects at 5% in about 5% of seeds."""
    rejections = 0
    for seed in range(40):
        df = _soc(400)
        arm = randomise(400, [1, 1], seed)
        d = DeathModel.from_knowledge(K, "LBCL")
        df = soc_patients(K, "LBCL_2L_salvage_ASCT", np.arange(400), np.full(400, 58.0), np.full(400, 80.0),
                          seed, 730.0, 28.0, d)
        a, b = df[arm == 0], df[arm == 1]
        p = logrank_test(a["pfs_days"], b["pfs_days"], a["pfs_event"], b["pfs_event"]).p_value
        rejections += p < 0.05
    assert rejections <= 6   # binomial(40, 0.05): P(X > 6) < 0.5%


def test_single_arm_trial_has_endpoints_consistent_with_the_course():
    r = run_trial(_scenario())
    df = r.patients
    assert len(df) == 16 and (df["arm"] == "axi-cel").all() and df["infused"].all()
    prog = df["progression_day"].to_numpy(float)
    # progression or death ends progression-free survival; death ends overall survival
    has_prog = ~np.isnan(prog)
    assert np.all(df.loc[has_prog, "pfs_days"] <= prog[has_prog] + 1e-9)
    assert np.all(df["os_days"] >= df["pfs_days"] - 1e-9)
    assert set(df["death_cause"]) <= {"none", "progression", "crs", "icans", "infection", "other"}
    died = df["death_day"].notna()
    assert (df.loc[died, "os_event"]).all() and not df.loc[~died, "os_event"].any()
    assert (r.events["event"] == "death").sum() == died.sum()


def test_not_infused_patients_count_in_itt_but_not_in_mitt():
    sc = _scenario(arms=[{"name": "axi-cel", "not_infused_fraction": 0.4}])
    df = run_trial(sc).patients
    ni = df[~df["infused"]]
    assert 0 < len(ni) < len(df)
    assert (ni["best_response"] == "NE").all() and ni["pfs_event"].all()
    assert ni["cmax_copies_per_ug"].isna().all() if "cmax_copies_per_ug" in ni else True


def test_trial_is_identical_with_one_or_two_worker_processes():
    a = run_trial(_scenario(workers=1, follow_up_days=60)).patients
    b = run_trial(_scenario(workers=2, follow_up_days=60)).patients
    pd.testing.assert_frame_equal(a, b)


def test_arms_keep_their_patients_whoever_else_is_in_the_trial():
    """A patient's draws depend on (seed, id) only: the same id in a two-arm trial has the same
    covariates as in a single-arm trial of the same product."""
    single = run_trial(_scenario()).patients.set_index("patient_id")
    two = run_trial(_scenario(arms=[{"name": "axi-cel"},
                                    {"name": "soc", "standard_of_care": "LBCL_2L_salvage_ASCT"}])).patients
    car = two[two["arm"] == "axi-cel"].set_index("patient_id")
    assert len(car) and len(car) < 16
    pd.testing.assert_series_equal(car["cmax_copies_per_ug"], single.loc[car.index, "cmax_copies_per_ug"])
    assert set(two["arm"]) == {"axi-cel", "soc"}


def test_reweighting_recovers_a_known_population():
    """Synthetic plausible population: outcome 'responder' when the log multiplier exceeds 0.2.
    Targets computed from a known population (mu=0.5, omega=0.4) are met by the fit, which lands
    near the truth."""
    rng = np.random.default_rng(0)
    n = 20_000
    l = 1.0 * rng.standard_normal(n)             # prior omega0 = 1
    resp = np.where(l > 0.2, "CR", "PD")
    resp = np.where((l > 0.2) & (l < 0.9), "PR", resp)
    df = pd.DataFrame({"best_response": resp})
    from scipy.stats import norm
    orr = 1 - norm.cdf(0.2, 0.5, 0.4)
    cr = 1 - norm.cdf(0.9, 0.5, 0.4)
    ts = TargetSet("synthetic", {"k_kill": 1.0},
                   [Target("orr", orr, 2000, None, "truth"), Target("cr", cr, 2000, None, "truth")])
    fit = fit_weights(df, {"k_kill": l}, ts, ess_floor=50)
    mult, omega = fit.parameters["k_kill"]
    assert fit.table["inside"].all()
    assert np.log(mult) == pytest.approx(0.5, abs=0.12)
    assert omega == pytest.approx(0.4, abs=0.15)
    assert measure(df, "orr", fit.weights) == pytest.approx(orr, abs=0.01)


def test_median_measure_interpolates_the_event_free_curve():
    df = pd.DataFrame({"pfs_days": [28.0, 90.0, 90.0, 180.0, 365.0, 365.0],
                       "pfs_event": [True, True, True, True, False, False]})
    # S: 1 -> 5/6 at 28 -> 3/6 at 90: crosses one half exactly at 90
    assert measure(df, "pfs_median_days") == pytest.approx(90.0)
    df.loc[2, "pfs_days"] = 180.0   # S(90) = 4/6, S(180) = 2/6: halfway between
    assert measure(df, "pfs_median_days") == pytest.approx(135.0)
    assert measure(df, "pfs_at_100") == pytest.approx(4 / 6)


def test_level_on_a_day_is_read_from_the_trajectories_and_interpolated():
    """QUANTITY_day_DAY_median targets: each patient's level on the day, from the output grid
    (linear between grid times), patients matched by id; a day past follow-up has no level."""
    from carcell.trial.calibrate import with_levels

    result = run_trial(_scenario(arms=[{"name": "axi-cel"},
                                       {"name": "soc", "standard_of_care": "LBCL_2L_salvage_ASCT"}]))
    ts = TargetSet("t", {}, [Target(f"car_cells_per_ul_day_{d}_median", 1.0, 20, None, "test")
                             for d in ("7", "7.5", "500")])
    df = with_levels(result, ts).set_index("patient_id")
    t, x = result.times, result.trajectories["car_cells_per_ul"]
    i7 = np.searchsorted(t, 7.0)
    assert t[i7] == 7.0
    ids = result.trajectory_ids
    np.testing.assert_array_equal(df.loc[ids, "car_cells_per_ul_day_7"], x[:, i7])
    np.testing.assert_allclose(df.loc[ids, "car_cells_per_ul_day_7.5"],
                               [np.interp(7.5, t, row) for row in x.astype(float)], rtol=1e-6)
    soc = df[df["arm"] == "soc"]
    assert len(soc) and soc["car_cells_per_ul_day_7"].isna().all()     # no CAR trajectories
    assert df["car_cells_per_ul_day_500"].isna().all()                  # past the 120-day follow-up
    median = measure(df.reset_index(), "car_cells_per_ul_day_7_median")
    assert median == pytest.approx(np.median(x[:, i7]), rel=0.3)       # weighted median: one of the values
    assert median in set(x[:, i7])


def _two_group_target(tmp_path, name: str, value: float, ci95: str):
    """A targets file with one two-group target: refused with only an ``n``, read with its
    ``ci95``; returns the target read."""
    from carcell.errors import ScenarioError
    from carcell.trial.calibrate import load_targets

    path = tmp_path / "t.yaml"
    path.write_text(f"trial: t\nparameters: {{k_kill: 1.0}}\ntargets:\n  {name}: {{value: {value}, n: 127, source: test}}\n")
    with pytest.raises(ScenarioError, match=f"{name}.*ci95"):
        load_targets(path)
    path.write_text(path.read_text().replace("n: 127", f"ci95: {ci95}"))
    return load_targets(path).targets[0]


def test_response_difference_by_crs_is_weighted_within_each_group(tmp_path):
    """RESPONSE_difference_by_crs: the (weighted) response rate among patients with CRS minus
    among those without; NaN when a group is empty; a target of it must give its ci95."""
    df = pd.DataFrame({"crs_max_grade": [0, 0, 1, 2, 3],
                       "best_response": ["CR", "PD", "PR", "CR", "SD"]})
    assert measure(df, "cr_difference_by_crs") == pytest.approx(1 / 3 - 1 / 2)
    assert measure(df, "orr_difference_by_crs") == pytest.approx(2 / 3 - 1 / 2)
    w = np.array([0.1, 0.3, 0.2, 0.2, 0.2])     # the CR without CRS weighs a quarter of its group
    assert measure(df, "cr_difference_by_crs", w) == pytest.approx(1 / 3 - 1 / 4)
    assert np.isnan(measure(df.assign(crs_max_grade=1), "cr_difference_by_crs"))
    target = _two_group_target(tmp_path, "cr_difference_by_crs", 0.0, "[-0.18, 0.18]")
    assert target.se() == pytest.approx(0.18 / 1.96)


def test_responder_ratio_is_the_median_among_responders_over_the_median_among_the_others(tmp_path):
    """COLUMN_responder_ratio (a label's "Cmax about 4.5-fold higher in responders"): the weighted
    median of a kinetics column among PR-or-better over that among the others; NaN when a group
    is empty; a target of it compares two groups, so it must give its ci95, and is fitted on the
    log scale."""
    df = pd.DataFrame({"best_response": ["CR", "VGPR", "PR", "SD", "PD", "PD"],
                       "cmax_copies_per_ug": [900.0, 400.0, 100.0, 50.0, 20.0, 10.0]})
    assert measure(df, "cmax_copies_per_ug_responder_ratio") == pytest.approx(400.0 / 20.0)
    w = np.array([0.3, 0.05, 0.05, 0.2, 0.2, 0.2])   # the CR carries its group; SD/PD weigh alike
    assert measure(df, "cmax_copies_per_ug_responder_ratio", w) == pytest.approx(900.0 / 20.0)
    assert np.isnan(measure(df.assign(best_response="PD"), "cmax_copies_per_ug_responder_ratio"))
    target = _two_group_target(tmp_path, "cmax_copies_per_ug_responder_ratio", 4.5, "[2.58, 7.84]")
    assert target.kind == "log"
    assert target.se() == pytest.approx(np.log(7.84 / 2.58) / (2 * 1.96))


def test_toxicity_timing_medians_are_taken_over_the_patients_who_had_the_toxicity():
    """crs_duration_days_median, icans_onset_day_median, ...: a target may be the median onset or
    duration of CRS or ICANS (a label gives them), over the patients who had it (the others have
    no value), weighted like every other measure."""
    from carcell.trial.calibrate import measure_name_check

    for name in ("crs_duration_days_median", "icans_duration_days_median", "icans_onset_day_median",
                 "crs_onset_day_geomean", "response_day_median"):
        measure_name_check(name, "targets.yaml")       # accepted
    df = pd.DataFrame({"icans_duration_days": [np.nan, 2.0, 4.0, 30.0, np.nan]})
    assert measure(df, "icans_duration_days_median") == pytest.approx(4.0)
    w = np.array([0.1, 0.1, 0.1, 0.6, 0.1])        # the long episode outweighs the two short ones
    assert measure(df, "icans_duration_days_median", w) == pytest.approx(30.0)


@pytest.mark.parametrize("name,expected", [
    ("car_cells_per_litre_day_7_median", "'car_cells_per_litre' is not a trajectory quantity"),
    ("car_cells_per_ul_day_7_mean", "unknown measure"),
])
def test_unknown_level_measures_are_named(name, expected):
    from carcell.errors import ScenarioError
    from carcell.trial.calibrate import measure_name_check

    with pytest.raises(ScenarioError) as err:
        measure_name_check(name, "targets.yaml")
    assert expected in str(err.value) and name in str(err.value)


# Each bundled calibration, re-simulated with a seed and N of its own (not the calibration's),
# lands inside the published 95% intervals of the endpoints it was fitted to.
CALIBRATED = [
    ("axi-cel_LBCL", "examples/axicel_lbcl.yaml", "efficacy_zuma1.yaml", 365),
    ("tisa-cel_LBCL", "examples/tisacel_lbcl.yaml", "efficacy_juliet.yaml", 365),
    ("ide-cel_MM", "examples/idecel_mm.yaml", "efficacy_karmma_kinetics.yaml", 365),
    ("tisa-cel_B-ALL", "examples/tisacel_ball.yaml", "efficacy_eliana_kinetics.yaml", 1095),
]


# Targets a calibration does not reach (its own fit misses them too; docs/calibration.md says
# why), each held to a stated looser bound: within this factor of the published value.
KNOWN_MISSES = {
    # the contraction after day 14 is faster than ZUMA-1's: fit 1.08, re-simulated 1.06-1.24
    # against 2.1 (1.18-3.74); the memory tail that would hold it is not among the fitted parameters
    ("axi-cel_LBCL", "car_cells_per_ul_day_28_median"): 2.5,
    # the responders' AUC over days 0-28 is too far above the non-responders': fit 9.5, re-simulated
    # 13-17 against 5.5 (3.1-9.7); the Cmax ratio sits at its interval's lower edge, 2.5-3.5 in
    # fresh cohorts of 150-1,000 against 4.5 (2.58-7.84) (docs/calibration.md)
    ("ide-cel_MM", "auc_0_28_copies_day_per_ug_responder_ratio"): 3.5,
    ("ide-cel_MM", "cmax_copies_per_ug_responder_ratio"): 2.0,
}


@pytest.mark.parametrize("calibration,example,targets,days", CALIBRATED, ids=lambda v: str(v))
def test_calibrated_example_lands_inside_the_published_intervals(calibration, example, targets, days):
    from pathlib import Path

    from carcell.scenario.load import load_scenario
    from carcell.trial.calibrate import check_table, load_targets, with_levels

    root = Path(__file__).resolve().parents[1]
    sc = load_scenario(root / example, ["population.n=150", "population.seed=424242",
                                        f"population.calibration={calibration}",
                                        f"trial.follow_up_days={days}"])
    ts = load_targets(root / "validation" / "targets" / targets)
    table = check_table(with_levels(run_trial(sc), ts), ts)
    for r in table.itertuples():
        factor = KNOWN_MISSES.get((calibration, r.target))
        if factor is None:
            assert r.inside, table.to_string()
        else:
            assert 1 / factor < r.model / r.published < factor, table.to_string()


@pytest.mark.parametrize("arms,expected", [
    ([{"name": "a", "product": {"dose": {"cells_per_kgg": 3}}}], "trial.arms[0] (a): product.dose.cells_per_kgg"),
    ([{"name": "a"}, {"name": "b", "standard_of_care": "LBCL_salvage"}], "standard-of-care regimen"),
    ([{"name": "a"}, {"name": "a"}], "arm names must be unique"),
    ([{"name": "s", "standard_of_care": "LBCL_2L_salvage_ASCT", "product": {"preset": "axi-cel"}}],
     "takes no product"),
])
def test_bad_arms_are_named_with_the_fix(arms, expected):
    from carcell.errors import ScenarioError
    from carcell.trial.run import arm_specs

    with pytest.raises(ScenarioError, match=None) as err:
        arm_specs(validate_raw({"indication": {"disease": "LBCL"}, "trial": {"arms": arms}}))
    assert expected in str(err.value)


def test_calibrate_command_writes_a_calibration_scenarios_can_use(tmp_path):
    """`carcell calibrate` end to end on a tiny plausible population (one round, 40 patients,
    60 days): it writes calibration.yaml, fit.csv and the diagnostics plot, and a scenario
    that names the file resolves with the fitted multiplier and omega."""
    from pathlib import Path

    from typer.testing import CliRunner

    from carcell.cli import app
    from carcell.design import resolve_design

    root = Path(__file__).resolve().parents[1]
    targets = tmp_path / "t.yaml"
    targets.write_text("trial: tiny\nparameters: {k_kill: 1.0}\n"
                       "targets:\n  orr: {value: 0.6, n: 50, source: assumption}\n")
    out = tmp_path / "cal"
    res = CliRunner().invoke(app, ["calibrate", str(root / "examples" / "axicel_lbcl.yaml"), "-t", str(targets),
                                   "-o", str(out), "-n", "40", "--rounds", "1", "--check-n", "0",
                                   "--set", "trial.follow_up_days=60"])
    assert res.exit_code == 0, res.output
    for f in ("calibration.yaml", "fit.csv", "calibration.png"):
        assert (out / f).stat().st_size > 0, f
    fit = pd.read_csv(out / "fit.csv")
    assert list(fit["target"]) == ["orr"]
    sc = validate_raw({"product": {"preset": "axi-cel"}, "indication": {"disease": "LBCL"},
                       "population": {"calibration": str(out / "calibration.yaml")}})
    base = validate_raw({"product": {"preset": "axi-cel"}, "indication": {"disease": "LBCL"}})
    d, d0 = resolve_design(sc, K), resolve_design(base, K)
    from carcell.io.yamlio import load_yaml
    entry = load_yaml(out / "calibration.yaml")["parameters"]["k_kill"]
    assert d.typical["k_kill"] == pytest.approx(d0.typical["k_kill"] * entry["multiplier"]["value"])
    assert d.variability["k_kill"] == pytest.approx(entry["omega"]["value"])
    assert 0 < entry["omega"]["value"] <= 1.0   # never wider than the prior omega0


def test_a_held_parameter_shapes_every_plausible_population_and_lands_in_the_calibration(tmp_path):
    """`held:` in a targets file: a parameter kept at a stated multiplier and omega, not fitted.
    The fitted parameters are still written; the held one is written with its reason, and a
    scenario naming the file gets both. Two rounds, so the first round's held-only file and the
    later rounds' fit-plus-held files are both used. A held parameter also fitted is refused."""
    from pathlib import Path

    from typer.testing import CliRunner

    from carcell.cli import app
    from carcell.design import resolve_design
    from carcell.errors import ScenarioError
    from carcell.io.yamlio import load_yaml
    from carcell.trial.calibrate import load_targets

    root = Path(__file__).resolve().parents[1]
    targets = tmp_path / "t.yaml"
    targets.write_text("trial: tiny\nparameters: {k_kill: 1.0}\n"
                       "held:\n  tumour_growth_rate: {multiplier: 2.5, omega: 0.4, note: \"from another fit\"}\n"
                       "targets:\n  orr: {value: 0.6, n: 50, source: assumption}\n")
    out = tmp_path / "cal"
    res = CliRunner().invoke(app, ["calibrate", str(root / "examples" / "axicel_lbcl.yaml"), "-t", str(targets),
                                   "-o", str(out), "-n", "40", "--rounds", "2", "--check-n", "0",
                                   "--set", "trial.follow_up_days=60"])
    assert res.exit_code == 0, res.output
    assert "tumour_growth_rate: held at typical x 2.5, omega 0.4" in res.output
    first = load_yaml(out / "round1.yaml")["parameters"]
    assert first["tumour_growth_rate"]["multiplier"]["value"] == 2.5 and "k_kill" in first
    written = load_yaml(out / "calibration.yaml")["parameters"]
    assert set(written) == {"k_kill", "tumour_growth_rate"}
    assert "held, not fitted: from another fit" in written["tumour_growth_rate"]["multiplier"]["note"]
    sc = validate_raw({"product": {"preset": "axi-cel"}, "indication": {"disease": "LBCL"},
                       "population": {"calibration": str(out / "calibration.yaml")}})
    base = validate_raw({"product": {"preset": "axi-cel"}, "indication": {"disease": "LBCL"}})
    d, d0 = resolve_design(sc, K), resolve_design(base, K)
    assert d.typical["tumour_growth_rate"] == pytest.approx(2.5 * d0.typical["tumour_growth_rate"])
    assert d.variability["tumour_growth_rate"] == pytest.approx(0.4)
    targets.write_text(targets.read_text().replace("{k_kill: 1.0}", "{k_kill: 1.0, tumour_growth_rate: 1.0}"))
    with pytest.raises(ScenarioError, match="held.tumour_growth_rate: give a model parameter that is not also fitted"):
        load_targets(targets)


def test_fatal_grade4_toxicity_is_grade5_on_the_day_grade4_was_reached():
    """With a certain death at grade 4 (probability set to 1), a patient whose ICANS reached
    grade 4 on day 6 dies of ICANS on day 6, is graded 5, leaves no progression after death
    and is not evaluable for response (death before the day-28 assessment)."""
    import dataclasses

    from carcell.trial.survival import endpoints

    d = dataclasses.replace(DeathModel.from_knowledge(K, "LBCL"), toxicity_death_given_grade4=1.0,
                            infection_hazard_neutropenia=0.0, infection_hazard_aplasia=1e-12)
    patients = pd.DataFrame({"patient_id": [0, 1], "age_years": [60.0, 60.0], "best_response": ["CR", "CR"],
                             "response_day": [28.0, 28.0], "progression_day": [90.0, np.nan],
                             "crs_max_grade": [2.0, 1.0], "icans_max_grade": [4.0, 0.0]})
    events = pd.DataFrame({"patient_id": [0, 0, 1], "day": [3.0, 6.0, 2.0],
                           "event": ["crs_grade", "icans_grade", "crs_grade"], "value": [2.0, 4.0, 1.0]})
    df = endpoints(patients, events, d, seed=1, follow_up=365.0, first_assessment=28.0)
    a, b = df.iloc[0], df.iloc[1]
    assert a["death_cause"] == "icans" and a["death_day"] == 6.0 and a["icans_max_grade"] == 5.0
    assert a["best_response"] == "NE" and np.isnan(a["progression_day"])
    assert a["pfs_days"] == 6.0 and a["pfs_event"] and a["os_days"] == 6.0 and a["os_event"]
    assert b["death_cause"] in ("none", "other", "progression") and b["crs_max_grade"] == 1.0
