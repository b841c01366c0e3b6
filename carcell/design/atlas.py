"""The antigen atlas: which targets an indication offers, and how single and combined targets
trade tumour coverage against exposure of normal tissues.

:func:`rank_targets` scores every single antigen of an indication and every two-antigen
OR, AND and NOT combination, in the spirit of the combinatorial target analysis of
Dannenfelser et al. 2020 (Cell Systems, doi:10.1016/j.cels.2020.08.002), with the atlas's
population-level numbers instead of single-cell data:

- *coverage*: the expected share of a patient's tumour cells the gate recognises at the
  killing threshold, averaged over which antigens a patient's tumour carries
  (``patients_positive``) at the median share of positive cells and median density;
- *off-tumour exposure*: for each normal tissue carrying an antigen of the combination, the
  gate's recognition at the atlas density times the tissue's accessibility, weighted by the
  severity of hitting it (``design.yaml``); the worst tissue counts;
- *score*: ``coverage x (1 - exposure)``.

Recognition uses each antigen's reference binder on a reference construct (the antigen's
recognition_half_density, the killing-threshold ratio of car_t.yaml, Hill coefficient of the
atlas), so the ranking compares targets, not constructs. Antigens are assumed to be expressed
independently of each other on tumour cells (an assumption; docs/design.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations, product

import numpy as np
import pandas as pd

from carcell.design.gates import Gate, gate_population, recognition
from carcell.errors import DesignError
from carcell.knowledge import Knowledge
from carcell.scenario.schema import nearest


def atlas_antigens(k: Knowledge) -> list[str]:
    return [a for a in k.names("antigens") if not a.startswith("_")]


def atlas_indications(k: Knowledge) -> list[str]:
    return k.names("antigens._indications")


def antigens_in(k: Knowledge, indication: str) -> list[str]:
    """Antigens the atlas lists for an indication (errors name the known indications)."""
    known = atlas_indications(k)
    if indication not in known:
        near = nearest(indication, known)
        hint = f"did you mean {near!r}? " if near else ""
        raise DesignError(f"indication {indication!r} is not in the antigen atlas; {hint}known: {', '.join(known)}")
    return [a for a in atlas_antigens(k) if indication in k.names(f"antigens.{a}.indications")]


@dataclass
class _Antigen:
    name: str
    positive: float          # share of patients
    negative_cells: float    # median share of tumour cells without it
    density: float           # median molecules per positive tumour cell
    half_kill: float
    half_act: float
    hill: float
    tissues: dict[str, float]  # normal tissue -> density


def _antigen(k: Knowledge, name: str, indication: str) -> _Antigen:
    ap = f"antigens.{name}"
    half = float(k.value(f"{ap}.recognition_half_density"))
    ratio = float(k.value("car_t.binding.kill_threshold_ratio"))
    tissues = {t: float(k.value(f"{ap}.normal_tissues.{t}.density"))
               for t in (k.node(ap).get("normal_tissues") or {})}
    return _Antigen(
        name=name, positive=float(k.value(f"{ap}.indications.{indication}.patients_positive")),
        negative_cells=min(1.0, float(k.value(f"{ap}.indications.{indication}.negative_cell_fraction")[0])),
        density=float(k.value(f"{ap}.indications.{indication}.density")[0]),
        half_kill=half * ratio, half_act=half, hill=float(k.value(f"{ap}.recognition_hill")),
        tissues=tissues)


def _coverage(gate: Gate, ags: list[_Antigen]) -> float:
    """Expected recognised share of a patient's tumour, over patients' antigen positivity."""
    total = 0.0
    for pos in product((False, True), repeat=len(ags)):
        prob = float(np.prod([a.positive if p else 1 - a.positive for a, p in zip(ags, pos)]))
        if prob == 0:
            continue
        neg = [np.array([a.negative_cells if p else 1.0]) for a, p in zip(ags, pos)]
        rk = [recognition(np.array([a.density]), a.half_kill, a.hill) for a in ags]
        ra = [recognition(np.array([a.density]), a.half_act, a.hill) for a in ags]
        seen = gate_population(gate, neg, rk, ra)
        total += prob * float(seen.share[0] * seen.kill[0])
    return total


def _exposure(k: Knowledge, gate: Gate, ags: list[_Antigen], weights: dict[str, float]) -> tuple[float, str]:
    worst, where = 0.0, ""
    for t in dict.fromkeys(t for a in ags for t in a.tissues):
        neg = [np.array([0.0 if t in a.tissues else 1.0]) for a in ags]
        rk = [recognition(np.array([a.tissues.get(t, 0.0)]), a.half_kill, a.hill) for a in ags]
        ra = [recognition(np.array([a.tissues.get(t, 0.0)]), a.half_act, a.hill) for a in ags]
        seen = gate_population(gate, neg, rk, ra)
        severity = k.text(f"tissues.{t}.severity")
        x = float(seen.share[0] * seen.kill[0]) * float(k.value(f"tissues.{t}.accessibility")) * weights[severity]
        if x > worst:
            worst, where = x, f"{t} ({severity}: {k.text(f'tissues.{t}.consequence')})"
    return worst, where


def rank_targets(k: Knowledge, indication: str) -> pd.DataFrame:
    """Single targets and two-antigen OR/AND/NOT combinations, best score first."""
    names = antigens_in(k, indication)
    if not names:
        raise DesignError(f"the antigen atlas lists no target for {indication}")
    ags = {n: _antigen(k, n, indication) for n in names}
    weights = {s: float(k.value(f"design.targets.severity_weight.{s}"))
               for s in k.names("design.targets.severity_weight")}
    efficiency = float(k.value("logic.NOT.icar.inhibition_efficiency"))
    candidates: list[tuple[str, str, Gate, list[_Antigen]]] = []
    for n in names:
        candidates.append((n, "single", Gate("single", None, 1), [ags[n]]))
    for a, b in combinations(names, 2):
        candidates.append((f"{a} OR {b}", "OR", Gate("OR", "bicistronic", 2), [ags[a], ags[b]]))
        candidates.append((f"{a} AND {b}", "AND", Gate("AND", "split", 2), [ags[a], ags[b]]))
    for a, b in permutations(names, 2):
        candidates.append((f"{a} NOT {b}", "NOT", Gate("NOT", "icar", 1, 1, "cell", efficiency),
                           [ags[a], ags[b]]))
    rows = []
    for label, logic, gate, group in candidates:
        cov = _coverage(gate, group)
        risk, tissue = _exposure(k, gate, group, weights)
        rows.append({"targets": label, "logic": logic, "coverage": cov, "off_tumour_exposure": risk,
                     "score": cov * (1 - risk), "worst_normal_tissue": tissue or "none in the atlas"})
    df = pd.DataFrame(rows).sort_values(["score", "coverage"], ascending=False, kind="stable")
    return df.reset_index(drop=True)


def plot_targets(df: pd.DataFrame, indication: str, path, label_top: int = 8) -> None:
    """Coverage against off-tumour exposure, one point per target or combination."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"single": "#1b9e77", "OR": "#d95f02", "AND": "#7570b3", "NOT": "#e7298a"}
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for logic, group in df.groupby("logic", sort=False):
        ax.scatter(group["off_tumour_exposure"], group["coverage"], s=28, alpha=0.8,
                   color=colours.get(logic, "grey"), label=logic)
    for _, r in df.head(label_top).iterrows():
        ax.annotate(r["targets"], (r["off_tumour_exposure"], r["coverage"]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    ax.set_xlabel("off-tumour exposure (worst normal tissue, severity-weighted)")
    ax.set_ylabel("tumour coverage (expected share of tumour cells recognised)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"CAR targets in {indication}: coverage against off-tumour exposure")
    ax.legend(title="logic", loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
