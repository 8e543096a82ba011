"""Small frame transformers that keep pipelines safe to save (JSON parameters only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from fracsurv._base import FrameTransformerMixin

__all__ = ["SelectColumns"]


class SelectColumns(FrameTransformerMixin, TransformerMixin, BaseEstimator):
    """Keep ``columns`` of a frame, as floats (the hand-over from image steps to a survival model).

    Parameters
    ----------
    columns : sequence of str
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"columns": ["array-like"]}

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns = columns

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags

    def fit(self, X: pd.DataFrame, y: Any = None) -> SelectColumns:
        """Check that the columns exist."""
        self._validate_params()
        missing = [c for c in self.columns if c not in X.columns]
        if missing:
            raise ValueError(f"X lacks the columns {missing}")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The selected columns as float."""
        return X[list(self.columns)].astype(float)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The selected column names."""
        return np.asarray(list(self.columns), dtype=object)
