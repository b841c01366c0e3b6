"""Scenario files: what a user asks carcell to simulate, validated with friendly errors."""

from carcell.scenario.load import apply_overrides, load_scenario, scenario_hash
from carcell.scenario.schema import Scenario

__all__ = ["Scenario", "apply_overrides", "load_scenario", "scenario_hash"]
