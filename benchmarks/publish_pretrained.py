"""Ship the models the benchmarks trained as ``fracsurv.pretrained`` models, with cards.

The whole-image pVF scorer the DiffX benchmark trains as its judge is not shipped:
its held-out AUROC on the evaluation cohort's baselines was 0.51.

Reads each trained model and the benchmark JSON that evaluated it on held-out
cohorts, stores the weights as float16 after checking on a fresh small cohort
(seed 3301, used for nothing else) how much that changes the model's outputs,
and writes ``fracsurv/pretrained/models/<name>/`` with ``card.json`` / ``card.md``.

Run after ``benchmarks/train_diffx.py`` and ``benchmarks/diffx.py --stage evaluate``:
``python benchmarks/publish_pretrained.py`` (``--models diffx`` republishes one).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS
from diffx import SEEDS

from fracsurv.nn.base import load_model
from fracsurv.nn.data import antialiased_resize
from fracsurv.pretrained import MODELS_DIR
from fracsurv.pretrained.publish import publish

HERE = Path(__file__).resolve().parent
CHECK_SEED = 3301


def _half(est: Any) -> Any:
    """``est`` after a round trip through float16 storage."""
    with tempfile.TemporaryDirectory() as tmp:
        return load_model(publish(est, "check", {}, tmp, half=True))


def _fp16_check(est: Any, outputs: Any) -> dict[str, Any]:
    """How much ``outputs(model)`` changes when the weights are stored as float16."""
    a, b = np.asarray(outputs(est), float), np.asarray(outputs(_half(est)), float)
    return {"max_abs_change": float(np.abs(a - b).max()),
            "mean_abs_change": float(np.abs(a - b).mean()), "output_range": [float(a.min()),
                                                                             float(a.max())]}


def _publish_diffx() -> None:
    from fracsurv.datasets import make_spine_cohort

    dx = json.loads((RESULTS / "diffx_cpu.json").read_text())
    judges = json.loads((RESULTS / "diffx_cpu_judges.json").read_text())
    train_info = json.loads((HERE / "models" / "diffx-cpu" / "training.json").read_text())
    shape = tuple(dx["input_shape"])
    render = tuple(train_info["render_shape"])
    fresh = make_spine_cohort(2, image_shape=render, random_state=CHECK_SEED, dicom=False,
                              n_followups=0).frame
    gen = load_model(HERE / "models" / "diffx-cpu")
    gen.set_params(**dx["chosen_on_validation"], checkpoint_dir=None, device="auto")
    r = dx["results"]["diffx"]
    row = fresh.iloc[0]
    base = antialiased_resize([row["image"]], shape)[0]
    epochs = {"autoencoder": gen.ae_epochs, "ldm2": gen.ldm_epochs, "ldm1": gen._ldm1_epochs(),
              "ldm1_init": gen.ldm1_init}
    publish(gen, "diffx", {
        "task": f"DiffXGenerator (cpu preset, {shape[0]} x {shape[1]}): future radiographs at "
                "1/5/10 years and the last follow-up from a baseline and 'An image of {age} "
                "years old {sex}'.",
        "training": {"cohort": f"make_spine_cohort({train_info['n_patients']}, image_shape="
                               f"{render}, random_state={train_info['cohort_seed']}, "
                               f"n_followups=1), baseline + follow-up images resized to "
                               f"{shape[0]} x {shape[1]}",
                     "seeds": [train_info["cohort_seed"]],
                     "n_images": train_info["n_train_images"], "epochs": epochs,
                     # epoch_seconds_by_stage: added by hand when a run was resumed
                     # (train_diffx.py's fit_s then covers the last run only)
                     "wall_s": sum(train_info["epoch_seconds_by_stage"].values())
                     if "epoch_seconds_by_stage" in train_info else train_info["fit_s"],
                     "epoch_seconds_by_stage": train_info.get("epoch_seconds_by_stage"),
                     "final_losses": train_info["final_losses"],
                     "machine": "2 CPU cores, x86_64, torch 2.13.0+cpu",
                     "command": "python benchmarks/train_diffx.py",
                     "sampling_chosen_on": f"validation cohort seed {SEEDS['validation']} "
                                           "(benchmarks/results/diffx_cpu_tuning.json; the "
                                           "step count: diffx_cpu_steps.json)",
                     "sampling": dx["sampling"]},
        "heldout": {"cohort_seeds": {"images": SEEDS["evaluation"],
                                     "prognosis": SEEDS["prognosis"]},
                    "n_patients": dx["n_patients"],
                    "metrics": {"autoencoder_ms_ssim": dx["autoencoder_reconstruction"]["ms_ssim"],
                                "autoencoder_psnr_db": dx["autoencoder_reconstruction"]["psnr_db"],
                                "ldm1_ms_ssim": dx["ldm1_reconstruction"]["ms_ssim"],
                                "ldm1_psnr_db": dx["ldm1_reconstruction"]["psnr_db"],
                                "followup_ms_ssim": r["followup_ms_ssim"],
                                "age_r2": r["age_r2"], "followup_pvf_r": r["followup_pvf_r"],
                                "followup_pvf_bias": r["followup_pvf_bias"],
                                "prognosis_lr_p": dx["prognosis"]["diffx"]["lr_p"]},
                    "report": "benchmarks/results/diffx_cpu.json, docs/diffx_generator.md",
                    "age_probe": f"CNNProbe blur_sigma {judges['chosen_blur_sigma_px']:g} "
                                 "(benchmarks/results/diffx_cpu_judges.json)"},
        "storage": {"fp16_check_on_seed_3301": _fp16_check(
            gen, lambda m: m.generate(base, row["age"], row["sex"], [1, 10],
                                      seeds=[0, 1]))},
        "limitations": ["trained and evaluated on simulated radiographs only",
                        "see the held-out metrics and docs/diffx_generator.md for the issue "
                        "19 targets it misses"],
    }, MODELS_DIR)


def _publish_cropper() -> None:
    from fracsurv.datasets import make_spine_cohort

    # -- the vertebra cropper ------------------------------------------------------------
    vc = json.loads((RESULTS / "vertebra_cropper.json").read_text())
    crop = load_model(HERE / "models" / "vertebra-cropper")
    crop.set_params(device="auto")
    big = make_spine_cohort(2, image_shape=(1024, 512), random_state=CHECK_SEED, dicom=False,
                            n_followups=0).frame

    from fracsurv.vertebrae.evaluation import detection_summary

    crop_check = detection_summary(_half(crop).transform(big)["vertebrae"],
                                   crop.transform(big)["vertebrae"])

    publish(crop, "vertebra-cropper", {
        "task": "VertebraCropper v2: vertebrae (6 keypoints each), Genant grades and crops "
                "from 1024 x 512 lateral radiographs (detector input 512 x 256).",
        "training": {"cohort": "make_spine_cohort(480, image_shape=(1024, 512), "
                               "random_state=0, n_followups=0)", "seeds": [0],
                     "n_images": 480, "epochs": {"detector": 60, "refiner_and_column": 30},
                     "wall_s": 1717, "machine": "2 CPU cores, x86_64, torch 2.13.0+cpu",
                     "selected_on": "validation cohort seed 2103",
                     "command": "python benchmarks/vertebra_cropper.py --train-seed 0 "
                                "--test-seeds 2103 --n-test 100 --epochs 60 --stage2-epochs 30 "
                                "--fracture-oversample 24 --save benchmarks/models/"
                                "vertebra-cropper"},
        "heldout": {"cohort_seeds": [8, 9, 10], "n_patients_each": 120,
                    "metrics": {k: v["value"] for k, v in vc["targets_on_the_mean"].items()},
                    "report": "benchmarks/results/vertebra_cropper.json"},
        "storage": {"fp16_vs_fp32_detections_on_seed_3301": crop_check},
    }, MODELS_DIR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=("diffx", "vertebra-cropper"),
                    choices=("diffx", "vertebra-cropper"))
    args = ap.parse_args()
    if "diffx" in args.models:
        _publish_diffx()
    if "vertebra-cropper" in args.models:
        _publish_cropper()
    for p in sorted(MODELS_DIR.iterdir()):
        size = sum(f.stat().st_size for f in p.iterdir()) / 2**20
        print(f"{p.name}: {size:.2f} MB")


if __name__ == "__main__":
    main()
