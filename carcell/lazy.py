"""Package attributes imported on first use (PEP 562 module ``__getattr__``).

``carcell``'s command line imports every sub-command's package to register its commands; a
package whose ``__init__`` imported its heavy modules (SciPy's integrators, pandas, SALib)
would make every command, ``carcell validate`` included, pay for them. Such a package names
where each public attribute lives instead::

    __getattr__ = lazy_attributes(__name__, {"load_sbml": "carcell.interop.sbml_import"})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` and returns its ``name``."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(where[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
