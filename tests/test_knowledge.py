"""Every number in carcell/knowledge/data carries a source (or an assumption with a note)."""

import pytest

from carcell.errors import KnowledgeError
from carcell.knowledge import load_knowledge, walk_entries
from carcell.knowledge.store import check_entry


def test_every_number_is_a_sourced_entry():
    problems = []
    for path, node in walk_entries(load_knowledge().tree):
        if not isinstance(node, dict):
            problems.append(f"{path}: bare number {node!r} (wrap it in an entry with a source)")
            continue
        try:
            check_entry(path, node)
        except KnowledgeError as e:
            problems.append(str(e))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("node", [
    {"value": 1.0, "unit": "1/day"},
    {"value": 1.0, "unit": "1/day", "source": "assumption"},
    {"value": 1.0, "unit": "furlongs", "source": "doi:10.1/x"},
    {"value": "1e9x", "unit": "cells", "source": "doi:10.1/x"},
    {"value": 1.0, "unit": "1", "source": "a friend told me"},
])
def test_check_entry_rejects_unsourced(node):
    with pytest.raises(KnowledgeError):
        check_entry("x", node)
