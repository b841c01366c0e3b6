"""Simulated CRS, neurotoxicity, drug use, onset and duration beside the pivotal trials, each on
the trial's own CRS scale.

    python validation/toxicity_vs_trials.py [--n 200] [--calibrated] [--seed 20261129 [1 2 3]] [--plot rates.png]

With several seeds it prints each seed's table, then the table of all seeds' patients pooled
(every measure, with the chance and p-value below and which targets are checks, not fitted), the
totals over seeds and the pooled count inside: the best estimate of the model's own rate, since
one seed of 400 patients moves a rate by about 0.02, enough to carry a rate near an interval's
edge in or out.
Last, how many pooled rates a model equal to the truth would leave outside: each trial's
interval misses a true rate now and then, so a perfect model need not have every rate inside.

Runs the axi-cel LBCL, tisa-cel LBCL, tisa-cel B-ALL and ide-cel myeloma examples (and the
lymphoma examples again for one centre's real-world ASTCT counts), each under
its trial's own management protocol (the targets file's protocol; ASCO 2021 where the trial's is not
published) and prints each measure with the trial's value and its 95% Clopper-Pearson
interval for the trial's size (validation/targets/toxicity.yaml). Any-grade neurotoxicity
counted with CTCAE is an upper bound for ASTCT ICANS, so it agrees when the model is below the
interval's upper limit. The parameters were fitted by validation/calibrate_toxicity.py on
other virtual patients (another seed), so this is also an out-of-sample check.

``--who-has-crs`` also prints, per trial, the medians of the patients with and without CRS
(peak CAR cells, IL-6 and IFN-gamma, and the myeloid IL-6 capacity each was drawn with), which
shows what keeps a virtual patient free of CRS (docs/toxicity.md, "Who has no CRS"), and the
share with CRS from the first assessment, the evening of infusion, with their IL-6 capacity.

Last, for the lymphoma arms, the complete and overall response rates of the patients with and
without CRS, beside a real-world study of 352 LBCL patients that found no significant difference
(validation/targets/crs_and_response.yaml): the chance that a study of its group sizes would
have found none, were the model's rates the truth (docs/toxicity.md, "CRS and response").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from toxicity_measures import (agrees, chance_of_at_least, chance_outside, discrepancy,  # noqa: E402
                               il6_fold, interval, management_sets, no_difference_check, p_value,
                               response_by_crs, simulated)

from carcell.cohort import run_cohort  # noqa: E402
from carcell.design.compile import compile_chunk  # noqa: E402
from carcell.io.yamlio import load_yaml  # noqa: E402
from carcell.scenario import load_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261129   # not the calibration's seed
#: the first assessment after infusion (days): CRS from here is CRS on the day of infusion
EVENING_OF_INFUSION = 0.5


def who_has_crs(trial: str, result) -> None:
    """Medians of the patients with and without CRS (any grade, ASTCT)."""
    p = result.patients
    capacity = compile_chunk(result.design, 0, 0, ids=p["patient_id"].to_numpy()).params.il6_max
    crs = (p["crs_max_grade"] >= 1).to_numpy()
    cols = {"peak CAR/uL": p["cmax_cells_per_ul"].to_numpy(), "IL-6 peak": p["il6_peak_pg_per_ml"].to_numpy(),
            "IFN-g peak": p["ifng_peak_pg_per_ml"].to_numpy(), "IL-6 capacity": capacity}
    print(f"  {trial}: medians of the {crs.sum()} patients with CRS / the {(~crs).sum()} without")
    for name, v in cols.items():
        with_, without = (float(np.median(v[m])) if m.any() else float("nan") for m in (crs, ~crs))
        print(f"    {name:14s} {with_:10.3g} / {without:10.3g}")
    # CRS at the first assessment, the evening of infusion: the trials' onset ranges start at day 1
    first = (p["crs_onset_day"] <= EVENING_OF_INFUSION).to_numpy()
    if first.any() and (~first).any():
        print(f"    CRS by day {EVENING_OF_INFUSION:g}: {first.mean():.2f} of patients; their IL-6 capacity "
              f"{np.median(capacity[first]):.3g}, the others' {np.median(capacity[~first]):.3g}")


def crs_and_response(patients: dict[str, pd.DataFrame], study: dict) -> tuple[float, int, int]:
    """Response with and without CRS in the lymphoma arms, beside the real-world study; returns
    the calibration objective's terms for it (validation/calibrate_toxicity.py), the checks
    passed and the checks made."""
    n1, n0, level = int(study["with_crs"]), int(study["without_crs"]), float(study["level"])
    print(f"\nResponse with and without CRS (ASTCT, any grade) in LBCL; {study['source']}: {n1} with CRS and "
          f"{n0} without,\nno significant difference. 'chance': of a study that size finding none, "
          f"were the model's rates the truth (two-sided, {level:g})\n")
    print(f"{'trial':8s} {'measure':20s} {'with CRS':>9s} {'without':>8s} {'chance':>8s}  agrees")
    deviance = 0.0
    passed = checks = 0
    for trial in study["trials"]:
        for measure, responses in study["measures"].items():
            with_, without = response_by_crs(patients[trial], responses)
            chance, term = no_difference_check(with_, without, study)
            agrees_ = "yes" if chance >= level else "NO"
            deviance += term
            passed += chance >= level
            checks += 1
            print(f"{trial:8s} {measure:20s} {with_:9.2f} {without:8.2f} {chance:8.3f}  {agrees_}")
    return deviance, passed, checks


def rate_checks(t: dict, sim: dict[str, float]):
    """Each target of one arm beside the model's value: (measure, target, model, whether it
    agrees, the interval as printed); agreement and interval are None and '' for a median."""
    size = int(t["infused"])
    for measure, target in t.items():
        if not isinstance(target, dict):
            continue
        model = sim[measure]
        ok = agrees(measure, model, target, size)
        ci = ""
        if ok is not None:
            low, high = interval(target, size)
            ci = f"<= {high:.2f}" if target.get("compare") == "upper_bound" else f"{low:.2f}-{high:.2f}"
        yield measure, target, model, ok, ci


HEADER = f"{'trial':14s} {'measure':38s} {'model':>7s} {'trial':>7s} {'95% CI':>13s}  agrees"


def row(trial: str, measure: str, model: float, value: float, ci: str, ok: bool | None) -> str:
    """One measure beside its trial, as both tables print it (under :data:`HEADER`): a rate with
    its interval and verdict, a median with the trial's value alone."""
    if ok is None:
        return f"{trial:14s} {measure:38s} {model:7.1f} {value:7.1f} {'':>13s}  {'':6s}"
    return f"{trial:14s} {measure:38s} {model:7.2f} {value:7.2f} {ci:>13s}  {'yes' if ok else 'NO':6s}"


def one_seed(targets: dict, study: dict, n: int, seed: int, calibrated: bool,
             who: bool) -> tuple[tuple[int, int, float, float, int, int], dict[str, pd.DataFrame]]:
    """Print one seed's table and CRS-and-response check; return (rates inside, rates,
    trial-measure objective, CRS-and-response objective, checks passed, checks) and each
    trial's patients."""
    print(f"{n} virtual patients per trial (seed {seed}), each trial's own management; "
          "95% CI: Clopper-Pearson for the trial size\n")
    print(f"{HEADER}  tag")
    inside = total = 0
    objective = 0.0
    patients: dict[str, pd.DataFrame] = {}
    for trial, t in targets.items():
        sets = [f"population.n={n}", f"population.seed={seed}", *management_sets(t)]
        if calibrated:
            sets.append(f"population.calibration={t['calibration']}")
        sc = load_scenario(ROOT / t["example"], sets)
        result = run_cohort(sc)
        p = result.patients.assign(il6_day_28_fold=il6_fold(np.asarray(result.times), result.trajectories["il6"]))
        patients[trial] = p
        for measure, target, model, ok, ci in rate_checks(t, simulated(p, t["crs_scale"])):
            objective += discrepancy(measure, model, target, int(t["infused"]))
            if ok is not None:
                inside += ok
                total += 1
            print(f"{row(trial, measure, model, float(target['value']), ci, ok)}  {target['tag']}")
        if who:
            who_has_crs(trial, result)
    print(f"\n{inside} of {total} rates agree with their trial. CRS on the trial's scale (ZUMA-1, KarMMa: "
          "Lee 2014; JULIET, ELIANA: Penn; the MSKCC arms, real-world: ASTCT); neurotoxicity is ASTCT ICANS.")
    both, passed, checks = crs_and_response(patients, study)
    print(f"\nThe calibration's objective on these patients (out of sample): {objective + both:.1f} "
          f"(trial measures {objective:.1f}, CRS and response {both:.1f})")
    return (inside, total, objective, both, passed, checks), patients


def pooled_measures(targets: dict, patients: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every measure of every trial on all seeds' patients together, one row each: the model's
    value, the trial's, and for a rate its 95% interval (``upper_bound``: a CTCAE count, only its
    upper limit applies), whether they agree, the chance that the trial would have left the
    model's rate outside were the model the truth and the trial's count tested against the
    model's rate (``inside`` is None for a median); ``fitted`` False for a target with
    ``fit: false`` (compared, but no term in the calibration objective)."""
    rows = []
    for trial, t in targets.items():
        size = int(t["infused"])
        for measure, target, model, ok, ci in rate_checks(t, simulated(patients[trial], t["crs_scale"])):
            r = {"trial": trial, "measure": measure, "model": model, "trial_rate": float(target["value"]),
                 "inside": ok, "interval": ci, "fitted": target.get("fit") is not False}
            if ok is not None:
                low, high = interval(target, size)
                r.update(low=low, high=high, upper_bound=target.get("compare") == "upper_bound",
                         chance_outside=chance_outside(model, target, size), p=p_value(model, target, size))
            rows.append(r)
    return pd.DataFrame(rows)


def rates_of(measures: pd.DataFrame) -> pd.DataFrame:
    """The rates of a :func:`pooled_measures` table (the medians left out)."""
    rates = measures[measures["inside"].notna()].reset_index(drop=True)
    return rates.astype({"inside": bool, "upper_bound": bool})


def pooled_table(targets: dict, patients: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every rate of every trial on all seeds' patients together (:func:`pooled_measures`)."""
    return rates_of(pooled_measures(targets, patients))


def format_pooled(measures: pd.DataFrame) -> list[str]:
    """A :func:`pooled_measures` table as printed: each :func:`row` with, for a rate, the chance
    and p, and whether the target is fitted ('check': compared, not fitted)."""
    lines = [f"{HEADER}  {'chance':>6s} {'p':>8s}  fitted"]
    for r in measures.itertuples():
        tail = f"{'':>6s} {'':>8s}" if r.inside is None else f"{r.chance_outside:6.3f} {r.p:8.2g}"
        lines.append(f"{row(r.trial, r.measure, r.model, r.trial_rate, r.interval, r.inside)}  {tail}  "
                     f"{'yes' if r.fitted else 'check'}")
    return lines


def pooled_lines(targets: dict, patients: dict[str, pd.DataFrame]) -> list[str]:
    """The table of all seeds' patients together, as printed (:func:`format_pooled`)."""
    return format_pooled(pooled_measures(targets, patients))


def pooled_summary(table: pd.DataFrame) -> tuple[int, int, list[str], list[float]]:
    """(inside, rates, the misses as 'trial measure model (interval; p)', and for each rate the
    chance that its trial would have left the model's rate outside were the model the truth) of a
    :func:`pooled_table`."""
    misses = [f"{r.trial} {r.measure} {r.model:.2f} ({r.interval}; p={r.p:.2g})"
              for r in table.itertuples() if not r.inside]
    return len(table) - len(misses), len(table), misses, table["chance_outside"].tolist()


def pooled(targets: dict, patients: dict[str, pd.DataFrame]) -> tuple[int, int, list[str], list[float]]:
    """Rates inside the trials' intervals on every seed's patients together: a better estimate
    of the model's own rate than any one seed (its sampling error shrinks with the patients);
    :func:`pooled_summary` of their :func:`pooled_table`."""
    return pooled_summary(pooled_table(targets, patients))


def rates_figure(table: pd.DataFrame, title: str):
    """Each trial's rate with its 95% interval (a bar; from 0 for an upper bound) and the model's
    rate (a dot: filled inside, open outside), one row per rate, trials in bands."""
    from matplotlib.figure import Figure

    n = len(table)
    fig = Figure(figsize=(8.0, 1.2 + 0.24 * n))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)[::-1]
    low = np.where(table["upper_bound"], 0.0, table["low"])
    ax.hlines(y, low, table["high"], color="0.55", lw=4, alpha=0.6, label="trial, 95% interval")
    ax.plot(table["trial_rate"], y, "|", color="0.2", ms=9, label="trial")
    inside = table["inside"].to_numpy()
    ax.plot(table["model"][inside], y[inside], "o", color="tab:blue", ms=5, label="model, inside")
    ax.plot(table["model"][~inside], y[~inside], "o", mfc="white", mec="tab:red", mew=1.5, ms=6,
            label="model, outside")
    ax.set_yticks(y, [f"{t}  {m}" + (" (upper bound)" if ub else "")
                      for t, m, ub in zip(table["trial"], table["measure"], table["upper_bound"])], fontsize=7)
    trials = table["trial"].to_numpy()
    starts = np.flatnonzero(np.r_[True, trials[1:] != trials[:-1]])
    for start, stop in list(zip(starts, np.r_[starts[1:], n]))[1::2]:   # every other trial shaded
        ax.axhspan(y[stop - 1] - 0.5, y[start] + 0.5, color="0.93", zorder=0)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("share of patients")
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9, x=0.02, ha="left")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--calibrated", action="store_true",
                    help="use the efficacy-calibrated populations (docs/calibration.md)")
    ap.add_argument("--seed", type=int, nargs="+", default=[SEED],
                    help=f"population seed(s) (default {SEED}, not the calibration's); with several, "
                         "each is printed and then their totals: one seed's count of rates inside "
                         "moves by several between seeds")
    ap.add_argument("--plot", metavar="PNG", help="also draw every rate (all seeds' patients together) "
                    "beside its trial's 95%% interval")
    ap.add_argument("--who-has-crs", action="store_true",
                    help="also print the medians of the patients with and without CRS")
    args = ap.parse_args()
    targets = load_yaml(ROOT / "validation" / "targets" / "toxicity.yaml")
    study = load_yaml(ROOT / "validation" / "targets" / "crs_and_response.yaml")
    rows = []
    arms: dict[str, list[pd.DataFrame]] = {trial: [] for trial in targets}
    for k, seed in enumerate(args.seed):
        if k:
            print("\n" + "-" * 100 + "\n")
        row, patients = one_seed(targets, study, args.n, seed, args.calibrated, args.who_has_crs)
        rows.append(row)
        for trial, p in patients.items():
            arms[trial].append(p)
    measures = pooled_measures(targets, {t: pd.concat(ps) for t, ps in arms.items()})
    table = rates_of(measures)
    if len(rows) > 1:
        print(f"\nAll seeds' patients together ({len(rows)} x {args.n} per trial); chance: of the trial leaving "
              "the model's rate outside its interval, were the model the truth; p: the trial's count "
              "tested against the model's rate\n")
        print("\n".join(format_pooled(measures)))
        inside, total, objective, both, passed, checks = (sum(col) for col in zip(*rows))
        pooled_inside, pooled_total, misses, chances = pooled_summary(table)
        print(f"\nAll {len(rows)} seeds ({', '.join(map(str, args.seed))}): {inside} of {total} rates inside; "
              f"CRS-and-response checks passed {passed} of {checks}; objective {objective + both:.1f} "
              f"(trial measures {objective:.1f}, CRS and response {both:.1f})")
        print(f"Pooled ({len(rows)} x {args.n} patients per trial, the model's rates with half of one seed's "
              f"sampling error): {pooled_inside} of {pooled_total} rates inside"
              + (f"; outside (p: the trial's count tested against the model's rate): {', '.join(misses)}"
                 if misses else ""))
        print(f"Were the model the truth, each trial would still leave its rate outside the interval "
              f"now and then (chance at most 0.05 each): {sum(chances):.1f} of {pooled_total} expected "
              f"outside, all inside with chance {1 - chance_of_at_least(1, chances):.2f}, and "
              f"{len(misses)} or more outside with chance {chance_of_at_least(len(misses), chances):.2f} "
              "(rates taken as independent; several share patients, docs/toxicity.md)")
    if args.plot:   # one seed or several, their patients together
        title = f"Toxicity rates, model ({len(args.seed)} x {args.n} patients per trial) against the trials"
        rates_figure(table, title).savefig(args.plot, dpi=150)
        print(f"figure written to {args.plot}")


if __name__ == "__main__":
    main()
