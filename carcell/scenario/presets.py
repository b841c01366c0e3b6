"""Named products: ``product: {preset: axi-cel}`` expands to the preset's product section.

A preset file (``knowledge/data/products/<name>.yaml``) holds the published construct, the
chassis and a sourced default dose. The scenario's own product keys override the preset's key
by key (``car`` is merged field by field, so ``car: {costim: [CD28]}`` swaps only the domain).
A scenario without an ``indication`` takes the preset's.
"""

from __future__ import annotations

import copy
from typing import Any

from carcell.errors import ScenarioError
from carcell.knowledge import load_knowledge
from carcell.scenario.schema import nearest

_MERGED_SECTIONS = ("car",)


def preset_names() -> list[str]:
    return load_knowledge(False).names("products")


def preset_product(name: str) -> dict[str, Any]:
    """The preset's product section with its default dose filled in."""
    k = load_knowledge(False)
    node = k.node(f"products.{name}")
    product = copy.deepcopy(node["product"])
    dose = node["default_dose"]
    key = {"cells/kg": "cells_per_kg", "cells": "cells"}.get(dose["unit"])
    if key is None:  # pragma: no cover - guarded by tests/test_design_vocabulary.py
        raise ScenarioError(f"products.{name}.default_dose: unit {dose['unit']!r} is not cells/kg or cells")
    product["dose"] = {key: float(dose["value"])}
    return product


def expand_preset(raw: dict[str, Any]) -> dict[str, Any]:
    """Return ``raw`` with ``product.preset`` expanded (unchanged when there is none)."""
    product = raw.get("product")
    if not isinstance(product, dict) or product.get("preset") is None:
        return raw
    name = product["preset"]
    known = preset_names()
    if name not in known:
        near = nearest(str(name), known)
        hint = f"did you mean {near!r}? " if near else ""
        raise ScenarioError(f"product.preset: {name!r} is not a known product; {hint}known: {', '.join(known)}")
    merged = preset_product(name)
    for key, value in product.items():
        if key in _MERGED_SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    out = dict(raw)
    out["product"] = merged
    out.setdefault("name", name)
    if "indication" not in out:
        disease = load_knowledge(False).text(f"products.{name}.indication")
        if disease not in load_knowledge(False).names("indications"):
            raise ScenarioError(
                f"product.preset {name!r}: its usual indication {disease!r} has no tumour model in "
                f"carcell yet; give indication.disease, one of "
                f"{', '.join(load_knowledge(False).names('indications'))}")
        out["indication"] = {"disease": disease}
    return out
