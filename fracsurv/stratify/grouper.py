"""``RiskGrouper``: LL / LH / HIGH fracture-risk groups from baseline and future scores."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import check_survival_y, row_label, survival_arrays

__all__ = ["GROUPS", "RiskGrouper", "maxstat_cutpoint"]

GROUPS = ("LL", "LH", "HIGH")


def _logrank_chi2(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float:
    from lifelines.statistics import logrank_test

    a, b = group, ~group
    return float(logrank_test(time[a], time[b], event[a], event[b]).test_statistic)


def _miller_siegmund_p(stat: float, eps_low: float, eps_high: float) -> float:
    """P-value of a maximally selected (standardised) log-rank statistic.

    Lausen & Schumacher's (1992) approximation after Miller & Siegmund (1982) for
    cut-points restricted to quantiles [eps_low, eps_high]. Written by hand: no
    Python library implements it (R's maxstat does).
    """
    b = np.sqrt(max(stat, 1e-12))
    phi = stats.norm.pdf(b)
    ratio = (eps_high * (1 - eps_low)) / (eps_low * (1 - eps_high))
    p = phi * (b - 1 / b) * np.log(ratio) + 4 * phi / b
    return float(np.clip(p, 0.0, 1.0))


def maxstat_cutpoint(score: np.ndarray, time: np.ndarray, event: np.ndarray,
                     min_group_fraction: float = 0.1) -> dict[str, float]:
    """Cut-point maximising the two-group log-rank chi-square.

    Candidates are the distinct score values that leave at least
    ``min_group_fraction`` of the rows on each side; a row is "high" when
    ``score >= cut``.

    Returns
    -------
    dict
        ``cutpoint``, ``statistic`` (chi-square), ``p_unadjusted`` and
        ``p_adjusted`` (Miller-Siegmund / Lausen-Schumacher).
    """
    score = np.asarray(score, float)
    n = len(score)
    k = max(1, int(np.ceil(min_group_fraction * n)))
    values = np.unique(score)
    best = {"cutpoint": np.nan, "statistic": -np.inf}
    for cut in values:
        high = score >= cut
        if k <= high.sum() <= n - k:
            chi2 = _logrank_chi2(time, event, high)
            if chi2 > best["statistic"]:
                best = {"cutpoint": float(cut), "statistic": chi2}
    if not np.isfinite(best["statistic"]):
        raise ValueError("no cut-point leaves min_group_fraction of the rows in both groups")
    eps = max(min_group_fraction, 1.0 / n)
    best["p_unadjusted"] = float(stats.chi2.sf(best["statistic"], 1))
    best["p_adjusted"] = max(best["p_unadjusted"],
                             _miller_siegmund_p(best["statistic"], eps, 1 - eps))
    return best


class RiskGrouper(TransformerMixin, BaseEstimator):
    """Risk groups from a baseline score and a future (generated) score.

    * **LL**: baseline < t_b and future < t_f;
    * **LH**: baseline < t_b and future >= t_f;
    * **HIGH**: baseline >= t_b, whatever the future score.

    Parameters
    ----------
    baseline_column, future_column : str
        Score columns (e.g. ``pvf`` and ``gpvf``).
    thresholds : (float, float) or "optimal"
        Cut-points ``(t_b, t_f)``. ``"optimal"`` chooses them on the training data
        with the maximally selected log-rank statistic: first ``t_b`` on all rows,
        then ``t_f`` among the rows below ``t_b`` (the only ones it affects).
    min_group_fraction : float, default=0.1
        Smallest group (fraction of the rows searched) a cut-point may create.

    Attributes
    ----------
    thresholds_ : tuple of float
    cutpoint_stats_ : dict
        For ``"optimal"``: chi-square and unadjusted / adjusted p-values per cut.
    """

    def __init__(self, baseline_column: str = "pvf", future_column: str = "gpvf",
                 thresholds: Any = (0.5, 0.6), min_group_fraction: float = 0.1) -> None:
        self.baseline_column = baseline_column
        self.future_column = future_column
        self.thresholds = thresholds
        self.min_group_fraction = min_group_fraction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags

    def _scores(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"RiskGrouper expects a pandas DataFrame, got {type(X).__name__}")
        out = []
        for col in (self.baseline_column, self.future_column):
            if col not in X.columns:
                raise ValueError(f"X has no column {col!r}")
            v = pd.to_numeric(X[col], errors="coerce").to_numpy(float)
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                raise ValueError(f"column {col!r} has a missing or non-numeric score in "
                                 f"{row_label(X, int(bad[0]))}")
            out.append(v)
        return out[0], out[1]

    def fit(self, X: pd.DataFrame, y: Any = None) -> RiskGrouper:
        """Store (or, for ``"optimal"``, choose) the thresholds."""
        base, fut = self._scores(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        if isinstance(self.thresholds, str):
            if self.thresholds != "optimal":
                raise ValueError(f"thresholds must be a pair or 'optimal', got {self.thresholds!r}")
            y = check_survival_y(y, len(X))
            event, time = survival_arrays(y)
            b = maxstat_cutpoint(base, time, event, self.min_group_fraction)
            low = base < b["cutpoint"]
            f = maxstat_cutpoint(fut[low], time[low], event[low], self.min_group_fraction)
            self.thresholds_ = (b["cutpoint"], f["cutpoint"])
            self.cutpoint_stats_ = {"baseline": b, "future": f}
        else:
            t = tuple(float(v) for v in self.thresholds)
            if len(t) != 2:
                raise ValueError(f"thresholds must be (baseline, future), got {self.thresholds!r}")
            self.thresholds_ = t
            self.cutpoint_stats_ = {}
        return self

    def assign(self, X: pd.DataFrame) -> pd.Series:
        """The ordered categorical group of every row."""
        check_is_fitted(self, "thresholds_")
        base, fut = self._scores(X)
        tb, tf = self.thresholds_
        codes = np.where(base >= tb, 2, np.where(fut >= tf, 1, 0))
        cat = pd.Categorical.from_codes(codes, categories=list(GROUPS), ordered=True)
        return pd.Series(cat, index=X.index, name="risk_group")

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add ``risk_group`` and the indicators ``risk_LH``, ``risk_HIGH`` (LL = reference)."""
        groups = self.assign(X)
        out = X.copy()
        out["risk_group"] = groups
        out["risk_LH"] = (groups == "LH").astype(int)
        out["risk_HIGH"] = (groups == "HIGH").astype(int)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus ``risk_group``, ``risk_LH``, ``risk_HIGH``."""
        check_is_fitted(self, "thresholds_")
        names = [c for c in self.feature_names_in_ if c not in ("risk_group", "risk_LH", "risk_HIGH")]
        return np.asarray([*names, "risk_group", "risk_LH", "risk_HIGH"], dtype=object)
