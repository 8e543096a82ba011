"""The one serializer: JSON encoding, the allow-listed class import, safetensors I/O.

A leaf module (it imports nothing from fracsurv), used by both the torch base
(:mod:`fracsurv.nn.base`) and pipeline persistence (:mod:`fracsurv.persist`), so
neither imports the other for its encoding.

Parameters are encoded with tuples tagged (``{"__tuple__": [...]}``) so that a
loaded estimator gets back exactly the parameters it was saved with; fitted
metadata (:func:`to_json`) keeps JSON's plain lists.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MACHINE_PARAMS", "REFUSED_PARAMS", "ModelFormatError", "checked_params", "from_json",
           "import_allowed_class", "json_value", "params_json", "read_arrays", "read_json",
           "require", "to_json", "trusted_estimator_types", "versions", "write_arrays"]


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


class ModelFormatError(ValueError):
    """A saved model folder that is broken or unsafe; the message names the file and problem."""


#: Constructor parameters never accepted from a saved folder: they could make
#: loading (or a later ``fit``) read pickles or re-enter loading with other rights.
REFUSED_PARAMS = ("allow_pickle", "memory")
#: Parameters that name places on the machine that saved a model; never followed on load.
MACHINE_PARAMS = ("cache_dir", "checkpoint_dir")


@functools.lru_cache(maxsize=1)
def trusted_estimator_types() -> dict[str, type]:
    """The estimator classes a saved folder may name, by ``module.Name``.

    These are fracsurv's public estimators (the classes of ``fracsurv.__all__``
    that are scikit-learn estimators). Classes of scikit-learn and
    scikit-survival are checked by :func:`import_allowed_class` instead (any
    ``BaseEstimator`` subclass defined there).
    """
    from sklearn.base import BaseEstimator

    import fracsurv

    out = {}
    for name, module in fracsurv._EXPORTS.items():
        obj = getattr(importlib.import_module(module), name)
        if isinstance(obj, type) and issubclass(obj, BaseEstimator):
            out[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return out


def import_allowed_class(qualname: Any, packages: tuple[str, ...], where: str = "",
                         base: type | None = None) -> type:
    """The estimator class ``module.Name`` if a saved folder may instantiate it.

    Allowed are fracsurv's public estimators (:func:`trusted_estimator_types`)
    and ``BaseEstimator`` subclasses defined in the other packages of
    ``packages`` (scikit-learn, scikit-survival). Functions, other callables,
    re-exported names and classes of any other package are refused, so a
    folder can never make loading call code such as ``load_pipeline``.

    Parameters
    ----------
    qualname : str
        ``module.Name`` as written in the folder.
    packages : tuple of str
        Top-level packages allowed for this format.
    where : str
        The file that named the class (for the error message).
    base : type, optional
        A class the result must also subclass (e.g. the torch estimator base).

    Raises
    ------
    ModelFormatError
        Naming ``where`` and the refused name.
    """
    from sklearn.base import BaseEstimator

    def refuse(why: str) -> ModelFormatError:
        return ModelFormatError(f"{where}: refusing to instantiate {qualname!r}: {why}")

    if not isinstance(qualname, str) or "." not in qualname:
        raise refuse("not a module.Name class path")
    mod, _, name = qualname.rpartition(".")
    top = mod.split(".")[0]
    if top not in packages:
        raise refuse(f"not from {packages}")
    if top == "fracsurv":
        cls = trusted_estimator_types().get(qualname)
        if cls is None:
            raise refuse("not one of fracsurv's public estimators")
    else:
        try:
            cls = getattr(importlib.import_module(mod), name)
        except (ImportError, AttributeError):
            raise refuse("no such class") from None
        if not (isinstance(cls, type) and issubclass(cls, BaseEstimator)
                and f"{cls.__module__}.{cls.__qualname__}" == qualname):
            raise refuse("not an estimator class defined there")
    if base is not None and not issubclass(cls, base):
        raise refuse(f"not a {base.__name__}")
    return cls


def checked_params(params: Any, cls: type, where: str) -> dict[str, Any]:
    """Decoded constructor parameters of ``cls``, refusing the dangerous ones.

    Raises
    ------
    ModelFormatError
        For parameters that are not a dict, unknown to ``cls``, or in
        :data:`REFUSED_PARAMS` with a value other than the default off state.
    """
    import inspect

    if not isinstance(params, dict):
        raise ModelFormatError(f"{where}: 'params' must be an object, got {type(params).__name__}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    out = {}
    for key, value in params.items():
        if key not in accepted:
            raise ModelFormatError(f"{where}: {cls.__name__} has no parameter {key!r}")
        if key in REFUSED_PARAMS and value not in (None, False):
            raise ModelFormatError(f"{where}: parameter {key!r} cannot be set from a saved "
                                   "folder (it could make loading read pickles)")
        out[key] = from_json(value)
    return out


def read_json(path: Path) -> Any:
    """JSON content of ``path``; a :class:`ModelFormatError` naming it when missing or broken."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: broken JSON ({exc})") from None


def require(mapping: Any, key: str, where: Path | str) -> Any:
    """``mapping[key]``; a :class:`ModelFormatError` naming ``where`` when absent."""
    if not isinstance(mapping, dict) or key not in mapping:
        raise ModelFormatError(f"{where}: missing key {key!r}")
    return mapping[key]


def write_arrays(arrays: dict[str, np.ndarray], path: str | Path) -> None:
    """Write named numpy arrays as one safetensors file (no pickle)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Named numpy arrays of a safetensors file written by :func:`write_arrays`.

    Raises
    ------
    ModelFormatError
        Naming the file when it is missing, truncated or not safetensors.
    """
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise ModelFormatError(f"{path}: missing")
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for bad files
        raise ModelFormatError(f"{path}: unreadable weights, truncated or not safetensors "
                               f"({type(exc).__name__}: {exc})") from None


def versions() -> dict[str, Any]:
    """Versions of fracsurv, its model libraries and the synthetic-cohort generator.

    Read from package metadata, so recording them imports nothing heavy.
    """
    from importlib.metadata import PackageNotFoundError, version

    import fracsurv

    out: dict[str, Any] = {"fracsurv": fracsurv.__version__}
    for dist in ("torch", "scikit-learn", "scikit-survival", "skorch", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    from fracsurv.datasets.spine import GENERATOR_VERSION

    out["generator"] = GENERATOR_VERSION
    return out
