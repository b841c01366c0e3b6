"""The manufacturing chain (carcell.logistics.chain) and its routes (carcell.logistics.routes).

Real SimPy runs, no mocks. Expected values come from outside the code under test: queueing
theory (Erlang C), arithmetic on fixed durations, and the same patients run in another order.
Every test checks the chain's invariants through ``assert_valid``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from carcell.errors import ScenarioError
from carcell.knowledge import load_knowledge
from carcell.logistics.chain import NOT_INFUSED_REASONS, STATES, STEPS, ChainResult, simulate_chain
from carcell.logistics.routes import (
    ROUTE_KINDS,
    Capacity,
    Dist,
    Route,
    capacity_with,
    load_capacity,
    load_routes,
    route_with,
)
from carcell.units import DAYS_PER_MONTH

SEED = 20240611


def _routes() -> dict[str, Route]:
    """The bundled routes with nobody screened out at evaluation (the tests follow patients
    through the later steps; screening has its own test)."""
    return {name: route_with(r, {"screen_failure": 0.0}) for name, r in load_routes().items()}


def fixed(days: float) -> dict:
    return {"kind": "fixed", "value": days}


def bare_route(**steps) -> Route:
    """axi-cel with every step zero and nothing failing, then ``steps`` over it."""
    base = {"referral_to_apheresis": fixed(0), "collection_failure": 0.0, "shipping_out": fixed(0),
            "manufacturing": fixed(0), "qc_release": fixed(0), "manufacturing_failure": 0.0, "out_of_spec": 0.0,
            "shipping_back": fixed(0), "infusion_scheduling": fixed(0), "bridging_fraction": 0.0,
            "screen_failure": 0.0}
    return route_with(load_routes()["axi-cel"], {**base, **steps})


def referrals(route: str, arrival, ineligible=math.inf, death=math.inf, first_id: int = 0) -> pd.DataFrame:
    arrival = np.asarray(arrival, float)
    n = arrival.size
    return pd.DataFrame({"patient_id": np.arange(first_id, first_id + n, dtype=np.int64), "route": route,
                         "arrival_day": arrival,
                         "ineligible_after_days": np.broadcast_to(np.asarray(ineligible, float), n),
                         "death_after_days": np.broadcast_to(np.asarray(death, float), n)})


def assert_valid(result: ChainResult, refs: pd.DataFrame, horizon: float) -> None:
    """The chain's invariants: conservation, reasons, ordered days, sane usage."""
    df = result.patients
    assert df["patient_id"].tolist() == refs["patient_id"].tolist(), "one row per referral, in input order"
    for col in refs.columns:
        assert df[col].tolist() == refs[col].tolist(), f"{col} not carried through"
    assert set(df["state"]) <= set(STATES)
    counts = df["state"].value_counts()
    assert sum(counts.get(s, 0) for s in STATES) == len(refs), "every patient in exactly one state"

    infused = df[df["state"] == "infused"]
    gone = df[df["state"] == "not_infused"]
    waiting = df[df["state"] == "waiting"]
    assert (infused["reason"] == "").all()
    assert infused["infusion_day"].notna().all() and (infused["ended_day"] == infused["infusion_day"]).all()
    assert set(gone["reason"]) <= set(NOT_INFUSED_REASONS) and (gone["reason"] != "").all()
    assert gone["infusion_day"].isna().all() and gone["ended_day"].notna().all()
    assert set(waiting["reason"]) <= set(STEPS)
    assert waiting["ended_day"].isna().all() and waiting["infusion_day"].isna().all()
    assert (df["ended_day"].dropna() <= horizon).all()

    # days in the order of the path, wherever both are reached
    pairs = [("arrival_day", "apheresis_day"), ("apheresis_day", "manufacturing_start_day"),
             ("manufacturing_start_day", "release_day"), ("apheresis_day", "release_day"),
             ("arrival_day", "release_day"), ("release_day", "infusion_day"), ("arrival_day", "ended_day")]
    for early, late in pairs:
        both = df[early].notna() & df[late].notna()
        assert (df.loc[both, late] >= df.loc[both, early] - 1e-9).all(), f"{late} before {early}"
    auto = infused[infused["apheresis_day"].notna()]
    assert np.allclose(auto["vein_to_vein_days"], auto["infusion_day"] - auto["apheresis_day"])
    assert np.allclose(infused["referral_to_infusion_days"], infused["infusion_day"] - infused["arrival_day"])

    # who left for progression or death left exactly when their time ran out
    timed = gone[gone["reason"].isin(["progression", "death"])]
    out_at = timed["arrival_day"] + np.minimum(timed["ineligible_after_days"], timed["death_after_days"])
    assert np.allclose(timed["ended_day"], out_at)

    u = result.usage
    assert (u["queue"] >= 0).all() and (u["in_use"] >= 0).all()
    finite = u["capacity"].notna()
    assert (u.loc[finite, "in_use"] <= u.loc[finite, "capacity"]).all()
    assert set(u["day"]) == set(range(int(horizon) + 1))
    assert (np.diff(result.events["day"].to_numpy()) >= 0).all(), "events in time order"


# -- conservation -------------------------------------------------------------------------------

def test_every_patient_ends_in_one_state_on_every_route():
    """All default routes at default capacity, with patients who progress, die, fail and wait."""
    routes = _routes()
    rng = np.random.default_rng(3)
    frames = []
    for i, name in enumerate(routes):
        n = 80
        frames.append(referrals(name, rng.uniform(0, 150, n), ineligible=rng.exponential(50, n),
                                death=rng.exponential(200, n), first_id=i * 1000))
    refs = pd.concat(frames, ignore_index=True)
    refs["stratum"] = "rural"
    horizon = 180.0
    result = simulate_chain(refs, routes, load_capacity(), horizon, SEED)
    assert_valid(result, refs, horizon)
    df = result.patients
    assert (df["stratum"] == "rural").all()
    assert {"infused", "not_infused", "waiting"} <= set(df["state"])
    assert {"progression", "death"} <= set(df["reason"])
    by_route = df.groupby("route")["state"].value_counts().unstack(fill_value=0)
    assert (by_route.sum(axis=1) == 80).all()
    # off-the-shelf patients never see apheresis or a manufacturing run of their own
    shelf = df[df["route"].map(lambda r: routes[r].kind) == "off_the_shelf"]
    assert shelf["apheresis_day"].isna().all() and shelf["manufacturing_start_day"].isna().all()
    assert (shelf["attempts"] == 0).all()


def test_published_failure_share_is_the_share_left_without_a_product():
    """manufacturing_failure is what trials count: patients without a product after every
    attempt. With two attempts each fails with its square root, and about that share of
    patients is re-made."""
    route = bare_route(manufacturing=fixed(5), manufacturing_failure=0.09, max_attempts=2)
    n = 20_000
    refs = referrals("r", np.arange(n) * 0.01)
    df = simulate_chain(refs, {"r": route}, {}, 230, SEED).patients   # the last arrives on day 200
    assert (df["state"] != "waiting").all()
    failed = (df["reason"] == "manufacturing_failure").mean()
    se = math.sqrt(0.09 * 0.91 / n)
    assert abs(failed - 0.09) < 4 * se, failed
    remade = (df["attempts"] == 2).mean()
    assert abs(remade - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n), remade    # sqrt(0.09) = 0.3


def test_failed_attempts_are_remade_then_give_up():
    """With every attempt failing, each patient uses max_attempts slots and is not infused."""
    route = bare_route(manufacturing=fixed(5), manufacturing_failure=1.0, max_attempts=3)
    refs = referrals("r", np.arange(20) * 2.0)
    result = simulate_chain(refs, {"r": route}, {}, 200, SEED)
    assert_valid(result, refs, 200)
    df = result.patients
    assert (df["state"] == "not_infused").all() and (df["reason"] == "manufacturing_failure").all()
    assert (df["attempts"] == 3).all()
    assert np.allclose(df["ended_day"] - df["arrival_day"], 1 + 3 * 5)   # a day's collection, three runs
    assert (result.events["step"] == "slot_booked").sum() == 3 * 20


# -- queueing theory ----------------------------------------------------------------------------

def erlang_c_wait(lam: float, mu: float, c: int) -> tuple[float, float]:
    """M/M/c: probability of waiting (Erlang C) and mean wait in queue.

    a = lam / mu, rho = a / c;  P_wait = [a^c / c! / (1 - rho)] / [sum_{k<c} a^k / k! + a^c / c! / (1 - rho)];
    Wq = P_wait / (c mu - lam).
    """
    a = lam / mu
    rho = a / c
    tail = a ** c / math.factorial(c) / (1 - rho)
    p_wait = tail / (sum(a ** k / math.factorial(k) for k in range(c)) + tail)
    return p_wait, p_wait / (c * mu - lam)


def fcfs_starts(arrival: np.ndarray, service: np.ndarray, c: int) -> np.ndarray:
    """Start times in a first-come-first-served queue with ``c`` identical servers (the
    Kiefer-Wolfowitz recursion): each customer, in order of arrival, takes the server that
    frees first, or waits for it."""
    free = np.zeros(c)
    starts = np.empty(arrival.size)
    for i in np.argsort(arrival, kind="stable"):
        k = free.argmin()
        starts[i] = max(arrival[i], free[k])
        free[k] = starts[i] + service[i]
    return starts


def test_suite_wait_matches_erlang_c():
    """Poisson referrals (rate 1/day) to 3 suites with exponential runs (mean 2.25 d), rho = 0.75.
    Every other step is zero except the one-day collection, which delays every patient by the
    same day and so keeps the arrivals at the suites Poisson.

    Two references: (1) exactly, the start of every run as an independent FCFS recursion gives it
    from the same arrivals and run lengths; (2) statistically, Erlang C. Over 20,000 patients the
    mean wait varies by about 7.5% from run to run at this load (waits are autocorrelated;
    measured over 40 replications of the recursion), so the mean wait is held to 15% relative
    (2 standard errors); the share of patients who wait varies by about 2.6%, held to 7.5%
    (3 standard errors).
    """
    lam, mean_run, c, n = 1.0, 2.25, 3, 20_000
    route = bare_route(manufacturing={"kind": "exponential", "mean": mean_run})
    arrival = np.cumsum(np.random.default_rng(11).exponential(1 / lam, n))
    refs = referrals("mmc", arrival)
    horizon = float(arrival[-1] + 200)
    result = simulate_chain(refs, {"mmc": route}, {"mmc": Capacity(suites=c)}, horizon, SEED)
    df = result.patients
    assert (df["state"] == "infused").all()
    at_suite = df["apheresis_day"].to_numpy() + 1.0
    run = (df["release_day"] - df["manufacturing_start_day"]).to_numpy()
    assert run.mean() == pytest.approx(mean_run, rel=0.03)
    assert np.allclose(df["manufacturing_start_day"], fcfs_starts(at_suite, run, c), rtol=0, atol=1e-9)

    p_wait, wq = erlang_c_wait(lam, 1 / mean_run, c)
    waits = df["wait_for_suite_days"]
    assert waits.mean() == pytest.approx(wq, rel=0.15)
    assert (waits > 0).mean() == pytest.approx(p_wait, rel=0.075)
    assert result.usage.query("resource == 'manufacturing'")["in_use"].max() == c


# -- routes and capacity ------------------------------------------------------------------------

def test_off_the_shelf_has_no_manufacturing_wait():
    """With stock ample (one 100-dose batch for 40 patients), CB-CAR-NK patients are infused
    within days of referral; axi-cel patients wait for apheresis and a manufacturing run."""
    routes = _routes()
    routes["axi-cel"] = route_with(routes["axi-cel"], {"manufacturing_failure": 0.0})   # all reach infusion
    arrival = np.arange(40) * 3.0
    refs = pd.concat([referrals("CB-CAR-NK", arrival), referrals("axi-cel", arrival, first_id=100)],
                     ignore_index=True)
    result = simulate_chain(refs, routes, {}, 400, SEED)
    assert_valid(result, refs, 400)
    df = result.patients
    assert (df["state"] == "infused").all()
    nk, auto = df[df["route"] == "CB-CAR-NK"], df[df["route"] == "axi-cel"]
    assert (nk["wait_for_product_days"] == 0).all()
    assert nk["manufacturing_start_day"].isna().all() and nk["wait_for_suite_days"].isna().all()
    assert result.batches.query("batch == 0")["used"].item() == 40, "the initial batch served everyone"
    assert nk["referral_to_infusion_days"].median() < 0.5 * auto["referral_to_infusion_days"].median()


def test_off_the_shelf_patients_wait_when_stock_runs_out():
    """A 5-dose batch for 20 patients arriving at once: the rest wait for new batches."""
    route = route_with(_routes()["CB-CAR-NK"], {"doses_per_batch": 5, "reorder_level": 0,
                                                     "batch_production": fixed(10), "qc_release": fixed(5),
                                                     "manufacturing_failure": 0.0, "referral_to_apheresis": fixed(0)})
    refs = referrals("nk", np.zeros(20))
    result = simulate_chain(refs, {"nk": route}, {}, 300, SEED)
    assert_valid(result, refs, 300)
    waits = np.sort(result.patients["wait_for_product_days"].to_numpy())
    # batch 0 on day 0 serves 5; every further batch takes 15 days and serves 5 (orders overlap:
    # the stock position asks for enough batches to cover everyone waiting)
    assert (waits[:5] == 0).all() and (waits[5:] == 15).all()
    assert result.batches["doses"].sum() >= 20


@pytest.mark.parametrize("per_month,binding", [(15, True), (2, False)])
def test_doubling_slots_shortens_waits_only_when_capacity_binds(per_month, binding):
    """10 slots a month against 15 referrals a month: a backlog builds and 20 slots remove it.
    Against 2 referrals a month, 10 slots never bind and doubling them changes nothing."""
    route = bare_route(referral_to_apheresis=fixed(3), manufacturing=fixed(10), qc_release=fixed(5),
                       infusion_scheduling=fixed(5))
    n = 12 * per_month
    arrival = np.sort(np.random.default_rng(5).uniform(0, 12 * DAYS_PER_MONTH, n))
    refs = referrals("r", arrival)
    horizon = 30 * DAYS_PER_MONTH
    runs = {slots: simulate_chain(refs, {"r": route}, {"r": Capacity(slots_per_month=slots)}, horizon, SEED)
            for slots in (10, 20)}
    for result in runs.values():
        assert_valid(result, refs, horizon)
        assert (result.patients["state"] == "infused").all()
    wait10 = runs[10].patients["wait_for_slot_days"].mean()
    wait20 = runs[20].patients["wait_for_slot_days"].mean()
    if binding:
        assert wait10 > 30 and wait20 < 0.25 * wait10
        slots = runs[10].usage.query("resource == 'slots'")
        assert slots["in_use"].max() == 10 and slots["queue"].max() > 10
    else:
        assert wait10 == wait20 < 1.0
        pd.testing.assert_frame_equal(runs[10].patients, runs[20].patients)


def test_a_slot_given_up_goes_to_the_next_patient():
    """One slot a month, five patients on day 0; the second leaves on day 10 while waiting for
    month 1, so the third starts in month 1 instead of month 2, and so on."""
    route = bare_route(manufacturing=fixed(5))
    refs = referrals("r", np.zeros(5), ineligible=[math.inf, 10, math.inf, math.inf, math.inf])
    result = simulate_chain(refs, {"r": route}, {"r": Capacity(slots_per_month=1)}, 200, SEED)
    assert_valid(result, refs, 200)
    df = result.patients.set_index("patient_id")
    assert df.loc[1, "state"] == "not_infused" and df.loc[1, "reason"] == "progression"
    assert df.loc[1, "ended_day"] == 10
    starts = df.loc[[0, 2, 3, 4], "manufacturing_start_day"].to_numpy()
    assert np.allclose(starts, [1.0, DAYS_PER_MONTH, 2 * DAYS_PER_MONTH, 3 * DAYS_PER_MONTH])


# -- randomness -----------------------------------------------------------------------------------

def _unlimited_referrals() -> pd.DataFrame:
    rng = np.random.default_rng(8)
    n = 120
    refs = pd.concat([referrals("axi-cel", rng.uniform(0, 200, n), ineligible=rng.exponential(60, n)),
                      referrals("tisa-cel", rng.uniform(0, 200, n), death=rng.exponential(90, n), first_id=500),
                      referrals("point_of_care", rng.uniform(0, 200, n), first_id=900)], ignore_index=True)
    refs["site"] = np.arange(len(refs)) % 7
    return refs


def _by_id(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("patient_id").reset_index(drop=True)


def test_results_do_not_depend_on_row_order_or_on_other_patients():
    """At unlimited capacity patients do not interact, so each one's row is the same whether
    the rows are shuffled or only a subset is simulated."""
    routes, refs, horizon = _routes(), _unlimited_referrals(), 400.0
    full = simulate_chain(refs, routes, {}, horizon, SEED)
    assert_valid(full, refs, horizon)
    assert {"infused", "not_infused"} <= set(full.patients["state"])
    shuffled_refs = refs.sample(frac=1.0, random_state=4).reset_index(drop=True)
    shuffled = simulate_chain(shuffled_refs, routes, {}, horizon, SEED)
    assert_valid(shuffled, shuffled_refs, horizon)
    pd.testing.assert_frame_equal(_by_id(full.patients), _by_id(shuffled.patients))
    subset_refs = refs.iloc[::3].reset_index(drop=True)
    subset = simulate_chain(subset_refs, routes, {}, horizon, SEED)
    pd.testing.assert_frame_equal(_by_id(subset.patients),
                                  _by_id(full.patients[full.patients["patient_id"].isin(subset_refs["patient_id"])]))


def test_same_seed_same_frames_other_seed_other_draws():
    routes, refs, horizon = _routes(), _unlimited_referrals(), 400.0
    capacity = {"axi-cel": Capacity(slots_per_month=8), "point_of_care": Capacity(suites=1)}
    a = simulate_chain(refs, routes, capacity, horizon, SEED)
    b = simulate_chain(refs, routes, capacity, horizon, SEED)
    for name in ("patients", "usage", "events", "batches"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    c = simulate_chain(refs, routes, capacity, horizon, SEED + 1)
    assert not np.allclose(a.patients["vein_to_vein_days"].fillna(-1), c.patients["vein_to_vein_days"].fillna(-1))


def test_bridged_column_given_is_kept_and_drawn_share_follows_the_route():
    refs = referrals("axi-cel", np.arange(2000) * 0.1)
    result = simulate_chain(refs, _routes(), {}, 10.0, SEED)
    assert_valid(result, refs, 10.0)
    share = result.patients["bridged"].mean()
    p = load_routes()["axi-cel"].bridging_fraction
    assert share == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 2000))
    refs["bridged"] = np.arange(2000) % 2 == 0
    again = simulate_chain(refs, _routes(), {}, 10.0, SEED)
    assert (again.patients["bridged"] == refs["bridged"]).all()


# -- dropping out ---------------------------------------------------------------------------------

def test_patients_whose_time_runs_out_before_infusion_are_not_infused():
    """Fixed steps: referral 3 + collection 1 + shipping 1 + manufacturing 10 + QC 5 + return 1
    + scheduling 5 = 26 days from referral to infusion."""
    route = bare_route(referral_to_apheresis=fixed(3), shipping_out=fixed(1), manufacturing=fixed(10),
                       qc_release=fixed(5), shipping_back=fixed(1), infusion_scheduling=fixed(5))
    ineligible = [19.5, 25.9, 26, 40, math.inf, 30, math.inf, 2]   # 26: at the moment of infusion
    death = [math.inf, math.inf, math.inf, math.inf, math.inf, 12, 24, 5]
    refs = referrals("r", np.arange(8) * 0.5, ineligible=ineligible, death=death)
    result = simulate_chain(refs, {"r": route}, {}, 100, SEED)
    assert_valid(result, refs, 100)
    df = result.patients.set_index("patient_id")
    assert df["state"].tolist() == ["not_infused", "not_infused", "infused", "infused", "infused",
                                    "not_infused", "not_infused", "not_infused"]
    assert df["reason"].tolist() == ["progression", "progression", "", "", "", "death", "death", "progression"]
    assert np.allclose(df.loc[[2, 3, 4], "referral_to_infusion_days"], 26)
    assert np.allclose(df.loc[[2, 3, 4], "vein_to_vein_days"], 23)
    # where they were when they left: QC (day 19.5), scheduling (25.9 and 24), manufacturing (12),
    # referral (2)
    left = result.events.query("step == 'left'").set_index("patient_id")["detail"]
    assert left.to_dict() == {0: "qc", 1: "scheduling", 5: "manufacturing", 6: "scheduling", 7: "apheresis"}


def test_infinite_times_mean_nobody_drops_out():
    routes = _routes()
    rng = np.random.default_rng(2)
    refs = pd.concat([referrals(name, rng.uniform(0, 100, 30), first_id=100 * i) for i, name in enumerate(routes)],
                     ignore_index=True)
    result = simulate_chain(refs, routes, load_capacity(), 500, SEED)
    assert_valid(result, refs, 500)
    assert not result.patients["reason"].isin(["progression", "death"]).any()
    refs["death_after_days"] = 1e4           # death far beyond the horizon, progression never
    later = simulate_chain(refs, routes, load_capacity(), 500, SEED)
    assert not later.patients["reason"].isin(["progression", "death"]).any()
    assert (later.patients["state"] == "waiting").sum() == (result.patients["state"] == "waiting").sum()


def test_waiting_at_the_horizon_reports_the_step():
    route = bare_route(manufacturing=fixed(10), qc_release=fixed(5))
    refs = referrals("r", [0.0, 5.0, 12.0, 30.0, 49.5])
    result = simulate_chain(refs, {"r": route}, {}, 20.0, SEED)
    assert_valid(result, refs, 20.0)
    # patient 0: collection day 0, run days 1-11, QC 11-16 -> infused on day 16
    assert result.patients["state"].tolist() == ["infused", "waiting", "waiting", "waiting", "waiting"]
    assert result.patients["reason"].tolist()[1:] == ["qc", "manufacturing", "apheresis", "apheresis"]


def test_bad_referrals_are_rejected_with_the_fix():
    routes = _routes()
    refs = referrals("axi-cel", [0.0, 1.0])
    with pytest.raises(ScenarioError, match="lack column.*death_after_days"):
        simulate_chain(refs.drop(columns="death_after_days"), routes, {}, 10, SEED)
    with pytest.raises(ScenarioError, match="route.*'axi_cel'.*known"):
        simulate_chain(refs.assign(route="axi_cel"), routes, {}, 10, SEED)
    with pytest.raises(ScenarioError, match="unique"):
        simulate_chain(refs.assign(patient_id=np.int64(3)), routes, {}, 10, SEED)
    with pytest.raises(ScenarioError, match="ineligible_after_days"):
        simulate_chain(refs.assign(ineligible_after_days=np.nan), routes, {}, 10, SEED)


# -- the knowledge file ---------------------------------------------------------------------------

def test_every_route_in_the_knowledge_file_loads():
    routes = _routes()
    names = load_knowledge().names("manufacturing.routes")
    assert sorted(routes) == sorted(names)
    assert {"axi-cel", "tisa-cel", "liso-cel", "ide-cel", "cilta-cel", "point_of_care", "CB-CAR-NK",
            "allo-CAR-T", "NK-92"} <= set(routes)
    assert {r.kind for r in routes.values()} == set(ROUTE_KINDS)
    for name, r in routes.items():
        made = r.batch_production if r.kind == "off_the_shelf" else r.manufacturing
        assert made.median > 0 and r.qc_release.median > 0, name
        assert r.referral_to_apheresis.median > 0 and r.infusion_scheduling.median > 0, name
    assert routes["point_of_care"].shipping_out.is_zero and routes["point_of_care"].shipping_back.is_zero
    assert not routes["axi-cel"].shipping_out.is_zero
    assert routes["CB-CAR-NK"].doses_per_batch == 100 and routes["CB-CAR-NK"].hla_match_probability == 1.0
    assert load_capacity()["point_of_care"].suites >= 1 and load_capacity()["axi-cel"] == Capacity()
    assert routes["point_of_care"].capacity == load_capacity()["point_of_care"]


def test_trials_name_known_routes_and_targets():
    k = load_knowledge()
    routes = _routes()
    intervals = {"apheresis_to_infusion", "enrolment_to_infusion", "apheresis_to_release", "apheresis_to_delivery"}
    trials = k.names("manufacturing.trials")
    assert {"ZUMA-1", "JULIET", "ELIANA", "KarMMa"} <= set(trials)
    for t in trials:
        node = k.node(f"manufacturing.trials.{t}")
        assert node["route"] in routes, t
        assert k.value(f"manufacturing.trials.{t}.enrolled") > 0
        assert 0 <= k.value(f"manufacturing.trials.{t}.bridging_fraction") <= 1
        assert node["targets"], t
        for target in node["targets"].values():
            if target["interval"] == "enrolled_infused":   # a count of the enrolled patients
                assert 0 < target["value"] <= k.value(f"manufacturing.trials.{t}.enrolled"), t
                continue
            assert target["interval"] in intervals and target["unit"] == "day" and target["value"] > 0


def test_route_with_reads_every_form_and_rejects_what_it_must():
    axi = load_routes()["axi-cel"]
    r = route_with(axi, {"manufacturing": 10})
    assert r.manufacturing == Dist.lognormal(10, axi.manufacturing.params[1])
    assert route_with(axi, {"manufacturing": {"median": 9, "log_sd": 0.5}}).manufacturing == Dist.lognormal(9, 0.5)
    assert route_with(axi, {"qc_release": {"kind": "exponential", "mean": 4}}).qc_release.mean == 4
    assert route_with(axi, {"shipping_out": {"kind": "fixed", "value": 0}}).shipping_out.is_zero
    assert route_with(axi, {"max_attempts": 3}).max_attempts == 3
    assert route_with(axi, {}) is axi
    with pytest.raises(ScenarioError, match="'manufacturing_time'.*did you mean 'manufacturing'.*Known:"):
        route_with(axi, {"manufacturing_time": 10})
    with pytest.raises(ScenarioError, match=r"manufacturing_failure = 1.5 .*\[0, 1\]"):
        route_with(axi, {"manufacturing_failure": 1.5})
    with pytest.raises(ScenarioError, match="manufacturing.*exponential.*mean"):
        route_with(axi, {"manufacturing": {"kind": "exponential", "median": 3}})
    with pytest.raises(ScenarioError, match="max_attempts.*whole number"):
        route_with(axi, {"max_attempts": 0})
    with pytest.raises(ScenarioError, match="capacity has no 'slots'.*slots_per_month"):
        capacity_with(Capacity(), {"slots": 3})
    with pytest.raises(ScenarioError, match="suites = 0"):
        capacity_with(Capacity(), {"suites": 0})
    assert capacity_with(Capacity(suites=2), {"suites": None, "slots_per_month": 4}) == Capacity(slots_per_month=4)


def test_dist_samples_match_their_summaries():
    rng = np.random.default_rng(0)
    for d in (Dist.lognormal(14, 0.3), Dist.exponential(5), Dist.gamma(4, 2.5), Dist.fixed(3)):
        x = d.sample(rng, 40_000)
        assert np.median(x) == pytest.approx(d.median, rel=0.03), d
        assert x.mean() == pytest.approx(d.mean, rel=0.03), d
    assert isinstance(Dist.lognormal(14, 0.3).sample(rng), float)
    with pytest.raises(ScenarioError, match="exponential mean"):
        Dist.exponential(0)


def test_treatment_beds_space_infusions_by_the_stay():
    """One bed, a 10-day stay and a 2-day schedule: each infusion waits for the previous
    patient's bed, so infusions come 12 days apart although everyone is ready at once."""
    route = bare_route(infusion_scheduling=fixed(2), index_stay=fixed(10))
    refs = referrals("r", np.zeros(6))
    result = simulate_chain(refs, {"r": route}, {"r": Capacity(treatment_beds=1)}, 500, SEED)
    assert_valid(result, refs, 500)
    days = np.sort(result.patients["infusion_day"].to_numpy())
    assert np.allclose(np.diff(days), 12.0), days
    assert result.usage.query("resource == 'beds'")["in_use"].max() == 1
    # unlimited beds: everyone infused on the same day
    free = simulate_chain(refs, {"r": route}, {}, 500, SEED).patients
    assert np.ptp(free["infusion_day"]) == 0


def test_shipping_lanes_queue_shipments():
    """One lane and a 3-day shipment out: manufacturing starts come 3 days apart."""
    route = bare_route(shipping_out=fixed(3))
    refs = referrals("r", np.zeros(5))
    result = simulate_chain(refs, {"r": route}, {"r": Capacity(shipping_lanes=1)}, 500, SEED)
    assert_valid(result, refs, 500)
    starts = np.sort(result.patients["manufacturing_start_day"].to_numpy())
    assert np.allclose(np.diff(starts), 3.0), starts
    assert np.allclose(np.sort(result.patients["wait_for_shipping_days"]), [0, 3, 6, 9, 12])


def test_a_share_of_referrals_is_found_ineligible_at_evaluation():
    """screen_failure: that share leaves as "ineligible" when the referral step ends, before
    any apheresis (autologous) or dose (off the shelf)."""
    n = 5_000
    for route in (bare_route(referral_to_apheresis=fixed(5), screen_failure=0.2),
                  route_with(_routes()["CB-CAR-NK"], {"screen_failure": 0.2, "referral_to_apheresis": fixed(5)})):
        # the evaluation ends on day 5-10; the others are still on their way at the horizon
        df = simulate_chain(referrals("r", np.arange(n) * 0.001), {"r": route}, {}, 12, SEED).patients
        out = df[df["reason"] == "ineligible"]
        assert abs(len(out) / n - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n), len(out) / n
        assert (out["state"] == "not_infused").all() and out["apheresis_day"].isna().all()
        assert np.allclose(out["ended_day"] - out["arrival_day"], 5.0)
