"""Survival metrics: a thin layer over scikit-survival plus CIs and LR tests."""

from fracsurv.metrics.core import (
    CIResult,
    LRTestResult,
    bootstrap_ci,
    brier_score,
    concordance_index,
    concordance_index_ci,
    cox_lr_test,
    integrated_brier,
    integrated_brier_ci,
    likelihood_ratio_test,
    mean_auc,
    mean_auc_ci,
    time_dependent_auc,
    uno_c,
    uno_c_ci,
)

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
