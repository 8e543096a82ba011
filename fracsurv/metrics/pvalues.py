"""P-values as the report prints them, and Holm's step-down adjustment.

Holm's adjustment is written by hand (a dozen lines): scipy offers only the
Benjamini-Hochberg/Yekutieli false-discovery rates
(``scipy.stats.false_discovery_control``), and statsmodels, which has it, would be
a large dependency for one function.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["format_p", "holm_adjust"]


def format_p(p: float | None, digits: int = 3) -> str:
    """One p-value format for every table and figure: ``<0.001``, ``0.042``, ``""``.

    Parameters
    ----------
    p : float or None
        A p-value; missing (None/NaN) prints as an empty string.
    digits : int, default=3
        Decimals; values below ``10**-digits`` print as ``<0.001`` (for 3).

    Returns
    -------
    str
    """
    if p is None:
        return ""
    p = float(p)
    if not np.isfinite(p):
        return ""
    floor = 10.0 ** -digits
    return f"<{floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def holm_adjust(p: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values (family-wise error rate).

    The k-th smallest of m p-values is multiplied by ``m - k + 1``; the running
    maximum keeps the adjusted values in the order of the raw ones; all are capped
    at 1. Missing values (NaN) stay missing and do not count towards m.

    Parameters
    ----------
    p : array-like of float

    Returns
    -------
    ndarray
        Adjusted p-values in the input order.
    """
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    if ((p[ok] < 0) | (p[ok] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    scaled = p[order] * (m - np.arange(m))
    out[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return out
