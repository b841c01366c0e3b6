"""Loading knowledge files and looking entries up by dotted path."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from carcell.errors import KnowledgeError
from carcell.io.yamlio import load_yaml
from carcell.units import KNOWN_UNITS

DATA_DIR = Path(__file__).parent / "data"
SOURCE_PREFIXES = ("doi:", "https://", "http://", "cite:")
SOURCE_KINDS = ("assumption", "derived", "fit")


@dataclass(frozen=True)
class Entry:
    """One sourced number (or list of numbers)."""

    path: str
    value: Any
    unit: str
    source: str
    note: str = ""

    @property
    def citation(self) -> str:
        return self.source if not self.note else f"{self.source} ({self.note})"


def _is_entry(node: Any) -> bool:
    return isinstance(node, dict) and "value" in node


def check_entry(path: str, node: dict) -> Entry:
    """Validate one entry node; raise KnowledgeError naming the path."""
    source = str(node.get("source", "")).strip()
    unit = str(node.get("unit", "")).strip()
    note = str(node.get("note", "")).strip()
    if not source:
        raise KnowledgeError(f"{path}: no 'source' (give a doi:, https:// URL, cite: reference, or assumption/derived/fit with a note)")
    if not (source.startswith(SOURCE_PREFIXES) or source in SOURCE_KINDS):
        raise KnowledgeError(
            f"{path}: source {source!r} is not a doi:, https:// URL or one of {SOURCE_KINDS}"
        )
    if source in SOURCE_KINDS and not note:
        raise KnowledgeError(f"{path}: source '{source}' needs a 'note' saying what and why")
    if unit not in KNOWN_UNITS:
        raise KnowledgeError(f"{path}: unit {unit!r} is not one of {sorted(KNOWN_UNITS)}")
    value = node["value"]
    values = value if isinstance(value, list) else [value]
    if values and all(isinstance(v, list) for v in values):   # a table, e.g. a dosing schedule
        values = [x for row in values for x in row]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise KnowledgeError(f"{path}: value {value!r} is not a number or a list of numbers")
    return Entry(path=path, value=value, unit=unit, source=source, note=note)


def walk_entries(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield (dotted path, node) for every entry and every bare number in a YAML tree.

    Bare numbers (a number not inside an entry) are yielded too, so a check can flag them.
    """
    if _is_entry(node):
        yield prefix, node
    elif isinstance(node, dict):
        for key, child in node.items():
            yield from walk_entries(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from walk_entries(child, f"{prefix}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield prefix, node


def knowledge_file(path: str, root: Path = DATA_DIR) -> tuple[Path, list[str]]:
    """The data file that holds a dotted path, and the keys inside it: folders are taken while
    they exist (``costim.CD28.multipliers.x`` is costim/CD28.yaml, keys multipliers, x)."""
    parts, at = path.split("."), root
    while len(parts) > 1 and (at / parts[0]).is_dir():
        at, parts = at / parts[0], parts[1:]
    file = at / f"{parts[0]}.yaml"
    if not file.exists():
        raise KnowledgeError(f"{path}: no data file {file}")
    return file, parts[1:]


class Knowledge:
    """All data files, addressed as ``file.section.name`` (``physiology.blood_volume``)."""

    def __init__(self, root: Path = DATA_DIR):
        self.root = root
        self.tree: dict[str, Any] = {}
        for file in sorted(root.rglob("*.yaml")):
            rel = file.relative_to(root).with_suffix("")
            node = self.tree
            for part in rel.parts[:-1]:
                node = node.setdefault(part, {})
            node[rel.parts[-1]] = load_yaml(file) or {}
        self.used: dict[str, Entry] = {}

    def node(self, path: str) -> Any:
        """The node at a dotted path. A key may itself contain dots (``antigens.CLDN18.2``):
        when a part is not found, it is joined with the following parts until one matches."""
        node: Any = self.tree
        walked: list[str] = []
        parts = path.split(".")
        i = 0
        while i < len(parts):
            part = parts[i]
            j = i
            while isinstance(node, dict) and part not in node and j + 1 < len(parts):
                j += 1
                part = part + "." + parts[j]
            if not isinstance(node, dict) or part not in node:
                part = parts[i]
                known = sorted(node) if isinstance(node, dict) else []
                near = difflib.get_close_matches(part, known, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                where = ".".join(walked) or "knowledge"
                raise KnowledgeError(f"{where} has no {part!r}{hint} known: {', '.join(known)}")
            node = node[part]
            walked.append(part)
            i = j + 1
        return node

    def names(self, path: str) -> list[str]:
        """Keys under a node (for example the known costimulatory domains)."""
        node = self.node(path)
        return sorted(node) if isinstance(node, dict) else []

    def entry(self, path: str) -> Entry:
        node = self.node(path)
        if not _is_entry(node):
            raise KnowledgeError(f"{path} is not a sourced entry")
        e = check_entry(path, node)
        self.used[path] = e
        return e

    def value(self, path: str) -> Any:
        return self.entry(path).value

    def text(self, path: str) -> str:
        return str(self.node(path))

    def sources(self) -> dict[str, dict[str, Any]]:
        """Every entry read so far, for provenance.json."""
        return {
            p: {"value": e.value, "unit": e.unit, "source": e.source, "note": e.note}
            for p, e in sorted(self.used.items())
        }


@lru_cache(maxsize=1)
def _cached() -> Knowledge:
    return Knowledge()


def load_knowledge(fresh: bool = True) -> Knowledge:
    """The bundled knowledge base; ``fresh`` gives an instance with an empty usage record."""
    if not fresh:
        return _cached()
    k = Knowledge.__new__(Knowledge)
    base = _cached()
    k.root, k.tree, k.used = base.root, base.tree, {}
    return k
