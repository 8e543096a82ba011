"""The multimodal study's Table 4.3 on the synthetic cohort: every FusionSurvival variant.

Protocol (the study's): a 10 % stratified hold-out, and 3-fold cross-validation
on the remaining 90 %. Each variant reports C-index, mean cumulative/dynamic
AUC(t) and integrated Brier score as mean ± sd over the folds, and the same
metrics on the hold-out from a model refitted on the 90 %. The oracle C-index
(the cohort's true log-hazard) is computed on the same folds. Variants:

* Cox PH and DeepSurv on the clinical columns (the clinical-only baselines);
* C-DS (ConvDeepSurv) on the full radiograph and on the 13-crop stack:
  image-only, intermediate, late and alpha fusion (clinical weight searched on a grid);
* ViT-DS on the crops: intermediate and alpha fusion.

Crops come from the deployable path: the shipped ``vertebra-cropper``'s
detections (``fracsurv.pretrained.load``), with each detected slot's annotated
Genant grade as the auxiliary label (``annotated_crop_grades``). A variant ending
in ``_truthcrops`` cuts the same crops from the true keypoints instead: a labelled
reference (what a perfect detector would give), never a headline row.

``--preset cpu`` (default) is the reduced configuration sized for 2 CPU cores
(a narrow ResNet-10 and a small ViT, small images, few epochs); ``--preset full``
is the study-like configuration (ResNet-50, larger images) for a GPU.
``--preset cpu-crops`` is a CPU configuration of the crop variants built on what
``benchmarks/pvf_scorer.py`` measured to find fractures on a CPU: larger
radiographs, crops scaled to fill their window (``resize="fill"``), one encoder
shared by the crops, and the prevalent-fracture label as an auxiliary target of
the image branch (``aux_column``).
``--preset cpu-graded`` adds what ``docs/fusion_survival.md`` measured next: 2000
patients, every visible vertebra (18 slots), the Genant grade of each crop as an
ordinal auxiliary label whose summary (expected vertebrae at or above each grade)
is the image risk (``aux_risk="only"``), a linear clinical branch fitted exactly
(``linear_init="cox"``, the default), the alpha
model over frozen pre-trained sub-models, and frozen sub-models combined on every
training row (``head_rows="all"``). It also reports a reference row, Cox PH
on the clinical columns plus the cohort's *true* fracture count and SDI: what a
perfect image branch could add (and the true count and SDI alone: what a perfect
image-only model could reach).

Run: ``python benchmarks/fusion.py [--preset cpu|full] [--variants a,b,...] [--out F]``.
One run writes one JSON with only the rows it measured; a rerun of some variants
goes to its own file (``--out``) and includes the rows it is compared with.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, write_json

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {"n_patients": 500, "image_shape": (128, 64), "crop_size": (24, 24),
            "image_input_shape": (96, 48), "backbone": "resnet10-tiny", "epochs": 12,
            "batch_size": 32, "lr": 2e-3, "patience": 0, "validation_fraction": 0.15,
            "clinical_weight_grid": (0.4, 0.6, 0.8),
            # measured before linear_init existed: this reproduces fusion_cpu.json
            "fusion_kwargs": {"linear_init": "random"}},
    "full": {"n_patients": 2000, "image_shape": (512, 256), "crop_size": "auto",
             "image_input_shape": (512, 256), "backbone": "resnet50", "epochs": 60,
             "batch_size": 32, "lr": 1e-4, "patience": 15, "validation_fraction": 0.15,
             "clinical_weight_grid": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)},
    "cpu-crops": {"n_patients": 1000, "image_shape": (512, 256), "crop_size": (32, 32),
                  "crop_resize": "fill", "crop_encoder": "shared", "aux_column": "prevalent_vf",
                  "backbone": "resnet10-tiny", "epochs": 12, "batch_size": 32, "lr": 2e-3,
                  "patience": 0, "validation_fraction": 0.15,
                  "clinical_weight_grid": (0.4, 0.6, 0.8),
                  "fusion_kwargs": {"linear_init": "random"},  # as fusion_cpu_crops.json
                  "variants": ("coxph", "deepsurv", "cds_image_only_crops",
                               "cds_intermediate_crops", "cds_late_crops", "cds_alpha_crops")},
    "cpu-graded": {"n_patients": 2000, "image_shape": (512, 256), "crop_size": (32, 32),
                   "n_crops": 18, "crop_resize": "fill", "crop_encoder": "shared",
                   "aux_column": "crop_grades", "backbone": "resnet10-tiny", "epochs": 20,
                   "batch_size": 16, "lr": 1e-3, "patience": 0, "validation_fraction": 0.15,
                   "clinical_weight_grid": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
                   "fusion_kwargs": {"aux_risk": "only", "aux_weight": 1.0, "augment": False,
                                     "clinical_hidden_units": (), "head_rows": "all"},
                   "alpha_kwargs": {"pretrain": "both"},
                   "variants": ("coxph", "deepsurv", "coxph_true_vf", "coxph_true_vf_only",
                                "cds_late_crops", "cds_late_truthcrops", "cds_intermediate_crops",
                                "cds_image_only_crops", "cds_alpha_crops")},
}
# these use the simulation's truth: ceilings, not models
REFERENCE = ("coxph_true_vf", "coxph_true_vf_only", "cds_image_only_truthcrops",
             "cds_intermediate_truthcrops", "cds_late_truthcrops", "cds_alpha_truthcrops")

VARIANTS = ("coxph", "deepsurv", "coxph_true_vf", "coxph_true_vf_only", "cds_image_only_full",
            "cds_intermediate_full", "cds_late_full", "cds_alpha_full", "cds_image_only_crops", "cds_intermediate_crops",
            "cds_late_crops", "cds_alpha_crops", "vitds_intermediate_crops", "vitds_alpha_crops",
            "cds_image_only_truthcrops", "cds_intermediate_truthcrops", "cds_late_truthcrops",
            "cds_alpha_truthcrops")


def _make(variant: str, cfg: dict[str, Any], clinical: list[str], device: str, seed: int):
    """(estimator, columns of X it reads) for one variant name."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from fracsurv.survival import DeepSurvRegressor, FusionSurvival

    if variant == "coxph":
        return CoxPHSurvivalAnalysis(alpha=1e-3), clinical
    if variant == "coxph_true_vf":
        return CoxPHSurvivalAnalysis(alpha=1e-3), [*clinical, *TRUE_VF]
    if variant == "coxph_true_vf_only":  # what a perfect image-only model could reach
        return CoxPHSurvivalAnalysis(alpha=1e-3), list(TRUE_VF)
    if variant == "deepsurv":
        return DeepSurvRegressor(hidden_units=(64, 128), dropout=0.1, max_epochs=200,
                                 batch_size=64, lr=1e-3, validation_fraction=0.15,
                                 patience=20, random_state=seed), clinical
    family, *fusion_parts, image_input = variant.split("_")
    fusion = "_".join(fusion_parts)
    common = {"image_input": "image" if image_input == "full" else "crops",
              "backbone": "vit" if family == "vitds" else cfg["backbone"],
              "fusion": fusion, "clinical_columns": clinical,
              "max_epochs": cfg["epochs"], "batch_size": cfg["batch_size"], "lr": cfg["lr"],
              "validation_fraction": cfg["validation_fraction"], "patience": cfg["patience"],
              "device": device, "random_state": seed}
    common.update(cfg.get("fusion_kwargs", {}))
    if fusion == "alpha":
        common["clinical_weight"] = "search"
        common["clinical_weight_grid"] = tuple(cfg["clinical_weight_grid"])
        common.update(cfg.get("alpha_kwargs", {}))
    extra: list[str] = []
    if image_input == "full":
        common["input_shape"] = tuple(cfg.get("image_input_shape", cfg["image_shape"]))
        column = "image"
    else:  # detected crops, or the truth-framed reference (columns prefixed "truth_")
        prefix = "truth_" if image_input == "truthcrops" else ""
        column = common["image_column"] = f"{prefix}crops"
        common["crop_encoder"] = cfg.get("crop_encoder", "channels")
    if cfg.get("aux_column"):
        aux = f"truth_{cfg['aux_column']}" if image_input == "truthcrops" else cfg["aux_column"]
        common["aux_column"] = aux
        extra = [aux]
    return FusionSurvival(**common), [column, *clinical, *extra]


TRUE_VF = ("true_n_vf", "true_sdi")


def _survival_at(model, X, times: np.ndarray) -> np.ndarray:
    return np.vstack([fn(times) for fn in model.predict_survival_function(X)])


def _metrics(model, X_tr, y_tr, X_te, y_te) -> dict[str, float]:
    from fracsurv.metrics import concordance_index, evaluation_times, integrated_brier, mean_auc

    times = evaluation_times(y_tr, y_te, 8)
    risk = model.predict(X_te)
    return {"c_index": concordance_index(y_te, risk), "auc": mean_auc(y_tr, y_te, risk, times),
            "brier": integrated_brier(y_tr, y_te, _survival_at(model, X_te, times), times)}


def _summary(folds: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in folds[0]:
        v = np.array([f[k] for f in folds], float)
        out[f"{k}_mean"], out[f"{k}_sd"] = float(v.mean()), float(v.std(ddof=1))
    return out


def _crops(frame, cfg: dict[str, Any]):
    """The frame with detected crops (``crops``) and truth-framed ones (``truth_crops``).

    Detected: the shipped cropper, its slots labelled by ``annotated_crop_grades``
    (``crop_grades``) or the patient's label; truth-framed: ``CropStacker`` on the
    annotated keypoints (``truth_crop_grades`` / ``truth_prevalent_vf``).
    """
    from fracsurv import pretrained
    from fracsurv.vertebrae.crops import CropStacker
    from fracsurv.vertebrae.evaluation import annotated_crop_grades

    crop = {"crop_size": cfg["crop_size"], "n_crops": int(cfg.get("n_crops", 13))}
    resize, aux = cfg.get("crop_resize", "shrink"), cfg.get("aux_column")
    truth = CropStacker(**crop, resize=resize,
                        output_column="truth_crops",
                        grades_column="truth_crop_grades" if aux == "crop_grades" else None,
                        ).fit_transform(frame)
    cropper = pretrained.load("vertebra-cropper", crop_resize=resize, **crop)
    X = cropper.transform(frame)
    X["truth_crops"] = truth["truth_crops"].to_numpy()
    if aux == "crop_grades":
        X["crop_grades"] = annotated_crop_grades(cropper, X)
        X["truth_crop_grades"] = truth["truth_crop_grades"].to_numpy()
    elif aux:
        X[f"truth_{aux}"] = X[aux]
    return X, {"model": "vertebra-cropper", **pretrained.card("vertebra-cropper").get("training", {})}


def main() -> None:
    from sklearn.model_selection import StratifiedKFold, train_test_split

    from fracsurv._base import survival_arrays
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.metrics import concordance_index
    from fracsurv.nn.base import resolve_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--variants", default=None, help="default: the preset's, else all")
    ap.add_argument("--n-patients", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cfg = dict(PRESETS[args.preset])
    if args.n_patients:
        cfg["n_patients"] = args.n_patients
    if args.epochs:
        cfg["epochs"] = args.epochs
    preset_variants = cfg.pop("variants", VARIANTS)
    variants = [v for v in (args.variants or ",".join(preset_variants)).split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {VARIANTS}")
    device = str(resolve_device(args.device))
    warnings.filterwarnings("ignore")

    t0 = time.perf_counter()
    cohort = make_spine_cohort(cfg["n_patients"], image_shape=tuple(cfg["image_shape"]),
                               n_followups=0, random_state=args.seed + 11, dicom=False,
                               n_jobs=2)
    X, cropper_card = _crops(cohort.frame, cfg)
    truth = cohort.truth.patients  # capped as in the cohort's hazard (docs/synthetic_cohort.md)
    X["true_n_vf"] = np.minimum(truth["n_prevalent_vf"].to_numpy(float), 3)
    X["true_sdi"] = np.minimum(truth["sdi"].to_numpy(float), 6)
    y, oracle = cohort.target, np.asarray(cohort.truth.log_hazard, float)
    clinical = list(cohort.clinical_columns)
    t_data = time.perf_counter() - t0
    event, _ = survival_arrays(y)
    idx = np.arange(len(X))
    rest, hold = train_test_split(idx, test_size=0.1, stratify=event, random_state=args.seed)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=args.seed)
                 .split(rest, event[rest]))
    splits = [(rest[a], rest[b]) for a, b in folds]

    oracle_folds = [{"c_index": concordance_index(y[te], oracle[te])} for _, te in splits]
    table: dict[str, Any] = {
        "oracle": {**_summary(oracle_folds), "folds": oracle_folds,
                   "holdout": {"c_index": concordance_index(y[hold], oracle[hold])}}}
    name = f"fusion_{args.preset.replace('-', '_')}"
    path = Path(args.out) if args.out else RESULTS / f"{name}.json"
    for variant in variants:
        fold_metrics, fit_s = [], []
        for tr, te in [*splits, (rest, hold)]:
            model, cols = _make(variant, cfg, clinical, device, args.seed)
            Xtr, Xte = X.iloc[tr][cols], X.iloc[te][cols]
            start = time.perf_counter()
            model.fit(Xtr, y[tr])
            fit_s.append(time.perf_counter() - start)
            fold_metrics.append(_metrics(model, Xtr, y[tr], Xte, y[te]))
        row = {**_summary(fold_metrics[:-1]), "holdout": fold_metrics[-1],
               "folds": fold_metrics[:-1], "fit_seconds_mean": float(np.mean(fit_s))}
        if getattr(model, "clinical_weight_", None) is not None:
            row["clinical_weight_holdout_model"] = model.clinical_weight_
        table[variant] = row
        print(f"{variant:28s} C {row['c_index_mean']:.3f} ± {row['c_index_sd']:.3f}  "
              f"AUC {row['auc_mean']:.3f}  IBS {row['brier_mean']:.3f}  "
              f"hold-out C {row['holdout']['c_index']:.3f}  ({row['fit_seconds_mean']:.0f} s/fit)",
              flush=True)

    oracle_c = table["oracle"]["c_index_mean"]
    multimodal = {k: v for k, v in table.items() if k not in REFERENCE
                  and ("intermediate" in k or "late" in k or "alpha" in k)}
    clinical_only = {k: v for k, v in table.items() if k in ("coxph", "deepsurv")}
    targets: dict[str, Any] = {}
    if multimodal and clinical_only:
        best = max(multimodal, key=lambda k: multimodal[k]["c_index_mean"])
        best_clin = max(clinical_only, key=lambda k: clinical_only[k]["c_index_mean"])
        gain = multimodal[best]["c_index_mean"] - clinical_only[best_clin]["c_index_mean"]
        spread = max(multimodal[best]["c_index_sd"], clinical_only[best_clin]["c_index_sd"])
        ratio = multimodal[best]["c_index_mean"] / oracle_c
        # the same folds: the per-fold difference is the paired comparison
        diff = np.array([m["c_index"] - c["c_index"] for m, c in
                         zip(multimodal[best]["folds"], clinical_only[best_clin]["folds"])])
        targets = {
            "best_multimodal": best, "best_clinical_only": best_clin,
            "fraction_of_oracle_c": {"value": ratio, "target": ">= 0.95",
                                     "reached": bool(ratio >= 0.95)},
            "gain_over_clinical_vs_cv_spread": {"gain": gain, "spread": spread,
                                                "reached": bool(gain > spread)},
            "paired_fold_differences": {
                "per_fold": diff.tolist(), "mean": float(diff.mean()),
                "sd": float(diff.std(ddof=1)), "all_positive": bool((diff > 0).all()),
                "holdout": multimodal[best]["holdout"]["c_index"]
                - clinical_only[best_clin]["holdout"]["c_index"]},
        }
        print(f"best multimodal {best}: {ratio:.3f} of the oracle C; gain over {best_clin} "
              f"{gain:+.3f} (CV spread {spread:.3f}; paired fold differences "
              f"{np.round(diff, 3).tolist()})")
    timings = {"cohort": t_data, "total": time.perf_counter() - t0}
    write_json(name, {
        "settings": {**{k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
                     "reference_rows": list(REFERENCE), "crops": "detected by the shipped "
                     "vertebra-cropper (rows *_crops); true keypoints (rows *_truthcrops)",
                     "cropper": cropper_card,
                     "preset": args.preset, "device": device, "seed": args.seed,
                     "cohort_random_state": args.seed + 11, "holdout_fraction": 0.1,
                     "cv_folds": 3, "n_holdout": len(hold), "n_rest": len(rest),
                     "metrics": "Harrell's C; mean cumulative/dynamic AUC (IPCW) and integrated "
                                "IPCW Brier over 8 times from the 10th to the 80th percentile of "
                                "the test event times"},
        "timings_s": timings, "table": table, "targets": targets,
    }, path)


if __name__ == "__main__":
    main()
