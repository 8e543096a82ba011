"""Prevalent vertebral fracture scoring (PVFScorer) and Grad-CAM."""

from fracsurv.scoring.pvf import PVFScorer, aggregate_cell_scores, cell_groups

__all__ = ["PVFScorer", "aggregate_cell_scores", "cell_groups"]
