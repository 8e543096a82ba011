"""The multimodal study's fixed stack of vertebra crops (pure functions + a transformer).

Rules (the study's section 3.1.6, made parametric):

1. boxes taller than ``max_box_height`` are discarded (they hold several vertebrae);
2. while more than ``n_crops`` remain, the highest (top-most, neck) box is dropped;
3. while fewer remain, empty slots are inserted where the gap between consecutive
   box centres exceeds ``gap_factor`` x the median gap (one slot per missing
   vertebra); any still missing are appended at the bottom;
4. every crop is padded (centred, zeros) to ``crop_size``; a crop larger than that
   is first shrunk to fit, keeping its aspect ratio (``resize="shrink"``, the study's
   rule). ``resize="fill"`` also enlarges smaller crops until they touch the crop's
   border, so every vertebra fills the same number of pixels whatever the field of
   view (what a shared per-crop encoder wants).

Sizes default to the study's (272 x 230 crops, 230 px maximum box height, for
1024 x 512 images) scaled to the image at hand.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import FrameTransformerMixin, append_columns, row_label
from fracsurv.io.refs import ImageCache, hash_parts, load_image
from fracsurv.vertebrae.genant import grade_vertebrae

#: Constraints of the crop-stack parameters, shared with ``VertebraCropper``.
CROP_CONSTRAINTS: dict[str, list[Any]] = {
    "n_crops": [Interval(Integral, 1, None, closed="left")],
    "crop_size": [tuple, list, StrOptions({"auto"})],
    "max_box_height": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
    "gap_factor": [Interval(Real, 0, None, closed="neither")],
    "margin": [Interval(Real, 0, None, closed="left")],
    "cache_dir": [str, os.PathLike, None],
}

__all__ = ["CROP_CONSTRAINTS", "CropStacker", "box_from_points", "crop_placement", "crop_stack", "select_boxes", "select_slots",
           "vertebra_grades"]

STUDY_CROP = (272, 230)
STUDY_MAX_HEIGHT = 230
STUDY_IMAGE = (1024, 512)


def box_from_points(points: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """``[x0, y0, x1, y1]`` around the six keypoints, widened by ``margin`` of its size."""
    p = np.asarray(points, float)
    lo, hi = p.min(axis=0), p.max(axis=0)
    pad = (hi - lo) * margin
    return np.concatenate([lo - pad, hi + pad])


def select_slots(boxes: np.ndarray, n_crops: int = 13, max_box_height: float = np.inf,
                 gap_factor: float = 1.5) -> list[int | None]:
    """Apply rules 1-3: ``n_crops`` slots top to bottom, each the index of its box in
    ``boxes`` or ``None`` for an empty slot."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    keep = np.flatnonzero((boxes[:, 3] - boxes[:, 1]) <= max_box_height)
    keep = keep[np.argsort((boxes[keep, 1] + boxes[keep, 3]) / 2, kind="stable")]
    keep = keep[max(0, len(keep) - n_crops):]  # drop the top-most boxes beyond n_crops
    slots: list[int | None] = [int(i) for i in keep]
    if 1 < len(keep) < n_crops:
        centres = (boxes[keep, 1] + boxes[keep, 3]) / 2
        gaps = np.diff(centres)
        median = float(np.median(gaps))
        filled: list[int | None] = [int(keep[0])]
        missing_total = n_crops - len(keep)
        for gap, i in zip(gaps, keep[1:]):
            if median > 0 and gap > gap_factor * median and missing_total > 0:
                k = min(missing_total, max(1, round(gap / median) - 1))
                filled.extend([None] * k)
                missing_total -= k
            filled.append(int(i))
        slots = filled
    slots.extend([None] * (n_crops - len(slots)))
    return slots


def select_boxes(boxes: np.ndarray, n_crops: int = 13, max_box_height: float = np.inf,
                 gap_factor: float = 1.5) -> list[np.ndarray | None]:
    """Apply rules 1-3: ``n_crops`` slots top to bottom, ``None`` for an empty slot."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return [None if i is None else boxes[i]
            for i in select_slots(boxes, n_crops, max_box_height, gap_factor)]


def vertebra_grades(vertebrae: list[dict[str, Any]]) -> np.ndarray:
    """Genant grade of each vertebra of a list, in the list's order.

    Every vertebra's own ``"grade"`` when all have one; otherwise the Genant rule on
    the keypoints, applied to the column sorted top to bottom (the rule compares
    each body with its neighbours).
    """
    if not vertebrae:
        return np.zeros(0)
    if all("grade" in v for v in vertebrae):
        return np.array([float(v["grade"]) for v in vertebrae])
    pts = np.array([np.asarray(v["points"], float) for v in vertebrae]).reshape(-1, 6, 2)
    order = np.argsort(pts[:, :, 1].mean(axis=1), kind="stable")
    out = np.empty(len(pts))
    out[order] = grade_vertebrae(pts[order])[0]
    return out


def crop_stack(image: np.ndarray, slots: list[np.ndarray | None],
               crop_size: tuple[int, int], resize: str = "shrink") -> np.ndarray:
    """Rule 4: an ``(N, h, w)`` float32 stack, empty slots as zeros.

    ``resize="shrink"`` only shrinks crops larger than ``crop_size``; ``"fill"``
    resizes every crop (aspect ratio kept) to touch the crop's border.
    """
    from skimage.transform import resize as sk_resize

    if resize not in ("shrink", "fill"):
        raise ValueError(f"resize must be 'shrink' or 'fill', got {resize!r}")

    h, w = crop_size
    out = np.zeros((len(slots), h, w), np.float32)
    for k, box in enumerate(slots):
        place = crop_placement(box, image.shape, crop_size, resize)
        if place is None:
            continue
        (x0, y0, x1, y1), (top, left, ch, cw), _ = place
        crop = image[y0:y1, x0:x1]
        if crop.shape != (ch, cw):
            crop = sk_resize(crop, (ch, cw), anti_aliasing=True, preserve_range=True)
        out[k, top:top + ch, left:left + cw] = crop
    return out


def crop_placement(box: np.ndarray | None, image_shape: tuple[int, ...],
                   crop_size: tuple[int, int], resize: str = "shrink"
                   ) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], float] | None:
    """Where :func:`crop_stack` takes a box from the image and puts it in the crop.

    Returns ``((x0, y0, x1, y1), (top, left, height, width), scale)``: the image
    pixels cut, the crop region they fill, and the resize factor (a point
    ``(x, y)`` of the image lands at ``(left + (x - x0) * scale, top + (y - y0) *
    scale)``), or None for an empty slot or a box outside the image.
    """
    if box is None:
        return None
    h, w = crop_size
    H, W = image_shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), W), min(int(np.ceil(box[3])), H)
    if x1 <= x0 or y1 <= y0:
        return None
    ch, cw = y1 - y0, x1 - x0
    scale = min(h / ch, w / cw) if resize == "fill" else min(1.0, h / ch, w / cw)
    if scale != 1.0:
        ch, cw = max(1, int(ch * scale)), max(1, int(cw * scale))
    return (x0, y0, x1, y1), ((h - ch) // 2, (w - cw) // 2, ch, cw), float(scale)


class CropStacker(FrameTransformerMixin, TransformerMixin, BaseEstimator):
    """Cut each row's fixed crop stack from vertebra keypoints held in X.

    The keypoints may be annotations or a detector's output (``VertebraCropper``
    uses this for its ``crops``). Adds ``output_column`` (an ``(N, h, w)`` array, or a
    cache reference when ``cache_dir`` is set) and ``n_vertebrae_cropped``.

    Parameters
    ----------
    keypoints_column, image_column, output_column : str
    n_crops : int, default=13
    crop_size : (int, int) or "auto"
        ``"auto"`` scales the study's 272 x 230 from 1024 x 512 to each image.
    max_box_height : float or "auto"
        ``"auto"`` scales the study's 230 px likewise.
    gap_factor : float, default=1.5
    margin : float, default=0.15
        Box margin around the keypoints, as a fraction of the box size.
    resize : {"shrink", "fill"}, default="shrink"
        ``"shrink"`` (the study) keeps each vertebra at its pixel size, shrinking only
        crops larger than ``crop_size``; ``"fill"`` resizes every crop to fill
        ``crop_size`` (aspect ratio kept).
    grades_column : str, optional
        Also add the Genant grade of the vertebra in each slot (a float array of
        length ``n_crops``, NaN for an empty slot): a per-crop label aligned with
        the stack, e.g. for ``FusionSurvival(aux_column=...)``. A vertebra's
        ``"grade"`` key is used when every vertebra of the row has one (a
        detector's output); otherwise grades follow the Genant rule
        (:func:`fracsurv.vertebrae.genant.grade_vertebrae`) on the keypoints.
    cache_dir : path, optional
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        **CROP_CONSTRAINTS,
        "keypoints_column": [str],
        "image_column": [str],
        "output_column": [str],
        "resize": [StrOptions({"shrink", "fill"})],
        "grades_column": [str, None],
    }

    def __init__(self, keypoints_column: str = "keypoints", *, image_column: str = "image",
                 output_column: str = "crops", n_crops: int = 13, crop_size: Any = "auto",
                 max_box_height: Any = "auto", gap_factor: float = 1.5, margin: float = 0.15,
                 resize: str = "shrink", grades_column: str | None = None,
                 cache_dir: str | None = None) -> None:
        self.keypoints_column = keypoints_column
        self.image_column = image_column
        self.output_column = output_column
        self.n_crops = n_crops
        self.crop_size = crop_size
        self.max_box_height = max_box_height
        self.gap_factor = gap_factor
        self.margin = margin
        self.resize = resize
        self.grades_column = grades_column
        self.cache_dir = cache_dir

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        return tags

    def fit(self, X: pd.DataFrame, y: Any = None) -> CropStacker:
        """Check the parameters and the columns (stateless)."""
        self._validate_params()
        for c in (self.keypoints_column, self.image_column):
            if c not in X.columns:
                raise ValueError(f"X has no column {c!r}")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def _sizes(self, shape: tuple[int, int]) -> tuple[tuple[int, int], float]:
        sy, sx = shape[0] / STUDY_IMAGE[0], shape[1] / STUDY_IMAGE[1]
        size = self.crop_size if self.crop_size != "auto" else (
            max(8, round(STUDY_CROP[0] * sy)), max(8, round(STUDY_CROP[1] * sx)))
        hmax = self.max_box_height if self.max_box_height != "auto" else STUDY_MAX_HEIGHT * sy
        return (int(size[0]), int(size[1])), float(hmax)

    def _slots(self, shape: tuple[int, int], vertebrae: list[dict[str, Any]]
               ) -> tuple[np.ndarray, list[int | None], tuple[int, int]]:
        size, hmax = self._sizes(shape)
        boxes = np.array([box_from_points(np.asarray(v["points"]), self.margin)
                          for v in vertebrae]).reshape(-1, 4)
        return boxes, select_slots(boxes, self.n_crops, hmax, self.gap_factor), size

    def stack_one(self, image: np.ndarray, vertebrae: list[dict[str, Any]]) -> np.ndarray:
        """The crop stack of one image from its vertebra list."""
        boxes, slots, size = self._slots(image.shape, vertebrae)
        return crop_stack(image, [None if i is None else boxes[i] for i in slots], size,
                          self.resize)

    def slot_placements(self, shape: tuple[int, int], vertebrae: list[dict[str, Any]]
                        ) -> list[tuple[int, Any] | None]:
        """Per slot of :meth:`stack_one`: ``(index in vertebrae, crop_placement)`` or None."""
        boxes, slots, size = self._slots(shape, vertebrae)
        out: list[tuple[int, Any] | None] = []
        for i in slots:
            place = None if i is None else crop_placement(boxes[i], shape, size, self.resize)
            out.append(None if place is None else (int(i), place))
        return out

    def slot_grades(self, shape: tuple[int, int], vertebrae: list[dict[str, Any]]) -> np.ndarray:
        """Genant grade of the vertebra in each slot of :meth:`stack_one` (NaN = empty)."""
        _, slots, _ = self._slots(shape, vertebrae)
        grades = vertebra_grades(vertebrae)
        return np.array([np.nan if i is None else grades[i] for i in slots], np.float32)

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Add the crop stacks (see class docstring)."""
        check_is_fitted(self, "n_features_in_")
        cache = ImageCache(self.cache_dir) if self.cache_dir else None
        stacks, counts, grades = [], [], []
        for pos, (img_ref, kps) in enumerate(zip(X[self.image_column], X[self.keypoints_column])):
            if img_ref is None or (isinstance(img_ref, float) and np.isnan(img_ref)):
                raise ValueError(f"no image in {row_label(X, pos)}")
            image = load_image(img_ref)
            kps = kps if isinstance(kps, list) else []
            stack = self.stack_one(image, kps)
            if self.grades_column is not None:
                grades.append(self.slot_grades(image.shape, kps))
            if cache is not None:
                stack = cache.put(stack, hash_parts(stack, "crops"))
            stacks.append(stack)
            counts.append(len(kps))
        added: dict[str, Any] = {self.output_column: stacks,
                                 "n_vertebrae_cropped": np.asarray(counts, int)}
        if self.grades_column is not None:
            added[self.grades_column] = grades
        return append_columns(X, added)
