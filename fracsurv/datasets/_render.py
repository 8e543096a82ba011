"""Rendering of a simulated lateral spine radiograph (vectorised numpy/scikit-image).

Attenuation layers — soft-tissue envelope (thickness from BMI), lung field over
the thorax, ribs, posterior elements, vertebral bodies (cortical rim, endplates,
trabecular texture with density from BMD), pelvis and sacrum — are summed,
blurred by the acquisition's sharpness, turned into a transmitted-intensity
image (bone bright), and given the manufacturer's contrast curve, quantum noise,
collimation and a lead side marker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fracsurv.datasets._anatomy import LEVELS, Column


@dataclass(frozen=True)
class Profile:
    """An acquisition profile (a stand-in for a manufacturer's processing)."""

    manufacturer: str
    modality: str
    gamma: float
    contrast: float
    noise: float
    blur_mm: float
    collimation: float  # fraction of the border that may be collimated
    bits_stored: int
    monochrome1: bool
    jpeg2000: bool
    rescale: tuple[float, float]  # slope, intercept
    spacing_tag: str  # PixelSpacing | ImagerPixelSpacing | none


PROFILES: tuple[Profile, ...] = (
    Profile("SIMULATED Vendor A", "CR", 0.80, 1.15, 0.020, 0.35, 0.06, 12, True, False,
            (1.0, 0.0), "ImagerPixelSpacing"),
    Profile("SIMULATED Vendor B", "DX", 1.00, 1.00, 0.015, 0.25, 0.03, 14, False, True,
            (1.0, 0.0), "PixelSpacing"),
    Profile("SIMULATED Vendor C", "DX", 1.25, 0.90, 0.025, 0.45, 0.08, 16, False, False,
            (0.5, -1024.0), "PixelSpacing"),
    Profile("SIMULATED Vendor D", "CR", 0.90, 1.25, 0.030, 0.55, 0.10, 15, True, True,
            (1.0, 0.0), "ImagerPixelSpacing"),
    Profile("SIMULATED Vendor E", "DX", 1.10, 1.05, 0.018, 0.30, 0.05, 12, False, False,
            (1.0, 0.0), "none"),
)

# 5x7 bitmaps of the side markers.
_GLYPHS = {
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
}


def make_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Trabecular-like texture (zero mean, unit-ish SD): band-passed, vertically streaked noise."""
    base = rng.standard_normal(shape).astype(np.float32)
    fine = ndimage.gaussian_filter(base, sigma=(2.2, 1.0))
    coarse = ndimage.gaussian_filter(base, sigma=6.0)
    tex = fine - 0.6 * coarse
    return tex / (tex.std() + 1e-6)


def _poly(layer: np.ndarray, pts: np.ndarray, value: float) -> None:
    """Add ``value`` inside the polygon ``pts`` (x, y pixels).

    Pillow's scan-line fill on the polygon's bounding box: scikit-image's
    ``draw.polygon`` tests every box pixel against every edge, which was 50x
    slower for the long rib and envelope outlines.
    """
    h, w = layer.shape
    x0, y0 = np.floor(pts.min(axis=0)).astype(int)
    x1, y1 = np.ceil(pts.max(axis=0)).astype(int) + 1
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    mask = Image.new("1", (cx1 - cx0, cy1 - cy0), 0)
    ImageDraw.Draw(mask).polygon((pts - [cx0, cy0]).ravel().tolist(), fill=1)
    layer[cy0:cy1, cx0:cx1] += value * np.asarray(mask, dtype=np.float32)


def _shrink(pts: np.ndarray, by: float) -> np.ndarray:
    c = pts.mean(axis=0)
    size = np.linalg.norm(pts - c, axis=1).mean()
    return c + (pts - c) * max(0.1, 1 - by / max(size, 1e-6))


def _body_outline(p: np.ndarray) -> np.ndarray:
    """Polygon through the six keypoints: superior endplate, anterior wall, inferior, posterior."""
    return p[[0, 1, 2, 5, 4, 3]]


def _arc(start: np.ndarray, end: np.ndarray, bulge: float, width: float, n: int = 24) -> np.ndarray:
    """A thick circular-ish arc (rib) as a polygon."""
    t = np.linspace(0, 1, n)[:, None]
    line = start + t * (end - start)
    normal = np.array([-(end - start)[1], (end - start)[0]])
    normal = normal / (np.linalg.norm(normal) + 1e-9)
    centre = line + (4 * t * (1 - t)) * bulge * normal
    return np.vstack([centre + width / 2 * normal, (centre - width / 2 * normal)[::-1]])


def render(
    column: Column,
    *,
    window_mm: tuple[float, float, float, float],
    shape: tuple[int, int],
    bmd: float,
    bmi: float,
    profile: Profile,
    facing_left: bool,
    texture: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one radiograph.

    Parameters
    ----------
    column : Column
        Anatomy in mm (canonical frame, anterior = +x).
    window_mm : (top, left, height, width)
        The detector area in mm, in the canonical frame.
    shape : (H, W)
        Pixels.

    Returns
    -------
    image : float32 (H, W) in [0, 1], bone bright
    points_px : (18, 6, 2) keypoints in pixel (x, y)
    """
    h, w = shape
    top, left, height_mm, _ = window_mm
    mm = height_mm / h  # mm per pixel (square pixels)

    def to_px(p: np.ndarray) -> np.ndarray:
        q = (p - [left, top]) / mm
        if facing_left:  # anterior towards image-left
            q = q.copy()
            q[..., 0] = (w - 1) - q[..., 0]
        return q

    pts = to_px(column.points)
    tissue = np.zeros(shape, np.float32)
    bone = np.zeros(shape, np.float32)
    trab = np.zeros(shape, np.float32)

    ant_x = column.points[:, 2, 0].max()
    post_x = column.points[:, 0, 0].min()
    thickness = 1.0 + 0.06 * (bmi - 24.0)
    y_all = np.array([top - 200, top + height_mm + 200])
    # soft-tissue envelope: back skin to front skin, smooth edges later by blur
    back = post_x - (55 + 2.5 * (bmi - 24)) * 1.0
    front = ant_x + (110 + 6.0 * (bmi - 24))
    env = np.array([[back, y_all[0]], [front, y_all[0]], [front, y_all[1]], [back, y_all[1]]])
    _poly(tissue, to_px(env), 0.55 * thickness)
    # extra muscle mass posteriorly (paraspinal)
    para = np.array([[back + 5, y_all[0]], [post_x - 8, y_all[0]], [post_x - 8, y_all[1]],
                     [back + 5, y_all[1]]])
    _poly(tissue, to_px(para), 0.12)
    # lungs: an air-filled field anterior to the thoracic spine, diaphragm dome near T10-T11
    t2, t11 = column.points[LEVELS.index("T2")], column.points[LEVELS.index("T11")]
    dome = t11[:, 1].mean() - 10
    lung = np.array([[ant_x + 4, t2[:, 1].min()], [front - 25, t2[:, 1].min() + 25],
                     [front - 20, dome - 40], [ant_x + 70, dome], [ant_x + 4, dome + 25]])
    _poly(tissue, to_px(lung), -0.28)
    lung_post = np.array([[post_x - 50, t2[:, 1].min() + 20], [post_x - 5, t2[:, 1].min()],
                          [post_x - 5, dome + 35], [post_x - 45, dome + 10]])
    _poly(tissue, to_px(lung_post), -0.12)
    # ribs over the thoracic levels (two sides, slightly offset by magnification)
    for i, name in enumerate(LEVELS):
        if not name.startswith("T"):
            continue
        p = column.points[i]
        y0 = p[:, 1].mean()
        for side, dx in ((0, 0.0), (1, 6.0)):
            start = np.array([post_x - 35 + dx, y0 - 6])
            end = np.array([ant_x + 95 + dx, y0 + 48 + 2 * side])
            rib = _arc(start, end, -18 + 4 * side, 8.0)
            _poly(bone, to_px(rib), 0.06)
            _poly(bone, to_px(_shrink(rib, 2.0)), -0.035)
    # posterior elements and vertebral bodies
    for i in range(len(LEVELS)):
        p = column.points[i]
        a = p[2] - p[0]
        a = a / (np.linalg.norm(a) + 1e-9)
        d = p[3] - p[0]
        hp = np.linalg.norm(d)
        d = d / (hp + 1e-9)
        spin = 0.9 if LEVELS[i].startswith("L") else 1.2
        tip = p[0] - a * column.depth[i] * spin + d * hp * (0.9 if LEVELS[i].startswith("T") else 0.4)
        post = np.array([p[0] + d * hp * 0.1, p[0] - a * 8 + d * hp * 0.05, tip,
                         tip + d * 9, p[0] - a * 9 + d * hp * 0.8, p[3] - d * hp * 0.2])
        _poly(bone, to_px(post), 0.22)
        outline = to_px(_body_outline(p))
        _poly(bone, outline, 0.50)  # cortical shell
        inner = _shrink(outline, 1.6 / mm)
        _poly(bone, inner, -0.50)
        _poly(trab, inner, 1.0)
    # sacrum and pelvis
    sac = to_px(column.sacrum)
    _poly(bone, sac, 0.32)
    _poly(bone, _shrink(sac, 2.0 / mm), -0.12)
    s_mid = column.sacrum.mean(axis=0)
    ilium = np.array([s_mid + np.array([r * np.cos(t) * 1.1, r * np.sin(t) * 0.8])
                      for t, r in zip(np.linspace(0, 2 * np.pi, 40), np.full(40, 75.0))])
    ilium += [35, -25]
    _poly(tissue, to_px(ilium), 0.16)
    femur = np.array([s_mid + np.array([60 + 28 * np.cos(t), 95 + 28 * np.sin(t)])
                      for t in np.linspace(0, 2 * np.pi, 30)])
    _poly(tissue, to_px(femur), 0.12)

    density = 0.25 + 0.55 * np.clip(bmd, 0.3, 1.3)
    tex = texture[: h, : w] if texture.shape[0] >= h and texture.shape[1] >= w else \
        np.resize(texture, shape)
    tissue = _smooth_coarse(tissue, sigma_px=7.0 / mm)
    att = tissue + bone + trab * density * (1.0 + 0.28 * tex)
    att = ndimage.gaussian_filter(att, sigma=max(profile.blur_mm / mm, 0.4))
    img = 1.0 - np.exp(-1.6 * np.clip(att, 0, None))
    img = np.clip((img - img.min()) / (np.ptp(img) + 1e-6), 0, 1) ** profile.gamma
    img = np.clip(0.5 + profile.contrast * (img - 0.5), 0, 1)
    img = img + profile.noise * rng.standard_normal(shape, dtype=np.float32) * np.sqrt(img + 0.05)
    # collimation: unexposed borders are bright
    for edge in range(4):
        frac = rng.uniform(0, profile.collimation)
        k = int(frac * (h if edge < 2 else w))
        if k:
            sl = (slice(0, k) if edge == 0 else slice(h - k, h), slice(None)) if edge < 2 else \
                (slice(None), slice(0, k) if edge == 2 else slice(w - k, w))
            img[sl] = 0.92 + 0.02 * img[sl]
    _marker(img, "L" if facing_left else "R", rng)
    return np.clip(img, 0, 1).astype(np.float32), pts


def _smooth_coarse(layer: np.ndarray, sigma_px: float, factor: int = 4) -> np.ndarray:
    """Wide Gaussian blur computed at 1/``factor`` resolution (soft-tissue edges)."""
    h, w = layer.shape
    small = layer[: h - h % factor or h, : w - w % factor or w]
    small = small.reshape(small.shape[0] // factor, factor, small.shape[1] // factor, factor).mean((1, 3))
    small = ndimage.gaussian_filter(small, sigma_px / factor)
    # nearest-neighbour upsampling: the later acquisition blur smooths the steps
    big = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    out = np.empty_like(layer)
    out[: big.shape[0], : big.shape[1]] = big[: h, : w]
    if big.shape[0] < h:
        out[big.shape[0]:] = out[big.shape[0] - 1]
    if big.shape[1] < w:
        out[:, big.shape[1]:] = out[:, big.shape[1] - 1: big.shape[1]]
    return out


def _marker(img: np.ndarray, letter: str, rng: np.random.Generator) -> None:
    h, w = img.shape
    cell = max(1, h // 160)
    glyph = np.array([[c == "1" for c in row] for row in _GLYPHS[letter]])
    big = np.kron(glyph, np.ones((cell, cell), bool))
    y0 = int(rng.uniform(0.03, 0.12) * h)
    x0 = int(rng.uniform(0.04, 0.15) * w) if rng.random() < 0.5 else w - big.shape[1] - int(0.06 * w)
    region = img[y0:y0 + big.shape[0], x0:x0 + big.shape[1]]
    region[big[: region.shape[0], : region.shape[1]]] = 0.98
