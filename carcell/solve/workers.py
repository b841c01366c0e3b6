"""Local worker processes that share this machine's cores: a trial's pieces (``--workers``), a
chunked run's local pool (carcell.scale) and a sensitivity analysis's points all start theirs
here, so they start the same way.

- From a fork server (a clean single-threaded process; spawn where there is none), not by
  forking the caller: the caller may run threads (the compiled kernel's, JAX's, a progress
  bar's), and a fork copies their locks but not the threads that would release them.
- Each worker runs the compiled kernel on one thread when ``auto`` picks it
  (:func:`carcell.solve.rounds.use_one_thread`): the processes already share out the cores.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


def _start(initializer: Callable | None, initargs: tuple) -> None:
    from carcell.solve.rounds import use_one_thread   # noqa: PLC0415 - runs in the new process

    use_one_thread()
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes; ``initializer(*initargs)`` runs once in each."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_start, initargs=(initializer, initargs))
