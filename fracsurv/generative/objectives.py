"""The training objectives of :class:`~fracsurv.generative.DiffXGenerator`'s stages.

Each stage trains a small wrapper module whose forward returns what its loss
needs: the autoencoder's reconstruction and KL term, or a diffusion model's
predicted and true noise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["AELoss", "AEObjective", "EpsLoss", "EpsObjective"]


class AEObjective(nn.Module):
    """Autoencoder training pass: returns (reconstruction, input, KL)."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        post = self.vae.encode(x).latent_dist
        return self.vae.decode(post.sample()).sample, x, post.kl().mean()


class AELoss(nn.Module):
    def __init__(self, kl_weight: float) -> None:
        super().__init__()
        self.kl_weight = kl_weight

    def forward(self, out: tuple[torch.Tensor, ...], y: Any = None) -> torch.Tensor:
        rec, x, kl = out
        return nn.functional.l1_loss(rec.float(), x.float()) + self.kl_weight * kl.float()


class EpsObjective(nn.Module):
    """Denoising pass: random timestep, noised latent -> (predicted noise, noise)."""

    def __init__(self, unet: nn.Module, text: nn.Module, scheduler: Any,
                 prompt_dropout: float) -> None:
        super().__init__()
        self.unet, self.text = unet, text
        self.scheduler = scheduler
        self.prompt_dropout = prompt_dropout

    def forward(self, z0: torch.Tensor, ids: torch.Tensor, values: torch.Tensor,
                lowres: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n = z0.shape[0]
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), device=z0.device)
        noise = torch.randn_like(z0)
        zt = self.scheduler.add_noise(z0, noise, t)
        cond = self.text.encode_tokens(ids, values)
        if self.training and self.prompt_dropout > 0:
            drop = torch.rand(n, device=z0.device) < self.prompt_dropout
            cond = torch.where(drop[:, None, None], self.text.null_embedding(n), cond)
        inp = zt if lowres is None else torch.cat([zt, lowres], dim=1)
        return self.unet(inp, t, encoder_hidden_states=cond).sample, noise


class EpsLoss(nn.Module):
    def forward(self, out: tuple[torch.Tensor, torch.Tensor], y: Any = None) -> torch.Tensor:
        return nn.functional.mse_loss(out[0].float(), out[1].float())
