"""Regenerate the vocabulary tables of docs/design.md from the knowledge files.

    python tools/gen_design_doc.py          # rewrite docs/design.md between the markers
    python tools/gen_design_doc.py --check  # exit 1 if docs/design.md is out of date

tests/test_design_doc.py runs the check, so the document cannot drift from the data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from carcell.knowledge import load_knowledge

DOC = Path(__file__).resolve().parents[1] / "docs" / "design.md"
START, END = "<!-- vocabulary:start -->", "<!-- vocabulary:end -->"


def _src(k, path: str) -> str:
    e = k.entry(path)
    return e.source.removeprefix("cite:")


def _cell(x) -> str:
    return str(x).replace("|", "/").replace("\n", " ")


def _mult(k, base: str) -> str:
    node = k.node(base)
    mult = node.get("multipliers") or {}
    parts = [f"{n} x{float(k.value(f'{base}.multipliers.{n}')):g}" for n in mult]
    if "antigen_threshold_multiplier" in node:
        parts.insert(0, f"threshold x{float(k.value(f'{base}.antigen_threshold_multiplier')):g}")
    for comp in node.get("relieves") or {}:
        parts.append(f"relieves {comp} {float(k.value(f'{base}.relieves.{comp}')):.0%}")
    if "tonic_exhaustion" in node:
        parts.append(f"tonic signalling: k_exhaustion x{float(k.value(f'{base}.tonic_exhaustion')):g} with CD28")
    if "tonic_exhaustion_weight" in node:
        parts.append(f"keeps {float(k.value(f'{base}.tonic_exhaustion_weight')):.0%} of tonic exhaustion")
    if "bystander_kill" in node:
        parts.append(f"bystander killing {float(k.value(f'{base}.bystander_kill')):g}")
    return ", ".join(parts) or "reference (x1)"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out + [""]


def vocabulary() -> str:
    k = load_knowledge()
    lines: list[str] = []
    lines += ["### Binders (`binders.yaml`)", ""]
    lines += _table(["binder", "target", "format", "KD (nM)", "KD source", "effect"], [
        [b, k.text(f"binders.{b}.target"), k.text(f"binders.{b}.format"),
         f"{float(k.value(f'binders.{b}.kd_nm')):g}", _src(k, f"binders.{b}.kd_nm"), _mult(k, f"binders.{b}")]
        for b in k.names("binders")])
    for title, base in (("Hinges and spacers", "construct.hinges"), ("Transmembrane domains", "construct.transmembrane"),
                        ("Activation domains", "construct.activation")):
        lines += [f"### {title} (`{base.replace('.', '/')}.yaml`)", ""]
        rows = []
        for name in k.names(base):
            node = k.node(f"{base}.{name}")
            extra = ""
            if "kinase_dependent" in node:
                extra = f"kinase-dependent: {node['kinase_dependent']}; kills: {node.get('kills', True)}; "
            rows.append([name, "/".join(node.get("chassis_types", ["T", "NK"])), extra + _mult(k, f"{base}.{name}"),
                         _cell(node.get("description", ""))])
        lines += _table(["part", "chassis", "effect on parameters", "description"], rows)
    lines += ["### Costimulatory domains (`costim/*.yaml`)", ""]
    lines += _table(["domain", "chassis", "memory share", "effect on parameters"], [
        [d, "/".join(k.node(f"costim.{d}").get("chassis_types", ["T", "NK"])),
         f"{float(k.value(f'costim.{d}.memory_fraction')):g}", _mult(k, f"costim.{d}")] for d in k.names("costim")])
    lines += ["### Armour (`armour.yaml`)", ""]
    rows = []
    for a in k.names("armour"):
        node = k.node(f"armour.{a}")
        effect = _mult(k, f"armour.{a}")
        if "il15_autocrine" in node:
            effect = f"autocrine IL-15 {float(k.value(f'armour.{a}.il15_autocrine')):g} pg/mL; " + effect
        rows.append([a, node.get("acts_in", ""), effect, _cell(node.get("description", ""))])
    lines += _table(["armour", "acts in", "effect", "description"], rows)
    lines += ["### Safety switches and control (`safety.yaml`)", ""]
    lines += _table(["element", "kind", "drug", "description"], [
        [s, k.node(f"safety.{s}").get("kind", ""), k.node(f"safety.{s}").get("drug", ""),
         _cell(k.node(f"safety.{s}").get("description", ""))] for s in k.names("safety")])
    lines += ["### Logic gates (`logic.yaml`)", ""]
    rows = []
    for g in k.names("logic"):
        for m in k.names(f"logic.{g}"):
            node = k.node(f"logic.{g}.{m}")
            nums = ", ".join(f"{n} {float(k.value(f'logic.{g}.{m}.{n}')):g}"
                             for n, v in node.items() if isinstance(v, dict) and "value" in v)
            rows.append([g, m, nums or "-", _cell(node.get("source", "")), _cell(node.get("description", ""))])
    lines += _table(["gate", "mode", "numbers", "source", "description"], rows)
    lines += ["### Chassis (`chassis/*.yaml`)", ""]
    rows = []
    for c in k.names("chassis"):
        node = k.node(f"chassis.{c}")
        dr = node.get("dose_range", {})
        dose = f"{dr['value'][0]:.2g}-{dr['value'][1]:.2g} {dr['unit']}" if dr else "-"
        rows.append([c, node.get("cell_type", ""), node.get("manufacturing_route", ""),
                     str(node.get("irradiation_required", False)), dose, _mult(k, f"chassis.{c}")])
    lines += _table(["chassis", "cells", "route", "irradiated", "dose range", "effect on parameters"], rows)
    lines += ["### Product presets (`products/*.yaml`)", ""]
    rows = []
    for p in k.names("products"):
        node = k.node(f"products.{p}")
        car = node["product"]["car"]
        dd = node["default_dose"]
        rows.append([p, node.get("indication", ""), f"{'+'.join(car['binders'])}, {car.get('hinge', 'CD8a')}/"
                     f"{car.get('transmembrane', 'CD8a')}, {'+'.join(car['costim'])}, {car.get('activation', 'CD3zeta')}",
                     node["product"]["chassis"], ", ".join(node["product"].get("armour", []) + node["product"].get("safety", [])) or "-",
                     f"{dd['value']:.3g} {dd['unit']}", "; ".join(node.get("sources", []))])
    lines += _table(["preset", "indication", "construct", "chassis", "armour/safety", "default dose", "sources"], rows)
    lines += ["### Antigen atlas (`antigens/*.yaml`, `tissues.yaml`)", ""]
    rows = []
    for a in [x for x in k.names("antigens") if not x.startswith("_")]:
        inds = ", ".join(f"{i} {float(k.value(f'antigens.{a}.indications.{i}.patients_positive')):.0%}"
                         for i in k.names(f"antigens.{a}.indications"))
        tissues = ", ".join(f"{t} ({k.text(f'tissues.{t}.consequence')})"
                            for t in (k.node(f"antigens.{a}").get("normal_tissues") or {})) or "none known"
        rows.append([a, f"{float(k.value(f'antigens.{a}.recognition_half_density')):g}", inds, tissues])
    lines += _table(["antigen", "half-activation density", "indications (patients positive)",
                     "normal tissues (consequence)"], rows)
    return "\n".join(lines)


def main() -> int:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n\n{vocabulary()}\n{END}{tail}"
    if "--check" in sys.argv:
        if new != text:
            print("docs/design.md is out of date: run python tools/gen_design_doc.py")
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
