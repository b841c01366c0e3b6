"""The chunk store of a run directory: finished chunks on disk, and the manifest that lists them.

Layout (``OUT/chunks/``)::

    manifest.json          the scenario's hash, the chunk layout, and every finished chunk with
                           the SHA-256, size and row count of each of its files
    000017/                one finished chunk: patients.parquet, events.parquet, trajectories.nc,
                           and (whole-cohort runs) cohort_<arm>_patients/events.parquet

Crash safety rests on two renames. A chunk is written into a temporary directory
(``.tmp-000017-<pid>``), flushed to disk, then renamed to ``000017``; only then is it added to
the manifest, which is itself written to ``manifest.json.tmp``, flushed and renamed over the
old one. A run killed at any moment leaves either a chunk listed in the manifest whose files
hash as recorded, or no entry at all; a directory that is not listed (or whose hashes do not
match) is recomputed on ``--resume``, never read.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

import carcell
from carcell.errors import CarcellError
from carcell.scenario.schema import Scenario

MANIFEST = "manifest.json"
CHUNKS = "chunks"
FORMAT = 1
#: the trial fields that decide how a run is executed, not what it computes
EXECUTION_FIELDS = ("workers", "scheduler")


class RunDirectoryError(CarcellError, ValueError):
    """An output directory that cannot be used as asked (a chunked run there, a manifest that
    does not match the scenario)."""


def scenario_fingerprint(scenario: Scenario) -> str:
    """SHA-256 of the scenario without its execution fields (workers, scheduler, chunk size):
    those change where and in what pieces patients are simulated, never a number."""
    raw = scenario.model_dump(mode="json")
    for key in EXECUTION_FIELDS:
        raw["trial"].pop(key, None)
    raw["trial"]["solver"].pop("chunk_size", None)
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write-then-rename: readers see the old file or the new one, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def dtypes_of(df: pd.DataFrame) -> dict[str, str]:
    return {c: str(t) for c, t in df.dtypes.items()}


def _write_frame(df: pd.DataFrame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def _read_frame(path: Path, dtypes: dict[str, str]) -> pd.DataFrame:
    """A chunk table as it was in memory: Parquet returns a bool column without missing values
    where pandas had objects, so each column gets back the dtype recorded when it was written."""
    df = pq.read_table(path).to_pandas()
    for c, t in dtypes.items():
        if str(df[c].dtype) != t:
            df[c] = df[c].astype(t)
    return df


@dataclass
class Chunk:
    """The patients of one chunk: ids ascending, all arms."""

    index: int
    ids: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.index:06d}"


def chunk_layout(ids: np.ndarray, chunk_size: int, parallel: int = 1) -> list[Chunk]:
    """Cut the trial's patient ids into chunks of at most ``chunk_size``, and into at least
    ``parallel`` chunks so every worker has one."""
    n = int(ids.size)
    size = max(1, min(chunk_size, -(-n // max(parallel, 1))))
    return [Chunk(k, ids[start:start + size]) for k, start in enumerate(range(0, n, size))]


@dataclass
class ChunkData:
    """A finished chunk read back from disk (see :meth:`ChunkStore.read`)."""

    patients: pd.DataFrame
    events: pd.DataFrame
    trajectories: dict[str, np.ndarray]
    trajectory_ids: np.ndarray
    trajectory_arms: np.ndarray          # arm index of each trajectory row
    times: np.ndarray | None
    cohort_patients: dict[int, pd.DataFrame]
    cohort_events: dict[int, pd.DataFrame]
    column_parts: list


class ChunkStore:
    """Finished chunks of one run directory and its manifest (see the module docstring)."""

    def __init__(self, out: Path, manifest: dict):
        self.out = Path(out)
        self.dir = self.out / CHUNKS
        self.manifest = manifest

    # -- opening -------------------------------------------------------------------------------

    @staticmethod
    def exists(out: Path) -> bool:
        return (Path(out) / CHUNKS / MANIFEST).exists()

    @classmethod
    def check_new(cls, out: Path) -> None:
        """Refuse to start a run where one was started (its results are never overwritten)."""
        if cls.exists(out):
            raise RunDirectoryError(
                f"--out {out}: holds a chunked run ({CHUNKS}/{MANIFEST}); add --resume to finish or re-merge "
                f"it, or choose another --out (nothing was deleted)")

    @classmethod
    def create(cls, out: Path, scenario: Scenario, chunks: list[Chunk], whole: bool) -> ChunkStore:
        """A new run: refuses a directory that already holds a chunked run."""
        out = Path(out)
        cls.check_new(out)
        (out / CHUNKS).mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT, "carcell_version": carcell.__version__,
            "scenario_fingerprint": scenario_fingerprint(scenario), "scenario_name": scenario.name,
            "n_patients": int(sum(c.ids.size for c in chunks)), "whole_cohort_outputs": whole,
            "chunks": [[int(c.ids[0]), int(c.ids[-1]), int(c.ids.size)] for c in chunks],
            "finished": {}, "complete": False,
        }
        store = cls(out, manifest)
        write_json_atomic(store.dir / MANIFEST, manifest)
        return store

    @classmethod
    def open(cls, out: Path, scenario: Scenario) -> ChunkStore:
        """An interrupted (or finished) run, for ``--resume``: the scenario must be the one the
        manifest was written for; finished chunks whose files are missing or altered are dropped
        (and recomputed); unlisted leftovers of a killed run are removed."""
        out = Path(out)
        path = out / CHUNKS / MANIFEST
        if not path.exists():
            raise RunDirectoryError(f"--resume: {out} holds no chunked run ({CHUNKS}/{MANIFEST} is missing); "
                                    f"run without --resume to start one")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RunDirectoryError(f"--resume: {path} cannot be read ({err}); start again in another --out") from None
        if manifest.get("format") != FORMAT:
            raise RunDirectoryError(f"--resume: {path} has format {manifest.get('format')!r}, this carcell "
                                    f"writes {FORMAT}; start again in another --out")
        if manifest["scenario_fingerprint"] != scenario_fingerprint(scenario):
            raise RunDirectoryError(
                f"--resume: the scenario differs from the one {out} was started with "
                f"({manifest.get('scenario_name')!r}, {manifest['n_patients']} patients); only --workers, "
                f"--scheduler and --chunk-size may change on resume. Resume with the same scenario, --set "
                f"values, -n and --seed, or choose another --out")
        store = cls(out, manifest)
        store._drop_unverified()
        return store

    def _drop_unverified(self) -> None:
        finished = self.manifest["finished"]
        for name in list(finished):
            entry = finished[name]
            ok = all((self.dir / name / f).is_file() and (self.dir / name / f).stat().st_size == meta["bytes"]
                     and file_sha256(self.dir / name / f) == meta["sha256"] for f, meta in entry["files"].items())
            if not ok:
                del finished[name]
        for p in self.dir.iterdir():   # leftovers: temporary dirs, or renamed but never listed
            if p.is_dir() and p.name not in finished:
                shutil.rmtree(p)
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    # -- the layout -------------------------------------------------------------------------------

    def chunks(self, ids: np.ndarray) -> list[Chunk]:
        """The recorded layout over the trial's ids (a resumed run keeps the chunks it started with)."""
        out, pos = [], 0
        for k, (first, last, count) in enumerate(self.manifest["chunks"]):
            part = ids[pos:pos + count]
            if part.size != count or int(part[0]) != first or int(part[-1]) != last:
                raise RunDirectoryError(f"--resume: {self.dir / MANIFEST}: chunk {k} does not match the "
                                        f"scenario's patients; start again in another --out")
            out.append(Chunk(k, part))
            pos += count
        return out

    @property
    def whole(self) -> bool:
        return bool(self.manifest["whole_cohort_outputs"])

    def finished(self) -> set[int]:
        return {int(k) for k in self.manifest["finished"]}

    # -- writing and reading one chunk -------------------------------------------------------------

    def write(self, chunk: Chunk, result) -> None:
        """Store a chunk's :class:`carcell.trial.run.TrialResult` (write, flush, rename, then list)."""
        tmp = self.dir / f".tmp-{chunk.name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        dtypes = {"patients": dtypes_of(result.patients), "events": dtypes_of(result.events)}
        arm_index = {a.name: j for j, a in enumerate(result.arms)}
        _write_frame(result.patients, tmp / "patients.parquet")
        _write_frame(result.events, tmp / "events.parquet")
        if result.trajectories:
            arm_of = dict(zip(result.patients["patient_id"], result.patients["arm"]))
            ds = xr.Dataset({q: (("patient", "time"), v) for q, v in result.trajectories.items()},
                            coords={"patient": result.trajectory_ids, "time": result.times})
            ds["arm_index"] = ("patient", np.array([arm_index[arm_of[i]] for i in result.trajectory_ids], np.int16))
            ds.to_netcdf(tmp / "trajectories.nc", engine="netcdf4",
                         encoding={q: {"zlib": True, "complevel": 1} for q in result.trajectories})
        if self.whole:   # the cohorts' own tables, for the whole-cohort files and plots
            for name, cohort in result.cohorts.items():
                j = arm_index[name]
                dtypes[f"cohort_{j}_patients"] = dtypes_of(cohort.patients)
                dtypes[f"cohort_{j}_events"] = dtypes_of(cohort.events)
                _write_frame(cohort.patients, tmp / f"cohort_{j}_patients.parquet")
                _write_frame(cohort.events, tmp / f"cohort_{j}_events.parquet")
        files = {}
        for f in sorted(tmp.iterdir()):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.name] = {"sha256": file_sha256(f), "bytes": f.stat().st_size}
        _fsync_dir(tmp)
        final = self.dir / chunk.name
        if final.exists():   # an unlisted leftover of a killed run
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(self.dir)
        self.manifest["finished"][chunk.name] = {
            "patients": int(len(result.patients)), "events": int(len(result.events)),
            "files": files, "dtypes": dtypes,
            "column_parts": [[j, part, cols] for j, part, cols in result.column_parts],
        }
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    def entry(self, index: int) -> dict:
        return self.manifest["finished"][f"{index:06d}"]

    def read(self, index: int, *, tables: bool = True) -> ChunkData:
        """A finished chunk's tables and trajectories, as the chunk's result had them."""
        name = f"{index:06d}"
        entry, d = self.entry(index), self.dir / name
        dt = entry["dtypes"]
        patients = _read_frame(d / "patients.parquet", dt["patients"]) if tables else pd.DataFrame()
        events = _read_frame(d / "events.parquet", dt["events"]) if tables else pd.DataFrame()
        traj, tids, tarms, times = {}, np.array([], np.int64), np.array([], np.int16), None
        if (d / "trajectories.nc").exists():
            with xr.open_dataset(d / "trajectories.nc", engine="netcdf4") as ds:
                traj = {q: ds[q].to_numpy() for q in ds.data_vars if q != "arm_index"}
                tids = ds["patient"].to_numpy().astype(np.int64)
                tarms = ds["arm_index"].to_numpy()
                times = ds["time"].to_numpy()
        cp, ce = {}, {}
        for key in dt:
            if key.startswith("cohort_") and tables:
                j, what = int(key.split("_")[1]), key.split("_")[2]
                frame = _read_frame(d / f"{key}.parquet", dt[key])
                (cp if what == "patients" else ce)[j] = frame
        return ChunkData(patients, events, traj, tids, tarms, times, cp, ce,
                         [tuple(p) for p in entry["column_parts"]])

    def mark_complete(self) -> None:
        self.manifest["complete"] = True
        write_json_atomic(self.dir / MANIFEST, self.manifest)

    def remove(self) -> None:
        """Drop the chunks of a whole-cohort run once its final files are written (they hold
        nothing the final files do not)."""
        shutil.rmtree(self.dir)
