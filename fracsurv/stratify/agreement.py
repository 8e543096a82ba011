"""Agreement of paired scores: Pearson r with its Fisher-z CI and Bland-Altman limits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["agreement", "agreement_table"]


def agreement(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> dict[str, Any]:
    """Pearson r with its Fisher-z CI, and Bland-Altman statistics of ``a - b``.

    Parameters
    ----------
    a, b : array-like of shape (n,)
        Paired scores, e.g. generated vs real follow-up pVF (n >= 3, no NaN).
    confidence : float
        Level of the correlation interval (scipy's Fisher-z interval).

    Returns
    -------
    dict
        ``n``, ``r``, ``r_low``, ``r_high``, ``p``, ``mean_difference``,
        ``sd_difference`` (ddof=1), ``loa_low`` / ``loa_high`` (the limits of
        agreement at ``confidence``: mean ± z SD, z the normal quantile, 1.96 at 0.95),
        and ``note``: empty, or why ``r`` and its CI are missing (NaN) — a constant
        score has no correlation; the Bland-Altman statistics are still given.
    """
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two scores have different lengths ({len(a)} and {len(b)})")
    bad = np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))
    if bad.size:
        raise ValueError(f"agreement: row {bad[0]} has a missing score")
    if len(a) < 3:
        raise ValueError("agreement needs at least 3 pairs")
    d = a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    out: dict[str, Any] = {"n": len(a)}
    constant = [name for name, x in (("first", a), ("second", b)) if np.ptp(x) == 0]
    if constant:
        nan = float("nan")
        out.update(r=nan, r_low=nan, r_high=nan, p=nan)
        values = " and ".join(f"the {n} score is constant ({(a if n == 'first' else b)[0]:.3g})"
                              for n in constant)
        note = f"r undefined: {values}"
    else:
        res = stats.pearsonr(a, b)
        ci = res.confidence_interval(confidence)
        out.update(r=float(res.statistic), r_low=float(ci.low), r_high=float(ci.high),
                   p=float(res.pvalue))
        note = ""
    return {**out, "mean_difference": mean, "sd_difference": sd, "loa_low": mean - z * sd,
            "loa_high": mean + z * sd, "note": note}


def agreement_table(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """:func:`agreement` for several named pairs, one row each."""
    return pd.DataFrame.from_dict({name: agreement(a, b) for name, (a, b) in pairs.items()},
                                  orient="index")
