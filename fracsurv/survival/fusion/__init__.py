"""``FusionSurvival``: multimodal DeepSurv on a radiograph (or vertebra crops) + clinical data.

* :mod:`~fracsurv.survival.fusion.estimator` -- the estimator: parameters, ``fit``
  as named steps and prediction;
* :mod:`~fracsurv.survival.fusion.data` -- frame checks, auxiliary labels,
  geometry and the streaming dataset;
* :mod:`~fracsurv.survival.fusion.training` -- training stages, closed-form fits
  (ridge Cox start, late-fusion FC) and the clinical weight search;
* :mod:`~fracsurv.survival.fusion.persistence` -- the fitted state saved with
  the weights, and its restoration;
* the networks live in :mod:`fracsurv.survival._fusion_nets`, the validation
  C-index callback in :mod:`fracsurv.survival.callbacks`.
"""

from __future__ import annotations

from fracsurv.survival.fusion.estimator import DEFAULT_ALPHA_GRID, FusionSurvival

__all__ = ["DEFAULT_ALPHA_GRID", "FusionSurvival"]
