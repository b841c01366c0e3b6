"""Turning a product, an indication and a regimen into per-patient model parameters."""

from carcell.design.compile import CompiledCohort, Design, compile_chunk, resolve_design

__all__ = ["CompiledCohort", "Design", "compile_chunk", "resolve_design"]
