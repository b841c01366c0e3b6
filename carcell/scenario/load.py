"""Reading a scenario file, applying ``--set`` overrides and turning errors into one line."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from carcell.errors import ScenarioError
from carcell.io.yamlio import load_yaml_text, parse_scalar
from carcell.scenario.presets import expand_preset
from carcell.scenario.schema import Scenario, nearest


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at a location of the schema (for 'did you mean')."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = field.annotation
        args = getattr(current, "__args__", ())
        for a in args:  # Optional[Model]
            if isinstance(a, type) and issubclass(a, BaseModel):
                current = a
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc)
        bad = e.get("input")
        if e["type"] == "extra_forbidden":
            known = _fields_at(Scenario, loc[:-1])
            near = nearest(str(loc[-1]), known)
            hint = f"did you mean {near!r}? " if near else ""
            lines.append(f"{path}: unknown field; {hint}allowed here: {', '.join(known)}")
        elif e["type"] == "missing":
            lines.append(f"{path}: required field is missing")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = bad if not isinstance(bad, (dict, list)) else type(bad).__name__
            if isinstance(shown, str):
                shown = repr(shown)
            if not path or msg.startswith(path):   # the message names its fields itself
                lines.append(msg)
            elif isinstance(bad, (dict, list)) or repr(bad) in msg or (isinstance(bad, str) and bad in msg):
                lines.append(f"{path}: {msg}")
            else:
                lines.append(f"{path}: {shown} is invalid: {msg}")
    head = f"{source}: " if source else ""
    return head + ("\n  ".join(lines) if len(lines) > 1 else lines[0])


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``dotted.path=value`` strings to a raw scenario mapping (returns a copy)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set {item!r}: write it as dotted.path=value, e.g. product.dose.cells_per_kg=5e6")
        path, text = item.split("=", 1)
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ScenarioError(f"--set {item!r}: the path before '=' is empty")
        node = out
        for k in keys[:-1]:
            nxt = node.get(k)
            if nxt is None:
                nxt = node[k] = {}
            if not isinstance(nxt, dict):
                raise ScenarioError(f"--set {item!r}: {k!r} holds a value, not a section")
            node = nxt
        try:
            node[keys[-1]] = parse_scalar(text)
        except yaml.YAMLError:
            node[keys[-1]] = text
    return out


def validate_raw(raw: Any, source: str = "") -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{source}: a scenario is a mapping with sections product, indication, "
                            f"regimen, population, trial; got a {type(raw).__name__}")
    raw = expand_preset(raw)
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        raise ScenarioError(_format(err, source)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    path = Path(path)
    if not path.exists():
        raise ScenarioError(f"{path}: no such scenario file")
    try:
        raw = load_yaml_text(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ScenarioError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ScenarioError(f"{path}: not a text file") from None
    if raw is None:
        raise ScenarioError(f"{path}: the file is empty; at least 'indication: {{disease: LBCL}}' is needed")
    if not isinstance(raw, dict):
        raise ScenarioError(f"{path}: a scenario is a mapping with sections product, indication, "
                            f"regimen, population, trial; got a {type(raw).__name__}")
    return validate_raw(apply_overrides(raw, overrides or []), str(path))


def scenario_hash(s: Scenario) -> str:
    text = json.dumps(s.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
