"""One self-contained HTML file from a carcell output directory: results, figures, provenance.

The page needs no server, no network and no JavaScript: styles are inline, every PNG of the
directory is embedded as a base64 ``data:`` URI, and the only links are ``#anchors`` inside
the page. It reads what ``carcell run`` (``summary.json``, ``provenance.json``, ``*.png``) and a
virtual trial (``trial.json``, docs/trial-outputs.md) write; anything optional that is missing
is reported as "not available" in its section instead of failing.

Examples
--------
>>> from carcell.report.html import write_report
>>> write_report(Path("out/"), Path("out/report.html"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

import carcell
from carcell.errors import CarcellError
from carcell.units import DAYS_PER_MONTH

NOT_AVAILABLE = "not available"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HASH_CLASS = ' class="hash"'

CAPTIONS = {
    "km_pfs.png": "Progression-free survival by arm (Kaplan-Meier, numbers at risk below)",
    "km_os.png": "Overall survival by arm (Kaplan-Meier, numbers at risk below)",
    "km_efs.png": "Event-free survival by arm (Kaplan-Meier, numbers at risk below)",
    "km_dor.png": "Duration of response by arm (Kaplan-Meier, responders only)",
    "forest_pfs.png": "Progression-free survival: hazard ratios with 95% confidence intervals",
    "forest_os.png": "Overall survival: hazard ratios with 95% confidence intervals",
    "waterfall.png": "Best change in tumour burden per patient, coloured by best response",
    "swimmer.png": "Each patient's course: response, progression, death and follow-up",
    "exposure_response.png": "Exposure-response: CAR expansion (Cmax, AUC 0-28) against response and toxicity",
    "kinetics.png": "CAR kinetics in blood: flow cytometry and qPCR (median and 5-95% of patients)",
    "tumour_burden.png": "Tumour burden relative to baseline (median, 5-95% and individual patients)",
    "toxicity.png": "Maximum CRS and ICANS grades (ASTCT), onset and duration",
    "vein_to_vein.png": "Vein-to-vein time per route (infused patients; from referral off the shelf)",
    "patient_flow.png": "Patient flow from referral to infusion, with the losses by reason",
    "queues_over_time.png": "Utilisation and queues of each resource over calendar time",
    "cost_breakdown.png": "Mean cost per patient by component (USD thousands)",
    "access_by_stratum.png": "Share of eligible patients treated, by income and residence stratum",
}

ENDPOINTS = {"pfs": "PFS", "efs": "EFS", "os": "OS", "dor": "DoR"}
ENDPOINT_NAMES = {"pfs": "progression-free survival", "efs": "event-free survival",
                  "os": "overall survival", "dor": "duration of response"}
RATE_LABELS = {"orr": "Objective response (ORR)", "cr": "Complete response (CR)",
               "vgpr": "Very good partial response or better", "pr": "Partial response",
               "mrd_negative": "MRD-negative remission", "cr_or_better": "Complete response or better (IMWG)",
               "vgpr_or_better": "VGPR or better (IMWG)", "cr_cri": "CR or CR with incomplete recovery (CR/CRi)",
               "stringent_cr": "Stringent complete response (sCR, IMWG)"}
TOXICITY_LABELS = {
    "crs_any": "CRS, any grade (ASTCT)", "crs_grade3plus": "CRS, grade \u2265 3",
    "icans_any": "ICANS, any grade (ASTCT)", "icans_grade3plus": "ICANS, grade \u2265 3",
    "tocilizumab_use": "Tocilizumab given", "steroid_use": "Corticosteroids given",
    "tocilizumab_response": "CRS resolved after tocilizumab (of those given it; FDA definition)",
    "icu_admission": "ICU admission",
}
#: toxicity shares whose denominator is the treated patients, not the cohort
OF_TREATED = {"tocilizumab_response"}
CRITERIA_NAMES = {"lugano": "Lugano 2014", "imwg": "IMWG", "marrow_blasts": "bone-marrow blasts",
                  "recist": "RECIST 1.1", "rano": "RANO"}
ARM_KINDS = {"car": "CAR", "soc": "SOC"}
RATE_ORDER = ["orr", "cr", "orr_infused", "cr_infused"]
DEATH_CAUSES = {"progression": "progression", "crs": "CRS", "icans": "ICANS", "infection": "infection",
                "other": "other causes"}
POPULATION_NAMES = {"itt": "ITT", "mitt": "mITT"}
RESPONSE_NAMES = {"CR": "complete response", "VGPR": "very good partial response",
                  "PR": "partial response", "SD": "stable disease", "PD": "progressive disease",
                  "NR": "no remission", "NE": "not evaluable"}


# --------------------------------------------------------------------------------------------
# formatting


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


def _breakable(x: object) -> str:
    """Escaped text that may wrap after ``_`` and ``/``: identifiers and URLs in narrow columns."""
    return re.sub(r"([_/])(?=\w)", r"\1<wbr>", _e(x))


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: object) -> str:
    """Three significant figures, thousands grouped; scientific outside 0.01-1e6."""
    if _missing(v):
        return "\u2013"
    if not isinstance(v, (int, float)):
        return str(v)
    a = abs(float(v))
    if a == 0:
        return "0"
    if not 1e-2 <= a < 1e6:
        return f"{v:.2e}"
    decimals = 2 - math.floor(math.log10(a))
    text = f"{round(float(v), decimals):,.{max(decimals, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _pct(v: object) -> str:
    if _missing(v):
        return NOT_AVAILABLE
    return f"{100 * float(v):.0f}%"


def _days(v: object) -> str:
    return "\u2013" if _missing(v) else f"{float(v):.1f}"


def _quantiles(q: object, fmt=_num) -> str:
    """``median (p5-p95)`` of a summary.json quantile block."""
    if not isinstance(q, dict) or _missing(q.get("median")):
        return NOT_AVAILABLE
    return f"{fmt(q['median'])} ({fmt(q.get('p5'))}\u2013{fmt(q.get('p95'))})"


def _criteria(name: object) -> str:
    return CRITERIA_NAMES.get(str(name), str(name))


def _rate(r: object) -> str:
    """A trial.json rate ``{"estimate", "ci95"[, "events", "n"]}`` (or a bare share) as ``52% (41-63); 13/25``."""
    if isinstance(r, dict):
        est, ci = r.get("estimate"), r.get("ci95")
    else:
        est, ci = r, None
    if _missing(est):
        return "n/a"
    text = f"{100 * float(est):.0f}%"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and not any(_missing(c) for c in ci):
        text += f" ({100 * float(ci[0]):.0f}\u2013{100 * float(ci[1]):.0f})"
    if isinstance(r, dict) and isinstance(r.get("events"), int) and isinstance(r.get("n"), int):
        text += f"; {r['events']}/{r['n']}"
    return text


def _months(days: object) -> str:
    return "NR" if _missing(days) else f"{float(days) / DAYS_PER_MONTH:.1f}"


def _median_months(ep: object) -> str:
    """Median of a time-to-event endpoint in months with its 95% CI; NR = not reached."""
    if not isinstance(ep, dict):
        return "n/a"
    text = _months(ep.get("median_days"))
    ci = ep.get("median_ci95")
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        text += f" ({_months(ci[0])}\u2013{_months(ci[1])})"
    return text


def _p_value(p: object) -> str:
    if _missing(p):
        return "n/a"
    p = float(p)
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _landmark_label(day: str) -> str:
    try:
        d = float(day)
    except ValueError:
        return day
    return f"{d / DAYS_PER_MONTH:.0f} months (day {d:g})"


def _caption(name: str) -> str:
    if name in CAPTIONS:
        return CAPTIONS[name]
    stem = Path(name).stem
    m = re.fullmatch(r"timeline_(\d+)", stem)
    if m:
        return f"Course of virtual patient {m.group(1)}: cytokines, CAR cells, CRS/ICANS grades and drugs"
    words = re.sub(r"[_\-.]+", " ", stem).strip()
    return words[:1].upper() + words[1:] if words else name


# --------------------------------------------------------------------------------------------
# reading


def _read_json(path: Path) -> Any:
    """The parsed file, or None if it is absent; a malformed file is an error naming it."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CarcellError(f"{path}: not valid JSON ({err}); rerun the command that wrote it") from None


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the IHDR chunk, or None if ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------------
# sections


def _table(head: list[str], rows: list[list[str]], cls: str = "", raw: bool = False) -> str:
    """An HTML table; body cells are escaped unless ``raw`` (the caller has escaped them)."""
    cell = (lambda x: x) if raw else _e
    th = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    body = []
    for r in rows:
        if len(r) == 1:  # a group heading spanning the table
            body.append(f'<tr class="group"><th colspan="{len(head)}" scope="rowgroup">{cell(r[0])}</th></tr>')
        else:
            body.append(f'<tr><th scope="row">{cell(r[0])}</th>'
                        + "".join(f"<td>{cell(x)}</td>" for x in r[1:]) + "</tr>")
    return (f'<table class="{cls}"><thead><tr>{th}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _header(title: str, prov: dict | None, trial: dict | None, summ: dict | None) -> str:
    p = prov or {}
    created = p.get("created")
    if created:
        try:
            created = datetime.fromisoformat(created).strftime("%Y-%m-%d %H:%M %Z").strip()
        except (TypeError, ValueError):
            pass
    seed = p.get("seed", (trial or {}).get("seed"))
    src = trial or summ or {}
    disease = src.get("disease")
    criteria = src.get("response_criteria")
    follow = src.get("follow_up_days")
    items = [
        ("carcell version", p.get("carcell_version")),
        ("created", created),
        ("disease", f"{disease} (response by {_criteria(criteria)})" if disease and criteria else disease),
        ("follow-up", f"{float(follow):g} days ({float(follow) / DAYS_PER_MONTH:.1f} months)"
         if not _missing(follow) else None),
        ("seed", seed),
        ("scenario SHA-256", p.get("scenario_sha256")),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd{HASH_CLASS if k.endswith('SHA-256') else ''}>"
                 f"{_e(NOT_AVAILABLE if _missing(v) or v == '' else v)}</dd>" for k, v in items)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<header><p class="kicker">carcell virtual trial report \u00b7 simulated data</p>'
            f"<h1>{_e(title)}</h1><dl class=\"meta\">{dl}</dl>"
            f'<p class="generated">Report generated {_e(now)} by carcell {_e(carcell.__version__)}.</p>'
            f"</header>")


def _arm_heading(name: str, kind: object) -> str:
    label = ARM_KINDS.get(str(kind), str(kind) if kind else "?")
    return name if name.upper() == label.upper() else f"{name} ({label})"


def _rate_label(key: str) -> str:
    base = key.removesuffix("_infused")
    label = RATE_LABELS.get(base, base.replace("_", " ").upper())
    return f"{label}, infused patients" if base != key else label


def _has_estimate(r: object) -> bool:
    return (isinstance(r, dict) and not _missing(r.get("estimate"))) or (
        isinstance(r, (int, float)) and not _missing(r))


def _trial_section(trial: dict) -> str:
    arms = trial.get("arms") or {}
    if not isinstance(arms, dict) or not arms:
        return f'<section id="trial"><h2>Trial results</h2><p class="na">Arms: {NOT_AVAILABLE}.</p></section>'
    names = list(arms)
    head = ["Measure"] + [_arm_heading(a, arms[a].get("kind")) for a in names]

    def row(label: str, get) -> list[str]:
        return [label] + [get(arms[a]) for a in names]

    def any_arm(get) -> bool:
        return any(_has_estimate(get(arms[a])) for a in names)

    rows: list[list[str]] = [["Population"]]
    rows.append(row("Randomised (ITT), n", lambda a: _e(a.get("n_randomised", "n/a"))))
    rows.append(row("Infused / treated (mITT), n", lambda a: _e(a.get("n_infused", "n/a"))))
    rows.append(["Efficacy: rates, % (95% CI); responders/N"])
    rate_keys = {k for a in names for k, v in arms[a].items() if isinstance(v, dict) and "estimate" in v}
    for k in [k for k in RATE_ORDER if k in rate_keys] + sorted(rate_keys - set(RATE_ORDER)):
        rows.append(row(_rate_label(k), lambda a, k=k: _e(_rate(a.get(k)))))
    for ep, short in ENDPOINTS.items():
        if not any(isinstance(arms[a].get(ep), dict) for a in names):
            continue
        rows.append([f"{ENDPOINT_NAMES[ep].capitalize()} ({short})"])
        rows.append(row(f"Median {short}, months (95% CI)", lambda a, ep=ep: _e(_median_months(a.get(ep)))))
        days = sorted({d for a in names for d in ((arms[a].get(ep) or {}).get("landmarks") or {})},
                      key=lambda d: float(d) if d.replace(".", "", 1).isdigit() else math.inf)
        for d in days:
            def landmark(a, ep=ep, d=d):
                return ((a.get(ep) or {}).get("landmarks") or {}).get(d)
            if any_arm(landmark):  # a landmark beyond follow-up is not estimable in any arm
                rows.append(row(f"{short} at {_landmark_label(d)}, % (95% CI)",
                                lambda a, landmark=landmark: _e(_rate(landmark(a)))))
    rows.append(["Safety: share of treated patients, % (95% CI); patients/N"])
    tox_keys = list(TOXICITY_LABELS)
    tox_keys += sorted({k for a in names for k, v in (arms[a].get("toxicity") or {}).items()
                        if k not in TOXICITY_LABELS and (isinstance(v, dict) and "estimate" in v
                                                         or isinstance(v, (int, float)))})
    for k in tox_keys:
        if not any(k in (arms[a].get("toxicity") or {}) for a in names):
            continue
        rows.append(row(TOXICITY_LABELS.get(k, k.replace("_", " ")),
                        lambda a, k=k: _e(_rate((a.get("toxicity") or {}).get(k)))))
    if any(isinstance(arms[a].get("deaths"), dict) for a in names):
        rows.append(["Deaths during follow-up, n"])
        rows.append(row("All causes", lambda a: _e((a.get("deaths") or {}).get("total", "n/a"))))
        causes = [c for c in dict.fromkeys(c for a in names for c in (arms[a].get("deaths") or {}) if c != "total")
                  if any((arms[a].get("deaths") or {}).get(c) for a in names)]
        for c in causes:
            rows.append(row(f"from {DEATH_CAUSES.get(c, c.replace('_', ' '))}",
                            lambda a, c=c: _e((a.get("deaths") or {}).get(c, "n/a"))))
    body = [_table(head, rows, "results arms", raw=True)]
    body.append('<p class="note">Months = days / 30.4375. NR: not reached or not estimable. n/a: not '
                "estimable or not modelled in this arm (e.g. CRS/ICANS in a standard-of-care arm). "
                "CAR: simulated CAR product; SOC: standard-of-care comparator.</p>")

    comps = trial.get("comparisons") or []
    body.append("<h3>Comparisons between arms</h3>")
    if comps:
        crow = []
        for c in comps:
            ci = c.get("ci95") or [None, None]
            hr = c.get("hazard_ratio")
            hr_text = str(c.get("reason") or "n/a") if _missing(hr) else f"{float(hr):.2f}"
            if not _missing(hr) and len(ci) == 2 and not any(_missing(x) for x in ci):
                hr_text += f" ({float(ci[0]):.2f}\u2013{float(ci[1]):.2f})"
            ep = str(c.get("endpoint", ""))
            events = "\u2013"
            if all(c.get(k) is not None for k in ("events_arm", "n_arm", "events_reference", "n_reference")):
                events = f"{c['events_arm']}/{c['n_arm']} vs {c['events_reference']}/{c['n_reference']}"
            crow.append([ENDPOINTS.get(ep, ep.upper()), f"{c.get('arm', '?')} vs {c.get('reference', '?')}",
                         events, hr_text, _p_value(c.get("logrank_p"))])
        body.append(_table(["Endpoint", "Arm vs reference", "Events/N", "Hazard ratio (95% CI)", "Log-rank p"],
                           crow, "results comparisons"))
        body.append('<p class="note">A hazard ratio below 1 favours the arm over its reference.</p>')
    else:
        body.append(f'<p class="na">Comparisons: {NOT_AVAILABLE} (a single arm).</p>')

    pops = trial.get("populations") or {}
    intro = []
    if trial.get("follow_up_days") is not None:
        intro.append(f"Follow-up {float(trial['follow_up_days']):g} days")
    if pops:
        intro.append(", ".join(f"{_e(POPULATION_NAMES.get(k, k))} N = {_e(v)}" for k, v in pops.items()))
    if trial.get("response_criteria"):
        intro.append(f"response by {_e(_criteria(trial['response_criteria']))} criteria")
    lead = f"<p>{'; '.join(intro)}.</p>" if intro else ""
    return f'<section id="trial"><h2>Trial results: {_e(trial.get("name", ""))}</h2>{lead}{"".join(body)}</section>'


def _logistics_section(trial: dict) -> str:
    """The chain, cost and access tables of a trial with a manufacturing section."""
    if "logistics" not in trial:
        return ""
    usd = lambda v: "—" if _missing(v) else f"${float(v) / 1000:,.0f}k"  # noqa: E731
    rows = []
    for route, r in trial["logistics"].items():
        lost = r["not_infused"]
        rows.append([route, str(r["referred"]), f'{r["infused"]} ({_pct(r["infused_share"])})',
                     f'{lost.get("ineligible", 0)} / {lost["progression"]} / {lost["death"]} / '
                     f'{lost["manufacturing_failure"]} / {lost["no_product"]}',
                     _iqr(r["vein_to_vein_days"]),
                     _iqr(r["referral_to_infusion_days"])])
    parts = ['<section id="logistics"><h2>From referral to infusion</h2>',
             _table(["route", "referred", "infused", "not infused: ineligible / progression / death / failure / no product",
                     "vein-to-vein, days", "referral to infusion, days"], rows),
             '<p class="note">Medians (IQR) over infused patients; survival in these arms is counted from '
             'enrolment (docs/logistics.md).</p>']
    cost_rows = []
    for arm, a in (trial.get("cost") or {}).items():
        if "per_patient" not in a:
            cost_rows.append([arm, a["route_kind"], a.get("note", "—"), "—", "—", "—", "—", "—"])
            continue
        vs = a.get("vs_reference") or {}
        icer = (vs.get("per_qaly") or {})
        if not vs:
            icer_text = "reference"
        elif icer.get("icer") is None:
            icer_text = icer.get("quadrant", "—")
        elif str(icer.get("quadrant", "")).startswith("less costly"):   # savings per QALY lost
            icer_text = f"saves {usd(abs(icer['icer']))} per QALY lost"
        else:
            icer_text = usd(icer["icer"])
        cost_rows.append([arm, a["route_kind"], usd(a["per_patient"]), usd(a["per_infused"]), usd(a["per_responder"]),
                          _num(a["life_years"]), _num(a["qalys"]), icer_text])
    if cost_rows:
        parts += ["<h3>Cost and effect</h3>",
                  _table(["arm", "route", "per patient (ITT)", "per infused", "per responder", "life years",
                          "QALYs", "ICER per QALY"], cost_rows)]
    access_rows = []
    for arm, a in (trial.get("access") or {}).items():
        access_rows.append([f"{arm}"])
        for r in a["strata"]:
            access_rows.append([str(r["stratum"]), str(r["n_eligible"]), str(r["n_referred"]), str(r["n_infused"]),
                                _pct(r["fraction_treated"])])
    if access_rows:
        parts += ["<h3>Access by stratum</h3>",
                  _table(["stratum", "eligible", "referred", "infused", "share treated"], access_rows)]
    parts.append("</section>")
    return "".join(parts)


def _iqr(q: object) -> str:
    if not isinstance(q, dict) or _missing(q.get("median")):
        return "—"
    return f'{float(q["median"]):.0f} ({float(q["q1"]):.0f}–{float(q["q3"]):.0f})'


def _cohort_section(s: dict) -> str:
    n = s.get("cohort_size")
    failures = s.get("solver_failures") or 0
    n_ok = n - failures if isinstance(n, int) else None

    def share(v: object) -> str:
        if _missing(v):
            return NOT_AVAILABLE
        text = _pct(v)
        return f"{text} ({round(float(v) * n_ok)}/{n_ok})" if n_ok else text

    def share_of_treated(v: object) -> str:
        """A share of a subset of the cohort (OF_TREATED): no cohort count beside it."""
        return NOT_AVAILABLE if _missing(v) else _pct(v)

    resp: list[list[str]] = [["Virtual patients", _e(NOT_AVAILABLE if n is None else n)]]
    if failures:
        resp.append(["Solver failures (excluded below)", _e(failures)])
    criteria = s.get("response_criteria", "")
    for cat, v in (s.get("response_rates") or {}).items():
        name = RESPONSE_NAMES.get(cat, "")
        resp.append([_e(f"Best response {cat}" + (f" ({name})" if name else "")), _e(share(v))])
    resp.append(["Objective response rate", _e(share(s.get("objective_response_rate")))])
    resp.append(['<span id="cr-rate">Complete response rate</span>', _e(share(s.get("complete_response_rate")))])
    ttp = s.get("median_time_to_progression_days", NOT_AVAILABLE)
    if "median_time_to_progression_days" in s:
        ttp = "not reached" if ttp is None else f"{float(ttp):g} days ({float(ttp) / DAYS_PER_MONTH:.1f} months)"
    resp.append(["Median time to progression (Kaplan-Meier)", _e(ttp)])
    resp.append(["Progression events", _e(s.get("progression_events", NOT_AVAILABLE))])
    resp.append(["Antigen-negative relapses", _e(s.get("antigen_negative_relapses", NOT_AVAILABLE))])

    kin = [[_e(label), _e(_quantiles(s.get(key), fmt))] for label, key, fmt in (
        ("Cmax by qPCR, copies/\u00b5g", "cmax_copies_per_ug", _num),
        ("Cmax by flow cytometry, cells/\u00b5L", "cmax_cells_per_ul", _num),
        ("Tmax, days", "tmax_days", _days),
        ("AUC 0\u201328 d, copies\u00b7day/\u00b5g", "auc_0_28_copies_day_per_ug", _num),
        ("IL-6 peak, pg/mL", "il6_peak_pg_per_ml", _num),
    )]
    tox = s.get("toxicity") or {}
    tox_rows = [[_e(TOXICITY_LABELS[k]), _e(share_of_treated(tox.get(k)) if k in OF_TREATED else share(tox.get(k)))]
                for k in TOXICITY_LABELS]
    tox_rows.insert(4, ["CRS onset, day: median (5\u201395%)", _e(_quantiles(tox.get("crs_onset_day"), _days))])
    tox_rows.insert(5, ["CRS duration, days: median (5\u201395%)",
                        _e(_quantiles(tox.get("crs_duration_days"), _days))])
    haem = s.get("haematology") or {}
    haem_rows = [
        ["CAR-HEMATOTOX high risk", _e(share(haem.get("hematotox_high_risk")))],
        ["Days with ANC &lt; 500/\u00b5L: median (5\u201395%)",
         _e(_quantiles(haem.get("severe_neutropenia_days"), _days))],
        ["ICAHT grade \u2265 3", _e(share(haem.get("icaht_grade3plus")))],
        ["IVIG given", _e(share(haem.get("ivig_use")))],
        ["IgG nadir, mg/dL: median (5\u201395%)", _e(_quantiles(haem.get("igg_nadir_mg_dl")))],
    ]
    blocks = [
        (f"Response ({_criteria(criteria)})" if criteria else "Response", resp),
        ("CAR kinetics and IL-6: median (5\u201395% of patients)", kin),
        ("Toxicity", tox_rows),
        ("Haematology and immunoglobulins", haem_rows),
    ]
    html_blocks = "".join(
        f'<div class="block"><h3>{_e(h)}</h3>{_table(["Measure", "Value"], rows, "results kv", raw=True)}</div>'
        for h, rows in blocks)
    title = s.get("scenario", "")
    return (f'<section id="cohort"><h2>Cohort summary{": " + _e(title) if title else ""}</h2>'
            f"<p>{_e(s.get('disease', ''))} \u00b7 {_e(n_ok if n_ok is not None else '?')} evaluable virtual "
            f"patients \u00b7 shares of evaluable patients with counts.</p>"
            f'<div class="blocks">{html_blocks}</div></section>')


def _figures_section(run_dir: Path) -> str:
    pngs = sorted(run_dir.glob("*.png"))
    if not pngs:
        return (f'<section id="figures"><h2>Figures</h2><p class="na">Figures: {NOT_AVAILABLE} '
                "(no PNG files in the directory).</p></section>")
    out, skipped = [], []
    for i, path in enumerate(pngs, start=1):
        data = path.read_bytes()
        size = _png_size(data)
        if size is None:
            skipped.append(path.name)
            continue
        w, h = size
        caption = _caption(path.name)
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        out.append(f'<figure id="fig-{i}"><img src="{uri}" alt="{_e(caption)}" width="{w}" height="{h}">'
                   f"<figcaption><b>Figure {len(out) + 1}.</b> {_e(caption)} "
                   f'<span class="file">({_e(path.name)})</span></figcaption></figure>')
    if skipped:
        out.append(f'<p class="na">Not embedded (not a valid PNG): {_e(", ".join(skipped))}.</p>')
    return f'<section id="figures"><h2>Figures</h2>{"".join(out)}</section>'


def _provenance_section(prov: dict | None) -> str:
    if not isinstance(prov, dict):
        return (f'<section id="provenance"><h2>Provenance</h2><p class="na">provenance.json: {NOT_AVAILABLE}; '
                "the scenario, parameters and warnings of this run cannot be shown.</p></section>")
    parts = []
    design = prov.get("design") or {}
    runinfo = [("product", design.get("construct") if isinstance(design, dict) else None)]
    runinfo += [(k, prov.get(k)) for k in ("command", "python", "numpy")]
    parts.append('<dl class="meta run">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in runinfo if v)
                 + "</dl>")

    parts.append("<h3>Scenario</h3>")
    if prov.get("scenario") is not None:
        text = yaml.safe_dump(prov["scenario"], sort_keys=False, allow_unicode=True, default_flow_style=False)
        parts.append(f'<pre class="yaml">{_e(text)}</pre>')
    else:
        parts.append(f'<p class="na">Scenario: {NOT_AVAILABLE}.</p>')

    parts.append("<h3>Model parameters</h3>")
    params = design.get("parameters") if isinstance(design, dict) else None
    if params:
        rows = []
        for r in params:
            v = r.get("value")
            value = "per patient" if _missing(v) else (f"{v:.4g}" if isinstance(v, (int, float)) else str(v))
            rows.append([_breakable(r.get("parameter", r.get("name", ""))), _e(value), _breakable(r.get("unit", "")),
                         _breakable(r.get("sources", r.get("source", ""))), _breakable(r.get("derivation", ""))])
        parts.append(f"<details><summary>Parameters ledger: {len(rows)} parameters (value, unit, source, "
                     f"derivation)</summary>"
                     + _table(["Parameter", "Value", "Unit", "Source", "Derivation"], rows, "ledger", raw=True)
                     + "</details>")
    else:
        parts.append(f'<p class="na">Parameters ledger: {NOT_AVAILABLE}.</p>')

    parts.append("<h3>Warnings</h3>")
    warnings = design.get("warnings") if isinstance(design, dict) else None
    if warnings is None:
        parts.append(f'<p class="na">Warnings: {NOT_AVAILABLE}.</p>')
    elif warnings:
        parts.append("<ul class=\"warnings\">" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>")
    else:
        parts.append("<p>None: the design raised no warnings.</p>")
    return f'<section id="provenance"><h2>Provenance</h2>{"".join(parts)}</section>'


def _reference(ref: object) -> str:
    """A reference; the knowledge entries it supports (a trailing ``  [keys]``) set in small type."""
    text = str(ref)
    cited, sep, keys = text.rpartition("  [")
    if sep and keys.endswith("]"):
        return f'{_e(cited)} <span class="keys">[{_e(keys)}</span>'
    return _e(text)


def _citations_section(prov: dict | None) -> str:
    cites = (prov or {}).get("citations") if isinstance(prov, dict) else None
    if not isinstance(cites, dict):
        return f'<section id="citations"><h2>Citations</h2><p class="na">Citations: {NOT_AVAILABLE}.</p></section>'
    refs = cites.get("references") or []
    assumptions = cites.get("assumptions") or []
    parts = []
    if refs:
        parts.append('<ol class="refs">' + "".join(f"<li>{_reference(r)}</li>" for r in refs) + "</ol>")
    else:
        parts.append(f'<p class="na">References: {NOT_AVAILABLE}.</p>')
    if assumptions:
        parts.append(f"<details><summary>Assumptions: {len(assumptions)} values without a published source"
                     "</summary><ul class=\"refs\">" + "".join(f"<li>{_e(a)}</li>" for a in assumptions)
                     + "</ul></details>")
    return (f'<section id="citations"><h2>Citations</h2><p>Every published source behind a number used '
            f"in this run, with the knowledge entries it supports.</p>{''.join(parts)}</section>")


CSS = """
:root { --ink: #1d2329; --muted: #5b6670; --rule: #d5dbe0; --band: #f3f6f8; --accent: #1f5f8b; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0 auto; max-width: 62rem; padding: 1.5rem 1.25rem 3rem; color: var(--ink);
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.7rem; line-height: 1.25; margin: .2rem 0 .8rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 2px solid var(--accent); }
h3 { font-size: 1.02rem; margin: 1.3rem 0 .45rem; }
p { margin: .45rem 0; }
.kicker { margin: 0; color: var(--accent); font-size: .8rem; letter-spacing: .06em; text-transform: uppercase;
          font-weight: 600; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: 0; font-size: .92rem; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
dd.hash, .file { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .82rem;
                 overflow-wrap: anywhere; }
.generated, .note, .na, .file { color: var(--muted); font-size: .85rem; }
.na { font-style: italic; }
nav.toc { margin: 1rem 0 0; padding: .5rem .8rem; background: var(--band); border-radius: 4px; font-size: .9rem; }
nav.toc a { color: var(--accent); margin-right: 1.1rem; text-decoration: none; white-space: nowrap; }
nav.toc a:hover { text-decoration: underline; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 .6rem; font-size: .9rem; }
th, td { text-align: left; vertical-align: top; padding: .3rem .55rem; border-bottom: 1px solid var(--rule); }
thead th { background: var(--band); border-bottom: 2px solid var(--rule); font-weight: 600; }
tbody th { font-weight: normal; }
tr.group th { background: #e8eef3; font-weight: 600; padding-top: .45rem; }
table.arms td, table.comparisons td { font-variant-numeric: tabular-nums; white-space: nowrap; }
table.arms tbody th[scope=row] { width: 40%; }
table.kv td { font-variant-numeric: tabular-nums; white-space: nowrap; }
dl.run { margin-bottom: .6rem; }
dl.run dd { overflow-wrap: anywhere; }
.blocks { display: grid; grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr)); gap: 0 1.6rem; }
.block h3 { margin-top: .9rem; }
figure { margin: 1.2rem 0; padding: .6rem; border: 1px solid var(--rule); border-radius: 4px; break-inside: avoid; }
figure img { display: block; width: auto; height: auto; max-width: 100%; max-height: 28rem; margin: 0 auto; }
figcaption { margin-top: .45rem; font-size: .88rem; }
pre.yaml { background: var(--band); padding: .7rem .9rem; border-radius: 4px; font-size: .8rem; line-height: 1.35;
           overflow-x: auto; max-height: 32rem; }
details { margin: .4rem 0; border: 1px solid var(--rule); border-radius: 4px; padding: .35rem .7rem; }
details > summary { cursor: pointer; font-weight: 600; color: var(--accent); }
table.ledger { table-layout: fixed; font-size: .8rem; }
table.ledger thead th:nth-child(1) { width: 21%; }
table.ledger thead th:nth-child(2) { width: 9%; }
table.ledger thead th:nth-child(3) { width: 10%; }
table.ledger thead th:nth-child(4) { width: 20%; }
table.ledger td, table.ledger th { overflow-wrap: break-word; }
table.ledger td:nth-child(2) { white-space: nowrap; }
table.ledger tbody th { font-family: ui-monospace, Menlo, Consolas, monospace; }
ol.refs, ul.refs { padding-left: 2rem; font-size: .86rem; }
ol.refs li, ul.refs li { margin: .2rem 0; overflow-wrap: anywhere; }
ol.refs .keys { color: var(--muted); font-size: .78rem; }
ul.warnings li { color: #8a4b00; }
footer { margin-top: 2.5rem; padding-top: .7rem; border-top: 1px solid var(--rule); color: var(--muted);
         font-size: .85rem; }
footer strong { color: var(--ink); }
@media (max-width: 40rem) {
  .blocks { grid-template-columns: 1fr; }
  table.arms td, table.kv td { white-space: normal; }
}
@media print {
  @page { size: A4; margin: 14mm 12mm; }
  body { max-width: none; padding: 0; font-size: 10pt; color: #000; }
  nav.toc { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  h3 { break-after: avoid; }
  tr, figure, .block, pre { break-inside: avoid; page-break-inside: avoid; }
  figure { border: 0; padding: 0; }
  figure img { max-height: 110mm; }
  pre.yaml { max-height: none; overflow: visible; white-space: pre-wrap; }
  thead th, tr.group th, pre.yaml { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  details { border: 0; padding: 0; }
  details > summary { color: #000; list-style: none; }
  .blocks { display: block; }
}
@media print { details::details-content { content-visibility: visible; display: block; } }
"""


# --------------------------------------------------------------------------------------------
# public API


def build_report(run_dir: Path) -> str:
    """The HTML text of the report of one output directory.

    Parameters
    ----------
    run_dir : Path
        Output directory of ``carcell run`` (``summary.json``) or of a virtual trial
        (``trial.json``, docs/trial-outputs.md); both may be present.

    Returns
    -------
    str
        A complete HTML document with every PNG of ``run_dir`` embedded.

    Raises
    ------
    CarcellError
        ``run_dir`` is not a directory, holds neither summary.json nor trial.json, or one of
        its JSON files is malformed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CarcellError(f"{run_dir}: no such directory; give the --out directory of a carcell run")
    trial = _read_json(run_dir / "trial.json")
    summ = _read_json(run_dir / "summary.json")
    if trial is None and summ is None:
        raise CarcellError(f"{run_dir}: neither summary.json nor trial.json found; "
                           "give the --out directory of a carcell run or virtual trial")
    prov = _read_json(run_dir / "provenance.json")
    trial = trial if isinstance(trial, dict) else None
    summ = summ if isinstance(summ, dict) else None
    if trial is None and summ is None:
        raise CarcellError(f"{run_dir}: summary.json / trial.json do not hold a JSON object; "
                           "rerun the command that wrote them")

    title = ((trial or {}).get("name") or (summ or {}).get("scenario")
             or ((prov or {}).get("scenario") or {}).get("name") or run_dir.resolve().name)
    results = []
    if trial is not None:
        results.append(_trial_section(trial))
        results.append(_logistics_section(trial))
    if summ is not None:
        results.append(_cohort_section(summ))
    toc = [("#results", "Key results"), ("#figures", "Figures"), ("#provenance", "Provenance"),
           ("#citations", "Citations")]
    nav = '<nav class="toc" aria-label="Contents">' + "".join(
        f'<a href="{h}">{_e(t)}</a>' for h, t in toc) + "</nav>"
    version = (prov or {}).get("carcell_version", carcell.__version__)
    footer = (f"<footer><p><strong>Simulated data.</strong> Every patient in this report is virtual: "
              f"generated by carcell {_e(version)} from the scenario and model parameters above. "
              "These are model predictions, not clinical trial results, and must not be used for "
              f"treatment decisions.</p><p>Source directory: {_e(run_dir.resolve())}</p></footer>")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}: carcell report</title>",
        f"<style>{CSS}</style></head><body>",
        _header(title, prov if isinstance(prov, dict) else None, trial, summ),
        nav,
        f'<main><div id="results">{"".join(results)}</div>',
        _figures_section(run_dir),
        _provenance_section(prov if isinstance(prov, dict) else None),
        _citations_section(prov if isinstance(prov, dict) else None),
        "</main>",
        footer,
        "</body></html>",
        "",
    ])


def write_report(run_dir: Path, out: Path) -> Path:
    """Write :func:`build_report` of ``run_dir`` to ``out`` (UTF-8); returns ``out``.

    Raises
    ------
    CarcellError
        As :func:`build_report`, or ``out`` is an existing directory.
    """
    out = Path(out)
    if out.is_dir():
        raise CarcellError(f"-o {out}: is a directory; give a file name such as {out / 'report.html'}")
    text = build_report(Path(run_dir))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
