"""The ageing process of a simulated patient: what changes in the image with the years.

A patient draws their persistent traits once (:class:`AgeingTraits`: a biological-age
offset, how fast their discs degenerate, the calcified plaques of their aorta with the
age at which each appears, osteophyte propensity per level). :meth:`AgeingTraits.at`
then gives the state at any age (:class:`AgeingState`), so a follow-up is the same
patient aged by the elapsed years: plaques present at baseline persist and grow, new
ones appear, discs narrow, osteophytes and endplate sclerosis grow, cortices thin.

All rates are documented in ``docs/synthetic_cohort.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fracsurv.datasets._anatomy import LEVELS

N_LEVELS = len(LEVELS)
_LUMBAR = np.array([lv.startswith("L") for lv in LEVELS])
_LOWER = np.array([lv in ("T11", "T12", "L1", "L2", "L3", "L4", "L5") for lv in LEVELS])
# aorta: descending thoracic aorta from T5, abdominal aorta to its bifurcation at L4
AORTA_LEVELS: tuple[str, ...] = LEVELS[LEVELS.index("T5"): LEVELS.index("L4") + 1]
MAX_PLAQUES = 64


def _ramp(x: np.ndarray | float, lo: float, hi: float) -> np.ndarray | float:
    """0 below ``lo``, 1 at ``hi``, linear between, allowed to exceed 1 beyond ``hi``."""
    return np.clip((np.asarray(x, dtype=float) - lo) / (hi - lo), 0.0, None)


@dataclass(frozen=True)
class AgeingState:
    """What the image shows at one age."""

    bio_age: float
    disc_scale: np.ndarray  # (18,) multiplier of the healthy disc heights
    cortex_mm: float  # cortical shell thickness of the vertebral bodies
    endplate_mm: float  # endplate thickness (sclerosis thickens it)
    osteophyte_mm: np.ndarray  # (18, 2) anterior beak length at the superior / inferior corner
    plaques: np.ndarray  # (k, 5): position along the aorta (0..1), wall (0 post / 1 ant),
    #                       length mm, width mm, density
    aorta_radius_mm: float


@dataclass(frozen=True)
class AgeingTraits:
    """A patient's persistent ageing traits, drawn once."""

    age: float
    bio_offset: float
    disc_rate: np.ndarray  # (18,) fractional disc-height loss per year after 45
    osteophyte_factor: np.ndarray  # (18, 2)
    plaque_onset: np.ndarray  # (MAX_PLAQUES,) biological age at which each plaque appears
    plaque_where: np.ndarray  # (MAX_PLAQUES, 2): position along the aorta, wall side
    plaque_size: np.ndarray  # (MAX_PLAQUES, 2): length and width scale

    @classmethod
    def draw(cls, age: float, female: bool, smoking: bool, rng: np.random.Generator
             ) -> AgeingTraits:
        """Draw the traits of a patient aged ``age`` at baseline."""
        bio_offset = float(rng.normal(0.0, 2.0))
        disc_rate = np.where(_LUMBAR, 0.007, 0.0045) * rng.lognormal(0.0, 0.15)
        disc_rate = disc_rate * rng.lognormal(0.0, 0.12, N_LEVELS)
        osteo = np.where(_LOWER, 1.0, 0.6)[:, None] * rng.uniform(0.5, 1.3, (N_LEVELS, 2))
        # onset ages: the number of plaques present grows as ((bio age - 42) / 50)^2
        onset = 42.0 + 50.0 * np.sqrt(rng.random(MAX_PLAQUES))
        if smoking:
            onset -= 4.0
        if female:
            onset += 2.0
        where = np.column_stack([rng.random(MAX_PLAQUES), rng.random(MAX_PLAQUES) < 0.6])
        size = np.column_stack([rng.uniform(0.6, 1.4, MAX_PLAQUES),
                                rng.uniform(0.7, 1.3, MAX_PLAQUES)])
        return cls(float(age), bio_offset, disc_rate, osteo, onset, where, size)

    def at(self, years: float) -> AgeingState:
        """The state ``years`` after baseline."""
        bio = self.age + years + self.bio_offset
        disc = np.clip(1.0 - self.disc_rate * max(bio - 45.0, 0.0), 0.45, 1.0)
        osteo = 4.5 * float(_ramp(bio, 50.0, 85.0)) ** 1.3 * self.osteophyte_factor
        on = self.plaque_onset <= bio
        grown = np.clip((bio - self.plaque_onset[on]) / 12.0, 0.0, 1.5)
        plaques = np.column_stack([
            self.plaque_where[on, 0], self.plaque_where[on, 1],
            (3.0 + 9.0 * grown) * self.plaque_size[on, 0],
            (1.2 + 1.0 * grown) * self.plaque_size[on, 1],
            0.5 + 0.5 * np.minimum(grown, 1.0),
        ]) if on.any() else np.zeros((0, 5))
        return AgeingState(
            bio_age=float(bio),
            disc_scale=disc,
            cortex_mm=float(1.25 - 0.008 * max(bio - 50.0, 0.0)),
            endplate_mm=float(0.9 + 0.9 * float(_ramp(bio, 55.0, 85.0))),
            osteophyte_mm=osteo,
            plaques=plaques,
            aorta_radius_mm=float(9.0 + 0.06 * max(bio - 50.0, 0.0)),
        )
