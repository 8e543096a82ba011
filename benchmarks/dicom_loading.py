"""DicomLoader throughput and memory, against the bare decode + resize, in one run.

* speed: RG1-sized radiographs (NEMA RG1, 1955 x 1841, 15-bit, from pydicom-data), each
  copy made distinct by one pixel so the cache cannot short-cut: DicomLoader (decode +
  LUT + resize + CLAHE + cache write) vs ``pydicom.dcmread(f).pixel_array`` + the same
  resize, both single-process;
* memory: peak RSS of a child process loading N = 100 and N = 400 distinct 1024 x 512
  DICOMs (written beforehand by another process) into a cache (must not grow with N).

Targets (issue): loader <= 1.3 x bare; peak RSS independent of N.

Usage: ``python benchmarks/dicom_loading.py [--n-speed 20] [--n-rss 100 400]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def speed(n: int, shape: tuple[int, int]) -> dict[str, float]:
    import pandas as pd
    import pydicom
    from pydicom.data import get_testdata_file
    from skimage.transform import resize

    from fracsurv.io import DicomLoader

    with tempfile.TemporaryDirectory() as tmp:
        files = _copies(get_testdata_file("RG1_UNCR.dcm"), Path(tmp), n)
        t0 = time.perf_counter()
        for f in files:
            px = pydicom.dcmread(f).pixel_array.astype(np.float32)
            resize(px, shape, order=1, anti_aliasing=True, preserve_range=True)
        bare = time.perf_counter() - t0
        loader = DicomLoader(output_shape=shape, cache_dir=str(Path(tmp) / "cache"))
        frame = pd.DataFrame({"image": files})
        t0 = time.perf_counter()
        loader.fit_transform(frame)
        full = time.perf_counter() - t0
        no_clahe = DicomLoader(output_shape=shape, clahe=False, cache_dir=str(Path(tmp) / "c2"))
        t0 = time.perf_counter()
        no_clahe.fit_transform(frame)
        plain = time.perf_counter() - t0
    return {"n": n, "bare_images_per_s": n / bare, "loader_images_per_s": n / full,
            "loader_without_clahe_images_per_s": n / plain, "loader_over_bare": full / bare,
            "loader_without_clahe_over_bare": plain / bare}


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
    p.add_argument("--out", default=None)
    args = p.parse_args()
    s = speed(args.n_speed, (1024, 512))
    print(s, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-c", _MAKE, str(max(args.n_rss)), tmp], check=True)
        r = [rss(n, tmp) for n in args.n_rss]
    print(r, flush=True)
    summary = {"speed_target_met": s["loader_over_bare"] <= 1.3,
               "rss_growth_mb": r[-1]["peak_rss_mb"] - r[0]["peak_rss_mb"]}
    write_json("dicom_loading", {"settings": vars(args), "speed": s, "rss": r,
                                 "summary": summary}, args.out)


if __name__ == "__main__":
    main()
