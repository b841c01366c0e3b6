"""From a scenario's product section to a resolved construct, with the design rules.

:func:`resolve_construct` looks every named part up in the knowledge base (binders, hinge,
transmembrane, costimulatory and activation domains, logic gate, armour, safety elements,
chassis), checks that the combination makes sense, and returns a :class:`Construct`.
Impossible designs raise :class:`~carcell.errors.DesignError` naming the field; designs that
are possible but odd produce warnings (``Construct.warnings``). The rules are listed in
docs/design.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from carcell.design.gates import Gate
from carcell.errors import DesignError
from carcell.knowledge import Knowledge
from carcell.scenario.schema import BinderRef, Product

MAX_ANTIGENS = 3
VALID_MODES = {"single": (None,), "OR": ("tandem", "bicistronic"), "AND": ("synnotch", "split"),
               "NOT": ("icar",)}


@dataclass(frozen=True)
class Binder:
    name: str
    target: str
    format: str
    kd_nm: float          # the binder as used (library value or the scenario's override)
    kd_overridden: bool
    role: str             # activating | inhibitory


@dataclass
class Construct:
    binders: list[Binder]              # activating, in order
    inhibitory: list[Binder]
    gate: Gate
    hinge: str
    transmembrane: str
    costim: list[str]
    activation: str
    chassis: str
    cell_type: str
    irradiated: bool
    armour: list[str]
    safety: list[str]
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def antigens(self) -> list[str]:
        """Every antigen of the construct: activating first, then inhibitory."""
        return [b.target for b in self.binders + self.inhibitory]

    def summary(self) -> str:
        targets = {"single": self.binders[0].target if self.binders else "?",
                   "OR": " OR ".join(b.target for b in self.binders),
                   "AND": " AND ".join(b.target for b in self.binders),
                   "NOT": " OR ".join(b.target for b in self.binders) + " NOT "
                   + " OR ".join(b.target for b in self.inhibitory)}[self.gate.kind]
        mode = f" ({self.gate.mode})" if self.gate.mode else ""
        return (f"anti-{targets}{mode} {'/'.join(b.name for b in self.binders + self.inhibitory)}, "
                f"{self.hinge} hinge, {self.transmembrane} TM, {'+'.join(self.costim)}, "
                f"{self.activation}; {self.chassis}")


def _binder(k: Knowledge, ref: BinderRef, role: str) -> Binder:
    name = ref.name if ref.name is not None else k.text(f"antigens.{ref.target}.reference_binder")
    node = k.node(f"binders.{name}")
    kd_lib = float(k.value(f"binders.{name}.kd_nm"))
    return Binder(name=name, target=str(node["target"]), format=str(node.get("format", "scFv")),
                  kd_nm=float(ref.kd_nm) if ref.kd_nm is not None else kd_lib,
                  kd_overridden=ref.kd_nm is not None, role=role)


def _chassis_types(k: Knowledge, path: str) -> list[str]:
    node = k.node(path)
    return list(node.get("chassis_types", ["T", "NK"])) if isinstance(node, dict) else ["T", "NK"]


def resolve_construct(product: Product, disease: str, k: Knowledge) -> Construct:
    """Resolve and check a product design for one indication."""
    car = product.car
    warnings: list[str] = []
    notes: list[str] = []

    # -- binders and antigens -----------------------------------------------------------------
    refs = list(car.binders)
    if car.target is not None:
        if refs:
            raise DesignError("product.car: give either target (shorthand for its reference binder) "
                              "or binders, not both")
        refs = [BinderRef(target=car.target)]
    if not refs:
        refs = [BinderRef(target=k.text(f"indications.{disease}.antigen"))]
    binders = [_binder(k, r, "activating") for r in refs]
    inhibitory = [_binder(k, r, "inhibitory") for r in car.inhibitory_binders]

    gate_kind, mode = car.logic.gate, car.logic.mode
    n_act, n_inh = len(binders), len(inhibitory)
    if gate_kind == "NOT":
        if n_inh == 0 or n_act + n_inh < 2:
            raise DesignError(
                "product.car.logic: a NOT gate needs two antigens, one to kill (binders) and one to "
                "spare (inhibitory_binders); this design has "
                f"{n_act + n_inh} antigen(s). Add inhibitory_binders: [<binder of the antigen to spare>]")
    elif n_inh:
        raise DesignError("product.car.inhibitory_binders: inhibitory binders make a NOT gate; "
                          f"set logic.gate: NOT (now {gate_kind})")
    if gate_kind in ("OR", "AND") and n_act < 2:
        raise DesignError(f"product.car.logic: an {gate_kind} gate needs at least two activating binders; "
                          f"this design has {n_act}. Add one to product.car.binders or use gate: single")
    if gate_kind == "single" and n_act > 1:
        raise DesignError(f"product.car.binders: {n_act} binders need a logic gate; set "
                          "product.car.logic.gate to OR, AND or NOT")
    antigens = [b.target for b in binders + inhibitory]
    if len(antigens) > MAX_ANTIGENS:
        raise DesignError(f"product.car.binders: {len(antigens)} antigens; carcell's logic gates take "
                          f"at most {MAX_ANTIGENS}")
    dup = sorted({a for a in antigens if antigens.count(a) > 1})
    if dup:
        raise DesignError(f"product.car.binders: antigen {', '.join(dup)} appears twice; a gate combines "
                          "different antigens")
    if mode is None:
        mode = VALID_MODES[gate_kind][0]
    if mode not in VALID_MODES[gate_kind]:
        raise DesignError(f"product.car.logic.mode: {mode!r} is not a mode of the {gate_kind} gate; "
                          f"use one of {', '.join(str(m) for m in VALID_MODES[gate_kind])}")
    priming, efficiency = "cell", 0.0
    if gate_kind == "AND":
        priming = k.text(f"logic.AND.{mode}.priming")
    if gate_kind == "NOT":
        efficiency = float(k.value(f"logic.NOT.{mode}.inhibition_efficiency"))
    gate = Gate(gate_kind, mode if gate_kind != "single" else None, n_act, n_inh, priming, efficiency)

    # -- target present in the indication ------------------------------------------------------
    atlas_indications = {a: k.names(f"antigens.{a}.indications") for a in set(antigens)}
    primary = antigens[0]
    if disease not in atlas_indications[primary]:
        where = ", ".join(atlas_indications[primary]) or "no indication"
        raise DesignError(f"product.car: {primary} is not a target in {disease} (the antigen atlas lists "
                          f"{primary} in {where}); choose a {disease} antigen such as "
                          f"{k.text(f'indications.{disease}.antigen')}")
    for a in antigens[1:]:
        if disease not in atlas_indications[a]:
            raise DesignError(f"product.car: the atlas has no {disease} data for {a} (it lists "
                              f"{', '.join(atlas_indications[a]) or 'none'}); add antigens/{a}.yaml "
                              f"indications.{disease} or set indication.antigens.{a}")

    # -- chassis ---------------------------------------------------------------------------------
    cp = f"chassis.{product.chassis}"
    cell_type = k.text(f"{cp}.cell_type")
    needs_irradiation = bool(k.node(cp).get("irradiation_required", False))
    irradiated = needs_irradiation if product.irradiated is None else bool(product.irradiated)
    if needs_irradiation and not irradiated:
        raise DesignError(f"product.irradiated: {product.chassis} is a transformed (lymphoma-derived) cell "
                          "line and must be irradiated before infusion so it cannot divide in the "
                          "patient; remove 'irradiated: false'")
    if irradiated and not needs_irradiation:
        warnings.append(f"product.irradiated: irradiating {product.chassis} stops its proliferation in the "
                        "patient, so it cannot expand or persist")

    # -- domains against the chassis ----------------------------------------------------------
    parts = [("product.car.hinge", f"construct.hinges.{car.hinge}", car.hinge),
             ("product.car.transmembrane", f"construct.transmembrane.{car.transmembrane}", car.transmembrane),
             ("product.car.activation", f"construct.activation.{car.activation}", car.activation),
             *(("product.car.costim", f"costim.{c}", c) for c in car.costim)]
    for fieldname, path, name in parts:
        types = _chassis_types(k, path)
        if cell_type not in types:
            warnings.append(f"{fieldname}: {name} is designed for {'/'.join(types)} cells, not the "
                            f"{cell_type}-cell chassis {product.chassis}; its effect is taken as on "
                            f"{'/'.join(types)} cells")
    if len(set(car.costim)) < len(car.costim):
        raise DesignError("product.car.costim: a domain is listed twice")
    if car.activation in car.costim:
        warnings.append(f"product.car.costim: {car.activation} is also the activation domain")

    act = k.node(f"construct.activation.{car.activation}")
    if not act.get("kills", True):
        if gate_kind == "AND" and mode == "synnotch":
            pass
        else:
            warnings.append(f"product.car.activation: {car.activation} does not trigger killing by itself "
                            "(it drives transcription of a payload); this product will not kill. For "
                            "prime-and-kill use logic: {gate: AND, mode: synnotch} with CD3zeta")

    # -- safety and control ---------------------------------------------------------------------
    for s in product.safety:
        node = k.node(f"safety.{s}")
        if node.get("requires_kinase_dependent_signalling") and not act.get("kinase_dependent", True):
            raise DesignError(
                f"product.safety: {s} switches CAR signalling off by blocking Src-family kinases, but "
                f"the activation domain {car.activation} signals without them (kinase_dependent: false "
                f"in construct/activation.yaml); use a CD3zeta or DAP12 activation domain or drop {s}")
        notes.append(f"{s}: recorded on the construct; it acts when its drug "
                     f"({node.get('drug', 'the drug')}) is given (clinical layer)")
    if gate_kind == "AND" and mode == "synnotch" and "dasatinib" in product.safety:
        notes.append("dasatinib blocks the killing CAR of a synNotch AND gate, not the synNotch priming "
                     "receptor (proteolytic signalling)")

    # -- armour ---------------------------------------------------------------------------------
    category = k.text(f"antigens._indications.{disease}.category")
    for a in product.armour:
        acts_in = k.text(f"armour.{a}.acts_in")
        if acts_in == "tumour_microenvironment" and category == "haematological":
            warnings.append(f"product.armour: {a} acts against the suppressive solid-tumour microenvironment; "
                            f"{disease} is simulated without one, so it changes nothing here")
    return Construct(binders=binders, inhibitory=inhibitory, gate=gate, hinge=car.hinge,
                     transmembrane=car.transmembrane, costim=list(car.costim), activation=car.activation,
                     chassis=product.chassis, cell_type=cell_type, irradiated=irradiated,
                     armour=list(product.armour), safety=list(product.safety), warnings=warnings,
                     notes=notes)
