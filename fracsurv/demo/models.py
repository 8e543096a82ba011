"""Stages 6-7 of ``fracsurv demo``: the survival models and their comparison."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sksurv.linear_model import CoxPHSurvivalAnalysis

from fracsurv import pretrained
from fracsurv.demo.context import DemoContext, clinical_columns, eval_times, model_frame
from fracsurv.metrics import (
    concordance_index,
    concordance_index_ci,
    integrated_brier_ci,
    mean_auc_ci,
)
from fracsurv.stratify import calibration_figure, calibration_table
from fracsurv.survival import DeepSurvRegressor, FusionSurvival

__all__ = ["N_BOOT", "stage_comparison", "stage_models"]

N_BOOT = 200
CALIBRATION_HORIZON = 5.0  # years; the last evaluation time when follow-up is shorter


def _models(ctx: DemoContext) -> dict[str, tuple[Callable[[], Any], list[str]]]:
    clinical = clinical_columns(ctx)
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
    shipped = (pretrained.load("fusion-survival")
               if "crops" in ctx.train.columns and _pretrained_images(ctx) else None)
    if shipped is not None and set(shipped.clinical_columns) <= set(ctx.train.columns):
        # trained by `fracsurv train` on 1,500 other patients' detected crops
        ctx.shipped_models["FusionSurvival (13 crops + clinical)"] = shipped
        ctx.model_sources["FusionSurvival"] = "fracsurv.pretrained.load('fusion-survival')"
        models["FusionSurvival (13 crops + clinical)"] = (
            lambda: shipped, ["crops", *shipped.clinical_columns])
    elif "crops" in ctx.train.columns:
        fusion = {"image_input": "crops", "backbone": "resnet10-tiny", "fusion": "intermediate",
                  "clinical_columns": clinical, "max_epochs": 2 if ctx.tiny else 12,
                  "batch_size": 32, "lr": 2e-3, "augment": not ctx.tiny,
                  "validation_fraction": 0.0, "random_state": ctx.seed}
        models["FusionSurvival (13 crops + clinical)"] = (
            lambda: FusionSurvival(**fusion), ["crops", *clinical])
    return models


def _pretrained_images(ctx: DemoContext) -> bool:
    return ctx.model_sources.get("PVFScorer", "").startswith("fracsurv.pretrained")


def stage_models(ctx: DemoContext) -> None:
    for name, (make, cols) in _models(ctx).items():
        model = make()
        if name not in ctx.shipped_models:  # a shipped model is used as it is
            model.fit(model_frame(ctx.train, cols), ctx.y_train)
        ctx.models[name] = (model, cols)
        ctx.risks[name] = model.predict(model_frame(ctx.test, cols))
        ctx.say(f"    {name}: test C = {concordance_index(ctx.y_test, ctx.risks[name]):.3f}")


def stage_comparison(ctx: DemoContext) -> None:
    ctx.report.section("Model comparison", "models")
    times = eval_times(ctx)
    rows = {}

    def ci(fn: Callable[..., Any], *args: Any) -> str:
        try:
            return str(fn(*args, n_boot=N_BOOT, random_state=ctx.seed))
        except ValueError as exc:  # too few events in the resamples of a small cohort
            return f"not estimable ({exc})"

    for name, (model, cols) in ctx.models.items():
        risk = ctx.risks[name]
        surv = np.vstack([fn(times) for fn in
                          model.predict_survival_function(model_frame(ctx.test, cols))])
        rows[name] = {
            "C-index (95% CI)": ci(concordance_index_ci, ctx.y_test, risk),
            "mean AUC(t) (95% CI)": ci(mean_auc_ci, ctx.y_train, ctx.y_test, risk, times),
            "integrated Brier (95% CI)": ci(integrated_brier_ci, ctx.y_train, ctx.y_test, surv,
                                            times)}
    if ctx.truth is not None and "log_hazard" in getattr(ctx.truth, "keys", lambda: [])():
        assert ctx.split_index is not None
        oracle = np.asarray(ctx.truth["log_hazard"])[ctx.split_index[1]]
        rows["Oracle (true log-hazard)"] = {"C-index (95% CI)": ci(concordance_index_ci,
                                                                   ctx.y_test, oracle),
                                            "mean AUC(t) (95% CI)": "",
                                            "integrated Brier (95% CI)": ""}
    ctx.report.add_table(pd.DataFrame(rows).T, key="model comparison", caption=(
        f"Test set (n = {len(ctx.y_test)}); bootstrap CIs with {N_BOOT} resamples; "
        f"AUC(t) and Brier over t in [{times[0]:.2f}, {times[-1]:.2f}]"))
    _calibration_section(ctx, min(CALIBRATION_HORIZON, float(times[-1])))


def _calibration_section(ctx: DemoContext, horizon: float) -> None:
    """Predicted vs Kaplan-Meier observed risk by ``horizon``, by decile, for each model."""
    rep = ctx.report
    rep.section("Calibration", "calibration")
    n_bins = 5 if ctx.tiny else 10
    tables = {}
    for name, (model, cols) in ctx.models.items():
        surv = np.array([fn(horizon) for fn in
                         model.predict_survival_function(model_frame(ctx.test, cols))], float)
        tables[name] = calibration_table(ctx.y_test, np.clip(1.0 - surv.ravel(), 0.0, 1.0),
                                         horizon, n_bins=n_bins)
    long = pd.concat([t.assign(model=name) for name, t in tables.items()], ignore_index=True)
    rep.add_table(long[["model", *[c for c in long.columns if c != "model"]]], index=False,
                  key="calibration", caption=(
                      f"Risk of fracture by {horizon:.1f} years, predicted (mean per "
                      f"{'quintile' if n_bins == 5 else 'decile'} of predicted risk) vs observed "
                      "(Kaplan-Meier, 95% CI), test split"))
    rep.add_table(pd.DataFrame({"mean absolute error": {
        n: t.attrs["mean absolute error"] for n, t in tables.items()}}), key="calibration error",
        caption="Calibration error: mean |predicted - observed| over the bins, weighted by n")
    rep.add_figure(calibration_figure(tables), key="calibration",
                   caption=f"Calibration at {horizon:.1f} years (dashed: perfect calibration)")
