"""Survival metrics: a thin layer over scikit-survival plus CIs and LR tests.

scikit-survival's own functions are re-exported unchanged
(``concordance_index_censored``, ``concordance_index_ipcw``,
``cumulative_dynamic_auc``, ``brier_score``, ``integrated_brier_score``); the
wrappers take the structured ``y`` directly. See ``docs/metrics.md``.
"""

from fracsurv.metrics.core import (
    CIResult,
    LRTestResult,
    bootstrap_ci,
    brier_score,
    concordance_index,
    concordance_index_censored,
    concordance_index_ci,
    concordance_index_ipcw,
    cox_lr_test,
    cumulative_dynamic_auc,
    evaluation_times,
    integrated_brier,
    integrated_brier_ci,
    integrated_brier_score,
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
