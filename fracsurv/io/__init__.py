"""Image input/output: DICOM loading and the image-reference cache."""

from fracsurv.io.dicom import DicomLoadError, decode_dicom, read_dicom
from fracsurv.io.dicomweb import dicomweb_ref, list_dicomweb
from fracsurv.io.loader import DicomLoader, list_dicomdir
from fracsurv.io.refs import ImageCache, hash_parts, iter_cell, load_image

__all__ = ["DicomLoadError", "DicomLoader", "ImageCache", "decode_dicom", "dicomweb_ref",
           "hash_parts",
           "iter_cell", "list_dicomdir", "list_dicomweb", "load_image", "read_dicom"]
