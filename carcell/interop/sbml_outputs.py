"""Write an SBML cohort to an output directory with carcell's conventions.

``patients.parquet`` (one row per patient: drawn parameters, solver, each species' max, time
of max and final value; column units in the parquet metadata key ``carcell.units``),
``trajectories.nc`` (patient x time per species, time in days, units as attributes),
``trajectories.png`` (median and 5-95% band per species), ``summary.json`` and
``provenance.json`` (the model file's SHA-256, units, settings, versions).
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import carcell  # noqa: E402
from carcell.errors import CarcellError  # noqa: E402
from carcell.interop.sbml_cohort import SbmlCohortResult  # noqa: E402


def patient_units(result: SbmlCohortResult) -> dict[str, str]:
    """Unit of every column of ``result.patients``."""
    m = result.model
    units = {"patient_id": "1", "solver": "1", "solver_status": "1"}
    for name in result.settings.get("variability", {}):
        units[name] = f"as in {m.path.name} ({m.column_kinds[name]})"
    for sp in m.species:
        units[f"{sp.id}_max"] = sp.units
        units[f"{sp.id}_time_of_max_days"] = "day"
        units[f"{sp.id}_final"] = sp.units
    return units


def _quantiles(x: np.ndarray) -> dict:
    v = x[np.isfinite(x)]
    if v.size == 0:
        return {"median": None, "p5": None, "p95": None}
    p5, med, p95 = np.percentile(v, [5, 50, 95])
    return {"median": float(med), "p5": float(p5), "p95": float(p95)}


def summary(result: SbmlCohortResult) -> dict:
    """Per species: median and 5-95% of the peak, the day of the peak and the final value."""
    df = result.patients
    m = result.model
    return {
        "model": m.name, "model_id": m.model_id, "file": m.path.name,
        "cohort_size": int(len(df)), "solver_failures": int((df["solver_status"] != "ok").sum()),
        "solvers": {str(k): int(v) for k, v in df["solver"].value_counts().items()},
        "days": float(result.times_days[-1]), "model_time_unit": m.time_unit,
        "species": {sp.id: {"units": sp.units, "max": _quantiles(df[f"{sp.id}_max"].to_numpy(float)),
                            "time_of_max_days": _quantiles(df[f"{sp.id}_time_of_max_days"].to_numpy(float)),
                            "final": _quantiles(df[f"{sp.id}_final"].to_numpy(float))}
                    for sp in m.species},
    }


def provenance(result: SbmlCohortResult) -> dict:
    m = result.model
    return {
        "carcell_version": carcell.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "numpy": np.__version__,
        "sbml": {"file": str(m.path), "sha256": m.sha256, "model_id": m.model_id, "name": m.name,
                 "level": m.level, "version": m.version, "time_unit": m.time_unit,
                 "seconds_per_time_unit": m.time_unit_seconds, "notes": m.notes},
        "species_units": {sp.id: {"units": sp.units, "value": "amount" if sp.is_amount else "concentration",
                                  "compartment": sp.compartment} for sp in m.species},
        "parameters": {c: {"value": float(v), "kind": m.column_kinds[c]} for c, v in zip(m.columns, m.defaults)},
        "settings": result.settings,
        "time": "output time is in days; the model was integrated in its own unit "
                f"({m.time_unit}, {m.time_unit_seconds:g} s)",
    }


def plot_trajectories(result: SbmlCohortResult, path: Path) -> None:
    """Median and 5-95% band of every species over time (log axis when a species spans more
    than three decades and stays positive)."""
    m = result.model
    k = len(m.species)
    cols = min(3, max(k, 1))
    rows = max(1, -(-k // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, constrained_layout=True)
    t = result.times_days
    for ax, (i, sp) in zip(axes.flat, enumerate(m.species)):
        x = result.values[:, :, i]
        if not np.isfinite(x).any():
            ax.set_title(f"{sp.id}: no finite values", fontsize=9)
            continue
        lo, med, hi = np.nanpercentile(x, [5, 50, 95], axis=0)
        ax.fill_between(t, lo, hi, color="#2166ac", alpha=0.25, lw=0, label="5-95% of patients")
        ax.plot(t, med, color="#2166ac", lw=2, label="median")
        finite = x[np.isfinite(x)]
        if finite.min() > 0 and finite.max() / finite.min() > 1e3:
            ax.set_yscale("log")
        ax.set_title(sp.name if sp.name == sp.id else f"{sp.id} ({sp.name})", fontsize=9)
        ax.set_ylabel(sp.units, fontsize=8)
        ax.set_xlabel("days")
        ax.grid(True, alpha=0.3)
    for ax in list(axes.flat)[k:]:
        ax.axis("off")
    if k:
        axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{m.name} ({len(result.values)} virtual patients)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_sbml_outputs(result: SbmlCohortResult, out: str | Path, *, plots: bool = True) -> dict:
    """Write every output file of an SBML cohort into ``out`` (created if needed; other files
    in it are left alone). Returns the summary."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    out.mkdir(parents=True, exist_ok=True)
    df = result.patients
    table = pa.Table.from_pandas(df.astype({"solver": "string", "solver_status": "string"}), preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[b"carcell.units"] = json.dumps(patient_units(result)).encode()
    pq.write_table(table.replace_schema_metadata(meta), out / "patients.parquet")
    ds = result.trajectories
    ds.to_netcdf(out / "trajectories.nc", engine="netcdf4",
                 encoding={v: {"zlib": True, "complevel": 1} for v in ds.data_vars})
    if plots:
        plot_trajectories(result, out / "trajectories.png")
    summ = summary(result)
    (out / "summary.json").write_text(json.dumps(summ, indent=2) + "\n")
    (out / "provenance.json").write_text(json.dumps(provenance(result), indent=2, default=str) + "\n")
    return summ
