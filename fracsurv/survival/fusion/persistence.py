"""FusionSurvival's saved state: its fitted attributes besides the network's weights.

``save`` (:class:`fracsurv.nn.base.TorchEstimatorMixin`) writes what
:meth:`FusionPersistenceMixin._extra_state` returns next to the weights, and
``load_model`` rebuilds the estimator through ``_restore``. Models saved before
the clinical weight's rename (meta keys ``"alpha"`` and ``"alpha_scores"``) still
load.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FusionPersistenceMixin"]


class FusionPersistenceMixin:
    """The methods of :class:`FusionSurvival` that save and restore its fitted state."""

    def _extra_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "n_channels": self.n_channels_, "input_shape": list(self.input_shape_),
            "base_shape": list(self.base_shape_), "tabular_columns": list(self.tabular_columns_),
            "clinical_weight": self.clinical_weight_, "aux_levels": int(self.aux_levels_),
            "aux_per_crop": bool(self.aux_per_crop_), "feature_names_in": [str(c) for c in self.feature_names_in_],
            "clinical_weight_scores": None if self.clinical_weight_scores_ is None
            else [[k, v] for k, v in self.clinical_weight_scores_.items()],
            "late_weights": None if self.late_weights_ is None
            else [float(w) for w in self.late_weights_],
            "image_branch_alive": bool(getattr(self, "image_branch_alive_", True)),
        }
        arrays = {"x_mean": np.asarray(self.x_mean_, float), "x_scale": np.asarray(self.x_scale_, float),
                  **self._baseline_arrays()}
        return meta, arrays

    def _restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.n_channels_ = int(meta["n_channels"])
        self.image_branch_alive_ = bool(meta.get("image_branch_alive", True))
        self.input_shape_ = tuple(int(s) for s in meta["input_shape"])
        self.base_shape_ = tuple(int(s) for s in meta["base_shape"])
        self.tabular_columns_ = list(meta["tabular_columns"])
        # models saved before the rename carry the keys "alpha" and "alpha_scores"
        self.clinical_weight_ = meta["clinical_weight" if "clinical_weight" in meta else "alpha"]
        self.aux_levels_ = int(meta.get("aux_levels", 0))
        self.aux_per_crop_ = bool(meta.get("aux_per_crop", False))
        scores = meta.get("clinical_weight_scores", meta.get("alpha_scores"))
        self.clinical_weight_scores_ = (None if scores is None
                                        else {float(k): float(v) for k, v in scores})
        self.feature_names_in_ = np.asarray(meta["feature_names_in"], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.x_mean_, self.x_scale_ = arrays["x_mean"], arrays["x_scale"]
        self._restore_baseline(arrays)
        self.histories_ = []
        self.module_ = self._build_module(float(self.clinical_weight_)
                                          if self.clinical_weight_ is not None else 0.0)
        weights = meta.get("late_weights")
        self.late_weights_ = None if weights is None else np.asarray(weights, dtype=np.float64)
