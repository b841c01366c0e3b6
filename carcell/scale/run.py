"""``carcell run`` at any size: plan the trial, simulate it in chunks that stream to disk, resume
after a crash, and assemble the final files (docs/scale.md).

The numbers never depend on how the run was executed: every patient's draws depend on (seed,
patient id) only and the integrator steps each patient on its own, so the per-patient table is
the same, byte for byte, in-process, in a local pool, or on a Dask cluster, for any chunk size
and worker count.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carcell.scale.execute import connect, executor
from carcell.scale.merge import WHOLE_COHORT_MAX, assemble, write_large_outputs, write_whole_outputs
from carcell.scale.store import ChunkStore, chunk_layout, scenario_fingerprint
from carcell.scenario.schema import Scenario


@dataclass
class ScaledRun:
    """What a chunked run produced (its files are in the run directory)."""

    trial: dict
    # carcell.trial.run.TrialResult: the whole trial (whole layout), or in the large layout the
    # patients' statistics columns only, without trajectories or events
    result: object
    chunks: int
    resumed_chunks: int             # finished before this invocation (--resume)
    layout: str                     # "whole" or "large"


def _parallelism(scenario: Scenario) -> int:
    t = scenario.trial
    if t.scheduler:
        return 1   # the chunk size the user chose (many chunks balance a cluster by themselves)
    return t.workers


def run_chunked(scenario: Scenario, out: Path, *, resume: bool = False,
                progress: Callable[[int, int], None] | None = None,
                extra_provenance: dict | None = None,
                whole_cohort_max: int = WHOLE_COHORT_MAX) -> ScaledRun:
    """Simulate a trial chunk by chunk into ``out`` and write its outputs.

    Parameters
    ----------
    scenario : the trial; ``trial.solver.chunk_size`` patients per chunk (fewer, so each of
        ``trial.workers`` processes gets one), ``trial.scheduler`` a Dask scheduler's address.
    out : run directory; chunks go to ``out/chunks`` with their manifest.
    resume : finish a run that was interrupted, skipping its finished chunks; the scenario must
        match the one it started with (execution fields aside).
    progress : ``progress(patients_done, patients_total)`` as chunks finish.
    whole_cohort_max : above this many patients the large-run layout is used.

    Raises
    ------
    RunDirectoryError : ``out`` holds a chunked run and ``resume`` is False, or ``resume`` is
        True and it holds none, or one of another scenario.
    """
    from carcell.trial.run import plan_trial   # noqa: PLC0415 - the trial layer sits below scale here

    out = Path(out)
    if not resume:
        ChunkStore.check_new(out)
    store = ChunkStore.open(out, scenario) if resume else None
    with ExitStack() as stack:
        # reach the cluster before anything is written
        client = stack.enter_context(connect(scenario.trial.scheduler)) if scenario.trial.scheduler else None
        plan = plan_trial(scenario)
        ids = np.flatnonzero(plan.in_trial).astype(np.int64)
        if store is None:
            chunks = chunk_layout(ids, scenario.trial.solver.chunk_size, _parallelism(scenario))
            store = ChunkStore.create(out, scenario, chunks, whole=ids.size <= whole_cohort_max)
        else:
            chunks = store.chunks(ids)
        finished = store.finished()
        todo = [c for c in chunks if c.index not in finished]
        total = int(ids.size)
        done = sum(c.ids.size for c in chunks if c.index in finished)
        if progress is not None:
            progress(done, total)
        run_key = f"{scenario_fingerprint(scenario)[:12]}-{uuid.uuid4().hex[:8]}"
        for chunk, result in executor(plan, todo, workers=scenario.trial.workers, client=client, run_key=run_key):
            store.write(chunk, result)
            done += chunk.ids.size
            if progress is not None:
                progress(done, total)
    extra = {**(extra_provenance or {}), "chunks": len(chunks)}
    if store.whole:
        result = assemble(store, plan, chunks)
        trial = write_whole_outputs(result, out, extra)
        store.mark_complete()
        store.remove()
        return ScaledRun(trial, result, len(chunks), len(finished), "whole")
    trial, stats = write_large_outputs(store, plan, chunks, out, extra)
    store.mark_complete()
    return ScaledRun(trial, stats, len(chunks), len(finished), "large")
