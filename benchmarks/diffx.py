"""DiffXGenerator on held-out synthetic pairs: reconstruction, age and clinical fidelity.

Trains the generator on one synthetic cohort and evaluates on a cohort drawn with a
different ``random_state``, with the study's ablation (the prompt-guided LDM without
feature injection) in the same run:

* reconstruction: MS-SSIM and PSNR of LDM-1's reconstruction of the baseline, and of
  the generated image at horizon 0 with and without injection (MONAI metrics);
* age fidelity: R^2 of an age regressor (HOG features + ridge, trained on real
  training images only) on generated images against the prompt's age;
* clinical fidelity: pVF (a ``PVFScorer`` trained on real images) of the images
  generated at the real follow-up age (mean over seeds) vs pVF of the real follow-up
  image: Pearson r and Bland-Altman;
* speed: 4 horizons x 10 seeds for one patient.

Run: ``python benchmarks/diffx.py --preset cpu`` (``--preset full`` on a GPU).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _common import write_json


def _hog(images: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    from skimage.feature import hog
    from skimage.transform import resize

    return np.stack([hog(resize(np.asarray(im, np.float32), shape, anti_aliasing=True),
                         pixels_per_cell=(8, 8), cells_per_block=(2, 2)) for im in images])


def _quality(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(MS-SSIM, PSNR dB) of image batches in [0, 1], MONAI's metrics."""
    from monai.metrics import PSNRMetric

    from fracsurv.metrics.images import ms_ssim

    ta, tb = (torch.from_numpy(np.asarray(x, np.float32))[:, None] for x in (a, b))
    return float(ms_ssim(a, b).mean()), float(PSNRMetric(max_val=1.0)(ta, tb).mean())


def main() -> None:
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score

    from fracsurv.datasets import make_spine_cohort
    from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator
    from fracsurv.scoring import PVFScorer
    from fracsurv.stratify.analysis import agreement

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(DIFFX_PRESETS))
    ap.add_argument("--n-train", type=int, default=200)
    ap.add_argument("--n-test", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    preset = DIFFX_PRESETS[args.preset]
    shape = tuple(preset["input_shape"])
    # as many MS-SSIM scales (<= 5) as the image allows with a 7-pixel window (recorded;
    # fracsurv.metrics.images.ms_ssim picks the same number)
    scales = max(s for s in range(1, 6) if 6 * 2 ** (s - 1) < min(shape))

    t0 = time.perf_counter()
    train = make_spine_cohort(args.n_train, image_shape=shape, random_state=11, dicom=False)
    test = make_spine_cohort(args.n_test, image_shape=shape, random_state=12, dicom=False)
    Xtr, Xte = train.frame, test.frame
    t_data = time.perf_counter() - t0

    t0 = time.perf_counter()
    gen = DiffXGenerator(**preset, random_state=0, verbose=1).fit(Xtr)
    t_fit = time.perf_counter() - t0
    print(f"fit {t_fit:.0f} s on {gen.n_train_images_} images")

    # Scorers trained on real (not generated) training images only.
    real_imgs = list(Xtr["image"]) + list(Xtr["followup_image"])
    real_ages = np.r_[Xtr["age"], Xtr["followup_age"]]
    hog_shape = (min(shape[0], 128), min(shape[1], 64))
    age_model = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(_hog(real_imgs, hog_shape), real_ages)
    pvf = PVFScorer(backbone="resnet10-tiny", input_shape=shape, max_epochs=15, batch_size=32,
                    lr=3e-3, augment=False, validation_fraction=0.0, random_state=0)
    pvf.fit(Xtr)
    print("scorers trained")

    horizons = [0.0, 1.0, 5.0, 10.0]
    res: dict[str, dict[str, list]] = {m: {"gen": [], "ages": [], "last": []}
                                       for m in ("diffx", "no_injection")}
    recon, base = [], []
    lasts = [max(float(f - a), 0.0) for f, a in zip(Xte["followup_age"], Xte["age"], strict=True)]
    for pos in range(len(Xte)):
        row = Xte.iloc[pos]
        recon.append(gen.reconstruct(row["image"], row["age"], row["sex"]))
        base.append(np.asarray(row["image"], np.float32))
    for mode, inject in (("diffx", True), ("no_injection", False)):
        for lo in range(0, len(Xte), 8):
            part = Xte.iloc[lo:lo + 8]
            hs = [[*horizons, last] for last in lasts[lo:lo + 8]]
            arr = gen.generate_many(list(part["image"]), list(part["age"]), list(part["sex"]),
                                    hs, seeds=range(args.seeds), inject=inject)
            res[mode]["gen"].extend(arr)
            res[mode]["ages"].extend([[a + h for h in h_row]
                                      for a, h_row in zip(part["age"], hs, strict=True)])
        print(f"generated ({mode})", flush=True)
    base_arr, recon_arr = np.stack(base), np.stack(recon)
    real_fu = list(Xte["followup_image"])
    fu_pvf = pvf.image_scores(real_fu)
    out: dict[str, dict] = {}
    ms, ps = _quality(recon_arr, base_arr)
    out["ldm1_reconstruction"] = {"ms_ssim": ms, "psnr_db": ps}
    for mode, r in res.items():
        gen_arr = np.stack(r["gen"])  # (patients, horizons, seeds, H, W)
        h0 = gen_arr[:, 0].reshape(-1, *shape)
        ms, ps = _quality(h0, np.repeat(base_arr, args.seeds, axis=0))
        flat = list(gen_arr.reshape(-1, *shape))
        ages = np.repeat(np.asarray(r["ages"]), args.seeds, axis=1).ravel()
        age_pred = age_model.predict(_hog(flat, hog_shape))
        last_scores = pvf.image_scores(list(gen_arr[:, -1].reshape(-1, *shape)))
        last_mean = last_scores.reshape(len(Xte), args.seeds).mean(axis=1)
        ag = agreement(last_mean, fu_pvf)
        out[mode] = {"horizon0_ms_ssim": ms, "horizon0_psnr_db": ps,
                     "age_r2": float(r2_score(ages, age_pred)),
                     "followup_pvf_r": ag["r"], "followup_pvf_mean_diff": ag["mean_difference"],
                     "followup_pvf_sd_diff": ag["sd_difference"]}
    real_age_r2 = float(r2_score(Xte["followup_age"],
                                 age_model.predict(_hog(real_fu, hog_shape))))
    t0 = time.perf_counter()
    gen.generate(Xte["image"].iloc[0], Xte["age"].iloc[0], Xte["sex"].iloc[0], [1, 5, 10, 12],
                 seeds=range(10))
    t_patient = time.perf_counter() - t0
    payload = {
        "preset": args.preset, "config": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in preset.items()},
        "n_train_patients": args.n_train, "n_train_images": gen.n_train_images_,
        "n_test_patients": args.n_test, "seeds_per_horizon": args.seeds,
        "ms_ssim_scales": scales, "device": str(gen._device()),
        "seconds": {"cohorts": t_data, "fit": t_fit,
                    "one_patient_4_horizons_x_10_seeds": t_patient},
        "age_regressor_r2_on_real_followups": real_age_r2,
        "results": out,
        "study": {"ldm1_ms_ssim": 0.506, "ldm1_psnr_db": 20.7, "single_ldm_ms_ssim": 0.219,
                  "single_ldm_psnr_db": 15.9, "age_r2": 0.841, "followup_pvf_r": 0.655,
                  "followup_pvf_mean_diff": -0.06, "followup_pvf_sd_diff": 0.20},
        "targets_full_config": {"ms_ssim": 0.75, "psnr_db": 25, "age_r2": 0.85,
                                "followup_pvf_r": 0.8, "seconds_per_patient_h100": 10},
    }
    print(payload["results"], payload["seconds"], "age R2 real", real_age_r2)
    write_json(f"diffx_{args.preset}", payload, args.out)


if __name__ == "__main__":
    main()
