"""Soft tissue, air and organs of a simulated lateral radiograph, on a coarse grid.

Each structure contributes its lateral path length (the beam of a lateral film runs
left to right through the patient): the torso is an elliptic cylinder whose depth and
width follow BMI; the lungs subtract air above the two diaphragm domes (the right one
higher); the heart, the female breast and the shoulder girdle add tissue; bowel gas
subtracts air over the lumbar spine. All of it is smooth, so it is computed on a grid
``factor`` times coarser than the image and upsampled (drawn by hand: no library
simulates radiograph anatomy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fracsurv.datasets._anatomy import LEVEL_INDEX, Column
from fracsurv.datasets._bone import MU_SOFT, Frame


@dataclass(frozen=True)
class SoftTraits:
    """A patient's persistent soft-tissue geometry (mm), drawn once."""

    back_mm: float
    front_mm: float
    half_width_mm: float
    dome_shift_mm: float
    heart_scale: float
    breast_mm: float
    gas: np.ndarray  # (k, 4): relative y, relative x, radius mm, persistence in [0, 1]

    @classmethod
    def draw(cls, bmi: float, female: bool, rng: np.random.Generator) -> SoftTraits:
        """Draw from BMI and sex."""
        k = int(rng.integers(3, 9))
        gas = np.column_stack([rng.random(k), rng.random(k), rng.uniform(7, 22, k), rng.random(k)])
        return cls(
            back_mm=55 + 2.8 * (bmi - 24) + rng.normal(0, 4),
            front_mm=110 + 6.5 * (bmi - 24) + rng.normal(0, 6),
            half_width_mm=140 + 5.0 * (bmi - 24) + rng.normal(0, 6),
            dome_shift_mm=float(rng.normal(0, 10)),
            heart_scale=float(rng.uniform(0.9, 1.15)),
            breast_mm=float((35 + 4 * (bmi - 24)) * rng.uniform(0.7, 1.3)) if female else 0.0,
            gas=gas,
        )


def _cyl(x: np.ndarray, centre: np.ndarray | float, half_depth: np.ndarray | float,
         half_width: np.ndarray | float) -> np.ndarray:
    """Lateral path length through an elliptic cross-section at AP position ``x``."""
    r = (x - centre) / np.maximum(half_depth, 1e-3)
    return 2.0 * half_width * np.sqrt(np.clip(1.0 - r * r, 0.0, None))


def _ellipse_chord(X: np.ndarray, Y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
                   width: float) -> np.ndarray:
    r2 = ((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2
    return width * np.sqrt(np.clip(1.0 - r2, 0.0, None))


def soft_attenuation(frame: Frame, column: Column, traits: SoftTraits, factor: int,
                     gas_rng: np.random.Generator) -> np.ndarray:
    """Attenuation of soft tissue and air on the coarse grid (shape ``ceil(H/f), ceil(W/f)``).

    ``gas_rng`` moves the non-persistent bowel gas between visits.
    """
    h, w = frame.shape
    hc, wc = -(-h // factor), -(-w // factor)
    cols = (np.arange(wc) * factor + (factor - 1) / 2) * frame.mm + frame.left
    rows = (np.arange(hc) * factor + (factor - 1) / 2) * frame.mm + frame.top
    X, Y = np.meshgrid(cols.astype(np.float32), rows.astype(np.float32))
    pts = column.points
    # 1. the torso follows the spine: posterior and anterior body margins by height
    cy = pts[:, :, 1].mean(axis=1)
    post = np.interp(rows, cy, pts[:, [0, 3], 0].min(axis=1))[:, None]
    ant = np.interp(rows, cy, pts[:, [2, 5], 0].max(axis=1))[:, None]
    y_dome = cy[LEVEL_INDEX["T10"]] + traits.dome_shift_mm
    below = np.clip((rows[:, None] - y_dome) / 80.0, 0.0, 1.0)  # abdomen protrudes more
    back = post - traits.back_mm
    front = ant + traits.front_mm * (1.0 + 0.12 * below)
    torso = _cyl(X, (back + front) / 2, (front - back) / 2, traits.half_width_mm)
    # 2. lungs above the diaphragm domes (right dome higher), apex above T1
    apex = cy[LEVEL_INDEX["T1"]] - 25.0
    x_peak = ant + 25.0
    air = np.zeros_like(X)
    for drop in (0.0, 16.0):
        dome = y_dome + drop + ((X - x_peak) / 70.0) ** 2 * 30.0
        inside = np.clip((dome - Y) / 6.0, 0.0, 1.0) * np.clip((Y - apex) / 30.0, 0.0, 1.0)
        lung = _cyl(X, (back + 18 + front - 22) / 2, (front - 22 - back - 18) / 2,
                    0.36 * traits.half_width_mm)
        air += inside * lung
    # 3. heart over the lower anterior thorax, in front of the lungs
    hs = traits.heart_scale
    heart = _ellipse_chord(X, Y, float(ant.mean()) + 55 * hs, y_dome - 45 * hs, 60 * hs,
                           65 * hs, 110 * hs)
    air = np.clip(air - heart, 0.0, None)
    # 4. breast and shoulder girdle add tissue
    extra = np.zeros_like(X)
    if traits.breast_mm > 0:
        extra += _ellipse_chord(X, Y, float(front.mean()) - 10.0, cy[LEVEL_INDEX["T8"]],
                                1.6 * traits.breast_mm, 2.0 * traits.breast_mm, 70.0)
    shoulder = np.clip((cy[LEVEL_INDEX["T3"]] - Y) / 90.0, 0.0, 1.0) ** 1.5
    extra += shoulder * _cyl(X, (back + front) / 2, (front - back) / 2 * 0.8, 30.0)
    # 5. bowel gas over the lumbar spine: persistent loops and visit-specific bubbles
    top_gas = y_dome + 40.0
    bottom_gas = max(cy[LEVEL_INDEX["L5"]] + 20.0, top_gas + 40.0)
    for ry, rx, rad, keep in traits.gas:
        if keep < 0.25:  # a quarter of the gas moves between visits
            ry, rx = gas_rng.random(), gas_rng.random()
        gy = top_gas + ry * (bottom_gas - top_gas)
        gx = float(np.interp(gy, cy, pts[:, 2, 0])) - 10.0 + rx * 90.0
        air += _ellipse_chord(X, Y, gx, gy, rad, rad * 0.8, 1.6 * rad)
    path = np.clip(torso + extra - air, 0.0, None)
    # organ borders are not sharp: ~6 mm of blur (on the coarse grid)
    path = ndimage.gaussian_filter(path, 6.0 / (frame.mm * factor))
    return (MU_SOFT * path).astype(np.float32)
