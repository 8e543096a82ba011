"""Figures of the survival analyses (matplotlib, Agg canvas, no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure` bound to an Agg canvas,
so it works headless and leaves no figure open in pyplot; save it with
``fig.savefig(buffer, format="png")``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from fracsurv._base import survival_arrays
from fracsurv.metrics.pvalues import format_p
from fracsurv.stratify.agreement import agreement
from fracsurv.stratify.analysis import group_levels

__all__ = ["bland_altman_figure", "forest_figure", "km_figure", "roc_figure", "td_auc_figure"]


def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def km_figure(y: np.ndarray, groups: pd.Series | np.ndarray, title: str = "",
              time_label: str = "years", cumulative: bool = True,
              at_risk_times: Sequence[float] | None = None, logrank: bool = True) -> Figure:
    """Kaplan-Meier curves per group with censor ticks and the full risk table (lifelines).

    Parameters
    ----------
    y : structured ndarray
    groups : array-like of shape (n,)
        Group labels; a categorical keeps its category order (LL, LH, HIGH).
    title, time_label : str
    cumulative : bool, default=True
        Plot the cumulative incidence of fracture (1 - KM) instead of survival.
    at_risk_times : sequence of float, optional
        Ticks of the risk table (default: matplotlib's).
    logrank : bool, default=True
        Print the k-group log-rank p-value on the plot.

    Returns
    -------
    Figure
        ``fig.axes[0]`` holds the curves (one line per non-empty group, labelled
        with n and the median time where the curve reaches 50 %); below it the
        numbers at risk, censored and with an event at each tick.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.plotting import add_at_risk_counts
    from lifelines.statistics import multivariate_logrank_test

    event, time = survival_arrays(y)
    g, levels = group_levels(groups)
    if len(g) != len(time):
        raise ValueError(f"groups has {len(g)} values but y has {len(time)} rows")
    fig = _figure((7, 6))
    ax = fig.add_subplot(111)
    fitters = []
    for level in levels:
        m = (g == level).to_numpy()
        kmf = KaplanMeierFitter().fit(time[m], event[m])
        med = kmf.median_survival_time_
        median = f"median {med:.1f}" if np.isfinite(med) else "median not reached"
        kmf._label = f"{level} (n={m.sum()}, {median})"
        plot = kmf.plot_cumulative_density if cumulative else kmf.plot_survival_function
        plot(ax=ax, ci_show=True, show_censors=True, censor_styles={"ms": 4, "marker": "|"})
        fitters.append(kmf)
    ax.set_xlabel(time_label)
    ax.set_ylabel("cumulative incidence of fracture" if cumulative else "fracture-free survival")
    ax.set_title(title)
    if logrank and len(levels) >= 2:
        p = multivariate_logrank_test(time, g.astype(str).to_numpy(), event).p_value
        text = format_p(p)
        ax.legend(title=f"log-rank p {text}" if text.startswith("<") else
                  f"log-rank p = {text}", fontsize=8, title_fontsize=8, loc="upper left")
    if at_risk_times is not None:
        ax.set_xticks(list(at_risk_times))
    add_at_risk_counts(*fitters, ax=ax, fig=fig,
                       labels=[str(level) for level in levels],
                       rows_to_show=["At risk", "Censored", "Events"])
    fig.tight_layout()
    return fig


def forest_figure(hr: pd.DataFrame, models: Sequence[str] | None = None) -> Figure:
    """Forest plot of hazard ratios with their CIs, one panel per model.

    Parameters
    ----------
    hr : DataFrame
        :attr:`CoxTables.hr <fracsurv.stratify.CoxTables>` (``model``, ``term``,
        ``level``, ``HR``, ``CI low``, ``CI high``, ``p``, ``reference``).
    models : sequence of str, optional
        Models to draw (default: every multivariable model, i.e. every model
        whose name does not end in ``(univariable)``, plus one "Univariable"
        panel collecting the univariable fits).

    Returns
    -------
    Figure
        Log-scaled HR axis, a line at HR = 1, reference levels drawn as hollow
        markers at 1.
    """
    hr = hr.copy()
    uni = hr["model"].str.endswith(" (univariable)")
    hr.loc[uni, "model"] = "Univariable"
    shown = list(models) if models is not None else list(dict.fromkeys(hr["model"]))
    if not shown:
        raise ValueError("forest_figure: no model to draw")
    n_rows = max(int((hr["model"] == m).sum()) for m in shown)
    fig = _figure((3.4 * len(shown), 0.9 + 0.32 * n_rows))
    axes = fig.subplots(1, len(shown), squeeze=False, sharey=False)[0]
    for ax, m in zip(axes, shown, strict=True):
        rows = hr[hr["model"] == m].reset_index(drop=True)
        ypos = np.arange(len(rows))[::-1]
        est = rows["HR"].to_numpy(float)
        lo = rows["CI low"].to_numpy(float)
        hi = rows["CI high"].to_numpy(float)
        ref = rows["reference"].to_numpy(bool)
        ok = ~ref
        ax.errorbar(est[ok], ypos[ok], xerr=[est[ok] - lo[ok], hi[ok] - est[ok]], fmt="s",
                    ms=4, capsize=2, color="k")
        ax.plot(est[ref], ypos[ref], "o", mfc="white", mec="k", ms=4)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.set_yticks(ypos)
        ax.set_yticklabels([str(t) if lv == c else f"{t}: {lv}" for t, lv, c in
                            zip(rows["term"], rows["level"], rows["covariate"], strict=True)],
                           fontsize=7)
        ax.set_title(m, fontsize=8)
        ax.set_xlabel("hazard ratio (95% CI)", fontsize=8)
    fig.tight_layout()
    return fig


def roc_figure(label: np.ndarray, scores: Mapping[str, np.ndarray],
               title: str = "") -> Figure:
    """ROC curves (scikit-learn) with each AUROC and its DeLong 95 % CI in the legend.

    Returns
    -------
    Figure
    """
    from sklearn.metrics import roc_curve

    from fracsurv.stratify.delong import auc_ci

    fig = _figure((4.8, 4.6))
    ax = fig.add_subplot(111)
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(np.asarray(label).astype(int), np.asarray(s, float))
        ci = auc_ci(label, s)
        ax.plot(fpr, tpr, label=f"{name}: AUROC {ci['auc']:.3f} ({ci['low']:.3f}-{ci['high']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
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
