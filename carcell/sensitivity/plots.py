"""Plots of a sensitivity analysis: a tornado of Morris mu*, bars of Sobol' S1/ST with their
bootstrap intervals, and the indices against the number of points (convergence)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import LogLocator, MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

if TYPE_CHECKING:
    from carcell.sensitivity.analysis import SensitivityResult

S1_COLOUR, ST_COLOUR = "#92c5de", "#2166ac"


def _grid(n: int, width: float, height: float):
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False,
                             constrained_layout=True)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _label(path: str, width: int = 46) -> str:
    return path if len(path) <= width else "..." + path[-(width - 3):]


def _runs(result: SensitivityResult) -> str:
    what = "cohorts" if "n_patients" in result.settings else "evaluations"
    return f"{len(result.points)} {what}"


def _outcomes(result: SensitivityResult) -> list[str]:
    return [o for o in result.outcomes if o in set(result.indices["outcome"])]


def plot_sobol(result: SensitivityResult, path: Path) -> Path:
    """Grouped bars of S1 and ST per parameter, one panel per outcome, with 95% bootstrap bars."""
    names = _outcomes(result)
    fig, axes = _grid(len(names), 6.0, 0.5 * len(result.parameters) + 1.8)
    for ax, o in zip(axes, names):
        t = result.indices[result.indices["outcome"] == o].iloc[::-1]
        y = np.arange(len(t))
        ax.barh(y + 0.2, t["ST"], 0.38, xerr=t["ST_conf"], color=ST_COLOUR, label="ST (total)", capsize=2)
        ax.barh(y - 0.2, t["S1"], 0.38, xerr=t["S1_conf"], color=S1_COLOUR, label="S1 (first order)", capsize=2)
        ax.set_yticks(y, [_label(p) for p in t["parameter"]], fontsize=8)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_xlim(min(-0.05, float((t["S1"] - t["S1_conf"]).min()) - 0.05), 1.05)
        ax.set_title(o, fontsize=10)
        ax.set_xlabel("share of the outcome's variance")
        ax.grid(True, axis="x", alpha=0.3)
    if names:
        axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Sobol' indices, N = {result.n_samples} base points ({_runs(result)}), "
                 f"95% bootstrap intervals", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_tornado(result: SensitivityResult, path: Path) -> Path:
    """Tornado of Morris mu* (largest at the top), bars at +-mu*_conf, sigma marked as a dot."""
    names = _outcomes(result)
    fig, axes = _grid(len(names), 6.0, 0.45 * len(result.parameters) + 1.8)
    for ax, o in zip(axes, names):
        t = result.indices[result.indices["outcome"] == o].sort_values("mu_star", kind="stable")
        y = np.arange(len(t))
        ax.barh(y, t["mu_star"], 0.6, xerr=t["mu_star_conf"], color=ST_COLOUR, capsize=2, label="mu*")
        ax.plot(t["sigma"], y, "o", color="#b2182b", ms=4, label="sigma")
        ax.set_yticks(y, [_label(p) for p in t["parameter"]], fontsize=8)
        ax.set_title(o, fontsize=10)
        ax.set_xlabel("elementary effect per unit of the sampled range")
        ax.grid(True, axis="x", alpha=0.3)
    if names:
        axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Morris screening, r = {result.n_samples} trajectories ({_runs(result)}), "
                 f"mu* with 95% bootstrap bars", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_convergence(result: SensitivityResult, path: Path) -> Path:
    """ST (Sobol') or mu* (Morris) with 95% bands against the points used, per outcome."""
    names = _outcomes(result)
    sobol = result.method == "sobol"
    x, index, conf = ("n_base", "ST", "ST_conf") if sobol else ("trajectories", "mu_star", "mu_star_conf")
    fig, axes = _grid(len(names), 5.2, 3.4)
    cmap = plt.get_cmap("tab10")
    for ax, o in zip(axes, names):
        c = result.convergence[result.convergence["outcome"] == o]
        for i, (p, g) in enumerate(c.groupby("parameter", sort=False)):
            g = g.sort_values(x)
            ax.plot(g[x], g[index], "o-", color=cmap(i % 10), ms=3, label=_label(p, 30))
            ax.fill_between(g[x], g[index] - g[conf], g[index] + g[conf], color=cmap(i % 10), alpha=0.15)
        if sobol:
            ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True) if not sobol else LogLocator(base=2))
        ax.set_title(o, fontsize=10)
        ax.set_xlabel("base points N" if sobol else "trajectories r")
        ax.set_ylabel(index)
        ax.grid(True, alpha=0.3)
    if names:
        axes[0].legend(fontsize=7)
    fig.suptitle("convergence: indices on the first points of the design (95% bootstrap bands)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(result: SensitivityResult, out: Path) -> list[Path]:
    """The method's index plot and the convergence plot (none when no outcome has indices)."""
    if result.indices.empty or not isinstance(result.indices, pd.DataFrame):
        return []
    main = (plot_sobol(result, out / "sobol_indices.png") if result.method == "sobol"
            else plot_tornado(result, out / "morris_tornado.png"))
    return [main, plot_convergence(result, out / "convergence.png")]
