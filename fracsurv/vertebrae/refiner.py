"""Stage 2 of the cropper: each found vertebra's six points, refined at native resolution.

The stage-1 detector (:mod:`fracsurv.vertebrae.detector`) reads a downsampled
radiograph and places the points to within a few native pixels. Stage 2 reads
each vertebra again from the *full-resolution* image, in a canonical patch
(:class:`PatchFrame`): centred on the body, rotated so that the endplates run
horizontally, mirrored so that the posterior side is on the left, and scaled so
that the larger of the body's height and depth spans ``1 / extent`` of the patch.
A canonical patch makes every vertebra look alike to the network (one
orientation, one size), so a small network suffices.

:class:`RefinerNet` is a MONAI U-Net giving one heatmap per point; a spatial
softmax and its expectation give sub-pixel coordinates (integral regression,
Sun et al. 2018), regularised towards a Gaussian as in DSNT (Nibali et al.
2018). A per-point head, fed the features pooled under each point's heatmap,
predicts the expected Euclidean error ``b`` (patch pixels), trained by the
exponential negative log-likelihood ``e / b + log b`` of the detached error ``e``
(whose minimiser is ``b = E[e]``), so ``b`` is a calibrated uncertainty and does
not slow the point loss. The network's forward returns one packed tensor
(coordinates, log b, heatmaps) so skorch's plain ``module(X)`` serves training
and inference alike.

The training data (:class:`RefinerPatches`) jitter the true geometry by more
than stage 1 errs (centre, angle, scale), mirror the frame half the time (stage
1 gets a whole image's facing wrong now and then; the refiner reads the facing
from the patch and returns anatomically ordered points either way), and vary
contrast, gamma, noise and blur as real radiographs do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset

from fracsurv.vertebrae.genant import grade_vertebrae

__all__ = [
    "PatchFrame",
    "RefinerLoss",
    "RefinerNet",
    "RefinerPatches",
    "frame_of",
    "refiner_samples",
    "sample_patch",
]

EXTENT = 1.7  # patch side / max(height, depth): room for stage-1 errors around the body
N_POINTS = 6
ANATOMICAL_MIRROR = np.array([2, 1, 0, 5, 4, 3])  # posterior <-> anterior, per endplate


@dataclass(frozen=True)
class PatchFrame:
    """A canonical patch's place in the native image.

    ``native = centre + scale * ((u - c) * ex + (v - c) * ey)`` for patch pixel
    ``(u, v)``, ``c = (size - 1) / 2``; ``ex`` points posterior -> anterior and
    ``ey`` superior -> inferior (so a mirrored view is un-mirrored).
    """

    centre: np.ndarray
    ex: np.ndarray
    ey: np.ndarray
    scale: float
    size: int

    def to_patch(self, xy: np.ndarray) -> np.ndarray:
        """Native ``(..., 2)`` coordinates to patch coordinates."""
        d = np.asarray(xy, float) - self.centre
        c = (self.size - 1) / 2
        return np.stack([d @ self.ex, d @ self.ey], axis=-1) / self.scale + c

    def to_native(self, uv: np.ndarray) -> np.ndarray:
        """Patch ``(..., 2)`` coordinates to native coordinates."""
        q = (np.asarray(uv, float) - (self.size - 1) / 2) * self.scale
        return self.centre + q[..., :1] * self.ex + q[..., 1:] * self.ey


def frame_of(points: np.ndarray, size: int, extent: float = EXTENT, *, shift: Any = (0.0, 0.0),
             rotate: float = 0.0, zoom: float = 1.0) -> PatchFrame:
    """The canonical frame of one vertebra's anatomically ordered ``(6, 2)`` points.

    ``shift`` (a fraction of the patch side, in the patch's axes), ``rotate``
    (radians) and ``zoom`` perturb the frame, for training.
    """
    p = np.asarray(points, float)
    post, ant = p[[0, 3]].mean(0), p[[2, 5]].mean(0)
    sup, inf = p[:3].mean(0), p[3:].mean(0)
    ex = ant - post
    ex = ex / max(float(np.linalg.norm(ex)), 1e-6)
    ey = np.array([-ex[1], ex[0]])
    if float((inf - sup) @ ey) < 0:  # a mirrored view: flip the vertical axis
        ey = -ey
    if rotate:
        c, s = np.cos(rotate), np.sin(rotate)
        ex, ey = c * ex + s * ey, -s * ex + c * ey
    height = float(np.linalg.norm(p[:3] - p[3:], axis=1).mean())
    depth = float(np.linalg.norm(p[[2, 5]] - p[[0, 3]], axis=1).mean())
    scale = extent * max(height, depth, 4.0) / size * zoom
    sx, sy = np.asarray(shift, float) * size * scale
    return PatchFrame(p.mean(0) + sx * ex + sy * ey, ex, ey, scale, int(size))


def sample_patch(image: np.ndarray, frame: PatchFrame) -> np.ndarray:
    """Resample ``image`` into ``frame`` (bilinear), robustly scaled to about 0..1.

    When the patch is coarser than the image, a 2 x 2 supersampling averages the
    pixels that fall into each patch pixel (anti-aliasing).
    """
    n = frame.size
    k = 2 if frame.scale > 1.2 else 1
    g = (np.arange(n * k) + 0.5) / k - 0.5
    uu, vv = np.meshgrid(g, g)
    xy = frame.to_native(np.stack([uu, vv], axis=-1))
    vals = ndimage.map_coordinates(np.asarray(image, np.float32), [xy[..., 1], xy[..., 0]],
                                   order=1, mode="nearest")
    if k > 1:
        vals = vals.reshape(n, k, n, k).mean(axis=(1, 3))
    lo, hi = np.percentile(vals, [1.0, 99.0])
    return ((vals - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


# -- network -----------------------------------------------------------------
class RefinerNet(nn.Module):
    """Heatmap U-Net + integral regression + a per-point error head.

    ``forward(x)`` with ``x`` of shape ``(B, 1, S, S)`` returns ``(B, 6, 3 + S*S)``:
    ``[..., :2]`` the points in patch pixels, ``[..., 2]`` log of the expected
    error ``b``, ``[..., 3:]`` the softmax heatmaps (for the regulariser).
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), num_res_units: int = 0) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        self.unet = UNet(spatial_dims=2, in_channels=1, out_channels=channels[0],
                         channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                         num_res_units=num_res_units, act="PRELU", norm="BATCH")
        self.act = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.PReLU())
        self.heat = nn.Conv2d(channels[0], N_POINTS, kernel_size=1)
        self.error = nn.Sequential(nn.Linear(channels[0] + 1, 32), nn.PReLU(), nn.Linear(32, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.act(self.unet(x))
        h, w = feats.shape[-2:]
        probs = torch.softmax(self.heat(feats).float().flatten(2), dim=-1)  # (B, 6, HW)
        ys, xs = torch.meshgrid(torch.arange(h, dtype=probs.dtype, device=x.device),
                                torch.arange(w, dtype=probs.dtype, device=x.device), indexing="ij")
        grid = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (HW, 2)
        xy = probs @ grid  # (B, 6, 2)
        spread = ((probs * ((grid[None, None] - xy[:, :, None]) ** 2).sum(-1)).sum(-1) + 1e-6).sqrt()
        pooled = torch.einsum("bjn,bcn->bjc", probs, feats.float().flatten(2))
        log_b = self.error(torch.cat([pooled, spread.log()[..., None]], dim=-1))
        return torch.cat([xy, log_b, probs], dim=-1)


class RefinerLoss(nn.Module):
    """Mean point distance + DSNT's Jensen-Shannon regulariser + the error head's NLL.

    Parameters
    ----------
    sigma : float
        Width (patch pixels) of the Gaussian the heatmaps are pulled towards.
    heatmap_weight, error_weight : float
        Weights of the regulariser and of the error head's likelihood.
    """

    def __init__(self, sigma: float = 1.5, heatmap_weight: float = 1.0, error_weight: float = 0.2) -> None:
        super().__init__()
        self.sigma, self.heatmap_weight, self.error_weight = sigma, heatmap_weight, error_weight

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out, target = out.float(), target.float()
        xy, log_b, probs = out[..., :2], out[..., 2], out[..., 3:]
        err = torch.linalg.norm(xy - target, dim=-1)
        loss = err.mean()
        side = round(probs.shape[-1] ** 0.5)
        ax = torch.arange(side, dtype=probs.dtype, device=probs.device)
        gx = torch.exp(-((ax[None, None] - target[..., :1]) ** 2) / (2 * self.sigma**2))
        gy = torch.exp(-((ax[None, None] - target[..., 1:]) ** 2) / (2 * self.sigma**2))
        g = (gy[..., :, None] * gx[..., None, :]).flatten(2)
        g = g / g.sum(-1, keepdim=True).clamp(min=1e-12)
        m = 0.5 * (g + probs)
        kl = lambda p: (p * ((p + 1e-12).log() - (m + 1e-12).log())).sum(-1)  # noqa: E731
        loss = loss + self.heatmap_weight * (0.5 * (kl(probs) + kl(g))).mean()
        nll = err.detach() * torch.exp(-log_b) + log_b
        return loss + self.error_weight * nll.mean()


# -- training data -----------------------------------------------------------
class RefinerPatches(Dataset):
    """One sample per annotated vertebra: a jittered canonical patch and its points.

    Parameters
    ----------
    images : list of 2-D arrays
        The native-resolution training images.
    vertebrae : list of (image index, points (6, 2))
        Every annotated vertebra.
    size : int
        Patch side.
    augment : bool
        Random geometry (centre +-8 % of the patch, +-10 degrees, scale x 0.85..1.18,
        a mirrored frame half the time) and appearance (gamma, contrast, noise,
        blur); without it the frame is the true one (validation).
    seed : int or None
    """

    def __init__(self, images: list[np.ndarray], vertebrae: list[tuple[int, np.ndarray]], size: int,
                 augment: bool, seed: int | None) -> None:
        self.images, self.vertebrae, self.size, self.augment = images, vertebrae, size, augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.vertebrae)

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, pts = self.vertebrae[idx]
        rng = self.rng
        if self.augment:
            # half the time, the frame of a vertebra whose stage-1 facing is wrong (posterior
            # and anterior swapped: a mirrored patch); the targets stay anatomical, so the
            # network learns to read the facing from the patch, not from stage 1
            flip = rng.random() < 0.5
            frame = frame_of(pts[ANATOMICAL_MIRROR] if flip else pts, self.size,
                             shift=rng.uniform(-0.08, 0.08, 2),
                             rotate=float(np.deg2rad(rng.uniform(-10, 10))),
                             zoom=float(np.exp(rng.uniform(-0.16, 0.16))))
        else:
            frame = frame_of(pts, self.size)
        patch = sample_patch(self.images[i], frame)
        if self.augment:
            patch = self._appearance(patch)
        target = frame.to_patch(pts).astype(np.float32)
        return torch.from_numpy(patch[None]), torch.from_numpy(target)

    def _appearance(self, patch: np.ndarray) -> np.ndarray:
        rng = self.rng
        if rng.random() < 0.3:
            patch = ndimage.gaussian_filter(patch, float(rng.uniform(0.3, 1.0)))
        patch = np.clip(patch, 0, 1.5) ** float(rng.uniform(0.7, 1.4))
        patch = patch * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
        noise = float(rng.uniform(0, 0.05)) * rng.standard_normal(patch.shape)
        return (patch + noise).astype(np.float32)


def refiner_samples(annotations: list[tuple[np.ndarray, np.ndarray]], oversample: int,
                    use_neighbours: bool = True) -> list[tuple[int, np.ndarray]]:
    """Every annotated vertebra as ``(image index, points)``; the deformed ones
    (Genant grade >= 1) ``oversample`` times.

    Deformed vertebrae are a few per cent of all; without oversampling the
    refiner learns the normal shape as a prior and pulls fractured endplates
    towards it, under-grading exactly the vertebrae that matter.
    """
    out: list[tuple[int, np.ndarray]] = []
    for i, (pts, _) in enumerate(annotations):
        if not len(pts):
            continue
        order = np.argsort(pts.mean(1)[:, 1], kind="stable")
        grades = np.empty(len(pts), int)
        grades[order] = grade_vertebrae(pts[order], use_neighbours=use_neighbours)[0]
        for p, g in zip(pts, grades):
            out.extend([(i, p)] * (int(oversample) if g >= 1 else 1))
    return out
