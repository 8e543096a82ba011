"""The one serializer: JSON encoding, the allow-listed class import, safetensors I/O.

A leaf module (it imports nothing from fracsurv), used by both the torch base
(:mod:`fracsurv.nn.base`) and pipeline persistence (:mod:`fracsurv.persist`), so
neither imports the other for its encoding.

Parameters are encoded with tuples tagged (``{"__tuple__": [...]}``) so that a
loaded estimator gets back exactly the parameters it was saved with; fitted
metadata (:func:`to_json`) keeps JSON's plain lists.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["from_json", "import_allowed_class", "json_value", "params_json", "read_arrays",
           "to_json", "write_arrays"]


def json_value(value: Any) -> tuple[bool, Any]:
    """``(ok, JSON form)`` of a plain value; tuples are tagged to come back as tuples.

    Parameters
    ----------
    value : Any
        None, bool, number, string, numpy scalar, or a tuple / list / str-keyed
        dict of them.

    Returns
    -------
    ok : bool
        False when ``value`` holds anything else (the JSON form is then None).
    encoded : Any
    """
    if value is None or isinstance(value, bool | int | float | str):
        return True, value
    if isinstance(value, np.generic):
        return True, value.item()
    if isinstance(value, tuple | list):
        parts = [json_value(v) for v in value]
        if all(ok for ok, _ in parts):
            items = [v for _, v in parts]
            return True, {"__tuple__": items} if isinstance(value, tuple) else items
        return False, None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        parts_d = {k: json_value(v) for k, v in value.items()}
        if all(ok for ok, _ in parts_d.values()):
            return True, {k: v for k, (_, v) in parts_d.items()}
    return False, None


def from_json(value: Any) -> Any:
    """Inverse of :func:`json_value`: ``{"__tuple__": [...]}`` back to a tuple."""
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(from_json(v) for v in value["__tuple__"])
        return {k: from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json(v) for v in value]
    return value


def params_json(params: dict[str, Any]) -> dict[str, Any]:
    """Constructor parameters in the tuple-tagged form of :func:`json_value`.

    Raises
    ------
    TypeError
        Naming the first parameter that is not a JSON value.
    """
    encoded = {}
    for name, value in params.items():
        ok, encoded[name] = json_value(value)
        if not ok:
            raise TypeError(f"parameter {name!r} of type {type(value).__name__} cannot be "
                            "saved as JSON")
    return encoded


def to_json(value: Any) -> Any:
    """Plain JSON copy of fitted metadata (tuples become lists, keys strings).

    Raises
    ------
    TypeError
        If a value is not a number, string, None, list, tuple or dict.
    """
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"a value of type {type(value).__name__} cannot be saved as JSON")


def import_allowed_class(qualname: str, packages: tuple[str, ...]) -> type:
    """The class ``module.Name`` when its top-level package is in ``packages``.

    Raises
    ------
    ValueError
        For a class from any other package: loading never imports foreign code.
    """
    mod, _, name = qualname.rpartition(".")
    if mod.split(".")[0] not in packages:
        raise ValueError(f"refusing to instantiate {qualname!r}: not from {packages}")
    return getattr(importlib.import_module(mod), name)


def write_arrays(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write named numpy arrays as one safetensors file (no pickle)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Named numpy arrays of a safetensors file written by :func:`write_arrays`."""
    from safetensors.numpy import load_file

    return load_file(str(path))
