"""The synthetic cohort (generator v4) against its targets, one run, one JSON.

Parts (``--parts``, all by default):

* ``population`` — seed 000 Table 1 side by side with 3,000 simulated patients, with
  each difference in standard errors;
* ``visibility`` — age and spine BMD read from baseline images by a small CNN
  (``fracsurv.metrics.images.cnn_probe``) trained on 1,500 patients (seed 1101) and
  scored once on 500 others (seed 1202), at 256x128. Targets: age R^2 >= 0.75, spine BMD
  r >= 0.8;
* ``fidelity`` — MS-SSIM(baseline, follow-up) at 1024x512 for patients with no
  incident fracture before the follow-up (the profile never changes between visits;
  the pose jitters by a few mm). Target >= 0.8;
* ``speed`` — 500 patients x (baseline + 1 follow-up) at 1024x512, ``n_jobs`` 1 and 2,
  in memory and with DICOM files; determinism across ``n_jobs``. Target <= 60 s;
* ``oracle`` — Harrell's C of the true log-hazard on 20,000 patients (seed 8) against
  Cox models fitted on 20,000 others (seed 7): clinical columns only, and clinical
  columns plus the true image-borne covariates (prevalent fracture count, SDI, spine
  BMD). The oracle is the ceiling.

Usage: ``python benchmarks/synthetic_cohort.py [--parts population,speed] [--out F]``
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from typing import Any

import numpy as np
from _common import write_json

from fracsurv.datasets import CLINICAL_COLUMNS, make_spine_cohort

# seed 000, Table 1 (derivation cohort, n = 9,276): mean, SD for continuous variables;
# proportion for binary ones
TABLE1: dict[str, tuple[float, float | None]] = {
    "age": (65.7, 8.5), "height_cm": (159.1, 8.5), "weight_kg": (61.1, 10.6),
    "bmi": (24.0, 3.2), "tscore_fn": (-1.7, 1.2), "spine_bmd": (0.895, 0.212),
    "female": (0.66, None), "prevalent_vf": (0.186, None), "prior_fracture": (0.074, None),
    "glucocorticoids": (0.047, None), "rheumatoid_arthritis": (0.027, None),
    "secondary_osteoporosis": (0.020, None), "event": (0.103, None),
    "followup_months_mean": (34.8, None),
}


def _population(n: int) -> dict[str, Any]:
    b = make_spine_cohort(n, random_state=2026, images=False)
    f = b.frame.assign(spine_bmd=b.truth.patients["spine_bmd"].to_numpy(),
                       event=b.target["event"].astype(float))
    rows = {}
    for name, (ref_mean, ref_sd) in TABLE1.items():
        if name == "followup_months_mean":
            vals = 12 * b.target["time"]
        else:
            vals = f[name].to_numpy(dtype=float)
        mean = float(np.mean(vals))
        se = float(np.std(vals) / np.sqrt(n))
        rows[name] = {"seed_000": ref_mean, "seed_000_sd": ref_sd, "simulated": mean,
                      "simulated_sd": float(np.std(vals)) if ref_sd is not None else None,
                      "difference_in_se": (mean - ref_mean) / se if se > 0 else None}
    rows["followup_days_median"] = {"seed_000": 766, "simulated":
                                    float(365.25 * np.median(b.target["time"]))}
    return {"n": n, "random_state": 2026, "table": rows}


def _visibility(n_train: int, n_test: int, epochs: int) -> dict[str, Any]:
    from sklearn.metrics import r2_score

    from fracsurv.metrics.images import cnn_probe

    shape = (256, 128)
    tr = make_spine_cohort(n_train, image_shape=shape, random_state=1101, n_followups=0, n_jobs=2)
    te = make_spine_cohort(n_test, image_shape=shape, random_state=1202, n_followups=0, n_jobs=2)
    y = np.column_stack([tr.frame["age"], tr.truth.patients["spine_bmd"]])
    t0 = time.perf_counter()
    pred = cnn_probe(list(tr.frame["image"]), y, list(te.frame["image"]), epochs=epochs,
                     random_state=0)
    age_true, bmd_true = te.frame["age"].to_numpy(), te.truth.patients["spine_bmd"].to_numpy()
    return {
        "image_shape": list(shape), "n_train": n_train, "n_test": n_test, "epochs": epochs,
        "train_seed": 1101, "test_seed": 1202, "probe_seed": 0,
        "probe": "MONAI Convolution blocks (16, 32, 64, 96), mean+max pooling, AdamW 2e-3 "
                 "one-cycle, MSE, flips",
        "train_seconds": time.perf_counter() - t0,
        "age_r2": float(r2_score(age_true, pred[:, 0])),
        "age_mae_years": float(np.mean(np.abs(age_true - pred[:, 0]))),
        "spine_bmd_r": float(np.corrcoef(bmd_true, pred[:, 1])[0, 1]),
        "targets": {"age_r2": 0.75, "spine_bmd_r": 0.8},
    }


def _fidelity(n: int) -> dict[str, Any]:
    from fracsurv.metrics.images import ms_ssim

    b = make_spine_cohort(n, image_shape=(1024, 512), random_state=303, n_jobs=2)
    fu = b.followups.set_index("patient_id")
    keep = ~fu.loc[b.frame["patient_id"], "incident_vf_before"].to_numpy()
    base = [im for im, k in zip(b.frame["image"], keep) if k]
    follow = [im for im, k in zip(b.frame["followup_image"], keep) if k]
    scores = np.concatenate([ms_ssim(base[i:i + 16], follow[i:i + 16])
                             for i in range(0, len(base), 16)])
    # reference: two different patients of the same profile
    manu = b.truth.patients["manufacturer"].to_numpy()
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if manu[i] == manu[j]][:64]
    other = ms_ssim([b.frame["image"][i] for i, _ in pairs],
                    [b.frame["image"][j] for _, j in pairs])
    return {"n_patients": n, "n_without_incident_fracture": int(keep.sum()),
            "random_state": 303, "image_shape": [1024, 512],
            "ms_ssim_mean": float(scores.mean()), "ms_ssim_median": float(np.median(scores)),
            "ms_ssim_min": float(scores.min()), "share_at_least_0_8": float((scores >= 0.8).mean()),
            "per_patient": scores.round(4).tolist(),
            "different_patients_same_profile_mean": float(other.mean()), "target": 0.8}


def _digest(bunch) -> str:
    h = hashlib.sha256()
    for img in bunch.frame["image"]:
        h.update(img.tobytes())
    h.update(bunch.frame.drop(columns=["image", "followup_image", "keypoints"]).to_csv().encode())
    return h.hexdigest()


def _speed(n: int) -> dict[str, Any]:
    rows, digests = {}, []
    for n_jobs in (1, 2):
        t0 = time.perf_counter()
        b = make_spine_cohort(n, image_shape=(1024, 512), random_state=0, n_jobs=n_jobs)
        rows[f"in_memory_n_jobs_{n_jobs}_s"] = time.perf_counter() - t0
        digests.append(_digest(b))
        del b
        print(rows, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_spine_cohort(n, image_shape=(1024, 512), random_state=0, n_jobs=2, out_dir=tmp)
        rows["with_dicom_files_n_jobs_2_s"] = time.perf_counter() - t0
    best = min(rows["in_memory_n_jobs_1_s"], rows["in_memory_n_jobs_2_s"])
    return {"n_patients": n, "images": 2 * n, "timings": rows, "best_seconds": best,
            "images_per_second": 2 * n / best,
            "deterministic_across_n_jobs": digests[0] == digests[1],
            "target_seconds": 60, "target_met": best <= 60}


def _oracle(n: int) -> dict[str, Any]:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored

    train = make_spine_cohort(n, random_state=7, images=False)
    test = make_spine_cohort(n, random_state=8, images=False)

    def design(b, full: bool) -> np.ndarray:
        X = b.frame[list(CLINICAL_COLUMNS)].to_numpy(dtype=float)
        if not full:
            return X
        t = b.truth.patients
        extra = np.column_stack([np.minimum(t["n_prevalent_vf"], 3), np.minimum(t["sdi"], 6),
                                 t["spine_bmd"]])
        return np.column_stack([X, extra])

    def c(risk: np.ndarray) -> float:
        return float(concordance_index_censored(test.target["event"], test.target["time"],
                                                risk)[0])

    out = {"n_train": n, "n_test": n, "train_seed": 7, "test_seed": 8,
           "oracle_c": c(test.truth.log_hazard)}
    for name, full in (("cox_clinical_c", False), ("cox_clinical_plus_true_image_covariates_c",
                                                   True)):
        model = CoxPHSurvivalAnalysis(ties="efron").fit(design(train, full), train.target)
        out[name] = c(model.predict(design(test, full)))
    out["oracle_is_ceiling"] = out["oracle_c"] >= max(out["cox_clinical_c"],
                                                      out["cox_clinical_plus_true_image_covariates_c"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="population,visibility,fidelity,speed,oracle")
    p.add_argument("--n-population", type=int, default=3000)
    p.add_argument("--n-train", type=int, default=1500)
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--n-fidelity", type=int, default=60)
    p.add_argument("--n-speed", type=int, default=500)
    p.add_argument("--n-oracle", type=int, default=20000)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from fracsurv.datasets.spine import GENERATOR_VERSION

    parts = args.parts.split(",")
    results: dict[str, Any] = {}
    runners = {"population": lambda: _population(args.n_population),
               "visibility": lambda: _visibility(args.n_train, args.n_test, args.epochs),
               "fidelity": lambda: _fidelity(args.n_fidelity),
               "speed": lambda: _speed(args.n_speed),
               "oracle": lambda: _oracle(args.n_oracle)}
    for part in parts:
        load_before = os.getloadavg()[0]  # other work on the machine slows the timings
        t0 = time.perf_counter()
        results[part] = runners[part]()
        results[part]["seconds"] = time.perf_counter() - t0
        results[part]["load_average_1min_before_after"] = [load_before, os.getloadavg()[0]]
        print(part, {k: v for k, v in results[part].items() if k not in ("per_patient", "table")},
              flush=True)
    write_json("synthetic_cohort", {"generator_version": GENERATOR_VERSION,
                                    "settings": vars(args), "results": results}, args.out)


if __name__ == "__main__":
    main()
