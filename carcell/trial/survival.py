"""Deaths and time-to-event endpoints of infused patients, from their simulated course.

A simulated patient's progression day comes from the response assessments. Death comes from
whichever of five causes happens first (knowledge/data/survival.yaml, docs/trials.md):

* ``progression``: an exponential post-progression survival, median per indication;
* ``crs`` / ``icans``: grade-4 CRS or ICANS is fatal with a fixed chance, on the day grade 4
  is reached;
* ``infection``: a hazard per day of severe neutropenia (ANC < 500/uL) and a smaller one per
  day of B-lineage aplasia after day 28;
* ``other``: background mortality by age (Gompertz, anchored on a US life table).

Each patient draws from a stream of its own (the seed, its id and a tag), so the deaths do not
depend on chunking, worker count or which other patients are in the trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.units import DAYS_PER_MONTH as MONTH_DAYS

_DEATH_STREAM = 1   # spawn-key tag of the death draws (0-tagged ids are the patient's own parameters)
N_UNIFORMS = 8


def death_rng(seed: int, patient: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(patient, _DEATH_STREAM)))


def uniforms(seed: int, ids: np.ndarray) -> np.ndarray:
    """(n, N_UNIFORMS) uniforms per patient, in a fixed order (see the users below)."""
    return np.array([death_rng(seed, int(i)).random(N_UNIFORMS) for i in ids]).reshape(len(ids), N_UNIFORMS)


@dataclass(frozen=True)
class DeathModel:
    post_progression_median_days: float
    toxicity_death_given_grade4: float
    infection_hazard_neutropenia: float   # 1/day with ANC < 500
    infection_hazard_aplasia: float       # 1/day of B-lineage aplasia after day 28
    reference_age: float
    reference_hazard: float               # 1/year at the reference age
    gompertz_slope: float                 # 1/year

    @classmethod
    def from_knowledge(cls, k, disease: str) -> DeathModel:
        q = float(k.value("survival.background.death_probability_at_reference_age"))
        return cls(
            post_progression_median_days=float(k.value(f"survival.post_progression_median.{disease}")) * MONTH_DAYS,
            toxicity_death_given_grade4=float(k.value("survival.non_relapse.toxicity_death_given_grade4")),
            infection_hazard_neutropenia=float(k.value("survival.non_relapse.infection_hazard_severe_neutropenia")),
            infection_hazard_aplasia=float(k.value("survival.non_relapse.infection_hazard_b_cell_aplasia")),
            reference_age=float(k.value("survival.background.reference_age")),
            reference_hazard=-np.log1p(-q),
            gompertz_slope=np.log(2.0) / float(k.value("survival.background.mortality_doubling_time")),
        )

    def background_death_day(self, age_years: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Day of death from other causes: Gompertz hazard h(a) = h_ref exp(B (a - a_ref))."""
        h = self.reference_hazard * np.exp(self.gompertz_slope * (age_years - self.reference_age))
        e = -np.log1p(-u)
        years = np.log1p(e * self.gompertz_slope / h) / self.gompertz_slope
        return years * 365.25

    def post_progression_days(self, u: np.ndarray) -> np.ndarray:
        return -np.log1p(-u) * self.post_progression_median_days / np.log(2.0)


def first_grade_day(events: pd.DataFrame, kind: str, grade: float) -> pd.Series:
    """Per patient, the first day a ``kind`` ('crs_grade'/'icans_grade') event reached ``grade``."""
    e = events[(events["event"] == kind) & (events["value"] >= grade)]
    return e.groupby("patient_id")["day"].min()


def endpoints(patients: pd.DataFrame, events: pd.DataFrame, model: DeathModel, seed: int,
              follow_up: float, first_assessment: float, no_response: str = "SD") -> pd.DataFrame:
    """Add death and time-to-event columns (docs/trial-outputs.md) to infused patients.

    ``first_assessment``: day of the first response assessment; ``no_response``: the category
    of a patient assessed but not responding (SD, or NR in B-ALL)."""
    df = patients.copy()
    ids = df["patient_id"].to_numpy()
    u = uniforms(seed, ids)
    n = len(df)
    never = np.full(n, np.inf)

    prog = df["progression_day"].to_numpy(dtype=float)
    prog = np.where(np.isnan(prog), np.inf, prog)

    # toxicity: fatal grade 4 on the day it is reached
    crs4 = first_grade_day(events, "crs_grade", 4).reindex(ids).to_numpy(dtype=float)
    icans4 = first_grade_day(events, "icans_grade", 4).reindex(ids).to_numpy(dtype=float)
    grade4 = np.fmin(crs4, icans4)
    tox_fatal = ~np.isnan(grade4) & (u[:, 0] < model.toxicity_death_given_grade4)
    tox_day = np.where(tox_fatal, grade4, never)
    tox_cause = np.where(np.nan_to_num(icans4, nan=np.inf) <= np.nan_to_num(crs4, nan=np.inf), "icans", "crs")

    # infection during severe neutropenia (a uniform time inside the neutropenic days)
    neut = np.nan_to_num(df.get("severe_neutropenia_days", pd.Series(0.0, index=df.index)).to_numpy(dtype=float))
    recovery = df.get("anc_recovery_day", pd.Series(np.nan, index=df.index)).to_numpy(dtype=float)
    start = np.where(np.isnan(recovery), 0.0, np.maximum(recovery - neut, 0.0))
    p_neut = 1.0 - np.exp(-model.infection_hazard_neutropenia * neut)
    neut_day = np.where(u[:, 1] < p_neut, start + u[:, 2] * neut, never)

    # later infection during B-lineage aplasia after day 28
    aplasia = np.nan_to_num(df.get("b_cell_aplasia_days", pd.Series(0.0, index=df.index)).to_numpy(dtype=float))
    if "plasma_cells_depleted_days" in df:
        aplasia = np.maximum(aplasia, np.nan_to_num(df["plasma_cells_depleted_days"].to_numpy(dtype=float)))
    window = np.maximum(aplasia - 28.0, 0.0)
    late = -np.log1p(-u[:, 3]) / model.infection_hazard_aplasia
    late_day = np.where(late < window, 28.0 + late, never)

    pps_day = prog + model.post_progression_days(u[:, 4])
    other_day = model.background_death_day(df["age_years"].to_numpy(dtype=float), u[:, 5])

    candidates = np.vstack([pps_day, tox_day, neut_day, late_day, other_day])
    which = np.argmin(candidates, axis=0)
    death = candidates[which, np.arange(n)]
    cause = np.array(["progression", "toxicity", "infection", "infection", "other"], dtype=object)[which]
    cause = np.where(cause == "toxicity", tox_cause, cause)
    died = death <= follow_up
    df["death_day"] = np.where(died, death, np.nan)
    df["death_cause"] = np.where(died, cause, "none")
    for syndrome in ("crs", "icans"):   # ASTCT grade 5: death from the syndrome itself
        if f"{syndrome}_max_grade" in df:
            df.loc[df["death_cause"] == syndrome, f"{syndrome}_max_grade"] = 5.0

    # nothing is seen after death: no later progression, and a patient who dies before
    # responding is not evaluable for response
    after = died & (prog > death)
    df.loc[after, "progression_day"] = np.nan
    if "relapse_antigen" in df:
        df.loc[after, "relapse_antigen"] = "none"
    resp = df["response_day"].to_numpy(dtype=float)
    never_assessed = died & (death < first_assessment)
    df.loc[never_assessed, "best_response"] = "NE"
    died_before_response = died & ~never_assessed & (death < resp)   # assessed, not yet responding
    df.loc[died_before_response, "best_response"] = no_response
    df.loc[never_assessed | died_before_response, "response_day"] = np.nan

    event_day = np.fmin(np.where(np.isinf(prog), np.nan, prog), np.where(died, death, np.nan))
    pfs_event = ~np.isnan(event_day) & (event_day <= follow_up)
    df["pfs_days"] = np.where(pfs_event, event_day, follow_up)
    df["pfs_event"] = pfs_event
    df["efs_days"], df["efs_event"] = df["pfs_days"], df["pfs_event"]
    df["os_days"] = np.where(died, death, follow_up)
    df["os_event"] = died
    responder = ~np.isnan(df["response_day"].to_numpy(dtype=float))
    df["dor_days"] = np.where(responder, df["pfs_days"] - df["response_day"], np.nan)
    df["dor_event"] = np.where(responder, df["pfs_event"], False)
    df["infused"] = True
    return df


def not_infused(ids: np.ndarray, ages: np.ndarray, model: DeathModel, seed: int, follow_up: float,
                failure_day: np.ndarray | None = None, death_cause: np.ndarray | None = None) -> pd.DataFrame:
    """Patients randomised to a CAR arm who were never infused, counted as failures.

    Without a manufacturing chain they fail on day 1 (their disease progressed or they fell ill
    while the product was made). With one, ``failure_day`` is the day after enrolment they left
    the chain, and ``death_cause`` names those who died then ("progression" or "other"; "" for
    the others); the rest are followed for survival after progression from that day."""
    n = len(ids)
    fail = np.ones(n) if failure_day is None else np.asarray(failure_day, float)
    cause_waiting = np.full(n, "", dtype=object) if death_cause is None else np.asarray(death_cause, dtype=object)
    died_waiting = cause_waiting != ""
    u = uniforms(seed, ids)
    pps = fail + model.post_progression_days(u[:, 4])
    other = model.background_death_day(ages, u[:, 5])
    death = np.where(died_waiting, fail, np.minimum(pps, other))
    cause = np.where(died_waiting, cause_waiting, np.where(pps <= other, "progression", "other"))
    event = fail <= follow_up
    died = death <= follow_up
    return pd.DataFrame({
        "patient_id": ids, "infused": False, "age_years": ages, "best_response": "NE",
        "response_day": np.nan, "progression_day": np.where(died_waiting & (cause == "other"), np.nan, fail),
        "pfs_days": np.minimum(fail, follow_up), "pfs_event": event,
        "efs_days": np.minimum(fail, follow_up), "efs_event": event,
        "os_days": np.where(died, death, follow_up), "os_event": died,
        "dor_days": np.nan, "dor_event": False,
        "death_day": np.where(died, death, np.nan),
        "death_cause": np.where(died, cause, "none"),
    })
