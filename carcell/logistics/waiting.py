"""The disease while a patient waits for the product: growth, bridging, and who drops out.

Between referral and infusion the tumour follows the CAR model's own logistic law with no CAR
cells present, ``dB/dt = r B (1 - B/K)``, using each patient's compiled ``tumour_growth_rate``
(r) and ``tumour_capacity`` (K). Its solution from ``B1`` at time ``t1`` is

    B(t) = K / (1 + (K / B1 - 1) exp(-r (t - t1)))

and the time to grow from ``B1`` to ``B2 < K`` is ``ln(B2 (K - B1) / (B1 (K - B2))) / r``.

Bridging (knowledge/data/waiting.yaml): a bridged patient who responds has the burden cut to a
fixed fraction when bridging starts; a non-responder keeps growing. A patient drops out when the
burden passes ``progression_fold`` times the burden at referral ("progression"), or dies of the
disease when it has used up ``lethal_fraction_of_capacity`` of its headroom below K, whichever
comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from carcell.knowledge import Knowledge

_BRIDGING_ENTROPY = 0xB41D   # the bridging stream, apart from every other draw of the patient


@dataclass(frozen=True)
class WaitingDisease:
    """Each patient's tumour between referral (t = 0) and infusion, in days."""

    burden: np.ndarray          # cells at referral
    growth: np.ndarray          # r, 1/day
    capacity: np.ndarray        # K, cells
    bridged: np.ndarray         # bool
    responds: np.ndarray        # bool: bridged and responding
    bridging_day: float         # days after referral when bridging acts
    response_fraction: float    # burden kept by a responder
    fold: float                 # progression beyond eligibility: burden / referral burden
    lethal: float               # death: burden / capacity

    @classmethod
    def draw(cls, k: Knowledge, disease: str, burden: np.ndarray, growth: np.ndarray, capacity: np.ndarray,
             bridging_fraction: float, ids: np.ndarray, seed: int, fold: float | None = None) -> WaitingDisease:
        """Draw who is bridged and who responds from each patient's own stream."""
        u = np.array([np.random.default_rng(np.random.SeedSequence([seed, _BRIDGING_ENTROPY, int(i)])).random(2)
                      for i in ids]).reshape(-1, 2)
        rate = float(k.value(f"waiting.bridging.response_rate.{disease}"))
        bridged = u[:, 0] < bridging_fraction
        return cls(
            burden=np.asarray(burden, float), growth=np.asarray(growth, float),
            capacity=np.asarray(capacity, float), bridged=bridged, responds=bridged & (u[:, 1] < rate),
            bridging_day=float(k.value("waiting.bridging.start_after_referral")),
            response_fraction=float(k.value("waiting.bridging.response_burden_fraction")),
            fold=float(fold if fold is not None else k.value("waiting.eligibility.progression_fold")),
            lethal=float(k.value("waiting.eligibility.lethal_fraction_of_capacity")))

    def take(self, pos: np.ndarray) -> WaitingDisease:
        """The patients at positions ``pos``."""
        return replace(self, burden=self.burden[pos], growth=self.growth[pos], capacity=self.capacity[pos],
                       bridged=self.bridged[pos], responds=self.responds[pos])

    def _after_bridging(self) -> np.ndarray:
        """Burden just after bridging acts (growth up to then, then the responders' cut)."""
        b = _grow(self.burden, self.growth, self.capacity, np.full(self.burden.shape, self.bridging_day))
        return np.where(self.responds, b * self.response_fraction, b)

    def burden_at(self, days: np.ndarray) -> np.ndarray:
        """Burden ``days`` after referral (per patient)."""
        days = np.broadcast_to(np.asarray(days, float), self.burden.shape)
        before = _grow(self.burden, self.growth, self.capacity, np.minimum(days, self.bridging_day))
        after = _grow(self._after_bridging(), self.growth, self.capacity, np.maximum(days - self.bridging_day, 0.0))
        return np.where(days <= self.bridging_day, before, after)

    def _time_to(self, target: np.ndarray) -> np.ndarray:
        """First day the burden reaches ``target`` (inf if never)."""
        t0 = np.full(self.burden.shape, self.bridging_day)
        early = _time_between(self.burden, target, self.growth, self.capacity)
        late = t0 + _time_between(self._after_bridging(), target, self.growth, self.capacity)
        return np.where(early <= t0, early, late)

    def ineligible_after(self) -> np.ndarray:
        """Days after referral when the disease has progressed beyond eligibility."""
        return self._time_to(self.fold * self.burden)

    def disease_death_after(self) -> np.ndarray:
        """Days after referral when a patient still waiting dies of the disease: when the burden
        has used up ``lethal`` of the headroom left between referral and the capacity (for a
        burden far below capacity, ``lethal`` times the capacity; never, above capacity)."""
        target = self.burden + self.lethal * (self.capacity - self.burden)
        return np.where(self.burden < self.capacity, self._time_to(target), np.inf)


def _grow(b: np.ndarray, r: np.ndarray, K: np.ndarray, t: np.ndarray) -> np.ndarray:
    return K / (1.0 + (K / b - 1.0) * np.exp(-r * t))


def _time_between(b1: np.ndarray, b2: np.ndarray, r: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Days of logistic growth from b1 to b2 (0 if already there, inf if b2 >= K)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.log(b2 * (K - b1) / (b1 * (K - b2))) / r
    t = np.where(b2 <= b1, 0.0, t)
    return np.where((b2 >= K) & (b2 > b1), np.inf, t)
