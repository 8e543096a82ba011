"""Pooling over the crops of a vertebra stack (multiple-instance pooling).

A crop stack is ``(B, N, h, w)`` with all-zero slots for vertebrae that are not
there. A shared per-crop encoder gives ``(B, N, ...)`` values; these helpers pool
them over the *present* crops only. Written here because neither MONAI nor torch
has a masked pooling over a set dimension.
"""

from __future__ import annotations

import torch

__all__ = ["CROP_POOLS", "crops_present", "pool_crops"]

CROP_POOLS = ("max", "sum", "mean")


def crops_present(stack: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` bool: which slots of a ``(B, N, h, w)`` stack hold a crop."""
    b, n = stack.shape[:2]
    return stack.reshape(b, n, -1).abs().amax(-1) > 0


def pool_crops(values: torch.Tensor, present: torch.Tensor, how: str = "max",
               empty: float = 0.0) -> torch.Tensor:
    """Pool ``(B, N, ...)`` per-crop values over the present crops -> ``(B, ...)``.

    Parameters
    ----------
    values : Tensor of shape (B, N, ...)
    present : bool Tensor of shape (B, N)
    how : {"max", "sum", "mean"}
        ``"max"``: the most extreme crop (any fractured vertebra); ``"sum"``: an
        additive score over vertebrae, as the spinal deformity index sums grades;
        ``"mean"``: the average crop.
    empty : float
        The value of a row with no crop at all.
    """
    if how not in CROP_POOLS:
        raise ValueError(f"crop pooling must be one of {CROP_POOLS}, got {how!r}")
    mask = present.reshape(*present.shape, *([1] * (values.dim() - 2)))
    any_crop = mask.any(dim=1)
    if how == "max":
        pooled = values.masked_fill(~mask, float("-inf")).amax(dim=1)
    else:
        pooled = (values * mask.to(values.dtype)).sum(dim=1)
        if how == "mean":
            pooled = pooled / mask.sum(dim=1).clamp_min(1).to(values.dtype)
    return torch.where(any_crop, pooled, torch.full_like(pooled, float(empty)))
