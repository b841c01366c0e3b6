"""Sourced domain numbers: every rate, count and threshold carcell uses, with where it came from.

Data files live in ``carcell/knowledge/data`` as YAML. A number is stored as an *entry*::

    rho_effector:
      value: 0.99
      unit: 1/day
      source: fit            # doi:..., https://..., assumption, derived or fit
      note: fitted to Stein 2019 typical kinetics by validation/calibrate_kinetics.py

``source: assumption`` and ``source: derived`` need a ``note`` that says what was assumed or
how the number was derived. ``tests/test_knowledge.py`` walks every file and fails on any
number without a source.
"""

from carcell.knowledge.store import Entry, Knowledge, load_knowledge, walk_entries

__all__ = ["Entry", "Knowledge", "load_knowledge", "walk_entries"]
