"""Simulate an SBML model in libRoadRunner (CVODE) with tight, per-state tolerances.

libRoadRunner is the SBML simulator many QSP teams use; carcell uses it to check its SBML
export (tests/test_sbml_export.py) and as the baseline of the scale benchmark (issue 8). Its
default absolute tolerance (1e-12 in the model's units) is far too loose for a state whose
typical value is tiny and far too tight for one near 1e9, so :func:`roadrunner_simulate`
takes one absolute tolerance per state.

Loading a model compiles it with LLVM, which takes seconds for carcell's 21-state model while
a 28-day simulation takes milliseconds: load once (:func:`load_roadrunner`) and pass another
patient's values (``values=``) when the structure is the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from carcell.errors import CarcellError


class RoadRunnerResult(NamedTuple):
    """A time course: ``times`` (T,), ``values`` (T, n_selected), and the selected ids."""

    times: np.ndarray
    values: np.ndarray
    names: tuple[str, ...]


def _roadrunner():
    try:
        import roadrunner  # noqa: PLC0415 - optional extra
    except ImportError:
        raise CarcellError("libRoadRunner is not installed; install the sbml extra: pip install -e '.[sbml]'") from None
    return roadrunner


def load_roadrunner(sbml: str, *, fast_compile: bool = False):
    """A ``roadrunner.RoadRunner`` for the SBML text.

    ``fast_compile`` (off by default: roadrunner's own MCJIT is the well-trodden path, and one
    LLJIT load crashed a test process that had run Numba and JAX before) uses LLVM's ORC JIT
    (LLJIT) without optimisation, which compiles
    carcell's export about twice as fast as the default MCJIT; the generated code computes the
    same rates (tests compare them with carcell's right-hand side). roadrunner's global
    configuration is restored afterwards.
    """
    rr = _roadrunner()
    cfg = rr.Config
    keys = (cfg.LLVM_BACKEND, cfg.LLJIT_OPTIMIZATION_LEVEL)
    saved = [cfg.getValue(k) for k in keys]
    try:
        if fast_compile:
            cfg.setValue(cfg.LLVM_BACKEND, cfg.LLJIT)
            cfg.setValue(cfg.LLJIT_OPTIMIZATION_LEVEL, cfg.NONE)
        return rr.RoadRunner(sbml)
    except RuntimeError as err:
        raise CarcellError(f"libRoadRunner could not load the model: {str(err).splitlines()[0]}") from None
    finally:
        for k, v in zip(keys, saved):
            cfg.setValue(k, v)


def set_values(model, values: Mapping[str, float]) -> None:
    """Reset a loaded model to its SBML initial state, then set parameters and state values (by
    SBML id) for a run from t = 0.

    The values are set as current values in one call: setting *initial* values (``init(id)``)
    makes libRoadRunner regenerate the model, about a second per value. The next ``resetAll``
    returns the model to its SBML values; :func:`roadrunner_simulate` with ``values=`` does
    both steps.
    """
    model.resetAll()
    if not values:
        return
    ids = list(model.model.getGlobalParameterIds())
    where = {sid: i for i, sid in enumerate(ids)}
    unknown = [sid for sid in values if sid not in where]
    if unknown:
        raise CarcellError(f"values: {', '.join(unknown[:5])} are not parameters of the loaded model")
    idx = np.array([where[sid] for sid in values], dtype=np.int32)
    model.model.setGlobalParameterValues(idx, np.array([float(v) for v in values.values()]))


def roadrunner_simulate(
    sbml,
    t_end: float,
    points: int,
    *,
    rtol: float = 1e-10,
    atol: float | Mapping[str, float] | Sequence[float] = 1e-12,
    selections: Sequence[str] | None = None,
    max_steps: int = 1_000_000,
    values: Mapping[str, float] | None = None,
) -> RoadRunnerResult:
    """Integrate from 0 to ``t_end`` with CVODE and return ``points`` equally spaced outputs.

    Parameters
    ----------
    sbml : str or roadrunner.RoadRunner
        SBML text, or a model from :func:`load_roadrunner` (reset to its SBML values first).
    t_end : float
        End time, in the model's time unit (days for carcell's export).
    points : int
        Output times, including 0 and ``t_end``.
    rtol : float
        CVODE relative tolerance.
    atol : float, mapping or sequence
        Absolute tolerance in each state's unit: one value for all states, or per state
        (``{sid: atol}``, or one value per entry of ``selections``, which must then all be
        states); states not named get the smallest value given. (A scalar set directly on
        libRoadRunner's integrator is scaled by each state's value; here it is not.)
    selections : sequence of str, optional
        Ids to return (default: every rate-rule state, then every floating species).
    values : mapping, optional
        Parameter and initial state values (by SBML id) that replace the file's, e.g. another
        patient's (:func:`sbml_values` of that patient's export): one compiled model serves
        every patient of a scenario.

    Returns
    -------
    RoadRunnerResult
        ``times`` (points,), ``values`` (points, len(selections)), ``names``.
    """
    model = load_roadrunner(sbml) if isinstance(sbml, str) else sbml
    set_values(model, values or {})
    states = [*model.getRateRuleIds(), *model.model.getFloatingSpeciesIds()]
    names = tuple(selections) if selections is not None else tuple(states)
    if isinstance(atol, Mapping):
        per_state = {k: float(v) for k, v in atol.items()}
        base = min(per_state.values(), default=1e-12)
    elif np.ndim(atol) == 0:
        per_state, base = {}, float(np.asarray(atol))
    else:
        if len(atol) != len(names):
            raise CarcellError(f"atol: {len(atol)} values for {len(names)} selections; give one per selection")
        per_state = {k: float(v) for k, v in zip(names, atol)}
        base = min(per_state.values())
    unknown = [sid for sid in per_state if sid not in states]
    if unknown:
        raise CarcellError(f"atol: {', '.join(unknown[:5])} are not states (rate rules or species) of the model")
    integ = model.integrator
    integ.relative_tolerance = rtol
    integ.absolute_tolerance = base
    integ.maximum_num_steps = max_steps
    # libRoadRunner scales a scalar absolute tolerance by each state's value; set every state's
    # own value so the tolerance is absolute, in the state's unit, as documented
    for sid in states:
        integ.setIndividualTolerance(sid, per_state.get(sid, base))
    model.timeCourseSelections = ["time", *names]
    try:
        out = np.array(model.simulate(0.0, float(t_end), int(points)))
    except RuntimeError as err:
        raise CarcellError(f"libRoadRunner failed: {str(err).splitlines()[0]}; try a looser rtol or more "
                           "max_steps") from None
    return RoadRunnerResult(out[:, 0], out[:, 1:], names)


def sbml_values(sbml: str) -> dict[str, float]:
    """Every parameter value (constants and initial values of rate-rule states) in SBML text."""
    import libsbml  # noqa: PLC0415

    model = libsbml.readSBMLFromString(sbml).getModel()
    if model is None:
        raise CarcellError("the SBML text holds no model")
    return {p.getId(): p.getValue() for p in model.getListOfParameters() if p.isSetValue()}
