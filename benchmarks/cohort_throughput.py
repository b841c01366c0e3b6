"""Cohort throughput: the batched NumPy integrator vs a per-patient ``solve_ivp`` loop, same model.

Run (from the repository root):

    python benchmarks/cohort_throughput.py                          # N = 1,000 and 10,000
    python benchmarks/cohort_throughput.py --n 1000 --json bench.json
    python benchmarks/cohort_throughput.py --n 10000 --days 365 --rtol 1e-6 --ref-patients 50

What is measured, for each N:

* batched: ``carcell.solve.rounds.simulate_batch`` on N patients of the scenario (default
  B-ALL, 4-1BB CAR, 3.1e6 cells/kg, population seed 1), ``--days`` of follow-up with daily
  outputs and clinical rounds on days 0, 7, 14, 21, 28, 90, 180, 270, 365 (those within the
  follow-up, plus its last day), at ``--rtol`` / ``--atol``. Wall time of that call only
  (patient sampling is timed separately and not counted).
* per-patient loop: ``simulate_reference(method="RK45")`` (SciPy ``solve_ivp``, one patient
  at a time, the same rounds, the same rtol/atol), timed on the first ``--ref-patients``
  patients only. Its rate and the time it would take for all N patients are EXTRAPOLATED from
  that subset (per-patient cost is independent of N in a loop).
* speed-up: batched patients/s divided by the loop's patients/s.
* max relative difference between batched and loop on the subset, at every output time and
  state: for log-cell states |a - b| (difference of ln N = relative difference of the count);
  for cytokines |a - b| / max(|b|, 1e-3 pg/mL); for the macrophage fraction
  |a - b| / max(|b|, 1e-6). At rtol 1e-6 both solvers carry their own ~1e-6..1e-5 errors,
  so this number shows agreement, not the error of either.

The batched run is single-process (NumPy vectorised over patients); nothing is parallelised.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import scipy

from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import load_knowledge
from carcell.model.states import IS_LOG, STATE_NAMES
from carcell.scenario.load import validate_raw
from carcell.solve.dopri5 import STATUS_NAMES
from carcell.solve.rounds import simulate_batch, simulate_reference

DEFAULT_ROUNDS = (0, 7, 14, 21, 28, 90, 180, 270, 365)
_IS_LOG = np.array(IS_LOG)
FLOOR = np.array([0.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                  for log, name in zip(IS_LOG, STATE_NAMES)])


def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise difference measure (see the module docstring); NaN counts as +inf."""
    d = np.abs(a - b) / np.where(_IS_LOG, 1.0, np.maximum(np.abs(b), FLOOR))
    return np.where(np.isnan(d), np.inf, d)


def schedule(days: int) -> tuple[np.ndarray, np.ndarray]:
    times = np.arange(0.0, days + 1.0)
    rounds = sorted({float(r) for r in DEFAULT_ROUNDS if r <= days} | {float(days)})
    return times, np.array(rounds)


def bench_one(n: int, a: argparse.Namespace, knowledge) -> dict:
    sc = validate_raw({
        "indication": {"disease": a.disease},
        "product": {"car": {"costim": a.costim}, "dose": {"cells_per_kg": a.cells_per_kg}},
        "population": {"n": n, "seed": a.seed},
    })
    times, rounds = schedule(a.days)
    t0 = time.perf_counter()
    c = compile_chunk(resolve_design(sc, knowledge), 0, n)
    t_compile = time.perf_counter() - t0

    t0 = time.perf_counter()
    Y, status, _ = simulate_batch(c.params, c.y0, times, rounds, rtol=a.rtol, atol=a.atol)
    t_batch = time.perf_counter() - t0

    m = min(a.ref_patients, n)
    idx = np.arange(m)
    t0 = time.perf_counter()
    R = simulate_reference(c.params.take(idx), c.y0[idx], times, rounds, method="RK45",
                           rtol=a.rtol, atol=a.atol)
    t_ref = time.perf_counter() - t0

    ok = status[idx] == 0  # compare only patients both solvers finished
    d = rel_diff(Y[idx][ok], R[ok])
    worst_state = {name: float(w) for name, w in zip(STATE_NAMES, d.max(axis=(0, 1)))} if ok.any() else {}
    batch_rate, ref_rate = n / t_batch, m / t_ref
    failures = {STATUS_NAMES[int(s)]: int((status == s).sum()) for s in np.unique(status) if s != 0}
    return {
        "n": n,
        "days": a.days,
        "rounds": rounds.tolist(),
        "rtol": a.rtol,
        "atol": a.atol,
        "compile_s": t_compile,
        "batched_s": t_batch,
        "batched_patients_per_s": batch_rate,
        "loop_method": "solve_ivp RK45",
        "loop_timed_patients": m,
        "loop_timed_s": t_ref,
        "loop_patients_per_s_extrapolated": ref_rate,
        "loop_s_for_n_extrapolated": n / ref_rate,
        "speedup": batch_rate / ref_rate,
        "max_rel_diff": max(worst_state.values()) if worst_state else None,
        "max_rel_diff_per_state": worst_state,
        "max_rel_diff_patients": int(ok.sum()),
        "reference_nonfinite_patients": int((~np.isfinite(R).all(axis=(1, 2))).sum()),
        "solver_failures": failures,
    }


def print_table(rows: list[dict]) -> None:
    head = ("N", "batched s", "batched pat/s", "loop pat/s*", "loop s for N*", "speed-up",
            "max rel diff", "failures")
    body = [(
        f"{r['n']:,}", f"{r['batched_s']:.1f}", f"{r['batched_patients_per_s']:,.0f}",
        f"{r['loop_patients_per_s_extrapolated']:.2f}", f"{r['loop_s_for_n_extrapolated']:,.0f}",
        f"{r['speedup']:,.0f}x",
        "n/a" if r["max_rel_diff"] is None else f"{r['max_rel_diff']:.1e}",
        str(sum(r["solver_failures"].values())),
    ) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = "  ".join(h.rjust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for b in body:
        print("  ".join(x.rjust(w) for x, w in zip(b, widths)))
    r = rows[0]
    print(f"* per-patient solve_ivp (RK45) loop timed on the first {r['loop_timed_patients']} patients "
          f"and extrapolated to N. Both at rtol {r['rtol']:g}, atol {r['atol']:g}; {r['days']} days, "
          f"daily outputs, rounds on days {', '.join(f'{x:g}' for x in r['rounds'])}.")
    print("  max rel diff: batched vs loop on those patients (ln N absolute for cells; cytokines "
          "relative, floor 1e-3 pg/mL; macrophage fraction floor 1e-6).")
    for r in rows:
        worst = max(r["max_rel_diff_per_state"], key=r["max_rel_diff_per_state"].get, default=None)
        if worst:
            print(f"  N={r['n']:,}: largest difference in {worst}; solver failures {r['solver_failures'] or 'none'}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10000], help="cohort sizes")
    ap.add_argument("--days", type=int, default=365, help="follow-up, days (daily outputs)")
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--ref-patients", type=int, default=50,
                    help="patients the solve_ivp loop is timed on (its rate is extrapolated)")
    ap.add_argument("--disease", default="B-ALL")
    ap.add_argument("--costim", default="4-1BB")
    ap.add_argument("--cells-per-kg", type=float, default=3.1e6)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None, help="write the results as JSON to this path")
    a = ap.parse_args(argv)

    knowledge = load_knowledge()
    rows = []
    for n in a.n:
        print(f"running N={n:,} ...", file=sys.stderr, flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rows.append(bench_one(n, a, knowledge))
    print(f"scenario: {a.disease}, {a.costim} CAR, {a.cells_per_kg:g} cells/kg, seed {a.seed}; "
          f"Python {platform.python_version()}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    print_table(rows)
    if a.json:
        meta = {"scenario": {"disease": a.disease, "costim": a.costim, "cells_per_kg": a.cells_per_kg,
                             "seed": a.seed},
                "python": platform.python_version(), "numpy": np.__version__,
                "scipy": scipy.__version__, "cpus": os.cpu_count(), "machine": platform.machine()}
        with open(a.json, "w") as fh:
            json.dump({"meta": meta, "results": rows}, fh, indent=2)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
