"""DiffXGenerator on cohorts it never saw: reconstruction, ageing, fractures, prognosis, speed.

Stages, so that the judges and the sampling settings are chosen on training and
validation data only and the evaluation cohorts are touched once:

``--stage judges``
    Trains the age probe (``fracsurv.metrics.images.CNNProbe``) on *real* images of
    the generator's training cohort (seed 3501), once per blur augmentation in
    ``--blur``, and picks one on the validation cohort (seed 3502) by ``JUDGE_RULE``;
    writes ``diffx_<preset>_judges.json``.
``--stage tune``
    Grid over ``strength`` x ``guidance_scale`` x ``guidance_reference`` x ``tau_f`` x
    ``detail_transfer`` on
    the validation cohort; writes ``diffx_<preset>_tuning.json`` with every setting's
    numbers and the one chosen by ``RULE``.
``--stage steps``
    DDIM step counts (``--steps``) at the tuned setting on the validation cohort, each
    with its speed; writes ``diffx_<preset>_steps.json`` with the count chosen by
    ``STEPS_RULE`` (evaluate uses it when the file exists, with the tuned count as a peer).
``--stage evaluate``
    The chosen setting, once, on fresh cohorts: 100 patients (seed 3513) for the
    image metrics and 2,000 patients (seed 3523) for the prognostic test; writes
    ``diffx_<preset>.json``.

Peers in the same run: the no-injection ablation (the study's single LDM) and the
copy-the-baseline control (every "generated" image is the baseline itself).

The judges, as a user meets the generator in ``fracsurv demo``:

* **fractures**: the shipped ``vertebra-cropper`` finds the vertebrae on the real
  baseline (rendered at ``--render-shape``, the demo's 512 x 256, with the demo
  loader's CLAHE), and the shipped crop ``pvf-scorer`` scores the crops of any image
  of that patient cut there (:func:`fracsurv.scoring.futures.scores_at_baseline_vertebrae`).
  The real follow-up is cut at the vertebrae found on it (it was positioned anew and
  the spine has aged; cut at the baseline's, its crops miss the vertebrae). Generated
  images and real follow-ups alike go through the generator's resolution and are
  resized back, so both lose the same detail. BpVF is the scorer on the real
  baseline at full resolution, as in the demo.
* **age**: the probe reads images at the generator's resolution.

Measures: autoencoder alone and LDM-1 (inversion + reconstruction) MS-SSIM and PSNR;
the image generated at the real follow-up's age vs the real follow-up (MS-SSIM,
PSNR); age R^2 between prompted and predicted age on every generated image (and the
probe's R^2 on real held-out follow-ups and on autoencoder reconstructions, its
ceilings); pVF of the image generated at the follow-up age (mean over seeds) vs pVF
of the real follow-up (Pearson r, Bland-Altman); prognosis: Cox clinical + BpVF vs
clinical + BpVF + GpVF (10-year image, mean over seeds), likelihood-ratio test on
all 2,000 patients and test C-index in a 2-fold split, for the generator and for
the copy control, with the truth's C-index (true log-hazard) as the ceiling; speed:
4 horizons x 10 seeds for one patient (inversion included), median of 5, in fp32
(the default on CPU) beside whole-batch networks and bf16 autocast.

Run: ``python benchmarks/diffx.py --stage judges``, then ``--stage tune``, then
``--stage steps``, then ``--stage evaluate``. ``--stage prognosis --prognosis-steps N``
repeats the prognostic test alone at another step count (a diagnostic peer, after
evaluate); ``--stage speed`` times generation alone (on a validation patient) and
writes ``diffx_<preset>_speed.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS, write_json

HORIZONS = [1.0, 5.0, 10.0]
# evaluation 3511 / prognosis 3521 were touched by the 20-step evaluation (git history of
# results/diffx_cpu.json, commit b98e0e0); once the step count was chosen anew on
# validation (--stage steps), the evaluation moved to cohorts never touched
SEEDS = {"train": 3501, "validation": 3502, "evaluation": 3513, "judge_ageing": 3512,
         "prognosis": 3523}
CACHE = Path(__file__).resolve().parent / ".cache" / "diffx-judges"
PROBE_EPOCHS = 15
SAMPLING_KEYS = ("n_inference_steps", "strength", "guidance_scale", "guidance_reference",
                 "detail_transfer", "eta", "tau_f", "tau_attn", "injection_block",
                 "injection_layer", "beta_schedule", "prediction_type", "precision")
JUDGE_RULE = ("max R^2 on the autoencoder's reconstructions of real validation images among "
              "probes whose R^2 on the real images is >= 0.75; if none, max real R^2")
RULE = ("max age_r2 + followup_pvf_r among settings with followup MS-SSIM >= "
        "max(0.80, copy - 0.02); if none, among those >= 0.80; if none, max MS-SSIM")
STEPS_RULE = ("RULE among the step counts whose fp32 speed (4 horizons x 10 seeds of one "
              "validation patient, median of 3 after a warm-up) is <= 4.5 s, a 10 % margin "
              "under the 5 s target for this machine's timing noise; if none, RULE among all")


# -- data -------------------------------------------------------------------
def _cohort(n: int, seed: str, render: tuple[int, int], shape: tuple[int, int],
            followups: int = 1) -> Any:
    """A cohort rendered at ``render``; ``image``/``followup_image`` resized to the
    generator's ``shape`` (as its training images were), ``image_full`` kept."""
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.nn.data import antialiased_resize

    b = make_spine_cohort(n, image_shape=render, random_state=SEEDS[seed], dicom=False,
                          n_followups=followups, n_jobs=2)
    f = b.frame
    f["image_full"] = f["image"]
    f["image"] = list(antialiased_resize(list(f["image_full"]), shape))
    if followups:
        f["followup_full"] = f["followup_image"]
        f["followup_image"] = list(antialiased_resize(list(f["followup_full"]), shape))
    return b


def _quality(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean MS-SSIM and PSNR (dB) of image pairs in [0, 1] (MONAI's metrics)."""
    from monai.metrics import PSNRMetric

    from fracsurv.metrics.images import ms_ssim

    ta, tb = (torch.from_numpy(np.asarray(x, np.float32))[:, None] for x in (a, b))
    return {"ms_ssim": float(ms_ssim(a, b).mean()),
            "psnr_db": float(PSNRMetric(max_val=1.0)(ta, tb).mean())}


def _autoencoded(gen: Any, images: np.ndarray) -> np.ndarray:
    """The generator's autoencoder reconstructions of images in [0, 1]."""
    with torch.inference_mode():
        x = torch.from_numpy(np.asarray(images, np.float32))[:, None] * 2 - 1
        out = torch.cat([gen.module_.decode(gen.module_.encode(x[i:i + 32]))
                         for i in range(0, len(x), 32)])
    return ((out.clamp(-1, 1) + 1) / 2)[:, 0].numpy()


# -- the judges ------------------------------------------------------------------
def _probe_file(shape: tuple[int, int], n_train: int, blur: float) -> Path:
    return CACHE / f"age-{shape[0]}x{shape[1]}-n{n_train}-e{PROBE_EPOCHS}-blur{blur:g}.safetensors"


def _age_probe(train: Any, shape: tuple[int, int], n_train: int, blur: float) -> Any:
    """The age probe with blur augmentation ``blur`` px, trained on the real baseline and
    follow-up images of the training cohort (cached)."""
    from fracsurv.metrics.images import CNNProbe

    path = _probe_file(shape, n_train, blur)
    if path.is_file():
        return CNNProbe.load(path)
    f = train().frame
    t0 = time.perf_counter()
    probe = CNNProbe(epochs=PROBE_EPOCHS, blur_sigma=blur, random_state=0).fit(
        list(f["image"]) + list(f["followup_image"]),
        np.r_[f["age"].to_numpy(float), f["followup_age"].to_numpy(float)])
    path.parent.mkdir(parents=True, exist_ok=True)
    probe.save(path)
    print(f"age probe blur {blur:g}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return probe


class Judges:
    """The fracture judge of ``fracsurv demo`` (shipped cropper + crop pVF scorer, the demo
    loader's CLAHE) and an age probe."""

    def __init__(self, probe: Any) -> None:
        from fracsurv import pretrained
        from fracsurv.io import DicomLoader
        from fracsurv.pretrained.train import DETECTED_CROPS

        self.probe = probe
        self.cropper = pretrained.load("vertebra-cropper").set_params(**DETECTED_CROPS)
        self.scorer = pretrained.load("pvf-scorer")
        loader = DicomLoader(clahe_backend="skimage")  # the demo's loader settings
        self.clahe_args = (loader.clahe_clip_limit, loader.clahe_kernel_size, "skimage")

    def clahe(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from fracsurv.io.preprocess import equalize_clahe

        return [equalize_clahe(im, *self.clahe_args).astype(np.float32) for im in images]

    def baselines(self, frame: Any, column: str = "image_full") -> tuple[list[Any], np.ndarray]:
        """(vertebrae found on each full-resolution image of ``column``, pVF of its crops)."""
        import pandas as pd

        verts, bpvf = [], []
        for lo in range(0, len(frame), 200):
            part = pd.DataFrame({"image": self.clahe(list(frame[column].iloc[lo:lo + 200]))})
            out = self.cropper.transform(part)
            verts += list(out["vertebrae"])
            bpvf.append(self.scorer.score_cells(out)[0])
        return verts, np.concatenate(bpvf)

    def pvf(self, cells: list[Any], verts: list[Any], full_shape: tuple[int, int],
            n_seeds: int) -> np.ndarray:
        """Crop pVF of each row's images (mean over seeds, max over horizons)."""
        from fracsurv.scoring.futures import scores_at_baseline_vertebrae

        return scores_at_baseline_vertebrae(self.cropper, self.scorer, cells, verts,
                                            [full_shape] * len(cells), n_seeds=n_seeds,
                                            preprocess=self.clahe)

    def age(self, images: list[np.ndarray]) -> np.ndarray:
        return self.probe.predict(images)


# -- generation for every method -------------------------------------------------
def _generate(gen: Any, frame: Any, horizons: list[list[float]], seeds: int,
              method: str) -> np.ndarray:
    """(patients, horizons, seeds, H, W) for ``method`` in {diffx, no_injection, copy,
    diffx_<n>_steps}."""
    if method == "copy":
        base = np.stack(list(frame["image"]))
        return np.repeat(np.repeat(base[:, None, None], len(horizons[0]), 1), seeds, 2)
    out = []
    step = max(1, 64 // (len(horizons[0]) * seeds))
    n_steps = re.fullmatch(r"diffx_(\d+)_steps", method)  # the generator at another step count
    before = gen.n_inference_steps
    gen.set_params(n_inference_steps=int(n_steps.group(1)) if n_steps else before)
    try:
        for lo in range(0, len(frame), step):
            part = frame.iloc[lo:lo + step]
            out.append(gen.generate_many(list(part["image"]), list(part["age"]),
                                         list(part["sex"]), horizons[lo:lo + step],
                                         seeds=range(seeds), inject=method != "no_injection"))
    finally:
        gen.set_params(n_inference_steps=before)
    return np.concatenate(out)


def _image_metrics(gen: Any, frame: Any, seeds: int, methods: list[str], judges: Judges,
                   verts: list[Any]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Follow-up fidelity, age and fracture agreement of each method on ``frame``."""
    from sklearn.metrics import r2_score

    from fracsurv.stratify.agreement import agreement

    full = np.asarray(frame["image_full"].iloc[0]).shape
    base_age = frame["age"].to_numpy(float)
    last = np.maximum(frame["followup_age"].to_numpy(float) - base_age, 0.0)
    horizons = [[*HORIZONS, float(h)] for h in last]
    prompted = np.asarray([[a + h for h in hs] for a, hs in zip(base_age, horizons, strict=True)])
    real_fu = np.stack(list(frame["followup_image"]))
    # the real follow-up is cut at its own detected vertebrae: the patient was positioned
    # anew and the spine has aged, so the baseline's vertebrae no longer fit it
    fu_verts, _ = judges.baselines(frame, "followup_full")
    fu_pvf = judges.pvf([[im] for im in real_fu], fu_verts, full, 1)
    res, arrays = {}, {}
    for method in methods:
        arr = _generate(gen, frame, horizons, seeds, method)
        arrays[method] = arr
        n, nh, ns, h, w = arr.shape
        at_fu = arr[:, -1]
        q = _quality(at_fu.reshape(-1, h, w), np.repeat(real_fu, ns, axis=0))
        pred_age = judges.age(list(arr.reshape(-1, h, w))).reshape(n, nh, ns)
        gen_pvf = judges.pvf(list(at_fu), verts, full, ns)
        ag = agreement(gen_pvf, fu_pvf)
        res[method] = {
            "followup_ms_ssim": q["ms_ssim"], "followup_psnr_db": q["psnr_db"],
            "age_r2": float(r2_score(np.repeat(prompted[:, :, None], ns, 2).ravel(),
                                     pred_age.ravel())),
            "age_r2_per_horizon": {str(hz): float(r2_score(
                np.repeat(prompted[:, j, None], ns, 1).ravel(), pred_age[:, j].ravel()))
                for j, hz in enumerate([*HORIZONS, "last"])},
            "mean_predicted_minus_prompted_age": float((pred_age - prompted[:, :, None]).mean()),
            "mean_predicted_age_gain_per_horizon": {
                str(hz): float((pred_age[:, j] - pred_age[:, 0:1].mean(axis=2)).mean())
                for j, hz in enumerate([*HORIZONS, "last"])},
            "followup_pvf_r": ag["r"], "followup_pvf_bias": ag["mean_difference"],
            "followup_pvf_sd_diff": ag["sd_difference"],
        }
    return res, arrays


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
def _prognosis(gen: Any, cohort: Any, judges: Judges, seeds: int) -> dict[str, Any]:
    """Cox clinical + BpVF (+ GpVF of the generator, or of the copy control): LR test on
    all patients, 2-fold test C-index."""
    import pandas as pd
    from lifelines import CoxPHFitter
    from scipy.stats import chi2
    from sksurv.metrics import concordance_index_censored

    f = cohort.frame
    full = np.asarray(f["image_full"].iloc[0]).shape
    t0 = time.perf_counter()
    verts, bpvf = judges.baselines(f)
    t_detect = time.perf_counter() - t0
    arr = _generate(gen, f, [[10.0]] * len(f), seeds, "diffx")
    t_gen = time.perf_counter() - t0 - t_detect
    gpvf = {"diffx": judges.pvf(list(arr[:, 0]), verts, full, arr.shape[2]),
            "copy": judges.pvf([[im] for im in f["image"]], verts, full, 1)}
    y = cohort.target
    df = pd.DataFrame({c: f[c].astype(float) for c in cohort.clinical_columns
                       if c in f and pd.api.types.is_numeric_dtype(f[c])})
    df = df.loc[:, df.std() > 0]
    df["bpvf"] = bpvf
    df["T"], df["E"] = y["time"], y["event"].astype(int)
    reduced = [c for c in df.columns if c not in ("T", "E")]

    def fit(frame: Any, cols: list[str], rows: np.ndarray) -> Any:
        return CoxPHFitter(penalizer=0.01).fit(frame.loc[rows, [*cols, "T", "E"]], "T", "E")

    n = len(f)
    everyone = np.arange(n)
    folds = np.random.default_rng(0).permutation(n) % 2
    out: dict[str, Any] = {"n_patients": n, "n_events": int(y["event"].sum()),
                           "gpvf_seeds": int(arr.shape[2]), "covariates_reduced": reduced,
                           "seconds": {"detect_and_bpvf": t_detect, "generate": t_gen}}
    truth = [float(concordance_index_censored(y["event"][folds == k], y["time"][folds == k],
                                              cohort.truth.log_hazard[folds == k])[0])
             for k in (0, 1)]
    out["truth_c_index_per_fold"] = truth
    for method, g in gpvf.items():
        d = df.assign(gpvf=g)
        full_m, red_m = fit(d, [*reduced, "gpvf"], everyone), fit(d, reduced, everyone)
        lr = 2 * (full_m.log_likelihood_ - red_m.log_likelihood_)
        cidx: dict[str, list[float]] = {"clinical_bpvf": [], "clinical_bpvf_gpvf": []}
        for k in (0, 1):
            tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            for name, cols in (("clinical_bpvf", reduced),
                               ("clinical_bpvf_gpvf", [*reduced, "gpvf"])):
                risk = fit(d, cols, tr).predict_partial_hazard(d.loc[te, cols]).to_numpy()
                cidx[name].append(float(concordance_index_censored(
                    y["event"][te], y["time"][te], risk)[0]))
        out[method] = {"lr_statistic": float(lr), "lr_p": float(chi2.sf(lr, 1)),
                       "gpvf_hazard_ratio_per_unit": float(np.exp(full_m.params_["gpvf"])),
                       "bpvf_gpvf_r": float(np.corrcoef(bpvf, g)[0, 1]),
                       "gpvf_mean": float(np.mean(g)), "bpvf_mean": float(np.mean(bpvf)),
                       "test_c_index_per_fold": cidx,
                       "test_c_index_mean": {k: float(np.mean(v)) for k, v in cidx.items()}}
    return out


def _judge_sees_ageing(judges: Judges, render: tuple[int, int], shape: tuple[int, int],
                       n: int) -> dict[str, Any]:
    """How much of a patient's own ageing the age probe sees on real images: predicted age
    gain from the baseline to each of three real follow-ups (1-12 years later) against
    the years elapsed (slope through the origin; 1 = all of it). The generator's images
    cannot be judged older than the probe sees real patients grow."""
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.nn.data import antialiased_resize

    b = make_spine_cohort(n, image_shape=render, random_state=SEEDS["judge_ageing"],
                          dicom=False, n_followups=3, n_jobs=2)
    base = judges.age(list(antialiased_resize(list(b.frame["image"]), shape)))
    fu = b.followups
    pred = judges.age(list(antialiased_resize(list(fu["image"]), shape)))
    pos = b.frame.reset_index(drop=True).reset_index().set_index("patient_id")["index"]
    gain = pred - base[pos.loc[fu["patient_id"]].to_numpy()]
    years = fu["years"].to_numpy(float)
    return {"n_patients": n, "n_followups": len(fu), "years_mean": float(years.mean()),
            "years_range": [float(years.min()), float(years.max())],
            "slope_predicted_gain_per_year": float((gain * years).sum() / (years ** 2).sum()),
            "mean_predicted_gain": float(gain.mean()),
            "per_visit": {int(v): {"years_mean": float(years[fu["visit"] == v].mean()),
                                   "predicted_gain_mean": float(gain[fu["visit"] == v].mean())}
                          for v in sorted(fu["visit"].unique())}}


SPEED_VARIANTS = {
    "fp32": {},  # the shipped default on CPU (precision "auto")
    "fp32_whole_batch_networks": {"whole_batch": True},  # the batching before chunking
    "bf16_autocast": {"precision": "bf16"},
}


def _speed(gen: Any, frame: Any, repeats: int = 6,
           variants: tuple[str, ...] = tuple(SPEED_VARIANTS)) -> dict[str, Any]:
    """Seconds for 4 horizons x 10 seeds of one patient (inversion included) per
    variant, runs interleaved so that a slower spell of the machine hits every
    variant; the first round is warm-up. bf16's images are compared with fp32's."""
    from fracsurv.generative import sampling

    row = frame.iloc[0]
    budgets = sampling._CPU_UNET_PIXELS, sampling._CPU_DECODE_PIXELS
    precision = gen.precision
    times: dict[str, list[float]] = {k: [] for k in variants}
    images: dict[str, np.ndarray] = {}
    try:
        for _ in range(repeats):
            for name in variants:
                variant = SPEED_VARIANTS[name]
                whole = variant.get("whole_batch", False)
                sampling._CPU_UNET_PIXELS, sampling._CPU_DECODE_PIXELS = (
                    (2 ** 40, 2 ** 40) if whole else budgets)
                gen.set_params(precision=variant.get("precision", precision))
                gen._inversions = {}  # inversion included in every timing
                t0 = time.perf_counter()
                images[name] = gen.generate(row["image"], row["age"], row["sex"],
                                            [1, 5, 10, 12], seeds=range(10))
                times[name].append(time.perf_counter() - t0)
    finally:
        sampling._CPU_UNET_PIXELS, sampling._CPU_DECODE_PIXELS = budgets
        gen.set_params(precision=precision)
    out: dict[str, Any] = {
        "seconds_median": float(np.median(times["fp32"][1:])),
        "variants": {k: {"seconds_median": float(np.median(v[1:])), "seconds_per_run": v}
                     for k, v in times.items()}}
    for name in variants[1:]:
        diff = np.abs(images[name] - images["fp32"])
        out[f"{name}_abs_difference_from_fp32"] = {"mean": float(diff.mean()),
                                                   "max": float(diff.max())}
    return {**out, "torch_threads": torch.get_num_threads(),
            "note": "runs interleaved across variants; the first round is warm-up, excluded; "
                    "the quality targets were measured in fp32 only"}


def _contact_sheet(frame: Any, arrays: dict[str, np.ndarray], path: Path, title: str,
                   n: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = arrays["diffx"]
    cols = ["baseline", "+1 y", "+5 y", "+10 y", "at follow-up age", "real follow-up",
            "+10 y - baseline"]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.3 * len(cols), 2.5 * n))
    for i in range(n):
        row = frame.iloc[i]
        diff = arr[i, 2, 0] - np.asarray(row["image"])
        ims = [row["image"], *[arr[i, j, 0] for j in range(4)], row["followup_image"], diff]
        for j, im in enumerate(ims):
            ax = axes[i, j]
            if j == len(cols) - 1:
                ax.imshow(im, cmap="coolwarm", vmin=-0.15, vmax=0.15)
            else:
                ax.imshow(im, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=7)
        axes[i, 0].set_ylabel(f"{row['age']:.0f} y {row['sex']}\nfollow-up {row['followup_age']:.0f} y",
                              fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- stages ------------------------------------------------------------------------
def _stage_judges(gen: Any, args: Any, shape: tuple[int, int], render: tuple[int, int],
                  common: dict[str, Any]) -> None:
    from sklearn.metrics import r2_score

    cached: dict[str, Any] = {}

    def train() -> Any:
        if "train" not in cached:
            cached["train"] = _cohort(args.n_judge_train, "train", render, shape)
        return cached["train"]

    val = _cohort(args.n_validation, "validation", render, shape).frame
    images = list(val["image"]) + list(val["followup_image"])
    ages = np.r_[val["age"].to_numpy(float), val["followup_age"].to_numpy(float)]
    recon = _autoencoded(gen, np.stack(images))
    rows = []
    for blur in args.blur:
        probe = _age_probe(train, shape, args.n_judge_train, blur)
        rows.append({"blur_sigma_px": blur,
                     "validation_real_r2": float(r2_score(ages, probe.predict(images))),
                     "validation_autoencoder_r2": float(r2_score(ages, probe.predict(list(recon))))})
        print(json.dumps(rows[-1]), flush=True)
    ok = [r for r in rows if r["validation_real_r2"] >= 0.75]
    best = max(ok, key=lambda r: r["validation_autoencoder_r2"]) if ok else \
        max(rows, key=lambda r: r["validation_real_r2"])
    write_json(f"diffx_{args.preset}_judges", {
        **common, "split": "validation", "n_patients": len(val), "rule": JUDGE_RULE,
        "probe": {"epochs": PROBE_EPOCHS, "n_train_patients": args.n_judge_train,
                  "train_images": "baseline + follow-up of the training cohort"},
        "grid": rows, "chosen_blur_sigma_px": best["blur_sigma_px"]})


def _chosen_probe(args: Any, shape: tuple[int, int]) -> tuple[Any, float]:
    from fracsurv.metrics.images import CNNProbe

    chosen = json.loads((RESULTS / f"diffx_{args.preset}_judges.json").read_text())
    blur = float(chosen["chosen_blur_sigma_px"])
    return CNNProbe.load(_probe_file(shape, args.n_judge_train, blur)), blur


def _chosen_sampling(preset: str) -> dict[str, Any]:
    """The tuned setting, with the step count of ``--stage steps`` when it has run."""
    chosen = json.loads((RESULTS / f"diffx_{preset}_tuning.json").read_text())["chosen"]
    steps = RESULTS / f"diffx_{preset}_steps.json"
    return {**chosen, **(json.loads(steps.read_text())["chosen"] if steps.is_file() else {})}


def _validation(gen: Any, args: Any, judges: Judges, render: tuple[int, int],
                shape: tuple[int, int]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The validation cohort, its detected baseline vertebrae and the copy control's
    metrics (what the tune and steps stages compare against)."""
    val = _cohort(args.n_validation, "validation", render, shape).frame
    verts, _ = judges.baselines(val)
    return val, verts, _image_metrics(gen, val, 1, ["copy"], judges, verts)[0]["copy"]


def _stage_steps(gen: Any, args: Any, judges: Judges, render: tuple[int, int],
                 shape: tuple[int, int], common: dict[str, Any]) -> None:
    """DDIM step counts at the tuned setting on the validation cohort, by ``STEPS_RULE``."""
    val, verts, copy = _validation(gen, args, judges, render, shape)
    rows = []
    for n in args.steps:
        gen.set_params(n_inference_steps=int(n))
        gen._inversions = {}
        t0 = time.perf_counter()
        res, _ = _image_metrics(gen, val, 2, ["diffx"], judges, verts)
        seconds = time.perf_counter() - t0
        speed = _speed(gen, val, repeats=4, variants=("fp32",))
        rows.append({"n_inference_steps": int(n), **res, "copy_ms_ssim": copy["followup_ms_ssim"],
                     "speed_seconds_median": speed["seconds_median"], "speed": speed,
                     "seconds": seconds})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "speed"}), flush=True)
    fast = [r for r in rows if r["speed_seconds_median"] <= 4.5]
    best = _select(fast or rows)
    write_json(f"diffx_{args.preset}_steps", {
        **common, "split": "validation", "n_patients": args.n_validation,
        "seeds_per_horizon": 2, "fixed": {k: gen.get_params()[k] for k in SAMPLING_KEYS
                                          if k != "n_inference_steps"},
        "rule": STEPS_RULE, "copy": copy, "grid": rows,
        "chosen": {"n_inference_steps": best["n_inference_steps"]}})


def main() -> None:
    from fracsurv.generative import DiffXGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=("judges", "tune", "steps", "evaluate", "speed",
                                        "prognosis"), required=True)
    ap.add_argument("--prognosis-steps", type=int, default=None,
                    help="--stage prognosis: DDIM steps (default: the chosen count)")
    ap.add_argument("--steps", type=int, nargs="+", default=(8, 10, 12, 14, 16, 20),
                    help="DDIM step counts for --stage steps")
    ap.add_argument("--model", default="benchmarks/models/diffx-cpu",
                    help="trained by train_diffx.py (fp32); the shipped fp16 copy is "
                         "fracsurv/pretrained/models/diffx")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--render-shape", type=int, nargs=2, default=(512, 256))
    ap.add_argument("--n-judge-train", type=int, default=3000)
    ap.add_argument("--blur", type=float, nargs="+", default=(2.0, 4.0),
                    help="age-probe blur augmentations to choose from (px)")
    ap.add_argument("--n-validation", type=int, default=40)
    ap.add_argument("--n-evaluation", type=int, default=100)
    ap.add_argument("--n-prognosis", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=4, help="generated images per horizon")
    ap.add_argument("--strengths", type=float, nargs="+", default=(0.5, 0.7))
    ap.add_argument("--guidance", type=float, nargs="+", default=(3.0, 6.0))
    ap.add_argument("--references", nargs="+", default=("null", "baseline"))
    ap.add_argument("--tau-f", type=float, nargs="+", default=(0.8,),
                    help="feature-injection fractions in the grid (the study's 0.8)")
    ap.add_argument("--detail-transfer", type=int, nargs="+", default=(0, 1),
                    help="detail_transfer settings in the grid (0/1)")
    ap.add_argument("--figure", default="docs/images/diffx_contact_sheet.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = DiffXGenerator.load(args.model)
    shape = gen._input_shape()
    gen.set_params(output_shape=shape)
    render = tuple(args.render_shape)
    common = {"model": args.model, "preset": args.preset, "input_shape": list(shape),
              "render_shape": list(render), "cohort_seeds": SEEDS,
              "training": json.loads((Path(args.model) / "training.json").read_text())
              if (Path(args.model) / "training.json").is_file() else None}
    if args.stage == "judges":
        _stage_judges(gen, args, shape, render, common)
        return
    if args.stage == "speed":  # a validation patient: the evaluation cohort is not touched
        gen.set_params(**_chosen_sampling(args.preset))
        val = _cohort(1, "validation", render, shape, followups=0).frame
        write_json(f"diffx_{args.preset}_speed", {
            **common, "sampling": {k: gen.get_params()[k] for k in SAMPLING_KEYS},
            "speed_one_patient_4_horizons_x_10_seeds": _speed(gen, val),
            "target_seconds": 5})
        return
    probe, blur = _chosen_probe(args, shape)
    judges = Judges(probe)
    common["judges"] = {
        "age": f"CNNProbe (16,32,64,96), {PROBE_EPOCHS} epochs, seed 0, blur_sigma {blur:g} "
               f"(diffx_{args.preset}_judges.json), on baseline + follow-up images of "
               f"{args.n_judge_train} training-cohort patients at {shape[0]} x {shape[1]}",
        "pvf": "fracsurv.pretrained vertebra-cropper (detections on the real full-resolution "
               "baseline, DETECTED_CROPS) + pvf-scorer, skimage CLAHE as the demo's loader"}
    if args.stage == "tune":
        val, verts, copy = _validation(gen, args, judges, render, shape)
        rows = []
        for strength, guidance, reference, tau_f, detail in itertools.product(
                args.strengths, args.guidance, args.references, args.tau_f,
                [bool(d) for d in args.detail_transfer]):
            gen.set_params(strength=strength, guidance_scale=guidance,
                           guidance_reference=reference, tau_f=tau_f, detail_transfer=detail)
            gen._inversions = {}
            t0 = time.perf_counter()
            res, _ = _image_metrics(gen, val, 2, ["diffx"], judges, verts)
            rows.append({"strength": strength, "guidance_scale": guidance,
                         "guidance_reference": reference, "tau_f": tau_f,
                         "detail_transfer": detail, **res,
                         "copy_ms_ssim": copy["followup_ms_ssim"],
                         "seconds": time.perf_counter() - t0})
            print(json.dumps(rows[-1]), flush=True)
        best = _select(rows)
        write_json(f"diffx_{args.preset}_tuning", {
            **common, "split": "validation", "n_patients": args.n_validation,
            "seeds_per_horizon": 2, "rule": RULE, "copy": copy, "grid": rows,
            "chosen": {k: best[k] for k in ("strength", "guidance_scale", "guidance_reference",
                                            "tau_f", "detail_transfer")}})
        return
    tuning = json.loads((RESULTS / f"diffx_{args.preset}_tuning.json").read_text())
    gen.set_params(**tuning["chosen"])
    tuned_steps = gen.n_inference_steps
    if args.stage == "steps":
        _stage_steps(gen, args, judges, render, shape, common)
        return
    chosen = _chosen_sampling(args.preset)
    gen.set_params(**chosen)
    if args.stage == "prognosis":  # a diagnostic peer, after evaluate; never used to choose
        n = int(args.prognosis_steps or gen.n_inference_steps)
        gen.set_params(n_inference_steps=n)
        t0 = time.perf_counter()
        prog = _prognosis(gen, _cohort(args.n_prognosis, "prognosis", render, shape,
                                       followups=0), judges, args.seeds)
        prog["seconds"]["total"] = time.perf_counter() - t0
        write_json(f"diffx_{args.preset}_prognosis_{n}_steps", {
            **common, "split": "the evaluation's prognosis cohort (a peer of diffx_"
                               f"{args.preset}.json, not used to choose anything)",
            "sampling": {k: gen.get_params()[k] for k in SAMPLING_KEYS}, "prognosis": prog})
        return
    peers = ["no_injection", "copy"]
    if gen.n_inference_steps != tuned_steps:  # the setting the step count was chosen against
        peers.insert(0, f"diffx_{tuned_steps}_steps")
    t0 = time.perf_counter()
    ev = _cohort(args.n_evaluation, "evaluation", render, shape)
    f = ev.frame
    base = np.stack(list(f["image"]))
    ae = _autoencoded(gen, base)
    ldm1 = np.stack([gen.reconstruct(r["image"], r["age"], r["sex"]) for _, r in f.iterrows()])
    verts, bpvf_full = judges.baselines(f)
    res, arrays = _image_metrics(gen, f, args.seeds, ["diffx", *peers], judges, verts)
    from sklearn.metrics import r2_score, roc_auc_score

    full = np.asarray(f["image_full"].iloc[0]).shape
    small_bpvf = judges.pvf([[im] for im in f["image"]], verts, full, 1)
    ae_bpvf = judges.pvf([[im] for im in ae], verts, full, 1)
    ldm1_bpvf = judges.pvf([[im] for im in ldm1], verts, full, 1)
    judge = {
        "age_r2_on_real_followups": float(r2_score(f["followup_age"],
                                                   judges.age(list(f["followup_image"])))),
        "age_r2_on_real_baselines": float(r2_score(f["age"], judges.age(list(f["image"])))),
        "age_r2_on_autoencoder_reconstructions": float(r2_score(f["age"], judges.age(list(ae)))),
        "pvf_auroc_on_baselines_full_resolution": float(roc_auc_score(f["prevalent_vf"],
                                                                      bpvf_full)),
        "pvf_auroc_on_baselines_at_generator_resolution": float(roc_auc_score(
            f["prevalent_vf"], small_bpvf)),
        "pvf_auroc_on_autoencoder_reconstructions": float(roc_auc_score(f["prevalent_vf"],
                                                                        ae_bpvf)),
        "pvf_auroc_on_ldm1_reconstructions": float(roc_auc_score(f["prevalent_vf"], ldm1_bpvf)),
        "pvf_r_baseline_vs_autoencoder_reconstruction": float(np.corrcoef(small_bpvf,
                                                                          ae_bpvf)[0, 1]),
        "pvf_mean_baseline_vs_autoencoder_reconstruction": [float(small_bpvf.mean()),
                                                            float(ae_bpvf.mean())],
        "n_prevalent_vf_baselines": int(f["prevalent_vf"].sum())}
    judge["sees_ageing"] = _judge_sees_ageing(judges, render, shape, args.n_evaluation)
    print(json.dumps(judge), flush=True)
    t_images = time.perf_counter() - t0
    if args.figure:
        _contact_sheet(f, arrays, Path(args.figure),
                       f"DiffXGenerator ({args.preset} preset, {shape[0]} x {shape[1]}), "
                       f"evaluation cohort seed {SEEDS['evaluation']}; seed 0 of each horizon")
    speed = _speed(gen, f)
    t0 = time.perf_counter()
    prog = _prognosis(gen, _cohort(args.n_prognosis, "prognosis", render, shape, followups=0),
                      judges, args.seeds)
    prog["seconds"]["total"] = time.perf_counter() - t0
    write_json(f"diffx_{args.preset}", {
        **common, "split": "evaluation (touched once)", "chosen_on_validation": chosen,
        "sampling": {k: gen.get_params()[k] for k in SAMPLING_KEYS},
        "n_patients": len(f), "seeds_per_horizon": args.seeds,
        "autoencoder_reconstruction": _quality(ae, base),
        "ldm1_reconstruction": _quality(ldm1, base), "judges_on_real_images": judge,
        "results": res, "prognosis": prog, "speed_one_patient_4_horizons_x_10_seeds": speed,
        "seconds_image_metrics": t_images,
        "study": {"ldm1_ms_ssim": 0.506, "ldm1_psnr_db": 20.7, "age_r2": 0.841,
                  "followup_pvf_r": 0.655, "followup_pvf_bias": -0.06},
        "targets": {"reconstruction_ms_ssim": 0.90, "reconstruction_psnr_db": 28,
                    "followup_ms_ssim": 0.80, "followup_ms_ssim_vs_copy": -0.02,
                    "age_regressor_real_r2": 0.75, "age_r2": 0.70, "followup_pvf_r": 0.6,
                    "followup_pvf_bias_abs": 0.05, "lr_p": 0.05, "seconds_per_patient": 5}})


if __name__ == "__main__":
    main()
