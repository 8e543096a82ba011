"""Stages 1-5 of ``fracsurv demo``: cohort, images, crops and image scores.

Every stage takes the :class:`~fracsurv.demo.context.DemoContext` and adds its
columns, fitted components and report sections.
"""

from __future__ import annotations

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
from fracsurv.io.preprocess import equalize_clahe
from fracsurv.pretrained.train import DETECTED_CROPS
from fracsurv.scoring import PVFScorer
from fracsurv.scoring.futures import scores_at_baseline_vertebrae
from fracsurv.stratify import RiskGrouper
from fracsurv.vertebrae import VertebraCropper
from fracsurv.vertebrae.evaluation import detection_summary

__all__ = ["GENERATOR_IMAGE", "stage_cohort", "stage_crops", "stage_future", "stage_images",
           "stage_pvf", "to_scorer_domain"]


#: Radiograph size of the demo (the shipped pvf-scorer was trained on crops detected
#: at this size; ``--tiny`` keeps the cohort's default 256 x 128).
DEMO_IMAGE_SHAPE = (512, 256)


# -- 1. data -----------------------------------------------------------------------------
def stage_cohort(ctx: DemoContext) -> None:
    """The built-in synthetic cohort, split 70/30 stratified on the event."""
    ctx.report.section("Cohort", "cohort")
    kwargs: dict[str, Any] = {}
    if ctx.n_patients:
        kwargs["n_patients"] = ctx.n_patients
    if not ctx.image_shape and not ctx.tiny:
        ctx.image_shape = DEMO_IMAGE_SHAPE
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


#: The baselines without CLAHE: the shipped generator's training domain (it was trained
#: on the simulator's arrays; fed CLAHE images its futures at the follow-up age fell
#: from MS-SSIM 0.852 to 0.676 against the real follow-up on 16 patients;
#: benchmarks/diffx_input_domain.py).
GENERATOR_IMAGE = "generator_image"


def stage_images(ctx: DemoContext) -> None:
    shape = _image_shape(ctx)
    # scikit-image's CLAHE: the preprocessing the shipped cropper, pvf and fusion models
    # were trained on
    loader = DicomLoader(output_shape=shape, cache_dir=str(ctx.out / "cache"), n_jobs=2,
                         clahe_backend="skimage")
    if not ctx.retrain:
        raw = DicomLoader(output_shape=shape, clahe=False, cache_dir=str(ctx.out / "cache"),
                          n_jobs=2)
        for name in ("train", "test"):
            frame = getattr(ctx, name)
            frame[GENERATOR_IMAGE] = raw.fit_transform(frame[["image"]])["image"].to_numpy()
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
        # 512 x 256); its crops cut as the shipped pvf-scorer was trained on them
        cropper = pretrained.load("vertebra-cropper").set_params(**DETECTED_CROPS)
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
    """PVFScorer on the detected crop stacks: ``pvf``, also the Diff-X study's BpVF.

    The study scores whole radiographs; here the baseline score (BpVF) and the
    generated one (GpVF, :func:`stage_future`) come from the crop scorer, whose
    AUROC on detected vertebrae is far above a whole-image scorer's at CPU
    resolutions (benchmarks/results/pvf_scorer.json: 0.58 whole image).
    """
    if "crops" not in ctx.train.columns or "prevalent_vf" not in ctx.train.columns:
        return
    if not (ctx.tiny or ctx.retrain) and ctx.model_sources.get("VertebraCropper", "").startswith(
            "fracsurv.pretrained"):
        # trained on the crops the shipped cropper detects (fracsurv train)
        scorer = pretrained.load("pvf-scorer")
        ctx.model_sources["PVFScorer"] = "fracsurv.pretrained.load('pvf-scorer')"
    else:
        h, w = np.asarray(ctx.train["crops"].iloc[0]).shape[-2:]
        scorer = PVFScorer(backbone="resnet10-tiny", image_column="crops", image_input="crops",
                           crop_encoder="shared", input_shape=(min(int(h), 64), min(int(w), 64)),
                           max_epochs=2 if ctx.tiny else 12,
                           batch_size=32, lr=2e-3, augment=False, validation_fraction=0.0,
                           random_state=ctx.seed)
        scorer.fit(ctx.train)
        ctx.model_sources["PVFScorer"] = "trained in the demo"
    ctx.train, ctx.test = scorer.transform(ctx.train), scorer.transform(ctx.test)
    for frame in (ctx.train, ctx.test):
        frame["bpvf"] = frame["pvf"]  # the study's name for the baseline score
    ctx.fitted["PVFScorer"] = scorer
    auc = roc_auc_score(ctx.test["prevalent_vf"], ctx.test["pvf"])
    ctx.pvf_auc = float(auc)
    ctx.say(f"    pVF AUROC on the test split: {auc:.3f} ({ctx.model_sources['PVFScorer']})")


def to_scorer_domain(ctx: DemoContext, images: list[np.ndarray]) -> list[np.ndarray]:
    """Generated images as the scorers see radiographs: the loader's CLAHE applied to the
    futures of a generator fed un-equalised baselines (``GENERATOR_IMAGE``)."""
    loader, gen = ctx.fitted["DicomLoader"], ctx.fitted["DiffXGenerator"]
    if not (loader.clahe and gen.image_column == GENERATOR_IMAGE):
        return list(images)
    return [equalize_clahe(im, loader.clahe_clip_limit, loader.clahe_kernel_size,
                           loader.clahe_backend).astype(np.float32) for im in images]


def future_crop_scores(ctx: DemoContext, frame: pd.DataFrame, n_seeds: int,
                       chunk: int = 64) -> np.ndarray:
    """GpVF: the crop pVF scorer on the generated futures, cut at the baseline's vertebrae
    (:func:`fracsurv.scoring.futures.scores_at_baseline_vertebrae`), in the scorer's
    input domain (:func:`to_scorer_domain`); mean over seeds, max over horizons."""
    return scores_at_baseline_vertebrae(
        ctx.fitted["VertebraCropper"], ctx.fitted["PVFScorer"], list(frame["future_images"]),
        list(frame["vertebrae"]), [load_image(b).shape for b in frame["image"]],
        n_seeds=n_seeds, preprocess=lambda ims: to_scorer_domain(ctx, ims), chunk=chunk)


#: DDIM steps of the shipped generator in the demo (see :func:`_generator`).
DEMO_DDIM_STEPS = 10
#: Generated futures per patient and horizon (the study's GpVF is their mean): one
#: keeps the stage at 160-170 s on 2 cores with the 256 x 128 generator (two seeds took 243 s
#: with the previous 128 x 64 one, which took 105 s with one).
DEMO_SEEDS = 1


def _generator(ctx: DemoContext) -> DiffXGenerator:
    """The shipped DiffXGenerator, or (``--retrain``) one trained here at the demo preset.

    Futures are kept at the generator's own resolution (``output_shape=None``
    would resize them to the baseline's); :func:`future_crop_scores` resizes them
    for cropping.
    """
    common = {"horizons": (10,), "n_seeds": DEMO_SEEDS, "cache_dir": str(ctx.out / "cache")}
    if not ctx.retrain:
        ctx.model_sources["DiffXGenerator"] = ("fracsurv.pretrained.load('diffx'), "
                                               f"{DEMO_DDIM_STEPS} DDIM steps")
        # two fewer than the card's 12: on the validation cohort 10 and 12 steps read alike
        # (follow-up MS-SSIM 0.892 / 0.892, age R^2 0.824 / 0.828, pVF r 0.753 / 0.759;
        # benchmarks/results/diffx_cpu_steps.json)
        gen = pretrained.load("diffx", **common, n_inference_steps=DEMO_DDIM_STEPS,
                              image_column=GENERATOR_IMAGE, random_state=ctx.seed)
        gen.set_params(output_shape=tuple(gen.input_shape))
        ctx.say(f"    DiffXGenerator: pretrained ({gen.n_train_images_} training images, "
              f"{gen.input_shape[0]}x{gen.input_shape[1]})")
        return gen
    ctx.model_sources["DiffXGenerator"] = "trained in the demo"
    preset = {**DIFFX_PRESETS["tiny" if ctx.tiny else "demo"], **common}
    preset["output_shape"] = tuple(preset["input_shape"])
    gen = DiffXGenerator(**preset, random_state=ctx.seed)
    n_fit = min(len(ctx.train), 60 if ctx.tiny else 160)  # sized for the 10-minute budget
    gen.fit(ctx.train.iloc[:n_fit])
    ctx.say(f"    DiffXGenerator trained on {gen.n_train_images_} images "
          f"({preset['input_shape'][0]}x{preset['input_shape'][1]})")
    return gen


def stage_future(ctx: DemoContext) -> None:
    if "pvf" not in ctx.train.columns or "vertebrae" not in ctx.train.columns:
        return
    gen = ctx.fitted["DiffXGenerator"] = _generator(ctx)
    ctx.train, ctx.test = gen.transform(ctx.train), gen.transform(ctx.test)
    for frame in (ctx.train, ctx.test):
        frame["gpvf"] = future_crop_scores(ctx, frame, gen.n_seeds)
    medians = (float(ctx.train["bpvf"].median()), float(ctx.train["gpvf"].median()))
    # --tiny: the training medians. A 140-patient split has too few events for stable
    # log-rank cut-points, which can leave a group empty or eventless on the test split.
    grouper = RiskGrouper(baseline_column="bpvf", future_column="gpvf",
                          thresholds=medians if ctx.tiny else "optimal")
    try:
        grouper.fit(ctx.train, ctx.y_train)
    except ValueError as exc:  # too few training events for a log-rank cut
        ctx.say(f"    optimal cut-points unavailable ({exc}); using the training medians "
              f"{medians[0]:.3f} / {medians[1]:.3f}")
        grouper.set_params(thresholds=medians).fit(ctx.train, ctx.y_train)
    ctx.train, ctx.test = grouper.transform(ctx.train), grouper.transform(ctx.test)
    ctx.fitted.update({"DiffXGenerator": gen, "RiskGrouper": grouper})
    ctx.say(f"    risk groups (test): {ctx.test['risk_group'].value_counts().to_dict()}")
