"""Plots and printed summaries of a cohort."""
