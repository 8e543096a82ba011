"""Geometry of a simulated lateral spine, in millimetres.

The column is built by stacking: each vertebral body is placed from its superior
posterior corner and endplate direction, with its three heights (anterior,
middle, posterior) and depth; the disc below rotates the next endplate. Wedge
fractures and wedged discs therefore bend the column the way they do in a
patient (fractures increase kyphosis).

Canonical frame: x points anteriorly, y caudally (image rows). The renderer
mirrors x for patients who face the other way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LEVELS: tuple[str, ...] = ("C7", *(f"T{i}" for i in range(1, 13)), *(f"L{i}" for i in range(1, 6)))
GRADED_LEVELS: tuple[str, ...] = LEVELS[LEVELS.index("T4"):]
LEVEL_INDEX = {name: i for i, name in enumerate(LEVELS)}

# Healthy adult dimensions (mm) for a 165 cm person, per level (C7 ... L5).
_BODY_HEIGHT = np.array([14, 15, 16, 17, 18, 18.5, 19, 19.5, 20, 21, 22, 23, 24,
                         25.5, 26.5, 27, 27, 27], dtype=float)
_BODY_DEPTH = np.array([17, 18, 20, 22, 24, 25, 26, 27, 28, 29, 30, 32, 33,
                        35, 36, 37, 38, 39], dtype=float)
_DISC_HEIGHT = np.array([4.5, 4, 4, 4.5, 4.5, 5, 5, 5, 5.5, 5.5, 6, 6.5, 7,
                         8, 9, 10, 10.5, 11], dtype=float)  # disc below each level


@dataclass
class Fracture:
    """A vertebral deformity: target height reduction and morphology."""

    level: str
    reduction: float
    morphology: str  # wedge | biconcave | crush


@dataclass
class Column:
    """Keypoints of every vertebra (C7-L5) plus the sacrum outline, in mm."""

    points: np.ndarray  # (18, 6, 2)
    sacrum: np.ndarray  # (k, 2) polygon
    depth: np.ndarray  # (18,)
    fractures: dict[str, Fracture] = field(default_factory=dict)


def _unit(phi: float) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([np.cos(phi), np.sin(phi)])  # anterior along the endplate
    d = np.array([-np.sin(phi), np.cos(phi)])  # caudal, perpendicular to it
    return a, d


def build_column(
    size: float,
    kyphosis_deg: float,
    lordosis_deg: float,
    fractures: dict[str, Fracture],
    rng: np.random.Generator,
    tilt_deg: float = 0.0,
    disc_scale: np.ndarray | float = 1.0,
) -> Column:
    """Stack C7-L5 and the sacrum.

    Parameters
    ----------
    size : float
        Scale factor (patient height / 165 cm).
    kyphosis_deg, lordosis_deg : float
        Target thoracic kyphosis and lumbar lordosis of the healthy column; the
        discs carry what the (slightly wedged) healthy bodies do not.
    fractures : dict
        Deformities by level.
    rng : Generator
        For small per-level variation.
    tilt_deg : float
        Overall inclination of the column.
    disc_scale : float or array of shape (18,)
        Multiplies each disc's height (disc narrowing with age, ``fracsurv.datasets._ageing``).
    """
    n = len(LEVELS)
    hp = _BODY_HEIGHT * size * rng.normal(1.0, 0.02, n)
    depth = _BODY_DEPTH * size * rng.normal(1.0, 0.02, n)
    disc = _DISC_HEIGHT * size * rng.normal(1.0, 0.05, n) * np.broadcast_to(disc_scale, (n,))
    ha = hp.copy()
    thoracic = np.array([name.startswith("T") for name in LEVELS])
    lumbar = np.array([name.startswith("L") for name in LEVELS])
    ha[thoracic] *= 0.95  # healthy thoracic bodies are slightly wedged
    ha[lumbar] *= 1.02
    # healthy endplates are slightly concave: the middle height is ~3 % below the
    # mean of the anterior and posterior heights (Genant reduction ~5 %, far from 20 %)
    hm = (hp + ha) / 2 * 0.97
    for name, fx in fractures.items():
        i = LEVEL_INDEX[name]
        r = fx.reduction
        if fx.morphology == "wedge":
            ha[i] = hp[i] * (1 - r)
            hm[i] = hp[i] * (1 - 0.55 * r)
        elif fx.morphology == "biconcave":
            ha[i] = hp[i] * 0.97
            hm[i] = hp[i] * (1 - r)
        else:  # crush: the whole body loses height against its neighbours
            ha[i] = hp[i] * (1 - r) * 0.99
            hm[i] = hp[i] * (1 - r) * 0.985
            hp[i] = hp[i] * (1 - r)
    body_wedge = np.arctan2(ha - hp, depth)  # negative = kyphotic
    t_idx = np.flatnonzero(thoracic)
    disc_angle = np.zeros(n)
    healthy_kyph = -body_wedge[t_idx].sum()
    disc_angle[t_idx] = -(np.deg2rad(kyphosis_deg) - healthy_kyph) / len(t_idx)
    l_idx = np.flatnonzero(lumbar)
    disc_angle[l_idx] = np.deg2rad(lordosis_deg) / len(l_idx) - body_wedge[l_idx]
    disc_angle[0] = np.deg2rad(4.0)  # C7-T1: end of cervical lordosis

    pts = np.zeros((n, 6, 2))
    p0 = np.zeros(2)
    phi = np.deg2rad(12.0)
    for i in range(n):
        a, d = _unit(phi)
        dep = depth[i]
        sag = (hp[i] + ha[i]) / 2 - hm[i]  # endplate concavity at the middle
        top_mid_drop = sag / 2
        pts[i, 0] = p0
        pts[i, 2] = p0 + dep * a
        pts[i, 1] = p0 + dep / 2 * a + top_mid_drop * d
        pts[i, 3] = p0 + hp[i] * d
        pts[i, 5] = p0 + dep * a + ha[i] * d
        pts[i, 4] = pts[i, 1] + hm[i] * d
        e = pts[i, 5] - pts[i, 3]
        phi_inf = np.arctan2(e[1], e[0])
        _, d_inf = _unit(phi_inf)
        p0 = pts[i, 3] + disc[i] * d_inf
        phi = phi_inf + disc_angle[i]
    # sacrum: a curved wedge below the L5-S1 disc
    a, d = _unit(phi + np.deg2rad(18.0))
    s_top = 48 * size
    length = 105 * size
    post = p0 + np.linspace(0, 1, 8)[:, None] * (length * d)
    curve = np.linspace(0, 1, 8) ** 2 * 22 * size
    width = np.linspace(s_top, 14 * size, 8)
    posterior_edge = post - (curve[:, None] * a)
    anterior_edge = posterior_edge + width[:, None] * a
    sacrum = np.vstack([posterior_edge, anterior_edge[::-1]])
    # straighten: overall chord vertical, then the requested tilt
    chord = pts[-1, 3] - pts[0, 0]
    rot = np.arctan2(chord[0], chord[1]) + np.deg2rad(tilt_deg)  # chord -> vertical
    c, s = np.cos(rot), np.sin(rot)
    r = np.array([[c, -s], [s, c]])
    pts = pts @ r.T
    sacrum = sacrum @ r.T
    return Column(points=pts, sacrum=sacrum, depth=depth, fractures=dict(fractures))
