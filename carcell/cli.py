"""The ``carcell`` command: ``carcell run`` and ``carcell validate``.

A mistake in the input ends with one line on stderr naming the field and the fix, and exit
status 2; results already written are never deleted.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from carcell.errors import CarcellError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="carcell: virtual CAR-T cohorts from a scenario file.")
out_console = Console()
err_console = Console(stderr=True)

SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="override a scenario field, e.g. --set product.dose.cells_per_kg=5e6")]


def _load(scenario: Path, n: int | None, seed: int | None, overrides: list[str] | None):
    from carcell.scenario import load_scenario

    sets = list(overrides or [])
    if n is not None:
        sets.append(f"population.n={n}")
    if seed is not None:
        sets.append(f"population.seed={seed}")
    return load_scenario(scenario, sets)


@app.command()
def validate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    overrides: SetOpt = None,
) -> None:
    """Check a scenario file and show what would run."""
    from carcell.design import resolve_design
    from carcell.knowledge import load_knowledge

    sc = _load(scenario, None, None, overrides)
    d = resolve_design(sc, load_knowledge())
    p = sc.product
    dose = (f"{p.dose.cells_per_kg:.3g} CAR+ cells/kg" if p.dose.cells_per_kg is not None
            else f"{p.dose.cells:.3g} CAR+ cells (flat)")
    t = Table(title=f"{scenario} is valid", show_header=False)
    t.add_row("scenario", sc.name)
    t.add_row("product", f"{p.name}: {p.chassis}, anti-{d.antigen} CAR, {p.car.costim} costimulation")
    t.add_row("dose", dose)
    t.add_row("indication", f"{d.disease}: baseline burden median {d.burden[0]:.3g} cells "
              f"(log-SD {d.burden[1]:.2g}); response by {d.response_criteria}")
    t.add_row("regimen", f"lymphodepletion: {sc.regimen.lymphodepletion} "
              f"({100 * d.host_survival:.0f}% of lymphocytes left)")
    t.add_row("population", f"n={sc.population.n}, seed={sc.population.seed}, variability on "
              + ", ".join(f"{k}={v:g}" for k, v in sorted(d.variability.items())))
    t.add_row("trial", f"{sc.trial.follow_up_days:g} days, outputs every "
              f"{sc.trial.output_every_days:g} day(s), rtol={sc.trial.solver.rtol:g}")
    t.add_row("data sources", f"{len(d.knowledge.used)} knowledge entries")
    out_console.print(t)


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    n: Annotated[Optional[int], typer.Option("-n", help="number of patients")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed")] = None,
    overrides: SetOpt = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """Simulate a virtual cohort and write its results to --out."""
    from carcell.cohort import run_cohort
    from carcell.io.outputs import write_outputs

    sc = _load(scenario, n, seed, overrides)
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    with Progress(TextColumn("[bold]simulating"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("sim", total=1.0)
        result = run_cohort(sc, progress=lambda d, t: bar.update(task, completed=d / max(t, 1)))
    summ = write_outputs(result, out, {"command": " ".join(sys.argv)})
    if plots:
        from carcell.report.plots import write_plots

        write_plots(result, out)
    _print_summary(summ, out)


def _fmt(q: dict, f: str = ".3g") -> str:
    if q["median"] is None:
        return "-"
    return f"{q['median']:{f}} ({q['p5']:{f}}-{q['p95']:{f}})"


def _print_summary(s: dict, out: Path) -> None:
    t = Table(title=f"{s['scenario']}: {s['cohort_size']} virtual patients, {s['disease']}")
    t.add_column("measure")
    t.add_column("value (median, 5-95% range)")
    rates = ", ".join(f"{k} {100 * v:.0f}%" for k, v in s["response_rates"].items())
    t.add_row(f"best response ({s['response_criteria']})", rates or "-")
    t.add_row("Cmax, copies/ug", _fmt(s["cmax_copies_per_ug"]))
    t.add_row("Cmax, cells/uL", _fmt(s["cmax_cells_per_ul"]))
    t.add_row("Tmax, days", _fmt(s["tmax_days"], ".1f"))
    t.add_row("AUC 0-28, copies*day/ug", _fmt(s["auc_0_28_copies_day_per_ug"]))
    t.add_row("IL-6 peak, pg/mL", _fmt(s["il6_peak_pg_per_ml"]))
    ttp = s["median_time_to_progression_days"]
    t.add_row("median time to progression", "not reached" if ttp is None else f"{ttp:g} days")
    t.add_row("antigen-negative relapses", str(s["antigen_negative_relapses"]))
    if s["solver_failures"]:
        t.add_row("[red]solver failures", f"[red]{s['solver_failures']} (see solver_status)")
    out_console.print(t)
    out_console.print(f"results in {out}/")


def main() -> None:
    try:
        app(standalone_mode=False)
    except CarcellError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Exception as err:  # click usage errors
        import click

        if isinstance(err, click.ClickException):
            err.show()
            sys.exit(2)
        if isinstance(err, click.exceptions.Abort):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
