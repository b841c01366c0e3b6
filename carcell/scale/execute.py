"""Where chunks are simulated: in this process, in a local process pool, or on a Dask cluster.

A chunk task is a pure function of the trial plan (itself a pure function of the scenario) and
the chunk's patient ids: it reads no file and writes none, so a chunk can be retried, on any
worker, any number of times, with the same result. Results come back to the driver, which
writes them to the chunk store in the order they finish; at most a few chunks per worker are in
flight at once, so the driver's memory is bounded by the chunk size, not by N.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, wait

from carcell.errors import CarcellError
from carcell.scale.store import Chunk
from carcell.solve.workers import process_pool

#: chunks in flight per worker (one running, one queued so no worker idles)
IN_FLIGHT_PER_WORKER = 2


def simulate_chunk(plan, ids):
    """The chunk task: the trial's patients ``ids`` (carcell.trial.run.run_trial_ids), without
    what the driver already has or does not store (the plan's whole-trial arrays, the cohorts'
    designs and second copy of the trajectories), so that less travels back."""
    from carcell.trial.run import run_trial_ids   # noqa: PLC0415 - imported where the task runs

    result = run_trial_ids(plan, ids)
    cohorts = {name: dataclasses.replace(c, design=None, trajectories={}) for name, c in result.cohorts.items()}
    return dataclasses.replace(result, cohorts=cohorts, allocation=None, chain=None, population=None)


def run_in_process(plan, chunks: list[Chunk]) -> Iterator[tuple[Chunk, object]]:
    for c in chunks:
        yield c, simulate_chunk(plan, c.ids)


_PLAN = None   # the plan of this pool worker process, set once by its initializer


def _init_worker(plan) -> None:
    global _PLAN   # noqa: PLW0603 - one plan per worker process, sent once instead of with every chunk
    _PLAN = plan


def _dask_task(plan, ids):
    """The chunk task on a Dask worker, one of several processes (or threads) on a machine."""
    from carcell.solve.rounds import use_one_thread   # noqa: PLC0415 - imported where the task runs

    use_one_thread()
    return simulate_chunk(plan, ids)


def _pool_task(ids):
    return simulate_chunk(_PLAN, ids)


def run_local_pool(plan, chunks: list[Chunk], workers: int) -> Iterator[tuple[Chunk, object]]:
    """Chunks on ``workers`` local processes (carcell.solve.workers), yielded as they finish."""
    todo = list(chunks)
    with process_pool(workers, _init_worker, (plan,)) as pool:
        running = {}
        while todo or running:
            while todo and len(running) < IN_FLIGHT_PER_WORKER * workers:
                c = todo.pop(0)
                running[pool.submit(_pool_task, c.ids)] = c
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: running[f].index):
                yield running.pop(f), f.result()


def _refused_at_once(address: str) -> None:
    """Raise ConnectionRefusedError when nothing listens at a ``tcp://host:port`` address, so a
    mistyped port is one line now instead of after the client's connection timeout."""
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme != "tcp" or not port.isdigit():
        return   # other protocols (tls, ucx, inproc): the client's own timeout decides
    with socket.create_connection((host.strip("[]"), int(port)), timeout=5.0):
        pass


def connect(address: str, timeout_s: float = 10.0):
    """A Dask client of the scheduler at ``address``, or a one-line error saying what to do."""
    try:
        from distributed import Client   # noqa: PLC0415 - optional extra
    except ImportError:
        raise CarcellError("--scheduler needs Dask distributed: pip install 'carcell[scale]'") from None
    try:
        _refused_at_once(address)
        return Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as err:
        raise CarcellError(f"--scheduler {address}: no Dask scheduler answered ({type(err).__name__}); start one "
                           f"with `dask scheduler` and workers with `dask worker {address}` (docs/scale.md)") from None


def run_dask(plan, chunks: list[Chunk], client, run_key: str,
             retries: int = 3) -> Iterator[tuple[Chunk, object]]:
    """Chunks on the Dask cluster of ``client`` (see :func:`connect`), yielded as they finish.
    The plan is sent to every worker once; a chunk whose worker dies is run again elsewhere by
    the scheduler, and a chunk whose task raises is retried ``retries`` times."""
    from distributed import as_completed   # noqa: PLC0415 - optional extra

    threads = max(1, sum(client.nthreads().values()))
    plan_future = client.scatter(plan, broadcast=True, hash=False)
    todo = list(chunks)
    by_key: dict[str, Chunk] = {}

    def submit(c: Chunk):
        f = client.submit(_dask_task, plan_future, c.ids, key=f"carcell-{run_key}-chunk-{c.name}",
                          pure=False, retries=retries)
        by_key[f.key] = c
        return f

    pending = as_completed([submit(todo.pop(0)) for _ in range(min(len(todo), IN_FLIGHT_PER_WORKER * threads))])
    for f in pending:
        c = by_key.pop(f.key)
        result = f.result()
        f.release()
        if todo:
            pending.add(submit(todo.pop(0)))
        yield c, result




def executor(plan, chunks: list[Chunk], *, workers: int, client=None,
             run_key: str = "run") -> Iterator[tuple[Chunk, object]]:
    """The chunks' results, from the Dask cluster when a client is given, else from a local
    pool for more than one worker, else from this process."""
    if client is not None:
        return run_dask(plan, chunks, client, run_key)
    if workers > 1 and len(chunks) > 1:
        return run_local_pool(plan, chunks, workers)
    return run_in_process(plan, chunks)


ProgressFn = Callable[[int, int], None]
