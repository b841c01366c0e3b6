"""Figures of the manufacturing chain, cost and access (carcell.report.logistics_plots).

The input tables are built here in the layout of docs/logistics.md, with each
patient's intended last stage and loss reason kept beside the table, so the expected funnel
counts come from how the data were made rather than from the code under test.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from scipy.stats import binomtest

from carcell.errors import TrialDataError
from carcell.report.logistics_plots import (
    COST_COMPONENTS,
    DPI,
    access_by_stratum,
    cost_breakdown,
    logistics_figures,
    patient_flow,
    queues_over_time,
    vein_to_vein,
)

PNG = b"\x89PNG\r\n\x1a\n"
ROUTES = ("central", "point_of_care", "allogeneic", "satellite")
STAGES = ("referred", "apheresis", "released", "infused")
#: loss kinds: (state, reason, index of the last stage reached, loss label)
LOSSES = (("not_infused", "progression", 0, "progression"),
          ("not_infused", "death", 0, "death"),
          ("not_infused", "progression", 1, "progression"),
          ("not_infused", "manufacturing_failure", 1, "manufacturing_failure"),
          ("not_infused", "death", 2, "death"),
          ("not_infused", "no_product", 0, "no_product"),
          ("waiting", "slot", 1, "still waiting"),
          ("waiting", "apheresis", 0, "still waiting"))


def make_patients(seed: int = 0, referred_share: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chain's patients table and, per patient, the intended last stage and loss label.

    central, point_of_care and allogeneic have infused patients and every kind of loss; on
    allogeneic (off the shelf) infused patients have no apheresis day; satellite has no
    infused patient. With ``referred_share`` a ``referred`` column is added and the others
    become "not_referred" (an access population).
    """
    rng = np.random.default_rng(seed)
    rows, truth = [], []
    sizes = {"central": 40, "point_of_care": 25, "allogeneic": 30, "satellite": 0}
    pid = 0
    for route in ROUTES:
        kinds = [("infused", "", 3, "")] * sizes[route]
        kinds += list(LOSSES) if route != "satellite" else [LOSSES[0], LOSSES[6]]
        kinds += [LOSSES[i] for i in rng.integers(0, len(LOSSES), 6 if route != "satellite" else 0)]
        for state, reason, last, label in kinds:
            arrival = rng.uniform(0, 200)
            apheresis = arrival + rng.lognormal(np.log(10), 0.4)
            release = apheresis + rng.lognormal(np.log(18), 0.3)
            infusion = release + rng.lognormal(np.log(6), 0.3)
            days = [arrival, apheresis, release, infusion]
            for k in range(last + 1, 4):
                days[k] = np.nan
            if route == "allogeneic" and state == "infused":
                days[1] = np.nan
            v2v = infusion - (arrival if route == "allogeneic" else apheresis) if state == "infused" else np.nan
            rows.append({"patient_id": pid, "route": route, "state": state, "reason": reason,
                         "arrival_day": days[0], "apheresis_day": days[1], "release_day": days[2],
                         "infusion_day": days[3], "vein_to_vein_days": v2v,
                         "referral_to_infusion_days": days[3] - days[0], "attempts": 1 + int(rng.integers(0, 2)),
                         "bridged": bool(rng.random() < 0.4), "stratum": f"s{pid % 3}"})
            truth.append({"last": last, "loss": label})
            pid += 1
    patients, truth = pd.DataFrame(rows), pd.DataFrame(truth)
    if referred_share is not None:
        referred = rng.random(len(patients)) < referred_share
        patients["referred"] = referred
        patients.loc[~referred, ["state", "reason"]] = ["not_referred", ""]
        patients.loc[~referred, ["apheresis_day", "release_day", "infusion_day", "vein_to_vein_days",
                                 "referral_to_infusion_days"]] = np.nan
        truth["last"] = np.where(referred, truth["last"] + 1, 0)     # stages shift by "eligible"
        truth.loc[~referred, "loss"] = "not referred"
    return patients, truth


def make_usage(horizon: int = 120, seed: int = 0) -> pd.DataFrame:
    """Daily usage: apheresis and slots finite for every route, manufacturing finite for central
    only (unlimited suites at the point of care), qc unlimited, inventory for allogeneic only."""
    rng = np.random.default_rng(seed)
    capacity = {"apheresis": {"central": 2, "point_of_care": 1, "allogeneic": 1},
                "slots": {"central": 8, "point_of_care": 4},
                "manufacturing": {"central": 6, "point_of_care": np.nan},
                "qc": {"central": np.nan, "point_of_care": np.nan},
                "inventory": {"allogeneic": np.nan}}
    rows = []
    for resource, per_route in capacity.items():
        for route, cap in per_route.items():
            top = cap if np.isfinite(cap) else 12
            for day in range(horizon + 1):
                rows.append({"day": day, "resource": resource, "route": route,
                             "in_use": int(rng.integers(0, top + 1)), "capacity": cap,
                             "queue": int(rng.poisson(3))})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)   # rows unsorted


def make_equity(scenarios: tuple[str, ...] = ("baseline",), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for scenario in scenarios:
        for stratum in ("urban", "suburban", "rural", "remote", "tribal land"):
            n = int(rng.integers(20, 400))
            treated = int(rng.binomial(n, rng.uniform(0.1, 0.7)))
            rows.append({"scenario": scenario, "stratum": stratum, "n_eligible": n,
                         "fraction_treated": treated / n,
                         "median_referral_to_infusion_days": rng.uniform(30, 90),
                         "deaths_while_waiting": int(rng.integers(0, 12)),
                         "mean_cost": rng.uniform(2e5, 6e5)})
    return pd.DataFrame(rows)


def make_costs(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    components = [c for c in COST_COMPONENTS if c not in ("ivig", "steroids")]       # some missing
    n = 90
    costs = pd.DataFrame({c: rng.gamma(2.0, 5000.0, n) for c in components})
    costs["product"] = 373_000.0
    costs.loc[rng.random(n) < 0.2, "icu"] = np.nan                                  # not incurred
    costs["arm"] = rng.choice(["car-A", "car-B", "SOC"], n)
    costs["route"] = rng.choice(["central", "point_of_care"], n)
    costs["patient_id"] = np.arange(n)
    return costs


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def _by_gid(fig: Figure) -> dict[str, object]:
    return {a.get_gid(): a for ax in fig.axes for a in [*ax.patches, *ax.lines] if a.get_gid()}


def _saves_png(fig: Figure, path) -> None:
    fig.savefig(path, dpi=DPI)
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 3000


@pytest.fixture(scope="module")
def chain() -> tuple[pd.DataFrame, pd.DataFrame]:
    return make_patients(0)


# ---------------------------------------------------------------- vein-to-vein

def test_vein_to_vein_medians_and_legend(chain, tmp_path):
    patients, _ = chain
    fig = vein_to_vein(patients)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert [text.split(":")[0] for text in legend] == list(ROUTES)
    gids = _by_gid(fig)
    for route, text in zip(ROUTES, legend):
        df = patients[patients["route"] == route]
        v2v = df.loc[df["state"] == "infused", "vein_to_vein_days"].to_numpy()
        if route == "satellite":
            assert f"median:{route}" not in gids and "none infused (0 of 2)" in text
            continue
        median = np.median(v2v)
        assert np.allclose(gids[f"median:{route}"].get_xdata(), median, rtol=0, atol=1e-12)
        assert list(gids[f"median:{route}"].get_ydata()) == [0.0, 0.5]
        assert text == f"{route}: median {median:.1f} d ({v2v.size} infused of {len(df)})"
        ecdf = next(ln for ln in ax.get_lines() if ln.get_label() == text)
        assert np.allclose(ecdf.get_xdata()[1:], np.sort(v2v)) and ecdf.get_ydata()[-1] == 1.0
    assert "days" in ax.get_xlabel() and ax.get_xlim()[0] == 0
    assert plt.get_fignums() == []
    _saves_png(fig, tmp_path / "v2v.png")


def test_vein_to_vein_ignores_losses_and_waiting(chain):
    patients, _ = chain
    noisy = patients.copy()
    noisy.loc[noisy["state"] != "infused", "vein_to_vein_days"] = 1e4    # must not enter a median
    assert np.allclose(_by_gid(vein_to_vein(noisy))["median:central"].get_xdata(),
                       np.median(patients.loc[(patients["route"] == "central") & (patients["state"] == "infused"),
                                              "vein_to_vein_days"]))


# ---------------------------------------------------------------- queues

def test_queues_over_time_panels_utilisation_and_queue(tmp_path):
    usage = make_usage()
    fig = queues_over_time(usage)
    resources = ["apheresis", "slots", "manufacturing", "qc", "inventory"]
    grid = fig.axes[:10]
    assert len(fig.axes) == 11                      # 5 resources x (utilisation, queue) + 1 twin (manufacturing)
    assert [ax.get_title() for ax in grid[::2]] == [f"{r}: utilisation" for r in resources]
    assert [ax.get_title() for ax in grid[1::2]] == [f"{r}: queue" for r in resources]
    shared = grid[0].get_shared_x_axes()
    assert all(shared.joined(grid[0], ax) for ax in grid)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"central", "point_of_care", "allogeneic"} <= set(legend)

    def expected(resource, route):
        return usage[(usage["resource"] == resource) & (usage["route"] == route)].sort_values("day")

    def line(ax, route):
        return next(ln for ln in ax.get_lines() if ln.get_label() == route)

    df = expected("apheresis", "central")
    ln = line(grid[0], "central")
    assert np.array_equal(ln.get_xdata(), df["day"].to_numpy())
    assert np.allclose(ln.get_ydata(), 100 * df["in_use"] / 2)
    assert "% of capacity" in grid[0].get_ylabel()
    assert np.allclose(line(grid[1], "central").get_ydata(), df["queue"])
    # manufacturing: central finite (percent, left axis), point_of_care unlimited (count, twin axis)
    twin = fig.axes[10]
    assert np.allclose(line(grid[4], "central").get_ydata(), 100 * expected("manufacturing", "central")["in_use"] / 6)
    pos = line(twin, "point_of_care")
    assert np.allclose(pos.get_ydata(), expected("manufacturing", "point_of_care")["in_use"])
    assert pos.get_linestyle() == ":" and "unlimited" in twin.get_ylabel()
    # qc: unlimited everywhere, counts on the panel's own axis
    assert np.allclose(line(grid[6], "central").get_ydata(), expected("qc", "central")["in_use"])
    assert "unlimited" in grid[6].get_ylabel()
    assert [ln.get_label() for ln in grid[8].get_lines()] == ["allogeneic"]
    assert "calendar day" in grid[-1].get_xlabel()
    _saves_png(fig, tmp_path / "queues.png")


def test_queues_over_time_ten_routes_one_resource():
    usage = pd.DataFrame([{"day": d, "resource": "apheresis", "route": f"r{i}", "in_use": i % 3,
                           "capacity": 3.0, "queue": d % 4} for i in range(10) for d in range(30)])
    fig = queues_over_time(usage)
    assert len(fig.axes) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"r{i}" for i in range(10)]
    colours = {ln.get_color() for ln in fig.axes[0].get_lines()}
    assert len(colours) == 10


def test_queues_over_time_no_queue_keeps_whole_patient_ticks():
    usage = make_usage(30).assign(queue=0)
    fig = queues_over_time(usage)
    queue_panels = fig.axes[1:10:2]
    assert all(ax.get_ylim() == pytest.approx((0, 1)) for ax in queue_panels)
    assert all(float(t).is_integer() for ax in queue_panels for t in ax.get_yticks())


# ---------------------------------------------------------------- patient flow

def _expected_flow(patients, truth, stages):
    counts, losses = {}, {}
    for route in pd.unique(patients["route"]):
        mine = (patients["route"] == route).to_numpy()
        for k, stage in enumerate(stages):
            counts[(route, stage)] = int((mine & (truth["last"] >= k).to_numpy()).sum())
            at = mine & (truth["last"] == k).to_numpy()
            for label, n in truth.loc[at, "loss"].value_counts().items():
                if label:
                    losses[(route, stage, label)] = int(n)
    return counts, losses


@pytest.mark.parametrize("referred_share", [None, 0.7])
def test_patient_flow_counts_and_losses(referred_share, tmp_path):
    patients, truth = make_patients(3, referred_share)
    stages = (("eligible",) if referred_share else ()) + STAGES
    fig = patient_flow(patients)
    assert len(fig.axes) == len(ROUTES)
    assert [ax.get_title() for ax in fig.axes] == [f"{r} (n={int((patients['route'] == r).sum())})" for r in ROUTES]
    counts, losses = _expected_flow(patients, truth, stages)
    gids = _by_gid(fig)
    for (route, stage), n in counts.items():
        assert gids[f"stage:{route}:{stage}"].get_height() == n, (route, stage)
    drawn = {tuple(g.split(":")[1:]): a for g, a in gids.items() if g.startswith("loss:")}
    assert {k: int(a.get_height()) for k, a in drawn.items()} == losses
    for (route, stage, _), bar in drawn.items():        # each loss stack fills the gap to the next stage
        nxt = stages[stages.index(stage) + 1]
        top = sum(a.get_height() for (r, s, _), a in drawn.items() if (r, s) == (route, stage))
        assert bar.get_y() >= counts[(route, nxt)]
        assert counts[(route, nxt)] + top == counts[(route, stage)]
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {"patients at the stage"} | {f"lost: {w.replace('_', ' ')}" for w in truth["loss"] if w}
    assert {"lost: progression", "lost: death", "lost: manufacturing failure", "lost: still waiting"} <= labels
    first_ticks = [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()]
    assert first_ticks[0] == ("eligible" if referred_share else "referred") and first_ticks[-1] == "infused"
    if referred_share:
        assert gids["loss:central:eligible:not referred"].get_height() == int(
            (~patients.loc[patients["route"] == "central", "referred"]).sum())
    _saves_png(fig, tmp_path / "flow.png")


def test_patient_flow_off_the_shelf_infused_without_apheresis_day(chain):
    patients, _ = chain
    allo = patients[patients["route"] == "allogeneic"]
    assert allo.loc[allo["state"] == "infused", "apheresis_day"].isna().all()
    gids = _by_gid(patient_flow(patients))
    assert gids["stage:allogeneic:apheresis"].get_height() >= int((allo["state"] == "infused").sum())
    assert gids["stage:allogeneic:infused"].get_height() == int((allo["state"] == "infused").sum())


# ---------------------------------------------------------------- access

def _ci_segments(ax) -> list[tuple[float, float, float]]:
    out = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            for coll in c.lines[2]:
                if isinstance(coll, LineCollection):
                    out += [(s[0][1], s[0][0], s[1][0]) for s in coll.get_segments()]
    return out


@pytest.mark.parametrize("scenarios", [("baseline",), ("baseline", "more slots", "satellite centres")])
def test_access_by_stratum_bars_and_intervals(scenarios, tmp_path):
    table = make_equity(scenarios)
    fig = access_by_stratum(table if len(scenarios) > 1 else table.drop(columns="scenario"))
    assert len(fig.axes) == 4                              # fraction treated + three optional columns
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(pd.unique(table["stratum"]))
    gids = _by_gid(fig)
    segments = sorted(_ci_segments(ax))
    assert len(segments) == len(table)
    expected_ci = []
    for row in table.itertuples():
        key = f"treated:{row.scenario if len(scenarios) > 1 else ''}:{row.stratum}"
        assert gids[key].get_width() == pytest.approx(row.fraction_treated, abs=1e-12)
        ci = binomtest(round(row.fraction_treated * row.n_eligible), row.n_eligible).proportion_ci(0.95, "exact")
        expected_ci.append((gids[key].get_y() + gids[key].get_height() / 2, ci.low, ci.high))
    assert np.allclose(segments, sorted(expected_ci), atol=1e-9)
    cost_bars = [p for p in fig.axes[3].patches]
    assert sorted(p.get_width() for p in cost_bars) == pytest.approx(sorted(table["mean_cost"] / 1000))
    assert "USD thousands" in fig.axes[3].get_xlabel() and "(patients)" in fig.axes[2].get_xlabel()
    if len(scenarios) > 1:
        assert [t.get_text() for t in fig.legends[0].get_texts()] == list(scenarios)
        colours = {s: {gids[f"treated:{s}:{st}"].get_facecolor() for st in table["stratum"]} for s in scenarios}
        assert all(len(c) == 1 for c in colours.values()) and len(set.union(*colours.values())) == len(scenarios)
    else:
        assert fig.legends == []
    _saves_png(fig, tmp_path / "access.png")


def test_access_by_stratum_minimal_columns():
    table = make_equity()[["stratum", "n_eligible", "fraction_treated"]]
    fig = access_by_stratum(table)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == len(table)


def test_access_by_stratum_equity_table_names():
    """The column names of carcell.logistics.access.equity_table: grouped by another column,
    ``n_infused`` as the treated count, ``deaths_waiting`` for deaths while waiting."""
    table = pd.DataFrame({"income": ["low", "high"], "n_eligible": [40, 60], "n_infused": [10, 33],
                          "fraction_treated": [0.25, 0.55], "deaths_waiting": [3.0, 1.0]})
    fig = access_by_stratum(table, by="income")
    assert len(fig.axes) == 2 and fig.axes[0].get_ylabel() == "income"
    assert fig.axes[1].get_xlabel() == "deaths while waiting (patients)"
    assert sorted(p.get_width() for p in fig.axes[1].patches) == [1.0, 3.0]
    ci = binomtest(10, 40).proportion_ci(0.95, "exact")
    assert np.allclose(sorted(_ci_segments(fig.axes[0]))[0][1:], (ci.low, ci.high))


# ---------------------------------------------------------------- cost

@pytest.mark.parametrize("by", [None, "route"])
def test_cost_breakdown_stacks_equal_component_means(by, tmp_path):
    costs = make_costs()
    fig = cost_breakdown(costs, by=by)
    group = by or "arm"
    ax = fig.axes[0]
    present = [c for c in COST_COMPONENTS if c in costs.columns]
    means = costs[present].fillna(0).groupby(costs[group]).mean() / 1000
    gids = _by_gid(fig)
    totals = {}
    for g, row in means.iterrows():
        bottom = 0.0
        for c in present:
            bar = gids[f"cost:{g}:{c}"]
            assert bar.get_height() == pytest.approx(row[c], rel=1e-12)
            assert bar.get_y() == pytest.approx(bottom, abs=1e-9)
            bottom += bar.get_height()
        totals[g] = bottom
        assert bottom == pytest.approx(costs.loc[costs[group] == g, present].fillna(0).sum(axis=1).mean() / 1000)
    assert not any(k.endswith(":ivig") or k.endswith(":steroids") for k in gids)
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{t:,.0f}" for t in totals.values())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [c.replace("_", " ") for c in present][::-1]
    ticks = [t.get_text().split("\n")[0] for t in ax.get_xticklabels()]
    assert ticks == list(pd.unique(costs[group]))
    assert "USD thousands" in ax.get_ylabel()
    _saves_png(fig, tmp_path / "cost.png")


# ---------------------------------------------------------------- empty inputs, errors, the set

@pytest.mark.parametrize("function, frame", [
    (vein_to_vein, make_patients(0)[0].iloc[:0]),
    (vein_to_vein, make_patients(0)[0].query("state != 'infused'")),
    (patient_flow, pd.DataFrame()),
    (queues_over_time, make_usage().iloc[:0]),
    (access_by_stratum, None),
    (cost_breakdown, pd.DataFrame()),
    (cost_breakdown, make_costs()[["arm", "patient_id"]]),
])
def test_empty_inputs_say_no_data(function, frame, tmp_path):
    fig = function(frame)
    assert isinstance(fig, Figure)
    assert any(t.startswith("no data") for t in _texts(fig))
    _saves_png(fig, tmp_path / "empty.png")


def test_missing_column_is_named():
    patients, _ = make_patients(0)
    with pytest.raises(TrialDataError, match="vein_to_vein_days"):
        vein_to_vein(patients.drop(columns="vein_to_vein_days"))
    with pytest.raises(TrialDataError, match="queue"):
        queues_over_time(make_usage().drop(columns="queue"))


def test_logistics_figures_only_those_with_data(chain, tmp_path):
    patients, _ = chain
    figures = logistics_figures(patients, make_usage(), make_costs(), make_equity())
    assert list(figures) == ["vein_to_vein", "patient_flow", "queues_over_time", "cost_breakdown",
                             "access_by_stratum"]
    for name, fig in figures.items():
        _saves_png(fig, tmp_path / f"{name}.png")
    waiting = patients[patients["state"] != "infused"]
    assert list(logistics_figures(waiting, make_usage().iloc[:0])) == ["patient_flow"]
    assert logistics_figures(None, None) == {}
    assert plt.get_fignums() == []


def test_logistics_figures_one_colour_per_route(chain):
    patients, _ = chain
    usage = make_usage()                  # shuffled rows: point_of_care appears first here
    assert usage["route"].iloc[0] != "central"
    figures = logistics_figures(patients, usage)
    v2v = {ln.get_label().split(":")[0]: ln.get_color() for ln in figures["vein_to_vein"].axes[0].get_lines()
           if not ln.get_label().startswith("_")}
    queues = {ln.get_label(): ln.get_color() for ax in figures["queues_over_time"].axes for ln in ax.get_lines()}
    assert set(queues) == {"central", "point_of_care", "allogeneic"}
    assert all(queues[r] == v2v[r] for r in queues)
    legend = [t.get_text() for t in figures["queues_over_time"].legends[0].get_texts()]
    assert legend[:3] == ["central", "point_of_care", "allogeneic"]
    flow = patient_flow(patients, routes=["satellite", "allogeneic"])
    assert [ax.get_title().split(" ")[0] for ax in flow.axes] == ["satellite", "allogeneic", "central",
                                                                  "point_of_care"]
