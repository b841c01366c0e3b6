"""carcell's calibration problems as PEtab v1 problems, for pyPESTO, AMICI, COPASI and friends.

PEtab (Schmiester et al. 2021, doi:10.1371/journal.pcbi.1008646) describes a parameter
estimation problem as an SBML model plus four tables: experimental conditions, observables
(what is measured, as a formula over the model, with its noise model), measurements, and
parameters (which are estimated, on which scale, within which bounds, with which priors).
:func:`petab_problem` builds one of carcell's calibration problems in that form and
:meth:`PetabProblem.write` writes it as ``problem.yaml`` and its files; :func:`lint_petab` runs
the ``petab`` library's linter on the result.

The problem ``tisacel_kinetics``
--------------------------------
The CAR kinetics calibration of ``validation/calibrate_kinetics.py``: the typical patient of
``examples/tisacel_ball.yaml`` (every covariate at its median, no inter-individual
variability), whose model is the SBML export of :mod:`carcell.interop.sbml_export`, with three
estimated parameters, ``rho_effector``, ``antigen_half_stimulation`` and ``k_reversion``
(log10 scale, bounds x0.1 .. x10 of the current value, normal priors on the log10 scale
centred on the current value with the design's inter-individual SD). Every other parameter is
fixed at the patient's value.

The observable is the blood qPCR read-out carcell reports (:mod:`carcell.clinical.blood`,
``clinical_trajectories``): with N the whole-body counts of circulating CAR cells (memory +
effector + exhausted) and of host lymphocytes H, a fraction f of lymphocytes in a blood
volume V, and L non-lymphoid leukocytes per uL,

    copies/ug = VCN * cells_per_ug * (N f / V) / (N f / V + H f / V + L)
              = VCN * cells_per_ug * N / (N + H + L V / f)

The measurements are the Stein 2019 typical tisagenlecleucel curve (doi:10.1002/psp4.12388,
:class:`carcell.published.stein2019.Stein2019`) at clinical days: points on a published
typical curve, not patient data. The noise is log-normal with Stein's residual SD.

carcell's own run of this patient includes toxicity management: the typical patient receives
tocilizumab and dexamethasone, and dexamethasone damps CAR expansion. PEtab v1 has no dosing
table, so the doses carcell gives at the *nominal* parameters are added to the SBML as events
(``management_1``, ...). A fit that moves the parameters keeps this schedule, where carcell
would decide the doses anew at each assessment; the README written with the problem says so.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from carcell.interop.sbml_export import (
    STATE_IDS,
    STATE_UNITS,
    ExportError,
    build_sbml,
    patient_model,
)
from carcell.model.states import PARAMETER_NAMES, STATE_NAMES
from carcell.scenario.schema import Scenario

#: the scenario of ``tisacel_kinetics`` in a source checkout (``--scenario`` gives another)
TISACEL_SCENARIO = Path(__file__).resolve().parents[2] / "examples" / "tisacel_ball.yaml"
#: the parameters validation/calibrate_kinetics.py fits
FITTED = ("rho_effector", "antigen_half_stimulation", "k_reversion")
#: clinical sampling days of the measurements (9.3 d: Stein's typical Tmax)
MEASUREMENT_DAYS = (1.0, 4.0, 7.0, 9.3, 14.0, 21.0, 28.0, 56.0, 90.0, 180.0, 365.0)
#: estimated parameters are bounded to [value / BOUND_FACTOR, value * BOUND_FACTOR]
BOUND_FACTOR = 10.0


def stein_residual_sd() -> float:
    """SD of the natural-log residual of the Stein 2019 fit (published/stein2019.yaml)."""
    from carcell.published import get  # noqa: PLC0415 - the preset library, only when exporting

    return float(get("stein2019").published()["residual_sd_log"].value)


#: prior SD (natural log) for an estimated parameter without an inter-individual SD in the
#: design: assumption, one e-fold either way (not used by tisacel_kinetics: all three have one)
ASSUMED_PRIOR_SD_LN = 1.0

OBSERVABLE_ID = "car_copies_per_ug"
CONDITION_ID = "typical_patient"
DATASET_ID = "stein2019_typical_curve"
SIGMA_ID = "sigma_ln_copies"
#: fixed parameters of the observable formula: PEtab id -> (design.conversion key or covariate, unit, meaning)
OBSERVABLE_CONSTANTS: dict[str, tuple[str, str, str]] = {
    "vector_copies_per_cell": ("vcn", "copies/cell", "vector copies per CAR cell (VCN)"),
    "cells_per_ug_dna": ("cells_per_ug", "cells/ug", "diploid cells per ug of genomic DNA"),
    "lymphocyte_blood_fraction": ("lymphocyte_blood_fraction", "fraction", "share of the body's lymphocytes in blood"),
    "non_lymphoid_per_ul": ("non_lymphoid_per_ul", "cells/uL", "non-lymphoid leukocytes in blood"),
    "blood_volume_ul": ("blood_volume_ul", "uL", "this patient's blood volume"),
}
CAR_BLOOD = "car_memory + car_effector + car_exhausted"
OBSERVABLE_FORMULA = (f"vector_copies_per_cell * cells_per_ug_dna * ({CAR_BLOOD}) / ({CAR_BLOOD} + host_lymphocytes"
                      " + non_lymphoid_per_ul * blood_volume_ul / lymphocyte_blood_fraction)")

_FILES = {"sbml": "model.xml", "conditions": "conditions.tsv", "observables": "observables.tsv",
          "measurements": "measurements.tsv", "parameters": "parameters.tsv", "yaml": "problem.yaml",
          "readme": "README.md"}


class Dose(NamedTuple):
    """A management dose of the nominal run: on ``day``, state ``sid`` (SBML id) gains ``amount``."""

    day: float
    sid: str
    amount: float
    what: str


@dataclass
class PetabProblem:
    """A PEtab v1 problem in memory: the SBML text and the four tables, plus a README."""

    name: str
    description: str
    sbml: str
    conditions: pd.DataFrame
    observables: pd.DataFrame
    measurements: pd.DataFrame
    parameters: pd.DataFrame
    readme: str
    doses: list[Dose] = field(default_factory=list)

    @property
    def estimated(self) -> list[str]:
        return self.parameters.loc[self.parameters["estimate"] == 1, "parameterId"].tolist()

    def write(self, out: str | Path) -> Path:
        """Write the problem into folder ``out`` (created if missing); returns ``problem.yaml``.

        Each file is written next to its target and renamed, so a failed write never leaves half
        a file; other files in the folder are left alone.
        """
        out = check_out_dir(out)
        out.mkdir(exist_ok=True)
        tables = {"conditions": self.conditions, "observables": self.observables,
                  "measurements": self.measurements, "parameters": self.parameters}
        for key, df in tables.items():
            _atomic_write(out / _FILES[key], df.to_csv(sep="\t", index=False, lineterminator="\n"))
        _atomic_write(out / _FILES["sbml"], self.sbml)
        _atomic_write(out / _FILES["readme"], self.readme)
        yaml_text = "\n".join([
            f"# PEtab v1 problem '{self.name}' written by carcell; see README.md",
            "format_version: 1",
            f"parameter_file: {_FILES['parameters']}",
            "problems:",
            f"  - sbml_files: [{_FILES['sbml']}]",
            f"    condition_files: [{_FILES['conditions']}]",
            f"    measurement_files: [{_FILES['measurements']}]",
            f"    observable_files: [{_FILES['observables']}]",
            ""])
        _atomic_write(out / _FILES["yaml"], yaml_text)
        return out / _FILES["yaml"]


def check_out_dir(out: str | Path) -> Path:
    """The folder a problem will be written into: a folder or a new name in an existing folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file; give a folder, e.g. --out {out.with_suffix('')}_petab")
    if not out.parent.exists():
        raise ExportError(f"--out {out}: folder {out.parent} does not exist; create it first")
    return out


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- the typical patient ----------------------------------------------------------------------
def typical_overrides(variability: list[str]) -> list[str]:
    """``--set`` overrides that make patient 0 the typical patient, as validation/calibrate_kinetics.py
    does: one patient, a year of follow-up, no spread of covariates, no inter-individual
    variability of the named parameters."""
    sets = ["population.n=1", "trial.follow_up_days=365",
            "population.covariates.weight_kg.log_sd=0", "population.covariates.age_years.log_sd=0",
            "indication.baseline_burden.log_sd=0", "indication.antigen_density.log_sd=0",
            "indication.antigen_negative_fraction=0"]
    return sets + [f"population.variability.{name}=0" for name in variability]


def _nominal_run(scenario: Scenario):
    """Run the typical patient as :func:`carcell.cohort.run.run_cohort` does (same grid, rounds,
    assessments, management and tolerances) and record what each assessment changed.

    Returns the design, the compiled patient, and the doses as :class:`Dose` records.
    """
    from carcell.clinical.management import load_protocol  # noqa: PLC0415 - cohort-level imports
    from carcell.clinical.signs import SignModel  # noqa: PLC0415
    from carcell.cohort.run import (  # noqa: PLC0415
        assessment_days,
        later_infusions,
        make_manager,
        output_times,
        round_days,
        scenario_design,
    )
    from carcell.design.compile import CompiledCohort  # noqa: PLC0415
    from carcell.knowledge import load_knowledge  # noqa: PLC0415
    from carcell.solve.rounds import simulate_batch  # noqa: PLC0415

    k = load_knowledge()
    design, compile_ = scenario_design(scenario, k)
    assessments = assessment_days(k)
    times = output_times(scenario, assessments)
    assessments = assessments[assessments <= times[-1]]
    c: CompiledCohort = compile_(design, 0, 1, ids=np.array([0]))
    # the Manager of run_cohort, for one patient (tests compare with run_cohort itself)
    manager = make_manager(k, design, c, load_protocol(k, scenario.regimen.protocol), SignModel.from_knowledge(k))
    doses: list[Dose] = []

    def assess(day: float, y: np.ndarray, followed: np.ndarray) -> None:
        before = y.copy()
        n_log = len(manager.log)
        manager(day, y, followed)
        what = "; ".join(entry[4] for entry in manager.log[n_log:] if entry[2] == "drug")
        for j in np.flatnonzero(y[0] != before[0]):
            doses.append(Dose(float(day), STATE_IDS[j], float(y[0, j] - before[0, j]), what))

    solver = scenario.trial.solver
    _, status, _ = simulate_batch(c.params, c.y0, times, round_days(design, times), rtol=solver.rtol,
                                  atol=solver.atol, max_steps=solver.max_steps, assess=assess,
                                  assessment_days=assessments, infusions=later_infusions(design, c))
    if status[0] != 0:
        raise ExportError(f"{scenario.name}: carcell's solver failed on the typical patient (status {status[0]}); "
                          "try a tighter trial.solver.rtol or more trial.solver.max_steps")
    return design, c, doses


def add_dose_events(sbml: str, doses: list[Dose]) -> str:
    """The SBML text with one event per dosing day: ``state <- state + amount`` for each dose.

    Amounts and days are constant parameters (``mgmt<k>_day``, ``mgmt<k>_<state>``) in the
    state's unit, so libsbml's unit checks still cover every expression.
    """
    if not doses:
        return sbml
    import libsbml  # noqa: PLC0415 - optional extra, present wherever the export runs

    doc = libsbml.readSBMLFromString(sbml)
    model = doc.getModel()
    days = sorted({d.day for d in doses})
    for k, day in enumerate(days, start=1):
        todays = [d for d in doses if d.day == day]
        _constant(model, f"mgmt{k}_day", day, "day", f"day of management dose {k}")
        ev = model.createEvent()
        ev.setId(f"management_{k}")
        ev.setName(f"management on day {day:g} in carcell's nominal run: {todays[0].what}")
        ev.setUseValuesFromTriggerTime(True)
        trig = ev.createTrigger()
        trig.setInitialValue(False)
        trig.setPersistent(True)
        trig.setMath(libsbml.parseL3Formula(f"time >= mgmt{k}_day"))
        for d in todays:
            name = STATE_NAMES[STATE_IDS.index(d.sid)]
            amount = f"mgmt{k}_{d.sid}"
            _constant(model, amount, d.amount, STATE_UNITS[name], f"{d.what}: added to {d.sid}")
            ea = ev.createEventAssignment()
            ea.setVariable(d.sid)
            ea.setMath(libsbml.parseL3Formula(f"{d.sid} + {amount}"))
    model.appendNotes('<body xmlns="http://www.w3.org/1999/xhtml"><p>PEtab export: the toxicity management '
                      "doses carcell gives this patient at the nominal parameters are events management_1.."
                      f"management_{len(days)} (days {', '.join(f'{d:g}' for d in days)}).</p></body>")
    return libsbml.writeSBMLToString(doc)


def _constant(model, sid: str, value: float, unit: str, name: str) -> None:
    par = model.createParameter()
    par.setId(sid)
    par.setConstant(True)
    par.setValue(float(value))
    par.setUnits(unit)
    par.setName(name)


# -- the tables ---------------------------------------------------------------------------------
def _parameter_table(values: dict[str, float], constants: dict[str, float], omegas: dict[str, float]) -> pd.DataFrame:
    from carcell.interop.sbml_export import PARAMETER_UNITS  # noqa: PLC0415

    rows = []
    for name in PARAMETER_NAMES:
        x0 = values[name]
        row = {"parameterId": name, "parameterName": f"{name} [{PARAMETER_UNITS[name]}]",
               "parameterScale": "lin", "lowerBound": np.nan, "upperBound": np.nan, "nominalValue": x0,
               "estimate": 0, "objectivePriorType": "", "objectivePriorParameters": ""}
        if name in FITTED:
            sd_ln = omegas.get(name, ASSUMED_PRIOR_SD_LN)
            row.update(parameterScale="log10", lowerBound=x0 / BOUND_FACTOR, upperBound=x0 * BOUND_FACTOR,
                       estimate=1, objectivePriorType="parameterScaleNormal",
                       objectivePriorParameters=f"{math.log10(x0)!r};{sd_ln / math.log(10)!r}")
        rows.append(row)
    for pid, (_, unit, meaning) in OBSERVABLE_CONSTANTS.items():
        rows.append({"parameterId": pid, "parameterName": f"{meaning} [{unit}]", "parameterScale": "lin",
                     "nominalValue": constants[pid], "estimate": 0})
    rows.append({"parameterId": SIGMA_ID, "parameterName": "SD of the natural-log measurement error [1]",
                 "parameterScale": "lin", "nominalValue": stein_residual_sd(), "estimate": 0})
    df = pd.DataFrame(rows)
    # estimated parameters first: that is where a reader looks
    return df.sort_values("estimate", ascending=False, kind="stable", ignore_index=True)


def stein_typical_curve(days: tuple[float, ...] = MEASUREMENT_DAYS) -> np.ndarray:
    """Stein 2019 typical transgene level (copies/ug) at ``days``, from the published preset."""
    from carcell.published.stein2019 import Stein2019  # noqa: PLC0415

    return Stein2019().simulate(t=np.asarray(days, dtype=float))["transgene"].to_numpy()[0]


def _tisacel_kinetics(scenario_path: Path | None) -> PetabProblem:
    from carcell.design import resolve_design  # noqa: PLC0415
    from carcell.knowledge import load_knowledge  # noqa: PLC0415
    from carcell.scenario import load_scenario  # noqa: PLC0415

    path = Path(scenario_path) if scenario_path is not None else TISACEL_SCENARIO
    if not path.exists():
        raise ExportError(f"--scenario {path}: not found (carcell installed without its examples?); give the "
                          "tisagenlecleucel scenario, e.g. --scenario examples/tisacel_ball.yaml")
    k = load_knowledge()
    base = load_scenario(path, typical_overrides([]))
    # the design's inter-individual SDs (before the typical patient switches them off)
    omegas = {n: v for n, v in resolve_design(base, k).variability.items() if n in FITTED and v > 0}
    scenario = load_scenario(path, typical_overrides(sorted(set(k.names("car_t.variability"))
                                                            | set(base.population.variability))))
    design, c, doses = _nominal_run(scenario)
    pm = patient_model(c, 0, design=design)
    sbml = add_dose_events(build_sbml(pm, check=False), doses)
    conv = {**design.conversion, "blood_volume_ul": float(c.covariates["blood_volume_ul"].iat[0])}
    constants = {pid: float(conv[key]) for pid, (key, _, _) in OBSERVABLE_CONSTANTS.items()}
    curve = stein_typical_curve()
    conditions = pd.DataFrame({"conditionId": [CONDITION_ID],
                               "conditionName": [f"typical patient of {path.name} (covariates at their medians)"]})
    observables = pd.DataFrame({
        "observableId": [OBSERVABLE_ID],
        "observableName": ["CAR transgene copies per ug genomic DNA in blood (qPCR)"],
        "observableFormula": [OBSERVABLE_FORMULA], "observableTransformation": ["log"],
        "noiseFormula": [SIGMA_ID], "noiseDistribution": ["normal"]})
    measurements = pd.DataFrame({
        "observableId": OBSERVABLE_ID, "simulationConditionId": CONDITION_ID, "measurement": curve,
        "time": np.asarray(MEASUREMENT_DAYS), "datasetId": DATASET_ID})
    parameters = _parameter_table(pm.values, constants, omegas)
    description = ("CAR kinetics of the typical tisagenlecleucel B-ALL patient fitted to the Stein 2019 typical "
                   "curve (validation/calibrate_kinetics.py)")
    problem = PetabProblem("tisacel_kinetics", description, sbml, conditions, observables, measurements,
                           parameters, "", doses)
    problem.readme = _readme(problem, scenario, path, omegas, k)
    return problem


#: problem name -> (builder taking an optional scenario path, one-line description)
PROBLEMS: dict[str, tuple[Callable[[Path | None], PetabProblem], str]] = {
    "tisacel_kinetics": (_tisacel_kinetics, ("typical tisa-cel B-ALL patient vs the Stein 2019 typical curve; "
                                             "estimates rho_effector, antigen_half_stimulation, k_reversion")),
}


def petab_problem(name: str, *, scenario: str | Path | None = None) -> PetabProblem:
    """Build the calibration problem ``name`` (see :data:`PROBLEMS`) as a PEtab v1 problem.

    Parameters
    ----------
    name : str
        A problem of :data:`PROBLEMS`, e.g. ``"tisacel_kinetics"``.
    scenario : path, optional
        The scenario of the problem's patient (default: the bundled example it was made for).

    Raises
    ------
    ExportError
        An unknown problem name (the message lists the known ones), a missing scenario file.

    Examples
    --------
    >>> from carcell.interop.petab import petab_problem, lint_petab
    >>> yaml_path = petab_problem("tisacel_kinetics").write("petab_tisacel")   # doctest: +SKIP
    >>> lint_petab(yaml_path).errors                                            # doctest: +SKIP
    []
    """
    if name not in PROBLEMS:
        near = difflib.get_close_matches(str(name), list(PROBLEMS), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise ExportError(f"PEtab problem {name!r} is unknown; {hint}known: {', '.join(sorted(PROBLEMS))}")
    build, _ = PROBLEMS[name]
    return build(None if scenario is None else Path(scenario))


# -- checking -----------------------------------------------------------------------------------
class LintReport(NamedTuple):
    """What the petab linter said: error and warning messages."""

    errors: list[str]
    warnings: list[str]


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def lint_petab(yaml_path: str | Path) -> LintReport:
    """Load ``problem.yaml`` with ``petab.v1`` and run its linter (``petablint`` does the same)."""
    try:
        import petab.v1 as petab_v1  # noqa: PLC0415 - optional extra
    except ImportError:
        raise ExportError("the petab library is not installed; install the sbml extra: "
                          "pip install -e '.[sbml]'") from None
    logger = logging.getLogger("petab")
    handler = _Collect()
    logger.addHandler(handler)
    try:
        problem = petab_v1.Problem.from_yaml(str(yaml_path))
        failed = petab_v1.lint_problem(problem)
    finally:
        logger.removeHandler(handler)
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.ERROR]
    if failed and not errors:
        errors = ["petab.v1.lint_problem reported errors (see its log)"]
    return LintReport(errors, [r.getMessage() for r in handler.records if r.levelno == logging.WARNING])


# -- README -------------------------------------------------------------------------------------
def _readme(problem: PetabProblem, scenario: Scenario, path: Path, omegas: dict[str, float], k) -> str:
    from carcell import __version__  # noqa: PLC0415
    from carcell.published.stein2019 import Stein2019  # noqa: PLC0415

    st = Stein2019().typical()
    p = problem.parameters.set_index("parameterId")
    est = "\n".join(
        f"| `{n}` | {p.at[n, 'nominalValue']:.6g} | {p.at[n, 'lowerBound']:.4g} .. {p.at[n, 'upperBound']:.4g} | "
        f"normal on log10, SD {omegas.get(n, ASSUMED_PRIOR_SD_LN) / math.log(10):.4g} "
        f"(ln SD {omegas.get(n, ASSUMED_PRIOR_SD_LN):g}: "
        + (f"design IIV, car_t.variability.{n} [{k.entry(f'car_t.variability.{n}').source}]" if n in omegas
           else "assumption, no IIV in the design") + ") |"
        for n in problem.estimated)
    meas = "\n".join(f"| {t:g} | {v:.6g} |" for t, v in zip(problem.measurements["time"],
                                                             problem.measurements["measurement"]))
    doses = ("\n".join(f"| {d.day:g} | `{d.sid}` + {d.amount:.6g} | {d.what} |" for d in problem.doses)
             or "| - | - | none |")
    consts = "\n".join(f"| `{pid}` | {p.at[pid, 'nominalValue']:.6g} {unit} | {meaning} |"
                       for pid, (_, unit, meaning) in OBSERVABLE_CONSTANTS.items())
    return f"""# PEtab problem `{problem.name}` (written by carcell {__version__})

{problem.description}.

Files: `problem.yaml` (PEtab v1), `model.xml` (SBML L3V2: carcell's model of the typical patient
of `{path.name}`, scenario '{scenario.name}', plus the management doses as events),
`conditions.tsv`, `observables.tsv`, `measurements.tsv`, `parameters.tsv`.

## Measurements: points on a published typical curve, not patient data

The {len(problem.measurements)} measurements (`datasetId` `{DATASET_ID}`) are the typical transgene
level of Stein AM et al. (2019) CPT Pharmacometrics Syst Pharmacol 8:285, doi:10.1002/psp4.12388
(Cmax {st['cmax']:g} copies/ug at Tmax {st['tmax']:g} d, fold expansion {st['foldx']:g}, decline rates
{st['alpha']:g}/d and {st['beta']:g}/d, slow fraction {st['fb']:g}; Table 1, from
carcell/knowledge/data/published/stein2019.yaml) evaluated at clinical sampling days. Noise: log-normal
(`observableTransformation` log, normal noise), SD {stein_residual_sd()} of the natural-log
error: Stein's residual error (fixed parameter `{SIGMA_ID}`).

| day | copies/ug |
|---|---|
{meas}

## Estimated parameters (log10 scale; bounds x{1 / BOUND_FACTOR:g} .. x{BOUND_FACTOR:g} of the nominal value)

| parameter | nominal | bounds | prior (objectivePriorType parameterScaleNormal) |
|---|---|---|---|
{est}

The nominal values are the patient's model values (what the SBML holds), i.e. the typical
values of carcell/knowledge/data/car_t.yaml after the design's product factors. All
{len(PARAMETER_NAMES) - len(problem.estimated)} other model parameters are fixed (`estimate` 0) at this
patient's values.

## Observable `{OBSERVABLE_ID}`

`{OBSERVABLE_FORMULA}`

carcell's qPCR read-out: VCN x cells per ug x CAR cells / all nucleated blood cells, with the
whole-body counts of the SBML (`car_memory`, `car_effector`, `car_exhausted`, `host_lymphocytes`)
and these fixed parameters (from the design and the patient's covariates):

| parameter | value | meaning |
|---|---|---|
{consts}

## Toxicity management as fixed events

carcell manages CRS and ICANS at twice-daily assessments. PEtab v1 has no dosing table, so the
doses carcell gives this patient at the nominal parameters are SBML events:

| day | state change | carcell's decision |
|---|---|---|
{doses}

A fit that moves the parameters keeps this schedule; carcell would decide the doses anew.
Extinction of populations below one cell at clinical rounds is not in the model (see
docs/sbml-export.md, "What is not exported").

## Fitting it

```python
import pypesto.petab
importer = pypesto.petab.PetabImporter.from_yaml("problem.yaml")   # AMICI, or simulator_type="roadrunner"
problem = importer.create_problem()
```
"""
