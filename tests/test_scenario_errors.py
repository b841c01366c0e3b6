"""Bad scenarios and bad command lines through the real CLI: exit 2, one line, field and fix.

Every case runs ``python -m carcell run BAD.yaml --out DIR`` in a subprocess where DIR already
holds an earlier result (keep.txt), and checks that

* the exit status is 2 and there is no Python traceback,
* stderr is exactly one line, starting ``error:``,
* that line names the field path (or the option) and says how to fix it,
* nothing in DIR was deleted or added.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from carcell.errors import ScenarioError
from carcell.scenario.load import validate_raw

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = ROOT / "examples" / "minimal.yaml"
OK = "indication: {disease: LBCL}\n"


def carcell(*args, cwd):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    return subprocess.run([sys.executable, "-m", "carcell", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL)


# case -> (scenario text, or None for "no such file"; extra CLI args; strings the message must hold)
CASES: dict[str, tuple[str | None, list[str], list[str]]] = {
    "misspelt_costim": (
        "indication: {disease: LBCL}\nproduct: {car: {costim: CD-28}}\n", [],
        ["product.car.costim", "'CD-28'", "did you mean 'CD28'", "4-1BB"]),
    "unknown_disease": (
        "indication: {disease: DLBCL}\n", [],
        ["indication.disease", "'DLBCL'", "did you mean 'LBCL'", "B-ALL", "MM"]),
    "misspelt_section": (
        "indication: {disease: LBCL}\nprodcut: {dose: {cells_per_kg: 1e6}}\n", [],
        ["prodcut", "unknown field", "did you mean 'product'"]),
    "misspelt_nested_field": (
        "indication: {disease: LBCL}\nproduct: {dose: {cells_per_kgg: 1e6}}\n", [],
        ["product.dose.cells_per_kgg", "did you mean 'cells_per_kg'"]),
    "negative_dose": (
        "indication: {disease: LBCL}\nproduct: {dose: {cells_per_kg: -2.0e6}}\n", [],
        ["product.dose.cells_per_kg", "greater than 0"]),
    "both_doses": (
        "indication: {disease: LBCL}\nproduct: {dose: {cells_per_kg: 1.0e6, cells: 1.0e8}}\n", [],
        ["product.dose", "exactly one of cells_per_kg or cells"]),
    "unknown_variability_parameter": (
        "indication: {disease: LBCL}\npopulation: {variability: {k_kil: 0.3}}\n", [],
        ["population.variability", "'k_kil'", "did you mean 'k_kill'"]),
    "variability_out_of_range": (
        "indication: {disease: LBCL}\npopulation: {variability: {k_kill: 7}}\n", [],
        ["population.variability", "k_kill", "between 0 and 3"]),
    "invalid_yaml": (
        "name: bad indentation\nindication:\n  disease: LBCL\n   extra: 1\n", [],
        ["not valid YAML", "line 4"]),
    "empty_file": ("", [], ["empty", "indication: {disease: LBCL}"]),
    "comment_only_file": ("# nothing here yet\n", [], ["empty", "indication"]),
    "not_a_mapping": ("- LBCL\n- CD28\n", [], ["a scenario is a mapping", "list"]),
    "missing_disease": ("indication: {}\n", [], ["indication.disease", "required"]),
    "missing_file": (None, [], ["no such scenario file", "missing.yaml"]),
    "set_without_equals": (OK, ["--set", "population.n"], ["--set", "population.n",
                                                          "dotted.path=value"]),
    "set_empty_path": (OK, ["--set", "=3"], ["--set", "path before '=' is empty"]),
    "set_non_numeric": (OK, ["--set", "population.n=many"], ["population.n", "'many'", "integer"]),
    "set_non_numeric_float": (OK, ["--set", "product.dose.cells_per_kg=lots"],
                              ["product.dose.cells_per_kg", "'lots'", "number"]),
    "set_into_a_value": (OK, ["--set", "indication.disease.kind=x"],
                         ["--set", "'disease' holds a value, not a section"]),
    "set_unknown_costim": (OK, ["--set", "product.car.costim=41BB"],
                           ["product.car.costim", "did you mean '4-1BB'"]),
    "negative_follow_up": (
        "indication: {disease: LBCL}\ntrial: {follow_up_days: -30}\n", [],
        ["trial.follow_up_days", "greater than 0"]),
    "set_negative_follow_up": (OK, ["--set", "trial.follow_up_days=-3"],
                               ["trial.follow_up_days", "greater than 0"]),
    "zero_patients": (OK, ["-n", "0"], ["population.n", "greater than or equal to 1"]),
    "output_grid_coarser_than_follow_up": (
        "indication: {disease: LBCL}\ntrial: {follow_up_days: 10, output_every_days: 30}\n", [],
        ["trial", "output_every_days must not exceed follow_up_days"]),
}


# Infinite values must be rejected by validation, not discovered by the solver.
INF_CASES = {
    "infinite_dose": ("indication: {disease: LBCL}\nproduct: {dose: {cells_per_kg: .inf}}\n",
                      ["-n", "2", "--set", "trial.follow_up_days=20"],
                      ["product.dose.cells_per_kg"]),
    "infinite_baseline_burden": (
        "indication: {disease: LBCL, baseline_burden: {median: .inf}}\n",
        ["-n", "2", "--set", "trial.follow_up_days=20"], ["indication.baseline_burden.median"]),
}
CASES.update(INF_CASES)
PARAMS = list(CASES)


@pytest.mark.parametrize("case", PARAMS)
def test_bad_scenario_exits_2_with_one_clear_line(case, tmp_path):
    text, args, needles = CASES[case]
    scen = tmp_path / ("missing.yaml" if text is None else "bad.yaml")
    if text is not None:
        scen.write_text(text)
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")

    r = carcell("run", scen.name, "--out", out, *args, cwd=tmp_path)

    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    line = lines[0]
    assert line.startswith("error:"), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    if text is not None and not any(a.startswith("--set") for a in args):
        assert "bad.yaml" in line, "the message should name the file"
    # the earlier result is still there, and nothing was written next to it
    assert (out / "keep.txt").read_text() == "earlier results"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_failed_run_does_not_create_the_output_directory(tmp_path):
    (tmp_path / "bad.yaml").write_text("indication: {disease: DLBCL}\n")
    r = carcell("run", "bad.yaml", "--out", tmp_path / "new", cwd=tmp_path)
    assert r.returncode == 2
    assert not (tmp_path / "new").exists()


def test_out_is_an_existing_file(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("not a directory")
    r = carcell("run", MINIMAL, "--out", target, "-n", 2, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1 and "--out" in line and "not a directory" in line
    assert target.read_text() == "not a directory"


def test_validate_reports_the_same_error(tmp_path):
    (tmp_path / "bad.yaml").write_text("indication: {disease: LBCL}\nproduct: {car: {costim: CD-28}}\n")
    r = carcell("validate", "bad.yaml", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "product.car.costim" in r.stderr and "did you mean 'CD28'" in r.stderr


def test_several_errors_are_all_reported(tmp_path):
    """Two mistakes in one file: both fields are named (not only the first one)."""
    (tmp_path / "bad.yaml").write_text(
        "indication: {disease: DLBCL}\nproduct: {car: {costim: CD-28}}\n")
    r = carcell("run", "bad.yaml", "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "indication.disease" in r.stderr and "product.car.costim" in r.stderr


def test_validate_raw_non_mapping_names_the_type():
    with pytest.raises(ScenarioError) as err:
        validate_raw(["LBCL"], "api")
    assert "got a list" in str(err.value), str(err.value)
    assert "{" not in str(err.value)
