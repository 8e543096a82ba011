"""Survival metrics: a thin layer over scikit-survival plus CIs and LR tests.

scikit-survival's own functions are re-exported unchanged
(``concordance_index_censored``, ``concordance_index_ipcw``,
``cumulative_dynamic_auc``, ``brier_score``, ``integrated_brier_score``); the
wrappers take the structured ``y`` directly. See ``docs/metrics.md``.
"""

from fracsurv.metrics import core
from fracsurv.metrics.core import *  # noqa: F403 (the public names are core's)
from fracsurv.metrics.pvalues import format_p, holm_adjust

__all__ = [*core.__all__, "format_p", "holm_adjust"]
