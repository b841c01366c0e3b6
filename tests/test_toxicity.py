"""Toxicity in closed loop: simulated CRS and ICANS, graded at every assessment, treated by a
protocol. Each test compares two management choices (or designs) on the same virtual patients
(same seed); the directions are those of the clinical literature named in each test.

Magnitudes are not calibrated yet (toxicity.yaml marks them as assumptions); these tests
check mechanisms, not rates.
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import pandas as pd
import pytest

from carcell.cohort import run_cohort
from carcell.errors import KnowledgeError, ScenarioError
from carcell.knowledge import load_knowledge
from carcell.scenario.load import validate_raw

AXI = {"indication": {"disease": "LBCL"}, "product": {"preset": "axi-cel"}}
TOCI_ONLY = {"rules": [{"when": "crs >= 2", "give": "tocilizumab", "dose": 8, "max_single": 800,
                        "min_interval": 8, "max_in_24h": 3, "max_total": 4,
                        "repeat_only_if_no_improvement": True}]}
ANAKINRA_PROPHYLAXIS = {"prophylaxis": [{"give": "anakinra", "days": [d / 2 for d in range(16)], "dose": 100}],
                        "rules": []}
# a rule that fires at the first assessment, so the taper schedule can be read off the events
TAPER = {"rules": [{"when": "crs >= 0", "give": "methylprednisolone", "dose": 1000,
                    "taper": [{"dose": 1000, "every": 24, "days": 3}, {"dose": 250, "every": 12, "days": 2},
                              {"dose": 60, "every": 6, "days": 1}]}]}
DEX_PROPHYLAXIS = {"prophylaxis": [{"give": "dexamethasone", "days": [0, 1, 2], "dose": 10}], "rules": []}
# tocilizumab at a dose far too small to block the IL-6 receptor (8 mg/kg is the real one)
TOCI_TOO_LITTLE = {"rules": [{**TOCI_ONLY["rules"][0], "dose": 0.008}]}


@functools.cache
def _run(key: str, n: int = 60):
    raw = {
        "none": {**AXI, "regimen": {"protocol": "none"}},
        "toci": {**AXI, "regimen": {"protocol": TOCI_ONLY}},
        "toci_too_little": {**AXI, "regimen": {"protocol": TOCI_TOO_LITTLE}},
        "prophylaxis": {**AXI, "regimen": {"protocol": DEX_PROPHYLAXIS}},
        "asco": {**AXI, "regimen": {"protocol": "asco2021"}},
        "cohorts_1_2": {**AXI, "regimen": {"protocol": "zuma1_cohorts_1_2"}},
        "cohort3": {**AXI, "regimen": {"protocol": "zuma1_cohort3"}},
        "penn": {**AXI, "regimen": {"protocol": "penn_severe_crs"}},
        "chop": {**AXI, "regimen": {"protocol": "chop_vasoactive"}},
        "anakinra": {**AXI, "regimen": {"protocol": ANAKINRA_PROPHYLAXIS}},
        "taper": {**AXI, "regimen": {"protocol": TAPER}},
        "low_burden": {**AXI, "indication": {"disease": "LBCL", "baseline_burden": {"median": 1e10}},
                       "regimen": {"protocol": "none"}},
        "high_burden": {**AXI, "indication": {"disease": "LBCL", "baseline_burden": {"median": 3e11}},
                        "regimen": {"protocol": "none"}},
        "tisa": {"indication": {"disease": "LBCL"}, "product": {"preset": "tisa-cel", "dose": {"cells_per_kg": 2e6}},
                 "regimen": {"protocol": "none"}},
    }[key]
    raw = {**raw, "population": {"n": n, "seed": 3}, "trial": {"follow_up_days": 60}}
    return run_cohort(validate_raw(raw, key))


def test_tocilizumab_shortens_and_lowers_crs_but_not_icans():
    """Tocilizumab blocks IL-6 signalling: CRS is shorter and milder, serum IL-6 rises (receptor
    clearance blocked, Nishimoto 2008), and ICANS is not lowered (no effect behind the
    blood-brain barrier; ZUMA-1 cohort 3, reference/clinical.md 2.6)."""
    none, toci = _run("none").patients, _run("toci").patients
    assert toci["tocilizumab_doses"].sum() > 0 and none["tocilizumab_doses"].sum() == 0
    assert toci["crs_max_grade"].mean() < none["crs_max_grade"].mean()
    assert (toci["crs_max_grade"] >= 3).mean() < (none["crs_max_grade"] >= 3).mean()
    # the same virtual patients with and without it: the treated ones' CRS is shorter (the
    # untreated ones' course is the same in both arms, so they are left out of the comparison)
    given = toci["tocilizumab_doses"] > 0
    days_toci, days_none = (arm["crs_duration_days"].fillna(0)[given] for arm in (toci, none))
    assert days_toci.sum() < 0.7 * days_none.sum()
    assert (days_toci < days_none).mean() > 0.5
    assert toci["icans_max_grade"].mean() >= none["icans_max_grade"].mean() - 1e-9
    # serum IL-6 rises in the patients who got it
    assert (toci["il6_peak_pg_per_ml"][given] >= none["il6_peak_pg_per_ml"][given] - 1e-6).all()
    assert toci["il6_peak_pg_per_ml"][given].median() > none["il6_peak_pg_per_ml"][given].median()


def _response_from_events(ev, patient_id) -> float:
    """The FDA's tocilizumab response (Le 2018) read off a patient's event log: the first dose
    given while CRS was graded, CRS back to grade 0 within 14 days of it and staying 0 for a
    day (the event log holds grade changes, so: no change back above 0 within a day), at most
    2 doses up to then."""
    mine = ev[ev["patient_id"] == patient_id]
    crs = mine[mine["event"] == "crs_grade"].sort_values("day", kind="stable")
    doses = np.sort(mine[(mine["event"] == "drug") & mine["detail"].str.startswith("tocilizumab")]["day"].to_numpy())
    grade_at = [crs[crs["day"] <= d]["value"].iloc[-1] if (crs["day"] <= d).any() else 0 for d in doses]
    during = [d for d, g in zip(doses, grade_at) if g >= 1]
    if not during:
        return np.nan
    days, grades = crs["day"].to_numpy(), crs["value"].to_numpy()
    end = np.inf
    for k in np.flatnonzero((days > during[0]) & (grades == 0)):
        back = days[(days > days[k]) & (grades > 0)]
        if not back.size or back[0] - days[k] >= 1.0 - 1e-9:
            end = days[k]
            break
    return float(end - during[0] <= 14 and ((doses >= during[0]) & (doses <= end)).sum() <= 2)


def test_tocilizumab_response_follows_the_fda_definition():
    """``tocilizumab_response`` (Le et al. 2018's definition) agrees with the event log patient
    by patient, and a dose too small to block the receptor is not a response."""
    p, ev = _run("toci").patients, _run("toci").events
    expected = np.array([_response_from_events(ev, pid) for pid in p["patient_id"]])
    np.testing.assert_array_equal(p["tocilizumab_response"].to_numpy(), expected)
    given = p["tocilizumab_response"].notna()
    assert given.sum() >= 10 and (p.loc[given, "tocilizumab_doses"] > 0).all()
    assert (p.loc[~given, "crs_max_grade"] < 2).all()      # untreated: never reached the rule's grade
    weak = _run("toci_too_little").patients
    assert weak["tocilizumab_response"].notna().sum() >= 10
    assert weak["tocilizumab_response"].mean() < p["tocilizumab_response"].mean() - 0.3


def test_a_dip_of_one_assessment_is_not_a_resolution():
    """CRS graded 0 at one assessment and back 12 h later has not resolved; 24 h free has."""
    from carcell.clinical.management import _sustained_resolution
    days = np.arange(0, 6.0, 0.5)
    crs = np.array([1, 2, 2, 0, 1, 1, 0, 0, 0, 1, 0, 0])
    # day 1.5 is graded 0 but CRS is back at day 2; from day 3 it stays 0 through day 4
    assert _sustained_resolution(days, crs, after=0.0) == 3.0
    assert _sustained_resolution(days, crs, after=4.5) == 5.0             # free to the record's end
    assert _sustained_resolution(np.array([0.0, 0.5]), np.array([1, 0]), after=0.0) == 0.5
    assert _sustained_resolution(days[:3], crs[:3], after=0.0) == np.inf  # never resolved

def test_vasopressor_levels_out_of_order_are_refused():
    """Several vasopressors below the one-vasopressor level would grade nonsense: the sign model
    refuses it, naming both entries."""
    from carcell.clinical.signs import SignModel
    k = load_knowledge()
    assert SignModel.from_knowledge(k).several_vasopressors_level > SignModel.from_knowledge(k).leak_levels[1]
    k.tree = copy.deepcopy(k.tree)
    k.node("toxicity.signs.several_vasopressors_level")["value"] = 0.5
    with pytest.raises(KnowledgeError, match="several_vasopressors_level.*leak_levels|leak_levels.*several_vasopressors_level"):
        SignModel.from_knowledge(k)


def test_summary_of_a_table_without_the_response_column():
    """Chunks written before ``tocilizumab_response`` existed (a run resumed with a newer carcell)
    still summarise: the share is None, the rest is computed."""
    import dataclasses

    from carcell.io.outputs import summary

    r = _run("toci")
    old = dataclasses.replace(r, patients=r.patients.drop(columns="tocilizumab_response"))
    tox, new_tox = summary(old)["toxicity"], summary(r)["toxicity"]
    assert tox["tocilizumab_response"] is None and new_tox["tocilizumab_response"] == pytest.approx(
        r.patients["tocilizumab_response"].dropna().mean())
    assert tox["tocilizumab_use"] == new_tox["tocilizumab_use"] > 0


def test_prophylactic_steroids_lower_severe_crs():
    """Dexamethasone on days 0-2 (ZUMA-1 cohort 6) lowers grade >= 3 CRS."""
    none, proph = _run("none").patients, _run("prophylaxis").patients
    assert (proph["crs_max_grade"] >= 3).sum() < (none["crs_max_grade"] >= 3).sum()
    assert (proph["steroid_days"] == 3).all()


def test_higher_tumour_burden_gives_more_severe_crs():
    """Baseline burden is the strongest predictor of severe CRS (Awasthi 2020; Teachey 2016).
    The same 60 patients at 30 times the burden: none has milder CRS, more have worse than a
    one-sided Wilcoxon signed-rank test at 0.001 allows by chance, and more reach grade >= 3."""
    from scipy.stats import wilcoxon

    low, high = _run("low_burden").patients, _run("high_burden").patients
    change = (high["crs_max_grade"] - low["crs_max_grade"]).to_numpy()
    assert (change >= 0).all()
    assert wilcoxon(change[change != 0], alternative="greater").pvalue < 1e-3
    assert (high["crs_max_grade"] >= 3).mean() > (low["crs_max_grade"] >= 3).mean()


def test_cd28_preset_has_more_severe_crs_and_icans_than_41bb():
    """Axi-cel (CD28) has more grade >= 3 CRS and neurotoxicity than tisa-cel (4-1BB) in LBCL
    (ZUMA-1 vs JULIET, reference/biology.md 1b; Cappell & Kochenderfer 2021).

    200 patients per arm: on these uncalibrated presets without management the ICANS >= 3
    difference is 2-3 points (0.065 vs 0.04 to 0.12 vs 0.105 at seeds 1-3), which 60 patients
    cannot resolve (they tied at seed 2 with the values before the graded-ICANS fit too)."""
    axi, tisa = _run("none", 200).patients, _run("tisa", 200).patients
    assert (axi["crs_max_grade"] >= 3).mean() > (tisa["crs_max_grade"] >= 3).mean()
    assert (axi["icans_max_grade"] >= 3).mean() > (tisa["icans_max_grade"] >= 3).mean()


def test_protocol_limits_and_events():
    r = _run("asco")
    p, ev = r.patients, r.events
    assert p["tocilizumab_doses"].max() <= 4
    toci = ev[(ev["event"] == "drug") & ev["detail"].str.startswith("tocilizumab")]
    for _, g in toci.groupby("patient_id"):
        days = np.sort(g["day"].to_numpy())
        assert np.all(np.diff(days) >= 8 / 24 - 1e-9)                 # at least 8 h apart
        assert all(((days > d - 1) & (days <= d)).sum() <= 3 for d in days)   # at most 3 in 24 h
    assert (toci["value"] <= 800 + 1e-9).all()                        # 8 mg/kg, at most 800 mg
    # the day of each patient's first dose is the first tocilizumab in the event log; NaN without one
    first = toci.groupby("patient_id")["day"].min()
    table = p.set_index("patient_id")["tocilizumab_first_day"]
    np.testing.assert_allclose(table.reindex(first.index).to_numpy(), first.to_numpy())
    assert table.drop(first.index).isna().all()
    assert (p["tocilizumab_doses"] > 0).sum() == len(first) > 0
    # dexamethasone every 6 h at twice-daily assessments: 2 x 10 mg per assessment
    dex = ev[(ev["event"] == "drug") & ev["detail"].str.contains("dexamethasone_icans2")]
    assert dex.empty or np.allclose(dex["value"], 20.0)
    # grade changes are logged and end where the patient's maximum says
    crs_ev = ev[ev["event"] == "crs_grade"].groupby("patient_id")["value"].max()
    merged = p.set_index("patient_id")["crs_max_grade"].reindex(crs_ev.index)
    np.testing.assert_array_equal(crs_ev.to_numpy(), merged.to_numpy())


def test_a_rule_on_the_penn_scale_treats_only_penn_grade_3_crs():
    """The JULIET/ELIANA algorithm gives tocilizumab for Penn grade 3-4 CRS only (Blood Adv
    2020;4:1432): everyone who gets it reached Penn grade 3, unlike under ASCO 2021."""
    penn, asco = _run("penn").patients, _run("asco").patients
    treated = penn["tocilizumab_doses"] > 0
    assert treated.any()
    assert (penn.loc[treated, "crs_max_grade_penn"] >= 3).all()
    # ASCO 2021 treats at ASTCT grade 2, so some of its treated patients never reach Penn grade 3
    assert ((asco["tocilizumab_doses"] > 0) & (asco["crs_max_grade_penn"] < 3)).any()
    with pytest.raises(ScenarioError, match="crs_penn >= 3"):
        validate_raw({**AXI, "regimen": {"protocol": {"rules": [{"when": "penn >= 3", "give": "tocilizumab",
                                                                  "dose": 8}]}}}, "t")


def test_a_rule_on_vasopressors_treats_cardiovascular_dysfunction_only():
    """CHOP gave tocilizumab for CRS with cardiovascular dysfunction, hypotension on a vasoactive
    infusion (Fitzgerald 2017, doi:10.1097/CCM.0000000000002053). A vasopressor makes Penn grade
    3, so everyone treated reached it; but a patient at Penn grade 3 on oxygen alone is not
    treated, where the Penn-grade rule would treat them; and nobody without CRS is."""
    chop, penn = _run("chop").patients, _run("penn").patients
    treated = chop["tocilizumab_doses"] > 0
    assert treated.any()
    assert (chop.loc[treated, "crs_max_grade_penn"] >= 3).all()
    assert (chop.loc[treated, "crs_max_grade"] >= 2).all()          # hypotension is ASTCT grade >= 2
    assert ((chop["crs_max_grade_penn"] >= 3) & ~treated).any()
    assert treated.sum() < (penn["tocilizumab_doses"] > 0).sum()
    with pytest.raises(ScenarioError, match="crs_vasopressors >= 1"):
        validate_raw({**AXI, "regimen": {"protocol": {"rules": [{"when": "vasopressors >= 1", "give": "tocilizumab",
                                                                  "dose": 8}]}}}, "t")


def test_the_most_support_agrees_with_the_maximum_grades():
    """vasopressors_max and oxygen_support_max record the bedside support behind the grades:
    ASTCT CRS grade 4 needs several vasopressors or positive pressure, grade 3 a vasopressor or
    high-flow oxygen, and Penn grade 4 high-dose (several) vasopressors or ventilation."""
    p = _run("asco").patients
    v, o = p["vasopressors_max"], p["oxygen_support_max"]
    assert set(v.unique()) <= {0, 1, 2} and set(o.unique()) <= {0, 1, 2, 3}
    assert ((v == 2) | (o == 3))[p["crs_max_grade"] >= 4].all()
    assert ((v >= 1) | (o >= 2))[p["crs_max_grade"] >= 3].all()
    assert ((v == 2) | (o == 3))[p["crs_max_grade_penn"] >= 4].all()
    assert (p["crs_max_grade"] >= 3).any() and (v >= 1).any() and (o >= 1).any()


def test_the_highest_temperature_tells_who_had_fever_and_so_crs():
    """temperature_max_c is the hottest assessment. ASTCT opens CRS only with a fever (>= 38.0
    degC, R-CRS-1), and without prophylaxis nothing masks one before CRS is diagnosed, so the
    untreated patients with CRS are exactly those whose temperature reached 38 degC; the others
    stayed between their baseline and 38."""
    p = _run("none").patients
    t, crs = p["temperature_max_c"], p["crs_max_grade"] >= 1
    assert t.notna().all()
    assert (t[crs] >= 38.0).all() and (t[~crs] < 38.0).all()
    assert crs.any() and (~crs).any()
    assert (t >= load_knowledge(False).value("toxicity.signs.baseline_temperature") - 1e-9).all()


def test_a_treated_patient_whose_hypotension_comes_back_without_fever_still_has_crs():
    """Tocilizumab takes the fever away for days, while an activated endothelium can keep or
    bring back the leak; by R-CRS-2 that later course is still CRS, so a simulated patient on
    vasopressors after tocilizumab is graded (and treated) for it, not left ungraded."""
    import carcell.clinical.management as management

    seen = {}
    table = management.Manager.patient_table

    def keep(self):
        seen["grades"] = pd.concat(self.grades, ignore_index=True)
        return table(self)

    management.Manager.patient_table = keep
    try:
        raw = {**AXI, "regimen": {"protocol": "asco2021"}, "population": {"n": 60, "seed": 3},
               "trial": {"follow_up_days": 35}}
        p = run_cohort(validate_raw(raw, "t")).patients
    finally:
        management.Manager.patient_table = table
    g = seen["grades"]
    treated = set(p.loc[p["tocilizumab_doses"] > 0, "patient_id"])
    assert treated
    later = g[g["patient"].isin(treated) & (g["vasopressors"] > 0)]
    assert not later.empty
    assert (later["crs_astct"] >= 3).all()


def test_graded_by_the_same_code_as_real_patients():
    """The observations a simulated patient gets are a valid observation table: re-grading
    them with carcell.clinical.grading gives the grades the closed loop used."""
    from carcell.clinical.grading import grade_table
    from carcell.clinical.observations import check_observations
    from carcell.clinical.signs import SignModel, observe
    from carcell.design import compile_chunk, resolve_design
    from carcell.knowledge import load_knowledge

    sc = validate_raw({**AXI, "population": {"n": 5, "seed": 1}}, "t")
    c = compile_chunk(resolve_design(sc, load_knowledge()), 0, 5)
    y = c.y0.copy()
    from carcell.model.states import INDEX
    y[:, INDEX["il6"]] = [5, 60, 800, 3000, 20000]
    y[:, INDEX["endothelial_activation"]] = [0, 0.3, 0.5, 0.8, 0.99]
    obs = observe(SignModel.from_knowledge(load_knowledge()), y, c.params, np.arange(5), 3.0, np.full(5, 60.0))
    checked = check_observations(obs.astype(object), "simulated")
    g = grade_table(checked)
    assert list(g["crs_astct"]) == sorted(g["crs_astct"])             # more IL-6, higher CRS grade
    assert list(g["icans_astct"]) == sorted(g["icans_astct"])
    assert g["crs_astct"].iloc[0] == 0 and g["crs_astct"].iloc[-1] >= 3


def test_il6_follows_myeloid_activation_within_hours():
    """IL-6 is made after stimulation, not stored. In monocytes stimulated with endotoxin its mRNA
    appeared within an hour and peaked at 3 h (Bauer et al., Blood 1988;72:1134); in stimulated
    whole blood, where nothing clears it, IL-6 accumulated in plasma from 4 h to a plateau at
    about 12 h (Kato et al., J Immunol 1990;144:1317), so secretion had run its course by then.
    With the myeloid cells held at a constant activation from t = 0 (the model's own right-hand
    side for the IL-6 states, everything else held), their IL-6 output is below 30% of its level
    at 1 h and at least 90% at 12 h, and serum IL-6 follows it, rising throughout."""
    from scipy.integrate import solve_ivp

    from carcell.design import compile_chunk, resolve_design
    from carcell.model.rhs import rhs
    from carcell.model.states import INDEX

    sc = validate_raw({**AXI, "population": {"n": 4, "seed": 1}}, "t")
    c = compile_chunk(resolve_design(sc, load_knowledge()), 0, 4)
    y0 = c.y0.copy()
    m = 0.2
    y0[:, INDEX["macrophage_activation"]] = m
    moving = [INDEX["myeloid_il6_output"], INDEX["il6"]]

    def f(t, z):
        y = y0.copy()
        y[:, moving] = z.reshape(2, -1).T
        return rhs(np.array(t), y, c.params)[:, moving].T.ravel()

    times = [1 / 24, 12 / 24, 1.0, 2.0, 3.0]
    sol = solve_ivp(f, (0.0, 3.0), y0[:, moving].T.ravel(), t_eval=times, rtol=1e-8, atol=1e-10)
    output, il6 = sol.y[:4].T / m, sol.y[4:].T          # (times, patients)
    assert np.all(output[0] < 0.3) and np.all(output[1] >= 0.9), output
    assert np.all(np.diff(il6, axis=0) > 0)

def test_an_activated_endothelium_keeps_leaking_under_tocilizumab():
    """Tocilizumab removes IL-6 signalling, and with it the fever, but not the leak of an
    activated endothelium: hypotension persists where the endothelium is activated and not
    where it is at rest (toxicity.signs.leak_endothelial_half)."""
    from carcell.clinical.signs import SignModel, observe
    from carcell.design import compile_chunk, resolve_design
    from carcell.knowledge import load_knowledge
    from carcell.model.states import INDEX

    sc = validate_raw({**AXI, "population": {"n": 4, "seed": 1}}, "t")
    c = compile_chunk(resolve_design(sc, load_knowledge()), 0, 4)
    y = c.y0.copy()
    y[:, INDEX["il6"]] = 3000.0
    y[:, INDEX["tocilizumab"]] = [0.0, 0.0, 1e4, 1e4] * c.params.toci_kd       # none, none, blocked, blocked
    y[:, INDEX["endothelial_activation"]] = [0.0, 0.9, 0.0, 0.9]
    obs = observe(SignModel.from_knowledge(load_knowledge()), y, c.params, np.arange(4), 3.0, np.full(4, 60.0))
    assert (obs["temperature_c"].to_numpy()[:2] >= 38.0).all() and (obs["temperature_c"].to_numpy()[2:] < 38.0).all()
    assert list(obs["hypotension"]) == [True, True, False, True]


def test_bad_protocol_rule_is_a_clear_error():
    with pytest.raises(ScenarioError, match="regimen.protocol.rules\\[0\\].when"):
        validate_raw({**AXI, "regimen": {"protocol": {"rules": [{"when": "crs > two", "give": "tocilizumab",
                                                                  "dose": 8}]}}}, "t")
    with pytest.raises(ScenarioError, match="did you mean 'asco2021'"):
        validate_raw({**AXI, "regimen": {"protocol": "asco2012"}}, "t")



def test_protocol_extends_a_bundled_one():
    """``extends`` writes a protocol as what it changes: the base's entries in their order, one
    with a base id replacing it in place, new ones after, ``drop`` leaving some out; nested."""
    from carcell.clinical.management import load_protocol   # noqa: PLC0415

    k = load_knowledge()
    asco = load_protocol(k, "asco2021")
    ids = [r.id for r in asco.rules]
    mine = load_protocol(k, {"extends": "asco2021", "drop": ["methylprednisolone_icans4"],
                             "prophylaxis": [{"give": "dexamethasone", "days": [0, 1, 2], "dose": 10}],
                             "rules": [{"id": "dexamethasone_icans2", "when": "icans >= 1", "give": "dexamethasone",
                                        "dose": 10, "every": 12},
                                       {"when": "crs >= 1 for 24 h", "give": "dasatinib", "dose": 100, "every": 12}]})
    assert [r.id for r in mine.rules[:-1]] == [i for i in ids if i != "methylprednisolone_icans4"]
    assert mine.rules[-1].drug == "dasatinib"
    changed = next(r for r in mine.rules if r.id == "dexamethasone_icans2")
    assert (changed.grade, changed.every_h) == (1, 12.0)
    kept = {r.id: r for r in mine.rules}
    assert all(kept[r.id] == r for r in asco.rules if r.id not in ("dexamethasone_icans2", "methylprednisolone_icans4"))
    assert [q.drug for q in mine.prophylaxis] == ["dexamethasone"]
    # two levels: cohort 3 extends cohorts 1-2; extending cohort 3 keeps both
    nested = load_protocol(k, {"extends": "zuma1_cohort3", "rules": []})
    base = load_protocol(k, "zuma1_cohorts_1_2")
    assert nested.rules == base.rules
    assert [q.id for q in nested.prophylaxis] == ["tocilizumab_day_2"]


def test_protocol_extends_gives_the_same_patients_as_writing_it_out():
    """A bundled protocol that extends another (zuma1_cohort3: cohorts 1-2 plus tocilizumab on
    day 2) runs the same virtual patients to the same numbers as the same protocol written out."""
    k = load_knowledge()
    raw = copy.deepcopy(k.node("protocols.zuma1_cohorts_1_2"))
    raw["prophylaxis"] = copy.deepcopy(k.node("protocols.zuma1_cohort3")["prophylaxis"])
    written = run_cohort(validate_raw({**AXI, "regimen": {"protocol": raw}, "population": {"n": 60, "seed": 3},
                                       "trial": {"follow_up_days": 60}}, "written"))
    pd.testing.assert_frame_equal(written.patients, _run("cohort3").patients)
    assert written.patients["tocilizumab_doses"].min() >= 1     # everyone had the day-2 dose


@pytest.mark.parametrize("protocol, field", [
    ({"extends": "asco2012", "rules": []}, "regimen.protocol.extends: 'asco2012' is not a bundled protocol"),
    ({"extends": "asco2021", "drop": ["tocilizumab_crs3"]}, "regimen.protocol.drop: tocilizumab_crs3 is not an entry"),
    ({"drop": ["tocilizumab_crs2"], "rules": []}, "regimen.protocol.drop: only a protocol that extends"),
    ({"extend": "asco2021", "rules": []}, "regimen.protocol: extend is not part of a protocol"),
])
def test_protocol_extends_errors_name_the_field(protocol, field):
    with pytest.raises(ScenarioError, match=field.replace(".", "\\.").replace("[", "\\[")):
        validate_raw({**AXI, "regimen": {"protocol": protocol}}, "t")

DASATINIB_AT_ONSET = {"rules": [{"when": "crs >= 1", "give": "dasatinib", "dose": 100, "every": 12, "course_days": 3}]}


def test_dasatinib_at_crs_onset_halts_cytokines_and_expansion_reversibly():
    """Dasatinib blocks CAR signalling within hours, reversibly (Mestermann 2019): from CRS
    onset IFN-gamma stops rising and CAR expansion slows while it is given; after the 3-day
    course, expansion resumes."""
    base = {**AXI, "population": {"n": 20, "seed": 3}, "trial": {"follow_up_days": 30}}
    off = run_cohort(validate_raw({**base, "regimen": {"protocol": "none"}}, "off"))
    on = run_cohort(validate_raw({**base, "regimen": {"protocol": DASATINIB_AT_ONSET}}, "on"))
    onsets = on.patients["crs_onset_day"]
    had_crs = onsets.notna() & (onsets < 30 - 6)            # room to watch the course and after
    assert had_crs.sum() >= 0.7 * len(onsets)
    assert (on.patients.loc[had_crs, "dasatinib_days"] >= 3).all()
    assert (on.patients.loc[onsets.isna(), "dasatinib_days"] == 0).all()   # no CRS, no dasatinib
    t = on.times
    ic50 = float(load_knowledge(False).value("toxicity.drugs.dasatinib.ic50"))
    hill = float(load_knowledge(False).value("toxicity.drugs.dasatinib.hill"))
    halted = resumed = 0
    for i in np.flatnonzero(had_crs.to_numpy()):
        onset = onsets.iloc[i]
        j = int(np.searchsorted(t, onset))
        k = int(np.searchsorted(t, onset + 1.0))          # a day into the course
        e = int(np.searchsorted(t, onset + 3.0))          # course over (last dose at onset + 2.5 d)
        car_on, car_off = on.trajectories["car_total_cells"][i], off.trajectories["car_total_cells"][i]
        ifng_on = on.trajectories["ifng"][i]
        # within hours: IFN-gamma falls and expansion is slower than without the drug
        halted += (ifng_on[k] < ifng_on[j]) and (car_on[j + 4] / car_on[j] < car_off[j + 4] / car_off[j])
        # reversible: a day after the last dose the block has lifted ...
        c = on.trajectories["dasatinib"][i, int(np.searchsorted(t, onset + 3.5))]
        assert c**hill / (c**hill + ic50**hill) < 0.05
        # ... and expansion picks up again where antigen remains
        resumed += np.log(car_on[e + 4] / car_on[e]) > np.log(car_on[j + 4] / car_on[j])
    assert halted >= 0.9 * had_crs.sum()
    assert resumed >= 0.5 * had_crs.sum()


def test_rimiducid_clears_most_car_cells_with_icasp9_only():
    """Rimiducid dimerises iCasp9 and removes about 90% of CAR cells within hours (Zhou 2015);
    a construct without iCasp9 is untouched."""
    rule = {"rules": [{"when": "crs >= 1", "give": "rimiducid", "dose": 0.4}]}
    base = {"indication": {"disease": "LBCL"}, "population": {"n": 10, "seed": 2}, "trial": {"follow_up_days": 20}}
    armed = {"car": {"target": "CD19", "costim": ["CD28"]}, "safety": ["iCasp9"]}
    with_switch = run_cohort(validate_raw({**base, "product": armed, "regimen": {"protocol": rule}}, "s"))
    without = run_cohort(validate_raw({**base, "product": {**armed, "safety": []}, "regimen": {"protocol": rule}}, "n"))
    none = run_cohort(validate_raw({**base, "product": armed, "regimen": {"protocol": "none"}}, "x"))
    t = with_switch.times
    onsets = with_switch.patients["crs_onset_day"]
    assert onsets.notna().sum() >= 5
    for i in np.flatnonzero(onsets.notna().to_numpy()):
        j = int(np.searchsorted(t, onsets.iloc[i]))
        before = none.trajectories["car_total_cells"][i, j]
        after = with_switch.trajectories["car_total_cells"][i, j]       # stored after the dose
        assert after <= 0.11 * before
        assert without.trajectories["car_total_cells"][i, j] == pytest.approx(before, rel=1e-9)
    assert (with_switch.patients["rimiducid_given"] == onsets.notna().astype(int)).all()


def test_prophylactic_anakinra_lowers_myeloid_activation_and_icans_not_car_expansion():
    """IL-1 blockade damps monocyte activation and the neurotoxicity that follows it
    (Giavridis 2018, Norelli 2018; Strati's prophylactic anakinra: fewer grade >= 2 CRS and
    ICANS, reference/clinical.md 2.6) but does not act on the CAR cells. How much it damps the
    myeloid peak is not sourced: the test asks for no patient higher and a median at least 5%
    lower, well beyond the solver's error."""
    none, ana = _run("none"), _run("anakinra")
    assert (ana.patients["anakinra_days"] == 8).all() and (none.patients["anakinra_days"] == 0).all()
    mac = lambda r: r.trajectories["macrophage_activation"].max(axis=1)  # noqa: E731
    endo = lambda r: r.trajectories["endothelial_activation"].max(axis=1)  # noqa: E731
    assert np.all(mac(ana) <= mac(none) + 1e-9) and np.median(mac(ana)) < 0.95 * np.median(mac(none))
    assert np.all(endo(ana) <= endo(none) + 1e-9) and np.median(endo(ana)) < np.median(endo(none))
    assert ana.patients["icans_max_grade"].mean() < none.patients["icans_max_grade"].mean()
    # CAR-cell expansion is untouched: the peak differs by well under 1%
    ratio = ana.patients["cmax_cells_per_ul"] / none.patients["cmax_cells_per_ul"]
    assert np.allclose(ratio, 1.0, rtol=1e-2)


def test_methylprednisolone_taper_follows_its_schedule():
    """A taper is given step by step once its rule fires, whatever the grade: 1,000 mg daily
    for 3 days, 250 mg every 12 h for 2 days, 60 mg every 6 h for 1 day, then nothing."""
    r = _run("taper", n=3)
    ev = r.events[(r.events["event"] == "drug") & r.events["detail"].str.startswith("methylprednisolone")]
    for pid, e in ev.groupby("patient_id"):
        daily = e.groupby(np.floor(e["day"]))["value"].sum()
        expected = {0: 1000, 1: 1000, 2: 1000, 3: 500, 4: 500, 5: 240}
        assert daily.to_dict() == pytest.approx(expected), pid
        assert e["day"].max() < 6
    assert (r.patients["steroid_days"] == 6).all()


def test_prophylactic_tocilizumab_lowers_crs_and_raises_il6_and_endothelial_activation():
    """ZUMA-1 cohort 3 (tocilizumab on day 2 for all) beside cohorts 1-2, the same management
    otherwise: grade >= 3 CRS fell (3% vs 13%) with higher peak IL-6 (reference/clinical.md 2.6).
    Serum IL-6 drives the endothelium in the model, so endothelial activation rises too, patient
    by patient. Grade >= 3 neurotoxicity rose in that cohort (41% vs 28%); here it is at least
    not lowered."""
    c12, c3 = _run("cohorts_1_2"), _run("cohort3")
    assert (c3.patients["tocilizumab_doses"] >= 1).all()
    assert c3.patients["crs_max_grade"].mean() < c12.patients["crs_max_grade"].mean()
    # peak IL-6 is higher in the cohort (geometric mean; those cohorts 1-2 would treat anyway
    # differ little), and clearly so in the patients cohorts 1-2 never treat
    il6_c3, il6_c12 = c3.patients["il6_peak_pg_per_ml"], c12.patients["il6_peak_pg_per_ml"]
    assert np.log(il6_c3).mean() > np.log(il6_c12).mean()
    untreated = (c12.patients["tocilizumab_doses"] == 0).to_numpy()
    assert untreated.sum() >= 5 and np.median(il6_c3[untreated] / il6_c12[untreated]) > 1.5
    # endothelial activation, patient by patient (the same virtual patients in both runs): higher
    # with the prophylaxis in most, and in every patient cohorts 1-2 never treat, where serum IL-6
    # is the only difference (the mural-cell injury route does not see tocilizumab)
    endo_c3, endo_c12 = (r.trajectories["endothelial_activation"].max(axis=1) for r in (c3, c12))
    assert np.median(endo_c3 / endo_c12) > 1.0
    assert (endo_c3[untreated] > endo_c12[untreated]).all()
    assert (c3.patients["icans_max_grade"] >= 3).mean() >= (c12.patients["icans_max_grade"] >= 3).mean()


def test_toxicity_fit_writer_updates_every_fitted_value_and_its_note(tmp_path):
    """validation/calibrate_toxicity.py --write: every fitted parameter, block or flow-mapping
    entry, gets its new value and the new fit summary in its note; the rest of the file is kept."""
    import shutil

    import calibrate_toxicity as ct

    from carcell.knowledge.store import DATA_DIR, Knowledge

    data = tmp_path / "data"
    shutil.copytree(DATA_DIR, data)
    k = load_knowledge(False)
    new = {p: 1.1 * k.value(p) for p in ct.PARAMS}
    ct.write_fit(new, "9 evaluations, objective 3 -> 2, converged (test)", root=data)
    written = Knowledge(data)
    for p, v in new.items():
        assert written.value(p) == pytest.approx(v, rel=1e-3), p
        assert "9 evaluations, objective 3 -> 2, converged (test);" in written.node(p)["note"], p
    untouched = "toxicity.signs.fever_max_rise"
    assert written.value(untouched) == k.value(untouched)
    # an assumed entry fitted for the first time becomes a fit and keeps its prior in the note
    first = "toxicity.signs.leak_hill"
    assert k.node(first)["source"] == "assumption"
    ct.write_fit({first: 2.5}, "7 evaluations, objective 5 -> 4, converged (test)", root=data)
    node = Knowledge(data).node(first)
    assert node["value"] == 2.5 and node["source"] == "fit"
    assert "7 evaluations, objective 5 -> 4, converged (test);" in node["note"]
    assert f"prior was {k.value(first):g}: {k.node(first)['note']}" in node["note"]
    # a sourced entry fitted for the first time keeps its source beside the prior
    sourced = "toxicity.drugs.tocilizumab.il6_receptor_clearance"
    assert k.node(sourced)["source"].startswith("doi:")
    node = Knowledge(data).node(sourced)
    assert node["source"] == "fit" and f"prior was {k.value(sourced):g} (source: {k.node(sourced)['source']})" in node["note"]


def test_chance_of_no_difference_matches_a_simulated_study():
    """validation/toxicity_measures.chance_of_no_difference, computed exactly over every pair of
    counts, against studies drawn at random and tested with scipy's own chi-squared test (no
    continuity correction); with equal rates it is one minus the test's size, about 0.95; it
    falls as the rates part."""
    from scipy.stats import chi2_contingency
    from toxicity_measures import chance_of_no_difference

    rng = np.random.default_rng(7)
    for with_, without, n1, n0 in [(0.5, 0.5, 262, 90), (0.45, 0.35, 262, 90), (0.3, 0.2, 60, 40)]:
        exact = chance_of_no_difference(with_, without, n1, n0)
        draws = 2000
        same = 0
        for k1, k0 in zip(rng.binomial(n1, with_, draws), rng.binomial(n0, without, draws)):
            table = np.array([[k1, n1 - k1], [k0, n0 - k0]])
            same += chi2_contingency(table, correction=False).pvalue >= 0.05
        se = np.sqrt(exact * (1 - exact) / draws)
        assert abs(same / draws - exact) < 4 * se + 1e-3, (with_, without, exact, same / draws)
    assert chance_of_no_difference(0.4, 0.4, 262, 90) == pytest.approx(0.95, abs=0.01)
    chances = [chance_of_no_difference(0.4 + d, 0.4, 262, 90) for d in (0.0, 0.05, 0.1, 0.2, 0.3)]
    assert all(a > b for a, b in zip(chances, chances[1:])) and chances[-1] < 0.01
    # as a calibration term: none when the groups respond alike, growing as they part
    from toxicity_measures import no_difference_deviance
    deviances = [no_difference_deviance(c) for c in chances]
    assert deviances[0] == pytest.approx(0.0, abs=0.05) and all(a < b for a, b in zip(deviances, deviances[1:]))


def test_a_measure_the_arm_cannot_give_counts_as_far_off_as_it_can_be():
    """An arm with nobody in a measure's denominator (no severe CRS, so no tocilizumab response)
    gives NaN; the objective must stay a number, no better than any rate the arm could have had,
    or a fit could reach its best by making the measure disappear."""
    from toxicity_measures import discrepancy

    rate = {"value": 0.533, "n": 15}
    bound = {"value": 0.64, "compare": "upper_bound"}
    median = {"value": 2.0}
    for measure, target in [("tocilizumab_response", rate), ("neuro_any", bound), ("crs_onset_median_days", median)]:
        missing = discrepancy(measure, float("nan"), target, 101)
        grid = [discrepancy(measure, m, target, 101) for m in np.linspace(0.0, 1.0, 101)]
        assert np.isfinite(missing) and missing >= max(grid) - 1e-9, measure
    assert discrepancy("tocilizumab_response", float("nan"), rate, 101) > 10


def test_a_target_marked_not_fitted_adds_nothing_to_the_objective_but_is_still_checked():
    """fit: false (ZUMA-1's any-grade CRS, which counts afebrile CRS the model's grading cannot):
    no term in the calibration objective, while agrees() still compares it with its interval."""
    from toxicity_measures import agrees, discrepancy

    fitted, reported = {"value": 0.93}, {"value": 0.93, "fit": False}
    assert discrepancy("crs_any", 0.79, fitted, 101) > 10
    assert discrepancy("crs_any", 0.79, reported, 101) == 0.0
    assert agrees("crs_any", 0.79, reported, 101) is False and agrees("crs_any", 0.92, reported, 101) is True


def test_pooled_rates_read_every_seeds_patients_together():
    """toxicity_vs_trials.pooled: the rates of all seeds' patients together against each trial's
    interval; two copies of one arm give its own rates, and a rate outside is named."""
    from toxicity_vs_trials import pooled

    n = 100
    arm = pd.DataFrame({
        "solver_status": "ok", "crs_max_grade_lee2014": np.r_[np.ones(50), np.zeros(50)].astype(int),
        "icans_max_grade": np.r_[np.full(40, 3), np.zeros(60)].astype(int),
        "tocilizumab_doses": 0, "steroid_days": 0, "vasopressors_max": 0, "oxygen_support_max": 0,
        "temperature_max_c": np.r_[np.full(50, 38.5), np.full(50, 37.2)],
        "crs_onset_day": np.r_[np.ones(50), np.full(50, np.nan)], "crs_duration_days": 3.0,
        "crs_max_grade": np.r_[np.ones(50), np.zeros(50)].astype(int),
        "icans_onset_day": np.r_[np.full(40, 2.0), np.full(60, np.nan)], "icans_duration_days": 4.0,
        "tocilizumab_response": np.nan}, index=range(n))
    targets = {"T": {"crs_scale": "lee2014", "infused": 100, "crs_any": {"value": 0.5},
                     "neuro_grade3plus": {"value": 0.1}, "crs_onset_median_days": {"value": 1}}}
    assert pooled(targets, {"T": arm}) == pooled(targets, {"T": pd.concat([arm, arm])})
    inside, total, misses, chances = pooled(targets, {"T": arm})
    assert (inside, total) == (1, 2)       # medians are not rates; ICANS 0.40 against 0.10
    head, p = misses[0].split("; p=")
    assert len(misses) == 1 and head == "T neuro_grade3plus 0.40 (0.05-0.18"
    # 10 of 100 against the model's 0.40: two-sided, every count no likelier than 10
    from scipy.stats import binom
    pmf = binom.pmf(np.arange(101), 100, 0.40)
    assert float(p.rstrip(")")) == pytest.approx(pmf[pmf <= pmf[10] * (1 + 1e-7)].sum(), rel=0.01)
    assert len(chances) == 2 and all(0 < c <= 0.05 for c in chances)


def test_pooled_lines_print_every_measure_and_mark_the_checks():
    """toxicity_vs_trials.pooled_lines: one line per measure of the patients together; a rate
    gets its interval, verdict, chance and p, a median its trial value alone, and a target with
    fit: false is marked 'check' (compared, not fitted)."""
    from toxicity_vs_trials import pooled_lines

    arm = pd.DataFrame({
        "solver_status": "ok", "crs_max_grade_lee2014": np.r_[np.ones(50), np.zeros(50)].astype(int),
        "icans_max_grade": np.r_[np.full(40, 3), np.zeros(60)].astype(int),
        "tocilizumab_doses": 0, "steroid_days": 0, "vasopressors_max": 0, "oxygen_support_max": 0,
        "temperature_max_c": 38.5, "crs_onset_day": np.r_[np.full(50, 2.0), np.full(50, np.nan)],
        "crs_duration_days": 3.0, "tocilizumab_response": np.nan, "crs_max_grade": 1,
        "icans_onset_day": 2.0, "icans_duration_days": 4.0})
    targets = {"T": {"crs_scale": "lee2014", "infused": 100, "crs_any": {"value": 0.5},
                     "neuro_grade3plus": {"value": 0.1, "fit": False}, "crs_onset_median_days": {"value": 1}}}
    header, crs, icans, onset = pooled_lines(targets, {"T": arm})
    assert header.split()[:3] == ["trial", "measure", "model"]
    assert crs.split() == ["T", "crs_any", "0.50", "0.50", "0.40-0.60", "yes", crs.split()[6], "1", "yes"]
    assert 0 < float(crs.split()[6]) <= 0.05
    assert icans.split()[2:6] == ["0.40", "0.10", "0.05-0.18", "NO"] and icans.split()[-1] == "check"
    assert onset.split() == ["T", "crs_onset_median_days", "2.0", "1.0", "yes"]


def test_the_rates_figure_draws_each_rate_beside_its_trial_interval():
    """toxicity_vs_trials.rates_figure: one row per rate, the trial's interval as a bar (from 0
    for an upper bound), the model's rate as a dot, filled when inside and open when outside."""
    from toxicity_vs_trials import pooled_table, rates_figure

    arm = pd.DataFrame({
        "solver_status": "ok", "crs_max_grade_lee2014": np.r_[np.ones(50), np.zeros(50)].astype(int),
        "icans_max_grade": np.r_[np.full(40, 3), np.zeros(60)].astype(int),
        "tocilizumab_doses": 0, "steroid_days": 0, "vasopressors_max": 0, "oxygen_support_max": 0,
        "temperature_max_c": 37.5, "crs_onset_day": 1.0, "crs_duration_days": 3.0, "tocilizumab_response": np.nan,
        "crs_max_grade": 1, "icans_onset_day": 2.0, "icans_duration_days": 4.0})
    targets = {"T": {"crs_scale": "lee2014", "infused": 100, "crs_any": {"value": 0.5},
                     "neuro_grade3plus": {"value": 0.1}, "neuro_any": {"value": 0.5, "compare": "upper_bound"}}}
    table = pooled_table(targets, {"T": arm})
    # in the targets' order: CRS 0.5 inside; ICANS >= 3 0.4 against 0.05-0.18; ICANS 0.4 <= 0.5
    assert table["inside"].tolist() == [True, False, True]
    ax = rates_figure(table, "t").axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T  crs_any", "T  neuro_grade3plus",
                                                            "T  neuro_any (upper bound)"]
    bars = ax.collections[0].get_segments()
    assert [b[0][0] for b in bars] == pytest.approx([table["low"][0], table["low"][1], 0.0])
    assert [b[1][0] for b in bars] == pytest.approx(table["high"].tolist())
    dots = {line.get_label(): line for line in ax.get_lines()}
    assert dots["model, inside"].get_xdata().tolist() == pytest.approx([0.5, 0.4])
    assert dots["model, outside"].get_xdata().tolist() == pytest.approx([0.4])
    assert dots["model, outside"].get_markerfacecolor() == "white"


def test_crs_with_fever_counts_only_crs_that_reached_38_degrees():
    """The labels' share of patients whose CRS came with a fever: CRS on the trial's scale and a
    temperature of at least 38.0 degC; afebrile CRS (possible on Lee 2014 for a real patient) and
    fever in a patient whose run failed do not count."""
    from toxicity_measures import simulated

    p = pd.DataFrame({
        "solver_status": ["ok"] * 5 + ["failed"],
        "crs_max_grade_lee2014": [1, 2, 1, 0, 0, 1],
        "temperature_max_c": [38.0, 39.5, 37.9, 37.2, np.nan, 39.0],
        "icans_max_grade": 0, "tocilizumab_doses": 0, "steroid_days": 0, "vasopressors_max": 0,
        "oxygen_support_max": 0, "crs_onset_day": 1.0, "crs_duration_days": 3.0, "tocilizumab_response": np.nan,
        "crs_max_grade": 1, "icans_onset_day": np.nan, "icans_duration_days": np.nan})
    m = simulated(p, "lee2014")
    assert m["crs_with_fever"] == pytest.approx(2 / 5)
    assert m["crs_any"] == pytest.approx(3 / 5)


def test_icans_after_crs_counts_icans_that_began_once_crs_was_over():
    """The Abecma label's timing check: of the patients with ICANS, those whose ICANS began after
    their CRS had resolved (2 of 36 in KarMMa). ICANS starting on the day CRS ends counts as
    after it; ICANS during CRS does not; a patient with ICANS and no CRS is in the denominator
    only; patients without ICANS are in neither. ICANS onset and duration are medians over the
    patients with ICANS."""
    from toxicity_measures import agrees, icans_after_crs, simulated

    p = pd.DataFrame({
        "solver_status": "ok",
        "crs_max_grade_lee2014": [1, 1, 2, 0, 1, 0],
        "crs_max_grade": [1, 1, 2, 0, 1, 0],
        "crs_onset_day": [1.0, 1.0, 2.0, np.nan, 1.0, np.nan],
        "crs_duration_days": [3.0, 5.0, 2.0, np.nan, 4.0, np.nan],
        #                     during CRS, at its end, after it, without CRS, no ICANS, no ICANS
        "icans_max_grade": [2, 1, 3, 1, 0, 0],
        "icans_onset_day": [2.0, 6.0, 9.0, 3.0, np.nan, np.nan],
        "icans_duration_days": [4.0, 6.0, 20.0, 1.0, np.nan, np.nan],
        "temperature_max_c": 38.5, "tocilizumab_doses": 0, "steroid_days": 0, "vasopressors_max": 0,
        "oxygen_support_max": 0, "tocilizumab_response": np.nan})
    assert icans_after_crs(p) == pytest.approx(2 / 4)
    m = simulated(p, "lee2014")
    assert m["icans_after_crs_among_icans"] == pytest.approx(0.5)
    assert m["icans_onset_median_days"] == pytest.approx(np.median([2.0, 6.0, 9.0, 3.0]))
    assert m["icans_duration_median_days"] == pytest.approx(np.median([4.0, 6.0, 20.0, 1.0]))
    assert np.isnan(icans_after_crs(p.assign(icans_max_grade=0)))
    # the medians are printed beside the trials, not judged against an interval
    assert agrees("icans_duration_median_days", 18.0, {"value": 6}, 127) is None
    # the KarMMa check itself: 2 of 36, whose 95% interval is about 0.007-0.19
    target = {"value": 0.056, "n": 36}
    assert agrees("icans_after_crs_among_icans", 0.15, target, 128) is True
    assert agrees("icans_after_crs_among_icans", 0.60, target, 128) is False


def test_the_pace_of_severe_crs_reads_the_patients_with_severe_crs():
    """How long severe CRS ran before its first tocilizumab (the FDA analysis's population:
    patients given it for grade >= 3 CRS; a dose before CRS began is not one given for it) and how
    long the CRS of patients with grade >= 3 lasted, each a median over those patients on the
    trial's scale, and each a median with no interval."""
    from toxicity_measures import agrees, discrepancy, simulated

    p = pd.DataFrame({
        "solver_status": "ok",
        "crs_max_grade_penn": [3, 4, 3, 1, 2, 0],
        "crs_max_grade": [3, 3, 2, 1, 2, 0],
        "crs_onset_day": [1.0, 2.0, 3.0, 1.0, 1.0, np.nan],
        "crs_duration_days": [8.0, 12.0, 5.0, 20.0, 30.0, np.nan],
        #               severe: 2 d, 5 d, before CRS; mild: 1 d (not counted), none, none
        "tocilizumab_first_day": [3.0, 7.0, 2.0, 2.0, np.nan, np.nan],
        "icans_max_grade": 0, "icans_onset_day": np.nan, "icans_duration_days": np.nan,
        "temperature_max_c": 39.0, "tocilizumab_doses": [1, 2, 1, 1, 0, 0], "steroid_days": 0,
        "vasopressors_max": 0, "oxygen_support_max": 0, "tocilizumab_response": np.nan})
    m = simulated(p, "penn")
    assert m["crs_onset_to_tocilizumab_median_days"] == pytest.approx(np.median([2.0, 5.0]))
    assert m["crs_duration_grade3plus_median_days"] == pytest.approx(np.median([8.0, 12.0, 5.0]))
    assert agrees("crs_duration_grade3plus_median_days", 5.0, {"value": 10}, 137) is None
    # a median off by its spread (1 day for the wait, 1.5 for the duration) costs 1
    assert discrepancy("crs_onset_to_tocilizumab_median_days", 3.0, {"value": 4}, 45) == pytest.approx(1.0)
    assert discrepancy("crs_duration_grade3plus_median_days", 8.5, {"value": 10}, 137) == pytest.approx(1.0)
    # a table from before the column was written gives no wait rather than an error
    assert np.isnan(simulated(p.drop(columns="tocilizumab_first_day"), "penn")["crs_onset_to_tocilizumab_median_days"])


def test_il6_fold_is_day_28_over_infusion_and_a_check_without_an_interval():
    """The Abecma label's "returned to baseline within one month": serum IL-6 on day 28 over its
    value at infusion, linear between output times, median over the patients; printed beside
    the label's 1, never fitted and never judged against an interval."""
    from toxicity_measures import agrees, discrepancy, il6_fold, simulated

    times = np.array([0.0, 7.0, 21.0, 35.0])
    il6 = np.array([[5.0, 500.0, 40.0, 5.0],       # day 28 halfway from 40 to 5: 22.5 -> 4.5 x
                    [10.0, 10.0, 10.0, 10.0],      # never moved: 1
                    [2.0, 3000.0, 3000.0, 1000.0]])  # day 28: 2000 -> 1000 x
    np.testing.assert_allclose(il6_fold(times, il6), [4.5, 1.0, 1000.0])
    p = pd.DataFrame({"solver_status": "ok", "crs_max_grade": 0, "icans_max_grade": 0,
                      "crs_onset_day": np.nan, "crs_duration_days": np.nan, "icans_onset_day": np.nan,
                      "icans_duration_days": np.nan, "temperature_max_c": 37.0, "tocilizumab_doses": 0,
                      "steroid_days": 0, "vasopressors_max": 0, "oxygen_support_max": 0,
                      "tocilizumab_response": np.nan}, index=range(3))
    assert np.isnan(simulated(p, "astct")["il6_day_28_fold_median"])     # no trajectories: no value
    m = simulated(p.assign(il6_day_28_fold=il6_fold(times, il6)), "astct")
    assert m["il6_day_28_fold_median"] == pytest.approx(4.5)
    target = {"value": 1}
    assert agrees("il6_day_28_fold_median", 4.5, target, 128) is None
    assert discrepancy("il6_day_28_fold_median", 4.5, target, 128) == 0.0


def test_chance_outside_is_how_often_a_true_model_fails_the_interval_check():
    """chance_outside: were the model's rate the truth, how often would its trial's reported rate
    carry a 95% interval that agrees() rejects? Against simulated trials judged by agrees()
    itself (20,000 trials, standard error about 0.0015); never above 0.05, the Clopper-Pearson
    interval's guaranteed coverage, and at most 0.025 for an upper bound (one side)."""
    from toxicity_measures import agrees, chance_outside

    rng = np.random.default_rng(11)
    for rate, size, target in ((0.9, 101, {"value": 0.5}), (0.2, 128, {"value": 0.5, "compare": "upper_bound"}),
                               (0.06, 115, {"value": 0.5})):
        seen, times = np.unique(rng.binomial(size, rate, 20_000), return_counts=True)
        rejected = np.array([not agrees("x", rate, {**target, "value": k / size}, size) for k in seen])
        simulated_share = times[rejected].sum() / times.sum()
        assert chance_outside(rate, target, size) == pytest.approx(simulated_share, abs=0.006)
    for rate in np.linspace(0.01, 0.99, 25):
        for size in (36, 79, 137):
            assert chance_outside(rate, {"value": 0.5}, size) <= 0.05 + 1e-12
            assert chance_outside(rate, {"value": 0.5, "compare": "upper_bound"}, size) <= 0.025 + 1e-12


def test_chance_of_at_least_is_the_poisson_binomial_tail():
    """Equal chances give the binomial tail; unequal ones the sum over every outcome."""
    import itertools

    from scipy.stats import binom
    from toxicity_measures import chance_of_at_least

    assert chance_of_at_least(3, [0.05] * 33) == pytest.approx(binom.sf(2, 33, 0.05), rel=1e-12)
    assert chance_of_at_least(0, [0.3, 0.1]) == pytest.approx(1.0)
    chances = [0.1, 0.4, 0.03, 0.25]
    for m in range(5):
        brute = sum(np.prod([c if hit else 1 - c for c, hit in zip(chances, hits)])
                    for hits in itertools.product([0, 1], repeat=4) if sum(hits) >= m)
        assert chance_of_at_least(m, chances) == pytest.approx(brute, rel=1e-12)


def test_response_by_crs_reads_each_group():
    from toxicity_measures import response_by_crs

    p = pd.DataFrame({"solver_status": ["ok"] * 5 + ["failed"],
                      "crs_max_grade": [0, 0, 1, 2, 3, 0],
                      "best_response": ["CR", "PD", "PR", "CR", "SD", "CR"]})
    assert response_by_crs(p, ["CR"]) == (pytest.approx(1 / 3), pytest.approx(0.5))
    assert response_by_crs(p, ["CR", "PR"]) == (pytest.approx(2 / 3), pytest.approx(0.5))


def _draws_with_correlation(r: float | None, n: int = 4000):
    """Standard normals of n LBCL patients, with the indication's inflammation correlation set
    to r (None: the data file's), and the design they were drawn for."""
    from carcell.design.compile import patient_draws, resolve_design

    k = load_knowledge()
    if r is not None:
        k.tree = copy.deepcopy(k.tree)
        k.node("indications.LBCL.patients.inflammation_correlation")["value"] = r
    design = resolve_design(validate_raw({**AXI, "population": {"n": n, "seed": 11}}, "draws"), k)
    return patient_draws(design, np.arange(n)), design


def test_host_inflammation_ties_il6_capacity_to_expansion_and_nothing_else():
    """The myeloid IL-6 capacity's draw correlates with the expansion potential as the data file
    says (tolerance: 4 standard errors of a sample correlation of 4,000), stays a standard normal,
    and no other draw moves."""
    from carcell.design.compile import _FIXED_DRAWS, expansion_potential

    base, design = _draws_with_correlation(0.0)
    tied, _ = _draws_with_correlation(-0.6)
    col = _FIXED_DRAWS + design.omega_order.index("il6_max")
    potential = expansion_potential(design, base)
    assert np.corrcoef(base[:, col], potential)[0, 1] == pytest.approx(0.0, abs=4 / np.sqrt(4000))
    se = (1 - 0.36) / np.sqrt(4000)
    assert np.corrcoef(tied[:, col], potential)[0, 1] == pytest.approx(-0.6, abs=4 * se)
    assert tied[:, col].mean() == pytest.approx(0.0, abs=4 / np.sqrt(4000))
    assert tied[:, col].std() == pytest.approx(1.0, abs=0.05)
    others = np.ones(base.shape[1], bool)
    others[col] = False
    np.testing.assert_array_equal(tied[:, others], base[:, others])
    # faster proliferation means more expansion, faster effector death less
    z_rho = base[:, _FIXED_DRAWS + design.omega_order.index("rho_effector")]
    z_death = base[:, _FIXED_DRAWS + design.omega_order.index("d_effector")]
    assert np.corrcoef(potential, z_rho)[0, 1] > 0 > np.corrcoef(potential, z_death)[0, 1]


def test_an_impossible_inflammation_correlation_is_refused():
    with pytest.raises(KnowledgeError, match="inflammation_correlation.*between -1 and 1"):
        _draws_with_correlation(-1.0, n=2)
