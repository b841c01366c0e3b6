"""The chain from referral to infusion as a discrete-event simulation (SimPy).

Each referred patient is a SimPy process that walks the path of their route's kind; one
function per kind reads as that path:

* :meth:`_Chain._autologous` (and point of care, the same path without shipping): referral and
  evaluation (a share is found ineligible) -> apheresis (a chair for one day; a failed collection is repeated) -> book a manufacturing slot
  in the first calendar month with one free -> ship the cells out -> manufacture (a suite) ->
  release testing (a QC lab); a failed attempt is re-made in a new slot up to ``max_attempts``
  -> ship the product back -> schedule the infusion (lymphodepletion) -> infused;
* :meth:`_Chain._off_the_shelf`: referral -> a dose from stock (batches made in advance; the
  patient waits only when no stocked dose suits them) -> ship -> schedule -> infused.

While a patient waits at any step they leave the chain, not infused, when their disease
progresses beyond eligibility (``arrival_day + ineligible_after_days``, reason "progression")
or they die (``arrival_day + death_after_days``, "death"), whichever comes first. A patient who
leaves gives up their place in a queue and any booked slot not yet started; a manufacturing run
already going is finished (the product is made and not given). Patients still on their way at
``horizon_days`` are "waiting", with the step they are at (their first step, "apheresis" or
"inventory", if referred after the horizon).

Randomness: every draw of a patient comes from ``SeedSequence([seed, patient_id, STEP])``, one
stream per kind of draw (the tags below), so a patient's durations depend neither on the other
patients nor on the row order; only queues couple patients. Batches of an off-the-shelf route
draw from ``SeedSequence([seed, route code, batch number, _BATCH])``. Calendar months are
``DAYS_PER_MONTH`` (30.4375) days long from day 0.
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from carcell.errors import ScenarioError
from carcell.logistics.routes import Capacity, Dist, Route
from carcell.units import DAYS_PER_MONTH

STATES = ("infused", "not_infused", "waiting")
NOT_INFUSED_REASONS = ("ineligible", "progression", "death", "manufacturing_failure", "no_product")
STEPS = ("apheresis", "slot", "shipping", "manufacturing", "qc", "bed", "scheduling", "inventory")
REQUIRED_COLUMNS = ("patient_id", "route", "arrival_day", "ineligible_after_days", "death_after_days")
COLLECTION_DAYS = 1.0          # a collection holds an apheresis chair for one day

# Stream tags: a patient's draws of one kind come from SeedSequence([seed, patient_id, tag]).
_REFERRAL = 1
_COLLECTION_FAILURE = 2
_RECOLLECTION = 3
_SHIPPING_OUT = 4
_MANUFACTURING = 5
_QC = 6
_MANUFACTURING_FAILURE = 7
_OUT_OF_SPEC = 8
_SHIPPING_BACK = 9
_SCHEDULING = 10
_STAY = 13                     # the index stay after infusion (holds a treatment bed)
_SCREEN = 14                   # found ineligible at evaluation
_BRIDGING = 11
_HLA = 12                      # with the batch number: [seed, patient_id, _HLA, batch]
_BATCH = 0xBA7C4               # batch draws: [seed, route code, batch number, _BATCH]

Process = Generator[simpy.Event, object, object]


@dataclass
class ChainResult:
    """What happened to every referred patient, and to the resources they shared.

    ``patients``: one row per referral (input columns first), see docs/logistics.md,
    plus ``wait_for_chair_days``, ``wait_for_suite_days``, ``wait_for_qc_days``,
    ``wait_for_shipping_days``, ``wait_for_bed_days`` (queue waits,
    summed over attempts) and ``wait_for_product_days`` (off-the-shelf: waiting for a dose).
    ``usage``: per whole calendar day, route and resource, the state at the start of the day:
    ``in_use`` (for ``inventory``: doses in stock; for ``slots``: starts booked in the current
    month), ``capacity`` (NaN if unlimited) and ``queue``. ``events``: ``patient_id``, ``day``,
    ``step``, ``detail``. ``batches`` (off-the-shelf routes): one row per batch ordered.
    """

    patients: pd.DataFrame
    usage: pd.DataFrame
    events: pd.DataFrame
    batches: pd.DataFrame


def simulate_chain(referrals: pd.DataFrame, routes: dict[str, Route], capacity: dict[str, Capacity],
                   horizon_days: float, seed: int) -> ChainResult:
    """Send every referral through its route's chain until ``horizon_days``.

    Parameters
    ----------
    referrals : DataFrame
        One row per referred patient: ``patient_id`` (int >= 0, unique), ``route`` (a key of
        ``routes``), ``arrival_day`` (calendar day of referral), ``ineligible_after_days`` and
        ``death_after_days`` (days after referral; ``inf`` = never). A ``bridged`` column, if
        present, is used as given; otherwise each patient is bridged with the route's
        ``bridging_fraction`` from their own stream. Other columns are carried through.
    routes : dict of str to Route
        The route of each ``route`` name used in ``referrals``.
    capacity : dict of str to Capacity
        Shared resources per route name; a name missing here has unlimited capacity.
    horizon_days : float
        Calendar day the simulation stops.
    seed : int
        Root of every patient's and batch's random streams.

    Returns
    -------
    ChainResult

    Raises
    ------
    ScenarioError (a ValueError)
        for a missing column, a duplicate or negative patient id, an unknown route, or a
        negative or missing day.

    Examples
    --------
    >>> from carcell.logistics.routes import load_routes
    >>> referrals = pd.DataFrame({"patient_id": [0, 1], "route": "axi-cel", "arrival_day": [0.0, 3.0],
    ...                           "ineligible_after_days": np.inf, "death_after_days": np.inf})
    >>> result = simulate_chain(referrals, load_routes(), {}, horizon_days=365, seed=1)
    >>> result.patients["state"].tolist()
    ['infused', 'infused']
    """
    _check_inputs(referrals, routes, capacity, horizon_days, seed)
    env = simpy.Environment()
    chain = _Chain(env, routes, capacity, int(seed))
    patients = chain.admit_all(referrals)
    env.process(chain.monitor(horizon_days))
    env.run(until=horizon_days)
    if float(horizon_days).is_integer():
        chain.snapshot(int(horizon_days))   # the state at the horizon itself
    return ChainResult(patients=_patient_table(referrals, patients),
                       usage=pd.DataFrame(chain.usage, columns=["day", "resource", "route", "in_use", "capacity",
                                                                "queue"]),
                       events=pd.DataFrame(chain.events, columns=["patient_id", "day", "step", "detail"]),
                       batches=chain.batch_table())


# -- one patient ------------------------------------------------------------------------------

class _Left(Exception):
    """The patient left the chain while waiting (progression or death)."""


class _Draws:
    """One patient's random draws: a stream per kind of draw, made when first needed."""

    def __init__(self, seed: int, patient_id: int):
        self.seed, self.patient_id = seed, patient_id
        self._streams: dict[int, np.random.Generator] = {}
        self._suits: dict[int, np.ndarray] = {}

    def _rng(self, tag: int) -> np.random.Generator:
        if tag not in self._streams:
            self._streams[tag] = np.random.default_rng(np.random.SeedSequence([self.seed, self.patient_id, tag]))
        return self._streams[tag]

    def duration(self, tag: int, dist: Dist) -> float:
        if dist.kind == "fixed" or dist.is_zero:
            return dist.params[0]
        return float(dist.sample(self._rng(tag)))

    def chance(self, tag: int, p: float) -> bool:
        if p <= 0.0:
            return False
        if p >= 1.0:
            return True
        return bool(self._rng(tag).random() < p)

    def suits(self, batch: int, doses: int, p: float) -> np.ndarray:
        """Which doses of ``batch`` suit this patient (HLA); fixed per patient and batch."""
        if batch not in self._suits:
            if p >= 1.0:
                self._suits[batch] = np.ones(doses, bool)
            else:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.patient_id, _HLA, batch]))
                self._suits[batch] = rng.random(doses) < p
        return self._suits[batch]


@dataclass(eq=False)
class _Patient:
    patient_id: int
    route_key: str
    route: Route
    arrival_day: float
    ineligible_after_days: float
    death_after_days: float
    bridged: bool
    draws: _Draws
    step: str
    leave_day: float = math.inf             # calendar day the patient can no longer be infused
    state: str = "waiting"
    reason: str = ""
    apheresis_day: float = math.nan
    manufacturing_start_day: float = math.nan
    release_day: float = math.nan
    infusion_day: float = math.nan
    ended_day: float = math.nan
    wait_for_slot_days: float = math.nan
    wait_for_chair_days: float = math.nan
    wait_for_suite_days: float = math.nan
    wait_for_qc_days: float = math.nan
    wait_for_shipping_days: float = math.nan
    wait_for_bed_days: float = math.nan
    wait_for_product_days: float = math.nan
    attempts: int = 0
    out_of_spec: bool = False

    @property
    def leave_reason(self) -> str:
        return "death" if self.death_after_days < self.ineligible_after_days else "progression"


# -- shared resources -------------------------------------------------------------------------

@dataclass(eq=False)
class _Booking:
    """A manufacturing start booked in calendar ``month``; ``ready`` fires when the month opens."""

    month: int
    ready: simpy.Event
    booked_day: float
    started: bool = False


class _SlotBook:
    """Manufacturing starts allowed per calendar month, booked first come first served.

    A booking takes the first month, from the current one on, with a free slot. A slot given
    up before its start goes to the earliest-booked patient waiting for a later month.
    """

    def __init__(self, env: simpy.Environment, per_month: int | None):
        self.env, self.per_month = env, per_month
        self.booked: Counter[int] = Counter()
        self.pending: list[_Booking] = []        # not yet started, in booking order

    def current_month(self) -> int:
        return int(self.env.now // DAYS_PER_MONTH)

    def book(self) -> _Booking:
        month = self.current_month()
        if self.per_month is not None:
            while self.booked[month] >= self.per_month:
                month += 1
        self.booked[month] += 1
        booking = _Booking(month, self.env.event(), self.env.now)
        self.pending.append(booking)
        self._arm(booking)
        return booking

    def start(self, booking: _Booking) -> None:
        booking.started = True
        self.pending.remove(booking)

    def cancel(self, booking: _Booking) -> None:
        self.pending.remove(booking)
        self.booked[booking.month] -= 1
        self._offer(booking.month)

    def waiting(self) -> int:
        """Bookings whose month has not opened yet."""
        return sum(1 for b in self.pending if not b.ready.triggered)

    def _arm(self, booking: _Booking) -> None:
        opens = booking.month * DAYS_PER_MONTH
        if opens <= self.env.now:
            if not booking.ready.triggered:
                booking.ready.succeed()
        else:
            self.env.process(self._open(booking, booking.month, opens))

    def _open(self, booking: _Booking, month: int, opens: float) -> Process:
        yield self.env.timeout(opens - self.env.now)
        if booking.month == month and not booking.ready.triggered:   # not moved meanwhile
            booking.ready.succeed()

    def _offer(self, month: int) -> None:
        while month >= self.current_month():
            later = next((b for b in self.pending if b.month > month), None)
            if later is None:
                return
            freed = later.month
            self.booked[freed] -= 1
            self.booked[month] += 1
            later.month = month
            self._arm(later)
            month = freed             # which frees a slot in the later month for the next one


@dataclass(eq=False)
class _Claim:
    """A patient asking the stock for a dose; ``granted`` fires with (batch, dose) or None."""

    patient: _Patient
    granted: simpy.Event
    batches_seen: set[int] = field(default_factory=set)


@dataclass(eq=False)
class _Batch:
    number: int
    ordered_day: float
    released_day: float = math.nan
    failed: bool = False
    doses: int = 0
    used: int = 0
    expired: int = 0


class _Inventory:
    """Doses of an off-the-shelf route in stock, and the batches that refill it.

    The stock starts with one batch released on day 0. Batches are ordered while the stock
    position (doses in stock and on order, less patients waiting) is at or below
    ``reorder_level``, and whenever patients wait with none on order. A batch takes
    ``batch_production`` plus ``qc_release`` days, fails release with ``manufacturing_failure``
    (then it is re-made) and its doses are discarded ``shelf_life_days`` after release.
    Patients take the oldest dose that suits them, first come first served.
    """

    def __init__(self, env: simpy.Environment, key: str, route: Route, seed: int):
        self.env, self.key, self.route, self.seed = env, key, route, seed
        self.code = zlib.crc32(key.encode())
        self.stock: list[tuple[int, int]] = []           # (batch, dose), oldest batch first
        self.waiting: list[_Claim] = []
        self.batches: list[_Batch] = []
        self.on_order = 0                                # batches in production
        self._release(self._new_batch())

    def claim(self, patient: _Patient) -> _Claim:
        claim = _Claim(patient, self.env.event())
        self.waiting.append(claim)
        self._serve()
        return claim

    def withdraw(self, claim: _Claim) -> None:
        """The patient left: give up the place in the queue, or put back a dose just granted."""
        if claim in self.waiting:
            self.waiting.remove(claim)
        elif claim.granted.triggered and claim.granted.value is not None:
            batch, dose = claim.granted.value
            if self.batches[batch].expired == 0:
                self.batches[batch].used -= 1
                self.stock.append((batch, dose))
                self.stock.sort()

    def _serve(self) -> None:
        for claim in list(self.waiting):
            dose = self._suitable(claim)
            if dose is not None:
                self.stock.remove(dose)
                self.batches[dose[0]].used += 1
            elif len(claim.batches_seen) < self.route.max_attempts:
                continue
            self.waiting.remove(claim)
            claim.granted.succeed(dose)          # None: no suitable dose in max_attempts batches
        self._reorder()

    def _suitable(self, claim: _Claim) -> tuple[int, int] | None:
        n, p = int(self.route.doses_per_batch), self.route.hla_match_probability
        for batch, dose in self.stock:
            claim.batches_seen.add(batch)
            if claim.patient.draws.suits(batch, n, p)[dose]:
                return batch, dose
        return None

    def _reorder(self) -> None:
        doses = int(self.route.doses_per_batch)
        while (len(self.stock) + self.on_order * doses - len(self.waiting) <= self.route.reorder_level
               or (self.waiting and not self.on_order)):      # waiting for a dose that suits them
            self.on_order += 1
            self.env.process(self._produce())

    def _new_batch(self) -> _Batch:
        batch = _Batch(len(self.batches), self.env.now)
        self.batches.append(batch)
        return batch

    def _produce(self) -> Process:
        route = self.route
        while True:
            batch = self._new_batch()
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.code, batch.number, _BATCH]))
            yield self.env.timeout(route.batch_production.sample(rng) + route.qc_release.sample(rng))
            if not rng.random() < route.manufacturing_failure:
                break
            batch.failed, batch.released_day = True, self.env.now
            if route.manufacturing_failure >= 1.0:
                return                           # every batch fails: none ever comes
        self.on_order -= 1
        self._release(batch)
        self._serve()

    def _release(self, batch: _Batch) -> None:
        batch.released_day, batch.doses = self.env.now, int(self.route.doses_per_batch)
        self.stock.extend((batch.number, i) for i in range(batch.doses))
        self.env.process(self._expire(batch))

    def _expire(self, batch: _Batch) -> Process:
        yield self.env.timeout(float(self.route.shelf_life_days))
        kept = [d for d in self.stock if d[0] != batch.number]
        batch.expired = len(self.stock) - len(kept)
        self.stock = kept
        self._reorder()


class _Supply:
    """The resources one route name's patients share."""

    def __init__(self, env: simpy.Environment, key: str, route: Route, capacity: Capacity, seed: int):
        self.key, self.route, self.capacity = key, route, capacity
        limit = (lambda n: math.inf if n is None else n)
        self.chairs = simpy.Resource(env, limit(capacity.apheresis_chairs))
        self.suites = simpy.Resource(env, limit(capacity.suites))
        self.labs = simpy.Resource(env, limit(capacity.qc_labs))
        self.lanes = simpy.Resource(env, limit(capacity.shipping_lanes))
        self.beds = simpy.Resource(env, limit(capacity.treatment_beds))
        self.slots = _SlotBook(env, capacity.slots_per_month)
        self.inventory = _Inventory(env, key, route, seed) if route.kind == "off_the_shelf" else None

    def snapshot(self) -> list[tuple[str, float, float, int]]:
        """(resource, in use, capacity or NaN, queue)."""
        cap = (lambda n: math.nan if n is None else float(n))
        c = self.capacity
        delivery = [("shipping", self.lanes.count, cap(c.shipping_lanes), len(self.lanes.queue)),
                    ("beds", self.beds.count, cap(c.treatment_beds), len(self.beds.queue))]
        if self.inventory is not None:
            return [("inventory", len(self.inventory.stock), math.nan, len(self.inventory.waiting)), *delivery]
        return [("apheresis", self.chairs.count, cap(c.apheresis_chairs), len(self.chairs.queue)),
                ("slots", self.slots.booked[self.slots.current_month()], cap(c.slots_per_month), self.slots.waiting()),
                ("manufacturing", self.suites.count, cap(c.suites), len(self.suites.queue)),
                ("qc", self.labs.count, cap(c.qc_labs), len(self.labs.queue)), *delivery]


# -- the chain --------------------------------------------------------------------------------

class _Chain:
    def __init__(self, env: simpy.Environment, routes: dict[str, Route], capacity: dict[str, Capacity], seed: int):
        self.env, self.routes, self.seed = env, routes, seed
        self.capacity = capacity
        self.supplies: dict[str, _Supply] = {}
        self.usage: list[tuple] = []
        self.events: list[tuple] = []

    # .. the paths ...............................................................................

    def _autologous(self, p: _Patient) -> Process:
        """Referral -> apheresis -> slot -> ship out -> manufacture -> QC (-> again) -> ship back
        -> schedule -> infuse."""
        route, draw, supply = p.route, p.draws, self.supplies[p.route_key]
        yield from self._delay(p, "apheresis", draw.duration(_REFERRAL, route.referral_to_apheresis))
        if draw.chance(_SCREEN, route.screen_failure):
            return self._end(p, "not_infused", "ineligible")
        yield from self._collect(p)
        for attempt in range(1, route.max_attempts + 1):
            p.attempts = attempt
            booking = self._book_slot(p)
            try:
                yield from self._wait(p, "slot", booking.ready)
                p.wait_for_slot_days += self.env.now - booking.booked_day
                if attempt == 1:       # a re-make starts from material already at the facility
                    yield from self._ship(p, draw.duration(_SHIPPING_OUT, route.shipping_out))
                run_days = draw.duration(_MANUFACTURING, route.manufacturing)
                waited, started = yield from self._use(p, "manufacturing", supply.suites, run_days,
                                                       on_start=lambda: supply.slots.start(booking))
            except _Left:
                if not booking.started:
                    supply.slots.cancel(booking)
                raise
            p.wait_for_suite_days = _add(p.wait_for_suite_days, waited)
            if attempt == 1:
                p.manufacturing_start_day = started
            self._log(p, "manufacturing_start", f"attempt {attempt}, slot month {booking.month}")
            yield from self._test(p)
            if not draw.chance(_MANUFACTURING_FAILURE, route.attempt_failure):
                break
            self._log(p, "manufacturing_failed", f"attempt {attempt}")
        else:
            return self._end(p, "not_infused", "manufacturing_failure")
        p.release_day = self.env.now
        p.out_of_spec = draw.chance(_OUT_OF_SPEC, route.out_of_spec)
        self._log(p, "released", "out of specification" if p.out_of_spec else "")
        yield from self._ship(p, draw.duration(_SHIPPING_BACK, route.shipping_back))
        yield from self._schedule(p)
        return self._end(p, "infused", "")

    def _point_of_care(self, p: _Patient) -> Process:
        """The autologous path at the treating centre: its shipping steps are zero and its
        capacity (chairs, devices, QC bench) is the centre's own."""
        return (yield from self._autologous(p))

    def _off_the_shelf(self, p: _Patient) -> Process:
        """Referral -> a dose from stock (waiting only if none suits) -> ship -> schedule -> infuse."""
        route, draw, stock = p.route, p.draws, self.supplies[p.route_key].inventory
        yield from self._delay(p, "inventory", draw.duration(_REFERRAL, route.referral_to_apheresis))
        if draw.chance(_SCREEN, route.screen_failure):
            return self._end(p, "not_infused", "ineligible")
        asked = self.env.now
        claim = stock.claim(p)
        try:
            yield from self._wait(p, "inventory", claim.granted)
        except _Left:
            stock.withdraw(claim)
            raise
        p.wait_for_product_days = self.env.now - asked
        if claim.granted.value is None:
            return self._end(p, "not_infused", "no_product")
        batch, _ = claim.granted.value
        p.release_day = self.env.now
        p.out_of_spec = draw.chance(_OUT_OF_SPEC, route.out_of_spec)
        self._log(p, "allocated", f"batch {batch}")
        yield from self._ship(p, draw.duration(_SHIPPING_BACK, route.shipping_back))
        yield from self._schedule(p)
        return self._end(p, "infused", "")

    # .. steps ...................................................................................

    def _collect(self, p: _Patient) -> Process:
        """Leukapheresis, repeated after ``recollection_delay`` when a collection fails."""
        chairs = self.supplies[p.route_key].chairs
        while True:
            waited, started = yield from self._use(p, "apheresis", chairs, COLLECTION_DAYS)
            p.wait_for_chair_days = _add(p.wait_for_chair_days, waited)
            p.apheresis_day = started
            if not p.draws.chance(_COLLECTION_FAILURE, p.route.collection_failure):
                self._log(p, "apheresis", "")
                return
            self._log(p, "collection_failed", "")
            yield from self._delay(p, "apheresis", p.draws.duration(_RECOLLECTION, p.route.recollection_delay))

    def _ship(self, p: _Patient, days: float) -> Process:
        """A shipment, on one of the route's shipping lanes (none needed for a zero-day step)."""
        if days <= 0:
            yield from self._delay(p, "shipping", 0.0)
            return
        waited, _ = yield from self._use(p, "shipping", self.supplies[p.route_key].lanes, days)
        p.wait_for_shipping_days = _add(p.wait_for_shipping_days, waited)

    def _schedule(self, p: _Patient) -> Process:
        """A treatment bed, then lymphodepletion and infusion; the bed stays taken for the index
        stay after infusion, and is given back at once by a patient who leaves before it."""
        beds = self.supplies[p.route_key].beds
        asked = self.env.now
        request = beds.request()
        try:
            yield from self._wait(p, "bed", request)
        except _Left:
            request.cancel()
            beds.release(request)
            raise
        p.wait_for_bed_days = self.env.now - asked
        try:
            yield from self._delay(p, "scheduling", p.draws.duration(_SCHEDULING, p.route.infusion_scheduling),
                                   final=True)
        except _Left:
            beds.release(request)
            raise
        stay = self.env.timeout(p.draws.duration(_STAY, p.route.index_stay))
        stay.callbacks.append(lambda _: beds.release(request))

    def _book_slot(self, p: _Patient) -> _Booking:
        booking = self.supplies[p.route_key].slots.book()
        p.wait_for_slot_days = _add(p.wait_for_slot_days, 0.0)
        self._log(p, "slot_booked", f"month {booking.month}")
        return booking

    def _test(self, p: _Patient) -> Process:
        """Release testing in a QC lab (skipped when the route has none)."""
        days = p.draws.duration(_QC, p.route.qc_release)
        if days > 0:
            waited, _ = yield from self._use(p, "qc", self.supplies[p.route_key].labs, days)
            p.wait_for_qc_days = _add(p.wait_for_qc_days, waited)

    # .. waiting .................................................................................

    def _wait(self, p: _Patient, step: str, event: simpy.Event, due: float | None = None) -> Process:
        """Wait for ``event`` at ``step``; the patient's time running out interrupts the wait.

        ``due`` is given on the last step, whose end is the infusion: a patient whose time runs
        out at the very moment of infusion is infused (they leave only if that comes before).
        """
        p.step = step
        if event.triggered and not isinstance(event, simpy.Timeout):   # granted on the spot
            if self.env.now >= p.leave_day:
                raise _Left
            return
        try:
            yield event
        except simpy.Interrupt:
            if due is not None and self.env.now >= due:
                return
            raise _Left from None

    def _delay(self, p: _Patient, step: str, days: float, final: bool = False) -> Process:
        p.step = step
        if days > 0:
            due = self.env.now + days
            yield from self._wait(p, step, self.env.timeout(days), due if final else None)
        elif self.env.now >= p.leave_day and not final:
            raise _Left

    def _use(self, p: _Patient, step: str, resource: simpy.Resource, days: float,
             on_start: Callable[[], None] | None = None) -> Process:
        """Queue for ``resource``, then hold it for ``days``; returns (days queued, start day).

        A patient who leaves while queued gives up the place; one who leaves during the run
        leaves it going (the collection or product is finished, then discarded).
        """
        queued = self.env.now
        request = resource.request()
        try:
            yield from self._wait(p, step, request)
        except _Left:
            request.cancel()
            resource.release(request)     # in case it was granted at the same instant
            raise
        started = self.env.now
        if on_start is not None:
            on_start()
        done = self.env.timeout(days)
        done.callbacks.append(lambda _: resource.release(request))    # whether or not the patient stays
        yield from self._wait(p, step, done)
        return started - queued, started

    # .. bookkeeping .............................................................................

    def _end(self, p: _Patient, state: str, reason: str) -> None:
        p.state, p.reason, p.ended_day = state, reason, self.env.now
        if state == "infused":
            p.infusion_day = self.env.now
        self._log(p, state, reason)

    def _log(self, p: _Patient, step: str, detail: str) -> None:
        self.events.append((p.patient_id, self.env.now, step, detail))

    def admit_all(self, referrals: pd.DataFrame) -> list[_Patient]:
        """Build every patient and start the arrivals; returns the patients in row order."""
        env = self.env
        for key in pd.unique(referrals["route"]):
            route = self.routes[key]
            self.supplies[key] = _Supply(env, key, route, self.capacity.get(key) or Capacity(), self.seed)
        patients = []
        given = referrals["bridged"].to_numpy(bool) if "bridged" in referrals.columns else None
        for i, row in enumerate(referrals[list(REQUIRED_COLUMNS)].itertuples(index=False)):
            route = self.routes[row.route]
            draws = _Draws(self.seed, int(row.patient_id))
            bridged = bool(given[i]) if given is not None else draws.chance(_BRIDGING, route.bridging_fraction)
            patients.append(_Patient(
                patient_id=int(row.patient_id), route_key=row.route, route=route,
                arrival_day=float(row.arrival_day), ineligible_after_days=float(row.ineligible_after_days),
                death_after_days=float(row.death_after_days), bridged=bridged, draws=draws,
                step="inventory" if route.kind == "off_the_shelf" else "apheresis"))
        order = sorted(patients, key=lambda p: (p.arrival_day, p.patient_id))
        env.process(self._arrivals(order))
        return patients

    def _arrivals(self, order: list[_Patient]) -> Process:
        paths = {"autologous": self._autologous, "point_of_care": self._point_of_care,
                 "off_the_shelf": self._off_the_shelf}
        for p in order:
            if p.arrival_day > self.env.now:
                yield self.env.timeout(p.arrival_day - self.env.now)
            self._log(p, "referral", p.route_key)
            process = self.env.process(self._patient(p, paths[p.route.kind]))
            within = min(p.ineligible_after_days, p.death_after_days)
            if math.isfinite(within):
                p.leave_day = self.env.now + within       # the very float SimPy schedules
                self.env.timeout(within).callbacks.append(lambda _, process=process: self._time_up(process))

    def _time_up(self, process: simpy.Process) -> None:
        """The patient can no longer be infused: interrupt whatever they are waiting for."""
        if process.is_alive:
            process.interrupt("time up")

    def _patient(self, p: _Patient, path: Callable[[_Patient], Process]) -> Process:
        try:
            yield from path(p)
        except _Left:
            self._log(p, "left", p.step)
            self._end(p, "not_infused", p.leave_reason)

    def monitor(self, horizon: float) -> Process:
        day = 0
        while day < horizon:
            if day > self.env.now:
                yield self.env.timeout(day - self.env.now)
            self.snapshot(day)
            day += 1

    def snapshot(self, day: int) -> None:
        for key, supply in self.supplies.items():
            for resource, in_use, cap, queue in supply.snapshot():
                self.usage.append((day, resource, key, in_use, cap, queue))

    def batch_table(self) -> pd.DataFrame:
        rows = [(key, b.number, b.ordered_day, b.released_day, b.failed, b.doses, b.used, b.expired)
                for key, s in self.supplies.items() if s.inventory is not None for b in s.inventory.batches]
        return pd.DataFrame(rows, columns=["route", "batch", "ordered_day", "released_day", "failed", "doses",
                                           "used", "expired"])


def _add(total: float, days: float) -> float:
    return days if math.isnan(total) else total + days


# -- inputs and outputs -------------------------------------------------------------------------

def _check_inputs(referrals: pd.DataFrame, routes: dict[str, Route], capacity: dict[str, Capacity],
                  horizon_days: float, seed: int) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in referrals.columns]
    if missing:
        raise ScenarioError(f"referrals lack column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}")
    ids = referrals["patient_id"]
    if not pd.api.types.is_integer_dtype(ids) or (len(ids) and ids.min() < 0):
        raise ScenarioError("referrals.patient_id must be whole numbers >= 0 (they seed each patient's draws)")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise ScenarioError(f"referrals.patient_id must be unique; repeated: {dup}")
    unknown = sorted(set(referrals["route"].astype(str)) - set(routes))
    if unknown:
        raise ScenarioError(f"referrals name route(s) {unknown} not given in routes; "
                            f"known: {', '.join(sorted(routes))}")
    for key, route in routes.items():
        if not isinstance(route, Route):
            raise ScenarioError(f"routes[{key!r}] is a {type(route).__name__}, not a Route (use load_routes)")
    for key, cap in capacity.items():
        if not isinstance(cap, Capacity):
            raise ScenarioError(f"capacity[{key!r}] is a {type(cap).__name__}, not a Capacity")
    arrival = referrals["arrival_day"].to_numpy(float)
    if not np.all(np.isfinite(arrival) & (arrival >= 0)):
        raise ScenarioError("referrals.arrival_day must be finite days >= 0 (calendar day of referral)")
    for col in ("ineligible_after_days", "death_after_days"):
        v = referrals[col].to_numpy(float)
        if np.isnan(v).any() or (v < 0).any():
            raise ScenarioError(f"referrals.{col} must be days >= 0 after referral, or inf for never; "
                                f"found NaN or negative values")
    if not (isinstance(horizon_days, (int, float)) and math.isfinite(horizon_days) and horizon_days > 0):
        raise ScenarioError(f"horizon_days = {horizon_days!r}; give a finite number of days > 0")
    if not (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and seed >= 0):
        raise ScenarioError(f"seed = {seed!r}; give a whole number >= 0")


def _patient_table(referrals: pd.DataFrame, patients: list[_Patient]) -> pd.DataFrame:
    out = referrals.reset_index(drop=True).copy()
    get = (lambda name, dtype=float: np.array([getattr(p, name) for p in patients], dtype=dtype))
    out["state"] = get("state", object)
    out["reason"] = [p.reason if p.state != "waiting" else p.step for p in patients]
    for name in ("apheresis_day", "manufacturing_start_day", "release_day", "infusion_day", "wait_for_slot_days"):
        out[name] = get(name)
    out["attempts"] = get("attempts", int)
    out["out_of_spec"] = get("out_of_spec", bool)
    out["bridged"] = get("bridged", bool)
    infusion, arrival = out["infusion_day"].to_numpy(float), out["arrival_day"].to_numpy(float)
    start = np.where(np.array([p.route.kind == "off_the_shelf" for p in patients], bool), arrival,
                     out["apheresis_day"].to_numpy(float))
    out["vein_to_vein_days"] = infusion - start
    out["referral_to_infusion_days"] = infusion - arrival
    out["ended_day"] = get("ended_day")
    for name in ("wait_for_chair_days", "wait_for_suite_days", "wait_for_qc_days", "wait_for_product_days",
                 "wait_for_shipping_days", "wait_for_bed_days"):
        out[name] = get(name)
    return out
