"""Product design: vocabulary, presets against their publications, design rules, gate maths,
provenance, and the direction of design effects in simulation.

Simulation tests use small cohorts with a shared seed, so two designs meet the same virtual
patients; the directions they check come from the literature named in each test.
"""

from __future__ import annotations

import numpy as np
import pytest

from carcell.cohort import run_cohort
from carcell.design import resolve_design
from carcell.design.atlas import rank_targets
from carcell.design.explain import citations, compare, parameter_table
from carcell.design.gates import Gate, gate_population, recognition
from carcell.errors import CarcellError, DesignError, ScenarioError
from carcell.knowledge import load_knowledge
from carcell.model.states import PARAMETER_NAMES
from carcell.scenario.load import validate_raw

K = load_knowledge(False)


def design(raw: dict):
    return resolve_design(validate_raw(raw, "test"), load_knowledge())


def cohort(raw: dict, n: int = 24, days: float = 120, seed: int = 5):
    raw = {**raw, "population": {"n": n, "seed": seed}, "trial": {"follow_up_days": days}}
    return run_cohort(validate_raw(raw, "test"))


# -- vocabulary ---------------------------------------------------------------------------------

def test_vocabulary_has_every_named_part():
    binders = {b: K.text(f"binders.{b}.target") for b in K.names("binders")}
    assert binders["FMC63"] == "CD19"
    assert binders["ide-cel_BCMA"] == "BCMA" and binders["LCAR-B38M"] == "BCMA"
    assert "CLDN18.2" in binders.values() and "GD2" in binders.values()
    assert {"scFv", "bivalent_VHH"} <= {K.text(f"binders.{b}.format") for b in binders}
    assert {"CD8a", "CD28"} <= set(K.names("construct.hinges"))
    assert sum(h.startswith("IgG4") for h in K.names("construct.hinges")) >= 2
    assert {"CD8a", "CD28", "NKG2D"} <= set(K.names("construct.transmembrane"))
    assert {"CD28", "4-1BB", "OX40", "ICOS", "2B4", "DAP10", "DAP12"} <= set(K.names("costim"))
    assert {"CD3zeta", "DAP12"} <= set(K.names("construct.activation"))
    assert {"IL-15_secreted", "IL-15_membrane", "IL-12", "IL-18", "dnTGFbRII", "PD1-CD28_switch"} \
        <= set(K.names("armour"))
    assert {"iCasp9", "EGFRt", "dasatinib"} <= set(K.names("safety"))
    assert {"OR", "AND", "NOT"} <= set(K.names("logic"))
    assert {"autologous_T", "allogeneic_TCRko_T", "NK-92", "PB-NK", "CB-NK", "iPSC-NK"} <= set(K.names("chassis"))
    assert {"tisa-cel", "axi-cel", "brexu-cel", "liso-cel", "ide-cel", "cilta-cel", "CB-CAR19-IL15-NK",
            "satri-cel", "GD2-CART01"} <= set(K.names("products"))


ATLAS_TARGETS = ("CD19", "CD22", "CD20", "BCMA", "GPRC5D", "MSLN", "CLDN18.2", "GD2", "HER2", "EGFRvIII",
                 "IL13Ra2", "B7-H3", "GPC3", "PSMA", "MUC1", "CEA", "NKG2DL")


@pytest.mark.parametrize("antigen", ATLAS_TARGETS)
def test_atlas_entry_is_complete(antigen):
    k = load_knowledge()
    indications = k.names(f"antigens.{antigen}.indications")
    assert indications, antigen
    for ind in indications:
        assert ind in k.names("antigens._indications")
        assert 0 <= k.value(f"antigens.{antigen}.indications.{ind}.patients_positive") <= 1
        median, log_sd = k.value(f"antigens.{antigen}.indications.{ind}.density")
        assert median > 0 and log_sd >= 0
        neg, neg_sd = k.value(f"antigens.{antigen}.indications.{ind}.negative_cell_fraction")
        assert 0 <= neg <= 1 and neg_sd >= 0
    for tissue in (k.node(f"antigens.{antigen}").get("normal_tissues") or {}):
        assert k.value(f"antigens.{antigen}.normal_tissues.{tissue}.density") > 0
        assert k.text(f"tissues.{tissue}.consequence")
        assert k.text(f"tissues.{tissue}.severity") in ("manageable", "serious", "life-threatening")
        assert 0 <= k.value(f"tissues.{tissue}.accessibility") <= 1
    assert k.text(f"antigens.{antigen}.reference_binder") in k.names("binders")
    assert k.text(f"binders.{k.text(f'antigens.{antigen}.reference_binder')}.target") == antigen


def test_known_normal_tissue_consequences():
    """The atlas carries the on-target, off-tumour facts the clinic knows (biology.md 5)."""
    def tissues(a):
        return set(K.node(f"antigens.{a}").get("normal_tissues") or {})
    assert "b_cells" in tissues("CD19") and "plasma_cells" in tissues("BCMA")
    assert "gastric_mucosa" in tissues("CLDN18.2") and "lung_epithelium" in tissues("HER2")
    assert "peripheral_nerves" in tissues("GD2") and tissues("EGFRvIII") == set()
    assert K.text("tissues.lung_epithelium.severity") == "life-threatening"  # Morgan 2010


# -- presets against their publications ----------------------------------------------------------

# (target, costimulatory domains, binder format, a published dose, dose unit, armour, safety).
# Sources: labels and pivotal papers (tisa-cel Maude 2018; axi-cel Neelapu 2017; brexu-cel
# Wang 2020; liso-cel Abramson 2020; ide-cel Munshi 2021; cilta-cel Berdeja 2021; CB-NK Liu
# 2020; CT041 Qi 2022; GD2-CART01 Del Bufalo 2023).
PUBLISHED = {
    "tisa-cel": ("CD19", ["4-1BB"], "scFv", 3.1e6, "cells/kg", [], []),
    "axi-cel": ("CD19", ["CD28"], "scFv", 2.0e6, "cells/kg", [], []),
    "brexu-cel": ("CD19", ["CD28"], "scFv", 2.0e6, "cells/kg", [], []),
    "liso-cel": ("CD19", ["4-1BB"], "scFv", 1.0e8, "cells", [], ["EGFRt"]),
    "ide-cel": ("BCMA", ["4-1BB"], "scFv", 4.5e8, "cells", [], []),
    "cilta-cel": ("BCMA", ["4-1BB"], "bivalent_VHH", 0.75e6, "cells/kg", [], []),
    "CB-CAR19-IL15-NK": ("CD19", ["CD28"], "scFv", 1.0e6, "cells/kg", ["IL-15_secreted"], ["iCasp9"]),
    "satri-cel": ("CLDN18.2", ["CD28"], "scFv", 2.5e8, "cells", [], []),
    "GD2-CART01": ("GD2", ["CD28", "4-1BB"], "scFv", 1.0e7, "cells/kg", [], ["iCasp9"]),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_matches_the_published_construct(name):
    target, costim, fmt, dose, unit, armour, safety = PUBLISHED[name]
    product = K.node(f"products.{name}.product")
    binder = product["car"]["binders"][0]
    assert K.text(f"binders.{binder}.target") == target
    assert K.text(f"binders.{binder}.format") == fmt
    assert product["car"]["costim"] == costim
    assert product["car"].get("activation", "CD3zeta") == "CD3zeta"
    assert set(product.get("armour", [])) == set(armour)
    assert set(safety) <= set(product.get("safety", []))
    lo, hi = K.value(f"products.{name}.dose_range")
    assert K.node(f"products.{name}.dose_range")["unit"] == unit
    assert lo <= dose <= hi
    nk = name == "CB-CAR19-IL15-NK"
    assert K.text(f"chassis.{product['chassis']}.cell_type") == ("NK" if nk else "T")


def test_preset_with_overrides():
    sc = validate_raw({"product": {"preset": "axi-cel", "car": {"costim": ["4-1BB"]},
                                   "dose": {"cells": 1e8}}, "indication": {"disease": "LBCL"}}, "t")
    assert sc.product.car.costim == ["4-1BB"]
    assert sc.product.car.hinge == "CD28" and sc.product.car.binders[0].name == "FMC63"
    assert sc.product.dose.cells == 1e8 and sc.product.dose.cells_per_kg is None
    assert sc.name == "axi-cel"
    plain = validate_raw({"product": {"preset": "tisa-cel"}}, "t")
    assert plain.indication.disease == "B-ALL"       # the preset's indication
    assert plain.product.dose.cells_per_kg == K.value("products.tisa-cel.default_dose")


def test_unknown_preset_is_named_with_a_suggestion():
    with pytest.raises(ScenarioError, match="did you mean 'axi-cel'"):
        validate_raw({"product": {"preset": "axicel"}, "indication": {"disease": "LBCL"}}, "t")


# -- design rules ------------------------------------------------------------------------------

CD19_LBCL = {"indication": {"disease": "LBCL"}}


@pytest.mark.parametrize("product, field, words", [
    ({"chassis": "NK-92", "irradiated": False, "car": {"target": "CD19"}}, "product.irradiated",
     "must be irradiated"),
    ({"car": {"binders": ["FMC63"], "logic": {"gate": "NOT"}}}, "product.car.logic", "two antigens"),
    ({"car": {"target": "CD19", "activation": "synNotch"}, "safety": ["dasatinib"]}, "product.safety",
     "kinase"),
    ({"car": {"target": "CLDN18.2"}}, "product.car", "not a target in LBCL"),
    ({"car": {"binders": ["FMC63"], "logic": {"gate": "OR"}}}, "product.car.logic", "at least two"),
    ({"car": {"binders": ["FMC63", "m971"]}}, "product.car.binders", "logic gate"),
    ({"car": {"binders": ["FMC63", "CAT"], "logic": {"gate": "OR"}}}, "product.car.binders", "twice"),
    ({"car": {"binders": ["FMC63", "m971"], "logic": {"gate": "OR", "mode": "split"}}},
     "product.car.logic.mode", "tandem"),
])
def test_impossible_designs_are_errors_naming_the_field(product, field, words):
    with pytest.raises(DesignError) as err:
        design({**CD19_LBCL, "product": product})
    assert str(err.value).startswith(field) and words in str(err.value), str(err.value)


def test_odd_designs_warn():
    d = design({**CD19_LBCL, "product": {"chassis": "autologous_T", "car": {
        "target": "CD19", "transmembrane": "NKG2D"}, "armour": ["dnTGFbRII"], "dose": {"cells": 1e12}}})
    text = " ".join(d.warnings)
    assert "NKG2D is designed for NK" in text
    assert "dnTGFbRII" in text and "changes nothing" in text
    assert "outside the range" in text
    assert not design({**CD19_LBCL, "product": {"preset": "axi-cel"}}).warnings


# -- gate maths --------------------------------------------------------------------------------

R = np.random.default_rng(3)
NEG = [R.uniform(0, 1, 200) for _ in range(3)]
RK = [R.uniform(0, 1, 200) for _ in range(3)]


def _gate(kind, n_act, n_inh=0, **kw):
    return gate_population(Gate(kind, None, n_act, n_inh, **kw), NEG[:n_act + n_inh], RK[:n_act + n_inh],
                           RK[:n_act + n_inh])


def test_gate_invariants():
    single = [gate_population(Gate("single", None, 1), [NEG[i]], [RK[i]], [RK[i]]) for i in range(2)]
    or_ = _gate("OR", 2)
    and_ = _gate("AND", 2)
    not_ = _gate("NOT", 1, 1, inhibition_efficiency=0.9)
    np.testing.assert_allclose(single[0].share, 1 - NEG[0], rtol=1e-12)
    np.testing.assert_allclose(single[0].kill, RK[0], rtol=1e-12)
    for g in (or_, and_, not_):
        np.testing.assert_allclose(g.share + g.missed, 1.0, rtol=1e-12)
    # OR covers at least what either antigen covers; AND at most
    mass = lambda g: g.share * g.kill  # noqa: E731
    assert np.all(mass(or_) >= np.maximum(mass(single[0]), mass(single[1])) - 1e-12)
    assert np.all(mass(and_) <= np.minimum(mass(single[0]), mass(single[1])) + 1e-12)
    # NOT never recognises more than its activating part; inhibition 0 is the single gate
    assert np.all(mass(not_) <= mass(single[0]) + 1e-12)
    off = _gate("NOT", 1, 1, inhibition_efficiency=0.0)
    np.testing.assert_allclose(mass(off), mass(single[0]), rtol=1e-12)
    # OR missed share is the product of the negative shares (independent expression)
    np.testing.assert_allclose(or_.missed, NEG[0] * NEG[1], rtol=1e-12)


def test_synnotch_needs_the_priming_antigen_in_the_site():
    none = np.zeros(3)
    one = np.ones(3)
    g = Gate("AND", "synnotch", 2, priming="site")
    # a tissue with only the killing antigen (priming antigen absent): spared
    spared = gate_population(g, [one, none], [one * 0.9, one * 0.9], [one * 0.9, one * 0.9])
    assert np.all(spared.share * spared.kill == 0)
    # a tumour where half the cells carry the priming antigen: cells with only the killing
    # antigen are killed too (priming acts on the site, not on the cell)
    tumour = gate_population(g, [one * 0.5, none], [one * 0.9, one * 0.9], [one * 0.9, one * 0.9])
    np.testing.assert_allclose(tumour.share, 1.0)


def test_recognition_threshold():
    assert recognition(200.0, 200.0, 2) == pytest.approx(0.5)
    d = design(CD19_LBCL)
    low = design({**CD19_LBCL, "product": {"car": {"binders": [{"name": "FMC63", "kd_nm": 30}]}}})
    # lower affinity (higher KD) needs more antigen to kill
    assert low.antigens[0].half_kill > d.antigens[0].half_kill
    assert d.antigens[0].half_kill == pytest.approx(0.1 * d.antigens[0].half_activation)


# -- provenance ----------------------------------------------------------------------------------

def test_every_model_parameter_has_a_derivation():
    d = design({**CD19_LBCL, "product": {"preset": "axi-cel"}})
    table = parameter_table(d)
    per_patient = {"host_baseline", "recognition_tumour", "activation_tumour", "normal_baseline_1",
                   "normal_baseline_2", "normal_baseline_3", "recognition_normal_3", "activation_normal_3",
                   "normal_turnover_3", "alive_car", "alive_tumour_pos", "alive_tumour_neg", "alive_tumour_low",
                   # flags of the normal-tissue slots, read from tissues.yaml (neurovascular)
                   "neurovascular_normal_1", "neurovascular_normal_2", "neurovascular_normal_3"}
    listed = set(table["parameter"])
    missing = [p for p in PARAMETER_NAMES if p not in listed and p not in per_patient]
    assert not missing, missing
    for _, r in table.iterrows():
        assert r["derivation"], r["parameter"]
    rows = {r["parameter"]: r for _, r in table.iterrows()}
    assert "costim.CD28.multipliers.rho_effector" in rows["rho_effector"]["derivation"]
    assert "construct.hinges.CD28.antigen_threshold_multiplier" in rows["half_activation[CD19]"]["derivation"]


def test_compare_lists_exactly_the_parameters_costimulation_changes():
    d28 = design({**CD19_LBCL, "product": {"car": {"target": "CD19", "costim": "CD28"}}})
    d41 = design({**CD19_LBCL, "product": {"car": {"target": "CD19", "costim": "4-1BB"}}})
    df = compare(d28, d41)
    changed = set(df["parameter"])
    m28, m41 = set(K.names("costim.CD28.multipliers")), set(K.names("costim.4-1BB.multipliers"))
    differing = {n for n in m28 | m41 if K.value(f"costim.CD28.multipliers.{n}")
                 != K.value(f"costim.4-1BB.multipliers.{n}")}
    assert differing <= changed
    assert "k_kill" not in changed and "tumour_growth_rate" not in changed
    assert compare(d28, d28).empty


def test_citations_name_the_sources():
    d = design({"product": {"preset": "tisa-cel"}})
    c = citations(d)
    refs = " ".join(c["references"])
    assert "https://doi.org/10.1002/psp4.12388" in refs        # Stein 2019 kinetics
    assert any("assumption" in a for a in c["assumptions"])


# -- ranking targets ------------------------------------------------------------------------------

def test_target_ranking_invariants():
    df = rank_targets(load_knowledge(), "gastric")
    assert df["score"].between(0, 1).all() and df["coverage"].between(0, 1).all()
    single = df[df["logic"] == "single"].set_index("targets")
    assert "CLDN18.2" in single.index
    for _, r in df[df["logic"].isin(["OR", "AND"])].iterrows():
        a, b = r["targets"].split(f" {r['logic']} ")
        if r["logic"] == "OR":
            assert r["coverage"] >= max(single.loc[a, "coverage"], single.loc[b, "coverage"]) - 1e-12
        else:
            assert r["off_tumour_exposure"] <= min(single.loc[a, "off_tumour_exposure"],
                                                   single.loc[b, "off_tumour_exposure"]) + 1e-12
    with pytest.raises(CarcellError, match="did you mean"):
        rank_targets(load_knowledge(), "gastrc")


# -- direction of effects in simulation ----------------------------------------------------------

def _copies_late(result, day):
    i = int(np.searchsorted(result.times, day))
    return np.nanmedian(result.trajectories["car_copies_per_ug"][:, i])


def test_41bb_preset_persists_longer_than_cd28_preset():
    """4-1BB (tisa-cel) persists for months where CD28 (axi-cel) contracts (Guedan 2020, Stein 2019)."""
    tisa = cohort({**CD19_LBCL, "product": {"preset": "tisa-cel", "dose": {"cells_per_kg": 2e6}}}, days=240)
    axi = cohort({**CD19_LBCL, "product": {"preset": "axi-cel", "dose": {"cells_per_kg": 2e6}}}, days=240)
    for day in (60, 90):  # months after the peak, 4-1BB keeps several-fold more CAR cells
        assert _copies_late(tisa, day) > 2 * _copies_late(axi, day), day
    i = int(np.searchsorted(tisa.times, 180))
    same_patient = tisa.trajectories["car_copies_per_ug"][:, i] > axi.trajectories["car_copies_per_ug"][:, i]
    assert same_patient.mean() >= 0.75


@pytest.mark.parametrize("costim", [["CD28"], ["4-1BB"], ["CD28", "4-1BB"], ["2B4"]])
def test_costimulation_keeps_or_relieves_tonic_signalling_exhaustion(costim):
    """The 14G2a GD2 scFv signals without antigen (Long 2015): its cells exhaust faster by
    1 + (tonic_exhaustion - 1) x the product of the domains' weights, which a knowledge tree
    without the binder's tonic signalling does not show; CD28 keeps the excess, 4-1BB relieves it."""
    from carcell.knowledge.store import Knowledge  # noqa: PLC0415

    plain = Knowledge()
    del plain.node("binders.14G2a")["tonic_exhaustion"]
    raw = validate_raw({"indication": {"disease": "neuroblastoma"},
                        "product": {"car": {"binders": ["14G2a"], "costim": costim}}}, "test")
    ratio = (resolve_design(raw, load_knowledge()).typical["k_exhaustion"]
             / resolve_design(raw, plain).typical["k_exhaustion"])
    weights = [K.value(f"costim.{d}.tonic_exhaustion_weight") for d in costim]
    assert ratio == pytest.approx(1 + (K.value("binders.14G2a.tonic_exhaustion") - 1) * np.prod(weights), rel=1e-12)
    tonic = K.value("binders.14G2a.tonic_exhaustion")
    if costim == ["CD28"]:
        assert ratio == pytest.approx(tonic)   # GD2-28z: the binder's whole excess
    if "4-1BB" in costim:
        assert ratio < tonic                   # 4-1BB relieves it, alone or beside CD28


def test_lower_affinity_needs_more_antigen_to_kill():
    """At a low antigen density a 100x weaker binder kills less (Liu 2015, Caruso 2015)."""
    base = {"indication": {"disease": "LBCL", "antigen_density": {"median": 400, "log_sd": 0}}}
    hi = cohort({**base, "product": {"car": {"binders": [{"name": "FMC63"}]}}}, days=28)
    lo = cohort({**base, "product": {"car": {"binders": [{"name": "FMC63", "kd_nm": 30}]}}}, days=28)
    burden = lambda r: r.trajectories["tumour_total_cells"][:, -1] / r.trajectories["tumour_total_cells"][:, 0]  # noqa: E731
    assert np.median(burden(lo)) > 2 * np.median(burden(hi))


def test_or_gate_reduces_antigen_negative_escape():
    """CD19 OR CD22 leaves fewer unrecognised blasts and fewer antigen-negative relapses than
    CD19 alone (Spiegel 2021, Cordoba 2021)."""
    ball = {"indication": {"disease": "B-ALL"}}
    single = cohort({**ball, "product": {"car": {"binders": ["FMC63"]}}}, n=60, days=365)
    dual = cohort({**ball, "product": {"car": {"binders": ["FMC63", "m971"], "logic": {"gate": "OR"}}}},
                  n=60, days=365)
    # the same patients: the OR gate never recognises less of a tumour
    assert np.all(dual.patients["unrecognised_fraction"] <= single.patients["antigen_negative_fraction"] + 1e-15)
    neg_single = (single.patients["relapse_antigen"] == "negative").sum()
    neg_dual = (dual.patients["relapse_antigen"] == "negative").sum()
    assert neg_single >= 5 and neg_dual < neg_single


def test_and_gate_spares_a_tissue_with_one_antigen_and_an_or_gate_does_not():
    """BCMA AND GPRC5D spares keratinised epithelia, which carry GPRC5D only, while a GPRC5D
    CAR or a BCMA OR GPRC5D CAR depletes them (Kloss 2013 split-signal logic; GPRC5D skin/nail toxicity, Mailankody 2022)."""
    mm = {"indication": {"disease": "MM"}}
    gprc5d = cohort({**mm, "product": {"car": {"binders": ["MCARH109_scFv"]}, "dose": {"cells": 4.5e8}}}, days=90)
    both = cohort({**mm, "product": {"car": {"binders": ["ide-cel_BCMA", "MCARH109_scFv"],
                                             "logic": {"gate": "AND", "mode": "split"}},
                                     "dose": {"cells": 4.5e8}}}, days=90)
    col = "keratinised_epithelia_nadir_fraction"
    assert col in both.patients and col in gprc5d.patients
    assert np.all(both.patients[col] > 0.999)
    assert np.median(gprc5d.patients[col]) < 0.9
    # plasma cells carry both antigens: still hit by the AND gate
    assert np.median(both.patients["plasma_cells_nadir_fraction"]) < 0.9
    # an OR gate over the same pair is a GPRC5D CAR for the skin: it depletes it
    either = cohort({**mm, "product": {"car": {"binders": ["ide-cel_BCMA", "MCARH109_scFv"],
                                               "logic": {"gate": "OR"}},
                                       "dose": {"cells": 4.5e8}}}, days=90)
    assert np.median(either.patients[col]) < 0.9


def test_irradiated_nk92_never_expands_and_il15_armour_extends_nk_persistence():
    nk92 = cohort({"indication": {"disease": "B-ALL"}, "product": {
        "chassis": "NK-92", "car": {"binders": ["FMC63"]}, "dose": {"cells": 3e9}}}, n=12, days=30)
    assert np.all(nk92.trajectories["car_total_cells"] <= 3e9 * (1 + 1e-6))
    cb = {"indication": {"disease": "LBCL"}}
    armed = cohort({**cb, "product": {"preset": "CB-CAR19-IL15-NK"}}, n=12, days=120)
    plain = cohort({**cb, "product": {"preset": "CB-CAR19-IL15-NK", "armour": []}}, n=12, days=120)
    assert _copies_late(armed, 90) > 10 * _copies_late(plain, 90)


def test_design_doc_vocabulary_is_current():
    """docs/design.md's vocabulary tables are generated from the data files."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "tools/gen_design_doc.py", "--check"], cwd=root,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- the commands -------------------------------------------------------------------------------

def _cli(*args, cwd=None):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "carcell", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd or root, env=env, stdin=subprocess.DEVNULL)


def test_design_commands_end_to_end(tmp_path):
    r = _cli("design", "explain", "examples/axicel_lbcl.yaml", "--csv", tmp_path / "p.csv")
    assert r.returncode == 0, r.stderr
    assert "rho_effector" in r.stdout and "costim.CD28.multipliers.rho_effector" in r.stdout
    import pandas as pd
    table = pd.read_csv(tmp_path / "p.csv")
    assert {"parameter", "value", "unit", "derivation", "sources", "notes"} <= set(table.columns)
    assert (table["parameter"] == "k_kill").sum() == 1

    r = _cli("design", "compare", "examples/tisacel_ball.yaml", "examples/or_cd19_cd22_ball.yaml")
    assert r.returncode == 0, r.stderr
    assert "half_activation[CD22]" in r.stdout and "OR (tandem)" in r.stdout

    r = _cli("citations", "examples/tisacel_ball.yaml")
    assert r.returncode == 0 and "https://doi.org/10.1002/psp4.12388" in r.stdout

    r = _cli("design", "targets", "gastric", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "t" / "targets.png").read_bytes()[:4] == b"\x89PNG"
    ranked = pd.read_csv(tmp_path / "t" / "targets.csv")
    assert set(ranked["logic"]) == {"single", "OR", "AND", "NOT"}

    r = _cli("design", "parts")
    assert r.returncode == 0 and "GD2-CART01" in r.stdout and "iPSC-NK" in r.stdout


def test_design_errors_exit_2_with_one_line(tmp_path):
    (tmp_path / "nk.yaml").write_text(
        "indication: {disease: B-ALL}\nproduct: {chassis: NK-92, irradiated: false}\n")
    r = _cli("run", "nk.yaml", "--out", "o", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "product.irradiated" in r.stderr and not (tmp_path / "o").exists()
    r = _cli("design", "targets", "gastrik")
    assert r.returncode == 2 and "did you mean 'gastric'" in r.stderr


def test_params_pickle_round_trip():
    import pickle

    from carcell.design import compile_chunk
    c = compile_chunk(design(CD19_LBCL), 0, 3)
    q = pickle.loads(pickle.dumps(c.params))
    np.testing.assert_array_equal(q.values, c.params.values)
    np.testing.assert_array_equal(q.k_kill, c.params.k_kill)
