"""The inputs of a sensitivity analysis: model parameters and design choices, with their ranges.

A parameter is a dotted path and what it may take:

``knowledge:tme.proliferation_weight=0.5:1.5``
    a sourced number of the knowledge base (``carcell design explain`` and the YAML files under
    ``carcell/knowledge/data`` name them), uniform between absolute bounds;
``knowledge:car_t.kinetics.rho_effector=x0.5:2:log``
    the same with bounds written as factors of the bundled value (``x``), log-uniform;
``product.dose.cells_per_kg=1e5:1e7:log``
    a scenario field (as ``--set`` writes it), here log-uniform over two decades;
``product.car.costim=[CD28,4-1BB]``
    a categorical design choice: one of the listed levels, each equally likely.

Each input is sampled in the unit interval ``u`` and mapped to its value here, so SALib
sees a unit hypercube and the mapping (linear, logarithmic, categorical) stays in one place:
linear ``lo + u (hi - lo)``, log ``lo (hi/lo)^u``, categorical level ``floor(u k)`` of ``k``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from carcell.errors import CarcellError, ScenarioError
from carcell.io.yamlio import load_yaml, parse_scalar

KNOWLEDGE_PREFIX = "knowledge:"
SCENARIO_PREFIX = "scenario:"
Scale = Literal["linear", "log"]
#: scenario fields that define the virtual cohort itself, not an input of the model
RESERVED = ("population.n", "population.seed", "trial.arms", "trial.workers")
EXAMPLE = "e.g. --param product.dose.cells_per_kg=1e5:1e7:log"


@dataclass(frozen=True)
class Parameter:
    """One input of a sensitivity analysis.

    ``low``/``high`` are absolute bounds once :func:`resolve_parameters` has run (``relative``
    bounds are factors of ``nominal`` before that); ``levels`` makes it categorical.
    """

    path: str
    low: float | None = None
    high: float | None = None
    scale: Scale = "linear"
    relative: bool = False
    levels: tuple[Any, ...] | None = None
    nominal: Any = None

    @property
    def is_knowledge(self) -> bool:
        return self.path.startswith(KNOWLEDGE_PREFIX)

    @property
    def key(self) -> str:
        """The path without its ``knowledge:`` prefix (a knowledge or scenario dotted path)."""
        return self.path.removeprefix(KNOWLEDGE_PREFIX)

    @property
    def is_categorical(self) -> bool:
        return self.levels is not None

    def value(self, u: float) -> Any:
        """The value at ``u`` in [0, 1] (absolute bounds: call after resolve_parameters)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.levels is not None:
            return copy.deepcopy(self.levels[min(int(u * len(self.levels)), len(self.levels) - 1)])
        assert self.low is not None and self.high is not None and not self.relative
        if self.scale == "log":
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (sensitivity.json)."""
        if self.levels is not None:
            return {"path": self.path, "kind": "categorical", "levels": list(self.levels), "nominal": self.nominal}
        return {"path": self.path, "kind": "continuous", "low": self.low, "high": self.high,
                "scale": self.scale, "nominal": self.nominal}


def _number(text: str, spec: str) -> float:
    try:
        value = parse_scalar(text.strip())
    except yaml.YAMLError:
        value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"--param {spec}: bound {text.strip()!r} is not a number; {EXAMPLE}")
    return float(value)


def parse_param(spec: str) -> Parameter:
    """Parse ``PATH=LO:HI[:log]``, ``PATH=xLO:HI[:log]`` or ``PATH=[A,B,...]`` (module docstring).

    Raises
    ------
    ScenarioError
        One line naming the specification and how to write it.
    """
    if "=" not in spec:
        raise ScenarioError(f"--param {spec}: write it as PATH=LOW:HIGH[:log] or PATH=[A,B]; {EXAMPLE}")
    path, text = (s.strip() for s in spec.split("=", 1))
    path = path.removeprefix(SCENARIO_PREFIX)
    if not path or not path.removeprefix(KNOWLEDGE_PREFIX):
        raise ScenarioError(f"--param {spec}: the path before '=' is empty; {EXAMPLE}")
    if text.startswith("["):
        try:
            levels = parse_scalar(text)
        except yaml.YAMLError:
            levels = None
        if not isinstance(levels, list):
            raise ScenarioError(f"--param {spec}: levels must be a YAML list, e.g. {path}=[CD28,4-1BB]")
        return make_parameter(path, levels=levels, where=f"--param {spec}")
    parts = text.split(":")
    relative = parts[0].strip().lower().startswith("x")
    if relative:
        parts[0] = parts[0].strip()[1:]
    scale = "linear"
    if len(parts) == 3:
        scale = parts.pop().strip().lower()
    if len(parts) != 2:
        raise ScenarioError(f"--param {spec}: write the range as LOW:HIGH, LOW:HIGH:log or xLOW:HIGH "
                            f"(factors of the bundled value); {EXAMPLE}")
    return make_parameter(path, low=_number(parts[0], spec), high=_number(parts[1], spec), scale=scale,
                          relative=relative, where=f"--param {spec}")


def make_parameter(path: str, *, low: float | None = None, high: float | None = None, scale: str = "linear",
                   relative: bool = False, levels: list | None = None, where: str = "") -> Parameter:
    """A checked :class:`Parameter` (bounds ordered and positive on a log scale, levels distinct)."""
    where = where or path
    if path.split(":", 1)[0] not in (path, "knowledge"):
        raise ScenarioError(f"{where}: {path!r} has an unknown prefix; use knowledge:dotted.path for a "
                            f"knowledge value or a scenario field such as product.dose.cells_per_kg")
    if any(path == r or path.startswith(r + ".") for r in RESERVED):
        raise ScenarioError(f"{where}: {path} defines the cohort, not a model input; set it with -n/--seed "
                            f"(or --set), and vary model parameters or design choices instead")
    if levels is not None:
        if len(levels) < 2:
            raise ScenarioError(f"{where}: give at least two levels, e.g. [CD28,4-1BB]")
        if any(levels[i] == levels[j] for i in range(len(levels)) for j in range(i)):
            raise ScenarioError(f"{where}: the levels {levels} repeat a value; list each choice once")
        if path.startswith(KNOWLEDGE_PREFIX):
            raise ScenarioError(f"{where}: knowledge values are numbers; give a range LOW:HIGH, not levels")
        return Parameter(path, levels=tuple(levels))
    if scale not in ("linear", "log"):
        raise ScenarioError(f"{where}: scale {scale!r} is unknown; use linear or log")
    if low is None or high is None or not low < high:
        raise ScenarioError(f"{where}: the range needs LOW < HIGH (got {low}:{high})")
    if scale == "log" and low <= 0:
        raise ScenarioError(f"{where}: a log scale needs positive bounds (got {low}:{high})")
    return Parameter(path, low=float(low), high=float(high), scale=scale, relative=relative)  # type: ignore[arg-type]


_FILE_KEYS = ("path", "range", "scale", "relative", "levels")


def load_params_file(path: str | Path) -> list[Parameter]:
    """Parameters from a YAML file (docs/sensitivity.md)::

        params:
          - product.dose.cells_per_kg=1e5:1e7:log          # the --param form
          - {path: knowledge:tme.proliferation_weight, range: [0.5, 1.5], relative: true}
          - {path: product.car.costim, levels: [CD28, 4-1BB]}
    """
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{path}: no such parameters file")
    try:
        raw = load_yaml(path)
    except yaml.YAMLError as err:
        raise ScenarioError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict) or set(raw) != {"params"} or not isinstance(raw["params"], list) or not raw["params"]:
        raise ScenarioError(f"{path}: a parameters file is a mapping with one key, params: a list of "
                            f"parameters, e.g. params: [product.dose.cells_per_kg=1e5:1e7:log]")
    out = []
    for i, item in enumerate(raw["params"]):
        where = f"{path}: params[{i}]"
        if isinstance(item, str):
            try:
                out.append(parse_param(item))
            except ScenarioError as err:
                raise ScenarioError(f"{where}: {err}") from None
            continue
        if not isinstance(item, dict) or "path" not in item:
            raise ScenarioError(f"{where}: give PATH=LOW:HIGH or a mapping with path and range or levels")
        unknown = sorted(set(item) - set(_FILE_KEYS))
        if unknown:
            raise ScenarioError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_FILE_KEYS)}")
        if ("range" in item) == ("levels" in item):
            raise ScenarioError(f"{where}: give either range: [LOW, HIGH] or levels: [A, B]")
        if "levels" in item:
            if not isinstance(item["levels"], list):
                raise ScenarioError(f"{where}: levels must be a list, e.g. [CD28, 4-1BB]")
            out.append(make_parameter(str(item["path"]).removeprefix(SCENARIO_PREFIX), levels=item["levels"],
                                      where=where))
            continue
        rng = item["range"]
        if (not isinstance(rng, list) or len(rng) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rng)):
            raise ScenarioError(f"{where}: range must be two numbers, e.g. [0.5, 1.5]")
        out.append(make_parameter(str(item["path"]).removeprefix(SCENARIO_PREFIX), low=rng[0], high=rng[1],
                                  scale=str(item.get("scale", "linear")), relative=bool(item.get("relative", False)),
                                  where=where))
    return out


# ---------------------------------------------------------------- checking against a scenario

def knowledge_number(key: str, where: str) -> float:
    """The bundled value of a scalar knowledge entry, or a one-line error naming it."""
    from carcell.knowledge import load_knowledge

    k = load_knowledge(False)
    try:
        node = k.node(key)
    except CarcellError as err:
        raise ScenarioError(f"{where}: {err}") from None
    if not (isinstance(node, dict) and "value" in node):
        sub = ", ".join(sorted(node)) if isinstance(node, dict) else ""
        raise ScenarioError(f"{where}: knowledge {key} is a section, not a sourced value"
                            + (f"; entries under it: {sub}" if sub else ""))
    value = node["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where}: knowledge {key} holds {value!r}, not one number; "
                            f"only single-number entries can be varied")
    return float(value)


def get_path(tree: Any, keys: list[str]) -> Any:
    """The value at ``keys`` in nested mappings (None where absent)."""
    for k in keys:
        if not isinstance(tree, dict) or k not in tree:
            return None
        tree = tree[k]
    return tree


def set_path(raw: dict, path: str, value: Any) -> None:
    """Set a dotted path in a raw scenario mapping in place (creates sections as --set does)."""
    keys = [k for k in path.split(".") if k]
    node = raw
    for k in keys[:-1]:
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ScenarioError(f"--param {path}: {k!r} holds a value, not a section")
        node = nxt
    node[keys[-1]] = value


def resolve_parameters(params: list[Parameter], raw: dict, source: str = "scenario") -> list[Parameter]:
    """Check every parameter against the scenario and the knowledge base and make bounds absolute.

    A knowledge path must name a single-number entry; a scenario path must be a field the
    scenario accepts at both ends of its range (or at every level), checked by validating the
    scenario there. A scalar level of a list field (``costim``) becomes a one-item list.

    Raises
    ------
    ScenarioError
        Naming the parameter, what is wrong and the nearest valid name where there is one.
    """
    from carcell.scenario.load import validate_raw

    seen: set[str] = set()
    nominal_sc = validate_raw(copy.deepcopy(raw), source).model_dump(mode="json")
    out = []
    for p in params:
        where = f"--param {p.path}"
        if p.path in seen:
            raise ScenarioError(f"{where}: given twice; keep one range per path")
        seen.add(p.path)
        if p.is_knowledge:
            nominal = knowledge_number(p.key, where)
            p = replace(p, nominal=nominal)
            if p.relative:
                if nominal == 0:
                    raise ScenarioError(f"{where}: the bundled value is 0, so factors (x) give no range; "
                                        f"give absolute bounds LOW:HIGH")
                lo, hi = sorted((p.low * nominal, p.high * nominal))  # type: ignore[operator]
                p = replace(p, low=lo, high=hi, relative=False)
            if p.scale == "log" and p.low <= 0:  # type: ignore[operator]
                raise ScenarioError(f"{where}: a log scale needs positive bounds (got {p.low}:{p.high})")
            out.append(p)
            continue
        keys = [k for k in p.path.split(".") if k]
        nominal = get_path(nominal_sc, keys)
        if p.is_categorical:
            if isinstance(nominal, list):
                p = replace(p, levels=tuple(v if isinstance(v, list) else [v] for v in p.levels or ()))
            p = replace(p, nominal=nominal)
            trials = list(p.levels or ())
        else:
            if p.relative:
                if not isinstance(nominal, (int, float)) or isinstance(nominal, bool) or nominal == 0:
                    raise ScenarioError(f"{where}: factors (x) need a non-zero number in the scenario at "
                                        f"{p.path} (it holds {nominal!r}); give absolute bounds LOW:HIGH")
                lo, hi = sorted((p.low * nominal, p.high * nominal))  # type: ignore[operator]
                p = replace(p, low=lo, high=hi, relative=False)
                if p.scale == "log" and lo <= 0:
                    raise ScenarioError(f"{where}: a log scale needs positive bounds (got {lo}:{hi})")
            p = replace(p, nominal=nominal)
            trials = [p.low, p.high]
        for v in trials:
            trial = copy.deepcopy(raw)
            set_path(trial, p.path, v)
            try:
                validate_raw(trial, source)
            except ScenarioError as err:
                raise ScenarioError(f"{where}: at {v!r}: {err}") from None
        out.append(p)
    return out
