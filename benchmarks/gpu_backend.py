"""GPU path throughput: carcell's JAX integrator (carcell/solve/jax_kernel.py) vs the NumPy one.

Run (from the repository root):

    python benchmarks/gpu_backend.py                    # N = 1,000 and 10,000 on JAX's default device
    python benchmarks/gpu_backend.py --n 1000           # a quick check (what was run on the CPU here)
    python benchmarks/gpu_backend.py --large            # adds N = 1e5, 1e6, 1e7: meant for a GPU
    JAX_PLATFORMS=cpu python benchmarks/gpu_backend.py --n 1000   # force the CPU device

On an NVIDIA GPU: ``pip install -e ".[gpu]"`` (jax[cuda12]) first; the script prints the device
JAX uses, so a run that fell back to the CPU says so.

What is measured, for each N:

* patients: the scenario's first ``--base`` patients (default axi-cel in LBCL,
  examples/axicel_lbcl.yaml), repeated to N (drawing 1e7 distinct patients takes longer than
  integrating them; repeated patients cost the same work per patient);
* integration only, ``--days`` days (default 365) on a daily grid: ``integrate_interval`` from
  day d to d+1 for every d, the step size carried over, at ``--rtol`` / ``--atol`` (carcell's
  defaults). No clinical rounds, extinction, assessments or drug doses: this is the solver's
  throughput, not a whole ``carcell run``;
* JAX: the parameters and states stay on the device between days (``to_host=False``);
  ``--via-host`` instead copies states to and from the host every day, as
  ``carcell.solve.rounds.simulate_batch`` does with the default ``to_host=True``. Compilation
  (first call for this N) is timed apart and not counted in the rate;
* NumPy: ``carcell.solve.dopri5.integrate_interval`` on the first ``--numpy-patients`` (default
  1,000) of the same patients, once (one core; its cost per patient hardly depends on N, and
  10^4 patients would take minutes of a lent GPU machine's time), reported as patients/s;
* CPU seconds of this process beside each wall time (XLA's CPU backend may use every core);
* agreement: on the patients both ran (the first ones), the largest relative difference on day ``--days`` of the
  counts (exp of log-cell states, floor one cell) and of the other states (floor 1e-3 units,
  1e-6 for the macrophage fraction).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from carcell.design import compile_chunk, resolve_design
from carcell.knowledge import load_knowledge
from carcell.model.rhs import rhs
from carcell.model.states import IS_LOG, STATE_NAMES, Params
from carcell.scenario.load import load_scenario
from carcell.solve import jax_kernel
from carcell.solve.dopri5 import STATUS_OK, integrate_interval
from carcell.solve.rounds import atol_vector

_IS_LOG = np.array(IS_LOG)
_FLOOR = np.array([1.0 if log else (1e-6 if name == "macrophage_activation" else 1e-3)
                   for log, name in zip(IS_LOG, STATE_NAMES)])


def output_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative difference on counts (cells) and levels, with the floors above."""
    a, b = a.copy(), b.copy()
    a[:, _IS_LOG], b[:, _IS_LOG] = np.exp(a[:, _IS_LOG]), np.exp(b[:, _IS_LOG])
    d = np.abs(a - b) / np.maximum(np.abs(b), _FLOOR)
    return float(np.where(np.isnan(d), np.inf, d).max())


def cohort(example: str, base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """States and parameters of ``n`` patients: the first ``base`` of the scenario, repeated."""
    c = compile_chunk(resolve_design(load_scenario(example), load_knowledge()), 0, min(base, n))
    reps = -(-n // len(c.y0))
    return np.tile(c.y0, (reps, 1))[:n], np.tile(c.params.values, (reps, 1))[:n]


def run_numpy(y0, values, days, rtol, atol):
    y, h, status, p = y0, None, None, Params(values)
    start, cpu = time.perf_counter(), time.process_time()
    for d in range(days):
        y, h, status = integrate_interval(rhs, y, float(d), float(d + 1), p, rtol=rtol, atol=atol, h=h,
                                          status=status)
    return y, status, time.perf_counter() - start, time.process_time() - cpu


def run_jax(y0, values, days, rtol, atol, via_host):
    if via_host:
        y, v = y0, values
    else:
        y, v = jax_kernel.to_device(y0), jax_kernel.to_device(values)
    h = status = None
    start, cpu = time.perf_counter(), time.process_time()
    for d in range(days):
        y, h, status = jax_kernel.integrate_interval_jax(
            y, float(d), float(d + 1), v, rtol=rtol, atol=atol, h=h, status=status, to_host=via_host)
    if not via_host:
        y.block_until_ready()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return np.asarray(y), np.asarray(status), elapsed, cpu


def measure_numpy(args) -> dict:
    """NumPy's rate on ``--numpy-patients`` patients (per-patient cost hardly depends on N)."""
    y0, values = cohort(args.example, args.base, args.numpy_patients)
    y, status, wall, cpu = run_numpy(y0, values, args.days, args.rtol, atol_vector(args.atol))
    print(f"numpy      N={len(y0):>10,}  {len(y0) / wall:>12,.0f} patients/s  ({wall:.2f} s, {cpu:.2f} s CPU)",
          flush=True)
    return {"n": len(y0), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "patients_per_s": round(len(y0) / wall, 1), "y": y, "status": status}


def measure_jax(n: int, args, numpy_row: dict) -> dict:
    atol = atol_vector(args.atol)
    y0, values = cohort(args.example, args.base, n)
    # compile both programs (no starting step, carried step) for this N: two one-day intervals
    start = time.perf_counter()
    run_jax(y0, values, 2, args.rtol, atol, args.via_host)
    compile_s = time.perf_counter() - start
    y, status, wall, cpu = run_jax(y0, values, args.days, args.rtol, atol, args.via_host)
    both = min(n, numpy_row["n"])       # the first patients are the same ones in both runs
    row = {
        "n": n, "jax_compile_s": round(compile_s, 2), "jax_s": round(wall, 3), "jax_cpu_s": round(cpu, 3),
        "jax_patients_per_s": round(n / wall, 1), "jax_failed": int((status != STATUS_OK).sum()),
        "speedup_vs_numpy": round((n / wall) / numpy_row["patients_per_s"], 2),
        "compared_patients": both,
        "statuses_equal": bool(np.array_equal(status[:both], numpy_row["status"][:both])),
        "max_rel_diff": output_diff(y[:both], numpy_row["y"][:both]),
    }
    print(f"jax        N={n:>10,}  {row['jax_patients_per_s']:>12,.0f} patients/s  ({wall:.2f} s, {cpu:.2f} s CPU, "
          f"compile {compile_s:.1f} s)  x{row['speedup_vs_numpy']} numpy   max rel diff {row['max_rel_diff']:.1e} "
          f"on {both:,} patients", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000])
    ap.add_argument("--large", action="store_true", help="also N = 1e5, 1e6, 1e7 (for a GPU)")
    ap.add_argument("--example", default="examples/axicel_lbcl.yaml")
    ap.add_argument("--base", type=int, default=1_000,
                    help="distinct patients drawn, then repeated (at least --numpy-patients)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--rtol", type=float, default=1e-6)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--numpy-patients", type=int, default=1_000,
                    help="NumPy's rate is measured once, on this many patients")
    ap.add_argument("--via-host", action="store_true", help="copy states to the host every day")
    ap.add_argument("--json", help="write the rows to this file")
    args = ap.parse_args()
    if args.base < args.numpy_patients:
        raise SystemExit("error: --base must be at least --numpy-patients (the compared patients must be distinct)")
    if not jax_kernel.available():
        raise SystemExit("error: jax is not installed; pip install -e '.[jax]' (CPU) or '.[gpu]' (CUDA)")
    sizes = list(args.n) + ([100_000, 1_000_000, 10_000_000] if args.large else [])
    print(f"device: {jax_kernel.device()}   python {platform.python_version()}   jax {jax_version()}   "
          f"rtol {args.rtol} atol {args.atol}   {args.days} days, daily grid", flush=True)
    numpy_row = measure_numpy(args)
    meta = {"device": jax_kernel.device(), "jax_version": jax_version(), "days": args.days, "rtol": args.rtol,
            "atol": args.atol, "via_host": args.via_host, "example": args.example, "base": args.base,
            "numpy": {k: v for k, v in numpy_row.items() if k not in ("y", "status")}}
    rows: list[dict] = []
    for n in sizes:
        rows.append(measure_jax(n, args, numpy_row))
        if args.json:       # after every size, so a run stopped at a time limit keeps what it measured
            with open(args.json, "w") as f:
                json.dump({**meta, "jax": rows}, f, indent=1)


def jax_version() -> str:
    import jax  # noqa: PLC0415 - optional extra

    return jax.__version__


if __name__ == "__main__":
    main()
