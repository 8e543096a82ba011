"""Save and load fitted pipelines so that they are safe to share.

Each step is written in the safest form it allows:

1. fracsurv torch estimators: their own ``save`` (safetensors weights + JSON).
2. Any other estimator whose parameters are JSON values and whose fitted
   attributes (names ending in ``_``) are numbers, strings, lists, dicts or
   numpy arrays: JSON + safetensors, rebuilt on load by calling the class with
   its saved parameters.
3. Other scikit-learn objects (e.g. a ``ColumnTransformer``) that skops can
   write using only the types it trusts by default: skops (no pickle).
4. Anything else (e.g. a fitted scikit-survival forest) is pickled with joblib,
   with a warning at save time; :func:`load_pipeline` refuses to unpickle it
   unless the caller passes ``allow_pickle=True`` — unpickling runs code from
   the file, so only do that for files you made or trust.

What a folder can make :func:`load_pipeline` do is limited on purpose: only
estimator classes are instantiated (fracsurv's public estimators and
``BaseEstimator`` subclasses of scikit-learn / scikit-survival, never functions
or other callables), parameters that could read pickles or re-enter loading
(``allow_pickle``, ``memory``) are refused, step folders must be plain names
inside the model folder, and machine-specific paths (``cache_dir``,
``checkpoint_dir``) are never taken from a folder. See ``docs/persistence.md``.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from fracsurv._atomic import atomic_write_text
from fracsurv._serial import (
    MACHINE_PARAMS,
    ModelFormatError,
    checked_params,
    from_json,
    import_allowed_class,
    json_value,
    read_arrays,
    read_json,
    require,
    versions,
    write_arrays,
)

__all__ = ["FORMAT_VERSION", "ModelFormatError", "load_pipeline", "save_pipeline"]


#: Version of the folder layout written by :func:`save_pipeline`.
FORMAT_VERSION = 2

_ALLOWED_PACKAGES = ("fracsurv", "sklearn", "sksurv")
_FOLDER = re.compile(r"^[A-Za-z0-9_.-]+$")


def _plain_state(est: BaseEstimator) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """JSON params/attributes and arrays of ``est``, or None if it needs another format."""
    ok, params = json_value(est.get_params(deep=False))
    if not ok:
        return None
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in vars(est).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = np.ascontiguousarray(value)
            continue
        if isinstance(value, np.ndarray):  # e.g. feature_names_in_
            value = value.tolist()
        ok, jv = json_value(value)
        if not ok:
            return None
        meta[name] = jv
    return {"params": params, "attributes": meta}, arrays


def _skops_bytes(est: Any) -> bytes | None:
    """skops serialisation of ``est`` when it needs no type beyond skops' defaults."""
    try:
        import skops.io as sio

        data = sio.dumps(est)
        return data if not sio.get_untrusted_types(data=data) else None
    except Exception:  # skops cannot represent every object; pickle is the fallback
        return None


def save_pipeline(pipe: Pipeline | BaseEstimator, path: str | Path) -> Path:
    """Save a fitted pipeline (or one estimator) under ``path``.

    Returns
    -------
    Path
        The folder written; ``manifest.json`` lists each step, its format and the
        versions of fracsurv, torch, scikit-learn and the cohort generator.

    Warns
    -----
    UserWarning
        When a step has no safe format and is pickled: loading it will need
        ``allow_pickle=True``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    steps = pipe.steps if isinstance(pipe, Pipeline) else [("estimator", pipe)]
    manifest: dict[str, Any] = {"format_version": FORMAT_VERSION, "versions": versions(),
                                "pipeline": isinstance(pipe, Pipeline), "steps": []}
    for i, (name, est) in enumerate(steps):
        folder = path / f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        cls = f"{type(est).__module__}.{type(est).__qualname__}"
        entry = {"name": name, "class": cls, "folder": folder.name}
        if est is None or (isinstance(est, str) and est == "passthrough"):
            entry.update(format="passthrough", **{"class": None})
        elif hasattr(est, "save") and hasattr(est, "module_"):
            est.save(folder)
            entry["format"] = "torch"
        elif (state := _plain_state(est)) is not None:
            folder.mkdir(exist_ok=True)
            meta, arrays = state
            atomic_write_text(folder / "state.json", json.dumps(meta, indent=2))
            if arrays:
                write_arrays(arrays, folder / "arrays.safetensors")
            entry["format"] = "json"
        elif (data := _skops_bytes(est)) is not None:
            folder.mkdir(exist_ok=True)
            (folder / "estimator.skops").write_bytes(data)
            entry["format"] = "skops"
        else:
            import joblib

            warnings.warn(f"step {name!r} ({cls}) has no safe format and is pickled; loading "
                          "this model will need allow_pickle=True (only for people who trust "
                          "its source)", UserWarning, stacklevel=2)
            folder.mkdir(exist_ok=True)
            joblib.dump(est, folder / "estimator.joblib")
            entry["format"] = "pickle"
        manifest["steps"].append(entry)
    atomic_write_text(path / "manifest.json", json.dumps(manifest, indent=2))
    return path


def _step_folder(root: Path, entry: dict[str, Any], where: Path) -> Path:
    """The step's folder, which must be a plain name inside ``root``."""
    name = require(entry, "folder", where)
    if not isinstance(name, str) or not _FOLDER.match(name) or name in (".", ".."):
        raise ModelFormatError(f"{where}: step folder {name!r} is not a plain folder name "
                               "inside the model folder")
    folder = root / name
    if folder.resolve().parent != root.resolve():  # a symlink pointing elsewhere
        raise ModelFormatError(f"{where}: step folder {name!r} resolves outside the model folder")
    return folder


def check_versions(saved: Any, where: Path | str) -> None:
    """Warn when a folder was saved by another fracsurv (or generator) version."""
    if not isinstance(saved, dict):
        warnings.warn(f"{where}: no version record (written before folder format "
                      f"{FORMAT_VERSION}); check its results before relying on them", UserWarning,
                      stacklevel=3)
        return
    now = versions()
    for key in ("fracsurv", "generator"):
        if saved.get(key) != now[key]:
            warnings.warn(f"{where}: saved with {key} version {saved.get(key)}, this is "
                          f"{now[key]}; check its results before relying on them",
                          UserWarning, stacklevel=3)


#: Parameters added after models were saved whose new default changes results: a saved
#: step without the parameter keeps the behaviour it was fitted with.
LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "fracsurv.io.loader.DicomLoader": {"clahe_backend": "skimage"},
}


def _load_json_step(entry: dict[str, Any], folder: Path, where: Path) -> BaseEstimator:
    cls = import_allowed_class(require(entry, "class", where), _ALLOWED_PACKAGES, str(where))
    state_file = folder / "state.json"
    meta = read_json(state_file)
    params = checked_params(require(meta, "params", state_file), cls, str(state_file))
    for key in MACHINE_PARAMS:
        params.pop(key, None)
    for key, value in LEGACY_DEFAULTS.get(f"{cls.__module__}.{cls.__qualname__}", {}).items():
        params.setdefault(key, value)
    try:
        est = cls(**params)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{state_file}: parameters rejected by {cls.__name__} "
                               f"({exc})") from None
    attributes = require(meta, "attributes", state_file)
    if not isinstance(attributes, dict):
        raise ModelFormatError(f"{state_file}: 'attributes' must be an object")
    for k, v in attributes.items():
        if not (k.endswith("_") and k.isidentifier() and not k.startswith("_")):
            raise ModelFormatError(f"{state_file}: {k!r} is not a fitted attribute name")
        setattr(est, k, from_json(v))
    if (folder / "arrays.safetensors").is_file():
        for k, v in read_arrays(folder / "arrays.safetensors").items():
            if not (k.endswith("_") and k.isidentifier() and not k.startswith("_")):
                raise ModelFormatError(f"{folder / 'arrays.safetensors'}: {k!r} is not a "
                                       "fitted attribute name")
            setattr(est, k, v)
    if "feature_names_in_" in attributes:
        est.feature_names_in_ = np.asarray(attributes["feature_names_in_"], dtype=object)
    return est


def _load_skops_step(folder: Path, allow_pickle: bool) -> Any:
    import skops.io as sio

    file = folder / "estimator.skops"
    if not file.is_file():
        raise ModelFormatError(f"{file}: missing")
    try:
        untrusted = sio.get_untrusted_types(file=file)
        if untrusted and not allow_pickle:
            raise ModelFormatError(f"{file}: needs types skops does not trust by default "
                                   f"({', '.join(untrusted)}); pass allow_pickle=True only if "
                                   "you trust where this model came from")
        return sio.load(file, trusted=untrusted or None)
    except ModelFormatError:
        raise
    except Exception as exc:
        raise ModelFormatError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from None


def load_pipeline(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """Load what :func:`save_pipeline` wrote.

    Parameters
    ----------
    path : str or Path
        Folder with ``manifest.json``.
    allow_pickle : bool, default=False
        Steps that could only be pickled are refused unless this is True.
        Unpickling executes code from the file: only allow it for trusted files.
        Nothing inside the folder can turn this on.

    Raises
    ------
    ModelFormatError
        Naming the file and the problem: broken JSON, missing keys, truncated
        weights, a class or parameter a folder may not use, a folder outside
        the model folder, a newer format.

    Warns
    -----
    UserWarning
        When the folder was saved by another fracsurv or generator version.
    """
    from fracsurv.nn.base import load_model  # torch is imported only when needed

    path = Path(path)
    where = path / "manifest.json"
    manifest = read_json(where)
    fmt_version = manifest.get("format_version", 1) if isinstance(manifest, dict) else None
    if not isinstance(fmt_version, int) or fmt_version > FORMAT_VERSION:
        raise ModelFormatError(f"{where}: folder format {fmt_version!r} is newer than this "
                               f"fracsurv reads ({FORMAT_VERSION}); upgrade fracsurv")
    check_versions(manifest.get("versions"), where)
    entries = require(manifest, "steps", where)
    if not isinstance(entries, list) or not entries:
        raise ModelFormatError(f"{where}: 'steps' must be a non-empty list")
    steps = []
    for entry in entries:
        fmt = require(entry, "format", where)
        name = str(require(entry, "name", where))
        if fmt == "passthrough":
            steps.append((name, "passthrough"))
            continue
        folder = _step_folder(path, entry, where)
        if fmt == "torch":
            est: Any = load_model(folder, check_version=False)
            for key in MACHINE_PARAMS:
                if getattr(est, key, None) is not None:
                    est.set_params(**{key: None})
        elif fmt == "json":
            est = _load_json_step(entry, folder, where)
        elif fmt == "skops":
            est = _load_skops_step(folder, allow_pickle)
        elif fmt == "pickle":
            if not allow_pickle:
                raise ModelFormatError(
                    f"step {name!r} ({entry.get('class')}) was saved with pickle; loading it "
                    "runs code from the file. Pass allow_pickle=True only if you trust where "
                    "this model came from."
                )
            import joblib

            est = joblib.load(folder / "estimator.joblib")
        else:
            raise ModelFormatError(f"{where}: unknown step format {fmt!r}")
        steps.append((name, est))
    return Pipeline(steps) if manifest.get("pipeline") else steps[0][1]
