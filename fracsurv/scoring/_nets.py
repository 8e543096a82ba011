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
    the maximum (any fractured vertebra makes a fractured spine).
    """

    def __init__(self, backbone: str, in_channels: int, shape: tuple[int, int],
                 shared_crops: bool = False) -> None:
        super().__init__()
        self.shared_crops = shared_crops
        self.backbone, n = make_backbone(backbone, 1 if shared_crops else in_channels, shape)
        self.head = nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.shared_crops:
            return self.head(self.backbone(x))
        b, c, h, w = x.shape
        logits = self.head(self.backbone(x.reshape(b * c, 1, h, w))).reshape(b, c)
        return pool_crops(logits, crops_present(x), "max", empty=-30.0)[:, None]


class WeightedBCE(nn.Module):
    """BCE-with-logits on (B, 1) logits and (B,) labels, with a positive-class weight."""

    def __init__(self, pos_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]))

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.reshape(-1).float(), y.reshape(-1).float(), pos_weight=self.pos_weight)
