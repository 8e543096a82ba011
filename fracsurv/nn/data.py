"""Torch datasets that stream images by reference.

Every image model (keypoints, pVF scoring, fusion survival) reads its batches
through :class:`ImageDataset`, so no model holds a cohort's images in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fracsurv._base import file_ref
from fracsurv.io.refs import iter_cell, load_image

__all__ = ["ImageDataset", "antialiased_resize", "flatten_cells", "load_row_image", "to_chw"]


def flatten_cells(cells: Sequence[Any]) -> tuple[list[Any], np.ndarray]:
    """Flatten frame cells (one image or a list each) into images and their row index.

    Returns
    -------
    items : list
        Every image/reference, row by row.
    owner : ndarray of int
        ``owner[k]`` is the row position that ``items[k]`` came from; use it to
        aggregate per-image outputs back to rows.
    """
    items: list[Any] = []
    owner: list[int] = []
    for pos, cell in enumerate(cells):
        for item in iter_cell(cell):
            items.append(item)
            owner.append(pos)
    return items, np.asarray(owner, dtype=np.int64)


def load_row_image(item: Any, row: str) -> np.ndarray:
    """:func:`~fracsurv.io.refs.load_image`, its errors re-raised naming the frame row.

    Parameters
    ----------
    item : array or reference
        The image.
    row : str
        Where it came from, e.g. ``row_label(X, pos)``.

    Raises
    ------
    ValueError
        ``cannot read the image of <row>: ...``, chained to the original error.
    """
    try:
        return load_image(item)
    except Exception as exc:  # re-raised with the row, never the file's path or identifiers
        msg = str(exc)
        if not isinstance(item, np.ndarray):
            msg = msg.replace(str(item), file_ref(item))
        raise ValueError(f"cannot read the image of {row}: {msg}") from exc  # cause: tracebacks only


def to_chw(image: np.ndarray | torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """A 2-D ``(H, W)`` or 3-D ``(C, H, W)`` image as a float32 ``(C, H, W)`` tensor.

    ``shape`` bilinearly resizes to ``(H, W)`` when it differs.
    """
    t = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ValueError(f"expected a 2-D or 3-D image, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape[-2:]) != tuple(shape):
        t = F.interpolate(t[None], size=tuple(shape), mode="bilinear", align_corners=False)[0]
    return t


def antialiased_resize(images: Sequence[np.ndarray] | np.ndarray,
                       shape: tuple[int, int]) -> np.ndarray:
    """``(n, H, W)`` images in [0, 1] resized to ``shape`` (bilinear, antialiased, clamped).

    How ``DiffXGenerator`` brings images to its working resolution; benchmarks and
    tests that prepare images for it, or for its judges, use the same.
    """
    t = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in images]))[:, None]
    t = F.interpolate(t, size=tuple(shape), mode="bilinear", antialias=True, align_corners=False)
    return t.clamp(0, 1)[:, 0].numpy()


class ImageDataset(Dataset):
    """Images (arrays or references) with optional tabular features and targets.

    Parameters
    ----------
    items : sequence
        One image or reference per sample (see :func:`flatten_cells`).
    y : array-like, optional
        Targets, one row per sample (a zero placeholder is returned when absent,
        as skorch expects a pair).
    tabular : ndarray of shape (n, p), optional
        Per-sample features. When given, samples are ``{"image": x, "tabular": t}``
        dicts, which skorch passes to ``module.forward(image=..., tabular=...)``.
    transform : callable, optional
        Applied to the ``(C, H, W)`` tensor (augmentation; training only).
    shape : (int, int), optional
        Resize every image to this size.
    rows : sequence of str, optional
        The frame row of each sample, named by load errors
        (:func:`load_row_image`).
    """

    def __init__(
        self,
        items: Sequence[Any],
        y: Any = None,
        tabular: np.ndarray | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        shape: tuple[int, int] | None = None,
        rows: Sequence[str] | None = None,
    ) -> None:
        self.items = list(items)
        self.rows = None if rows is None else list(rows)
        self.y = None if y is None else np.asarray(y)
        self.tabular = None if tabular is None else np.asarray(tabular, dtype=np.float32)
        self.transform = transform
        self.shape = shape
        n = len(self.items)
        for name, arr in (("y", self.y), ("tabular", self.tabular)):
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but there are {n} images")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, idx: int) -> torch.Tensor:
        """The ``(C, H, W)`` tensor of sample ``idx`` (no augmentation)."""
        item = self.items[idx]
        image = load_image(item) if self.rows is None else load_row_image(item, self.rows[idx])
        return to_chw(image, self.shape)

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        x = self.load(idx)
        if self.transform is not None:
            x = torch.as_tensor(np.asarray(self.transform(x)), dtype=torch.float32)
        if self.tabular is not None:
            x = {"image": x, "tabular": torch.from_numpy(self.tabular[idx])}
        target = torch.zeros(1) if self.y is None else torch.as_tensor(self.y[idx])
        return x, target
