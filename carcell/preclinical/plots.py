"""Plots of the preclinical modes: killing curves, lysis against E:T, restimulation rounds;
tumour volume curves and survival of xenografted mice."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

GROUP_COLORS = {"CAR": "#2166ac", "control": "#b2182b"}


def _drug_label(d: float) -> str:
    return "no dasatinib" if d == 0 else f"dasatinib {d:g} nM"


def assay_plots(result, out: Path) -> list[Path]:
    """Killing curves per E:T (with IFN-gamma), lysis against E:T, and restimulation rounds."""
    tc = result.timecourse[result.timecourse["effector_to_target"] > 0]
    a = result.assay
    drugs = sorted(tc["dasatinib_nm"].unique())
    ratios = sorted(tc["effector_to_target"].unique())
    cmap = plt.get_cmap("viridis")
    colour = {r: cmap(i / max(len(ratios) - 1, 1)) for i, r in enumerate(ratios)}
    files = []

    fig, axes = plt.subplots(2, len(drugs), figsize=(4.6 * len(drugs) + 0.6, 7), squeeze=False,
                             sharex=True, constrained_layout=True)
    for j, d in enumerate(drugs):
        for r in ratios:
            g = tc[(tc["dasatinib_nm"] == d) & (tc["effector_to_target"] == r)]
            axes[0, j].plot(g["hour"], g["lysis_percent"], color=colour[r], lw=1.8, label=f"E:T {r:g}")
            axes[1, j].plot(g["hour"], g["ifng_pg_per_ml"], color=colour[r], lw=1.8)
        axes[0, j].set_title(_drug_label(d))
        axes[0, j].set_ylim(-5, 105)
        axes[0, j].set_ylabel("specific lysis, % of targets without effectors")
        axes[1, j].set_ylabel("IFN-gamma in supernatant, pg/mL")
        axes[1, j].set_xlabel("hours")
        for ax in axes[:, j]:
            ax.grid(True, alpha=0.3)
            for h in result.rounds["start_hour"].unique() if a.restimulations else []:
                if h > 0:
                    ax.axvline(h, color="grey", lw=0.8, ls=":")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result.scenario.name}: killing of {a.target_line} ({a.target_cells:.3g} targets, "
                 f"{a.well_volume_ul:g} uL)")
    files.append(out / "assay_killing.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    marks = sorted({h for h in (24.0, 48.0, a.hours) if h <= a.hours})
    drug_colour = {d: plt.get_cmap("tab10")(i) for i, d in enumerate(drugs)}   # colour: drug; line: hour
    for d in drugs:
        for h, style in zip(marks, (":", "--", "-")[-len(marks):]):
            g = tc[(tc["dasatinib_nm"] == d) & np.isclose(tc["hour"], h)].sort_values("effector_to_target")
            ax.plot(g["effector_to_target"], g["lysis_percent"], style, marker="o", color=drug_colour[d],
                    label=f"{_drug_label(d)}, {h:g} h")
    ax.set_xscale("log")
    ax.set_xlabel("effector to target ratio")
    ax.set_ylabel("specific lysis, %")
    ax.set_ylim(-5, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("lysis against E:T")
    files.append(out / "assay_lysis_vs_et.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)

    if a.restimulations:
        rd = result.rounds
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4), constrained_layout=True)
        styles = ("-", "--", ":", "-.")
        for k, d in enumerate(drugs):   # colour: E:T; line style: dasatinib
            for r in ratios:
                g = rd[(rd["dasatinib_nm"] == d) & (rd["effector_to_target"] == r)]
                style = styles[k % len(styles)]
                axes[0].plot(g["round"] + 1, g["lysis_percent"], style, marker="o", color=colour[r],
                             label=f"E:T {r:g}" if k == 0 else None)
                axes[1].plot(g["round"] + 1, 100 * g["exhausted_share"], style, marker="o", color=colour[r])
        for k, d in enumerate(drugs):
            axes[1].plot([], [], styles[k % len(styles)], color="grey", label=_drug_label(d))
        axes[0].set_ylabel("specific lysis at the end of the round, %")
        axes[1].set_ylabel("exhausted share of CAR cells, %")
        for ax in axes:
            ax.set_xlabel("target round (1 = first targets)")
            ax.set_xticks(range(1, a.restimulations + 2))
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.suptitle(f"serial restimulation every {a.restimulate_every_hours:g} h")
        files.append(out / "assay_rounds.png")
        fig.savefig(files[-1], dpi=120)
        plt.close(fig)
    return files


def volume_plot(times: np.ndarray, series: dict[str, np.ndarray], endpoint: float, ylabel: str,
                title: str, path: Path, endpoint_day: dict[str, np.ndarray]) -> None:
    """Spaghetti of each mouse's tumour (ended at its humane endpoint) and each group's median."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8), constrained_layout=True)
    for group, x in series.items():
        c = GROUP_COLORS.get(group, "#444444")
        shown = np.array(x, dtype=float, copy=True)
        for i, day in enumerate(endpoint_day[group]):
            if np.isfinite(day):   # a mouse is euthanised at its endpoint: nothing is measured after it
                shown[i, times > day] = np.nan
        for row in shown:
            ax.plot(times, row, color=c, lw=0.6, alpha=0.35)
        # the group median while at least half of the mice are still measured
        alive = np.isfinite(shown).mean(axis=0) >= 0.5
        med = np.where(alive, np.nanmedian(np.where(np.isfinite(shown), shown, np.inf), axis=0), np.nan)
        ax.plot(times, med, color=c, lw=2.4, label=f"{group} (n={x.shape[0]}): median")
    ax.axhline(endpoint, color="black", ls="--", lw=1, label="humane endpoint")
    ax.set_yscale("log")
    ax.set_xlabel("days after the first CAR dose")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def survival_plot(mice: pd.DataFrame, follow_up: float, title: str, path: Path) -> None:
    """Kaplan-Meier survival to the humane endpoint, per group."""
    from lifelines import KaplanMeierFitter

    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for group, g in mice.groupby("group", sort=False):
        km = KaplanMeierFitter(label=f"{group} (n={len(g)})")
        km.fit(g["survival_days"], g["endpoint_reached"].astype(bool))
        km.plot_survival_function(ax=ax, ci_show=False, color=GROUP_COLORS.get(group, "#444444"),
                                  show_censors=True)
    ax.set_xlim(0, follow_up)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("days after the first CAR dose")
    ax.set_ylabel("mice alive (before the humane endpoint)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=130)
    plt.close(fig)
