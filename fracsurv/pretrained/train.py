"""``fracsurv train``: every image model of the pipeline, in dependency order, resumable.

1. ``vertebra-cropper`` -- keypoints, Genant grades and crops;
2. ``pvf-scorer`` -- prevalent-fracture CNN on the crops the *trained cropper
   detects* (never on annotated ones: the deployable path);
3. ``diffx`` -- the future-image generator;
4. ``fusion-survival`` -- crops + clinical variables, Cox partial likelihood,
   again on detected crops.

Each model is trained on a cohort of the built-in generator with a fixed seed
(:data:`SEEDS`), evaluated on a cohort whose seed serves nothing else, and
written with :func:`fracsurv.pretrained.publish.publish` (safetensors + JSON
config + model card) to ``out/<name>``. Training runs inside
:func:`fracsurv.nn.resume.resumable` (and the generator's own ``checkpoint_dir``),
so a killed run started again with ``resume=True`` skips the finished models and
continues the unfinished one from its last epoch.

With ``data`` the same command trains on a user's table (docs/pretrained.md):
one row per patient per docs/data_contract.md -- DICOM paths in ``image``,
``keypoints`` (JSON text in CSV), ``prevalent_vf``, ``followup_image`` /
``followup_age``, ``time`` / ``event`` and the clinical columns. A seeded 80/20
split gives the training and held-out rows; each model uses the rows that hold
its supervision.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DETECTED_CROPS", "MODEL_NAMES", "PRESETS", "SEEDS", "train"]

#: Models in training order; each may use the ones before it.
MODEL_NAMES = ("vertebra-cropper", "pvf-scorer", "diffx", "fusion-survival")

#: Cohort seeds: (training, held-out) per model. None of them serves anything else.
#: vertebra-cropper and diffx keep the seeds of the benchmark runs that trained the
#: shipped weights (benchmarks/vertebra_cropper.py, benchmarks/train_diffx.py).
SEEDS = {"vertebra-cropper": (0, 8), "pvf-scorer": (6101, 6102), "diffx": (3501, 3511),
         "fusion-survival": (6201, 6202)}

#: How the cropper cuts the stacks the pvf-scorer and fusion-survival read: every
#: vertebra box resized to fill 64 x 64 (aspect kept). The cropper's default
#: (``crop_size="auto"``, ``"shrink"``) keeps the study's canvas, in which a vertebra
#: of a 512 x 256 image fills a fifth of the crop: a scorer trained on those reached
#: held-out AUROC 0.648 (cpu preset, 20 epochs). Post-processing only: set with
#: ``set_params``, no retraining of the cropper.
DETECTED_CROPS = {"crop_size": (64, 64), "crop_resize": "fill"}

_CROPPER = {"channels": (8, 16, 32, 64), "num_res_units": 0, "input_shape": (512, 256),
            "train_window": (128, 192), "batch_size": 8, "lr": 5e-3, "weight_decay": 1e-4,
            "max_epochs": 60, "stage2_epochs": 30, "patch_size": 64,
            "refiner_channels": (16, 32, 64, 128), "fracture_oversample": 24,
            "validation_fraction": 0.1, "patience": 60, "augment": True}
_PVF = {"backbone": "resnet10-tiny", "image_column": "crops", "image_input": "crops",
        "crop_encoder": "shared", "crop_label_column": "crop_grades", "input_shape": (64, 64),
        "max_epochs": 24, "batch_size": 16, "lr": 1e-3, "augment": True,
        "validation_fraction": 0.0}
#: The late-fusion recipe of benchmarks/fusion.py --preset cpu-graded (docs/fusion_survival.md):
#: per-crop Genant grades as the image branch's ordinal target and its risk, a linear
#: clinical branch fitted exactly, frozen sub-models combined on every training row.
_FUSION = {"image_input": "crops", "crop_encoder": "shared", "backbone": "resnet10-tiny",
           "fusion": "late", "input_shape": (32, 32), "aux_column": "crop_grades",
           "aux_weight": 1.0, "aux_risk": "only", "clinical_hidden_units": (),
           "head_rows": "all", "augment": False, "max_epochs": 20, "batch_size": 16,
           "lr": 1e-3, "validation_fraction": 0.15, "patience": 0}

#: Per model: cohort size and image shape of training and held-out cohorts, and the
#: estimator's parameters. ``cpu`` made the shipped weights; ``tiny`` is for tests.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "vertebra-cropper": {"n": 480, "n_eval": 120, "shape": (1024, 512), "params": _CROPPER},
        "pvf-scorer": {"n": 2000, "n_eval": 300, "shape": (512, 256), "dicom": True,
                       "params": _PVF},
        # sampling settings: the preset's, chosen on validation cohort 3502
        # (benchmarks/results/diffx_cpu_tuning.json)
        "diffx": {"n": 3000, "n_eval": 40, "shape": (512, 256), "preset": "cpu", "params": {}},
        "fusion-survival": {"n": 1500, "n_eval": 1000, "shape": (512, 256), "dicom": True,
                            "params": _FUSION},
    },
    "tiny": {
        "vertebra-cropper": {"n": 8, "n_eval": 4, "shape": (128, 64), "params": {
            **_CROPPER, "input_shape": (64, 32), "train_window": None, "max_epochs": 2,
            "stage2_epochs": 1, "patch_size": 32, "refiner_channels": (8, 16, 32, 64),
            "validation_fraction": 0.0, "patience": 0, "augment": False}},
        "pvf-scorer": {"n": 12, "n_eval": 8, "shape": (128, 64), "dicom": True,
                       "params": {**_PVF, "input_shape": (16, 16), "max_epochs": 2,
                                  "batch_size": 8, "augment": False}},
        "diffx": {"n": 8, "n_eval": 3, "shape": (64, 32), "preset": "tiny", "params": {}},
        "fusion-survival": {"n": 16, "n_eval": 8, "shape": (128, 64),
                            "params": {**_FUSION, "input_shape": (16, 16), "max_epochs": 2,
                                       "batch_size": 8, "validation_fraction": 0.0}},
    },
}

_SURVIVAL = ("time", "event")


@dataclass
class _Run:
    out: Path
    preset: str
    say: Callable[[str], None]
    data: pd.DataFrame | None
    random_state: int
    verbose: int = 0  # the estimators' verbose: 1 epoch table, 2 with a batch progress bar

    def spec(self, name: str) -> dict[str, Any]:
        return PRESETS[self.preset][name]

    def cohort(self, name: str, role: str, *, followups: int = 0) -> pd.DataFrame:
        """Training (``role="train"``) or held-out rows for ``name``."""
        if self.data is not None:
            return _user_rows(self.data, name, role, self.random_state)
        from fracsurv.datasets import make_spine_cohort

        spec = self.spec(name)
        seed = SEEDS[name][0 if role == "train" else 1]
        n = spec["n"] if role == "train" else spec["n_eval"]
        files = self.out / ".cohorts" / f"{name}-{role}" if spec.get("dicom") else None
        c = make_spine_cohort(n, image_shape=tuple(spec["shape"]), random_state=seed,
                              dicom=files is not None, out_dir=files, n_followups=followups)
        frame = c.frame.copy()
        frame["time"], frame["event"] = c.target["time"], c.target["event"]
        if files is not None:  # the deployable path: DICOM files read as the demo reads them
            from fracsurv.io import DicomLoader

            frame = DicomLoader(output_shape=tuple(spec["shape"]), clahe_backend="skimage",
                                cache_dir=str(self.out / ".cache"), n_jobs=2).fit_transform(frame)
        return frame

    def cohort_text(self, name: str, role: str, followups: int = 0) -> str:
        if self.data is not None:
            return f"user data ({role} rows of a seeded 80/20 split, random_state {self.random_state})"
        spec = self.spec(name)
        n = spec["n"] if role == "train" else spec["n_eval"]
        seed = SEEDS[name][0 if role == "train" else 1]
        return (f"make_spine_cohort({n}, image_shape={tuple(spec['shape'])}, "
                f"random_state={seed}, n_followups={followups}"
                + (", dicom=True), files read by DicomLoader(clahe_backend='skimage')"
                   if spec.get("dicom") else ")"))


def _user_rows(data: pd.DataFrame, name: str, role: str, random_state: int) -> pd.DataFrame:
    need = {"vertebra-cropper": ["image", "keypoints"], "pvf-scorer": ["image", "prevalent_vf"],
            "diffx": ["image", "followup_image", "followup_age", "age", "sex"],
            "fusion-survival": ["image", "prevalent_vf", *_SURVIVAL]}[name]
    missing = [c for c in need if c not in data.columns]
    if missing:
        raise ValueError(f"{name} needs the column(s) {', '.join(missing)} in the training table")
    rows = data.dropna(subset=need)
    rng = np.random.default_rng(random_state)
    heldout = rng.random(len(data)) < 0.2
    mask = pd.Series(heldout if role != "train" else ~heldout, index=data.index)
    return rows[mask.loc[rows.index].to_numpy()]


def read_training_table(path: str | Path, output_shape: tuple[int, int] = (1024, 512),
                        cache_dir: str | Path | None = None) -> pd.DataFrame:
    """A user's training table (CSV or Parquet) with its DICOM files loaded.

    Relative image paths are read from the table's folder; ``keypoints`` cells
    given as JSON text are parsed. Images are decoded and preprocessed by
    :class:`fracsurv.io.DicomLoader` (by reference, cached).
    """
    from fracsurv.io import DicomLoader

    path = Path(path)
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    for column in ("image", "followup_image"):
        if column in frame.columns:
            frame[column] = [c if not isinstance(c, str) or Path(c).is_absolute()
                             else str(path.parent / c) for c in frame[column]]
    if "keypoints" in frame.columns:
        frame["keypoints"] = [json.loads(c) if isinstance(c, str) else c
                              for c in frame["keypoints"]]
    loader = DicomLoader(output_shape=output_shape, cache_dir=None if cache_dir is None
                         else str(cache_dir), on_error="skip")
    frame = loader.fit_transform(frame)
    if "followup_image" in frame.columns:
        fu = loader.transform(frame[["followup_image"]].rename(columns={"followup_image": "image"}))
        frame["followup_image"] = fu["image"].to_numpy()
    return frame


# -- the four models ----------------------------------------------------------------------
def _cropper(run: _Run, name: str, models: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from sklearn.metrics import roc_auc_score

    from fracsurv.vertebrae import VertebraCropper
    from fracsurv.vertebrae.evaluation import detection_summary

    params = run.spec(name)["params"]
    est = VertebraCropper(**params, random_state=run.random_state, verbose=run.verbose)
    est.fit(run.cohort(name, "train"))
    test = run.cohort(name, "heldout")
    out = est.transform(test)
    metrics = detection_summary(out["vertebrae"], test["keypoints"])
    metrics["auroc_max_soft_grade"] = _auroc(roc_auc_score, test["prevalent_vf"],
                                             out["max_soft_grade"])
    return est, metrics


def _detected(run: _Run, name: str, models: dict[str, Any]
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and held-out rows cut by the trained cropper (``DETECTED_CROPS``).

    Crops come from the detections, labels from the annotations: training rows get
    ``crop_grades`` (the annotated grade of each detected slot) when the table has
    ``keypoints``.
    """
    from fracsurv.vertebrae.evaluation import annotated_crop_grades

    cropper = models["vertebra-cropper"].set_params(**DETECTED_CROPS)
    train = cropper.transform(run.cohort(name, "train"))
    if "keypoints" in train.columns:
        train["crop_grades"] = annotated_crop_grades(cropper, train)
    return train, cropper.transform(run.cohort(name, "heldout"))


def _pvf(run: _Run, name: str, models: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from sklearn.metrics import roc_auc_score

    from fracsurv.scoring import PVFScorer

    est = PVFScorer(**run.spec(name)["params"], random_state=run.random_state,
                    verbose=run.verbose)
    train, test = _detected(run, name, models)
    if "crop_grades" not in train.columns:  # no annotations: the per-patient label alone
        est.set_params(crop_label_column=None)
    est.fit(train)
    p = est.predict_proba(test)[:, 1]
    return est, {"auroc_on_detected_crops": _auroc(roc_auc_score, test["prevalent_vf"], p),
                 "brier": float(np.mean((p - test["prevalent_vf"].to_numpy()) ** 2)),
                 "prevalence": float(test["prevalent_vf"].mean())}


def _diffx(run: _Run, name: str, models: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator
    from fracsurv.metrics.images import ms_ssim
    from fracsurv.nn.data import antialiased_resize

    spec = run.spec(name)
    params = {**DIFFX_PRESETS[spec["preset"]], **spec["params"]}
    est = DiffXGenerator(**params, checkpoint_dir=str(run.out / ".checkpoints" / name),
                         random_state=run.random_state, verbose=run.verbose)
    est.fit(run.cohort(name, "train", followups=1))
    test = run.cohort(name, "heldout", followups=1)
    shape = tuple(est.input_shape)
    keep = {k: est.get_params()[k] for k in ("horizons", "n_seeds", "output_shape")}
    gen = est.set_params(horizons=("last",), n_seeds=1, output_shape=shape).transform(test)
    est.set_params(**keep)
    fake = [np.asarray(c[0], np.float32) for c in gen["future_images"]]
    real = antialiased_resize(list(test["followup_image"]), shape)
    return est, {"followup_ms_ssim": float(np.mean(ms_ssim(fake, real))),
                 "n_patients": len(test)}


def _fusion(run: _Run, name: str, models: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    from fracsurv.contract import CLINICAL_COLUMNS
    from fracsurv.metrics.core import concordance_index
    from fracsurv.survival import FusionSurvival

    train, test = _detected(run, name, models)
    est = FusionSurvival(**run.spec(name)["params"], clinical_columns=list(CLINICAL_COLUMNS),
                         random_state=run.random_state, verbose=run.verbose)
    if "crop_grades" not in train.columns:  # no annotations: a per-patient auxiliary label
        est.set_params(aux_column="prevalent_vf")
    est.fit(train, survival_target(train))
    y = survival_target(test)
    # the peer on the same rows: Cox PH on the clinical columns alone
    cols = list(est.clinical_columns)
    cox = CoxPHSurvivalAnalysis(alpha=1e-3).fit(train[cols].astype(float), survival_target(train))
    return est, {"c_index": concordance_index(y, est.predict(test)),
                 "c_index_cox_clinical": concordance_index(y, cox.predict(test[cols].astype(float))),
                 "n_events": int(y["event"].sum()), "n_patients": len(test)}


_TRAINERS: dict[str, Callable[[_Run, str, dict[str, Any]], tuple[Any, dict[str, Any]]]] = {
    "vertebra-cropper": _cropper, "pvf-scorer": _pvf, "diffx": _diffx,
    "fusion-survival": _fusion}
_NEEDS = {"pvf-scorer": ("vertebra-cropper",), "fusion-survival": ("vertebra-cropper",)}
_TASKS = {
    "vertebra-cropper": "VertebraCropper: vertebrae (6 keypoints each), Genant grades and "
                        "13-vertebra crop stacks from lateral radiographs.",
    "pvf-scorer": "PVFScorer on the crop stacks the shipped vertebra-cropper detects (shared "
                  "crop encoder, max over vertebrae): probability of a prevalent vertebral "
                  "fracture.",
    "diffx": "DiffXGenerator: future radiographs from a baseline and 'An image of {age} years "
             "old {sex}'.",
    "fusion-survival": "FusionSurvival (late fusion) of detected crop stacks and the data "
                       "contract's clinical columns: fracture risk (Cox log-hazard).",
}


def survival_target(frame: pd.DataFrame) -> np.ndarray:
    """scikit-survival's ``(event, time)`` array from a frame's ``event`` / ``time`` columns."""
    from sksurv.util import Surv

    return Surv.from_arrays(frame["event"].astype(bool).to_numpy(), frame["time"].to_numpy(float))


def _auroc(fn: Callable[..., float], y: Any, s: Any) -> float | None:
    y = np.asarray(y)
    return float(fn(y, np.asarray(s, float))) if 0 < y.sum() < len(y) else None


def _machine() -> str:
    import os

    import torch

    return f"{os.cpu_count()} CPU cores, {platform.machine()}, torch {torch.__version__}" + (
        f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "")


def _load(folder: Path) -> Any:
    from fracsurv.nn.base import load_model

    est = load_model(folder)
    est.set_params(device="auto")
    return est


def train(out_dir: str | Path = "fracsurv-models", *, preset: str = "cpu", resume: bool = False,
          models: list[str] | tuple[str, ...] | None = None, data: Any = None,
          upstream: str | Path | None = None, random_state: int = 0,
          say: Callable[[str], None] = print) -> dict[str, Path]:
    """Train the pipeline's image models in dependency order; write each with its card.

    Parameters
    ----------
    out_dir : path
        Folder of the trained models (``out_dir/<name>/``) and of the checkpoints
        (``out_dir/.checkpoints``).
    preset : {"cpu", "tiny"}
        Cohort sizes, resolutions and epochs (:data:`PRESETS`); ``cpu`` made the
        shipped weights.
    resume : bool
        Go on with an interrupted run in ``out_dir``: finished models are kept,
        an unfinished one continues from its last checkpointed epoch. Without it
        an ``out_dir`` that holds a run is refused.
    models : list of str, optional
        Train only these (:data:`MODEL_NAMES`); a model they need that is not
        trained here is read from ``upstream``.
    data : DataFrame or path, optional
        The user's training table instead of the synthetic cohort (see
        :func:`read_training_table`; a path is read with it).
    upstream : path, optional
        Folder of already trained models that ``models`` depend on; default
        ``out_dir``, then the shipped models.
    random_state : int
        Seed of every estimator (and of the split of ``data``).
    say : callable
        Progress output (one line per event).

    Returns
    -------
    dict
        Model name -> folder written.
    """
    from fracsurv._progress import show_progress
    from fracsurv.batch import UsageError
    from fracsurv.nn.resume import resumable
    from fracsurv.pretrained import MODELS_DIR
    from fracsurv.pretrained.publish import publish

    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    wanted = list(MODEL_NAMES if models is None else models)
    unknown = [m for m in wanted if m not in MODEL_NAMES]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(MODEL_NAMES)}")
    out = Path(out_dir)
    manifest = out / "train.json"
    settings = {"preset": preset, "random_state": random_state, "data": None if data is None
                else str(data) if not isinstance(data, pd.DataFrame) else "DataFrame"}
    if manifest.is_file() and not resume:
        raise UsageError(f"{out} holds a training run; pass --resume to continue it or "
                         "choose another --out")
    if manifest.is_file() and json.loads(manifest.read_text())["settings"] != settings:
        raise UsageError(f"{out} holds a run with other settings "
                         f"({json.loads(manifest.read_text())['settings']}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({"settings": settings, "models": wanted}, indent=2))
    if isinstance(data, (str, Path)):
        data = read_training_table(data, cache_dir=out / ".cache")
    # per epoch skorch's table, plus its batch bar on a terminal (no \r noise in logs)
    verbose = (2 if sys.stderr.isatty() else 1) if show_progress() else 0
    run = _Run(out, preset, say, data, random_state, verbose=verbose)
    done: dict[str, Any] = {}
    written: dict[str, Path] = {}
    for name in MODEL_NAMES:
        if name not in wanted:
            continue
        for need in _NEEDS.get(name, ()):
            if need not in done:
                places = [Path(upstream)] if upstream else [out, MODELS_DIR]
                src = next((p for p in places if (p / need / "card.json").is_file()), None)
                if src is None:
                    raise UsageError(f"{name} needs a trained {need}; train it too (--models) "
                                     f"or point --upstream at a folder that holds it")
                done[need] = _load(src / need)
                say(f"{name}: uses {need} from {src / need}")
        folder = out / name
        if (folder / "card.json").is_file():
            say(f"{name}: finished in an earlier run, kept ({folder})")
            done[name], written[name] = _load(folder), folder
            continue
        say(f"{name}: training ({preset} preset) ...")
        t0 = time.perf_counter()
        with resumable(out / ".checkpoints" / name) as log:
            est, metrics = _TRAINERS[name](run, name, done)
        for line in log:
            say(f"  {line}")
        wall = time.perf_counter() - t0
        card = _card(run, name, est, metrics, wall)
        written[name] = publish(est, name, card, out, half=True)
        done[name] = _load(written[name])
        shutil.rmtree(out / ".checkpoints" / name, ignore_errors=True)
        for files in (out / ".cohorts").glob(f"{name}-*"):  # its DICOM cohorts
            shutil.rmtree(files, ignore_errors=True)
        say(f"{name}: done in {wall:.0f} s; held-out {_brief(metrics)} -> {written[name]}")
    return written


def _card(run: _Run, name: str, est: Any, metrics: dict[str, Any], wall: float) -> dict[str, Any]:
    followups = 1 if name == "diffx" else 0
    spec = run.spec(name)
    epochs = {k: v for k, v in est.get_params(deep=False).items()
              if k in ("max_epochs", "stage2_epochs", "ae_epochs", "ldm_epochs",
                       "ldm1_epochs")}
    return {
        "task": _TASKS[name],
        "training": {"cohort": run.cohort_text(name, "train", followups),
                     "seeds": [SEEDS[name][0]] if run.data is None else None,
                     "n_patients": spec["n"] if run.data is None else None,
                     "resolution": list(spec["shape"]), "epochs": epochs,
                     "random_state": run.random_state, "wall_s": round(wall, 1),
                     "machine": _machine(),
                     "command": f"fracsurv train --preset {run.preset} --models {name}",
                     "selected_on": "nothing: fixed settings of the preset "
                                    "(fracsurv.pretrained.train.PRESETS)"},
        "heldout": {"cohort": run.cohort_text(name, "heldout", followups),
                    "metrics": metrics},
    }


def _brief(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in metrics.items())
