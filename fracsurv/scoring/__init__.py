"""Prevalent vertebral fracture scoring (PVFScorer), row aggregation and Grad-CAM."""

from fracsurv.scoring.aggregate import aggregate_cell_scores, cell_groups
from fracsurv.scoring.gradcam import grad_cam_figure, grad_cam_maps
from fracsurv.scoring.pvf import PVFScorer

__all__ = ["PVFScorer", "aggregate_cell_scores", "cell_groups", "grad_cam_figure",
           "grad_cam_maps"]
