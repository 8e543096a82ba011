"""The survival analyses of the source studies, as tidy pandas tables.

lifelines fits the Cox models and runs the log-rank tests, scikit-survival gives
the time-dependent AUC, scipy the correlation. Written by hand because no
maintained Python library offers them: DeLong's test for two correlated AUCs
(:mod:`fracsurv.stratify.delong`), the Table 4-style layout of Cox models
(:mod:`fracsurv.stratify.cox_tables`, re-exported here with :func:`cox_table`)
and the clinical decision table. Figures live in :mod:`fracsurv.stratify.plots`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fracsurv._base import survival_arrays
from fracsurv.metrics.pvalues import holm_adjust
from fracsurv.stratify.agreement import agreement, agreement_table  # re-exported
from fracsurv.stratify.cox_tables import CoxTables, cox_table, format_cox_table  # re-exported
from fracsurv.stratify.delong import delong_test, horizon_labels
from fracsurv.stratify.grouper import HIGH_RISK_GROUPS

__all__ = [
    "CoxTables",
    "agreement",
    "agreement_table",
    "cox_table",
    "decision_table",
    "delong_table",
    "format_cox_table",
    "group_levels",
    "logrank_tables",
    "median_survival_table",
    "td_auc_table",
]


# -- Kaplan-Meier / log-rank ---------------------------------------------------------------
def group_levels(groups: Any) -> tuple[pd.Series, list]:
    """``groups`` as a 0-based Series, and its levels (category order if categorical)."""
    g = groups.reset_index(drop=True) if isinstance(groups, pd.Series) else pd.Series(groups)
    if isinstance(g.dtype, pd.CategoricalDtype):
        return g, [c for c in g.cat.categories if (g == c).any()]
    return g, sorted(g.unique())


def logrank_tables(y: np.ndarray, groups: pd.Series | np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise log-rank tests and the k-group log-rank test (lifelines).

    Parameters
    ----------
    y : structured ndarray
    groups : array-like of shape (n,)
        Group labels (e.g. ``risk_group``); empty categories are ignored.

    Returns
    -------
    pairwise : DataFrame
        ``group A``, ``group B``, ``test statistic``, ``p`` (unadjusted) and
        ``p (Holm)``, adjusted for the number of pairs by Holm's step-down method
        (:func:`fracsurv.metrics.holm_adjust`).
    overall : DataFrame
        One row: ``test statistic``, ``df``, ``p``.
    """
    from lifelines.statistics import multivariate_logrank_test, pairwise_logrank_test

    event, time = survival_arrays(y)
    series, levels = group_levels(groups)
    g = series.astype(str).to_numpy()
    if len(g) != len(time):
        raise ValueError(f"groups has {len(g)} values but y has {len(time)} rows")
    if len(levels) < 2:
        raise ValueError("log-rank tests need at least two non-empty groups")
    s = pairwise_logrank_test(time, g, event).summary
    order = [str(c) for c in levels]
    pw = pd.DataFrame({"group A": [a for a, _ in s.index], "group B": [b for _, b in s.index],
                       "test statistic": s["test_statistic"].to_numpy(),
                       "p": s["p"].to_numpy()})
    # list pairs in the levels' order (LL vs LH, LL vs HIGH, LH vs HIGH)
    rank = {c: k for k, c in enumerate(order)}
    swap = pw["group A"].map(rank) > pw["group B"].map(rank)
    pw.loc[swap, ["group A", "group B"]] = pw.loc[swap, ["group B", "group A"]].to_numpy()
    pw = pw.sort_values(["group A", "group B"], key=lambda c: c.map(rank)).reset_index(drop=True)
    pw["p (Holm)"] = holm_adjust(pw["p"].to_numpy())
    mv = multivariate_logrank_test(time, g, event)
    overall = pd.DataFrame({"test statistic": [mv.test_statistic], "df": [mv.degrees_of_freedom],
                            "p": [mv.p_value]}, index=["all groups"])
    return pw, overall


def median_survival_table(y: np.ndarray, groups: pd.Series | np.ndarray,
                          confidence: float = 0.95) -> pd.DataFrame:
    """Per group: n, events, censored and the Kaplan-Meier median time to fracture.

    Parameters
    ----------
    y : structured ndarray
    groups : array-like of shape (n,)
    confidence : float, default=0.95
        Level of the median's interval (lifelines' ``median_survival_times``
        of the KM confidence band).

    Returns
    -------
    DataFrame
        Index = non-empty groups; ``n``, ``events``, ``censored``, ``median``,
        ``median CI low``, ``median CI high`` (NaN where the curve does not reach
        50 %, which the ``median note`` column says).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    event, time = survival_arrays(y)
    g, levels = group_levels(groups)
    if len(g) != len(time):
        raise ValueError(f"groups has {len(g)} values but y has {len(time)} rows")
    rows = {}
    for level in levels:
        m = (g == level).to_numpy()
        kmf = KaplanMeierFitter(alpha=1 - confidence).fit(time[m], event[m])
        med = float(kmf.median_survival_time_)
        ci = median_survival_times(kmf.confidence_interval_).to_numpy(float).ravel()
        lo, hi = (float(v) if np.isfinite(v) else np.nan for v in ci[:2])
        reached = np.isfinite(med)
        rows[str(level)] = {"n": int(m.sum()), "events": int(event[m].sum()),
                            "censored": int((~event[m]).sum()),
                            "median": med if reached else np.nan,
                            "median CI low": lo, "median CI high": hi,
                            "median note": "" if reached else
                            "not reached (cumulative incidence stays below 50 %)"}
    return pd.DataFrame.from_dict(rows, orient="index")


# -- time-dependent AUC and DeLong ---------------------------------------------------------
def td_auc_table(y_train: np.ndarray, y_test: np.ndarray, scores: Mapping[str, np.ndarray],
                 times: Sequence[float]) -> pd.DataFrame:
    """Cumulative/dynamic AUC (IPCW, scikit-survival) of several risk scores over ``times``.

    Parameters
    ----------
    y_train, y_test : structured ndarray
        Training target (censoring weights) and evaluation target.
    scores : mapping
        ``{name: risk of the y_test rows}``.
    times : sequence of float
        Time grid inside the test follow-up.

    Returns
    -------
    DataFrame
        Rows = scores; columns ``t=<time>`` (formatted with 2 decimals) and ``mean``
        (scikit-survival's survival-weighted mean). ``table.attrs["times"]`` keeps
        the exact times.
    """
    from fracsurv.metrics import time_dependent_auc

    # times that print alike (a small cohort's quantiles) would share one column
    labels: dict[str, float] = {}
    for t in times:
        labels.setdefault(f"t={float(t):.2f}", float(t))
    times = list(labels.values())
    rows = {}
    for name, s in scores.items():
        auc, mean = time_dependent_auc(y_train, y_test, s, times)
        rows[name] = {**{f"t={t:.2f}": a for t, a in zip(times, auc)}, "mean": mean}
    out = pd.DataFrame(rows).T
    out.attrs["times"] = [float(t) for t in times]
    return out


def delong_table(y: np.ndarray, horizons: float | Sequence[float],
                 scores: Mapping[str, np.ndarray], reference: str | None = None) -> pd.DataFrame:
    """DeLong comparison of each score's AUROC with a reference score at each horizon.

    The outcome at a horizon is "event at or before it" vs "followed beyond it
    without an event"; rows censored earlier are excluded (:func:`horizon_labels`).

    Parameters
    ----------
    y : structured ndarray
    horizons : float or sequence of float
    scores : mapping
        ``{name: risk}``, at least two.
    reference : str, optional
        The score the others are compared with (default: the first).

    Returns
    -------
    DataFrame
        ``horizon``, ``score``, ``reference``, ``cases``, ``controls``, ``AUC``,
        ``AUC reference``, ``difference``, ``SE``, ``z``, ``p``.
    """
    names = list(scores)
    if len(names) < 2:
        raise ValueError("delong_table needs at least two scores")
    reference = names[0] if reference is None else reference
    if reference not in scores:
        raise ValueError(f"reference {reference!r} is not one of the scores {names}")
    rows = []
    for h in np.atleast_1d(np.asarray(horizons, float)):
        label, usable = horizon_labels(y, float(h))
        for name in names:
            if name == reference:
                continue
            r = delong_test(label[usable], np.asarray(scores[name], float)[usable],
                            np.asarray(scores[reference], float)[usable])
            rows.append({"horizon": float(h), "score": name, "reference": reference,
                         "cases": int(label[usable].sum()),
                         "controls": int((~label[usable]).sum()), "AUC": r["auc_a"],
                         "AUC reference": r["auc_b"], "difference": r["difference"],
                         "SE": r["se"], "z": r["z"], "p": r["p"]})
    return pd.DataFrame(rows)


# -- clinical decision table ---------------------------------------------------------------
def _high_risk_mask(high_risk: Any, n: int) -> np.ndarray:
    arr = high_risk.to_numpy() if isinstance(high_risk, pd.Series) else np.asarray(high_risk)
    if arr.shape[0] != n:
        raise ValueError(f"high_risk has {arr.shape[0]} values but y has {n} rows")
    if arr.dtype.kind in "biuf":
        return arr.astype(bool)
    return pd.Series(arr).astype(str).isin(HIGH_RISK_GROUPS).to_numpy()


def decision_table(y: np.ndarray, horizon: float, clinical_score: np.ndarray, threshold: float,
                   high_risk: Any) -> pd.DataFrame:
    """The Diff-X study's clinical decision table at ``horizon``.

    Compares "clinical score >= threshold" (the study: FRAX >= 20 %) with
    "clinical score >= threshold OR a high-risk group" for the outcome
    "fracture by the horizon"; rows censored before the horizon are excluded from
    the confusion matrix.

    Parameters
    ----------
    y : structured ndarray
    horizon : float
    clinical_score : array-like of shape (n,)
        E.g. the cohort's ``clinical_risk_score``.
    threshold : float
    high_risk : array-like of shape (n,)
        Booleans, or risk-group labels (``LH`` and ``HIGH`` count as high risk).

    Returns
    -------
    DataFrame
        One row per rule: ``n``, ``flagged``, ``TP``, ``FP``, ``FN``, ``TN``,
        ``sensitivity``, ``specificity``, ``precision``, ``F1``, ``accuracy``;
        ``extra flagged`` and ``extra fractures identified`` (TP gained over the
        first rule); ``extra patients with a later fracture`` counts, over all
        rows, the patients flagged only by the second rule who fracture at any
        time during follow-up (the study's "another 635 ... of these, 105").
    """
    event, _ = survival_arrays(y)
    label, usable = horizon_labels(y, horizon)
    clin = np.asarray(clinical_score, float)
    if clin.shape[0] != len(event):
        raise ValueError(f"clinical_score has {clin.shape[0]} values but y has {len(event)} rows")
    if not np.isfinite(clin).all():
        raise ValueError(f"clinical_score is missing in row {np.flatnonzero(~np.isfinite(clin))[0]}")
    clin = clin >= threshold
    combined = clin | _high_risk_mask(high_risk, len(event))
    rules = {f"clinical score >= {threshold:g}": clin,
             f"clinical score >= {threshold:g} or high-risk group": combined}
    rows = {}
    for name, pred in rules.items():
        p, t = pred[usable], label[usable]
        tp, fp = int((p & t).sum()), int((p & ~t).sum())
        fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
        sens = tp / (tp + fn) if tp + fn else np.nan
        spec = tn / (tn + fp) if tn + fp else np.nan
        prec = tp / (tp + fp) if tp + fp else np.nan
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else np.nan
        rows[name] = {"n": int(usable.sum()), "flagged": int(p.sum()), "TP": tp, "FP": fp,
                      "FN": fn, "TN": tn, "sensitivity": sens, "specificity": spec,
                      "precision": prec, "F1": f1, "accuracy": (tp + tn) / max(len(p), 1)}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out["extra flagged"] = out["flagged"] - out["flagged"].iloc[0]
    out["extra fractures identified"] = out["TP"] - out["TP"].iloc[0]
    out["extra patients with a later fracture"] = [0, int((combined & ~clin & event).sum())]
    return out
