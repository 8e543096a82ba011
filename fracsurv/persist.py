"""Save and load fitted pipelines so that they are safe to share.

Each step is written in the safest form it allows:

1. fracsurv torch estimators: their own ``save`` (safetensors weights + JSON).
2. Any other estimator whose parameters are JSON values and whose fitted
   attributes (names ending in ``_``) are numbers, strings, lists, dicts or
   numpy arrays: JSON + safetensors, rebuilt on load with ``set_params``-style
   construction. Only classes from an allow-list of packages are instantiated.
3. Anything else (e.g. a fitted scikit-survival forest) is pickled with joblib,
   and :func:`load_pipeline` refuses to unpickle it unless the caller passes
   ``allow_pickle=True`` — unpickling runs code from the file, so only do that
   for files you made or trust.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline

from fracsurv._serial import from_json, import_allowed_class, json_value, read_arrays, write_arrays

__all__ = ["load_pipeline", "save_pipeline"]

_ALLOWED_PACKAGES = ("fracsurv", "sklearn", "sksurv")


def _plain_state(est: BaseEstimator) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
    """JSON params/attributes and arrays of ``est``, or None if it needs pickle."""
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


def save_pipeline(pipe: Pipeline | BaseEstimator, path: str | Path) -> Path:
    """Save a fitted pipeline (or one estimator) under ``path``.

    Returns
    -------
    Path
        The folder written; ``manifest.json`` lists each step and its format.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    steps = pipe.steps if isinstance(pipe, Pipeline) else [("estimator", pipe)]
    manifest: dict[str, Any] = {"pipeline": isinstance(pipe, Pipeline), "steps": []}
    for i, (name, est) in enumerate(steps):
        folder = path / f"{i:02d}_{name}"
        cls = f"{type(est).__module__}.{type(est).__qualname__}"
        entry = {"name": name, "class": cls, "folder": folder.name}
        if est in (None, "passthrough"):
            entry.update(format="passthrough", **{"class": None})
        elif hasattr(est, "save") and hasattr(est, "module_"):
            est.save(folder)
            entry["format"] = "torch"
        elif (state := _plain_state(est)) is not None:
            folder.mkdir(exist_ok=True)
            meta, arrays = state
            (folder / "state.json").write_text(json.dumps(meta, indent=2))
            if arrays:
                write_arrays(arrays, folder / "arrays.safetensors")
            entry["format"] = "json"
        else:
            import joblib

            folder.mkdir(exist_ok=True)
            joblib.dump(est, folder / "estimator.joblib")
            entry["format"] = "pickle"
        manifest["steps"].append(entry)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


def load_pipeline(path: str | Path, *, allow_pickle: bool = False) -> Any:
    """Load what :func:`save_pipeline` wrote.

    Parameters
    ----------
    path : str or Path
        Folder with ``manifest.json``.
    allow_pickle : bool, default=False
        Steps that could only be pickled are refused unless this is True.
        Unpickling executes code from the file: only allow it for trusted files.
    """
    from fracsurv.nn.base import load_model  # torch is imported only when needed

    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    steps = []
    for entry in manifest["steps"]:
        folder = path / entry["folder"]
        fmt = entry["format"]
        if fmt == "passthrough":
            est: Any = "passthrough"
        elif fmt == "torch":
            est = load_model(folder)
        elif fmt == "json":
            cls = import_allowed_class(entry["class"], _ALLOWED_PACKAGES)
            meta = json.loads((folder / "state.json").read_text())
            est = cls(**from_json(meta["params"]))
            for k, v in meta["attributes"].items():
                setattr(est, k, from_json(v))
            if (folder / "arrays.safetensors").is_file():
                for k, v in read_arrays(folder / "arrays.safetensors").items():
                    setattr(est, k, v)
            if "feature_names_in_" in meta["attributes"]:
                est.feature_names_in_ = np.asarray(meta["attributes"]["feature_names_in_"],
                                                   dtype=object)
        elif fmt == "pickle":
            if not allow_pickle:
                raise ValueError(
                    f"step {entry['name']!r} ({entry['class']}) was saved with pickle; "
                    "loading it runs code from the file. Pass allow_pickle=True only if you "
                    "trust where this model came from."
                )
            import joblib

            est = joblib.load(folder / "estimator.joblib")
        else:
            raise ValueError(f"unknown step format {fmt!r} in {path / 'manifest.json'}")
        steps.append((entry["name"], est))
    return Pipeline(steps) if manifest["pipeline"] else steps[0][1]
