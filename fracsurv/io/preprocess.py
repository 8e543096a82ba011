"""Preprocessing of decoded radiographs, as in the two source studies.

min-max scaling -> optional resampling to a pixel spacing -> aspect-preserving
resize and zero padding to the output shape -> CLAHE -> normalisation.
Resampling is scikit-image; CLAHE is OpenCV's (``cv2.createCLAHE``, on 8-bit
levels, 16x faster at 1024 x 512) or scikit-image's ``exposure.equalize_adapthist``
(the studies' and the shipped models' choice). Both use 256-bin tile
histograms with the same clip limit and tile grid; their outputs differ by a mean
absolute 0.01 of the [0, 1] range (``benchmarks/dicom_loading.py``; tested).
"""

from __future__ import annotations

import numpy as np
from skimage import exposure, transform

from fracsurv.contract import DEFAULT_IMAGE_SHAPE

__all__ = ["CLAHE_BACKENDS", "equalize_clahe", "geometry", "minmax", "preprocess", "resize_and_pad"]

CLAHE_BACKENDS = ("opencv", "skimage")


def minmax(img: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] (a constant image becomes zeros)."""
    img = np.asarray(img, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    out = np.subtract(img, np.float32(lo))
    out *= np.float32(1.0 / (hi - lo))
    return out


def _fit_box(h: int, w: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of an ``h x w`` image resized to fit ``shape``, centred."""
    scale = min(shape[0] / h, shape[1] / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    return nh, nw, (shape[0] - nh) // 2, (shape[1] - nw) // 2


def resize_and_pad(img: np.ndarray, shape: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """Resize keeping the aspect ratio so the image fits ``shape``; centre it on ``fill``."""
    h, w = img.shape
    nh, nw, top, left = _fit_box(h, w, shape)
    if (nh, nw) != (h, w):
        img = transform.resize(img, (nh, nw), order=1, anti_aliasing=nh < h,
                               preserve_range=True).astype(np.float32)
    out = np.full(shape, fill, np.float32)
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


def equalize_clahe(img: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None,
          backend: str = "opencv") -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of an image in [0, 1].

    Parameters
    ----------
    img : ndarray (H, W)
        Values in [0, 1].
    clip_limit : float, default=0.01
        scikit-image's normalised clip limit (fraction of a tile's pixels per
        bin); OpenCV gets the equivalent ``clip_limit x 256``.
    kernel_size : int, optional
        Tile size in pixels; default 1/8 of each side (an 8 x 8 grid).
    backend : {"opencv", "skimage"}
    """
    img = np.clip(img, 0, 1)
    if backend == "skimage":
        return exposure.equalize_adapthist(img, kernel_size=kernel_size,
                                           clip_limit=clip_limit).astype(np.float32)
    if backend != "opencv":
        raise ValueError(f"clahe backend must be one of {CLAHE_BACKENDS}, got {backend!r}")
    import cv2

    h, w = img.shape
    kh, kw = (kernel_size, kernel_size) if kernel_size else (max(1, h // 8), max(1, w // 8))
    grid = (max(1, -(-w // kw)), max(1, -(-h // kh)))  # OpenCV: (columns, rows) of tiles
    levels = np.rint(img * 255).astype(np.uint8)
    out = cv2.createCLAHE(clipLimit=float(clip_limit) * 256, tileGridSize=grid).apply(levels)
    return out.astype(np.float32) * np.float32(1 / 255)


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
    clahe_backend: str = "opencv",
    invert: bool = False,
) -> np.ndarray:
    """Apply the preprocessing chain to a decoded image (bone bright, or to be inverted).

    ``invert=True`` takes an image whose bright parts are dark (MONOCHROME1
    values from ``decode_dicom(..., defer_scaling=True)``). The min-max scaling
    (and inversion) is an affine map, which commutes with the linear
    resampling: it is applied after resizing, to the smaller image, with the
    padding filled by the value that maps to 0. The result equals scaling first
    up to float rounding.
    """
    img = np.asarray(img, dtype=np.float32)
    lo, hi = float(img.min()), float(img.max())
    if (factor := _spacing_factor(spacing_mm, target_spacing)) is not None:
        img = transform.rescale(img, factor, order=1, anti_aliasing=factor < 1,
                                preserve_range=True).astype(np.float32)
    if output_shape is not None:
        img = resize_and_pad(img, tuple(output_shape), fill=hi if invert else lo)
    if hi <= lo:
        img = np.zeros_like(img)
    else:  # min-max scaling (and inversion) with the full-resolution range
        img = np.subtract(hi, img) if invert else np.subtract(img, np.float32(lo))
        img *= np.float32(1.0 / (hi - lo))
    if clahe:
        img = equalize_clahe(img, clahe_clip_limit, clahe_kernel_size, clahe_backend)
    if normalize == "minmax":
        img = minmax(img)
    elif normalize == "zscore":
        sd = float(img.std())
        img = (img - float(img.mean())) / (sd if sd > 0 else 1.0)
    elif normalize not in (None, "none"):
        raise ValueError(f"normalize must be 'minmax', 'zscore' or 'none', got {normalize!r}")
    return img.astype(np.float32)
