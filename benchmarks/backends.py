"""Integration backends side by side: NumPy, Numba (one thread and every core) and a per-patient
``scipy.integrate.solve_ivp`` loop, in the same closed-loop cohort run.

Run (from the repository root; the machine is shared, so be nice):

    nice python benchmarks/backends.py                                # N = 1,000 and 10,000, a year
    nice python benchmarks/backends.py --n 1000 --days 365 --json out/backends.json
    nice python benchmarks/backends.py --n 200 --days 60 --scipy-patients 10 --error-patients 10

What one measurement is: ``carcell.cohort.run.run_cohort`` on N patients of ``--scenario``
(default examples/axicel_lbcl.yaml: axi-cel-like product in LBCL, the ASCO 2021 toxicity
management protocol acting on twice-daily assessments for the first weeks), ``--days`` of
follow-up with daily outputs, at the scenario's solver tolerances (rtol 1e-6, atol 1e-8), one
chunk. ``simulate_batch`` inside it runs with the backend under test and is timed on its own:
integration, extinction rounds, the management loop's assessments and doses, and later
infusions; the rest of run_cohort (patient sampling, outputs, haematology) is the same for every
backend and is reported as the total. Wall and CPU seconds (CPU counts every thread).

* ``numpy``: the batched NumPy Dormand-Prince (carcell/solve/dopri5.py), one thread.
* ``numba-serial`` / ``numba``: the compiled kernel (carcell/solve/numba_kernel.py) on one
  thread / on every core. Compilation is timed once, in a warm-up run, and not counted.
* ``scipy-rk45``: ``solve_ivp(method="RK45")`` at the same rtol/atol, one patient at a time,
  under the same driver (it restarts at every output time, as the other backends do, but
  without their carried-over step size). Timed on ``--scipy-patients`` patients only; its
  patients/s is per-patient cost, which does not depend on N in a loop. The accuracy runs
  below time every method again on their few patients (``--scipy-patients 0`` skips the
  separate SciPy run and leaves its rate to those).

Accuracy: the first ``--error-patients`` patients are run by every method at production
tolerance and by a reference at rtol 1e-10, atol 1e-12 (``--reference``: ``dopri5`` is the
Numba kernel, fast; ``dop853`` is SciPy's DOP853 one patient at a time, independent of the
Dormand-Prince 5(4) code but slow). The error is measured on the raw states at every output
time: |a - b| of ln N for cell populations (the relative error of the count), and
|a - b| / max(|b|, floor) for the others (floor 1e-3 pg/mL, 1e-6 for fractions); per state,
max over patients and times. The management loop acts on these states, so a decision that falls
differently in a method and in the reference shows up as a large error, not a solver error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import warnings

import numpy as np
import scipy
from scipy.integrate import solve_ivp

import carcell.cohort.run as cohort_run
from carcell.model.rhs import rhs
from carcell.model.states import IS_LOG, STATE_NAMES
from carcell.scenario.load import load_scenario
from carcell.solve import rounds
from carcell.solve.dopri5 import STATUS_NONFINITE, STATUS_OK

_IS_LOG = np.array(IS_LOG)
FLOOR = np.array([0.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                  for log, name in zip(IS_LOG, STATE_NAMES)])
REFERENCE_TOL = ("trial.solver.rtol=1e-10", "trial.solver.atol=1e-12")


def scipy_interval(method: str):
    """An ``integrate_interval`` that calls ``solve_ivp`` for one patient after another."""

    def integrate(y0, t0, t1, p, *, rtol, atol, h=None, max_steps=100_000, status=None):
        y = y0.copy()
        status = np.zeros(len(y0), dtype=np.int8) if status is None else status.copy()
        for i in np.flatnonzero(status == STATUS_OK):
            pi = p.take(np.array([i]))
            sol = solve_ivp(lambda t, yy, pi=pi: rhs(None, yy[None, :], pi)[0], (t0, t1), y[i],
                            method=method, rtol=rtol, atol=atol)
            if sol.success and np.isfinite(sol.y[:, -1]).all():
                y[i] = sol.y[:, -1]
            else:
                status[i] = STATUS_NONFINITE
        return y, np.full(len(y0), 1e-3) if h is None else h, status

    return integrate


@contextlib.contextmanager
def backend(name: str, record: dict, keep_states: bool):
    """run_cohort with ``name`` integrating; simulate_batch's time and outputs go to ``record``."""
    original, original_integrator = cohort_run.simulate_batch, rounds._integrator

    def timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        out = rounds.simulate_batch(*args, **{**kwargs, "backend": "numpy" if name.startswith("scipy") else name})
        record["wall_s"] = record.get("wall_s", 0.0) + time.perf_counter() - wall
        record["cpu_s"] = record.get("cpu_s", 0.0) + time.process_time() - cpu
        if keep_states:
            record.setdefault("states", []).append(out[0])
        return out

    if name.startswith("scipy"):
        method = name.split("-", 1)[1].upper()
        rounds._integrator = lambda _name: scipy_interval(method)
    cohort_run.simulate_batch = timed
    try:
        yield record
    finally:
        cohort_run.simulate_batch, rounds._integrator = original, original_integrator


def run(scenario_path: str, n: int, days: float, name: str, extra: tuple[str, ...] = (),
        keep_states: bool = False) -> dict:
    scenario = load_scenario(scenario_path, [f"population.n={n}", f"trial.follow_up_days={days:g}",
                                             f"trial.solver.chunk_size={max(n, 1)}", *extra])
    record: dict = {"backend": name, "n": n}
    wall, cpu = time.perf_counter(), time.process_time()
    with backend(name, record, keep_states), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = cohort_run.run_cohort(scenario)
    record["total_wall_s"] = time.perf_counter() - wall
    record["total_cpu_s"] = time.process_time() - cpu
    record["patients_per_s"] = n / record["wall_s"]
    record["patients_per_cpu_s"] = n / record["cpu_s"]
    record["failed"] = int((result.patients["solver_status"] != "ok").sum())
    if keep_states:
        record["Y"] = np.concatenate(record.pop("states"))
    return record


def state_error(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a - b) / np.where(_IS_LOG, 1.0, np.maximum(np.abs(b), FLOOR))
    worst = np.where(np.isnan(d), np.inf, d).max(axis=(0, 1))
    return {name: float(w) for name, w in zip(STATE_NAMES, worst)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="examples/axicel_lbcl.yaml")
    ap.add_argument("--n", type=int, nargs="+", default=[1000, 10_000])
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--backends", nargs="+", default=["numpy", "numba-serial", "numba"])
    ap.add_argument("--scipy-patients", type=int, default=20)
    ap.add_argument("--error-patients", type=int, default=20)
    ap.add_argument("--reference", choices=["dopri5", "dop853"], default="dopri5")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from carcell.solve.numba_kernel import default_threads  # noqa: PLC0415 - needs the numba extra

    meta = {"python": sys.version.split()[0], "numpy": np.__version__, "scipy": scipy.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "numba_threads": default_threads(),
            "scenario": args.scenario, "days": args.days,
            "load_average_at_start": os.getloadavg()}
    import numba  # noqa: PLC0415

    meta["numba"] = numba.__version__
    # compile once, outside every timing
    wall, cpu = time.perf_counter(), time.process_time()
    run(args.scenario, 4, 2.0, "numba-serial")
    meta["numba_compile_wall_s"], meta["numba_compile_cpu_s"] = time.perf_counter() - wall, time.process_time() - cpu
    print(f"numba compile: {meta['numba_compile_wall_s']:.1f} s wall, {meta['numba_compile_cpu_s']:.1f} s CPU",
          flush=True)

    rows = []
    for n in args.n:
        for name in args.backends:
            r = run(args.scenario, n, args.days, name)
            rows.append(r)
            print(f"N={n:>6} {name:<13} simulate_batch {r['wall_s']:8.1f} s wall {r['cpu_s']:8.1f} s CPU "
                  f"-> {r['patients_per_s']:8.1f} patients/s ({r['patients_per_cpu_s']:.1f} per CPU s); "
                  f"run_cohort {r['total_wall_s']:.1f} s; failed {r['failed']}", flush=True)
    if args.scipy_patients:
        r = run(args.scenario, args.scipy_patients, args.days, "scipy-rk45")
        rows.append(r)
        print(f"N={args.scipy_patients:>6} scipy-rk45    simulate_batch {r['wall_s']:8.1f} s wall "
              f"{r['cpu_s']:8.1f} s CPU -> {r['patients_per_s']:8.2f} patients/s; failed {r['failed']}", flush=True)

    errors = {}
    if args.error_patients:
        m = args.error_patients
        ref_name = "numba-serial" if args.reference == "dopri5" else "scipy-dop853"
        ref = run(args.scenario, m, args.days, ref_name, REFERENCE_TOL, keep_states=True)["Y"]
        methods = list(dict.fromkeys([*args.backends, "scipy-rk45"]))
        for name in methods:
            r = run(args.scenario, m, args.days, name, keep_states=True)
            errors[name] = state_error(r.pop("Y"), ref)
            rows.append({**r, "for": "error"})
            cells = max(v for s, v in errors[name].items() if IS_LOG[STATE_NAMES.index(s)])
            other = max(v for s, v in errors[name].items() if not IS_LOG[STATE_NAMES.index(s)])
            print(f"error vs {args.reference} rtol 1e-10 on {m} patients: {name:<13} "
                  f"cells (ln N) {cells:.2e}, cytokines/fractions (rel) {other:.2e}; "
                  f"simulate_batch {r['cpu_s']:.1f} s CPU -> {r['patients_per_cpu_s']:.2f} patients per CPU s",
                  flush=True)
    out = {"meta": meta, "throughput": rows, "errors": errors, "reference": args.reference}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
