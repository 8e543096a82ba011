"""Which Grad-CAM layer of the shipped crop pVF scorer looks at the vertebral bodies?

For each ResNet block of the shipped ``pvf-scorer``, on detected crops (the shipped
``vertebra-cropper``, ``DETECTED_CROPS``) of a validation cohort no model was
trained on (seed 4012; the demo's own cohort is where the chosen rule is then
reported): the share of each crop's Grad-CAM mass inside the vertebral body
(the outline of its six detected keypoints) against the body's share of the crop
area -- what a map blind to anatomy would put there -- for all crops and for the
crops the cropper grades fractured. The rule ``MIN_CAM_SIDE`` of
``fracsurv.nn.backbones`` was chosen on this table.

Run: ``python benchmarks/gradcam_layer.py [--n-patients 80] [--seed 4012] [--out F]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import write_json


def main() -> None:
    from fracsurv import pretrained
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.demo.explain import cam_body_share, cam_share_summary
    from fracsurv.nn.backbones import cam_layer_candidates, cam_map_sizes
    from fracsurv.pretrained.train import DETECTED_CROPS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-patients", type=int, default=80)
    ap.add_argument("--seed", type=int, default=4012)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    cohort = make_spine_cohort(args.n_patients, image_shape=(512, 256), n_followups=0,
                               random_state=args.seed, dicom=False)
    cropper = pretrained.load("vertebra-cropper", **DETECTED_CROPS)
    scorer = pretrained.load("pvf-scorer")
    X = cropper.transform(cohort.frame)
    stacker = cropper.stacker()
    layers = cam_layer_candidates(scorer.backbone)
    shares: dict[str, list] = {layer: [] for layer in layers}
    for _, row in X.iterrows():
        shape = np.shape(row["image"])[-2:]
        for layer in layers:
            maps = scorer.grad_cam([row["crops"]], layer=f"backbone.{layer}")
            shares[layer] += cam_body_share(stacker, shape, row["vertebrae"], maps)
    map_sides = cam_map_sizes(scorer.backbone, scorer.module_.backbone, tuple(scorer.input_shape))
    table = {}
    for layer, rows in shares.items():
        entry = {"map_size": list(map_sides[layer]), **cam_share_summary(rows)}
        table[layer] = entry
        print(f"{layer}: {entry['map_size']}  all {entry['all']['mass_in_body']:.3f} vs "
              f"{entry['all']['body_area_share']:.3f}  fractured (n={entry['fractured']['n_crops']}) "
              f"{entry['fractured']['mass_in_body']:.3f} vs {entry['fractured']['body_area_share']:.3f}",
              flush=True)
    write_json("gradcam_layer", {
        "settings": {"n_patients": args.n_patients, "cohort_seed": args.seed,
                     "image_shape": [512, 256], "crops": DETECTED_CROPS,
                     "models": ["vertebra-cropper", "pvf-scorer"],
                     "note": "Grad-CAM maps are zero for some crops (ReLU of a negative "
                             "weighted sum); those are left out, so n_crops differs by layer"},
        "default_layer_now": scorer.default_cam_layer(),
        "timings_s": {"total": time.perf_counter() - t0}, "table": table,
    }, args.out)


if __name__ == "__main__":
    main()
