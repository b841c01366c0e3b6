"""The scenario schema: product, indication, regimen, population, trial.

Names that refer to knowledge (costimulatory domains, antigens, diseases, lymphodepletion
regimens, model parameters) are checked against the bundled knowledge files, so adding a
domain to ``carcell/knowledge/data/costim`` makes it valid here without touching code.
Fields left out are filled from the knowledge files when the scenario is compiled.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from carcell.knowledge import load_knowledge
from carcell.model.states import PARAMETER_NAMES


def nearest(name: str, known: list[str]) -> str | None:
    """Closest known name (case-insensitive), or None."""
    lower = {k.lower(): k for k in known}
    hit = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.5)
    return lower[hit[0]] if hit else None


def check_known(value: str, known: list[str], what: str) -> str:
    if value in known:
        return value
    near = nearest(value, known)
    hint = f"did you mean {near!r}? " if near else ""
    raise ValueError(f"{value!r} is not a known {what}; {hint}known: {', '.join(known)}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Binder(_Section):
    kd_nm: float | None = Field(
        None, gt=0, description="binder affinity KD in nM; default: the antigen's reference binder"
    )


class Car(_Section):
    target: str | None = Field(None, description="target antigen; default: the indication's")
    costim: str = Field("4-1BB", description="costimulatory domain (knowledge/data/costim)")
    binder: Binder = Binder()

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, load_knowledge(False).names("antigens"), "antigen")

    @field_validator("costim")
    @classmethod
    def _costim(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("costim"), "domain")


class Dose(_Section):
    cells_per_kg: float | None = Field(None, gt=0, description="CAR+ viable cells per kg")
    cells: float | None = Field(None, gt=0, description="flat dose of CAR+ viable cells")

    @model_validator(mode="after")
    def _one(self) -> Dose:
        if (self.cells_per_kg is None) == (self.cells is None):
            raise ValueError("give exactly one of cells_per_kg or cells")
        return self


class Product(_Section):
    name: str = "CAR-T product"
    chassis: Literal["autologous_T"] = "autologous_T"
    car: Car = Car()
    dose: Dose = Dose(cells_per_kg=2e6)
    memory_fraction: float | None = Field(
        None, ge=0, le=1, description="memory/stem-like share of infused cells; default by costim"
    )


class LogNormal(_Section):
    median: float | None = Field(None, gt=0)
    log_sd: float | None = Field(None, ge=0)


class Indication(_Section):
    disease: str = Field(..., description="knowledge/data/indications: LBCL, B-ALL, MM")
    baseline_burden: LogNormal = LogNormal()
    antigen_negative_fraction: float | None = Field(
        None, ge=0, le=1,
        description="fixed share of baseline tumour without the antigen; default: the disease's "
        "log-normal distribution",
    )
    antigen_density: LogNormal = LogNormal()

    @field_validator("disease")
    @classmethod
    def _disease(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("indications"), "disease")


class Regimen(_Section):
    lymphodepletion: str = "flu_cy"

    @field_validator("lymphodepletion")
    @classmethod
    def _ld(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("regimens.lymphodepletion"), "lymphodepletion regimen")


class Covariates(_Section):
    weight_kg: LogNormal = LogNormal()
    age_years: LogNormal = LogNormal()


class Population(_Section):
    n: int = Field(100, ge=1, le=10_000_000)
    seed: int = Field(0, ge=0)
    variability: dict[str, float] = Field(
        default_factory=dict,
        description="log-normal inter-individual SD (omega) per model parameter; merged over "
        "the defaults in knowledge/data/car_t.yaml (variability); 0 switches one off",
    )
    covariates: Covariates = Covariates()

    @field_validator("variability")
    @classmethod
    def _variability(cls, v: dict[str, float]) -> dict[str, float]:
        for name, omega in v.items():
            known = [n for n in PARAMETER_NAMES if not n.startswith("alive_")]
            check_known(name, known, "model parameter")
            if not (isinstance(omega, (int, float)) and 0 <= omega <= 3):
                raise ValueError(f"omega for {name!r} is {omega!r}; use a log-SD between 0 and 3")
        return v


class Solver(_Section):
    rtol: float = Field(1e-6, gt=0, lt=1e-1)
    atol: float = Field(1e-8, gt=0, lt=1)
    chunk_size: int = Field(10_000, ge=1)
    max_steps: int = Field(100_000, ge=10)


class Trial(_Section):
    follow_up_days: float = Field(365, gt=0, le=3650)
    output_every_days: float = Field(1.0, gt=0, le=365)
    solver: Solver = Solver()

    @model_validator(mode="after")
    def _grid(self) -> Trial:
        if self.output_every_days > self.follow_up_days:
            raise ValueError("output_every_days must not exceed follow_up_days")
        return self


class Scenario(_Section):
    name: str = "scenario"
    description: str = ""
    product: Product = Product()
    indication: Indication
    regimen: Regimen = Regimen()
    population: Population = Population()
    trial: Trial = Trial()
