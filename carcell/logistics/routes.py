"""Manufacturing routes and capacities, read from ``knowledge/data/manufacturing.yaml``.

A :class:`Route` says how long each step from referral to infusion takes (as :class:`Dist`
objects) and how often things go wrong (probabilities); a :class:`Capacity` says how many
patients the shared resources take at once. Three kinds of route (docs/logistics.md):

* ``autologous``: the patient's own cells go to a central facility and come back;
* ``point_of_care``: the same path in a closed automated system at the treating centre, with
  no shipping and the centre's own capacity;
* ``off_the_shelf``: doses from donor batches made in advance and held in stock.

Scenario overrides refine a route (:func:`route_with`) or a capacity (:func:`capacity_with`);
both reject unknown keys and out-of-range values with a message that names the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from carcell.errors import KnowledgeError, ScenarioError
from carcell.knowledge import Knowledge, load_knowledge

ROUTE_KINDS = ("autologous", "point_of_care", "off_the_shelf")
DIST_KINDS = ("lognormal", "exponential", "fixed", "gamma")
_PARAMS = {"lognormal": ("median", "log_sd"), "exponential": ("mean",), "fixed": ("value",),
           "gamma": ("shape", "scale")}


@dataclass(frozen=True)
class Dist:
    """A duration in days: ``kind`` in :data:`DIST_KINDS` and its parameters.

    ``lognormal`` (median, log_sd), ``exponential`` (mean), ``fixed`` (value), ``gamma``
    (shape, scale). Build one with :meth:`lognormal`, :meth:`exponential`, :meth:`fixed` or
    :meth:`gamma`.

    Examples
    --------
    >>> d = Dist.lognormal(14.0, 0.2)
    >>> d.median, round(d.mean, 2)
    (14.0, 14.28)
    >>> Dist.fixed(0.0).sample(np.random.default_rng(1))
    0.0
    """

    kind: str
    params: tuple[float, ...]

    def __post_init__(self) -> None:
        if self.kind not in DIST_KINDS:
            raise ScenarioError(f"distribution kind {self.kind!r} is unknown; use one of {', '.join(DIST_KINDS)}")
        names = _PARAMS[self.kind]
        if len(self.params) != len(names):
            raise ScenarioError(f"a {self.kind} distribution takes {', '.join(names)}; got {self.params!r}")
        for name, v in zip(names, self.params):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ScenarioError(f"{self.kind} {name} = {v!r}: must be a finite number >= 0")
        if self.kind in ("exponential", "gamma") and min(self.params) <= 0:
            raise ScenarioError(f"{self.kind} {', '.join(names)} = {self.params!r}: must be > 0")
        object.__setattr__(self, "params", tuple(float(v) for v in self.params))

    @classmethod
    def lognormal(cls, median: float, log_sd: float) -> Dist:
        return cls("lognormal", (median, log_sd))

    @classmethod
    def exponential(cls, mean: float) -> Dist:
        return cls("exponential", (mean,))

    @classmethod
    def fixed(cls, value: float) -> Dist:
        return cls("fixed", (value,))

    @classmethod
    def gamma(cls, shape: float, scale: float) -> Dist:
        return cls("gamma", (shape, scale))

    @property
    def is_zero(self) -> bool:
        """True when every draw is 0 (a step the route does not have)."""
        return self.kind in ("fixed", "lognormal") and self.params[0] == 0.0

    @property
    def median(self) -> float:
        if self.kind == "exponential":
            return self.params[0] * math.log(2.0)
        if self.kind == "gamma":
            from scipy.special import gammaincinv  # noqa: PLC0415 - only this property needs scipy

            return float(gammaincinv(self.params[0], 0.5)) * self.params[1]
        return self.params[0]   # lognormal median, fixed value

    @property
    def mean(self) -> float:
        if self.kind == "lognormal":
            return self.params[0] * math.exp(self.params[1] ** 2 / 2)
        if self.kind == "gamma":
            return self.params[0] * self.params[1]
        return self.params[0]   # exponential mean, fixed value

    def sample(self, rng: np.random.Generator, size: int | None = None) -> float | np.ndarray:
        """Draw ``size`` durations (one float when ``size`` is None)."""
        a = self.params[0]
        if self.kind == "fixed" or self.is_zero:
            return a if size is None else np.full(size, a)
        if self.kind == "lognormal":
            x = rng.lognormal(math.log(a), self.params[1], size)
        elif self.kind == "exponential":
            x = rng.exponential(a, size)
        else:
            x = rng.gamma(a, self.params[1], size)
        return float(x) if size is None else x

    def with_median(self, median: float) -> Dist:
        """The same shape with another median (log_sd, gamma shape kept)."""
        if self.kind == "lognormal":
            return Dist.lognormal(median, self.params[1])
        if self.kind == "exponential":
            return Dist.exponential(median / math.log(2.0))
        if self.kind == "gamma":
            return Dist.gamma(self.params[0], self.params[1] * median / self.median)
        return Dist.fixed(median)

    def __str__(self) -> str:
        args = ", ".join(f"{n}={v:g}" for n, v in zip(_PARAMS[self.kind], self.params))
        return f"{self.kind}({args})"


@dataclass(frozen=True)
class Capacity:
    """Shared resources of one route (``None`` = unlimited).

    ``apheresis_chairs``: concurrent collections at all centres together (a collection holds a
    chair for one day); ``slots_per_month``: manufacturing starts allowed per calendar month,
    booked first come first served; ``suites``: concurrent manufacturing runs; ``qc_labs``:
    concurrent release-testing runs; ``shipping_lanes``: shipments under way at once (courier
    and dry-shipper capacity, out and back); ``treatment_beds``: beds at the treating centres
    for lymphodepletion, infusion and the index stay (``index_stay`` days after infusion).
    """

    apheresis_chairs: int | None = None
    slots_per_month: int | None = None
    suites: int | None = None
    qc_labs: int | None = None
    shipping_lanes: int | None = None
    treatment_beds: int | None = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is not None and not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1):
                raise ScenarioError(f"capacity {f.name} = {v!r}: must be a whole number >= 1, or null (unlimited)")


@dataclass(frozen=True)
class Route:
    """How a product reaches the patient; every duration in days.

    ``max_attempts`` is the number of manufacturing attempts allowed (autologous and point of
    care: a failed attempt is re-made from stored material); for off-the-shelf it is the
    number of batches a patient may look through for a dose that suits them (HLA) before
    "no_product". The off-the-shelf fields are ``None`` on the other kinds; on off-the-shelf
    routes ``manufacturing_failure`` and ``qc_release`` apply to batches.

    On autologous and point-of-care routes ``manufacturing_failure`` is the share of patients
    left without a product after every attempt, which is what trials publish (PMC8427697
    Table 2 counts patients, re-manufacture included); each attempt then fails with
    :attr:`attempt_failure` = ``manufacturing_failure ** (1 / max_attempts)``.
    """

    name: str
    kind: str
    description: str
    referral_to_apheresis: Dist          # off-the-shelf: referral to product allocation
    collection_failure: float
    recollection_delay: Dist
    shipping_out: Dist
    manufacturing: Dist
    qc_release: Dist
    manufacturing_failure: float
    max_attempts: int
    out_of_spec: float
    shipping_back: Dist
    infusion_scheduling: Dist            # product at the site to infusion (lymphodepletion included)
    index_stay: Dist                     # a treatment bed is held this long after infusion
    bridging_fraction: float
    screen_failure: float                # found ineligible at evaluation, at the end of referral_to_apheresis
    doses_per_batch: int | None = None
    batch_production: Dist | None = None
    shelf_life_days: float | None = None
    reorder_level: int | None = None
    hla_match_probability: float = 1.0
    capacity: Capacity = field(default_factory=Capacity)

    @property
    def attempt_failure(self) -> float:
        """Chance that one manufacturing attempt fails (see the class docstring)."""
        if self.kind == "off_the_shelf":
            return self.manufacturing_failure
        return float(self.manufacturing_failure ** (1.0 / self.max_attempts))

    def __post_init__(self) -> None:
        where = f"route {self.name!r}"
        if self.kind not in ROUTE_KINDS:
            raise ScenarioError(f"{where}: kind {self.kind!r} is unknown; use one of {', '.join(ROUTE_KINDS)}")
        for name in PROBABILITY_FIELDS:
            p = getattr(self, name)
            if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
                raise ScenarioError(f"{where}: {name} = {p!r} is not a probability; give a number in [0, 1]")
        for name in DURATION_FIELDS:
            if not isinstance(getattr(self, name), Dist):
                raise ScenarioError(f"{where}: {name} must be a Dist, got {getattr(self, name)!r}")
        if not (isinstance(self.max_attempts, (int, np.integer)) and self.max_attempts >= 1):
            raise ScenarioError(f"{where}: max_attempts = {self.max_attempts!r}; give a whole number >= 1")
        if self.kind == "off_the_shelf":
            missing = [n for n in BATCH_FIELDS if getattr(self, n) is None]
            if missing:
                raise ScenarioError(f"{where}: an off-the-shelf route needs {', '.join(missing)}")
            if not (isinstance(self.doses_per_batch, (int, np.integer)) and self.doses_per_batch >= 1):
                raise ScenarioError(f"{where}: doses_per_batch = {self.doses_per_batch!r}; give a whole number >= 1")
            if not (isinstance(self.reorder_level, (int, np.integer)) and 0 <= self.reorder_level):
                raise ScenarioError(f"{where}: reorder_level = {self.reorder_level!r}; give a whole number >= 0")
            if not (isinstance(self.shelf_life_days, (int, float)) and self.shelf_life_days > 0):
                raise ScenarioError(f"{where}: shelf_life_days = {self.shelf_life_days!r}; give a number of days > 0")
            if not isinstance(self.batch_production, Dist):
                raise ScenarioError(f"{where}: batch_production must be a Dist")


DURATION_FIELDS = ("referral_to_apheresis", "recollection_delay", "shipping_out", "manufacturing", "qc_release",
                   "shipping_back", "infusion_scheduling", "index_stay")
PROBABILITY_FIELDS = ("collection_failure", "manufacturing_failure", "out_of_spec", "bridging_fraction",
                      "hla_match_probability", "screen_failure")
BATCH_FIELDS = ("doses_per_batch", "batch_production", "shelf_life_days", "reorder_level")
_INT_FIELDS = ("max_attempts", "doses_per_batch", "reorder_level")
#: fields a scenario may override (route_with); name, kind, description and capacity are not steps
OVERRIDABLE = DURATION_FIELDS + ("batch_production",) + PROBABILITY_FIELDS + _INT_FIELDS + ("shelf_life_days",)
CAPACITY_FIELDS = tuple(f.name for f in dataclasses.fields(Capacity))
# steps a route kind does not have: left out of its yaml section, zero here
_ABSENT = {"point_of_care": {"shipping_out": Dist.fixed(0.0), "shipping_back": Dist.fixed(0.0)},
           "off_the_shelf": {"collection_failure": 0.0, "recollection_delay": Dist.fixed(0.0),
                             "shipping_out": Dist.fixed(0.0), "manufacturing": Dist.fixed(0.0)}}


def _unknown(what: str, key: str, known: tuple[str, ...] | list[str]) -> ScenarioError:
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ScenarioError(f"{what} has no {key!r}{hint} Known: {', '.join(known)}")


def _dist_override(where: str, current: Dist | None, value: Any) -> Dist:
    """A duration override: a number (the median, shape kept), {median, log_sd}, or {kind: ...}."""
    fix = ("give a number (median days), {median: 14, log_sd: 0.3}, {kind: exponential, mean: 10}, "
           "{kind: fixed, value: 5} or {kind: gamma, shape: 4, scale: 3}")
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return current.with_median(float(value)) if current is not None else Dist.fixed(float(value))
        if isinstance(value, dict):
            spec = dict(value)
            kind = spec.pop("kind", "lognormal")
            if kind not in DIST_KINDS:
                raise ScenarioError(f"kind {kind!r} is unknown; use one of {', '.join(DIST_KINDS)}")
            names = _PARAMS[kind]
            if kind == "lognormal" and "log_sd" not in spec and current is not None and current.kind == "lognormal":
                spec["log_sd"] = current.params[1]
            extra = sorted(set(spec) - set(names))
            lacking = [n for n in names if n not in spec]
            if extra or lacking:
                raise ScenarioError(f"a duration of kind {kind} takes {', '.join(names)}"
                                    + (f"; unknown {', '.join(extra)}" if extra else "")
                                    + (f"; missing {', '.join(lacking)}" if lacking else ""))
            return Dist(kind, tuple(spec[n] for n in names))
    except ScenarioError as e:
        raise ScenarioError(f"{where}: {e}; {fix}") from None
    raise ScenarioError(f"{where} = {value!r} is not a duration; {fix}")


def route_with(route: Route, overrides: dict | None) -> Route:
    """``route`` with some fields replaced (scenario ``manufacturing.steps``).

    Durations take a number (new median in days, the spread kept), ``{median, log_sd}``,
    ``{kind: exponential, mean}``, ``{kind: fixed, value}`` or ``{kind: gamma, shape, scale}``;
    probabilities a number in [0, 1]; counts a whole number.

    Raises
    ------
    ScenarioError (a ValueError)
        naming an unknown key and the known ones, or a bad value and the valid range.

    Examples
    --------
    >>> r = route_with(load_routes()["axi-cel"], {"manufacturing": 10, "manufacturing_failure": 0.05})
    >>> r.manufacturing.median, r.manufacturing_failure
    (10.0, 0.05)
    """
    if not overrides:
        return route
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        where = f"route {route.name!r} step {key}"
        if key not in OVERRIDABLE:
            raise _unknown(f"route {route.name!r}", str(key), OVERRIDABLE)
        if key in DURATION_FIELDS or key == "batch_production":
            changes[key] = _dist_override(where, getattr(route, key), value)
        elif key in PROBABILITY_FIELDS:
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0):
                raise ScenarioError(f"{where} = {value!r} is not a probability; give a number in [0, 1]")
            changes[key] = float(value)
        elif key in _INT_FIELDS:
            lowest = 0 if key == "reorder_level" else 1
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
                    and value >= lowest):
                raise ScenarioError(f"{where} = {value!r}; give a whole number >= {lowest}")
            changes[key] = int(value)
        else:   # shelf_life_days
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
                raise ScenarioError(f"{where} = {value!r}; give a number of days > 0")
            changes[key] = float(value)
    return dataclasses.replace(route, **changes)


def capacity_with(capacity: Capacity, overrides: dict | None) -> Capacity:
    """``capacity`` with some fields replaced; a value is a whole number >= 1 or null (unlimited).

    Examples
    --------
    >>> capacity_with(Capacity(), {"slots_per_month": 8}).slots_per_month
    8
    """
    if not overrides:
        return capacity
    changes: dict[str, int | None] = {}
    for key, value in overrides.items():
        if key not in CAPACITY_FIELDS:
            raise _unknown("capacity", str(key), CAPACITY_FIELDS)
        if value is None or value == "unlimited":
            changes[key] = None
        elif (isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
              and value >= 1):
            changes[key] = int(value)
        else:
            raise ScenarioError(f"capacity {key} = {value!r}; give a whole number >= 1, or null for unlimited")
    return dataclasses.replace(capacity, **changes)


# -- loading ------------------------------------------------------------------------------------

def _read_dist(k: Knowledge, path: str) -> Dist:
    e = k.entry(path)
    if e.unit != "day":
        raise KnowledgeError(f"{path}: a duration must be in days, not {e.unit!r}")
    v = e.value
    try:
        if isinstance(v, list) and len(v) == 2:
            return Dist.lognormal(v[0], v[1])
        if isinstance(v, (int, float)):
            return Dist.fixed(v)
    except ScenarioError as err:
        raise KnowledgeError(f"{path}: {err}") from None
    raise KnowledgeError(f"{path}: value {v!r} is neither a number of days nor [median, log_sd]")


def _lookup(k: Knowledge, name: str, key: str) -> str | None:
    """Dotted path of ``key`` for route ``name``: its own entry, else the ``common`` one."""
    route = k.node(f"manufacturing.routes.{name}")
    if key in route:
        return f"manufacturing.routes.{name}.{key}"
    if key in k.node("manufacturing.common"):
        return f"manufacturing.common.{key}"
    return None


def _load_capacity(k: Knowledge, name: str) -> Capacity:
    caps = k.node("manufacturing").get("capacity") or {}
    section = caps.get(name) or {}
    values: dict[str, int | None] = {}
    for key in section:
        if key not in CAPACITY_FIELDS:
            raise KnowledgeError(f"manufacturing.capacity.{name} has no {key!r}; known: {', '.join(CAPACITY_FIELDS)}")
        v = k.value(f"manufacturing.capacity.{name}.{key}")
        values[key] = int(v)
    try:
        return Capacity(**values)
    except ScenarioError as e:
        raise KnowledgeError(f"manufacturing.capacity.{name}: {e}") from None


def _load_route(k: Knowledge, name: str) -> Route:
    base = f"manufacturing.routes.{name}"
    kind = k.text(f"{base}.kind")
    absent = _ABSENT.get(kind, {})
    values: dict[str, Any] = {}
    wanted = DURATION_FIELDS + PROBABILITY_FIELDS + ("max_attempts",)
    if kind == "off_the_shelf":
        wanted += BATCH_FIELDS
    for key in wanted:
        path = _lookup(k, name, key)
        if path is None or (key in absent and path.startswith("manufacturing.common")):
            if key in absent:
                values[key] = absent[key]
                continue
            if key == "hla_match_probability":
                continue
            raise KnowledgeError(f"{base}: no {key!r} (and none under manufacturing.common)")
        if key in DURATION_FIELDS or key == "batch_production":
            values[key] = _read_dist(k, path)
        elif key in _INT_FIELDS:
            values[key] = int(k.value(path))
        else:
            values[key] = float(k.value(path))
    try:
        return Route(name=name, kind=kind, description=k.text(f"{base}.description"),
                     capacity=_load_capacity(k, name), **values)
    except ScenarioError as e:
        raise KnowledgeError(f"{base}: {e}") from None


def load_routes(k: Knowledge | None = None) -> dict[str, Route]:
    """Every route in ``knowledge/data/manufacturing.yaml``, by name, with its default capacity.

    Examples
    --------
    >>> routes = load_routes()
    >>> routes["axi-cel"].kind, routes["CB-CAR-NK"].kind
    ('autologous', 'off_the_shelf')
    """
    k = k if k is not None else load_knowledge(False)
    return {name: _load_route(k, name) for name in k.names("manufacturing.routes")}


def load_capacity(k: Knowledge | None = None) -> dict[str, Capacity]:
    """The default capacity of every route (``manufacturing.capacity``; unlimited when absent)."""
    k = k if k is not None else load_knowledge(False)
    return {name: _load_capacity(k, name) for name in k.names("manufacturing.routes")}
