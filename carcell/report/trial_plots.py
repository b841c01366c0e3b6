"""Figures of a virtual trial: Kaplan-Meier, waterfall, swimmer, forest and exposure-response.

Every ``*_figure`` function takes tables laid out as in docs/trial-outputs.md and returns a
:class:`matplotlib.figure.Figure` built without pyplot (nothing to close, never shown);
:func:`write_trial_plots` saves the set as PNG files.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from lifelines import KaplanMeierFitter  # noqa: E402
from lifelines.plotting import add_at_risk_counts  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator  # noqa: E402
from scipy.special import expit  # noqa: E402

from carcell.report.plots import COLORS  # noqa: E402
from carcell.units import DAYS_PER_MONTH  # noqa: E402
from carcell.trial.stats import (  # noqa: E402
    arms_in_order,
    default_reference_arm,
    event_flags,
    exposure_response,
    km_summary,
    subgroup_hazard_ratios,
)

#: days per month (365.25 / 12), for axes in months
DPI = 120
ENDPOINT_NAMES = {"pfs": "progression-free survival", "os": "overall survival",
                  "efs": "event-free survival", "dor": "duration of response"}
RESPONSE_COLORS = {**COLORS, "NE": "#4d4d4d"}
RESPONSE_ORDER = ("CR", "VGPR", "PR", "SD", "NR", "PD", "NE")
EXPOSURE_LABELS = {"auc_0_28_copies_day_per_ug": "AUC day 0-28 (transgene copies x day / ug gDNA)",
                   "cmax_copies_per_ug": "Cmax (transgene copies / ug gDNA)",
                   "cmax_cells_per_ul": "Cmax (CAR cells / uL)"}
ARM_COLORS = ("#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214", "#35978f", "#8c510a", "#de77ae")


def _arm_colors(patients: pd.DataFrame) -> dict[str, str]:
    return {a: ARM_COLORS[i % len(ARM_COLORS)] for i, a in enumerate(arms_in_order(patients))}


def _car_arms(patients: pd.DataFrame) -> list[str]:
    kinds = patients.drop_duplicates("arm").set_index("arm")["arm_kind"].astype(str)
    return [a for a in arms_in_order(patients) if kinds.get(a) == "car"]


def _months(days: float | None) -> str:
    return "NR" if days is None else f"{days / DAYS_PER_MONTH:.1f} mo"


# ---------------------------------------------------------------- Kaplan-Meier

def km_figure(patients: pd.DataFrame, endpoint: str = "pfs", title: str | None = None) -> Figure:
    """Kaplan-Meier curves by arm in months, with censoring ticks, 95% bands and numbers at risk.

    The legend gives each arm's size and median (NR = not reached); the table under the axis
    gives the patients still at risk at each month tick (lifelines ``add_at_risk_counts``).
    """
    tcol, ecol = f"{endpoint}_days", f"{endpoint}_event"
    colors = _arm_colors(patients)
    fitters, rows = [], []
    for arm in arms_in_order(patients):
        df = patients[patients["arm"].astype(str) == arm]
        t = df[tcol].to_numpy(dtype=float)
        e = df[ecol].to_numpy(dtype=object)
        keep = np.isfinite(t)
        if keep.any():
            rows.append((arm, t[keep], event_flags(e[keep])))
    n_rows = max(len(rows), 1)
    table_in = 0.9 + 0.22 * (n_rows + 1)      # room under the axis for the at-risk table, inches
    fig = Figure(figsize=(8.5, 4.6 + table_in))
    fig.subplots_adjust(left=0.2, right=0.97, top=0.92, bottom=table_in / (4.6 + table_in))
    ax = fig.add_subplot(1, 1, 1)
    for arm, t, e in rows:
        med = km_summary(t, e, landmarks_days=())["median_days"]
        kmf = KaplanMeierFitter(label=arm).fit(t / DAYS_PER_MONTH, e)
        kmf.plot_survival_function(ax=ax, ci_show=True, ci_alpha=0.15, show_censors=True,
                                   censor_styles={"marker": "|", "ms": 6, "mew": 1},
                                   color=colors[arm], lw=1.8,
                                   label=f"{arm} (n={t.size}): median {_months(med)}")
        fitters.append(kmf)
    t_max = max((float(t.max()) for _, t, _ in rows), default=DAYS_PER_MONTH) / DAYS_PER_MONTH
    step = 3 if t_max <= 30 else 6
    end = step * np.ceil(t_max / step - 0.05)   # 730 days = 23.98 months still gets the 24-month tick
    ax.set_xlim(0, max(end, t_max) * 1.02)
    ax.set_xticks(np.arange(0, end + 1e-9, step))
    ax.set_ylim(0, 1.03)
    ax.set_ylabel(f"{ENDPOINT_NAMES.get(endpoint, endpoint)} (probability)")
    ax.set_xlabel("months from day 0 (infusion or randomisation)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, title="arm: median (95% band shaded, | censored)",
              title_fontsize=8)
    ax.set_title(title or f"Kaplan-Meier estimate of {ENDPOINT_NAMES.get(endpoint, endpoint)}")
    if fitters:
        add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"], fontsize=8)
    return fig


# ---------------------------------------------------------------- waterfall

def waterfall_figure(patients: pd.DataFrame) -> Figure:
    """Best change in tumour burden per patient, sorted, coloured by best response; one panel per
    CAR arm (arms without burden data, usually SOC, are skipped). Dashed lines at -50% and +50%."""
    panels = []
    for arm in _car_arms(patients):
        df = patients[patients["arm"].astype(str) == arm]
        change = df["best_change_in_burden"].to_numpy(dtype=float)
        keep = np.isfinite(change)
        if keep.any():
            panels.append((arm, 100 * np.clip(change[keep], -1, 2), df["best_response"].astype(str).to_numpy()[keep]))
    fig = Figure(figsize=(max(5.0, 4.6 * len(panels)), 4.4), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), sharey=True, squeeze=False)[0]
    if not panels:
        axes[0].text(0.5, 0.5, "no CAR arm with best change in burden", ha="center", va="center",
                     transform=axes[0].transAxes)
        axes[0].set_axis_off()
        return fig
    for ax, (arm, change, cats) in zip(axes, panels):
        order = np.argsort(-change, kind="stable")
        ax.bar(np.arange(order.size), change[order], width=1.0, edgecolor="none",
               color=[RESPONSE_COLORS.get(c, "0.5") for c in cats[order]])
        ax.axhline(0, color="k", lw=0.8)
        for level in (-50, 50):
            ax.axhline(level, color="k", lw=0.8, ls="--")
        ax.set_xlim(-0.5, order.size - 0.5)
        ax.set_xticks([])
        ax.set_xlabel(f"patients, sorted (n={order.size})")
        handles = [Patch(color=RESPONSE_COLORS[c], label=f"{c} ({int((cats == c).sum())})")
                   for c in RESPONSE_ORDER if (cats == c).any()]
        ax.legend(handles=handles, loc="upper right", fontsize=7, title="best response", title_fontsize=7)
        ax.set_title(arm)
    axes[0].set_ylabel("best change in tumour burden (%)")
    axes[0].set_ylim(-105, 205)
    fig.suptitle("Best change in tumour burden (clipped at +200%)")
    return fig


# ---------------------------------------------------------------- swimmer

#: swimmer markers: key -> (label, marker, colour)
SWIMMER_MARKERS = {
    "response": ("first response", "o", "#1b7837"),
    "progression": ("progression / relapse", ">", "#b2182b"),
    "crs3": ("CRS grade >=3 onset", "^", "#f46d43"),
    "icans3": ("ICANS grade >=3 onset", "v", "#762a83"),
    "death": ("death", "X", "k"),
}


def _first_event_day(events: pd.DataFrame, kinds: tuple[str, ...], min_value: float | None = None) -> pd.Series:
    ev = events[events["event"].astype(str).isin(kinds)]
    if min_value is not None:
        ev = ev[pd.to_numeric(ev["value"], errors="coerce") >= min_value]
    return ev.groupby("patient_id")["day"].min()


def swimmer_figure(patients: pd.DataFrame, events: pd.DataFrame, max_patients: int = 40) -> Figure:
    """One bar per patient from day 0 to death or last follow-up (``os_days``), in months.

    Shows the first ``max_patients`` patients in order of ``os_days`` (ties by patient_id),
    drawn with the longest bar on top. Markers: first response (``response_day``), first
    progression or relapse, CRS and ICANS grade >=3 onset (first ``crs_grade`` /
    ``icans_grade`` event with value >= 3) and death (``death_day``).
    """
    shown = (patients[np.isfinite(patients["os_days"].to_numpy(dtype=float))]
             .sort_values(["os_days", "patient_id"], kind="stable").head(max_patients)
             .iloc[::-1])                          # longest on top: last row drawn at the top
    colors = _arm_colors(patients)
    days = {
        "response": shown.set_index("patient_id")["response_day"],
        "progression": _first_event_day(events, ("progression", "relapse")),
        "crs3": _first_event_day(events, ("crs_grade",), 3),
        "icans3": _first_event_day(events, ("icans_grade",), 3),
        "death": shown.set_index("patient_id")["death_day"] if "death_day" in shown.columns
        else _first_event_day(events, ("death",)),
    }
    fig = Figure(figsize=(10, 1.6 + 0.17 * max(len(shown), 1)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(shown))
    ids = shown["patient_id"].to_numpy()
    ax.barh(y, shown["os_days"].to_numpy(dtype=float) / DAYS_PER_MONTH, height=0.6,
            color=[colors[str(a)] for a in shown["arm"]], alpha=0.55, edgecolor="none")
    for key, (label, marker, color) in SWIMMER_MARKERS.items():
        d = days[key].reindex(ids).to_numpy(dtype=float)
        has = np.isfinite(d)
        ax.scatter(d[has] / DAYS_PER_MONTH, y[has], marker=marker, color=color, s=28, zorder=3,
                   label=label, edgecolors="none" if marker != "X" else None)
    ax.set_yticks(y, [str(i) for i in ids], fontsize=6)
    ax.set_ylim(-0.7, max(len(shown), 1) - 0.3)
    ax.set_xlim(left=0)
    ax.set_ylabel("patient id")
    ax.set_xlabel("months from day 0 (bar ends at death or last follow-up)")
    arm_handles = [Patch(color=colors[a], alpha=0.55, label=a) for a in arms_in_order(patients)
                   if a in set(shown["arm"].astype(str))]
    marker_handles = [Line2D([], [], ls="none", marker=m, color=c, label=lab)
                      for lab, m, c in SWIMMER_MARKERS.values()]
    ax.legend(handles=arm_handles + marker_handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"Swimmer plot: the {len(shown)} of {len(patients)} patients with the shortest OS time")
    return fig


# ---------------------------------------------------------------- forest

def forest_figure(subgroups: pd.DataFrame, title: str | None = None) -> Figure:
    """Hazard ratios with 95% CI per subgroup (rows of :func:`subgroup_hazard_ratios`) on a log
    axis, a vertical line at 1, and n (events) and HR (CI) written beside each row."""
    n_rows = len(subgroups)
    height = 1.5 + 0.35 * max(n_rows, 1)
    fig = Figure(figsize=(8.5, height))
    fig.subplots_adjust(left=0.3, right=0.66, top=1 - 0.6 / height, bottom=0.7 / height)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n_rows)[::-1]
    hr = subgroups["hazard_ratio"].to_numpy(dtype=float)
    lo = subgroups["ci_low"].to_numpy(dtype=float)
    hi = subgroups["ci_high"].to_numpy(dtype=float)
    ok = np.isfinite(hr) & np.isfinite(lo) & np.isfinite(hi)
    overall = (subgroups["subgroup"].astype(str) == "overall").to_numpy()
    for mask, marker, size in ((ok & ~overall, "s", 6), (ok & overall, "D", 8)):
        if mask.any():
            ax.errorbar(hr[mask], y[mask], xerr=[hr[mask] - lo[mask], hi[mask] - hr[mask]], fmt=marker,
                        ms=size, color="k", ecolor="k", capsize=2, lw=1.2)
    ax.axvline(1.0, color="0.3", lw=1, ls="--")
    ax.set_xscale("log")
    finite = np.r_[lo[ok], hi[ok], 1.0]
    left, right = finite.min() / 1.3, finite.max() * 1.3
    ax.set_xlim(left, right)
    ticks = [v for v in (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if left <= v <= right]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())
    labels = ["Overall" if o else f"{s}: {lv}" for o, s, lv in
              zip(overall, subgroups["subgroup"].astype(str), subgroups["level"].astype(str))]
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(-0.7, n_rows - 0.3)
    ax.set_xlabel("hazard ratio (95% CI); < 1 favours the experimental arm")
    for yi, row, fine in zip(y, subgroups.itertuples(), ok):
        estimate = (f"{row.hazard_ratio:.2f} ({row.ci_low:.2f}-{row.ci_high:.2f})" if fine else "not estimable")
        ax.text(1.03, yi, f"{row.n} ({row.events})", transform=ax.get_yaxis_transform(),
                va="center", fontsize=8)
        ax.text(1.35, yi, estimate, transform=ax.get_yaxis_transform(), va="center", fontsize=8)
    ax.text(1.03, n_rows - 0.3, "n (events)", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8,
            weight="bold")
    ax.text(1.35, n_rows - 0.3, "HR (95% CI)", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8,
            weight="bold")
    fig.suptitle(title or "Hazard ratio by subgroup", x=0.02, ha="left")
    return fig


# ---------------------------------------------------------------- exposure-response

def _toxicity_outcome(patients: pd.DataFrame, exposure: str, tox: str) -> dict | None:
    if f"{tox}_max_grade" not in patients.columns:
        return None
    severe = exposure_response(patients, exposure, f"{tox}_grade3plus")
    return severe if severe["events"] > 0 else exposure_response(patients, exposure, f"{tox}_any")


def exposure_response_figure(patients: pd.DataFrame, exposure: str = "auc_0_28_copies_day_per_ug") -> Figure:
    """Response, CRS and ICANS rate per exposure quartile (95% Clopper-Pearson CI, plotted at the
    quartile's median exposure) with the fitted logistic curve of
    :func:`carcell.trial.stats.exposure_response`. CRS and ICANS panels show grade >=3, or
    any grade when no patient reached grade 3."""
    results = [exposure_response(patients, exposure, "responder")]
    results += [r for r in (_toxicity_outcome(patients, exposure, t) for t in ("crs", "icans")) if r is not None]
    titles = {"responder": "objective response", "crs_grade3plus": "CRS grade >=3", "crs_any": "CRS any grade",
              "icans_grade3plus": "ICANS grade >=3", "icans_any": "ICANS any grade"}
    fig = Figure(figsize=(4.2 * len(results), 4.0), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False)[0]
    expo = pd.to_numeric(patients[exposure], errors="coerce").to_numpy(dtype=float)
    expo = expo[np.isfinite(expo) & (expo > 0)]
    for ax, r in zip(axes, results):
        q = r["quartiles"]
        if q:
            x = np.array([e["median"] for e in q])
            rate = np.array([e["rate"] for e in q], dtype=float)
            ci = np.array([e["ci95"] for e in q], dtype=float)
            ax.errorbar(x, rate, yerr=[rate - ci[:, 0], ci[:, 1] - rate], fmt="o", color="k", capsize=3,
                        label="observed, per quartile (95% CI)")
            for e in q:
                ax.text(e["median"], -0.07, f"n={e['n']}", ha="center", va="top", fontsize=7)
        if r["slope"] is not None:
            grid = np.logspace(np.log10(expo.min()), np.log10(expo.max()), 200)
            ax.plot(grid, expit(r["intercept"] + r["slope"] * np.log10(grid)), color="#2166ac", lw=2,
                    label="logistic fit")
            lo, hi = r["odds_ratio_ci95"]
            ax.set_title(f"{titles[r['outcome']]}\nOR per 10-fold {r['odds_ratio_per_10fold']:.2f} "
                         f"({lo:.2f}-{hi:.2f}), p={r['p_value']:.2g}", fontsize=9)
        else:
            ax.set_title(f"{titles[r['outcome']]}\nno fit: {r['note']}", fontsize=8, wrap=True)
        if expo.size:
            ax.set_xscale("log")
        ax.set_ylim(-0.15, 1.02)
        ax.set_xlabel(EXPOSURE_LABELS.get(exposure, exposure.replace("_", " ")))
        ax.set_ylabel("share of patients")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Exposure-response ({results[0]['n']} infused CAR patients with exposure data)")
    return fig


# ---------------------------------------------------------------- all of them

def _efs_differs(patients: pd.DataFrame) -> bool:
    if not {"efs_days", "efs_event", "pfs_days", "pfs_event"} <= set(patients.columns):
        return False
    days_same = np.allclose(patients["efs_days"].to_numpy(dtype=float), patients["pfs_days"].to_numpy(dtype=float),
                            equal_nan=True)
    return not days_same or bool((event_flags(patients["efs_event"]) != event_flags(patients["pfs_event"])).any())


def write_trial_plots(patients: pd.DataFrame, events: pd.DataFrame, out: Path,
                      reference_arm: str | None = None) -> list[Path]:
    """Write the trial's PNG figures into ``out`` and return their paths.

    Always km_pfs.png, km_os.png, waterfall.png and swimmer.png; km_efs.png when EFS differs
    from PFS (B-ALL); forest_pfs.png with two or more arms (first non-reference arm against
    ``reference_arm``, default :func:`carcell.trial.stats.default_reference_arm`);
    exposure_response.png when a CAR arm has exposure data.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, Figure]] = [("km_pfs.png", km_figure(patients, "pfs")),
                                         ("km_os.png", km_figure(patients, "os"))]
    if _efs_differs(patients):
        figures.append(("km_efs.png", km_figure(patients, "efs")))
    figures.append(("waterfall.png", waterfall_figure(patients)))
    figures.append(("swimmer.png", swimmer_figure(patients, events)))
    arms = arms_in_order(patients)
    if len(arms) >= 2:
        reference = reference_arm or default_reference_arm(patients)
        arm = next(a for a in arms if a != reference)
        figures.append(("forest_pfs.png", forest_figure(subgroup_hazard_ratios(patients, arm, reference, "pfs"),
                                                        title=f"PFS hazard ratio, {arm} vs {reference}")))
    exposure = "auc_0_28_copies_day_per_ug"
    if exposure in patients.columns:
        car = patients[patients["arm"].astype(str).isin(_car_arms(patients))]
        values = pd.to_numeric(car[exposure], errors="coerce").to_numpy(dtype=float)
        if (np.isfinite(values) & (values > 0)).any():
            figures.append(("exposure_response.png", exposure_response_figure(car, exposure)))
    paths = []
    for name, fig in figures:
        fig.savefig(out / name, dpi=DPI)
        paths.append(out / name)
    return paths
