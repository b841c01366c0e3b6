"""Trial figures (carcell.report.trial_plots) and the trial table (carcell.report.trial_table)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from rich.console import Console
from test_trial_stats import make_events, make_patients

from carcell.report.trial_plots import (
    DAYS_PER_MONTH,
    SWIMMER_MARKERS,
    exposure_response_figure,
    forest_figure,
    km_figure,
    swimmer_figure,
    waterfall_figure,
    write_trial_plots,
)
from carcell.report.trial_table import trial_table
from carcell.trial.stats import km_summary, subgroup_hazard_ratios, trial_summary

THREE_ARMS = {"car-A": ("car", 90, 300.0), "car-B": ("car", 70, 250.0), "SOC": ("soc", 80, 150.0)}


@pytest.fixture(scope="module")
def lbcl() -> pd.DataFrame:
    return make_patients(0)


@pytest.fixture(scope="module")
def ball() -> pd.DataFrame:
    return make_patients(1, THREE_ARMS, criteria="marrow_blasts")


def _labelled_lines(ax) -> list:
    return [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]


def test_km_figure_lines_medians_and_numbers_at_risk(lbcl):
    fig = km_figure(lbcl, "pfs")
    assert isinstance(fig, Figure) and len(fig.axes) == 2          # curves + at-risk table axis
    ax, table = fig.axes
    lines = _labelled_lines(ax)
    assert [ln.get_label().split(" ")[0] for ln in lines] == ["car-A", "SOC"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    for arm, text in zip(("car-A", "SOC"), legend):
        df = lbcl[lbcl["arm"] == arm]
        median = km_summary(df["pfs_days"], df["pfs_event"])["median_days"]
        assert text == f"{arm} (n={len(df)}): median {median / DAYS_PER_MONTH:.1f} mo"
    # the x axis is in months: the curves end at the last follow-up, 730 days
    assert max(ln.get_xdata().max() for ln in lines) == pytest.approx(730 / DAYS_PER_MONTH, rel=1e-9)
    labels = [t.get_text() for t in table.get_xticklabels()]
    assert "At risk" in labels[0] and "car-A" in labels[0] and "SOC" in labels[0]
    # numbers at risk at 12 months = patients with PFS time beyond 12 months, per arm
    ticks = list(table.get_xticks())
    at_12 = [int(v) for v in labels[ticks.index(12.0)].split()]
    expected = [int((lbcl.loc[lbcl["arm"] == a, "pfs_days"] / DAYS_PER_MONTH > 12).sum()) for a in ("car-A", "SOC")]
    assert at_12 == expected
    assert plt.get_fignums() == []                               # built without pyplot


def test_km_figure_median_not_reached_and_one_arm():
    df = make_patients(2, {"car-A": ("car", 60, 5000.0)})
    fig = km_figure(df, "os", title="OS")
    ax = fig.axes[0]
    assert len(_labelled_lines(ax)) == 1 and ax.get_title() == "OS"
    assert ax.get_legend().get_texts()[0].get_text().endswith("median NR")


def test_waterfall_figure_panels_bars_and_thresholds(ball):
    fig = waterfall_figure(ball)
    assert len(fig.axes) == 2                                   # car-A and car-B; SOC has no burden data
    for ax, arm in zip(fig.axes, ("car-A", "car-B")):
        df = ball[ball["arm"] == arm]
        change = df["best_change_in_burden"].dropna()
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert len(bars) == len(change) == int(df["infused"].sum())
        heights = [b.get_height() for b in bars]
        assert heights == sorted(heights, reverse=True)
        assert heights[-1] == pytest.approx(100 * max(change.min(), -1))
        dashed = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if ln.get_linestyle() == "--")
        assert dashed == [-50, 50]
        assert ax.get_title() == arm


def test_swimmer_figure_rows_and_markers(ball):
    events = make_events(ball)
    fig = swimmer_figure(ball, events, max_patients=25)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 25
    first = ball.sort_values(["os_days", "patient_id"]).head(25)
    assert [int(t.get_text()) for t in ax.get_yticklabels()] == list(first["patient_id"])[::-1]
    assert sorted(b.get_width() for b in bars) == pytest.approx(sorted(first["os_days"] / DAYS_PER_MONTH))
    scatters = {c.get_label(): c.get_offsets() for c in ax.collections}
    deaths = scatters[SWIMMER_MARKERS["death"][0]]
    assert len(deaths) == int(first["os_event"].sum())
    assert sorted(deaths[:, 0]) == pytest.approx(sorted(first["death_day"].dropna() / DAYS_PER_MONTH))
    crs3 = scatters[SWIMMER_MARKERS["crs3"][0]]
    assert len(crs3) == int((first["crs_max_grade"] >= 3).sum())
    assert len(scatters[SWIMMER_MARKERS["response"][0]]) == int(first["response_day"].notna().sum())
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {label for label, _, _ in SWIMMER_MARKERS.values()} <= legend
    assert len(swimmer_figure(ball, events).axes[0].get_yticklabels()) == 40


def test_forest_figure_rows_log_axis_and_reference_line(lbcl):
    sg = subgroup_hazard_ratios(lbcl, "car-A", "SOC")
    sg = pd.concat([sg, pd.DataFrame([{"subgroup": "extra", "level": "tiny", "n": 3, "events": 0,
                                       "hazard_ratio": np.nan, "ci_low": np.nan, "ci_high": np.nan}])],
                   ignore_index=True)
    fig = forest_figure(sg)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == len(sg) and labels[0] == "Overall" and labels[-1] == "extra: tiny"
    assert any(np.allclose(ln.get_xdata(), 1.0) for ln in ax.get_lines())       # vertical line at HR = 1
    points = np.concatenate([ln.get_xdata() for ln in ax.get_lines() if ln.get_marker() in ("s", "D")])
    assert sorted(points) == pytest.approx(sorted(sg["hazard_ratio"].dropna()))
    texts = [t.get_text() for t in ax.texts]
    assert "not estimable" in texts and f"{sg['n'][0]} ({sg['events'][0]})" in texts


def test_exposure_response_figure_panels(lbcl):
    fig = exposure_response_figure(lbcl)
    assert len(fig.axes) == 3
    for ax in fig.axes:
        assert ax.get_xscale() == "log"
        assert [ln.get_label() for ln in _labelled_lines(ax)] == ["logistic fit"]
        assert "OR per 10-fold" in ax.get_title()
    fig = exposure_response_figure(lbcl.drop(columns=["icans_max_grade"]))
    assert len(fig.axes) == 2


def test_write_trial_plots_files(tmp_path, lbcl, ball):
    expected = ["km_pfs.png", "km_os.png", "waterfall.png", "swimmer.png", "forest_pfs.png", "exposure_response.png"]
    paths = write_trial_plots(lbcl, make_events(lbcl), tmp_path / "lbcl")
    assert [p.name for p in paths] == expected
    paths = write_trial_plots(ball, make_events(ball), tmp_path / "ball", reference_arm="car-A")
    assert [p.name for p in paths] == expected[:2] + ["km_efs.png"] + expected[2:]
    single = make_patients(4, {"SOC": ("soc", 30, 150.0)})
    paths += write_trial_plots(single, make_events(single), tmp_path / "soc")
    assert [p.name for p in paths[-4:]] == ["km_pfs.png", "km_os.png", "waterfall.png", "swimmer.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert plt.get_fignums() == []


def test_trial_table_cells(ball):
    trial = trial_summary(ball, name="virtual ELIANA", disease="b_all", criteria="marrow_blasts",
                          follow_up_days=730, seed=1)
    console = Console(width=250, record=True)
    console.print(trial_table(trial))
    text = console.export_text()
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.startswith("│")}
    a = trial["arms"]["car-A"]
    orr = a["orr"]
    assert rows["Objective response"][0] == (f"{100 * orr['estimate']:.0f}% "
                                             f"({100 * orr['ci95'][0]:.0f}-{100 * orr['ci95'][1]:.0f})")
    median = a["pfs"]["median_days"]
    assert rows["Median PFS"][0].startswith(f"{median / 30.4375:.1f} mo (")
    assert rows["N randomised / infused"] == [f"{x['n_randomised']} / {x['n_infused']}"
                                              for x in trial["arms"].values()]
    assert rows["CRS, grade >=3"][2] == "—"                      # SOC: not modelled
    assert "CR/CRi" in rows and "Median EFS" in rows
    assert "days / 30.4375" in text
    hr = trial["comparisons"][0]
    assert f"PFS, car-A vs SOC: HR {hr['hazard_ratio']:.2f} ({hr['ci95'][0]:.2f}-{hr['ci95'][1]:.2f})" in text
    # a median that is not reached, with a lower bound
    trial["arms"]["car-A"]["os"].update(median_days=None, median_ci95=[365.25, None])
    console = Console(width=250, record=True)
    console.print(trial_table(trial))
    assert "NR (12.0-NR)" in console.export_text()   # 365.25 days = 12.0 months
