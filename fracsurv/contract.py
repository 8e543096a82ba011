"""The data contract's defaults, shared by the models and the synthetic cohort.

A leaf module: the estimators take their defaults from here, never from the
simulator in :mod:`fracsurv.datasets` (see ``docs/data_contract.md``).
"""

from __future__ import annotations

__all__ = ["CLINICAL_COLUMNS", "DEFAULT_IMAGE_SHAPE"]

#: The data contract's clinical columns: numeric, one row per patient, no missing values.
CLINICAL_COLUMNS: tuple[str, ...] = (
    "age", "female", "bmi", "tscore_fn", "prior_fracture", "parental_hip_fracture",
    "smoking", "glucocorticoids", "rheumatoid_arthritis", "secondary_osteoporosis",
    "alcohol_3plus",
)

#: Radiograph size (H, W) of the multimodal and Diff-X studies, in pixels.
DEFAULT_IMAGE_SHAPE: tuple[int, int] = (1024, 512)
