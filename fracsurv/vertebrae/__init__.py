"""Vertebrae: Genant grading rules (and, later, the learned cropper)."""

from fracsurv.vertebrae.genant import grade_vertebrae, heights, soft_grade

__all__ = ["grade_vertebrae", "heights", "soft_grade"]
