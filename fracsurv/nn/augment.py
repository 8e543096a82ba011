"""Training-time augmentation (MONAI) and the deterministic geometry it needs.

The multimodal study augments full radiographs with salt-and-pepper dropout,
rotation of up to +-15 degrees and vertical flips, and pads every image so that
no rotation cuts anything off (1024 x 512 -> 1121 x 759); vertebra crop stacks
get horizontal/vertical flips, zoom, Gaussian noise and contrast changes.
:func:`rotation_padded_shape` gives the padded size, :func:`make_augmenter`
the seeded MONAI pipelines. Every transform takes and returns a ``(C, H, W)``
tensor; augmentation is applied at training time only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fracsurv._base import derive_seed

__all__ = ["RandSaltPepper", "make_augmenter", "rotation_padded_shape"]


def rotation_padded_shape(shape: tuple[int, int], max_degrees: float = 15.0) -> tuple[int, int]:
    """Smallest (H, W) holding an ``shape`` image rotated by up to ``max_degrees``.

    Parameters
    ----------
    shape : (int, int)
        Image size (H, W).
    max_degrees : float
        Largest rotation, either way.

    Returns
    -------
    (int, int)
        ``(H cos + W sin, W cos + H sin)`` rounded up (1024 x 512 at 15 degrees
        gives 1122 x 760, the study's 1121 x 759 up to rounding).
    """
    h, w = (int(s) for s in shape)
    a = math.radians(abs(float(max_degrees)))
    c, s = math.cos(a), math.sin(a)
    return math.ceil(h * c + w * s - 1e-9), math.ceil(w * c + h * s - 1e-9)


def _monai_randomizable() -> type:
    from monai.transforms import RandomizableTransform

    return RandomizableTransform


class RandSaltPepper(_monai_randomizable()):  # type: ignore[misc]
    """Salt-and-pepper dropout: a random fraction of pixels set to the image min or max.

    Parameters
    ----------
    prob : float
        Probability of applying the transform to an image.
    amount : float
        Fraction of pixels replaced (half salt, half pepper).
    """

    def __init__(self, prob: float = 0.5, amount: float = 0.01) -> None:
        super().__init__(prob)
        self.amount = float(amount)
        self._mask: np.ndarray | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform and data is not None:
            self._mask = self.R.random_sample(tuple(data.shape))

    def __call__(self, img: Any, randomize: bool = True) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img,
                            dtype=torch.float32)
        if randomize:
            self.randomize(x)
        if not self._do_transform or self._mask is None:
            return x
        mask = torch.from_numpy(self._mask)
        out = x.clone()
        out[mask < self.amount / 2] = float(x.min())
        out[(mask >= self.amount / 2) & (mask < self.amount)] = float(x.max())
        return out


def make_augmenter(kind: str, random_state: Any = None, *, max_degrees: float = 15.0,
                   shape: tuple[int, int] | None = None) -> Any:
    """The MONAI augmentation for ``kind`` ``"image"``, ``"crops"`` or ``"affine"``.

    Parameters
    ----------
    kind : {"image", "crops", "affine"}
        ``"image"`` (the Diff-X study's): salt-and-pepper dropout, rotation within
        +-``max_degrees`` (zeros fill the corners; pad the image with
        :func:`rotation_padded_shape` first so nothing is cut), vertical flip.
        ``"crops"`` (the multimodal study's): vertical and horizontal flips, zoom
        0.9-1.1, Gaussian noise, contrast (gamma). ``"affine"`` (the pVF scorer's):
        a small random affine (rotation +-0.12 rad, scale +-8 %, shift +-3 % of
        ``shape``), contrast (gamma) and Gaussian noise.
    random_state : int, RandomState or None
        Seed of the pipeline (reproducible augmentation).
    max_degrees : float
        Rotation range for full images.
    shape : (int, int), optional
        Input (H, W); needed by ``"affine"`` (its shift range is in pixels).

    Returns
    -------
    monai.transforms.Compose
        Callable on a ``(C, H, W)`` tensor.
    """
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandAffine,
        RandFlip,
        RandGaussianNoise,
        RandRotate,
        RandZoom,
    )

    if kind == "image":
        rad = math.radians(float(max_degrees))
        aug = Compose([
            RandSaltPepper(prob=0.5, amount=0.01),
            RandRotate(range_x=rad, prob=0.7, keep_size=True, padding_mode="zeros"),
            RandFlip(prob=0.5, spatial_axis=0),
        ])
    elif kind == "crops":
        aug = Compose([
            RandFlip(prob=0.5, spatial_axis=0),
            RandFlip(prob=0.5, spatial_axis=1),
            RandZoom(prob=0.5, min_zoom=0.9, max_zoom=1.1, keep_size=True, padding_mode="constant"),
            RandGaussianNoise(prob=0.3, std=0.02),
            RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
        ])
    elif kind == "affine":
        if shape is None:
            raise ValueError("make_augmenter('affine') needs the input shape")
        h, w = (int(v) for v in shape)
        aug = Compose([
            RandAffine(prob=0.7, rotate_range=0.12, scale_range=0.08,
                       translate_range=(0.03 * h, 0.03 * w), padding_mode="zeros"),
            RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
            RandGaussianNoise(prob=0.3, std=0.02),
        ])
    else:
        raise ValueError(f"kind must be 'image', 'crops' or 'affine', got {kind!r}")
    if random_state is not None:
        seed = random_state if isinstance(random_state, int) else derive_seed(random_state)
        aug.set_random_state(seed=seed)
    return aug
