"""carcell against libRoadRunner and a per-patient SciPy loop, at equal accuracy, in one run.

Run (from the repository root; the machine is shared, so be nice):

    nice python benchmarks/vs_roadrunner.py --quick                  # 1-2 minutes
    nice python benchmarks/vs_roadrunner.py                          # about 6 minutes
    nice python benchmarks/vs_roadrunner.py --n 1000 --target 1e-5 --json runs/vs_rr.json

The model: patients of ``--scenario`` (default examples/axicel_lbcl.yaml with
``regimen.protocol=none``) over ``--days`` (365) with daily outputs, as the autonomous ODE
that the SBML export holds: no toxicity management and no extinction after day 0 (rounds only
at day 0). carcell integrates its own right-hand side; libRoadRunner integrates the SBML
export of the same patients (one model compiled once per process, each patient's parameters
and initial states set in one call, ``carcell.interop.rr.set_values``).

Methods (``rtol`` swept; ``atol`` as each method's convention):

* ``carcell-numba``: ``simulate_batch(backend="numba-serial")``, the compiled batched
  Dormand-Prince 5(4) on one thread; atol = rtol/100 on every state (carcell's convention,
  the default scenario has rtol 1e-6, atol 1e-8; cell states are ln counts, so their atol
  is a relative tolerance on the count).
* ``carcell-numpy``: the same with the NumPy batched Dormand-Prince (fewer patients).
* ``rr-cvode``: libRoadRunner's CVODE (BDF, its default) with its own absolute tolerance
  convention: the scalar default 1e-12, which libRoadRunner scales by each state's initial
  value. At rtol 1e-6 this is libRoadRunner's DEFAULT, as it comes.
* ``rr-cvode-perstate``: CVODE with atol = rtol/100 set on every state
  (``setIndividualTolerance``), carcell's convention.
* ``scipy-rk45`` / ``scipy-lsoda``: ``scipy.integrate.solve_ivp`` one patient at a time on
  ``carcell.model.rhs`` (state reshaped to (1, 21)), atol = rtol/100; on a few patients only
  (seconds per patient).

Reference: carcell's Dormand-Prince (Numba) at rtol 1e-10, atol 1e-12, checked against
libRoadRunner's CVODE at rtol 1e-12 with per-state absolute tolerances 1e-14 on a few
patients (the two are independent codes and must agree to ~1e-8).

Error: on the first ``--error-patients`` patients, at every daily output, of
  the cell counts (every ln-count state where the reference holds at least one cell):
  |N / N_ref - 1|; and the serum cytokines IL-15, IFN-gamma, IL-6 where the reference is at
  least CYTOKINE_FLOOR_PG_PER_ML: |c / c_ref - 1|.
"max" is the largest over patients, days and quantities; "median" the median over patients of
each patient's largest. The error is taken from the very runs that are timed.

Speed: patients per CPU second of one process (= per core) on ``--n`` patients, best of
``--repeats``; SciPy's on its few patients. Equal accuracy: each method at the fastest swept
rtol whose max error is <= ``--target``. Scaling: libRoadRunner and carcell-numba at that rtol
in 1 and in 2 spawned processes (model loaded, kernel warmed before the clock starts), each
process half of the patients, wall-clock patients/s. Each method gets as many patients as it
integrates in ``--scaling-seconds`` of one core (from its measured rate), so that both run
about equally long and a few seconds of someone else's load weigh the same on both.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from carcell.cohort.run import later_infusions, scenario_design
from carcell.errors import CarcellError
from carcell.interop.rr import load_roadrunner
from carcell.interop.sbml_export import STATE_IDS, build_sbml, patient_model
from carcell.knowledge import load_knowledge
from carcell.model.rhs import rhs
from carcell.model.states import IS_LOG, PARAMETER_NAMES, STATE_NAMES, Params
from carcell.scenario.load import load_scenario
from carcell.solve.rounds import apply_extinction, available_backends, simulate_batch

#: below this a cytokine's relative error is not counted: a benchmark setting, not a model
#: number, far below any concentration with an effect in the model; it keeps IFN-gamma's 0/0 at
#: day 0 out of the measure
CYTOKINE_FLOOR_PG_PER_ML = 1e-2
CYTOKINES = ("il15", "ifng", "il6")
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12
CHECK_RTOL, CHECK_ATOL = 1e-12, 1e-14
ATOL_PER_RTOL = 1e-2             # carcell's convention: atol = rtol / 100
MAX_SCALING_PATIENTS = 4000
WORKER_TIMEOUT_S = 1800.0
RATIO_TARGETS = (1e-3, 1e-4, 1e-5)
_LOG = np.flatnonzero(IS_LOG)
_CYT = np.array([STATE_NAMES.index(c) for c in CYTOKINES])
_NAMES = [STATE_NAMES[i] for i in _LOG] + list(CYTOKINES)


@dataclass
class Cohort:
    """Parameters and initial states (after the day-0 extinction check) of the patients."""

    values: np.ndarray          # (n, n_params)
    y0: np.ndarray              # (n, N_STATES)
    sbml: str                   # the export of patient 0: structure shared by every patient


def make_cohort(scenario_path: str, overrides: list[str], n: int) -> Cohort:
    scenario = load_scenario(scenario_path, overrides)
    design, compile_ = scenario_design(scenario, load_knowledge())
    c = compile_(design, 0, n)
    if later_infusions(design, c):
        raise SystemExit(f"error: {scenario_path}: regimen.infusion_days has doses after day 0; the benchmark "
                         "compares one infusion: choose a single-dose scenario")
    values, y0 = c.params.values.copy(), c.y0.copy()
    apply_extinction(y0, values)
    return Cohort(values, y0, build_sbml(patient_model(c, 0, design=design), check=False))


# -- error measure -------------------------------------------------------------------------------
def errors(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative error per patient, day and quantity (NaN where not counted), shape (n, T, q)."""
    ln, ln_ref = y[:, :, _LOG], ref[:, :, _LOG]
    cells = np.where(ln_ref >= 0.0, np.abs(np.expm1(ln - ln_ref)), np.nan)
    c, c_ref = y[:, :, _CYT], ref[:, :, _CYT]
    cyt = np.where(c_ref >= CYTOKINE_FLOOR_PG_PER_ML, np.abs(c - c_ref) / np.maximum(c_ref, 1e-300), np.nan)
    err = np.concatenate([cells, cyt], axis=2)
    return np.where(np.isnan(err) & ~np.isfinite(np.concatenate([ln, c], axis=2)), np.inf, err)


def summarise(err: np.ndarray) -> dict:
    """Max (with where it happened) and median over patients of each patient's max."""
    per_patient = np.nanmax(err.reshape(len(err), -1), axis=1)
    i, t, q = np.unravel_index(np.nanargmax(err), err.shape)
    return {"max": float(err[i, t, q]), "median": float(np.median(per_patient)),
            "worst": f"{_NAMES[q]}, patient {i}, day {t}"}


# -- the methods: each integrates patients rows of the cohort over times -----------------------
def carcell_runner(backend: str) -> Callable:
    def run(cohort: Cohort, rows: np.ndarray, times: np.ndarray, rtol: float) -> np.ndarray:
        y, _, _ = simulate_batch(Params(cohort.values[rows]), cohort.y0[rows], times, np.array([0.0]),
                                 rtol=rtol, atol=rtol * ATOL_PER_RTOL, max_steps=1_000_000, backend=backend)
        return y
    return run


class RoadRunnerLoop:
    """One compiled libRoadRunner model; patients one after another, each set in one call.

    ``optimised=False`` compiles as carcell's ``load_roadrunner`` does by default (LLJIT, no
    optimisation: half the load time); ``True`` with libRoadRunner's own default settings."""

    def __init__(self, sbml: str, *, optimised: bool = False):
        t0 = time.perf_counter()
        self.model = load_roadrunner(sbml, fast_compile=not optimised)
        self.load_s = time.perf_counter() - t0
        ids = list(self.model.model.getGlobalParameterIds())
        where = {sid: i for i, sid in enumerate(ids)}
        self.idx = np.array([where[s] for s in (*PARAMETER_NAMES, *STATE_IDS)], dtype=np.int32)
        self.model.timeCourseSelections = ["time", *STATE_IDS]

    def tolerances(self, rtol: float, atol: float | None) -> None:
        """``atol=None``: libRoadRunner's own default absolute tolerance, as it comes."""
        integ = self.model.integrator
        integ.resetSettings()
        integ.maximum_num_steps = 1_000_000
        integ.relative_tolerance = rtol
        if atol is not None:
            integ.absolute_tolerance = atol
            for sid in STATE_IDS:
                integ.setIndividualTolerance(sid, atol)

    def run(self, cohort: Cohort, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
        out = np.empty((rows.size, times.size, len(STATE_IDS)))
        m = self.model
        for k, i in enumerate(rows):
            m.resetAll()
            m.model.setGlobalParameterValues(self.idx, np.concatenate([cohort.values[i], cohort.y0[i]]))
            try:
                out[k] = np.asarray(m.simulate(0.0, float(times[-1]), int(times.size)))[:, 1:]
            except RuntimeError:
                out[k] = np.nan
        return out


def scipy_runner(method: str) -> Callable:
    def run(cohort: Cohort, rows: np.ndarray, times: np.ndarray, rtol: float) -> np.ndarray:
        out = np.full((rows.size, times.size, len(STATE_IDS)), np.nan)
        for k, i in enumerate(rows):
            p = Params(cohort.values[i:i + 1])
            sol = solve_ivp(lambda t, y, p=p: rhs(None, y[None, :], p)[0], (times[0], times[-1]), cohort.y0[i],
                            method=method, rtol=rtol, atol=rtol * ATOL_PER_RTOL, t_eval=times)
            if sol.success:
                out[k] = sol.y.T
        return out
    return run


def timed(fn: Callable, repeats: int) -> tuple[np.ndarray, float, float]:
    """Result, best CPU seconds and best wall seconds of ``repeats`` calls."""
    best_cpu = best_wall = np.inf
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        y = fn()
        best_cpu, best_wall = min(best_cpu, time.process_time() - c0), min(best_wall, time.perf_counter() - w0)
    return y, best_cpu, best_wall


# -- scaling over processes -----------------------------------------------------------------------
def _worker(kind: str, rtol: float, atol: float | None, cohort: Cohort, rows: np.ndarray, times: np.ndarray,
            repeats: int, barrier, results) -> None:
    """One process: load/warm, then ``repeats`` times: wait for the others, integrate its
    patients, report its CPU time."""
    if kind in ("rr", "rr-optimised"):
        loop = RoadRunnerLoop(cohort.sbml, optimised=kind == "rr-optimised")
        loop.tolerances(rtol, atol)
        def run():
            return loop.run(cohort, rows, times)
        loop.run(cohort, rows[:1], times)                     # warm-up
    else:
        runner = carcell_runner("numba-serial")
        def run():
            return runner(cohort, rows, times, rtol)
        runner(cohort, rows[:2], times, rtol)                 # loads (or compiles) the kernel
    for _ in range(repeats):
        barrier.wait()
        c0 = time.process_time()
        y = run()
        results.put((time.process_time() - c0, int(np.isfinite(y).all(axis=(1, 2)).sum())))


def scaling(kind: str, rtol: float, atol: float | None, cohort: Cohort, n: int, times: np.ndarray,
            processes: int, repeats: int) -> dict:
    """``processes`` spawned processes, each half (a share) of ``n`` patients; best of ``repeats``.

    The clock starts when every process has loaded its model and warmed up, and stops when the
    last one is done. ``cpu_s`` is the CPU time of all processes in the best run: per patient it
    stays flat when the method itself scales, whatever else loads the machine."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes + 1), ctx.Queue()
    parts = np.array_split(np.arange(n), processes)
    procs = [ctx.Process(target=_worker, args=(kind, rtol, atol, cohort, rows, times, repeats, barrier, results))
             for rows in parts]
    for p in procs:
        p.start()
    best = None
    for _ in range(repeats):
        load = os.getloadavg()[0]
        try:        # a worker that died (its traceback is above) must not leave the run hanging
            barrier.wait(timeout=WORKER_TIMEOUT_S)
            w0 = time.perf_counter()
            got = [results.get(timeout=WORKER_TIMEOUT_S) for _ in procs]
        except (threading.BrokenBarrierError, queue.Empty):
            for p in procs:
                p.kill()
            raise SystemExit(f"error: a {kind} worker process did not finish; see its traceback above") from None
        wall = time.perf_counter() - w0
        if best is None or wall < best["wall_s"]:
            best = {"processes": processes, "patients": n, "ok": sum(g[1] for g in got), "wall_s": wall,
                    "cpu_s": sum(g[0] for g in got), "patients_per_s": n / wall,
                    "patients_per_cpu_s": n / sum(g[0] for g in got), "loadavg_before": load}
    for p in procs:
        p.join()
    return best


def equal_accuracy(rows: list[dict], target: float) -> tuple[dict, dict | None, float | None]:
    """Each method at its fastest swept setting with max error <= target; the best libRoadRunner
    setting; carcell's best patients/s/core over libRoadRunner's (None where one never got there)."""
    equal = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r["max"] <= target]
        equal[method] = max(ok, key=lambda r: r["per_core"]) if ok else None
    rr_best = max((equal[m] for m in ("rr-cvode", "rr-cvode-perstate") if equal.get(m)),
                  key=lambda r: r["per_core"], default=None)
    cc_best = equal.get("carcell-numba") or equal.get("carcell-numpy")
    ratio = cc_best["per_core"] / rr_best["per_core"] if (cc_best and rr_best) else None
    return equal, rr_best, ratio


# -- the run --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="examples/axicel_lbcl.yaml")
    ap.add_argument("--set", action="append", default=["regimen.protocol=none"], dest="overrides")
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--quick", action="store_true", help="fewer patients and tolerances: 1-2 minutes")
    ap.add_argument("--n", type=int, help="patients timed per method (default 400; quick 100)")
    ap.add_argument("--numpy-n", type=int, help="patients for carcell-numpy (default 100; quick 20)")
    ap.add_argument("--error-patients", type=int, help="patients the error is measured on (default 20; quick 8)")
    ap.add_argument("--scipy-patients", type=int, help="patients of the SciPy loop (default 2; quick 1)")
    ap.add_argument("--scaling-seconds", type=float,
                    help="single-core seconds of work in the 1- and 2-process runs (default 10; quick 3)")
    ap.add_argument("--repeats", type=int, help="timing repeats, best taken (default 2; quick 1)")
    ap.add_argument("--target", type=float, default=1e-4, help="max relative error for 'equal accuracy'")
    ap.add_argument("--rr-optimised", action="store_true",
                    help="compile the SBML with libRoadRunner's own default (optimising) settings")
    ap.add_argument("--json", help="write every number here (e.g. runs/vs_roadrunner.json)")
    a = ap.parse_args(argv)
    q = a.quick
    n = a.n or (100 if q else 400)
    k = min(a.error_patients or (8 if q else 20), n)
    n_np = max(k, min(a.numpy_n or (20 if q else 100), n))
    n_sp = min((1 if q else 2) if a.scipy_patients is None else a.scipy_patients, k)
    scaling_s = a.scaling_seconds or (3.0 if q else 10.0)
    n_cohort = max(n, MAX_SCALING_PATIENTS)
    repeats = a.repeats or (1 if q else 2)
    rtols = [1e-4, 1e-6, 1e-8] if q else [1e-4, 1e-5, 1e-6, 1e-7, 1e-8]
    times = np.arange(0.0, a.days + 0.5)
    has_numba = "numba-serial" in available_backends()

    try:
        cohort = make_cohort(a.scenario, a.overrides, n_cohort)
    except CarcellError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "loadavg_start": os.getloadavg()},
              "settings": {"scenario": a.scenario, "overrides": a.overrides, "days": a.days, "n": n,
                           "numpy_n": n_np, "error_patients": k, "scipy_patients": n_sp,
                           "scaling_seconds": scaling_s,
                           "repeats": repeats, "target": a.target, "rtols": rtols, "numba": has_numba,
                           "rr_optimised": a.rr_optimised,
                           "cytokine_floor_pg_per_ml": CYTOKINE_FLOOR_PG_PER_ML}}
    ref_backend = "numba-serial" if has_numba else "numpy"
    err_rows = np.arange(k)
    print(f"{a.scenario}: {k} error patients, {n} timed, {a.days:g} days, daily outputs; "
          f"reference carcell DOPRI5 rtol {REFERENCE_RTOL:g} ({ref_backend})", file=sys.stderr)
    ref = simulate_batch(Params(cohort.values[err_rows]), cohort.y0[err_rows], times, np.array([0.0]),
                         rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL, max_steps=10_000_000, backend=ref_backend)[0]

    rr = RoadRunnerLoop(cohort.sbml, optimised=a.rr_optimised)
    report["roadrunner_load_s"] = rr.load_s
    check_rows = err_rows[:3]
    rr.tolerances(CHECK_RTOL, CHECK_ATOL)
    check = summarise(errors(rr.run(cohort, check_rows, times), ref[:3]))
    report["reference_check"] = {"patients": int(check_rows.size), **check}
    print(f"reference check, roadrunner CVODE rtol {CHECK_RTOL:g} vs carcell rtol {REFERENCE_RTOL:g}: "
          f"max {check['max']:.1e} ({check['worst']})", file=sys.stderr)

    rows_out = []

    def record(method: str, rtol: float, atol: str, y: np.ndarray, patients: int, cpu: float, wall: float):
        s = summarise(errors(y[:k], ref[:len(y[:k])]))
        row = {"method": method, "rtol": rtol, "atol": atol, **s, "patients": patients,
               "cpu_s": cpu, "wall_s": wall, "per_core": patients / cpu, "per_s_wall": patients / wall}
        rows_out.append(row)
        print(f"  {method:18s} rtol {rtol:6.0e}  max {s['max']:8.1e}  median {s['median']:8.1e}  "
              f"{row['per_core']:8.3g} patients/CPU-s", file=sys.stderr)

    rows_n = np.arange(n)
    carcell_methods = ([("carcell-numba", "numba-serial", n)] if has_numba else []) + \
        [("carcell-numpy", "numpy", n_np)]
    for method, backend, m in carcell_methods:
        run = carcell_runner(backend)
        if backend != "numpy":
            run(cohort, err_rows[:2], times, 1e-6)        # load (or compile) the kernel, untimed
        # NumPy takes the same steps as Numba (bit-identical, docs/backends.md): loose rtols suffice
        for rtol in (rtols if backend != "numpy" else [r for r in rtols if r >= 1e-6]):
            y, cpu, wall = timed(lambda: run(cohort, rows_n[:m], times, rtol), repeats if backend != "numpy" else 1)
            record(method, rtol, f"{rtol * ATOL_PER_RTOL:g} every state", y, m, cpu, wall)
    for method, per_state in (("rr-cvode", False), ("rr-cvode-perstate", True)):
        for rtol in rtols:
            atol = rtol * ATOL_PER_RTOL if per_state else None
            rr.tolerances(rtol, atol)
            y, cpu, wall = timed(lambda: rr.run(cohort, rows_n, times), repeats)
            record(method, rtol, f"{atol:g} every state" if per_state else "default 1e-12 x max(1, abs(y0))",
                   y, n, cpu, wall)
    for method, name in (("scipy-rk45", "RK45"), ("scipy-lsoda", "LSODA")) if n_sp else ():
        run = scipy_runner(name)
        for rtol in (1e-4, 1e-6):                        # seconds per patient: two rtols only
            y, cpu, wall = timed(lambda: run(cohort, err_rows[:n_sp], times, rtol), 1)
            record(method, rtol, f"{rtol * ATOL_PER_RTOL:g} every state", y, n_sp, cpu, wall)
    report["methods"] = rows_out

    equal, rr_best, ratio = equal_accuracy(rows_out, a.target)
    report["equal_accuracy"] = {"target": a.target, "per_method": equal, "ratio_carcell_over_roadrunner": ratio,
                                "ratio_at": {f"{t:g}": equal_accuracy(rows_out, t)[2] for t in RATIO_TARGETS}}

    # scaling over processes, at each one's equal-accuracy rtol
    report["scaling"] = {}
    rr_kind = "rr-optimised" if a.rr_optimised else "rr"
    for name, kind, best in (("roadrunner", rr_kind, rr_best), ("carcell-numba", "numba", equal.get("carcell-numba"))):
        if best is None or (kind == "numba" and not has_numba):
            continue
        atol = best["rtol"] * ATOL_PER_RTOL if best["method"] == "rr-cvode-perstate" else None
        n_scale = int(np.clip(round(best["per_core"] * scaling_s), 20, n_cohort))
        runs = [scaling(kind, best["rtol"], atol, cohort, n_scale, times, p, repeats) for p in (1, 2)]
        report["scaling"][name] = {"method": best["method"], "rtol": best["rtol"], "runs": runs,
                                   "efficiency": runs[1]["patients_per_s"] / (2 * runs[0]["patients_per_s"])}
    report["machine"]["loadavg_end"] = os.getloadavg()
    print_tables(report)
    if a.json:
        os.makedirs(os.path.dirname(a.json) or ".", exist_ok=True)
        with open(a.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return 0


def print_tables(report: dict) -> None:
    s = report["settings"]
    print(f"\n{s['scenario']} ({', '.join(s['overrides'])}), {s['days']:g} days, daily outputs; error on "
          f"{s['error_patients']} patients vs carcell DOPRI5 rtol {REFERENCE_RTOL:g} "
          f"(check vs CVODE rtol {CHECK_RTOL:g}: max {report['reference_check']['max']:.1e}); "
          f"load average {report['machine']['loadavg_start'][0]:.1f} on {report['machine']['cpus']} CPUs")
    print("\n| method | rtol | atol | max rel. error | median | patients | patients/s/core | worst |")
    print("|---|---|---|---|---|---|---|---|")
    for r in report["methods"]:
        print(f"| {r['method']} | {r['rtol']:.0e} | {r['atol']} | {r['max']:.1e} | {r['median']:.1e} | "
              f"{r['patients']} | {r['per_core']:.3g} | {r['worst']} |")
    e = report["equal_accuracy"]
    print(f"\nEqual accuracy (max relative error <= {e['target']:g}):\n")
    print("| method | rtol | max rel. error | patients/s/core |")
    print("|---|---|---|---|")
    for m, r in e["per_method"].items():
        print(f"| {m} | " + (f"{r['rtol']:.0e} | {r['max']:.1e} | {r['per_core']:.3g} |" if r else
                             "not reached in the sweep | | |"))
    ratio = e["ratio_carcell_over_roadrunner"]
    print("\ncarcell / libRoadRunner, patients/s/core at equal accuracy: "
          + (f"{ratio:.2f}x (target >= 2x)" if ratio else "n/a"))
    print("at other accuracy targets: " + ", ".join(
        f"max error <= {t}: " + (f"{r:.2f}x" if r else "n/a") for t, r in e["ratio_at"].items()))
    if report["scaling"]:
        print("\nScaling (wall clock; patients per CPU second in brackets):\n")
        print("| method | rtol | patients | 1 process, patients/s | 2 processes, patients/s | efficiency |")
        print("|---|---|---|---|---|---|")
        for name, sc in report["scaling"].items():
            one, two = sc["runs"]
            print(f"| {name} ({sc['method']}) | {sc['rtol']:.0e} | {one['patients']} | {one['patients_per_s']:.1f} "
                  f"({one['patients_per_cpu_s']:.1f}) | {two['patients_per_s']:.1f} "
                  f"({two['patients_per_cpu_s']:.1f}) | {sc['efficiency']:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
