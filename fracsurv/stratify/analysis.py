"""The survival analyses of the source studies, as tidy tables and figures.

lifelines fits the Cox models and the Kaplan-Meier curves and runs the log-rank
tests; scikit-survival gives the time-dependent AUC; scipy the correlation. Two
pieces are written by hand because no maintained Python library offers them:
DeLong's test for two correlated AUCs and the clinical decision table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fracsurv._base import survival_arrays

__all__ = [
    "agreement",
    "bland_altman_figure",
    "cox_table",
    "decision_table",
    "delong_test",
    "km_figure",
    "logrank_tables",
    "td_auc_figure",
    "td_auc_table",
]


def _cox(df: pd.DataFrame, cols: Sequence[str], penalizer: float) -> Any:
    from lifelines import CoxPHFitter

    return CoxPHFitter(penalizer=penalizer).fit(df[[*cols, "_T", "_E"]], "_T", "_E")


def cox_table(X: pd.DataFrame, y: np.ndarray, covariates: Sequence[str],
              multivariable: Sequence[Sequence[str]] | None = None,
              penalizer: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Univariable and multivariable Cox models (the Diff-X study's Tables 4-5 layout).

    Parameters
    ----------
    X : DataFrame
        Covariates (numeric or 0/1 indicators).
    y : structured array
        Survival target.
    covariates : sequence of str
        Each gets a univariable model.
    multivariable : sequence of sequences, optional
        Nested multivariable models (each a list of covariates), e.g.
        ``[clinical, clinical + ["risk_LH", "risk_HIGH"]]``. Default: one model
        with all ``covariates``.
    penalizer : float
        lifelines' ridge penalty (0 = plain partial likelihood).

    Returns
    -------
    hr : DataFrame
        Rows = covariates; for the univariable column set and each model ``Mk``:
        ``HR``, ``CI low``, ``CI high``, ``p``.
    models : DataFrame
        Per model: C-index, LR chi-square vs the null model, df, p, and the LR test
        against the previous (nested) model.
    """
    from fracsurv.metrics import likelihood_ratio_test

    event, time = survival_arrays(y)
    df = X[list(dict.fromkeys([*covariates, *(c for m in (multivariable or []) for c in m)]))]
    df = df.astype(float).assign(_T=time, _E=event.astype(int))
    blocks = {}
    uni = {}
    for c in covariates:
        s = _cox(df, [c], penalizer).summary.loc[c]
        uni[c] = {"HR": s["exp(coef)"], "CI low": s["exp(coef) lower 95%"],
                  "CI high": s["exp(coef) upper 95%"], "p": s["p"]}
    blocks["univariable"] = pd.DataFrame(uni).T
    model_rows = {}
    prev = None
    for k, cols in enumerate(multivariable or [list(covariates)], 1):
        fit = _cox(df, list(cols), penalizer)
        s = fit.summary
        blocks[f"M{k}"] = pd.DataFrame({"HR": s["exp(coef)"], "CI low": s["exp(coef) lower 95%"],
                                        "CI high": s["exp(coef) upper 95%"], "p": s["p"]})
        lr = fit.log_likelihood_ratio_test()
        row = {"covariates": ", ".join(cols), "C-index": fit.concordance_index_,
               "LR chi2": lr.test_statistic, "df": lr.degrees_freedom, "p": lr.p_value,
               "LR vs previous": np.nan, "p vs previous": np.nan}
        if prev is not None and set(prev[1]) < set(cols):
            t = likelihood_ratio_test(fit.log_likelihood_, prev[0].log_likelihood_, len(cols),
                                      len(prev[1]))
            row["LR vs previous"], row["p vs previous"] = t.statistic, t.p_value
        model_rows[f"M{k}"] = row
        prev = (fit, list(cols))
    hr = pd.concat(blocks, axis=1)
    return hr, pd.DataFrame(model_rows).T


def km_figure(y: np.ndarray, groups: pd.Series | np.ndarray, title: str = "",
              time_label: str = "years"):
    """Kaplan-Meier curves (cumulative incidence of fracture) per group, with at-risk counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    event, time = survival_arrays(y)
    groups = pd.Series(np.asarray(groups))
    levels = list(groups.cat.categories) if hasattr(groups, "cat") else sorted(groups.unique())
    fig, ax = plt.subplots(figsize=(7, 5))
    fitters = []
    for g in levels:
        m = (groups == g).to_numpy()
        if not m.any():
            continue
        kmf = KaplanMeierFitter(label=f"{g} (n={m.sum()})").fit(time[m], event[m])
        kmf.plot_cumulative_density(ax=ax, ci_show=True)
        fitters.append(kmf)
    ax.set_xlabel(time_label)
    ax.set_ylabel("cumulative incidence of fracture")
    ax.set_title(title)
    add_at_risk_counts(*fitters, ax=ax)
    fig.tight_layout()
    return fig


def logrank_tables(y: np.ndarray, groups: pd.Series | np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise log-rank tests and the multivariate (k-group) log-rank test."""
    from lifelines.statistics import multivariate_logrank_test, pairwise_logrank_test

    event, time = survival_arrays(y)
    g = np.asarray(groups).astype(str)
    pw = pairwise_logrank_test(time, g, event).summary[["test_statistic", "p"]]
    mv = multivariate_logrank_test(time, g, event)
    overall = pd.DataFrame({"test_statistic": [mv.test_statistic], "df": [mv.degrees_of_freedom],
                            "p": [mv.p_value]}, index=["all groups"])
    return pw, overall


def td_auc_table(y_train: np.ndarray, y_test: np.ndarray, scores: Mapping[str, np.ndarray],
                 times: Sequence[float]) -> pd.DataFrame:
    """Cumulative/dynamic AUC (IPCW) of several risk scores over ``times``, with the mean."""
    from fracsurv.metrics import time_dependent_auc

    rows = {}
    for name, s in scores.items():
        auc, mean = time_dependent_auc(y_train, y_test, s, times)
        rows[name] = {**{f"t={t:.2f}": a for t, a in zip(times, auc)}, "mean": mean}
    return pd.DataFrame(rows).T


def td_auc_figure(table: pd.DataFrame, time_label: str = "years"):
    """Plot a :func:`td_auc_table`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if c.startswith("t=")]
    t = [float(c[2:]) for c in cols]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, row in table.iterrows():
        ax.plot(t, row[cols].to_numpy(float), marker="o", label=f"{name} (mean {row['mean']:.3f})")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(time_label)
    ax.set_ylabel("time-dependent AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _structural_components(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DeLong's placement values V10 (per positive) and V01 (per negative), and the AUC."""
    # psi(x, y) = 1 if x > y, 0.5 if equal, computed with ranks (O(n log n)).
    allv = np.concatenate([pos, neg])
    r_all = stats.rankdata(allv)
    r_pos = stats.rankdata(pos)
    r_neg = stats.rankdata(neg)
    m, n = len(pos), len(neg)
    v10 = (r_all[:m] - r_pos) / n
    v01 = 1.0 - (r_all[m:] - r_neg) / m
    return v10, v01, float(v10.mean())


def delong_test(label: np.ndarray, score_a: np.ndarray, score_b: np.ndarray) -> dict[str, float]:
    """DeLong's test for two correlated AUCs on the same cases (DeLong et al., 1988).

    Uses the fast rank-based computation of the placement values (Sun & Xu, 2014).
    Hand-written: no maintained Python library provides it.

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``difference``, ``se``, ``z``, ``p``.
    """
    label = np.asarray(label).astype(bool)
    if label.all() or not label.any():
        raise ValueError("DeLong's test needs both positive and negative cases")
    comps = [_structural_components(np.asarray(s, float)[label], np.asarray(s, float)[~label])
             for s in (score_a, score_b)]
    v10 = np.vstack([c[0] for c in comps])
    v01 = np.vstack([c[1] for c in comps])
    aucs = np.array([c[2] for c in comps])
    m, n = v10.shape[1], v01.shape[1]
    cov = np.cov(v10) / m + np.cov(v01) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    se = float(np.sqrt(max(var, 0.0)))
    z = diff / se if se > 0 else 0.0
    return {"auc_a": aucs[0], "auc_b": aucs[1], "difference": diff, "se": se, "z": z,
            "p": float(2 * stats.norm.sf(abs(z)))}


def horizon_labels(y: np.ndarray, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Binary outcome at ``horizon``: (label, usable mask).

    Cases: event at or before the horizon; controls: followed beyond it without an
    event; patients censored before the horizon are not usable.
    """
    event, time = survival_arrays(y)
    case = event & (time <= horizon)
    control = time > horizon
    return case, case | control


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Pearson r with its 95 % CI, and Bland-Altman mean difference ± SD with limits."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    res = stats.pearsonr(a, b)
    ci = res.confidence_interval(0.95)
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    return {"r": float(res.statistic), "r_low": float(ci.low), "r_high": float(ci.high),
            "p": float(res.pvalue), "mean_difference": mean, "sd_difference": sd,
            "loa_low": mean - 1.96 * sd, "loa_high": mean + 1.96 * sd, "n": len(a)}


def bland_altman_figure(a: np.ndarray, b: np.ndarray, labels: tuple[str, str] = ("a", "b")):
    """Scatter and Bland-Altman plot of two scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = np.asarray(a, float), np.asarray(b, float)
    st = agreement(a, b)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax1.scatter(b, a, s=10, alpha=0.6)
    lim = [min(a.min(), b.min()), max(a.max(), b.max())]
    ax1.plot(lim, lim, "k--", lw=0.8)
    ax1.set_xlabel(labels[1])
    ax1.set_ylabel(labels[0])
    ax1.set_title(f"r = {st['r']:.3f} ({st['r_low']:.3f}-{st['r_high']:.3f})")
    m = (a + b) / 2
    ax2.scatter(m, a - b, s=10, alpha=0.6)
    for v, ls in ((st["mean_difference"], "-"), (st["loa_low"], "--"), (st["loa_high"], "--")):
        ax2.axhline(v, color="k", ls=ls, lw=0.8)
    ax2.set_xlabel("mean of the two")
    ax2.set_ylabel(f"{labels[0]} - {labels[1]}")
    ax2.set_title(f"difference {st['mean_difference']:.3f} ± {st['sd_difference']:.3f}")
    fig.tight_layout()
    return fig


def decision_table(y: np.ndarray, horizon: float, clinical_score: np.ndarray, threshold: float,
                   high_risk: np.ndarray) -> pd.DataFrame:
    """The Diff-X study's clinical decision table at ``horizon``.

    Compares "clinical score >= threshold" with "clinical score >= threshold OR a
    high-risk group" for the outcome "fracture by the horizon" (patients censored
    earlier excluded): sensitivity, specificity, precision, F1, and the number of
    extra patients with a later fracture that the risk groups identify.
    """
    label, usable = horizon_labels(y, horizon)
    clin = np.asarray(clinical_score, float) >= threshold
    rules = {f"clinical score >= {threshold:g}": clin,
             f"clinical score >= {threshold:g} or high-risk group": clin | np.asarray(high_risk, bool)}
    rows = {}
    for name, pred in rules.items():
        p, t = pred[usable], label[usable]
        tp, fp = int((p & t).sum()), int((p & ~t).sum())
        fn, tn = int((~p & t).sum()), int((~p & ~t).sum())
        sens = tp / (tp + fn) if tp + fn else np.nan
        spec = tn / (tn + fp) if tn + fp else np.nan
        prec = tp / (tp + fp) if tp + fp else np.nan
        f1 = 2 * prec * sens / (prec + sens) if prec and sens else np.nan
        rows[name] = {"n": int(usable.sum()), "flagged": int(p.sum()), "TP": tp, "FP": fp,
                      "FN": fn, "TN": tn, "sensitivity": sens, "specificity": spec,
                      "precision": prec, "F1": f1}
    out = pd.DataFrame(rows).T
    out["extra fractures identified"] = out["TP"] - out["TP"].iloc[0]
    return out
