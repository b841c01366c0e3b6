"""PNG plots of a cohort: CAR kinetics, tumour burden, waterfall of best response."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from carcell.cohort.run import CohortResult  # noqa: E402

COLORS = {"CR": "#1b7837", "VGPR": "#5aae61", "PR": "#a6dba0", "SD": "#bababa",
          "NR": "#d6604d", "PD": "#b2182b"}


def _band(ax, t, x, color, label, floor):
    x = np.where(np.isfinite(x), x, np.nan)
    lo, med, hi = np.nanpercentile(np.maximum(x, floor), [5, 50, 95], axis=0)
    ax.fill_between(t, lo, hi, color=color, alpha=0.25, lw=0, label="5-95% of patients")
    ax.plot(t, med, color=color, lw=2, label=label)
    ax.set_yscale("log")
    ax.grid(True, which="major", alpha=0.3)


def _xaxis(ax, t):
    ax.set_xscale("symlog", linthresh=30, linscale=1.5)
    ticks = [d for d in (0, 7, 14, 21, 28, 60, 90, 180, 365, 730, 1095) if d <= t[-1]]
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(d) for d in ticks])
    ax.set_xlim(0, t[-1])
    ax.set_xlabel("days after infusion")


def plot_kinetics(r: CohortResult, path: Path) -> None:
    t = r.times
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    _band(axes[0], t, r.trajectories["car_cells_per_ul"], "#2166ac", "median", 1e-3)
    axes[0].set_ylabel("CAR T cells per uL blood (flow)")
    axes[0].set_ylim(bottom=1e-2)
    _band(axes[1], t, r.trajectories["car_copies_per_ug"], "#762a83", "median", 1e-1)
    axes[1].set_ylabel("transgene copies per ug gDNA (qPCR)")
    axes[1].set_ylim(bottom=1)
    for ax in axes:
        _xaxis(ax, t)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"CAR kinetics: {r.scenario.name} ({len(r.patients)} virtual patients)")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_tumour(r: CohortResult, path: Path) -> None:
    t = r.times
    burden = r.trajectories["tumour_total_cells"]
    rel = burden / burden[:, :1]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), constrained_layout=True)
    rng = np.random.default_rng(0)
    show = rng.choice(rel.shape[0], size=min(30, rel.shape[0]), replace=False)
    for i in show:
        ax.plot(t, np.maximum(rel[i], 1e-12), color="0.6", lw=0.6, alpha=0.6)
    _band(ax, t, rel, "#b2182b", "median", 1e-12)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_ylim(1e-12, max(10.0, float(np.nanmax(rel)) * 2))
    ax.set_ylabel("tumour burden relative to baseline")
    _xaxis(ax, t)
    ax.plot([], [], color="0.6", lw=0.6, label="individual patients")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"Tumour burden: {r.design.disease} (cells below 1 are extinct)")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_waterfall(r: CohortResult, path: Path) -> None:
    df = r.patients[r.patients["solver_status"] == "ok"]
    change = 100 * np.clip(df["best_change_in_burden"].to_numpy(dtype=float), -1, 2)
    order = np.argsort(-change, kind="stable")
    cats = df["best_response"].to_numpy()[order]
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    x = np.arange(order.size)
    colors = [COLORS.get(c, "0.5") for c in cats]
    ax.bar(x, change[order], width=1.0, color=colors, edgecolor="none")
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(-50, color="k", lw=0.6, ls=":")
    ax.set_xlim(-0.5, order.size - 0.5)
    ax.set_xticks([])
    ax.set_xlabel("patients, sorted")
    ax.set_ylabel("best change in tumour burden (%)")
    for c in ("CR", "VGPR", "PR", "SD", "NR", "PD"):
        if c in set(cats):
            ax.bar([], [], color=COLORS[c], label=f"{c} ({int((cats == c).sum())})")
    ax.legend(loc="upper right", fontsize=8, title="best response")
    ax.set_title(f"Best response by {r.design.response_criteria} criteria")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_plots(r: CohortResult, out: Path) -> list[Path]:
    paths = [out / "kinetics.png", out / "tumour_burden.png", out / "waterfall.png"]
    plot_kinetics(r, paths[0])
    plot_tumour(r, paths[1])
    plot_waterfall(r, paths[2])
    return paths
