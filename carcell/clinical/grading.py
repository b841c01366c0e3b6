"""Toxicity grading: ASTCT 2019 CRS and ICANS, and the older CRS scales trials used.

The same code grades real patients (``carcell grade OBSERVATIONS.csv``) and simulated ones:
both arrive as the observation table of :mod:`carcell.clinical.observations`. Grading works
on whole columns at once, so a cohort of simulated patients is graded as fast as one.

Rule IDs (R-CRS-*, R-ICANS-*) are those of reference/clinical.md section 1 and of
docs/grading.md; thresholds are read from ``knowledge/data/grading.yaml``.

- :func:`crs_astct` — ASTCT 2019 CRS grade of each assessment, with the episode context that
  the masked-fever rule needs (R-CRS-2).
- :func:`icans_astct` — ASTCT ICANS grade (ICE for adults, CAPD for children).
- :func:`crs_lee2014`, :func:`crs_penn`, :func:`crs_ctcae5` — the older CRS scales.
- :func:`grade_table` — all of them for an observation table, and :func:`summarise` — maximum
  grade, onset and duration per patient and per episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.errors import ObservationError
from carcell.knowledge import load_knowledge

_LOW_FLOW = ("nasal_cannula", "blow_by")                       # grade 2 (R-CRS-9: blow-by is low-flow)
_HIGH_FLOW = ("high_flow_nasal_cannula", "facemask", "non_rebreather", "venturi")   # grade 3
_POSITIVE = ("cpap", "bipap", "mechanical_ventilation")         # grade 4


def oxygen_support_level(device) -> np.ndarray:
    """The oxygen support of each device as a level: 0 none, 1 low-flow (cannula, blow-by),
    2 high-flow or mask, 3 positive pressure (CPAP, BiPAP, mechanical ventilation)."""
    d = np.asarray(device, dtype=object)
    return np.select([np.isin(d, _POSITIVE), np.isin(d, _HIGH_FLOW), np.isin(d, _LOW_FLOW)], [3, 2, 1], 0)


_CONSCIOUSNESS_GRADE = {"alert": 0, "awakens_spontaneously": 1, "awakens_to_voice": 2,
                        "awakens_to_tactile": 3, "unarousable": 4}


@dataclass(frozen=True)
class Thresholds:
    fever_c: float
    low_flow_max: float
    ice_g1: int
    ice_g2: int
    capd_positive: int
    capd_age: float
    seizure_prolonged_min: float
    lee_fio2_high: float
    cannula_fio2_0: float
    cannula_fio2_per_l: float
    device_fio2: float


def thresholds(capd_age_cutoff_years: float | None = None) -> Thresholds:
    k = load_knowledge(False)
    a, lee = "grading.astct2019", "grading.lee2014"
    return Thresholds(
        fever_c=float(k.value(f"{a}.fever_celsius")), low_flow_max=float(k.value(f"{a}.low_flow_max_l_min")),
        ice_g1=int(k.value(f"{a}.ice_grade1_min")), ice_g2=int(k.value(f"{a}.ice_grade2_min")),
        capd_positive=int(k.value(f"{a}.capd_positive_min")),
        capd_age=float(capd_age_cutoff_years if capd_age_cutoff_years is not None
                       else k.value(f"{a}.capd_age_cutoff_years")),
        seizure_prolonged_min=float(k.value(f"{a}.seizure_prolonged_min")),
        lee_fio2_high=float(k.value(f"{lee}.fio2_high")),
        cannula_fio2_0=float(k.value(f"{lee}.cannula_fio2_room_air")),
        cannula_fio2_per_l=float(k.value(f"{lee}.cannula_fio2_per_l_min")),
        device_fio2=float(k.value(f"{lee}.device_fio2_without_record")))


# -- CRS, ASTCT 2019 -----------------------------------------------------------------------------

def _hypotension_grade(df: pd.DataFrame) -> np.ndarray:
    """R-CRS-T, R-CRS-4: none 0; without vasopressors 2; one vasopressor (+/- vasopressin) 3;
    several (vasopressin not counted) 4. Vasopressin alone is the one vasopressor."""
    n = df["vasopressors"].to_numpy()
    vasopressin = df["vasopressin"].to_numpy()
    hypo = df["hypotension"].to_numpy() | (n > 0) | vasopressin
    return np.select([n >= 2, (n == 1) | vasopressin, hypo], [4, 3, 2], 0)


def _hypoxia_grade(df: pd.DataFrame, th: Thresholds) -> np.ndarray:
    """R-CRS-T, R-CRS-8, R-CRS-9: the device class decides; a nasal cannula above the low-flow
    limit is high-flow; positive pressure for another reason (airway protection) is not CRS."""
    dev = df["oxygen_device"].to_numpy()
    flow = df["oxygen_flow_l_min"].to_numpy()
    high_cannula = (dev == "nasal_cannula") & (flow > th.low_flow_max)
    positive = np.isin(dev, _POSITIVE) & ~df["positive_pressure_for_other_reason"].to_numpy()
    return np.select([positive, np.isin(dev, _HIGH_FLOW) | high_cannula, np.isin(dev, _LOW_FLOW)], [4, 3, 2], 0)


def episode_numbers(patient: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Episode number (1, 2, ...) of each active row, 0 for inactive; rows sorted by patient, day.

    An episode is a run of consecutive active assessments of one patient.
    """
    if len(patient) == 0:
        return np.zeros(0, dtype=int)
    new_patient = np.r_[True, patient[1:] != patient[:-1]]
    start = active & ~(np.r_[False, active[:-1]] & ~new_patient)
    counts = np.cumsum(start)
    # starts counted before each patient's first row; non-decreasing, so accumulate carries it
    offset = np.maximum.accumulate(np.where(new_patient, counts - start, 0))
    return np.where(active, counts - offset, 0)


class CrsEpisodes:
    """The ASTCT CRS state of a group of patients, advanced one assessment at a time.

    Holds, per patient, whether a CRS episode is under way and whether the patient's fever has
    been masked by therapy given during CRS (R-CRS-2; it stays masked after the episode ends).
    :meth:`step` grades one assessment of every patient given
    there; the table grader (:func:`crs_astct`) and the simulation's closed loop both use it,
    so simulated patients are graded by the same code as real ones.
    """

    def __init__(self, n: int):
        self.on = np.zeros(n, dtype=bool)
        self.masked = np.zeros(n, dtype=bool)

    def step(self, who: np.ndarray, fever: np.ndarray, organ: np.ndarray, treated: np.ndarray) -> np.ndarray:
        """Grades (0-4) of one assessment of patients ``who`` (indices or a boolean mask).

        ``fever``: temperature >= the fever threshold without another cause; ``organ``: the
        worse of the hypotension and hypoxia grades (0, 2, 3, 4); ``treated``: antipyretic or
        anti-cytokine therapy given since the last assessment.
        """
        on = self.on[who] | fever
        # once a patient with CRS has been treated, fever is not needed for the rest of their
        # course (R-CRS-2): afebrile hypotension or hypoxia then continues or reopens CRS
        masked = self.masked[who] | (on & treated)
        grade = np.where(fever, np.maximum(1, organ), np.where(masked & (organ > 0), organ, 0))
        self.on[who] = grade > 0      # fever always grades >= 1, so a grade 0 ends the episode
        self.masked[who] = masked
        return grade


def crs_signs(df: pd.DataFrame, th: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fever, organ grade, treated) of every row, the inputs of :class:`CrsEpisodes`."""
    other = df["crs_alternative_cause"].to_numpy()
    fever = (df["temperature_c"].to_numpy() >= th.fever_c) & ~other
    organ = np.maximum(_hypotension_grade(df), _hypoxia_grade(df, th))
    organ = np.where(other, 0, organ)
    treated = (df["antipyretic"] | df["tocilizumab"] | df["corticosteroid"] | df["anakinra"]).to_numpy()
    return fever, organ, treated


def crs_astct(df: pd.DataFrame, th: Thresholds | None = None) -> pd.DataFrame:
    """ASTCT CRS grade of every row (rows sorted by patient, then day).

    Returns columns ``crs_astct`` (0-5), ``crs_fever`` (fever at this assessment) and
    ``crs_episode`` (1, 2... per patient; 0 outside CRS).

    - R-CRS-1: fever is temperature >= 38.0 degC (inclusive) without another cause.
    - R-CRS-2: fever is needed to diagnose CRS. Once a patient has CRS and has received an
      antipyretic, tocilizumab, a corticosteroid or anakinra during it, the later course is
      graded without fever, by hypotension and hypoxia. A treated patient who is afebrile,
      normotensive and off oxygen scores 0, which ends the episode; afebrile hypotension or
      hypoxia later opens a new episode, unless marked as having another cause (R-CRS-6).
    - R-CRS-3: the grade is the more severe of hypotension and hypoxia (at least 1).
    - R-CRS-5/6: organ toxicity does not enter; findings with another cause are not CRS.
    - R-CRS-7: death from CRS is grade 5.
    """
    th = th or thresholds()
    fever, organ, treated = crs_signs(df, th)
    patient = df["patient"].to_numpy()
    codes, index = np.unique(patient, return_inverse=True)
    rank = df.groupby("patient", sort=False).cumcount().to_numpy()
    episodes = CrsEpisodes(len(codes))
    grade = np.zeros(len(df), dtype=int)
    for r in range(int(rank.max()) + 1 if len(df) else 0):   # the k-th assessment of every patient
        rows = np.flatnonzero(rank == r)
        grade[rows] = episodes.step(index[rows], fever[rows], organ[rows], treated[rows])
    died = (df["death"] == "crs").to_numpy()
    grade = np.where(died, 5, grade)
    return pd.DataFrame({"crs_astct": grade, "crs_fever": fever,
                         "crs_episode": episode_numbers(patient, grade > 0)}, index=df.index)


# -- ICANS, ASTCT 2019 ---------------------------------------------------------------------------

def icans_astct(df: pd.DataFrame, th: Thresholds | None = None) -> np.ndarray:
    """ASTCT ICANS grade of every row: the most severe domain (R-ICANS-1).

    Adults and children above the CAPD age cut-off: ICE 7-9 grade 1, 3-6 grade 2, 0-2 grade 3
    (ICE 0 when awake, R-ICANS-2); unable to perform ICE because unarousable grade 4.
    Children up to the cut-off (and anyone with developmental delay): CAPD 1-8 grade 1,
    >= 9 grade 3, unable to perform grade 4. Consciousness: awakens spontaneously 1, to voice 2,
    to touch 3, unarousable 4, unless sedated (R-ICANS-3). Seizure that resolves rapidly, or
    non-convulsive seizure resolving with intervention, 3; prolonged (> 5 min) or repetitive 4.
    Deep focal motor weakness 4. Focal oedema 3; diffuse oedema or signs of raised
    intracranial pressure 4. Tremor, myoclonus and intracranial haemorrhage do not count
    (R-ICANS-4/5); findings with another cause are excluded; death from ICANS is grade 5.
    """
    th = th or thresholds()
    age = df["age_years"].to_numpy()
    child = (age <= th.capd_age) | df["developmental_delay"].to_numpy()
    ice = df["ice_score"].to_numpy()
    capd = df["capd_score"].to_numpy()
    unable = df["unable_to_perform_assessment"].to_numpy()
    needs_capd = child & (capd < 0) & (ice >= 0) & ~unable
    if needs_capd.any():
        i = int(np.flatnonzero(needs_capd)[0])
        raise ObservationError(
            f"row for patient {df['patient'].iloc[i]}, day {df['day'].iloc[i]}: a patient aged "
            f"{age[i]:g} (or with developmental delay) is graded with CAPD, not ICE; give capd_score "
            f"(the age cut-off is {th.capd_age:g} years, option --capd-age)")
    ice_grade = np.select([ice < 0, ice >= 10, ice >= th.ice_g1, ice >= th.ice_g2], [0, 0, 1, 2], 3)
    capd_grade = np.select([capd <= 0, capd < th.capd_positive], [0, 1], 3)
    assess = np.where(child, capd_grade, ice_grade)
    assess = np.where(unable, 4, assess)
    conscious = df["consciousness"].map(_CONSCIOUSNESS_GRADE).to_numpy()
    conscious = np.where(df["sedated"].to_numpy(), 0, conscious)
    seizure = df["seizure"].to_numpy()
    minutes = df["seizure_minutes"].to_numpy()
    seizure_grade = np.select(
        [np.isin(seizure, ("prolonged", "repetitive")) | (minutes > th.seizure_prolonged_min),
         np.isin(seizure, ("rapidly_resolving", "nonconvulsive_resolved"))], [4, 3], 0)
    motor = np.where(df["motor_weakness"].to_numpy() == "deep_focal_weakness", 4, 0)
    oedema = df["cerebral_oedema"].to_numpy()
    icp = np.select([(oedema == "diffuse") | df["raised_icp_signs"].to_numpy(), oedema == "focal"], [4, 3], 0)
    grade = np.max(np.stack([assess, conscious, seizure_grade, motor, icp]), axis=0)
    grade = np.where(df["icans_alternative_cause"].to_numpy(), 0, grade)
    return np.where((df["death"] == "icans").to_numpy(), 5, grade)


# -- older CRS scales ----------------------------------------------------------------------------

def _fio2(df: pd.DataFrame, th: Thresholds) -> np.ndarray:
    """Recorded FiO2, or an estimate from the device (grading.yaml lee2014)."""
    dev = df["oxygen_device"].to_numpy()
    flow = np.nan_to_num(df["oxygen_flow_l_min"].to_numpy(), nan=2.0)
    est = np.select([np.isin(dev, _LOW_FLOW), np.isin(dev, _HIGH_FLOW + _POSITIVE)],
                    [th.cannula_fio2_0 + th.cannula_fio2_per_l * flow, th.device_fio2], 0.21)
    rec = df["fio2"].to_numpy()
    return np.where(np.isnan(rec), est, rec)


def crs_lee2014(df: pd.DataFrame, in_crs: np.ndarray, th: Thresholds | None = None) -> np.ndarray:
    """Lee 2014 CRS grade: FiO2 and vasopressor dose rather than device; organ toxicity counts.

    ``in_crs``: rows where the patient has CRS (the ASTCT episode); outside it the grade is 0.
    2: oxygen at FiO2 < 40%, hypotension responsive to fluids or one low-dose vasopressor, or
    grade 2 organ toxicity. 3: FiO2 >= 40%, high-dose or multiple vasopressors, grade 3 organ
    toxicity or grade 4 transaminitis. 4: ventilator support (CPAP, BiPAP or intubation) or grade 4
    organ toxicity.
    """
    th = th or thresholds()
    fio2 = _fio2(df, th)
    o2 = df["oxygen_device"].to_numpy() != "none"
    # "ventilator support": any positive-pressure ventilation (CPAP, BiPAP, intubation)
    vent = np.isin(df["oxygen_device"].to_numpy(), _POSITIVE) & ~df["positive_pressure_for_other_reason"].to_numpy()
    n = df["vasopressors"].to_numpy()
    high = df["vasopressor_high_dose"].to_numpy() | (n >= 2)
    hypo = df["hypotension"].to_numpy() | (n > 0)
    organ = df["organ_toxicity_grade"].to_numpy()
    trans = df["transaminitis_grade"].to_numpy()
    g = np.select([vent | (organ >= 4),
                   (o2 & (fio2 >= th.lee_fio2_high)) | high | (organ == 3) | (trans >= 4),
                   o2 | hypo | (organ == 2)], [4, 3, 2], 1)
    g = np.where(in_crs, g, 0)
    return np.where((df["death"] == "crs").to_numpy(), 5, g)


def crs_penn(df: pd.DataFrame, in_crs: np.ndarray) -> np.ndarray:
    """Penn (Porter 2018) CRS grade.

    2: organ dysfunction (creatinine grade 2, transaminases grade 3), hospital care for CRS or
    IV therapy other than fluids for hypotension. 3: any supplemental oxygen (cannula to
    BiPAP), hypotension needing multiple fluid boluses or low-dose vasopressors, creatinine grade 3,
    transaminases grade 4, coagulopathy needing products. 4: high-dose vasopressors or
    mechanical ventilation.
    """
    dev = df["oxygen_device"].to_numpy()
    vent = (dev == "mechanical_ventilation") & ~df["positive_pressure_for_other_reason"].to_numpy()
    n = df["vasopressors"].to_numpy()
    high = df["vasopressor_high_dose"].to_numpy() | (n >= 2)
    hypo_treated = (df["fluid_boluses"].to_numpy() >= 2) | (n > 0)   # "multiple fluid boluses"
    creat, trans = df["creatinine_grade"].to_numpy(), df["transaminitis_grade"].to_numpy()
    g = np.select([vent | high,
                   (dev != "none") | hypo_treated | (creat >= 3) | (trans >= 4) | df["coagulopathy_treated"].to_numpy(),
                   (creat == 2) | (trans == 3) | df["hospitalised_for_crs"].to_numpy() | df["iv_therapy"].to_numpy()],
                  [4, 3, 2], 1)
    g = np.where(in_crs, g, 0)
    return np.where((df["death"] == "crs").to_numpy(), 5, g)


def crs_ctcae5(df: pd.DataFrame, in_crs: np.ndarray, th: Thresholds | None = None) -> np.ndarray:
    """CTCAE v5.0 CRS grade: 2 hypotension responding to fluids or oxygen < 40%; 3 one
    vasopressor or oxygen >= 40%; 4 life-threatening, taken as several vasopressors or positive
    pressure ventilation (an interpretation, docs/grading.md)."""
    th = th or thresholds()
    dev = df["oxygen_device"].to_numpy()
    fio2 = _fio2(df, th)
    n = df["vasopressors"].to_numpy()
    positive = np.isin(dev, _POSITIVE) & ~df["positive_pressure_for_other_reason"].to_numpy()
    hypo = df["hypotension"].to_numpy() | (n > 0)
    g = np.select([positive | (n >= 2), (n == 1) | ((dev != "none") & (fio2 >= th.lee_fio2_high)),
                   hypo | (dev != "none")], [4, 3, 2], 1)
    g = np.where(in_crs, g, 0)
    return np.where((df["death"] == "crs").to_numpy(), 5, g)


# -- whole tables --------------------------------------------------------------------------------

def grade_table(df: pd.DataFrame, capd_age_cutoff_years: float | None = None) -> pd.DataFrame:
    """Every grade of every assessment; ``df`` is a checked observation table."""
    th = thresholds(capd_age_cutoff_years)
    crs = crs_astct(df, th)
    in_crs = crs["crs_astct"].to_numpy() > 0
    out = df[["patient", "day"]].copy()
    out["crs_astct"] = crs["crs_astct"]
    out["crs_episode"] = crs["crs_episode"]
    out["crs_lee2014"] = crs_lee2014(df, in_crs, th)
    out["crs_penn"] = crs_penn(df, in_crs)
    out["crs_ctcae5"] = crs_ctcae5(df, in_crs, th)
    out["icans_astct"] = icans_astct(df, th)
    out["icans_episode"] = episode_numbers(df["patient"].to_numpy(), out["icans_astct"].to_numpy() > 0)
    return out


def _episode_summary(g: pd.DataFrame, col: str, episode_col: str) -> pd.DataFrame:
    rows = []
    days = g["day"].to_numpy()
    for (patient, ep), e in g[g[episode_col] > 0].groupby(["patient", episode_col], sort=True):
        idx = e.index.to_numpy()
        last = idx[-1]
        # duration: from onset to the first later assessment without the toxicity, or to the
        # last assessment with it when none follows
        nxt = last + 1
        same = nxt < len(g) and g["patient"].iloc[nxt] == patient
        end = days[nxt] if same else days[last]
        rows.append({"patient": patient, "toxicity": col.split("_")[0], "episode": int(ep),
                     "onset_day": float(days[idx[0]]), "end_day": float(end),
                     "duration_days": float(end - days[idx[0]]), "max_grade": int(e[col].max()),
                     "resolved": bool(same)})
    return pd.DataFrame(rows, columns=["patient", "toxicity", "episode", "onset_day", "end_day",
                                       "duration_days", "max_grade", "resolved"])


def summarise(graded: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(episodes, patients): one row per CRS/ICANS episode, one row per patient."""
    g = graded.reset_index(drop=True)
    parts = [_episode_summary(g, "crs_astct", "crs_episode"), _episode_summary(g, "icans_astct", "icans_episode")]
    nonempty = [e for e in parts if not e.empty]
    episodes = pd.concat(nonempty, ignore_index=True) if nonempty else parts[0]
    per = g.groupby("patient", sort=True).agg(
        crs_max_grade=("crs_astct", "max"), crs_max_grade_lee2014=("crs_lee2014", "max"),
        crs_max_grade_penn=("crs_penn", "max"), crs_max_grade_ctcae5=("crs_ctcae5", "max"),
        icans_max_grade=("icans_astct", "max"), assessments=("day", "size"))
    for tox in ("crs", "icans"):
        e = episodes[episodes["toxicity"] == tox]
        first = e.groupby("patient")["onset_day"].min()
        total = e.groupby("patient")["duration_days"].sum()
        per[f"{tox}_onset_day"] = first.reindex(per.index)
        per[f"{tox}_duration_days"] = total.reindex(per.index)
        per[f"{tox}_episodes"] = e.groupby("patient").size().reindex(per.index).fillna(0).astype(int)
    return episodes, per.reset_index()
