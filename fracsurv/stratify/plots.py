"""Figures of the survival analyses (matplotlib, Agg canvas, no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure` bound to an Agg canvas,
so it works headless and leaves no figure open in pyplot; save it with
``fig.savefig(buffer, format="png")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fracsurv._base import survival_arrays
from fracsurv.stratify.agreement import agreement
from fracsurv.stratify.analysis import group_levels

__all__ = ["bland_altman_figure", "km_figure", "td_auc_figure"]


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def km_figure(y: np.ndarray, groups: pd.Series | np.ndarray, title: str = "",
              time_label: str = "years", cumulative: bool = True,
              at_risk_times: Sequence[float] | None = None) -> Figure:
    """Kaplan-Meier curves per group with the numbers at risk underneath (lifelines).

    Parameters
    ----------
    y : structured ndarray
    groups : array-like of shape (n,)
        Group labels; a categorical keeps its category order (LL, LH, HIGH).
    title, time_label : str
    cumulative : bool, default=True
        Plot the cumulative incidence of fracture (1 - KM) instead of survival.
    at_risk_times : sequence of float, optional
        Ticks of the at-risk table (default: matplotlib's).

    Returns
    -------
    Figure
        ``fig.axes[0]`` holds the curves (one line per non-empty group).
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts

    event, time = survival_arrays(y)
    g, levels = group_levels(groups)
    if len(g) != len(time):
        raise ValueError(f"groups has {len(g)} values but y has {len(time)} rows")
    fig = _figure((7, 5.5))
    ax = fig.add_subplot(111)
    fitters = []
    for level in levels:
        m = (g == level).to_numpy()
        if not m.any():
            continue
        kmf = KaplanMeierFitter(label=f"{level} (n={m.sum()})").fit(time[m], event[m])
        if cumulative:
            kmf.plot_cumulative_density(ax=ax, ci_show=True)
        else:
            kmf.plot_survival_function(ax=ax, ci_show=True)
        fitters.append(kmf)
    ax.set_xlabel(time_label)
    ax.set_ylabel("cumulative incidence of fracture" if cumulative else "fracture-free survival")
    ax.set_title(title)
    if at_risk_times is not None:
        ax.set_xticks(list(at_risk_times))
    add_at_risk_counts(*fitters, ax=ax, fig=fig, rows_to_show=["At risk"])
    fig.tight_layout()
    return fig


def td_auc_figure(table: pd.DataFrame, time_label: str = "years") -> Figure:
    """Time-dependent AUC curves of a :func:`~fracsurv.stratify.td_auc_table`.

    Returns
    -------
    Figure
        One line per score; the legend shows each mean AUC.
    """
    cols = [c for c in table.columns if str(c).startswith("t=")]
    t = table.attrs.get("times") or []
    if len(t) != len(cols):  # e.g. a table filtered or rebuilt without its attrs
        t = [float(c[2:]) for c in cols]
    fig = _figure((7, 4.5))
    ax = fig.add_subplot(111)
    for name, row in table.iterrows():
        ax.plot(t, row[cols].to_numpy(float), marker="o",
                label=f"{name} (mean {row['mean']:.3f})")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(time_label)
    ax.set_ylabel("time-dependent AUC (IPCW)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def bland_altman_figure(a: np.ndarray, b: np.ndarray,
                        labels: tuple[str, str] = ("a", "b")) -> Figure:
    """Scatter plot (with r and its CI) and Bland-Altman plot of two paired scores.

    Returns
    -------
    Figure
        Two axes: the scatter with the identity line; mean vs difference with the
        mean difference and the 95 % limits of agreement.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    st = agreement(a, b)
    fig = _figure((10, 4.2))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(b, a, s=10, alpha=0.6)
    lim = [min(a.min(), b.min()), max(a.max(), b.max())]
    ax1.plot(lim, lim, "k--", lw=0.8)
    ax1.set_xlabel(labels[1])
    ax1.set_ylabel(labels[0])
    ax1.set_title(f"r = {st['r']:.3f} ({st['r_low']:.3f}, {st['r_high']:.3f})")
    ax2.scatter((a + b) / 2, a - b, s=10, alpha=0.6)
    for v, ls in ((st["mean_difference"], "-"), (st["loa_low"], "--"), (st["loa_high"], "--")):
        ax2.axhline(v, color="k", ls=ls, lw=0.8)
    ax2.set_xlabel("mean of the two")
    ax2.set_ylabel(f"{labels[0]} - {labels[1]}")
    ax2.set_title(f"difference {st['mean_difference']:.3f} ± {st['sd_difference']:.3f} "
                  f"(LoA {st['loa_low']:.3f}, {st['loa_high']:.3f})")
    fig.tight_layout()
    return fig
