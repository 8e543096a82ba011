"""``DicomLoader``: real DICOM (and PNG/TIFF/arrays) in, preprocessed images out, by reference."""

from __future__ import annotations

import hashlib
import logging
import os
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from fracsurv._base import FrameTransformerMixin, file_ref, map_ordered, row_label
from fracsurv.contract import DEFAULT_IMAGE_SHAPE
from fracsurv.io import dicomweb
from fracsurv.io.dicom import DicomLoadError, decode_dicom
from fracsurv.io.preprocess import geometry, preprocess
from fracsurv.io.refs import ImageCache, hash_parts, iter_cell, load_image

__all__ = ["DicomLoadError", "DicomLoader", "list_dicomdir"]

log = logging.getLogger("fracsurv.io")

META_COLUMNS = ("modality", "photometric", "spacing_mm", "rows", "cols", "manufacturer")
_RASTER = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_size(rows: int, cols: int, max_pixels: int | None) -> None:
    if max_pixels is not None and rows * cols > max_pixels:
        raise DicomLoadError(f"image of {rows} x {cols} pixels exceeds max_pixels={max_pixels} "
                             "(raise max_pixels if this is a genuine radiograph)")


def _decode(item: Any, voi: Any, max_pixels: int | None = None,
            web: tuple[float, int] = (30.0, 3)) -> tuple[np.ndarray, dict[str, Any]]:
    if dicomweb.is_dicomweb(item):
        ds = dicomweb.retrieve_dataset(item, *web)
        return decode_dicom(ds, voi, exact_range=False, max_pixels=max_pixels,
                            defer_scaling=True)
    if isinstance(item, np.ndarray):
        if item.ndim != 2:
            raise DicomLoadError(f"array images must be 2-D, got shape {item.shape}")
        _check_size(*item.shape, max_pixels)
        return item.astype(np.float32), {"modality": "", "photometric": "array",
                                         "spacing_mm": np.nan, "rows": item.shape[0],
                                         "cols": item.shape[1], "manufacturer": ""}
    path = Path(item)
    if not path.is_file():
        raise DicomLoadError("file not found")
    if path.suffix.lower() in _RASTER or path.suffix.lower() == ".npy":
        _check_size(*_raster_shape(path), max_pixels)
        try:
            img = load_image(path)
        except Exception as exc:
            raise DicomLoadError(f"unreadable image file ({type(exc).__name__})") from None
        return img, {"modality": "", "photometric": path.suffix.lower().lstrip("."),
                     "spacing_mm": np.nan, "rows": img.shape[0], "cols": img.shape[1],
                     "manufacturer": ""}
    # the range is min-max normalised later: the window's affine part and the
    # MONOCHROME1 inversion are left to that step (after the resize, on fewer pixels)
    return decode_dicom(path, voi, exact_range=False, max_pixels=max_pixels, defer_scaling=True)


def _raster_shape(path: Path) -> tuple[int, int]:
    """(rows, cols) from the file header, before any pixel is decoded."""
    if path.suffix.lower() == ".npy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except Exception as exc:
            raise DicomLoadError(f"unreadable image file ({type(exc).__name__})") from None
        return (int(shape[-2]), int(shape[-1])) if len(shape) >= 2 else (1, int(np.prod(shape)))
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as exc:
        raise DicomLoadError(f"unreadable image file ({type(exc).__name__})") from None
    return h, w


def _moved_keypoints(cell: Any, meta: dict[str, Any], loader: DicomLoader) -> Any:
    """A row's keypoint annotation in the output image's pixels (see :func:`geometry`)."""
    if not isinstance(cell, list | tuple) or not meta or not meta.get("rows"):
        return cell
    sy, sx, oy, ox = geometry(meta["rows"], meta["cols"], output_shape=loader.output_shape,
                              spacing_mm=meta.get("spacing_mm") or float("nan"),
                              target_spacing=loader.target_spacing)
    out = []
    for v in cell:
        if isinstance(v, dict) and "points" in v:
            p = np.asarray(v["points"], float)
            moved = np.stack([(p[..., 0] + .5) * sx - .5 + ox, (p[..., 1] + .5) * sy - .5 + oy], -1)
            v = {**v, "points": moved.tolist()}
        out.append(v)
    return out


class DicomLoader(FrameTransformerMixin, TransformerMixin, BaseEstimator):
    """Decode and preprocess the radiographs of a frame; hand them on by reference.

    Parameters
    ----------
    image_column : str, default="image"
        Column with DICOM/PNG/TIFF paths, DICOMweb references (instance, series
        or study URLs, see :mod:`fracsurv.io.dicomweb`), 2-D arrays, or lists
        of them per row. A series or study reference loads all its instances.
    output_shape : (int, int) or None, default=(1024, 512)
        Aspect-preserving resize and zero padding (the studies' 1024x512).
    voi : "auto", "none" or (center, width), default="auto"
        VOI LUT / window handling (see :func:`fracsurv.io.dicom.decode_dicom`).
    target_spacing : float, optional
        Resample to this pixel spacing (mm) first, when the file has one.
    clahe : bool, default=True
        Contrast-limited adaptive histogram equalisation.
    clahe_clip_limit : float, default=0.01
    clahe_kernel_size : int, optional
    clahe_backend : {"opencv", "skimage"}, default="opencv"
        OpenCV's CLAHE (fast) or scikit-image's (the studies' implementation,
        on which the shipped pretrained models were trained); they agree to a
        mean absolute 0.01 (see :func:`fracsurv.io.preprocess.equalize_clahe`).
    normalize : {"minmax", "zscore", "none"}, default="minmax"
    cache_dir : path, optional
        Content-addressed cache (float16 ``.npy``). ``None`` keeps arrays in memory.
        The key covers the file content and every parameter above; an entry that
        exists is reused, so an interrupted run resumes.
    keypoints_column : str or None, default="keypoints"
        When X has this column (vertebra annotations in the pixels of the
        original files, see ``docs/data_contract.md``), its points are moved
        with the image: resampling, resizing and padding are applied to them,
        so a ``VertebraCropper`` downstream trains on the right targets.
    max_pixels : int or None, default=50_000_000
        Images with more pixels (rows x columns, read from the header before
        decoding) are refused with a per-row error: a small compressed file can
        otherwise decode to gigabytes. Radiographs have at most ~20 million.
    dicomweb_timeout : float, default=30
        Seconds to wait for a DICOMweb server (connect and each read).
    dicomweb_retries : int, default=3
        Retries of a failed DICOMweb request (connection errors, timeouts,
        HTTP 429/5xx), with exponential back-off.
    on_error : {"raise", "skip"}, default="raise"
        ``"skip"``: failing rows get no image and a ``load_error`` message; the
        others are processed.
    n_jobs : int, optional
        joblib workers.
    verbose : int, default=0
        ``>0`` shows a progress bar.

    Notes
    -----
    Output columns: ``image`` (reference or array; a list when the input cell
    was a list), ``modality``, ``photometric``, ``spacing_mm``, ``rows``, ``cols``,
    ``manufacturer`` (of the row's first image) and, with ``on_error="skip"``,
    ``load_error``. No value of an identifying DICOM attribute is ever put in a
    file name, log record or error message.
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "image_column": [str],
        "output_shape": [tuple, list, None],
        "voi": [StrOptions({"auto", "none"}), tuple, list],
        "target_spacing": [Interval(Real, 0, None, closed="neither"), None],
        "clahe": ["boolean"],
        "clahe_clip_limit": [Interval(Real, 0, None, closed="neither")],
        "clahe_kernel_size": [Interval(Integral, 1, None, closed="left"), None],
        "clahe_backend": [StrOptions({"opencv", "skimage"})],
        "normalize": [StrOptions({"minmax", "zscore", "none"}), None],
        "cache_dir": [str, os.PathLike, None],
        "keypoints_column": [str, None],
        "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
        "dicomweb_timeout": [Interval(Real, 0, None, closed="neither")],
        "dicomweb_retries": [Interval(Integral, 0, None, closed="left")],
        "on_error": [StrOptions({"raise", "skip"})],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    }

    def __init__(self, image_column: str = "image", *, output_shape: tuple[int, int] | None = DEFAULT_IMAGE_SHAPE,
                 voi: Any = "auto", target_spacing: float | None = None, clahe: bool = True,
                 clahe_clip_limit: float = 0.01, clahe_kernel_size: int | None = None,
                 clahe_backend: str = "opencv", normalize: str = "minmax", cache_dir: str | None = None,
                 keypoints_column: str | None = "keypoints", max_pixels: int | None = 50_000_000,
                 dicomweb_timeout: float = 30.0, dicomweb_retries: int = 3,
                 on_error: str = "raise", n_jobs: int | None = None, verbose: int = 0) -> None:
        self.image_column = image_column
        self.output_shape = output_shape
        self.voi = voi
        self.target_spacing = target_spacing
        self.clahe = clahe
        self.clahe_clip_limit = clahe_clip_limit
        self.clahe_kernel_size = clahe_kernel_size
        self.clahe_backend = clahe_backend
        self.normalize = normalize
        self.cache_dir = cache_dir
        self.keypoints_column = keypoints_column
        self.max_pixels = max_pixels
        self.dicomweb_timeout = dicomweb_timeout
        self.dicomweb_retries = dicomweb_retries
        self.on_error = on_error
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.target_tags.required = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags

    def _check_voi(self) -> None:
        """The length of a ``(center, width)`` window, beyond its declared type."""
        if isinstance(self.voi, tuple | list) and len(self.voi) != 2:
            raise ValueError(f"voi must be 'auto', 'none' or (center, width), got {self.voi!r}")

    def fit(self, X: pd.DataFrame, y: Any = None) -> DicomLoader:
        """Validate parameters and the frame (stateless otherwise)."""
        self._validate_params()
        self._check_voi()
        self._check_frame(X)
        self.n_features_in_ = X.shape[1]
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        return self

    def _check_frame(self, X: Any) -> None:
        self._require_columns(X, [self.image_column], "DicomLoader")

    def _params_key(self) -> tuple[Any, ...]:
        return ("fracsurv.DicomLoader.v1", self.output_shape and tuple(self.output_shape),
                self.voi if isinstance(self.voi, str) else tuple(self.voi), self.target_spacing,
                self.clahe, self.clahe_clip_limit, self.clahe_kernel_size, self.normalize,
                *((self.clahe_backend,) if self.clahe and self.clahe_backend != "skimage" else ()))

    def _one(self, item: Any) -> tuple[Any, dict[str, Any]]:
        """Decode + preprocess + cache one image; returns (reference or array, meta)."""
        cache = ImageCache(self.cache_dir) if self.cache_dir else None
        key = None
        if cache is not None:
            if dicomweb.is_dicomweb(item):
                # an instance's content never changes under its SOP Instance UID
                content = ("dicomweb", item)
            else:
                content = item if isinstance(item, np.ndarray) else (
                    _file_digest(Path(item)) if Path(item).is_file() else None)
            if content is not None:
                key = hash_parts(content, *self._params_key())
                ref, meta = cache.get(key), cache.get_meta(key)
                if ref is not None and meta is not None:
                    return ref, meta
        img, meta = _decode(item, self.voi, self.max_pixels,
                            (self.dicomweb_timeout, self.dicomweb_retries))
        invert = bool(meta.get("invert", False))
        meta = {k: meta[k] for k in META_COLUMNS}
        out = preprocess(img, output_shape=self.output_shape, spacing_mm=meta["spacing_mm"],
                         target_spacing=self.target_spacing, clahe=self.clahe,
                         clahe_clip_limit=self.clahe_clip_limit,
                         clahe_kernel_size=self.clahe_kernel_size, normalize=self.normalize,
                         clahe_backend=self.clahe_backend, invert=invert)
        if cache is None:
            return out, meta
        cache.put_meta(key, {k: (None if isinstance(v, float) and np.isnan(v) else v)
                             for k, v in meta.items()})
        return cache.put(out, key), meta

    def _expand(self, items: list[Any]) -> list[Any]:
        """Series and study references replaced by their instances."""
        out: list[Any] = []
        for item in items:
            if dicomweb.is_dicomweb(item):
                out += dicomweb.expand_reference(item, self.dicomweb_timeout,
                                                 self.dicomweb_retries)
            else:
                out.append(item)
        return out

    def _row(self, cell: Any) -> tuple[Any, dict[str, Any] | None, str | None]:
        items = iter_cell(cell)
        if not items:
            return None, None, "no image in this row"
        refs, metas = [], []
        item: Any = items[0]
        try:
            items = self._expand(items)
            for item in items:
                ref, meta = self._one(item)
                refs.append(ref)
                metas.append(meta)
        except DicomLoadError as exc:
            if isinstance(item, np.ndarray):
                where = "an array"
            elif dicomweb.is_dicomweb(item):
                where = dicomweb.ref_label(item)  # UIDs are identifiers: never logged
            else:
                where = file_ref(item)
                log.debug("%s is %s", where, item)  # the path only at DEBUG level
            return None, None, f"{where}: {exc}"
        single = len(items) == 1 and not isinstance(cell, list | tuple) and not (
            isinstance(cell, np.ndarray) and cell.dtype == object)
        return (refs[0] if single else refs), metas[0], None

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Load every row's image(s); see the class notes for the columns added."""
        check_is_fitted(self, "n_features_in_")
        self._validate_params()
        self._check_voi()
        self._check_frame(X)
        cells = list(X[self.image_column])
        if self.cache_dir:
            ImageCache(self.cache_dir).remove_orphans()
        results = map_ordered(self._row, [(c,) for c in cells], self.n_jobs, desc="DicomLoader",
                              enabled=bool(self.verbose) or None)
        out = X.copy()
        images, errors = [], []
        meta_rows = []
        for pos, (ref, meta, err) in enumerate(results):
            if err is not None and self.on_error == "raise":
                raise DicomLoadError(f"{row_label(X, pos)}: {err}")
            images.append(ref)
            errors.append(err)
            meta_rows.append(meta or {})
        out[self.image_column] = pd.Series(images, index=X.index, dtype=object)
        for col in META_COLUMNS:
            out[col] = [m.get(col, np.nan if col == "spacing_mm" else None) for m in meta_rows]
        out["spacing_mm"] = pd.to_numeric(out["spacing_mm"], errors="coerce")
        kp = self.keypoints_column
        if kp and kp in X.columns:
            out[kp] = pd.Series([_moved_keypoints(c, m, self) for c, m in zip(X[kp], meta_rows)],
                                index=X.index, dtype=object)
        if self.on_error == "skip":
            out["load_error"] = pd.Series(errors, index=X.index, dtype=object)
            n_bad = sum(e is not None for e in errors)
            log.info("DicomLoader: %d rows loaded, %d failed (see load_error)",
                     len(errors) - n_bad, n_bad)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns plus the metadata (and ``load_error``) columns."""
        check_is_fitted(self, "n_features_in_")
        names = list(self.feature_names_in_)
        extra = [*META_COLUMNS, *(["load_error"] if self.on_error == "skip" else [])]
        return np.asarray(names + [c for c in extra if c not in names], dtype=object)


def list_dicomdir(folder: str | Path) -> pd.DataFrame:
    """Image files referenced by the DICOMDIR in ``folder``: one row per image.

    Columns: ``image`` (absolute path), ``series`` (an index within the DICOMDIR,
    not a UID) and ``instance``. An explicit helper: ``DicomLoader`` never reads a
    DICOMDIR on its own.
    """
    from pydicom import dcmread

    folder = Path(folder)
    path = folder / "DICOMDIR"
    if not path.is_file():
        raise FileNotFoundError(f"no DICOMDIR in {folder}")
    ds = dcmread(path)
    rows = []
    series = -1
    for rec in ds.DirectoryRecordSequence:
        kind = rec.DirectoryRecordType
        if kind == "SERIES":
            series += 1
        elif kind == "IMAGE" and "ReferencedFileID" in rec:
            parts = rec.ReferencedFileID
            parts = [parts] if isinstance(parts, str) else list(parts)
            rows.append({"image": str(folder.joinpath(*parts)), "series": series,
                         "instance": int(rec.get("InstanceNumber", len(rows)) or 0)})
    return pd.DataFrame(rows)


