"""Per-patient agreement of two ``carcell run`` output directories (e.g. two backends).

Run (from the repository root):

    carcell run examples/axicel_lbcl.yaml -n 1000 --backend numpy --out runs/np --no-plots
    carcell run examples/axicel_lbcl.yaml -n 1000 --backend jax --out runs/jax --no-plots
    python benchmarks/compare_runs.py runs/np runs/jax [--json agreement.json]

What is compared: ``patients.parquet`` of both runs, row by row on ``patient_id`` (the two must
hold the same patients). For every floating-point column, the largest relative difference
``|a - b| / max(|a|, |b|, floor)`` (``--floor``, default 1e-9, so that two values that are both
zero up to rounding do not count; a NaN on one side only counts as infinite) and how many
patients differ by more than ``--tol`` (default 1e-6). For every other column (strings,
integers, booleans: grades, statuses, responses), how many patients differ at all: those are
decisions (a grade, a dose given, a response category) that fell differently.

The exit status is 0 when every float column is within ``--tol`` and no discrete column differs,
1 otherwise, so the script can gate a device check.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def load(directory: str) -> pd.DataFrame:
    path = Path(directory) / "patients.parquet"
    if not path.exists():
        raise SystemExit(f"error: {path} not found: give the output directory of a finished carcell run")
    return pd.read_parquet(path).set_index("patient_id").sort_index()


def compare(a: pd.DataFrame, b: pd.DataFrame, floor: float = 1e-9, tol: float = 1e-6) -> dict:
    """Column by column: ``{"float": {col: (max_rel, n_above_tol)}, "discrete": {col: n_differ}}``."""
    if not a.index.equals(b.index):
        raise SystemExit(f"error: the runs hold different patients ({len(a)} and {len(b)} rows, "
                         f"{len(a.index.symmetric_difference(b.index))} ids in one only)")
    missing = sorted(set(a.columns) ^ set(b.columns))
    if missing:
        raise SystemExit(f"error: columns in one run only: {', '.join(missing)}")
    out: dict = {"patients": len(a), "float": {}, "discrete": {}}
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_float_dtype(x.dtype):
            x, y = x.to_numpy(float), y.to_numpy(float)
            both_nan = np.isnan(x) & np.isnan(y)
            with np.errstate(invalid="ignore"):
                d = np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), floor)
            d = np.where(both_nan, 0.0, np.where(np.isnan(d), np.inf, d))
            out["float"][col] = (float(d.max(initial=0.0)), int((d > tol).sum()))
        else:
            same = (x == y) | (x.isna() & y.isna())
            out["discrete"][col] = int((~same.fillna(False)).sum())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="output directory of the reference run")
    ap.add_argument("b", help="output directory of the run compared with it")
    ap.add_argument("--floor", type=float, default=1e-9)
    ap.add_argument("--tol", type=float, default=1e-6)
    ap.add_argument("--json", help="write the comparison to this file")
    args = ap.parse_args(argv)
    result = compare(load(args.a), load(args.b), args.floor, args.tol)
    worst = max(result["float"].items(), key=lambda kv: kv[1][0], default=("-", (0.0, 0)))
    above = {c: v for c, v in result["float"].items() if v[1]}
    differ = {c: n for c, n in result["discrete"].items() if n}
    print(f"{result['patients']} patients, {len(result['float'])} float columns, "
          f"{len(result['discrete'])} discrete columns")
    print(f"largest relative difference: {worst[1][0]:.2e} ({worst[0]})")
    for col, (m, n) in sorted(above.items(), key=lambda kv: -kv[1][0]):
        print(f"  {col}: {m:.2e}, {n} patients above {args.tol:g}")
    for col, n in differ.items():
        print(f"  {col}: {n} patients differ")
    ok = not above and not differ
    print("agree" if ok else "differ", f"(tolerance {args.tol:g} relative, floor {args.floor:g})")
    if args.json:
        Path(args.json).write_text(json.dumps({**result, "tol": args.tol, "floor": args.floor, "agree": ok},
                                              indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
