"""Published CAR-T models as tested carcell presets (``carcell models list|show|run``).

Each preset is one module with its citation and equations, its numbers in
``carcell/knowledge/data/published/<name>.yaml`` with sources, and checks that reproduce named
figures or table values of its paper. ``PRESETS`` maps names to instances.
"""

from __future__ import annotations

import difflib

from carcell.errors import CarcellError
from carcell.published.base import Check, Citation, PublishedCohort, PublishedModel
from carcell.published.cartmath2021 import Cartmath2021
from carcell.published.hanson2016 import Hanson2016
from carcell.published.kirouac2023 import Kirouac2023
from carcell.published.leon_triana2021 import LeonTriana2021
from carcell.published.stein2019 import Stein2019

PRESETS: dict[str, PublishedModel] = {
    m.name: m for m in (Stein2019(), Cartmath2021(), Hanson2016(), LeonTriana2021(), Kirouac2023())
}


def get(name: str) -> PublishedModel:
    """The preset called ``name``; a clear error with the nearest name otherwise."""
    if name in PRESETS:
        return PRESETS[name]
    near = difflib.get_close_matches(name.lower().replace("-", "_"), list(PRESETS), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise CarcellError(f"model {name!r} is not a published preset{hint} known: {', '.join(sorted(PRESETS))}")


__all__ = ["PRESETS", "Check", "Citation", "PublishedCohort", "PublishedModel", "get"]
