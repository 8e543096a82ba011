"""The state that ``fracsurv demo``'s stages pass along, and helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fracsurv.metrics import evaluation_times
from fracsurv.report.html import Report

__all__ = ["DemoContext", "clinical_columns", "eval_times", "model_frame"]


@dataclass
class DemoContext:
    """State passed from stage to stage; every field a stage sets is declared here.

    Parameters
    ----------
    out : Path
        Output folder (report, caches).
    seed : int
        Seed of the split and of every model.
    tiny : bool
        Smallest configuration (the test suite's).
    report : Report
        The HTML report the stages add sections to.
    n_patients : int, optional
        Cohort size (default: the demo cohort's).
    image_shape : (int, int), optional
        Image size of the cohort.
    retrain : bool
        Train the image models that ship pretrained (``fracsurv.pretrained``)
        from scratch instead of loading them.
    """

    out: Path
    seed: int
    tiny: bool
    report: Report
    n_patients: int | None = None
    image_shape: tuple[int, int] | None = None
    retrain: bool = False
    quiet: bool = False  # progress lines off (fracsurv demo --quiet)
    model_sources: dict[str, str] = field(default_factory=dict)  # component -> where from
    shipped_models: dict[str, Any] = field(default_factory=dict)  # comparison rows not fitted here
    cohort: Any = None
    truth: Any = None
    clinical_columns: list[str] = field(default_factory=list)
    train: pd.DataFrame | None = None
    test: pd.DataFrame | None = None
    y_train: np.ndarray | None = None
    y_test: np.ndarray | None = None
    split_index: tuple[np.ndarray, np.ndarray] | None = None  # (train, test) row positions
    detection: dict[str, Any] | None = None  # VertebraCropper's test-split detection summary
    pvf_auc: float | None = None  # crop pVF scorer's test AUROC
    risks: dict[str, np.ndarray] = field(default_factory=dict)  # model name -> test risk
    fitted: dict[str, Any] = field(default_factory=dict)  # pipeline components
    models: dict[str, Any] = field(default_factory=dict)  # name -> (survival model, columns)
    timings: dict[str, float] = field(default_factory=dict)

    def say(self, message: str) -> None:
        """One progress line on stdout (nothing with ``quiet``)."""
        if not self.quiet:
            print(message, flush=True)


def clinical_columns(ctx: DemoContext) -> list[str]:
    """The cohort's clinical columns (every numeric training column when none are named)."""
    if ctx.clinical_columns:
        return list(ctx.clinical_columns)
    return [c for c in ctx.train.columns if pd.api.types.is_numeric_dtype(ctx.train[c])]


def eval_times(ctx: DemoContext) -> np.ndarray:
    """Evaluation times of AUC(t) and the Brier score, inside both splits' follow-up."""
    return evaluation_times(ctx.y_train, ctx.y_test, 8 if not ctx.tiny else 4)


def model_frame(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``frame[cols]`` with the numeric columns as float (image columns stay references)."""
    out = frame[cols].copy()
    for c in cols:
        if c not in ("crops", "image"):
            out[c] = out[c].astype(float)
    return out
