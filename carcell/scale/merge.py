"""Assemble a run's final files from its finished chunks.

Two layouts, chosen by the number of patients alone (never by the chunking):

- whole-cohort (up to :data:`WHOLE_COHORT_MAX` patients): the chunks are read back and joined
  into one :class:`carcell.trial.run.TrialResult`, identical to an unchunked run's, and written
  by :func:`carcell.io.outputs.write_trial_outputs` as always (patients.parquet, events.parquet,
  trajectories.nc, summary.json, trial.json; plots by the caller).
- large: nothing of size N x time is held. patients.parquet and events.parquet are streamed
  chunk by chunk, in chunk order, into fixed-size row groups (so their bytes do not depend on the
  chunk size); the statistics (summary.json, trial.json) read only the columns they use; the
  trajectories stay in ``chunks/*/trajectories.nc``, and ``trajectory_bands.nc`` holds their
  5/25/50/75/95th percentiles per arm, from the first :data:`WHOLE_COHORT_MAX` simulated
  patients of each arm.

A chunk's rows are those of the full run restricted to its patients, but which columns a chunk
has, and their pandas dtypes, can depend on who is in it (a chunk without never-infused patients
has no reason to widen ``hematotox_score`` from int to float). The full table's column order is
rebuilt from the parts each chunk recorded (:func:`canonical_columns`) and its dtypes by letting
pandas concatenate one row of every chunk (:func:`table_template`), the rule that concatenating
every row would have followed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from carcell.cohort.run import CohortResult, scenario_design
from carcell.io.outputs import patient_units, write_trial_outputs
from carcell.knowledge import load_knowledge
from carcell.scale.store import Chunk, ChunkStore

#: above this many patients in the trial, the large-run layout (module docstring)
WHOLE_COHORT_MAX = 10_000
#: rows per Parquet row group of the streamed tables
ROW_GROUP_ROWS = 65_536
#: percentiles of trajectory_bands.nc
BAND_PERCENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
#: the columns summary.json and trial.json read (carcell.io.outputs.summary, carcell.trial.stats)
STATISTICS_COLUMNS = (
    "patient_id", "arm", "arm_kind", "infused", "solver_status", "best_response", "mrd_negative",
    "progression_day", "relapse_antigen", "death_cause", "pfs_days", "pfs_event", "efs_days", "efs_event",
    "os_days", "os_event", "dor_days", "dor_event", "cmax_cells_per_ul", "cmax_copies_per_ug", "tmax_days",
    "auc_0_28_copies_day_per_ug", "il6_peak_pg_per_ml", "crs_max_grade", "crs_onset_day", "crs_duration_days",
    "icans_max_grade", "tocilizumab_doses", "tocilizumab_response", "steroid_days", "icu_days", "hematotox_high_risk",
    "severe_neutropenia_days", "icaht_grade", "ivig_doses", "igg_nadir",
)
EVENT_COLUMNS = ["patient_id", "arm", "day", "event", "value", "detail"]


def _union(a: list[str], b: Iterable[str]) -> list[str]:
    seen = set(a)
    return a + [c for c in b if c not in seen and not seen.add(c)]


def canonical_columns(column_parts: Iterable[tuple[int, str, list[str]]]) -> list[str]:
    """The patients table's columns in the order of the unchunked run (carcell.trial.run): arm
    by arm, each arm's infused rows, then its never-infused rows, then the chain's columns, with
    ``arm`` and ``arm_kind`` second and third; a comparator arm's rows as they are."""
    parts: dict[tuple[int, str], list[str]] = {}
    for j, part, cols in column_parts:
        parts.setdefault((int(j), part), list(cols))
    out: list[str] = []
    for j in sorted({j for j, _ in parts}):
        cols: list[str] = []
        for part in ("soc", "infused", "not_infused", "chain"):
            cols = _union(cols, parts.get((j, part), []))
        cols = [c for c in cols if c not in ("arm", "arm_kind")]
        out = _union(out, cols[:1] + ["arm", "arm_kind"] + cols[1:])
    return out


def _first_rows(store: ChunkStore, chunks: list[Chunk], table: str, columns: list[str] | None) -> pd.DataFrame:
    """One row of every chunk that has one, with the dtypes it had in memory; concatenated, they
    give the dtype of every column of the full table."""
    from carcell.scale.store import _read_frame   # noqa: PLC0415 - the store's own reader

    rows = []
    for c in chunks:
        entry = store.entry(c.index)
        if entry[table] == 0:
            continue
        frame = _read_frame(store.dir / c.name / f"{table}.parquet", entry["dtypes"][table])
        rows.append(frame.iloc[:1])
    if not rows:
        return pd.DataFrame(columns=columns or [])
    template = pd.concat(rows, ignore_index=True)
    return template if columns is None else template.reindex(columns=columns)


def _conform(df: pd.DataFrame, template: pd.DataFrame) -> pd.DataFrame:
    """A chunk's table with the full table's columns (missing ones empty) and dtypes."""
    df = df.reindex(columns=template.columns)
    for c in template.columns:
        if df[c].dtype != template[c].dtype:
            df[c] = df[c].astype(template[c].dtype)
    return df


def _as_written(df: pd.DataFrame) -> pd.DataFrame:
    """Text columns as strings, as carcell.io.outputs writes every table."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object:
            df[c] = df[c].astype("string")
    df.attrs = {}
    return df


class RowGroupWriter:
    """Append tables to one Parquet file in row groups of exactly ``rows`` rows (the last one
    shorter), so the file's bytes depend on its rows, not on how they arrived; written to
    ``PATH.tmp`` and renamed on close."""

    def __init__(self, path: Path, schema: pa.Schema, rows: int = ROW_GROUP_ROWS):
        self.path, self.rows, self.schema = Path(path), rows, schema
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, schema)
        self.buffer: list[pa.Table] = []
        self.buffered = 0

    def write(self, table: pa.Table) -> None:
        self.buffer.append(table)
        self.buffered += table.num_rows
        if self.buffered >= self.rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buffer:
            return
        table = pa.concat_tables(self.buffer).combine_chunks()
        start = 0
        while table.num_rows - start >= self.rows or (final and start < table.num_rows):
            piece = table.slice(start, min(self.rows, table.num_rows - start))
            self.writer.write_table(piece, row_group_size=self.rows)
            start += piece.num_rows
        rest = table.slice(start)
        self.buffer, self.buffered = ([rest], rest.num_rows) if rest.num_rows else ([], 0)

    def close(self) -> None:
        self._flush(final=True)
        self.writer.close()
        os.replace(self.tmp, self.path)


def stream_table(store: ChunkStore, chunks: list[Chunk], table: str, template: pd.DataFrame, path: Path,
                 units: dict[str, str] | None = None) -> int:
    """Stream one table of every chunk, in chunk order, into ``path``; returns its rows."""
    from carcell.scale.store import _read_frame   # noqa: PLC0415

    schema = pa.Schema.from_pandas(_as_written(template.iloc[:0]), preserve_index=False)
    if units is not None:
        schema = schema.with_metadata({**(schema.metadata or {}), b"carcell.units": json.dumps(units).encode()})
    writer, n = RowGroupWriter(path, schema), 0
    for c in chunks:
        entry = store.entry(c.index)
        df = _as_written(_conform(_read_frame(store.dir / c.name / f"{table}.parquet", entry["dtypes"][table]),
                                  template))
        writer.write(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
        n += len(df)
    writer.close()
    return n


def statistics_frame(store: ChunkStore, chunks: list[Chunk], template: pd.DataFrame,
                     columns: Iterable[str] | None) -> pd.DataFrame:
    """The patients table with only the columns the statistics read (all, when ``columns`` is
    None), with the dtypes of the whole table in memory."""
    keep = list(template.columns) if columns is None else [c for c in template.columns if c in set(columns)]
    sub = template[keep]
    rows = [store.entry(c.index)["patients"] for c in chunks]   # the manifest's row counts
    # Each column is filled chunk by chunk into one array of the full table's dtype (what
    # concatenating the chunks would give, by the template's construction), so the chunks' parts
    # and their concatenation are never held together (docs/scale.md, memory at 10^6).
    # Extension dtypes, if any, are concatenated as before.
    numpy_cols = [k for k in keep if isinstance(sub[k].dtype, np.dtype)]
    arrays = {k: np.empty(sum(rows), dtype=sub[k].dtype) for k in numpy_cols}
    other: dict[str, list] = {k: [] for k in keep if k not in arrays}
    start = 0
    for c, n in zip(chunks, rows):
        dtypes = store.entry(c.index)["dtypes"]["patients"]
        have = [k for k in keep if k in dtypes]
        df = pq.read_table(store.dir / c.name / "patients.parquet", columns=have).to_pandas()
        for k in have:
            if str(df[k].dtype) != dtypes[k]:
                df[k] = df[k].astype(dtypes[k])
        df = _conform(df, sub)
        for k, a in arrays.items():
            a[start:start + n] = df[k].to_numpy(dtype=a.dtype)
        for k, parts in other.items():
            parts.append(df[k])
        start += n
    for k, parts in other.items():
        arrays[k] = pd.concat(parts, ignore_index=True).array
    return pd.DataFrame({k: arrays[k] for k in keep}, columns=keep, copy=False)


def _cohort_design(arm):
    return scenario_design(arm.scenario, load_knowledge())[0]


def assemble(store: ChunkStore, plan, chunks: list[Chunk]):
    """The whole trial in memory from its chunks: equal to ``run_trial(scenario)``'s result."""
    from carcell.trial.run import TrialResult   # noqa: PLC0415 - scale sits above the trial layer here

    data = [store.read(c.index) for c in chunks]
    columns = canonical_columns(p for d in data for p in d.column_parts)
    patients = pd.concat([d.patients for d in data], ignore_index=True)[columns]
    events = pd.concat([d.events for d in data], ignore_index=True)
    times = next((d.times for d in data if d.times is not None), None)
    traj = [d for d in data if d.trajectories]
    trajectories, order, arm_rows = {}, np.array([], dtype=np.int64), np.array([], dtype=np.int16)
    if traj:
        trajectories = {q: np.concatenate([d.trajectories[q] for d in traj]) for q in traj[0].trajectories}
        order = np.concatenate([d.trajectory_ids for d in traj])
        arm_rows = np.concatenate([d.trajectory_arms for d in traj])
    cohorts = {}
    for j, arm in enumerate(plan.arms):
        pieces = [d for d in data if j in d.cohort_patients]
        if not pieces:
            continue
        rows = arm_rows == j
        cohorts[arm.name] = CohortResult(
            arm.scenario, _cohort_design(arm), times,
            pd.concat([d.cohort_patients[j] for d in pieces], ignore_index=True),
            {q: v[rows] for q, v in trajectories.items()},
            pd.concat([d.cohort_events[j] for d in pieces if not d.cohort_events[j].empty]
                      or [pieces[0].cohort_events[j]], ignore_index=True))
    return TrialResult(plan.scenario, plan.arms, patients, events, times, trajectories, order, cohorts,
                       plan.chain, plan.population, plan.allocation)


def trajectory_bands(store: ChunkStore, chunks: list[Chunk], plan, path: Path, per_arm: int = WHOLE_COHORT_MAX) -> None:
    """Percentile bands of every trajectory per arm, over each arm's first ``per_arm`` simulated
    patients (by id), one quantity at a time."""
    with_traj = [c for c in chunks if (store.dir / c.name / "trajectories.nc").exists()]
    if not with_traj:
        return
    files = [store.dir / c.name / "trajectories.nc" for c in with_traj]
    with xr.open_dataset(files[0], engine="netcdf4") as ds:
        quantities, times = [q for q in ds.data_vars if q != "arm_index"], ds["time"].to_numpy()
        attrs = {q: dict(ds[q].attrs) for q in quantities}
    arm_idx = []
    for f in files:
        with xr.open_dataset(f, engine="netcdf4") as ds:
            arm_idx.append(ds["arm_index"].to_numpy())
    arms = sorted({int(a) for a in np.concatenate(arm_idx)})
    # which rows of which file enter the bands: each arm's first per_arm patients
    take, count = [], {j: 0 for j in arms}
    for a in arm_idx:
        rows = np.zeros(a.size, dtype=bool)
        for j in arms:
            hit = np.flatnonzero(a == j)[:max(0, per_arm - count[j])]
            rows[hit] = True
            count[j] += hit.size
        take.append(rows)
    q_levels = np.array(BAND_PERCENTILES)
    data = {}
    for q in quantities:
        per_arm_rows: dict[int, list[np.ndarray]] = {j: [] for j in arms}
        for f, a, rows in zip(files, arm_idx, take):
            if not rows.any():
                continue
            with xr.open_dataset(f, engine="netcdf4") as ds:
                v = ds[q].to_numpy()[rows]
            for j in arms:
                per_arm_rows[j].append(v[a[rows] == j])
        bands = np.stack([np.nanpercentile(np.concatenate(per_arm_rows[j]).astype(np.float64), q_levels, axis=0)
                          for j in arms]).astype(np.float32)
        data[q] = (("arm", "percentile", "time"), bands, attrs[q])
    ds = xr.Dataset(data, coords={
        "arm": ("arm", np.array([plan.arms[j].name for j in arms], dtype=object)),
        "percentile": ("percentile", q_levels), "time": ("time", times, {"units": "day"}),
        "patients": ("arm", np.array([count[j] for j in arms]), {"long_name": "patients in the bands"})},
        attrs={"title": f"carcell trajectory bands: {plan.scenario.name}"})
    tmp = path.with_name(path.name + ".tmp")
    ds.to_netcdf(tmp, engine="netcdf4")
    os.replace(tmp, path)


def write_large_outputs(store: ChunkStore, plan, chunks: list[Chunk], out: Path,
                        extra_provenance: dict | None = None) -> tuple[dict, object]:
    """The large-run layout (module docstring); returns trial.json's content and the trial with
    only its statistics columns (no trajectories, no events)."""
    from carcell.trial.run import TrialResult   # noqa: PLC0415
    from carcell.trial.stats import rows_where   # noqa: PLC0415

    parts = [tuple(p) for c in chunks for p in store.entry(c.index)["column_parts"]]
    columns = canonical_columns(parts)
    template = _first_rows(store, chunks, "patients", columns)
    stream_table(store, chunks, "patients", template, out / "patients.parquet", patient_units(columns))
    ev_template = _first_rows(store, chunks, "events", EVENT_COLUMNS)
    stream_table(store, chunks, "events", ev_template, out / "events.parquet")
    trajectory_bands(store, chunks, plan, out / "trajectory_bands.nc")
    # statistics: the columns they read (every column when a chain's costs are summarised)
    patients = statistics_frame(store, chunks, template, None if plan.chain is not None else STATISTICS_COLUMNS)
    times = None
    for c in chunks:
        f = store.dir / c.name / "trajectories.nc"
        if f.exists():
            with xr.open_dataset(f, engine="netcdf4") as ds:
                times = ds["time"].to_numpy()
            break
    empty_events = pd.DataFrame({c: pd.Series(dtype=t) for c, t in ev_template.dtypes.items()})
    cohorts = {}
    for arm in plan.arms:
        rows = (patients["arm"] == arm.name) & patients["infused"].astype(bool) if arm.kind == "car" else None
        if rows is not None and rows.any():
            # an arm that is every row (a single-arm trial, all infused) is the table itself, not a copy
            cohorts[arm.name] = CohortResult(arm.scenario, _cohort_design(arm), times,
                                             rows_where(patients, rows, renumber=True), {}, empty_events)
    result = TrialResult(plan.scenario, plan.arms, patients, empty_events, times, {}, np.array([], np.int64),
                         cohorts, plan.chain, plan.population, plan.allocation)
    extra = {**(extra_provenance or {}), "layout": "large (docs/scale.md)"}
    return write_trial_outputs(result, out, extra, tables=False), result


def write_whole_outputs(result, out: Path, extra_provenance: dict | None = None) -> dict:
    """The whole-cohort layout: the usual files of an unchunked run."""
    return write_trial_outputs(result, out, extra_provenance)


__all__ = ["WHOLE_COHORT_MAX", "RowGroupWriter", "assemble", "canonical_columns", "write_large_outputs",
           "write_whole_outputs"]
