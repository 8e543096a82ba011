"""Survival-function machinery shared by every risk model (Breslow baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sksurv.base import SurvivalAnalysisMixin
from sksurv.functions import StepFunction
from sksurv.linear_model.coxph import BreslowEstimator

from fracsurv._base import survival_arrays

__all__ = ["BreslowSurvivalMixin"]


class BreslowSurvivalMixin(SurvivalAnalysisMixin):
    """``predict_survival_function`` / ``predict_cumulative_hazard_function`` / ``score``.

    After fitting the risk model, a subclass calls :meth:`_fit_baseline` with its
    training risks; scikit-survival's :class:`BreslowEstimator` estimates the
    baseline hazard, and the return types match scikit-survival's exactly
    (arrays of :class:`~sksurv.functions.StepFunction`, or ``return_array=True``).
    ``score`` is Harrell's C (from :class:`sksurv.base.SurvivalAnalysisMixin`).
    """

    def _fit_baseline(self, risk: np.ndarray, y: np.ndarray) -> None:
        event, time = survival_arrays(y)
        self.baseline_model_ = BreslowEstimator().fit(np.asarray(risk, dtype=float), event, time)
        self.unique_times_ = self.baseline_model_.unique_times_

    def predict_cumulative_hazard_function(self, X: Any, return_array: bool = False) -> np.ndarray:
        """Cumulative hazard H(t | x) = H0(t) exp(risk(x)).

        Parameters
        ----------
        X : array-like or DataFrame
            Samples.
        return_array : bool
            Return values at ``unique_times_`` as an array instead of step functions.
        """
        return self._predict_cumulative_hazard_function(
            self.baseline_model_, self.predict(X), return_array)

    def predict_survival_function(self, X: Any, return_array: bool = False) -> np.ndarray:
        """Survival S(t | x) = S0(t)^exp(risk(x)).

        Parameters
        ----------
        X : array-like or DataFrame
            Samples.
        return_array : bool
            Return values at ``unique_times_`` as an array instead of step functions.
        """
        return self._predict_survival_function(self.baseline_model_, self.predict(X), return_array)

    # -- persistence of the baseline (no pickle) -------------------------
    def _baseline_arrays(self) -> dict[str, np.ndarray]:
        b = self.baseline_model_
        return {
            "baseline_time": np.asarray(b.cum_baseline_hazard_.x, dtype=np.float64),
            "baseline_cumhaz": np.asarray(b.cum_baseline_hazard_.y, dtype=np.float64),
            "unique_times": np.asarray(b.unique_times_, dtype=np.float64),
        }

    def _restore_baseline(self, arrays: dict[str, np.ndarray]) -> None:
        b = BreslowEstimator()
        x, h = arrays["baseline_time"], arrays["baseline_cumhaz"]
        b.cum_baseline_hazard_ = StepFunction(x, h)
        b.baseline_survival_ = StepFunction(x, np.exp(-h))
        b.unique_times_ = arrays["unique_times"]
        self.baseline_model_ = b
        self.unique_times_ = b.unique_times_
