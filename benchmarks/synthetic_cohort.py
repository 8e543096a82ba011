"""Time to simulate the synthetic cohort: 500 patients x (baseline + 1 follow-up) at 1024x512.

Target (issue): <= 60 s on 2 cores. Measures in-memory generation (``n_jobs=1`` and
``2``) and, separately, generation with DICOM files written (JPEG 2000 for some
profiles), and checks determinism by hashing the arrays of two runs.

Usage: ``python benchmarks/synthetic_cohort.py [--n 500] [--shape 1024x512]``
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time

from _common import write_json

from fracsurv.datasets import make_spine_cohort


def _digest(bunch) -> str:
    h = hashlib.sha256()
    for img in bunch.frame["image"]:
        h.update(img.tobytes())
    h.update(bunch.frame.drop(columns=["image", "followup_image", "keypoints"]).to_csv().encode())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--shape", default="1024x512")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    shape = tuple(int(v) for v in args.shape.split("x"))
    rows = {}
    digests = []
    for n_jobs in (1, 2):
        t0 = time.perf_counter()
        b = make_spine_cohort(args.n, image_shape=shape, random_state=0, n_jobs=n_jobs)
        rows[f"in_memory_n_jobs_{n_jobs}_s"] = time.perf_counter() - t0
        digests.append(_digest(b))
        print(rows, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_spine_cohort(args.n, image_shape=shape, random_state=0, n_jobs=2, out_dir=tmp)
        rows["with_dicom_files_n_jobs_2_s"] = time.perf_counter() - t0
    images = 2 * args.n
    summary = {
        "images": images,
        "best_seconds": min(rows["in_memory_n_jobs_1_s"], rows["in_memory_n_jobs_2_s"]),
        "images_per_second": images / min(rows["in_memory_n_jobs_1_s"], rows["in_memory_n_jobs_2_s"]),
        "deterministic_across_n_jobs": digests[0] == digests[1],
        "target_seconds": 60,
    }
    summary["target_met"] = summary["best_seconds"] <= 60
    print(summary)
    write_json("synthetic_cohort", {"settings": vars(args), "timings": rows, "summary": summary},
               args.out)


if __name__ == "__main__":
    main()
