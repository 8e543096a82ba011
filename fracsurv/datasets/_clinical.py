"""Clinical variables, prevalent fractures and incident-fracture outcomes (simulated).

All coefficients are documented in ``docs/synthetic_cohort.md``; the true
log-hazard is returned so that any model can be compared with the oracle.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fracsurv.datasets._anatomy import GRADED_LEVELS

from fracsurv.contract import CLINICAL_COLUMNS  # noqa: F401  # isort: skip (data contract)

# log-hazard of an incident fracture (per year), proportional hazards
HAZARD_COEF = {
    "age_per10": 0.35, "female": 0.25, "bmi_per5": -0.10, "tscore": -0.30,
    "spine_bmd_per_sd": -0.40,
    "n_vf": 0.30, "sdi": 0.25, "glucocorticoids": 0.45, "prior_fracture": 0.35,
    "parental_hip_fracture": 0.20, "smoking": 0.15, "rheumatoid_arthritis": 0.20,
    "secondary_osteoporosis": 0.15, "alcohol_3plus": 0.15,
}
WEIBULL_SHAPE = 1.15
WEIBULL_SCALE = 0.0106
# spine (L1-L4) BMD, g/cm2: mean and SD of the Diff-X cohort, correlation with the
# femoral-neck T-score as between DXA sites in practice
SPINE_BMD_MEAN, SPINE_BMD_SD, SPINE_FN_CORR = 0.895, 0.212, 0.65  # baseline cumulative hazard at t years: scale * t**shape
# FRAX stand-in: 10-year probability from the clinical factors only
FRAX_STANDIN_COEF = {
    "age_per10": 0.45, "female": 0.30, "bmi_per5": -0.15, "tscore": -0.40,
    "prior_fracture": 0.55, "parental_hip_fracture": 0.35, "smoking": 0.20,
    "glucocorticoids": 0.50, "rheumatoid_arthritis": 0.30, "secondary_osteoporosis": 0.20,
    "alcohol_3plus": 0.20,
}
FRAX_STANDIN_BASE = 0.07  # 10-year cumulative hazard of the reference patient

# prevalence of fractures by level (T4..L5): peaks at T7-T8 and T12-L1
_LEVEL_WEIGHT = {"T4": 0.5, "T5": 0.7, "T6": 1.0, "T7": 1.6, "T8": 1.6, "T9": 1.0, "T10": 0.9,
                 "T11": 1.3, "T12": 2.2, "L1": 2.2, "L2": 1.2, "L3": 0.9, "L4": 0.7, "L5": 0.5}


def _logit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def clinical(n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Age, sex, anthropometry, femoral-neck T-score, BMD and FRAX-style risk factors."""
    age = np.clip(50 + rng.gamma(3.41, 4.60, n), 50, 95)  # mean 65.7, SD 8.5
    female = (rng.random(n) < 0.66).astype(int)
    height = np.where(female == 1, rng.normal(155.5, 6, n), rng.normal(168.5, 6.5, n))
    height -= 0.12 * (age - 60).clip(0)
    bmi = np.clip(rng.normal(24.0, 3.2, n), 16, 40)
    weight = bmi * (height / 100) ** 2
    tscore = rng.normal(-1.37 - 0.035 * (age - 65.7) - 0.5 * female + 0.07 * (bmi - 24),
                        1.115, n)
    tscore = np.clip(tscore, -5.0, 2.5)
    bmd = 0.858 + 0.12 * tscore  # femoral neck g/cm2 (NHANES III young-adult reference)
    z_fn = (tscore + 1.7) / 1.2
    z_spine = SPINE_FN_CORR * z_fn + np.sqrt(1 - SPINE_FN_CORR**2) * rng.standard_normal(n)
    spine_bmd = np.clip(SPINE_BMD_MEAN + SPINE_BMD_SD * z_spine, 0.35, 1.6)
    p_prior = _logit(-2.75 + 0.03 * (age - 66) - 0.35 * (tscore + 1.7))
    df = pd.DataFrame({
        "age": age.round(1),
        "sex": np.where(female == 1, "female", "male"),
        "female": female,
        "height_cm": height.round(1),
        "weight_kg": weight.round(1),
        "bmi": bmi.round(2),
        "tscore_fn": tscore.round(2),
        "bmd": bmd.round(4),
        "spine_bmd": spine_bmd.round(4),
        "prior_fracture": (rng.random(n) < p_prior).astype(int),
        "parental_hip_fracture": (rng.random(n) < 0.12).astype(int),
        "smoking": (rng.random(n) < np.where(female == 1, 0.06, 0.28)).astype(int),
        "glucocorticoids": (rng.random(n) < 0.047).astype(int),
        "rheumatoid_arthritis": (rng.random(n) < np.where(female == 1, 0.032, 0.017)).astype(int),
        "secondary_osteoporosis": (rng.random(n) < 0.02).astype(int),
        "alcohol_3plus": (rng.random(n) < np.where(female == 1, 0.03, 0.14)).astype(int),
    })
    return df


def _linear(df: pd.DataFrame, coef: dict[str, float]) -> np.ndarray:
    lp = (coef["age_per10"] * (df["age"] - 66) / 10 + coef["female"] * df["female"]
          + coef["bmi_per5"] * (df["bmi"] - 24) / 5 + coef["tscore"] * (df["tscore_fn"] + 1.5))
    for k in ("prior_fracture", "parental_hip_fracture", "smoking", "glucocorticoids",
              "rheumatoid_arthritis", "secondary_osteoporosis", "alcohol_3plus"):
        lp = lp + coef[k] * df[k]
    return lp.to_numpy(dtype=float)


def frax_standin(df: pd.DataFrame) -> np.ndarray:
    """10-year major osteoporotic fracture probability (%) — a documented stand-in, NOT FRAX."""
    lp = _linear(df, FRAX_STANDIN_COEF)
    return 100 * (1 - np.exp(-FRAX_STANDIN_BASE * np.exp(lp)))


def prevalent_fractures(df: pd.DataFrame, visible: list[list[str]], rng: np.random.Generator
                        ) -> list[list[tuple[str, int, str, float]]]:
    """Per patient: (level, grade, morphology, target reduction) of prevalent deformities.

    Probability of any fracture rises with age and falls with T-score (about 18 %
    overall); levels are drawn among the patient's visible graded levels with
    peaks at T7-T8 and T12-L1.
    """
    p_any = _logit(-1.86 + 0.055 * (df["age"] - 66) - 0.55 * (df["tscore_fn"] + 1.5)
                   + 0.5 * df["glucocorticoids"] + 0.4 * df["prior_fracture"]).to_numpy()
    out = []
    for i in range(len(df)):
        levels = [lv for lv in visible[i] if lv in GRADED_LEVELS]
        if not levels or rng.random() >= p_any[i]:
            out.append([])
            continue
        k = min(len(levels), 1 + rng.poisson(0.45))
        w = np.array([_LEVEL_WEIGHT[lv] for lv in levels])
        chosen = rng.choice(levels, size=k, replace=False, p=w / w.sum())
        fx = []
        for lv in chosen:
            grade = int(rng.choice([1, 2, 3], p=[0.42, 0.38, 0.20]))
            morph = str(rng.choice(["wedge", "biconcave", "crush"], p=[0.6, 0.25, 0.15]))
            fx.append((str(lv), grade, morph, reduction_for_grade(grade, rng)))
        out.append(fx)
    return out


def reduction_for_grade(grade: int, rng: np.random.Generator) -> float:
    """A height reduction well inside the grade's band (away from the boundaries)."""
    lo, hi = {1: (0.215, 0.235), 2: (0.28, 0.37), 3: (0.44, 0.55)}[grade]
    return float(rng.uniform(lo, hi))


def outcomes(df: pd.DataFrame, n_vf: np.ndarray, sdi: np.ndarray, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True log-hazard, event indicator, observed time (years) and latent event time."""
    z_spine = (df["spine_bmd"].to_numpy() - SPINE_BMD_MEAN) / SPINE_BMD_SD
    lp = _linear(df, HAZARD_COEF) + HAZARD_COEF["n_vf"] * np.minimum(n_vf, 3) \
        + HAZARD_COEF["sdi"] * np.minimum(sdi, 6) + HAZARD_COEF["spine_bmd_per_sd"] * z_spine
    e = rng.exponential(1.0, len(df))
    t_event = (e / (WEIBULL_SCALE * np.exp(lp))) ** (1 / WEIBULL_SHAPE)
    admin = rng.uniform(0.5, 6.0, len(df))  # administrative end of follow-up
    dropout = rng.exponential(30.0, len(df))  # loss to follow-up
    censor = np.minimum(admin, dropout)
    event = t_event <= censor
    time = np.maximum(np.where(event, t_event, censor), 1.0 / 365.25)
    return lp, event, time, t_event
