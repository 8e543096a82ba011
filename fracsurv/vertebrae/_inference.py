"""The inference path of :class:`~fracsurv.vertebrae.cropper.VertebraCropper`.

Per batch of images: stage 1 (the detector on the downsampled images), stage 2
(the refiner on canonical native-resolution patches of every vertebra found,
``refine_passes`` times, one facing per image), then per image the column
model's levels, Genant grades and soft grades. The estimator holds the
parameters and the training; this mixin only reads them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torch import nn

from fracsurv.nn.data import to_chw
from fracsurv.vertebrae._keypoint_data import load_one_image, normalise_intensity
from fracsurv.vertebrae.crops import box_from_points
from fracsurv.vertebrae.detector import (
    LEVEL_INDEX,
    LEVELS,
    STRIDE,
    decode_maps,
    from_grid,
    posterior_right,
    suppress_duplicates,
)
from fracsurv.vertebrae.genant import grade_vertebrae, heights, uncertain_grades
from fracsurv.vertebrae.levels import column_inputs, decode_column
from fracsurv.vertebrae.refiner import ANATOMICAL_MIRROR, frame_of, sample_patch

__all__ = ["SUMMARY_COLUMNS", "CropperInferenceMixin", "CropperInputError", "CropperModules"]

SUMMARY_COLUMNS = ("n_vertebrae", "n_fractures", "max_grade", "sdi", "max_reduction",
                   "max_soft_grade", "level_confidence", "level_anchor", "n_ungradable",
                   "no_vertebra_found")
SUMMARY_TYPES = {"no_vertebra_found": bool, "max_reduction": float, "max_soft_grade": float,
                 "level_confidence": float, "level_anchor": object}
MIN_IMAGE_SIDE = 32


class CropperModules(nn.Module):
    """The cropper's three networks, saved and loaded as one state dict."""

    def __init__(self, detector: nn.Module, refiner: nn.Module, column: nn.Module) -> None:
        super().__init__()
        self.detector, self.refiner, self.column = detector, refiner, column


def _one_facing(points: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Give every vertebra of an image the facing most of its vertebrae have.

    The patient faces one way in a radiograph; a vertebra whose refined points
    say otherwise gets its posterior and anterior points swapped.
    """
    right = np.array([posterior_right(p) for p in points], bool)
    out = points.copy()
    for i in np.unique(owner):
        mine = owner == i
        wrong = mine & (right != (right[mine].mean() > 0.5))
        out[wrong] = out[wrong][:, ANATOMICAL_MIRROR]
    return out


class CropperInputError(ValueError):
    """A row's image cannot be read by the cropper (not 2-D, too small, not finite)."""


class CropperInferenceMixin:
    """``detect`` and the batch path ``transform`` runs (see the module docstring)."""

    def _network_input(self, img: np.ndarray) -> torch.Tensor:
        return normalise_intensity(to_chw(img, self._shape()))

    def detect(self, image: Any) -> list[dict[str, Any]]:
        """The graded, top-to-bottom vertebra list of one image (array, reference or path)."""
        check_is_fitted(self, "module_")
        return self._process([self._checked_image(image, "the given image")])[0]

    @staticmethod
    def _checked_image(item: Any, rows: str) -> np.ndarray:
        """The 2-D image, or a :class:`CropperInputError` saying what is wrong with it."""
        try:
            img = load_one_image(item, rows)
        except (OSError, ValueError, TypeError) as exc:
            raise CropperInputError(str(exc)) from None
        if min(img.shape) < MIN_IMAGE_SIDE:
            raise CropperInputError(f"the image of {rows} is {img.shape[0]} x {img.shape[1]} pixels; "
                                    f"the cropper needs at least {MIN_IMAGE_SIDE} on each side")
        img = np.asarray(img, np.float32)
        if not np.isfinite(img).all():
            raise CropperInputError(f"the image of {rows} holds NaN or infinite pixels")
        return img

    def _process(self, imgs: list[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Stage 1 on the batch, stage 2 on all its vertebrae, then levels and grades."""
        if not imgs:
            return []
        maps = self._infer([torch.stack([self._network_input(im) for im in imgs])],
                           forward=lambda m, b: m.detector(b))
        found = [self._stage1(m, im.shape) for m, im in zip(maps, imgs)]
        refined = self._refine(imgs, [f[0] for f in found])
        return [self._vertebrae(im, pts, err, scores)
                for im, (pts, err), (_, scores) in zip(imgs, refined, found)]

    def _stage1(self, maps: np.ndarray, native: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded detections in native pixels: points (n, 6, 2) and centre scores (n,)."""
        h, w = self._shape()
        scale = (w / STRIDE / native[1], h / STRIDE / native[0])
        found = decode_maps(maps, float(self.detection_threshold), self._offset_scale())
        pts = [from_grid(d["points"], scale) for d in found]
        keep = [k for k, p in enumerate(pts) if self._inside(p, native)]
        if not keep:
            return np.zeros((0, 6, 2)), np.zeros(0)
        return np.stack([pts[k] for k in keep]), np.array([found[k]["score"] for k in keep])

    def _refine(self, imgs: list[np.ndarray], points: list[np.ndarray]
                ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Stage 2 for every vertebra of the batch: refined points and expected errors."""
        size = int(self.patch_size)
        owner = np.concatenate([np.full(len(p), i) for i, p in enumerate(points)]).astype(int)
        cur = np.concatenate([p.reshape(-1, 6, 2) for p in points]) if len(owner) else np.zeros((0, 6, 2))
        err = np.full(cur.shape[:2], np.nan)
        for _ in range(int(self.refine_passes) if len(cur) else 0):
            frames = [frame_of(p, size) for p in cur]
            patches = np.stack([sample_patch(imgs[i], f) for i, f in zip(owner, frames)])[:, None]
            out = self._infer([torch.from_numpy(patches[k:k + 256]) for k in range(0, len(patches), 256)],
                              forward=lambda m, b: m.refiner(b)[..., :3])
            cur = np.stack([f.to_native(o[:, :2]) for f, o in zip(frames, out)])
            err = np.exp(out[..., 2]) * np.array([f.scale for f in frames])[:, None]
            cur = _one_facing(cur, owner)
        return [(cur[owner == i], err[owner == i]) for i in range(len(points))]

    def _vertebrae(self, img: np.ndarray, pts: np.ndarray, err: np.ndarray, scores: np.ndarray
                   ) -> list[dict[str, Any]]:
        """Order, de-duplicate, name the levels and grade one image's refined vertebrae."""
        native = img.shape
        found = [{"points": p, "score": float(s), "err": e} for p, s, e in zip(pts, scores, err)
                 if self._inside(p, native)]
        found = sorted(suppress_duplicates(found), key=lambda d: float(d["points"].mean(0)[1]))
        if not found:
            return []
        pts = np.stack([d["points"] for d in found])
        err = np.stack([d["err"] for d in found])
        hts = heights(pts).mean(axis=1)
        patches, geo = column_inputs(img, pts)
        out = self._infer([{"patches": torch.from_numpy(patches)[None], "geometry": torch.from_numpy(geo)[None],
                            "lengths": torch.tensor([len(pts)])}],
                          forward=lambda m, b: m.column(**b))[0]
        named = decode_column(out, pts.mean(axis=1)[:, 1], hts, float(self.gap_factor))
        levels = named["levels"]
        grades, morph, red = grade_vertebrae(pts, use_neighbours=bool(self.use_neighbours))
        fallback = np.where(np.isfinite(err), err, 0.0)
        soft, p_frac = uncertain_grades(pts, fallback, int(self.grade_samples), bool(self.use_neighbours))
        first = LEVEL_INDEX[self.first_graded_level]
        anchor = "+".join(named["anchors"]) or "none"
        out_v = []
        for k, d in enumerate(found):
            gradable = bool(fallback[k].max() <= float(self.gradable_error) * max(hts[k], 1e-6))
            graded = bool(levels[k] >= first) and gradable
            out_v.append({"level": LEVELS[int(levels[k])],
                          "points": np.round(pts[k], 3).tolist(),
                          "point_error": np.round(fallback[k], 3).tolist(),
                          "box": [round(float(v), 3) for v in box_from_points(pts[k], float(self.margin))],
                          "grade": int(grades[k]) if graded else 0,
                          "soft_grade": round(float(soft[k]), 4) if graded else 0.0,
                          "p_fracture": round(float(p_frac[k]), 4) if graded else 0.0,
                          "morphology": str(morph[k]) if graded else "normal" if gradable
                          else "ungradable",
                          "reduction": round(float(red[k]), 4),
                          "graded": graded,
                          "gradable": gradable,
                          "level_confidence": round(float(named["vertebra_confidence"][k]), 4),
                          "column_confidence": round(float(named["confidence"]), 4),
                          "level_anchor": anchor,
                          "confidence": round(d["score"], 4)})
        return out_v

    @staticmethod
    def _inside(points: np.ndarray, native: tuple[int, int]) -> bool:
        """Only whole vertebrae count: every point inside the image."""
        x, y = points[:, 0], points[:, 1]
        return bool((x >= 0).all() and (y >= 0).all() and (x <= native[1] - 1).all()
                    and (y <= native[0] - 1).all())

    @staticmethod
    def _summary(vertebrae: list[dict[str, Any]]) -> dict[str, Any]:
        graded = [v for v in vertebrae if v["graded"]]
        grades = [v["grade"] for v in graded]
        return {"n_vertebrae": len(vertebrae), "n_fractures": sum(g >= 1 for g in grades),
                "max_grade": max(grades, default=0), "sdi": sum(grades),
                "max_reduction": max((v["reduction"] for v in graded), default=0.0),
                "max_soft_grade": max((v["soft_grade"] for v in graded), default=0.0),
                "level_confidence": vertebrae[0]["column_confidence"] if vertebrae else 0.0,
                "level_anchor": vertebrae[0]["level_anchor"] if vertebrae else "none",
                "n_ungradable": sum(not v["gradable"] for v in vertebrae),
                "no_vertebra_found": not vertebrae}
