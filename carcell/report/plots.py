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


GRADE_COLORS = ["#f0f0f0", "#fee08b", "#fdae61", "#f46d43", "#d73027", "#67001f"]


def plot_toxicity(r: CohortResult, path: Path) -> None:
    """Maximum CRS and ICANS grades (ASTCT) and their onset and duration."""
    df = r.patients[r.patients["solver_status"] == "ok"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    for x, tox in enumerate(("crs", "icans")):
        grades = df[f"{tox}_max_grade"].astype(int)
        bottom = 0.0
        for g in range(6):
            share = float((grades == g).mean()) if len(grades) else 0.0
            axes[0].bar(x, share, bottom=bottom, color=GRADE_COLORS[g], edgecolor="white",
                        label=f"grade {g}" if x == 0 else None)
            if share > 0.04:
                axes[0].text(x, bottom + share / 2, f"{100 * share:.0f}%", ha="center", va="center", fontsize=8)
            bottom += share
    axes[0].set_xticks([0, 1], ["CRS", "ICANS"])
    axes[0].set_ylabel("share of patients (maximum ASTCT grade)")
    axes[0].legend(fontsize=7, loc="upper right", bbox_to_anchor=(1.45, 1))
    for ax, what, label in ((axes[1], "onset_day", "onset, days after infusion"),
                            (axes[2], "duration_days", "duration, days")):
        data = [df[f"{tox}_{what}"].dropna().to_numpy() for tox in ("crs", "icans")]
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], tick_labels=["CRS", "ICANS"])
        ax.set_ylabel(label)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{r.scenario.name}: toxicity under {r.scenario.regimen.protocol if isinstance(r.scenario.regimen.protocol, str) else 'a custom protocol'}")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def plot_patient_timeline(times, traj: dict, events, patient_id: int, title: str, path: Path) -> None:
    """One patient's course: cytokines, CAR cells, grades, drugs and (when present) blood
    counts over the first weeks."""
    end = min(float(times[-1]), 35.0)
    keep = times <= end
    t = times[keep]
    counts = "anc_per_ul" in traj
    fig, axes = plt.subplots(3 + counts, 1, figsize=(10, 8 + 2.5 * counts), sharex=True, constrained_layout=True)
    ax = axes[0]
    for q, color in (("il6", "#d73027"), ("ifng", "#4575b4")):
        ax.plot(t, np.maximum(traj[q][keep], 1e-2), color=color, label=f"{q.upper() if q == 'il6' else 'IFN-gamma'}, pg/mL")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(t, traj["car_cells_per_ul"][keep], color="#1a9850", lw=2, label="CAR cells/uL")
    ax2.set_yscale("log")
    ax2.legend(fontsize=8, loc="lower right")
    ev = events[events["patient_id"] == patient_id]
    ax = axes[1]
    for tox, color in (("crs", "#f46d43"), ("icans", "#762a83")):
        g = ev[ev["event"] == f"{tox}_grade"].sort_values("day")
        days = np.r_[0.0, g["day"].to_numpy(), end]
        grades = np.r_[0.0, g["value"].to_numpy(), g["value"].to_numpy()[-1] if len(g) else 0.0]
        ax.step(days, grades, where="post", color=color, lw=2, label=f"{tox.upper()} grade (ASTCT)")
    ax.set_ylim(-0.2, 5.2)
    ax.set_ylabel("grade")
    ax.legend(fontsize=8, loc="upper left")
    # where the IL-6 comes from: the body's myeloid cells and, in a tumour that has them, its own
    # macrophages (docs/solid.md)
    sources = [(q, label, color) for q, label, color in (
        ("macrophage_activation", "myeloid cells activated (body)", "#8c510a"),
        ("macrophage_site", "tumour macrophages activated", "#01665e"))
        if q in traj and np.nanmax(traj[q][keep], initial=0.0) > 0]
    if sources:
        ax2 = ax.twinx()
        for q, label, color in sources:
            ax2.plot(t, traj[q][keep], color=color, ls="--", lw=1.2, label=label)
        ax2.set_ylim(-0.04, 1.04)
        ax2.set_ylabel("share activated")
        ax2.legend(fontsize=8, loc="upper right")
    ax = axes[2]
    drugs = ev[ev["event"] == "drug"]
    names = sorted({d.split(" (")[0] for d in drugs["detail"]})
    for y, name in enumerate(names):
        d = drugs[drugs["detail"].str.startswith(name)]
        ax.scatter(d["day"], np.full(len(d), y), marker="v", s=40)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.8, max(len(names), 1) - 0.2)
    ax.set_title("drugs given", fontsize=9)
    if counts:
        ax = axes[3]
        ax.plot(t, np.maximum(traj["anc_per_ul"][keep], 1.0), color="#542788", lw=2, label="ANC /uL")
        ax.axhline(500, color="grey", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel("neutrophils per uL")
        if "platelets_e9_per_l" in traj:
            ax2 = ax.twinx()
            ax2.plot(t, traj["platelets_e9_per_l"][keep], color="#b35806", label="platelets 1e9/L")
            ax2.set_ylabel("platelets, 1e9/L")
            ax2.legend(fontsize=8, loc="lower right")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("days after infusion")
    axes[-1].set_xlim(0, end)
    fig.suptitle(f"{title}: patient {patient_id}")
    fig.savefig(path, dpi=130)
    plt.close(fig)


def write_plots(r: CohortResult, out: Path) -> list[Path]:
    paths = [out / "kinetics.png", out / "tumour_burden.png", out / "waterfall.png", out / "toxicity.png"]
    plot_kinetics(r, paths[0])
    plot_tumour(r, paths[1])
    plot_waterfall(r, paths[2])
    plot_toxicity(r, paths[3])
    return paths
