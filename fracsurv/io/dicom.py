"""Decoding DICOM radiographs into float images with bone bright.

Reading order, following DICOM PS3.3 C.11: stored values -> Modality LUT (or
rescale slope/intercept) -> VOI LUT or window -> MONOCHROME1 inversion.

Documented choices for unusual objects:

* multi-frame images: the **first frame** is used;
* RGB / YBR colour images: converted to **luminance** (ITU-R BT.601 weights);
* objects without pixel data (structured reports, RT structures, ...): a
  :class:`DicomLoadError`.

Error messages never contain values of identifying attributes: any such value
that occurs in a message is replaced by ``<redacted>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["IDENTIFYING_KEYWORDS", "DicomLoadError", "decode_dicom", "read_dicom"]

# Attributes whose values must never reach a file name, log line, report or message.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "OtherPatientNames",
    "AccessionNumber", "InstitutionName", "InstitutionAddress", "ReferringPhysicianName",
    "PerformingPhysicianName", "OperatorsName", "StudyID", "StudyInstanceUID",
    "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID", "FrameOfReferenceUID",
    "PatientAddress", "PatientTelephoneNumbers", "StationName", "DeviceSerialNumber",
)


class DicomLoadError(ValueError):
    """A file or array that cannot be turned into an image (names row and problem)."""


def _identifiers(ds: Any) -> list[str]:
    values = []
    for kw in IDENTIFYING_KEYWORDS:
        for container in (ds, getattr(ds, "file_meta", None)):
            if container is not None and kw in container:
                v = str(container[kw].value).strip()
                if len(v) >= 3:
                    values.append(v)
                    values.extend(p for p in v.split("^") if len(p) >= 3)
    return sorted(set(values), key=len, reverse=True)


def redact(message: str, ds: Any = None) -> str:
    """Remove identifying attribute values of ``ds`` from ``message``."""
    if ds is None:
        return message
    for v in _identifiers(ds):
        message = message.replace(v, "<redacted>")
    return message


def _luminance(arr: np.ndarray) -> np.ndarray:
    return arr[..., 0] * 0.299 + arr[..., 1] * 0.587 + arr[..., 2] * 0.114


def _window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    # Linear VOI function of DICOM PS3.3 C.11.2.1.2.1 to [0, 1]; a one-liner that
    # pydicom only offers for values stored in the dataset.
    if width <= 1:
        raise DicomLoadError(f"window width must be > 1, got {width}")
    out = np.array(arr, dtype=np.float32, copy=True)  # in place from here: 4 passes, 1 buffer
    out -= center - 0.5
    out *= 1.0 / (width - 1)
    out += 0.5
    return np.clip(out, 0.0, 1.0, out=out)


def decode_dicom(path: str | Path | Any, voi: str | tuple[float, float] = "auto",
                 exact_range: bool = True, max_pixels: int | None = None,
                 defer_scaling: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one DICOM file.

    Parameters
    ----------
    path : str, Path or pydicom.Dataset
        The file, or a dataset already read (e.g. retrieved over DICOMweb).
    voi : "auto", "none" or (center, width)
        ``"auto"`` applies the file's VOI LUT or first window when present;
        ``"none"`` keeps modality values; a pair applies that window.
    exact_range : bool, default=True
        Keep pydicom's output range for a stored LINEAR window. ``False`` applies
        the same linear window into [0, 1] in float32, several times faster on
        large radiographs; the result differs only by an affine rescaling, which
        the loader's min-max normalisation removes.
    max_pixels : int, optional
        Refuse images with more pixels (rows x columns x frames, from the header)
        before decoding them.
    defer_scaling : bool, default=False
        Leave the affine parts to a later min-max normalisation (which makes
        them redundant): a linear window only clips the modality values, and
        MONOCHROME1 is not inverted but flagged in ``meta["invert"]``. Min-max
        scaling the result (``(hi - x) / (hi - lo)`` when inverted) gives the
        min-max scaled image of the default path; the loader does it after
        resizing, on a quarter of the pixels.

    Returns
    -------
    image : float32 ndarray (H, W)
        Bone bright (MONOCHROME1 inverted).
    meta : dict
        Non-identifying metadata: ``modality``, ``photometric``, ``spacing_mm``,
        ``rows``, ``cols``, ``manufacturer``, ``bits_stored``, ``frames``.

    Raises
    ------
    DicomLoadError
        With a message that names the problem and contains no identifiers.
    """
    # 1. header (never an identifier in the message)
    from pydicom import Dataset

    ds = path if isinstance(path, Dataset) else _read_header(path)
    try:
        # 2. pixel data present, of an acceptable size, and decodable
        if max_pixels is not None and "Rows" in ds and "Columns" in ds:
            n = int(ds.Rows) * int(ds.Columns) * int(ds.get("NumberOfFrames", 1) or 1)
            if n > max_pixels:
                raise DicomLoadError(f"image of {int(ds.Rows)} x {int(ds.Columns)} pixels "
                                     f"exceeds max_pixels={max_pixels} (raise max_pixels if "
                                     "this is a genuine radiograph)")
        arr = _pixel_array(ds)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if frames > 1:
            arr = arr[0]  # documented choice: first frame
        # 3. grey values: luminance of colour images, else modality and VOI LUTs
        colour = int(ds.get("SamplesPerPixel", 1)) == 3 or arr.ndim == 3
        if colour:
            img = _luminance(arr.astype(np.float32))
        else:
            img = _apply_luts(arr, ds, voi, exact_range, clip_only=defer_scaling)
            # 4. bone bright
            if photometric == "MONOCHROME1" and not defer_scaling:
                own = img.dtype == np.float32 and not np.shares_memory(img, arr)
                img = np.subtract(img.max() + img.min(), img, out=img if own else None)
        # 5. non-identifying metadata
        meta = {
            "modality": str(ds.get("Modality", "")),
            "photometric": photometric,
            "spacing_mm": _spacing(ds),
            "rows": int(ds.Rows),
            "cols": int(ds.Columns),
            "manufacturer": str(ds.get("Manufacturer", "")),
            "bits_stored": int(ds.get("BitsStored", ds.BitsAllocated)),
            "frames": frames,
        }
        if defer_scaling:
            meta["invert"] = photometric == "MONOCHROME1" and not colour
        return img.astype(np.float32, copy=False), meta
    except DicomLoadError as exc:
        raise DicomLoadError(redact(str(exc), ds)) from None


def _read_header(path: str | Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            # Many real files lack the 128-byte preamble: read them anyway, but only
            # accept the result if it looks like a DICOM dataset.
            ds = pydicom.dcmread(path, force=True)
            if not any(kw in ds for kw in ("SOPClassUID", "Modality", "PixelData", "Rows")):
                raise InvalidDicomError("no DICOM elements") from None
            return ds
    except InvalidDicomError:
        raise DicomLoadError("not a DICOM file (no DICOM preamble/header)") from None
    except FileNotFoundError:
        raise DicomLoadError("file not found") from None
    except Exception as exc:  # truncated or corrupt header
        raise DicomLoadError(f"unreadable DICOM header ({type(exc).__name__})") from None


def _pixel_array(ds: Any) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        sop = ds.get("SOPClassUID")
        meta = getattr(ds, "file_meta", None)
        sop_name = str(getattr(sop if sop is not None else
                               (meta.get("MediaStorageSOPClassUID") if meta is not None else None),
                               "name", ""))
        if "Rows" in ds or "Image" in sop_name:
            raise DicomLoadError("truncated file: the header announces an image "
                                 f"({sop_name or 'Rows present'}) but the file ends before "
                                 "its pixel data")
        kind = getattr(sop, "name", "unknown SOP class") if sop is not None else "no SOP class"
        raise DicomLoadError(f"no pixel data: not an image object ({kind})")
    for kw in ("BitsAllocated", "Rows", "Columns"):
        if kw not in ds:
            raise DicomLoadError(f"missing {kw}: cannot interpret the pixel data")
    ts = ds.file_meta.get("TransferSyntaxUID", None) if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except NotImplementedError:
        name = getattr(ts, "name", str(ts))
        raise DicomLoadError(f"unsupported transfer syntax {name}: no decoder installed") from None
    except Exception as exc:
        if "less than expected" in str(exc):
            raise DicomLoadError("truncated file: the pixel data is shorter than the header "
                                 "announces") from None
        raise DicomLoadError(redact(f"pixel data cannot be decoded ({type(exc).__name__}: "
                                    f"{exc})", ds)) from None


def _clip_window(arr: np.ndarray, center: float, width: float) -> np.ndarray:
    """The clipping of :func:`_window` alone, in modality values (its affine part deferred)."""
    if width <= 1:
        raise DicomLoadError(f"window width must be > 1, got {width}")
    lo, hi = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    out = np.array(arr, dtype=np.float32, copy=True)
    return np.clip(out, lo, hi, out=out)


def _apply_luts(arr: np.ndarray, ds: Any, voi: str | tuple[float, float],
                exact_range: bool, clip_only: bool = False) -> np.ndarray:
    """Modality LUT, then the VOI the caller asked for (see :func:`decode_dicom`)."""
    window = _clip_window if clip_only else _window
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    img = apply_modality_lut(arr, ds)
    if voi == "auto" and "VOILUTSequence" in ds and np.issubdtype(img.dtype, np.floating) \
            and np.all(np.mod(img, 1) == 0):
        img = img.astype(np.int64)  # a VOI LUT lookup needs integer input
    linear = str(ds.get("VOILUTFunction", "LINEAR")).upper() == "LINEAR"
    if voi == "auto" and not exact_range and linear and "VOILUTSequence" not in ds \
            and "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = (float(v[0] if isinstance(v, list | tuple) or
                               getattr(v, "VM", 1) > 1 else v)
                         for v in (ds.WindowCenter, ds.WindowWidth))
        img = window(img, center, width)
    elif voi == "auto":
        if "VOILUTSequence" in ds or "WindowCenter" in ds:
            img = apply_voi_lut(img, ds, index=0)
    elif voi != "none":
        center, width = voi
        img = window(img, float(center), float(width))
    return np.asarray(img, dtype=np.float32)


def _spacing(ds: Any) -> float:
    """Pixel spacing (mm) from PixelSpacing or ImagerPixelSpacing; NaN when neither is usable."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        if kw in ds and ds[kw].value:
            try:
                value = float(ds[kw].value[0])
            except (TypeError, ValueError, IndexError):
                continue
            if value > 0:
                return value
    return float("nan")


def read_dicom(path: str | Path, voi: str | tuple[float, float] = "auto") -> np.ndarray:
    """Decoded image of ``path`` (see :func:`decode_dicom`), without metadata."""
    return decode_dicom(path, voi)[0]
