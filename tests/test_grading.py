"""Toxicity grading against the published consensus tables.

Expected grades are read off the tables of Lee et al. 2019 (ASTCT, doi:10.1016/j.bbmt.2018.12.758),
Lee et al. 2014 (doi:10.1182/blood-2014-05-552729), Porter et al. 2018 (Penn,
doi:10.1186/s13045-018-0571-y) and CTCAE v5.0, as reproduced in reference/clinical.md section
1; rule IDs (R-CRS-*, R-ICANS-*) refer to that section. Each case is one assessment built from
defaults plus the fields that matter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from carcell.clinical.grading import grade_table, summarise
from carcell.clinical.observations import check_observations
from carcell.errors import ObservationError

ROOT = Path(__file__).resolve().parents[1]


def table(*rows: dict, capd_age=None) -> pd.DataFrame:
    raw = pd.DataFrame([{"patient": r.get("patient", "P"), "day": r.get("day", i), **r}
                        for i, r in enumerate(rows)])
    return grade_table(check_observations(raw.astype(object)), capd_age)


def one(capd_age=None, **row) -> pd.Series:
    return table(row, capd_age=capd_age).iloc[0]


FEVER = {"temperature_c": 38.5}

# -- CRS, ASTCT 2019 ---------------------------------------------------------------------------

@pytest.mark.parametrize("row, grade", [
    ({"temperature_c": 37.9}, 0),                                   # R-CRS-1: below 38.0
    ({"temperature_c": 38.0}, 1),                                   # R-CRS-1: 38.0 inclusive
    ({**FEVER, "hypotension": True}, 2),                            # hypotension without vasopressor
    ({**FEVER, "hypotension": True, "vasopressors": 1}, 3),
    ({**FEVER, "hypotension": True, "vasopressors": 1, "vasopressin": True}, 3),   # R-CRS-4
    ({**FEVER, "hypotension": True, "vasopressin": True}, 3),       # vasopressin alone is one vasopressor
    ({**FEVER, "hypotension": True, "vasopressors": 2}, 4),
    ({**FEVER, "oxygen_device": "nasal_cannula", "oxygen_flow_l_min": 6}, 2),       # <= 6 L/min low-flow
    ({**FEVER, "oxygen_device": "nasal_cannula", "oxygen_flow_l_min": 6.5}, 3),     # > 6 L/min high-flow
    ({**FEVER, "oxygen_device": "nasal_cannula"}, 2),               # flow not recorded: low-flow
    ({**FEVER, "oxygen_device": "blow_by"}, 2),                     # R-CRS-9
    ({**FEVER, "oxygen_device": "facemask", "oxygen_flow_l_min": 2}, 3),            # facemask always 3
    ({**FEVER, "oxygen_device": "non_rebreather"}, 3),
    ({**FEVER, "oxygen_device": "venturi", "fio2": 0.28}, 3),       # device decides, not FiO2
    ({**FEVER, "oxygen_device": "high_flow_nasal_cannula", "oxygen_flow_l_min": 40}, 3),
    ({**FEVER, "oxygen_device": "cpap"}, 4),
    ({**FEVER, "oxygen_device": "mechanical_ventilation"}, 4),
    ({**FEVER, "oxygen_device": "mechanical_ventilation", "positive_pressure_for_other_reason": True}, 1),  # R-CRS-8
    ({**FEVER, "hypotension": True, "vasopressors": 1, "oxygen_device": "nasal_cannula",
      "oxygen_flow_l_min": 2}, 3),                                  # R-CRS-3: most severe
    ({**FEVER, "hypotension": True, "oxygen_device": "bipap"}, 4),  # R-CRS-3
    ({**FEVER, "organ_toxicity_grade": 4, "transaminitis_grade": 4}, 1),            # R-CRS-5
    ({**FEVER, "hypotension": True, "vasopressors": 2, "crs_alternative_cause": True}, 0),  # R-CRS-6
    ({**FEVER, "death": "crs"}, 5),                                 # R-CRS-7
    ({"temperature_c": 37.0, "hypotension": True, "vasopressors": 1}, 0),           # no fever, no CRS
])
def test_astct_crs_table(row, grade):
    assert one(**row)["crs_astct"] == grade


def test_masked_fever_rule():
    """R-CRS-2: after tocilizumab (or steroids/antipyretics) during CRS, fever is no longer
    needed; the grade follows hypotension and hypoxia."""
    g = table({"day": 1, **FEVER},
              {"day": 2, **FEVER, "hypotension": True, "tocilizumab": True},
              {"day": 3, "temperature_c": 36.8, "hypotension": True, "vasopressors": 1},
              {"day": 4, "temperature_c": 36.9, "oxygen_device": "nasal_cannula", "oxygen_flow_l_min": 3},
              {"day": 5, "temperature_c": 36.7},
              {"day": 6, "temperature_c": 36.7, "hypotension": True},       # the later course: still masked
              {"day": 7, "temperature_c": 36.7, "hypotension": True, "crs_alternative_cause": True},
              {"day": 8, "temperature_c": 36.7})
    assert list(g["crs_astct"]) == [1, 2, 3, 2, 0, 2, 0, 0]
    assert list(g["crs_episode"]) == [1, 1, 1, 1, 0, 2, 0, 0]
    # the same afebrile course without any therapy is not CRS
    u = table({"day": 1, **FEVER}, {"day": 2, "temperature_c": 36.8, "hypotension": True, "vasopressors": 1})
    assert list(u["crs_astct"]) == [1, 0]
    # an antipyretic counts as well
    a = table({"day": 1, **FEVER, "antipyretic": True}, {"day": 2, "temperature_c": 37, "hypotension": True})
    assert list(a["crs_astct"]) == [1, 2]


def test_episodes_onset_duration_and_maximum():
    g = table({"patient": "A", "day": 0.5, "temperature_c": 37},
              {"patient": "A", "day": 1.0, **FEVER},
              {"patient": "A", "day": 2.0, **FEVER, "hypotension": True, "vasopressors": 1},
              {"patient": "A", "day": 4.0, "temperature_c": 37},
              {"patient": "A", "day": 9.0, **FEVER},
              {"patient": "A", "day": 10.0, "temperature_c": 37},
              {"patient": "B", "day": 3.0, "temperature_c": 37, "ice_score": 5},
              {"patient": "B", "day": 3.5, "temperature_c": 37, "ice_score": 9},
              {"patient": "B", "day": 5.0, "temperature_c": 37, "ice_score": 10})
    episodes, patients = summarise(g)
    a = patients.set_index("patient").loc["A"]
    assert a["crs_max_grade"] == 3 and a["crs_onset_day"] == 1.0 and a["crs_episodes"] == 2
    assert a["crs_duration_days"] == pytest.approx(3.0 + 1.0)       # days 1-4 and 9-10
    b = patients.set_index("patient").loc["B"]
    assert b["icans_max_grade"] == 2 and b["icans_onset_day"] == 3.0 and b["icans_duration_days"] == 2.0
    assert b["crs_max_grade"] == 0 and pd.isna(b["crs_onset_day"])
    crs_a = episodes[(episodes.patient == "A") & (episodes.toxicity == "crs")]
    assert list(crs_a["max_grade"]) == [3, 1] and crs_a["resolved"].all()


# -- ICANS, ASTCT 2019 ------------------------------------------------------------------------

ADULT = {"age_years": 50}


@pytest.mark.parametrize("row, grade", [
    ({"ice_score": 10}, 0), ({"ice_score": 9}, 1), ({"ice_score": 7}, 1), ({"ice_score": 6}, 2),
    ({"ice_score": 3}, 2), ({"ice_score": 2}, 3),
    ({"ice_score": 0, "consciousness": "awakens_to_voice"}, 3),                 # R-ICANS-2: awake, ICE 0
    ({"unable_to_perform_assessment": True, "consciousness": "unarousable"}, 4),  # R-ICANS-2: unarousable
    ({"consciousness": "awakens_spontaneously"}, 1), ({"consciousness": "awakens_to_voice"}, 2),
    ({"consciousness": "awakens_to_tactile"}, 3), ({"consciousness": "unarousable"}, 4),
    ({"consciousness": "unarousable", "sedated": True}, 0),                     # R-ICANS-3
    ({"seizure": "rapidly_resolving"}, 3), ({"seizure": "nonconvulsive_resolved"}, 3),
    ({"seizure": "prolonged"}, 4), ({"seizure": "repetitive"}, 4),
    ({"seizure": "rapidly_resolving", "seizure_minutes": 5}, 3),                # > 5 min, not = 5
    ({"seizure": "rapidly_resolving", "seizure_minutes": 5.5}, 4),
    ({"motor_weakness": "deep_focal_weakness"}, 4),
    ({"cerebral_oedema": "focal"}, 3), ({"cerebral_oedema": "diffuse"}, 4), ({"raised_icp_signs": True}, 4),
    ({"ice_score": 3, "seizure": "rapidly_resolving"}, 3),                      # R-ICANS-1: most severe
    ({"ice_score": 8, "tremor_grade": 3}, 1),                                   # R-ICANS-4
    ({"intracranial_haemorrhage": True}, 0),                                    # R-ICANS-5
    ({"ice_score": 2, "icans_alternative_cause": True}, 0),
    ({"ice_score": 10, "death": "icans"}, 5),                                   # R-ICANS-7
])
def test_astct_icans_adult(row, grade):
    assert one(**ADULT, **row)["icans_astct"] == grade


def test_ice_from_its_items():
    row = {**ADULT, "ice_orientation": 3, "ice_naming": 2, "ice_commands": 1, "ice_writing": 0, "ice_attention": 0}
    assert one(**row)["icans_astct"] == 2                             # 6 points
    with pytest.raises(ObservationError, match="add up to 6 but ice_score is 9"):
        one(**row, ice_score=9)


@pytest.mark.parametrize("row, grade", [
    ({"age_years": 8, "capd_score": 0}, 0), ({"age_years": 8, "capd_score": 1}, 1),
    ({"age_years": 8, "capd_score": 8}, 1), ({"age_years": 8, "capd_score": 9}, 3),
    ({"age_years": 8, "capd_score": 4, "consciousness": "awakens_to_voice"}, 2),
    ({"age_years": 12, "capd_score": 9}, 3),                          # 12 and under: CAPD
    ({"age_years": 13, "ice_score": 6}, 2),                           # over 12: ICE
    ({"age_years": 30, "developmental_delay": True, "capd_score": 10}, 3),
    ({"age_years": 5, "unable_to_perform_assessment": True, "consciousness": "unarousable"}, 4),
])
def test_paediatric_icans_with_capd(row, grade):
    assert one(**row)["icans_astct"] == grade


def test_capd_age_cutoff_is_configurable():
    assert one(capd_age=11, age_years=12, ice_score=6)["icans_astct"] == 2
    with pytest.raises(ObservationError, match="graded with CAPD"):
        one(age_years=8, ice_score=6)


# -- the older CRS scales ---------------------------------------------------------------------

@pytest.mark.parametrize("row, lee, penn, ctcae", [
    (FEVER, 1, 1, 1),
    ({**FEVER, "hypotension": True, "fluid_boluses": 1}, 2, 1, 2),    # Penn: one bolus is not "multiple"
    ({**FEVER, "hypotension": True, "fluid_boluses": 2}, 2, 3, 2),
    ({**FEVER, "hypotension": True, "vasopressors": 1}, 2, 3, 3),
    ({**FEVER, "hypotension": True, "vasopressors": 1, "vasopressor_high_dose": True}, 3, 4, 3),
    ({**FEVER, "hypotension": True, "vasopressors": 2}, 3, 4, 4),
    ({**FEVER, "oxygen_device": "nasal_cannula", "fio2": 0.39}, 2, 3, 2),
    ({**FEVER, "oxygen_device": "nasal_cannula", "fio2": 0.40}, 3, 3, 3),
    ({**FEVER, "oxygen_device": "nasal_cannula", "oxygen_flow_l_min": 4}, 2, 3, 2),   # FiO2 ~0.37
    ({**FEVER, "oxygen_device": "bipap", "fio2": 0.5}, 4, 3, 4),
    ({**FEVER, "oxygen_device": "mechanical_ventilation", "fio2": 0.5}, 4, 4, 4),
    ({**FEVER, "organ_toxicity_grade": 2}, 2, 1, 1),
    ({**FEVER, "organ_toxicity_grade": 3}, 3, 1, 1),
    ({**FEVER, "transaminitis_grade": 4}, 3, 3, 1),
    ({**FEVER, "organ_toxicity_grade": 4}, 4, 1, 1),
    ({**FEVER, "creatinine_grade": 2}, 1, 2, 1),
    ({**FEVER, "creatinine_grade": 3}, 1, 3, 1),
    ({**FEVER, "hospitalised_for_crs": True}, 1, 2, 1),
    ({**FEVER, "coagulopathy_treated": True}, 1, 3, 1),
    ({"temperature_c": 37, "oxygen_device": "nasal_cannula"}, 0, 0, 0),              # not CRS
])
def test_lee2014_penn_ctcae5(row, lee, penn, ctcae):
    g = one(**row)
    assert (g["crs_lee2014"], g["crs_penn"], g["crs_ctcae5"]) == (lee, penn, ctcae)


def test_penn_grades_any_oxygen_higher_than_astct():
    """Penn puts any supplemental oxygen at grade 3, above ASTCT's low-flow grade 2 (clinical.md 1.6)."""
    g = one(**FEVER, oxygen_device="nasal_cannula", oxygen_flow_l_min=2)
    assert g["crs_astct"] == 2 and g["crs_penn"] == 3


# -- the observation table ------------------------------------------------------------------------

@pytest.mark.parametrize("row, words", [
    ({"temprature_c": 38}, "did you mean 'temperature_c'"),
    ({"oxygen_device": "nasal"}, "did you mean 'nasal_cannula'"),
    ({"temperature_c": 101.3}, "Fahrenheit"),
    ({"vasopressors": 1, "hypotension": False}, "hypotension is false"),
    ({"oxygen_device": "none", "oxygen_flow_l_min": 4}, "no device"),
    ({"ice_score": 11}, "outside 0-10"),
    ({"ice_score": 4, "consciousness": "unarousable"}, "cannot score ICE"),
    ({"vasopressors": 1.5, "hypotension": True}, "not a whole number"),
    ({"sedated": "maybe"}, "not true/false"),
])
def test_bad_observations_name_row_column_and_fix(row, words):
    with pytest.raises(ObservationError) as err:
        one(**row)
    msg = str(err.value)
    assert words in msg and ("row 2" in msg or "column" in msg), msg


def test_duplicate_assessments_are_flagged():
    raw = pd.DataFrame([{"patient": "P", "day": 1, "temperature_c": 38}, {"patient": "P", "day": 1, "temperature_c": 39}])
    with pytest.raises(ObservationError, match="same patient at the same time"):
        check_observations(raw.astype(object))


def test_grade_command_on_the_example(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "carcell", "grade", "examples/observations/bedside.csv",
                        "--out", tmp_path], capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    patients = pd.read_csv(tmp_path / "patients.csv").set_index("patient")
    # P01: one vasopressor at 39.1 degC -> 3; P02: BiPAP and two vasopressors -> 4; P03 (8 years):
    # cannula at 7 L/min -> 3 and CAPD 10 -> ICANS 3
    assert patients.loc["P01", "crs_max_grade"] == 3 and patients.loc["P02", "crs_max_grade"] == 4
    assert patients.loc["P03", "crs_max_grade"] == 3 and patients.loc["P03", "icans_max_grade"] == 3
    grades = pd.read_csv(tmp_path / "grades.csv")
    assert len(grades) == 14 and {"crs_lee2014", "crs_penn", "crs_ctcae5"} <= set(grades.columns)
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,day,oxygen_device\nP,1,nasal\n")
    r = subprocess.run([sys.executable, "-m", "carcell", "grade", bad], capture_output=True, text=True,
                       cwd=ROOT, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "row 2" in r.stderr and "oxygen_device" in r.stderr and "nothing was graded" in r.stderr
