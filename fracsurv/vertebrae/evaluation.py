"""Detection accuracy of predicted vertebrae against annotated ones.

Used by the benchmark (``benchmarks/vertebra_cropper.py``) and the demo report.
A prediction matches a true vertebra one-to-one (Hungarian assignment on the
distance between centres, :func:`scipy.optimize.linear_sum_assignment`) when
its centre lies within half the true vertebra's mean height.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["detection_summary", "match_vertebrae"]


def match_vertebrae(pred: Sequence[dict[str, Any]], truth: Sequence[dict[str, Any]]
                    ) -> list[tuple[int, int]]:
    """One-to-one ``(pred index, truth index)`` pairs of one image.

    Parameters
    ----------
    pred, truth : sequence of dict
        Vertebrae with ``"points"`` (6 x 2, the order of
        :func:`fracsurv.vertebrae.genant.heights`).

    Returns
    -------
    list of (int, int)
    """
    from scipy.optimize import linear_sum_assignment

    if not len(pred) or not len(truth):
        return []
    pc = np.array([np.mean(v["points"], axis=0) for v in pred], float)
    tp = np.array([v["points"] for v in truth], float)
    th = np.linalg.norm(tp[:, :3] - tp[:, 3:], axis=-1).mean(axis=1)
    d = np.linalg.norm(pc[:, None] - tp.mean(axis=1)[None], axis=-1)
    rows, cols = linear_sum_assignment(d)
    return [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if d[i, j] < 0.5 * th[j]]


def detection_summary(pred: Iterable[Sequence[dict[str, Any]]],
                      truth: Iterable[Sequence[dict[str, Any]]]) -> dict[str, float]:
    """Sensitivity, precision and keypoint error over a set of images.

    Parameters
    ----------
    pred, truth : iterable of per-image vertebra lists (same order)

    Returns
    -------
    dict
        ``sensitivity``, ``precision``, ``median_point_error_px`` (per point,
        over matched vertebrae; NaN when nothing matched), ``n_true``, ``n_pred``.
    """
    tp = n_pred = n_true = 0
    errs: list[float] = []
    for pv, tv in zip(pred, truth, strict=True):
        pairs = match_vertebrae(pv, tv)
        tp, n_pred, n_true = tp + len(pairs), n_pred + len(pv), n_true + len(tv)
        for i, j in pairs:
            errs.extend(np.linalg.norm(np.subtract(pv[i]["points"], tv[j]["points"]), axis=1))
    return {"sensitivity": tp / max(n_true, 1), "precision": tp / max(n_pred, 1),
            "median_point_error_px": float(np.median(errs)) if errs else float("nan"),
            "n_true": n_true, "n_pred": n_pred}
