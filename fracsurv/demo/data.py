"""Stages 1-5 of ``fracsurv demo``: cohort, images, crops and image scores.

Every stage takes the :class:`~fracsurv.demo.context.DemoContext` and adds its
columns, fitted components and report sections.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from fracsurv import pretrained
from fracsurv._base import survival_arrays
from fracsurv.contract import CLINICAL_COLUMNS
from fracsurv.datasets import load_demo_cohort
from fracsurv.demo.context import DemoContext, clinical_columns
from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator
from fracsurv.io import DicomLoader, load_image
from fracsurv.scoring import PVFScorer
from fracsurv.stratify import RiskGrouper
from fracsurv.vertebrae import VertebraCropper
from fracsurv.vertebrae.evaluation import detection_summary

__all__ = ["stage_cohort", "stage_crops", "stage_future", "stage_images", "stage_pvf"]


# -- 1. data -----------------------------------------------------------------------------
def stage_cohort(ctx: DemoContext) -> None:
    """The built-in synthetic cohort, split 70/30 stratified on the event."""
    ctx.report.section("Cohort", "cohort")
    kwargs: dict[str, Any] = {}
    if ctx.n_patients:
        kwargs["n_patients"] = ctx.n_patients
    if ctx.image_shape:
        kwargs["image_shape"] = ctx.image_shape
    cohort = load_demo_cohort(**kwargs)
    X, y = cohort.frame, cohort.target
    ctx.cohort, ctx.truth = cohort, cohort.truth
    ctx.clinical_columns = list(CLINICAL_COLUMNS)
    event, _ = survival_arrays(y)
    _check_enough_events(int(event.sum()), len(X))
    tr, te = train_test_split(np.arange(len(X)), test_size=0.3, random_state=ctx.seed,
                              stratify=event)
    ctx.train, ctx.test = X.iloc[tr].copy(), X.iloc[te].copy()
    ctx.y_train, ctx.y_test = y[tr], y[te]
    ctx.split_index = (tr, te)
    ctx.report.add_table(_table_one(ctx), caption="Characteristics by split (mean ± SD or %)")


MIN_EVENTS = 6
"""Fewest events the demo runs on: the 70/30 split then leaves >= 2 events for the test split."""


def _check_enough_events(n_events: int, n_patients: int) -> None:
    """Refuse a cohort too small to analyse before minutes of work (exit code 2)."""
    if n_events < MIN_EVENTS:
        from fracsurv.batch import UsageError

        raise UsageError(f"the cohort of {n_patients} patients has {n_events} fracture event(s); "
                         f"the demo needs at least {MIN_EVENTS} (use a larger --n-patients, "
                         "e.g. 120)")


def _table_one(ctx: DemoContext) -> pd.DataFrame:
    rows: dict[str, dict[str, str]] = {}
    for name, frame, y in (("train", ctx.train, ctx.y_train), ("test", ctx.test, ctx.y_test)):
        event, time = survival_arrays(y)
        col: dict[str, str] = {"n": str(len(frame)), "events": f"{event.sum()} ({100 * event.mean():.1f} %)",
                               "follow-up": f"{time.mean():.2f} ± {time.std():.2f}"}
        for c in clinical_columns(ctx):
            v = frame[c].astype(float)
            if set(np.unique(v.dropna())) <= {0.0, 1.0}:
                col[c] = f"{100 * v.mean():.1f} %"
            else:
                col[c] = f"{v.mean():.2f} ± {v.std():.2f}"
        rows[name] = col
    return pd.DataFrame(rows)


# -- 2-5. images, crops and image scores ---------------------------------------------


def stage_images(ctx: DemoContext) -> None:
    shape = _image_shape(ctx)
    # scikit-image's CLAHE: the preprocessing the shipped pretrained models were trained on
    loader = DicomLoader(output_shape=shape, cache_dir=str(ctx.out / "cache"), n_jobs=2,
                         clahe_backend="skimage")
    ctx.train = loader.fit_transform(ctx.train)
    ctx.test = loader.transform(ctx.test)
    ctx.fitted["DicomLoader"] = loader
    ctx.say(f"    loaded {len(ctx.train) + len(ctx.test)} DICOM files into {ctx.out / 'cache'}")


def _image_shape(ctx: DemoContext) -> tuple[int, int]:
    ref = ctx.train["image"].iloc[0]
    return tuple(load_image(ref).shape) if not isinstance(ref, str) or not ref.endswith(".dcm") \
        else tuple(ctx.image_shape or (256, 128))


def stage_crops(ctx: DemoContext) -> None:
    """VertebraCropper: learned keypoints, Genant grades and the 13-crop stack.

    The crops (and ``sdi``) every later stage uses come from the learned detector,
    not from the cohort's annotations; its detection accuracy on the test split is
    reported against those annotations.
    """
    if "keypoints" not in ctx.train.columns:
        return
    if not (ctx.tiny or ctx.retrain):
        # the shipped cropper (trained on 480 radiographs at 1024 x 512, detector input
        # 512 x 256) on the demo's 256 x 128 images: prevalent-fracture AUROC of its soft
        # grade 0.938 on 120 demo-seed patients, against chance for one trained here
        cropper = pretrained.load("vertebra-cropper")
        ctx.model_sources["VertebraCropper"] = "fracsurv.pretrained.load('vertebra-cropper')"
        ctx.train, ctx.test = cropper.transform(ctx.train), cropper.transform(ctx.test)
        ctx.fitted["VertebraCropper"] = cropper
        ctx.detection = det = detection_summary(ctx.test["vertebrae"], ctx.test["keypoints"])
        ctx.say(f"    VertebraCropper: pretrained; test sensitivity {det['sensitivity']:.2f}, "
                f"precision {det['precision']:.2f}, median point error "
                f"{det['median_point_error_px']:.1f} px")
        return
    ctx.model_sources["VertebraCropper"] = "trained in the demo"
    h, w = _image_shape(ctx)
    n_fit = min(len(ctx.train), 60 if ctx.tiny else 240)
    cropper = VertebraCropper(input_shape=(h - h % 16, w - w % 16), channels=(8, 16, 32, 64),
                          num_res_units=0, train_window=(64, 96) if w >= 96 else None,
                          batch_size=8, lr=5e-3, max_epochs=10 if ctx.tiny else 16,
                          patch_size=32, refiner_channels=(8, 16, 32, 64),
                          stage2_epochs=3 if ctx.tiny else 8,
                          validation_fraction=0.0, patience=0, random_state=ctx.seed)
    cropper.fit(ctx.train.iloc[:n_fit])
    ctx.train, ctx.test = cropper.transform(ctx.train), cropper.transform(ctx.test)
    ctx.fitted["VertebraCropper"] = cropper
    det = detection_summary(ctx.test["vertebrae"], ctx.test["keypoints"])
    ctx.detection = det
    ctx.say(f"    VertebraCropper trained on {n_fit} images; test sensitivity "
          f"{det['sensitivity']:.2f}, precision {det['precision']:.2f}, median point error "
          f"{det['median_point_error_px']:.1f} px")


def stage_pvf(ctx: DemoContext) -> None:
    if "crops" not in ctx.train.columns or "prevalent_vf" not in ctx.train.columns:
        return
    h, w = np.asarray(ctx.train["crops"].iloc[0]).shape[-2:]
    scorer = PVFScorer(backbone="resnet10-tiny", image_column="crops", image_input="crops",
                       input_shape=(int(h), int(w)), max_epochs=2 if ctx.tiny else 12,
                       batch_size=32, lr=2e-3, augment=False, validation_fraction=0.0,
                       random_state=ctx.seed)
    scorer.fit(ctx.train)
    ctx.train, ctx.test = scorer.transform(ctx.train), scorer.transform(ctx.test)
    ctx.fitted["PVFScorer"] = scorer
    auc = roc_auc_score(ctx.test["prevalent_vf"], ctx.test["pvf"])
    ctx.pvf_auc = float(auc)
    ctx.say(f"    pVF AUROC on the test split: {auc:.3f}")


def _image_scorer(ctx: DemoContext) -> Any:
    """A full-image pVF scorer (the Diff-X study scores whole radiographs: BpVF and GpVF)."""
    # not shipped pretrained: the whole-image scorer trained on 1,500 radiographs at
    # 128 x 64 reached only AUROC 0.51 on held-out baselines (docs/pretrained.md)
    ctx.model_sources["PVFScorer (image)"] = "trained in the demo"
    shape = (64, 32) if ctx.tiny else (128, 64)
    scorer = PVFScorer(backbone="resnet10-tiny", image_column="image", image_input="image",
                       output_column="bpvf", input_shape=shape, max_epochs=2 if ctx.tiny else 12,
                       batch_size=32, lr=2e-3, augment=False, validation_fraction=0.0,
                       random_state=ctx.seed)
    scorer.fit(ctx.train)
    return scorer


#: DDIM steps of the shipped generator in the demo (see :func:`_generator`).
DEMO_DDIM_STEPS = 10


def _generator(ctx: DemoContext, shape: tuple[int, int]) -> DiffXGenerator:
    """The shipped DiffXGenerator, or (``--retrain``) one trained here at the demo preset."""
    common = {"horizons": (10,), "n_seeds": 2, "output_shape": shape,
              "cache_dir": str(ctx.out / "cache")}
    if not ctx.retrain:
        ctx.model_sources["DiffXGenerator"] = ("fracsurv.pretrained.load('diffx'), "
                                               f"{DEMO_DDIM_STEPS} DDIM steps")
        # fewer steps than the card's 20: 1.5x faster, and the images stay closer to the
        # 20-step ones (MS-SSIM 0.982) than two seeds are to each other (0.966);
        # benchmarks/results/diffx_demo_speed.json
        gen = pretrained.load("diffx", **common, n_inference_steps=DEMO_DDIM_STEPS,
                              random_state=ctx.seed)
        ctx.say(f"    DiffXGenerator: pretrained ({gen.n_train_images_} training images, "
              f"{gen.input_shape[0]}x{gen.input_shape[1]})")
        return gen
    ctx.model_sources["DiffXGenerator"] = "trained in the demo"
    preset = {**DIFFX_PRESETS["tiny" if ctx.tiny else "demo"], **common}
    gen = DiffXGenerator(**preset, random_state=ctx.seed)
    n_fit = min(len(ctx.train), 60 if ctx.tiny else 160)  # sized for the 10-minute budget
    gen.fit(ctx.train.iloc[:n_fit])
    ctx.say(f"    DiffXGenerator trained on {gen.n_train_images_} images "
          f"({preset['input_shape'][0]}x{preset['input_shape'][1]})")
    return gen


def stage_future(ctx: DemoContext) -> None:
    if "image" not in ctx.train.columns or "prevalent_vf" not in ctx.train.columns:
        return
    scorer = _image_scorer(ctx)
    ctx.train, ctx.test = scorer.transform(ctx.train), scorer.transform(ctx.test)
    gen = _generator(ctx, tuple(scorer.input_shape))
    ctx.train, ctx.test = gen.transform(ctx.train), gen.transform(ctx.test)
    gscorer = copy.deepcopy(scorer).set_params(image_column="future_images", output_column="gpvf",
                                               n_seeds=gen.n_seeds)
    ctx.train, ctx.test = gscorer.transform(ctx.train), gscorer.transform(ctx.test)
    grouper = RiskGrouper(baseline_column="bpvf", future_column="gpvf", thresholds="optimal")
    try:
        grouper.fit(ctx.train, ctx.y_train)
    except ValueError as exc:  # too few training events for a log-rank cut (tiny cohorts)
        cuts = (float(ctx.train["bpvf"].median()), float(ctx.train["gpvf"].median()))
        ctx.say(f"    optimal cut-points unavailable ({exc}); using the training medians "
              f"{cuts[0]:.3f} / {cuts[1]:.3f}")
        grouper.set_params(thresholds=cuts).fit(ctx.train, ctx.y_train)
    ctx.train, ctx.test = grouper.transform(ctx.train), grouper.transform(ctx.test)
    ctx.fitted.update({"PVFScorer (image)": scorer, "DiffXGenerator": gen,
                       "RiskGrouper": grouper})
    ctx.say(f"    risk groups (test): {ctx.test['risk_group'].value_counts().to_dict()}")
