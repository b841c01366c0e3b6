"""Global sensitivity analysis: sample the inputs, evaluate every point, compute the indices.

Two methods (SALib):

Sobol' (variance-based)
    ``N`` base points of a scrambled Sobol' sequence, each with one re-sampled copy per input
    (Saltelli 2010): ``N (D + 2)`` evaluations for ``D`` inputs. ``S1`` is the share of the
    outcome's variance due to an input alone, ``ST`` its share including every interaction;
    ``ST - S1`` measures interactions, ``ST`` near 0 means the input can be fixed. Bootstrap
    95% intervals come with each index. Convergence: the indices recomputed on the first
    ``N/8, N/4, N/2, N`` base points (each prefix of the sequence is a design of its own).
Morris (elementary effects)
    ``r`` one-at-a-time trajectories through a ``p``-level grid: ``r (D + 1)`` evaluations.
    ``mu*`` (mean absolute effect of moving an input over ``2/3`` of its range, for
    ``p = 4``) ranks inputs; ``sigma`` large against ``mu*`` means non-linear or interacting.
    Effects are per unit of the sampled interval (module ``params``), so inputs with
    different units compare. Convergence: ``mu*`` and its bootstrap interval on the first
    ``r/4, r/2, 3r/4, r`` trajectories, and whether the ranking of inputs has settled.

References
----------
Saltelli A, et al. Variance based sensitivity analysis of model output. Design and estimator
for the total sensitivity index. Comput Phys Commun 2010;181:259-270.
doi:10.1016/j.cpc.2009.09.018
Morris MD. Factorial sampling plans for preliminary computational experiments.
Technometrics 1991;33:161-174. doi:10.1080/00401706.1991.10484804
Campolongo F, Cariboni J, Saltelli A. An effective screening design for sensitivity analysis
of large models. Environ Model Softw 2007;22:1509-1518. doi:10.1016/j.envsoft.2006.10.004 (mu*)
Herman J, Usher W. SALib: an open-source Python library for sensitivity analysis.
J Open Source Softw 2017;2:97. doi:10.21105/joss.00097
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from carcell.errors import CarcellError, ScenarioError
from carcell.sensitivity.evaluate import (DEFAULT_OUTCOMES, OUTCOMES, CohortEvaluator, Executor, Point,
                                          run_points)
from carcell.sensitivity.params import Parameter, resolve_parameters

METHODS = ("sobol", "morris")
CONF_LEVEL = 0.95


def _salib():
    try:
        from SALib.analyze import morris as morris_analyze
        from SALib.analyze import sobol as sobol_analyze
        from SALib.sample import morris as morris_sample
        from SALib.sample import sobol as sobol_sample
    except ImportError:  # pragma: no cover - SALib comes with the scale extra
        raise CarcellError("sensitivity analysis needs SALib: pip install 'carcell[scale]'") from None
    return sobol_sample, sobol_analyze, morris_sample, morris_analyze


def _problem(params: Sequence[Parameter]) -> dict[str, Any]:
    # the unit hypercube: each Parameter maps u in [0, 1] to its value (params module)
    return {"num_vars": len(params), "names": [p.path for p in params], "bounds": [[0.0, 1.0]] * len(params)}


def check_design(method: str, n_samples: int, n_params: int, num_levels: int = 4) -> None:
    """One-line errors for a design SALib could not use."""
    if method not in METHODS:
        raise ScenarioError(f"--method {method}: use sobol or morris")
    if n_params < 1:
        raise ScenarioError("no parameters: give at least one --param or a --params-file")
    if method == "sobol" and (n_samples < 2 or n_samples & (n_samples - 1)):
        raise ScenarioError(f"--samples {n_samples}: Sobol' needs a power of 2 base points (e.g. 64), "
                            f"so that the sequence keeps its balance")
    if method == "morris":
        if n_samples < 2:
            raise ScenarioError(f"--samples {n_samples}: Morris needs at least 2 trajectories (10-50 is usual)")
        if num_levels < 2 or num_levels % 2:
            raise ScenarioError(f"--levels {num_levels}: Morris needs an even number of grid levels (4 is usual)")


def sample_unit(method: str, n_samples: int, n_params: int, seed: int, num_levels: int = 4) -> np.ndarray:
    """The design in the unit hypercube, shape (evaluations, n_params)."""
    check_design(method, n_samples, n_params, num_levels)
    sobol_sample, _, morris_sample, _ = _salib()
    problem = _problem([Parameter(f"x{i}", 0.0, 1.0) for i in range(n_params)])
    if method == "sobol":
        return sobol_sample.sample(problem, n_samples, calc_second_order=False, seed=seed)
    return morris_sample.sample(problem, n_samples, num_levels=num_levels, seed=seed)


def _sobol_indices(names: list[str], y: np.ndarray, seed: int, resamples: int) -> dict[str, np.ndarray]:
    _, sobol_analyze, _, _ = _salib()
    problem = {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}
    r = sobol_analyze.analyze(problem, y, calc_second_order=False, num_resamples=resamples,
                              conf_level=CONF_LEVEL, seed=seed)
    return {k: np.asarray(r[k], dtype=float) for k in ("S1", "S1_conf", "ST", "ST_conf")}


def _morris_indices(names: list[str], x: np.ndarray, y: np.ndarray, seed: int, resamples: int,
                    num_levels: int) -> dict[str, np.ndarray]:
    _, _, _, morris_analyze = _salib()
    problem = {"num_vars": len(names), "names": names, "bounds": [[0.0, 1.0]] * len(names)}
    r = morris_analyze.analyze(problem, x, y, num_resamples=resamples, conf_level=CONF_LEVEL,
                               num_levels=num_levels, seed=seed)
    return {k: np.asarray(r[k], dtype=float) for k in ("mu", "mu_star", "mu_star_conf", "sigma")}


def _undefined(y: np.ndarray, method: str) -> str | None:
    """Why indices of this outcome cannot be computed (None when they can)."""
    if not np.isfinite(y).all():
        return f"not computable at {int((~np.isfinite(y)).sum())} of {y.size} points"
    if method == "sobol" and np.ptp(y) == 0:
        return "the same at every point (no variance to share out; e.g. no grade >= 3 CRS in a small cohort)"
    return None


def prefix_sizes(n: int, method: str) -> list[int]:
    """Base-point counts (Sobol', powers of 2) or trajectory counts (Morris) for convergence."""
    if method == "sobol":
        sizes = [n >> j for j in range(4) if n >> j >= 2]
    else:
        sizes = [max(2, int(round(n * f))) for f in (0.25, 0.5, 0.75, 1.0)]
    return sorted(set(sizes))


def indices(method: str, params: Sequence[Parameter], unit: np.ndarray, y: np.ndarray, n_samples: int, *,
            seed: int, resamples: int = 100, num_levels: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Indices of one outcome on the whole design, and their convergence over design prefixes.

    Returns
    -------
    (indices, convergence) : DataFrames with one row per parameter (per prefix).
    """
    names = [p.path for p in params]
    d = len(names)
    rows_per = d + 2 if method == "sobol" else d + 1
    conv = []
    for size in prefix_sizes(n_samples, method):
        m = size * rows_per
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # SALib's 0/0 on constant resamples
            r = (_sobol_indices(names, y[:m], seed, resamples) if method == "sobol"
                 else _morris_indices(names, unit[:m], y[:m], seed, resamples, num_levels))
        part = pd.DataFrame({"parameter": names, **r})
        part.insert(1, "n_base" if method == "sobol" else "trajectories", size)
        part.insert(2, "evaluations", m)
        if method == "morris":
            part["rank"] = part["mu_star"].rank(ascending=False, method="min").astype(int)
        conv.append(part)
    convergence = pd.concat(conv, ignore_index=True)
    last = conv[-1].drop(columns=["n_base" if method == "sobol" else "trajectories", "evaluations"])
    return last.reset_index(drop=True), convergence


@dataclass
class SensitivityResult:
    """Everything an analysis produced; :meth:`write` puts it in a directory."""

    method: str
    parameters: list[Parameter]
    outcomes: list[str]
    n_samples: int
    seed: int
    unit: np.ndarray                 # (evaluations, parameters) design in the unit hypercube
    points: list[Point]
    values: pd.DataFrame             # (evaluations, outcomes computed)
    indices: pd.DataFrame            # outcome, parameter, S1/ST (+conf) or mu/mu_star/sigma
    convergence: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)   # outcome -> why no indices

    def samples_table(self) -> pd.DataFrame:
        """One row per evaluated point: its inputs (categorical levels as text) and outcomes."""
        inputs = {}
        for j, p in enumerate(self.parameters):
            col = [pt[p.path] for pt in self.points]
            inputs[p.path] = ([json.dumps(v) if not isinstance(v, str) else v for v in col]
                              if p.is_categorical else np.asarray(col, dtype=float))
            inputs[f"u:{p.path}"] = self.unit[:, j]
        df = pd.DataFrame({"point": np.arange(len(self.points)), **inputs})
        return pd.concat([df, self.values.reset_index(drop=True)], axis=1)

    def stability(self) -> dict[str, Any]:
        """Convergence summary per outcome (sensitivity.json)."""
        out: dict[str, Any] = {}
        for outcome, conv in self.convergence.groupby("outcome", sort=False):
            if self.method == "sobol":
                last = conv[conv["n_base"] == conv["n_base"].max()]
                prev = conv[conv["n_base"] < conv["n_base"].max()]
                change = None
                if not prev.empty:
                    prev = prev[prev["n_base"] == prev["n_base"].max()]
                    change = float(np.nanmax(np.abs(last["ST"].to_numpy() - prev["ST"].to_numpy())))
                out[outcome] = {"max_ST_ci95_halfwidth": float(np.nanmax(last["ST_conf"])),
                                "max_ST_change_from_half_the_points": change}
            else:
                counts = sorted(conv["trajectories"].unique())
                final = conv[conv["trajectories"] == counts[-1]].set_index("parameter")
                settled = None
                for c in counts:   # the fewest trajectories from which the ranking no longer changes
                    same = all((conv[conv["trajectories"] == c2].set_index("parameter")["rank"]
                                == final["rank"]).all() for c2 in counts if c2 >= c)
                    if same:
                        settled = int(c)
                        break
                mu = final["mu_star"].to_numpy()
                rel = np.divide(final["mu_star_conf"].to_numpy(), mu, out=np.full(mu.shape, np.nan), where=mu > 0)
                out[outcome] = {"ranking_stable_from_trajectories": settled,
                                "max_relative_mu_star_ci95": None if np.isnan(rel).all() else float(np.nanmax(rel))}
        return out

    def write(self, out: Path, plots: bool = True) -> list[Path]:
        """indices.csv, samples.parquet, convergence.csv, sensitivity.json and the plots."""
        from carcell.io.outputs import write_table
        from carcell.trial.stats import json_safe

        out.mkdir(parents=True, exist_ok=True)
        files = [out / "indices.csv", out / "convergence.csv", out / "samples.parquet", out / "sensitivity.json"]
        self.indices.to_csv(files[0], index=False)
        self.convergence.to_csv(files[1], index=False)
        write_table(self.samples_table(), files[2])
        meta = {
            "method": self.method, "N": self.n_samples,
            "N_meaning": "base points (Sobol')" if self.method == "sobol" else "trajectories (Morris)",
            "evaluations": len(self.points), "seed": self.seed,
            "params": [p.describe() for p in self.parameters],
            "outcomes": {o: {"description": OUTCOMES[o][0], "unit": OUTCOMES[o][1]} if o in OUTCOMES else {}
                         for o in self.outcomes},
            "confidence_level": CONF_LEVEL, **self.settings,
            "outcomes_without_indices": self.notes, "convergence": self.stability(),
        }
        files[3].write_text(json.dumps(json_safe(meta), indent=2, allow_nan=False) + "\n")
        if plots:
            from carcell.sensitivity.plots import write_plots

            files += write_plots(self, out)
        return files


def run_sensitivity(params: Sequence[Parameter], evaluate: Callable[[Point], dict[str, float]], *,
                    method: str = "sobol", n_samples: int = 64, seed: int = 0,
                    outcomes: Sequence[str] | None = None, workers: int = 1,
                    progress: Callable[[int, int], None] | None = None, executor: Executor | None = None,
                    resamples: int = 100, num_levels: int = 4) -> SensitivityResult:
    """Sample ``params`` (absolute bounds), evaluate every point, compute the indices.

    Parameters
    ----------
    params : sequence of Parameter
        Inputs with absolute bounds or levels (:func:`carcell.sensitivity.params.resolve_parameters`).
    evaluate : callable
        ``point -> {outcome: value}``, picklable for ``workers > 1``; a point is
        ``{parameter path: value}``.
    method : {"sobol", "morris"}
    n_samples : int
        Sobol' base points (a power of 2) or Morris trajectories.
    seed : int
        Seeds the design and the bootstrap; the same seed gives the same indices for any
        ``workers`` or executor.
    outcomes : sequence of str, optional
        Outcomes to analyse (default: every key ``evaluate`` returns).

    Returns
    -------
    SensitivityResult
    """
    params = list(params)
    unit = sample_unit(method, n_samples, len(params), seed, num_levels)
    points = [{p.path: p.value(u) for p, u in zip(params, row)} for row in unit]
    results = run_points(evaluate, points, workers=workers, progress=progress, executor=executor)
    values = pd.DataFrame(results)
    names = list(outcomes) if outcomes is not None else list(values.columns)
    missing = [o for o in names if o not in values.columns]
    if missing:
        raise ScenarioError(f"--outcomes: {', '.join(missing)} not computed; known: {', '.join(values.columns)}")
    tables, convs, notes = [], [], {}
    for o in names:
        y = values[o].to_numpy(dtype=float)
        why = _undefined(y, method)
        if why is not None:
            notes[o] = why
            continue
        ind, conv = indices(method, params, unit, y, n_samples, seed=seed, resamples=resamples,
                            num_levels=num_levels)
        ind.insert(0, "outcome", o)
        conv.insert(0, "outcome", o)
        tables.append(ind)
        convs.append(conv)
    cols = ["outcome", "parameter", *(("S1", "S1_conf", "ST", "ST_conf") if method == "sobol"
                                      else ("mu", "mu_star", "mu_star_conf", "sigma", "rank"))]
    index_table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=cols)
    conv_table = pd.concat(convs, ignore_index=True) if convs else pd.DataFrame(columns=cols)
    return SensitivityResult(method, params, names, n_samples, seed, unit, points, values, index_table,
                             conv_table, {"resamples": resamples,
                                          **({"levels": num_levels} if method == "morris" else {})}, notes)


def analyse_scenario(raw: dict, params: Sequence[Parameter], *, source: str = "scenario",
                     method: str = "sobol", n_samples: int = 64, n_patients: int | None = None,
                     seed: int | None = None, landmark_days: float | None = None,
                     outcomes: Sequence[str] | None = None, workers: int = 1,
                     progress: Callable[[int, int], None] | None = None, executor: Executor | None = None,
                     resamples: int = 100, num_levels: int = 4) -> SensitivityResult:
    """Global sensitivity of a scenario's trial outcomes to model parameters and design choices.

    ``raw`` is the scenario mapping as read from its file (with any ``--set`` applied);
    ``n_patients`` and ``seed`` default to its population's. Each point is one virtual cohort
    of ``n_patients`` with ``seed`` (common random numbers); ``landmark_days`` (default 365,
    or the follow-up if shorter) is the day of ``pfs_landmark``.
    """
    from carcell.scenario.load import validate_raw

    sc = validate_raw(raw, source)
    if sc.trial.arms:
        raise ScenarioError(f"{source}: sensitivity runs a single-arm scenario; remove trial.arms "
                            f"(or analyse each arm's product as its own scenario)")
    if sc.species == "mouse":
        raise ScenarioError(f"{source}: sensitivity runs patient cohorts; species: mouse is not supported")
    names = list(outcomes) if outcomes is not None else list(DEFAULT_OUTCOMES)
    unknown = [o for o in names if o not in OUTCOMES]
    if unknown:
        raise ScenarioError(f"--outcomes: {', '.join(unknown)} unknown; known: {', '.join(OUTCOMES)}")
    n_patients = sc.population.n if n_patients is None else int(n_patients)
    seed = sc.population.seed if seed is None else int(seed)
    if n_patients < 1 or seed < 0:
        raise ScenarioError(f"-n {n_patients} / --seed {seed}: need at least 1 patient and a seed >= 0")
    follow = sc.trial.follow_up_days
    landmark = min(365.0, follow) if landmark_days is None else float(landmark_days)
    if not 0 < landmark <= follow:
        raise ScenarioError(f"--landmark-days {landmark:g}: choose a day within the follow-up (0-{follow:g})")
    check_design(method, n_samples, len(params), num_levels)
    resolved = resolve_parameters(list(params), raw, source)
    evaluate = CohortEvaluator(raw, n_patients, seed, landmark, source)
    result = run_sensitivity(resolved, evaluate, method=method, n_samples=n_samples, seed=seed, outcomes=names,
                             workers=workers, progress=progress, executor=executor, resamples=resamples,
                             num_levels=num_levels)
    from carcell.scenario.load import scenario_hash

    result.settings.update({"scenario": source, "scenario_name": sc.name, "scenario_sha256": scenario_hash(sc),
                            "n_patients": n_patients, "follow_up_days": follow, "landmark_days": landmark,
                            "common_random_numbers": "every point simulates the same patients (same seed)"})
    return result
