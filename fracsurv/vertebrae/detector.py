"""The vertebra keypoint network: a CenterNet-style detector on a MONAI U-Net.

One forward pass maps a radiograph ``(B, 1, H, W)`` to dense maps on a grid of
stride 2, ``(B, C, H/2, W/2)``:

====================  ========  ==========================================================
channels              count     meaning
====================  ========  ==========================================================
``CENTER``            1         heatmap logit of vertebral-body centres (mean of 6 points)
``POINTS``            6         heatmap logits of the six morphometry points, one per type
``OFFSETS``           12        from a centre pixel to its six points (``/ offset_scale``)
``LOCAL``             12        sub-pixel offset of each point type, read at its peak pixel
``FACING``            1         logit that the posterior side is on the image's right
``LEVELS``            18        level logits ``C7 ... L5``, read at a centre
====================  ========  ==========================================================

Points are learned in *image* order (superior left / middle / right, then
inferior left / middle / right), which local appearance decides without
ambiguity; which side is posterior is a per-image question (a mirrored lateral
view is just as valid), answered by a vote of the ``FACING`` logits at the
detected centres. Regressing anatomical order directly would average the two
orientations wherever the context is unclear.

Decoding (:func:`decode_maps`): centre peaks above a threshold (3 x 3 max-pool
NMS) are vertebrae; the regressed offsets place their six points coarsely; each
point then snaps to the peak of its own heatmap within a small radius, plus that
peak's sub-pixel offset (CenterNet's keypoint refinement). :func:`assign_levels`
labels a top-to-bottom column with *consecutive* levels, choosing the shift that
maximises the summed level log-probabilities (gaps that show a missed vertebra
skip a level).

Coordinates: pixel centres sit at integers; a native coordinate ``x`` maps to
the output grid as ``(x + 0.5) * s - 0.5`` with ``s = W_out / W_native``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LEVELS",
    "KeypointLoss",
    "VertebraNet",
    "assign_levels",
    "decode_maps",
    "from_grid",
    "placement_confidence",
    "posterior_right",
    "render_targets",
    "suppress_duplicates",
    "to_grid",
]

LEVELS: tuple[str, ...] = ("C7", *(f"T{i}" for i in range(1, 13)), *(f"L{i}" for i in range(1, 6)))
LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}

N_LEVELS = len(LEVELS)
CENTER, POINTS, OFFSETS, LOCAL, FACING, LEVEL0 = 0, 1, 7, 19, 31, 32
N_OUT = LEVEL0 + N_LEVELS
# packed target channels (see render_targets)
T_CENTER, T_POINTS, T_OFF, T_OFF_MASK, T_LOCAL, T_LOCAL_MASK, T_LEVEL, T_FACING = (
    0, 1, 7, 19, 20, 32, 38, 39)
N_TARGET = 40
# anatomical order <-> image order when the posterior side is on the right (an involution)
MIRROR = np.array([2, 1, 0, 5, 4, 3])
STRIDE = 2


class VertebraNet(nn.Module):
    """Stride-2 stem + MONAI :class:`~monai.networks.nets.UNet` giving the dense maps.

    Parameters
    ----------
    channels : tuple of int
        U-Net widths (each level halves the resolution); 5 levels give the level
        head a receptive field spanning most of the spine.
    num_res_units : int
        Residual units per U-Net block (0 = plain convolutions, fastest on CPU).
    stem_channels : int
        Width of the stride-2 stem that brings the input to the output grid.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128, 128), num_res_units: int = 1,
                 stem_channels: int = 16) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution
        from monai.networks.nets import UNet

        self.stem = Convolution(2, 1, stem_channels, strides=STRIDE, kernel_size=3,
                                act="PRELU", norm="BATCH")
        self.unet = UNet(spatial_dims=2, in_channels=stem_channels, out_channels=channels[0],
                         channels=tuple(channels), strides=(2,) * (len(channels) - 1),
                         num_res_units=num_res_units, act="PRELU", norm="BATCH")
        self.head = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.PReLU(),
                                  nn.Conv2d(channels[0], N_OUT, kernel_size=1))
        with torch.no_grad():  # CenterNet's prior: heatmaps start near 0.01
            self.head[-1].bias.zero_()
            self.head[-1].bias[CENTER:OFFSETS] = -4.6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.unet(self.stem(x)))


# -- coordinates -------------------------------------------------------------
def to_grid(xy: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Native ``(..., 2)`` pixel coordinates to the output grid (``scale = (sx, sy)``)."""
    return (np.asarray(xy, float) + 0.5) * np.asarray(scale, float) - 0.5


def from_grid(xy: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`to_grid`."""
    return (np.asarray(xy, float) + 0.5) / np.asarray(scale, float) - 0.5


# -- targets -----------------------------------------------------------------
def _splat(hm: np.ndarray, cx: float, cy: float, sigma: float) -> None:
    """Max-paste a Gaussian peaking (value 1) at the pixel nearest ``(cx, cy)``."""
    h, w = hm.shape
    ix, iy = int(np.rint(cx)), int(np.rint(cy))
    r = int(np.ceil(3 * sigma))
    x0, x1, y0, y1 = max(ix - r, 0), min(ix + r + 1, w), max(iy - r, 0), min(iy + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    gx = np.exp(-((np.arange(x0, x1) - ix) ** 2) / (2 * sigma**2))
    gy = np.exp(-((np.arange(y0, y1) - iy) ** 2) / (2 * sigma**2))
    np.maximum(hm[y0:y1, x0:x1], np.outer(gy, gx), out=hm[y0:y1, x0:x1])


def _window(cx: float, cy: float, shape: tuple[int, int]) -> tuple[slice, slice, np.ndarray, np.ndarray]:
    """3 x 3 window around the nearest pixel, clipped: slices and pixel coordinates."""
    h, w = shape
    ix, iy = int(np.rint(cx)), int(np.rint(cy))
    y0, y1, x0, x1 = max(iy - 1, 0), min(iy + 2, h), max(ix - 1, 0), min(ix + 2, w)
    return slice(y0, y1), slice(x0, x1), np.arange(x0, x1)[None, :], np.arange(y0, y1)[:, None]


def render_targets(points: np.ndarray, levels: np.ndarray, shape: tuple[int, int],
                   sigma: float = 1.0, offset_scale: float = 4.0) -> np.ndarray:
    """Packed training targets on the output grid, ``(N_TARGET, h, w)`` float32.

    Parameters
    ----------
    points : array of shape (n, 6, 2)
        Keypoints in output-grid coordinates.
    levels : array of int, shape (n,)
        Level indices into :data:`LEVELS`; -1 = unknown (no level loss).
    shape : (h, w)
        Output grid size.
    sigma : float
        Gaussian width of the point heatmaps (grid pixels); centres use
        ``max(sigma, 0.15 x vertebra height)``.
    offset_scale : float
        Centre-to-point offsets are divided by it (keeps targets near unit size).
    """
    h, w = shape
    t = np.zeros((N_TARGET, h, w), np.float32)
    t[T_LEVEL] = -1
    t[T_FACING] = -1
    inside = lambda x, y: 0 <= round(x) < w and 0 <= round(y) < h  # noqa: E731
    for pts, lv in zip(np.asarray(points, float).reshape(-1, 6, 2), np.asarray(levels).reshape(-1)):
        right = posterior_right(pts)
        pts = pts[MIRROR] if right else pts
        c = pts.mean(axis=0)
        if not inside(*c):
            continue
        height = float(np.linalg.norm(pts[:3] - pts[3:], axis=-1).mean())
        _splat(t[T_CENTER], c[0], c[1], max(sigma, 0.15 * height))
        ys, xs, xx, yy = _window(c[0], c[1], shape)
        for j in range(6):
            t[T_OFF + 2 * j, ys, xs] = (pts[j, 0] - xx) / offset_scale
            t[T_OFF + 2 * j + 1, ys, xs] = (pts[j, 1] - yy) / offset_scale
        t[T_OFF_MASK, ys, xs] = 1.0
        t[T_LEVEL, ys, xs] = lv
        t[T_FACING, ys, xs] = float(right)
        for j in range(6):
            px, py = pts[j]
            if not inside(px, py):
                continue
            _splat(t[T_POINTS + j], px, py, sigma)
            ys, xs, xx, yy = _window(px, py, shape)
            t[T_LOCAL + 2 * j, ys, xs] = px - xx
            t[T_LOCAL + 2 * j + 1, ys, xs] = py - yy
            t[T_LOCAL_MASK + j, ys, xs] = 1.0
    return t


def posterior_right(points: np.ndarray) -> bool:
    """Whether the posterior points (0, 3) lie right of the anterior ones (2, 5)."""
    p = np.asarray(points, float)
    return bool(p[[0, 3], 0].mean() > p[[2, 5], 0].mean())


# -- loss --------------------------------------------------------------------
def _focal(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of peaks."""
    logp, log1mp = F.logsigmoid(logits), F.logsigmoid(-logits)
    p = logp.exp()
    pos = (target >= 0.999).to(logits.dtype)
    pos_loss = (logp * (1 - p) ** 2 * pos).sum()
    neg_loss = (log1mp * p**2 * (1 - target) ** 4 * (1 - pos)).sum()
    return -(pos_loss + neg_loss) / pos.sum().clamp(min=1)


def _masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return ((pred - target).abs() * mask).sum() / mask.sum().clamp(min=1)


class KeypointLoss(nn.Module):
    """Focal heatmap losses + masked L1 offsets + level cross-entropy.

    Parameters
    ----------
    offset_weight, local_weight, level_weight : float
        Weights of the centre-offset, sub-pixel-offset and level terms.
    """

    def __init__(self, offset_weight: float = 1.0, local_weight: float = 1.0,
                 level_weight: float = 0.2) -> None:
        super().__init__()
        self.offset_weight = offset_weight
        self.local_weight = local_weight
        self.level_weight = level_weight

    def forward(self, out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out, t = out.float(), t.float()
        loss = _focal(out[:, CENTER], t[:, T_CENTER])
        loss = loss + _focal(out[:, POINTS:OFFSETS], t[:, T_POINTS:T_OFF])
        off_mask = t[:, T_OFF_MASK:T_OFF_MASK + 1]
        loss = loss + self.offset_weight * _masked_l1(out[:, OFFSETS:LOCAL], t[:, T_OFF:T_OFF_MASK],
                                                      off_mask.expand(-1, 12, -1, -1))
        local_mask = t[:, T_LOCAL_MASK:T_LEVEL].repeat_interleave(2, dim=1)
        loss = loss + self.local_weight * _masked_l1(out[:, LOCAL:FACING], t[:, T_LOCAL:T_LOCAL_MASK],
                                                     local_mask)
        b, y, x = torch.nonzero(t[:, T_FACING] >= 0, as_tuple=True)
        if len(b):
            loss = loss + F.binary_cross_entropy_with_logits(out[b, FACING, y, x], t[b, T_FACING, y, x])
        b, y, x = torch.nonzero(t[:, T_LEVEL] >= 0, as_tuple=True)
        if len(b):
            logits = out[b, LEVEL0:, y, x]
            loss = loss + self.level_weight * F.cross_entropy(logits, t[b, T_LEVEL, y, x].long())
        return loss


# -- decoding ----------------------------------------------------------------
def decode_maps(maps: np.ndarray, threshold: float = 0.3, offset_scale: float = 4.0,
                snap_radius: int = 2, min_point_score: float = 0.1) -> list[dict[str, Any]]:
    """Vertebrae from one image's output maps (grid coordinates).

    Parameters
    ----------
    maps : ndarray of shape (N_OUT, h, w)
        Raw network output for one image.
    threshold : float
        Minimum centre-heatmap probability of a detection.
    offset_scale : float
        As in :func:`render_targets`.
    snap_radius : int
        Search radius (grid pixels) around a coarse point for its heatmap peak.
    min_point_score : float
        A point snaps to its heatmap only when the peak reaches this probability.

    Returns
    -------
    list of dict
        ``points`` (6, 2) grid coordinates in anatomical order (the image's
        orientation voted by all its detections), ``score`` (centre probability)
        and ``level_logp`` (N_LEVELS,) level log-probabilities; unsorted.
    """
    m = torch.as_tensor(maps, dtype=torch.float32)
    heat = torch.sigmoid(m[CENTER])
    peaks = (heat == F.max_pool2d(heat[None, None], 3, 1, 1)[0, 0]) & (heat >= threshold)
    ys, xs = (v.numpy() for v in torch.nonzero(peaks, as_tuple=True))
    point_heat = torch.sigmoid(m[POINTS:OFFSETS]).numpy()
    off = m[OFFSETS:LOCAL].numpy() * offset_scale
    local = m[LOCAL:FACING].numpy()
    facing = m[FACING].numpy()
    level_logp = torch.log_softmax(m[LEVEL0:], dim=0).numpy()
    h, w = heat.shape
    found = []
    for y, x in zip(ys, xs):
        coarse = np.stack([x + off[0::2, y, x], y + off[1::2, y, x]], axis=-1)
        pts = coarse.copy()
        for j in range(6):
            cx, cy = int(np.rint(coarse[j, 0])), int(np.rint(coarse[j, 1]))
            y0, y1 = max(cy - snap_radius, 0), min(cy + snap_radius + 1, h)
            x0, x1 = max(cx - snap_radius, 0), min(cx + snap_radius + 1, w)
            if y0 >= y1 or x0 >= x1:
                continue
            win = point_heat[j, y0:y1, x0:x1]
            k = int(win.argmax())
            if win.flat[k] < min_point_score:
                continue
            py, px = y0 + k // win.shape[1], x0 + k % win.shape[1]
            pts[j] = (px + local[2 * j, py, px], py + local[2 * j + 1, py, px])
        found.append({"points": pts, "score": float(heat[y, x]), "level_logp": level_logp[:, y, x],
                      "facing": float(facing[y, x])})
    found = suppress_duplicates(found)
    if found and np.average([d["facing"] for d in found], weights=[d["score"] for d in found]) > 0:
        for d in found:
            d["points"] = d["points"][MIRROR]
    return found


def suppress_duplicates(found: list[dict[str, Any]], overlap: float = 0.5) -> list[dict[str, Any]]:
    """Drop a detection whose centre lies within ``overlap`` x height of a better one."""
    keep: list[dict[str, Any]] = []
    for d in sorted(found, key=lambda d: -d["score"]):
        c = d["points"].mean(axis=0)
        hgt = float(np.linalg.norm(d["points"][:3] - d["points"][3:], axis=-1).mean())
        if all(np.linalg.norm(c - k["points"].mean(axis=0)) > overlap * max(hgt, 1e-6) for k in keep):
            keep.append(d)
    return keep


def assign_levels(centers_y: np.ndarray, heights: np.ndarray, level_logp: np.ndarray,
                  gap_factor: float = 1.5) -> np.ndarray:
    """Consecutive level indices for a top-to-bottom column of vertebrae.

    A gap between neighbouring centres larger than ``gap_factor`` x the column's
    typical spacing (relative to the two vertebrae's heights) skips one level per
    missing vertebra. The column's first level is the one maximising the summed
    log-probabilities; when the column is longer than the level list, each
    vertebra keeps its own most likely level.

    Parameters
    ----------
    centers_y, heights : array of shape (n,)
        Sorted top to bottom.
    level_logp : array of shape (n, N_LEVELS)

    Returns
    -------
    ndarray of int, shape (n,)
    """
    n = len(centers_y)
    if n == 0:
        return np.zeros(0, int)
    pos = np.zeros(n, int)
    if n > 1:
        mean_h = np.maximum((heights[1:] + heights[:-1]) / 2, 1e-6)
        rel = np.diff(centers_y) / mean_h
        typical = float(np.median(rel))
        skip = np.where(rel > gap_factor * typical, np.maximum(np.round(rel / typical) - 1, 1), 0)
        pos[1:] = np.cumsum(1 + skip.astype(int))
    n_lv = level_logp.shape[1]
    if pos[-1] >= n_lv:
        return level_logp.argmax(axis=1)
    totals = np.array([level_logp[np.arange(n), pos + k].sum() for k in range(n_lv - pos[-1])])
    return pos + int(np.argmax(totals))


def placement_confidence(levels: np.ndarray, level_logp: np.ndarray) -> float:
    """Posterior probability of a column's consecutive placement among all its shifts.

    ``levels`` is :func:`assign_levels`'s output; every shift of the same
    spacing pattern that fits into the level list competes, each scored by its
    summed log-probabilities (a uniform prior over shifts).
    """
    levels = np.asarray(levels, int)
    n, n_lv = level_logp.shape
    if n == 0:
        return 0.0
    pos = levels - levels[0]
    if pos[-1] >= n_lv or (np.diff(levels) <= 0).any():
        return float(np.exp(level_logp[np.arange(n), levels]).prod())
    totals = np.array([level_logp[np.arange(n), pos + k].sum() for k in range(n_lv - pos[-1])])
    post = np.exp(totals - totals.max())
    return float(post[levels[0]] / post.sum())
