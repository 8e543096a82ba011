"""One simulated patient: the baseline plan (anatomy, keypoints, grades), then the visits.

The plan comes first and without images, because the outcome model needs the grades
that the baseline keypoints give (one source of truth for the hazard, the labels and
the images). :func:`simulate_visits` then ages the same anatomy for each follow-up and
renders every visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.datasets import _clinical as clin
from fracsurv.datasets._ageing import AgeingTraits
from fracsurv.datasets._anatomy import (
    GRADED_LEVELS,
    LEVEL_INDEX,
    LEVELS,
    Column,
    Fracture,
    build_column,
)
from fracsurv.datasets._render import PROFILES, PatientLook, Profile, render
from fracsurv.vertebrae.genant import grade_vertebrae

# field of view -> (top level, bottom level, sacrum in view, share), the Diff-X study's mix
FOV_TYPES: dict[str, tuple[str, str, bool, float]] = {
    "thoraco-lumbar": ("T4", "L4", False, 0.28),
    "lumbo-sacral": ("T11", "L5", True, 0.24),
    "thoraco-lumbo-sacral": ("T6", "L5", True, 0.16),
    "whole spine": ("C7", "L5", True, 0.25),
    "cervico-thoraco-lumbar": ("C7", "L2", False, 0.07),
}
_FOV_P = np.array([v[3] for v in FOV_TYPES.values()])
_FOV_P = _FOV_P / _FOV_P.sum()
BMD_LOSS_PER_YEAR = {1: 0.010, 0: 0.006}  # spine BMD, women / men
KYPHOSIS_PER_YEAR = 0.45


def fov_levels(fov: str) -> list[str]:
    """Levels from the field of view's top to its bottom vertebra."""
    top, bottom, _, _ = FOV_TYPES[fov]
    return list(LEVELS[LEVEL_INDEX[top]: LEVEL_INDEX[bottom] + 1])


def draw_fov(rng: np.random.Generator) -> str:
    """The first draw of a patient's plan stream."""
    return str(rng.choice(list(FOV_TYPES), p=_FOV_P))


@dataclass
class Plan:
    """A patient's baseline: everything but the pixels."""

    fov: str
    profile: Profile
    facing_left: bool
    size: float
    kyphosis: float
    lordosis: float
    tilt: float
    col_seed: int
    ageing: AgeingTraits
    column: Column
    window: tuple[float, float, float, float]
    points_px: np.ndarray
    vertebrae: pd.DataFrame  # visible vertebrae with grades read from the keypoints


def _window(column: Column, fov: str, shape: tuple[int, int], rng: np.random.Generator
            ) -> tuple[float, float, float, float]:
    top_lv, bottom_lv, sacral, _ = FOV_TYPES[fov]
    pts = column.points
    top = pts[LEVEL_INDEX[top_lv], :, 1].min() - rng.uniform(10, 30)
    bottom = (column.sacrum[:, 1].max() if sacral else pts[LEVEL_INDEX[bottom_lv], :, 1].max())
    bottom += rng.uniform(10, 30)
    height = bottom - top
    width = height * shape[1] / shape[0]
    xc = pts[:, :, 0].mean()
    left = xc - rng.uniform(0.32, 0.45) * width
    return float(top), float(left), float(height), float(width)


def project(column: Column, window: tuple[float, float, float, float], shape: tuple[int, int],
            facing_left: bool) -> np.ndarray:
    """Keypoints in pixels, exactly as :func:`~fracsurv.datasets._render.render` maps them."""
    mm = window[2] / shape[0]
    pts = (column.points - [window[1], window[0]]) / mm
    if facing_left:
        pts[..., 0] = (shape[1] - 1) - pts[..., 0]
    return pts


def _visible(points_px: np.ndarray, shape: tuple[int, int], margin: float = 2.0) -> np.ndarray:
    h, w = shape
    x, y = points_px[..., 0], points_px[..., 1]
    return ((x >= margin) & (x <= w - 1 - margin) & (y >= margin) & (y <= h - 1 - margin)).all(-1)


def vertebra_table(points_px: np.ndarray, shape: tuple[int, int]) -> pd.DataFrame:
    """Visible vertebrae: level, points, box, and the Genant grade of the keypoints."""
    idx = np.flatnonzero(_visible(points_px, shape))
    pts = points_px[idx]
    grades, morph, red = grade_vertebrae(pts) if len(idx) else ([], [], [])
    rows = []
    for j, i in enumerate(idx):
        p = np.round(pts[j], 2)
        lo, hi = pts[j].min(axis=0), pts[j].max(axis=0)
        graded = LEVELS[i] in GRADED_LEVELS
        rows.append({"level": LEVELS[i], "points": p.tolist(),
                     "box": [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])],
                     "grade": int(grades[j]) if graded else 0,
                     "morphology": str(morph[j]) if graded else "normal",
                     "reduction": float(red[j])})
    return pd.DataFrame(rows, columns=["level", "points", "box", "grade", "morphology",
                                       "reduction"])


def keypoint_cells(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The ``keypoints`` cell of the data contract."""
    return [{"level": lv, "points": p} for lv, p in zip(table["level"], table["points"])]


def plan_patient(rng: np.random.Generator, row: dict[str, Any], fov: str,
                 shape: tuple[int, int]) -> Plan:
    """Draw the baseline anatomy of one patient (``rng`` has drawn the FOV already)."""
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    facing_left = bool(rng.random() < 0.7)
    size = row["height_cm"] / 165.0
    kyph = 30 + 0.35 * (row["age"] - 50) + 3 * row["female"] + rng.normal(0, 5)
    lord = 52 - 0.1 * (row["age"] - 50) + rng.normal(0, 6)
    tilt = float(rng.normal(0, 2.5))
    col_seed = int(rng.integers(2**31))
    ageing = AgeingTraits.draw(row["age"], bool(row["female"]), bool(row["smoking"]), rng)
    fx = {lv: Fracture(lv, red, morph) for lv, _, morph, red in row["fractures"]}
    column = build_column(size, kyph, lord, fx, np.random.default_rng(col_seed), tilt,
                          ageing.at(0.0).disc_scale)
    window = _window(column, fov, shape, rng)
    pts = project(column, window, shape, facing_left)
    return Plan(fov, profile, facing_left, size, float(kyph), float(lord), tilt, col_seed,
                ageing, column, window, pts, vertebra_table(pts, shape))


def _incident(fx: dict[str, Fracture], fov: str, rng: np.random.Generator) -> dict[str, Fracture]:
    free = [lv for lv in fov_levels(fov) if lv in GRADED_LEVELS and lv not in fx]
    out = dict(fx)
    if free:
        lv = str(rng.choice(free))
        g = int(rng.choice([1, 2, 3], p=[0.4, 0.4, 0.2]))
        out[lv] = Fracture(lv, clin.reduction_for_grade(g, rng),
                           str(rng.choice(["wedge", "biconcave", "crush"], p=[.6, .25, .15])))
    return out


def simulate_visits(plan: Plan, rng: np.random.Generator, row: dict[str, Any],
                    shape: tuple[int, int], n_followups: int, t_event: float, event: bool,
                    images: bool) -> dict[str, Any]:
    """Age the planned anatomy for each follow-up and render every visit."""
    # 1. the visits: elapsed years, BMD loss, kyphosis, incident fractures, pose jitter
    fx0 = dict(plan.column.fractures)
    visits = [(0.0, float(row["spine_bmd"]), plan.kyphosis, fx0, plan.window, plan.tilt)]
    incidents = []
    t_prev = 0.0
    for _ in range(n_followups):
        t_fu = float(min(max(t_prev + rng.uniform(1.0, 4.0), 0.5), 12.0))
        t_prev = t_fu
        incident = bool(event and t_event <= t_fu and rng.random() < 0.6)
        fx_k = _incident(visits[-1][3], plan.fov, rng) if incident else dict(visits[-1][3])
        bmd_k = float(row["spine_bmd"]) * (1 - BMD_LOSS_PER_YEAR[int(row["female"])] * t_fu)
        shift = rng.normal(0, 1.5, 2)  # positioning, mm
        win = plan.window
        visits.append((t_fu, bmd_k, plan.kyphosis + KYPHOSIS_PER_YEAR * t_fu, fx_k,
                       (win[0] + shift[1], win[1] + shift[0], win[2], win[3]),
                       plan.tilt + float(rng.normal(0, 0.3))))
        incidents.append(incident)
    # 2. the patient's persistent look, then one render per visit
    look = PatientLook.draw(plan.ageing, row["bmi"], bool(row["female"]), rng) if images else None
    out: dict[str, Any] = {"incident": incidents, "visits": []}
    for v, (t, bmd, ky, fx_v, win, tilt) in enumerate(visits):
        state = plan.ageing.at(t)
        column = plan.column if v == 0 else build_column(
            plan.size, ky, plan.lordosis, fx_v, np.random.default_rng(plan.col_seed), tilt,
            state.disc_scale)
        if images:
            img, pts = render(column, window_mm=win, shape=shape, spine_bmd=bmd, bmi=row["bmi"],
                              look=look, state=state, profile=plan.profile,
                              facing_left=plan.facing_left, rng=rng)
        else:
            img, pts = None, project(column, win, shape, plan.facing_left)
        table = plan.vertebrae if v == 0 else vertebra_table(pts, shape)
        out["visits"].append({"years": t, "image": img, "keypoints": keypoint_cells(table),
                              "vertebrae": table, "spine_bmd": bmd})
    return out
