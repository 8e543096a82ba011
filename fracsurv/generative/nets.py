"""The networks of ``DiffXGenerator``, built from diffusers' model classes.

* :func:`make_autoencoder` — a 1-channel :class:`diffusers.AutoencoderKL`,
  optionally on space-to-depth patches (:class:`PatchedAutoencoder`);
* :func:`make_unet` — a :class:`diffusers.UNet2DConditionModel` laid out like
  Stable Diffusion's (cross-attention in every level but the deepest; the first
  decoder block without attention), so "the fifth decoder layer" means the same
  thing as in the Diff-X study whatever the width and depth.
* :func:`make_schedulers` — DDIM and its inverse on one noise schedule
  (scaled-linear or cosine betas; noise or velocity prediction).
* :func:`warm_start_ldm1` — LDM-1 from LDM-2's weights plus a zero-initialised
  low-resolution input channel, so both LDMs share one feature space;
* :class:`DiffXModule` — one container (autoencoder, LDM-1, LDM-2 and their
  prompt encoders) so the shared skorch base saves everything as one
  safetensors file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fracsurv.generative.prompts import PromptEncoder

__all__ = ["DiffXModule", "PatchedAutoencoder", "make_autoencoder", "make_schedulers", "make_unet",
           "warm_start_ldm1"]

#: Stable Diffusion's scaled-linear betas; ``"squaredcos_cap_v2"`` is the cosine schedule.
_BETAS = {"scaled_linear": {"beta_start": 0.00085, "beta_end": 0.012}, "squaredcos_cap_v2": {}}
_DDIM = {"clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def _groups(channels: tuple[int, ...]) -> int:
    g = 0
    for c in channels:
        g = math.gcd(g, int(c))
    return min(32, g)


def _kl_autoencoder(channels: tuple[int, ...], latent_channels: int, image_channels: int) -> Any:
    from diffusers import AutoencoderKL

    n = len(channels)
    return AutoencoderKL(
        in_channels=image_channels, out_channels=image_channels,
        latent_channels=int(latent_channels),
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(int(c) for c in channels), layers_per_block=1,
        norm_num_groups=_groups(channels))


class PatchedAutoencoder(nn.Module):
    """A KL autoencoder that reads and writes ``patch x patch`` pixel blocks as channels.

    The image is rearranged by :func:`torch.nn.functional.pixel_unshuffle` into
    ``patch**2`` channels at ``1/patch`` of its size before the encoder, and the
    decoder's channels are rearranged back (``pixel_shuffle``), as efficient
    super-resolution networks do. The downsampling factor grows by ``patch`` while the
    convolutions run at the smaller size: at 256 x 128, ``patch=2`` with
    ``(32, 64, 64)`` trains about 3 times faster than a plain four-level
    ``(16, 32, 64, 64)`` autoencoder of the same factor (85 vs 245 ms per image on 2
    CPU cores). diffusers has no such option, hence this wrapper; its ``encode`` and
    ``decode`` return diffusers' own output classes.
    """

    def __init__(self, channels: tuple[int, ...], latent_channels: int, patch: int) -> None:
        super().__init__()
        self.patch = int(patch)
        self.inner = _kl_autoencoder(channels, latent_channels, self.patch ** 2)

    def encode(self, x: torch.Tensor) -> Any:
        """diffusers' ``AutoencoderKLOutput`` (``.latent_dist``) of images ``(n, 1, H, W)``."""
        return self.inner.encode(nn.functional.pixel_unshuffle(x, self.patch))

    def decode(self, z: torch.Tensor) -> Any:
        """diffusers' ``DecoderOutput`` (``.sample``: images ``(n, 1, H, W)``)."""
        from diffusers.models.autoencoders.vae import DecoderOutput

        out = self.inner.decode(z).sample
        return DecoderOutput(sample=nn.functional.pixel_shuffle(out, self.patch))


def make_autoencoder(channels: tuple[int, ...], latent_channels: int, patch: int = 1) -> Any:
    """1-channel KL autoencoder; downsampling factor ``patch * 2 ** (len(channels) - 1)``.

    ``patch=1`` is a plain :class:`diffusers.AutoencoderKL`; larger values wrap it in a
    :class:`PatchedAutoencoder`.
    """
    if int(patch) == 1:
        return _kl_autoencoder(channels, latent_channels, 1)
    return PatchedAutoencoder(channels, latent_channels, int(patch))


def make_unet(in_channels: int, out_channels: int, channels: tuple[int, ...],
              layers_per_block: int, cross_attention_dim: int, attention_head_dim: int) -> Any:
    """Text-conditioned UNet in Stable Diffusion's block layout."""
    from diffusers import UNet2DConditionModel

    n = len(channels)
    if n < 2:
        raise ValueError(f"unet_channels needs at least two levels, got {channels!r}")
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        in_channels=int(in_channels), out_channels=int(out_channels),
        block_out_channels=tuple(int(c) for c in channels), layers_per_block=int(layers_per_block),
        down_block_types=down, up_block_types=up, cross_attention_dim=int(cross_attention_dim),
        attention_head_dim=int(attention_head_dim), norm_num_groups=_groups(channels))


def make_schedulers(n_train_timesteps: int, beta_schedule: str = "scaled_linear",
                    prediction_type: str = "epsilon") -> tuple[Any, Any]:
    """``(DDIMScheduler, DDIMInverseScheduler)`` sharing one noise schedule.

    ``beta_schedule`` is ``"scaled_linear"`` (Stable Diffusion's) or
    ``"squaredcos_cap_v2"`` (cosine); ``prediction_type`` is ``"epsilon"`` or
    ``"v_prediction"``.
    """
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    if beta_schedule not in _BETAS:
        raise ValueError(f"beta_schedule must be one of {sorted(_BETAS)}, got {beta_schedule!r}")
    cfg = {"num_train_timesteps": int(n_train_timesteps), "beta_schedule": beta_schedule,
           "prediction_type": prediction_type, **_BETAS[beta_schedule], **_DDIM}
    return DDIMScheduler(**cfg), DDIMInverseScheduler(**cfg)


def warm_start_ldm1(ldm1: nn.Module, ldm2: nn.Module) -> None:
    """Copy LDM-2's weights into LDM-1, whose extra low-resolution input channel starts at 0.

    At the start LDM-1 therefore computes exactly what LDM-2 computes, and its
    fine-tuning on reconstruction keeps the decoder features that Plug-and-Play
    injection hands to LDM-2 in LDM-2's own feature space. (In the Diff-X study both
    LDMs are Stable Diffusion fine-tunes, so their features share an origin; ours are
    trained from scratch and would not, without this.)
    """
    src = ldm2.state_dict()
    dst = ldm1.state_dict()
    for name, value in src.items():
        if dst[name].shape == value.shape:
            dst[name] = value.clone()
        elif name == "conv_in.weight":  # (out, latent + 1, k, k) <- (out, latent, k, k)
            w = torch.zeros_like(dst[name])
            w[:, :value.shape[1]] = value
            dst[name] = w
        else:
            raise ValueError(f"LDM-1 and LDM-2 differ beyond the input channel: {name}")
    ldm1.load_state_dict(dst)


class DiffXModule(nn.Module):
    """Autoencoder + LDM-1 (reconstruction) + LDM-2 (prompt-guided) + prompt encoders.

    LDM-1 reads ``latent_channels + 1`` channels: the noisy latent and a
    low-resolution copy of the baseline at the latent's size, concatenated at
    every step (as diffusers' upscaling pipelines condition on their low-res
    input). ``latent_scale`` (a buffer) makes the latents unit-variance.
    """

    def __init__(self, *, template: str, ae_channels: tuple[int, ...], latent_channels: int,
                 unet_channels: tuple[int, ...], layers_per_block: int, cross_attention_dim: int,
                 attention_head_dim: int, ae_patch: int = 1) -> None:
        super().__init__()
        self.vae = make_autoencoder(ae_channels, latent_channels, ae_patch)
        unet = (unet_channels, layers_per_block, cross_attention_dim, attention_head_dim)
        self.ldm1 = make_unet(latent_channels + 1, latent_channels, *unet)
        self.ldm2 = make_unet(latent_channels, latent_channels, *unet)
        self.text1 = PromptEncoder(template, cross_attention_dim)
        self.text2 = PromptEncoder(template, cross_attention_dim)
        self.register_buffer("latent_scale", torch.ones(()))
        self.factor = int(ae_patch) * 2 ** (len(ae_channels) - 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latent means of images ``x`` in [-1, 1], shape (n, 1, H, W)."""
        return self.vae.encode(x).latent_dist.mean * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from scaled latents."""
        return self.vae.decode(z / self.latent_scale).sample

    def lowres(self, x: torch.Tensor) -> torch.Tensor:
        """Low-resolution copy of ``x`` at the latent's size (area average)."""
        return nn.functional.avg_pool2d(x, self.factor)
