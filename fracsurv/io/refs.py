"""Images by reference: the content-addressed cache every image transformer shares.

An *image reference* is a plain ``str`` path to a ``.npy`` file (float16, 2-D
``(H, W)`` or 3-D ``(C, H, W)``) inside an :class:`ImageCache`. Frames stay small
and picklable, ``GridSearchCV`` can index them freely, and image models stream
batches from disk. In-memory ``numpy`` arrays are accepted everywhere a
reference is (for notebooks and tests).

Cache file names are SHA-256 hashes of the content and parameters, never of a
patient identifier.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from fracsurv._atomic import atomic_open, atomic_write_text, remove_orphans

__all__ = ["ImageCache", "hash_parts", "is_missing", "iter_cell", "load_image"]

_RASTER_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def hash_parts(*parts: Any) -> str:
    """Return a SHA-256 hex digest over ``parts``.

    ``bytes`` are hashed as is, arrays by dtype, shape and buffer, everything
    else by ``repr``. Used for cache keys: the key covers content *and* every
    parameter that changes the output.
    """
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, bytes | bytearray | memoryview):
            h.update(b"b")
            h.update(bytes(part))
        elif isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            h.update(f"a{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
        else:
            h.update(b"r")
            h.update(repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


class ImageCache:
    """A directory of float16 ``.npy`` arrays addressed by hash.

    Parameters
    ----------
    cache_dir : str or Path
        Root folder; created on first write.

    Notes
    -----
    Writes are atomic (temporary file in the same folder, then ``os.replace``),
    so an interrupted run never leaves a half-written entry and a re-run simply
    finds the entries that were completed.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)

    def remove_orphans(self, max_age_s: float = 3600.0) -> int:
        """Delete temporaries older than ``max_age_s`` left by killed writers; returns the count."""
        return remove_orphans(self.cache_dir, "*/*.tmp", max_age_s)

    def path_for(self, key: str) -> Path:
        """Path of the entry with hex ``key`` (two-level fan-out)."""
        return self.cache_dir / key[:2] / f"{key}.npy"

    def __contains__(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def put(self, array: np.ndarray, key: str | None = None) -> str:
        """Store ``array`` (as float16) and return its reference.

        Parameters
        ----------
        array : ndarray
            2-D or 3-D image.
        key : str, optional
            Precomputed key (e.g. from the source file and parameters). Defaults
            to the hash of the array content.
        """
        arr = np.asarray(array, dtype=np.float16)
        key = key or hash_parts(arr)
        path = self.path_for(key)
        if path.is_file():
            return str(path)
        with atomic_open(path, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
        return str(path)

    def put_meta(self, key: str, meta: dict[str, Any]) -> None:
        """Store a JSON sidecar for ``key`` (atomic, like :meth:`put`)."""
        path = self.path_for(key).with_suffix(".json")
        atomic_write_text(path, json.dumps(meta))

    def get_meta(self, key: str) -> dict[str, Any] | None:
        """The JSON sidecar of ``key``, if any."""
        path = self.path_for(key).with_suffix(".json")
        return json.loads(path.read_text()) if path.is_file() else None

    def get(self, key: str) -> str | None:
        """Reference for ``key`` if cached, else ``None``."""
        path = self.path_for(key)
        return str(path) if path.is_file() else None


def is_missing(obj: Any) -> bool:
    """True for ``None`` and float NaN (a row whose image failed to load)."""
    return obj is None or (isinstance(obj, float) and np.isnan(obj))


def iter_cell(cell: Any) -> list[Any]:
    """Items of a frame cell: a single image/reference, or a list/tuple of them.

    A 2-D/3-D array counts as one image; a list, tuple or 1-D object array as
    several. Missing cells give an empty list.
    """
    if is_missing(cell):
        return []
    if isinstance(cell, np.ndarray) and cell.dtype != object:
        return [cell]
    if isinstance(cell, list | tuple) or (isinstance(cell, np.ndarray) and cell.dtype == object):
        return [c for c in cell if not is_missing(c)]
    return [cell]


def load_image(obj: Any, dtype: Any = np.float32) -> np.ndarray:
    """Load one image from an array, a cache reference or an image file.

    Parameters
    ----------
    obj : ndarray, str or Path
        An array (returned as ``dtype``), a ``.npy`` reference, a PNG/TIFF/JPEG
        file, or a DICOM file (decoded with default loader settings).
    dtype : numpy dtype
        Output dtype.

    Returns
    -------
    ndarray
    """
    if isinstance(obj, np.ndarray):
        return obj.astype(dtype, copy=False)
    if not isinstance(obj, str | os.PathLike):
        raise TypeError(f"expected an array or a path, got {type(obj).__name__}")
    path = Path(obj)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False).astype(dtype, copy=False)
    if suffix in _RASTER_SUFFIXES:
        from skimage import io as skio

        img = skio.imread(path)
        if img.ndim == 3:  # RGB(A) raster -> luminance
            from skimage.color import rgb2gray

            img = rgb2gray(img[..., :3])
        return np.asarray(img).astype(dtype, copy=False)
    from fracsurv.io.dicom import read_dicom  # a DICOM file

    return read_dicom(path).astype(dtype, copy=False)


def load_images(cells: Iterable[Any], dtype: Any = np.float32) -> list[list[np.ndarray]]:
    """Load every image of every cell (lists of arrays, one list per cell)."""
    return [[load_image(c, dtype) for c in iter_cell(cell)] for cell in cells]
