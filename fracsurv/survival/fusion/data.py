"""FusionSurvival's data side: frame checks, auxiliary labels, geometry and the dataset."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from fracsurv._base import check_features, row_label
from fracsurv.contract import CLINICAL_COLUMNS, DEFAULT_IMAGE_SHAPE
from fracsurv.io.refs import is_missing, iter_cell, load_image
from fracsurv.nn.augment import make_augmenter, rotation_padded_shape
from fracsurv.nn.data import ImageDataset, to_chw

__all__ = ["FusionDataMixin", "FusionImages"]


class FusionImages(ImageDataset):
    """Images (or crop stacks) + clinical rows; preprocessing and row-naming errors.

    Every item is resized to ``shape``, min-max scaled to [0, 1] per image,
    checked for its channel count and zero-padded to ``padded`` (room for
    rotations); ``transform`` (augmentation) follows.
    """

    def __init__(self, items: list[Any], rows: list[str], *, channels: int | None,
                 padded: tuple[int, int] | None, **kwargs: Any) -> None:
        super().__init__(items, rows=rows, **kwargs)
        self.channels = channels
        self.padded = padded
        self.skip_images = False  # clinical pre-training reads no image

    def __getitem__(self, idx: int) -> tuple[Any, Any]:
        if not self.skip_images:
            return super().__getitem__(idx)
        x = {"image": torch.zeros(self.channels or 1, 1, 1),
             "tabular": torch.from_numpy(self.tabular[idx])}
        return x, torch.as_tensor(self.y[idx])

    def load(self, idx: int) -> torch.Tensor:
        x = super().load(idx)  # load errors name the row
        assert self.rows is not None
        if self.channels is not None and x.shape[0] != self.channels:
            raise ValueError(f"the image of {self.rows[idx]} has {x.shape[0]} channels; the "
                             f"model was built for {self.channels}")
        if not torch.isfinite(x).all():
            raise ValueError(f"the image of {self.rows[idx]} contains NaN or infinite pixels")
        lo, hi = x.amin(), x.amax()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        if self.padded is not None and tuple(x.shape[-2:]) != self.padded:
            ph, pw = self.padded[0] - x.shape[-2], self.padded[1] - x.shape[-1]
            x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return x


class FusionDataMixin:
    """The methods of :class:`FusionSurvival` that read and check its frame."""

    def _image_col(self) -> str:
        return self.image_column or self.image_input

    def _tab_cols(self) -> list[str]:
        if self.fusion == "image_only":
            return []
        given = self._clinical_columns_param()
        cols = list(CLINICAL_COLUMNS) if given is None else [str(c) for c in given]
        if not cols:
            raise ValueError("clinical_columns is empty; use fusion='image_only' for images alone")
        return cols

    def _check_frame(self, X: Any, tab_cols: list[str]) -> np.ndarray:
        """Validate X; return the clinical matrix (float64)."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"FusionSurvival expects a pandas DataFrame with a "
                            f"{self._image_col()!r} column, got {type(X).__name__}")
        col = self._image_col()
        if col not in X.columns:
            hint = (" (make it with fracsurv.vertebrae.crops.CropStacker in the Pipeline)"
                    if self.image_input == "crops" else "")
            raise ValueError(f"X has no image column {col!r}{hint}")
        missing = [c for c in tab_cols if c not in X.columns]
        if missing:
            raise ValueError(f"X has no clinical column {missing[0]!r} (clinical_columns "
                             f"{'default' if self._clinical_columns_param() is None else 'given'}: "
                             f"{tab_cols})")
        for pos, cell in enumerate(X[col]):
            if is_missing(cell) or not iter_cell(cell):
                raise ValueError(f"no image in {row_label(X, pos)} (column {col!r})")
        if not tab_cols:
            return np.zeros((len(X), 0))
        frame = X[tab_cols]
        check_features(frame)
        return frame.to_numpy(dtype=np.float64)

    def _aux_labels(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, L)`` auxiliary labels (L = 1 per row, or the stack length per crop).

        Sets ``aux_levels_`` (the largest grade, at least 1) and ``aux_per_crop_``.
        """
        self.aux_levels_, self.aux_per_crop_ = 0, False
        if self.aux_column is None:
            return np.full((len(X), 1), np.nan)
        if self.aux_column not in X.columns:
            raise ValueError(f"X has no auxiliary label column {self.aux_column!r}")
        cells = list(X[self.aux_column])
        per_crop = any(isinstance(c, (list, tuple, np.ndarray)) for c in cells)
        if per_crop:
            lab = self._per_crop_labels(X, cells)
        else:
            lab = pd.to_numeric(X[self.aux_column], errors="coerce").to_numpy(float)[:, None]
        bad = np.argwhere(np.isfinite(lab) & ((lab < 0) | (lab != np.round(lab))))
        if bad.size:
            r, k = (int(v) for v in bad[0])
            where = f", crop {k}" if per_crop else ""
            raise ValueError(f"aux_column {self.aux_column!r} must hold 0/1 labels or grades "
                             f"0, 1, 2, ... (NaN = unknown): {row_label(X, r)}{where} has "
                             f"{float(lab[r, k])!r}")
        self.aux_levels_ = max(1, int(np.nanmax(lab, initial=0.0)))
        self.aux_per_crop_ = per_crop
        return lab

    def _per_crop_labels(self, X: pd.DataFrame, cells: list[Any]) -> np.ndarray:
        if self.image_input != "crops" or self.crop_encoder != "shared":
            raise ValueError(f"aux_column {self.aux_column!r} holds one label per crop; that "
                             "needs image_input='crops' and crop_encoder='shared'")
        out = np.full((len(X), self.n_channels_), np.nan)
        for pos, cell in enumerate(cells):
            if is_missing(cell):
                continue
            try:
                v = np.asarray(cell, float).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"aux_column {self.aux_column!r} of {row_label(X, pos)} is "
                                 f"not numeric: {exc}") from exc
            if len(v) != self.n_channels_:
                raise ValueError(f"aux_column {self.aux_column!r} of {row_label(X, pos)} has "
                                 f"{len(v)} labels for a stack of {self.n_channels_} crops")
            out[pos] = v
        return out

    # -- data --------------------------------------------------------------------
    @staticmethod
    def _first(cell: Any) -> Any:
        return iter_cell(cell)[0]

    def _dataset(self, X: pd.DataFrame, tab: np.ndarray, *, y: np.ndarray | None = None,
                 train: bool = False) -> FusionImages:
        items = [self._first(c) for c in X[self._image_col()]]
        rows = [row_label(X, p) for p in range(len(X))]
        tabs = ((tab - self.x_mean_) / self.x_scale_).astype(np.float32)
        transform = None
        if train and self.augment:
            transform = make_augmenter(self.image_input, self.random_state,
                                       max_degrees=float(self.max_rotation))
        return FusionImages(items, rows, channels=self.n_channels_, padded=self.input_shape_,
                             y=y, tabular=tabs, transform=transform, shape=self.base_shape_)

    def _geometry(self, X: pd.DataFrame) -> None:
        first = to_chw(load_image(self._first(X[self._image_col()].iloc[0])))
        self.n_channels_ = int(first.shape[0])
        if self.image_input == "image" and self.n_channels_ != 1:
            raise ValueError(f"image_input='image' expects single-channel radiographs; the image "
                             f"of {row_label(X, 0)} has {self.n_channels_} channels (use "
                             "image_input='crops' for crop stacks)")
        if self.input_shape is not None:
            base = tuple(int(s) for s in self.input_shape)
        elif self.image_input == "image":
            base = DEFAULT_IMAGE_SHAPE
        else:
            base = (int(first.shape[1]), int(first.shape[2]))
        self.base_shape_ = base
        self.input_shape_ = (rotation_padded_shape(base, float(self.max_rotation))
                             if self.image_input == "image" and self.max_rotation else base)
