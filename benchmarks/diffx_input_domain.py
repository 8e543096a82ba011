"""Does the shipped DiffX generator need its inputs without CLAHE? One fresh cohort, three inputs.

The generator was trained on the simulator's un-equalised images; the other shipped
models on CLAHE images read by ``DicomLoader``. For fresh patients (cohort seed 5301,
never used by any training) the generator makes each patient's image at the real
follow-up's age from (a) the simulator's arrays, (b) the DICOM files read with CLAHE
(what the demo did before), (c) the DICOM files read without CLAHE (what it does
now); each is compared (MS-SSIM at the generator's resolution) with the real
follow-up in the same domain, next to the copy-the-baseline control.

Run: ``python benchmarks/diffx_input_domain.py [--n-patients 16] [--seed 5301] [--out F]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from _common import write_json


def main() -> None:
    from fracsurv import pretrained
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.io import DicomLoader, load_image
    from fracsurv.metrics.images import ms_ssim
    from fracsurv.nn.data import antialiased_resize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-patients", type=int, default=16)
    ap.add_argument("--seed", type=int, default=5301)
    ap.add_argument("--steps", type=int, default=10, help="DDIM steps (the demo's 10)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    shape = (512, 256)
    gen = pretrained.load("diffx", horizons=("last",), n_seeds=1, cache_dir=None,
                          n_inference_steps=args.steps, random_state=0)
    size = tuple(gen.input_shape)
    gen.set_params(output_shape=size)  # compared at the generator's own resolution
    folder = tempfile.mkdtemp(prefix="diffx-domain-")
    cohort = make_spine_cohort(args.n_patients, image_shape=shape, n_followups=1,
                               random_state=args.seed, dicom=True, out_dir=folder)
    files = cohort.frame.dropna(subset=["followup_age"]).reset_index(drop=True)
    arrays = make_spine_cohort(args.n_patients, image_shape=shape, n_followups=1,
                               random_state=args.seed, dicom=False).frame
    arrays = arrays.dropna(subset=["followup_age"]).reset_index(drop=True)

    def read(clahe: bool):
        loader = DicomLoader(output_shape=shape, clahe=clahe, clahe_backend="skimage")
        frame = files.copy()
        frame["image"] = loader.fit_transform(files[["image"]])["image"].to_numpy()
        frame["followup_image"] = loader.transform(
            files[["followup_image"]].rename(columns={"followup_image": "image"}))["image"].to_numpy()
        return frame

    rows = {}
    for name, frame in (("simulator arrays (training domain)", arrays),
                        ("DICOM with CLAHE (the demo before)", read(True)),
                        ("DICOM without CLAHE (the demo now)", read(False))):
        out = gen.transform(frame)

        def small(cells):
            return antialiased_resize([load_image(c) for c in cells], size)

        generated = [load_image(f[0]) for f in out["future_images"]]
        real, base = small(out["followup_image"]), small(out["image"])
        g, c = ms_ssim(generated, real), ms_ssim(base, real)
        rows[name] = {"generated_vs_real_followup_ms_ssim": float(np.mean(g)),
                      "copy_baseline_vs_real_followup_ms_ssim": float(np.mean(c)),
                      "per_patient_generated": np.round(g, 4).tolist()}
        print(f"{name}: generated {np.mean(g):.3f}, copy baseline {np.mean(c):.3f}", flush=True)
    write_json("diffx_input_domain", {
        "settings": {"n_patients": len(files), "cohort_seed": args.seed, "image_shape": list(shape),
                     "generator": "pretrained diffx", "horizon": "last (the real follow-up's age)",
                     "n_inference_steps": args.steps, "n_seeds": 1, "random_state": 0,
                     "clahe_backend": "skimage"},
        "timings_s": {"total": time.perf_counter() - t0}, "table": rows,
    }, args.out)


if __name__ == "__main__":
    main()
