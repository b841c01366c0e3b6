"""Fit the toxicity parameters to CRS, neurotoxicity, drug use, onset and duration of the
pivotal trials.

    python validation/calibrate_toxicity.py [--calibrated] [--n 150] [--seeds 1] [--evals 400] [--restarts 1] [--workers 2]

Parameters (typical values, all assumptions before the fit; bounds in ``PARAMS``):

- ``physiology.myeloid.ifng_half_activation``, ``physiology.myeloid.activation_hill``,
  ``physiology.myeloid.deactivation_rate``: how readily, how steeply and how long myeloid
  cells are activated (CRS onset and duration);
- ``physiology.myeloid.damp_weight``, ``physiology.myeloid.damp_half_activation``: how strongly
  and from how much killing debris of dying tumour cells (DAMPs, pyroptosis; Santurio 2025)
  activates myeloid cells: killing starts at infusion, before expansion, so this sets how early
  CRS can begin and how it scales with tumour burden;
- ``toxicity.variability.il6_max``: the patient-to-patient spread of myeloid IL-6 capacity;
- ``toxicity.signs.fever_il6_half``: fever threshold (CRS any grade);
- ``toxicity.signs.leak_il6_half`` and its patient-to-patient spread
  ``toxicity.variability.leak_il6_half``: hypotension and hypoxia (CRS grade >= 2-3, drug use);
- ``toxicity.signs.leak_endothelial_half``: how much endothelial activation adds to the leak,
  which tocilizumab does not block (CRS that outlasts it: tocilizumab response);
- ``toxicity.signs.several_vasopressors_level``: the leak at which hypotension needs several
  vasopressors (ELIANA's high-dose vasopressors, Levine 2021 Table 5);
- ``costim.CD28.multipliers.ifng_secretion``: how much more cytokine a CD28 CAR T cell releases
  per engaged cell than a 4-1BB one (the reference, 1). The direction is sourced (Cappell &
  Kochenderfer 2021, doi:10.1038/s41571-021-00530-z; Kawalekar 2016); its size is what separates
  axi-cel (ZUMA-1) from tisa-cel and ide-cel (JULIET, ELIANA, KarMMa), so it is fitted with them;
- ``indications.LBCL.patients.inflammation_correlation``: how strongly host systemic
  inflammation ties a lymphoma patient's myeloid IL-6 capacity to poor CAR expansion (searched
  on its own scale, -0.95 to 0; the others on their logarithms). It decides whether the patients
  without CRS are the ones whose CAR T cells did not expand (docs/toxicity.md, "Host inflammation");
- ``toxicity.endothelium.half_activation``, ``toxicity.endothelium.injury_half`` and
  ``toxicity.endothelium.hill`` (how much serum IL-6, or killing of neurovascular cells carrying
  the target, the endothelium needs), ``toxicity.signs.icans_half``, the spread
  ``toxicity.variability.icans_half`` and the steepness ``toxicity.signs.icans_hill`` of
  encephalopathy against endothelial activation: ICANS any grade and grade >= 3 (the steepness
  decides how many patients stop at grade 1-2).

Fitted only when ``--params`` names it: ``toxicity.drugs.tocilizumab.il6_receptor_clearance``, the
share of IL-6 removal that goes through its receptor, which sets how far serum IL-6 rises under
tocilizumab (direction sourced, size assumed; docs/toxicity.md, "Tocilizumab's IL-6 surge, freed").

Targets (validation/targets/toxicity.yaml): ZUMA-1, JULIET, ELIANA and KarMMa, and one centre's
real-world ASTCT counts of any-grade CRS and ICANS with axi-cel and tisa-cel (Pennisi 2020, the
MSKCC arms), each run with its example scenario under its own management protocol (``protocol`` in the targets file; ASCO 2021 where the
trial's is not published); for ZUMA-1 and KarMMa also the share of patients whose CRS came
with a fever (their labels; added after the last fit, docs/toxicity.md "ZUMA-1's CRS without
fever"); for ELIANA also the pace of severe CRS (CRS onset to the first tocilizumab, duration of
grade 3-4 CRS; docs/toxicity.md "The pace of severe CRS"); a target marked ``fit: false``
(ZUMA-1's any-grade CRS, which counts afebrile CRS) is reported but adds no term. Objective (validation/toxicity_measures.py):
binomial deviance of each rate for the trial's size, CRS on the trial's own scale; CTCAE
any-grade neurotoxicity only as an upper bound; squared error of median onset and duration
in units of 1 and 1.5 days; for the lymphoma arms (ZUMA-1, JULIET), the real-world finding of no
significant difference in complete and overall response between patients with and without CRS
(validation/targets/crs_and_response.yaml), as 2 x log(0.95 / chance), the chance a study of its
group sizes would have found none were the model's rates the truth. Method: Nelder-Mead on the logarithms of the parameters (clipped
to the bounds), with common random numbers (the same virtual patients at every evaluation),
restarted ``--restarts`` times from the best point with a fresh, smaller simplex (a collapsed
simplex is Nelder-Mead's usual way to stall in many dimensions).
``--params`` fits a subset (the others stay at the data files' values), e.g. a parameter added
after the last full fit.
The script prints the fit beside the data and the values to write into the data files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

sys.path.insert(0, str(Path(__file__).parent))
from toxicity_measures import (discrepancy, management_sets, no_difference_check,  # noqa: E402
                               response_by_crs, simulated)

from carcell.cohort import run_cohort  # noqa: E402
from carcell.io.yamlio import load_yaml  # noqa: E402
from carcell.knowledge import load_knowledge  # noqa: E402
from carcell.knowledge.store import DATA_DIR, knowledge_file  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402
from carcell.solve.workers import process_pool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: knowledge path -> (lower, upper) bound
PARAMS = {
    "physiology.myeloid.ifng_half_activation": (5.0, 5000.0),
    "physiology.myeloid.deactivation_rate": (0.1, 3.0),
    "physiology.myeloid.activation_hill": (0.5, 3.0),
    "physiology.myeloid.damp_weight": (0.1, 3.0),
    "physiology.myeloid.damp_half_activation": (1e8, 1e12),
    "toxicity.signs.fever_il6_half": (5.0, 5000.0),
    "toxicity.signs.leak_il6_half": (50.0, 5e4),
    "toxicity.variability.leak_il6_half": (0.1, 2.0),
    "toxicity.signs.leak_endothelial_half": (1e-3, 100.0),
    "toxicity.signs.several_vasopressors_level": (0.56, 0.99),   # above the one-vasopressor level, 0.55
    "toxicity.variability.il6_max": (0.1, 1.5),
    "toxicity.endothelium.half_activation": (50.0, 1e5),
    "toxicity.endothelium.injury_half": (0.01, 1e9),
    "toxicity.endothelium.hill": (1.0, 6.0),
    "toxicity.signs.icans_half": (0.01, 0.99),
    "toxicity.signs.icans_hill": (0.5, 6.0),
    "toxicity.variability.icans_half": (0.1, 2.0),
    "costim.CD28.multipliers.ifng_secretion": (1.0, 10.0),
    "indications.LBCL.patients.inflammation_correlation": (-0.95, 0.0),
    "toxicity.drugs.tocilizumab.il6_receptor_clearance": (0.05, 0.9),
}
#: parameters fitted only when --params names them (not in a default, full fit)
OPTIONAL = {"toxicity.drugs.tocilizumab.il6_receptor_clearance"}
#: parameters searched on their own scale rather than their logarithm (a correlation)
LINEAR = {"indications.LBCL.patients.inflammation_correlation"}


def to_search(path: str, value: float) -> float:
    """A parameter's coordinate in the search: its logarithm, or itself (:data:`LINEAR`)."""
    return float(value) if path in LINEAR else float(np.log(value))


def from_search(path: str, x: float) -> float:
    return float(x) if path in LINEAR else float(np.exp(x))


def set_params(values: dict[str, float]) -> None:
    """Write values into the cached knowledge tree the next runs read."""
    k = load_knowledge(False)
    for path, v in values.items():
        k.node(path)["value"] = float(v)


#: the fit summary in a fitted parameter's note, which --write brings up to date
FIT_SUMMARY = r"\d+ evaluations, objective [0-9.]+ -> [0-9.]+, [^;]*;"


def write_fit(values: dict[str, float], summary: str, root: Path = DATA_DIR) -> None:
    """Write fitted values into the knowledge files under ``root``, keeping their layout and
    comments: each node's ``value:`` line is replaced and the fit summary in its note
    ("N evaluations, objective A -> B, ...;") is brought up to date. A block entry fitted for the
    first time (``source: assumption``, no summary yet) becomes ``source: fit``, its note saying
    who fitted it, the summary, and the prior value with the old note."""
    for path, value in values.items():
        file, keys = knowledge_file(path, root)
        lines = file.read_text().splitlines(keepends=True)
        at, indent = -1, ""
        for key in keys:   # each key is the next line at this depth after the previous one
            at = next((i for i in range(at + 1, len(lines)) if lines[i].startswith(f"{indent}{key}:")), None)
            if at is None:
                raise SystemExit(f"{file}: {path} not found")
            indent += "  "
        # the node is a block (value:, note: lines below it) or a flow mapping on its own line
        if "{value:" in lines[at]:
            block = [at]
        else:
            end = next((i for i in range(at + 1, len(lines)) if not lines[i].startswith(indent)), len(lines))
            block = list(range(at + 1, end))
        if not any(re.search(FIT_SUMMARY, lines[i]) for i in block):
            _first_fit(lines, block, file, path, summary)
        written = summarised = 0
        for i in block:
            lines[i], n = re.subn(r"((?:^\s+|\{)value: )[^,\n]+", rf"\g<1>{value:.4g}", lines[i])
            written += n
            lines[i], n = re.subn(FIT_SUMMARY, summary.replace("\\", "\\\\") + ";", lines[i])
            summarised += n
        if written != 1 or summarised != 1:
            raise SystemExit(f"{file}: {path}: expected one value and one note with a fit summary, "
                             f"found {written} and {summarised}")
        file.write_text("".join(lines))
        print(f"  wrote {path} = {value:.4g} into {file.relative_to(root)}")


def _first_fit(lines: list[str], block: list[int], file: Path, path: str, summary: str) -> None:
    """Turn a block entry fitted for the first time into a fitted one, in place: ``source: fit``
    and a note that names this script, gives the fit's summary and keeps the prior (with its
    source, where that was not an assumption)."""
    source = [i for i in block if re.match(r"\s+source: ", lines[i])]
    note = [i for i in block if re.match(r"\s+note: ", lines[i])]
    value = [i for i in block if re.match(r"\s+value: ", lines[i])]
    if len(source) != 1 or len(note) != 1 or len(value) != 1:
        raise SystemExit(f"{file}: {path}: has no fit summary in its note and is not a block entry "
                         "(value:, source:, note:) that a first fit could take over")
    prior = lines[value[0]].split("value:", 1)[1].strip()
    was = lines[source[0]].split("source:", 1)[1].strip()
    if was != "assumption":
        prior = f"{prior} (source: {was})"
    text = lines[note[0]].split("note:", 1)[1].strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    text = text.replace('"', "'")
    lead = lines[note[0]].split("note:", 1)[0]
    lines[source[0]] = lines[source[0]].split("source:", 1)[0] + "source: fit\n"
    lines[note[0]] = (f'{lead}note: "fitted by validation/calibrate_toxicity.py (its docstring gives the method '
                      f'and targets); {summary}; prior was {prior}: {text}"\n')


def trial_measures(args: tuple[dict, dict[str, float], int, bool, int, dict | None]) -> dict[str, float]:
    """One trial's measures: ``n`` patients from each of ``seeds`` seeds (the example's own seed
    and the next ones), pooled; with ``study`` (validation/targets/crs_and_response.yaml, for
    the trials it names) also the response rates with and without CRS (``<measure>_with_crs``,
    ``<measure>_without_crs``)."""
    trial, values, n, calibrated, seeds, study = args
    set_params(values)
    sets = [f"population.n={n}", *management_sets(trial)]
    if calibrated:
        sets.append(f"population.calibration={trial['calibration']}")
    first = load_scenario(ROOT / trial["example"], sets).population.seed
    patients = [run_cohort(load_scenario(ROOT / trial["example"], [*sets, f"population.seed={first + k}"])).patients
                for k in range(seeds)]
    pooled = pd.concat(patients, ignore_index=True)
    out = simulated(pooled, trial["crs_scale"])
    for measure, responses in (study or {}).get("measures", {}).items():
        out[f"{measure}_with_crs"], out[f"{measure}_without_crs"] = response_by_crs(pooled, responses)
    return out


def objective_terms(targets: dict, sims: list[dict], study: dict) -> list[tuple[str, str, float, float]]:
    """(trial, measure, model value, deviance) of each term: the trials' rates and medians, then
    for each lymphoma arm the response difference by CRS (model value: with minus without)
    against the real-world study's finding of no significant difference."""
    out = []
    for (name, t), sim in zip(targets.items(), sims):
        for m, target in t.items():
            if isinstance(target, dict) and m in sim:
                out.append((name, m, sim[m], discrepancy(m, sim[m], target, int(t["infused"]))))
        if name in study["trials"]:
            for m in study["measures"]:
                a, b = sim[f"{m}_with_crs"], sim[f"{m}_without_crs"]
                out.append((name, f"{m}_difference_by_crs", a - b, no_difference_check(a, b, study)[1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150, help="virtual patients per trial")
    ap.add_argument("--evals", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--restarts", type=int, default=1, help="Nelder-Mead restarts from the best point")
    ap.add_argument("--seeds", type=int, default=1,
                    help="pool --n patients from this many seeds per trial: the objective's sampling noise "
                         "is as large as a fit's gains at one seed of 200 (docs/toxicity.md)")
    ap.add_argument("--calibrated", action="store_true",
                    help="fit on the efficacy-calibrated populations (targets file: calibration per trial)")
    ap.add_argument("--start", nargs="*", default=[], metavar="PATH=VALUE",
                    help="start the search here instead of at the data files' values")
    ap.add_argument("--params", nargs="+", metavar="PATH", default=None,
                    help="fit only these parameters (default: all of PARAMS but OPTIONAL)")
    ap.add_argument("--write", action="store_true",
                    help="write the best values into the data files (their notes' fit summary too)")
    args = ap.parse_args()
    targets = load_yaml(ROOT / "validation" / "targets" / "toxicity.yaml")
    study = load_yaml(ROOT / "validation" / "targets" / "crs_and_response.yaml")
    k = load_knowledge(False)
    names = [p for p in PARAMS if p not in OPTIONAL] if args.params is None else args.params
    unknown = set(names) - set(PARAMS)
    if unknown:
        ap.error(f"--params: {', '.join(sorted(unknown))} is not a calibrated parameter; use any of {', '.join(PARAMS)}")
    lo = np.array([to_search(p, PARAMS[p][0]) for p in names])
    hi = np.array([to_search(p, PARAMS[p][1]) for p in names])
    given = dict(a.split("=", 1) for a in args.start)
    unknown = set(given) - set(names)
    if unknown:
        ap.error(f"--start: {', '.join(sorted(unknown))} is not a calibrated parameter; use one of {', '.join(names)}")
    start = np.array([to_search(p, float(given.get(p, k.value(p)))) for p in names])
    history: list[tuple[float, np.ndarray]] = []

    with process_pool(args.workers) as pool:
        def run(x: np.ndarray) -> list[dict]:
            values = {p: from_search(p, v) for p, v in zip(names, np.clip(x, lo, hi))}
            return list(pool.map(trial_measures, [(t, values, args.n, args.calibrated, args.seeds,
                                                   study if name in study["trials"] else None)
                                                  for name, t in targets.items()]))

        def objective(x: np.ndarray) -> float:
            terms = objective_terms(targets, run(x), study)
            total = sum(t[3] for t in terms) + 100.0 * float(np.sum(np.maximum(0, lo - x) + np.maximum(0, x - hi)))
            history.append((total, x.copy()))
            print(f"  eval {len(history):3d}: {total:8.2f}  " + "  ".join(
                f"{p.split('.')[-1]}={from_search(p, v):.3g}" for p, v in zip(names, np.clip(x, lo, hi))), flush=True)
            return total

        # first simplex: each parameter x 2.5 (a correlation 0.4 lower); restarts: x 1.6 (0.2)
        linear = np.array([p in LINEAR for p in names])
        x, step = start, np.where(linear, -0.4, np.log(2.5))
        for attempt in range(1 + args.restarts):
            simplex = np.vstack([x] + [x + step[i] * np.eye(len(x))[i] for i in range(len(x))])
            res = minimize(objective, x, method="Nelder-Mead",
                           options={"maxfev": args.evals // (1 + args.restarts), "xatol": 0.02, "fatol": 0.5,
                                    "initial_simplex": simplex})
            x, step = res.x, np.where(linear, -0.2, np.log(1.6))
            print(f"  Nelder-Mead run {attempt + 1}: {res.fun:.2f} ({res.message})", flush=True)
        best = np.clip(res.x, lo, hi)
        terms = objective_terms(targets, run(best), study)
    print(f"\nobjective {history[0][0]:.1f} at the start, {res.fun:.1f} at the best of {len(history)} evaluations"
          f" ({'converged' if res.success else 'stopped: ' + res.message})\n")
    print(f"{'trial':14s} {'measure':36s} {'model':>7s} {'trial':>7s} {'term':>7s}")
    for name, m, v, d in terms:
        data = float(targets[name][m]["value"]) if m in targets[name] else 0.0   # difference by CRS: none
        print(f"{name:14s} {m:36s} {v:7.2f} {data:7.2f} {d:7.2f}")
    fitted = {p: from_search(p, v) for p, v in zip(names, best)}
    print("\nvalues for the data files (source: fit):")
    for p, v0 in zip(names, start):
        print(f"  {p}: {fitted[p]:.4g}   (was {from_search(p, v0):.4g})")
    if args.write:
        write_fit(fitted,
                  f"{len(history)} evaluations, objective {history[0][0]:.0f} -> {res.fun:.0f}, "
                  f"{'converged' if res.success else 'not converged'}")


if __name__ == "__main__":
    main()
