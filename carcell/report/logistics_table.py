"""Printed tables of the chain, its cost and access (rich), from the summaries in trial.json
and logistics.json (carcell/logistics/summary.py)."""

from __future__ import annotations

from rich.table import Table


def _days(q: dict | None) -> str:
    if not q or q.get("median") is None:
        return "-"
    return f"{q['median']:.0f} ({q['q1']:.0f}-{q['q3']:.0f})"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _usd(x: float | None) -> str:
    return "-" if x is None else f"${x / 1000:,.0f}k"


def chain_table(summary: dict, title: str = "From referral to infusion") -> Table:
    """Per route (and lever set): flow, times, and the busiest resource."""
    t = Table(title=title)
    for col in ("route", "referred", "infused", "ineligible", "progressed", "died", "mfg failure", "no product",
                "waiting", "vein-to-vein, d", "referral-infusion, d", "slot wait, d", "busiest resource"):
        t.add_column(col, justify="left" if col in ("route", "busiest resource") else "right")
    for route, s in summary.items():
        ni = s["not_infused"]
        busy = [(r, v["mean_utilisation"]) for r, v in s["resources"].items() if v["mean_utilisation"] is not None]
        busiest = max(busy, key=lambda rv: rv[1]) if busy else None
        t.add_row(route, str(s["referred"]), f"{s['infused']} ({_pct(s['infused_share'])})",
                  str(ni.get("ineligible", 0)), str(ni["progression"]),
                  str(ni["death"]), str(ni["manufacturing_failure"]), str(ni["no_product"]), str(s["still_waiting"]),
                  _days(s["vein_to_vein_days"]), _days(s["referral_to_infusion_days"]),
                  _days(s["wait_for_slot_days"]),
                  "-" if busiest is None else f"{busiest[0]} {_pct(busiest[1])}")
    t.caption = "times: median (IQR) over infused patients; vein-to-vein from referral for off-the-shelf routes"
    return t


def cost_table(cost: dict, title: str = "Cost (USD) and effect") -> Table:
    t = Table(title=title)
    for col in ("arm", "route", "per patient", "per infused", "per responder", "life years", "QALYs",
                "ICER per LY", "ICER per QALY"):
        t.add_column(col, justify="left" if col in ("arm", "route") else "right")
    def ratio(r: dict, unit: str) -> str:
        if r["icer"] is None:
            return r["quadrant"]
        if r["quadrant"].startswith("less costly"):   # south-west: savings per unit of effect lost
            return f"saves {_usd(abs(r['icer']))} per {unit} lost"
        return _usd(r["icer"])

    for arm, a in cost.items():
        if "per_patient" not in a:
            t.add_row(arm, a["route_kind"], a.get("note", "-"), *["-"] * 6)
            continue
        vs = a.get("vs_reference")
        icer_ly = icer_q = "reference" if vs is None else "-"
        if vs:
            icer_ly, icer_q = ratio(vs["per_life_year"], "LY"), ratio(vs["per_qaly"], "QALY")
        t.add_row(arm, a["route_kind"], _usd(a["per_patient"]), _usd(a["per_infused"]), _usd(a["per_responder"]),
                  f"{a['life_years']:.2f}", f"{a['qalys']:.2f}", icer_ly, icer_q)
    t.caption = ("per patient = per patient entering the chain (intention to treat); effects restricted to "
                 "follow-up, discounted; ICERs against the reference arm")
    return t


def access_table(rows: list[dict], title: str = "Access by stratum") -> Table:
    """Rows of equity tables (carcell.logistics.access.equity_table), optionally with 'scenario'."""
    t = Table(title=title)
    scen = any("scenario" in r for r in rows)
    cols = (["scenario"] if scen else []) + ["stratum", "eligible", "referred", "treated", "treated %",
                                             "referral-infusion, d", "lost waiting", "mean cost"]
    for col in cols:
        t.add_column(col, justify="left" if col in ("scenario", "stratum") else "right")
    for r in rows:
        med = r.get("median_referral_to_infusion_days")
        cost = r.get("mean_cost")
        vals = ([str(r["scenario"])] if scen else []) + [
            str(r["stratum"]), str(r["n_eligible"]), str(r["n_referred"]), str(r["n_infused"]),
            _pct(r["fraction_treated"]), "-" if med is None or med != med else f"{med:.0f}",
            "-" if r.get("deaths_waiting") is None or r["deaths_waiting"] != r["deaths_waiting"] else f"{r['deaths_waiting']:.0f}",
            "-" if cost is None or cost != cost else _usd(cost)]
        t.add_row(*vals)
    t.caption = "lost waiting: referred patients who progressed beyond eligibility or died before infusion"
    return t


def gaps_table(rows: list[dict], title: str = "Equity gaps in the share treated") -> Table:
    t = Table(title=title)
    scen = any("scenario" in r for r in rows)
    for col in (["scenario"] if scen else []) + ["stratum", "compared with", "treated %", "ratio", "difference"]:
        t.add_column(col, justify="left" if col in ("scenario", "stratum", "compared with") else "right")
    for r in rows:
        ratio = r["ratio"]
        t.add_row(*([str(r["scenario"])] if scen else []), str(r["stratum"]), str(r["compared_with"]),
                  _pct(r["fraction_treated"]), "-" if ratio is None or ratio != ratio else f"{ratio:.2f}",
                  f"{100 * r['difference']:+.1f} pts")
    return t
