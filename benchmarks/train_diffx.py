"""Train the shipped CPU-scale DiffXGenerator on its own synthetic cohort.

Trains ``DIFFX_PRESETS["cpu"]`` on baseline + follow-up radiographs of a cohort
drawn with ``--seed`` (3501 by default: a seed used for nothing else), writing a
checkpoint after every epoch to ``--checkpoint-dir``, so a run that is killed
resumes where it stopped when started again with the same arguments. The fitted
model is saved (safetensors + JSON, no pickle) to ``--out``.

Run: ``nohup python benchmarks/train_diffx.py > diffx_train.log &``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(DIFFX_PRESETS))
    ap.add_argument("--n-patients", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=3501)
    ap.add_argument("--render-shape", type=int, nargs=2, default=(512, 256),
                    help="cohort rendering size (images are resized to the preset's)")
    ap.add_argument("--checkpoint-dir", default="benchmarks/.checkpoints")
    ap.add_argument("--out", default="benchmarks/models/diffx-cpu")
    args = ap.parse_args()

    t0 = time.perf_counter()
    cohort = make_spine_cohort(args.n_patients, image_shape=tuple(args.render_shape),
                               random_state=args.seed, dicom=False, n_jobs=2)
    t_data = time.perf_counter() - t0
    gen = DiffXGenerator(**DIFFX_PRESETS[args.preset], random_state=0, verbose=1,
                         checkpoint_dir=args.checkpoint_dir, device="cpu")
    t0 = time.perf_counter()
    gen.fit(cohort.frame)
    t_fit = time.perf_counter() - t0
    out = gen.save(args.out)
    record = {"preset": args.preset, "n_patients": args.n_patients, "cohort_seed": args.seed,
              "render_shape": list(args.render_shape), "n_train_images": gen.n_train_images_,
              "data_s": round(t_data, 1), "fit_s": round(t_fit, 1),
              "final_losses": {k: v[-1] for k, v in gen.loss_history_.items()},
              "loss_history": gen.loss_history_}
    (Path(out) / "training.json").write_text(json.dumps(record, indent=2))
    print(json.dumps({k: v for k, v in record.items() if k != "loss_history"}))


if __name__ == "__main__":
    main()
