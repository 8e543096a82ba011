"""DicomLoader throughput and memory, against the bare decode + resize, in one run.

* speed: RG1-sized radiographs (NEMA RG1, 1955 x 1841, 15-bit, from pydicom-data), each
  copy made distinct by one pixel so the cache cannot short-cut: DicomLoader (decode +
  LUT + resize + CLAHE + cache write; OpenCV's CLAHE, the default, and scikit-image's)
  vs ``pydicom.dcmread(f).pixel_array`` + the same resize (scikit-image, anti-aliased,
  to the aspect-preserving box the loader resizes to), both single-process;
* workers: DicomLoader with n_jobs=1 and n_jobs=2 on the same 120 1024 x 512 files
  (with the default ``FRACSURV_MIN_PARALLEL_S`` and with it 0, i.e. workers forced);
  each path is run once on an extra file before it is timed (imports, first calls);
* memory: peak RSS of a child process loading N = 100 and N = 400 distinct 1024 x 512
  DICOMs (written beforehand by another process) into a cache (must not grow with N).

Targets (issues 22, 24): loader <= 1.3 x bare; n_jobs=2 not slower than n_jobs=1;
peak RSS independent of N.

Usage: ``python benchmarks/dicom_loading.py [--n-speed 20] [--n-rss 100 400]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import write_json


def _copies(src: str, folder: Path, n: int) -> list[str]:
    import pydicom

    ds = pydicom.dcmread(src)
    arr = ds.pixel_array.copy()
    paths = []
    for i in range(n):
        a = arr.copy()
        a.flat[i] = (int(a.flat[i]) + 1) % 2**ds.BitsStored
        ds.PixelData = a.tobytes()
        p = folder / f"img{i:05d}.dcm"
        ds.save_as(p)
        paths.append(str(p))
    return paths


def _median_runs(fns: dict[str, Any], repeats: int) -> dict[str, list[float]]:
    """Seconds of every function, run ``repeats`` times in turn (interleaved)."""
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for rep in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(rep)
            runs[name].append(time.perf_counter() - t0)
    return runs


def speed(n: int, shape: tuple[int, int], repeats: int) -> dict[str, Any]:
    import pandas as pd
    import pydicom
    from pydicom.data import get_testdata_file
    from skimage.transform import resize

    from fracsurv.io import DicomLoader
    from fracsurv.io.preprocess import _fit_box

    with tempfile.TemporaryDirectory() as tmp:
        warm, *files = _copies(get_testdata_file("RG1_UNCR.dcm"), Path(tmp), n + 1)
        # the loader's own target: the aspect-preserving box inside ``shape``
        ds = pydicom.dcmread(warm)
        box = _fit_box(int(ds.Rows), int(ds.Columns), shape)[:2]

        def bare(rep: int) -> None:
            for f in files:
                px = pydicom.dcmread(f).pixel_array.astype(np.float32)
                resize(px, box, order=1, anti_aliasing=True, preserve_range=True)

        frame = pd.DataFrame({"image": files})
        configs = {"loader": {}, "loader_skimage_clahe": {"clahe_backend": "skimage"},
                   "loader_without_clahe": {"clahe": False}}

        def run(name: str, rep: int) -> None:  # a cold cache every time
            DicomLoader(output_shape=shape, cache_dir=str(Path(tmp) / f"{name}{rep}"),
                        **configs[name]).fit_transform(frame)

        bare(-1)  # imports and first-call costs, before any timing
        for name in configs:
            run(name, -1)
        fns = {"bare": bare, **{k: (lambda rep, k=k: run(k, rep)) for k in configs}}
        runs = _median_runs(fns, repeats)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    out: dict[str, Any] = {"n": n, "repeats": repeats, "seconds_per_repeat": runs,
                           "bare_images_per_s": n / med["bare"]}
    for name in configs:
        out[f"{name}_images_per_s"] = n / med[name]
        out[f"{name}_over_bare"] = med[name] / med["bare"]
    return out


def workers(folder: str, repeats: int, n: int = 120) -> dict[str, Any]:
    """Seconds for DicomLoader with n_jobs=1 and 2 on the same ``n`` files (cold caches)."""
    import pandas as pd

    from fracsurv.io import DicomLoader

    frame = pd.DataFrame({"image": sorted(str(p) for p in Path(folder).glob("*.dcm"))[:n]})
    configs = {"n_jobs_1": (1, None), "n_jobs_2": (2, None),
               "n_jobs_2_workers_forced": (2, "0")}
    with tempfile.TemporaryDirectory() as tmp:
        def run(label: str, rep: int) -> None:
            n_jobs, env = configs[label]
            if env is not None:
                os.environ["FRACSURV_MIN_PARALLEL_S"] = env
            try:
                DicomLoader(output_shape=(1024, 512), cache_dir=f"{tmp}/{label}{rep}",
                            n_jobs=n_jobs).fit_transform(frame)
            finally:
                os.environ.pop("FRACSURV_MIN_PARALLEL_S", None)

        runs = _median_runs({k: (lambda rep, k=k: run(k, rep)) for k in configs}, repeats)
    med = {k: float(np.median(v)) for k, v in runs.items()}
    out: dict[str, Any] = {"n_files": len(frame), "repeats": repeats, "seconds_per_repeat": runs,
                           **{f"{k}_s": v for k, v in med.items()}}
    out["n_jobs_2_over_1"] = med["n_jobs_2"] / med["n_jobs_1"]
    out["n_jobs_2_workers_forced_over_1"] = med["n_jobs_2_workers_forced"] / med["n_jobs_1"]
    return out


_CHILD = """
import sys, resource, tempfile, numpy as np, pandas as pd, pydicom
from pathlib import Path
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from fracsurv.io import DicomLoader
n = int(sys.argv[1]); tmp = Path(sys.argv[2])
frame = pd.DataFrame({'image': sorted(str(p) for p in tmp.glob('*.dcm'))[:n]})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
DicomLoader(output_shape=(1024, 512), cache_dir=str(tmp / f'cache{n}')).fit_transform(frame)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

_MAKE = """
import sys, numpy as np
from pathlib import Path
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
n = int(sys.argv[1]); tmp = Path(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    ds = Dataset(); ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = '1.2.840.10008.5.1.4.1.1.1'
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID; ds.Modality = 'CR'
    ds.Rows, ds.Columns = 1024, 512; ds.BitsAllocated = 16; ds.BitsStored = 12; ds.HighBit = 11
    ds.SamplesPerPixel = 1; ds.PhotometricInterpretation = 'MONOCHROME2'; ds.PixelRepresentation = 0
    ds.PixelData = rng.integers(0, 4096, (1024, 512), dtype=np.uint16).tobytes()
    ds.save_as(tmp / f'{i:05d}.dcm', enforce_file_format=True)
"""


def rss(n: int, folder: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), folder], capture_output=True,
                         text=True, check=True).stdout.split()
    before, peak = (int(v) / 1024 for v in out[-2:])
    return {"n_files": n, "peak_rss_mb": peak, "rss_before_loading_mb": before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n-speed", type=int, default=20)
    p.add_argument("--n-rss", type=int, nargs="*", default=[100, 400])
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration "
                   "(interleaved; medians reported)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    s = speed(args.n_speed, (1024, 512), args.repeats)
    print(s, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", _MAKE, str(max(args.n_rss)), tmp], check=True)
        r = [rss(n, tmp) for n in args.n_rss]
        w = workers(tmp, args.repeats)
    print(r, w, flush=True)
    summary = {"speed_target_met": s["loader_over_bare"] <= 1.3,
               "n_jobs_target_met": w["n_jobs_2_over_1"] <= 1.0,
               "rss_growth_mb": r[-1]["peak_rss_mb"] - r[0]["peak_rss_mb"]}
    write_json("dicom_loading", {"settings": vars(args), "speed": s, "rss": r, "workers": w,
                                 "summary": summary}, args.out)


if __name__ == "__main__":
    main()
