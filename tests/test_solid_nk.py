"""Solid tumours, CAR-NK biology and the new regimen options (docs/solid.md), with the real
solver on small cohorts. Each test compares two runs that differ in one thing, so it fails
when the mechanism is missing or points the wrong way."""

from pathlib import Path

import numpy as np
import pytest

from carcell.cohort.run import run_cohort
from carcell.design import compile_chunk, resolve_design
from carcell.errors import ScenarioError
from carcell.knowledge import load_knowledge
from carcell.model.states import INDEX, LOG_EXTINCT, PARAM_INDEX, Params
from carcell.scenario import load_scenario
from carcell.scenario.load import validate_raw
from carcell.solve.rounds import simulate_batch


def scenario(disease="gastric", target="CLDN18.2", chassis="autologous_T", n=30, seed=5, days=60,
             regimen=None, product=None, costim=("CD28",)):
    raw = {
        "indication": {"disease": disease},
        "product": {"chassis": chassis, "car": {"target": target, "costim": list(costim)},
                    "dose": {"cells": 2.5e8}, **(product or {})},
        "regimen": {**(regimen or {})},
        "population": {"n": n, "seed": seed},
        "trial": {"follow_up_days": days},
    }
    return validate_raw(raw)


def cohort(**kw):
    r = run_cohort(scenario(**kw))
    assert (r.patients["solver_status"] == "ok").all()
    return r


def at(r, q, day):
    return r.trajectories[q][:, np.searchsorted(r.times, day)].astype(float)


def test_haematological_disease_leaves_the_new_compartments_empty():
    r = run_cohort(validate_raw({"indication": {"disease": "LBCL"}, "population": {"n": 8, "seed": 1},
                                 "trial": {"follow_up_days": 30}}))
    assert r.design.site is None
    assert np.all(r.trajectories["car_site"] < 1e-10) and np.all(r.trajectories["tumour_low"] < 1e-10)


def test_solid_tumour_splits_positive_cells_into_antigen_high_and_low_clones():
    d = resolve_design(scenario(), load_knowledge())
    c = compile_chunk(d, 0, 20)
    p = c.params
    assert np.all(p.solid == 1)
    # the low half is recognised less than the high half, and both start equal in size
    assert np.all(p.recognition_low <= p.recognition_tumour) and np.any(p.recognition_low < p.recognition_tumour)
    assert np.allclose(c.y0[:, INDEX["tumour_low"]], c.y0[:, INDEX["tumour_pos"]])


def test_antigen_low_cells_escape():
    r = cohort(days=90)
    pos, low = at(r, "tumour_pos", 90), at(r, "tumour_low", 90)
    # equal at infusion; antigen-low cells outnumber antigen-high ones once CAR cells have acted
    assert np.median(low / pos) > 1.0


def test_locoregional_delivery_puts_more_car_cells_in_the_tumour_than_intravenous():
    iv = cohort(days=28)
    ip = cohort(days=28, regimen={"route": "intraperitoneal"})
    assert np.median(at(ip, "car_site", 1)) > 10 * np.median(at(iv, "car_site", 1))
    assert np.median(at(ip, "tumour_total_cells", 28)) < np.median(at(iv, "tumour_total_cells", 28))


def test_locoregional_delivery_needs_fewer_cells_for_the_same_tumour_exposure():
    """Adusumilli 2014: intrapleural CAR T cells needed 30-fold fewer cells than intravenous
    ones. Here a tenth of the dose given intraperitoneally exposes the tumour to at least as
    many CAR cell-days as the full intravenous dose, and controls it at least as well."""
    iv = cohort(days=28)
    ip = cohort(days=28, regimen={"route": "intraperitoneal"}, product={"dose": {"cells": 2.5e7}})
    exposure = lambda r: np.trapezoid(r.trajectories["car_site"].astype(float), r.times, axis=1)  # noqa: E731
    assert np.median(exposure(ip)) > np.median(exposure(iv))
    assert np.median(at(ip, "tumour_total_cells", 28)) <= np.median(at(iv, "tumour_total_cells", 28))


def test_an_intravenous_dose_stops_in_lung_and_liver_first():
    """Most of an intravenous dose is first held in lung and liver (Lee 2020: 47% of the
    injected dose there at 1 hour, the lung signal falling about 6-fold by day 7); held cells
    come back to blood, so the tumour is reached later than if every cell circulated."""
    k = load_knowledge()
    share, back = float(k.value("tme.first_pass.fraction")), float(k.value("tme.first_pass.return_rate"))
    d = resolve_design(scenario(), k)
    c = compile_chunk(d, 0, 8)
    held, eff = np.exp(c.y0[:, INDEX["car_lung_liver"]]), np.exp(c.y0[:, INDEX["car_effector"]])
    site = np.exp(c.y0[:, INDEX["car_site"]])
    # of the effectors given into blood, the first-pass share is held (the rest circulate or arrive)
    assert np.allclose(held / (held + eff + site), share, rtol=1e-9)
    # the same cells without a first pass: every held cell circulating from the start
    y_free = c.y0.copy()
    y_free[:, INDEX["car_effector"]] = np.log(eff + held)
    y_free[:, INDEX["car_lung_liver"]] = LOG_EXTINCT
    times = np.arange(0.0, 8.0)
    rounds = np.array([0.0, 7.0])
    with_pass, _, _ = simulate_batch(c.params, c.y0, times, rounds, rtol=1e-7, atol=1e-9)
    free, _, _ = simulate_batch(c.params, y_free, times, rounds, rtol=1e-7, atol=1e-9)
    q, s = INDEX["car_lung_liver"], INDEX["car_site"]
    assert np.all(with_pass[:, 1, s] < free[:, 1, s])          # fewer in the tumour on day 1
    # the pool empties at least at the return rate (death adds to it)
    assert np.all(with_pass[:, 7, q] - with_pass[:, 0, q] <= -back * 7 + 1e-6)
    # blood cancers: no first pass added to the calibrated blood kinetics
    c_haem = compile_chunk(resolve_design(scenario(disease="LBCL", target="CD19"), k), 0, 4)
    assert np.all(c_haem.y0[:, q] == LOG_EXTINCT) and np.all(c_haem.params.first_pass_return == 0)


def test_a_route_that_does_not_reach_the_tumour_is_refused_with_the_field_named():
    with pytest.raises(ScenarioError, match="regimen.route: intraventricular does not reach gastric"):
        resolve_design(scenario(regimen={"route": "intraventricular"}), load_knowledge())


def test_armour_against_tgf_beta_lowers_the_microenvironments_hold_on_car_cells():
    k = load_knowledge()
    plain = resolve_design(scenario(disease="pancreatic", target="MSLN"), k)
    armoured = resolve_design(scenario(disease="pancreatic", target="MSLN", product={"armour": ["dnTGFbRII"]}), k)
    assert armoured.typical["tme_proliferation"] < plain.typical["tme_proliferation"]
    a = cohort(disease="pancreatic", target="MSLN", product={"armour": ["dnTGFbRII"]}, days=45)
    b = cohort(disease="pancreatic", target="MSLN", days=45)
    assert np.median(at(a, "car_site", 21)) > np.median(at(b, "car_site", 21))


def _run_with(sc, change):
    """Simulate a scenario's patients with one parameter changed (no other difference)."""
    d = resolve_design(sc, load_knowledge())
    c = compile_chunk(d, 0, sc.population.n)
    values = c.params.values.copy()
    change(values)
    times = np.arange(0.0, sc.trial.follow_up_days + 1)
    Y, status, _ = simulate_batch(Params(values), c.y0, times, np.array([0.0, times[-1]]), rtol=1e-6, atol=1e-8)
    assert (status == 0).all()
    return Y


def test_nk_cells_kill_antigen_negative_tumour_cells_through_nkg2d():
    sc = scenario(disease="colorectal", target="CEA", chassis="PB-NK", costim=("2B4",), days=21)
    d = resolve_design(sc, load_knowledge())
    assert d.typical["natural_kill"] > 0
    with_nk = _run_with(sc, lambda v: None)
    without = _run_with(sc, lambda v: v.__setitem__((slice(None), PARAM_INDEX["natural_kill"]), 0.0))
    neg = INDEX["tumour_neg"]
    assert np.all(with_nk[:, -1, neg] <= without[:, -1, neg] + 1e-9)
    assert np.any(with_nk[:, -1, neg] < without[:, -1, neg] - 1e-3)


def test_t_cells_have_no_car_independent_killing():
    d = resolve_design(scenario(disease="colorectal", target="CEA"), load_knowledge())
    assert d.typical["natural_kill"] == 0


def test_host_rejection_shortens_allogeneic_nk_persistence_without_lymphodepletion():
    common = {"disease": "LBCL", "target": "CD19", "chassis": "PB-NK", "costim": ("2B4",), "days": 28}
    deep = cohort(**common)
    none = cohort(**common, regimen={"lymphodepletion": "none"})
    assert np.median(at(none, "car_total_cells", 14)) < np.median(at(deep, "car_total_cells", 14))
    # and the loss is rejection: with the rate at zero the same patients keep more cells
    sc = scenario(**{**common, "n": 10}, regimen={"lymphodepletion": "none"})
    rejected = _run_with(sc, lambda v: None)
    spared = _run_with(sc, lambda v: v.__setitem__((slice(None), PARAM_INDEX["rejection_rate"]), 0.0))
    te = INDEX["car_effector"]
    assert np.all(rejected[:, 14, te] < spared[:, 14, te])


def test_dasatinib_pretreatment_rests_exhausted_cells_before_infusion():
    k = load_knowledge()
    base = {"disease": "B-ALL", "target": "CD19", "chassis": "NK-92", "costim": ("2B4",)}
    plain = resolve_design(scenario(**base), k)
    rested = resolve_design(scenario(**base, product={"pretreatment": {"drug": "dasatinib", "concentration_nm": 100,
                                                                        "hours": 24}}), k)
    c0, c1 = compile_chunk(plain, 0, 5), compile_chunk(rested, 0, 5)
    x = INDEX["car_exhausted"]
    assert np.all(c1.y0[:, x] < c0.y0[:, x])          # fewer exhausted cells...
    assert np.all(c1.y0[:, INDEX["car_effector"]] > c0.y0[:, INDEX["car_effector"]])   # ...more effectors
    # the same dose: total cells unchanged
    tot = lambda c: np.logaddexp.reduce(c.y0[:, [INDEX["car_memory"], INDEX["car_effector"], x]], axis=1)
    assert np.allclose(tot(c0), tot(c1))


def test_dasatinib_in_the_body_moves_exhausted_cells_back_to_effectors():
    sc = scenario(disease="LBCL", target="CD19", costim=("4-1BB",), n=6, days=3)
    x, e, da = INDEX["car_exhausted"], INDEX["car_effector"], INDEX["dasatinib"]
    d = resolve_design(sc, load_knowledge())
    c = compile_chunk(d, 0, 6)
    y0 = c.y0.copy()
    y0[:, da] = 1e4          # held far above the IC50 (elimination off below)
    values = c.params.values.copy()
    values[:, PARAM_INDEX["dasatinib_elimination"]] = 0.0
    times = np.arange(0.0, 4.0)
    on, _, _ = simulate_batch(Params(values), y0, times, np.array([0.0, 3.0]), rtol=1e-7, atol=1e-9)
    values[:, PARAM_INDEX["k_rest"]] = 0.0
    off, _, _ = simulate_batch(Params(values), y0, times, np.array([0.0, 3.0]), rtol=1e-7, atol=1e-9)
    assert np.all(on[:, -1, x] < off[:, -1, x] - 0.5)    # rest empties the exhausted pool
    assert np.all(on[:, -1, e] > off[:, -1, e])


def test_irradiated_nk92_vanishes_within_days_unless_dosed_again():
    """Irradiated NK-92 cells cannot divide and survive days in patients (Tonn 2013, Williams
    2017: no detectable cells after 48 h to a week), hence the repeated dosing of NK-92 trials."""
    one = cohort(disease="LBCL", target="CD19", chassis="NK-92", costim=("2B4",), days=15, n=6)
    weekly = cohort(disease="LBCL", target="CD19", chassis="NK-92", costim=("2B4",), days=15, n=6,
                    regimen={"infusion_days": [0, 7, 14]})
    dose = one.patients["dose_cells"].to_numpy()
    assert np.median(at(one, "car_total_cells", 7) / dose) < 0.05
    assert np.all(at(one, "car_total_cells", 14) < 0.01 * dose)
    assert np.all(at(weekly, "car_total_cells", 15) > 0.3 * dose)   # a day after the third dose


def test_multi_dose_regimen_gives_each_dose_on_its_day():
    # irradiated NK-92 cannot divide, so the jump on a dosing day is the dose itself
    r = cohort(disease="LBCL", target="CD19", chassis="NK-92", costim=("2B4",), days=30, n=6,
               regimen={"infusion_days": [0, 7, 14]})
    inf = r.events[r.events["event"] == "infusion"]
    assert sorted(inf["day"].unique()) == [0.0, 7.0, 14.0]
    assert (inf.groupby("patient_id").size() == 3).all()
    # each dose raises the whole-body CAR count by about the dose
    for day in (7, 14):
        j = np.searchsorted(r.times, day)
        before = r.trajectories["car_total_cells"][:, j - 1].astype(float)
        after = r.trajectories["car_total_cells"][:, j].astype(float)
        assert np.allclose(after - before, r.patients["dose_cells"].to_numpy(), rtol=0.1)


def test_infusion_after_follow_up_is_a_clear_error():
    with pytest.raises(Exception, match="regimen.infusion_days"):
        scenario(days=20, regimen={"infusion_days": [0, 30]})


def test_solid_response_is_read_by_recist_and_glioblastoma_by_rano():
    k = load_knowledge()
    assert resolve_design(scenario(), k).response_criteria == "recist"
    assert resolve_design(scenario(disease="GBM", target="IL13Ra2"), k).response_criteria == "rano"


def test_extinct_site_stays_extinct_in_haematological_patients_after_a_second_dose():
    r = cohort(disease="LBCL", target="CD19", n=4, days=10, regimen={"infusion_days": [0, 5]})
    assert np.all(r.trajectories["car_site"] < 1e-10)
    assert LOG_EXTINCT < 0


def _pulse(dose_mg):
    return {"name": "pulse", "prophylaxis": [{
        "id": "dasatinib_days_3_6", "give": "dasatinib",
        "days": {"value": [3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5], "unit": "day", "source": "assumption", "note": "test"},
        "dose": {"value": dose_mg, "unit": "mg", "source": "assumption", "note": "test"}}], "rules": []}


def test_dasatinib_schedule_pauses_expansion_by_dose_and_releases_it():
    def run(protocol):
        r = run_cohort(validate_raw({"indication": {"disease": "LBCL"}, "product": {"preset": "axi-cel"},
                                     "regimen": {"protocol": protocol}, "population": {"n": 12, "seed": 3},
                                     "trial": {"follow_up_days": 28}}))
        return at(r, "car_total_cells", 6.5), at(r, "car_total_cells", 20)
    free, free_later = run("none")
    low, _ = run(_pulse(10))
    high, high_later = run(_pulse(140))
    # the pause deepens with the dose...
    assert np.median(high) < np.median(low) < np.median(free)
    # ...and is reversible: released cells expand again (more at day 20 than at the end of the pause)
    assert np.median(high_later) > np.median(high)


def test_secreted_il15_armour_raises_serum_il15_and_persistence_but_membrane_il15_does_not_leak():
    def run(armour):
        r = run_cohort(validate_raw({"indication": {"disease": "LBCL"},
                                     "product": {"chassis": "CB-NK", "car": {"target": "CD19", "costim": ["CD28"]},
                                                 "armour": armour, "dose": {"cells_per_kg": 1e7}},
                                     "population": {"n": 10, "seed": 4}, "trial": {"follow_up_days": 60}}))
        return r.patients["il15_peak_pg_per_ml"].to_numpy(), at(r, "car_total_cells", 60)
    none_il15, none_cells = run([])
    sec_il15, sec_cells = run(["IL-15_secreted"])
    mem_il15, mem_cells = run(["IL-15_membrane"])
    assert np.all(sec_il15 > none_il15)                  # systemic exposure from secretion
    assert np.allclose(mem_il15, none_il15, rtol=0.05)   # membrane-bound: no serum IL-15 of its own...
    assert np.median(mem_cells) > np.median(none_cells)   # ...but the cells persist longer
    assert np.median(sec_cells) > np.median(none_cells)


def test_solid_tumours_grow_at_patient_specific_rates_and_blood_cancers_do_not():
    k = load_knowledge()
    solid = compile_chunk(resolve_design(scenario(n=50), k), 0, 50)
    rates = solid.params.tumour_growth_rate
    typical = float(k.value("indications.gastric.tumour.growth_rate"))
    sd = float(k.value("indications.gastric.tumour.growth_rate_log_sd"))
    # log-normal around the indication's rate with its log-SD (50 draws: loose bounds)
    assert abs(np.median(np.log(rates / typical))) < 0.5 * sd
    assert 0.6 * sd < np.std(np.log(rates)) < 1.4 * sd
    haem = compile_chunk(resolve_design(validate_raw({"indication": {"disease": "LBCL"}}), k), 0, 20)
    assert np.ptp(haem.params.tumour_growth_rate) == 0


@pytest.fixture
def knowledge_values():
    """Set knowledge values for one test and put them back afterwards."""
    k = load_knowledge(False)
    saved = []

    def set_(path, value):
        saved.append((path, k.node(path)["value"]))
        k.node(path)["value"] = value

    yield set_
    for path, value in reversed(saved):
        k.node(path)["value"] = value


def test_stronger_suppression_lowers_response(knowledge_values):
    """The same patients and product in a gastric cancer whose microenvironment suppresses
    more (every component doubled): fewer responses and larger tumours."""
    base = cohort(days=90, n=40)
    k = load_knowledge(False)
    for comp in k.names("indications.gastric.tme"):
        path = f"indications.gastric.tme.{comp}"
        knowledge_values(path, min(1.0, 2.0 * float(k.value(path))))
    hostile = cohort(days=90, n=40)
    assert hostile.design.site.suppression > base.design.site.suppression
    responders = lambda r: r.patients["best_response"].isin(["CR", "PR"]).sum()  # noqa: E731
    assert responders(hostile) < responders(base)
    assert np.median(at(hostile, "tumour_total_cells", 90)) > np.median(at(base, "tumour_total_cells", 90))


def test_a_cleared_solid_tumour_with_extinct_car_cells_stays_finite():
    """Tumour cleared and CAR cells gone (every alive flag 0): the local densities must not turn
    into 0/0, or a cured patient would end as a solver failure."""
    from carcell.model.rhs import rhs

    c = compile_chunk(resolve_design(scenario(), load_knowledge()), 0, 4)
    values = c.params.values.copy()
    for flag in ("alive_car", "alive_tumour_pos", "alive_tumour_low", "alive_tumour_neg"):
        values[:, PARAM_INDEX[flag]] = 0.0
    dy = rhs(0.0, c.y0, Params(values))
    assert np.all(np.isfinite(dy))


def _example(name, n, days, seed):
    path = Path(__file__).resolve().parents[1] / "examples" / name
    r = run_cohort(load_scenario(path, [f"population.n={n}", f"population.seed={seed}", f"trial.follow_up_days={days}"]))
    assert (r.patients["solver_status"] == "ok").all()
    return r


def test_cord_blood_il15_nk_cells_persist_at_a_low_level_for_a_year():
    # Liu 2020 (doi:10.1056/NEJMoa1910607): the cells expanded early and persisted at low levels
    # for at least 12 months. Detectable: at least 1 copy/ug (the validation's threshold).
    r = _example("cbnk_il15_lbcl.yaml", n=30, days=365, seed=12)
    copies = r.trajectories["car_copies_per_ug"].astype(float)
    year = np.median(at(r, "car_copies_per_ug", 365))
    assert 1.0 <= year < np.median(copies.max(axis=1)) / 10   # detectable, well below the peak


def test_ipsc_nk_cells_peak_on_the_first_days_as_ft596_did():
    # Ghobadi 2025 (doi:10.1016/S0140-6736(24)02462-0): FT596 peaked on day 1 and was detectable
    # for up to 15 days. Half a day of slack either side of day 1 (output every half day).
    r = _example("ipscnk_cd19_lbcl.yaml", n=30, days=30, seed=13)
    copies = r.trajectories["car_copies_per_ug"].astype(float)
    assert np.median(r.times[np.argmax(copies, axis=1)]) <= 1.5
    assert np.median(at(r, "car_copies_per_ug", 28)) < 0.01 * np.median(copies.max(axis=1))


def test_tumour_macrophages_activate_where_serum_signals_leave_the_systemic_ones_resting():
    """CAR cells engaged inside a gastric tumour activate the tumour's own macrophages, which see
    the tumour's IFN-gamma and DAMPs at its concentration, while the body's myeloid cells, which
    see them diluted in serum, are activated far less (a median peak under a quarter of the
    tumour's); in a blood cancer there are none."""
    r = cohort(days=60, n=40)
    tam = r.trajectories["macrophage_site"].astype(float).max(axis=1)
    systemic = r.trajectories["macrophage_activation"].astype(float).max(axis=1)
    assert np.median(tam) > 0.3 and np.median(systemic) < np.median(tam) / 4
    haem = run_cohort(validate_raw({"indication": {"disease": "LBCL"}, "population": {"n": 8, "seed": 1},
                                    "trial": {"follow_up_days": 30}}))
    assert np.all(haem.trajectories["macrophage_site"] == 0)


def test_tumour_macrophages_raise_serum_il6_and_crs_in_solid_tumours(knowledge_values):
    """The same patients without IL-6 from the tumour's macrophages: lower serum IL-6 and less
    CRS (CT041 had CRS in 95% of patients with few CAR cells in blood, docs/solid.md)."""
    with_tam = cohort(days=60, n=40)
    knowledge_values("tme.macrophages.il6_per_tumour_cells", 0.0)
    without = cohort(days=60, n=40)
    peak = lambda r: np.median(r.trajectories["il6"].astype(float).max(axis=1))  # noqa: E731
    crs = lambda r: (r.patients["crs_max_grade"] >= 1).mean()  # noqa: E731
    assert peak(with_tam) > 3 * peak(without)
    assert crs(with_tam) > crs(without) + 0.2


def test_car_nk_cells_in_a_tumour_leave_its_macrophages_nearly_resting():
    """NK cells activate myeloid cells far less per engaged cell than CAR T cells (the chassis
    multiplier fitted to the CAR-NK trials' absence of CRS), inside a tumour too: a billion
    NKG2D CAR-NK cells given into the peritoneum three times give almost no CRS, while CAR T
    cells in a gastric tumour activate its macrophages (the test above)."""
    sc = load_scenario(Path(__file__).parents[1] / "examples" / "nkg2d_car_nk_colorectal.yaml",
                       ["population.n=30", "trial.follow_up_days=45"])
    r = run_cohort(sc)
    assert np.median(r.trajectories["car_site"].astype(float).max(axis=1)) > 1e8   # the cells are there
    assert np.median(r.trajectories["macrophage_site"].astype(float).max(axis=1)) < 0.05
    assert (r.patients["crs_max_grade"] >= 1).mean() <= 0.1
