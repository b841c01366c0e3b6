"""Phenotype-toggle CAR-T model with complete-, partial- and non-responder parameter sets.

Kirouac DC, et al. (2023). Deconvolution of clinical variance in CAR-T cell pharmacology and
response. Nat Biotechnol 41:1606. doi:10.1038/s41587-023-01687-x.

Memory, two effector stages and exhausted CAR-T cells answer to one antigen-sensing toggle
switch. The paper fits the model by particle-swarm optimisation to the CTL019 (Kymriah)
kinetics and B-cell tumour of CLL patients (Fraietta et al. 2018), split into complete (CR),
partial (PR) and non-responders (NR), with 12 parameter sets per group (Fig 1b). The sets are
the virtual patients: a cohort draws whole sets from one group (or all 36). The equations and
the sets are as transcribed by the third-party replication ``mstadt/CART2`` (see the data file).

Reproduces Fig 1c-d from the sets (PCA: PC1 35.3%, PC2 21.7%; the sign pattern of the
highlighted PC1 coefficients) and Fig 1b as stated relations of the group-mean curves. The
infusion compartments are solved in closed form; the cell pools use carcell's batched DOPRI5.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from carcell.errors import CarcellError
from carcell.published import params as store
from carcell.published.base import (Check, Citation, PublishedCohort, PublishedModel, cohort_size, dataset,
                                    holds, per_patient)
from carcell.published.ode import Columns, floor_at_zero, integrate
from carcell.published.params import Parameter

GROUPS = ("CR", "PR", "NR")
ALL = "all"
TM, TE1, TE2, TX, B, BA = range(6)
RTOL = 1e-8
ATOL = 1e-6            # cells; CAR-T pools start at 0 and the tumour at 1e10
PCA_TOL = 0.05         # percentage points: the paper rounds the shares of variance to 0.1
NADIR_DAYS = 90.0      # tumour nadirs of Fig 1b are taken over days 0-90
MAX_REDRAWS = 20       # rounds of the plausible-patient filter before giving up


class Kirouac2023(PublishedModel):
    r"""CAR-T memory T_M, effectors T_E1 and T_E2, exhausted T_X, B-cell tumour B and its
    antigen pool B_A (cells), t in days. With H(x; n, K) = x^n / (K^n + x^n) and the
    antigen switch s = f_max (1 - H(B_A; k_M, B50)), the self-renewing share of memory
    divisions:

    dT_M/dt  = mu_M s T_M - mu_M (1 - s) T_M - d_M T_M + r_M (1 - H(B_A; k_R, B50)) T_E2 + f_TM X
    dT_E1/dt = 2 mu_M (1 - s) T_M - mu_E H(B_A; k_E, B50) T_E1 - d_E1 T_E1 + f_TE1 X
    dT_E2/dt = 2^N mu_E H(B_A; k_E, B50) T_E1 - k_ex H(B_A; k_X, B50) T_E2 - d_E2 T_E2
               - r_M (1 - H(B_A; k_R, B50)) T_E2 + f_TE2 X
    dT_X/dt  = k_ex H(B_A; k_X, B50) T_E2 - d_X T_X + f_TX X
    dB/dt    = mu_B B (1 - B/B_max) - k_kill B H(T_E2; k_t, TK50)
    dB_A/dt  = k_B1 B - k_B2 B_A

    Infusion: a dose D enters compartment P on day 0; dP/dt = -(f_loss + 1) P, the engrafting
    part moves to X at rate 1/day, and dX/dt = P - (f_TM + f_TE1 + f_TE2 + f_TX) X empties X
    into the four pools. Both are linear, so X(t) = D (e^{-a t} - e^{-F t}) / (F - a) with
    a = f_loss + 1 and F the sum of the f's (D t e^{-a t} when F = a) is used exactly; a
    share 1/(f_loss + 1) of the dose engrafts, within about a day.

    Antigen raises effector proliferation and exhaustion and lowers memory self-renewal and
    memory regeneration from T_E2: the toggle. Only T_E2 kills. The total CAR-T count
    ``car_t`` = T_M + T_E1 + T_E2 + T_X is what Fig 1b plots. As in the replication, negative
    undershoots count as zero in the rates and at output times. Parameter sets: ``CR``,
    ``PR``, ``NR`` (12 fitted sets each), ``all`` (36), or one set such as ``CR-3``.
    """

    name = "kirouac2023"
    citation = Citation(
        authors="Kirouac DC, et al.", year=2023,
        title="Deconvolution of clinical variance in CAR-T cell pharmacology and response",
        journal="Nat Biotechnol 41:1606", doi="10.1038/s41587-023-01687-x")
    reproduces = ("Fig 1c-d PCA of the 36 CR/PR/NR parameter sets (PC1 35.3%, PC2 21.7%); Fig 1b "
                  "CAR-T peak and tumour response ordered CR > PR > NR")
    states = ("car_t", "T_M", "T_E1", "T_E2", "T_X", "B", "B_A")
    default_set = ALL
    default_protocol = "fraietta_cll"
    solver = "carcell.solve.dopri5 (batched DOPRI5, rtol 1e-8); infusion compartments in closed form"

    # -- the fitted sets ---------------------------------------------------------------------

    def fitted(self, group: str = ALL) -> tuple[dict[str, np.ndarray], list[str]]:
        """Every fitted set of ``group`` (CR, PR, NR or all): parameter -> values, and labels."""
        groups = GROUPS if group == ALL else (group,)
        if any(g not in GROUPS for g in groups):
            raise CarcellError(f"{self.name}: no response group {group!r}; known: {', '.join(GROUPS)}, {ALL}")
        tables = [store.parameter_set(self.name, g) for g in groups]
        values = {k: np.concatenate([np.asarray(t[k].value, dtype=float) for t in tables]) for k in tables[0]}
        labels = [f"{g}-{i + 1}" for g, t in zip(groups, tables) for i in range(len(t["B50"].value))]
        return values, labels

    def parameter_sets(self) -> list[str]:
        return [ALL, *GROUPS, *self.fitted()[1]]

    def parameters(self, set_name: str | None = None) -> dict[str, Parameter]:
        """One fitted set (``CR-3``) or, for a group, each parameter's median over its sets.

        The medians are for display (``carcell models show``); runs use whole fitted sets.
        """
        chosen = set_name or self.default_set
        group, _, index = chosen.partition("-")
        if chosen not in self.parameter_sets():
            raise CarcellError(f"{self.name}: no parameter set {chosen!r}; known: {ALL}, CR, PR, NR, "
                               "or one fitted set CR-1 .. NR-12")
        if index:
            raw = store.parameter_set(self.name, group)
            i = int(index) - 1
            return {k: Parameter(k, float(p.value[i]), p.unit, p.source, f"set {chosen}; {p.note}")
                    for k, p in raw.items()}
        values, labels = self.fitted(group)
        units = store.parameter_set(self.name, GROUPS[0])
        return {k: Parameter(k, float(np.median(v)), units[k].unit, "derived",
                             f"median of the {len(labels)} {chosen} sets (range {v.min():.4g}-{v.max():.4g})")
                for k, v in values.items()}

    # -- simulation ---------------------------------------------------------------------------

    def default_days(self) -> float:
        return float(self.protocol()["days"].value)

    def resolve(self, params: Mapping[str, float | np.ndarray] | None, set_name: str | None) -> dict[str, np.ndarray]:
        """Per-patient parameters: the chosen set(s) overridden by ``params``.

        A group (``CR``, ``all``) stands for its fitted sets, one patient each, unless
        ``params`` gives every parameter (a drawn cohort); one set (``CR-3``) is one patient.
        """
        chosen = set_name or self.default_set
        names = list(store.parameter_set(self.name, GROUPS[0]))
        unknown = sorted(set(params or {}) - set(names))
        if unknown:
            import difflib

            near = difflib.get_close_matches(unknown[0], names, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise CarcellError(f"{self.name}: {unknown[0]!r} is not a parameter{hint} known: {', '.join(names)}")
        given = dict(params or {})
        if set(given) >= set(names):
            base: dict = {}
        elif "-" in chosen:
            base = self.typical(chosen)
        else:
            base = self.fitted(chosen)[0]
        merged = {**base, **given}
        return per_patient(merged, cohort_size(merged))

    def simulate(self, params: Mapping[str, float | np.ndarray] | None = None, t: np.ndarray | None = None,
                 *, protocol: str | None = None, set_name: str | None = None) -> xr.Dataset:
        proto = self.protocol(protocol)
        if t is None:
            t = np.linspace(0.0, float(proto["days"].value), 4 * int(proto["days"].value) + 1)
        p = self.resolve(params, set_name)
        n = len(p["B50"])
        p["dose"] = np.full(n, float(proto["dose_cells"].value))
        y0 = np.zeros((n, 6))
        y0[:, B] = proto["tumour_cells"].value
        y0[:, BA] = proto["antigen"].value
        y, status = integrate(_rhs, y0, np.asarray(t, dtype=float), Columns(p), rtol=RTOL, atol=ATOL,
                              after_step=floor_at_zero)
        total = y[:, :, TM:TX + 1].sum(axis=2, keepdims=True)
        return dataset(self, t, np.concatenate([total, y], axis=2), status)

    # -- the paper's figures ------------------------------------------------------------------

    def pca(self, params: Mapping[str, float] | None = None) -> tuple[np.ndarray, dict[str, float]]:
        """Fig 1c-d: shares of variance (percent) and PC1 coefficients of the log parameters.

        PCA of the centred natural logarithms of the 36 sets (rows) x 27 parameters; the
        shares do not depend on the base of the logarithm. ``params`` overrides every set.
        """
        values, _ = self.fitted(ALL)
        values.update({k: np.full(len(values["B50"]), float(v)) for k, v in (params or {}).items()})
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(np.column_stack(list(values.values())))
        if not np.all(np.isfinite(logs)):
            return np.full(2, np.nan), dict.fromkeys(values, np.nan)
        _, s, vt = np.linalg.svd(logs - logs.mean(axis=0), full_matrices=False)
        share = 100.0 * s**2 / np.sum(s**2)
        pc1 = vt[0] * np.sign(vt[0][list(values).index("TK50")] or 1.0)   # orient: TK50 >= 0
        return share, dict(zip(values, pc1))

    def checks(self, params: Mapping[str, float] | None = None) -> list[Check]:
        pub = self.published()
        src = {k: f"{p.source} ({p.note})" for k, p in pub.items()}
        share, pc1 = self.pca(params)
        out = []
        for i, key in enumerate(("pc1_variance_percent", "pc2_variance_percent")):
            value = float(pub[key].value)
            out.append(holds(f"PC{i + 1} share of variance, log parameter sets (Fig 1c), percent", share[i],
                             value, bool(abs(share[i] - value) <= PCA_TOL), f"+/-{PCA_TOL:g} percentage point",
                             src[key]))
        others = [pc1[k] for k in ("k_kill", "mu_M", "d_M")]
        out.append(holds("PC1 coefficient of TK50 vs those of k_kill, mu_M, d_M (Fig 1d)", pc1["TK50"],
                         1.0, bool(pc1["TK50"] > 0 and all(c < 0 for c in others)), "opposite signs",
                         src["pc1_tk50_opposes_kill_and_memory"]))
        mean = self.group_means(params)
        cmax = {g: float(np.nanmax(m["car_t"])) for g, m in mean.items()}
        out.append(holds("peak of the mean CAR-T curve CR / NR (Fig 1b)", cmax["CR"] / cmax["NR"], 1.0,
                         cmax["CR"] > cmax["PR"] > cmax["NR"], "order CR > PR > NR", src["cmax_order_cr_pr_nr"]))
        day = float(pub["cr_clearance_day"].value)
        b0 = {g: float(m["B"][0]) for g, m in mean.items()}
        cr_at_day = float(np.interp(day, mean["CR"]["time"], mean["CR"]["B"])) / b0["CR"]
        limit = float(pub["cr_clearance_fraction"].value)
        out.append(holds(f"mean CR tumour on day {day:g} / day 0 (Fig 1b)", cr_at_day, limit, cr_at_day < limit,
                         f"below {limit:g}", src["cr_clearance_fraction"]))
        nadir = {g: float(np.nanmin(m["B"][m["time"] <= NADIR_DAYS])) / b0[g] for g, m in mean.items()}
        half = float(pub["partial_response_fraction"].value)
        out.append(holds("nadir of the mean NR tumour / day 0, days 0-90 (Fig 1b)", nadir["NR"], half,
                         nadir["NR"] >= half > nadir["PR"], f"NR >= {half:g} > PR", src["partial_response_fraction"]))
        out.append(holds("nadir of the mean CR tumour / PR nadir, days 0-90 (Fig 1b)", nadir["CR"] / nadir["PR"], 1.0,
                         nadir["CR"] < nadir["PR"] < nadir["NR"], "order CR < PR < NR", src["response_depth_order"]))
        return out

    def group_means(self, params: Mapping[str, float] | None = None,
                    protocol: str | None = None) -> dict[str, dict[str, np.ndarray]]:
        """Fig 1b's curves: the mean over each group's 12 sets of ``car_t`` and ``B``."""
        ds = self.simulate(params, set_name=ALL, protocol=protocol)
        _, labels = self.fitted(ALL)
        group = np.array([s.split("-")[0] for s in labels])
        t = ds["time"].to_numpy()
        return {g: {"time": t, "car_t": ds["car_t"].to_numpy()[group == g].mean(axis=0),
                    "B": ds["B"].to_numpy()[group == g].mean(axis=0)} for g in GROUPS}

    # -- cohorts ------------------------------------------------------------------------------

    def draw(self, n: int, seed: int | None, set_name: str | None = None, *,
             beyond_sets: bool = False) -> tuple[dict[str, np.ndarray], list[str]]:
        """``n`` patients, each one fitted set drawn uniformly from the chosen group or set.

        With ``beyond_sets`` each drawn set is perturbed log-normally (the ``variability``
        section, an assumption); the plausible-patient filter then applies in :meth:`cohort`.
        """
        if n < 1:
            raise CarcellError(f"-n {n}: a cohort needs at least one patient")
        chosen = set_name or self.default_set
        if chosen not in self.parameter_sets():
            self.parameters(chosen)          # raises the error naming the known sets
        rng = np.random.default_rng(seed)
        if "-" in chosen:
            values, labels = {k: np.array([v]) for k, v in self.typical(chosen).items()}, [chosen]
        else:
            values, labels = self.fitted(chosen)
        pick = rng.integers(0, len(labels), size=n)
        out = {k: v[pick] for k, v in values.items()}
        if beyond_sets:
            for k, omega in self.variability().items():
                out[k] = out[k] * np.exp(float(omega.value) * rng.standard_normal(n))
        return out, [labels[i] for i in pick]

    def sample(self, n: int, seed: int | None, set_name: str | None = None) -> dict[str, np.ndarray]:
        return self.draw(n, seed, set_name)[0]

    def cohort(self, n: int = 100, seed: int | None = 0, days: float | None = None, *,
               set_name: str | None = None, protocol: str | None = None,
               beyond_sets: bool = False) -> PublishedCohort:
        """Run ``n`` patients drawn among the fitted sets (the paper's virtual patients).

        ``patients`` names each patient's ``fitted_set`` and ``response_group``. With
        ``beyond_sets``, implausible patients (failed solve, or a CAR-T peak outside the
        fitted sets' range widened by ``plausibility.car_t_peak_factor``) are redrawn.
        """
        chosen = set_name or self.default_set
        t = self.cohort_times(days)
        rng = np.random.default_rng(seed)
        p, labels = self.draw(n, int(rng.integers(2**32)), chosen, beyond_sets=beyond_sets)
        ds = self.simulate(p, t, protocol=protocol, set_name=chosen)
        rejected = 0
        if beyond_sets:
            lo, hi = self._plausible_peaks(t, protocol)
            for _ in range(MAX_REDRAWS):
                bad = self._implausible(ds, lo, hi)
                if not bad.any():
                    break
                rejected += int(bad.sum())
                q, new = self.draw(int(bad.sum()), int(rng.integers(2**32)), chosen, beyond_sets=True)
                redo = self.simulate(q, t, protocol=protocol, set_name=chosen)
                ds = _replace(ds, redo, np.flatnonzero(bad))
                for k in p:
                    p[k][bad] = q[k]
                labels = [new.pop(0) if b else lab for b, lab in zip(bad, labels)]
            else:
                raise CarcellError(f"{self.name}: fewer than {n} plausible patients after {MAX_REDRAWS} "
                                   "redraws; lower the variability omegas in kirouac2023.yaml")
        patients = pd.DataFrame({"patient": np.arange(n), "fitted_set": labels,
                                 "response_group": [s.split("-")[0] for s in labels]})
        for k in self.variability() if beyond_sets else ():
            patients[k] = p[k]
        patients = pd.concat([patients, self.summarise(ds)], axis=1)
        patients["solver_status"] = ds["solver_status"].to_numpy()
        return PublishedCohort(self, chosen, protocol or self.default_protocol, seed, patients, ds,
                               extra={"beyond_sets": beyond_sets, "rejected_implausible": rejected})

    def _plausible_peaks(self, t: np.ndarray, protocol: str | None) -> tuple[float, float]:
        peaks = self.simulate(t=t, set_name=ALL, protocol=protocol)["car_t"].max(dim="time").to_numpy()
        factor = float(store.section(self.name, "plausibility")["car_t_peak_factor"].value)
        return float(peaks.min()) / factor, float(peaks.max()) * factor

    @staticmethod
    def _implausible(ds: xr.Dataset, lo: float, hi: float) -> np.ndarray:
        peak = ds["car_t"].max(dim="time").to_numpy()
        return (ds["solver_status"].to_numpy() != "ok") | ~np.isfinite(peak) | (peak < lo) | (peak > hi)


def _replace(ds: xr.Dataset, redo: xr.Dataset, where: np.ndarray) -> xr.Dataset:
    """``ds`` with the patients at positions ``where`` taken from ``redo`` (same order)."""
    out = ds.copy(deep=True)
    for v in ds.data_vars:
        values = out[v].to_numpy()
        values[where] = redo[v].to_numpy()
        out[v] = (ds[v].dims, values, ds[v].attrs)
    return out


def _hill(x: np.ndarray, n: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x^n / (k^n + x^n) for x >= 0, written as r / (1 + r) with r = (x/k)^n."""
    r = (np.maximum(x, 0.0) / k) ** n
    return r / (1.0 + r)


def engrafting(t: np.ndarray, p: Columns) -> np.ndarray:
    """X(t): the engrafting compartment after a dose at day 0 (closed form, see the equations)."""
    a = p.f_loss + 1.0
    f = p.f_TM + p.f_TE1 + p.f_TE2 + p.f_TX
    gap = f - a
    close = np.abs(gap) < 1e-9 * a
    spread = np.exp(-a * t) - np.exp(-f * t)
    return p.dose * np.where(close, t * np.exp(-a * t), spread / np.where(close, 1.0, gap))


def _rhs(t: np.ndarray, y: np.ndarray, p: Columns) -> np.ndarray:
    tm, te1, te2, tx, b, ba = (np.maximum(y[:, i], 0.0) for i in range(6))
    renew = p.f_max * (1.0 - _hill(ba, p.k_M, p.B50))
    burst = p.mu_E * _hill(ba, p.k_E, p.B50) * te1
    exhaust = p.k_ex * _hill(ba, p.k_X, p.B50) * te2
    regenerate = p.r_M * (1.0 - _hill(ba, p.k_R, p.B50)) * te2
    x = engrafting(t, p)
    d = np.empty_like(y)
    d[:, TM] = p.mu_M * renew * tm - p.mu_M * (1.0 - renew) * tm - p.d_M * tm + regenerate + p.f_TM * x
    d[:, TE1] = 2.0 * p.mu_M * (1.0 - renew) * tm - burst - p.d_E1 * te1 + p.f_TE1 * x
    d[:, TE2] = 2.0**p.N * burst - exhaust - p.d_E2 * te2 - regenerate + p.f_TE2 * x
    d[:, TX] = exhaust - p.d_X * tx + p.f_TX * x
    d[:, B] = p.mu_B * b * (1.0 - b / p.B_max) - p.k_kill * b * _hill(te2, p.k_t, p.TK50)
    d[:, BA] = p.k_B1 * b - p.k_B2 * ba
    return d
