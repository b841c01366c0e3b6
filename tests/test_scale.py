"""Chunked, resumable, distributable runs (carcell/scale, docs/scale.md).

The reference everywhere is the unchunked path that predates carcell.scale: ``run_trial`` on
the whole cohort in one piece, written by ``write_trial_outputs``. Every chunked run (any chunk
size, a local pool, a Dask cluster, a run killed and resumed, a cluster losing a worker) must
give the same per-patient table, compared as file bytes of patients.parquet (and events.parquet
and trial.json), which implies exact float equality. The scenario is a two-arm randomised trial
(axi-cel against standard of care, with patients who are never infused), so chunks differ in
which arms and parts they hold. Small cohorts and 30 days of follow-up keep it fast.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from carcell.io.outputs import write_trial_outputs
from carcell.scale import RunDirectoryError, run_chunked
from carcell.scale.merge import RowGroupWriter
from carcell.scale.store import ChunkStore, chunk_layout, scenario_fingerprint
from carcell.scenario.load import load_scenario
from carcell.trial.run import run_trial

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = ROOT / "examples" / "trial_zuma7_axicel_vs_soc.yaml"
N = 24
SETS = [f"population.n={N}", "trial.follow_up_days=30"]
COMPARED = ("patients.parquet", "events.parquet", "trial.json")


def scenario(*extra: str):
    return load_scenario(SCENARIO, SETS + list(extra))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The unchunked run, written as before carcell.scale existed."""
    out = tmp_path_factory.mktemp("reference")
    write_trial_outputs(run_trial(scenario()), out)
    return out


def assert_same_files(out: Path, reference: Path) -> None:
    for f in COMPARED:
        assert (out / f).read_bytes() == (reference / f).read_bytes(), f
    df = pd.read_parquet(out / "patients.parquet")
    assert list(df["patient_id"]) == list(range(N))   # no patient lost or duplicated


def _env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}


def cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "carcell", "run", str(SCENARIO), "-n", str(N), "--no-plots",
                             "--set", "trial.follow_up_days=30", *map(str, args)],
                            cwd=ROOT, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def cli_run(*args) -> subprocess.CompletedProcess:
    p = cli(*args)
    stdout, stderr = p.communicate()
    return subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr)


def finished_chunks(out: Path) -> int:
    try:
        return len(json.loads((out / "chunks" / "manifest.json").read_text())["finished"])
    except (OSError, ValueError):
        return 0


# -- the pieces ------------------------------------------------------------------------------

def test_layout_covers_every_patient_once():
    ids = np.arange(23)
    for size, parallel in ((5, 1), (10, 4), (100, 1), (1, 1)):
        chunks = chunk_layout(ids, size, parallel)
        assert np.array_equal(np.concatenate([c.ids for c in chunks]), ids)
        assert max(c.ids.size for c in chunks) <= size
        assert len(chunks) >= min(parallel, ids.size)


def test_fingerprint_ignores_only_execution_fields():
    base = scenario_fingerprint(scenario())
    assert scenario_fingerprint(scenario("trial.workers=2", "trial.solver.chunk_size=3",
                                         "trial.scheduler=tcp://127.0.0.1:8786")) == base
    assert scenario_fingerprint(scenario("population.seed=8")) != base
    assert scenario_fingerprint(scenario("trial.solver.rtol=1e-7")) != base


def test_row_groups_do_not_depend_on_how_rows_arrive(tmp_path):
    """The streamed tables' bytes depend on their rows only, not on the chunks they came in."""
    table = pa.table({"patient_id": np.arange(23), "x": np.linspace(0, 1, 23)})
    files = []
    for k, cuts in enumerate(([23], [1, 22], [5, 5, 5, 5, 3], [10, 13])):
        w = RowGroupWriter(tmp_path / f"t{k}.parquet", table.schema, rows=4)
        start = 0
        for c in cuts:
            w.write(table.slice(start, c))
            start += c
        w.close()
        files.append((tmp_path / f"t{k}.parquet").read_bytes())
        meta = pq.ParquetFile(tmp_path / f"t{k}.parquet").metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [4, 4, 4, 4, 4, 3]
    assert all(f == files[0] for f in files)
    assert not list(tmp_path.glob("*.tmp"))


# -- the same bytes whatever the execution ----------------------------------------------------

@pytest.mark.parametrize("chunk,workers", [(5, 1), (7, 2)])
def test_chunk_size_and_local_pool_give_the_unchunked_bytes(tmp_path, reference, chunk, workers):
    run = run_chunked(scenario(f"trial.solver.chunk_size={chunk}", f"trial.workers={workers}"), tmp_path / "o")
    assert run.layout == "whole" and run.chunks == -(-N // chunk)
    assert_same_files(tmp_path / "o", reference)
    with xr.open_dataset(tmp_path / "o" / "trajectories.nc") as a, \
            xr.open_dataset(reference / "trajectories.nc") as b:
        xr.testing.assert_identical(a, b)
    assert not (tmp_path / "o" / "chunks").exists()   # a whole-cohort run keeps only its final files


def test_large_layout_streams_the_same_table(tmp_path, reference):
    """Above whole_cohort_max the tables are streamed from the chunks: same rows and columns,
    the same bytes for two chunk sizes; trajectories stay in the chunks, with percentile bands."""
    outs = []
    for chunk in (8, 12):
        out = tmp_path / f"c{chunk}"
        run = run_chunked(scenario(f"trial.solver.chunk_size={chunk}"), out, whole_cohort_max=10)
        assert run.layout == "large"
        outs.append(out)
    for f in ("patients.parquet", "events.parquet", "trial.json"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "patients.parquet"),
                                  pd.read_parquet(reference / "patients.parquet"), check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(outs[0] / "events.parquet"),
                                  pd.read_parquet(reference / "events.parquet"), check_exact=True)
    assert json.loads((outs[0] / "trial.json").read_text()) == json.loads((reference / "trial.json").read_text())
    assert json.loads((outs[0] / "chunks" / "manifest.json").read_text())["complete"] is True
    with xr.open_dataset(outs[0] / "trajectory_bands.nc") as bands, \
            xr.open_dataset(reference / "trajectories.nc") as full:
        car = full.sel(patient=full["arm"] == "axi-cel")
        median = np.nanpercentile(car["car_cells_per_ul"].to_numpy().astype(float), 50, axis=0)
        got = bands["car_cells_per_ul"].sel(arm="axi-cel", percentile=50.0).to_numpy()
        np.testing.assert_allclose(got, median, rtol=1e-6)   # float32 storage of the bands


# -- a real Dask cluster on loopback -----------------------------------------------------------

needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="Dask distributed is not installed (pip install 'carcell[scale]')")


@needs_dask
def test_dask_cluster_gives_the_unchunked_bytes(tmp_path, reference):
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster:
        r = cli_run("--out", tmp_path / "o", "--chunk-size", 6, "--scheduler", cluster.scheduler_address)
    assert r.returncode == 0, r.stderr
    assert_same_files(tmp_path / "o", reference)


@needs_dask
def test_unreachable_scheduler_is_one_line(tmp_path):
    r = cli_run("--out", tmp_path / "o", "--scheduler", "tcp://127.0.0.1:9")
    assert r.returncode == 2
    assert "no Dask scheduler answered" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# -- crash safety ---------------------------------------------------------------------------------

def test_kill_9_then_resume_loses_and_duplicates_nothing(tmp_path, reference):
    out = tmp_path / "o"
    p = cli("--out", out, "--chunk-size", 4)   # 6 chunks, in this process
    while finished_chunks(out) < 2 and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    done = finished_chunks(out)
    assert 2 <= done < 6
    # what a crash can leave: a half-written chunk, and a finished chunk damaged afterwards
    (out / "chunks" / ".tmp-000007-999999").mkdir(exist_ok=True)
    (out / "chunks" / ".tmp-000007-999999" / "patients.parquet").write_bytes(b"PAR1 half")
    damaged = out / "chunks" / "000000" / "events.parquet"
    damaged.write_bytes(damaged.read_bytes()[:-10])

    again = cli_run("--out", out)   # no --resume: refused, nothing deleted
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    assert finished_chunks(out) == done

    r = cli_run("--out", out, "--resume", "--workers", 2)   # another worker count may finish it
    assert r.returncode == 0, r.stderr
    assert f"resumed: {done - 1} of 6 chunks were already finished" in r.stderr   # the damaged one redone
    assert_same_files(out, reference)


def test_resume_refuses_another_scenario(tmp_path):
    out = tmp_path / "o"
    sc = scenario("trial.solver.chunk_size=6")
    ids = np.arange(N)
    ChunkStore.create(out, sc, chunk_layout(ids, 6), whole=True)
    manifest = (out / "chunks" / "manifest.json").read_bytes()
    with pytest.raises(RunDirectoryError, match="scenario differs"):
        run_chunked(scenario("population.seed=99"), out, resume=True)
    r = cli_run("--out", out, "--resume", "--seed", 99)
    assert r.returncode == 2 and "the scenario differs" in r.stderr and "Traceback" not in r.stderr
    assert (out / "chunks" / "manifest.json").read_bytes() == manifest
    r = cli_run("--out", tmp_path / "empty", "--resume")
    assert r.returncode == 2 and "holds no chunked run" in r.stderr


def _dask(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_" + args[0], *args[1:]],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(), **kw)


@needs_dask
def test_worker_killed_mid_chunk_the_run_completes(tmp_path, reference):
    """A scheduler and two workers started as `dask scheduler` / `dask worker` would be; one
    worker is killed with SIGKILL while it simulates a chunk; the scheduler gives the chunk to
    the other worker and the run finishes with the same bytes."""
    import distributed

    file = tmp_path / "scheduler.json"
    procs = [_dask("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                   "--scheduler-file", str(file))]
    try:
        while not file.exists():
            time.sleep(0.1)
        for _ in range(2):
            procs.append(_dask("worker", "--scheduler-file", str(file), "--nthreads", "1", "--no-nanny",
                               "--no-dashboard", "--host", "127.0.0.1"))
        address = json.loads(file.read_text())["address"]
        with distributed.Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            out = tmp_path / "o"
            run = cli("--out", out, "--chunk-size", 4, "--scheduler", address)
            victim = None
            while victim is None and run.poll() is None:
                busy = {w: keys for w, keys in client.processing().items()
                        if any("chunk" in str(k) for k in keys)}
                if finished_chunks(out) >= 1 and len(busy) == 2:
                    victim = next(iter(busy))
                time.sleep(0.05)
            assert victim is not None, "the run finished before a worker could be killed"
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
            stdout, stderr = run.communicate()
            assert list(client.scheduler_info()["workers"]) != [] and victim not in client.scheduler_info()["workers"]
        assert run.returncode == 0, stderr
        assert_same_files(out, reference)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
