"""``carcell models list|show|run``: the published-model library on the command line.

Registered by ``carcell/cli.py`` as ``app.add_typer(models_app, name="models")``. Holds no
science: it calls :mod:`carcell.published` and prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from carcell.errors import CarcellError

# the presets (and SciPy's integrators behind them) are imported by the commands that use them,
# so that every other carcell command starts without them

app = typer.Typer(no_args_is_help=True, help="Published CAR-T models as tested presets: list, show, run.")
out_console = Console()


@app.command("list")
def list_models() -> None:
    """Every preset with its citation and what it reproduces."""
    from carcell.published import PRESETS

    t = Table("name", "citation", "reproduces", show_lines=True)
    for name, m in PRESETS.items():
        t.add_row(name, f"{m.citation.short}, {m.citation.journal}, doi:{m.citation.doi}", m.reproduces)
    out_console.print(t)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="preset name, see `carcell models list`")],
    set_name: Annotated[Optional[str], typer.Option(
        "--set", help="parameter set (default: the paper's main one)")] = None,
) -> None:
    """Citation, equations and the parameter table with sources."""
    from carcell.published import get

    m = get(name)
    out_console.print(f"[bold]{m.name}[/bold]: {m.citation}", highlight=False)
    out_console.print(f"reproduces: {m.reproduces}\nsolver: {m.solver}", highlight=False)
    protocols = ", ".join(m.protocols()) or "-"
    out_console.print(f"parameter sets: {', '.join(m.parameter_sets())}; protocols: {protocols}", highlight=False)
    out_console.print("\n" + m.equations + "\n", highlight=False, markup=False)
    chosen = set_name or m.default_set
    t = Table("parameter", "value", "unit", "source", title=f"parameter set {chosen}", show_lines=False)
    for k, p in m.parameters(chosen).items():
        t.add_row(k, f"{p.value:.6g}", p.unit, f"{p.source} {p.note}".strip())
    out_console.print(t)
    var = m.variability()
    if var:
        v = Table("parameter", "omega (log-normal SD)", "source", title="inter-individual variability")
        for k, p in var.items():
            v.add_row(k, f"{p.value:.3g}", f"{p.source} {p.note}".strip())
        out_console.print(v)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="preset name, see `carcell models list`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    n: Annotated[int, typer.Option("-n", help="virtual patients")] = 100,
    seed: Annotated[int, typer.Option("--seed", help="random seed")] = 0,
    days: Annotated[Optional[float], typer.Option(
        "--days", help="follow-up in days (default: the paper's span)")] = None,
    set_name: Annotated[Optional[str], typer.Option("--set", help="parameter set")] = None,
    protocol: Annotated[Optional[str], typer.Option("--protocol", help="experiment/dosing protocol")] = None,
) -> None:
    """Run a preset over a virtual cohort; write patients.parquet, trajectories.nc and a plot."""
    from carcell.published import get

    m = get(name)
    if set_name is not None and set_name not in m.parameter_sets():
        raise CarcellError(f"--set {set_name!r}: not a parameter set of {name}; "
                           f"known: {', '.join(m.parameter_sets())}")
    if protocol is not None and protocol not in m.protocols():
        raise CarcellError(f"--protocol {protocol!r}: not a protocol of {name}; "
                           f"known: {', '.join(m.protocols()) or 'none'}")
    cohort = m.cohort(n, seed, days, set_name=set_name, protocol=protocol)
    paths = cohort.write(out)
    failed = int((cohort.patients["solver_status"] != "ok").sum())
    out_console.print(f"{name}: {n} virtual patients ({cohort.set_name}"
                      f"{', ' + cohort.protocol if cohort.protocol else ''}), {failed} solver failures", highlight=False)
    summary = cohort.patients.drop(columns=["patient", "solver_status"]).median(numeric_only=True)
    t = Table("quantity", "median")
    for k, v in summary.items():
        t.add_row(str(k), f"{v:.4g}")
    out_console.print(t)
    out_console.print("written " + ", ".join(str(p) for p in paths), highlight=False)
