"""ADaM-style exports (carcell.io.adam) of a hand-made trial output directory.

The directory follows docs/trial-outputs.md: two arms ("car-x", a CAR product, and "SOC"),
events with hand-written CRS/ICANS grade sequences and drugs, and CAR kinetics in
trajectories.nc. Expected values are written out here from the inputs, not from the code.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
from typer.testing import CliRunner

from carcell.cli import app
from carcell.errors import CarcellError
from carcell.io.adam import ADAM_SPEC, DatasetSpec, Variable, build_adam, spec_markdown, validate_adam, write_adam

ROOT = Path(__file__).resolve().parents[1]
FOLLOW_UP = 100.0
DEATH_DAY_P3 = 30.0


def _patients() -> pd.DataFrame:
    nan = np.nan
    d3 = DEATH_DAY_P3
    rows = [
        # id arm kind infused age weight burden best resp_day pfs, ev efs, ev os, ev dor, ev death cause
        (1, "car-x", "car", True, 61.0, 80.0, 1e11, "CR", 28.0, 100.0, False, 100.0, False, 100.0, False,
         72.0, False, nan, "none"),
        (2, "car-x", "car", True, 45.5, 70.0, 5e11, "PR", 28.0, 60.0, True, 60.0, True, 100.0, False,
         32.0, True, nan, "none"),
        (3, "car-x", "car", True, 70.0, 90.0, 9e11, "PD", nan, d3, True, d3, True, d3, True,
         nan, nan, d3, "crs"),
        (4, "SOC", "soc", False, 55.0, 75.0, nan, "NE", nan, 20.0, True, 20.0, True, 100.0, False,
         nan, nan, nan, "none"),
        (5, "SOC", "soc", True, 50.0, 65.0, nan, "SD", nan, 45.0, True, 45.0, True, 80.0, True,
         nan, nan, 80.0, "progression"),
    ]
    cols = ["patient_id", "arm", "arm_kind", "infused", "age_years", "weight_kg", "baseline_burden_cells",
            "best_response", "response_day", "pfs_days", "pfs_event", "efs_days", "efs_event", "os_days",
            "os_event", "dor_days", "dor_event", "death_day", "death_cause"]
    p = pd.DataFrame(rows, columns=cols)
    p["patient_id"] = p["patient_id"].astype("int64")
    for c in ("pfs_event", "efs_event", "os_event"):
        p[c] = p[c].astype(bool)
    p["dor_event"] = p["dor_event"].astype(object)  # NaN for non-responders, as in the contract
    car = p["arm_kind"] == "car"
    p["cmax_copies_per_ug"] = np.where(car, [5000.0, 3000.0, 800.0, 0, 0], nan)
    p["auc_0_28_copies_day_per_ug"] = np.where(car, [5e4, 3e4, 8e3, 0, 0], nan)
    p["hematotox_score"] = np.where(car, [1.0, 3.0, 4.0, 0, 0], nan)
    p["crs_max_grade"] = np.where(car, [2.0, 0.0, 1.0, 0, 0], nan)
    p["severe_neutropenia_days"] = [5.0, 0.0, 2.0, nan, nan]
    p["anc_nadir_per_ul"] = [300.0, 900.0, 600.0, nan, nan]
    p["anc_recovery_day"] = [14.0, nan, nan, nan, nan]
    p["extra_column_to_tolerate"] = 1.0
    return p


def _events() -> pd.DataFrame:
    e = [
        (1, 0.0, "infusion", 2e8, "CAR+ cells"),
        # CRS 1, 2, 0, 1, 0: two episodes
        (1, 2.0, "crs_grade", 1, "CRS grade 0 -> 1 (ASTCT)"),
        (1, 3.0, "crs_grade", 2, "CRS grade 1 -> 2 (ASTCT)"),
        (1, 3.0, "drug", 560.0, "tocilizumab (tocilizumab_crs2)"),
        (1, 4.0, "drug", 10.0, "dexamethasone (dexamethasone_crs2)"),
        (1, 4.5, "drug", 560.0, "tocilizumab (tocilizumab_crs2)"),
        (1, 5.0, "crs_grade", 0, "CRS grade 2 -> 0 (ASTCT)"),
        (1, 5.0, "drug", 10.0, "methylprednisolone (other)"),  # given as the episode ended: not in it
        (1, 8.0, "crs_grade", 1, "CRS grade 0 -> 1 (ASTCT)"),
        (1, 8.5, "drug", 100.0, "anakinra (anakinra_rule)"),
        (1, 9.0, "crs_grade", 0, "CRS grade 1 -> 0 (ASTCT)"),
        (1, 28.0, "response_assessment", np.nan, "CR"),
        # ICANS 1 -> 3, never resolved
        (2, 0.0, "infusion", 2e8, "CAR+ cells"),
        (2, 6.5, "icans_grade", 1, "ICANS grade 0 -> 1 (ASTCT)"),
        (2, 7.0, "icans_grade", 3, "ICANS grade 1 -> 3 (ASTCT)"),
        (2, 7.0, "drug", 20.0, "dexamethasone (dexamethasone_icans2)"),
        (2, 60.0, "progression", np.nan, "positive"),
        (2, 61.0, "something_new", np.nan, "unknown kinds are tolerated"),
        # CRS grade 1 -> 5 (death), IVIG
        (3, 0.0, "infusion", 2e8, "CAR+ cells"),
        (3, 1.0, "crs_grade", 1, "CRS grade 0 -> 1 (ASTCT)"),
        (3, 20.0, "ivig", 30.0, "IgG <= 400 mg/dL"),
        (3, 25.0, "ivig", 30.0, "IgG <= 400 mg/dL"),
        (3, 29.5, "crs_grade", 5, "CRS grade 1 -> 5 (ASTCT)"),
        (3, DEATH_DAY_P3, "death", np.nan, "crs"),
        (5, 80.0, "death", np.nan, "progression"),
    ]
    ev = pd.DataFrame(e, columns=["patient_id", "day", "event", "value", "detail"])
    ev["patient_id"] = ev["patient_id"].astype("int64")
    ev["value"] = ev["value"].astype(float)
    ev["arm"] = np.where(ev["patient_id"] <= 3, "car-x", "SOC")
    for c in ("event", "detail", "arm"):
        ev[c] = ev[c].astype("string")
    return ev


TIMES = np.arange(0.0, FOLLOW_UP + 0.25, 0.5)


def _kinetics() -> dict[str, np.ndarray]:
    """(patient, time) values; patient 3's level falls below 5 copies/ug after day 14."""
    t = TIMES[None, :]
    peak = np.array([[5000.0], [3000.0], [800.0]])
    copies = peak * np.exp(-((np.log1p(t) - np.log(12.0)) ** 2))
    copies[2, TIMES > 14] = 2.0
    return {"car_copies_per_ug": copies, "car_cells_per_ul": copies / 50.0}


def _write_trial(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    _patients().to_parquet(d / "patients.parquet", index=False)
    _events().to_parquet(d / "events.parquet", index=False)
    k = _kinetics()
    anc = np.full((3, TIMES.size), 2000.0)
    anc[0, (TIMES >= 2.5) & (TIMES < 14)] = 300.0  # patient 1: severe neutropenia from day 2.5
    ds = xr.Dataset(
        {"car_copies_per_ug": (("patient", "time"), k["car_copies_per_ug"], {"units": "copies/ug"}),
         "car_cells_per_ul": (("patient", "time"), k["car_cells_per_ul"], {"units": "cells/uL"}),
         "anc_per_ul": (("patient", "time"), anc, {"units": "cells/uL", "long_name": "ANC"}),
         "arm": (("patient",), np.array(["car-x"] * 3))},
        coords={"patient": ("patient", np.array([1, 2, 3], dtype="int64")), "time": ("time", TIMES)})
    ds.to_netcdf(d / "trajectories.nc")
    (d / "trial.json").write_text(json.dumps({
        "name": "Test trial: CAR-X vs SOC", "disease": "LBCL", "response_criteria": "lugano",
        "follow_up_days": FOLLOW_UP, "seed": 1, "arms": {}, "comparisons": [],
        "populations": {"itt": 5, "mitt": 4}}))
    return d


@pytest.fixture(scope="module")
def trial_dir(tmp_path_factory) -> Path:
    return _write_trial(tmp_path_factory.mktemp("trial"))


@pytest.fixture(scope="module")
def adam(trial_dir) -> dict[str, pd.DataFrame]:
    return build_adam(trial_dir)


def _ae(adam, pid: int, decod: str) -> pd.DataFrame:
    a = adam["ADAE"]
    return a[(a["USUBJID"] == f"TEST-TRIAL-CAR-X-VS-SOC-{pid}") & (a["AEDECOD"] == decod)].reset_index(drop=True)


# -- the datasets ------------------------------------------------------------------------------


def test_datasets_pass_validation(adam):
    assert set(adam) == {"ADSL", "ADTTE", "ADAE", "ADPC"}
    assert validate_adam(adam) == []


def test_adsl(adam):
    s = adam["ADSL"].set_index("SUBJID")
    assert len(s) == 5
    assert set(s["STUDYID"]) == {"TEST-TRIAL-CAR-X-VS-SOC"}
    assert s.loc["1", "USUBJID"] == "TEST-TRIAL-CAR-X-VS-SOC-1"
    assert list(s["ARM"]) == ["car-x"] * 3 + ["SOC"] * 2
    assert list(s["ARMCD"]) == ["CARX"] * 3 + ["SOC"] * 2
    assert list(s["ITTFL"]) == ["Y"] * 5
    assert list(s["SAFFL"]) == ["Y", "Y", "Y", "N", "Y"]
    assert list(s["MITTFL"]) == ["Y", "Y", "Y", "N", "Y"]
    assert s.loc["4", "ACTARM"] == "Not Treated" and pd.isna(s.loc["4", "TRT01A"])
    assert s.loc["5", "TRT01A"] == "SOC"
    assert list(s["TRTSDY"].fillna(-1)) == [1, 1, 1, -1, 1]
    assert list(s["RSPFL"]) == ["Y", "Y", "N", "N", "N"]
    assert list(s["CRFL"]) == ["Y", "N", "N", "N", "N"]
    assert list(s["DTHFL"].fillna("")) == ["", "", "Y", "", "Y"]
    assert s.loc["3", "DTHDY"] == 31 and s.loc["5", "DTHDY"] == 81  # infusion day = study day 1
    assert s.loc["3", "DTHCAUS"] == "CYTOKINE RELEASE SYNDROME"
    assert list(s["EOSSTT"]) == ["COMPLETED", "COMPLETED", "DISCONTINUED", "COMPLETED", "DISCONTINUED"]
    assert s.loc["2", "AGE"] == 45.5 and set(s["AGEU"]) == {"YEARS"}
    assert s.loc["1", "CMAX"] == 5000.0 and np.isnan(s.loc["4", "CMAX"])
    assert s.loc["3", "HTXSCORE"] == 4.0
    assert "BURDENBL" in s and "WEIGHTBL" in s


def test_study_id_argument(trial_dir):
    assert set(build_adam(trial_dir, study_id="ZUMA 7 (virtual)")["ADSL"]["STUDYID"]) == {"ZUMA-7-VIRTUAL"}


@pytest.mark.parametrize("code, days, event", [("PFS", "pfs_days", "pfs_event"), ("OS", "os_days", "os_event"),
                                               ("EFS", "efs_days", "efs_event"), ("DOR", "dor_days", "dor_event")])
def test_adtte_equals_patients(adam, code, days, event):
    p = _patients()
    p = p[p[days].notna()]
    t = adam["ADTTE"]
    t = t[t["PARAMCD"] == code]
    assert list(t["USUBJID"]) == [f"TEST-TRIAL-CAR-X-VS-SOC-{i}" for i in p["patient_id"]]
    np.testing.assert_array_equal(t["AVAL"].to_numpy(), p[days].to_numpy(dtype=float))
    np.testing.assert_array_equal(t["CNSR"].to_numpy(), 1 - p[event].astype(bool).to_numpy(dtype=int))
    assert set(t["AVALU"]) == {"DAYS"}
    assert (t["CNSDTDSC"].notna() == (t["CNSR"] == 1)).all()


def test_adtte_days_and_descriptions(adam):
    t = adam["ADTTE"].set_index(["USUBJID", "PARAMCD"])
    u = "TEST-TRIAL-CAR-X-VS-SOC-"
    assert t.loc[(u + "3", "PFS"), "EVNTDESC"] == "DEATH"
    assert t.loc[(u + "2", "PFS"), "EVNTDESC"] == "DISEASE PROGRESSION OR RELAPSE"
    assert t.loc[(u + "3", "PFS"), "ADY"] == 31 and t.loc[(u + "3", "PFS"), "STARTDY"] == 1
    # DOR starts at the response (day 28 -> study day 29) and ends at day 28 + 32 = 60
    assert t.loc[(u + "2", "DOR"), "STARTDY"] == 29 and t.loc[(u + "2", "DOR"), "ADY"] == 61
    assert (u + "3", "DOR") not in t.index  # not a responder
    assert list(adam["ADTTE"]["PARAMCD"][:4]) == ["PFS", "OS", "EFS", "DOR"]  # one subject's, in order
    assert t.loc[(u + "4", "OS"), "SAFFL"] == "N" and t.loc[(u + "4", "OS"), "TRTP"] == "SOC"


def test_crs_episodes_from_grade_sequence(adam):
    """Grades 1 (day 2), 2 (day 3), 0 (day 5), 1 (day 8), 0 (day 9): two episodes."""
    crs = _ae(adam, 1, "Cytokine release syndrome")
    assert len(crs) == 2
    assert list(crs["ATOXGRN"]) == [2, 1] and list(crs["AETOXGR"]) == ["2", "1"]
    assert list(crs["ASTDY"]) == [3, 9]  # study day = floor(day) + 1
    assert list(crs["AENDY"]) == [6, 10]
    assert list(crs["ADURN"]) == [3.0, 1.0]  # exact days: 5 - 2, 9 - 8
    assert list(crs["AESER"]) == ["N", "N"]
    assert list(crs["AEOUT"]) == ["RECOVERED/RESOLVED"] * 2
    assert set(crs["AEBODSYS"]) == {"Immune system disorders"}


def test_concomitant_drugs_of_an_episode(adam):
    crs = _ae(adam, 1, "Cytokine release syndrome")
    # tocilizumab twice and dexamethasone inside episode 1; methylprednisolone at its resolution is not
    assert list(crs["AECMTRT"]) == ["tocilizumab; dexamethasone", "anakinra"]
    assert list(crs["AECONTRT"]) == ["Y", "Y"]


def test_ongoing_and_fatal_episodes(adam):
    icans = _ae(adam, 2, "Immune effector cell-associated neurotoxicity syndrome")
    assert len(icans) == 1
    r = icans.iloc[0]
    assert r["ATOXGRN"] == 3 and r["ASTDY"] == 7 and np.isnan(r["AENDY"]) and np.isnan(r["ADURN"])
    assert r["AESER"] == "Y" and r["AEOUT"] == "NOT RECOVERED/NOT RESOLVED" and r["AECMTRT"] == "dexamethasone"
    assert r["AEBODSYS"] == "Nervous system disorders"
    crs3 = _ae(adam, 3, "Cytokine release syndrome")
    assert list(crs3["ATOXGRN"]) == [5] and list(crs3["AEOUT"]) == ["FATAL"]


def test_neutropenia_and_hypogammaglobulinaemia(adam):
    n1 = _ae(adam, 1, "Neutrophil count decreased")
    assert list(n1["ATOXGRN"]) == [4]  # nadir 300/uL
    assert list(n1["ASTDY"]) == [3] and list(n1["ADURN"]) == [14.0 - 2.5]  # ANC < 500 from day 2.5 to recovery
    assert list(_ae(adam, 3, "Neutrophil count decreased")["ATOXGRN"]) == [3]  # nadir 600/uL
    assert _ae(adam, 2, "Neutrophil count decreased").empty  # no day below 500
    h = _ae(adam, 3, "Hypogammaglobulinaemia")
    assert len(h) == 1 and h.loc[0, "ASTDY"] == 21 and h.loc[0, "AECMTRT"] == "ivig"


def test_adae_sequence_and_population(adam):
    a = adam["ADAE"]
    for _, g in a.groupby("USUBJID"):
        assert list(g["AESEQ"]) == list(range(1, len(g) + 1))
    # patient 1: neutropenia (day 2.5), CRS (day 2) and CRS (day 8) ordered by onset
    assert list(_ae(adam, 1, "Cytokine release syndrome")["AESEQ"]) == [1, 3]
    assert set(a["TRTEMFL"]) == {"Y"} and set(a["SAFFL"]) == {"Y"}
    assert not a["USUBJID"].str.endswith(("-4", "-5")).any()  # no toxicity modelled in SOC


def test_adpc_values_are_the_trajectory_at_nominal_times(adam):
    pc = adam["ADPC"]
    k = _kinetics()
    nominal = [0, 1, 4, 7, 11, 14, 21, 28, 56, 90]  # 180 and later are after follow-up (100 days)
    for code, var in (("CARCOPY", "car_copies_per_ug"), ("CARCELL", "car_cells_per_ul")):
        for row, pid in enumerate((1, 2)):
            r = pc[(pc["USUBJID"] == f"TEST-TRIAL-CAR-X-VS-SOC-{pid}") & (pc["PARAMCD"] == code)]
            assert list(r["ATPTN"]) == nominal
            assert list(r["ARELTM"]) == nominal  # the grid has every nominal day
            expected = [k[var][row, np.flatnonzero(TIMES == d)[0]] for d in nominal]
            np.testing.assert_array_equal(r["AVAL"].to_numpy(), expected)
            assert list(r["ATPT"])[:2] == ["DAY 0", "DAY 1"]


def test_adpc_stops_at_death_and_flags_blq(adam):
    pc = adam["ADPC"]
    p3 = pc[pc["USUBJID"] == "TEST-TRIAL-CAR-X-VS-SOC-3"]
    assert p3["ARELTM"].max() <= DEATH_DAY_P3
    assert list(p3[p3["PARAMCD"] == "CARCOPY"]["ATPTN"]) == [0, 1, 4, 7, 11, 14, 21, 28]
    copies = p3[p3["PARAMCD"] == "CARCOPY"]
    # day 0: 800 exp(-ln(12)^2) = 1.7 copies/ug; days 1-14 above 30; after day 14: 2 < LLOQ 5
    assert list(copies["BLQFL"]) == ["Y"] + ["N"] * 5 + ["Y"] * 2
    assert set(copies["ALLOQ"]) == {5.0}
    assert pc.loc[pc["PARAMCD"] == "CARCELL", "BLQFL"].isna().all()  # no LLOQ assumed for cells
    assert not pc["USUBJID"].str.endswith(("-4", "-5")).any()


def test_adpc_schedule_and_lloq_are_arguments(trial_dir):
    pc = build_adam(trial_dir, pk_schedule_days=(0, 2.2, 50), lloq_copies_per_ug=1000)["ADPC"]
    r = pc[(pc["USUBJID"].str.endswith("-1")) & (pc["PARAMCD"] == "CARCOPY")]
    assert list(r["ATPTN"]) == [0, 2.2, 50] and list(r["ARELTM"]) == [0, 2.0, 50]
    assert set(r["ALLOQ"]) == {1000.0}
    # day 0.1 falls on the day-0 output time, already reported: skipped, not reported twice
    pc = build_adam(trial_dir, pk_schedule_days=(0, 0.1, 1))["ADPC"]
    assert list(pc[(pc["USUBJID"].str.endswith("-1")) & (pc["PARAMCD"] == "CARCOPY")]["ATPTN"]) == [0, 1]


def test_no_trajectories_no_adpc(tmp_path):
    d = _write_trial(tmp_path / "t")
    (d / "trajectories.nc").unlink()
    ds = build_adam(d)
    assert "ADPC" not in ds and validate_adam(ds) == []
    assert _ae(ds, 1, "Neutrophil count decreased")["ASTDY"].isna().all()  # onset unknown without ANC


# -- validation catches errors -----------------------------------------------------------------


def _broken(adam, how: str) -> dict[str, pd.DataFrame]:
    d = {k: v.copy() for k, v in adam.items()}
    if how == "duplicate key":
        d["ADSL"] = pd.concat([d["ADSL"], d["ADSL"].iloc[[0]]], ignore_index=True)
    elif how == "CNSR 2":
        d["ADTTE"].loc[0, "CNSR"] = 2
    elif how == "missing variable":
        d["ADTTE"] = d["ADTTE"].drop(columns="AVAL")
    elif how == "stray subject":
        d["ADAE"].loc[0, "USUBJID"] = "NOBODY-99"
    elif how == "negative time":
        d["ADTTE"].loc[1, "AVAL"] = -1.0
    elif how == "grade 6":
        d["ADAE"].loc[0, "ATOXGRN"] = 6
    elif how == "text as number":
        d["ADSL"]["AGE"] = d["ADSL"]["AGE"].astype(str)
    elif how == "bad name":
        d["ADSL"]["agegroup1"] = "x"
    elif how == "bad flag":
        d["ADSL"]["SAFFL"] = d["ADSL"]["SAFFL"].replace("Y", "yes")
    elif how == "ADPC key":
        d["ADPC"] = pd.concat([d["ADPC"], d["ADPC"].iloc[[3]]], ignore_index=True)
    return d


@pytest.mark.parametrize("how, message", [
    ("duplicate key", r"ADSL: key USUBJID is not unique"),
    ("CNSR 2", r"ADTTE\.CNSR: must be 0 \(event\) or 1 \(censored\), found \['2'\]"),
    ("missing variable", r"ADTTE\.AVAL: required variable missing"),
    ("stray subject", r"ADAE: 1 USUBJID\(s\) not in ADSL, e\.g\. NOBODY-99"),
    ("negative time", r"ADTTE\.AVAL: must be a time >= 0"),
    ("grade 6", r"ADAE\.ATOXGRN: grades must be 1-5"),
    ("text as number", r"ADSL\.AGE: must be numeric"),
    ("bad name", r"ADSL\.agegroup1: variable name must be upper case"),
    ("bad flag", r"ADSL\.SAFFL: flags must be 'Y', 'N' or missing"),
    ("ADPC key", r"ADPC: key USUBJID\+PARAMCD\+ATPTN is not unique"),
])
def test_validation_catches(adam, how, message):
    problems = validate_adam(_broken(adam, how))
    assert any(re.search(message, p) for p in problems), problems


def test_validation_checks_the_spec_itself(adam):
    long = "A label that is far longer than forty characters allows"
    spec = dict(ADAM_SPEC)
    s = spec["ADSL"]
    spec["ADSL"] = DatasetSpec(s.name, s.label, s.structure, s.keys,
                               s.variables[:-1] + (Variable("HTXSCORE", long, "num", False, ""),))
    assert f"ADSL.HTXSCORE: label longer than 40 characters: {long!r}" in validate_adam(adam, spec=spec)
    assert any("ADSL: missing" in p for p in validate_adam({"ADTTE": adam["ADTTE"]}))


def test_spec_names_and_labels():
    for ds in ADAM_SPEC.values():
        assert len(ds.label) <= 40
        names = [v.name for v in ds.variables]
        assert len(names) == len(set(names)), ds.name
        assert set(ds.keys) <= set(names)
        for v in ds.variables:
            assert re.fullmatch(r"[A-Z][A-Z0-9]{0,7}", v.name) and len(v.label) <= 40 and v.type in ("num", "char")


# -- files -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(trial_dir, adam) -> list[Path]:
    return write_adam(trial_dir, datasets=adam)


def test_files_written(trial_dir, written):
    names = sorted(p.name for p in written)
    assert names == sorted([f"{d}.{x}" for d in ("ADSL", "ADTTE", "ADAE", "ADPC") for x in ("csv", "parquet")]
                           + ["define.json"])
    assert all(p.parent == trial_dir / "adam" and p.stat().st_size > 0 for p in written)


@pytest.mark.parametrize("name", ["ADSL", "ADTTE", "ADAE", "ADPC"])
def test_csv_round_trip(trial_dir, adam, written, name):
    spec = ADAM_SPEC[name]
    dtypes = {v.name: "string" for v in spec.variables if v.type == "char"}
    back = pd.read_csv(trial_dir / "adam" / f"{name}.csv", dtype=dtypes, keep_default_na=False,
                       na_values=[""], float_precision="round_trip")
    pd.testing.assert_frame_equal(back, adam[name], check_dtype=False)
    assert validate_adam({**adam, name: back}) == []


@pytest.mark.parametrize("name", ["ADSL", "ADAE"])
def test_parquet_keeps_values_and_labels(trial_dir, adam, written, name):
    table = pq.read_table(trial_dir / "adam" / f"{name}.parquet")
    pd.testing.assert_frame_equal(table.to_pandas(), adam[name])
    meta = json.loads(table.schema.metadata[b"adam"])
    assert meta["label"] == ADAM_SPEC[name].label
    for field in table.schema:
        assert field.metadata[b"label"].decode() == ADAM_SPEC[name].variable(field.name).label


def test_define_json_lists_every_column(trial_dir, adam, written):
    define = json.loads((trial_dir / "adam" / "define.json").read_text())
    assert define["studyid"] == "TEST-TRIAL-CAR-X-VS-SOC"
    by_name = {d["name"]: d for d in define["datasets"]}
    assert set(by_name) == set(adam)
    for name, df in adam.items():
        d = by_name[name]
        assert [v["name"] for v in d["variables"]] == list(df.columns)
        assert d["records"] == len(df) and d["subjects"] == df["USUBJID"].nunique()
        assert d["keys"] == list(ADAM_SPEC[name].keys) and d["label"] == ADAM_SPEC[name].label
        for v in d["variables"]:
            spec = ADAM_SPEC[name].variable(v["name"])
            assert (v["label"], v["type"]) == (spec.label, spec.type)


def test_formats_argument(tmp_path, adam):
    d = _write_trial(tmp_path / "t")
    written = write_adam(d, ("parquet",))
    assert sorted(p.suffix for p in written) == [".json"] + [".parquet"] * 4
    with pytest.raises(CarcellError, match="use 'csv' and/or 'parquet'"):
        write_adam(d, ("xlsx",))


def test_doc_lists_every_spec_variable():
    doc = (ROOT / "docs" / "adam.md").read_text()
    for ds in ADAM_SPEC.values():
        section = doc.split(f"### {ds.name}:", 1)[1].split("\n### ", 1)[0]
        for v in ds.variables:
            assert f"\n{v.name} | {v.label} | {v.type} |" in section, (ds.name, v.name)
    begin, end = "<!-- spec:begin (generated by carcell.io.adam.spec_markdown) -->\n", "<!-- spec:end -->"
    assert doc.split(begin, 1)[1].split(end, 1)[0] == spec_markdown(), \
        "docs/adam.md is out of date: paste carcell.io.adam.spec_markdown() between the spec markers"


# -- bad input and the command line ------------------------------------------------------------


def test_missing_or_malformed_directory(tmp_path):
    with pytest.raises(CarcellError, match="no such directory"):
        build_adam(tmp_path / "nope")
    with pytest.raises(CarcellError, match=r"patients\.parquet: missing"):
        build_adam(tmp_path)
    (tmp_path / "patients.parquet").write_bytes(b"not parquet")
    with pytest.raises(CarcellError, match="cannot be read as parquet"):
        build_adam(tmp_path)
    pd.DataFrame({"id": [1]}).to_parquet(tmp_path / "patients.parquet")
    with pytest.raises(CarcellError, match="no patient_id column"):
        build_adam(tmp_path)


def test_cli_export(tmp_path):
    d = _write_trial(tmp_path / "t")
    result = CliRunner().invoke(app, ["export", str(d), "--format", "csv", "--study-id", "T1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, n in (("ADSL", 5), ("ADTTE", 17), ("ADAE", 7)):
        assert re.search(rf"{name}\s+\S[^\n]*\S\s+{n}\s", result.stdout), result.stdout
    assert "valid" in result.stdout and "ADaM datasets of T1" in result.stdout
    assert pd.read_csv(d / "adam" / "ADSL.csv")["USUBJID"].iloc[0] == "T1-1"
    assert (d / "adam" / "ADSL.csv").is_file() and not (d / "adam" / "ADSL.parquet").exists()
    assert (d / "adam" / "define.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["export", "{missing}"], "no such directory"),
    (["export", "{empty}"], "patients.parquet: missing"),
    (["export", "{empty}", "--format", "xml"], "--format xml: use csv, parquet, both or nonmem"),
])
def test_cli_errors_in_one_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in args]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)  # not a traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr
