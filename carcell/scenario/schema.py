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


def _exactly_one(a, b, message: str) -> None:
    if (a is None) == (b is None):
        raise ValueError(message)


def antigen_names() -> list[str]:
    """Antigens of the atlas (files starting with '_' are atlas metadata, not antigens)."""
    return [a for a in load_knowledge(False).names("antigens") if not a.startswith("_")]


def check_known(value: str, known: list[str], what: str) -> str:
    if value in known:
        return value
    near = nearest(value, known)
    hint = f"did you mean {near!r}? " if near else ""
    raise ValueError(f"{value!r} is not a known {what}; {hint}known: {', '.join(known)}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class BinderRef(_Section):
    """One binder of a construct: a library name, or a target (its reference binder)."""

    name: str | None = Field(None, description="binder library name (knowledge/data/binders.yaml)")
    target: str | None = Field(None, description="target antigen; its reference binder is used")
    kd_nm: float | None = Field(None, gt=0, description="affinity KD in nM; default: the library's")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, load_knowledge(False).names("binders"), "binder")

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, antigen_names(), "antigen")

    @model_validator(mode="after")
    def _one(self) -> BinderRef:
        _exactly_one(self.name, self.target, "give a binder as its library name or as a target antigen, not both")
        return self


def _binder_list(v):
    """Binders may be written as names: ``[FMC63, m971]``."""
    if v is None:
        return []
    items = v if isinstance(v, list) else [v]
    return [{"name": b} if isinstance(b, str) else b for b in items]


GATES = ("single", "OR", "AND", "NOT")


class Logic(_Section):
    gate: Literal["single", "OR", "AND", "NOT"] = Field(
        "single", description="single target, OR (either antigen), AND (both), NOT (A but not B)")
    mode: str | None = Field(
        None, description="OR: tandem|bicistronic; AND: synnotch|split; NOT: icar (logic.yaml)")


class Car(_Section):
    target: str | None = Field(None, description="shorthand for one binder: the target's reference binder")
    binders: list[BinderRef] = Field(default_factory=list, description="activating binders")
    inhibitory_binders: list[BinderRef] = Field(
        default_factory=list, description="NOT gate: binders of the inhibitory CAR")
    logic: Logic = Logic()
    hinge: str = Field("CD8a", description="hinge/spacer (knowledge/data/construct/hinges.yaml)")
    transmembrane: str = Field("CD8a", description="transmembrane domain (construct/transmembrane.yaml)")
    costim: list[str] = Field(default_factory=lambda: ["4-1BB"], description="costimulatory domains, in order")
    activation: str = Field("CD3zeta", description="activation domain (construct/activation.yaml)")

    @field_validator("binders", "inhibitory_binders", mode="before")
    @classmethod
    def _binders(cls, v):
        return _binder_list(v)

    @field_validator("costim", mode="before")
    @classmethod
    def _costim(cls, v):
        items = [v] if isinstance(v, str) else list(v or [])
        known = load_knowledge(False).names("costim")
        return [check_known(c, known, "costimulatory domain") for c in items]

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, antigen_names(), "antigen")

    @field_validator("hinge")
    @classmethod
    def _hinge(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("construct.hinges"), "hinge")

    @field_validator("transmembrane")
    @classmethod
    def _tm(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("construct.transmembrane"), "transmembrane domain")

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("construct.activation"), "activation domain")


class Dose(_Section):
    cells_per_kg: float | None = Field(None, gt=0, description="CAR+ viable cells per kg")
    cells: float | None = Field(None, gt=0, description="flat dose of CAR+ viable cells")

    @model_validator(mode="after")
    def _one(self) -> Dose:
        _exactly_one(self.cells_per_kg, self.cells, "give exactly one of cells_per_kg or cells")
        return self


class Pretreatment(_Section):
    """A drug the cells are cultured with before infusion, then washed out (docs/solid.md)."""

    drug: Literal["dasatinib"] = Field("dasatinib", description="only dasatinib (rest of exhausted cells) for now")
    concentration_nm: float = Field(100.0, gt=0, le=10_000, description="concentration in the culture (nM)")
    hours: float = Field(24.0, gt=0, le=24 * 14, description="length of the exposure before washout (hours)")


class Product(_Section):
    preset: str | None = Field(None, description="named product (knowledge/data/products); "
                               "keys given here override the preset's")
    name: str = "CAR-T product"
    chassis: str = Field("autologous_T", description="cell chassis (knowledge/data/chassis)")
    irradiated: bool | None = Field(None, description="irradiated before infusion (NK-92 must be)")
    car: Car = Car()
    armour: list[str] = Field(default_factory=list, description="armour (knowledge/data/armour.yaml)")
    safety: list[str] = Field(default_factory=list, description="safety switches and pharmacological "
                              "control (knowledge/data/safety.yaml), e.g. iCasp9, dasatinib")
    dose: Dose = Dose(cells_per_kg=2e6)
    memory_fraction: float | None = Field(
        None, ge=0, le=1, description="memory/stem-like share of infused cells; default by costim"
    )
    pretreatment: Pretreatment | None = Field(
        None, description="culture with a drug before infusion, e.g. {drug: dasatinib, concentration_nm: 100, "
        "hours: 24}: rests exhausted cells into functional ones")

    @field_validator("chassis")
    @classmethod
    def _chassis(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("chassis"), "chassis")

    @field_validator("armour")
    @classmethod
    def _armour(cls, v: list[str]) -> list[str]:
        known = load_knowledge(False).names("armour")
        return [check_known(a, known, "armour") for a in v]

    @field_validator("safety")
    @classmethod
    def _safety(cls, v: list[str]) -> list[str]:
        known = load_knowledge(False).names("safety")
        return [check_known(a, known, "safety or control element") for a in v]


class LogNormal(_Section):
    median: float | None = Field(None, gt=0)
    log_sd: float | None = Field(None, ge=0)


class AntigenOverride(_Section):
    density: LogNormal = LogNormal()
    negative_fraction: float | None = Field(None, ge=0, le=1, description="fixed share of tumour cells without it")
    patients_positive: float | None = Field(None, ge=0, le=1)


class Indication(_Section):
    disease: str = Field(..., description="knowledge/data/indications: LBCL, B-ALL, MM")
    baseline_burden: LogNormal = LogNormal()
    antigen_negative_fraction: float | None = Field(
        None, ge=0, le=1,
        description="fixed share of baseline tumour without the antigen; default: the disease's "
        "log-normal distribution",
    )
    antigen_density: LogNormal = LogNormal()
    antigens: dict[str, AntigenOverride] = Field(
        default_factory=dict,
        description="per-antigen overrides of the atlas for this indication (density, "
        "negative_fraction, patients_positive); the two fields above apply to the first target",
    )

    @field_validator("antigens")
    @classmethod
    def _antigens(cls, v: dict) -> dict:
        for name in v:
            check_known(name, antigen_names(), "antigen")
        return v

    @field_validator("disease")
    @classmethod
    def _disease(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("indications"), "disease")


class Regimen(_Section):
    lymphodepletion: str = "flu_cy"
    route: str = Field("intravenous", description="route of administration (knowledge/data/regimens/routes.yaml): "
                       "intravenous, or a locoregional route into a solid tumour's site")
    infusion_days: list[float] = Field(
        default_factory=lambda: [0.0], description="days of the infusions, each of the product's dose "
        "(multi-dose NK regimens, e.g. [0, 7, 14]); the first must be day 0")
    protocol: str | dict = Field(
        "asco2021", description="toxicity management: a bundled protocol (knowledge/data/protocols: "
        "asco2021, zuma1_cohorts_1_2, zuma1_cohort6, dasatinib_switch, none, ...) or a mapping with rules and "
        "prophylaxis, which may build on a bundled one with 'extends: NAME' (docs/toxicity.md)")

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, v):
        if isinstance(v, str):
            return check_known(v, load_knowledge(False).names("protocols"), "management protocol")
        from carcell.clinical.management import load_protocol  # noqa: PLC0415 - avoids an import cycle

        load_protocol(load_knowledge(False), v)
        return v

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        return check_known(v, load_knowledge(False).names("regimens.routes"), "route of administration")

    @field_validator("infusion_days")
    @classmethod
    def _infusions(cls, v: list[float]) -> list[float]:
        days = [float(d) for d in v]
        if not days or days[0] != 0 or any(b <= a for a, b in zip(days, days[1:])):
            raise ValueError(f"{v!r}: give increasing days starting with the first infusion on day 0, e.g. [0, 7, 14]")
        return days

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
    calibration: str | None = Field(
        None, description="a calibrated population: a bundled calibration (knowledge/data/calibrations, "
        "e.g. axi-cel_LBCL) or a path to a file written by `carcell calibrate`; its typical-value "
        "multipliers and omegas apply before `variability`")

    @field_validator("calibration")
    @classmethod
    def _calibration(cls, v: str | None) -> str | None:
        if v is None or v.endswith((".yaml", ".yml")):
            return v
        return check_known(v, load_knowledge(False).names("calibrations"), "calibration")

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
    backend: Literal["auto", "numpy", "numba", "numba-serial", "jax"] = Field(
        "auto", description="what integrates between output times (docs/backends.md): auto (default: "
        "numba when installed, else numpy; the same numbers either way), numpy, "
        "numba (compiled, every core; pip install 'carcell[numba]'), numba-serial (compiled, one thread; "
        "for --workers > 1 or Dask workers) or jax (the GPU path; pip install 'carcell[gpu]')")


def _route_names() -> list[str]:
    k = load_knowledge(False)
    try:
        return k.names("manufacturing.routes")
    except Exception:   # noqa: BLE001 - the knowledge file is checked by its own tests
        return []


class Manufacturing(_Section):
    """The chain from referral to infusion (docs/logistics.md): a route from
    knowledge/data/manufacturing.yaml, refined by step and capacity overrides."""

    route: str = Field(..., description="a route in knowledge/data/manufacturing.yaml (e.g. axi-cel, "
                       "point_of_care, CB-CAR-NK)")
    referrals_per_month: float = Field(
        10.0, gt=0, le=100_000, description="rate of referrals (Poisson); patients arrive in id order")
    steps: dict = Field(default_factory=dict, description="step overrides, e.g. {manufacturing: 10} "
                        "(median days) or {manufacturing_failure: 0.02}")
    capacity: dict = Field(default_factory=dict, description="capacity overrides, e.g. {slots_per_month: 8}")
    eligibility_fold: float | None = Field(
        None, gt=1, le=1000, description="fold growth of the tumour since referral beyond which a patient "
        "can no longer be infused; default: knowledge/data/waiting.yaml")

    @field_validator("route")
    @classmethod
    def _route(cls, v: str) -> str:
        return check_known(v, _route_names(), "manufacturing route")

    @model_validator(mode="after")
    def _overrides(self) -> Manufacturing:
        from carcell.logistics.routes import capacity_with, load_routes, route_with  # noqa: PLC0415

        route = load_routes()[self.route]
        route_with(route, self.steps)
        capacity_with(route.capacity, self.capacity)
        return self


class Access(_Section):
    """Who among a region's eligible patients is referred (docs/logistics.md)."""

    region: str = Field(..., description="a region in knowledge/data/access.yaml (e.g. US_DLBCL_3L)")
    period_days: float = Field(730.0, gt=0, le=3650, description="calendar span over which patients "
                               "become eligible")
    levers: dict = Field(default_factory=dict, description="changes to the region: centres_factor, "
                         "satellite_sites, travel_support, slots_factor, route")
    compare: dict[str, dict] = Field(default_factory=dict, description="named lever sets compared by "
                                     "`carcell logistics`, e.g. {more_centres: {centres_factor: 2}}")

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        from carcell.logistics.access import region_names  # noqa: PLC0415

        return check_known(v, region_names(), "access region")

    @model_validator(mode="after")
    def _levers(self) -> Access:
        from carcell.logistics.access import load_region, region_with  # noqa: PLC0415

        region = load_region(self.region)
        for where, levers in [("levers", self.levers), *((f"compare.{k}", v) for k, v in self.compare.items())]:
            if not isinstance(levers, dict):
                raise ValueError(f"{where}: give a mapping of levers, e.g. {{centres_factor: 2}}")
            try:
                region_with(region, levers)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            if "route" in levers:
                check_known(levers["route"], _route_names(), "manufacturing route")
        return self


class Arm(_Section):
    """One arm of a trial: the scenario's product with overrides, or a standard-of-care comparator."""

    name: str = Field(..., min_length=1, max_length=40)
    ratio: int = Field(1, ge=1, le=10, description="randomisation weight, e.g. 2 and 1 for 2:1")
    product: dict | None = Field(None, description="keys that replace the scenario's product for this arm")
    regimen: dict | None = Field(None, description="keys that replace the scenario's regimen for this arm")
    calibration: str | None = Field(None, description="population calibration for this arm")
    standard_of_care: str | None = Field(
        None, description="a comparator from knowledge/data/standard_of_care.yaml instead of a CAR product")
    not_infused_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of patients randomised to a CAR arm who are never infused "
        "(progression or illness during manufacturing); they count in the intention-to-treat analysis")
    manufacturing: dict | None = Field(
        None, description="keys that replace the scenario's manufacturing section for this arm "
        "(e.g. {route: point_of_care}); the chain then decides who is infused")

    @field_validator("standard_of_care")
    @classmethod
    def _soc(cls, v: str | None) -> str | None:
        if v is None:
            return v
        return check_known(v, load_knowledge(False).names("standard_of_care.regimens"), "standard-of-care regimen")

    @model_validator(mode="after")
    def _kind(self) -> Arm:
        if self.standard_of_care is not None and (self.product or self.regimen or self.calibration
                                                  or self.manufacturing):
            raise ValueError(f"arm {self.name!r}: a standard-of-care arm takes no product, regimen, "
                             "calibration or manufacturing")
        return self


class Trial(_Section):
    follow_up_days: float = Field(365, gt=0, le=3650)
    output_every_days: float = Field(1.0, gt=0, le=365)
    solver: Solver = Solver()
    arms: list[Arm] = Field(
        default_factory=list, description="trial arms; none = one arm with the scenario's product")
    reference_arm: str | None = Field(None, description="arm the others are compared with (hazard ratios)")
    assessment_days: list[float] | None = Field(
        None, description="response assessment days; default: the indication's schedule")
    landmarks_days: list[float] = Field(default_factory=lambda: [180.0, 365.0, 730.0],
                                        description="days at which survival rates are reported")
    workers: int = Field(1, ge=1, le=256, description="processes that simulate chunks in parallel")
    scheduler: str | None = Field(
        None, pattern=r"^(tcp|tls|ws|wss|ucx)://\S+$",
        description="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786) that simulates the "
                    "chunks; none = this machine (docs/scale.md)")

    @model_validator(mode="after")
    def _grid(self) -> Trial:
        if self.output_every_days > self.follow_up_days:
            raise ValueError("output_every_days must not exceed follow_up_days")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique; got {names}")
        if self.reference_arm is not None and self.reference_arm not in names:
            raise ValueError(f"reference_arm {self.reference_arm!r} is not an arm; arms: {names}")
        if self.assessment_days is not None:
            days = sorted(self.assessment_days)
            if not days or days[0] <= 0 or days != list(dict.fromkeys(days)):
                raise ValueError("assessment_days must be distinct positive days, e.g. [28, 90, 180]")
        return self



def _line_names() -> list[str]:
    return load_knowledge(False).names("preclinical.lines")


def line_for(disease: str) -> str | None:
    """The first tumour line (knowledge/data/preclinical/lines.yaml) that stands for a disease."""
    k = load_knowledge(False)
    return next((n for n in _line_names() if k.text(f"preclinical.lines.{n}.disease") == disease), None)


def _default_line(field: str, disease: str) -> str:
    line = line_for(disease)
    if line is None:
        raise ValueError(f"{field}: no tumour line in knowledge/data/preclinical/lines.yaml stands for "
                         f"{disease}; name one of {', '.join(_line_names())}")
    return line


class Assay(_Section):
    """An in-vitro cytotoxicity assay of the scenario's product (docs/preclinical.md)."""

    target_line: str | None = Field(None, description="target cell line (knowledge/data/preclinical/lines.yaml); "
                                    "default: the line that stands for the indication")
    target_cells: float = Field(1e4, gt=0, le=1e8, description="target cells seeded per well (and added at each "
                                "restimulation)")
    well_volume_ul: float = Field(200.0, gt=0, le=1e5, description="medium volume per well (uL)")
    effector_to_target: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0, 5.0, 10.0],
                                            description="E:T ratios: CAR+ cells per seeded target cell")
    hours: float = Field(72.0, gt=0, le=24 * 60, description="length of the assay (hours)")
    readout_every_hours: float = Field(1.0, gt=0, le=24 * 7, description="read-out interval (hours)")
    restimulate_every_hours: float | None = Field(
        None, gt=0, description="serial restimulation: fresh targets are added every this many hours")
    restimulations: int = Field(0, ge=0, le=50, description="how many times fresh targets are added")
    medium_il15_pg_ml: float | None = Field(None, ge=0, le=1e6, description="IL-15 in the medium (pg/mL); "
                                            "default: knowledge/data/preclinical/assay.yaml")
    medium_il2_iu_ml: float = Field(0.0, ge=0, le=1e5, description="IL-2 in the medium (IU/mL), counted as IL-15")
    dasatinib_nm: list[float] = Field(default_factory=lambda: [0.0], description="dasatinib present during the "
                                      "assay (nM); a list gives one set of wells per concentration")
    dasatinib_washout_hours: float | None = Field(None, gt=0, description="hour at which dasatinib is washed "
                                                  "out of every well (the cells stay)")

    @field_validator("target_line")
    @classmethod
    def _line(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, _line_names(), "tumour line")

    @field_validator("effector_to_target", "dasatinib_nm", mode="before")
    @classmethod
    def _as_list(cls, v):
        return [v] if isinstance(v, (int, float)) else v

    @field_validator("effector_to_target")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        if not v or any(r < 0 or r > 1000 for r in v):
            raise ValueError(f"{v!r}: give one or more E:T ratios between 0 and 1000, e.g. [1, 5, 10]")
        return v

    @field_validator("dasatinib_nm")
    @classmethod
    def _dasatinib(cls, v: list[float]) -> list[float]:
        if not v or any(c < 0 or c > 10_000 for c in v):
            raise ValueError(f"{v!r}: give one or more dasatinib concentrations between 0 and 10000 nM, "
                             "e.g. [0, 10, 100]")
        return v


class Xenograft(_Section):
    """A mouse xenograft experiment for ``species: mouse`` (docs/preclinical.md)."""

    strain: Literal["NSG"] = Field("NSG", description="host strain (knowledge/data/preclinical/hosts.yaml)")
    tumour_line: str | None = Field(None, description="tumour line (knowledge/data/preclinical/lines.yaml); "
                                    "default: the line that stands for the indication")
    site: Literal["subcutaneous", "intravenous"] | None = Field(
        None, description="subcutaneous (a solid tumour measured by caliper) or intravenous (a leukaemia); "
        "default: the line's usual site")
    implanted_cells: float | None = Field(None, gt=0, le=1e10, description="tumour cells implanted "
                                          "(default 1e6 when starting_volume_mm3 is not given)")
    days_from_implant: float = Field(7.0, ge=0, le=365, description="days from implantation to the first CAR dose")
    starting_volume_mm3: float | None = Field(None, gt=0, le=1e5, description="subcutaneous tumour volume at the "
                                              "first CAR dose, instead of implanted_cells")
    endpoint_volume_mm3: float | None = Field(None, gt=0, le=1e5, description="humane endpoint of a subcutaneous "
                                              "tumour; default: hosts.yaml")
    endpoint_cells: float | None = Field(None, gt=0, le=1e12, description="humane endpoint of an intravenous "
                                         "leukaemia (leukaemic cells); default: hosts.yaml")
    measure_every_days: float | None = Field(None, gt=0, le=60, description="caliper/imaging interval; "
                                             "default: hosts.yaml")
    controls: int | None = Field(None, ge=0, le=100_000, description="untreated control mice (tumour only); "
                                 "default: as many as treated (population.n)")
    il15_pg_ml: float | None = Field(None, ge=0, le=1e6, description="IL-15 the human cells see in the mouse "
                                     "(e.g. with cytokine support); default: hosts.yaml")

    @field_validator("tumour_line")
    @classmethod
    def _line(cls, v: str | None) -> str | None:
        return None if v is None else check_known(v, _line_names(), "tumour line")


def _check_assay(a: Assay) -> None:
    """Timing rules of an assay that involve several of its fields."""
    if a.readout_every_hours > a.hours:
        raise ValueError(f"assay.readout_every_hours ({a.readout_every_hours:g}) is longer than assay.hours "
                         f"({a.hours:g}); read out at least once, e.g. every 1 hour")
    if a.restimulations and a.restimulate_every_hours is None:
        raise ValueError(f"assay.restimulations: {a.restimulations} restimulations need "
                         "assay.restimulate_every_hours, e.g. 48")
    if a.restimulations and a.restimulate_every_hours * a.restimulations >= a.hours:
        need = a.restimulate_every_hours * (a.restimulations + 1)
        raise ValueError(f"assay.hours: {a.hours:g} h ends before the last of {a.restimulations} restimulations "
                         f"every {a.restimulate_every_hours:g} h; set hours to {need:g}")
    if a.dasatinib_washout_hours is not None and a.dasatinib_washout_hours >= a.hours:
        raise ValueError(f"assay.dasatinib_washout_hours ({a.dasatinib_washout_hours:g}) must fall before the "
                         f"end of the assay ({a.hours:g} h)")


class Scenario(_Section):
    name: str = "scenario"
    description: str = ""
    product: Product = Product()
    indication: Indication
    regimen: Regimen = Regimen()
    population: Population = Population()
    trial: Trial = Trial()
    manufacturing: Manufacturing | None = Field(
        None, description="simulate the chain from referral to infusion (docs/logistics.md)")
    access: Access | None = Field(None, description="a region's eligible patients and who is referred")
    species: Literal["human", "mouse"] = Field(
        "human", description="human: virtual patients; mouse: an NSG xenograft experiment (section xenograft)")
    assay: Assay | None = Field(None, description="an in-vitro killing assay of the product, run by `carcell assay`")
    xenograft: Xenograft | None = Field(None, description="the mouse experiment of species: mouse")

    @model_validator(mode="after")
    def _infusions_in_follow_up(self) -> Scenario:
        late = [d for d in self.regimen.infusion_days if d > self.trial.follow_up_days]
        if late:
            raise ValueError(f"regimen.infusion_days: {late} fall after trial.follow_up_days "
                             f"({self.trial.follow_up_days:g}); drop them or follow patients longer")
        return self

    @model_validator(mode="after")
    def _logistics(self) -> Scenario:
        base = self.manufacturing.model_dump() if self.manufacturing else {}
        for arm in self.trial.arms:
            if arm.standard_of_care is not None:
                continue
            chained = self.manufacturing is not None or arm.manufacturing is not None
            if chained and arm.not_infused_fraction > 0:
                raise ValueError(f"trial.arms ({arm.name}): not_infused_fraction and a manufacturing chain "
                                 "both decide who is infused; drop not_infused_fraction")
            if arm.manufacturing is not None:
                merged = {**base, **arm.manufacturing}
                if "route" not in merged:
                    raise ValueError(f"trial.arms ({arm.name}).manufacturing: no route; name one, "
                                     "e.g. {route: axi-cel}, or add a top-level manufacturing section")
                try:
                    Manufacturing.model_validate(merged)
                except ValueError as err:
                    first = err.errors()[0] if hasattr(err, "errors") else {"msg": str(err), "loc": ()}
                    where = ".".join(str(p) for p in first.get("loc", ()))
                    msg = str(first.get("msg", err)).removeprefix("Value error, ")
                    raise ValueError(f"trial.arms ({arm.name}).manufacturing{'.' + where if where else ''}: "
                                     f"{msg}") from None
        if self.access is not None and self.manufacturing is None and not any(
                a.manufacturing for a in self.trial.arms):
            raise ValueError("access: referred patients need a route; add a manufacturing section, "
                             "e.g. manufacturing: {route: axi-cel}")
        return self

    @model_validator(mode="after")
    def _preclinical(self) -> Scenario:
        """Defaults and limits of the preclinical modes (docs/preclinical.md)."""
        disease = self.indication.disease
        if self.assay is not None:
            _check_assay(self.assay)
            if self.assay.target_line is None:
                self.assay.target_line = _default_line("assay.target_line", disease)
        if self.species == "human":
            if self.xenograft is not None:
                raise ValueError("xenograft: a mouse experiment needs species: mouse; add it or remove the section")
            return self
        if self.trial.arms:
            raise ValueError("trial.arms: a mouse experiment is one treated group against untreated controls; "
                             "write one scenario file per group (e.g. examples/nk92_*_mouse.yaml)")
        if self.manufacturing is not None or self.access is not None:
            raise ValueError("manufacturing: the chain from referral to infusion is for patients; remove "
                             "manufacturing and access from a species: mouse scenario")
        if "lymphodepletion" in self.regimen.model_fields_set and self.regimen.lymphodepletion != "none":
            raise ValueError(f"regimen.lymphodepletion: NSG mice have no lymphocytes to deplete; set none "
                             f"(not {self.regimen.lymphodepletion})")
        self.regimen.lymphodepletion = "none"
        x = self.xenograft if self.xenograft is not None else Xenograft()
        if x.implanted_cells is not None and x.starting_volume_mm3 is not None:
            raise ValueError("xenograft: give implanted_cells (with days_from_implant) or starting_volume_mm3, "
                             "not both")
        k = load_knowledge(False)
        if x.tumour_line is None:
            x.tumour_line = _default_line("xenograft.tumour_line", disease)
        if x.site is None:
            x.site = k.text(f"preclinical.lines.{x.tumour_line}.site")
        if x.site == "intravenous":
            if x.starting_volume_mm3 is not None:
                raise ValueError("xenograft.starting_volume_mm3: an intravenous leukaemia has no volume to measure; "
                                 "give implanted_cells and days_from_implant")
            if x.endpoint_volume_mm3 is not None:
                raise ValueError("xenograft.endpoint_volume_mm3: an intravenous leukaemia has no volume; give its "
                                 "humane endpoint as endpoint_cells (leukaemic cells)")
        elif x.endpoint_cells is not None:
            raise ValueError("xenograft.endpoint_cells: a subcutaneous tumour ends at a volume; give "
                             "endpoint_volume_mm3 instead")
        if x.implanted_cells is None and x.starting_volume_mm3 is None:
            x.implanted_cells = 1e6
        object.__setattr__(self, "xenograft", x)   # plain set: assignment would re-run these validators
        return self
