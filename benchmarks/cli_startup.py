"""How long a ``carcell`` command takes before it does any simulation: start, imports, knowledge.

Run (from the repository root):

    python benchmarks/cli_startup.py                     # this checkout
    python benchmarks/cli_startup.py --baseline 572355e  # and another commit, side by side

Timed, each ``--repeat`` times (default 5; the median is reported), as a new process the way a
user or a test's subprocess runs it:

* ``carcell --help``;
* ``carcell validate examples/minimal.yaml``: reads the scenario and the whole knowledge tree and
  resolves the design;
* ``carcell run BAD.yaml --out DIR`` on a scenario with a misspelt costimulatory domain: what a
  mistake costs before its one-line error.

``--baseline REV`` checks REV out in a temporary git worktree and times the same commands with
that worktree first on ``PYTHONPATH``, so the same interpreter and libraries run the old code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAD = "indication: {disease: LBCL}\nproduct: {car: {costim: CD82}}\n"


def commands(bad: Path, out: Path) -> dict[str, list[str]]:
    return {
        "carcell --help": ["--help"],
        "carcell validate minimal.yaml": ["validate", str(ROOT / "examples" / "minimal.yaml")],
        "carcell run BAD.yaml (error)": ["run", str(bad), "--out", str(out)],
    }


def time_command(args: list[str], code: Path, repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "carcell", *args], env=env, cwd=code,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", help="a git revision to time beside this checkout")
    ap.add_argument("--repeat", type=int, default=5, help="runs per command (median reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bad = tmp / "bad.yaml"
        bad.write_text(BAD)
        trees = {"this checkout": ROOT}
        if args.baseline:
            base = tmp / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
                           check=True, capture_output=True)
            trees[f"baseline {args.baseline}"] = base
        try:
            cmds = commands(bad, tmp / "out")
            rows = {name: [time_command(a, code, args.repeat) for code in trees.values()]
                    for name, a in cmds.items()}
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                               capture_output=True)
    head = f"{'command':32s}" + "".join(f"{t:>24s}" for t in trees)
    print(f"median of {args.repeat} runs, seconds (python {sys.version.split()[0]})")
    print(head)
    for name, secs in rows.items():
        print(f"{name:32s}" + "".join(f"{s:24.2f}" for s in secs))


if __name__ == "__main__":
    main()
