"""Batch scoring of new patients with a saved pipeline (``fracsurv score``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.pipeline import Pipeline

from fracsurv.persist import load_pipeline

__all__ = ["score_frame", "score_patients"]

log = logging.getLogger("fracsurv.batch")

# Columns copied to the output besides the risk; never header-derived values.
_OUTPUT_COLUMNS = ("pvf", "pvf_sd", "gpvf", "gpvf_sd", "risk_group", "n_fractures", "max_grade")


def score_frame(pipe: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """Run ``pipe`` on ``X`` row-safely: rows that fail to load get NaN risk.

    Every transformer step runs in turn; after a step that reports a
    ``load_error`` column (``DicomLoader(on_error="skip")``), the failed rows are
    set aside and the others go on, so one bad file never costs the good ones.

    Returns
    -------
    DataFrame
        Indexed like ``X``: ``patient_id`` (when present), ``risk``, the score
        columns the pipeline produced, and ``load_error``.
    """
    steps = pipe.steps if isinstance(pipe, Pipeline) else [("model", pipe)]
    Xt = X
    errors = pd.Series(None, index=X.index, dtype=object)
    for _, step in steps[:-1]:
        if step in (None, "passthrough"):
            continue
        Xt = step.transform(Xt)
        if isinstance(Xt, pd.DataFrame) and "load_error" in Xt.columns:
            bad = Xt["load_error"].notna()
            errors.loc[Xt.index[bad]] = Xt.loc[bad, "load_error"]
            Xt = Xt.loc[~bad].drop(columns="load_error")
    out = pd.DataFrame(index=X.index)
    if "patient_id" in X.columns:
        out["patient_id"] = X["patient_id"]
    out["risk"] = float("nan")
    if len(Xt):
        out.loc[Xt.index, "risk"] = steps[-1][1].predict(Xt)
        for col in _OUTPUT_COLUMNS:
            if isinstance(Xt, pd.DataFrame) and col in Xt.columns:
                out[col] = Xt[col].reindex(out.index)
    out["load_error"] = errors
    return out


def _set_skip(pipe: Any) -> None:
    for _, step in getattr(pipe, "steps", []):
        if hasattr(step, "on_error"):
            step.set_params(on_error="skip")


def score_patients(model: Path, images: Path, clinical: Path, out: Path,
                   allow_pickle: bool = False) -> tuple[int, int]:
    """Score the patients of ``clinical`` (CSV) whose images lie in ``images``.

    The CSV's ``image`` column holds file names relative to ``images`` (several
    per row separated by ``;``). Loading errors are recorded per row, not raised.

    Returns
    -------
    (int, int)
        Patients scored, patients that failed.
    """
    pipe = load_pipeline(model, allow_pickle=allow_pickle)
    _set_skip(pipe)
    X = pd.read_csv(clinical)
    if "image" not in X.columns:
        raise ValueError(f"{clinical}: no 'image' column (file names relative to {images})")

    def resolve(cell: Any) -> Any:
        if not isinstance(cell, str):
            return None
        parts = [str(images / p.strip()) for p in cell.split(";") if p.strip()]
        return parts[0] if len(parts) == 1 else parts

    X["image"] = X["image"].map(resolve)
    result = score_frame(pipe, X)
    out.parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, index=False)
    n_bad = int(result["load_error"].notna().sum())
    log.info("scored %d patients, %d failed to load", len(result) - n_bad, n_bad)
    return len(result) - n_bad, n_bad
