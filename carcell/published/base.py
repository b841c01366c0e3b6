"""The contract every published-model preset fulfils, and the cohort result they share.

A preset is one file, one subclass of :class:`PublishedModel`: its module docstring cites the
paper, its class docstring writes out the equations, its numbers live in
``carcell/knowledge/data/published/<name>.yaml`` with their sources, and :meth:`checks`
reproduces named figures or table values of the paper within stated tolerances.
"""

from __future__ import annotations

import abc
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import xarray as xr

from carcell.errors import CarcellError
from carcell.published import params as store
from carcell.published.params import Parameter


@dataclass(frozen=True)
class Citation:
    """The paper a preset implements."""

    authors: str
    year: int
    title: str
    journal: str
    doi: str

    def __str__(self) -> str:
        return f"{self.authors} ({self.year}). {self.title}. {self.journal}. doi:{self.doi}"

    @property
    def short(self) -> str:
        first = self.authors.split(",")[0].split()[0]
        return f"{first} et al. {self.year}"


@dataclass(frozen=True)
class Check:
    """One reproduced quantity beside the paper's value and the tolerance it must meet."""

    quantity: str
    reproduced: float
    published: float
    tolerance: str
    passed: bool
    source: str

    def row(self) -> dict:
        return {"quantity": self.quantity, "reproduced": self.reproduced, "published": self.published,
                "tolerance": self.tolerance, "passed": self.passed, "source": self.source}


def within(quantity: str, reproduced: float, published: Parameter | float, rtol: float, source: str = "") -> Check:
    """A check that ``reproduced`` lies within ``rtol`` (relative) of the published value."""
    value = published.value if isinstance(published, Parameter) else float(published)
    src = source or (published.source + (f" ({published.note})" if published.note else "")
                     if isinstance(published, Parameter) else "")
    ok = bool(np.isfinite(reproduced) and abs(reproduced - value) <= rtol * abs(value))
    return Check(quantity, float(reproduced), float(value), f"+/-{rtol:.0%} relative", ok, src)


def holds(quantity: str, reproduced: float, published: float, condition: bool, tolerance: str, source: str) -> Check:
    """A check of a stated relation (an inequality, a direction) rather than a number."""
    return Check(quantity, float(reproduced), float(published), tolerance, bool(condition), source)


class PublishedModel(abc.ABC):
    """A published CAR-T model as a carcell preset."""

    name: ClassVar[str]
    citation: ClassVar[Citation]
    reproduces: ClassVar[str]
    states: ClassVar[tuple[str, ...]]
    state_units: ClassVar[str] = "cells"
    time_unit: ClassVar[str] = "day"
    default_set: ClassVar[str]
    default_protocol: ClassVar[str | None] = None
    solver: ClassVar[str]

    # -- what the preset is -------------------------------------------------------------------

    @property
    def equations(self) -> str:
        """The model's equations as the class docstring writes them out."""
        return inspect.cleandoc(type(self).__doc__ or "")

    def parameter_sets(self) -> list[str]:
        return store.set_names(self.name)

    def protocols(self) -> list[str]:
        return store.protocol_names(self.name)

    def parameters(self, set_name: str | None = None) -> dict[str, Parameter]:
        """The parameter set with values, units and sources (default: the paper's main set)."""
        return store.parameter_set(self.name, set_name or self.default_set)

    def typical(self, set_name: str | None = None) -> dict[str, float]:
        return {k: float(p.value) for k, p in self.parameters(set_name).items()}

    def variability(self) -> dict[str, Parameter]:
        """Log-normal SD (omega) of each parameter that varies between virtual patients."""
        return store.section(self.name, "variability")

    def published(self) -> dict[str, Parameter]:
        """The paper's values that :meth:`checks` reproduces."""
        return store.section(self.name, "published")

    def protocol(self, name: str | None = None) -> dict[str, Parameter]:
        return store.protocol(self.name, name or self.default_protocol)

    # -- what a preset implements -------------------------------------------------------------

    @abc.abstractmethod
    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        """Trajectories, dims (patient, time), one variable per state, time in :attr:`time_unit`.

        ``params`` maps parameter names to a number or one value per patient; names not given
        take the typical value of ``set_name``.
        """

    @abc.abstractmethod
    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        """Reproduce the paper's named figures/tables; ``params`` overrides typical values."""

    def summarise(self, ds: xr.Dataset) -> pd.DataFrame:
        """Per-patient summary: peak, time of peak and last value of each state."""
        t = ds["time"].to_numpy()
        cols: dict[str, np.ndarray] = {}
        for s in self.states:
            v = ds[s].to_numpy()
            filled = np.where(np.isfinite(v), v, -np.inf)
            cols[f"{s}_peak"] = np.nanmax(v, axis=1)
            cols[f"{s}_time_of_peak_{self.time_unit}"] = t[np.argmax(filled, axis=1)]
            cols[f"{s}_last"] = v[:, -1]
        return pd.DataFrame(cols)

    # -- cohorts ------------------------------------------------------------------------------

    def sample(self, n: int, seed: int | None, set_name: str | None = None) -> dict[str, np.ndarray]:
        """Per-patient parameters: typical x exp(omega z), z ~ N(0, 1), for each varied one."""
        if n < 1:
            raise CarcellError(f"-n {n}: a cohort needs at least one patient")
        rng = np.random.default_rng(seed)
        typical = self.typical(set_name)
        out = {k: np.full(n, v) for k, v in typical.items()}
        for k, omega in self.variability().items():
            if k not in typical:
                raise CarcellError(f"published.{self.name}.variability.{k}: not a parameter of the model")
            out[k] = typical[k] * np.exp(float(omega.value) * rng.standard_normal(n))
        return out

    def cohort(self, n: int = 100, seed: int | None = 0, days: float | None = None, *,
               set_name: str | None = None, protocol: str | None = None) -> PublishedCohort:
        """Run the model over ``n`` virtual patients with its inter-individual variability."""
        p = self.sample(n, seed, set_name)
        t = self.cohort_times(days)
        ds = self.simulate(p, t, protocol=protocol, set_name=set_name)
        patients = pd.DataFrame({"patient": np.arange(n)})
        for k in self.variability():
            patients[k] = p[k]
        patients = pd.concat([patients, self.summarise(ds)], axis=1)
        patients["solver_status"] = ds["solver_status"].to_numpy() if "solver_status" in ds else "ok"
        return PublishedCohort(self, set_name or self.default_set, protocol or self.default_protocol,
                               seed, patients, ds)

    def default_days(self) -> float:
        return 100.0

    def cohort_times(self, days: float | None) -> np.ndarray:
        """Output times for a cohort of ``days`` days (in the model's own time unit)."""
        days = self.default_days() if days is None else float(days)
        if not days > 0:
            raise CarcellError(f"--days {days}: must be positive")
        per_day = 24.0 if self.time_unit == "h" else 1.0
        return np.linspace(0.0, days * per_day, int(min(2000, max(101, days * 4))) + 1)


@dataclass
class PublishedCohort:
    """Virtual patients run through one preset."""

    model: PublishedModel
    set_name: str
    protocol: str | None
    seed: int | None
    patients: pd.DataFrame
    trajectories: xr.Dataset
    extra: dict = field(default_factory=dict)

    def provenance(self) -> dict:
        m = self.model
        return {
            "preset": m.name, "citation": str(m.citation), "parameter_set": self.set_name,
            "protocol": self.protocol, "seed": self.seed, "n_patients": int(len(self.patients)),
            "solver": m.solver, "time_unit": m.time_unit,
            "parameters": {k: {"value": p.value, "unit": p.unit, "source": p.source, "note": p.note}
                           for k, p in m.parameters(self.set_name).items()},
            "variability": {k: {"omega": p.value, "source": p.source, "note": p.note}
                            for k, p in m.variability().items()},
        }

    def write(self, out: Path) -> list[Path]:
        """``patients.parquet``, ``trajectories.nc``, ``<preset>.png`` and ``provenance.json``."""
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "patients.parquet", out / "trajectories.nc", out / f"{self.model.name}.png",
                 out / "provenance.json"]
        self.patients.to_parquet(paths[0], index=False)
        ds = self.trajectories.copy()
        ds["solver_status"] = ds["solver_status"].astype(str) if "solver_status" in ds else None
        ds.attrs.update({"preset": self.model.name, "citation": str(self.model.citation)})
        ds.to_netcdf(paths[1], engine="netcdf4")
        self.plot(paths[2])
        paths[3].write_text(json.dumps(self.provenance(), indent=2, default=float))
        return paths

    def plot(self, path: Path) -> None:
        """Median and 5-95% band of each state over time, log scale."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        m = self.model
        states = list(m.states)
        fig, axes = plt.subplots(1, len(states), figsize=(3.2 * len(states), 3.0), squeeze=False)
        t = self.trajectories["time"].to_numpy()
        for ax, s in zip(axes[0], states):
            v = self.trajectories[s].to_numpy()
            if np.isfinite(v).any() and (v > 0).any():
                # percentiles over every patient (zeros included), drawn where positive
                lo, med, hi = (np.where(q > 0, q, np.nan) for q in np.nanpercentile(v, [5, 50, 95], axis=0))
                ax.fill_between(t, np.where(np.isfinite(lo), lo, np.nanmin(v[v > 0])), hi, alpha=0.3)
                ax.plot(t, med)
                ax.set_yscale("log")
            ax.set_title(s, fontsize=9)
            ax.set_xlabel(f"time ({m.time_unit})")
        axes[0][0].set_ylabel(m.state_units)
        fig.suptitle(f"{m.name}: {m.citation.short}, {len(self.patients)} virtual patients", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


def per_patient(values: Mapping[str, float | np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Broadcast every parameter to shape (n,)."""
    return {k: np.broadcast_to(np.asarray(v, dtype=float), (n,)).copy() for k, v in values.items()}


def cohort_size(params: Mapping[str, float | np.ndarray] | None) -> int:
    """How many patients a mapping of parameters describes (1 for scalars)."""
    sizes = {np.size(v) for v in (params or {}).values() if np.ndim(v) > 0}
    if len(sizes) > 1:
        raise CarcellError(f"parameters give different numbers of patients: {sorted(sizes)}")
    return sizes.pop() if sizes else 1


def resolve(model: PublishedModel, params: Mapping[str, float | np.ndarray] | None,
            set_name: str | None) -> dict[str, np.ndarray]:
    """Typical values of ``set_name`` overridden by ``params``, broadcast per patient."""
    typical = model.typical(set_name)
    unknown = set(params or {}) - set(typical)
    if unknown:
        import difflib

        bad = sorted(unknown)[0]
        near = difflib.get_close_matches(bad, list(typical), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise CarcellError(f"{model.name}: {bad!r} is not a parameter{hint} known: {', '.join(typical)}")
    n = cohort_size(params)
    return per_patient({**typical, **(params or {})}, n)


def dataset(model: PublishedModel, t: np.ndarray, y: np.ndarray, status: np.ndarray | None = None,
            extra: Mapping[str, np.ndarray] | None = None) -> xr.Dataset:
    """Trajectories as an xarray Dataset (patient x time)."""
    n = y.shape[0]
    data = {s: (("patient", "time"), y[:, :, i]) for i, s in enumerate(model.states)}
    for k, v in (extra or {}).items():
        data[k] = (("patient", "time"), v)
    ds = xr.Dataset(data, coords={"patient": np.arange(n), "time": np.asarray(t, dtype=float)})
    ds["time"].attrs["units"] = model.time_unit
    for s in model.states:
        ds[s].attrs["units"] = model.state_units
    if status is not None:
        ds["solver_status"] = ("patient", np.asarray(status, dtype=str))
    return ds
