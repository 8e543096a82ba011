"""Cox model tables of the source studies: :func:`cox_table` and its Table 4 layout.

Univariable and multivariable Cox models fitted by lifelines' ``CoxPHFitter``
on the same rows, their hazard ratios as tidy tables, the likelihood-ratio tests
between nested models (:func:`fracsurv.metrics.likelihood_ratio_test`), and
:func:`format_cox_table`, the layout of the Diff-X study's Table 4 (written by
hand: no maintained Python library offers it). Re-exported by
:mod:`fracsurv.stratify.analysis` and :mod:`fracsurv.stratify`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fracsurv._base import row_label, survival_arrays
from fracsurv.metrics.pvalues import format_p

__all__ = ["CoxTables", "cox_table", "format_cox_table"]

Terms = Sequence[str] | Mapping[str, Sequence[str] | Mapping[str, str]]


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
        ``log-likelihood`` (unpenalised, see :func:`cox_table`).
    comparisons : DataFrame
        LR chi-square tests between nested models: ``reduced``, ``full``,
        ``LR chi2``, ``df``, ``p``.
    ph : DataFrame
        Proportional-hazards check of each multivariable model (scaled
        Schoenfeld residuals against rank-transformed time, lifelines'
        ``proportional_hazard_test``): ``model``, ``covariate``,
        ``test statistic``, ``p``; empty when not requested.
    """

    hr: pd.DataFrame
    models: pd.DataFrame
    comparisons: pd.DataFrame
    ph: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        columns=["model", "covariate", "test statistic", "p"]))


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
              confidence: float = 0.95, per: Mapping[str, float] | None = None,
              comparisons: Sequence[tuple[str, str]] | None = None,
              check_ph: bool = True) -> CoxTables:
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
        lifelines' ridge penalty (0 = plain partial likelihood). It shrinks the
        hazard ratios only: the log-likelihoods, the LR chi-squares and the
        nested comparisons always come from unpenalised fits of the same
        covariates (a penalised log-likelihood includes the penalty, which biases
        a likelihood-ratio test).
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
    per : mapping, optional
        ``{column: unit}``: the hazard ratio of that column is per ``unit``
        increase (the column is divided by ``unit``), e.g. ``{"bpvf": 0.1}`` for
        the study's "per 0.1-point increase".
    comparisons : sequence of (str, str), optional
        The likelihood-ratio tests to run, as ``(reduced, full)`` pairs of model
        names (a term label stands for its univariable model); the reduced
        model's covariates must be a subset of the full model's. Default: each
        multivariable model against each largest model nested in it.
    check_ph : bool, default=True
        Test the proportional-hazards assumption of each multivariable model
        (:attr:`CoxTables.ph`).

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
    for c, unit in (per or {}).items():
        if c not in df.columns or not float(unit) > 0:
            raise ValueError(f"per: {c!r} must be a covariate of the terms and its unit > 0, "
                             f"got {unit!r}")
        df[c] = df[c] / float(unit)
    # 3. every univariable and multivariable fit: HR rows and model rows
    specs = [(f"{t} (univariable)", "univariable", [t]) for t in term_map]
    specs += [(name, "multivariable", list(m)) for name, m in models.items()]
    hr_rows, model_rows, fits = [], {}, {}
    for name, kind, model_terms in specs:
        cols = [c for t in model_terms for c in term_map[t]]
        fit = _fit_cox(df, cols, penalizer, alpha)
        plain = fit if penalizer == 0 else _fit_cox(df, cols, 0.0, alpha)
        hr_rows += _hr_rows(name, model_terms, term_map, references, fit.summary, alpha)
        lr = plain.log_likelihood_ratio_test()
        model_rows[name] = {"kind": kind, "covariates": ", ".join(cols), "n": len(df),
                            "events": int(event.sum()), "C-index": fit.concordance_index_,
                            "LR chi2": lr.test_statistic, "df": lr.degrees_freedom,
                            "p": lr.p_value, "log-likelihood": plain.log_likelihood_}
        fits[name] = (plain, set(cols))
    # 4. likelihood-ratio tests between nested models, and the PH check
    pairs = _comparison_pairs(comparisons, fits, term_map)
    comp = [_nested_lr(red, full, fits) for red, full in pairs]
    ph = _ph_rows(df, {n: f for n, (f, _) in fits.items() if n in models}) if check_ph else []
    return CoxTables(pd.DataFrame(hr_rows), pd.DataFrame.from_dict(model_rows, orient="index"),
                     pd.DataFrame(comp, columns=["reduced", "full", "LR chi2", "df", "p"]),
                     pd.DataFrame(ph, columns=["model", "covariate", "test statistic", "p"]))


def _hr_rows(name: str, model_terms: Sequence[str], term_map: Mapping[str, Mapping[str, str]],
             references: Mapping[str, str], s: pd.DataFrame, alpha: float) -> list[dict]:
    lo, hi = f"exp(coef) lower {100 * (1 - alpha):g}%", f"exp(coef) upper {100 * (1 - alpha):g}%"
    rows = []
    for t in model_terms:
        if t in references:
            rows.append({"model": name, "term": t, "covariate": None, "level": references[t],
                         "HR": 1.0, "CI low": np.nan, "CI high": np.nan, "p": np.nan,
                         "reference": True})
        for c, level in term_map[t].items():
            rows.append({"model": name, "term": t, "covariate": c, "level": level,
                         "HR": s.loc[c, "exp(coef)"], "CI low": s.loc[c, lo],
                         "CI high": s.loc[c, hi], "p": s.loc[c, "p"], "reference": False})
    return rows


def _comparison_pairs(comparisons: Sequence[tuple[str, str]] | None,
                      fits: Mapping[str, tuple[Any, set]],
                      term_map: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Named ``(reduced, full)`` pairs, checked; the default: each largest nested model."""
    def name_of(label: str) -> str:
        if label in fits:  # a model's name (or "term (univariable)") first
            return label
        if label in term_map:
            return f"{label} (univariable)"
        raise ValueError(f"comparison names {label!r}, which is neither a model nor a term")

    if comparisons is not None:
        pairs = [(name_of(r), name_of(f)) for r, f in comparisons]
        for r, f in pairs:
            if not fits[r][1] < fits[f][1]:
                raise ValueError(f"{r!r} is not nested in {f!r}: its covariates must be a "
                                 f"proper subset of the full model's")
        return pairs
    pairs = []
    for full, (_, cf) in fits.items():
        if full.endswith(" (univariable)"):
            continue
        nested = [n for n, (_, c) in fits.items() if c < cf]
        pairs += [(n, full) for n in nested
                  if not any(fits[n][1] < fits[m][1] for m in nested)]
    return pairs


def _nested_lr(reduced: str, full: str, fits: Mapping[str, tuple[Any, set]]) -> dict:
    from fracsurv.metrics import likelihood_ratio_test

    (fr, cr), (ff, cf) = fits[reduced], fits[full]
    t = likelihood_ratio_test(ff.log_likelihood_, fr.log_likelihood_, len(cf), len(cr))
    return {"reduced": reduced, "full": full, "LR chi2": t.statistic, "df": t.df,
            "p": t.p_value}


def _ph_rows(df: pd.DataFrame, fits: Mapping[str, Any]) -> list[dict]:
    from lifelines.statistics import proportional_hazard_test

    rows = []
    for name, fit in fits.items():
        cols = list(fit.params_.index)
        res = proportional_hazard_test(fit, df[[*cols, "_T", "_E"]], time_transform="rank")
        s = res.summary
        for c in cols:
            rows.append({"model": name, "covariate": c,
                         "test statistic": float(s.loc[c, "test_statistic"]),
                         "p": float(s.loc[c, "p"])})
    return rows


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
    hr["P value"] = [format_p(p) for p in hr["p"]]
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
        footer.loc[("LR chi-square", ""), (m, "P value")] = format_p(tables.models.loc[m, "p"])
    return pd.concat([wide.fillna(""), footer])
