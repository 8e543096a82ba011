"""The pVF scorer's network and loss."""

from __future__ import annotations

import torch
from torch import nn

from fracsurv.nn.backbones import make_backbone
from fracsurv.nn.pooling import crops_present, pool_crops

__all__ = ["PVFClassifier", "WeightedBCE"]


class PVFClassifier(nn.Module):
    """Backbone + linear head giving one logit per input.

    ``shared_crops=True`` treats the channels as separate vertebra crops: one
    single-channel encoder scores every non-empty crop and the stack's logit is
    the maximum (any fractured vertebra makes a fractured spine). With
    ``per_crop=True`` training returns ``(B, 1 + N)``: the stack's logit, then
    every crop's, for a per-vertebra loss; evaluation always returns ``(B, 1)``.
    """

    def __init__(self, backbone: str, in_channels: int, shape: tuple[int, int],
                 shared_crops: bool = False, per_crop: bool = False) -> None:
        super().__init__()
        self.shared_crops = shared_crops
        self.per_crop = per_crop and shared_crops
        self.backbone, n = make_backbone(backbone, 1 if shared_crops else in_channels, shape)
        self.head = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shared_crops:
            return self.head(self.backbone(x))
        b, c, h, w = x.shape
        logits = self.head(self.backbone(x.reshape(b * c, 1, h, w))).reshape(b, c)
        pooled = pool_crops(logits, crops_present(x), "max", empty=-30.0)[:, None]
        return torch.cat([pooled, logits], 1) if self.per_crop and self.training else pooled


class WeightedBCE(nn.Module):
    """BCE-with-logits on (B, 1) logits and (B,) labels, with a positive-class weight.

    With per-crop labels, ``y`` is ``(B, 1 + N)`` (the stack's label, then each
    crop's, NaN = unknown or empty slot) and training logits are ``(B, 1 + N)``:
    the loss adds ``crop_weight`` x the mean BCE over the labelled crops (positive
    weight ``crop_pos_weight``). Logits of shape ``(B, 1)`` (evaluation) use the
    stack's label only.
    """

    def __init__(self, pos_weight: float = 1.0, crop_pos_weight: float = 1.0,
                 crop_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))
        self.register_buffer("crop_pos_weight", torch.tensor([float(crop_pos_weight)]))
        self.crop_weight = float(crop_weight)

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.float()
        if y.ndim == 1 or y.shape[-1] == 1:
            return nn.functional.binary_cross_entropy_with_logits(
                logits[:, 0].float() if logits.ndim == 2 else logits.reshape(-1).float(),
                y.reshape(-1), pos_weight=self.pos_weight)
        loss = nn.functional.binary_cross_entropy_with_logits(
            logits[:, 0].float(), y[:, 0], pos_weight=self.pos_weight)
        if logits.shape[1] == 1:
            return loss
        crop_y, crop_logits = y[:, 1:], logits[:, 1:].float()
        known = ~torch.isnan(crop_y)
        if known.any():
            loss = loss + self.crop_weight * nn.functional.binary_cross_entropy_with_logits(
                crop_logits[known], crop_y[known], pos_weight=self.crop_pos_weight)
        return loss
