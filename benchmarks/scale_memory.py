"""Throughput and peak memory of chunked runs: in-process, a local pool, a local Dask cluster.

Run (from the repository root; measurements are long, so run them niced on a shared machine):

    nice python benchmarks/scale_memory.py --quick                 # small N, minutes
    nice python benchmarks/scale_memory.py --sizes 10000 100000 1000000 --modes in-process pool
    nice python benchmarks/scale_memory.py --sizes 2000 --modes dask1 dask2   # Dask scaling efficiency
    nice python benchmarks/scale_memory.py --sizes 10000 --backend numba-serial   # one core vs a 2-process pool
    python benchmarks/scale_memory.py --sizes 1000000 --modes in-process --out runs/bench --resume
        # a run longer than one sitting: --out keeps the run directory; after a stop (or kill -9)
        # the same command with --resume finishes it, and each segment reports its own rate

What is measured: ``carcell.scale.run_chunked`` on the bundled tisagenlecleucel-like B-ALL
example (examples/tisacel_ball.yaml: 1 year of follow-up, daily outputs, twice-daily toxicity
assessments with the default closed-loop ASCO 2021 management protocol), written to a temporary
directory, each (mode, N) in a fresh Python process. Throughput is patients per second of wall
time of the run itself (planning, simulation, writing; not the interpreter start-up nor a Dask
cluster's start-up), and patients per CPU-second of this process and its descendants (robust on
a shared machine; pool workers start from a fork server and a LocalCluster's workers are
descendants too, sampled every 0.25 s with psutil while the run lasts). Peak memory is the
largest resident set of any one process of the run (the driver from getrusage, a pool/Dask
worker from the same sampling). The large-run layout (streamed tables,
trajectories left in chunks) is used for every N unless --whole-cohort-max is raised, so the
memory figures show what streaming costs; the whole-cohort layout holds all trajectories in
memory by design (up to carcell.scale.merge.WHOLE_COHORT_MAX patients).

Modes: ``in-process`` (one process), ``pool`` (--workers local processes), ``dask1`` and
``dask2`` (a distributed.LocalCluster on 127.0.0.1 with 1 or 2 single-threaded worker
processes, reached through its scheduler address exactly as ``--scheduler`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "tisacel_ball.yaml"


def _peak_mb() -> tuple[float, float]:
    """(this process, largest finished child) peak resident set, MB (Linux reports kB)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


class Descendants:
    """CPU seconds and peak resident set of this process's descendants, sampled every
    ``interval`` s by a thread (psutil). Pool workers start from a fork server, so they are its
    children, not ours, and getrusage(RUSAGE_CHILDREN) does not see them until it exits."""

    def __init__(self, interval: float = 0.25):
        import threading

        import psutil

        self._me, self._interval = psutil.Process(), interval
        self.cpu: dict[int, float] = {}
        self.peak_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        while not self._stop.wait(self._interval):
            for child in self._me.children(recursive=True):
                try:
                    t = child.cpu_times()
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.cpu[child.pid] = t.user + t.system
                self.peak_rss_mb = max(self.peak_rss_mb, rss)

    def __enter__(self) -> "Descendants":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure_one(mode: str, n: int, chunk: int, workers: int, days: float, whole_max: int,
                backend: str = "auto", out: Path | None = None, resume: bool = False) -> dict:
    """One run in this process; returns its figures. With ``out`` the run directory is kept
    there (and ``resume`` continues a run left in it); the rate is then that of the patients
    this segment simulated."""
    from carcell.scale import run_chunked
    from carcell.scenario.load import load_scenario
    from carcell.solve.rounds import resolve_backend

    sets = [f"population.n={n}", f"trial.follow_up_days={days}", f"trial.solver.chunk_size={chunk}",
            f"trial.workers={workers if mode == 'pool' else 1}", f"trial.solver.backend={backend}"]
    cluster = None
    if mode.startswith("dask"):
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=int(mode[4:]), threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=":0")
        sets.append(f"trial.scheduler={cluster.scheduler_address}")
    sc = load_scenario(EXAMPLE, sets)
    before: list[int] = []   # patients already finished when this segment started (resume)
    with tempfile.TemporaryDirectory(prefix="carcell-bench-") as tmp:
        target = out if out is not None else Path(tmp) / "run"
        resume = resume and target.exists()
        cpu0 = sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f) for f in ("ru_utime", "ru_stime"))
        t0 = time.perf_counter()
        with Descendants() as tree:
            run = run_chunked(sc, target, resume=resume, whole_cohort_max=whole_max,
                              progress=lambda done, total: before.append(done))
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    if cluster is not None:
        cluster.close()
    me, children = _peak_mb()
    children = max(children, tree.peak_rss_mb)
    cpu = sum(getattr(resource.getrusage(resource.RUSAGE_SELF), f) for f in ("ru_utime", "ru_stime")) + sum(
        tree.cpu.values())
    # what integrated: in a pool or on Dask workers ``auto`` runs the one-thread kernel
    ran = resolve_backend(backend)
    if mode != "in-process" and ran == "numba" and backend == "auto":
        ran = "numba-serial"
    simulated = n - (before[0] if before else 0)
    return {"mode": mode, "backend": ran, "n": n, "chunk_size": chunk, "chunks": run.chunks, "layout": run.layout,
            "simulated": simulated, "wall_s": wall, "patients_per_s": simulated / wall, "cpu_s": cpu - cpu0,
            "patients_per_cpu_s": simulated / (cpu - cpu0),
            "peak_rss_mb_driver": me, "peak_rss_mb_worker": children, "output_mb": size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--modes", nargs="+", default=["in-process", "pool"],
                    choices=["in-process", "pool", "dask1", "dask2"])
    ap.add_argument("--chunk-size", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="processes of the pool mode")
    ap.add_argument("--days", type=float, default=365.0)
    ap.add_argument("--backend", default="auto", help="trial.solver.backend (auto: numba when installed; "
                    "numba-serial in-process measures one core)")
    ap.add_argument("--whole-cohort-max", type=int, default=0,
                    help="patients up to which the whole-cohort layout is used (default 0: always stream)")
    ap.add_argument("--quick", action="store_true", help="N = 200 and 400, chunks of 100, every mode")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--out", type=Path, help="keep the run directory here (one size and mode only) instead of "
                    "a temporary one")
    ap.add_argument("--resume", action="store_true", help="with --out: finish the run left there")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        row = measure_one(args.one[0], int(args.one[1]), args.chunk_size, args.workers, args.days,
                          args.whole_cohort_max, args.backend, args.out, args.resume)
        print("RESULT " + json.dumps(row))
        return
    if args.quick:
        args.sizes, args.chunk_size, args.modes = [200, 400], 100, ["in-process", "pool", "dask1", "dask2"]
    if args.out is not None and len(args.sizes) * len(args.modes) != 1:
        ap.error("--out keeps one run: give one size and one mode")
    if args.resume and args.out is None:
        ap.error("--resume needs --out, the run directory to finish")
    if args.out is not None and args.out.exists() and not args.resume:
        ap.error(f"--out {args.out} exists: add --resume to finish the run there, or choose another directory")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{EXAMPLE.name}, {args.days:g} days, chunks of {args.chunk_size}")
    rows = []
    for n in args.sizes:
        for mode in args.modes:
            cmd = [sys.executable, __file__, "--one", mode, str(n), "--chunk-size", str(args.chunk_size),
                   "--workers", str(args.workers), "--days", str(args.days),
                   "--whole-cohort-max", str(args.whole_cohort_max), "--backend", args.backend]
            if args.out is not None:
                cmd += ["--out", str(args.out.resolve())] + (["--resume"] if args.resume else [])
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            line = next((x for x in p.stdout.splitlines() if x.startswith("RESULT ")), None)
            if line is None:
                print(f"{mode} N={n}: failed\n{p.stderr[-2000:]}")
                continue
            row = json.loads(line[7:])
            rows.append(row)
            if row["simulated"] != n:
                print(f"(resumed: {n - row['simulated']} patients were already finished; the rate is this segment's)")
            print(f"{mode:>10} {row['backend']:>12} N={n:>8} chunks={row['chunks']:>4}  {row['patients_per_s']:8.2f} patients/s  "
                  f"({row['patients_per_cpu_s']:6.2f} per CPU-s)  wall {row['wall_s']:8.1f} s  "
                  f"peak RSS driver {row['peak_rss_mb_driver']:7.0f} MB, "
                  f"worker {row['peak_rss_mb_worker']:7.0f} MB  output {row['output_mb']:8.1f} MB", flush=True)
    base = {r["n"]: r for r in rows if r["mode"] == "in-process"}
    d1 = {r["n"]: r for r in rows if r["mode"] == "dask1"}
    for r in rows:
        if r["mode"] == "pool" and r["n"] in base:
            print(f"pool speed-up at N={r['n']}: {r['patients_per_s'] / base[r['n']]['patients_per_s']:.2f}x "
                  f"with {args.workers} workers")
        if r["mode"] == "dask2" and r["n"] in d1:
            e = r["patients_per_s"] / d1[r["n"]]["patients_per_s"] / 2
            print(f"Dask scaling efficiency at N={r['n']}, 1 -> 2 workers: {e:.0%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
