"""``RiskGrouper``: LL / LH / HIGH fracture-risk groups from baseline and future scores."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from fracsurv._base import (
    append_columns,
    appended_feature_names,
    check_survival_y,
    row_label,
    survival_arrays,
)
from fracsurv.stratify.cutpoint import maxstat_cutpoint

__all__ = ["ADDED_COLUMNS", "GROUPS", "HIGH_RISK_GROUPS", "RiskGrouper"]

GROUPS = ("LL", "LH", "HIGH")
#: The groups a decision table counts as high risk: all but the low-low reference.
HIGH_RISK_GROUPS = GROUPS[1:]
ADDED_COLUMNS = ("risk_group", "risk_LH", "risk_HIGH")


class RiskGrouper(TransformerMixin, BaseEstimator):
    """Risk groups from a baseline score and a future (generated) score.

    * **LL**: ``baseline < t_b`` and ``future < t_f``;
    * **LH**: ``baseline < t_b`` and ``future >= t_f``;
    * **HIGH**: ``baseline >= t_b``, whatever the future score.

    Parameters
    ----------
    baseline_column, future_column : str or int
        Score columns of a DataFrame (e.g. ``"pvf"`` and ``"gpvf"``); integers are
        column positions and also accept a 2-D numeric array.
    thresholds : (float, float) or "optimal", default=(0.5, 0.6)
        Cut-points ``(t_b, t_f)`` (the Diff-X study's values). ``"optimal"`` chooses
        them on the training data (``fit(X, y)`` with a scikit-survival ``y``) by the
        maximally selected log-rank statistic: first ``t_b`` on all rows, then
        ``t_f`` among the rows below ``t_b`` -- the only rows ``t_f`` affects, so it
        separates LL from LH rather than being dominated by the HIGH group.
    min_group_fraction : float, default=0.1
        Smallest group a cut-point may create, as a fraction of the rows searched
        (all rows for ``t_b``, the low-baseline rows for ``t_f``).
    p_value : {"lausen-schumacher", "permutation"}, default="lausen-schumacher"
        Multiple-testing adjustment of each maximal statistic
        (:func:`fracsurv.stratify.maxstat_cutpoint`).
    n_permutations : int, default=1000
        Permutations for ``p_value="permutation"``.
    random_state : int or None
        Seed of the permutations.

    Attributes
    ----------
    thresholds_ : tuple of float
        The cut-points used, ``(t_b, t_f)``.
    cutpoint_stats_ : dict
        For ``"optimal"``: ``{"baseline": {...}, "future": {...}}`` with the
        chi-square, group sizes and unadjusted / adjusted p-values of each cut;
        empty for fixed thresholds.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Notes
    -----
    ``transform`` keeps every input column and appends ``risk_group`` (ordered
    categorical ``LL < LH < HIGH``) and the 0/1 indicators ``risk_LH`` and
    ``risk_HIGH`` (LL is the reference level of a Cox model). Existing columns of
    these names are replaced. For a NumPy array the result is a float array whose
    ``risk_group`` column holds the codes 0 (LL), 1 (LH), 2 (HIGH).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "baseline_column": [str, Integral],
        "future_column": [str, Integral],
        "thresholds": [tuple, list, StrOptions({"optimal"})],
        "min_group_fraction": [Interval(Real, 0, 0.5, closed="neither")],
        "p_value": [StrOptions({"lausen-schumacher", "permutation"})],
        "n_permutations": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(self, baseline_column: str | int = "pvf", *, future_column: str | int = "gpvf",
                 thresholds: Any = (0.5, 0.6), min_group_fraction: float = 0.1,
                 p_value: str = "lausen-schumacher", n_permutations: int = 1000,
                 random_state: int | None = None) -> None:
        self.baseline_column = baseline_column
        self.future_column = future_column
        self.thresholds = thresholds
        self.min_group_fraction = min_group_fraction
        self.p_value = p_value
        self.n_permutations = n_permutations
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # only thresholds="optimal" needs y
        return tags

    # -- validation ------------------------------------------------------------------
    def _validate(self, X: Any, reset: bool) -> Any:
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            return X
        for name in ("baseline_column", "future_column"):
            if not isinstance(getattr(self, name), int | np.integer):
                raise TypeError(
                    f"RiskGrouper got a {type(X).__name__} without column names; pass a "
                    f"DataFrame with columns {self.baseline_column!r} and "
                    f"{self.future_column!r}, or give integer column positions")
        return validate_data(self, X, reset=reset, dtype="numeric")

    def _scores(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for col in (self.baseline_column, self.future_column):
            if isinstance(X, pd.DataFrame):
                if col not in X.columns:
                    raise ValueError(f"X has no column {col!r} (columns: {list(X.columns)[:20]})")
                v = pd.to_numeric(X[col], errors="coerce").to_numpy(float)
            else:
                if not 0 <= int(col) < X.shape[1]:
                    raise ValueError(f"X has {X.shape[1]} feature(s); column position {col} "
                                     "does not exist")
                v = np.asarray(X[:, int(col)], float)
            bad = np.flatnonzero(~np.isfinite(v))
            if bad.size:
                raise ValueError(f"column {col!r} has a missing or non-numeric score in "
                                 f"{row_label(X, int(bad[0]))}")
            out.append(v)
        return out[0], out[1]

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> RiskGrouper:
        """Store the thresholds, or choose them on ``(X, y)`` for ``"optimal"``.

        Parameters
        ----------
        X : DataFrame (or 2-D array with integer column positions)
        y : structured ndarray, optional
            Survival target; required for ``thresholds="optimal"``.

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._validate(X, reset=True)
        base, fut = self._scores(X)
        if isinstance(self.thresholds, str):
            y = check_survival_y(y, len(base))
            event, time = survival_arrays(y)
            opts = {"min_group_fraction": self.min_group_fraction, "p_value": self.p_value,
                    "n_permutations": self.n_permutations}
            rng = np.random.default_rng(self.random_state)
            b = maxstat_cutpoint(base, time, event, random_state=rng, **opts)
            low = base < b["cutpoint"]
            try:
                f = maxstat_cutpoint(fut[low], time[low], event[low], random_state=rng, **opts)
            except ValueError as exc:
                raise ValueError(f"cannot choose the future-score cut among the {low.sum()} "
                                 f"rows below the baseline cut {b['cutpoint']:.4g}: {exc}") from exc
            self.thresholds_ = (b["cutpoint"], f["cutpoint"])
            self.cutpoint_stats_ = {"baseline": b, "future": f}
        else:
            try:
                t = tuple(float(v) for v in self.thresholds)
            except (TypeError, ValueError):
                t = ()
            if len(t) != 2 or not np.all(np.isfinite(t)):
                raise ValueError("thresholds must be two finite numbers (baseline, future) or "
                                 f"'optimal', got {self.thresholds!r}")
            self.thresholds_ = t
            self.cutpoint_stats_ = {}
        return self

    # -- transforming ----------------------------------------------------------------
    def assign(self, X: Any) -> pd.Series:
        """The ordered categorical group (``LL < LH < HIGH``) of every row."""
        check_is_fitted(self, "thresholds_")
        X = self._validate(X, reset=False)
        return self._assign(X)

    def _assign(self, X: Any) -> pd.Series:
        base, fut = self._scores(X)
        tb, tf = self.thresholds_
        codes = np.where(base >= tb, 2, np.where(fut >= tf, 1, 0))
        cat = pd.Categorical.from_codes(codes, categories=list(GROUPS), ordered=True)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.Series(cat, index=index, name="risk_group")

    def transform(self, X: Any) -> Any:
        """Append ``risk_group``, ``risk_LH``, ``risk_HIGH`` (LL = reference) to ``X``.

        Parameters
        ----------
        X : DataFrame (or 2-D array with integer column positions)

        Returns
        -------
        DataFrame (or ndarray)
            All input columns, then the three new ones.
        """
        check_is_fitted(self, "thresholds_")
        X = self._validate(X, reset=False)
        groups = self._assign(X)
        codes = groups.cat.codes.to_numpy()
        if not isinstance(X, pd.DataFrame):
            return np.column_stack([X, codes, codes == 1, codes == 2]).astype(float)
        return append_columns(X, {"risk_group": groups, "risk_LH": (codes == 1).astype(int),
                                  "risk_HIGH": (codes == 2).astype(int)})

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns (less any old risk columns) plus ``risk_group``, ``risk_LH``, ``risk_HIGH``."""
        check_is_fitted(self, "thresholds_")
        return appended_feature_names(_check_feature_names_in(self, input_features),
                                      ADDED_COLUMNS)
