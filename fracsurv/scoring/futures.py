"""Crop pVF scores of other images of a patient, cut at the vertebrae found on the baseline.

Diff-X's generated futures keep the baseline's geometry (image-to-image from a
partly noised baseline), so the vertebrae a :class:`~fracsurv.vertebrae.VertebraCropper`
found on the baseline are where the futures' vertebrae are: each image is resized to
the baseline's shape, put into the crop scorer's input domain (``preprocess``) and
cut at those vertebrae, so the same vertebrae fill the same slots of the stack a
crop :class:`~fracsurv.scoring.PVFScorer` reads. This is how ``fracsurv demo`` gets
GpVF and how ``benchmarks/diffx.py`` judges generated images against real follow-ups.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.io.refs import load_image
from fracsurv.nn.data import antialiased_resize

__all__ = ["scores_at_baseline_vertebrae"]


def scores_at_baseline_vertebrae(
        cropper: Any, scorer: Any, images: Sequence[Sequence[Any]],
        vertebrae: Sequence[list[dict[str, Any]]], shapes: Sequence[tuple[int, int]],
        n_seeds: int = 1,
        preprocess: Callable[[list[np.ndarray]], list[np.ndarray]] | None = None,
        chunk: int = 64) -> np.ndarray:
    """Crop-scorer probability of each row's images, cut at that row's baseline vertebrae.

    Parameters
    ----------
    cropper : fitted VertebraCropper
        Its :meth:`~fracsurv.vertebrae.VertebraCropper.crops_at` cuts the stacks.
    scorer : fitted PVFScorer with ``image_input="crops"``
    images : sequence (one per row) of sequences of arrays or references
        A row's images in the generator's layout (horizon-major, ``n_seeds`` per
        horizon); any size: each is resized to the row's ``shapes`` entry.
    vertebrae : sequence of vertebra lists
        What the cropper found on each row's baseline (its ``vertebrae`` column).
    shapes : sequence of (int, int)
        Each row's baseline shape, the frame of its vertebrae's keypoints.
    n_seeds : int
        Images per horizon: the score is the mean over seeds, then the maximum over
        horizons (the study's GpVF aggregation).
    preprocess : callable, optional
        Applied to a row's resized images before cropping (the scorer's input
        domain, e.g. the loader's CLAHE).
    chunk : int
        Rows scored at a time: the crop stacks of all rows are never held at once.

    Returns
    -------
    ndarray of shape (n_rows,)
    """
    if not (len(images) == len(vertebrae) == len(shapes)):
        raise ValueError(f"images, vertebrae and shapes differ in length: {len(images)}, "
                         f"{len(vertebrae)}, {len(shapes)}")
    gscorer = copy.deepcopy(scorer).set_params(image_column="future_crops", n_seeds=int(n_seeds))
    out = []
    for start in range(0, len(images), chunk):
        stacks = []
        for cell, verts, shape in zip(images[start:start + chunk], vertebrae[start:start + chunk],
                                      shapes[start:start + chunk], strict=True):
            big = antialiased_resize([load_image(f) for f in cell], tuple(shape))
            big = preprocess(list(big)) if preprocess is not None else list(big)
            stacks.append([cropper.crops_at(im, verts) for im in big])
        out.append(gscorer.score_cells(pd.DataFrame({"future_crops": stacks}))[0])
    return np.concatenate(out) if out else np.zeros(0)
