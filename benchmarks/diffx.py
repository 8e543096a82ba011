"""DiffXGenerator on cohorts it never saw: reconstruction, ageing, fractures, prognosis, speed.

Two stages, so that sampling settings are chosen on validation data only and the
evaluation cohorts are touched once:

``--stage tune``
    Grid over ``strength`` x ``guidance_scale`` x ``tau_f`` on the validation cohort (seed
    3002); writes ``diffx_<preset>_tuning.json`` with every setting's numbers and
    the one chosen by ``RULE`` (highest age R^2 + follow-up pVF r among settings whose
    follow-up MS-SSIM reaches the 0.80 target and, if any do, is within 0.02 of the
    copy-the-baseline control).
``--stage evaluate``
    The chosen setting, once, on fresh cohorts: 100 patients (seed 3101) for the
    image metrics and 2,000 patients (seed 3201) for the prognostic test; writes
    ``diffx_<preset>.json``.

Peers in the same run: the no-injection ablation (the study's single LDM) and the
copy-the-baseline control (every "generated" image is the baseline itself).

Measures (all at the generator's working resolution; real images are rendered at
``--render-shape`` and downsampled as the generator's training images were):

* autoencoder alone and LDM-1 (inversion + reconstruction): MS-SSIM, PSNR;
* generated at the real follow-up's age vs the real follow-up: MS-SSIM, PSNR;
* age: a CNN regressor (``fracsurv.metrics.images.CNNProbe``) trained on real
  images of the generator's training cohort (seed 3001); R^2 on real held-out
  follow-ups, and between prompted and predicted age on generated images;
* fracture progression: a ``PVFScorer`` trained on real training-cohort images;
  pVF of the image generated at the follow-up age (mean over seeds) vs pVF of the
  real follow-up: Pearson r, Bland-Altman;
* prognosis: Cox clinical + BpVF vs clinical + BpVF + GpVF (10-year image, mean
  over seeds): likelihood-ratio test on all 2,000 patients, and test C-index in a
  2-fold split; the truth's C-index (true log-hazard) as the ceiling;
* speed: 4 horizons x 10 seeds for one patient (inversion included), median of 5.

Run: ``python benchmarks/diffx.py --stage tune`` then ``--stage evaluate``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS, write_json

HORIZONS = [1.0, 5.0, 10.0]
SEEDS = {"train": 3001, "validation": 3002, "evaluation": 3101, "prognosis": 3201}
CACHE = Path(__file__).resolve().parent / ".cache" / "diffx-scorers"
# Blur augmentation of the age probe, chosen on the validation cohort (seed 3002)
# among {0, 1, 2} px: R^2 on real images 0.767 / 0.738 / 0.757, on the autoencoder's
# reconstructions of the same images -0.247 / 0.541 / 0.637 (the unblurred probe read
# sharpness as youth: -7.5 years on reconstructions with MS-SSIM 0.99).
AGE_PROBE_BLUR = 2.0
AGE_PROBE_SELECTION = {"blur_sigma_px": [0, 1, 2], "validation_real_r2": [0.767, 0.738, 0.757],
                       "validation_autoencoder_r2": [-0.247, 0.541, 0.637]}


# -- data -------------------------------------------------------------------
def _cohort(n: int, seed: str, render: tuple[int, int], shape: tuple[int, int],
            followups: int = 1) -> Any:
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.nn.data import antialiased_resize

    b = make_spine_cohort(n, image_shape=render, random_state=SEEDS[seed], dicom=False,
                          n_followups=followups, n_jobs=2)
    cols = ["image", "followup_image"] if followups else ["image"]
    for c in cols:
        b.frame[c] = list(antialiased_resize(list(b.frame[c]), shape))
    return b


def _quality(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean MS-SSIM and PSNR (dB) of image pairs in [0, 1] (MONAI's metrics)."""
    from monai.metrics import PSNRMetric

    from fracsurv.metrics.images import ms_ssim

    ta, tb = (torch.from_numpy(np.asarray(x, np.float32))[:, None] for x in (a, b))
    return {"ms_ssim": float(ms_ssim(a, b).mean()),
            "psnr_db": float(PSNRMetric(max_val=1.0)(ta, tb).mean())}


# -- scorers trained on real training-cohort images only ----------------------
def _scorers(render: tuple[int, int], shape: tuple[int, int], n_train: int) -> tuple[Any, Any]:
    """(age regressor: images -> years, PVFScorer), trained once on seed 3001 and cached."""
    from fracsurv.metrics.images import CNNProbe
    from fracsurv.scoring import PVFScorer

    key = CACHE / f"{n_train}-{shape[0]}x{shape[1]}"
    pvf_dir = key / "pvf"
    train = None
    if not (pvf_dir / "config.json").is_file():
        train = _cohort(n_train, "train", render, shape)
        pvf = PVFScorer(backbone="resnet10-tiny", input_shape=shape, max_epochs=20,
                        batch_size=32, lr=3e-3, augment=True, validation_fraction=0.0,
                        device="cpu", random_state=0).fit(train.frame)
        pvf.save(pvf_dir)
    pvf = PVFScorer.load(pvf_dir)

    probe_file = key / f"age_probe_blur{AGE_PROBE_BLUR:g}.safetensors"
    if probe_file.is_file():
        probe = CNNProbe.load(probe_file)
    else:
        train = train or _cohort(n_train, "train", render, shape)
        f = train.frame
        probe = CNNProbe(epochs=30, blur_sigma=AGE_PROBE_BLUR, random_state=0).fit(
            list(f["image"]) + list(f["followup_image"]),
            np.r_[f["age"].to_numpy(float), f["followup_age"].to_numpy(float)])
        probe.save(probe_file)

    def age_model(images: list[np.ndarray]) -> np.ndarray:
        return probe.predict(images)

    return age_model, pvf


# -- generation for every method -------------------------------------------------
def _generate(gen: Any, frame: Any, horizons: list[list[float]], seeds: int,
              method: str) -> np.ndarray:
    """(patients, horizons, seeds, H, W) for ``method`` in {diffx, no_injection, copy}."""
    if method == "copy":
        base = np.stack(list(frame["image"]))
        return np.repeat(np.repeat(base[:, None, None], len(horizons[0]), 1), seeds, 2)
    out = []
    step = max(1, 64 // (len(horizons[0]) * seeds))
    for lo in range(0, len(frame), step):
        part = frame.iloc[lo:lo + step]
        out.append(gen.generate_many(list(part["image"]), list(part["age"]), list(part["sex"]),
                                     horizons[lo:lo + step], seeds=range(seeds),
                                     inject=method != "no_injection"))
    return np.concatenate(out)


def _image_metrics(gen: Any, frame: Any, seeds: int, methods: list[str], age_model: Any,
                   pvf: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Follow-up fidelity, age and fracture agreement of each method on ``frame``."""
    from sklearn.metrics import r2_score

    from fracsurv.stratify.agreement import agreement

    base_age = frame["age"].to_numpy(float)
    last = np.maximum(frame["followup_age"].to_numpy(float) - base_age, 0.0)
    horizons = [[*HORIZONS, float(h)] for h in last]
    prompted = np.asarray([[a + h for h in hs] for a, hs in zip(base_age, horizons, strict=True)])
    real_fu = np.stack(list(frame["followup_image"]))
    fu_pvf = pvf.image_scores(list(real_fu))
    res, arrays = {}, {}
    for method in methods:
        arr = _generate(gen, frame, horizons, seeds, method)
        arrays[method] = arr
        n, nh, ns, h, w = arr.shape
        at_fu = arr[:, -1].reshape(-1, h, w)
        q = _quality(at_fu, np.repeat(real_fu, ns, axis=0))
        pred_age = age_model(list(arr.reshape(-1, h, w))).reshape(n, nh, ns)
        gen_pvf = pvf.image_scores(list(at_fu)).reshape(n, ns).mean(axis=1)
        ag = agreement(gen_pvf, fu_pvf)
        res[method] = {
            "followup_ms_ssim": q["ms_ssim"], "followup_psnr_db": q["psnr_db"],
            "age_r2": float(r2_score(np.repeat(prompted[:, :, None], ns, 2).ravel(),
                                     pred_age.ravel())),
            "age_r2_per_horizon": {str(hz): float(r2_score(
                np.repeat(prompted[:, j, None], ns, 1).ravel(), pred_age[:, j].ravel()))
                for j, hz in enumerate([*HORIZONS, "last"])},
            "mean_predicted_minus_prompted_age": float((pred_age - prompted[:, :, None]).mean()),
            "followup_pvf_r": ag["r"], "followup_pvf_bias": ag["mean_difference"],
            "followup_pvf_sd_diff": ag["sd_difference"],
        }
    return res, arrays


RULE = ("max age_r2 + followup_pvf_r among settings with followup MS-SSIM >= "
        "max(0.80, copy - 0.02); if none, among those >= 0.80; if none, max MS-SSIM")


def _select(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The tuning rule ``RULE``."""
    def ssim(r: dict[str, Any]) -> float:
        return r["diffx"]["followup_ms_ssim"]

    for floor in (lambda r: max(0.80, r["copy_ms_ssim"] - 0.02), lambda r: 0.80):
        ok = [r for r in rows if ssim(r) >= floor(r)]
        if ok:
            return max(ok, key=lambda r: r["diffx"]["age_r2"] + r["diffx"]["followup_pvf_r"])
    return max(rows, key=ssim)


# -- prognosis -------------------------------------------------------------------
def _prognosis(gen: Any, cohort: Any, pvf: Any, seeds: int) -> dict[str, Any]:
    """Cox clinical + BpVF (+ GpVF): LR test on all patients, 2-fold test C-index."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from scipy.stats import chi2
    from sksurv.metrics import concordance_index_censored

    f = cohort.frame
    bpvf = pvf.image_scores(list(f["image"]))
    arr = _generate(gen, f, [[10.0]] * len(f), seeds, "diffx")
    n, _, ns, h, w = arr.shape
    gpvf = pvf.image_scores(list(arr.reshape(-1, h, w))).reshape(n, ns).mean(axis=1)
    y = cohort.target
    df = pd.DataFrame({c: f[c].astype(float) for c in cohort.clinical_columns
                       if c in f and pd.api.types.is_numeric_dtype(f[c])})
    df = df.loc[:, df.std() > 0]
    df["bpvf"], df["gpvf"] = bpvf, gpvf
    df["T"], df["E"] = y["time"], y["event"].astype(int)
    reduced = [c for c in df.columns if c not in ("gpvf", "T", "E")]

    def fit(cols: list[str], rows: np.ndarray) -> Any:
        return CoxPHFitter(penalizer=0.01).fit(df.loc[rows, [*cols, "T", "E"]], "T", "E")

    everyone = np.arange(n)
    full_m, red_m = fit([*reduced, "gpvf"], everyone), fit(reduced, everyone)
    lr = 2 * (full_m.log_likelihood_ - red_m.log_likelihood_)
    folds = np.random.default_rng(0).permutation(n) % 2
    cidx: dict[str, list[float]] = {"clinical_bpvf": [], "clinical_bpvf_gpvf": [], "truth": []}
    for k in (0, 1):
        tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        ev, t = y["event"][te], y["time"][te]
        for name, cols in (("clinical_bpvf", reduced), ("clinical_bpvf_gpvf", [*reduced, "gpvf"])):
            risk = fit(cols, tr).predict_partial_hazard(df.loc[te, cols]).to_numpy()
            cidx[name].append(float(concordance_index_censored(ev, t, risk)[0]))
        cidx["truth"].append(float(concordance_index_censored(
            ev, t, cohort.truth.log_hazard[te])[0]))
    return {"n_patients": n, "n_events": int(y["event"].sum()), "gpvf_seeds": ns,
            "covariates_reduced": reduced, "lr_statistic": float(lr),
            "lr_p": float(chi2.sf(lr, 1)), "gpvf_hazard_ratio_per_unit": float(
                np.exp(full_m.params_["gpvf"])),
            "bpvf_gpvf_r": float(np.corrcoef(bpvf, gpvf)[0, 1]),
            "test_c_index_per_fold": cidx,
            "test_c_index_mean": {k: float(np.mean(v)) for k, v in cidx.items()}}


def _speed(gen: Any, frame: Any) -> dict[str, Any]:
    row = frame.iloc[0]
    times = []
    for _ in range(6):
        gen._inversions = {}  # inversion included in every timing
        t0 = time.perf_counter()
        gen.generate(row["image"], row["age"], row["sex"], [1, 5, 10, 12], seeds=range(10))
        times.append(time.perf_counter() - t0)
    return {"seconds_median": float(np.median(times[1:])), "seconds_per_run": times,
            "torch_threads": torch.get_num_threads(), "note": "first run is warm-up, excluded"}


def _contact_sheet(frame: Any, arrays: dict[str, np.ndarray], path: Path, n: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = arrays["diffx"]
    cols = ["baseline", "+1 y", "+5 y", "+10 y", "at follow-up age", "real follow-up"]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.3 * len(cols), 2.5 * n))
    for i in range(n):
        row = frame.iloc[i]
        ims = [row["image"], *[arr[i, j, 0] for j in range(4)], row["followup_image"]]
        for j, im in enumerate(ims):
            ax = axes[i, j]
            ax.imshow(im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        axes[i, 0].set_ylabel(f"{row['age']:.0f} y {row['sex']}\nfollow-up {row['followup_age']:.0f} y",
                              fontsize=7)
    fig.suptitle("DiffXGenerator (cpu preset), evaluation cohort; seed 0 of each horizon",
                 fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from fracsurv.generative import DiffXGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("tune", "evaluate"), required=True)
    ap.add_argument("--model", default="benchmarks/models/diffx-cpu",
                    help="trained by train_diffx.py (fp32); the shipped fp16 copy is "
                         "fracsurv/pretrained/models/diffx")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--render-shape", type=int, nargs=2, default=(256, 128))
    ap.add_argument("--n-scorer-train", type=int, default=1500)
    ap.add_argument("--n-validation", type=int, default=40)
    ap.add_argument("--n-evaluation", type=int, default=100)
    ap.add_argument("--n-prognosis", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=4, help="generated images per horizon")
    ap.add_argument("--strengths", type=float, nargs="+", default=(0.5, 0.75, 1.0))
    ap.add_argument("--guidance", type=float, nargs="+", default=(1.5, 3.0, 5.0))
    ap.add_argument("--tau-f", type=float, nargs="+", default=(0.8,),
                    help="feature-injection fractions in the grid (the study's 0.8)")
    ap.add_argument("--figure", default="docs/images/diffx_contact_sheet.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = DiffXGenerator.load(args.model)
    shape = gen._input_shape()
    gen.set_params(output_shape=shape)
    render = tuple(args.render_shape)
    t0 = time.perf_counter()
    age_model, pvf = _scorers(render, shape, args.n_scorer_train)
    t_scorers = time.perf_counter() - t0
    common = {"model": args.model, "preset": args.preset, "input_shape": list(shape),
              "render_shape": list(render), "cohort_seeds": SEEDS,
              "training": json.loads((Path(args.model) / "training.json").read_text())
              if (Path(args.model) / "training.json").is_file() else None,
              "scorers": {"age": "CNNProbe (16,32,64,96), 30 epochs, seed 0, blur_sigma "
                                 f"{AGE_PROBE_BLUR:g}, on baseline + follow-up images of "
                                 "the training cohort",
                          "age_probe_selection": AGE_PROBE_SELECTION,
                          "pvf": "PVFScorer resnet10-tiny, 20 epochs, augment, seed 0, on "
                                 "training-cohort baselines", "seconds": t_scorers}}
    if args.stage == "tune":
        val = _cohort(args.n_validation, "validation", render, shape).frame
        rows = []
        for strength, guidance, tau_f in itertools.product(args.strengths, args.guidance,
                                                           args.tau_f):
            gen.set_params(strength=strength, guidance_scale=guidance, tau_f=tau_f)
            gen._inversions = {}
            t0 = time.perf_counter()
            res, _ = _image_metrics(gen, val, 2, ["diffx"], age_model, pvf)
            copy = _image_metrics(gen, val, 1, ["copy"], age_model, pvf)[0]["copy"] if not rows \
                else rows[0]["copy"]
            rows.append({"strength": strength, "guidance_scale": guidance, "tau_f": tau_f,
                         **res, "copy": copy,
                         "copy_ms_ssim": copy["followup_ms_ssim"],
                         "seconds": time.perf_counter() - t0})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "copy"}), flush=True)
        best = _select(rows)
        write_json(f"diffx_{args.preset}_tuning", {
            **common, "split": "validation", "n_patients": args.n_validation,
            "seeds_per_horizon": 2, "rule": RULE, "grid": rows,
            "chosen": {k: best[k] for k in ("strength", "guidance_scale", "tau_f")}})
        return
    tuning = json.loads((RESULTS / f"diffx_{args.preset}_tuning.json").read_text())
    gen.set_params(**tuning["chosen"])
    ev = _cohort(args.n_evaluation, "evaluation", render, shape)
    f = ev.frame
    base = np.stack(list(f["image"]))
    with torch.inference_mode():
        x = torch.from_numpy(base)[:, None] * 2 - 1
        ae = torch.cat([gen.module_.decode(gen.module_.encode(x[i:i + 32]))
                        for i in range(0, len(x), 32)])
    ae = ((ae.clamp(-1, 1) + 1) / 2)[:, 0].numpy()
    ldm1 = np.stack([gen.reconstruct(r["image"], r["age"], r["sex"]) for _, r in f.iterrows()])
    res, arrays = _image_metrics(gen, f, args.seeds, ["diffx", "no_injection", "copy"],
                                 age_model, pvf)
    from sklearn.metrics import r2_score

    real_age_r2 = float(r2_score(f["followup_age"], age_model(list(f["followup_image"]))))
    ae_age_r2 = float(r2_score(f["age"], age_model(list(ae))))
    from sklearn.metrics import roc_auc_score

    pvf_auroc = float(roc_auc_score(f["prevalent_vf"], pvf.image_scores(list(f["image"]))))
    if args.figure:
        _contact_sheet(f, arrays, Path(args.figure))
    speed = _speed(gen, f)
    t0 = time.perf_counter()
    prog = _prognosis(gen, _cohort(args.n_prognosis, "prognosis", render, shape, followups=0),
                      pvf, args.seeds)
    prog["seconds"] = time.perf_counter() - t0
    write_json(f"diffx_{args.preset}", {
        **common, "split": "evaluation (touched once)", "chosen_on_validation": tuning["chosen"],
        "sampling": {k: gen.get_params()[k] for k in (
            "n_inference_steps", "strength", "guidance_scale", "eta", "tau_f", "tau_attn",
            "injection_block", "injection_layer", "beta_schedule", "prediction_type")},
        "n_patients": len(f), "seeds_per_horizon": args.seeds,
        "autoencoder_reconstruction": _quality(ae, base),
        "ldm1_reconstruction": _quality(ldm1, base),
        "age_regressor_r2_on_real_followups": real_age_r2,
        "age_regressor_r2_on_autoencoder_reconstructions": ae_age_r2,
        "pvf_scorer_auroc_on_baselines": pvf_auroc,
        "n_prevalent_vf_baselines": int(f["prevalent_vf"].sum()),
        "results": res, "prognosis": prog, "speed_one_patient_4_horizons_x_10_seeds": speed,
        "study": {"ldm1_ms_ssim": 0.506, "ldm1_psnr_db": 20.7, "age_r2": 0.841,
                  "followup_pvf_r": 0.655, "followup_pvf_bias": -0.06},
        "targets": {"reconstruction_ms_ssim": 0.90, "reconstruction_psnr_db": 28,
                    "followup_ms_ssim": 0.80, "followup_ms_ssim_vs_copy": -0.02,
                    "age_regressor_real_r2": 0.75, "age_r2": 0.70, "followup_pvf_r": 0.6,
                    "followup_pvf_bias_abs": 0.05, "lr_p": 0.05, "seconds_per_patient": 5}})


if __name__ == "__main__":
    main()
