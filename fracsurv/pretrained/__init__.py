"""Models fracsurv trained on its own synthetic cohort, shipped inside the package.

Each model lives in ``fracsurv/pretrained/models/<name>/``: ``config.json`` +
``weights.safetensors`` (the estimator's own ``save`` format, no pickle) and a model
card, ``card.json`` (machine-readable) and ``card.md`` (for people): how it was
trained (cohort generator version, seeds, n, resolution, epochs, wall time,
machine) and what it measured on cohorts whose seeds were never used for training
or model selection.

**These weights model the simulated cohort.** They show what the pipeline does and
give the demo trained image models; for real radiographs, train or fine-tune on
your own data (``docs/pretrained.md``).

>>> from fracsurv import pretrained
>>> pretrained.available()["name"].tolist()  # doctest: +SKIP
['diffx', 'vertebra-cropper']
>>> gen = pretrained.load("diffx")            # a fitted DiffXGenerator  # doctest: +SKIP
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["MODELS_DIR", "available", "card", "load", "model_path"]

#: Where the shipped models are.
MODELS_DIR = Path(__file__).resolve().parent / "models"


def _folder(models_dir: str | Path | None) -> Path:
    return MODELS_DIR if models_dir is None else Path(models_dir)


def _names(models_dir: str | Path | None = None) -> list[str]:
    folder = _folder(models_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "card.json").is_file())


def model_path(name: str, models_dir: str | Path | None = None) -> Path:
    """Folder of the model ``name``; a ``KeyError`` listing the names otherwise.

    ``models_dir``: a folder written by ``fracsurv train --out`` instead of the
    models shipped with the package.
    """
    names = _names(models_dir)
    if name not in names:
        where = "" if models_dir is None else f" in {models_dir}"
        raise KeyError(f"no pretrained model named {name!r}{where}; available: "
                       f"{', '.join(names) or 'none'}")
    return _folder(models_dir) / name


def card(name: str, models_dir: str | Path | None = None) -> dict[str, Any]:
    """The model card of ``name`` (``card.json``) as a dict."""
    return json.loads((model_path(name, models_dir) / "card.json").read_text())


def available(models_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per model: name, estimator, what it does, training and held-out facts.

    ``models_dir``: a folder written by ``fracsurv train`` (default: the shipped models).
    """
    rows = []
    folder = _folder(models_dir)
    for name in _names(models_dir):
        c = card(name, models_dir)
        t = c.get("training", {})
        rows.append({
            "name": name, "estimator": c.get("estimator"), "task": c.get("task"),
            "generator_version": c.get("generator_version"),
            "fracsurv_version": c.get("fracsurv_version"),
            "input_shape": tuple(c["input_shape"]) if c.get("input_shape") else None,
            "n_train": t.get("n_images", t.get("n_patients")), "train_seeds": t.get("seeds"),
            "heldout": c.get("heldout", {}).get("metrics"),
            "size_mb": round(sum(f.stat().st_size for f in (folder / name).iterdir())
                             / 2**20, 2),
        })
    return pd.DataFrame(rows)


def _check_versions(name: str, c: dict[str, Any]) -> None:
    import fracsurv
    from fracsurv.datasets.spine import GENERATOR_VERSION

    if c.get("generator_version") != GENERATOR_VERSION:
        warnings.warn(f"pretrained model {name!r} was trained on synthetic cohort generator "
                      f"v{c.get('generator_version')}, this fracsurv makes v{GENERATOR_VERSION}: "
                      "its held-out metrics may not hold; retrain with `fracsurv train`",
                      UserWarning, stacklevel=3)
    if c.get("fracsurv_version") != fracsurv.__version__:
        warnings.warn(f"pretrained model {name!r} was saved by fracsurv "
                      f"{c.get('fracsurv_version')}, this is {fracsurv.__version__}",
                      UserWarning, stacklevel=3)


def load(name: str, models_dir: str | Path | None = None, **params: Any) -> Any:
    """The fitted estimator of the shipped model ``name``, ready for ``transform``/``predict``.

    Parameters
    ----------
    name : str
        One of ``available()["name"]``.
    models_dir : path, optional
        A folder written by ``fracsurv train --out`` (your own or retrained
        models); default: the models shipped with the package.
    **params
        Passed to the estimator's ``set_params`` after loading (for example
        ``device="cuda"``, ``cache_dir=...`` or sampling settings); they do not
        change the weights.

    Warns
    -----
    UserWarning
        When the model was trained on another version of the synthetic-cohort
        generator or saved by another fracsurv version.
    """
    from fracsurv.nn.base import load_model

    path = model_path(name, models_dir)
    c = card(name, models_dir)
    _check_versions(name, c)
    est = load_model(path)
    if params:
        est.set_params(**params)
    return est
