"""Risk stratification (RiskGrouper) and the studies' survival analyses."""

from fracsurv.stratify.analysis import (
    agreement,
    bland_altman_figure,
    cox_table,
    decision_table,
    delong_test,
    horizon_labels,
    km_figure,
    logrank_tables,
    td_auc_figure,
    td_auc_table,
)
from fracsurv.stratify.grouper import GROUPS, RiskGrouper, maxstat_cutpoint

__all__ = ["GROUPS", "RiskGrouper", "agreement", "bland_altman_figure", "cox_table",
           "decision_table", "delong_test", "horizon_labels", "km_figure", "logrank_tables",
           "maxstat_cutpoint", "td_auc_figure", "td_auc_table"]
