"""The survival analyses of the source studies, as tidy pandas tables.

lifelines fits the Cox models and runs the log-rank tests, scikit-survival gives
the time-dependent AUC, scipy the correlation. Written by hand because no
maintained Python library offers them: DeLong's test for two correlated AUCs
(:mod:`fracsurv.stratify.delong`), the Table 4-style layout of Cox models and the
clinical decision table. Figures live in :mod:`fracsurv.stratify.plots`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import pandas as pd

from fracsurv._base import row_label, survival_arrays
from fracsurv.stratify.agreement import agreement, agreement_table  # re-exported
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
    "td_auc_table",
]

Terms = Sequence[str] | Mapping[str, Sequence[str] | Mapping[str, str]]


# -- Cox models ------------------------------------------------------------------------
@dataclass
class CoxTables:
    """Result of :func:`cox_table`.

    Attributes
    ----------
    hr : DataFrame
        One row per (model, covariate): ``model``, ``term``, ``covariate``,
        ``level``, ``HR``, ``CI low``, ``CI high``, ``p``, ``reference``.
    models : DataFrame
        One row per model: ``kind``, ``covariates``, ``n``, ``events``,
        ``C-index``, ``LR chi2`` (vs the null model), ``df``, ``p``,
        ``log-likelihood``.
    comparisons : DataFrame
        LR chi-square tests between every pair of nested models: ``reduced``,
        ``full``, ``LR chi2``, ``df``, ``p``.
    """

    hr: pd.DataFrame
    models: pd.DataFrame
    comparisons: pd.DataFrame


def _normalise_terms(terms: Terms) -> dict[str, dict[str, str]]:
    """``{term: {column: level label}}`` from the accepted spellings."""
    if isinstance(terms, str):
        terms = [terms]
    if not isinstance(terms, Mapping):
        return {c: {c: c} for c in terms}
    out = {}
    for name, cols in terms.items():
        if isinstance(cols, str):
            cols = [cols]
        out[name] = dict(cols) if isinstance(cols, Mapping) else {c: c for c in cols}
    return out


def _fit_cox(df: pd.DataFrame, cols: Sequence[str], penalizer: float, alpha: float) -> Any:
    from lifelines import CoxPHFitter

    return CoxPHFitter(penalizer=penalizer, alpha=alpha).fit(df[[*cols, "_T", "_E"]], "_T", "_E")


def cox_table(X: pd.DataFrame, y: np.ndarray, terms: Terms,
              models: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None = None,
              references: Mapping[str, str] | None = None, penalizer: float = 0.0,
              alpha: float | None = None,
              multivariable: Sequence[Sequence[str]] | None = None, *,
              confidence: float = 0.95) -> CoxTables:
    """Univariable and multivariable Cox models (the Diff-X study's Tables 4-5).

    Every term gets a univariable model (all its columns together, so a
    categorical term such as the risk group is one model), and every entry of
    ``models`` a multivariable one, all fitted by lifelines' ``CoxPHFitter``
    (Efron ties) on the same rows.

    Parameters
    ----------
    X : DataFrame
        Numeric covariates (0/1 indicators for categories).
    y : structured ndarray
        Survival target.
    terms : sequence of str, or mapping
        Covariates, or ``{term label: columns}`` where ``columns`` is a list or a
        ``{column: level label}`` mapping, e.g.
        ``{"Risk group": {"risk_LH": "LH", "risk_HIGH": "HIGH"}, "Age": ["age"]}``.
    models : mapping or sequence, optional
        ``{model name: [term labels]}`` (a plain list of lists is named
        ``Model 1``, ``Model 2``, ...). Default: one model with all terms.
    references : mapping, optional
        ``{term label: reference level}``, shown as an ``HR = 1`` row.
    penalizer : float
        lifelines' ridge penalty (0 = plain partial likelihood).
    alpha : float, optional
        Deprecated: ``1 - confidence``. Given, it warns with a ``FutureWarning``
        and takes precedence over ``confidence``. (It keeps its position, so a
        positional value still means what it did.)
    multivariable : sequence of sequences, optional
        Older spelling of ``models`` as a list of lists (kept for callers of the
        first version); give one of the two.
    confidence : float, default=0.95
        Confidence level of the HR intervals, in (0, 1) (lifelines'
        ``alpha = 1 - confidence``).

    Returns
    -------
    CoxTables
        Tidy tables; :func:`format_cox_table` lays them out like the paper.
    """
    # 1. the interval level, terms and models
    alpha = _interval_alpha(confidence, alpha)
    term_map = _normalise_terms(terms)
    models = _resolve_models(models, multivariable, term_map)
    references = dict(references or {})
    # 2. one numeric covariate frame and the target, on the same rows
    df, event = _cox_frame(X, y, [c for cols in term_map.values() for c in cols])
    # 3. every univariable and multivariable fit: HR rows and model rows
    specs = [(f"{t} (univariable)", "univariable", [t]) for t in term_map]
    specs += [(name, "multivariable", list(m)) for name, m in models.items()]
    hr_rows, model_rows, fits = [], {}, {}
    for name, kind, model_terms in specs:
        cols = [c for t in model_terms for c in term_map[t]]
        fit = _fit_cox(df, cols, penalizer, alpha)
        s = fit.summary
        lo, hi = f"exp(coef) lower {100 * (1 - alpha):g}%", f"exp(coef) upper {100 * (1 - alpha):g}%"
        for t in model_terms:
            if t in references:
                hr_rows.append({"model": name, "term": t, "covariate": None,
                                "level": references[t], "HR": 1.0, "CI low": np.nan,
                                "CI high": np.nan, "p": np.nan, "reference": True})
            for c, level in term_map[t].items():
                hr_rows.append({"model": name, "term": t, "covariate": c, "level": level,
                                "HR": s.loc[c, "exp(coef)"], "CI low": s.loc[c, lo],
                                "CI high": s.loc[c, hi], "p": s.loc[c, "p"],
                                "reference": False})
        lr = fit.log_likelihood_ratio_test()
        model_rows[name] = {"kind": kind, "covariates": ", ".join(cols), "n": len(df),
                            "events": int(event.sum()), "C-index": fit.concordance_index_,
                            "LR chi2": lr.test_statistic, "df": lr.degrees_freedom,
                            "p": lr.p_value, "log-likelihood": fit.log_likelihood_}
        fits[name] = (fit, set(cols))

    # 4. likelihood-ratio tests between nested models
    comp = []
    for a, b in combinations(fits, 2):
        (fa, ca), (fb, cb) = fits[a], fits[b]
        if ca == cb or not (ca < cb or cb < ca):
            continue
        (red, fred, cred), (full, ffull, cfull) = sorted(
            [(a, fa, ca), (b, fb, cb)], key=lambda z: len(z[2]))
        from fracsurv.metrics import likelihood_ratio_test

        t = likelihood_ratio_test(ffull.log_likelihood_, fred.log_likelihood_, len(cfull),
                                  len(cred))
        comp.append({"reduced": red, "full": full, "LR chi2": t.statistic, "df": t.df,
                     "p": t.p_value})
    return CoxTables(pd.DataFrame(hr_rows), pd.DataFrame.from_dict(model_rows, orient="index"),
                     pd.DataFrame(comp, columns=["reduced", "full", "LR chi2", "df", "p"]))


def _interval_alpha(confidence: float, alpha: float | None) -> float:
    """lifelines' ``alpha`` (1 - confidence); the deprecated ``alpha`` when given."""
    if alpha is not None:
        warnings.warn("cox_table's 'alpha' is deprecated and will be removed in a future "
                      "version; use 'confidence' (= 1 - alpha)", FutureWarning, stacklevel=3)
        return float(alpha)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return 1.0 - float(confidence)


def _resolve_models(models: Mapping[str, Sequence[str]] | Sequence[Sequence[str]] | None,
                    multivariable: Sequence[Sequence[str]] | None,
                    term_map: Mapping[str, Any]) -> dict[str, list[str]]:
    """``{model name: [term labels]}`` from either spelling, checked against the terms."""
    if multivariable is not None:
        if models is not None:
            raise ValueError("give either models or multivariable, not both")
        models = [list(m) for m in multivariable]
    if models is None:
        models = {"Multivariable": list(term_map)}
    elif not isinstance(models, Mapping):
        models = {f"Model {k}": list(m) for k, m in enumerate(models, 1)}
    for name, m in models.items():
        unknown = [t for t in m if t not in term_map]
        if unknown:
            raise ValueError(f"model {name!r} uses terms {unknown} that are not in terms")
    return {name: list(m) for name, m in models.items()}


def _cox_frame(X: pd.DataFrame, y: np.ndarray, columns: list[str]
               ) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric covariates plus ``_T``/``_E``; errors name the column and the row."""
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"X has no column(s) {missing}")
    values = X[columns].apply(pd.to_numeric, errors="coerce").astype(float)
    bad = np.argwhere(~np.isfinite(values.to_numpy()))
    if bad.size:
        r, c = bad[0]
        raise ValueError(f"Cox covariate {columns[c]!r} is missing or non-numeric in "
                         f"{row_label(X, int(r))}")
    event, time = survival_arrays(y)
    if len(time) != len(X):
        raise ValueError(f"y has {len(time)} rows but X has {len(X)}")
    return values.assign(_T=time, _E=event.astype(int)), event


def _fmt_p(p: float) -> str:
    return "" if not np.isfinite(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def format_cox_table(tables: CoxTables, models: Sequence[str] | None = None,
                     digits: int = 3) -> pd.DataFrame:
    """Lay :func:`cox_table` out like the Diff-X study's Table 4.

    Parameters
    ----------
    tables : CoxTables
    models : sequence of str, optional
        Multivariable models to show as columns (default: all).
    digits : int
        Decimals of HRs and CIs.

    Returns
    -------
    DataFrame
        Rows ``(term, level)`` then ``C-index`` and ``LR chi-square``; columns
        ``(model, "HR (95% CI)" | "P value")`` with a ``Univariable`` block first.
        Reference levels read ``1.000 (Ref)``.
    """
    hr = tables.hr.copy()
    multi = [m for m in tables.models.index if tables.models.loc[m, "kind"] == "multivariable"]
    shown = list(models) if models is not None else multi
    uni = hr["model"].str.endswith(" (univariable)")
    hr.loc[uni, "model"] = "Univariable"
    f = f"{{:.{digits}f}}"
    hr["HR (95% CI)"] = [
        f"{f.format(1.0)} (Ref)" if ref else f"{f.format(h)} ({f.format(lo)}, {f.format(hi)})"
        for ref, h, lo, hi in zip(hr["reference"], hr["HR"], hr["CI low"], hr["CI high"])]
    hr["P value"] = [_fmt_p(p) for p in hr["p"]]
    cols = ["Univariable", *shown]
    wide = hr[hr["model"].isin(cols)].pivot_table(
        index=["term", "level"], columns="model", values=["HR (95% CI)", "P value"],
        aggfunc="first", sort=False)
    wide = wide.swaplevel(axis=1).reindex(
        columns=pd.MultiIndex.from_product([cols, ["HR (95% CI)", "P value"]])).fillna("")
    order = list(dict.fromkeys(zip(hr["term"], hr["level"])))
    wide = wide.reindex(pd.MultiIndex.from_tuples(order, names=["term", "level"]))
    footer = pd.DataFrame("", index=pd.MultiIndex.from_tuples(
        [("C-index", ""), ("LR chi-square", "")], names=["term", "level"]), columns=wide.columns)
    for m in shown:
        footer.loc[("C-index", ""), (m, "HR (95% CI)")] = f"{tables.models.loc[m, 'C-index']:.3f}"
        footer.loc[("LR chi-square", ""), (m, "HR (95% CI)")] = f"{tables.models.loc[m, 'LR chi2']:.1f}"
        footer.loc[("LR chi-square", ""), (m, "P value")] = _fmt_p(tables.models.loc[m, "p"])
    return pd.concat([wide.fillna(""), footer])


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
        ``group A``, ``group B``, ``test statistic``, ``p`` (unadjusted).
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
    mv = multivariate_logrank_test(time, g, event)
    overall = pd.DataFrame({"test statistic": [mv.test_statistic], "df": [mv.degrees_of_freedom],
                            "p": [mv.p_value]}, index=["all groups"])
    return pw, overall


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
