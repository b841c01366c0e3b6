"""Where every model parameter came from: a ledger of values, factors and their sources.

The compiler writes each typical parameter value as a base value read from a knowledge entry,
then multiplies it by the factors of the design (costimulation, chassis, binder, hinge,
armour...) or sets it by a rule. Each step is recorded with the entry it came from, so
``carcell design explain`` can show the arithmetic and its sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carcell.knowledge import Knowledge


@dataclass
class Step:
    """One step in a parameter's derivation."""

    what: str          # "base", "x" (multiplier), "=" (rule)
    value: float
    path: str          # knowledge entry path, or "" for a rule
    source: str        # the entry's source (doi:, cite:, assumption...), or "rule"
    citation: str      # source and note of the entry, or the rule's explanation

    def describe(self) -> str:
        if not self.path:
            return f"= {self.value:.4g} ({self.citation})"
        tag = f"{self.path} [{self.source}]"
        return f"x {self.value:.4g} {tag}" if self.what == "x" else f"{self.value:.4g} {tag}"


@dataclass
class Record:
    name: str
    value: float
    unit: str
    steps: list[Step] = field(default_factory=list)

    def derivation(self) -> str:
        return " ".join(s.describe() for s in self.steps)

    def sources(self) -> list[str]:
        return [s.source for s in self.steps if s.path]

    def notes(self) -> list[str]:
        return [f"{s.path}: {s.citation}" for s in self.steps if s.path]


class Ledger:
    """Typical parameter values with their derivations."""

    def __init__(self, knowledge: Knowledge):
        self.k = knowledge
        self.records: dict[str, Record] = {}

    # -- writing --------------------------------------------------------------------------
    def base(self, name: str, path: str) -> float:
        """Set ``name`` from the knowledge entry at ``path``."""
        e = self.k.entry(path)
        value = float(e.value)
        self.records[name] = Record(name, value, e.unit, [Step("base", value, path, e.source, e.citation)])
        return value

    def scale(self, name: str, path: str) -> float:
        """Multiply ``name`` by the multiplier entry at ``path``."""
        e = self.k.entry(path)
        return self.scale_by(name, float(e.value), path, e.source, e.citation)

    def scale_by(self, name: str, factor: float, where: str, source: str, citation: str) -> float:
        """Multiply ``name`` by ``factor`` read from ``where`` (e.g. a calibration file)."""
        rec = self.records[name]
        rec.value *= factor
        rec.steps.append(Step("x", factor, where, source, citation))
        return rec.value

    def rule(self, name: str, value: float, unit: str, why: str, keep_steps: bool = False) -> float:
        """Set ``name`` by a rule of the compiler (documented in docs/design.md)."""
        rec = self.records.get(name)
        steps = list(rec.steps) if (rec is not None and keep_steps) else []
        steps.append(Step("=", float(value), "", "rule", why))
        self.records[name] = Record(name, float(value), unit, steps)
        return float(value)

    def value(self, name: str) -> float:
        return self.records[name].value

    # -- reading --------------------------------------------------------------------------
    def rows(self) -> list[dict[str, object]]:
        return [
            {"parameter": r.name, "value": r.value, "unit": r.unit, "derivation": r.derivation(),
             "sources": "; ".join(dict.fromkeys(r.sources())),
             "notes": " | ".join(r.notes())}
            for r in self.records.values()
        ]
