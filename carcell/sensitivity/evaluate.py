"""One sample point = one virtual cohort, and the outcomes a trial reports on it.

:func:`evaluate_point` is a pure function of (scenario, point, cohort size, seed): it builds the
scenario at the point, sets the point's knowledge values for the duration of the run, simulates
the cohort as ``carcell run`` would (a single-arm trial: ``carcell.trial.run.run_trial``, which
calls ``carcell.cohort.run.run_cohort`` and adds deaths and the time-to-event endpoints), and
reduces the patients table to the outcomes below. Every point uses the same seed, so the same
patients (covariates, parameter draws, death draws) meet every point: common random numbers,
and the differences between points are the parameters' effects, not sampling noise.

Points are independent tasks. :func:`run_points` maps them in order, in-process, in a local
process pool (``workers``), or through any ``executor(fn, points)`` that returns the results in
order (a Dask client's ``map`` + ``gather`` fits); the results, and so the indices, do not
depend on which. Knowledge values are set on the process's knowledge tree and restored after
the run, so an executor must not run two points at once in threads of one process.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from carcell.errors import ScenarioError
from carcell.sensitivity.params import KNOWLEDGE_PREFIX, set_path
from carcell.solve.workers import process_pool

Point = dict[str, Any]
Executor = Callable[[Callable[[Point], dict[str, float]], Sequence[Point]], Iterable[dict[str, float]]]

#: outcome name -> (description, unit); all are computed for every point (samples.parquet)
OUTCOMES: dict[str, tuple[str, str]] = {
    "cr_rate": ("complete response rate (best response CR, all patients)", "1"),
    "orr": ("objective response rate (CR, VGPR or PR, all patients)", "1"),
    "crs_grade3plus_rate": ("grade >= 3 CRS (ASTCT) among infused patients", "1"),
    "icans_grade3plus_rate": ("grade >= 3 ICANS (ASTCT) among infused patients", "1"),
    "cmax_median_copies_per_ug": ("median Cmax of CAR transgene in blood", "copies/ug"),
    "log10_cmax_median_copies_per_ug": ("log10 of the median Cmax", "log10 copies/ug"),
    "pfs_landmark": ("Kaplan-Meier progression-free survival at the landmark day", "1"),
    "pfs_median_days": ("Kaplan-Meier median PFS, the follow-up where not reached", "day"),
}
#: the outcomes analysed when none are named: efficacy, toxicity, exposure, durability
DEFAULT_OUTCOMES = ("cr_rate", "crs_grade3plus_rate", "log10_cmax_median_copies_per_ug", "pfs_landmark")


@contextmanager
def knowledge_values(values: dict[str, float]) -> Iterator[None]:
    """Set knowledge entries (``{dotted.path: value}``) in this process, restored on exit."""
    from carcell.knowledge import load_knowledge

    k = load_knowledge(False)   # the tree every load_knowledge() of this process shares
    saved: list[tuple[dict, Any]] = []
    try:
        for path, value in values.items():
            node = k.node(path)
            saved.append((node, node["value"]))
            node["value"] = value
        yield
    finally:
        for node, old in reversed(saved):
            node["value"] = old


def scenario_at(raw: dict, point: Point, n_patients: int, seed: int, source: str = "scenario"):
    """The validated scenario at a point (scenario fields only; knowledge values are set apart)."""
    from carcell.scenario.load import validate_raw

    out = copy.deepcopy(raw)
    for path, value in point.items():
        if not path.startswith(KNOWLEDGE_PREFIX):
            set_path(out, path, copy.deepcopy(value))
    set_path(out, "population.n", int(n_patients))
    set_path(out, "population.seed", int(seed))
    set_path(out, "trial.workers", 1)   # points run in parallel, not the patients of one point
    return validate_raw(out, source)


def cohort_outcomes(patients: pd.DataFrame, follow_up_days: float, landmark_days: float) -> dict[str, float]:
    """The outcomes of one single-arm trial's patients table (docs/trial-outputs.md).

    Response rates are over all patients (intention to treat, as ``trial.json``), toxicity
    and Cmax over infused patients; patients whose solve failed are left out. An outcome
    that cannot be computed is NaN.
    """
    from carcell.trial.stats import RESPONDER_CATEGORIES, event_flags, km_summary

    df = patients
    if "solver_status" in patients:   # not-infused patients were never solved: NaN status
        df = patients[patients["solver_status"].fillna("ok") == "ok"]
    nan = float("nan")
    if df.empty:
        return dict.fromkeys(OUTCOMES, nan)
    best = df["best_response"].astype(str)
    infused = df[event_flags(df["infused"].to_numpy(dtype=object))] if "infused" in df else df

    def share(column: str, grade: float) -> float:
        v = pd.to_numeric(infused.get(column, pd.Series(dtype=float)), errors="coerce").dropna()
        return float((v >= grade).mean()) if len(v) else nan

    cmax = pd.to_numeric(infused.get("cmax_copies_per_ug", pd.Series(dtype=float)), errors="coerce").dropna()
    cmax_median = float(cmax.median()) if len(cmax) else nan
    km = km_summary(df["pfs_days"].to_numpy(dtype=float), df["pfs_event"].to_numpy(dtype=object),
                    [landmark_days])
    landmark = km["landmarks"][str(int(round(landmark_days)))]["estimate"]
    median = km["median_days"]
    return {
        "cr_rate": float((best == "CR").mean()),
        "orr": float(best.isin(RESPONDER_CATEGORIES).mean()),
        "crs_grade3plus_rate": share("crs_max_grade", 3),
        "icans_grade3plus_rate": share("icans_max_grade", 3),
        "cmax_median_copies_per_ug": cmax_median,
        "log10_cmax_median_copies_per_ug": float(np.log10(cmax_median)) if cmax_median > 0 else nan,
        "pfs_landmark": nan if landmark is None else float(landmark),
        "pfs_median_days": float(follow_up_days) if median is None else float(median),
    }


def evaluate_point(raw: dict, point: Point, *, n_patients: int, seed: int, landmark_days: float,
                   source: str = "scenario") -> dict[str, float]:
    """Simulate one virtual cohort at ``point`` and return its outcomes (see :data:`OUTCOMES`),
    plus ``solver_failures`` (patients whose solve failed)."""
    from carcell.trial.run import run_trial

    knowledge = {p.removeprefix(KNOWLEDGE_PREFIX): v for p, v in point.items() if p.startswith(KNOWLEDGE_PREFIX)}
    with knowledge_values(knowledge):
        sc = scenario_at(raw, point, n_patients, seed, source)
        if sc.trial.arms:
            raise ScenarioError(f"{source}: sensitivity runs a single-arm scenario; remove trial.arms "
                                f"(or run each arm's product as its own scenario)")
        patients = run_trial(sc).patients
    out = cohort_outcomes(patients, sc.trial.follow_up_days, landmark_days)
    status = patients["solver_status"] if "solver_status" in patients else pd.Series(dtype=object)
    out["solver_failures"] = float((status.notna() & (status != "ok")).sum())
    return out


@dataclass(frozen=True)
class CohortEvaluator:
    """A picklable ``point -> outcomes`` function for one scenario: what a worker receives."""

    raw: dict
    n_patients: int
    seed: int
    landmark_days: float
    source: str = "scenario"

    def __call__(self, point: Point) -> dict[str, float]:
        return evaluate_point(self.raw, point, n_patients=self.n_patients, seed=self.seed,
                              landmark_days=self.landmark_days, source=self.source)


def run_points(fn: Callable[[Point], dict[str, float]], points: Sequence[Point], *, workers: int = 1,
               progress: Callable[[int, int], None] | None = None,
               executor: Executor | None = None) -> list[dict[str, float]]:
    """``[fn(p) for p in points]``, in order: in-process (``workers=1``), in a local process
    pool, or through ``executor``; ``progress(done, total)`` after each result."""
    total = len(points)
    if executor is not None:
        results = executor(fn, points)
    elif workers <= 1 or total < 2:
        results = (fn(p) for p in points)
    else:
        results = _pool_map(fn, points, workers)
    out = []
    for r in results:
        out.append(r)
        if progress is not None:
            progress(len(out), total)
    return out


def _pool_map(fn: Callable[[Point], dict[str, float]], points: Sequence[Point], workers: int
              ) -> Iterator[dict[str, float]]:
    # one point per task: a cohort takes seconds, so balance matters more than dispatch cost
    with process_pool(min(workers, len(points))) as pool:
        yield from pool.map(fn, points)
