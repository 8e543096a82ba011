"""Image input/output: DICOM loading and the image-reference cache."""

from fracsurv.io.refs import ImageCache, hash_parts, iter_cell, load_image

__all__ = ["ImageCache", "hash_parts", "iter_cell", "load_image"]
