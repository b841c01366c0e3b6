"""Toxicity management in closed loop: assess, grade, treat, at every clinical assessment.

A :class:`Manager` is called by the solver at each assessment time (twice daily for the first
weeks). For every patient still being followed it

1. turns the current model states into a bedside observation (:mod:`carcell.clinical.signs`),
   adding the drugs given since the last assessment;
2. grades it with the same code as real patients (:class:`~carcell.clinical.grading.CrsEpisodes`,
   :func:`~carcell.clinical.grading.icans_astct` and the older CRS scales);
3. applies the protocol (``knowledge/data/protocols/*.yaml``): prophylaxis on its days, then
   each rule whose condition holds (``"crs >= 2"``, ``"icans >= 1"``, ``"crs >= 1 for 24 h"``,
   or on an older CRS scale ``"crs_penn >= 3"``, or on a bedside sign during CRS
   ``"crs_vasopressors >= 1"``);
   a dose enters the model as a jump of the drug's state.

Rules: a drug given ``every`` N hours is given as the doses due until the next assessment;
tocilizumab respects its minimum interval, maximum per 24 h and in total, and (with
``repeat_only_if_no_improvement``) is repeated only when the CRS grade has not fallen since the
last dose. Everything given and every grade change is logged for ``events.parquet``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from carcell.clinical import grading
from carcell.clinical.signs import SignModel, observe
from carcell.errors import ScenarioError
from carcell.knowledge import Knowledge
from carcell.model.states import CAR_STATES, INDEX, LOG_EXTINCT, Params

#: what a rule's condition may grade: ASTCT CRS and ICANS, CRS on an older scale (a trial's
#: own algorithm, such as JULIET's "tocilizumab for Penn grade 3-4 CRS"), or the number of
#: vasopressors a patient with CRS needs (CHOP's "tocilizumab for cardiovascular dysfunction")
WHEN_SCALES = ("crs", "icans", "crs_penn", "crs_lee2014", "crs_ctcae5", "crs_vasopressors")
_WHEN = re.compile(rf"^\s*({'|'.join(sorted(WHEN_SCALES, key=len, reverse=True))})\s*>=\s*([0-5])\s*"
                   r"(?:for\s+(\d+(?:\.\d+)?)\s*h)?\s*$")
DRUGS = ("tocilizumab", "dexamethasone", "methylprednisolone", "anakinra", "dasatinib", "rimiducid")
STEROIDS = ("dexamethasone", "methylprednisolone")
PER_KG = ("tocilizumab", "rimiducid")          # dosed in mg/kg; the others in mg
#: how long CRS must stay graded 0 to count as resolved in the tocilizumab-response measure
#: (days; an assumption, see Manager._tocilizumab_response)
RESOLVED_FOR_DAYS = 1.0
#: drugs whose treatment days are counted per patient, and the output column that counts them
COUNTED_DAYS = {"steroid": STEROIDS, "anakinra": ("anakinra",), "dasatinib": ("dasatinib",)}


@dataclass
class Rule:
    id: str
    toxicity: str            # crs | icans
    grade: int
    for_hours: float
    drug: str
    dose: float              # mg/kg for tocilizumab, mg otherwise
    every_h: float | None
    max_single: float | None
    min_interval_h: float
    max_in_24h: int | None
    max_total: int | None
    only_if_no_improvement: bool
    course_days: float | None = None     # once started, keep giving for this long, then stop for good
    taper: tuple[tuple[float, float, float], ...] | None = None   # (dose mg, every h, days) steps of a course

    def step(self, elapsed_days: float) -> tuple[float, float | None]:
        """(dose, every_h) in force ``elapsed_days`` into the course (the rule's own without a taper)."""
        if self.taper is None:
            return self.dose, self.every_h
        end = 0.0
        for dose, every, days in self.taper:
            end += days
            if elapsed_days < end - 1e-9:
                return dose, every
        return self.taper[-1][0], self.taper[-1][1]


@dataclass
class Prophylaxis:
    id: str
    drug: str
    days: tuple[float, ...]
    dose: float                          # mg/kg for tocilizumab and rimiducid, mg otherwise
    max_single: float | None = None


@dataclass
class Protocol:
    name: str
    source: str
    rules: list[Rule]
    prophylaxis: list[Prophylaxis]


def _sustained_resolution(days: np.ndarray, crs: np.ndarray, after: float) -> float:
    """The first assessment day after `after` graded CRS 0 from which CRS stays 0 for
    RESOLVED_FOR_DAYS (or to the end of the record); inf if there is none."""
    for k in np.flatnonzero((days > after) & (crs == 0)):
        ahead = (days >= days[k]) & (days < days[k] + RESOLVED_FOR_DAYS - 1e-9)
        if not np.any(crs[ahead] > 0):
            return float(days[k])
    return np.inf


def _number(node, key: str, where: str, default=None):
    """A rule's number: a sourced entry {value: ...} in protocol files, or a plain number in a scenario."""
    if key not in node:
        return default
    v = node[key]
    v = v.get("value") if isinstance(v, dict) else v
    if isinstance(v, list):
        return tuple(float(x) for x in v)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ScenarioError(f"{where}.{key}: {v!r} is not a number") from None


def _taper(r: dict, at: str) -> tuple[tuple[float, float, float], ...] | None:
    """A steroid taper: steps of {dose (mg), every (h), days}, given in order once the rule fires."""
    steps = r.get("taper")
    if steps is None:
        return None
    if isinstance(steps, dict) and "value" in steps:   # a sourced entry: value [[dose, every, days], ...]
        steps = [dict(zip(("dose", "every", "days"), st)) if isinstance(st, list | tuple) and len(st) == 3 else st
                 for st in (steps["value"] or [])]
    if not isinstance(steps, list) or not steps:
        raise ScenarioError(f"{at}.taper: write a list of steps such as "
                            "[{dose: 1000, every: 24, days: 3}, {dose: 250, every: 12, days: 2}]")
    out = []
    for j, st in enumerate(steps):
        where = f"{at}.taper[{j}]"
        if not isinstance(st, dict) or any(key not in st for key in ("dose", "every", "days")):
            raise ScenarioError(f"{where}: each step needs dose (mg), every (h) and days")
        dose, every, days = (_number(st, key, where) for key in ("dose", "every", "days"))
        if dose < 0 or every <= 0 or days <= 0:
            raise ScenarioError(f"{where}: dose must be >= 0 and every, days > 0 (got {dose}, {every}, {days})")
        out.append((dose, every, days))
    return tuple(out)


def protocol_from_node(node: dict, where: str, name: str = "custom") -> Protocol:
    """A protocol from its mapping (a protocol file, or ``regimen.protocol`` written in a scenario)."""
    rules = []
    for i, r in enumerate(node.get("rules") or []):
        at = f"{where}.rules[{i}]"
        m = _WHEN.match(str(r.get("when", "")))
        if not m:
            raise ScenarioError(f"{at}.when: {r.get('when')!r} is not understood; write it as "
                                "'crs >= 2', 'icans >= 1', 'crs >= 1 for 24 h' or, on an older CRS scale, "
                                f"'crs_penn >= 3' ({', '.join(WHEN_SCALES[3:5])}), or on the vasopressors a "
                                "patient with CRS needs, 'crs_vasopressors >= 1'")
        drug = str(r.get("give"))
        if drug not in DRUGS:
            raise ScenarioError(f"{at}.give: {drug!r} is not a drug carcell models; use one of {', '.join(DRUGS)}")
        if "dose" not in r:
            raise ScenarioError(f"{at}.dose: missing (mg/kg for tocilizumab, mg otherwise)")
        total = _number(r, "max_total", at)
        per_day = _number(r, "max_in_24h", at)
        taper = _taper(r, at)
        course = _number(r, "course_days", at)
        if taper is not None:
            if drug not in STEROIDS:
                raise ScenarioError(f"{at}.taper: only corticosteroids are tapered; {drug} is given at one dose")
            if course is not None:
                raise ScenarioError(f"{at}: give either taper (its steps set the course) or course_days, not both")
            course = sum(days for _, _, days in taper)
        rules.append(Rule(
            id=str(r.get("id", f"rule{i}")), toxicity=m.group(1), grade=int(m.group(2)),
            for_hours=float(m.group(3) or 0), drug=drug, dose=_number(r, "dose", at),
            every_h=_number(r, "every", at), max_single=_number(r, "max_single", at),
            min_interval_h=_number(r, "min_interval", at, 0.0),
            max_in_24h=None if per_day is None else int(per_day),
            max_total=None if total is None else int(total),
            only_if_no_improvement=bool(r.get("repeat_only_if_no_improvement", False)),
            course_days=course, taper=taper))
    prophylaxis = []
    for i, q in enumerate(node.get("prophylaxis") or []):
        at = f"{where}.prophylaxis[{i}]"
        if str(q.get("give")) not in DRUGS:
            raise ScenarioError(f"{at}.give: {q.get('give')!r} is not a drug carcell models; use one of {', '.join(DRUGS)}")
        days = _number(q, "days", at)
        prophylaxis.append(Prophylaxis(id=str(q.get("id", f"prophylaxis{i}")), drug=str(q["give"]),
                                       days=days if isinstance(days, tuple) else (days,), dose=_number(q, "dose", at),
                                       max_single=_number(q, "max_single", at)))
    return Protocol(name=str(node.get("name", name)), source=str(node.get("source", "")), rules=rules,
                    prophylaxis=prophylaxis)


def load_protocol(k: Knowledge, protocol) -> Protocol:
    """A bundled protocol by name (knowledge/data/protocols), or a mapping of rules; either may
    build on a bundled protocol with ``extends`` (:func:`resolve_extends`)."""
    if isinstance(protocol, dict):
        return protocol_from_node(resolve_extends(k, protocol, "regimen.protocol"), "regimen.protocol")
    where = f"protocols.{protocol}"
    return protocol_from_node(resolve_extends(k, k.node(where), where, (protocol,)), where, protocol)


#: what a protocol mapping may hold
PROTOCOL_KEYS = ("name", "description", "source", "extends", "drop", "prophylaxis", "rules")


def resolve_extends(k: Knowledge, node: dict, where: str, seen: tuple[str, ...] = ()) -> dict:
    """A protocol mapping with ``extends: NAME`` written out in full on the bundled protocol it names.

    The base's prophylaxis and rules come first, in their order; an entry of ``node`` with the
    ``id`` of one of the base's replaces it in place, any other is added after them; ``drop``
    lists ids of the base's entries to leave out. The base may itself extend another. So a
    trial's management is written as what it changes ("ASCO 2021 plus tocilizumab on day 2"),
    and a correction to the base reaches every protocol built on it."""
    if not isinstance(node, dict):
        raise ScenarioError(f"{where}: write a protocol as a mapping with rules (and prophylaxis), "
                            "or give the name of a bundled protocol")
    unknown = sorted(set(node) - set(PROTOCOL_KEYS))
    if unknown:
        raise ScenarioError(f"{where}: {', '.join(unknown)} is not part of a protocol; "
                            f"it holds {', '.join(PROTOCOL_KEYS)}")
    base_name = node.get("extends")
    if base_name is None:
        if node.get("drop"):
            raise ScenarioError(f"{where}.drop: only a protocol that extends another drops its entries; "
                                "add 'extends: NAME' or remove drop")
        return node
    names = k.names("protocols")
    if base_name not in names:
        raise ScenarioError(f"{where}.extends: {base_name!r} is not a bundled protocol; use one of {', '.join(names)}")
    if base_name in seen:
        raise ScenarioError(f"{where}.extends: {' -> '.join([*seen, base_name])} goes round in a circle")
    base_where = f"protocols.{base_name}"
    base = resolve_extends(k, k.node(base_where), base_where, (*seen, base_name))
    drop = node.get("drop") or []
    if not isinstance(drop, list):
        raise ScenarioError(f"{where}.drop: write a list of ids, e.g. [dexamethasone_icans2]")
    def entry_id(e) -> str:
        return str(e["id"]) if isinstance(e, dict) and "id" in e else ""   # "": never replaces

    base_ids = [i for part in ("prophylaxis", "rules") for e in base.get(part) or [] if (i := entry_id(e))]
    dropped = {str(d) for d in drop}
    missing = sorted(dropped - set(base_ids))
    if missing:
        raise ScenarioError(f"{where}.drop: {', '.join(missing)} is not an entry of {base_name}; "
                            f"its ids are {', '.join(base_ids)}")
    out = {"name": node.get("name", f"{base.get('name', base_name)}, extended"),
           "description": node.get("description", base.get("description", "")),
           "source": node.get("source", base.get("source", ""))}
    for part in ("prophylaxis", "rules"):
        entries = [e for e in base.get(part) or [] if entry_id(e) not in dropped]
        at = {entry_id(e): i for i, e in enumerate(entries) if entry_id(e)}
        for e in node.get(part) or []:
            if entry_id(e) in at:
                entries[at[entry_id(e)]] = e
            else:
                entries.append(e)
        out[part] = entries
    return out


@dataclass
class Manager:
    """Closed-loop grading and treatment for one chunk of simulated patients."""

    protocol: Protocol
    signs: SignModel
    params: Params
    weight_kg: np.ndarray
    age_years: np.ndarray
    patient_ids: np.ndarray
    toci_volume_l_per_kg: float
    mp_per_dex: float
    interval_h: float
    dasatinib_nm_per_mg: float = 0.0     # plasma concentration per mg given
    icasp9_removed: float = 0.0          # share of CAR cells rimiducid removes (0 without iCasp9)
    log: list[tuple] = field(default_factory=list)
    grades: list[pd.DataFrame] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.patient_ids)
        self.th = grading.thresholds()
        self.crs = grading.CrsEpisodes(n)
        self.crs_grade = np.zeros(n, dtype=int)
        self.icans_grade = np.zeros(n, dtype=int)
        self.above_since: dict[str, np.ndarray] = {r.id: np.full(n, np.nan) for r in self.protocol.rules}
        self.toci_days: list[list[float]] = [[] for _ in range(n)]
        self.toci_grade_at_dose = np.full(n, 99)
        self.given_since: dict[str, np.ndarray] = {d: np.zeros(n, dtype=bool) for d in DRUGS}
        self.days_given: dict[str, list[set[int]]] = {k: [set() for _ in range(n)] for k in COUNTED_DAYS}
        self.course_start: dict[str, np.ndarray] = {r.id: np.full(n, np.nan) for r in self.protocol.rules}
        self.last_dose: dict[str, np.ndarray] = {r.id: np.full(n, np.nan) for r in self.protocol.rules}
        self.rimiducid_given = np.zeros(n, dtype=bool)

    # -- dosing ---------------------------------------------------------------------------------
    def _amount_mg(self, drug: str, dose: float, who: np.ndarray, max_single: float | None) -> np.ndarray:
        """mg per patient of a dose written in mg/kg (tocilizumab, rimiducid) or mg, capped."""
        mg = dose * self.weight_kg[who] if drug in PER_KG else np.full(who.size, dose)
        return mg if max_single is None else np.minimum(mg, max_single)

    def _give(self, y: np.ndarray, who: np.ndarray, drug: str, amount_mg: np.ndarray, day: float, rule: str) -> None:
        if who.size == 0:
            return
        if drug == "tocilizumab":
            y[who, INDEX["tocilizumab"]] += amount_mg / (self.toci_volume_l_per_kg * self.weight_kg[who])
            for i in who:
                self.toci_days[i].append(day)
        elif drug == "dasatinib":
            y[who, INDEX["dasatinib"]] += amount_mg * self.dasatinib_nm_per_mg
        elif drug == "anakinra":
            y[who, INDEX["anakinra"]] += amount_mg
        elif drug == "rimiducid":
            # iCasp9 dimerisation kills most CAR cells within hours (Zhou 2015); taken as done by
            # the next assessment. Without iCasp9 on the construct it does nothing.
            if self.icasp9_removed > 0:
                shift = np.log1p(-self.icasp9_removed)
                for state in CAR_STATES:   # wherever the cells are, a solid tumour included
                    col = INDEX[state]
                    y[who, col] = np.maximum(y[who, col] + shift, LOG_EXTINCT)
        else:
            dex = amount_mg if drug == "dexamethasone" else amount_mg / self.mp_per_dex
            y[who, INDEX["corticosteroid"]] += dex
        for kind, drugs in COUNTED_DAYS.items():
            if drug in drugs:
                for i in who:
                    self.days_given[kind][i].add(int(np.floor(day)))
        self.given_since[drug][who] = True
        for i, mg in zip(who, np.broadcast_to(amount_mg, who.shape)):
            self.log.append((int(self.patient_ids[i]), float(day), "drug", float(mg), f"{drug} ({rule})"))

    def _tocilizumab_allowed(self, i: int, day: float, rule: Rule) -> bool:
        past = self.toci_days[i]
        if rule.max_total is not None and len(past) >= rule.max_total:
            return False
        if past and (day - past[-1]) * 24 < rule.min_interval_h - 1e-9:
            return False
        if rule.max_in_24h is not None and sum(day - d < 1 - 1e-9 for d in past) >= rule.max_in_24h:
            return False
        if rule.only_if_no_improvement and past and self.crs_grade[i] < self.toci_grade_at_dose[i]:
            return False
        return True

    # -- one assessment -------------------------------------------------------------------------
    def __call__(self, day: float, y: np.ndarray, followed: np.ndarray) -> None:
        """Assess, grade and treat patients ``followed`` (indices) at ``day``; doses change ``y``."""
        who = followed
        obs = observe(self.signs, y[who], self.params.take(who), self.patient_ids[who], day, self.age_years[who])
        obs["tocilizumab"] = self.given_since["tocilizumab"][who]
        obs["corticosteroid"] = np.logical_or.reduce([self.given_since[d][who] for d in STEROIDS])
        for d in DRUGS:
            self.given_since[d][who] = False
        fever, organ, treated = grading.crs_signs(obs, self.th)
        crs = self.crs.step(who, fever, organ, treated)
        icans = grading.icans_astct(obs, self.th)
        in_crs = crs > 0
        older = {"crs_lee2014": grading.crs_lee2014(obs, in_crs, self.th),
                 "crs_penn": grading.crs_penn(obs, in_crs), "crs_ctcae5": grading.crs_ctcae5(obs, in_crs, self.th)}
        for tox, new, old in (("crs", crs, self.crs_grade[who]), ("icans", icans, self.icans_grade[who])):
            for i, g_new, g_old in zip(who[new != old], new[new != old], old[new != old]):
                self.log.append((int(self.patient_ids[i]), float(day), f"{tox}_grade", float(g_new),
                                 f"{tox.upper()} grade {g_old} -> {g_new} (ASTCT)"))
        self.crs_grade[who], self.icans_grade[who] = crs, icans
        self.grades.append(pd.DataFrame({"patient": self.patient_ids[who], "day": day, "crs_astct": crs,
                                         "icans_astct": icans, "temperature_c": obs["temperature_c"].to_numpy(),
                                         "vasopressors": obs["vasopressors"].to_numpy(),
                                         "oxygen_device": obs["oxygen_device"].to_numpy(),
                                         "ice_score": obs["ice_score"].to_numpy(), **older}))

        for q in self.protocol.prophylaxis:
            if any(abs(day - d) < 1e-9 for d in q.days):
                self._give(y, who, q.drug, self._amount_mg(q.drug, q.dose, who, q.max_single), day, q.id)
        graded = {"crs": crs, "icans": icans, **older,
                  "crs_vasopressors": np.where(in_crs, obs["vasopressors"].to_numpy(), 0)}
        for rule in self.protocol.rules:
            hit = graded[rule.toxicity] >= rule.grade
            since = self.above_since[rule.id]
            since[who[~hit]] = np.nan
            start = who[hit & np.isnan(since[who])]
            since[start] = day
            ready = who[hit & ((day - since[who]) * 24 >= rule.for_hours - 1e-9)]
            if rule.course_days is not None:   # a course: start once, then give until it ends
                started = self.course_start[rule.id]
                fresh = ready[np.isnan(started[ready])]
                started[fresh] = day
                running = who[~np.isnan(started[who]) & (day - started[who] < rule.course_days - 1e-9)]
                ready = running
            if rule.drug == "tocilizumab":
                ready = np.array([i for i in ready if self._tocilizumab_allowed(i, day, rule)], dtype=int)
                self._give(y, ready, "tocilizumab", self._amount_mg("tocilizumab", rule.dose, ready, rule.max_single),
                           day, rule.id)
                self.toci_grade_at_dose[ready] = self.crs_grade[ready]
            elif rule.drug == "rimiducid":
                # one dose per patient: repeat doses remove ever smaller shares (Zhou 2016)
                ready = ready[~self.rimiducid_given[ready]]
                self.rimiducid_given[ready] = True
                self._give(y, ready, "rimiducid", self._amount_mg("rimiducid", rule.dose, ready, None), day, rule.id)
            else:
                self._give_scheduled(y, rule, ready, day)

    def _give_scheduled(self, y: np.ndarray, rule: Rule, ready: np.ndarray, day: float) -> None:
        """Doses of a rule given every N hours (or once per assessment without ``every``).

        The doses due until the next assessment are given together; a dose interval longer
        than the assessment interval waits until it has passed since the last dose.
        """
        if ready.size == 0:
            return
        started = self.course_start[rule.id][ready]
        elapsed = np.where(np.isnan(started), 0.0, day - started)
        last = self.last_dose[rule.id][ready]
        amounts = np.zeros(ready.size)
        for j, (e, prev) in enumerate(zip(elapsed, last)):
            dose, every = rule.step(float(e))
            if every is None:
                amounts[j] = dose
            elif np.isnan(prev) or (day - prev) * 24 >= every - 1e-6:
                amounts[j] = dose * max(1.0, self.interval_h / every)
        due = amounts > 0
        self.last_dose[rule.id][ready[due]] = day
        self._give(y, ready[due], rule.drug, amounts[due], day, rule.id)

    # -- results --------------------------------------------------------------------------------
    def patient_table(self) -> pd.DataFrame:
        """Per patient: maximum grades, onset, duration, drugs, ICU days (from the graded series)."""
        g = pd.concat(self.grades, ignore_index=True) if self.grades else pd.DataFrame(
            columns=["patient", "day", "crs_astct", "icans_astct", "temperature_c", "vasopressors", "oxygen_device"])
        g = g.sort_values(["patient", "day"], kind="stable").reset_index(drop=True)
        g["crs_episode"] = grading.episode_numbers(g["patient"].to_numpy(), g["crs_astct"].to_numpy() > 0)
        g["icans_episode"] = grading.episode_numbers(g["patient"].to_numpy(), g["icans_astct"].to_numpy() > 0)
        _, per = grading.summarise(g)
        per = per.set_index("patient").reindex(self.patient_ids)
        severe = ((g["crs_astct"] >= 3) | (g["icans_astct"] >= 3))
        icu = (g[severe].groupby("patient")["day"].nunique() * self.interval_h / 24).reindex(self.patient_ids)
        support = g.assign(oxygen=grading.oxygen_support_level(g["oxygen_device"])).groupby("patient")
        most = support[["vasopressors", "oxygen"]].max().reindex(self.patient_ids).astype(float).fillna(0).astype(int)
        hottest = g.groupby("patient")["temperature_c"].max().reindex(self.patient_ids).astype(float)
        out = pd.DataFrame({
            "crs_max_grade": per["crs_max_grade"].fillna(0).astype(int).to_numpy(),
            "crs_onset_day": per["crs_onset_day"].to_numpy(),
            "crs_duration_days": per["crs_duration_days"].to_numpy(),
            "icans_max_grade": per["icans_max_grade"].fillna(0).astype(int).to_numpy(),
            "icans_onset_day": per["icans_onset_day"].to_numpy(),
            "icans_duration_days": per["icans_duration_days"].to_numpy(),
            "crs_max_grade_lee2014": per["crs_max_grade_lee2014"].fillna(0).astype(int).to_numpy(),
            "crs_max_grade_penn": per["crs_max_grade_penn"].fillna(0).astype(int).to_numpy(),
            "crs_max_grade_ctcae5": per["crs_max_grade_ctcae5"].fillna(0).astype(int).to_numpy(),
            "tocilizumab_doses": np.array([len(d) for d in self.toci_days]),
            "tocilizumab_first_day": np.array([min(d) if d else np.nan for d in self.toci_days]),
            **{f"{kind}_days": np.array([len(d) for d in days]) for kind, days in self.days_given.items()},
            "rimiducid_given": self.rimiducid_given.astype(int),
            "icu_days": icu.fillna(0.0).to_numpy(),
            # the most support the bedside needed: vasopressors at once (2: several, Penn's
            # high-dose) and oxygen (grading.oxygen_support_level: 3 is positive pressure)
            "vasopressors_max": most["vasopressors"].to_numpy(),
            "oxygen_support_max": most["oxygen"].to_numpy(),
            # the highest temperature recorded at an assessment (NaN if never assessed): fever
            # is >= 38.0 degC (ASTCT), so with the CRS grades it tells febrile from afebrile CRS
            "temperature_max_c": hottest.to_numpy(),
            "tocilizumab_response": self._tocilizumab_response(g),
        })
        return out

    def _tocilizumab_response(self, g: pd.DataFrame) -> np.ndarray:
        """Per patient: 1 if CRS treated with tocilizumab resolved as in the FDA's analysis of
        tocilizumab for CAR T-cell CRS (Le et al. 2018, doi:10.1634/theoncologist.2018-0028),
        0 if not, NaN for a patient not given tocilizumab during CRS.

        Response: after the first dose given while CRS was graded (ASTCT grade >= 1), CRS
        resolved within 14 days, with at most 2 tocilizumab doses and no other anti-cytokine drug
        (anakinra) up to resolution; corticosteroids are allowed. The analysis took the first
        episode of CRS only, as a trial's record of it: CRS counts as resolved at an assessment
        graded 0 after which it stays 0 for RESOLVED_FOR_DAYS (or to the end of the record), so
        a dip of one assessment before the signs return is not a resolution (an assumption: the
        abstract does not say how long resolution had to last).
        """
        out = np.full(len(self.patient_ids), np.nan)
        if g.empty:
            return out
        index = {pid: i for i, pid in enumerate(self.patient_ids)}
        for pid, rows in g.groupby("patient", sort=False):   # rows in day order (sorted above)
            i = index[pid]
            if not self.toci_days[i]:
                continue
            days, crs = rows["day"].to_numpy(), rows["crs_astct"].to_numpy()
            doses = np.array(self.toci_days[i])
            at = np.searchsorted(days, doses, side="right") - 1     # the assessment that gave each dose
            during = doses[(at >= 0) & (crs[np.maximum(at, 0)] >= 1)]
            if during.size == 0:
                continue
            first = during[0]
            end = _sustained_resolution(days, crs, first)
            anakinra = any(np.floor(first) <= d <= end for d in self.days_given["anakinra"][i])
            out[i] = float(end - first <= 14.0 and np.sum((doses >= first) & (doses <= end)) <= 2 and not anakinra)
        return out

    def events(self) -> pd.DataFrame:
        return pd.DataFrame(self.log, columns=["patient_id", "day", "event", "value", "detail"])
