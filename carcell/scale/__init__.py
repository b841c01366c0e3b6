"""Runs of any size: chunks streamed to disk, a local pool or a Dask cluster, resume after a
crash (docs/scale.md)."""

from carcell.scale.run import ScaledRun, run_chunked
from carcell.scale.store import RunDirectoryError

__all__ = ["RunDirectoryError", "ScaledRun", "run_chunked"]
