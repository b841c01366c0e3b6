"""Logic gates: how a construct recognises a population of cells from its antigens.

A construct carries up to three antigens: one or more *activating* binders and, for a NOT
gate, *inhibitory* binders. A population (a patient's tumour, or a normal tissue) is
described per antigen by the share of its cells carrying the antigen and by how fully the
binder recognises the density on a positive cell (a Hill curve, ``recognition``).

Cells are split into phenotype classes (which antigens each carries), assuming antigens are
expressed independently of each other (an assumption; docs/design.md). The gate gives each
class a recognition between 0 and 1:

- ``single``: the one antigen's recognition;
- ``OR`` (tandem or bicistronic): ``1 - prod(1 - r_a)`` over the antigens the cell carries;
- ``AND`` split signal: ``prod(r_a)``, every antigen on the same cell;
- ``AND`` synNotch: the first antigen primes the cells *in that site* (the site's mean
  recognition of it), the others (OR) are then killed wherever they sit in the site;
- ``NOT`` (inhibitory CAR): the activating part times ``1 - efficiency * r_inhibitory``.

:func:`gate_population` returns the share of cells recognised at all and their mean
recognition; the model keeps recognised and unrecognised tumour cells as its two clones.
All arrays have shape (n_patients,).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np


def recognition(density: np.ndarray | float, half_density: float, hill: float) -> np.ndarray:
    """Share of maximal CAR signal at a given antigen density (Hill function)."""
    d = np.asarray(density, dtype=float) ** hill
    return d / (d + half_density**hill)


@dataclass(frozen=True)
class Gate:
    """The logic of a construct: ``kind`` in single/OR/AND/NOT, ``mode`` from logic.yaml."""

    kind: str
    mode: str | None
    n_activating: int
    n_inhibitory: int = 0
    priming: str = "cell"            # AND: "site" (synNotch) or "cell" (split signal)
    inhibition_efficiency: float = 0.0

    @property
    def n_antigens(self) -> int:
        return self.n_activating + self.n_inhibitory


@dataclass
class Recognised:
    """Per patient: share of cells the gate recognises, and their mean recognition."""

    share: np.ndarray
    missed: np.ndarray   # 1 - share, summed directly (keeps tiny escape fractions exact)
    kill: np.ndarray
    activation: np.ndarray


def _or(rs: list[np.ndarray], present: tuple[bool, ...]) -> np.ndarray:
    miss = np.ones_like(rs[0])
    for r, here in zip(rs, present):
        if here:
            miss = miss * (1.0 - r)
    return 1.0 - miss


def _class_value(gate: Gate, present: tuple[bool, ...], r: list[np.ndarray],
                 site_prime: np.ndarray) -> np.ndarray:
    """Recognition of one phenotype class (``present[a]``: the class carries antigen a)."""
    act, inh = present[: gate.n_activating], present[gate.n_activating:]
    ra, ri = r[: gate.n_activating], r[gate.n_activating:]
    zero = np.zeros_like(r[0])
    if gate.kind == "single":
        return ra[0] if act[0] else zero
    if gate.kind == "OR":
        return _or(ra, act)
    if gate.kind == "AND" and gate.priming == "site":
        return site_prime * _or(ra[1:], act[1:])
    if gate.kind == "AND":
        out = np.ones_like(r[0])
        for x, here in zip(ra, act):
            out = out * (x if here else 0.0)
        return out
    if gate.kind == "NOT":
        return _or(ra, act) * (1.0 - gate.inhibition_efficiency * _or(ri, inh))
    raise ValueError(f"unknown gate {gate.kind!r}")


def gate_population(gate: Gate, negative: list[np.ndarray], r_kill: list[np.ndarray],
                    r_act: list[np.ndarray]) -> Recognised:
    """Recognition of a population.

    ``negative[a]``: share of the population's cells *without* antigen ``a`` (activating
    antigens first, then inhibitory; given as the negative share so that tiny escape
    fractions such as 1e-9 stay exact); ``r_kill[a]``, ``r_act[a]``: recognition of a
    positive cell's density at the killing and at the activation threshold.
    """
    k = gate.n_antigens
    if not (len(negative) == len(r_kill) == len(r_act) == k):
        raise ValueError(f"gate over {k} antigens given {len(negative)} populations")
    negative = [np.asarray(q, dtype=float) for q in negative]
    positive = [1.0 - q for q in negative]
    # synNotch priming: the site's mean activation-level recognition of the priming antigen.
    prime = positive[0] * r_act[0]
    share = np.zeros_like(np.asarray(positive[0], dtype=float))
    missed = np.zeros_like(share)
    kill_sum = np.zeros_like(share)
    act_sum = np.zeros_like(share)
    for present in product((False, True), repeat=k):
        w = np.ones_like(share)
        for p, q, here in zip(positive, negative, present):
            w = w * (p if here else q)
        g_kill = _class_value(gate, present, r_kill, prime)
        g_act = _class_value(gate, present, r_act, prime)
        seen = g_kill > 0
        share = share + np.where(seen, w, 0.0)
        missed = missed + np.where(seen, 0.0, w)
        kill_sum = kill_sum + w * g_kill
        act_sum = act_sum + w * g_act
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_kill = np.where(share > 0, kill_sum / share, 0.0)
        mean_act = np.where(share > 0, act_sum / share, 0.0)
    return Recognised(share=np.clip(share, 0.0, 1.0), missed=np.clip(missed, 0.0, 1.0),
                      kill=mean_kill, activation=mean_act)
