"""Figures of the manufacturing chain, its costs and access: vein-to-vein time, resource queues,
patient flow, access by stratum and cost breakdown.

Every figure function takes tables laid out as in docs/logistics.md (the chain's
``patients`` and ``usage``, the per-patient cost table, the equity table) and returns a
:class:`matplotlib.figure.Figure` built without pyplot (nothing to close, never shown). An empty
or missing table gives a figure that says "no data" instead of an error; a table that has rows
but lacks a required column raises :class:`carcell.errors.TrialDataError` naming the columns.
:func:`logistics_figures` builds the set that has data.

Drawn artists that carry a number a reader (or a test) may want back have a ``gid``:
``median:<route>`` (vein-to-vein median line), ``stage:<route>:<stage>`` and
``loss:<route>:<stage>:<reason>`` (patient-flow bars; the loss bar sits after the named stage),
``treated:<scenario>:<stratum>`` (access bars), ``cost:<group>:<component>`` (cost segments).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: E402

from carcell.errors import TrialDataError  # noqa: E402
from carcell.trial.stats import binomial_rate  # noqa: E402

#: resolution for saving these figures (as the trial figures)
DPI = 120
#: one colour per route, scenario or group, in order of first appearance (cycled beyond ten)
ROUTE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e",
                "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
#: resources in the order the chain uses them; others follow in order of first appearance
RESOURCE_ORDER = ("apheresis", "slots", "manufacturing", "qc", "shipping", "beds", "scheduling", "inventory")
#: patient-flow stages: key -> axis label
FLOW_STAGES = {"eligible": "eligible", "referred": "referred", "apheresis": "apheresis",
               "released": "product released\n(or allocated)", "infused": "infused"}
#: reasons a patient leaves the flow, in stacking order, with their colours
LOSS_COLORS = {"not referred": "#92c5de", "ineligible": "#b8e186", "progression": "#d6604d", "death": "#1a1a1a",
               "manufacturing_failure": "#e08214", "no_product": "#762a83", "still waiting": "#bababa",
               "unknown": "#f1b6da"}
#: cost components of carcell.logistics.cost, bottom to top of each stack, with their colours
COST_COMPONENTS = {"product": "#08519c", "apheresis": "#6baed6", "manufacturing_reattempts": "#9ecae1",
                   "bridging": "#a63603", "lymphodepletion": "#fd8d3c", "hospital": "#006d2c",
                   "icu": "#41ab5d", "tocilizumab": "#54278f", "steroids": "#9e9ac8",
                   "ivig": "#dadaeb", "follow_up": "#737373"}
#: optional equity-table columns drawn beside the fraction treated: column -> axis label
EQUITY_PANELS = {"median_referral_to_infusion_days": "median referral to infusion (days)",
                 "deaths_while_waiting": "deaths while waiting",
                 "deaths_waiting": "deaths while waiting",          # the name equity_table uses
                 "mean_cost": "mean cost per patient (USD thousands)"}


# ---------------------------------------------------------------- helpers

def _is_empty(frame: pd.DataFrame | None) -> bool:
    return frame is None or len(frame) == 0


def _require(frame: pd.DataFrame, columns: Iterable[str], table: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise TrialDataError(f"{table} table lacks column(s) {', '.join(missing)}; it has "
                             f"{', '.join(map(str, frame.columns))} (see docs/logistics.md)")


def _in_order(values: pd.Series, first: Sequence[str] | None = None) -> list[str]:
    """Distinct values as strings: those of ``first`` that occur, in its order, then the others in
    order of first appearance."""
    seen = [str(v) for v in pd.unique(values.astype(str))]
    head = [str(v) for v in first or () if str(v) in seen]
    return head + [v for v in seen if v not in head]


def _palette(keys: Sequence[str]) -> dict[str, str]:
    return {k: ROUTE_COLORS[i % len(ROUTE_COLORS)] for i, k in enumerate(keys)}


def _no_data(title: str, why: str) -> Figure:
    fig = Figure(figsize=(6.5, 3.5), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.text(0.5, 0.5, textwrap.fill(f"no data: {why}", 60), ha="center", va="center", transform=ax.transAxes,
            fontsize=11)
    ax.set_axis_off()
    ax.set_title(title)
    return fig


def _days(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def _finite_max(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else 0.0


# ---------------------------------------------------------------- vein-to-vein

def vein_to_vein(patients: pd.DataFrame | None, *, routes: Sequence[str] | None = None) -> Figure:
    """Empirical distribution (step ECDF) of ``vein_to_vein_days`` per route among infused patients.

    A dashed line from 0 to 0.5 marks each route's median (``gid="median:<route>"``); the legend
    gives the median, the number infused and the number referred on the route. Routes without an
    infused patient still appear in the legend ("none infused"). ``routes`` fixes the order (and
    so the colours) of the routes; others follow in order of first appearance.
    """
    title = "Vein-to-vein time by route (infused patients)"
    if _is_empty(patients):
        return _no_data(title, "the patients table is empty")
    _require(patients, ("route", "state", "vein_to_vein_days"), "patients")
    route = patients["route"].astype(str)
    infused = (patients["state"].astype(str) == "infused").to_numpy()
    v2v = _days(patients, "vein_to_vein_days")
    routes = _in_order(route, routes)
    colors = _palette(routes)
    per_route = {r: v2v[(route == r).to_numpy() & infused & np.isfinite(v2v)] for r in routes}
    if not any(v.size for v in per_route.values()):
        return _no_data(title, "no infused patient with a vein-to-vein time")
    fig = Figure(figsize=(9.5, 5.0), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    handles = []
    for r in routes:
        v, n_route = per_route[r], int((route == r).sum())
        if not v.size:
            handles.append(Line2D([], [], color=colors[r], ls=":", lw=1.8,
                                  label=f"{r}: none infused (0 of {n_route})"))
            continue
        median = float(np.median(v))
        line = ax.ecdf(v, color=colors[r], lw=1.8,
                       label=f"{r}: median {median:.1f} d ({v.size} infused of {n_route})")
        ax.plot([median, median], [0.0, 0.5], color=colors[r], ls="--", lw=1.2, gid=f"median:{r}",
                label="_nolegend_")
        handles.append(line)
    ax.axhline(0.5, color="0.6", lw=0.8, ls=":", zorder=0)
    ax.set_xlim(left=0)
    ax.set_ylim(0, 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    ax.set_xlabel("vein-to-vein time (days from apheresis to infusion; off-the-shelf: from referral)")
    ax.set_ylabel("infused patients infused by then (cumulative %)")
    ax.grid(True, alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              title="route: median (dashed line)", title_fontsize=8)
    ax.set_title(title)
    return fig


# ---------------------------------------------------------------- resources and queues

def _resources_in_order(usage: pd.DataFrame) -> list[str]:
    seen = _in_order(usage["resource"])
    known = [r for r in RESOURCE_ORDER if r in seen]
    return known + [r for r in seen if r not in known]


def queues_over_time(usage: pd.DataFrame | None, *, routes: Sequence[str] | None = None) -> Figure:
    """Utilisation and queue length of each resource per route over calendar days.

    One row of panels per resource (apheresis, slots, manufacturing, qc, inventory, ...), all
    sharing the calendar-day axis: on the left the utilisation, ``100 * in_use / capacity`` (%)
    for a route whose capacity is finite, or the count ``in_use`` for a route with unlimited
    capacity (``capacity`` NaN; dotted, on a right-hand axis when the panel also holds finite
    routes); on the right the queue (patients waiting for the resource). The figure legend
    names the routes; ``routes`` fixes their order and colours.
    """
    title = "Resource utilisation and queues over calendar time"
    if _is_empty(usage):
        return _no_data(title, "the usage table is empty")
    _require(usage, ("day", "resource", "route", "in_use", "capacity", "queue"), "usage")
    resources = _resources_in_order(usage)
    routes = _in_order(usage["route"], routes)
    colors = _palette(routes)
    fig = Figure(figsize=(12.0, 1.4 + 2.4 * len(resources)), layout="constrained")
    axes = fig.subplots(len(resources), 2, sharex=True, squeeze=False)
    any_limited = any_unlimited = False
    for (ax_use, ax_queue), resource in zip(axes, resources):
        df = usage[usage["resource"].astype(str) == resource]
        curves = []                              # (route, day, value, limited)
        queue_top = 0.0
        for r in routes:
            sub = df[df["route"].astype(str) == r].sort_values("day", kind="stable")
            if sub.empty:
                continue
            day = _days(sub, "day")
            in_use, capacity, queue = _days(sub, "in_use"), _days(sub, "capacity"), _days(sub, "queue")
            limited = bool(np.isfinite(capacity).any())
            if limited:
                with np.errstate(divide="ignore", invalid="ignore"):
                    value = np.where(np.isfinite(capacity) & (capacity > 0), 100 * in_use / capacity, np.nan)
            else:
                value = in_use
            curves.append((r, day, value, limited))
            ax_queue.plot(day, queue, color=colors[r], lw=1.4, drawstyle="steps-post", label=r)
            queue_top = max(queue_top, _finite_max(queue))
        kinds = {limited for _, _, _, limited in curves}
        ax_count = ax_use.twinx() if kinds == {True, False} else ax_use
        for r, day, value, limited in curves:
            target = ax_use if limited else ax_count
            target.plot(day, value, color=colors[r], lw=1.4, drawstyle="steps-post",
                        ls="-" if limited else ":", label=r)
        any_limited |= True in kinds
        any_unlimited |= False in kinds
        if True in kinds:
            ax_use.set_ylabel("utilisation\n(% of capacity)")
            ax_use.set_ylim(0, max(105.0, 1.05 * max(_finite_max(v) for _, _, v, lim in curves if lim)))
        if False in kinds:
            ax_count.set_ylabel("doses in stock" if resource == "inventory" else "in use (count;\nunlimited capacity)")
            ax_count.set_ylim(0, max(1.0, 1.08 * max(_finite_max(v) for _, _, v, lim in curves if not lim)))
            ax_count.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_use.set_title(f"{resource}: utilisation", fontsize=10)
        ax_queue.set_title(f"{resource}: queue", fontsize=10)
        ax_queue.set_ylabel("queue (patients)")
        ax_queue.set_ylim(0, max(1.0, 1.08 * queue_top))      # an empty queue still gets ticks 0 and 1
        ax_queue.yaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (ax_use, ax_queue):
            ax.grid(True, alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("calendar day (from the start of the simulated period)")
    handles = [Line2D([], [], color=colors[r], lw=2, label=r) for r in routes]
    if any_limited and any_unlimited:
        handles += [Line2D([], [], color="k", lw=1.4, label="% of a finite capacity"),
                    Line2D([], [], color="k", lw=1.4, ls=":", label="count in use, unlimited capacity")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8,
               title="route", title_fontsize=8)
    fig.suptitle(title)
    return fig


# ---------------------------------------------------------------- patient flow

def _flow(patients: pd.DataFrame) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Stages, the index of the last stage each patient reached, and the reason each left.

    A stage counts as reached when its day is known or a later stage was reached: off-the-shelf
    patients have no apheresis day (their ``release_day`` is the day a dose was allocated), so
    they pass "apheresis" when they get a dose. A missing state counts as never referred.
    """
    state = patients["state"].astype("string").fillna("not_referred").astype(str).to_numpy()
    n = len(patients)
    referred = np.ones(n, dtype=bool)
    if "referred" in patients.columns:
        referred = patients["referred"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    referred &= state != "not_referred"
    from_eligible = "referred" in patients.columns or bool((state == "not_referred").any())
    flags = {"eligible": np.ones(n, dtype=bool)} if from_eligible else {}
    flags["referred"] = referred if from_eligible else np.ones(n, dtype=bool)
    flags["apheresis"] = np.isfinite(_days(patients, "apheresis_day"))
    flags["released"] = np.isfinite(_days(patients, "release_day"))
    flags["infused"] = state == "infused"
    stages = list(flags)
    table = np.column_stack(list(flags.values()))
    reached = np.logical_or.accumulate(table[:, ::-1], axis=1)[:, ::-1]
    last = reached.sum(axis=1) - 1
    reason = (patients["reason"].astype("string").fillna("").astype(str).to_numpy()
              if "reason" in patients.columns else np.full(n, ""))
    why = np.where(reason == "", "unknown", reason).astype(object)
    why[state == "waiting"] = "still waiting"
    why[~referred] = "not referred"
    why[last == len(stages) - 1] = ""
    return stages, last, why


def patient_flow(patients: pd.DataFrame | None, *, routes: Sequence[str] | None = None) -> Figure:
    """Funnel per route: referred -> apheresis -> product released -> infused, with the patients
    lost after each stage stacked by reason (progression, death, manufacturing failure, no
    product, still waiting) in the gap down to the next stage.

    When the table has a ``referred`` column (or ``state == "not_referred"`` rows: an access
    population), the funnel starts from "eligible" and "not referred" is the first loss.
    One panel per route, in the order of ``routes`` when given.
    """
    title = "Patient flow by route"
    if _is_empty(patients):
        return _no_data(title, "the patients table is empty")
    _require(patients, ("route", "state"), "patients")
    stages, last, why = _flow(patients)
    route = patients["route"].astype(str).to_numpy()
    routes = _in_order(patients["route"], routes)
    reasons_seen = [r for r in LOSS_COLORS if (why == r).any()]
    reasons_seen += sorted({str(w) for w in why if w and w not in LOSS_COLORS})
    loss_colors = {**LOSS_COLORS, **{r: "#dfc27d" for r in reasons_seen if r not in LOSS_COLORS}}
    ncols = min(len(routes), 3)
    nrows = -(-len(routes) // ncols)
    fig = Figure(figsize=(1.3 + 1.05 * len(stages) * ncols, 1.2 + 3.3 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(routes):]:
        ax.remove()
    for ax, r in zip(axes, routes):
        mine = route == r
        counts = [int((mine & (last >= k)).sum()) for k in range(len(stages))]
        top = max(counts[0], 1)
        for k, stage in enumerate(stages):
            bar = ax.bar(2 * k, counts[k], width=0.9, color="#5b7083")[0]
            bar.set_gid(f"stage:{r}:{stage}")
            ax.text(2 * k, counts[k] + 0.015 * top, str(counts[k]), ha="center", va="bottom", fontsize=8)
            if k == len(stages) - 1:
                continue
            bottom = counts[k + 1]
            for reason in reasons_seen:
                lost = int((mine & (last == k) & (why == reason)).sum())
                if not lost:
                    continue
                seg = ax.bar(2 * k + 1, lost, bottom=bottom, width=0.7, color=loss_colors[reason],
                             edgecolor="white", lw=0.5)[0]
                seg.set_gid(f"loss:{r}:{stage}:{reason}")
                if lost >= 0.07 * top:
                    ax.text(2 * k + 1, bottom + lost / 2, str(lost), ha="center", va="center", fontsize=7,
                            color="white" if reason in ("death", "no_product", "progression") else "k")
                bottom += lost
            if counts[k] > counts[k + 1]:
                ax.text(2 * k + 1, counts[k] + 0.015 * top, f"-{counts[k] - counts[k + 1]}", ha="center",
                        va="bottom", fontsize=7, color="0.3")
        ax.set_xticks([2 * k for k in range(len(stages))], [FLOW_STAGES[s] for s in stages], fontsize=8)
        ax.set_xlim(-0.7, 2 * len(stages) - 1.3)
        ax.set_ylim(0, top * 1.12)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("patients")
        ax.set_title(f"{r} (n={int(mine.sum())})", fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(color="#5b7083", label="patients at the stage")]
    handles += [Patch(color=loss_colors[w], label=f"lost: {w.replace('_', ' ')}") for w in reasons_seen]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    fig.suptitle(f"{title}: patients reaching each stage, and why the others left")
    return fig


# ---------------------------------------------------------------- access by stratum

def access_by_stratum(table: pd.DataFrame | None, *, by: str = "stratum") -> Figure:
    """Equity table as horizontal bars per stratum (or per the column ``by``): the fraction of
    eligible patients treated with its 95% Clopper-Pearson interval
    (:func:`carcell.trial.stats.binomial_rate`; the treated count is ``n_treated`` or
    ``n_infused`` when given, else ``round(fraction_treated * n_eligible)``), then one panel for
    each optional column present: median referral to infusion (days), deaths while waiting
    (``deaths_while_waiting`` or ``deaths_waiting``), mean cost (USD thousands). Several
    scenarios (a ``scenario`` column) give grouped bars, one colour per scenario.
    """
    title = f"Access by {by}"
    if _is_empty(table):
        return _no_data(title, "the equity table is empty")
    _require(table, (by, "n_eligible", "fraction_treated"), "equity")
    strata = _in_order(table[by])
    scenarios = _in_order(table["scenario"]) if "scenario" in table.columns else [""]
    colors = _palette(scenarios)
    extra = [c for c in EQUITY_PANELS if c in table.columns
             and np.isfinite(pd.to_numeric(table[c], errors="coerce").to_numpy(dtype=float)).any()]
    count = next((c for c in ("n_treated", "n_infused") if c in table.columns), None)
    fig = Figure(figsize=(4.4 + 3.4 * len(extra), 1.6 + 0.32 * len(strata) * max(len(scenarios), 2)),
                 layout="constrained")
    axes = fig.subplots(1, 1 + len(extra), sharey=True, squeeze=False)[0]
    height = 0.8 / len(scenarios)
    for j, scenario in enumerate(scenarios):
        df = table if scenario == "" else table[table["scenario"].astype(str) == scenario]
        df = df.assign(_key=df[by].astype(str)).drop_duplicates("_key").set_index("_key").reindex(strata)
        y = np.arange(len(strata)) + (j - (len(scenarios) - 1) / 2) * height
        n = pd.to_numeric(df["n_eligible"], errors="coerce").fillna(0).to_numpy(dtype=float)
        frac = pd.to_numeric(df["fraction_treated"], errors="coerce").to_numpy(dtype=float)
        treated = (pd.to_numeric(df[count], errors="coerce").to_numpy(dtype=float) if count
                   else np.round(frac * n))
        lo, hi = np.full(len(strata), np.nan), np.full(len(strata), np.nan)
        for i in range(len(strata)):
            if n[i] > 0 and np.isfinite(treated[i]) and 0 <= treated[i] <= n[i]:
                lo[i], hi[i] = binomial_rate(int(treated[i]), int(n[i]))["ci95"]
        ax = axes[0]
        bars = ax.barh(y, np.nan_to_num(frac), height=height * 0.92, color=colors[scenario])
        for bar, stratum in zip(bars, strata):
            bar.set_gid(f"treated:{scenario}:{stratum}")
        ok = np.isfinite(lo) & np.isfinite(frac)
        ax.errorbar(frac[ok], y[ok], xerr=[frac[ok] - lo[ok], hi[ok] - frac[ok]], fmt="none", ecolor="k",
                    capsize=2, lw=1)
        for yi, f, h, ni in zip(y, frac, hi, n):
            if np.isfinite(f):
                ax.text((h if np.isfinite(h) else f) + 0.01, yi, f"{100 * f:.0f}% of {int(ni)}", va="center",
                        fontsize=7)
        for ax, column in zip(axes[1:], extra):
            value = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=float)
            if column == "mean_cost":
                value = value / 1000
            ax.barh(y, np.nan_to_num(value), height=height * 0.92, color=colors[scenario])
    axes[0].set_xlim(0, 1.18)
    axes[0].xaxis.set_major_formatter(PercentFormatter(xmax=1))
    axes[0].set_xlabel("eligible patients treated (%, 95% Clopper-Pearson CI)")
    axes[0].set_title("fraction treated", fontsize=10)
    for ax, column in zip(axes[1:], extra):
        label = EQUITY_PANELS[column]
        if column.startswith("deaths"):
            values = pd.to_numeric(table[column], errors="coerce").dropna().to_numpy(dtype=float)
            label += " (patients)" if np.allclose(values, np.round(values)) else " (share of eligible)"
        ax.set_xlabel(label)
        ax.set_title(label.split(" (")[0], fontsize=10)
    for ax in axes:
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(np.arange(len(strata)), strata, fontsize=8)
    axes[0].set_ylim(len(strata) - 0.5, -0.5)              # first stratum on top
    axes[0].set_ylabel(by)
    if len(scenarios) > 1:
        fig.legend(handles=[Patch(color=colors[s], label=s) for s in scenarios], loc="outside lower center",
                   ncols=min(len(scenarios), 5), fontsize=8, title="scenario", title_fontsize=8)
    fig.suptitle(f"{title}: eligible patients treated" + (", by scenario" if len(scenarios) > 1 else ""))
    return fig


# ---------------------------------------------------------------- cost

def cost_breakdown(costs: pd.DataFrame | None, *, by: str | None = None) -> Figure:
    """Stacked bars of the mean cost per patient by component, per group, in USD thousands.

    Components are the columns of :data:`COST_COMPONENTS` present in ``costs`` (a missing value
    counts as no cost); groups are ``by``, default the ``arm`` column, else ``route``, else all
    patients together. The group's total is written on top of its bar.
    """
    title = "Mean cost per patient by component"
    if _is_empty(costs):
        return _no_data(title, "the cost table is empty")
    components = [c for c in COST_COMPONENTS if c in costs.columns]
    if not components:
        return _no_data(title, f"no cost component column (expected some of {', '.join(COST_COMPONENTS)})")
    by = by or next((c for c in ("arm", "route") if c in costs.columns), None)
    if by is not None:
        _require(costs, (by,), "cost")
    values = costs[components].apply(pd.to_numeric, errors="coerce").fillna(0.0) / 1000
    group = costs[by].astype(str) if by else pd.Series("all patients", index=costs.index)
    groups = _in_order(group)
    means = values.groupby(group, sort=False).mean().reindex(groups)
    sizes = group.value_counts().reindex(groups)
    fig = Figure(figsize=(6.5 + 0.8 * len(groups), 5.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(groups))
    bottom = np.zeros(len(groups))
    for component in components:
        height = means[component].to_numpy(dtype=float)
        bars = ax.bar(x, height, bottom=bottom, width=0.65, color=COST_COMPONENTS[component],
                      label=component.replace("_", " "), edgecolor="white", lw=0.4)
        for bar, g in zip(bars, groups):
            bar.set_gid(f"cost:{g}:{component}")
        bottom += height
    for xi, total in zip(x, bottom):
        ax.text(xi, total + 0.01 * bottom.max(), f"{total:,.0f}" if total >= 10 else f"{total:.1f}",
                ha="center", va="bottom", fontsize=8, weight="bold")
    ax.set_xticks(x, [f"{g}\n(n={int(n)})" for g, n in zip(groups, sizes)], fontsize=8)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylim(0, max(bottom.max(), 1e-9) * 1.1)
    ax.set_ylabel("mean cost per patient (USD thousands)")
    ax.set_xlabel(by if by else "")
    ax.grid(True, axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
              title="component (top first)", title_fontsize=8)
    fig.suptitle(f"{title}" + (f", by {by}" if by else "") + " (USD thousands; total on top)")
    return fig


# ---------------------------------------------------------------- all of them

def logistics_figures(patients: pd.DataFrame | None, usage: pd.DataFrame | None,
                      costs: pd.DataFrame | None = None, equity: pd.DataFrame | None = None) -> dict[str, Figure]:
    """The logistics figures that have data, by name.

    Keys, in this order when present: ``vein_to_vein`` (some infused patient has a vein-to-vein
    time), ``patient_flow`` (patients not empty), ``queues_over_time`` (usage not empty),
    ``cost_breakdown`` (costs with at least one component column), ``access_by_stratum``
    (equity not empty). Save one with ``fig.savefig(path, dpi=DPI)``.
    """
    figures: dict[str, Figure] = {}
    # one route order, so a route has the same colour in every figure
    routes = _in_order(patients["route"]) if not _is_empty(patients) and "route" in patients.columns else []
    if not _is_empty(usage) and "route" in usage.columns:
        routes = _in_order(usage["route"], routes)
    if not _is_empty(patients):
        infused = patients["state"].astype(str) == "infused" if "state" in patients.columns else None
        if infused is not None and np.isfinite(_days(patients[infused], "vein_to_vein_days")).any():
            figures["vein_to_vein"] = vein_to_vein(patients, routes=routes)
        figures["patient_flow"] = patient_flow(patients, routes=routes)
    if not _is_empty(usage):
        figures["queues_over_time"] = queues_over_time(usage, routes=routes)
    if not _is_empty(costs) and any(c in costs.columns for c in COST_COMPONENTS):
        figures["cost_breakdown"] = cost_breakdown(costs)
    if not _is_empty(equity):
        figures["access_by_stratum"] = access_by_stratum(equity)
    return figures
