"""The ``carcell`` command: ``carcell run``, ``carcell validate``, ``carcell assay`` and the rest.

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
from rich.markup import escape
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
    from carcell.cohort.run import scenario_design
    from carcell.knowledge import load_knowledge

    sc = _load(scenario, None, None, overrides)
    d = scenario_design(sc, load_knowledge())[0]
    p = sc.product
    dose = (f"{p.dose.cells_per_kg:.3g} CAR+ cells/kg" if p.dose.cells_per_kg is not None
            else f"{p.dose.cells:.3g} CAR+ cells (flat)")
    t = Table(title=f"{scenario} is valid", show_header=False)
    t.add_row("scenario", sc.name)
    t.add_row("product", f"{p.name}: {d.construct.summary()}")
    t.add_row("dose", dose)
    t.add_row("indication", f"{d.disease}: baseline burden median {d.burden[0]:.3g} cells "
              f"(log-SD {d.burden[1]:.2g}); response by {d.response_criteria}")
    t.add_row("regimen", f"lymphodepletion: {sc.regimen.lymphodepletion} "
              f"({100 * d.host_survival:.0f}% of lymphocytes left)")
    t.add_row("population", f"n={sc.population.n}, seed={sc.population.seed}, variability on "
              + ", ".join(f"{k}={v:g}" for k, v in sorted(d.variability.items())))
    t.add_row("trial", f"{sc.trial.follow_up_days:g} days, outputs every "
              f"{sc.trial.output_every_days:g} day(s), rtol={sc.trial.solver.rtol:g}")
    if sc.trial.arms:
        from carcell.trial.run import arm_specs

        arms = []
        for a in arm_specs(sc):   # each CAR arm's own scenario is validated here
            if a.kind == "soc":
                arms.append(f"{a.name} (x{a.ratio}): standard of care {a.standard_of_care}")
            else:
                ad = scenario_design(a.scenario, load_knowledge())[0]
                arms.append(f"{a.name} (x{a.ratio}): {ad.construct.summary()}")
        t.add_row("arms", "\n".join(arms))
    if sc.population.calibration:
        t.add_row("calibration", sc.population.calibration)
    t.add_row("data sources", f"{len(d.knowledge.used)} knowledge entries")
    out_console.print(t)
    _print_warnings(d)


design_app = typer.Typer(no_args_is_help=True, help="Product design: explain, compare, targets, parts.")
app.add_typer(design_app, name="design")

from carcell.published.cli import app as models_app  # noqa: E402 - sub-commands in their own modules

app.add_typer(models_app, name="models")

from carcell.interop.cli import app as sbml_app  # noqa: E402

app.add_typer(sbml_app, name="sbml")

from carcell.interop.export_cli import app as export_model_app  # noqa: E402

app.add_typer(export_model_app, name="export-model")


def _design(scenario: Path, overrides: list[str] | None = None):
    """The design a run would use (for a mouse scenario, the one rescaled to the mouse)."""
    from carcell.cohort.run import scenario_design
    from carcell.knowledge import load_knowledge

    return scenario_design(_load(scenario, None, None, overrides), load_knowledge())[0]


def _print_warnings(d) -> None:
    for w in d.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)


@design_app.command("explain")
def design_explain(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    overrides: SetOpt = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="also write the table as CSV")] = None,
) -> None:
    """Every model parameter of a design: value, unit and where it came from."""
    from carcell.design.explain import construct_table, parameter_table

    d = _design(scenario, overrides)
    t = Table(title=f"{scenario}: the product", show_header=False)
    for key, value in construct_table(d):
        t.add_row(key, escape(value))
    out_console.print(t)
    df = parameter_table(d)
    t = Table(title="model parameters (typical values) and their derivation")
    for col in ("parameter", "value", "unit", "derivation [source]"):
        t.add_column(col, overflow="fold")
    for _, r in df.iterrows():
        value = "per patient" if r["value"] != r["value"] else f"{r['value']:.4g}"
        t.add_row(escape(r["parameter"]), value, r["unit"], escape(r["derivation"]))
    out_console.print(t)
    for note in d.construct.notes:
        out_console.print(f"note: {note}", highlight=False)
    if d.warnings:
        out_console.print(f"{len(d.warnings)} warning(s):")
        for w in d.warnings:
            out_console.print(f"  [yellow]warning:[/yellow] {w}", highlight=False)
    else:
        out_console.print("no warnings")
    out_console.print("sources and notes of every step: --csv FILE, or `carcell citations`")
    if csv is not None:
        df.to_csv(csv, index=False)
        out_console.print(f"table written to {csv}")


@design_app.command("compare")
def design_compare(
    a: Annotated[Path, typer.Argument(help="scenario A")],
    b: Annotated[Path, typer.Argument(help="scenario B")],
) -> None:
    """The parameters (and construct parts) that differ between two designs, side by side."""
    from carcell.design.explain import compare

    da, db = _design(a), _design(b)
    df = compare(da, db)
    if df.empty:
        out_console.print(f"{a} and {b} compile to the same parameters")
        return
    t = Table(title=f"A = {a}   B = {b}")
    for col in ("parameter", "A", "B", "B/A", "unit", "why A", "why B"):
        t.add_column(col, overflow="fold")
    for _, r in df.iterrows():
        cells = []
        for col in ("parameter", "A", "B", "B/A", "unit", "why A", "why B"):
            v = r.get(col)
            if isinstance(v, float):
                cells.append("" if v != v else f"{v:.4g}")
            else:
                cells.append("" if v is None else escape(str(v)))
        t.add_row(*cells)
    out_console.print(t)


@design_app.command("targets")
def design_targets(
    indication: Annotated[str, typer.Argument(help="indication key of the antigen atlas, e.g. gastric")],
    top: Annotated[int, typer.Option("--top", help="rows to show")] = 20,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="directory for targets.csv and targets.png")] = None,
) -> None:
    """Rank single targets and two-antigen OR/AND/NOT combinations for an indication."""
    from carcell.design.atlas import plot_targets, rank_targets
    from carcell.knowledge import load_knowledge

    df = rank_targets(load_knowledge(), indication)
    t = Table(title=f"CAR targets in {indication}: coverage against off-tumour exposure "
              f"({len(df)} candidates)")
    for col in ("rank", "targets", "logic", "coverage", "off-tumour", "score", "worst normal tissue"):
        t.add_column(col, overflow="fold")
    for i, r in df.head(top).iterrows():
        t.add_row(str(i + 1), r["targets"], r["logic"], f"{r['coverage']:.2f}",
                  f"{r['off_tumour_exposure']:.2f}", f"{r['score']:.2f}", r["worst_normal_tissue"])
    out_console.print(t)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "targets.csv", index=False)
        plot_targets(df, indication, out / "targets.png")
        out_console.print(f"written {out}/targets.csv and {out}/targets.png")


@design_app.command("parts")
def design_parts() -> None:
    """The design vocabulary: presets, chassis, binders, domains, armour, safety, logic."""
    from carcell.design.atlas import atlas_antigens
    from carcell.knowledge import load_knowledge

    k = load_knowledge()
    t = Table(title="carcell design vocabulary (knowledge/data)", show_header=False)
    t.add_row("product presets", ", ".join(k.names("products")))
    t.add_row("chassis", ", ".join(k.names("chassis")))
    t.add_row("binders", ", ".join(f"{b} ({k.text(f'binders.{b}.target')})" for b in k.names("binders")))
    t.add_row("hinges", ", ".join(k.names("construct.hinges")))
    t.add_row("transmembrane", ", ".join(k.names("construct.transmembrane")))
    t.add_row("costimulation", ", ".join(k.names("costim")))
    t.add_row("activation", ", ".join(k.names("construct.activation")))
    t.add_row("armour", ", ".join(k.names("armour")))
    t.add_row("safety / control", ", ".join(k.names("safety")))
    t.add_row("logic", "; ".join(f"{g}: {', '.join(k.names(f'logic.{g}'))}" for g in k.names("logic")))
    t.add_row("antigens (atlas)", ", ".join(atlas_antigens(k)))
    t.add_row("indications (atlas)", ", ".join(k.names("antigens._indications")))
    t.add_row("indications (simulated)", ", ".join(k.names("indications")))
    out_console.print(t)


@app.command()
def citations(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    overrides: SetOpt = None,
    assumptions: Annotated[bool, typer.Option(help="also list the assumptions made")] = True,
) -> None:
    """Every source behind a run, as a reference list (also written to provenance.json)."""
    from carcell.design.explain import citations as cite

    d = _design(scenario, overrides)
    c = cite(d)
    out_console.print(f"[bold]References[/bold] ({len(c['references'])}) behind {scenario}:")
    for i, ref in enumerate(c["references"], start=1):
        out_console.print(f"{i:3d}. {ref}", highlight=False, soft_wrap=True)
    if assumptions:
        out_console.print(f"\n[bold]Assumptions[/bold] ({len(c['assumptions'])}):")
        for a in c["assumptions"]:
            out_console.print(f"  - {a}", highlight=False, soft_wrap=True)


@app.command()
def grade(
    observations: Annotated[Path, typer.Argument(help="CSV of bedside observations (docs/grading.md)")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="directory for grades.csv, episodes.csv, patients.csv")] = None,
    capd_age: Annotated[Optional[float], typer.Option("--capd-age", help="children up to this age are graded with CAPD (default 12)")] = None,
) -> None:
    """Grade bedside observations: ASTCT CRS and ICANS, Lee 2014, Penn and CTCAE v5 CRS."""
    from carcell.clinical.grading import grade_table, summarise
    from carcell.clinical.observations import read_observations

    obs = read_observations(observations)
    graded = grade_table(obs, capd_age)
    episodes, patients = summarise(graded)
    t = Table(title=f"{observations}: {len(patients)} patient(s), {len(graded)} assessment(s)")
    cols = ("patient", "crs_max_grade", "crs_onset_day", "crs_duration_days", "crs_max_grade_lee2014",
            "crs_max_grade_penn", "crs_max_grade_ctcae5", "icans_max_grade", "icans_onset_day", "icans_duration_days")
    heads = ("patient", "CRS (ASTCT)", "onset day", "days", "Lee 2014", "Penn", "CTCAE v5", "ICANS", "onset day", "days")
    for h in heads:
        t.add_column(h)
    for _, r in patients.iterrows():
        t.add_row(*(escape(str(r[c])) if not isinstance(r[c], float) else ("-" if r[c] != r[c] else f"{r[c]:g}")
                    for c in cols))
    out_console.print(t)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        graded.to_csv(out / "grades.csv", index=False)
        episodes.to_csv(out / "episodes.csv", index=False)
        patients.to_csv(out / "patients.csv", index=False)
        out_console.print(f"grades per assessment, episodes and patients written to {out}/")


@app.command()
def timeline(
    run_dir: Annotated[Path, typer.Argument(help="output directory of carcell run")],
    patient: Annotated[int, typer.Option("--patient", "-p", help="patient id")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default RUN_DIR/timeline_<id>.png)")] = None,
) -> None:
    """Plot one simulated patient's course: cytokines, CAR cells, CRS/ICANS grades with the myeloid
    activation behind them, and drugs."""
    import pandas as pd
    import xarray as xr

    from carcell.report.plots import plot_patient_timeline

    nc, ev_file = run_dir / "trajectories.nc", run_dir / "events.parquet"
    for f in (nc, ev_file):
        if not f.exists():
            raise CarcellError(f"{f}: missing; give the --out directory of a carcell run")
    with xr.open_dataset(nc) as ds:
        ids = ds["patient"].to_numpy()
        if patient not in ids:
            raise CarcellError(f"--patient {patient}: not in this run (patient ids {ids.min()}-{ids.max()})")
        sel = ds.sel(patient=patient)
        traj = {q: sel[q].to_numpy() for q in ("il6", "ifng", "car_cells_per_ul", "anc_per_ul", "platelets_e9_per_l",
                                               "macrophage_activation", "macrophage_site") if q in ds}
        times = ds["time"].to_numpy()
        title = ds.attrs.get("title", "carcell").removeprefix("carcell trajectories: ")
    path = out or run_dir / f"timeline_{patient}.png"
    plot_patient_timeline(times, traj, pd.read_parquet(ev_file), patient, title, path)
    out_console.print(f"written {path}")


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    n: Annotated[Optional[int], typer.Option("-n", help="number of patients")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed")] = None,
    overrides: SetOpt = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
    chunk_size: Annotated[Optional[int], typer.Option(
        "--chunk-size", help="patients per chunk (trial.solver.chunk_size)", min=1)] = None,
    workers: Annotated[Optional[int], typer.Option(
        "--workers", help="local processes simulating chunks (trial.workers)", min=1)] = None,
    scheduler: Annotated[Optional[str], typer.Option(
        "--scheduler", help="Dask scheduler address, e.g. tcp://host:8786 (trial.scheduler)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="finish an interrupted run in --out, keeping its finished chunks")] = False,
    backend: Annotated[Optional[str], typer.Option(
        "--backend", help="integrator: auto (default), numpy, numba, numba-serial or jax (trial.solver.backend; docs/backends.md)")] = None,
) -> None:
    """Simulate a virtual cohort or trial and write its results to --out (in chunks: docs/scale.md)."""
    sets = list(overrides or [])
    for field, value in (("trial.solver.chunk_size", chunk_size), ("trial.workers", workers),
                         ("trial.scheduler", scheduler), ("trial.solver.backend", backend)):
        if value is not None:
            sets.append(f"{field}={value}")
    sc = _load(scenario, n, seed, sets)
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    from carcell.cohort.run import scenario_design
    from carcell.knowledge import load_knowledge

    scenario_design(sc, load_knowledge())   # a design error ends here, before --out is created
    if sc.species == "mouse":   # an NSG xenograft experiment instead of patients (docs/preclinical.md)
        _run_mouse(sc, out, plots)
        return
    from carcell.scale import run_chunked

    with Progress(TextColumn("[bold]simulating {task.description}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("patients", total=1.0)
        run_ = run_chunked(sc, out, resume=resume, extra_provenance={"command": " ".join(sys.argv)},
                           progress=lambda done, total: bar.update(task, completed=done / max(total, 1)))
    if resume:
        err_console.print(f"resumed: {run_.resumed_chunks} of {run_.chunks} chunks were already finished",
                          highlight=False)
    result, trial = run_.result, run_.trial
    for cohort in result.cohorts.values():
        _print_warnings(cohort.design)
    if plots and run_.layout == "whole":
        from carcell.report.plots import write_plots
        from carcell.report.trial_plots import write_trial_plots

        if len(result.arms) == 1 and result.cohorts:
            write_plots(next(iter(result.cohorts.values())), out)
        write_trial_plots(result.patients, result.events, out, reference_arm=result.reference_arm)
    elif plots:
        err_console.print(f"no plots: {sc.population.n} patients use the large-run layout "
                          f"(trajectories in {out}/chunks, bands in trajectory_bands.nc; docs/scale.md)",
                          highlight=False)
    if len(result.arms) == 1 and (out / "summary.json").exists():
        import json

        _print_summary(json.loads((out / "summary.json").read_text()), out)
    from carcell.report.trial_table import trial_table

    out_console.print(trial_table(trial))
    if "logistics" in trial:
        _print_logistics(trial, result, out, plots)
    out_console.print(f"results in {out}/")


def _run_mouse(sc, out: Path, plots: bool) -> None:
    """``carcell run`` on a ``species: mouse`` scenario: treated and control mice, their files and table."""
    from carcell.preclinical.mouse import run_xenograft, write_xenograft

    with Progress(TextColumn("[bold]simulating mice"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err_console, transient=True) as bar:
        task = bar.add_task("mice", total=1.0)
        result = run_xenograft(sc, progress=lambda done, total: bar.update(task, completed=done / max(total, 1)))
    _print_warnings(result.cohort.design)
    summ = write_xenograft(result, out, {"command": " ".join(sys.argv)}, plots=plots)
    x = summ["xenograft"]
    groups = list(x["mice"])
    t = Table(title=f"{sc.name}: {x['tumour_line']} ({x['site']}) in {x['strain']} mice")
    t.add_column("measure")
    for g in groups:
        t.add_column("CAR-treated" if g == "CAR" else "untreated controls")
    t.add_row("mice", *(str(x["mice"][g]) for g in groups))
    size = "tumour volume, mm3" if x["site"] == "subcutaneous" else "leukaemic cells"
    fmt = lambda v: "-" if v is None else f"{v:.3g}"  # noqa: E731
    for d in (7, 14, 21, 28):
        key = f"median_size_day_{d}"
        if key in x:
            t.add_row(f"median {size}, day {d} (mice still alive)", *(fmt(x[key][g]) for g in groups))
    t.add_row(f"reached the humane endpoint ({x['humane_endpoint']:g})",
              *(str(x["endpoint_reached"][g]) for g in groups))
    t.add_row("median survival, days", *("not reached" if x["median_survival_days"][g] is None
                                         else f"{x['median_survival_days'][g]:.1f}" for g in groups))
    cmax = summ["cmax_cells_per_ul"]["median"]
    t.add_row("Cmax, CAR cells per uL blood (median)", fmt(cmax), *([""] * (len(groups) - 1)))
    out_console.print(t)
    if "logrank_p_car_vs_control" in x:
        out_console.print(f"log-rank test, treated against controls: p = {x['logrank_p_car_vs_control']:.3g}")
    out_console.print("not applicable to mice (computed by the shared pipeline, marked in summary.json): "
                      + ", ".join(summ["not_applicable"]), highlight=False, soft_wrap=True)
    plot = "tumour_volume.png" if x["site"] == "subcutaneous" else "leukaemic_burden.png"
    out_console.print(f"results in {out}/ (mice.parquet, tumour_size.parquet"
                      + (f", {plot}, survival.png" if plots else "") + ")")


@app.command()
def assay(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file (its assay: section, or the defaults)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    overrides: SetOpt = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """Simulate an in-vitro killing assay of the product: E:T ratios, killing over time, IFN-gamma,
    serial restimulation, dasatinib during the assay (docs/preclinical.md)."""
    from carcell.preclinical.assay import run_assay, write_assay

    sc = _load(scenario, None, None, overrides)
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    with err_console.status("simulating the assay"):
        result = run_assay(sc)
    _print_warnings(result.design)
    files = write_assay(result, out, plots=plots, extra={"command": " ".join(sys.argv)})
    a = result.assay
    tc = result.timecourse
    marks = sorted({h for h in (4.0, 24.0, a.hours) if h <= a.hours})
    t = Table(title=f"{sc.name}: killing of {a.target_line} ({a.target_cells:.3g} targets in "
              f"{a.well_volume_ul:g} uL, {result.design.construct.summary()})")
    t.add_column("E:T")
    t.add_column("dasatinib, nM")
    for h in marks:
        t.add_column(f"lysis {h:g} h, %")
    t.add_column(f"IFN-gamma {a.hours:g} h, pg/mL")
    t.add_column(f"CAR cells {a.hours:g} h (exhausted %)")
    for w in result.wells.itertuples():
        if w.effector_to_target == 0:
            continue
        g = tc[tc["well"] == w.well].set_index("hour")
        end = g.loc[a.hours]
        t.add_row(f"{w.effector_to_target:g}", f"{w.dasatinib_nm:g}",
                  *(f"{g.loc[h, 'lysis_percent']:.1f}" for h in marks), f"{end['ifng_pg_per_ml']:.3g}",
                  f"{end['car_cells']:.3g} ({100 * end['car_exhausted_cells'] / max(end['car_cells'], 1e-300):.0f}%)")
    out_console.print(t)
    if a.restimulations:
        r = result.rounds
        t = Table(title=f"serial restimulation: lysis at the end of each round (fresh targets every "
                  f"{a.restimulate_every_hours:g} h)")
        t.add_column("E:T")
        t.add_column("dasatinib, nM")
        for k in sorted(r["round"].unique()):
            t.add_column(f"round {k + 1}, %")
        for (ratio, drug), g in r.groupby(["effector_to_target", "dasatinib_nm"]):
            t.add_row(f"{ratio:g}", f"{drug:g}", *(f"{v:.1f}" for v in g.sort_values("round")["lysis_percent"]))
        out_console.print(t)
    if result.summary["solver_failures"]:
        err_console.print(f"[red]solver failures in {result.summary['solver_failures']} well(s)[/red]")
    out_console.print(f"written to {out}/: " + ", ".join(p.name for p in files), highlight=False, soft_wrap=True)


def _print_logistics(trial: dict, result, out: Path, plots: bool) -> None:
    """The chain, cost and access tables of a trial with a manufacturing section, and their figures."""
    from carcell.report.logistics_table import access_table, chain_table, cost_table, gaps_table

    out_console.print(chain_table(trial["logistics"]))
    out_console.print(cost_table(trial["cost"]))
    access = trial.get("access") or {}
    rows = [{"scenario": arm, **r} for arm, a in access.items() for r in a["strata"]]
    if rows:
        out_console.print(access_table(rows, "Access by stratum and arm (eligible patients allocated to each arm)"))
        gaps = [{"scenario": arm, **r} for arm, a in access.items() for r in a["gaps"] if r["stratum"] == "worst_vs_best"]
        out_console.print(gaps_table(gaps, "worst-served against best-served stratum, per arm"))
    if plots:
        import pandas as pd

        from carcell.report.logistics_plots import logistics_figures

        costs = pd.read_parquet(out / "costs.parquet")
        equity = pd.DataFrame(rows).rename(columns={"scenario": "arm"}) if rows else None
        if equity is not None:
            equity = equity.assign(scenario=equity["arm"])
        figs = logistics_figures(result.chain.result.patients, result.chain.result.usage, costs=costs, equity=equity)
        for key, fig in figs.items():
            fig.savefig(out / f"{key}.png", dpi=120, bbox_inches="tight")


@app.command()
def logistics(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file with a manufacturing section")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")],
    n: Annotated[Optional[int], typer.Option("-n", help="number of patients (eligible, with an access section)")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="random seed")] = None,
    overrides: SetOpt = None,
    plots: Annotated[bool, typer.Option(help="write PNG plots")] = True,
) -> None:
    """The chain from referral to infusion alone: throughput, utilisation, waits, vein-to-vein
    times, failures, chain costs and access by stratum, for each compared lever set."""
    import json

    from carcell.io.outputs import write_table
    from carcell.knowledge import load_knowledge
    from carcell.logistics.access import equity_gaps, equity_table
    from carcell.logistics.run import run_logistics
    from carcell.logistics.summary import chain_summary
    from carcell.report.logistics_table import access_table, chain_table, gaps_table
    from carcell.trial.stats import json_safe

    sc = _load(scenario, n, seed, overrides)
    if sc.manufacturing is None and not any(a.manufacturing for a in sc.trial.arms):
        raise CarcellError(f"{scenario}: no manufacturing section; add one, e.g. manufacturing: {{route: axi-cel}}")
    if out.exists() and not out.is_dir():
        raise CarcellError(f"--out {out}: exists and is not a directory; choose another path")
    with err_console.status("simulating the chain") as status:
        res = run_logistics(load_knowledge(), sc, progress=lambda name: status.update(f"simulating the chain: {name}"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"name": sc.name, "seed": sc.population.seed, "scenarios": {}}
    equity_rows, gap_rows = [], []
    for name, flow in res.patients.groupby("scenario", sort=False):
        usage = res.usage[res.usage["scenario"] == name]
        entry = {"chain": chain_summary(flow, usage)}
        costs = res.costs[res.costs["scenario"] == name]
        entry["chain_cost_per_referral"] = {a: float(g["total"].mean()) for a, g in costs.groupby("arm")}
        out_console.print(chain_table(entry["chain"], f"{sc.name} [{name}]: from referral to infusion"))
        if res.population is not None:
            pop = res.population[res.population["scenario"] == name]
            table = equity_table(pop, by="stratum")
            best = table.loc[table["fraction_treated"].idxmax(), "stratum"]
            gaps = equity_gaps(table, best)
            entry["access"] = {"strata": table.to_dict(orient="records"), "gaps": gaps.to_dict(orient="records")}
            equity_rows += [{"scenario": name, **r} for r in entry["access"]["strata"]]
            gap_rows += [{"scenario": name, **r} for r in entry["access"]["gaps"] if r["stratum"] == "worst_vs_best"]
        report["scenarios"][name] = entry
    if equity_rows:
        out_console.print(access_table(equity_rows, f"{sc.name}: access by stratum"))
        out_console.print(gaps_table(gap_rows, "worst-served against best-served stratum"))
    (out / "logistics.json").write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    for frame, file in ((res.patients, "logistics.parquet"), (res.usage, "usage.parquet"),
                        (res.costs, "costs.parquet"), (res.population, "access.parquet")):
        if frame is not None:
            write_table(frame, out / file)
    if plots:
        from carcell.report.logistics_plots import logistics_figures

        base = res.patients[res.patients["scenario"] == "baseline"]
        figs = logistics_figures(base, res.usage[res.usage["scenario"] == "baseline"],
                                 costs=res.costs[res.costs["scenario"] == "baseline"],
                                 equity=None if not equity_rows else __import__("pandas").DataFrame(equity_rows))
        for key, fig in figs.items():
            fig.savefig(out / f"{key}.png", dpi=120, bbox_inches="tight")
    out_console.print(f"results in {out}/")


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
    tox, haem = s["toxicity"], s["haematology"]
    pct = lambda v: "-" if v is None else f"{100 * v:.0f}%"  # noqa: E731
    t.add_row("CRS any / grade >= 3 (ASTCT)", f"{pct(tox['crs_any'])} / {pct(tox['crs_grade3plus'])}")
    t.add_row("ICANS any / grade >= 3 (ASTCT)", f"{pct(tox['icans_any'])} / {pct(tox['icans_grade3plus'])}")
    t.add_row("CRS onset, days", _fmt(tox["crs_onset_day"], ".1f"))
    t.add_row("tocilizumab / steroids given", f"{pct(tox['tocilizumab_use'])} / {pct(tox['steroid_use'])}")
    t.add_row("days ANC < 500 (days 0-30)", _fmt(haem["severe_neutropenia_days"], ".0f"))
    t.add_row("ICAHT grade >= 3 / IVIG given", f"{pct(haem['icaht_grade3plus'])} / {pct(haem['ivig_use'])}")
    ttp = s["median_time_to_progression_days"]
    t.add_row("median time to progression", "not reached" if ttp is None else f"{ttp:g} days")
    t.add_row("antigen-negative relapses", str(s["antigen_negative_relapses"]))
    if s["solver_failures"]:
        t.add_row("[red]solver failures", f"[red]{s['solver_failures']} (see solver_status)")
    out_console.print(t)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="output directory of carcell run or of a virtual trial")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="HTML file (default RUN_DIR/report.html)")] = None,
) -> None:
    """Write one self-contained HTML report: results, figures, provenance, citations."""
    from carcell.report.html import write_report

    path = write_report(run_dir, out or run_dir / "report.html")
    out_console.print(f"written {path} ({path.stat().st_size / 1024:,.0f} kB)", highlight=False, soft_wrap=True)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="output directory of a carcell trial or run")],
    fmt: Annotated[str, typer.Option("--format", help="csv, parquet or both (ADaM); nonmem (NONMEM/Monolix dataset)")] = "both",
    study_id: Annotated[Optional[str], typer.Option("--study-id", help="STUDYID (default: from the trial name)")] = None,
    analyte: Annotated[str, typer.Option("--analyte", help="nonmem: CARCOPY (copies/ug) or CARCELL (cells/uL)")] = "CARCOPY",
    lloq: Annotated[Optional[float], typer.Option("--lloq", help="nonmem: limit of quantification (default 5 copies/ug)")] = None,
) -> None:
    """CDISC ADaM-style datasets (ADSL, ADTTE, ADAE, ADPC) in RUN_DIR/adam/, validated (docs/adam.md);
    with --format nonmem, a NONMEM/Monolix dataset of the CAR kinetics in RUN_DIR/nonmem/."""
    from carcell.io.adam import ADAM_SPEC, build_adam, validate_adam, write_adam

    if fmt == "nonmem":
        _export_nonmem(run_dir, analyte, lloq)
        return
    formats = {"csv": ("csv",), "parquet": ("parquet",), "both": ("csv", "parquet")}.get(fmt)
    try:
        if formats is None:
            raise CarcellError(f"--format {fmt}: use csv, parquet, both or nonmem")
        datasets = build_adam(run_dir, study_id)
        problems = validate_adam(datasets)
        write_adam(run_dir, formats, datasets=datasets)
    except CarcellError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        # SystemExit, not typer.Exit: main() runs the app with standalone_mode=False, where
        # typer.Exit's status would be returned and lost
        raise SystemExit(2) from None
    study = next((str(df["STUDYID"].iloc[0]) for df in datasets.values() if len(df)), "-")
    t = Table(title=f"ADaM datasets of {study}")
    for col in ("dataset", "label", "records", "subjects"):
        t.add_column(col)
    for name, df in datasets.items():
        t.add_row(name, ADAM_SPEC[name].label, str(len(df)), str(df["USUBJID"].nunique()))
    out_console.print(t)
    for p in problems:
        err_console.print(f"[red]invalid:[/red] {escape(p)}", highlight=False, soft_wrap=True)
    if problems:
        raise SystemExit(1)
    out_console.print(f"valid; written to {run_dir / 'adam'}/ (labels and types: define.json)", highlight=False)


def _export_nonmem(run_dir: Path, analyte: str, lloq: float | None) -> None:
    from carcell.io.nonmem import build_nonmem, write_nonmem

    try:
        df = build_nonmem(run_dir, analyte=analyte, lloq=lloq)
        path = write_nonmem(run_dir, df, analyte=analyte, lloq=lloq)
    except CarcellError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    subjects = df["ID"].nunique() if len(df) else 0
    out_console.print(f"{len(df)} records of {subjects} subjects ({int((df['EVID'] == 1).sum()) if len(df) else 0} "
                      f"doses, {int((df['BLQ'] == 1).sum()) if len(df) else 0} below the LLOQ) written to {path}; "
                      "columns and $INPUT in nonmem.json", highlight=False)


@app.command()
def calibrate(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML file of the product and indication")],
    targets: Annotated[Path, typer.Option("--targets", "-t", help="targets YAML (docs/calibration.md)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output directory")] = Path("calibration"),
    n: Annotated[int, typer.Option("-n", help="plausible patients simulated once")] = 1000,
    check_n: Annotated[int, typer.Option("--check-n", help="patients of the re-simulated check (0: none)")] = 400,
    seed: Annotated[int, typer.Option("--seed", help="seed of the first plausible population (round r uses "
                                      "seed+r; the check uses seed+rounds)")] = 1,
    rounds: Annotated[int, typer.Option("--rounds", help="rounds of simulate-and-reweight, each centred on "
                                        "the last fit")] = 2,
    workers: Annotated[int, typer.Option("--workers", help="simulation processes")] = 1,
    overrides: SetOpt = None,
) -> None:
    """Calibrate a product's population to a trial's published endpoints (importance-reweighted
    virtual population) and write calibration.yaml for population.calibration."""
    from carcell.trial.calibrate import (calibrate_population, calibration_yaml, check_table,
                                         diagnostics_figure, load_targets, with_levels)
    from carcell.trial.run import run_trial

    ts = load_targets(targets)
    sc = _load(scenario, None, None, [*(overrides or []), f"trial.workers={workers}"])
    if sc.trial.arms:
        raise CarcellError(f"{scenario}: calibrate a single-arm scenario (remove trial.arms)")
    out.mkdir(parents=True, exist_ok=True)

    def simulate(s, label):
        with Progress(TextColumn(f"[bold]{label}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task(label, total=1.0)
            return run_trial(s, progress=lambda arm, d, t: bar.update(task, completed=d / max(t, 1)))

    fit = calibrate_population(sc, ts, n, seed, rounds, simulate, out)
    path = out / "calibration.yaml"
    path.write_text(calibration_yaml(fit, ts, sc.name, n, seed, rounds))
    fit.table.to_csv(out / "fit.csv", index=False)
    check = None
    if check_n > 0:
        checked = sc.model_copy(update={"population": sc.population.model_copy(
            update={"n": check_n, "seed": seed + rounds, "calibration": str(path.resolve())})})
        check = check_table(with_levels(simulate(checked, f"check ({check_n})"), ts), ts)
        check.to_csv(out / "check.csv", index=False)
    fig = diagnostics_figure(fit, ts.parameters, check)
    fig.savefig(out / "calibration.png", dpi=110)
    t = Table(title=f"{sc.name} calibrated to {ts.trial} (ESS {fit.ess:.0f} of {n})")
    t.add_column("target", overflow="fold")   # kinetic targets have long names; fold, do not cut
    for c in ("published (95% CI)", "reweighted", "re-simulated", "inside"):
        t.add_column(c)
    for j, r in enumerate(fit.table.itertuples()):
        chk = check.iloc[j] if check is not None else None
        t.add_row(r.target, f"{r.published:.3g} ({r.ci95_low:.3g}-{r.ci95_high:.3g})", f"{r.model_weighted:.3g}",
                  "-" if chk is None else f"{chk['model']:.3g}",
                  "-" if chk is None else ("yes" if chk["inside"] else "[red]no"))
    out_console.print(t)
    for p, (mult, omega) in fit.parameters.items():
        out_console.print(f"  {p}: typical x {mult:.3g}, omega {omega:.3g}")
    for p, (mult, omega, _) in ts.held.items():
        out_console.print(f"  {p}: held at typical x {mult:.3g}, omega {omega:.3g}")
    out_console.print(f"written {path} (use it as population.calibration), fit.csv, calibration.png")


from carcell.sensitivity.cli import sensitivity as _sensitivity  # noqa: E402 - its own module

app.command("sensitivity")(_sensitivity)


def main() -> None:
    try:
        app(standalone_mode=False)
    except CarcellError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as e:
        sys.exit(getattr(e, "exit_code", getattr(e, "code", 0)))
    except Exception as err:
        import click

        # Usage errors (an unknown command or option, a missing argument) are click's, or, from
        # typer 0.2x on, those of typer's own copy of click, which are not click's classes: both
        # carry show() and exit_code.
        if isinstance(err, click.ClickException) or (callable(getattr(err, "show", None))
                                                     and isinstance(getattr(err, "exit_code", None), int)):
            err.show()
            sys.exit(2)
        if isinstance(err, (click.exceptions.Abort, typer.Abort)):
            sys.exit(130)
        raise


if __name__ == "__main__":
    main()
