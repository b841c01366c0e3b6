"""Reading a preset's numbers from ``carcell/knowledge/data/published/<preset>.yaml``.

A preset file has up to four sections, each a mapping of sourced entries (the house format of
``docs/knowledge-schema.md``: ``value``, ``unit``, ``source``, ``note``):

``parameter_sets``
    one mapping per named set (``HDLM-2``, ``RAJI``, ``CR``); a set may say ``base: <other set>``
    and list only the entries that differ.
``protocols``
    doses, initial conditions and rechallenges of the paper's experiments, one mapping each.
``variability``
    inter-individual variability: the log-normal SD (omega) of each varied parameter.
``published``
    the paper's own figures and table values that the preset's checks reproduce.

Nothing here knows any model; presets ask for the sections they need.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from carcell.errors import KnowledgeError
from carcell.io.yamlio import load_yaml
from carcell.knowledge.store import DATA_DIR, check_entry
from carcell.units import KNOWN_UNITS

PUBLISHED_DIR = DATA_DIR / "published"

#: Units that published models need beyond those of carcell's own model: mass-action rate
#: constants per cell, carrying capacities written as 1/cells, and the arbitrary units and
#: hours of Hanson 2016. Proposed for ``carcell/units.py``; accepted here meanwhile.
PUBLISHED_UNITS: frozenset[str] = frozenset(
    {"1/cells", "1/(cells*day)", "1/h", "au", "1/au", "au/h", "1/(au*h)"}
)


@dataclass(frozen=True)
class Parameter:
    """One sourced number of a published model."""

    name: str
    value: Any
    unit: str
    source: str
    note: str = ""


def _entry(path: str, node: Any) -> Parameter:
    if not isinstance(node, dict) or "value" not in node:
        raise KnowledgeError(f"{path}: expected an entry with value, unit and source")
    unit = str(node.get("unit", "")).strip()
    if unit in PUBLISHED_UNITS and unit not in KNOWN_UNITS:
        # validate everything else with the house checker, then restore the unit
        e = check_entry(path, {**node, "unit": "1"})
    else:
        e = check_entry(path, node)
    return Parameter(name=path.rsplit(".", 1)[-1], value=e.value, unit=unit, source=e.source, note=e.note)


@lru_cache(maxsize=None)
def preset_tree(preset: str) -> dict:
    """The raw YAML tree of one preset (``published.<preset>`` in the knowledge base).

    Read straight from its file: the preset needs no other knowledge file.
    """
    path = PUBLISHED_DIR / f"{preset}.yaml"
    if not path.exists():
        raise KnowledgeError(f"{path}: missing; every preset needs its data file")
    return load_yaml(path) or {}


def section(preset: str, name: str) -> dict[str, Parameter]:
    """Every entry of one flat section (``variability``, ``published``)."""
    node = preset_tree(preset).get(name, {}) or {}
    return {k: _entry(f"published.{preset}.{name}.{k}", v) for k, v in node.items()}


def parameter_set(preset: str, set_name: str) -> dict[str, Parameter]:
    """The entries of one parameter set, resolving ``base:`` chains."""
    sets = preset_tree(preset).get("parameter_sets", {}) or {}
    if set_name not in sets:
        raise KnowledgeError(
            f"published.{preset}: no parameter set {set_name!r}; known: {', '.join(sets)}"
        )
    node = sets[set_name]
    out = parameter_set(preset, node["base"]) if "base" in node else {}
    for k, v in node.items():
        if k in ("base", "description"):
            continue
        out[k] = _entry(f"published.{preset}.parameter_sets.{set_name}.{k}", v)
    return out


def set_names(preset: str) -> list[str]:
    return list((preset_tree(preset).get("parameter_sets") or {}).keys())


def protocol(preset: str, name: str) -> dict[str, Parameter]:
    """The entries of one named protocol (doses, initial conditions)."""
    protos = preset_tree(preset).get("protocols", {}) or {}
    if name not in protos:
        raise KnowledgeError(f"published.{preset}: no protocol {name!r}; known: {', '.join(protos)}")
    return {k: _entry(f"published.{preset}.protocols.{name}.{k}", v)
            for k, v in protos[name].items() if k != "description"}


def protocol_names(preset: str) -> list[str]:
    return list((preset_tree(preset).get("protocols") or {}).keys())


def description(preset: str, kind: str, name: str) -> str:
    """The ``description`` text of a parameter set or protocol ('' when none)."""
    node = (preset_tree(preset).get(kind) or {}).get(name, {}) or {}
    return str(node.get("description", ""))
