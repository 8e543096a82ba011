"""DiffXGenerator's full preset on a GPU: training steps/s, peak memory, generation time.

Trains every stage (autoencoder, LDM-1, LDM-2) of ``DiffXGenerator(preset="full")``
for a short fixed number of optimiser steps on synthetic-cohort radiographs at
512 x 512 in bf16 autocast, then times one patient's generation (4 horizons x 10
seeds, DDIM inversion included; median of 3 after a warm-up). Writes one JSON.

``--dry-run`` runs the same code path on the CPU with the ``tiny`` preset and 2
steps per stage, so that the script is tested in the default suite and does not
rot between the rare sessions that have a GPU. Called by ``gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from typing import Any

import numpy as np
import torch
from _common import write_json

from fracsurv.datasets import make_spine_cohort
from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator


class _TimedGenerator(DiffXGenerator):
    """Records the wall time of each training stage."""

    def _train_stage(self, stage: str, *args: Any, **kwargs: Any) -> list[float]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = super()._train_stage(stage, *args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.stage_seconds_ = {**getattr(self, "stage_seconds_", {}),
                               stage: time.perf_counter() - t0}
        return losses


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny preset, 2 steps")
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per stage")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/)")
    args = ap.parse_args()
    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device visible to torch; use --dry-run on a CPU")
    preset = "tiny" if dry else "full"
    steps = 2 if dry else int(args.steps)
    gen = _TimedGenerator(**DIFFX_PRESETS[preset], device=device, precision="32" if dry else "bf16",
                          random_state=0)
    batch = int(gen.get_params()["batch_size"])
    shape = tuple(gen._input_shape())
    # baseline + follow-up of each patient are training images: steps * batch images
    n_patients = math.ceil(steps * batch / 2)
    t0 = time.perf_counter()
    cohort = make_spine_cohort(n_patients, image_shape=shape, random_state=0, dicom=False,
                               n_followups=1, n_jobs=-1)
    data_s = time.perf_counter() - t0
    gen.set_params(ae_epochs=1, ldm_epochs=1, output_shape=shape)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    gen.fit(cohort.frame)
    fit_s = time.perf_counter() - t0
    train_peak = _peak_memory_mb(device)
    per_stage = {s: {"steps": steps, "seconds": sec, "steps_per_s": steps / sec}
                 for s, sec in gen.stage_seconds_.items()}

    row = cohort.frame.iloc[0]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(2 if dry else 4):
        gen._inversions = {}
        if device == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        out = gen.generate(row["image"], row["age"], row["sex"], [1, 5, 10, 12], seeds=range(10))
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t1)
    out = np.asarray(out)
    write_json("gpu_check_dry_run" if dry else "gpu_check", {
        "dry_run": dry, "device": device, "preset": preset, "input_shape": list(shape),
        "precision": gen.get_params()["precision"], "batch_size": batch,
        "n_training_images": 2 * n_patients, "data_s": data_s, "fit_s": fit_s,
        "training": per_stage, "training_peak_memory_mb": train_peak,
        "generation": {"images": int(np.prod(out.shape[:-2])), "output_shape": list(out.shape),
                       "seconds_per_run": times, "seconds_per_patient": float(np.median(
                           times[1:])), "peak_memory_mb": _peak_memory_mb(device),
                       "finite": bool(np.isfinite(out).all()),
                       "n_inference_steps": gen.get_params()["n_inference_steps"]},
    }, out=args.out)


if __name__ == "__main__":
    main()
