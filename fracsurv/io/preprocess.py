"""Preprocessing of decoded radiographs, as in the two source studies.

min-max scaling -> optional resampling to a pixel spacing -> aspect-preserving
resize and zero padding to the output shape -> CLAHE -> normalisation.
Everything is scikit-image (CLAHE: ``exposure.equalize_adapthist``).
"""

from __future__ import annotations

import numpy as np
from skimage import exposure, transform

from fracsurv.contract import DEFAULT_IMAGE_SHAPE

__all__ = ["geometry", "minmax", "preprocess", "resize_and_pad"]


def minmax(img: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant image becomes zeros)."""
    img = np.asarray(img, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    return (img - lo) / (hi - lo)


def _fit_box(h: int, w: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of an ``h x w`` image resized to fit ``shape``, centred."""
    scale = min(shape[0] / h, shape[1] / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return nh, nw, (shape[0] - nh) // 2, (shape[1] - nw) // 2


def resize_and_pad(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize keeping the aspect ratio so the image fits ``shape``; centre it on zeros."""
    h, w = img.shape
    nh, nw, top, left = _fit_box(h, w, shape)
    if (nh, nw) != (h, w):
        img = transform.resize(img, (nh, nw), order=1, anti_aliasing=nh < h,
                               preserve_range=True).astype(np.float32)
    out = np.zeros(shape, np.float32)
    out[top:top + nh, left:left + nw] = img
    return out


def _spacing_factor(spacing_mm: float, target_spacing: float | None) -> float | None:
    if target_spacing is not None and np.isfinite(spacing_mm) and spacing_mm > 0:
        factor = spacing_mm / target_spacing
        if abs(factor - 1) > 1e-3:
            return factor
    return None


def geometry(rows: int, cols: int, *, output_shape: tuple[int, int] | None = DEFAULT_IMAGE_SHAPE,
             spacing_mm: float = float("nan"),
             target_spacing: float | None = None) -> tuple[float, float, float, float]:
    """Where :func:`preprocess` puts a point of the decoded ``rows x cols`` image.

    Returns
    -------
    (scale_y, scale_x, offset_y, offset_x)
        A point ``(x, y)`` in input pixels (pixel centres at integers) lands at
        ``((x + .5) * scale_x - .5 + offset_x, (y + .5) * scale_y - .5 + offset_y)``,
        the convention of scikit-image's resize.
    """
    h, w = int(rows), int(cols)
    factor = _spacing_factor(spacing_mm, target_spacing)
    if factor is not None:  # scikit-image's rescale rounds the output shape
        h, w = max(1, round(h * factor)), max(1, round(w * factor))
    top = left = 0
    nh, nw = h, w
    if output_shape is not None:
        nh, nw, top, left = _fit_box(h, w, tuple(output_shape))
    return nh / int(rows), nw / int(cols), float(top), float(left)


def preprocess(
    img: np.ndarray,
    *,
    output_shape: tuple[int, int] | None = DEFAULT_IMAGE_SHAPE,
    spacing_mm: float = float("nan"),
    target_spacing: float | None = None,
    clahe: bool = True,
    clahe_clip_limit: float = 0.01,
    clahe_kernel_size: int | None = None,
    normalize: str = "minmax",
) -> np.ndarray:
    """Apply the preprocessing chain to a decoded image (bone bright)."""
    img = minmax(img)
    if (factor := _spacing_factor(spacing_mm, target_spacing)) is not None:
        img = transform.rescale(img, factor, order=1, anti_aliasing=factor < 1,
                                preserve_range=True).astype(np.float32)
    if output_shape is not None:
        img = resize_and_pad(img, tuple(output_shape))
    if clahe:
        img = exposure.equalize_adapthist(np.clip(img, 0, 1), kernel_size=clahe_kernel_size,
                                          clip_limit=clahe_clip_limit).astype(np.float32)
    if normalize == "minmax":
        img = minmax(img)
    elif normalize == "zscore":
        sd = float(img.std())
        img = (img - float(img.mean())) / (sd if sd > 0 else 1.0)
    elif normalize not in (None, "none"):
        raise ValueError(f"normalize must be 'minmax', 'zscore' or 'none', got {normalize!r}")
    return img.astype(np.float32)
