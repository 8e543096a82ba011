"""Calibration of survival predictions at a fixed horizon: predicted vs observed risk.

Patients are binned by predicted risk ``1 - S(h | x)`` (deciles by default); the
observed risk of a bin is its Kaplan-Meier cumulative incidence at ``h``
(lifelines, with the Greenwood-based interval), so censoring before ``h`` is
handled as in the D'Agostino-Nam / Hosmer-Lemeshow-type survival calibration
plots. The binning is a few lines of pandas; no maintained library offers the
table for arbitrary survival models (scikit-survival has none; lifelines'
``survival_probability_calibration`` fits a spline to one Cox model).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fracsurv._base import survival_arrays

__all__ = ["calibration_figure", "calibration_table"]


def calibration_table(y: np.ndarray, predicted_risk: np.ndarray, horizon: float,
                      n_bins: int = 10, confidence: float = 0.95) -> pd.DataFrame:
    """Predicted vs Kaplan-Meier observed risk of fracture by ``horizon``, per bin.

    Parameters
    ----------
    y : structured ndarray
        Survival target of the evaluated rows.
    predicted_risk : array-like of shape (n,)
        Each row's predicted probability of an event by ``horizon``
        (``1 - S(horizon | x)``), in [0, 1].
    horizon : float
    n_bins : int, default=10
        Quantile bins of the predicted risk (fewer when ties leave fewer edges).
    confidence : float, default=0.95

    Returns
    -------
    DataFrame
        One row per bin: ``bin``, ``n``, ``events by horizon``, ``predicted``
        (mean), ``observed`` (KM cumulative incidence), ``observed low``,
        ``observed high``. ``attrs["horizon"]`` and ``attrs["mean absolute
        error"]`` (mean |predicted - observed| over bins, weighted by n) are set.
    """
    from lifelines import KaplanMeierFitter

    event, time = survival_arrays(y)
    risk = np.asarray(predicted_risk, float)
    if risk.shape != time.shape:
        raise ValueError(f"predicted_risk has {len(risk)} values but y has {len(time)} rows")
    bad = np.flatnonzero(~np.isfinite(risk) | (risk < 0) | (risk > 1))
    if bad.size:
        raise ValueError(f"predicted_risk of row {bad[0]} is not a probability: {risk[bad[0]]!r}")
    if not horizon > 0:
        raise ValueError(f"horizon must be > 0, got {horizon!r}")
    bins = pd.qcut(pd.Series(risk).rank(method="first"), min(n_bins, len(risk)), labels=False)
    rows = []
    for b in sorted(bins.unique()):
        m = (bins == b).to_numpy()
        kmf = KaplanMeierFitter(alpha=1 - confidence).fit(time[m], event[m])
        surv = float(kmf.survival_function_at_times(horizon).iloc[0])
        ci = kmf.confidence_interval_survival_function_
        band = ci[ci.index <= horizon].iloc[-1].to_numpy(float)
        rows.append({"bin": int(b) + 1, "n": int(m.sum()),
                     "events by horizon": int((event[m] & (time[m] <= horizon)).sum()),
                     "predicted": float(risk[m].mean()), "observed": 1.0 - surv,
                     "observed low": 1.0 - float(band.max()),
                     "observed high": 1.0 - float(band.min())})
    out = pd.DataFrame(rows)
    out.attrs["horizon"] = float(horizon)
    out.attrs["mean absolute error"] = float(
        np.average(np.abs(out["predicted"] - out["observed"]), weights=out["n"]))
    return out


def calibration_figure(tables: Mapping[str, pd.DataFrame], time_label: str = "years") -> Figure:
    """Predicted vs observed risk of each model's :func:`calibration_table`.

    Returns
    -------
    Figure
        One axis per model with the identity line and the observed intervals.
    """
    from fracsurv.stratify.plots import _figure

    n = len(tables)
    if n == 0:
        raise ValueError("calibration_figure needs at least one table")
    fig = _figure((3.6 * min(n, 3), 3.6 * int(np.ceil(n / 3))))
    axes = fig.subplots(int(np.ceil(n / 3)), min(n, 3), squeeze=False).ravel()
    for ax, (name, t) in zip(axes, tables.items(), strict=False):
        top = max(float(t["observed high"].max()), float(t["predicted"].max()), 0.05) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=0.8)
        ax.errorbar(t["predicted"], t["observed"],
                    yerr=[t["observed"] - t["observed low"], t["observed high"] - t["observed"]],
                    fmt="o", ms=4, capsize=2)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_title(f"{name}\nMAE {t.attrs.get('mean absolute error', np.nan):.3f}", fontsize=8)
        ax.set_xlabel(f"predicted risk by {t.attrs.get('horizon', np.nan):.1f} {time_label}",
                      fontsize=8)
        ax.set_ylabel("observed (Kaplan-Meier)", fontsize=8)
    for ax in axes[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig
