"""fracsurv: osteoporotic fracture risk from lateral spine radiographs and clinical data.

Every component is a scikit-learn estimator; torch models share one skorch base
(:mod:`fracsurv.nn.base`). Public estimators are re-exported here lazily so that
``import fracsurv`` stays cheap.
"""

from __future__ import annotations

import importlib
import logging

__version__ = "0.1.0"

# a library logs, it does not print: the application (or fracsurv's CLI) adds handlers
logging.getLogger(__name__).addHandler(logging.NullHandler())

_EXPORTS = {
    "CropStacker": "fracsurv.vertebrae.crops",
    "DeepSurvRegressor": "fracsurv.survival.deepsurv",
    "DicomLoader": "fracsurv.io.loader",
    "DiffXGenerator": "fracsurv.generative.diffx",
    "FusionSurvival": "fracsurv.survival.fusion",
    "PVFScorer": "fracsurv.scoring.pvf",
    "RiskGrouper": "fracsurv.stratify.grouper",
    "SelectColumns": "fracsurv.preprocessing",
    "VertebraCropper": "fracsurv.vertebrae.cropper",
    "cox_nll": "fracsurv.survival.loss",
    "load_demo_cohort": "fracsurv.datasets.spine",
    "load_pipeline": "fracsurv.persist",
    "make_spine_cohort": "fracsurv.datasets.spine",
    "save_pipeline": "fracsurv.persist",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fracsurv' has no attribute {name!r}")
