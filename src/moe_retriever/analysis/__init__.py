"""Analyses of a trained run (the paper's Figs. 3-6): modality combinations, expert usage,
computational cost, gradient conflict and embedding maps, gathered in a self-contained report."""

from .report import Report, analyze_run

__all__ = ["Report", "analyze_run"]
