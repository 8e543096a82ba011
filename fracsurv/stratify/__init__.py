"""Risk stratification (RiskGrouper, cut-points) and the studies' survival analyses.

* :mod:`~fracsurv.stratify.grouper` -- :class:`RiskGrouper` (LL / LH / HIGH);
* :mod:`~fracsurv.stratify.cutpoint` -- maximally selected log-rank cut-points;
* :mod:`~fracsurv.stratify.analysis` -- tidy tables: log-rank, td-AUC, DeLong,
  clinical decision table (and, re-exported, the Cox tables);
* :mod:`~fracsurv.stratify.cox_tables` -- Cox HR tables and their Table 4 layout;
* :mod:`~fracsurv.stratify.agreement` -- agreement of paired scores (Bland-Altman);
* :mod:`~fracsurv.stratify.delong` -- DeLong's test;
* :mod:`~fracsurv.stratify.calibration` -- survival calibration at a horizon;
* :mod:`~fracsurv.stratify.plots` -- Kaplan-Meier, forest, ROC, td-AUC and
  Bland-Altman figures.
"""

from fracsurv.stratify.agreement import agreement, agreement_table
from fracsurv.stratify.analysis import (
    decision_table,
    delong_table,
    group_levels,
    logrank_tables,
    median_survival_table,
    td_auc_table,
)
from fracsurv.stratify.calibration import calibration_figure, calibration_table
from fracsurv.stratify.cox_tables import CoxTables, cox_table, format_cox_table
from fracsurv.stratify.cutpoint import lausen_schumacher_p, logrank_scan, maxstat_cutpoint
from fracsurv.stratify.delong import auc_ci, delong_test, horizon_labels, placement_values
from fracsurv.stratify.grouper import ADDED_COLUMNS, GROUPS, RiskGrouper
from fracsurv.stratify.plots import (
    bland_altman_figure,
    forest_figure,
    km_figure,
    roc_figure,
    td_auc_figure,
)

__all__ = [
    "ADDED_COLUMNS",
    "GROUPS",
    "CoxTables",
    "RiskGrouper",
    "agreement",
    "agreement_table",
    "auc_ci",
    "bland_altman_figure",
    "calibration_figure",
    "calibration_table",
    "cox_table",
    "decision_table",
    "delong_table",
    "delong_test",
    "forest_figure",
    "format_cox_table",
    "group_levels",
    "horizon_labels",
    "km_figure",
    "lausen_schumacher_p",
    "logrank_scan",
    "logrank_tables",
    "maxstat_cutpoint",
    "median_survival_table",
    "placement_values",
    "roc_figure",
    "td_auc_figure",
    "td_auc_table",
]
