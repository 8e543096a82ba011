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
    evaluation_times,
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
    fusion_cls = _available("fracsurv.survival", "FusionSurvival")
    if "crops" in ctx.train.columns and fusion_cls is not None:
        fusion = {"image_input": "crops", "backbone": "resnet10-tiny", "fusion": "intermediate",
                  "tabular_columns": clinical, "max_epochs": 2 if ctx.tiny else 12,
                  "batch_size": 32, "lr": 2e-3, "augment": not ctx.tiny,
                  "validation_fraction": 0.0, "random_state": ctx.seed}
        models["FusionSurvival (13 crops + clinical)"] = (
            lambda: fusion_cls(**fusion), ["crops", *clinical])
    return models


def _X(frame: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``frame[cols]`` with the numeric columns as float (image columns stay references)."""
    out = frame[cols].copy()
    for c in cols:
        if c not in ("crops", "image"):
            out[c] = out[c].astype(float)
    return out


def stage_models(ctx: DemoContext) -> None:
    for name, (make, cols) in _models(ctx).items():
        model = make().fit(_X(ctx.train, cols), ctx.y_train)
        ctx.models[name] = (model, cols)
        ctx.risks[name] = model.predict(_X(ctx.test, cols))
        print(f"    {name}: test C = {concordance_index(ctx.y_test, ctx.risks[name]):.3f}",
              flush=True)


def _eval_times(ctx: DemoContext) -> np.ndarray:
    return evaluation_times(ctx.y_train, ctx.y_test, 8 if not ctx.tiny else 4)


def stage_comparison(ctx: DemoContext) -> None:
    ctx.report.section("Model comparison", "models")
    times = _eval_times(ctx)
    rows = {}
    def ci(fn: Callable[..., Any], *args: Any) -> str:
        try:
            return str(fn(*args, n_boot=N_BOOT, random_state=ctx.seed))
        except ValueError as exc:  # too few events in the resamples of a small cohort
            return f"not estimable ({exc})"

    for name, (model, cols) in ctx.models.items():
        risk = ctx.risks[name]
        surv = np.vstack([fn(times) for fn in
                          model.predict_survival_function(_X(ctx.test, cols))])
        rows[name] = {
            "C-index (95% CI)": ci(concordance_index_ci, ctx.y_test, risk),
            "mean AUC(t) (95% CI)": ci(mean_auc_ci, ctx.y_train, ctx.y_test, risk, times),
            "integrated Brier (95% CI)": ci(integrated_brier_ci, ctx.y_train, ctx.y_test, surv,
                                            times)}
    if ctx.truth is not None and "log_hazard" in getattr(ctx.truth, "keys", lambda: [])():
        oracle = np.asarray(ctx.truth["log_hazard"])[ctx.split_index[1]]  # type: ignore[attr-defined]
        rows["Oracle (true log-hazard)"] = {"C-index (95% CI)": ci(concordance_index_ci,
                                                                   ctx.y_test, oracle),
                                            "mean AUC(t) (95% CI)": "",
                                            "integrated Brier (95% CI)": ""}
    ctx.report.add_table(pd.DataFrame(rows).T, caption=(
        f"Test set (n = {len(ctx.y_test)}); bootstrap CIs with {N_BOOT} resamples; "
        f"AUC(t) and Brier over t in [{times[0]:.2f}, {times[-1]:.2f}]"))


def stage_images(ctx: DemoContext) -> None:
    from fracsurv.io import DicomLoader

    if ctx.cohort is None and "image" not in ctx.train.columns:
        _skip(ctx, "image loading (no images in this cohort)", "the synthetic cohort")
        return
    shape = _image_shape(ctx)
    loader = DicomLoader(output_shape=shape, cache_dir=str(ctx.out / "cache"), n_jobs=2)
    ctx.train = loader.fit_transform(ctx.train)
    ctx.test = loader.transform(ctx.test)
    ctx.fitted["DicomLoader"] = loader
    print(f"    loaded {len(ctx.train) + len(ctx.test)} DICOM files into {ctx.out / 'cache'}",
          flush=True)


def _image_shape(ctx: DemoContext) -> tuple[int, int]:
    from fracsurv.io import load_image

    ref = ctx.train["image"].iloc[0]
    return tuple(load_image(ref).shape) if not isinstance(ref, str) or not ref.endswith(".dcm") \
        else tuple(getattr(ctx, "image_shape", None) or (256, 128))


def stage_crops(ctx: DemoContext) -> None:
    """VertebraCropper: learned keypoints, Genant grades and the 13-crop stack.

    The crops (and ``sdi``) every later stage uses come from the learned detector,
    not from the cohort's annotations; its detection accuracy on the test split is
    reported against those annotations.
    """
    if "keypoints" not in ctx.train.columns:
        return
    cropper_cls = _available("fracsurv.vertebrae", "VertebraCropper")
    if cropper_cls is None:
        from fracsurv.vertebrae.crops import CropStacker

        _skip(ctx, "learned vertebra detection; crops are cut from the cohort's annotated "
              "keypoints instead", "VertebraCropper")
        stacker = CropStacker()
        ctx.train = stacker.fit_transform(ctx.train)
        ctx.test = stacker.transform(ctx.test)
        return
    from fracsurv.vertebrae.evaluation import detection_summary

    h, w = _image_shape(ctx)
    n_fit = min(len(ctx.train), 60 if ctx.tiny else 240)
    cropper = cropper_cls(input_shape=(h - h % 16, w - w % 16), channels=(8, 16, 32, 64),
                          num_res_units=0, train_window=(64, 96) if w >= 96 else None,
                          batch_size=8, lr=5e-3, max_epochs=10 if ctx.tiny else 16,
                          validation_fraction=0.0, patience=0, random_state=ctx.seed)
    cropper.fit(ctx.train.iloc[:n_fit])
    ctx.train, ctx.test = cropper.transform(ctx.train), cropper.transform(ctx.test)
    ctx.fitted["VertebraCropper"] = cropper
    det = detection_summary(ctx.test["vertebrae"], ctx.test["keypoints"])
    ctx.detection = det  # type: ignore[attr-defined]
    print(f"    VertebraCropper trained on {n_fit} images; test sensitivity "
          f"{det['sensitivity']:.2f}, precision {det['precision']:.2f}, median point error "
          f"{det['median_point_error_px']:.1f} px", flush=True)


def stage_pvf(ctx: DemoContext) -> None:
    if "crops" not in ctx.train.columns or "prevalent_vf" not in ctx.train.columns:
        return
    from fracsurv.scoring import PVFScorer

    h, w = np.asarray(ctx.train["crops"].iloc[0]).shape[-2:]
    scorer = PVFScorer(backbone="resnet10-tiny", image_column="crops", input="crops",
                       input_shape=(int(h), int(w)), max_epochs=2 if ctx.tiny else 12,
                       batch_size=32, lr=2e-3, augment=False, validation_fraction=0.0,
                       random_state=ctx.seed)
    scorer.fit(ctx.train)
    ctx.train, ctx.test = scorer.transform(ctx.train), scorer.transform(ctx.test)
    ctx.fitted["PVFScorer"] = scorer
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(ctx.test["prevalent_vf"], ctx.test["pvf"])
    ctx.pvf_auc = auc  # type: ignore[attr-defined]
    print(f"    pVF AUROC on the test split: {auc:.3f}", flush=True)


def _image_scorer(ctx: DemoContext) -> Any:
    """A full-image pVF scorer (the Diff-X study scores whole radiographs: BpVF and GpVF)."""
    from fracsurv.scoring import PVFScorer

    shape = (64, 32) if ctx.tiny else (128, 64)
    scorer = PVFScorer(backbone="resnet10-tiny", image_column="image", input="image",
                       output_column="bpvf", input_shape=shape, max_epochs=2 if ctx.tiny else 12,
                       batch_size=32, lr=2e-3, augment=False, validation_fraction=0.0,
                       random_state=ctx.seed)
    scorer.fit(ctx.train)
    return scorer


def stage_future(ctx: DemoContext) -> None:
    gen_cls = _available("fracsurv.generative", "DiffXGenerator")
    if gen_cls is None:
        _skip(ctx, "generated future radiographs and GpVF; RiskGrouper's LL/LH/HIGH groups need "
              "them", "DiffXGenerator")
        return
    if "image" not in ctx.train.columns or "prevalent_vf" not in ctx.train.columns:
        return
    import copy

    from fracsurv.generative import DIFFX_PRESETS
    from fracsurv.stratify import RiskGrouper

    scorer = _image_scorer(ctx)
    ctx.train, ctx.test = scorer.transform(ctx.train), scorer.transform(ctx.test)
    preset = {**DIFFX_PRESETS["tiny" if ctx.tiny else "demo"], "horizons": (10,), "n_seeds": 2}
    gen = gen_cls(**preset, output_shape=tuple(scorer.input_shape), random_state=ctx.seed,
                  cache_dir=str(ctx.out / "cache"))
    n_fit = min(len(ctx.train), 60 if ctx.tiny else 160)  # sized for the 10-minute budget
    gen.fit(ctx.train.iloc[:n_fit])
    print(f"    DiffXGenerator trained on {gen.n_train_images_} images "
          f"({preset['image_size'][0]}x{preset['image_size'][1]})", flush=True)
    ctx.train, ctx.test = gen.transform(ctx.train), gen.transform(ctx.test)
    gscorer = copy.deepcopy(scorer).set_params(image_column="future_images", output_column="gpvf",
                                               n_seeds=gen.n_seeds)
    ctx.train, ctx.test = gscorer.transform(ctx.train), gscorer.transform(ctx.test)
    grouper = RiskGrouper(baseline_column="bpvf", future_column="gpvf", thresholds="optimal")
    try:
        grouper.fit(ctx.train, ctx.y_train)
    except ValueError as exc:  # too few training events for a log-rank cut (tiny cohorts)
        print(f"    optimal cut-points unavailable ({exc}); using the study's thresholds",
              flush=True)
        grouper.set_params(thresholds=(0.5, 0.6)).fit(ctx.train, ctx.y_train)
    ctx.train, ctx.test = grouper.transform(ctx.train), grouper.transform(ctx.test)
    ctx.fitted.update({"PVFScorer (image)": scorer, "DiffXGenerator": gen,
                       "RiskGrouper": grouper})
    print(f"    risk groups (test): {ctx.test['risk_group'].value_counts().to_dict()}", flush=True)


def _km_section(ctx: DemoContext, groups: pd.Series) -> None:
    from fracsurv.stratify import km_figure, logrank_tables

    rep = ctx.report
    present = groups.astype(str).nunique()
    if present < 2:
        rep.add_notice("every test patient falls in one group: no curves to compare")
        return
    rep.add_figure(km_figure(ctx.y_test, groups, "test split"), "Kaplan-Meier curves")
    pw, overall = logrank_tables(ctx.y_test, groups)
    rep.add_table(overall, caption="Log-rank test (all groups)")
    rep.add_table(pw, caption="Pairwise log-rank tests")


def stage_analysis(ctx: DemoContext) -> None:
    from fracsurv.stratify import (
        cox_table,
        decision_table,
        format_cox_table,
        td_auc_figure,
        td_auc_table,
    )

    rep = ctx.report
    rep.section("Time-dependent AUROC", "td-auc")
    times = _eval_times(ctx)
    table = td_auc_table(ctx.y_train, ctx.y_test, ctx.risks, times)
    rep.add_table(table, caption="Cumulative/dynamic AUC (IPCW) on the test split")
    rep.add_figure(td_auc_figure(table), "Time-dependent AUROC of the survival models")

    if "risk_group" in ctx.test.columns:
        rep.section("Kaplan-Meier by risk group", "km")
        t_b, t_f = ctx.fitted["RiskGrouper"].thresholds_
        rep.add_text(f"LL / LH / HIGH from the baseline (BpVF) and generated 10-year (GpVF) "
                     f"image scores; cut-points chosen on the training split by maximally "
                     f"selected log-rank statistics: BpVF {t_b:.3f}, GpVF {t_f:.3f}.")
        _km_section(ctx, ctx.test["risk_group"].reset_index(drop=True))
    elif "pvf" in ctx.test.columns:
        rep.section("Kaplan-Meier by baseline pVF", "km")
        cut = float(np.median(ctx.train["pvf"]))
        rep.add_notice(f"no generated score in this run: groups are baseline pVF below / at or "
                       f"above the training median ({cut:.3f}).")
        _km_section(ctx, pd.Series(pd.Categorical(
            np.where(ctx.test["pvf"] >= cut, "high pVF", "low pVF"),
            categories=["low pVF", "high pVF"], ordered=True)))
    if hasattr(ctx, "pvf_auc"):
        rep.add_text(f"pVF score AUROC for the true prevalent fracture label (test): "
                     f"{ctx.pvf_auc:.3f}")

    rep.section("Cox hazard ratios", "hr")
    clinical = [c for c in _tabular_columns(ctx) if ctx.train[c].astype(float).std() > 0]
    models = {"Clinical": clinical}
    terms = list(clinical)
    if "pvf" in ctx.train.columns and ctx.train["pvf"].std() > 0:
        models["Clinical + pVF"] = [*clinical, "pvf"]
        terms.append("pvf")
    elif "pvf" in ctx.train.columns:
        rep.add_notice("the pVF score is constant on the training split (the scorer learned "
                       "nothing in this configuration): left out of the Cox models")
    if "risk_group" in ctx.train.columns:
        groups = [c for c in ("risk_LH", "risk_HIGH") if ctx.train[c].std() > 0]
        models["Clinical + pVF + risk group"] = [*models.get("Clinical + pVF", clinical), *groups]
        terms.extend(groups)
    tables = cox_table(ctx.train, ctx.y_train, terms, models=models, penalizer=0.01)
    rep.add_table(format_cox_table(tables), caption=(
        "Hazard ratios (95% CI) on the training split, univariable and nested multivariable "
        "Cox models (lifelines, ridge penalty 0.01), laid out like the Diff-X study's Table 4"))
    rep.add_table(tables.models, caption="Model fit: C-index and LR chi-square")
    if len(tables.comparisons):
        rep.add_table(tables.comparisons, caption="Likelihood-ratio tests between nested models")

    if "clinical_risk_score" in ctx.test.columns:
        rep.section("Clinical decision table", "decision")
        if "risk_group" in ctx.test.columns:
            high = ctx.test["risk_group"].isin(["LH", "HIGH"]).to_numpy()
            what = "the LH or HIGH risk group"
        else:
            high = (ctx.test["pvf"] >= 0.5).to_numpy() if "pvf" in ctx.test.columns else \
                np.zeros(len(ctx.test), bool)
            what = "a high pVF score"
        horizon = float(np.median(survival_arrays(ctx.y_test)[1]))
        rep.add_table(decision_table(ctx.y_test, horizon, ctx.test["clinical_risk_score"], 20.0,
                                     high),
                      caption=f"Fracture by {horizon:.1f} years: clinical risk score (FRAX "
                              f"stand-in) >= 20 % alone vs combined with {what}")


def stage_examples(ctx: DemoContext) -> None:
    if ctx.cohort is None and "keypoints" not in ctx.test.columns:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fracsurv.io import load_image

    rep = ctx.report
    rep.section("Example radiographs", "examples")
    det = getattr(ctx, "detection", None)
    if det is not None:
        from sklearn.metrics import roc_auc_score

        table = {"sensitivity": f"{det['sensitivity']:.3f}",
                 "precision": f"{det['precision']:.3f}",
                 "median point error (px)": f"{det['median_point_error_px']:.2f}",
                 "vertebrae (true / predicted)": f"{det['n_true']} / {det['n_pred']}"}
        if ctx.test["prevalent_vf"].nunique() == 2:
            table["AUROC of max predicted grade for prevalent VF"] = (
                f"{roc_auc_score(ctx.test['prevalent_vf'], ctx.test['max_grade']):.3f}")
        rep.add_table(pd.DataFrame({"VertebraCropper (test split)": table}),
                      caption="Learned vertebra detection against the annotated keypoints "
                              "(a match: centre within half the true vertebral height)")
    rows = ctx.test.head(4)
    fig, axes = plt.subplots(1, 2 * len(rows), figsize=(3.2 * len(rows), 4.2))
    for k, (_, row) in enumerate(rows.iterrows()):
        img = load_image(row["image"])
        ax = axes[2 * k]
        title = f"baseline, vf={row.get('prevalent_vf', '?')}"
        if "vertebrae" in row.index:
            from fracsurv.vertebrae import draw_vertebrae

            draw_vertebrae(img, row["vertebrae"], ax=ax, show_boxes=False)
        else:
            ax.imshow(img, cmap="gray")
            for v in row.get("keypoints", []) or []:
                p = np.asarray(v["points"])
                ax.plot(p[[0, 1, 2, 5, 4, 3, 0], 0], p[[0, 1, 2, 5, 4, 3, 0], 1], "r-", lw=0.5)
        ax.set_title(title, fontsize=8)
        fu = row.get("followup_image")
        if isinstance(fu, str):
            axes[2 * k + 1].imshow(load_image(fu), cmap="gray")
            axes[2 * k + 1].set_title(f"follow-up, age {row.get('followup_age', 0):.0f}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    rep.add_figure(fig, "Test patients: keypoints, levels and Genant grades found by "
                        "VertebraCropper (annotated keypoints in red when it is absent), "
                        "and the real follow-up image")


def _futures_section(ctx: DemoContext) -> None:
    """Generated 10-year images next to the baseline and the real follow-up, and the
    Diff-X study's clinical fidelity check (generated vs real follow-up pVF)."""
    import matplotlib.pyplot as plt

    from fracsurv.io import load_image
    from fracsurv.stratify import agreement_table, bland_altman_figure

    rep, gen, scorer = ctx.report, ctx.fitted["DiffXGenerator"], ctx.fitted["PVFScorer (image)"]
    rep.section("Generated future radiographs (DiffXGenerator)", "futures")
    rows = ctx.test.head(3)
    fig, axes = plt.subplots(len(rows), 4, figsize=(7, 3.4 * len(rows)), squeeze=False)
    for k, (_, row) in enumerate(rows.iterrows()):
        futures = row["future_images"]
        panels = [(row["image"], f"baseline, age {row['age']:.0f}"),
                  (futures[0], f"generated +10 y, seed 0\nGpVF {row['gpvf']:.2f}"),
                  (futures[1], "generated +10 y, seed 1"),
                  (row.get("followup_image"), f"real follow-up, age {row['followup_age']:.0f}")]
        for ax, (img, title) in zip(axes[k], panels, strict=True):
            if img is not None and not (isinstance(img, float) and np.isnan(img)):
                ax.imshow(load_image(img), cmap="gray")
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    rep.add_figure(fig, "Baseline, two generated 10-year futures and the real follow-up")
    sub = ctx.test.dropna(subset=["followup_age"]).head(12 if ctx.tiny else 60)
    gen_scores, real = [], scorer.image_scores(list(sub["followup_image"]))
    for _, row in sub.iterrows():
        horizon = max(float(row["followup_age"] - row["age"]), 0.0)
        imgs = gen.generate(row["image"], row["age"], row["sex"], [horizon])
        gen_scores.append(float(np.mean(scorer.image_scores(list(imgs[0])))))
    gen_scores = np.asarray(gen_scores)
    rep.add_table(agreement_table({"GpVF at follow-up age vs pVF of the real follow-up":
                                   (gen_scores, real)}),
                  caption=f"Clinical fidelity on {len(sub)} test patients (the Diff-X study: "
                          "r = 0.655, mean difference -0.06 ± 0.20)", floatfmt="{:.3f}")
    rep.add_figure(bland_altman_figure(gen_scores, real, ("generated", "real follow-up")),
                   "Generated vs real follow-up pVF: scatter and Bland-Altman")


def _grad_cam_section(ctx: DemoContext) -> None:
    from fracsurv.scoring.gradcam import grad_cam_figure

    scorer = ctx.fitted["PVFScorer (image)"]
    rows = pd.concat([ctx.test[ctx.test["prevalent_vf"] == 1].head(2),
                      ctx.test[ctx.test["prevalent_vf"] == 0].head(2)])
    images = list(rows["image"])
    maps = scorer.grad_cam(images)
    titles = [f"vf={int(v)}, BpVF {p:.2f}" for v, p in zip(rows["prevalent_vf"], rows["bpvf"],
                                                             strict=True)]
    ctx.report.section("Grad-CAM of the pVF scorer", "gradcam")
    ctx.report.add_figure(grad_cam_figure(images, maps, titles=titles),
                          "Where the full-image pVF scorer looks (Grad-CAM, last conv block)")


def stage_explain(ctx: DemoContext) -> None:
    if "PVFScorer (image)" in ctx.fitted:
        _grad_cam_section(ctx)
    if "DiffXGenerator" in ctx.fitted:
        _futures_section(ctx)


STAGES: list[tuple[str, Callable[[DemoContext], None]]] = [
    ("cohort", stage_cohort),
    ("load images (DicomLoader)", stage_images),
    ("vertebra crops", stage_crops),
    ("pVF score (PVFScorer)", stage_pvf),
    ("future images (DiffXGenerator)", stage_future),
    ("survival models", stage_models),
    ("model comparison", stage_comparison),
    ("survival analysis", stage_analysis),
    ("examples", stage_examples),
    ("Grad-CAM and generated futures", stage_explain),
]
