"""``carcell export-model``: one virtual patient's model as SBML (and Antimony) for other tools.

A typer sub-app, registered by ``carcell/cli.py``. Mistakes raise
:class:`carcell.errors.CarcellError` with one line naming the option and the fix; the main CLI
prints it and exits with status 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from carcell.errors import ScenarioError
from carcell.model.states import N_STATES

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Export carcell's model of one virtual patient (SBML L3V2, Antimony) or a calibration "
                       "problem (PEtab v1).")
_console = Console()


@app.callback()
def _group() -> None:
    """Export carcell's model of one virtual patient (SBML L3V2, Antimony) or a calibration problem (PEtab v1)."""


def _write(path: Path, text: str, option: str) -> None:
    """Write next to the target, then rename: a failed write never leaves half a file."""
    if path.is_dir():
        raise ScenarioError(f"{option} {path}: is a directory; give a file name, e.g. {option} {path / 'model.xml'}")
    if not path.parent.exists():
        raise ScenarioError(f"{option} {path}: folder {path.parent} does not exist; create it first")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)   # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@app.command("sbml")
def sbml(
    scenario: Annotated[Path, typer.Argument(help="scenario file (.yaml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="SBML file to write, e.g. model.xml")],
    patient: Annotated[int, typer.Option("--patient", "-p", help="patient id, 0 .. population.n - 1")] = 0,
    antimony: Annotated[Optional[Path], typer.Option("--antimony", help="also write Antimony text here")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="override a scenario field, path=value")] = None,
) -> None:
    """Write PATIENT's model (SBML Level 3 Version 2, libsbml-checked) from SCENARIO."""
    from carcell.interop.sbml_export import build_sbml, patient_model, sbml_diagnostics
    from carcell.scenario import load_scenario

    sc = load_scenario(scenario, set_ or [])
    pm = patient_model(sc, patient)
    text = build_sbml(pm)
    ant_text = None
    if antimony is not None:
        from carcell.interop.antimony import sbml_to_antimony

        ant_text = sbml_to_antimony(text)
    _write(out, text, "--out")
    if ant_text is not None:
        _write(antimony, ant_text, "--antimony")
    findings = sbml_diagnostics(text)
    warnings = [m for m in findings if m[0] == "warning"]
    _console.print(f"{sc.name}, patient {pm.patient}: SBML L3V2 written to {out}"
                   + (f", Antimony to {antimony}" if antimony is not None else ""), highlight=False)
    _console.print(f"{N_STATES} states (rate rules; cell populations as ln of counts), {len(pm.values)} parameters, "
                   f"{len(pm.infusions)} later infusion(s) as events; libsbml: 0 errors, "
                   f"{len(warnings)} warning(s)", highlight=False)
    for _, category, message in warnings[:5]:
        _console.print(f"warning ({category}): {message}", highlight=False)
    _console.print("not in the export: toxicity management at assessments, extinction at clinical rounds "
                   "(alive flags held at their day-0 values); see docs/sbml-export.md", highlight=False)


@app.command("petab")
def petab(
    problem: Annotated[str, typer.Argument(help="calibration problem, e.g. tisacel_kinetics")],
    out: Annotated[Path, typer.Option("--out", "-o", help="folder to write problem.yaml and its files into")],
    scenario: Annotated[Optional[Path], typer.Option(
        "--scenario", help="scenario of the problem's patient (default: the bundled example it was made for)")] = None,
) -> None:
    """Write calibration PROBLEM as a PEtab v1 problem and check it with the petab linter.

    The folder gets problem.yaml, the SBML model, the condition, observable, measurement and
    parameter tables (bounds and priors) and a README; see docs/sbml-export.md, "PEtab".
    """
    from carcell.interop.petab import check_out_dir, lint_petab, petab_problem

    check_out_dir(out)      # before the build: a wrong --out fails at once
    pp = petab_problem(problem, scenario=scenario)
    yaml_path = pp.write(out)
    report = lint_petab(yaml_path)
    _console.print(f"{pp.name}: PEtab v1 problem written to {yaml_path} (model.xml, conditions.tsv, "
                   "observables.tsv, measurements.tsv, parameters.tsv, README.md)", highlight=False)
    _console.print(f"{len(pp.estimated)} estimated parameters ({', '.join(pp.estimated)}), "
                   f"{len(pp.measurements)} measurements, {len(pp.doses)} management dose(s) as events; "
                   f"petab lint: {len(report.errors)} errors, {len(report.warnings)} warning(s)", highlight=False)
    for message in report.errors[:5]:
        _console.print(f"lint error: {message}", highlight=False)
    _console.print("the measurements are points on the published typical curve, not patient data; "
                   "see README.md in the folder", highlight=False)
