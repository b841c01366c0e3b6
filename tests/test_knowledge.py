"""Every number in carcell/knowledge/data is a sourced entry, and the model reads only from there.

* every YAML file is walked; a number outside an entry, or an entry that check_entry rejects,
  fails the test with its dotted path;
* check_entry itself is shown to reject what it must (no source, assumption without a note, ...);
* every model parameter that is not set per patient is produced by resolve_design for every
  example scenario;
* CD28 and 4-1BB differ only through their data files: the typical values of the two designs
  differ exactly by the multipliers in costim/CD28.yaml and costim/4-1BB.yaml.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from carcell.design import resolve_design
from carcell.errors import KnowledgeError
from carcell.io.yamlio import load_yaml
from carcell.knowledge import Entry, load_knowledge, walk_entries
from carcell.knowledge.store import DATA_DIR, check_entry
from carcell.model.states import PARAMETER_NAMES
from carcell.scenario import load_scenario
from carcell.scenario.load import validate_raw
from carcell.units import KNOWN_UNITS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DATA_FILES = sorted(DATA_DIR.rglob("*.yaml"))
# set per patient in carcell/design/compile.py (compile_chunk), not by resolve_design
# (recognition of tumour and normal tissues by the logic gate, normal-tissue compartments)
PER_PATIENT = {"host_baseline"}
DESIGN_PARAMETERS = [n for n in PARAMETER_NAMES if not n.startswith(("alive_", "recognition_", "activation_", "normal_",
                                                                             "neurovascular_"))
                     and n not in PER_PATIENT]


def problems_in(tree) -> list[str]:
    problems = []
    for path, node in walk_entries(tree):
        if not isinstance(node, dict):
            problems.append(f"{path}: bare number {node!r} (wrap it in an entry with a source)")
            continue
        try:
            check_entry(path, node)
        except KnowledgeError as e:
            problems.append(str(e))
    return problems


# -- the data files -------------------------------------------------------------------------

def test_knowledge_tree_holds_every_data_file():
    tree = load_knowledge().tree
    assert len(DATA_FILES) >= 8
    for file in DATA_FILES:
        node = tree
        for part in file.relative_to(DATA_DIR).with_suffix("").parts:
            assert part in node, f"{file} not loaded into the knowledge tree"
            node = node[part]


def test_every_number_is_a_sourced_entry():
    tree = load_knowledge().tree
    entries = [p for p, node in walk_entries(tree) if isinstance(node, dict)]
    assert len(entries) > 50, "walk_entries found suspiciously few entries"
    problems = problems_in(tree)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("file", DATA_FILES, ids=lambda p: str(p.relative_to(DATA_DIR)))
def test_each_file_on_disk_is_sourced(file):
    """The same check straight from each file, so a file the loader skipped is still checked."""
    problems = problems_in(load_yaml(file) or {})
    assert not problems, "\n".join(problems)


def test_numbers_hidden_as_strings_are_caught():
    """'1e9' written as a string where an entry value belongs is not a number: flagged."""
    for path, node in walk_entries(load_knowledge().tree):
        if isinstance(node, dict):
            v = node["value"]
            for x in v if isinstance(v, list) else [v]:
                assert not isinstance(x, str), f"{path}: value {x!r} is a string"


# -- the checker can fail -------------------------------------------------------------------

GOOD = {"value": 0.16, "unit": "1/day", "source": "doi:10.1002/psp4.12388"}


@pytest.mark.parametrize("node", [
    GOOD,
    {"value": [0.1, 0.2], "unit": "1", "source": "https://example.org/paper"},
    {"value": 3, "unit": "1/day", "source": "assumption", "note": "assumed, see docs/model.md"},
    {"value": 3, "unit": "1/day", "source": "derived", "note": "from two entries"},
    {"value": 3, "unit": "1/day", "source": "fit", "note": "fitted by validation/calibrate.py"},
    {"value": 3, "unit": "1/day", "source": "cite:Stein2019"},
])
def test_check_entry_accepts_good_entries(node):
    e = check_entry("x.y", node)
    assert isinstance(e, Entry) and e.value == node["value"] and e.path == "x.y"


@pytest.mark.parametrize("node,why", [
    ({"value": 1.0, "unit": "1/day"}, "source"),
    ({"value": 1.0, "unit": "1/day", "source": ""}, "source"),
    ({"value": 1.0, "unit": "1/day", "source": "   "}, "source"),
    ({"value": 1.0, "unit": "1/day", "source": "assumption"}, "note"),
    ({"value": 1.0, "unit": "1/day", "source": "assumption", "note": "  "}, "note"),
    ({"value": 1.0, "unit": "1/day", "source": "derived"}, "note"),
    ({"value": 1.0, "unit": "1/day", "source": "fit"}, "note"),
    ({"value": 1.0, "unit": "1", "source": "a friend told me"}, "source"),
    ({"value": 1.0, "unit": "furlongs", "source": "doi:10.1/x"}, "unit"),
    ({"value": 1.0, "source": "doi:10.1/x"}, "unit"),
    ({"value": "1e9x", "unit": "cells", "source": "doi:10.1/x"}, "value"),
    ({"value": [], "unit": "cells", "source": "doi:10.1/x"}, "value"),
    ({"value": True, "unit": "1", "source": "doi:10.1/x"}, "value"),
])
def test_check_entry_rejects_bad_entries(node, why):
    with pytest.raises(KnowledgeError) as err:
        check_entry("some.path", node)
    msg = str(err.value)
    assert "some.path" in msg and why in msg, msg


def test_check_entry_rejects_missing_source_and_unnoted_assumption():
    with pytest.raises(KnowledgeError, match="no 'source'"):
        check_entry("car_t.kinetics.k_kill", {"value": 1.0, "unit": "1/day"})
    with pytest.raises(KnowledgeError, match="needs a 'note'"):
        check_entry("car_t.kinetics.k_kill", {"value": 1.0, "unit": "1/day", "source": "assumption"})


def test_walk_flags_bare_numbers():
    tree = {"a": {"good": GOOD, "bare": 3.0, "pair": {"median": 1e9, "log_sd": 0.5},
                  "listed": [1, 2], "flag": True, "text": "1e9"}}
    problems = problems_in(tree)
    flagged = {p.split(":")[0] for p in problems}
    assert flagged == {"a.bare", "a.pair.median", "a.pair.log_sd", "a.listed[0]", "a.listed[1]"}


def test_known_units_are_not_empty_strings():
    assert "" not in KNOWN_UNITS and "1/day" in KNOWN_UNITS


# -- the model reads its typical values from the knowledge base ------------------------------

@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_resolve_design_produces_every_model_parameter(example):
    sc = load_scenario(example)
    k = load_knowledge()
    d = resolve_design(sc, k)
    missing = [n for n in DESIGN_PARAMETERS if n not in d.typical]
    assert not missing, f"resolve_design does not produce {missing}"
    unknown = [n for n in d.typical if n not in PARAMETER_NAMES]
    assert not unknown, f"resolve_design produces names the model does not have: {unknown}"
    for name in DESIGN_PARAMETERS:
        v = d.typical[name]
        assert isinstance(v, float) and v == v and abs(v) != float("inf"), (name, v)
    assert k.used, "resolve_design read no knowledge entries"
    for path, e in k.used.items():
        assert e.source, path


def _costim_raw(costim: str) -> dict:
    return {"indication": {"disease": "LBCL"},
            "product": {"car": {"target": "CD19", "costim": costim}}}


def _multipliers(k, domain: str) -> dict[str, float]:
    return {name: float(k.value(f"costim.{domain}.multipliers.{name}"))
            for name in k.names(f"costim.{domain}.multipliers")}


def test_cd28_and_41bb_differ_only_by_their_data():
    k28, k41 = load_knowledge(), load_knowledge()
    d28 = resolve_design(validate_raw(_costim_raw("CD28")), k28)
    d41 = resolve_design(validate_raw(_costim_raw("4-1BB")), k41)
    m28, m41 = _multipliers(k28, "CD28"), _multipliers(k41, "4-1BB")
    assert m28 and set(m28) == set(m41)
    assert set(d28.typical) == set(d41.typical)

    base_k = load_knowledge()
    differ = set()
    for name in d28.typical:
        if name in m28 or name in m41:
            base = float(base_k.value(f"car_t.kinetics.{name}"))
            assert d28.typical[name] == base * m28.get(name, 1.0), name
            assert d41.typical[name] == base * m41.get(name, 1.0), name
            assert d28.typical[name] / d41.typical[name] == pytest.approx(
                m28.get(name, 1.0) / m41.get(name, 1.0), rel=1e-14), name
        else:
            assert d28.typical[name] == d41.typical[name], f"{name} differs without a multiplier"
        if d28.typical[name] != d41.typical[name]:
            differ.add(name)
    assert differ == {n for n in m28 if m28[n] != m41.get(n, 1.0)}
    assert differ, "the two domains should differ somewhere"

    # the rest of the design: memory fraction and antigen threshold from the same two files
    assert d28.memory_fraction == float(k28.value("costim.CD28.memory_fraction"))
    assert d41.memory_fraction == float(k41.value("costim.4-1BB.memory_fraction"))
    t28 = float(k28.value("costim.CD28.antigen_threshold_multiplier"))
    t41 = float(k41.value("costim.4-1BB.antigen_threshold_multiplier"))
    assert d28.recognition_half_density / d41.recognition_half_density == pytest.approx(t28 / t41, rel=1e-14)
    # the construct (its costim), the ledger, the antigen thresholds and the normal tissues'
    # recognition (which follow from the thresholds) may differ; nothing else
    costim_fields = {"scenario", "typical", "memory_fraction", "recognition_half_density", "knowledge",
                     "construct", "ledger", "antigens", "tissues"}
    for f in fields(d28):
        if f.name not in costim_fields:
            assert getattr(d28, f.name) == getattr(d41, f.name), f"{f.name} differs between domains"

    # and each design records the costim entries it read, with their sources
    assert any(p.startswith("costim.CD28.") for p in k28.used)
    assert not any(p.startswith("costim.4-1BB.") for p in k28.used)
    assert any(p.startswith("costim.4-1BB.") for p in k41.used)

