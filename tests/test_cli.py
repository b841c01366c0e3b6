"""The ``carcell`` command end to end: every bundled example through the real CLI in a subprocess.

Each example is run small (12 patients, 60 days) into a temporary directory and every output
file is opened and checked against what README.md promises. The error paths of the command are
in test_scenario_errors.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

from carcell.io.yamlio import load_yaml
from carcell.knowledge.store import check_entry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# cohort examples (one CAR arm, no trial.arms) write the cohort files checked below; the trial
# examples are run in test_trial_example_end_to_end
COHORT_EXAMPLES = [p for p in EXAMPLES if not ((load_yaml(p) or {}).get("trial") or {}).get("arms")]
TRIAL_EXAMPLES = [p for p in EXAMPLES if p not in COHORT_EXAMPLES]
N = 12
FAST = ("-n", str(N), "--set", "trial.follow_up_days=60")
# the plotting code is the same for every cohort example; these run with plots, one per disease
# family and species, and the others with --no-plots (plots are most of a short run's time)
PLOTTED = {"minimal", "tisacel_ball", "idecel_mm", "satricel_gastric", "il13ra2_gbm_intraventricular",
           "nk92_2b4_dap12_mouse", "nk92_2b4_dap12_vitro"}

ALLOWED = {   # NE: died before the first response assessment (docs/trials.md)
    "LBCL": {"CR", "PR", "SD", "PD", "NE"},
    "MM": {"CR", "VGPR", "PR", "SD", "PD", "NE"},
    "B-ALL": {"CR", "NR", "PD", "NE"},
    # solid tumours (RECIST) and glioblastoma (RANO)
    **{d: {"CR", "PR", "SD", "PD", "NE"} for d in ("gastric", "GBM", "neuroblastoma", "mesothelioma",
                                                   "colorectal", "pancreatic", "breast")},
}
OUTPUT_FILES = ("patients.parquet", "trajectories.nc", "events.parquet", "summary.json",
                "provenance.json", "kinetics.png", "tumour_burden.png", "waterfall.png")
PATIENT_COLUMNS = ("patient_id", "solver_status", "cmax_cells_per_ul", "cmax_copies_per_ug",
                   "tmax_days", "auc_0_28_copies_day_per_ug", "best_response", "response_day",
                   "progression_day", "relapse_antigen", "il6_peak_pg_per_ml",
                   "ifng_peak_pg_per_ml")
EVENT_KINDS = {"infusion", "response_assessment", "progression", "relapse", "drug", "crs_grade", "icans_grade", "ivig", "death"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _env() -> dict[str, str]:
    """The caller's environment without anything that makes rich pretend to be a terminal."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "NO_COLOR")}
    env["COLUMNS"] = "200"  # long scenario names stay on one table row
    return env


def carcell(*args, exe=(sys.executable, "-m", "carcell"), cwd=None):
    return subprocess.run([*exe, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=_env(), stdin=subprocess.DEVNULL)


def carcell_in_process(*args):
    """The same command line through the CLI's own code in this process (no interpreter start
    and imports per example); one test below runs the installed console script for real."""
    from types import SimpleNamespace

    from typer.testing import CliRunner

    from carcell import cli

    width = cli.out_console.width
    cli.out_console.width = int(_env()["COLUMNS"])   # as wide as carcell()'s: long names stay on one row
    try:
        res = CliRunner().invoke(cli.app, [str(a) for a in args])
    finally:
        cli.out_console.width = width
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def expected_name(example: Path) -> str:
    return (load_yaml(example) or {}).get("name", "scenario")


def test_examples_exist():
    assert len(EXAMPLES) >= 5, EXAMPLES
    assert PLOTTED <= {p.stem for p in COHORT_EXAMPLES}, PLOTTED - {p.stem for p in COHORT_EXAMPLES}
    assert {"minimal", "axicel_lbcl", "tisacel_ball", "idecel_mm"} <= {p.stem for p in EXAMPLES}


def check_outputs(out: Path, n: int, example: Path, plots: bool = True) -> None:
    """Every output file of one run, opened and checked."""
    raw = load_yaml(example) or {}
    for f in OUTPUT_FILES:
        if f.endswith(".png") and not plots:
            assert not (out / f).exists(), f"{f} written under --no-plots"
            continue
        assert (out / f).is_file(), f"{f} missing; have {sorted(p.name for p in out.iterdir())}"
        assert (out / f).stat().st_size > 0, f
    for png in ("kinetics.png", "tumour_burden.png", "waterfall.png") if plots else ():
        assert (out / png).read_bytes()[:8] == PNG_MAGIC, png

    # summary.json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cohort_size"] == n
    assert summary["scenario"] == expected_name(example)
    assert summary["disease"] == raw["indication"]["disease"]
    disease = summary["disease"]

    # patients.parquet: one row per patient
    df = pd.read_parquet(out / "patients.parquet")
    assert len(df) == n
    tissues = json.loads((out / "provenance.json").read_text())["design"]["normal_tissues_simulated"]
    expected = [*PATIENT_COLUMNS, *(f"{t}_{m}" for t in tissues for m in ("nadir_fraction", "depleted_days"))]
    if "b_cells" in tissues:
        expected.append("b_cell_aplasia_days")
    missing = [c for c in expected if c not in df.columns]
    assert not missing, missing
    assert list(df["patient_id"]) == list(range(n))
    assert (df["solver_status"] == "ok").all(), df["solver_status"].value_counts()
    # the summary's safety figures are the shares in the patient table
    tox, haem = summary["toxicity"], summary["haematology"]
    assert tox["crs_grade3plus"] == pytest.approx((df["crs_max_grade"] >= 3).mean())
    assert tox["icans_any"] == pytest.approx((df["icans_max_grade"] >= 1).mean())
    assert tox["tocilizumab_use"] == pytest.approx((df["tocilizumab_doses"] > 0).mean())
    assert haem["ivig_use"] == pytest.approx((df["ivig_doses"] > 0).mean())
    responses = set(df["best_response"].dropna())
    assert responses, "no best_response at all"
    assert responses <= ALLOWED[disease], (disease, responses)
    assert df["best_response"].notna().all()
    assert (df["cmax_cells_per_ul"] > 0).all() and (df["cmax_copies_per_ug"] > 0).all()
    for t in tissues:  # a normal tissue can only lose cells to the CAR, from its baseline
        assert df[f"{t}_nadir_fraction"].between(0, 1 + 1e-9).all(), t
    assert df["tmax_days"].between(0, 60).all()
    assert set(df["relapse_antigen"].dropna()) <= {"none", "positive", "negative", "low"}

    # trajectories.nc: patient x time, units everywhere, time increasing
    with xr.open_dataset(out / "trajectories.nc") as ds:
        assert set(ds.dims) == {"patient", "time"}
        assert ds.sizes["patient"] == n
        assert len(ds.data_vars) > 0
        for v in ds.data_vars:
            assert set(ds[v].dims) == {"patient", "time"}, v
            assert str(ds[v].attrs.get("units", "")).strip(), f"{v} has no units attribute"
        assert str(ds["time"].attrs.get("units", "")).strip()
        t = ds["time"].values
        assert t.size >= 2 and (t[1:] > t[:-1]).all()
        assert t[0] == 0 and t[-1] == 60
        assert list(ds["patient"].values) == list(df["patient_id"])

    # events.parquet
    ev = pd.read_parquet(out / "events.parquet")
    assert {"patient_id", "day", "event", "value", "detail"} <= set(ev.columns)
    assert set(ev["event"]) <= EVENT_KINDS, set(ev["event"])
    inf = ev[ev["event"] == "infusion"]
    days = raw.get("regimen", {}).get("infusion_days", [0])   # one infusion per patient and dosing day
    assert sorted(inf["patient_id"]) == sorted(list(range(n)) * len(days))
    assert sorted(inf["day"].unique()) == sorted(float(d) for d in days if d <= 60)

    # provenance.json
    prov = json.loads((out / "provenance.json").read_text())
    sha = prov["scenario_sha256"]
    assert isinstance(sha, str) and len(sha) == 64 and int(sha, 16) >= 0
    recomputed = hashlib.sha256(json.dumps(prov["scenario"], sort_keys=True).encode()).hexdigest()
    assert sha == recomputed, "scenario_sha256 is not the hash of the scenario it stores"
    assert prov["seed"] == raw.get("population", {}).get("seed", 0)
    assert prov["scenario"]["population"]["n"] == n
    assert prov["scenario"]["trial"]["follow_up_days"] == 60
    sources = prov["sources"]
    assert isinstance(sources, dict) and sources
    for path, entry in sources.items():
        assert str(entry.get("source", "")).strip(), path
        check_entry(path, entry)


@pytest.mark.parametrize("example", COHORT_EXAMPLES, ids=lambda p: p.stem)
def test_run_example_end_to_end(example, tmp_path):
    out = tmp_path / "out"
    plots = example.stem in PLOTTED
    r = carcell_in_process("run", example, "--out", out, *FAST, *(() if plots else ("--no-plots",)))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    # summary table on stdout, nothing of it on stderr (stderr is not a terminal here)
    assert "Cmax" in r.stdout and "Cmax" not in r.stderr
    check_outputs(out, N, example, plots)


def test_console_script_end_to_end(tmp_path):
    # `pip install -e .` puts the script beside the interpreter (and usually on PATH)
    beside = Path(sys.executable).parent / "carcell"
    exe = str(beside) if beside.exists() else shutil.which("carcell")
    assert exe is not None, "the carcell console script is not installed: run pip install -e ."
    example = ROOT / "examples" / "minimal.yaml"
    out = tmp_path / "out"
    # from an unrelated working directory, with a relative --out
    r = carcell("run", example, "--out", "out", *FAST, "--no-plots", exe=(exe,), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Cmax" in r.stdout
    check_outputs(out, N, example, plots=False)   # the same example's plots: test_run_example_end_to_end
    r = carcell("validate", example, exe=(exe,), cwd=tmp_path)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_validate_example(example):
    r = carcell_in_process("validate", example)   # in a process of its own: test_console_script_end_to_end
    assert r.returncode == 0, r.stderr
    assert expected_name(example) in r.stdout
    assert "valid" in r.stdout
    assert "Traceback" not in r.stderr


def test_validate_applies_set():
    r = carcell("validate", ROOT / "examples" / "minimal.yaml", "--set", "population.n=37",
                "--set", "name=renamed by set")
    assert r.returncode == 0, r.stderr
    assert "renamed by set" in r.stdout and "n=37" in r.stdout


def test_set_dose_reaches_provenance(tmp_path):
    out = tmp_path / "o"
    r = carcell("run", ROOT / "examples" / "axicel_lbcl.yaml", "--out", out, "-n", 3, "--no-plots",
                "--set", "product.dose.cells_per_kg=5e6", "--set", "trial.follow_up_days=30")
    assert r.returncode == 0, r.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["scenario"]["product"]["dose"]["cells_per_kg"] == 5e6
    assert prov["scenario"]["product"]["dose"]["cells"] is None
    assert prov["scenario"]["trial"]["follow_up_days"] == 30
    assert prov["scenario"]["population"]["n"] == 3
    # the override is what was simulated, not only what was recorded
    df = pd.read_parquet(out / "patients.parquet")
    assert df["dose_cells"].to_numpy() == pytest.approx(5e6 * df["weight_kg"].to_numpy(), rel=1e-12)
    assert not (out / "kinetics.png").exists()  # --no-plots


def _run_with_stderr_on_a_terminal(args, cwd):
    """Run the CLI with stdout piped and stderr on a pseudo-terminal; return (rc, stdout, stderr)."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = _env()
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "carcell", *map(str, args)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child has closed the terminal
                break
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout = proc.stdout.read().decode()
    proc.stdout.close()
    rc = proc.wait()
    reader.join()
    os.close(master)
    return rc, stdout, b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_stderr_summary_on_stdout(tmp_path):
    rc, stdout, stderr = _run_with_stderr_on_a_terminal(
        ["run", ROOT / "examples" / "tisacel_ball.yaml", "--out", tmp_path / "o", "-n", 6,
         "--no-plots", "--set", "trial.follow_up_days=120"], cwd=tmp_path)
    assert rc == 0, stderr
    assert "simulating" in stderr, stderr      # the progress bar, drawn on the terminal
    assert "100%" in stderr                      # and it reaches the end
    assert "simulating" not in stdout
    assert "Cmax" in stdout and "Cmax" not in stderr
    assert "\x1b[" not in stdout                 # stdout is a pipe: no terminal control codes


@pytest.mark.parametrize("example", TRIAL_EXAMPLES, ids=lambda p: p.stem)
def test_trial_example_end_to_end(example, tmp_path):
    """A trial example, shortened: trial.json has every arm with its endpoints, and the patient
    table has one row per randomised patient with an arm."""
    out = tmp_path / "out"
    raw = load_yaml(example)
    # with an access section n counts a region's eligible patients, of whom about a tenth are
    # referred and randomised: enough eligible patients for a few in every arm
    n = 12 if "access" not in raw else 600
    r = carcell_in_process("run", example, "--out", out, "-n", n, "--set", "trial.follow_up_days=60", "--no-plots")
    assert r.returncode == 0, r.stderr
    trial = json.loads((out / "trial.json").read_text())
    assert [a["name"] for a in raw["trial"]["arms"]] == list(trial["arms"])
    df = pd.read_parquet(out / "patients.parquet")
    randomised = 12 if "access" not in raw else int(pd.read_parquet(out / "access.parquet")["referred"].sum())
    assert len(df) == randomised and set(df["arm"]) <= set(trial["arms"])
    assert sum(a["n_randomised"] for a in trial["arms"].values()) == randomised
    for arm in trial["arms"].values():
        assert {"orr", "cr", "pfs", "os"} <= set(arm)


def test_timeline_plots_one_patient_and_names_a_missing_one(tmp_path):
    """`carcell timeline`: a PNG for a patient of the run (the satri-cel example, whose tumour
    has its own macrophages, so every panel has data); a patient id not in the run is refused
    with the ids it has."""
    out = tmp_path / "out"
    r = carcell_in_process("run", ROOT / "examples" / "satricel_gastric.yaml", "--out", out,
                           "-n", "4", "--set", "trial.follow_up_days=30", "--no-plots")
    assert r.returncode == 0, r.stderr
    r = carcell_in_process("timeline", out, "-p", "2")
    assert r.returncode == 0, r.stderr
    assert (out / "timeline_2.png").read_bytes()[:8] == PNG_MAGIC
    r = carcell("timeline", out, "-p", "9")   # the real command: its error handling included
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "--patient 9" in r.stdout + r.stderr and "0-3" in r.stdout + r.stderr


HEAVY = ("pandas", "scipy", "xarray", "matplotlib", "SALib", "numba", "jax", "libsbml", "dask")


def test_the_command_line_starts_without_the_heavy_libraries():
    """Importing the command line (every command does) loads none of the heavy libraries: they
    come with the commands that use them (carcell/lazy.py; docs/benchmarks.md, command start-up).
    The lazily exported names still resolve, and an unknown one is an AttributeError."""
    code = ("import sys, carcell.cli\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "import carcell.published, carcell.interop, carcell.sensitivity\n"
            "for pkg in (carcell.published, carcell.interop, carcell.sensitivity):\n"
            "    try:\n"
            "        pkg.no_such_name\n"
            "    except AttributeError as e:\n"
            "        print(e)\n"
            "from carcell.published import PRESETS, Check\n"
            "from carcell.interop import load_sbml\n"
            "from carcell.sensitivity import parse_param\n"
            "print(len(PRESETS), Check.__name__, load_sbml.__name__, parse_param.__name__)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "", f"imported with carcell.cli: {lines[0]}"
    for pkg, line in zip(("published", "interop", "sensitivity"), lines[1:4]):
        assert line == f"module 'carcell.{pkg}' has no attribute 'no_such_name'", line
    n, *names = lines[4].split()
    assert int(n) >= 5 and names == ["Check", "load_sbml", "parse_param"]


@pytest.mark.parametrize("args, says", [
    (("trial", "examples/trial_eliana.yaml"), "No such command 'trial'"),
    (("run",), "Missing argument"),
    (("run", "examples/minimal.yaml", "--nosuch"), "No such option: --nosuch"),
], ids=["unknown-command", "missing-argument", "unknown-option"])
def test_usage_errors_are_messages_not_tracebacks(args, says):
    """A mistyped command line gets click's usage message and exit status 2, whichever click
    (its own, or typer's copy of it) raised the error; never a traceback."""
    r = carcell(*args)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and "Usage:" in r.stderr and "--help" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
