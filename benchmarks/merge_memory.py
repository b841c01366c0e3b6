"""Memory of the final merge of a large chunked run, measured apart from the simulation.

    carcell run examples/tisacel_ball.yaml --out /tmp/m1e6 -n 1000000 \\
        --set trial.follow_up_days=2 --chunk-size 20000 --no-plots      # about 11 min on 2 cores
    python benchmarks/merge_memory.py /tmp/m1e6 -n 1000000 --days 2 --chunk-size 20000
    python benchmarks/merge_memory.py runs/bench-1e6 -n 1000000 --days 365 --chunk-size 1000 \
        --set trial.solver.backend=numba-serial      # a run left by scale_memory.py --out

The merge's memory depends on the number of patients, not on the follow-up, so a short
follow-up makes a 10^6-patient run cheap to produce. This re-runs
``carcell.scale.merge.write_large_outputs`` on the finished chunks (into RUN/remerge-*) and
reports the resident set before each step and the peak during it, sampled every 20 ms with
psutil. The scenario options must be those the run was made with.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("stream_table", "trajectory_bands", "statistics_frame", "write_trial_outputs")


class Peak:
    """Largest resident set of this process since the last ``reset``, sampled by a thread."""

    def __init__(self, interval: float = 0.02):
        self.proc, self.value, self._stop = psutil.Process(), 0, threading.Event()
        threading.Thread(target=self._poll, args=(interval,), daemon=True).start()

    def _poll(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.value = max(self.value, self.proc.memory_info().rss)

    def rss(self) -> int:
        return self.proc.memory_info().rss

    def reset(self) -> int:
        self.value = self.rss()
        return self.value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished large-layout run directory (with chunks/)")
    ap.add_argument("--example", type=Path, default=ROOT / "examples" / "tisacel_ball.yaml")
    ap.add_argument("-n", type=int, required=True, help="patients, as the run was made")
    ap.add_argument("--days", type=float, required=True, help="follow-up days, as the run was made")
    ap.add_argument("--chunk-size", type=int, required=True, help="as the run was made")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                    help="further scenario settings the run was made with, e.g. trial.solver.backend=numba-serial "
                         "(benchmarks/scale_memory.py --backend)")
    args = ap.parse_args()

    peak = Peak()
    import carcell.scale.merge as merge   # noqa: PLC0415 - after the sampler starts
    from carcell.scale.store import ChunkStore   # noqa: PLC0415
    from carcell.scenario import load_scenario   # noqa: PLC0415
    from carcell.trial.run import plan_trial   # noqa: PLC0415

    sc = load_scenario(args.example, [f"population.n={args.n}", f"trial.follow_up_days={args.days}",
                                      f"trial.solver.chunk_size={args.chunk_size}", *args.sets])
    store = ChunkStore.open(args.run, sc)
    plan = plan_trial(sc)
    chunks = store.chunks(np.flatnonzero(plan.in_trial).astype(np.int64))

    highest = [0]

    def measured(name, f):
        def step(*a, **k):
            before = peak.reset()
            result = f(*a, **k)
            highest[0] = max(highest[0], peak.value)
            print(f"{name:22s} resident before {before / 2**20:7.0f} MB, peak during {peak.value / 2**20:7.0f} MB "
                  f"(+{(peak.value - before) / 2**20:.0f} MB), after {peak.rss() / 2**20:7.0f} MB", flush=True)
            return result
        return step

    for name in STEPS:
        setattr(merge, name, measured(name, getattr(merge, name)))
    start = peak.reset()
    with tempfile.TemporaryDirectory(prefix="remerge-", dir=args.run) as out:
        merge.write_large_outputs(store, plan, chunks, Path(out))
    print(f"{'whole merge':22s} resident before {start / 2**20:7.0f} MB, peak {highest[0] / 2**20:7.0f} MB "
          f"(+{(highest[0] - start) / 2**20:.0f} MB) for {args.n} patients in {len(chunks)} chunks")


if __name__ == "__main__":
    main()
