"""Turning a product, an indication and a regimen into per-patient model parameters."""

from carcell.design.compile import CompiledCohort, Design, compile_chunk, omega_deviates, resolve_design

__all__ = ["CompiledCohort", "Design", "compile_chunk", "omega_deviates", "resolve_design"]
