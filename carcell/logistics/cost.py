"""Costs of CAR-T care per patient and per arm, life years, QALYs and the ICER.

Every price and unit cost comes from ``knowledge/data/costs.yaml``; this module holds the
arithmetic only. All functions are pure functions of DataFrames.

Perspective and who pays what
-----------------------------
US health-care sector: what the payer pays, plus the manufacturer's cost of a failed
manufacturing run. One row of :func:`patient_costs` is one patient who entered the chain
(intention to treat); its components are:

``product``
    The product, paid only for an infused patient (manufacturers do not charge for a product
    never given). Autologous: the product's list price. Point of care: the product's entry if
    it has one, else the cost-based academic price (``products.point_of_care``). Off the shelf:
    the product's entry if it has one, else cost of goods per dose (batch cost / doses per
    batch) x the margin of autologous list prices (``products.off_the_shelf.price_markup``).
``apheresis``
    Every collection, infused or not (autologous and point of care); none off the shelf.
``manufacturing_reattempts``
    Each manufacturing attempt after the first costs the route's cost of goods again, infused
    or not (autologous and point of care); none off the shelf, where a failed batch belongs to
    no patient.
``bridging``
    One course for each bridged patient, infused or not.
``lymphodepletion``, ``hospital``, ``icu``, ``tocilizumab``, ``steroids``, ``ivig``, ``follow_up``
    Infused patients only. ``hospital`` is the index stay (the median CAR-T stay, cut short by
    death) at the ward rate, less the ICU days inside it; ``icu`` is the ICU days at the ICU
    rate (a stay is at least as long as its ICU days). Drugs are billed in whole vials.
    ``follow_up`` is monitoring from the end of month 1 (the index stay) while alive: a higher
    rate to month 6, a lower one after, discounted to day 0.

Costs are in US dollars of the years the sources state (not inflated); only ``follow_up``
accrues over time, so only it is discounted.

Effects
-------
:func:`life_years` and :func:`qalys` are areas under Kaplan-Meier curves restricted to a
horizon and discounted continuously at ``ln(1 + r)`` per year (a partitioned-survival model:
progression-free time from PFS, progressed time = OS area - PFS area).

References
----------
Sanders GD et al. Recommendations for conduct, methodological practices, and reporting of
cost-effectiveness analyses: Second Panel on Cost-Effectiveness in Health and Medicine.
JAMA 2016;316:1093-1103. doi:10.1001/jama.2016.12195
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from carcell.errors import ScenarioError, TrialDataError
from carcell.knowledge import Knowledge, load_knowledge
from carcell.logistics.routes import ROUTE_KINDS
from carcell.units import DAYS_PER_MONTH

COMPONENTS: tuple[str, ...] = ("product", "apheresis", "manufacturing_reattempts", "bridging",
                               "lymphodepletion", "hospital", "icu", "tocilizumab", "steroids",
                               "ivig", "follow_up")
NON_RESPONSE: frozenset[str] = frozenset({"SD", "PD", "NR", "NE"})
DAYS_PER_YEAR = 365.25


@dataclass(frozen=True)
class UnitCosts:
    """The unit costs of costs.yaml (USD, USD/day, days) that :func:`patient_costs` uses."""

    apheresis: float
    bridging_course: float
    lymphodepletion: float
    ward_day: float
    icu_day: float
    baseline_stay_days: float
    tocilizumab_mg_per_kg: float
    tocilizumab_max_mg: float
    tocilizumab_vial_mg: float
    tocilizumab_vial_price: float
    steroid_day: float
    ivig_g_per_kg: float
    ivig_vial_g: float
    ivig_vial_price: float
    follow_up_start_days: float
    follow_up_early_end_days: float
    follow_up_early_per_day: float
    follow_up_late_per_day: float
    discount_rate: float


def unit_costs(k: Knowledge | None = None) -> UnitCosts:
    """Read the unit costs from the knowledge base (``costs.*``; the IVIG dose from
    ``haematology.igg.ivig_dose``)."""
    k = k or load_knowledge()
    v = lambda path: float(k.value(path))  # noqa: E731
    return UnitCosts(
        apheresis=v("costs.procedures.apheresis"),
        bridging_course=v("costs.procedures.bridging_course"),
        lymphodepletion=v("costs.procedures.lymphodepletion"),
        ward_day=v("costs.hospital.ward_day"),
        icu_day=v("costs.hospital.icu_day"),
        baseline_stay_days=v("costs.hospital.baseline_stay"),
        tocilizumab_mg_per_kg=v("costs.drugs.tocilizumab.dose"),
        tocilizumab_max_mg=v("costs.drugs.tocilizumab.max_dose"),
        tocilizumab_vial_mg=v("costs.drugs.tocilizumab.vial"),
        tocilizumab_vial_price=v("costs.drugs.tocilizumab.vial_price"),
        steroid_day=v("costs.drugs.steroid_day"),
        ivig_g_per_kg=v("haematology.igg.ivig_dose") / 1000.0,     # mg/kg -> g/kg
        ivig_vial_g=v("costs.drugs.ivig.vial"),
        ivig_vial_price=v("costs.drugs.ivig.vial_price"),
        follow_up_start_days=v("costs.follow_up.early_start") * DAYS_PER_MONTH,
        follow_up_early_end_days=v("costs.follow_up.early_end") * DAYS_PER_MONTH,
        follow_up_early_per_day=v("costs.follow_up.early_per_day"),
        follow_up_late_per_day=v("costs.follow_up.late_per_day"),
        discount_rate=v("costs.discount_rate"),
    )


def _check_route_kind(route_kind: str) -> None:
    if route_kind not in ROUTE_KINDS:
        raise ScenarioError(f"route kind {route_kind!r} is unknown; known: {', '.join(ROUTE_KINDS)}")


def product_price(product: str, route_kind: str, k: Knowledge | None = None) -> float:
    """What the payer pays for one infused product (USD); see the module docstring.

    Raises
    ------
    ScenarioError
        For an unknown route kind, or an autologous product without a list price.
    """
    _check_route_kind(route_kind)
    k = k or load_knowledge()
    known = k.names("costs.products")
    if product in known and product not in ROUTE_KINDS:
        return float(k.value(f"costs.products.{product}.list_price"))
    if route_kind == "point_of_care":
        return float(k.value("costs.products.point_of_care.price"))
    if route_kind == "off_the_shelf":
        return cost_of_goods("off_the_shelf", k) * float(k.value("costs.products.off_the_shelf.price_markup"))
    priced = [p for p in known if p not in ROUTE_KINDS]
    raise ScenarioError(f"product {product!r} has no list price in knowledge/data/costs.yaml; "
                        f"priced products: {', '.join(priced)} (or use a point_of_care or "
                        f"off_the_shelf route, which have cost-based prices)")


def cost_of_goods(route_kind: str, k: Knowledge | None = None) -> float:
    """Cost of one manufacturing run (autologous, point of care) or one dose (off the shelf), USD."""
    _check_route_kind(route_kind)
    k = k or load_knowledge()
    if route_kind == "off_the_shelf":
        return (float(k.value("costs.cost_of_goods.allogeneic_batch"))
                / float(k.value("costs.cost_of_goods.allogeneic_doses_per_batch")))
    return float(k.value(f"costs.cost_of_goods.{route_kind}"))


def _missing(df: pd.DataFrame, name: str) -> TrialDataError:
    return TrialDataError(f"patient costs need a column {name!r}; the table has: {', '.join(map(str, df.columns))}")


def _column(df: pd.DataFrame, name: str, default: float | None, *, fallback: str | None = None) -> np.ndarray:
    if name in df.columns:
        return pd.to_numeric(df[name], errors="coerce").to_numpy(float)
    if fallback is not None and fallback in df.columns:
        return pd.to_numeric(df[fallback], errors="coerce").to_numpy(float)
    if default is None:
        raise _missing(df, name)
    return np.full(len(df), default, dtype=float)


def _truthy(values: pd.Series) -> np.ndarray:
    """Boolean flags with missing values (None, NaN, pd.NA) as False."""
    return (values.notna() & values.astype(bool)).to_numpy(bool)


def _flags(df: pd.DataFrame, name: str, default: bool | None) -> np.ndarray:
    if name not in df.columns:
        if default is None:
            raise _missing(df, name)
        return np.full(len(df), default, dtype=bool)
    return _truthy(df[name])


def _vials(amount: np.ndarray, vial: float) -> np.ndarray:
    """Whole vials for each dose (rounded first, so 560 mg / 80 mg is 7 vials, not 8)."""
    return np.ceil(np.round(amount / vial, 9))


def _discounted_days(start: np.ndarray, end: np.ndarray, rate: float) -> np.ndarray:
    """Integral of the discount factor (1 + rate)^(-t / 365.25) over [start, end] days (0 if end <= start)."""
    end = np.maximum(end, start)
    if rate == 0:
        return end - start
    d = math.log1p(rate) / DAYS_PER_YEAR
    return (np.exp(-d * start) - np.exp(-d * end)) / d


def patient_costs(patients: pd.DataFrame, product: str, route_kind: str, k: Knowledge | None = None, *,
                  discount_rate: float | None = None) -> pd.DataFrame:
    """Cost of each patient's course of care by component (USD).

    Parameters
    ----------
    patients : DataFrame, one row per patient
        ``patient_id``, ``infused`` (bool) and ``os_days`` (days from day 0, for the index stay
        and follow-up); optional: ``attempts`` (or ``manufacturing_attempts``; default 1),
        ``bridged`` (default False), ``apheresis_day`` (NaN = never collected; when absent, a
        patient counts as collected if a manufacturing attempt was made, else if infused),
        ``apheresis_count`` (collections, default 1 per collected patient), ``icu_days``,
        ``tocilizumab_doses``, ``steroid_days`` (required when any patient is infused; NaN = 0),
        ``ivig_doses`` (default 0), ``weight_kg`` (required for infused patients given
        tocilizumab or IVIG).
    product : str
        A key of ``costs.products`` (axi-cel, tisa-cel, ...); see :func:`product_price`.
    route_kind : {"autologous", "point_of_care", "off_the_shelf"}
    k : Knowledge, optional
        The knowledge base (a fresh one by default).
    discount_rate : float, optional
        Annual rate for follow-up costs; default ``costs.discount_rate``.

    Returns
    -------
    DataFrame
        ``patient_id``, one column per name in :data:`COMPONENTS`, and ``total``; rows in the
        order of ``patients``.

    Raises
    ------
    TrialDataError
        A needed column is missing, or a weight is missing where a weight-based drug was given.
    ScenarioError
        Unknown route kind or unpriced product.
    """
    _check_route_kind(route_kind)
    k = k or load_knowledge()
    u = unit_costs(k)
    rate = u.discount_rate if discount_rate is None else float(discount_rate)
    if "patient_id" not in patients.columns:
        raise TrialDataError("patient costs need a column 'patient_id'")
    n = len(patients)
    infused = _flags(patients, "infused", None)
    os_days = _column(patients, "os_days", None)
    attempts = np.nan_to_num(_column(patients, "attempts", np.nan, fallback="manufacturing_attempts"), nan=1.0)
    bridged = _flags(patients, "bridged", False)
    out = pd.DataFrame({"patient_id": patients["patient_id"].to_numpy()})

    # the product and everything before infusion
    out["product"] = np.where(infused, product_price(product, route_kind, k), 0.0)
    if route_kind == "off_the_shelf":
        collections = np.zeros(n)
        reattempts = np.zeros(n)
    else:
        if "apheresis_day" in patients.columns:
            collected = patients["apheresis_day"].notna().to_numpy()
        elif "attempts" in patients.columns or "manufacturing_attempts" in patients.columns:
            collected = attempts >= 1
        else:
            collected = infused
        count = np.nan_to_num(_column(patients, "apheresis_count", 1.0), nan=1.0)
        collections = np.where(collected, count, 0.0)
        reattempts = np.maximum(attempts - 1.0, 0.0)
    out["apheresis"] = collections * u.apheresis
    run_cost = cost_of_goods(route_kind, k) if route_kind != "off_the_shelf" else 0.0
    out["manufacturing_reattempts"] = reattempts * run_cost
    out["bridging"] = np.where(bridged, u.bridging_course, 0.0)

    # infused patients only
    need = infused.any()
    icu = np.nan_to_num(_column(patients, "icu_days", None if need else 0.0), nan=0.0)
    toci = np.nan_to_num(_column(patients, "tocilizumab_doses", None if need else 0.0), nan=0.0)
    steroid = np.nan_to_num(_column(patients, "steroid_days", None if need else 0.0), nan=0.0)
    ivig = np.nan_to_num(_column(patients, "ivig_doses", 0.0), nan=0.0)
    weight = _column(patients, "weight_kg", np.nan)
    weighed = infused & ((toci > 0) | (ivig > 0))
    if (weighed & ~np.isfinite(weight)).any():
        ids = patients["patient_id"].to_numpy()[weighed & ~np.isfinite(weight)][:5]
        raise TrialDataError(f"weight_kg is missing for infused patients given tocilizumab or IVIG "
                             f"(e.g. patient_id {', '.join(map(str, ids))}); their doses are per kg")
    w = np.where(np.isfinite(weight), weight, 0.0)

    stay = np.where(np.isfinite(os_days), np.minimum(u.baseline_stay_days, np.maximum(os_days, 0.0)),
                    u.baseline_stay_days)
    ward_days = np.maximum(stay - icu, 0.0)
    toci_mg = np.minimum(u.tocilizumab_mg_per_kg * w, u.tocilizumab_max_mg)
    toci_dose = _vials(toci_mg, u.tocilizumab_vial_mg) * u.tocilizumab_vial_price
    ivig_dose = _vials(u.ivig_g_per_kg * w, u.ivig_vial_g) * u.ivig_vial_price
    alive_to = np.where(np.isfinite(os_days), os_days, 0.0)
    early = _discounted_days(np.full(n, u.follow_up_start_days),
                             np.minimum(alive_to, u.follow_up_early_end_days), rate)
    late = _discounted_days(np.full(n, u.follow_up_early_end_days), alive_to, rate)

    on = infused.astype(float)
    out["lymphodepletion"] = on * u.lymphodepletion
    out["hospital"] = on * ward_days * u.ward_day
    out["icu"] = on * icu * u.icu_day
    out["tocilizumab"] = on * toci * toci_dose
    out["steroids"] = on * steroid * u.steroid_day
    out["ivig"] = on * ivig * ivig_dose
    out["follow_up"] = on * (early * u.follow_up_early_per_day + late * u.follow_up_late_per_day)
    out["total"] = out[list(COMPONENTS)].sum(axis=1)
    return out


def is_responder(best_response: pd.Series) -> np.ndarray:
    """True for any recorded best response other than SD, PD, NR and NE (CR, PR, VGPR, sCR, CRi ...)."""
    s = best_response.astype("string").str.strip()
    return (s.notna() & (s != "") & ~s.isin(sorted(NON_RESPONSE))).to_numpy(bool)


def cost_summary(costs: pd.DataFrame, patients: pd.DataFrame) -> dict:
    """Totals and means of an arm's :func:`patient_costs`.

    Returns
    -------
    dict
        ``n``, ``n_infused``, ``n_responders`` (counts); ``total`` (USD); ``per_patient``
        (total / n, intention to treat); ``per_infused`` (total / n_infused: the cost of every
        patient, infused or not, per infusion); ``per_responder`` (total / n_responders);
        ``components`` (mean of each component per patient, intention to treat). A ratio whose
        denominator is 0 is None.
    """
    for col in ("patient_id", "infused", "best_response"):
        if col not in patients.columns:
            raise TrialDataError(f"cost_summary needs patients[{col!r}]")
    merged = costs.merge(patients[["patient_id", "infused", "best_response"]], on="patient_id",
                         how="left", validate="one_to_one", indicator=True)
    if (merged["_merge"] != "both").any():
        missing = merged.loc[merged["_merge"] != "both", "patient_id"].head(5).tolist()
        raise TrialDataError(f"cost_summary: patients {missing} have costs but no row in the patients table")
    n = len(merged)
    n_inf = int(_truthy(merged["infused"]).sum())
    n_resp = int(is_responder(merged["best_response"]).sum())
    total = float(merged["total"].sum())
    per = lambda d: total / d if d else None  # noqa: E731
    return {"n": n, "n_infused": n_inf, "n_responders": n_resp, "total": total,
            "per_patient": per(n), "per_infused": per(n_inf), "per_responder": per(n_resp),
            "components": {c: float(merged[c].mean()) if n else None for c in COMPONENTS}}


def _km_steps(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier event times and the survival just after each (ties: events before censoring)."""
    order = np.argsort(time, kind="stable")
    t, e = time[order], event[order]
    times, deaths = np.unique(t[e], return_counts=True)
    at_risk = t.size - np.searchsorted(t, times, side="left")
    return times, np.cumprod(1.0 - deaths / at_risk)


def restricted_mean_days(time, event, horizon_days: float, discount_rate: float = 0.0) -> float:
    """Area under the Kaplan-Meier curve from 0 to ``horizon_days``, discounted (days).

    The curve is carried flat after the last observation when that is censored before the horizon.
    """
    t = np.asarray(time, dtype=float)
    e = np.asarray(event, dtype=bool)
    keep = np.isfinite(t)
    t, e = t[keep], e[keep]
    if t.size == 0:
        raise TrialDataError("restricted mean: no patient has a survival time")
    if (t < 0).any():
        raise TrialDataError("restricted mean: negative survival times")
    times, surv = _km_steps(t, e)
    inside = times < horizon_days
    starts = np.concatenate([[0.0], times[inside]])
    ends = np.concatenate([times[inside], [float(horizon_days)]])
    levels = np.concatenate([[1.0], surv[inside]])
    return float(np.sum(levels * _discounted_days(starts, ends, discount_rate)))


def _rate(discount_rate: float | None, k: Knowledge | None) -> float:
    if discount_rate is None:
        return float((k or load_knowledge()).value("costs.discount_rate"))
    return float(discount_rate)


def life_years(patients: pd.DataFrame, horizon_days: float, discount_rate: float | None = None, *,
               k: Knowledge | None = None) -> float:
    """Restricted mean survival (years) to ``horizon_days`` from ``os_days``/``os_event``, discounted.

    ``discount_rate`` is annual (default ``costs.discount_rate``; 0 for undiscounted).
    """
    for col in ("os_days", "os_event"):
        if col not in patients.columns:
            raise TrialDataError(f"life_years needs patients[{col!r}]")
    return restricted_mean_days(patients["os_days"].to_numpy(float), _truthy(patients["os_event"]),
                                horizon_days, _rate(discount_rate, k)) / DAYS_PER_YEAR


def qalys(patients: pd.DataFrame, horizon_days: float, discount_rate: float | None = None, *,
          k: Knowledge | None = None, utilities: dict[str, float] | None = None) -> float:
    """Quality-adjusted life years per patient to ``horizon_days`` (partitioned survival).

    QALY = u_pf x area(PFS) + u_progressed x (area(OS) - area(PFS)), each area a discounted
    restricted mean of a Kaplan-Meier curve. ``utilities`` may override ``progression_free``
    and ``progressed`` (default ``costs.utilities``).
    """
    for col in ("pfs_days", "pfs_event", "os_days", "os_event"):
        if col not in patients.columns:
            raise TrialDataError(f"qalys needs patients[{col!r}]")
    k = k or load_knowledge()
    rate = _rate(discount_rate, k)
    u = {name: float(k.value(f"costs.utilities.{name}")) for name in ("progression_free", "progressed")}
    unknown = set(utilities or {}) - set(u)
    if unknown:
        raise ScenarioError(f"utilities {sorted(unknown)} are unknown; known: {', '.join(sorted(u))}")
    u.update(utilities or {})
    pfs = restricted_mean_days(patients["pfs_days"].to_numpy(float), _truthy(patients["pfs_event"]),
                               horizon_days, rate)
    os_ = restricted_mean_days(patients["os_days"].to_numpy(float), _truthy(patients["os_event"]),
                               horizon_days, rate)
    return (u["progression_free"] * pfs + u["progressed"] * max(os_ - pfs, 0.0)) / DAYS_PER_YEAR


def icer(cost_a: float, effect_a: float, cost_b: float, effect_b: float) -> dict:
    """Incremental cost-effectiveness of strategy A against B.

    Returns
    -------
    dict
        ``incremental_cost`` (A - B), ``incremental_effect`` (A - B), ``icer`` (incremental cost
        per unit of effect; None when A dominates, is dominated or gains nothing),
        ``quadrant`` ("dominant", "dominated", "more costly, more effective",
        "less costly, less effective", "equivalent") and a ``note`` in words.

    Examples
    --------
    >>> icer(500_000, 3.0, 100_000, 1.0)["icer"]
    200000.0
    >>> icer(90_000, 3.0, 100_000, 1.0)["quadrant"]
    'dominant'
    """
    dc, de = float(cost_a) - float(cost_b), float(effect_a) - float(effect_b)
    out = {"incremental_cost": dc, "incremental_effect": de, "icer": None}
    if de > 0 and dc <= 0:
        out.update(quadrant="dominant", note="A dominates B: at most as costly and more effective; no ICER is reported")
    elif de < 0 and dc >= 0:
        out.update(quadrant="dominated",
                   note="A is dominated by B: at least as costly and less effective; no ICER is reported")
    elif de > 0:
        out.update(quadrant="more costly, more effective", icer=dc / de,
                   note=f"A costs {dc / de:,.0f} more per unit of effect gained")
    elif de < 0:
        out.update(quadrant="less costly, less effective", icer=dc / de,
                   note=f"A saves {dc / de:,.0f} per unit of effect lost; it is preferred only if "
                        f"that exceeds the willingness to pay")
    elif dc < 0:
        out.update(quadrant="dominant", note="A is cheaper with the same effect")
    elif dc > 0:
        out.update(quadrant="dominated", note="A costs more with the same effect")
    else:
        out.update(quadrant="equivalent", note="A and B have the same cost and effect")
    return out


def comparator_costs(patients: pd.DataFrame, k: Knowledge | None = None) -> pd.DataFrame:
    """Costs of second-line standard of care for LBCL (salvage, then autologous transplant).

    Every patient has a salvage course; responders (:func:`is_responder`) go on to high-dose
    chemotherapy and autologous transplant. This overstates transplants a little (36% of the
    ZUMA-7 standard-care arm reached transplant against 50% responders) and leaves out later
    lines of therapy.

    Returns
    -------
    DataFrame
        ``patient_id``, ``salvage``, ``transplant``, ``total`` (USD).
    """
    for col in ("patient_id", "best_response"):
        if col not in patients.columns:
            raise TrialDataError(f"comparator_costs needs patients[{col!r}]")
    k = k or load_knowledge()
    salvage = float(k.value("costs.comparator.salvage_course"))
    transplant = float(k.value("costs.comparator.autologous_transplant"))
    out = pd.DataFrame({"patient_id": patients["patient_id"].to_numpy()})
    out["salvage"] = salvage
    out["transplant"] = np.where(is_responder(patients["best_response"]), transplant, 0.0)
    out["total"] = out["salvage"] + out["transplant"]
    return out
