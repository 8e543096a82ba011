"""Vertebrae: Genant grading rules, crop stacks and the learned cropper.

``VertebraCropper`` and ``draw_vertebrae`` load lazily, so that importing the
pure Genant rules (as the synthetic cohort does) does not import torch.
"""

from typing import Any

from fracsurv.vertebrae.genant import grade_vertebrae, heights, soft_grade

__all__ = ["VertebraCropper", "draw_vertebrae", "grade_vertebrae", "heights", "soft_grade"]

_LAZY = {"VertebraCropper": "fracsurv.vertebrae.cropper",
         "draw_vertebrae": "fracsurv.vertebrae.figures"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fracsurv.vertebrae' has no attribute {name!r}")
