"""The training data of :class:`~fracsurv.vertebrae.cropper.VertebraCropper`: image
checks, intensity scaling and the keypoint-target dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fracsurv._base import row_label
from fracsurv.io.refs import iter_cell
from fracsurv.nn.data import load_row_image, to_chw
from fracsurv.vertebrae.detector import (
    LEVEL_INDEX,
    LEVELS,
    STRIDE,
    from_grid,
    render_targets,
    to_grid,
)

__all__ = ["KeypointImages", "load_one_image", "normalise_intensity", "one_image", "parse_annotation"]


def normalise_intensity(t: torch.Tensor) -> torch.Tensor:
    """Robust per-image intensity scaling: 1st..99th percentile -> 0..1."""
    flat = t.reshape(-1)
    lo, hi = np.percentile(flat[:: max(1, flat.numel() // 8192)].numpy(), [1.0, 99.0])
    return (t - float(lo)) / max(float(hi - lo), 1e-6)


def one_image(cell: Any, X: pd.DataFrame, pos: int, column: str) -> Any:
    items = iter_cell(cell)
    if not items:
        raise ValueError(f"no image in {row_label(X, pos)} (column {column!r})")
    if len(items) > 1:
        raise ValueError(f"{row_label(X, pos)} holds {len(items)} images in {column!r}; "
                         "VertebraCropper reads one radiograph per row")
    return items[0]


def load_one_image(item: Any, rows: str) -> np.ndarray:
    img = load_row_image(item, rows)
    if img.ndim == 3 and img.shape[0] == 1:
        img = img[0]
    if img.ndim != 2:
        raise ValueError(f"the image of {rows} must be 2-D (H, W), got shape {img.shape}")
    return img


def parse_annotation(cell: Any, X: pd.DataFrame, pos: int, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 6, 2), level indices (n,)) of one row, validated."""
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        raise ValueError(f"{row_label(X, pos)} has no annotation in {column!r} "
                         "(use [] for an image without vertebrae)")
    if not isinstance(cell, list | tuple):
        raise ValueError(f"{row_label(X, pos)}: {column!r} must hold a list of vertebrae, "
                         f"got {type(cell).__name__}")
    pts, lv = [], []
    for k, v in enumerate(cell):
        try:
            p = np.asarray(v["points"], float)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{row_label(X, pos)}: vertebra {k} in {column!r} has no "
                             f"usable 'points' ({exc})") from None
        if p.shape != (6, 2) or not np.isfinite(p).all():
            raise ValueError(f"{row_label(X, pos)}: vertebra {k} in {column!r} needs 6 finite "
                             f"(x, y) points, got shape {p.shape}")
        level = v.get("level") if isinstance(v, dict) else None
        if level is not None and level not in LEVEL_INDEX:
            raise ValueError(f"{row_label(X, pos)}: vertebra {k} has unknown level {level!r}; "
                             f"expected one of {LEVELS} or None")
        pts.append(p)
        lv.append(-1 if level is None else LEVEL_INDEX[level])
    return np.asarray(pts, float).reshape(-1, 6, 2), np.asarray(lv, int)


class KeypointImages(Dataset):
    """Training samples: a normalised input image and its packed target maps."""

    def __init__(self, items: list[Any], annotations: list[tuple[np.ndarray, np.ndarray]],
                 rows: list[str], input_shape: tuple[int, int], sigma: float,
                 offset_scale: float, augment: bool, seed: int | None,
                 window: tuple[int, int] | None = None) -> None:
        self.items, self.annotations, self.rows = items, annotations, rows
        self.window = window
        self.input_shape, self.sigma, self.offset_scale = input_shape, sigma, offset_scale
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = load_one_image(self.items[idx], self.rows[idx])
        h, w = self.input_shape
        x = normalise_intensity(to_chw(img, (h, w)))
        pts, levels = self.annotations[idx]
        pts = to_grid(pts, (w / STRIDE / img.shape[1], h / STRIDE / img.shape[0]))
        if self.augment:
            x, pts = self._augment(x, pts)
        if self.window is not None:
            x, pts = self._window(x, pts)
        gh, gw = (s // STRIDE for s in x.shape[-2:])
        return x, torch.from_numpy(render_targets(pts, levels, (gh, gw), self.sigma, self.offset_scale))

    def _window(self, x: torch.Tensor, pts: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """A random training window, centred near a random vertebra 3 times in 4."""
        (h, w), (wh, ww) = x.shape[-2:], self.window
        wh, ww = min(wh, h), min(ww, w)
        if len(pts) and self.rng.random() < 0.75:
            cx, cy = from_grid(pts[int(self.rng.integers(len(pts)))].mean(0), (0.5, 0.5))
            cy += self.rng.uniform(-0.3, 0.3) * wh
            cx += self.rng.uniform(-0.3, 0.3) * ww
        else:
            cx, cy = self.rng.uniform(0, w), self.rng.uniform(0, h)
        y0 = int(np.clip(round(cy - wh / 2), 0, h - wh))
        x0 = int(np.clip(round(cx - ww / 2), 0, w - ww))
        return x[..., y0:y0 + wh, x0:x0 + ww], pts - np.array([x0, y0]) / STRIDE

    def _augment(self, x: torch.Tensor, pts: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Mirror, integer shift (points follow exactly), gamma, contrast and noise."""
        rng = self.rng
        h, w = x.shape[-2:]
        pts = pts.copy()
        if rng.random() < 0.5:  # a mirrored lateral view is as valid as the original
            x = x.flip(-1)
            pts[..., 0] = w // STRIDE - 1 - pts[..., 0]
        dy, dx = (int(v) for v in rng.integers(-(np.array([h, w]) // 16), np.array([h, w]) // 16 + 1))
        x = torch.roll(x, (dy, dx), (-2, -1))
        x[..., : max(dy, 0), :] = 0
        x[..., h + min(dy, 0):, :] = 0
        x[..., : max(dx, 0)] = 0
        x[..., w + min(dx, 0):] = 0
        pts = pts + np.array([dx, dy]) / STRIDE
        x = x.clamp(0, 1) ** float(rng.uniform(0.7, 1.4))
        x = x * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
        return x + float(rng.uniform(0, 0.04)) * torch.randn(x.shape, generator=self._gen()), pts

    def _gen(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.rng.integers(2**31)))
