"""Torch modules behind :class:`fracsurv.survival.FusionSurvival`.

One :class:`FusionNet` holds every part a fusion mode needs (image branch,
clinical branch, fusion head) and a ``stage`` switch, so the same module is
pre-trained part by part ("tabular", "image") and then trained as a whole
("fusion") on the shared skorch base, and is saved as one safetensors file.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fracsurv.nn.backbones import make_backbone
from fracsurv.nn.mlp import make_mlp
from fracsurv.survival.loss import cox_nll

__all__ = ["FUSIONS", "STAGES", "FusionCoxLoss", "FusionNet"]

FUSIONS = ("intermediate", "late", "alpha", "image_only")
STAGES = ("tabular", "image", "fusion")


class _TabularBranch(nn.Module):
    """The study's DeepSurv trunk (n_tab -> 64 -> 128, ReLU + dropout) and its risk head.

    ``linear_skip`` adds a linear Cox term on the (standardised) inputs to the risk,
    as :class:`~fracsurv.survival.DeepSurvRegressor` does: on small cohorts the MLP
    then only has to learn what a linear Cox model misses.
    """

    def __init__(self, n_tab: int, hidden: tuple[int, ...], dropout: float,
                 linear_skip: bool) -> None:
        super().__init__()
        self.trunk = make_mlp(n_tab, hidden, None, activation="relu", dropout=dropout)
        self.n_features = int(hidden[-1]) if hidden else n_tab
        self.head = nn.Linear(self.n_features, 1, bias=False)
        self.skip = nn.Linear(n_tab, 1, bias=False) if linear_skip else None

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is None:
            return torch.zeros(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return self.skip(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, risk)."""
        feats = self.trunk(x)
        return feats, self.head(feats) + self.linear(x)


class _ImageBranch(nn.Module):
    """A MONAI backbone and a risk head.

    ``shared=False`` (the study): the ``in_channels`` crops (or the radiograph)
    enter one backbone whose first convolution is built for ``in_channels``.
    ``shared=True``: one single-channel backbone encodes every crop and the
    features are max-pooled over the non-empty crops (a fracture in any
    vertebra, wherever the stack places it).
    """

    def __init__(self, backbone: str, in_channels: int, shape: tuple[int, int],
                 shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        self.backbone, self.n_features = make_backbone(backbone, 1 if shared else in_channels,
                                                       shape)
        self.head = nn.Linear(self.n_features, 1, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, risk)."""
        if not self.shared:
            feats = self.backbone(x)
        else:
            b, c, h, w = x.shape
            per_crop = self.backbone(x.reshape(b * c, 1, h, w)).reshape(b, c, -1)
            present = (x.reshape(b, c, -1).abs().amax(-1) > 0)[..., None]
            feats = per_crop.masked_fill(~present, float("-inf")).amax(dim=1)
            feats = torch.where(torch.isfinite(feats), feats, torch.zeros_like(feats))
        return feats, self.head(feats)


class FusionNet(nn.Module):
    """Image + clinical Cox network with the study's fusion heads.

    Parameters
    ----------
    fusion : {"intermediate", "late", "alpha", "image_only"}
        * intermediate -- concat(image features, 128 clinical features) -> FC 128
          -> BatchNorm -> ReLU -> FC 1 (plus the clinical linear term when
          ``linear_skip``);
        * late -- FC(2 -> 1) on the two sub-models' risk scores;
        * alpha -- ``alpha * r_clinical + (1 - alpha) * r_image``;
        * image_only -- the image sub-model's risk.
    backbone, in_channels, shape : image branch (see :func:`make_backbone`).
    n_tab : int
        Clinical inputs (0 for ``image_only``).
    tab_hidden : tuple of int
        Clinical trunk widths, the study's ``(64, 128)``.
    dropout : float
    alpha : float
        Weight of the clinical risk for ``fusion="alpha"``.
    linear_skip : bool
    aux : bool
        Add a logit head on the image features for an auxiliary 0/1 label.
    shared_crops : bool
        One single-channel encoder shared by the crops (see :class:`_ImageBranch`).
    """

    def __init__(self, fusion: str, backbone: str, in_channels: int, shape: tuple[int, int],
                 n_tab: int, tab_hidden: tuple[int, ...] = (64, 128), dropout: float = 0.1,
                 alpha: float = 0.8, linear_skip: bool = True, aux: bool = False,
                 shared_crops: bool = False) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.fusion = fusion
        self.stage = "fusion"
        self.frozen: tuple[str, ...] = ()
        self.image = _ImageBranch(backbone, in_channels, shape, shared_crops)
        self.tabular = (_TabularBranch(n_tab, tuple(tab_hidden), dropout, linear_skip)
                        if fusion != "image_only" else None)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.fuse: nn.Module | None = None
        if fusion == "intermediate":
            assert self.tabular is not None
            n = self.image.n_features + self.tabular.n_features
            self.fuse = nn.Sequential(nn.Linear(n, 128), nn.BatchNorm1d(128), nn.ReLU(),
                                      nn.Linear(128, 1, bias=False))
        elif fusion == "late":
            self.fuse = nn.Linear(2, 1, bias=False)
            with torch.no_grad():  # start as the plain sum of the two risks
                self.fuse.weight.fill_(1.0)
        self.aux_head = nn.Linear(self.image.n_features, 1) if aux else None

    # -- freezing --------------------------------------------------------------
    def freeze(self, parts: tuple[str, ...]) -> None:
        """Freeze the named sub-modules (``"image"``, ``"tabular"``); unfreeze the rest.

        Frozen parts also stay in eval mode during training (BatchNorm statistics
        and dropout of a pre-trained sub-model must not change).
        """
        self.frozen = tuple(parts)
        for name in ("image", "tabular", "fuse", "aux_head"):
            part = getattr(self, name)
            if part is not None:
                part.requires_grad_(name not in self.frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> FusionNet:
        super().train(mode)
        for name in self.frozen:
            part = getattr(self, name)
            if part is not None:
                part.eval()
        return self

    # -- forward ---------------------------------------------------------------
    def forward(self, image: torch.Tensor, tabular: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Risk of shape (B, 1); in training with an aux head, (risk, aux logit)."""
        risk, img_feats = self._risk(image, tabular)
        if self.training and self.aux_head is not None and img_feats is not None:
            return risk, self.aux_head(img_feats)
        return risk

    def _risk(self, image: torch.Tensor, tabular: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.stage == "tabular":
            assert self.tabular is not None
            return self.tabular(tabular)[1], None
        img_feats, r_img = self.image(image)
        if self.stage == "image" or self.fusion == "image_only":
            return r_img, img_feats
        assert self.tabular is not None
        tab_feats, r_tab = self.tabular(tabular)
        if self.fusion == "intermediate":
            assert self.fuse is not None
            fused = torch.cat([img_feats, tab_feats.to(img_feats.dtype)], dim=1)
            return self.fuse(fused) + self.tabular.linear(tabular), img_feats
        if self.fusion == "late":
            assert self.fuse is not None
            return self.fuse(torch.cat([r_tab, r_img.to(r_tab.dtype)], dim=1)), img_feats
        return self.alpha * r_tab + (1 - self.alpha) * r_img, img_feats

    def risks(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """(B, 2) sub-model risks ``[r_clinical, r_image]`` (late and alpha fusion)."""
        assert self.tabular is not None
        r_img = self.image(image)[1]
        r_tab = self.tabular(tabular)[1]
        return torch.cat([r_tab.float(), r_img.float()], dim=1)


class FusionCoxLoss(nn.Module):
    """Cox partial likelihood (+ ``aux_weight`` x BCE of the auxiliary image label).

    ``y_true`` is ``(B, 3)``: time, event, auxiliary 0/1 label (NaN = unknown).
    """

    def __init__(self, ties: str = "efron", aux_weight: float = 0.0) -> None:
        super().__init__()
        self.ties = ties
        self.aux_weight = float(aux_weight)

    def forward(self, y_pred: Any, y_true: torch.Tensor) -> torch.Tensor:
        aux = None
        if isinstance(y_pred, tuple):
            y_pred, aux = y_pred
        loss = cox_nll(y_pred.float(), y_true[:, 0], y_true[:, 1], ties=self.ties)  # type: ignore[arg-type]
        if aux is not None and self.aux_weight > 0:
            lab = y_true[:, 2]
            known = torch.isfinite(lab)
            if bool(known.any()):
                loss = loss + self.aux_weight * nn.functional.binary_cross_entropy_with_logits(
                    aux.float().reshape(-1)[known], lab[known].float())
        return loss
