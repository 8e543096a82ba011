"""The training objectives of :class:`~fracsurv.generative.DiffXGenerator`'s stages.

Each stage trains a small wrapper module whose forward returns what its loss
needs: the autoencoder's reconstruction and KL term, or a diffusion model's
prediction, its target and a per-sample weight.

* The autoencoder minimises L1 + ``ssim_weight`` x (1 - SSIM) (MONAI's
  :class:`~monai.losses.SSIMLoss`) + ``kl_weight`` x KL: the SSIM term keeps the
  thin cortices and endplates that L1 alone blurs.
* The denoisers predict the noise (``"epsilon"``) or the velocity
  (``"v_prediction"``, Salimans & Ho 2022) and weight each sample by Min-SNR-gamma
  (Hang et al. 2023; SNRs from diffusers' :func:`~diffusers.training_utils.compute_snr`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AELoss", "AEObjective", "DenoiseLoss", "DenoiseObjective", "min_snr_weights"]


class AEObjective(nn.Module):
    """Autoencoder training pass: returns (reconstruction, input, KL)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        post = self.vae.encode(x).latent_dist
        return self.vae.decode(post.sample()).sample, x, post.kl().mean()


class AELoss(nn.Module):
    """L1 + ``ssim_weight`` x (1 - SSIM) + ``kl_weight`` x KL on images in [-1, 1]."""

    def __init__(self, kl_weight: float, ssim_weight: float = 0.0) -> None:
        super().__init__()
        self.kl_weight = kl_weight
        self.ssim_weight = ssim_weight
        self.ssim = None
        if ssim_weight > 0:
            from monai.losses import SSIMLoss

            self.ssim = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=7)

    def forward(self, out: tuple[torch.Tensor, ...], y: Any = None) -> torch.Tensor:
        rec, x, kl = (t.float() for t in out)
        loss = nn.functional.l1_loss(rec, x) + self.kl_weight * kl
        if self.ssim is not None:
            loss = loss + self.ssim_weight * self.ssim(rec, x)
        return loss


def min_snr_weights(scheduler: Any, t: torch.Tensor, gamma: float | None) -> torch.Tensor:
    """Per-sample Min-SNR-gamma loss weights for timesteps ``t`` (1 when ``gamma`` is None).

    The weight is ``min(SNR, gamma) / SNR`` for noise prediction and
    ``min(SNR, gamma) / (SNR + 1)`` for velocity prediction, so that both
    parametrisations weight the implied x0 error alike.
    """
    if gamma is None:
        return torch.ones(len(t), device=t.device)
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, t).float()
    clipped = torch.clamp(snr, max=float(gamma))
    if scheduler.config.prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped / snr.clamp_min(1e-8)


class DenoiseObjective(nn.Module):
    """Denoising pass: random timestep, noised latent -> (prediction, target, weight)."""

    def __init__(self, unet: nn.Module, text: nn.Module, scheduler: Any,
                 prompt_dropout: float, snr_gamma: float | None = None) -> None:
        super().__init__()
        self.unet, self.text = unet, text
        self.scheduler = scheduler
        self.prompt_dropout = prompt_dropout
        self.snr_gamma = snr_gamma

    def forward(self, z0: torch.Tensor, ids: torch.Tensor, values: torch.Tensor,
                lowres: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = z0.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), device=z0.device)
        noise = torch.randn_like(z0)
        zt = self.scheduler.add_noise(z0, noise, t)
        if self.scheduler.config.prediction_type == "v_prediction":
            target = self.scheduler.get_velocity(z0, noise, t)
        else:
            target = noise
        cond = self.text.encode_tokens(ids, values)
        if self.training and self.prompt_dropout > 0:
            drop = torch.rand(n, device=z0.device) < self.prompt_dropout
            cond = torch.where(drop[:, None, None], self.text.null_embedding(n), cond)
        inp = zt if lowres is None else torch.cat([zt, lowres], dim=1)
        weight = min_snr_weights(self.scheduler, t.cpu(), self.snr_gamma).to(z0.device)
        return self.unet(inp, t, encoder_hidden_states=cond).sample, target, weight


class DenoiseLoss(nn.Module):
    """Weighted mean squared error of a :class:`DenoiseObjective`'s output."""

    def forward(self, out: tuple[torch.Tensor, ...], y: Any = None) -> torch.Tensor:
        pred, target, weight = out
        per_sample = ((pred.float() - target.float()) ** 2).flatten(1).mean(dim=1)
        return (per_sample * weight.float()).mean()
