"""``carcell sbml``: run an SBML model as a virtual cohort, or show what carcell reads from it.

Registered by ``carcell/cli.py`` as a sub-command group. Mistakes raise
:class:`carcell.errors.CarcellError` with one line naming the option and the fix; the main
CLI prints it and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from carcell.errors import ScenarioError

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="SBML models (e.g. BioModels) as carcell cohorts: run, show.")
_console = Console()

PairOpt = Optional[list[str]]


def _pairs(values: list[str] | None, option: str, example: str) -> dict[str, float]:
    """``["k=0.3", ...]`` -> ``{"k": 0.3}``; one-line errors naming the option."""
    out: dict[str, float] = {}
    for item in values or []:
        name, sep, number = item.partition("=")
        if not sep or not name.strip():
            raise ScenarioError(f"{option} {item!r}: write NAME=NUMBER, e.g. {option} {example}")
        try:
            out[name.strip()] = float(number)
        except ValueError:
            raise ScenarioError(f"{option} {item!r}: {number!r} is not a number; e.g. {option} {example}") from None
    return out


@app.command("run")
def run(
    model: Annotated[Path, typer.Argument(help="SBML file (.xml)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    n: Annotated[Optional[int], typer.Option("-n", help="number of patients (default 1, or 100 with --vary)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="random seed of the parameter draws")] = 0,
    days: Annotated[float, typer.Option("--days", help="days to simulate")] = 100.0,
    points: Annotated[int, typer.Option("--points", help="output times from 0 to --days")] = 201,
    vary: Annotated[PairOpt, typer.Option("--vary", help="log-normal variability PARAM=CV, e.g. --vary k_E=0.3")] = None,
    floor: Annotated[PairOpt, typer.Option("--floor", help="keep a species at or above a value, SPECIES=VALUE")] = None,
    set_: Annotated[PairOpt, typer.Option("--set", help="typical value of a parameter, PARAM=VALUE")] = None,
    time_unit: Annotated[Optional[str], typer.Option("--time-unit", help="model time unit when the file declares none: second, minute, hour, day, week")] = None,
    method: Annotated[str, typer.Option("--method", help="auto (Dormand-Prince, LSODA for stiff patients), dopri5 or lsoda")] = "auto",
    rtol: Annotated[float, typer.Option("--rtol", help="relative tolerance")] = 1e-8,
    atol: Annotated[float, typer.Option("--atol", help="absolute tolerance (species units)")] = 1e-12,
    plots: Annotated[bool, typer.Option(help="write trajectories.png")] = True,
) -> None:
    """Simulate MODEL.xml for a cohort; write patients.parquet, trajectories.nc, trajectories.png."""
    from carcell.interop.sbml_cohort import run_sbml_cohort
    from carcell.interop.sbml_import import load_sbml
    from carcell.interop.sbml_outputs import write_sbml_outputs

    variability = _pairs(vary, "--vary", "k_E=0.3")
    floors = _pairs(floor, "--floor", "U=1e-9")
    parameters = _pairs(set_, "--set", "alpha_1=0.183")
    if out.exists() and not out.is_dir():
        raise ScenarioError(f"--out {out}: exists and is not a directory; choose another path")
    m = load_sbml(model, time_unit=time_unit)
    size = n if n is not None else (100 if variability else 1)
    result = run_sbml_cohort(m, size, seed=seed, variability=variability, parameters=parameters, floors=floors,
                             t_end_days=days, n_points=points, rtol=rtol, atol=atol, method=method)
    summ = write_sbml_outputs(result, out, plots=plots)
    t = Table(title=f"{m.name}: {size} patient(s), {days:g} days (model time in {m.time_unit})")
    for col in ("species", "units", "peak median (5-95%)", "day of peak", "final median"):
        t.add_column(col)

    def fmt(q: dict) -> str:
        return "-" if q["median"] is None else f"{q['median']:.3g} ({q['p5']:.3g}-{q['p95']:.3g})"

    for sid, s in summ["species"].items():
        day = s["time_of_max_days"]["median"]
        final = s["final"]["median"]
        t.add_row(sid, s["units"], fmt(s["max"]), "-" if day is None else f"{day:.3g}",
                  "-" if final is None else f"{final:.3g}")
    _console.print(t)
    for note in m.notes:
        _console.print(f"note: {note}")
    if summ["solver_failures"]:
        _console.print(f"[yellow]{summ['solver_failures']} patient(s) failed; see solver_status in patients.parquet")
    _console.print(f"written to {out}: patients.parquet, trajectories.nc"
                   + (", trajectories.png" if plots else "") + ", summary.json, provenance.json")


@app.command("show")
def show(
    model: Annotated[Path, typer.Argument(help="SBML file (.xml)")],
    time_unit: Annotated[Optional[str], typer.Option("--time-unit", help="model time unit when the file declares none")] = None,
) -> None:
    """What carcell reads from MODEL.xml: species and units, parameters, rules, events."""
    from carcell.interop.sbml_import import load_sbml

    m = load_sbml(model, time_unit=time_unit)
    _console.print(f"{m.name} ({m.model_id}), SBML L{m.level}V{m.version}; time unit: {m.time_unit}")
    sp = Table(title="species")
    for col in ("id", "units", "value", "integrated"):
        sp.add_column(col)
    for s in m.species:
        sp.add_row(s.id, s.units, "amount" if s.is_amount else "concentration",
                   "yes" if s.id in m.states else ("rule" if s.id in m.rules else "fixed"))
    _console.print(sp)
    pt = Table(title="parameter table (names for --vary and --set)")
    for col in ("name", "value", "kind"):
        pt.add_column(col)
    for c, v in zip(m.columns, m.defaults):
        kind = m.column_kinds[c] + (" (initial assignment)" if c in m.initial_assignments else "")
        pt.add_row(c, f"{v:.6g}", kind)
    _console.print(pt)
    for target, text in m.rule_text.items():
        shown = f"d{target}/dt = {text[5:]}" if text.startswith("d/dt ") else f"{target} = {text}"
        _console.print(f"rule: {shown}", highlight=False)
    for e in m.events:
        _console.print(f"event {e.id}: when {e.trigger}, set {', '.join(t for t, _ in e.assignments)}")
    for note in m.notes:
        _console.print(f"note: {note}")
