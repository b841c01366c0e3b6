"""``carcell sensitivity``: the command function (registered in carcell/cli.py).

It parses the arguments, calls :func:`carcell.sensitivity.analyse_scenario`, prints the
indices and writes the files; the science is in ``analysis`` and ``evaluate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from carcell.errors import CarcellError, ScenarioError

out_console = Console()
err_console = Console(stderr=True)
DEFAULT_SAMPLES = {"sobol": 64, "morris": 20}


def read_raw(scenario: Path, overrides: list[str] | None) -> dict:
    """The scenario mapping with ``--set`` applied, after checking that it validates."""
    from carcell.io.yamlio import load_yaml_text
    from carcell.scenario.load import apply_overrides, load_scenario

    load_scenario(scenario, list(overrides or []))   # one-line errors for a bad file or --set
    return apply_overrides(load_yaml_text(scenario.read_text()), list(overrides or []))


def sensitivity(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (single arm)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    param: Annotated[Optional[list[str]], typer.Option(
        "--param", "-p", help="PATH=LOW:HIGH[:log], PATH=xLOW:HIGH (factors of the bundled value) or "
        "PATH=[A,B]; PATH a scenario field or knowledge:dotted.path; repeatable")] = None,
    params_file: Annotated[Optional[Path], typer.Option(
        "--params-file", help="YAML file with params: [...] (docs/sensitivity.md)")] = None,
    method: Annotated[str, typer.Option(
        "--method", "-m", help="sobol (variance shares) or morris (screening)")] = "sobol",
    samples: Annotated[Optional[int], typer.Option(
        "--samples", "-N",
        help="Sobol' base points (power of 2, default 64) or Morris trajectories (default 20)")] = None,
    n: Annotated[Optional[int], typer.Option(
        "-n", help="patients per virtual cohort (default: the scenario's)")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", help="seed of the design, the bootstrap and every cohort (default: the scenario's)")] = None,
    outcomes: Annotated[Optional[str], typer.Option(
        "--outcomes", help="comma-separated outcomes (default cr_rate,crs_grade3plus_rate,"
        "log10_cmax_median_copies_per_ug,pfs_landmark)")] = None,
    landmark_days: Annotated[Optional[float], typer.Option(
        "--landmark-days", help="day of pfs_landmark (default 365 or the follow-up)")] = None,
    workers: Annotated[int, typer.Option("--workers", help="processes evaluating points in parallel")] = 1,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Dask scheduler address (workers started with --nthreads 1), e.g. tcp://host:8786")] = None,
    levels: Annotated[int, typer.Option("--levels", help="Morris grid levels (even)")] = 4,
    resamples: Annotated[int, typer.Option("--resamples", help="bootstrap resamples of the 95% intervals")] = 100,
    overrides: Annotated[Optional[list[str]], typer.Option(
        "--set", help="override a scenario field for every point, e.g. --set trial.follow_up_days=180")] = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """Global sensitivity (Sobol' or Morris) of CR rate, grade >= 3 CRS, Cmax and PFS to model
    parameters and design choices: one virtual cohort per sample point, the same patients in all."""
    from carcell.sensitivity.analysis import analyse_scenario
    from carcell.sensitivity.params import load_params_file, parse_param

    method = method.lower()
    params = [parse_param(s) for s in param or []]
    if params_file is not None:
        params += load_params_file(params_file)
    if not params:
        raise ScenarioError("no parameters: give --param PATH=LOW:HIGH (repeatable) or --params-file FILE")
    if workers < 1 or resamples < 10:
        raise ScenarioError(f"--workers {workers} / --resamples {resamples}: need at least 1 worker and 10 resamples")
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    raw = read_raw(scenario, overrides)
    names = [o.strip() for o in outcomes.split(",") if o.strip()] if outcomes else None
    n_samples = samples if samples is not None else DEFAULT_SAMPLES.get(method, 64)
    client = None
    if scheduler is not None:
        from carcell.scale.execute import connect   # noqa: PLC0415 - optional extra

        client = connect(scheduler)
    try:
        with Progress(TextColumn("[bold]sensitivity: cohorts"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("points", total=None)

            def step(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = analyse_scenario(raw, params, source=str(scenario), method=method, n_samples=n_samples,
                                      n_patients=n, seed=seed, landmark_days=landmark_days, outcomes=names,
                                      workers=workers, progress=step, resamples=resamples, num_levels=levels,
                                      executor=None if client is None else dask_executor(client, scheduler))
    finally:
        if client is not None:
            client.close()
    files = result.write(out, plots=plots)
    _print(result)
    out_console.print(f"written {', '.join(f.name for f in files)} to {out}/", highlight=False, soft_wrap=True)


def dask_executor(client, address: str):
    """Sample points on the Dask cluster of ``client``: each point is one task (retried when its
    worker dies), results in order. A point sets knowledge values for its own run, so two points
    must never share a process: every worker must run one thread (``dask worker --nthreads 1``)."""
    threads = set(client.nthreads().values())
    if threads - {1}:
        client.close()
        raise CarcellError(f"--scheduler {address}: workers run {max(threads)} threads; start them with "
                           "`dask worker ADDRESS --nthreads 1` (a sample point changes process-wide values)")

    def run(fn, points):
        return client.gather(client.map(fn, list(points), pure=False, retries=3))

    return run


def _print(result) -> None:
    sobol = result.method == "sobol"
    cohorts = f"{len(result.points)} cohorts of {result.settings.get('n_patients', '?')} patients"
    title = (f"Sobol' indices (N={result.n_samples}, {cohorts}), 95% bootstrap intervals" if sobol
             else f"Morris screening (r={result.n_samples}, {cohorts}), 95% bootstrap intervals")
    t = Table(title=title)
    for col in ("outcome", "parameter", *(("S1", "ST") if sobol else ("mu*", "sigma", "rank"))):
        t.add_column(col, overflow="fold")
    for r in result.indices.itertuples():
        if sobol:
            t.add_row(r.outcome, r.parameter, f"{r.S1:.3f} +- {r.S1_conf:.3f}", f"{r.ST:.3f} +- {r.ST_conf:.3f}")
        else:
            t.add_row(r.outcome, r.parameter, f"{r.mu_star:.3g} +- {r.mu_star_conf:.2g}", f"{r.sigma:.3g}", str(r.rank))
    out_console.print(t)
    for o, why in result.notes.items():
        err_console.print(f"[yellow]note:[/yellow] {o}: no indices, {why}", highlight=False, soft_wrap=True)
    failures = result.values.get("solver_failures")
    if failures is not None and failures.sum() > 0:
        err_console.print(f"[yellow]warning:[/yellow] {int(failures.sum())} patient solves failed across the "
                          f"cohorts (samples.parquet, solver_failures); they are left out of the outcomes",
                          highlight=False, soft_wrap=True)
