"""Global sensitivity analysis of virtual trials: which model parameters and design choices
move CR rate, grade >= 3 CRS, Cmax and PFS (docs/sensitivity.md).

::

    from pathlib import Path
    from carcell.sensitivity import analyse_scenario, parse_param
    raw = {"product": {"preset": "axi-cel"}, "indication": {"disease": "LBCL"}}
    result = analyse_scenario(raw, [parse_param("product.dose.cells_per_kg=1e5:1e7:log"),
                                    parse_param("knowledge:car_t.kinetics.rho_effector=x0.5:2")],
                              method="morris", n_samples=10, n_patients=50, seed=1)
    result.write(Path("runs/sens"))

SALib (the ``scale`` extra) does the sampling and the index estimates.
"""

from __future__ import annotations

from carcell.lazy import lazy_attributes

# imported on first use: every carcell command imports this package for `carcell sensitivity`,
# and must not pay for SALib and pandas behind it
_WHERE = {
    **dict.fromkeys(("METHODS", "SensitivityResult", "analyse_scenario", "indices", "run_sensitivity",
                     "sample_unit"), "carcell.sensitivity.analysis"),
    **dict.fromkeys(("DEFAULT_OUTCOMES", "OUTCOMES", "CohortEvaluator", "cohort_outcomes", "evaluate_point",
                     "knowledge_values", "run_points"), "carcell.sensitivity.evaluate"),
    **dict.fromkeys(("Parameter", "load_params_file", "make_parameter", "parse_param", "resolve_parameters"),
                    "carcell.sensitivity.params"),
}
__getattr__ = lazy_attributes(__name__, _WHERE)
__all__ = sorted(_WHERE)
