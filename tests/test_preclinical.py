"""Preclinical modes (docs/preclinical.md): in-vitro killing assays and mouse xenografts.

Every test runs the real model and solver on a bundled example (small wells, few mice):

* assay: killing rises with E:T and with time; a well without effectors follows the line's
  growth law untouched; dasatinib during the assay lowers killing and IFN-gamma with its
  concentration, and killing comes back after washout; serial restimulation lowers killing
  round by round as the cells exhaust; a dasatinib-pretreated NK-92 product kills more;
* mouse: untreated tumours double at ln2/r of their line; treated mice reach the humane endpoint
  later than their untreated twins; ``carcell run`` on a mouse scenario writes its files;
* bad ``assay:`` / ``xenograft:`` input ends with one line naming the field, exit status 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from carcell.knowledge import load_knowledge
from carcell.preclinical.assay import run_assay
from carcell.preclinical.mouse import run_xenograft
from carcell.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
VITRO = ROOT / "examples" / "nk92_2b4_dap12_vitro.yaml"
VITRO_PRETREATED = ROOT / "examples" / "nk92_2b4_dap12_dasatinib_pretreated_vitro.yaml"
MOUSE = ROOT / "examples" / "nk92_2b4_dap12_mouse.yaml"
# one plain assay: no restimulation, no drug
PLAIN = ["assay.restimulations=0", "assay.restimulate_every_hours=null", "assay.dasatinib_nm=[0]",
         "assay.hours=48"]


def _at(result, hour: float) -> pd.DataFrame:
    tc = result.timecourse
    return tc[np.isclose(tc["hour"], hour)].set_index(["dasatinib_nm", "effector_to_target"])


def _killed_log(result, drug: float, ratio: float, hour: float) -> float:
    """ln(targets without effectors / targets): the log-kill accumulated up to ``hour``."""
    row = _at(result, hour).loc[(drug, ratio)]
    return float(np.log(row["target_cells_no_effectors"] / row["target_cells"]))


# -- in vitro -------------------------------------------------------------------------------

def test_killing_rises_with_effector_to_target_and_with_time():
    r = run_assay(load_scenario(VITRO, PLAIN))
    assert (r.timecourse["solver_status"] == "ok").all()
    ratios = [0.5, 1.0, 2.0, 5.0, 10.0]
    for hour in (4.0, 24.0, 48.0):
        lysis = [_at(r, hour).loc[(0.0, e), "lysis_percent"] for e in ratios]
        assert np.all(np.diff(lysis) > 0.5), (hour, lysis)
    for e in ratios:
        over_time = [_at(r, h).loc[(0.0, e), "lysis_percent"] for h in (1.0, 4.0, 24.0, 48.0)]
        assert np.all(np.diff(over_time) > 0), (e, over_time)
    assert _at(r, 48.0).loc[(0.0, 10.0), "lysis_percent"] > 40


def test_no_effectors_no_killing_targets_grow_as_the_line():
    r = run_assay(load_scenario(VITRO, PLAIN))
    k = load_knowledge(False)
    ctrl = r.timecourse[r.timecourse["effector_to_target"] == 0]
    assert (ctrl["lysis_percent"] == 0).all()
    assert (ctrl["car_cells"] == 0).all() and (ctrl["ifng_pg_per_ml"] == 0).all()
    # untouched targets follow the line's logistic growth in the well, to solver precision
    a = r.assay
    rate = np.log(2) / float(k.value(f"preclinical.lines.{a.target_line}.in_vitro_doubling_time"))
    cap = float(k.value("preclinical.assay.well.max_density")) * a.well_volume_ul / 1000.0
    t = ctrl["hour"].to_numpy() / 24.0
    expected = cap / (1.0 + (cap / a.target_cells - 1.0) * np.exp(-rate * t))
    assert ctrl["target_cells"].to_numpy() == pytest.approx(expected, rel=1e-5)
    assert expected[-1] > 1.5 * a.target_cells     # the check is not vacuous: the targets grew


def test_dasatinib_lowers_killing_and_ifng_by_dose_and_washout_restores_killing():
    doses = [0.0, 10.0, 50.0, 200.0]
    r = run_assay(load_scenario(VITRO, [*PLAIN[:2], "assay.hours=24", f"assay.dasatinib_nm={doses}",
                                        "assay.effector_to_target=[5]"]))
    end = _at(r, 24.0)
    lysis = [end.loc[(d, 5.0), "lysis_percent"] for d in doses]
    ifng = [end.loc[(d, 5.0), "ifng_pg_per_ml"] for d in doses]
    assert np.all(np.diff(lysis) < 0), lysis
    assert np.all(np.diff(ifng) < 0), ifng
    assert lysis[-1] < 0.3 * lysis[0] and ifng[-1] < 0.3 * ifng[0]

    # washout at 24 h: the next 24 h kill as fast as cells that never saw the drug
    base = [*PLAIN[:2], "assay.hours=48", "assay.effector_to_target=[5]"]
    washed = run_assay(load_scenario(VITRO, [*base, "assay.dasatinib_nm=[0, 200]", "assay.dasatinib_washout_hours=24"]))
    kept = run_assay(load_scenario(VITRO, [*base, "assay.dasatinib_nm=[200]"]))
    window = {name: _killed_log(res, d, 5.0, 48.0) - _killed_log(res, d, 5.0, 25.0)
              for name, res, d in (("washed", washed, 200.0), ("never", washed, 0.0), ("kept", kept, 200.0))}
    during = _killed_log(washed, 200.0, 5.0, 24.0)
    assert during < 0.3 * _killed_log(washed, 0.0, 5.0, 24.0)        # blocked while present
    assert window["washed"] > 3.0 * window["kept"], window           # reversed after washout
    assert window["washed"] > 0.8 * window["never"], window


def test_serial_restimulation_lowers_killing_round_by_round():
    sc = load_scenario(VITRO, ["assay.target_cells=1e5", "assay.well_volume_ul=100", "assay.hours=192",
                               "assay.restimulate_every_hours=48", "assay.restimulations=3",
                               "assay.effector_to_target=[1]", "assay.dasatinib_nm=[0]"])
    rounds = run_assay(sc).rounds.sort_values("round")
    assert list(rounds["round"]) == [0, 1, 2, 3]
    lysis = rounds["lysis_percent"].to_numpy()
    assert np.all(np.diff(lysis) < -2), lysis
    assert np.all(np.diff(rounds["exhausted_share"].to_numpy()) > 0), rounds["exhausted_share"].tolist()


def test_dasatinib_pretreated_nk92_kills_more_in_vitro():
    plain, pre = (run_assay(load_scenario(f, PLAIN)) for f in (VITRO, VITRO_PRETREATED))
    assert plain.summary["pretreatment_rested_share"] == 0
    assert pre.summary["pretreatment_rested_share"] > 0.1
    gain = [_at(pre, 48.0).loc[(0.0, e), "lysis_percent"] - _at(plain, 48.0).loc[(0.0, e), "lysis_percent"]
            for e in (0.5, 1.0, 2.0, 5.0, 10.0)]
    assert all(g > 0.2 for g in gain), gain
    assert gain[0] > 2.0, gain          # clearest where effectors are scarce


# -- mouse --------------------------------------------------------------------------------------

def test_untreated_subcutaneous_tumour_doubles_at_ln2_over_r():
    sc = load_scenario(MOUSE, ["population.n=3", "trial.follow_up_days=10", "xenograft.site=subcutaneous",
                               "xenograft.implanted_cells=null", "xenograft.starting_volume_mm3=20"])
    r = run_xenograft(sc)
    rate = float(load_knowledge(False).value("preclinical.lines.Raji.in_vivo_growth_rate"))
    v = r.size["control"]
    assert np.all((v[:, 0] > 5) & (v[:, 0] < 80)), v[:, 0]   # near 20 mm3 (log-normal spread between mice)
    j = int(np.searchsorted(r.times, 4.0))
    doubling = np.log(2) * (r.times[j] - r.times[0]) / np.log(v[:, j] / v[:, 0])
    assert doubling == pytest.approx(np.full(3, np.log(2) / rate), rel=0.02)
    # treated and untreated mice are the same mice: equal tumours at the first dose
    assert r.size["CAR"][:, 0] == pytest.approx(v[:, 0], rel=1e-6)   # (stored as float32)


def test_treated_mice_live_longer_than_untreated():
    r = run_xenograft(load_scenario(MOUSE, ["population.n=8", "trial.follow_up_days=40"]))
    mice = r.mice
    car = mice[mice["group"] == "CAR"].set_index("mouse_id")["survival_days"]
    ctrl = mice[mice["group"] == "control"].set_index("mouse_id")["survival_days"]
    assert (car > ctrl).all(), pd.DataFrame({"car": car, "control": ctrl})
    s = r.summary
    assert s["median_survival_days"]["CAR"] > s["median_survival_days"]["control"] + 2
    assert s["logrank_p_car_vs_control"] < 0.05


def test_species_mouse_run_writes_its_outputs(tmp_path):
    from typer.testing import CliRunner

    from carcell.cli import app

    out = tmp_path / "mouse"
    res = CliRunner().invoke(app, ["run", str(MOUSE), "--out", str(out), "-n", "4", "--set", "trial.follow_up_days=30",
                                   "--set", "xenograft.site=subcutaneous"])
    assert res.exit_code == 0, res.output
    for f in ("mice.parquet", "mice.csv", "tumour_size.parquet", "tumour_volume.png", "survival.png",
              "patients.parquet", "trajectories.nc", "summary.json", "provenance.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["species"] == "mouse"
    assert {"toxicity", "haematology", "trial_survival_model"} <= set(summary["not_applicable"])
    assert summary["xenograft"]["mice"] == {"CAR": 4, "control": 4}
    assert summary["toxicity"]["crs_any"] == 0            # no human myeloid cells in an NSG mouse
    mice = pd.read_parquet(out / "mice.parquet")
    assert len(mice) == 8 and set(mice["group"]) == {"CAR", "control"}
    sizes = pd.read_parquet(out / "tumour_size.parquet")
    assert (sizes["tumour_volume_mm3"] > 0).all()
    prov = json.loads((out / "provenance.json").read_text())
    assert "preclinical.hosts.NSG.weight" in prov["sources"]
    assert "humane endpoint" in res.output or "median survival" in res.output


def test_assay_command_writes_tables_and_plots(tmp_path):
    from typer.testing import CliRunner

    from carcell.cli import app

    out = tmp_path / "vitro"
    res = CliRunner().invoke(app, ["assay", str(VITRO), "--out", str(out), "--set", "assay.hours=48",
                                   "--set", "assay.restimulations=1", "--set", "assay.readout_every_hours=4"])
    assert res.exit_code == 0, res.output
    for f in ("assay_timecourse.parquet", "assay_timecourse.csv", "assay_rounds.csv", "assay.json",
              "assay_killing.png", "assay_lysis_vs_et.png", "assay_rounds.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    tc = pd.read_csv(out / "assay_timecourse.csv")
    assert set(tc["dasatinib_nm"]) == {0, 10, 50} and tc["hour"].max() == 48
    assert "lysis" in res.output


# -- bad input ------------------------------------------------------------------------------

BAD = {
    "negative_et": ("assay", "indication: {disease: B-ALL}\nassay: {effector_to_target: [1, -2]}\n",
                    ["assay.effector_to_target", "between 0 and 1000"]),
    "misspelt_assay_field": ("assay", "indication: {disease: B-ALL}\nassay: {wells_volume_ul: 100}\n",
                             ["assay.wells_volume_ul", "did you mean 'well_volume_ul'"]),
    "unknown_line": ("assay", "indication: {disease: B-ALL}\nassay: {target_line: Nalm-6}\n",
                     ["assay.target_line", "NALM6"]),
    "restimulations_past_the_end": (
        "assay", "indication: {disease: B-ALL}\nassay: {hours: 48, restimulate_every_hours: 24, restimulations: 2}\n",
        ["assay.hours", "set hours to 72"]),
    "xenograft_without_mouse": ("run", "indication: {disease: LBCL}\nxenograft: {tumour_line: Raji}\n",
                                ["xenograft", "species: mouse"]),
    "bad_site": ("run", "indication: {disease: LBCL}\nspecies: mouse\nxenograft: {site: intraperitoneal}\n",
                 ["xenograft.site", "subcutaneous", "intravenous"]),
    "volume_of_a_leukaemia": (
        "run", "indication: {disease: LBCL}\nspecies: mouse\nxenograft: {site: intravenous, starting_volume_mm3: 50}\n",
        ["xenograft.starting_volume_mm3", "implanted_cells"]),
    "lymphodepleted_mouse": ("run", "indication: {disease: LBCL}\nspecies: mouse\nregimen: {lymphodepletion: flu_cy}\n",
                             ["regimen.lymphodepletion", "none"]),
    "no_line_for_disease": ("run", "indication: {disease: gastric}\nspecies: mouse\n",
                            ["xenograft.tumour_line", "gastric", "Raji"]),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_preclinical_input_is_one_line_naming_the_field(case, tmp_path):
    command, text, needles = BAD[case]
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["COLUMNS"] = "400"
    r = subprocess.run([sys.executable, "-m", "carcell", command, str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "o").exists()
