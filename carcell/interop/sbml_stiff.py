"""Fallback for stiff SBML models: SciPy's LSODA, one patient at a time.

carcell's Dormand-Prince solver is explicit: its step is bounded by the fastest decay rate of
the model, whatever the accuracy asked. Some published models are stiff. In Hardiansyah & Ng
2019 (BioModels MODEL2009230001) CAR-T cells kill B cells at ``Kbc * CAR-T * B`` with
``Kbc * CAR-T`` reaching about 1e8 per day, so an explicit method would need steps near 1e-8
day for the whole run. For such patients :func:`carcell.interop.run_sbml_cohort` (``method=
"auto"``) hands over to LSODA (Petzold 1983, doi:10.1137/0904010; via
``scipy.integrate.solve_ivp``), which switches to BDF when the problem turns stiff. Events are
applied exactly as on the batched path: integration stops at each event time, the assignments
set their targets, and integration restarts.
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from carcell.interop.sbml_compile import CompiledSbml, apply_events, check_start, domain_error, segment_rhs
from carcell.interop.sbml_import import SbmlModel
from carcell.model.states import Params

STATUS_SCIPY_FAILED = "lsoda_failed"


def integrate_lsoda(model: SbmlModel, c: CompiledSbml, table: np.ndarray, times: np.ndarray, *,
                    rtol: float, atol: float, event_times: np.ndarray, switch_times: np.ndarray,
                    patient_ids: np.ndarray
                    ) -> tuple[np.ndarray, list[str]]:
    """Integrate each row of ``table`` (parameter table after the draw, before initial
    assignments) over ``times`` (model units).

    ``event_times`` (n, n_events) are the snapped event times of each patient,
    ``switch_times`` (n, n_switches) the times where a formula of the model switches, and
    ``patient_ids`` name the rows in messages.

    Returns the observed species, shape (n, len(times), n_species), NaN after a failure, and
    a status per patient (``ok`` or ``lsoda_failed``).
    """
    n = table.shape[0]
    out = np.full((n, times.size, len(model.species)), np.nan)
    status = ["ok"] * n
    for i in range(n):
        tab = table[i:i + 1].copy()
        c.initialise(np.full(1, times[0]), tab)
        p = Params(tab)
        y = tab[:, [c.column_index[s] for s in model.states]].copy()
        ev = event_times[i:i + 1]
        starts = np.array([e.fires_at_start for e in model.events], dtype=bool)
        apply_events(model, c, float(times[0]), (ev <= times[0]) & starts, y, p)
        np.maximum(y, c.floors, out=y)
        check_start(model, c, float(times[0]), y, p)
        out[i, 0] = c.observe(times[:1], y, p)[0]
        stops = np.concatenate([ev[0], switch_times[i], times[-1:]])
        stops = np.unique(stops[(stops > times[0]) & (stops <= times[-1])])
        a = float(times[0])
        for b in stops:
            rhs = segment_rhs(c.rhs, a, float(b))

            def f(t: float, x: np.ndarray) -> np.ndarray:
                return rhs(np.array([t]), x[None, :], p)[0]

            inside = times[(times > a) & (times <= b)]
            t_eval = np.unique(np.concatenate([inside, [b]]))
            sol = solve_ivp(f, (a, float(b)), y[0], method="LSODA", rtol=rtol, atol=atol, t_eval=t_eval)
            if c.domain_hits:
                raise domain_error(model, c.domain_hits[0], int(patient_ids[i]))
            if sol.status != 0 or not np.all(np.isfinite(sol.y)):
                status[i] = STATUS_SCIPY_FAILED
                break
            for k, tk in enumerate(sol.t[:-1]):
                j = int(np.searchsorted(times, tk))
                out[i, j] = c.observe(np.array([tk]), np.maximum(sol.y[:, k], c.floors)[None, :], p)[0]
            y = np.maximum(sol.y[:, -1], c.floors)[None, :].copy()
            due = ev == b
            if due.any():
                apply_events(model, c, float(b), due, y, p)
            j = int(np.searchsorted(times, b))
            if j < times.size and times[j] == b:
                out[i, j] = c.observe(np.array([b]), y, p)[0]
            a = float(b)
    return out, status
