"""Survival metrics: scikit-survival's, plus the confidence intervals and tests it lacks.

Point estimates come from scikit-survival (Harrell's and Uno's C, cumulative/dynamic
AUC, IPCW Brier and integrated Brier). What no peer library offers, and is written
here: percentile-bootstrap confidence intervals for each of them (resampling the
test set; the censoring distribution stays the one estimated on the training
set) and the likelihood-ratio test between nested Cox models.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from sksurv.metrics import (
    brier_score,
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)

from fracsurv._base import survival_arrays

__all__ = [
    "CIResult",
    "LRTestResult",
    "bootstrap_ci",
    "brier_score",
    "concordance_index",
    "concordance_index_ci",
    "cox_lr_test",
    "integrated_brier",
    "integrated_brier_ci",
    "likelihood_ratio_test",
    "mean_auc",
    "mean_auc_ci",
    "time_dependent_auc",
    "uno_c",
    "uno_c_ci",
]


@dataclass(frozen=True)
class CIResult:
    """A point estimate with a percentile-bootstrap confidence interval."""

    estimate: float
    low: float
    high: float
    se: float
    n_boot: int
    n_failed: int = 0

    def __str__(self) -> str:
        return f"{self.estimate:.3f} ({self.low:.3f}-{self.high:.3f})"


@dataclass(frozen=True)
class LRTestResult:
    """Likelihood-ratio chi-square test between nested models."""

    statistic: float
    df: int
    p_value: float


# -- point estimates (thin wrappers over scikit-survival) -----------------------------
def concordance_index(y: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of ``risk`` (higher = earlier event) for structured ``y``."""
    event, time = survival_arrays(y)
    return float(concordance_index_censored(event, time, np.asarray(risk, float))[0])


def uno_c(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
          tau: float | None = None) -> float:
    """Uno's IPCW C-index (censoring weights from ``y_train``), truncated at ``tau``."""
    return float(concordance_index_ipcw(y_train, y_test, np.asarray(risk, float), tau=tau)[0])


def time_dependent_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
                       times: Sequence[float]) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC at ``times`` and its (survival-weighted) mean."""
    auc, mean = cumulative_dynamic_auc(y_train, y_test, np.asarray(risk, float),
                                       np.asarray(times, float))
    return auc, float(mean)


def mean_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
             times: Sequence[float]) -> float:
    """Mean cumulative/dynamic AUC over ``times``."""
    return time_dependent_auc(y_train, y_test, risk, times)[1]


def integrated_brier(y_train: np.ndarray, y_test: np.ndarray, survival: np.ndarray,
                     times: Sequence[float]) -> float:
    """Integrated IPCW Brier score of survival probabilities ``(n, len(times))``."""
    return float(integrated_brier_score(y_train, y_test, np.asarray(survival, float),
                                        np.asarray(times, float)))


# -- bootstrap ---------------------------------------------------------------------
def bootstrap_ci(
    metric: Callable[..., float],
    y: np.ndarray,
    *arrays: np.ndarray,
    n_boot: int = 1000,
    alpha: float = 0.05,
    random_state: int | np.random.Generator | None = None,
    max_failed_fraction: float = 0.1,
) -> CIResult:
    """Percentile bootstrap CI of ``metric(y, *arrays)``, resampling rows together.

    Parameters
    ----------
    metric : callable
        ``metric(y_sample, *array_samples) -> float``.
    y : structured ndarray
        Survival target of the evaluation set.
    *arrays : ndarray
        Row-aligned predictions (risks, survival probabilities, ...).
    n_boot : int
        Number of resamples.
    alpha : float
        1 - confidence level.
    random_state : int, Generator or None
        Seed for reproducible intervals.
    max_failed_fraction : float
        Resamples where the metric is undefined (e.g. no comparable pairs, or a
        time outside the resample's follow-up) are dropped; more than this
        fraction of failures raises ``ValueError``.
    """
    rng = np.random.default_rng(random_state)
    n = len(y)
    estimate = float(metric(y, *arrays))
    values = []
    failed = 0
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = float(metric(y[idx], *(a[idx] for a in arrays)))
        except (ValueError, ZeroDivisionError):
            failed += 1
            continue
        if np.isfinite(v):
            values.append(v)
        else:
            failed += 1
    if failed > max_failed_fraction * n_boot:
        raise ValueError(f"the metric was undefined in {failed} of {n_boot} bootstrap resamples")
    vals = np.asarray(values)
    low, high = np.quantile(vals, [alpha / 2, 1 - alpha / 2])
    return CIResult(estimate, float(low), float(high), float(vals.std(ddof=1)), n_boot, failed)


def concordance_index_ci(y: np.ndarray, risk: np.ndarray, **kwargs: Any) -> CIResult:
    """Harrell's C with a bootstrap CI (``kwargs`` go to :func:`bootstrap_ci`)."""
    return bootstrap_ci(concordance_index, y, np.asarray(risk, float), **kwargs)


def uno_c_ci(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
             tau: float | None = None, **kwargs: Any) -> CIResult:
    """Uno's C with a bootstrap CI over the test set."""
    return bootstrap_ci(lambda yy, r: uno_c(y_train, yy, r, tau), y_test,
                        np.asarray(risk, float), **kwargs)


def mean_auc_ci(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
                times: Sequence[float], **kwargs: Any) -> CIResult:
    """Mean time-dependent AUC with a bootstrap CI over the test set."""
    return bootstrap_ci(lambda yy, r: mean_auc(y_train, yy, r, times), y_test,
                        np.asarray(risk, float), **kwargs)


def integrated_brier_ci(y_train: np.ndarray, y_test: np.ndarray, survival: np.ndarray,
                        times: Sequence[float], **kwargs: Any) -> CIResult:
    """Integrated Brier score with a bootstrap CI over the test set."""
    return bootstrap_ci(lambda yy, s: integrated_brier(y_train, yy, s, times), y_test,
                        np.asarray(survival, float), **kwargs)


# -- likelihood-ratio tests ------------------------------------------------------------
def likelihood_ratio_test(loglik_full: float, loglik_reduced: float, df_full: int,
                          df_reduced: int) -> LRTestResult:
    """LR chi-square test of a reduced model nested in a full one.

    ``statistic = 2 (loglik_full - loglik_reduced)`` on ``df_full - df_reduced``
    degrees of freedom.
    """
    df = int(df_full) - int(df_reduced)
    if df <= 0:
        raise ValueError(f"the full model must have more parameters ({df_full} <= {df_reduced})")
    stat = max(0.0, 2.0 * (float(loglik_full) - float(loglik_reduced)))
    return LRTestResult(stat, df, float(stats.chi2.sf(stat, df)))


def cox_lr_test(data: Any, duration_col: str, event_col: str, full: Sequence[str],
                reduced: Sequence[str], penalizer: float = 0.0) -> LRTestResult:
    """LR test between nested Cox models fitted with lifelines (Efron ties).

    ``reduced`` may be empty (the null model). Covariates of ``reduced`` must be a
    subset of ``full``.
    """
    from lifelines import CoxPHFitter

    if not set(reduced) <= set(full):
        raise ValueError(f"reduced covariates {sorted(set(reduced) - set(full))} are not in full")

    def loglik(cols: Sequence[str]) -> float:
        if not cols:  # null model: the Efron partial log-likelihood at beta = 0
            import torch

            from fracsurv.survival.loss import cox_nll

            t = torch.tensor(np.asarray(data[duration_col], float))
            e = torch.tensor(np.asarray(data[event_col], float))
            return -float(cox_nll(torch.zeros_like(t), t, e, reduction="sum"))
        fit = CoxPHFitter(penalizer=penalizer).fit(
            data[[duration_col, event_col, *cols]], duration_col, event_col)
        return float(fit.log_likelihood_)

    return likelihood_ratio_test(loglik(full), loglik(reduced), len(full), len(reduced))
