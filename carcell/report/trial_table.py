"""Efficacy and safety table of a virtual trial, laid out like a paper's Table 2/3."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from carcell.units import DAYS_PER_MONTH

NOT_APPLICABLE = "—"


def format_rate(rate: dict | None) -> str:
    """``{"estimate": 0.82, "ci95": [0.73, 0.89]}`` -> ``"82% (73-89)"``; missing -> "—"."""
    if not rate or rate.get("estimate") is None:
        return NOT_APPLICABLE
    lo, hi = rate.get("ci95") or [None, None]
    text = f"{100 * rate['estimate']:.0f}%"
    return text if lo is None or hi is None else f"{text} ({100 * lo:.0f}-{100 * hi:.0f})"


def _months(days: float | None) -> str:
    return "NR" if days is None else f"{days / DAYS_PER_MONTH:.1f}"


def format_median(km: dict | None) -> str:
    """Median of a km_summary in months with its 95% CI: ``"5.9 mo (3.3-8.1)"``, ``"NR (12.2-NR)"``,
    ``"NR"``; "—" without patients."""
    if not km or not km.get("n"):
        return NOT_APPLICABLE
    median = km.get("median_days")
    lo, hi = km.get("median_ci95") or [None, None]
    head = "NR" if median is None else f"{_months(median)} mo"
    if lo is None and hi is None:
        return head
    return f"{head} ({_months(lo)}-{_months(hi)})"


def format_landmark(km: dict | None, day: int) -> str:
    """Kaplan-Meier estimate at ``day`` as ``"72% (64-80)"``; "—" where not estimable."""
    if not km or not km.get("n"):
        return NOT_APPLICABLE
    return format_rate((km.get("landmarks") or {}).get(str(day)))


def format_p(p: float | None) -> str:
    if p is None:
        return NOT_APPLICABLE
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_hazard_ratio(comparison: dict) -> str:
    hr = comparison.get("hazard_ratio")
    if hr is None:
        return f"{NOT_APPLICABLE} ({comparison.get('reason') or 'not estimable'})"
    lo, hi = comparison.get("ci95") or [None, None]
    return f"{hr:.2f}" if lo is None or hi is None else f"{hr:.2f} ({lo:.2f}-{hi:.2f})"


def _response_rows(criteria: str, arm: dict) -> list[tuple[str, str]]:
    rows = [("Objective response", format_rate(arm.get("orr")))]
    if criteria == "marrow_blasts":
        rows.append(("CR/CRi", format_rate(arm.get("cr_cri", arm.get("cr")))))
        if "mrd_negative" in arm:
            rows.append(("MRD-negative remission", format_rate(arm.get("mrd_negative"))))
    elif criteria == "imwg":
        rows.append(("CR or better", format_rate(arm.get("cr_or_better", arm.get("cr")))))
        rows.append(("VGPR or better", format_rate(arm.get("vgpr_or_better"))))
        rows.append(("Stringent CR", format_rate(arm.get("stringent_cr"))))
        rows.append(("MRD-negative CR (1e-5)", format_rate(arm.get("mrd_negative"))))
    else:
        rows.append(("Complete response", format_rate(arm.get("cr"))))
        if criteria in ("recist", "rano"):
            rows.append(("Disease control (CR+PR+SD)", format_rate(arm.get("disease_control"))))
    return rows


def _arm_rows(criteria: str, arm: dict) -> list[tuple[str, str]]:
    tox = arm.get("toxicity") or {}
    rows = [("N randomised / infused", f"{arm.get('n_randomised', 0)} / {arm.get('n_infused', 0)}")]
    rows += _response_rows(criteria, arm)
    rows += [
        ("Median DOR", format_median(arm.get("dor"))),
        ("Median PFS", format_median(arm.get("pfs"))),
        ("PFS at 6 months", format_landmark(arm.get("pfs"), 180)),
        ("PFS at 12 months", format_landmark(arm.get("pfs"), 365)),
        ("PFS at 24 months", format_landmark(arm.get("pfs"), 730)),
    ]
    if criteria == "marrow_blasts":
        rows += [("Median EFS", format_median(arm.get("efs"))),
                 ("EFS at 12 months", format_landmark(arm.get("efs"), 365))]
    rows += [
        ("Median OS", format_median(arm.get("os"))),
        ("OS at 12 months", format_landmark(arm.get("os"), 365)),
        ("OS at 24 months", format_landmark(arm.get("os"), 730)),
        ("CRS, any grade", format_rate(tox.get("crs_any"))),
        ("CRS, grade >=3", format_rate(tox.get("crs_grade3plus"))),
        ("ICANS, any grade", format_rate(tox.get("icans_any"))),
        ("ICANS, grade >=3", format_rate(tox.get("icans_grade3plus"))),
        ("Tocilizumab", format_rate(tox.get("tocilizumab_use"))),
        ("Corticosteroids", format_rate(tox.get("steroid_use"))),
    ]
    return rows


def comparison_lines(trial: dict[str, Any]) -> list[str]:
    """One line per comparison: ``"PFS, axi-cel vs SOC: HR 0.49 (0.37-0.65), log-rank p <0.001"``."""
    return [f"{c['endpoint'].upper()}, {c['arm']} vs {c['reference']}: HR {format_hazard_ratio(c)}, "
            f"log-rank p {format_p(c.get('logrank_p'))}" for c in trial.get("comparisons", [])]


def trial_table(trial: dict[str, Any]) -> Table:
    """Efficacy and safety by arm from a ``trial.json`` dictionary (carcell.trial.stats.trial_summary).

    Rows are endpoints, columns arms; rates are "% (95% CI)", medians "months (95% CI)"; the
    caption states denominators and conventions and lists each comparison's hazard ratio
    (95% CI) and log-rank p.
    """
    criteria = trial.get("response_criteria", "lugano")
    arms: dict[str, dict] = trial.get("arms", {})
    table = Table(title=f"{trial.get('name', 'virtual trial')}: {trial.get('disease', '')} "
                        f"({criteria} criteria, follow-up {_months(trial.get('follow_up_days'))} months)",
                  title_justify="left", caption_justify="left")
    table.add_column("Endpoint", style="bold")
    for name, arm in arms.items():
        table.add_column(f"{name} ({arm.get('kind', '?').upper()})", justify="right")
    columns = [_arm_rows(criteria, arm) for arm in arms.values()]
    labels = [label for label, _ in columns[0]] if columns else []
    for i, label in enumerate(labels):
        table.add_row(label, *(col[i][1] for col in columns))
    pops = trial.get("populations", {})
    caption = [
        f"Response rates % (95% Clopper-Pearson CI) of randomised patients (ITT, N={pops.get('itt', '?')}); "
        f"toxicity of infused patients (mITT, N={pops.get('mitt', '?')}).",
        "Medians and landmarks from Kaplan-Meier estimates with 95% CI; months = days / 30.4375; "
        f"NR = not reached; {NOT_APPLICABLE} = not applicable or not estimable.",
        *comparison_lines(trial),
    ]
    table.caption = "\n".join(caption)
    return table
