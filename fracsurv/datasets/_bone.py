"""Bony structures of a simulated lateral radiograph, as projected attenuation.

Every function adds ``mu * path length`` (arbitrary attenuation units; soft tissue is
``MU_SOFT`` per mm) into a full-resolution layer, so overlapping structures sum in
the log domain as they do in a radiograph. Coordinates are in the canonical frame of
:mod:`fracsurv.datasets._anatomy` (mm, x anterior, y caudal); :class:`Frame` maps
them to pixels. Drawn by hand: no imaging library simulates radiograph anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

MU_SOFT = 0.02  # per mm of water-like tissue
MU_CORTEX = 0.035  # extra attenuation of cortical bone over soft tissue, per mm
MU_TRABECULAR = 0.02  # extra attenuation of a fully mineralised trabecular volume, per mm
MU_CALCIUM = 0.07  # calcified plaque


@dataclass(frozen=True)
class Frame:
    """The detector window: ``top``/``left`` in mm, ``mm`` per pixel, ``shape`` (H, W)."""

    top: float
    left: float
    mm: float
    shape: tuple[int, int]

    def px(self, p: np.ndarray) -> np.ndarray:
        """Canonical mm -> pixel (x, y), before any left/right mirroring."""
        return (np.asarray(p, dtype=float) - [self.left, self.top]) / self.mm


def _box(pts: np.ndarray, shape: tuple[int, ...], pad_lo: float = 0.0, pad_hi: float = 1.0
         ) -> tuple[int, int, int, int] | None:
    """Pixel bounding box (x0, y0, x1, y1) of ``pts`` padded and clipped to ``shape``."""
    x0, y0 = np.floor(pts.min(axis=0) - pad_lo).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0) + pad_hi).astype(int)
    box = (max(x0, 0), max(y0, 0), min(x1, shape[1]), min(y1, shape[0]))
    return box if box[0] < box[2] and box[1] < box[3] else None


def _paint(layer: np.ndarray, polygons: list[tuple[np.ndarray, float]]) -> None:
    """Fill polygons (pixel x, y) one after the other on one float canvas, then add it.

    The canvas spans the first polygon; later ones overwrite what they cover. Pillow's
    scan-line fill (scikit-image's ``draw.polygon`` tests every pixel against every
    edge: 50x slower on long outlines).
    """
    box = _box(polygons[0][0], layer.shape)
    if box is None:
        return
    x0, y0, x1, y1 = box
    canvas = Image.new("F", (x1 - x0, y1 - y0), 0.0)
    draw = ImageDraw.Draw(canvas)
    for pts, value in polygons:
        draw.polygon((pts - [x0, y0]).ravel().tolist(), fill=float(value))
    layer[y0:y1, x0:x1] += np.asarray(canvas, dtype=np.float32)


def add_polygon(layer: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Add ``value`` inside the polygon ``pts`` (pixel x, y)."""
    _paint(layer, [(pts, value)])


def add_shell(layer: np.ndarray, frame: Frame, outline_mm: np.ndarray, fill: float,
              rim: float, rim_mm: float) -> None:
    """A bone with a cortical rim: ``fill`` inside, ``rim`` more within ``rim_mm`` of the edge."""
    outer = frame.px(outline_mm)
    _paint(layer, [(outer, fill + rim), (shrink(outer, rim_mm / frame.mm), fill)])


def add_line(layer: np.ndarray, frame: Frame, a_mm: np.ndarray, b_mm: np.ndarray,
             width_mm: float, value: float) -> None:
    """A thin dense streak; below one pixel wide its value is scaled to keep its mass."""
    w_px = width_mm / frame.mm
    a, b = frame.px(a_mm), frame.px(b_mm)
    box = _box(np.stack([a, b]), layer.shape, w_px + 1, w_px + 2)
    if box is None:
        return
    cx0, cy0, cx1, cy1 = box
    mask = Image.new("L", (cx1 - cx0, cy1 - cy0), 0)
    ImageDraw.Draw(mask).line([tuple(a - [cx0, cy0]), tuple(b - [cx0, cy0])], fill=255,
                              width=max(1, round(w_px)))
    scale = value * min(1.0, w_px) / 255.0
    layer[cy0:cy1, cx0:cx1] += scale * np.asarray(mask, dtype=np.float32)


def shrink(pts: np.ndarray, by: float) -> np.ndarray:
    """Move a polygon's vertices ``by`` towards its centroid (an approximate inset)."""
    c = pts.mean(axis=0)
    size = np.linalg.norm(pts - c, axis=1).mean()
    return c + (pts - c) * max(0.1, 1 - by / max(size, 1e-6))


def body_frame(p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Anterior unit vector, caudal unit vector, depth and posterior height of a body."""
    a = (p[2] - p[0]) + (p[5] - p[3])
    a = a / (np.linalg.norm(a) + 1e-9)
    d = np.array([-a[1], a[0]])
    return a, d, float(np.linalg.norm(p[2] - p[0])), float(np.linalg.norm(p[3] - p[0]))


def _quadratic(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, u: np.ndarray) -> tuple:
    """Lagrange quadratic through p0 (u=0), p1 (u=0.5), p2 (u=1): an endplate curve."""
    w0, w1, w2 = (1 - u) * (1 - 2 * u), 4 * u * (1 - u), u * (2 * u - 1)
    return (w0 * p0[0] + w1 * p1[0] + w2 * p2[0], w0 * p0[1] + w1 * p1[1] + w2 * p2[1])


def _inward_normal(p: np.ndarray, q: np.ndarray, towards: np.ndarray) -> np.ndarray:
    """Unit normal of the line p-q, pointing to the side of ``towards``."""
    e = q - p
    n = np.array([-e[1], e[0]]) / (np.linalg.norm(e) + 1e-9)
    return n if (towards - p) @ n >= 0 else -n


def _chord(x: np.ndarray, half_depth: float, half_width: float, power: float = 2.6) -> np.ndarray:
    """Lateral path length through a super-elliptic axial cross-section at AP offset ``x``."""
    r = np.clip(np.abs(x) / max(half_depth, 1e-3), 0.0, 1.0)
    return 2.0 * max(half_width, 0.0) * (1.0 - r**power) ** (1.0 / power)


def add_body(layer: np.ndarray, frame: Frame, p: np.ndarray, *, width_mm: float,
             cortex_mm: float, endplate_mm: float, trabecular: np.ndarray,
             texel_mm: float, offset_mm: np.ndarray) -> None:
    """One vertebral body through its six keypoints (mm).

    The body is mapped to (u, v) in [0, 1]^2: u from the posterior to the anterior
    wall, v from the superior to the inferior endplate, each endplate a quadratic
    through its three keypoints (so concave endplates follow the points). Its axial
    cross-section is a super-ellipse ``width_mm`` wide: the cortical shell's path
    length peaks where the beam runs tangent to the walls (bright anterior and
    posterior walls), endplates are dense plates seen edge-on, and the trabecular
    interior samples the patient's bone-fraction field ``trabecular`` (texels of
    ``texel_mm``) in body coordinates, so the pattern moves with the vertebra.
    Corners are rounded (radius 2 mm) and edges antialiased.
    """
    mm = frame.mm
    q = frame.px(p)
    box = _box(q, layer.shape, 2, 3)
    if box is None:
        return
    cx0, cy0, cx1, cy1 = box
    ys, xs = np.mgrid[cy0:cy1, cx0:cx1].astype(np.float32)
    X, Y = frame.left + xs * mm, frame.top + ys * mm
    _, d, depth, _ = body_frame(p)
    # 1. u: signed distances (mm) to the posterior (p0-p3) and anterior (p2-p5) walls
    n_p = _inward_normal(p[0], p[3], p[2])
    n_a = _inward_normal(p[2], p[5], p[0])
    dp = (X - p[0, 0]) * n_p[0] + (Y - p[0, 1]) * n_p[1]
    da = (X - p[2, 0]) * n_a[0] + (Y - p[2, 1]) * n_a[1]
    u = dp / np.where(np.abs(dp + da) < 1e-6, 1e-6, dp + da)
    uc = np.clip(u, 0.0, 1.0)
    # 2. v: between the superior and inferior endplate curves at that u
    sx, sy = _quadratic(p[0], p[1], p[2], uc)
    ix, iy = _quadratic(p[3], p[4], p[5], uc)
    span = (ix - sx) * d[0] + (iy - sy) * d[1]
    down = (X - sx) * d[0] + (Y - sy) * d[1]
    v = down / np.maximum(span, 1e-3)
    # 3. distance inside the outline (mm), with rounded corners, for antialiasing
    du_mm = np.minimum(dp, da)
    dv_mm = np.minimum(down, span - down)
    r = 2.0
    corner = (du_mm < r) & (dv_mm < r)
    inside = np.minimum(du_mm, dv_mm)
    inside = np.where(corner, r - np.hypot(r - np.clip(du_mm, None, r),
                                           r - np.clip(dv_mm, None, r)), inside)
    cover = np.clip(inside / mm + 0.5, 0.0, 1.0)
    if not cover.any():
        return
    # 4. path lengths: shell, endplates, trabecular interior
    x_ap = (uc - 0.5) * depth
    half_w = width_mm / 2
    outer = _chord(x_ap, depth / 2, half_w)
    inner = _chord(x_ap, depth / 2 - cortex_mm, half_w - cortex_mm)
    plate = np.clip(1.0 - np.clip(dv_mm, 0, None) / max(endplate_mm, 1e-3), 0.0, 1.0)
    tex_r = (np.clip(v, 0, 1) * np.maximum(span, 1e-3) + offset_mm[1]) / texel_mm
    tex_c = (uc * depth + offset_mm[0]) / texel_mm
    frac = ndimage.map_coordinates(trabecular, [tex_r.ravel(), tex_c.ravel()], order=1,
                                   mode="grid-wrap").reshape(u.shape)
    att = (MU_CORTEX * (outer - inner) + 0.30 * MU_CORTEX * plate * outer
           + MU_TRABECULAR * inner * frac * (1.0 - plate))
    layer[cy0:cy1, cx0:cx1] += (cover * att).astype(np.float32)


def add_posterior_elements(layer: np.ndarray, frame: Frame, p: np.ndarray, level: str,
                           depth: float) -> None:
    """Pedicles, articular pillar, lamina and spinous process of one vertebra.

    Built in the body's own frame (anterior ``a``, caudal ``d`` from the superior
    posterior corner). The pedicles occupy the upper half of the body height, so the
    neural foramen stays open (dark) between the pedicles of adjacent levels.
    """
    a, d, _, hp = body_frame(p)
    o = p[0]
    lumbar = level.startswith("L")
    ped = 0.32 * depth if lumbar else 0.30 * depth

    def loc(pts: list[tuple[float, float]]) -> np.ndarray:
        return np.array([o - a * x + d * y for x, y in pts])

    # pedicle: posterior wall back to the pillar, upper half of the body
    pedicle = loc([(0, 0.08 * hp), (ped, 0.05 * hp), (ped, 0.48 * hp), (0, 0.50 * hp)])
    add_shell(layer, frame, pedicle, 0.22, 0.18, 1.2)
    # articular pillar: superior process reaches up, inferior process down into the next level
    pw = 0.36 * depth if lumbar else 0.28 * depth
    pillar = loc([(ped - 1, -0.22 * hp), (ped + pw * 0.8, -0.30 * hp), (ped + pw, 0.25 * hp),
                  (ped + pw * 0.9, 1.05 * hp), (ped + 2, 1.00 * hp), (ped - 2, 0.55 * hp)])
    add_shell(layer, frame, pillar, 0.30, 0.20, 1.5)
    # lamina + spinous process: long and down-sloping in the thorax, a hatchet in the lumbar spine
    base = ped + pw * 0.7
    if lumbar:
        spine = loc([(base, 0.15 * hp), (base + 0.95 * depth, 0.05 * hp),
                     (base + 1.05 * depth, 0.35 * hp), (base + 0.95 * depth, 0.85 * hp),
                     (base, 0.80 * hp)])
    else:
        spine = loc([(base, 0.10 * hp), (base + 0.85 * depth, 0.75 * hp),
                     (base + 1.05 * depth, 1.35 * hp), (base + 0.95 * depth, 1.45 * hp),
                     (base, 0.85 * hp)])
    add_shell(layer, frame, spine, 0.16, 0.22, 1.3)


def add_rib(layer: np.ndarray, frame: Frame, head: np.ndarray, reach_back: float,
            reach_front: float, drop: float, width: float, value: float) -> None:
    """A rib's lateral projection: a cubic Bezier tube from the costovertebral joint.

    It runs posteriorly to the rib angle, then sweeps anteriorly and caudally across
    the thorax; the cortical rim is brighter than the medulla.
    """
    t = np.linspace(0.0, 1.0, 28)[:, None]
    c0 = head
    c1 = head + np.array([-reach_back * 1.6, -0.15 * drop])
    c2 = head + np.array([reach_front * 0.55, 0.35 * drop])
    c3 = head + np.array([reach_front, drop])
    curve = ((1 - t) ** 3) * c0 + 3 * ((1 - t) ** 2) * t * c1 + 3 * (1 - t) * t**2 * c2 + t**3 * c3
    tangent = np.gradient(curve, axis=0)
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    taper = (1.0 - 0.35 * t)
    half = width / 2 * taper
    outline = np.vstack([curve + half * normal, (curve - half * normal)[::-1]])
    add_shell(layer, frame, outline, value * 0.45, value, min(1.6, width / 4))


def add_osteophyte(layer: np.ndarray, frame: Frame, corner: np.ndarray, a: np.ndarray,
                   toward: np.ndarray, length: float) -> None:
    """An anterior osteophyte: a dense beak from a body corner into the disc space."""
    if length < 0.5:
        return
    tri = np.array([corner - toward * 3.0, corner + a * 0.6 * length + toward * 0.8 * length,
                    corner + a * 1.0 - toward * 0.2, corner - a * 2.5])
    add_polygon(layer, frame.px(tri), 0.45)


def ellipse(centre: np.ndarray, rx: float, ry: float, n: int = 36, phase: float = 0.0
            ) -> np.ndarray:
    """Polygon of an axis-aligned ellipse (mm)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + phase
    return np.column_stack([centre[0] + rx * np.cos(t), centre[1] + ry * np.sin(t)])
