"""The stages of ``fracsurv demo`` (see :mod:`fracsurv.demo`).

Every stage takes the :class:`~fracsurv.demo.DemoContext`, adds its columns,
models and report sections, and skips itself with a one-line notice when its
component is not part of this installation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from fracsurv._base import survival_arrays
from fracsurv.demo import DemoContext, _available
from fracsurv.metrics import (
    concordance_index,
    concordance_index_ci,
    integrated_brier_ci,
    mean_auc_ci,
)

__all__ = ["STAGES"]

N_BOOT = 200


def _skip(ctx: DemoContext, what: str, component: str) -> None:
    line = f"skipped: {what} ({component} is not built yet)"
    print("    " + line, flush=True)
    ctx.skipped.append(line)


def _tabular_columns(ctx: DemoContext) -> list[str]:
    cols = getattr(ctx, "clinical_columns", None)
    return list(cols) if cols else [c for c in ctx.train.columns
                                     if pd.api.types.is_numeric_dtype(ctx.train[c])]


# -- 1. data -----------------------------------------------------------------------------
def stage_cohort(ctx: DemoContext) -> None:
    load = _available("fracsurv.datasets", "load_demo_cohort")
    ctx.report.section("Cohort", "cohort")
    if load is None:
        _skip(ctx, "synthetic spine cohort; using scikit-survival's real WHAS500 clinical data",
              "fracsurv.datasets")
        from sksurv.column import encode_categorical
        from sksurv.datasets import load_whas500

        X, y = load_whas500()
        X = encode_categorical(X).astype(float)
        X.insert(0, "patient_id", [f"WHAS{i:04d}" for i in range(len(X))])
        ctx.clinical_columns = [c for c in X.columns if c != "patient_id"]  # type: ignore[attr-defined]
        truth = None
        ctx.report.add_notice("The synthetic cohort is not built yet: this run uses the "
                              "WHAS500 clinical data (real, bundled with scikit-survival).")
    else:
        kwargs: dict[str, Any] = {}
        if getattr(ctx, "n_patients", None):
            kwargs["n_patients"] = ctx.n_patients  # type: ignore[attr-defined]
        if getattr(ctx, "image_shape", None):
            kwargs["image_shape"] = ctx.image_shape  # type: ignore[attr-defined]
        cohort = load(**kwargs)
        X, y, truth = cohort.frame, cohort.target, cohort.truth
        ctx.cohort = cohort
        ctx.clinical_columns = list(  # type: ignore[attr-defined]
            _available("fracsurv.datasets", "CLINICAL_COLUMNS") or [])
    event, _ = survival_arrays(y)
    idx = np.arange(len(X))
    tr, te = train_test_split(idx, test_size=0.3, random_state=ctx.seed, stratify=event)
    ctx.train, ctx.test = X.iloc[tr].copy(), X.iloc[te].copy()
    ctx.y_train, ctx.y_test = y[tr], y[te]
    ctx.split_index = (tr, te)  # type: ignore[attr-defined]
    ctx.truth = truth
    ctx.report.add_table(_table_one(ctx), caption="Characteristics by split (mean ± SD or %)")


def _table_one(ctx: DemoContext) -> pd.DataFrame:
    rows: dict[str, dict[str, str]] = {}
    for name, frame, y in (("train", ctx.train, ctx.y_train), ("test", ctx.test, ctx.y_test)):
        event, time = survival_arrays(y)
        col: dict[str, str] = {"n": str(len(frame)), "events": f"{event.sum()} ({100 * event.mean():.1f} %)",
                               "follow-up": f"{time.mean():.2f} ± {time.std():.2f}"}
        for c in _tabular_columns(ctx):
            v = frame[c].astype(float)
            if set(np.unique(v.dropna())) <= {0.0, 1.0}:
                col[c] = f"{100 * v.mean():.1f} %"
            else:
                col[c] = f"{v.mean():.2f} ± {v.std():.2f}"
        rows[name] = col
    return pd.DataFrame(rows)


# -- 7. survival models --------------------------------------------------------------------
def _models(ctx: DemoContext) -> dict[str, tuple[Callable[[], Any], list[str]]]:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from fracsurv.survival import DeepSurvRegressor

    clinical = _tabular_columns(ctx)
    small = {"hidden_units": (16,), "optimizer": "lbfgs", "lr": 1.0, "weight_decay": 1.0,
             "batch_norm": False, "dropout": 0.0, "max_epochs": 3 if ctx.tiny else 5,
             "random_state": ctx.seed}
    models: dict[str, tuple[Callable[[], Any], list[str]]] = {
        "Cox PH (clinical)": (lambda: CoxPHSurvivalAnalysis(alpha=1e-3), clinical),
        "DeepSurv (clinical)": (lambda: DeepSurvRegressor(**small), clinical),
    }
    image_scores = [c for c in ("pvf", "gpvf", "sdi") if c in ctx.train.columns]
    if image_scores:
        models["Cox PH (clinical + image scores)"] = (
            lambda: CoxPHSurvivalAnalysis(alpha=1e-3), clinical + image_scores)
        models["DeepSurv (clinical + image scores)"] = (
            lambda: DeepSurvRegressor(**small), clinical + image_scores)
    return models


def stage_models(ctx: DemoContext) -> None:
    for name, (make, cols) in _models(ctx).items():
        model = make().fit(ctx.train[cols].astype(float), ctx.y_train)
        ctx.fitted[name] = (model, cols)
        ctx.risks[name] = model.predict(ctx.test[cols].astype(float))
        print(f"    {name}: test C = {concordance_index(ctx.y_test, ctx.risks[name]):.3f}",
              flush=True)


def _eval_times(ctx: DemoContext) -> np.ndarray:
    event, time = survival_arrays(ctx.y_test)
    _, t_tr = survival_arrays(ctx.y_train)
    hi = min(np.percentile(time[event], 80), t_tr.max(), time.max())
    lo = max(np.percentile(time[event], 10), time.min())
    return np.linspace(lo, hi * 0.999, 8 if not ctx.tiny else 4)


def stage_comparison(ctx: DemoContext) -> None:
    ctx.report.section("Model comparison", "models")
    times = _eval_times(ctx)
    rows = {}
    for name, (model, cols) in ctx.fitted.items():
        risk = ctx.risks[name]
        c = concordance_index_ci(ctx.y_test, risk, n_boot=N_BOOT, random_state=ctx.seed)
        auc = mean_auc_ci(ctx.y_train, ctx.y_test, risk, times, n_boot=N_BOOT,
                          random_state=ctx.seed)
        surv = np.vstack([fn(times) for fn in
                          model.predict_survival_function(ctx.test[cols].astype(float))])
        ibs = integrated_brier_ci(ctx.y_train, ctx.y_test, surv, times, n_boot=N_BOOT,
                                  random_state=ctx.seed)
        rows[name] = {"C-index (95% CI)": str(c), "mean AUC(t) (95% CI)": str(auc),
                      "integrated Brier (95% CI)": str(ibs)}
    if ctx.truth is not None and "log_hazard" in getattr(ctx.truth, "keys", lambda: [])():
        oracle = np.asarray(ctx.truth["log_hazard"])[ctx.split_index[1]]  # type: ignore[attr-defined]
        c = concordance_index_ci(ctx.y_test, oracle, n_boot=N_BOOT, random_state=ctx.seed)
        rows["Oracle (true log-hazard)"] = {"C-index (95% CI)": str(c),
                                            "mean AUC(t) (95% CI)": "",
                                            "integrated Brier (95% CI)": ""}
    ctx.report.add_table(pd.DataFrame(rows).T, caption=(
        f"Test set (n = {len(ctx.y_test)}); bootstrap CIs with {N_BOOT} resamples; "
        f"AUC(t) and Brier over t in [{times[0]:.2f}, {times[-1]:.2f}]"))


STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("cohort", stage_cohort),
    ("survival models", stage_models),
    ("model comparison", stage_comparison),
]
