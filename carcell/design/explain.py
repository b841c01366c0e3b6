"""What a design turns into, and why: parameter tables, comparisons and reference lists.

These are the tables behind ``carcell design explain``, ``carcell design compare`` and
``carcell citations``; they read a resolved :class:`~carcell.design.compile.Design` and never
change it.
"""

from __future__ import annotations

import math

import pandas as pd

from carcell.design.compile import Design
from carcell.knowledge.store import SOURCE_KINDS

# Parameters drawn per patient: how the typical value is made.
_PER_PATIENT = {
    "host_baseline": "physiology.host.lymphocytes_per_kg x body weight (drawn per patient)",
    "recognition_tumour": "logic gate over each patient's drawn antigen densities and shares (killing threshold)",
    "activation_tumour": "logic gate over each patient's drawn antigen densities and shares (activation threshold)",
}


def parameter_table(design: Design) -> pd.DataFrame:
    """Every model parameter and design quantity: value, unit, derivation and sources."""
    rows = design.ledger.rows()
    for r in rows:
        r["scope"] = "patient variability" if r["parameter"] in design.variability and \
            design.variability[r["parameter"]] > 0 else "typical"
    for name, how in _PER_PATIENT.items():
        rows.append({"parameter": name, "value": math.nan, "unit": "cells" if name == "host_baseline" else "1",
                     "derivation": how, "sources": "", "notes": "", "scope": "per patient"})
    for j, t in enumerate(design.tissues, start=1):
        rows.append({"parameter": f"normal_baseline_{j}", "value": t.cells_per_kg, "unit": "cells/kg",
                     "derivation": f"{t.name}: tissues.{t.name}.cells_per_kg x body weight",
                     "sources": design.knowledge.entry(f"tissues.{t.name}.cells_per_kg").source,
                     "notes": design.knowledge.entry(f"tissues.{t.name}.cells_per_kg").citation,
                     "scope": "per patient"})
    for name, omega in sorted(design.variability.items()):
        if omega > 0:
            rows.append({"parameter": f"omega[{name}]", "value": omega, "unit": "1",
                         "derivation": "log-normal inter-individual SD (car_t.variability or scenario)",
                         "sources": "", "notes": "", "scope": "variability"})
    return pd.DataFrame(rows, columns=["parameter", "value", "unit", "derivation", "sources", "scope", "notes"])


def construct_table(design: Design) -> list[tuple[str, str]]:
    """The resolved construct, part by part."""
    c = design.construct
    k = design.knowledge
    rows = [("construct", c.summary()), ("chassis", f"{c.chassis} ({c.cell_type} cells"
                                         + (", irradiated)" if c.irradiated else ")"))]
    for b in c.binders + c.inhibitory:
        rows.append((f"binder ({b.role})", f"{b.name}: anti-{b.target} {b.format}, KD {b.kd_nm:g} nM"
                     + (" (scenario)" if b.kd_overridden else "")))
    rows.append(("logic", c.gate.kind + (f" ({c.gate.mode})" if c.gate.mode else "")))
    rows.append(("hinge / TM", f"{c.hinge} / {c.transmembrane}"))
    rows.append(("signalling", f"{' + '.join(c.costim)} + {c.activation}"))
    rows.append(("armour", ", ".join(c.armour) or "none"))
    rows.append(("safety / control", ", ".join(c.safety) or "none"))
    for a in design.antigens:
        rows.append((f"{a.name} in {design.disease}",
                     f"patients positive {a.patients_positive:.0%}; density median {a.density[0]:.3g} "
                     f"molecules/cell; cells without it median {a.negative_fraction[0]:.2g}; half-kill "
                     f"{a.half_kill:.3g}, half-activation {a.half_activation:.3g} molecules/cell"))
    for j, t in enumerate(design.tissues, start=1):
        rows.append((f"normal tissue {j}", f"{t.name} ({', '.join(t.antigens)}): recognition "
                     f"{t.recognition_kill:.3g}; risk {t.severity}: {t.consequence}"))
    for t in design.tissues_not_simulated:
        rows.append(("normal tissue (not simulated)", f"{t.name}: recognition {t.recognition_kill:.3g}; "
                     f"{t.consequence}"))
    chassis = k.node(f"chassis.{c.chassis}")
    if "gvhd_risk" in chassis:
        rows.append(("GvHD risk", f"{float(k.value(f'chassis.{c.chassis}.gvhd_risk')):.2g}"))
    return rows


def compare(a: Design, b: Design, rtol: float = 1e-12) -> pd.DataFrame:
    """Parameters (and construct parts) that differ between two designs, side by side."""
    ta = {r["parameter"]: r for r in a.ledger.rows()}
    tb = {r["parameter"]: r for r in b.ledger.rows()}
    rows = []
    for name in list(dict.fromkeys([*ta, *tb])):
        ra, rb = ta.get(name), tb.get(name)
        va = ra["value"] if ra else math.nan
        vb = rb["value"] if rb else math.nan
        same = ra is not None and rb is not None and (va == vb or abs(va - vb) <= rtol * max(abs(va), abs(vb)))
        if not same:
            ratio = vb / va if (ra and rb and va) else math.nan
            rows.append({"parameter": name, "A": va, "B": vb, "B/A": ratio,
                         "unit": (ra or rb)["unit"],
                         "why A": ra["derivation"] if ra else "not in A",
                         "why B": rb["derivation"] if rb else "not in B"})
    ca, cb = dict(construct_table(a)), dict(construct_table(b))
    parts = [{"parameter": key, "A": ca.get(key, "-"), "B": cb.get(key, "-")}
             for key in dict.fromkeys([*ca, *cb]) if ca.get(key) != cb.get(key)]
    return pd.concat([pd.DataFrame(parts), pd.DataFrame(rows)], ignore_index=True)


def _reference(source: str) -> str | None:
    if source in SOURCE_KINDS:
        return None
    if source.startswith("doi:"):
        return "https://doi.org/" + source.removeprefix("doi:").strip()
    if source.startswith("cite:"):
        return source.removeprefix("cite:").strip()
    return source


def citations(design: Design) -> dict[str, list[str]]:
    """Every source behind a design: published references, and the assumptions made.

    ``references`` lists each publication or URL once, with the knowledge entries that use
    it; ``assumptions`` lists the entries that are assumptions, derivations or fits, with
    their notes.
    """
    refs: dict[str, list[str]] = {}
    assumptions: list[str] = []
    for path, e in sorted(design.knowledge.used.items()):
        ref = _reference(e.source)
        if ref is None:
            assumptions.append(f"{path} = {e.value} {e.unit} [{e.source}]: {e.note}")
        else:
            refs.setdefault(ref, []).append(path)
    k = design.knowledge
    c = design.construct
    preset = design.scenario.product.preset
    text_sources = []
    if preset:
        text_sources += [(f"products.{preset}", s) for s in k.node(f"products.{preset}").get("sources", [])]
    for b in c.binders + c.inhibitory:
        src = k.node(f"binders.{b.name}").get("identity_source")
        if src:
            text_sources.append((f"binders.{b.name}", src))
    for where, src in text_sources:
        ref = _reference(str(src))
        if ref:
            refs.setdefault(ref, []).append(where)
    return {"references": [f"{ref}  [{', '.join(paths)}]" for ref, paths in sorted(refs.items())],
            "assumptions": assumptions}
