"""Genant's semi-quantitative grading from the six morphometry points — a pure module.

The six points of a vertebral body (``docs/data_contract.md``), in order:
superior endplate posterior / middle / anterior, then inferior endplate posterior /
middle / anterior. Heights are Euclidean distances between matching points:
``hp = |p0 - p3|``, ``hm = |p1 - p4|``, ``ha = |p2 - p5|``.

**The rule used everywhere in fracsurv** (synthetic cohort, cropper, reports):

* reference height ``h_ref = max(hp, h_expected)``, where ``h_expected`` is the mean
  posterior height of the neighbouring vertebrae when known (this catches crush
  deformities, where all three heights drop together), else ``hp``;
* height reduction ``r = 1 - min(ha, hm, hp) / h_ref``;
* grade 0 if ``r < 0.20``, 1 if ``0.20 <= r < 0.25``, 2 if ``0.25 <= r < 0.40``,
  3 if ``r >= 0.40`` (lower bounds inclusive);
* morphology (grade >= 1): if the body kept its shape (``ha/hp`` and ``hm/hp`` both
  ``>= 0.85``) while losing height against its neighbours, or if the posterior height
  is the lowest, ``"crush"``; otherwise the lower of anterior and middle names it —
  anterior -> ``"wedge"``, middle -> ``"biconcave"``. Grade 0 -> ``"normal"``.

Only ratios of distances enter, so the grade is invariant to translation,
rotation and scaling of the points. :func:`soft_grade` is a differentiable
version (a softmax over the four grade bands), as explainable fracture analysis
uses to turn geometry into probabilities.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GRADE_BOUNDS",
    "MORPHOLOGIES",
    "SHAPE_KEPT",
    "expected_heights",
    "grade_from_reduction",
    "grade_vertebrae",
    "height_reduction",
    "heights",
    "soft_grade",
    "uncertain_grades",
]

GRADE_BOUNDS = (0.20, 0.25, 0.40)
SHAPE_KEPT = 0.85
MORPHOLOGIES = ("normal", "wedge", "biconcave", "crush")


def heights(points: np.ndarray) -> np.ndarray:
    """Anterior, middle and posterior heights.

    Parameters
    ----------
    points : array of shape (..., 6, 2)

    Returns
    -------
    ndarray of shape (..., 3)
        ``(ha, hm, hp)``.
    """
    p = np.asarray(points, dtype=float)
    if p.shape[-2:] != (6, 2):
        raise ValueError(f"points must have shape (..., 6, 2), got {p.shape}")
    hp = np.linalg.norm(p[..., 0, :] - p[..., 3, :], axis=-1)
    hm = np.linalg.norm(p[..., 1, :] - p[..., 4, :], axis=-1)
    ha = np.linalg.norm(p[..., 2, :] - p[..., 5, :], axis=-1)
    return np.stack([ha, hm, hp], axis=-1)


def expected_heights(hp: np.ndarray) -> np.ndarray:
    """Mean posterior height of each vertebra's neighbours in a top-to-bottom column.

    Ends use their single neighbour; a column of one returns its own height.
    """
    hp = np.asarray(hp, dtype=float)
    if hp.size <= 1:
        return hp.copy()
    padded = np.concatenate([[np.nan], hp, [np.nan]])
    return np.nanmean(np.stack([padded[:-2], padded[2:]]), axis=0)


def height_reduction(h: np.ndarray, h_expected: np.ndarray | None = None) -> np.ndarray:
    """Height reduction ``r`` and the index of the lowest height (0 ant, 1 mid, 2 post).

    Returns
    -------
    ndarray of shape (..., 2)
        ``[..., 0]`` the reduction, ``[..., 1]`` the argmin as float.
    """
    h = np.asarray(h, dtype=float)
    ref = h[..., 2] if h_expected is None else np.maximum(h[..., 2], h_expected)
    low = h.argmin(axis=-1)
    r = 1.0 - h.min(axis=-1) / ref
    return np.stack([r, low.astype(float)], axis=-1)


def grade_from_reduction(r: np.ndarray) -> np.ndarray:
    """Genant grade 0-3 from height reduction (lower bounds inclusive)."""
    return np.searchsorted(np.asarray(GRADE_BOUNDS), np.asarray(r, dtype=float), side="right")


def grade_vertebrae(points: np.ndarray, use_neighbours: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grade a top-to-bottom column of vertebrae.

    Parameters
    ----------
    points : array of shape (n, 6, 2)
    use_neighbours : bool
        Compare with the neighbours' posterior heights (detects crush deformities).

    Returns
    -------
    grades : ndarray of int, shape (n,)
    morphology : ndarray of str, shape (n,)
    reduction : ndarray of float, shape (n,)
    """
    h = heights(points)
    if len(h) == 0:
        return np.zeros(0, int), np.zeros(0, dtype=object), np.zeros(0)
    exp = expected_heights(h[:, 2]) if use_neighbours else None
    rl = height_reduction(h, exp)
    r, low = rl[:, 0], rl[:, 1].astype(int)
    grades = grade_from_reduction(r)
    shape_kept = (h[:, 0] >= SHAPE_KEPT * h[:, 2]) & (h[:, 1] >= SHAPE_KEPT * h[:, 2])
    kind = np.where(shape_kept | (low == 2), "crush",
                    np.where(h[:, 0] <= h[:, 1], "wedge", "biconcave"))
    morph = np.where(grades == 0, "normal", kind)
    return grades.astype(int), morph.astype(object), r


def soft_grade(points, temperature: float = 0.02, h_expected=None):
    """Differentiable grade probabilities (torch), shape (..., 4).

    The reduction ``r`` (with a soft minimum over the three heights) is compared
    with the band edges through sigmoids of width ``temperature``; probabilities
    are the differences of those cumulative sigmoids, so they sum to 1 and tend
    to the hard grade as ``temperature -> 0``.
    """
    import torch

    p = torch.as_tensor(points, dtype=torch.float32) if not isinstance(points, torch.Tensor) else points
    hp = torch.linalg.norm(p[..., 0, :] - p[..., 3, :], dim=-1)
    hm = torch.linalg.norm(p[..., 1, :] - p[..., 4, :], dim=-1)
    ha = torch.linalg.norm(p[..., 2, :] - p[..., 5, :], dim=-1)
    h = torch.stack([ha, hm, hp], dim=-1)
    ref = hp if h_expected is None else torch.maximum(hp, torch.as_tensor(h_expected, dtype=h.dtype))
    scale = ref.unsqueeze(-1)
    soft_min = -temperature * scale.squeeze(-1) * torch.logsumexp(-h / (temperature * scale), -1)
    r = 1.0 - soft_min / ref
    edges = torch.as_tensor(GRADE_BOUNDS, dtype=r.dtype, device=r.device)
    above = torch.sigmoid((r.unsqueeze(-1) - edges) / temperature)  # P(grade >= k), k = 1..3
    ones = torch.ones_like(above[..., :1])
    zeros = torch.zeros_like(above[..., :1])
    cum = torch.cat([ones, above, zeros], dim=-1)
    return (cum[..., :-1] - cum[..., 1:]).clamp(min=0.0)


def uncertain_grades(points: np.ndarray, errors: np.ndarray, n_samples: int = 32,
                     use_neighbours: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expected Genant grade and P(grade >= 1) of a column whose points are uncertain.

    Each point is drawn ``n_samples`` times from an isotropic Gaussian whose
    expected Euclidean error is the point's ``errors`` entry (per-axis sd
    ``e / sqrt(pi / 2)``), and the whole column is graded by
    :func:`grade_vertebrae` for every draw (neighbours included).

    Parameters
    ----------
    points : array of shape (n, 6, 2)
    errors : array of shape (n, 6)
        Expected Euclidean error of each point, in the points' units.
    n_samples : int
    use_neighbours : bool
    seed : int
        Fixes the draws, so the same input always gives the same soft grade.

    Returns
    -------
    soft_grade : ndarray of shape (n,)
        Mean grade over the draws (0..3).
    p_fracture : ndarray of shape (n,)
        Share of draws with grade >= 1.
    """
    p = np.asarray(points, float).reshape(-1, 6, 2)
    if len(p) == 0:
        return np.zeros(0), np.zeros(0)
    sd = np.asarray(errors, float).reshape(len(p), 6) / np.sqrt(np.pi / 2)
    rng = np.random.default_rng(seed)
    draws = p[None] + rng.standard_normal((int(n_samples), *p.shape)) * sd[None, :, :, None]
    grades = np.stack([grade_vertebrae(d, use_neighbours)[0] for d in draws]).astype(float)
    return grades.mean(0), (grades >= 1).mean(0)
