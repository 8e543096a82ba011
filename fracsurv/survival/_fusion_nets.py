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
from fracsurv.nn.pooling import crops_present, pool_crops
from fracsurv.survival.loss import cox_nll

__all__ = ["AUX_RISKS", "FUSIONS", "STAGES", "FusionCoxLoss", "FusionNet"]

FUSIONS = ("intermediate", "late", "alpha", "image_only")
AUX_RISKS = ("add", "only", "none")
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
        self.hidden = tuple(hidden)
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
    features are pooled over the non-empty crops (``pool``, see
    :func:`fracsurv.nn.pooling.pool_crops`): ``"max"``, a fracture in any
    vertebra wherever the stack places it; ``"sum"``, a risk that adds up over
    vertebrae as the spinal deformity index does (the linear risk head commutes
    with the sum, so the image risk is a sum of per-vertebra risks).
    """

    def __init__(self, backbone: str, in_channels: int, shape: tuple[int, int],
                 shared: bool = False, pool: str = "max") -> None:
        super().__init__()
        self.shared = shared
        self.pool = pool
        self.backbone, self.n_features = make_backbone(backbone, 1 if shared else in_channels,
                                                       shape)
        self.head = nn.Linear(self.n_features, 1, bias=False)

    def encode(self, x: torch.Tensor
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Pooled features, and (per-crop features, presence mask) for shared encoders."""
        if not self.shared:
            return self.backbone(x), None
        b, c, h, w = x.shape
        per_crop = self.backbone(x.reshape(b * c, 1, h, w)).reshape(b, c, -1)
        present = crops_present(x)
        return pool_crops(per_crop, present, self.pool), (per_crop, present)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, risk)."""
        feats = self.encode(x)[0]
        return feats, self.head(feats)


class _AuxHead(nn.Module):
    """Auxiliary image head: K ordinal logits, and what the image risk reads of them.

    ``logits`` scores ``label >= k`` for ``k = 1 .. K`` (per crop, or per row);
    ``risk`` is a linear Cox term on their summary: the expected number of
    vertebrae at or above each grade (per-crop labels: with Genant grades, the
    expected fracture count and, summed over k, the expected spinal deformity
    index) or the per-row probabilities. The Cox loss then only has to weigh a
    few strong, interpretable image signals instead of finding them among the
    backbone's features.
    """

    def __init__(self, n_features: int, levels: int, per_crop: bool) -> None:
        super().__init__()
        self.per_crop = per_crop
        self.logits = nn.Linear(n_features, levels)
        self.risk = nn.Linear(levels, 1, bias=False)
        with torch.no_grad():
            self.risk.weight.zero_()  # starts adding nothing to the image risk

    def forward(self, feats: torch.Tensor,
                per_crop: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits of shape (B, L, K), summary of shape (B, K))."""
        if per_crop is None:
            logits = self.logits(feats)[:, None, :]
        else:
            crop_logits, present = self.logits(per_crop[0]), per_crop[1]  # (B, N, K)
            if self.per_crop:
                return crop_logits, pool_crops(torch.sigmoid(crop_logits), present, "sum")
            logits = pool_crops(crop_logits, present, "max", empty=-30.0)[:, None, :]
        return logits, torch.sigmoid(logits[:, 0])


class FusionNet(nn.Module):
    """Image + clinical Cox network with the study's fusion heads.

    Parameters
    ----------
    fusion : {"intermediate", "late", "alpha", "image_only"}
        * intermediate -- concat(image features, 128 clinical features) -> FC 128
          -> BatchNorm -> ReLU -> FC 1 (plus the clinical linear term when
          ``linear_skip``);
        * late -- FC(2 -> 1) on the two sub-models' risk scores;
        * alpha -- ``w * r_clinical + (1 - w) * r_image``, w the ``clinical_weight``;
        * image_only -- the image sub-model's risk.
    backbone, in_channels, shape : image branch (see :func:`make_backbone`).
    n_tab : int
        Clinical inputs (0 for ``image_only``).
    clinical_hidden_units : tuple of int
        Clinical trunk widths, the study's ``(64, 128)``.
    dropout : float
    clinical_weight : float
        Weight w of the clinical risk for ``fusion="alpha"`` (the buffer
        ``alpha``, under which saved weights hold it).
    linear_skip : bool
    aux_levels : int
        Logits of the auxiliary image head (0 = none): one per ordinal threshold
        ``label >= k``, ``k = 1 .. aux_levels`` (1 for a 0/1 label, 3 for Genant
        grades).
    aux_per_crop : bool
        The auxiliary label is given per crop (shared encoders): the head scores
        every crop. Otherwise one label per row: with a shared encoder its logits
        are the maximum over the present crops (any vertebra), else the head
        reads the image features.
    shared_crops : bool
        One single-channel encoder shared by the crops (see :class:`_ImageBranch`).
    crop_pool : {"max", "sum", "mean"}
        Pooling of a shared encoder's per-crop features.
    aux_risk : {"add", "only", "none"}
        What the image risk is with an auxiliary head: the backbone head's risk
        plus the Cox term on the auxiliary summary (``"add"``), that term alone
        (``"only"``: a few interpretable signals, nothing else of the backbone),
        or the backbone head's risk alone (``"none"``: the auxiliary label only
        shapes the features).
    """

    def __init__(self, fusion: str, backbone: str, in_channels: int, shape: tuple[int, int],
                 n_tab: int, clinical_hidden_units: tuple[int, ...] = (64, 128),
                 dropout: float = 0.1,
                 clinical_weight: float = 0.8, linear_skip: bool = True, aux_levels: int = 0,
                 aux_per_crop: bool = False, shared_crops: bool = False,
                 crop_pool: str = "max", aux_risk: str = "only") -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if aux_risk not in AUX_RISKS:
            raise ValueError(f"aux_risk must be one of {AUX_RISKS}, got {aux_risk!r}")
        self.fusion = fusion
        self.aux_risk = aux_risk
        self.stage = "fusion"
        self.frozen: tuple[str, ...] = ()
        if aux_per_crop and not shared_crops:
            raise ValueError("a per-crop auxiliary label needs the shared crop encoder")
        self.image = _ImageBranch(backbone, in_channels, shape, shared_crops, crop_pool)
        self.tabular = (_TabularBranch(n_tab, tuple(clinical_hidden_units), dropout, linear_skip)
                        if fusion != "image_only" else None)
        # the buffer keeps its name: it is the key "alpha" of saved weights
        self.register_buffer("alpha", torch.tensor(float(clinical_weight)))
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
        self.aux_head = (_AuxHead(self.image.n_features, int(aux_levels), bool(aux_per_crop))
                         if aux_levels else None)

    # -- closed-form parts, fitted by the estimator --------------------------------
    def clinical_linear(self) -> nn.Linear | None:
        """The clinical branch's linear term: the skip term, or the branch's risk head
        when it has no hidden layers (None without either)."""
        branch = self.tabular
        if branch is None:
            return None
        if branch.skip is not None:
            return branch.skip
        return None if branch.hidden else branch.head

    def set_clinical_linear(self, weight: torch.Tensor) -> None:
        """Start the clinical risk as the linear Cox model ``x @ weight``.

        The linear term takes ``weight``; the MLP's risk head (when it is another
        layer) is zeroed, so an MLP only learns what the linear model misses.
        """
        linear = self.clinical_linear()
        if linear is None or self.tabular is None:
            raise ValueError("this network has no clinical linear term")
        with torch.no_grad():
            linear.weight.copy_(weight.reshape(1, -1).to(linear.weight))
            if linear is not self.tabular.head:
                self.tabular.head.weight.zero_()

    def set_late_weights(self, weights: torch.Tensor) -> None:
        """The late-fusion FC's weights ``[clinical, image]``."""
        if self.fusion != "late" or not isinstance(self.fuse, nn.Linear):
            raise ValueError(f"late weights exist for late fusion, not {self.fusion!r}")
        with torch.no_grad():
            self.fuse.weight.copy_(weights.reshape(1, 2).to(self.fuse.weight))

    def late_weights(self) -> torch.Tensor:
        """The late-fusion FC's weights ``[clinical, image]`` (float64, on the CPU)."""
        if self.fusion != "late" or not isinstance(self.fuse, nn.Linear):
            raise ValueError(f"late weights exist for late fusion, not {self.fusion!r}")
        return self.fuse.weight.detach().cpu().double().reshape(-1)

    def set_clinical_weight(self, weight: float) -> None:
        """The alpha-model's clinical weight."""
        self.alpha.fill_(float(weight))

    # -- freezing --------------------------------------------------------------
    def freeze(self, parts: tuple[str, ...]) -> None:
        """Freeze the named sub-modules (``"image"``, ``"tabular"``); unfreeze the rest.

        Frozen parts also stay in eval mode during training (BatchNorm statistics
        and dropout of a pre-trained sub-model must not change). The auxiliary
        head belongs to the image sub-model: freezing ``"image"`` freezes it too.
        """
        if "image" in parts and "aux_head" not in parts:
            parts = (*parts, "aux_head")
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
        """Risk of shape (B, 1); in training with an aux head, (risk, aux logits).

        The aux logits are ``(B, L, K)``: L = 1 label per row or one per crop,
        K ordinal thresholds.
        """
        risk, aux_logits = self._risk(image, tabular)
        if self.training and aux_logits is not None:
            return risk, aux_logits
        return risk

    def image_risk(self, image: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(image features, image risk, its auxiliary-head term, aux logits or None).

        The image risk is the backbone head's and/or the auxiliary head's Cox
        term, as ``aux_risk`` says (the backbone head's alone without an
        auxiliary head).
        """
        feats, per_crop = self.image.encode(image)
        r_head = self.image.head(feats)
        if self.aux_head is None:
            return feats, r_head, torch.zeros_like(r_head), None
        logits, summary = self.aux_head(feats, per_crop)
        r_aux = (torch.zeros_like(r_head) if self.aux_risk == "none"
                 else self.aux_head.risk(summary.to(r_head.dtype)))
        return feats, (r_aux if self.aux_risk == "only" else r_head + r_aux), r_aux, logits

    def _risk(self, image: torch.Tensor, tabular: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(risk, aux logits or None) of the current stage."""
        if self.stage == "tabular":
            assert self.tabular is not None
            return self.tabular(tabular)[1], None
        img_feats, r_img, r_aux, aux = self.image_risk(image)
        if self.stage == "image" or self.fusion == "image_only":
            return r_img, aux
        assert self.tabular is not None
        tab_feats, r_tab = self.tabular(tabular)
        if self.fusion == "intermediate":
            assert self.fuse is not None
            fused = torch.cat([img_feats, tab_feats.to(img_feats.dtype)], dim=1)
            out = self.fuse(fused) + self.tabular.linear(tabular)
            return out + r_aux.to(out.dtype), aux
        if self.fusion == "late":
            assert self.fuse is not None
            return self.fuse(torch.cat([r_tab, r_img.to(r_tab.dtype)], dim=1)), aux
        return self.alpha * r_tab + (1 - self.alpha) * r_img, aux

    def risks(self, image: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        """(B, 2) sub-model risks ``[r_clinical, r_image]`` (late and alpha fusion)."""
        assert self.tabular is not None
        r_img = self.image_risk(image)[1]
        r_tab = self.tabular(tabular)[1]
        return torch.cat([r_tab.float(), r_img.float()], dim=1)


class FusionCoxLoss(nn.Module):
    """Cox partial likelihood (+ ``aux_weight`` x BCE of the auxiliary image label).

    ``y_true`` is ``(B, 2 + L)``: time, event, then L auxiliary labels (one per
    row, or one per crop; NaN = unknown). An ordinal label ``g`` in ``0..K`` is
    scored by K binary cross-entropies on ``g >= k`` (a cumulative-link model;
    ``K = 1`` is plain BCE), summed over a row's labels and thresholds and
    averaged over the rows that have any: a row weighs the same whether it
    carries one label or one per vertebra (averaged over crops, the few
    fractured vertebrae among mostly normal ones would barely count).
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
            lab = y_true[:, 2:].float()  # (B, L)
            known = torch.isfinite(lab)
            if bool(known.any()):
                k = torch.arange(1, aux.shape[-1] + 1, device=lab.device, dtype=lab.dtype)
                target = (lab[known][:, None] >= k).float()  # (n_known, K)
                bce = nn.functional.binary_cross_entropy_with_logits(
                    aux.float()[known], target, reduction="sum")
                loss = loss + self.aux_weight * bce / known.any(dim=1).sum()
        return loss
