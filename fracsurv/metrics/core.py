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
from fracsurv._progress import progress

__all__ = [
    "CIResult",
    "LRTestResult",
    "bootstrap_ci",
    "brier_score",
    "concordance_index",
    "concordance_index_censored",
    "concordance_index_ci",
    "concordance_index_ipcw",
    "cox_lr_test",
    "cumulative_dynamic_auc",
    "evaluation_times",
    "integrated_brier",
    "integrated_brier_ci",
    "integrated_brier_score",
    "likelihood_ratio_test",
    "mean_auc",
    "mean_auc_ci",
    "time_dependent_auc",
    "uno_c",
    "uno_c_ci",
]


@dataclass(frozen=True)
class CIResult:
    """A point estimate with a percentile-bootstrap confidence interval.

    Attributes
    ----------
    estimate : float
        The metric on the full evaluation set.
    low, high : float
        The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of the bootstrap values.
    se : float
        Standard deviation of the bootstrap values (bootstrap standard error).
    n_boot : int
        Resamples drawn.
    n_failed : int
        Resamples where the metric was undefined and that were dropped.
    alpha : float
        1 - confidence level.
    """

    estimate: float
    low: float
    high: float
    se: float
    n_boot: int
    n_failed: int = 0
    alpha: float = 0.05

    def __str__(self) -> str:
        return f"{self.estimate:.3f} ({self.low:.3f}-{self.high:.3f})"

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """``{estimate, CI low, CI high, SE}`` (keys prefixed), for table rows."""
        return {f"{prefix}estimate": self.estimate, f"{prefix}CI low": self.low,
                f"{prefix}CI high": self.high, f"{prefix}SE": self.se}


@dataclass(frozen=True)
class LRTestResult:
    """Likelihood-ratio chi-square test between nested models."""

    statistic: float
    df: int
    p_value: float


# -- point estimates (thin wrappers over scikit-survival) -----------------------------
def concordance_index(y: np.ndarray, risk: np.ndarray, tied_tol: float = 1e-8) -> float:
    """Harrell's C of ``risk`` (higher = earlier event) for a structured ``y``.

    Same definition as :func:`sksurv.metrics.concordance_index_censored`, which it
    calls: a pair is comparable when the shorter time is an event (an event tied
    with a censoring time counts, two tied event times do not); risks within
    ``tied_tol`` count 1/2.

    Parameters
    ----------
    y : structured ndarray
        ``(event, time)`` as made by ``sksurv.util.Surv.from_arrays``.
    risk : array-like of shape (n,)
        Predicted risk.
    tied_tol : float
        Tolerance under which two risks are tied.

    Returns
    -------
    float
        C in [0, 1].
    """
    event, time = survival_arrays(y)
    risk = np.asarray(risk, float).ravel()
    if risk.shape[0] != len(y):
        raise ValueError(f"risk has {risk.shape[0]} values but y has {len(y)} rows")
    return float(concordance_index_censored(event, time, risk, tied_tol=tied_tol)[0])


def uno_c(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
          tau: float | None = None) -> float:
    """Uno's IPCW C-index (:func:`sksurv.metrics.concordance_index_ipcw`).

    Parameters
    ----------
    y_train : structured ndarray
        Training target; its Kaplan-Meier censoring distribution gives the weights.
    y_test : structured ndarray
        Evaluation target.
    risk : array-like of shape (n_test,)
        Predicted risk for ``y_test``.
    tau : float, optional
        Truncation time (pairs beyond it are ignored).

    Returns
    -------
    float
    """
    return float(concordance_index_ipcw(y_train, y_test, np.asarray(risk, float), tau=tau)[0])


def time_dependent_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
                       times: Sequence[float]) -> tuple[np.ndarray, float]:
    """Cumulative/dynamic AUC (:func:`sksurv.metrics.cumulative_dynamic_auc`).

    Parameters
    ----------
    y_train, y_test : structured ndarray
        Training target (censoring weights) and evaluation target.
    risk : array-like of shape (n_test,)
        Predicted risk (one score for all times).
    times : sequence of float
        Evaluation times, inside the follow-up of ``y_test``.

    Returns
    -------
    auc : ndarray of shape (len(times),)
    mean_auc : float
        scikit-survival's mean, weighted by the Kaplan-Meier estimate of the
        survival function.
    """
    auc, mean = cumulative_dynamic_auc(y_train, y_test, np.asarray(risk, float),
                                       np.asarray(times, float))
    return auc, float(mean)


def evaluation_times(y_train: np.ndarray, y_test: np.ndarray, n: int = 8) -> np.ndarray:
    """A grid of ``n`` times where IPCW AUC(t) and Brier(t) are estimable.

    From the 10th percentile of the test event times (or the first test time)
    to the 80th percentile, kept inside both follow-ups (scikit-survival needs
    the times below the largest training time and inside the test range).

    Parameters
    ----------
    y_train, y_test : structured ndarray
    n : int
        Number of times (at least 2).

    Returns
    -------
    ndarray of shape (n,)
    """
    from fracsurv._base import survival_arrays

    event, time = survival_arrays(y_test)
    _, t_train = survival_arrays(y_train)
    if not event.any():
        raise ValueError("y_test holds no event: no time grid for AUC(t) or Brier(t)")
    hi = min(np.percentile(time[event], 80), t_train.max(), time.max())
    lo = max(np.percentile(time[event], 10), time.min())
    return np.linspace(lo, hi * 0.999, max(int(n), 2))


def mean_auc(y_train: np.ndarray, y_test: np.ndarray, risk: np.ndarray,
             times: Sequence[float]) -> float:
    """Mean cumulative/dynamic AUC over ``times`` (see :func:`time_dependent_auc`)."""
    return time_dependent_auc(y_train, y_test, risk, times)[1]


def integrated_brier(y_train: np.ndarray, y_test: np.ndarray, survival: np.ndarray,
                     times: Sequence[float]) -> float:
    """Integrated IPCW Brier score (:func:`sksurv.metrics.integrated_brier_score`).

    Parameters
    ----------
    y_train, y_test : structured ndarray
        Training target (censoring weights) and evaluation target.
    survival : array-like of shape (n_test, len(times))
        Predicted survival probabilities at ``times``.
    times : sequence of float
        At least two increasing times inside the follow-up of ``y_test``.

    Returns
    -------
    float
        Lower is better; 0.25 is an uninformative constant prediction of 0.5.
    """
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
        Seed for reproducible intervals (the same seed gives the same resamples,
        so two models evaluated with one seed are compared on the same draws).
    max_failed_fraction : float
        Resamples where the metric is undefined (e.g. no comparable pairs, or a
        time outside the resample's follow-up) are dropped; more than this
        fraction of failures raises ``ValueError``.

    Returns
    -------
    CIResult
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    n = len(y)
    arrays = tuple(np.asarray(a) for a in arrays)
    for k, a in enumerate(arrays):
        if a.shape[0] != n:
            raise ValueError(f"array {k} has {a.shape[0]} rows but y has {n}")
    rng = np.random.default_rng(random_state)
    estimate = float(metric(y, *arrays))
    values = []
    failed = 0
    for _ in progress(range(n_boot), desc="bootstrap"):
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
    return CIResult(estimate, float(low), float(high), float(vals.std(ddof=1)), n_boot, failed,
                    alpha)


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
                reduced: Sequence[str] = (), penalizer: float = 0.0) -> LRTestResult:
    """LR test between nested Cox models fitted with lifelines' ``CoxPHFitter`` (Efron ties).

    Parameters
    ----------
    data : DataFrame
        Covariates plus the duration and event columns.
    duration_col, event_col : str
        Names of the time and event columns.
    full : sequence of str
        Covariates of the larger model (at least one).
    reduced : sequence of str, default=()
        Covariates of the nested model, a subset of ``full``; empty = the null model.
    penalizer : float
        lifelines' ridge penalty (0 = the plain partial likelihood, where the test
        has its chi-square distribution).

    Returns
    -------
    LRTestResult
    """
    from lifelines import CoxPHFitter

    full, reduced = list(full), list(reduced)
    if not full:
        raise ValueError("the full model needs at least one covariate")
    missing = [c for c in [duration_col, event_col, *full] if c not in data.columns]
    if missing:
        raise ValueError(f"data has no column(s) {missing}")
    if not set(reduced) <= set(full):
        raise ValueError(f"reduced covariates {sorted(set(reduced) - set(full))} are not in full")

    def fit(cols: Sequence[str]) -> Any:
        return CoxPHFitter(penalizer=penalizer).fit(
            data[[duration_col, event_col, *cols]], duration_col, event_col)

    f = fit(full)
    if reduced:
        ll_reduced = float(fit(reduced).log_likelihood_)
    else:  # lifelines' own overall test is 2 (ll_full - ll_null)
        ll_reduced = float(f.log_likelihood_) - f.log_likelihood_ratio_test().test_statistic / 2
    return likelihood_ratio_test(f.log_likelihood_, ll_reduced, len(full), len(reduced))
