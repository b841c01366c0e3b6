"""Trial throughput: a 2-arm, 1,000-patients-per-arm, 2-year randomised trial, end to end.

Run (from the repository root):

    python benchmarks/trial_throughput.py                      # 2 x 1,000 patients, 730 days
    python benchmarks/trial_throughput.py --per-arm 200 --workers 1 2

What is measured: wall time of ``carcell.trial.run.run_trial`` (randomisation, both CAR arms
simulated with the toxicity and haematology layers, deaths and endpoints) plus
``carcell.io.outputs.write_trial_outputs`` (parquet, netCDF, trial.json with Kaplan-Meier, Cox
and log-rank), for a trial of two CAR arms (axi-cel-like at 2e6/kg and at 1e6/kg, calibrated
ZUMA-1 population) with 1:1 randomisation. Each worker count in ``--workers`` is run in the same
process, one after the other; the baseline is the single-process run (workers = 1), and the
patient tables of every run must be identical (checked and printed).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from carcell.io.outputs import write_trial_outputs
from carcell.scenario.load import validate_raw
from carcell.trial.run import run_trial


def scenario(per_arm: int, days: float, workers: int):
    return validate_raw({
        "name": "benchmark: axi-cel 2e6/kg vs 1e6/kg",
        "product": {"preset": "axi-cel", "dose": {"cells_per_kg": 2e6}},
        "indication": {"disease": "LBCL"},
        "population": {"n": 2 * per_arm, "seed": 7, "calibration": "axi-cel_LBCL"},
        "trial": {"follow_up_days": days, "workers": workers,
                  "arms": [{"name": "2e6/kg"}, {"name": "1e6/kg", "product": {"dose": {"cells_per_kg": 1e6}}}]},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-arm", type=int, default=1000)
    ap.add_argument("--days", type=float, default=730.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"trial: 2 arms x {args.per_arm} patients, {args.days:g} days of follow-up")
    tables = {}
    for w in args.workers:
        sc = scenario(args.per_arm, args.days, w)
        t0 = time.perf_counter()
        result = run_trial(sc)
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            trial = write_trial_outputs(result, Path(d))
        t2 = time.perf_counter()
        tables[w] = result.patients
        hr = trial["comparisons"][0]["hazard_ratio"] if trial["comparisons"] else None
        print(f"workers {w}: simulate {t1 - t0:7.1f} s, write + statistics {t2 - t1:5.1f} s, "
              f"total {t2 - t0:7.1f} s ({(t2 - t0) / 60:.1f} min); PFS HR {hr}")
    first = tables[args.workers[0]]
    for w, t in tables.items():
        pd.testing.assert_frame_equal(first, t)
    print(f"patient tables identical across worker counts {args.workers}: yes")


if __name__ == "__main__":
    main()
