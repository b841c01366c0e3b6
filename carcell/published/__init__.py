"""Published CAR-T models as tested carcell presets (``carcell models list|show|run``).

Each preset is one module with its citation and equations, its numbers in
``carcell/knowledge/data/published/<name>.yaml`` with sources, and checks that reproduce named
figures or table values of its paper. ``PRESETS`` maps names to instances.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from carcell.errors import CarcellError
from carcell.lazy import lazy_attributes

if TYPE_CHECKING:
    from carcell.published.base import Check, Citation, PublishedCohort, PublishedModel

# The presets are built on first use (PEP 562 module __getattr__): importing this package, as
# ``carcell``'s command line does for every command, must not import SciPy's integrators and
# pandas behind them.
_base_attribute = lazy_attributes(__name__, dict.fromkeys(
    ("Check", "Citation", "PublishedCohort", "PublishedModel"), "carcell.published.base"))


def __getattr__(name: str) -> Any:
    if name == "PRESETS":
        from carcell.published.cartmath2021 import Cartmath2021
        from carcell.published.hanson2016 import Hanson2016
        from carcell.published.kirouac2023 import Kirouac2023
        from carcell.published.leon_triana2021 import LeonTriana2021
        from carcell.published.stein2019 import Stein2019

        presets = {m.name: m for m in (Stein2019(), Cartmath2021(), Hanson2016(), LeonTriana2021(), Kirouac2023())}
        globals()["PRESETS"] = presets
        return presets
    return _base_attribute(name)


def get(name: str) -> PublishedModel:
    """The preset called ``name``; a clear error with the nearest name otherwise."""
    from carcell.published import PRESETS

    if name in PRESETS:
        return PRESETS[name]
    near = difflib.get_close_matches(name.lower().replace("-", "_"), list(PRESETS), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise CarcellError(f"model {name!r} is not a published preset{hint} known: {', '.join(sorted(PRESETS))}")


__all__ = ["PRESETS", "Check", "Citation", "PublishedCohort", "PublishedModel", "get"]
