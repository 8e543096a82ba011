"""How few DDIM steps can the demo's future-image generation use? (issue 20: demo <= 5 min)

The demo generates one 10-year future per seed (2 seeds) for every patient with the
shipped ``diffx`` generator (20 DDIM steps x strength 0.5), which took 377 of its 580 s.
This run times generation at fewer steps and asks whether the images change more than
the generator's own seed-to-seed variation:

* reference: 20 steps, seeds 0 and 1;
* for each step count: MS-SSIM between its image and the 20-step image of the same
  seed (``vs_reference``), against MS-SSIM between the two 20-step seeds
  (``seed_to_seed``, the variation the demo already averages over);
* mean absolute difference of the generated images' mean intensity (a crude score
  proxy) to the reference.

Patients: a fresh cohort (seed 5101, used for nothing else), demo resolution 256 x 128
baselines, 128 x 64 outputs as in the demo. One run = one JSON
(``benchmarks/results/diffx_demo_speed.json``).

Usage: ``python benchmarks/diffx_demo_speed.py [--n 40] [--steps 20 14 10 8]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import write_json

SEED = 5101


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--steps", type=int, nargs="+", default=[20, 14, 10, 8])
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from fracsurv import pretrained
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.metrics.images import ms_ssim

    frame = make_spine_cohort(args.n, image_shape=(256, 128), random_state=SEED, dicom=False,
                              n_followups=0).frame
    rows, images = [], {}
    for steps in args.steps:
        gen = pretrained.load("diffx", horizons=(10,), n_seeds=2, output_shape=(128, 64),
                              n_inference_steps=steps, random_state=0)
        t0 = time.perf_counter()
        out = gen.transform(frame)
        seconds = time.perf_counter() - t0
        imgs = np.stack([np.stack(f) for f in out["future_images"]])  # (n, seeds, H, W)
        images[steps] = imgs
        rows.append({"n_inference_steps": steps, "seconds": seconds,
                     "seconds_per_patient": seconds / len(frame)})
        print(rows[-1], flush=True)
    ref = images[max(args.steps)]
    seed_to_seed = ms_ssim(list(ref[:, 0]), list(ref[:, 1]))
    for r in rows:
        imgs = images[r["n_inference_steps"]]
        vs = np.concatenate([ms_ssim(list(imgs[:, s]), list(ref[:, s])) for s in range(2)])
        r["ms_ssim_vs_reference_mean"] = float(np.mean(vs))
        r["ms_ssim_vs_reference_min"] = float(np.min(vs))
        r["mean_intensity_abs_diff_vs_reference"] = float(np.mean(np.abs(
            imgs.mean(axis=(2, 3)) - ref.mean(axis=(2, 3)))))
    summary = {"seed_to_seed_ms_ssim_mean": float(np.mean(seed_to_seed)),
               "seed_to_seed_ms_ssim_min": float(np.min(seed_to_seed)),
               "seed_to_seed_mean_intensity_abs_diff": float(np.mean(np.abs(
                   ref[:, 0].mean(axis=(1, 2)) - ref[:, 1].mean(axis=(1, 2)))))}
    print(summary)
    write_json("diffx_demo_speed", {"settings": {**vars(args), "cohort_seed": SEED,
                                                 "baseline_shape": [256, 128],
                                                 "output_shape": [128, 64], "n_seeds": 2,
                                                 "horizons": [10]},
                                    "runs": rows, "summary": summary}, args.out)


if __name__ == "__main__":
    main()
