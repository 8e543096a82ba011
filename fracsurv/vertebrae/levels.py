"""Vertebral levels from anatomy: a sequence model over the detected column.

Counting vertebrae names them only when the count starts at a known level. This
model names them from what a reader looks at: each vertebra's surroundings, seen
in a wide canonical patch (ribs reach the thoracic bodies and end after T12; the
sacrum follows L5; C7 is the small cervical body at the top), and its size and
spacing relative to the rest of the column. A small CNN encodes each patch; a
bidirectional GRU carries that evidence along the column (a rib-bearing
transition seen at T12/L1 names every vertebra above and below it). Outputs per
vertebra: level logits and three anchor logits (``ANCHORS``). Decoding keeps
the column consecutive (:func:`~fracsurv.vertebrae.detector.assign_levels`)
and reports the posterior of the chosen placement as the level confidence.

Training samples (:class:`ColumnSamples`) are annotated columns with jittered
points, a vertebra dropped now and then (a missed detection) and the top of the
column cut at random (a different field of view).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fracsurv.vertebrae.detector import LEVELS, N_LEVELS, assign_levels, placement_confidence
from fracsurv.vertebrae.refiner import frame_of, sample_patch

__all__ = ["ANCHORS", "ColumnLoss", "ColumnNet", "ColumnSamples", "anchor_targets", "column_inputs",
           "decode_column"]

ANCHORS = ("C7", "last rib", "sacrum")  # anchor logits: cervical, rib-bearing, sacrum below
CONTEXT_SIZE = 48
CONTEXT_EXTENT = 4.0
N_GEOMETRY = 7
MAX_LENGTH = N_LEVELS


def column_inputs(image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Context patches ``(n, 1, S, S)`` and geometry features ``(n, N_GEOMETRY)``.

    ``points`` are a top-to-bottom column ``(n, 6, 2)`` in native pixels.
    Geometry: the centre's height in the image (0 top .. 1 bottom), the log of
    height and depth relative to the column's median height, the log gaps to
    the neighbours (relative to height; 0 at an end), whether the vertebra ends
    the column at the top / bottom.
    """
    p = np.asarray(points, float).reshape(-1, 6, 2)
    n = len(p)
    patches = np.stack([sample_patch(image, frame_of(q, CONTEXT_SIZE, CONTEXT_EXTENT))
                        for q in p])[:, None] if n else np.zeros((0, 1, CONTEXT_SIZE, CONTEXT_SIZE))
    centres = p.mean(1)
    height = np.linalg.norm(p[:, :3] - p[:, 3:], axis=-1).mean(1)
    depth = np.linalg.norm(p[:, [2, 5]] - p[:, [0, 3]], axis=-1).mean(1)
    med = float(np.median(height)) if n else 1.0
    gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1) / np.maximum(height[1:], 1e-6) if n > 1 else []
    above = np.concatenate([[0.0], np.log(np.maximum(gaps, 1e-3))]) if n else np.zeros(0)
    below = np.concatenate([np.log(np.maximum(gaps, 1e-3)), [0.0]]) if n else np.zeros(0)
    geo = np.stack([centres[:, 1] / max(image.shape[0], 1), np.log(np.maximum(height, 1e-3) / med),
                    np.log(np.maximum(depth, 1e-3) / med), above, below,
                    np.arange(n) == 0, np.arange(n) == n - 1], axis=1) if n else np.zeros((0, N_GEOMETRY))
    return patches.astype(np.float32), geo.astype(np.float32)


def anchor_targets(levels: np.ndarray, points: np.ndarray, image_height: int) -> np.ndarray:
    """``(n, 3)`` anchor labels: is C7, is rib-bearing (T1-T12), is L5 with the sacrum in view.

    The sacrum is taken to be in view when the image extends at least 0.6
    vertebral heights below L5's inferior endplate (S1 follows L5 directly).
    """
    lv = np.asarray(levels, int)
    p = np.asarray(points, float).reshape(-1, 6, 2)
    names = [LEVELS[i] if i >= 0 else "" for i in lv]
    height = np.linalg.norm(p[:, :3] - p[:, 3:], axis=-1).mean(1)
    room = image_height - 1 - p[:, 3:, 1].max(1)
    out = np.stack([[n == "C7" for n in names], [n.startswith("T") for n in names],
                    [(n == "L5") and r > 0.6 * h for n, r, h in zip(names, room, height)]], axis=1)
    out = out.astype(np.float32)
    out[lv < 0] = -1
    return out


class ColumnNet(nn.Module):
    """Patch CNN + geometry -> bidirectional GRU -> level and anchor logits.

    ``forward(patches (B, L, 1, S, S), geometry (B, L, G), lengths (B,))`` returns
    ``(B, L, N_LEVELS + 3)``; padded positions hold zeros.
    """

    def __init__(self, width: int = 32, hidden: int = 48) -> None:
        super().__init__()
        from monai.networks.blocks import Convolution

        def block(i: int, o: int) -> nn.Module:
            return Convolution(2, i, o, strides=2, kernel_size=3, act="PRELU", norm="BATCH")

        self.encoder = nn.Sequential(block(1, 16), block(16, 24), block(24, width), block(width, width),
                                     nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.gru = nn.GRU(width + N_GEOMETRY, hidden, num_layers=2, batch_first=True,
                          bidirectional=True, dropout=0.1)
        self.out = nn.Linear(2 * hidden, N_LEVELS + len(ANCHORS))

    def forward(self, patches: torch.Tensor, geometry: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, n = patches.shape[:2]
        lengths = lengths.reshape(-1).long().clamp(min=1)
        emb = self.encoder(patches.reshape(b * n, *patches.shape[2:]).float()).reshape(b, n, -1)
        seq = torch.cat([emb, geometry.float()], dim=-1)
        packed = nn.utils.rnn.pack_padded_sequence(seq, lengths.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        hid, _ = self.gru(packed)
        hid, _ = nn.utils.rnn.pad_packed_sequence(hid, batch_first=True, total_length=n)
        return self.out(hid)


class ColumnLoss(nn.Module):
    """Level cross-entropy + anchor binary cross-entropy over the real positions."""

    def __init__(self, anchor_weight: float = 0.5) -> None:
        super().__init__()
        self.anchor_weight = anchor_weight

    def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out, target = out.float(), target.float()
        lv = target[..., 0].long()
        mask = lv >= 0
        loss = nn.functional.cross_entropy(out[mask][:, :N_LEVELS], lv[mask]) if mask.any() else out.sum() * 0
        anc = target[..., 1:]
        amask = anc >= 0
        if amask.any():
            logits = out[..., N_LEVELS:]
            loss = loss + self.anchor_weight * nn.functional.binary_cross_entropy_with_logits(
                logits[amask], anc[amask])
        return loss


class ColumnSamples(Dataset):
    """One sample per annotated image: its (perturbed) column, padded to ``MAX_LENGTH``.

    Parameters
    ----------
    images : list of 2-D arrays
    columns : list of (points (n, 6, 2), level indices (n,))
        Annotated columns, any order (sorted here top to bottom).
    augment : bool
        Jitter the points (2 % of the height), drop a vertebra (p = 0.15) and cut
        the column's top (p = 0.3).
    seed : int or None
    """

    def __init__(self, images: list[np.ndarray], columns: list[tuple[np.ndarray, np.ndarray]],
                 augment: bool, seed: int | None) -> None:
        keep = [i for i, (p, _) in enumerate(columns) if len(p)]
        self.images = [images[i] for i in keep]
        self.columns = []
        for i in keep:
            p, lv = columns[i]
            order = np.argsort(p.mean(1)[:, 1], kind="stable")
            self.columns.append((np.asarray(p, float)[order], np.asarray(lv, int)[order]))
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.columns)

    def __getitem__(self, idx: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        pts, lv = self.columns[idx]
        img = self.images[idx]
        anchors = anchor_targets(lv, pts, img.shape[0])
        if self.augment:
            rng = self.rng
            n = len(pts)
            keep = np.ones(n, bool)
            if n > 3 and rng.random() < 0.3:
                keep[: int(rng.integers(1, max(2, n // 2)))] = False
            if n > 3 and rng.random() < 0.15:
                keep[int(rng.integers(1, n - 1))] = False
            pts, lv, anchors = pts[keep], lv[keep], anchors[keep]
            h = np.linalg.norm(pts[:, :3] - pts[:, 3:], axis=-1).mean(1)
            pts = pts + rng.normal(0, 0.02, pts.shape) * h[:, None, None] \
                + rng.normal(0, 0.04, (len(pts), 1, 2)) * h[:, None, None]
        patches, geo = column_inputs(img, pts)
        if self.augment:
            patches = _appearance(patches, self.rng)
        n = min(len(pts), MAX_LENGTH)
        xp = np.zeros((MAX_LENGTH, *patches.shape[1:]), np.float32)
        xg = np.zeros((MAX_LENGTH, N_GEOMETRY), np.float32)
        y = -np.ones((MAX_LENGTH, 1 + len(ANCHORS)), np.float32)
        xp[:n], xg[:n] = patches[:n], geo[:n]
        y[:n, 0], y[:n, 1:] = lv[:n], anchors[:n]
        x = {"patches": torch.from_numpy(xp), "geometry": torch.from_numpy(xg),
             "lengths": torch.tensor([n])}
        return x, torch.from_numpy(y)


def _appearance(patches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One gamma / contrast / noise draw for a whole column (one radiograph)."""
    p = np.clip(patches, 0, 1.5) ** float(rng.uniform(0.7, 1.4))
    p = p * float(rng.uniform(0.8, 1.2)) + float(rng.uniform(-0.1, 0.1))
    return (p + float(rng.uniform(0, 0.05)) * rng.standard_normal(p.shape)).astype(np.float32)


def decode_column(out: np.ndarray, centres_y: np.ndarray, heights: np.ndarray,
                  gap_factor: float = 1.5, anchor_threshold: float = 0.5) -> dict[str, Any]:
    """Levels, their confidences and the anchors found, from one column's network output.

    Parameters
    ----------
    out : array of shape (n, N_LEVELS + 3)
        :class:`ColumnNet` output for a top-to-bottom column.
    centres_y, heights : array of shape (n,)
        For :func:`~fracsurv.vertebrae.detector.assign_levels` (gaps skip levels).
    gap_factor : float
    anchor_threshold : float
        Probability above which an anchor counts as seen.

    Returns
    -------
    dict
        ``levels`` (n,) indices, ``confidence`` (the placement's posterior),
        ``vertebra_confidence`` (n,) (each vertebra's own level probability),
        ``anchors`` (names from :data:`ANCHORS` seen in this column; a
        ``"last rib"`` needs a rib-bearing vertebra directly above one without).
    """
    logits = np.asarray(out, float)
    lv = logits[:, :N_LEVELS] - logits[:, :N_LEVELS].max(1, keepdims=True)
    logp = lv - np.log(np.exp(lv).sum(1, keepdims=True))
    anchor_p = 1 / (1 + np.exp(-logits[:, N_LEVELS:]))
    levels = assign_levels(np.asarray(centres_y, float), np.asarray(heights, float), logp, gap_factor)
    seen = anchor_p > anchor_threshold
    anchors = []
    if seen[:, 0].any():
        anchors.append(ANCHORS[0])
    if (seen[:-1, 1] & ~seen[1:, 1] & (np.diff(levels) == 1)).any():
        anchors.append(ANCHORS[1])
    if len(seen) and seen[-1, 2]:
        anchors.append(ANCHORS[2])
    return {"levels": levels, "confidence": placement_confidence(levels, logp),
            "vertebra_confidence": np.exp(logp[np.arange(len(levels)), levels]),
            "anchors": anchors}
