"""The bedside-observation table that carcell grades: its columns, and their checks.

One row is one assessment of one patient at one time. Only ``patient`` and ``day`` are
required; a column left out takes its default (no fever data, no vasopressor, room air,
alert...). :func:`read_observations` reads a CSV file, :func:`check_observations` checks a
DataFrame; both return a normalised DataFrame (every column present, typed) or raise
:class:`~carcell.errors.ObservationError` listing every problem with its row, column and fix.
The column reference is docs/grading.md.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from carcell.errors import ObservationError

OXYGEN_DEVICES = ("none", "nasal_cannula", "blow_by", "high_flow_nasal_cannula", "facemask",
                  "non_rebreather", "venturi", "cpap", "bipap", "mechanical_ventilation")
CONSCIOUSNESS = ("alert", "awakens_spontaneously", "awakens_to_voice", "awakens_to_tactile", "unarousable")
SEIZURES = ("none", "rapidly_resolving", "nonconvulsive_resolved", "prolonged", "repetitive")
OEDEMA = ("none", "focal", "diffuse")
MOTOR = ("none", "deep_focal_weakness")
DEATH = ("", "crs", "icans", "other")
ICE_ITEMS = {"ice_orientation": 4, "ice_naming": 3, "ice_commands": 1, "ice_writing": 1, "ice_attention": 1}


@dataclass(frozen=True)
class Column:
    kind: str            # float | int | bool | choice | text
    default: object
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()


COLUMNS: dict[str, Column] = {
    "patient": Column("text", None, "patient identifier (required)"),
    "day": Column("float", None, "time of the assessment, days after infusion (required)", -30, 3650),
    # CRS
    "temperature_c": Column("float", np.nan, "highest temperature since the last assessment, degC", 30, 45),
    "antipyretic": Column("bool", False, "an antipyretic was given since the last assessment"),
    "tocilizumab": Column("bool", False, "tocilizumab was given since the last assessment"),
    "corticosteroid": Column("bool", False, "a corticosteroid was given since the last assessment"),
    "anakinra": Column("bool", False, "anakinra was given since the last assessment"),
    "hypotension": Column("bool", False, "hypotension needing treatment (fluids or vasopressors)"),
    "fluid_boluses": Column("int", 0, "IV fluid boluses for hypotension since the last assessment", 0, 50),
    "vasopressors": Column("int", 0, "number of vasopressors running, not counting vasopressin", 0, 6),
    "vasopressin": Column("bool", False, "vasopressin running"),
    "vasopressor_high_dose": Column("bool", False, "high-dose vasopressor (Lee 2014 / Penn definitions)"),
    "oxygen_device": Column("choice", "none", "oxygen delivery", choices=OXYGEN_DEVICES),
    "oxygen_flow_l_min": Column("float", np.nan, "oxygen flow, L/min", 0, 80),
    "fio2": Column("float", np.nan, "inspired oxygen fraction, 0.21-1", 0.21, 1.0),
    "positive_pressure_for_other_reason": Column(
        "bool", False, "CPAP/BiPAP/ventilation not for CRS hypoxia (airway protection in ICANS, sleep apnoea)"),
    "crs_alternative_cause": Column(
        "bool", False, "fever, hypotension and hypoxia are attributed to another cause (sepsis...); needed "
        "too after a treated CRS, whose later hypotension or hypoxia is CRS without fever"),
    "organ_toxicity_grade": Column("int", 0, "highest CTCAE grade of CRS-related organ toxicity, not transaminases", 0, 4),
    "transaminitis_grade": Column("int", 0, "CTCAE grade of transaminase rise", 0, 4),
    "creatinine_grade": Column("int", 0, "CTCAE grade of creatinine rise", 0, 4),
    "coagulopathy_treated": Column("bool", False, "coagulopathy treated with FFP, cryoprecipitate or fibrinogen"),
    "hospitalised_for_crs": Column("bool", False, "in hospital for CRS symptoms (Penn grade 2)"),
    "iv_therapy": Column("bool", False, "IV therapy other than fluids for hypotension (Penn grade 2)"),
    # ICANS
    "age_years": Column("float", np.nan, "age; children up to the CAPD cut-off are graded with CAPD", 0, 120),
    "developmental_delay": Column("bool", False, "baseline developmental delay (graded with CAPD at any age)"),
    "ice_score": Column("int", -1, "ICE score 0-10 (or give the five ice_* items)", 0, 10),
    **{name: Column("int", -1, f"ICE item, 0-{top}", 0, top) for name, top in ICE_ITEMS.items()},
    "capd_score": Column("int", -1, "Cornell Assessment of Pediatric Delirium, 0-32", 0, 32),
    "unable_to_perform_assessment": Column("bool", False, "cannot perform ICE/CAPD because unarousable"),
    "consciousness": Column("choice", "alert", "level of consciousness", choices=CONSCIOUSNESS),
    "sedated": Column("bool", False, "sedating medication explains the level of consciousness"),
    "seizure": Column("choice", "none", "seizure since the last assessment", choices=SEIZURES),
    "seizure_minutes": Column("float", np.nan, "longest seizure, minutes", 0, 600),
    "motor_weakness": Column("choice", "none", "deep focal motor weakness (hemiparesis, paraparesis)", choices=MOTOR),
    "cerebral_oedema": Column("choice", "none", "oedema on neuroimaging", choices=OEDEMA),
    "raised_icp_signs": Column("bool", False, "posturing, cranial nerve VI palsy, papilloedema or Cushing's triad"),
    "icans_alternative_cause": Column("bool", False, "the neurological findings are attributed to another cause"),
    "tremor_grade": Column("int", 0, "CTCAE tremor/myoclonus grade (recorded, not part of ICANS)", 0, 4),
    "intracranial_haemorrhage": Column("bool", False, "intracranial haemorrhage (recorded, not part of ICANS)"),
    "death": Column("choice", "", "death at this assessment and its principal cause", choices=DEATH),
}
REQUIRED = ("patient", "day")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def _text(values: pd.Series, empty: str) -> pd.Series:
    """Lower-case stripped text, ``empty`` for missing cells."""
    return values.map(lambda v: empty if pd.isna(v) else str(v).strip().lower())


def _where(df: pd.DataFrame, i: int) -> str:
    return f"row {i + 2} (patient {df['patient'].iloc[i]}, day {df['day'].iloc[i]})"


def _suggest(value: str, choices: tuple[str, ...]) -> str:
    near = difflib.get_close_matches(value, choices, n=1, cutoff=0.4)
    return f"did you mean {near[0]!r}? " if near else ""


def check_observations(raw: pd.DataFrame, source: str = "observations") -> pd.DataFrame:
    """A normalised copy of ``raw``, or ObservationError listing every problem."""
    problems: list[str] = []
    unknown = [c for c in raw.columns if c not in COLUMNS]
    for c in unknown:
        near = difflib.get_close_matches(c, list(COLUMNS), n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]!r}?" if near else "; see docs/grading.md for the columns"
        problems.append(f"column {c!r} is not a known column{hint}")
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        problems.append(f"required column(s) missing: {', '.join(missing)}")
    if problems:
        raise ObservationError(f"{source}: " + "\n  ".join(problems))
    if raw.empty:
        raise ObservationError(f"{source}: no rows")

    df = pd.DataFrame(index=raw.index)
    df["patient"] = raw["patient"].astype(str).str.strip()
    day = pd.to_numeric(raw["day"], errors="coerce")
    df["day"] = day
    for i in np.flatnonzero(day.isna().to_numpy()):
        problems.append(f"row {i + 2}, column day: {raw['day'].iloc[i]!r} is not a number of days after infusion")
    for name, col in COLUMNS.items():
        if name in REQUIRED:
            continue
        if name not in raw.columns:
            df[name] = col.default
            continue
        values = raw[name]
        if col.kind in ("float", "int"):
            num = pd.to_numeric(values, errors="coerce")
            bad = num.isna() & values.notna() & (values.astype(str).str.strip() != "")
            if col.default == -1:   # -1 is the normalised table's "not assessed", so tables round-trip
                num = num.where(num != -1)
            for i in np.flatnonzero(bad.to_numpy()):
                problems.append(f"{_where(df, i)}, column {name}: {values.iloc[i]!r} is not a number")
            out_of_range = num.notna() & ((num < col.low) | (num > col.high))
            for i in np.flatnonzero(out_of_range.to_numpy()):
                fix = " (Fahrenheit? give degC)" if name == "temperature_c" and num.iloc[i] > 45 else ""
                problems.append(f"{_where(df, i)}, column {name}: {num.iloc[i]:g} is outside {col.low:g}-{col.high:g}{fix}")
            if col.kind == "int":
                not_int = num.notna() & (num != np.round(num))
                for i in np.flatnonzero(not_int.to_numpy()):
                    problems.append(f"{_where(df, i)}, column {name}: {num.iloc[i]:g} is not a whole number")
                df[name] = num.fillna(col.default).round().astype(int)
            else:
                df[name] = num.astype(float)
        elif col.kind == "bool":
            text = _text(values, "")
            bad = ~text.isin(_TRUE | _FALSE)
            for i in np.flatnonzero(bad.to_numpy()):
                problems.append(f"{_where(df, i)}, column {name}: {values.iloc[i]!r} is not true/false (use true, false, 1, 0, yes, no)")
            df[name] = text.isin(_TRUE)
        else:  # choice
            text = _text(values, str(col.default))
            bad = ~text.isin(col.choices)
            for i in np.flatnonzero(bad.to_numpy()):
                problems.append(f"{_where(df, i)}, column {name}: {values.iloc[i]!r} is not known; "
                                f"{_suggest(text.iloc[i], col.choices)}known: {', '.join(c or repr('') for c in col.choices)}")
            df[name] = text.where(~bad, col.default)
    if not problems:
        problems += _contradictions(df, raw)
    if problems:
        head = f"{source}: {len(problems)} problem(s); nothing was graded\n  "
        raise ObservationError(head + "\n  ".join(problems[:50]) + ("\n  ..." if len(problems) > 50 else ""))
    items = list(ICE_ITEMS)
    have_items = (df[items] >= 0).all(axis=1)
    df.loc[have_items & (df["ice_score"] < 0), "ice_score"] = df.loc[have_items, items].sum(axis=1)
    return df.sort_values(["patient", "day"], kind="stable").reset_index(drop=True)


def _contradictions(df: pd.DataFrame, raw: pd.DataFrame) -> list[str]:
    out = []
    dup = df.duplicated(["patient", "day"], keep=False)
    for i in np.flatnonzero(dup.to_numpy()):
        out.append(f"{_where(df, i)}: two assessments of the same patient at the same time; merge them or correct day")
    flow = df["oxygen_flow_l_min"]
    for i in np.flatnonzero(((df["oxygen_device"] == "none") & (flow > 0)).to_numpy()):
        out.append(f"{_where(df, i)}, columns oxygen_device/oxygen_flow_l_min: oxygen at {flow.iloc[i]:g} L/min "
                   "but no device; give the device")
    if "hypotension" in raw.columns:
        for i in np.flatnonzero(((df["vasopressors"] > 0) & ~df["hypotension"]).to_numpy()):
            out.append(f"{_where(df, i)}, columns vasopressors/hypotension: vasopressors running but hypotension "
                       "is false; set hypotension to true or correct vasopressors")
    for i in np.flatnonzero((df["vasopressor_high_dose"] & (df["vasopressors"] == 0)).to_numpy()):
        out.append(f"{_where(df, i)}, column vasopressor_high_dose: true but no vasopressor is running")
    items = list(ICE_ITEMS)
    given = (df[items] >= 0)
    partial = given.any(axis=1) & ~given.all(axis=1)
    for i in np.flatnonzero(partial.to_numpy()):
        out.append(f"{_where(df, i)}, columns ice_*: give all five ICE items or none (or only ice_score)")
    both = given.all(axis=1) & (df["ice_score"] >= 0) & (df[items].sum(axis=1) != df["ice_score"])
    for i in np.flatnonzero(both.to_numpy()):
        out.append(f"{_where(df, i)}, columns ice_score/ice_*: the items add up to {int(df[items].iloc[i].sum())} "
                   f"but ice_score is {df['ice_score'].iloc[i]}; correct one of them")
    awake_scored = (df["consciousness"] == "unarousable") & ((df["ice_score"] > 0) | (df["capd_score"] >= 0)) & \
        ~df["unable_to_perform_assessment"]
    for i in np.flatnonzero(awake_scored.to_numpy()):
        out.append(f"{_where(df, i)}, columns consciousness/ice_score: an unarousable patient cannot score ICE or CAPD; "
                   "set unable_to_perform_assessment or correct consciousness")
    return out


def read_observations(path: str | Path) -> pd.DataFrame:
    """Read and check a CSV file of bedside observations."""
    path = Path(path)
    if not path.exists():
        raise ObservationError(f"{path}: no such file")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], comment="#")
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise ObservationError(f"{path}: not a readable CSV file ({str(err).splitlines()[0]})") from None
    raw.columns = [c.strip() for c in raw.columns]
    return check_observations(raw, str(path))
