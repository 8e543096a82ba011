"""Detection accuracy of predicted vertebrae against annotated ones.

Used by the benchmark (``benchmarks/vertebra_cropper.py``), the demo report and
``fracsurv train`` (per-crop supervision of the pVF scorer on detected crops).
A prediction matches a true vertebra one-to-one (Hungarian assignment on the
distance between centres, :func:`scipy.optimize.linear_sum_assignment`) when
its centre lies within half the true vertebra's mean height.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

__all__ = ["annotated_crop_grades", "detection_summary", "match_vertebrae"]


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


def annotated_crop_grades(cropper: Any, frame: Any, keypoints_column: str = "keypoints",
                          vertebrae_column: str = "vertebrae") -> list[np.ndarray]:
    """Per row, the annotated Genant grade of the vertebra in each slot of the detected stack.

    The slots are those the cropper cut from its own detections (``vertebrae_column``
    of its ``transform``); each detection takes the grade of the annotated vertebra
    it matches (:func:`match_vertebrae`; Genant's rule on the annotated keypoints
    when they carry no ``"grade"``). NaN marks an empty slot or a detection that
    matches no annotated vertebra. The supervision for
    ``PVFScorer(crop_label_column=...)`` and ``FusionSurvival(aux_column=...)`` on
    the deployable path: crops from detections, labels from annotations.

    Parameters
    ----------
    cropper : VertebraCropper
        Fitted; its :meth:`~fracsurv.vertebrae.VertebraCropper.stacker` gives the slots.
    frame : DataFrame
        The cropper's output with the annotations (``keypoints_column``) kept.

    Returns
    -------
    list of ndarray of shape (n_crops,)
    """
    from fracsurv.io import load_image
    from fracsurv.vertebrae.crops import vertebra_grades

    stacker = cropper.stacker()
    out = []
    for image, detected, annotated in zip(frame[cropper.image_column], frame[vertebrae_column],
                                          frame[keypoints_column], strict=True):
        annotated = annotated if isinstance(annotated, list) else []
        truth = vertebra_grades(annotated)
        grade = {i: float(truth[j]) for i, j in match_vertebrae(detected, annotated)}
        # the detections carrying their matched annotated grade: the stacker's own slot rule
        labelled = [{**v, "grade": grade.get(i, np.nan)} for i, v in enumerate(detected)]
        shape = np.shape(image) if not isinstance(image, str) else load_image(image).shape
        out.append(stacker.slot_grades(shape[-2:], labelled))
    return out
