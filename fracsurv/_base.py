"""Validation helpers shared by every estimator.

Error messages name the problem and the first bad row, so a user with a
10,000-row table can find it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DEPRECATED", "FrameTransformerMixin", "append_columns", "appended_feature_names",
           "check_features",
           "check_survival_y", "derive_seed", "file_ref", "map_ordered", "parallel", "renamed_attribute", "renamed_param", "row_label",
           "survival_arrays", "warn_duplicate_ids"]


def appended_feature_names(names: Any, added: Any) -> np.ndarray:
    """``get_feature_names_out`` of a transformer that appends (or replaces) ``added``.

    The input names less any of ``added``, then ``added`` in order: what
    ``transform`` returns when it drops old copies of its columns and appends them.
    """
    added = list(added)
    return np.asarray([*[c for c in names if c not in added], *added], dtype=object)


def append_columns(X: pd.DataFrame, columns: dict[str, Any]) -> pd.DataFrame:
    """``X`` less any old copies of ``columns``, then ``columns`` in order.

    The one way fracsurv's frame transformers add their outputs, so that their
    ``get_feature_names_out`` is :func:`appended_feature_names` of the same names.
    A list becomes an object column indexed like ``X`` (one cell per row, whatever
    it holds); a Series, Categorical or array is assigned as it is.
    """
    out = X.drop(columns=[c for c in columns if c in X.columns])
    for name, values in columns.items():
        out[name] = pd.Series(values, index=X.index, dtype=object) if isinstance(values, list) else values
    return out


#: Default of a renamed parameter's former name: "not given".
DEPRECATED = "deprecated"


def renamed_param(est: Any, new: str, old: str, *, warn: bool = False) -> Any:
    """The value of parameter ``new``, or of its former name ``old`` when that was given.

    scikit-learn's deprecation of a renamed parameter: the old name stays a
    parameter defaulting to ``"deprecated"``; given, it takes precedence and
    (with ``warn``, at ``fit``) a ``FutureWarning`` names the new one.
    """
    value = getattr(est, old)
    if isinstance(value, str) and value == DEPRECATED:
        return getattr(est, new)
    if warn:
        warnings.warn(f"{type(est).__name__}'s {old!r} is deprecated and will be removed in a "
                      f"future version; use {new!r}", FutureWarning, stacklevel=3)
    return value


class renamed_attribute:
    """A deprecated, read-only former name of fitted attribute ``new``.

    ``alpha_ = renamed_attribute("clinical_weight_")`` in a class body: reading
    ``est.alpha_`` warns with a ``FutureWarning`` naming the new attribute and
    returns its value (an unfitted estimator has neither: ``AttributeError``).
    """

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        value = getattr(obj, self.new)
        warnings.warn(f"{type(obj).__name__}'s {self.old!r} is deprecated and will be removed "
                      f"in a future version; use {self.new!r}", FutureWarning, stacklevel=2)
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        raise AttributeError(f"{self.old!r} is a read-only deprecated alias of {self.new!r}")


def derive_seed(random_state: Any) -> int:
    """A seed in ``[0, 2**31 - 1)`` drawn from ``random_state`` (int, RandomState or None).

    The one way fracsurv turns a ``random_state`` parameter into the integer seed
    of another generator (torch, MONAI, a validation split); ``None`` draws fresh
    entropy. A RandomState is drawn from (and advanced), as scikit-learn does.
    """
    from sklearn.utils import check_random_state

    return int(check_random_state(random_state).randint(0, 2**31 - 1))


class FrameTransformerMixin:
    """Tags and column checks shared by the transformers that take a pandas frame.

    They add columns to the frame they are given, so their
    input is a DataFrame, not a 2-D numeric array, and they need no target.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.input_tags.two_d_array = False
        tags.target_tags.required = False
        return tags

    @staticmethod
    def _require_columns(X: Any, columns: list[str], owner: str) -> None:
        """Raise a clear error unless ``X`` is a DataFrame holding ``columns``."""
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"{owner} expects a pandas DataFrame, got {type(X).__name__}")
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise ValueError(f"X has no column {missing[0]!r} (columns: {list(X.columns)[:10]})")
        warn_duplicate_ids(X, owner)


def warn_duplicate_ids(X: pd.DataFrame, owner: str) -> None:
    """Warn when ``patient_id`` repeats: rows are then not patients (splits, C-index, counts)."""
    if "patient_id" in X.columns and X["patient_id"].duplicated().any():
        n = int(X["patient_id"].duplicated().sum())
        warnings.warn(f"{owner}: {n} rows repeat a patient_id that occurs earlier in X; each "
                      "row is treated as a separate patient", UserWarning, stacklevel=3)


def parallel(n_jobs: int | None, return_as: str = "list") -> Any:
    """``joblib.Parallel`` whose loky workers exit after a short idle time.

    joblib keeps idle loky workers for 300 s; when the parent process is killed
    (SIGKILL, an out-of-memory kill) they would linger that long holding their
    memory. fracsurv's workers exit after ``$FRACSURV_WORKER_IDLE_S`` seconds
    (default 30) without work instead. Another backend chosen with
    ``joblib.parallel_config`` (e.g. dask) is used unchanged.
    """
    import os

    from joblib import Parallel
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    kwargs = {}
    if type(backend).__name__ == "LokyBackend":
        kwargs["idle_worker_timeout"] = float(os.environ.get("FRACSURV_WORKER_IDLE_S", 30))
    return Parallel(n_jobs=n_jobs, return_as=return_as, **kwargs)


def _min_parallel_s() -> float:
    import os

    return float(os.environ.get("FRACSURV_MIN_PARALLEL_S", 5.0))


def map_ordered(fn: Any, items: Sequence[tuple[Any, ...]], n_jobs: int | None, desc: str = "",
                enabled: bool | None = None) -> list[Any]:
    """``[fn(*args) for args in items]``, on joblib workers when that pays.

    The first item runs in this process and is timed. With joblib's default
    (loky) backend the rest go to workers only when their estimated sequential
    run time exceeds ``$FRACSURV_MIN_PARALLEL_S`` (default 5 s): starting two
    workers and importing fracsurv in them costs ~2-3 s, so short jobs ran
    3x slower with ``n_jobs=2`` than with 1 (``benchmarks/dicom_loading.py``).
    Another backend (e.g. dask via ``joblib.parallel_config``) is always used.
    Results keep the order of ``items``; a progress bar is shown as in
    :func:`fracsurv._progress.progress`.
    """
    import time

    from joblib import delayed, effective_n_jobs
    from joblib.parallel import get_active_backend

    from fracsurv._progress import progress

    items = list(items)

    def run() -> Any:
        if not items:
            return
        t0 = time.perf_counter()
        yield fn(*items[0])
        rest = items[1:]
        loky = type(get_active_backend()[0]).__name__ == "LokyBackend"
        seconds = (time.perf_counter() - t0) * len(rest)
        if not rest or effective_n_jobs(n_jobs) <= 1 or (loky and seconds < _min_parallel_s()):
            for args in rest:
                yield fn(*args)
        else:
            yield from parallel(n_jobs, return_as="generator")(delayed(fn)(*a) for a in rest)

    return list(progress(run(), total=len(items), desc=desc, enabled=enabled))


def file_ref(path: Any) -> str:
    """How messages and outputs name a file: a short hash of its path, never the path.

    File names of exported radiographs often contain patient names; the row's
    ``patient_id`` and this hash identify the file without them (the path itself
    is logged at DEBUG level only).
    """
    import hashlib

    return "file #" + hashlib.sha256(str(path).encode("utf-8", "surrogateescape")).hexdigest()[:10]


def row_label(X: Any, pos: int) -> str:
    """Human-readable name of row ``pos``: its index label for frames, else its position."""
    if isinstance(X, pd.DataFrame | pd.Series):
        label = X.index[pos]
        label = label.item() if isinstance(label, np.generic) else label  # 3, not np.int64(3)
        return f"row {label!r} (position {pos})"
    return f"row {pos}"


def check_features(X: Any) -> None:
    """Raise ``ValueError`` naming the first row with a NaN/inf or non-numeric feature.

    Runs before scikit-learn's own validation, whose messages do not say where.
    """
    import scipy.sparse as sp

    if sp.issparse(X):
        raise TypeError("sparse input is not supported: pass a dense array or DataFrame")
    if isinstance(X, pd.DataFrame):
        bad_cols = [c for c in X.columns if not (pd.api.types.is_numeric_dtype(X[c])
                                                 or pd.api.types.is_bool_dtype(X[c]))]
        if bad_cols:
            col = bad_cols[0]
            for pos, v in enumerate(X[col].to_numpy()):
                try:
                    float(v)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"non-numeric feature: column {col!r}, {row_label(X, pos)} holds "
                        f"a value of type {type(v).__name__}; encode it first "
                        "(e.g. with a ColumnTransformer)"
                    ) from None
        values = X.to_numpy(dtype=float, na_value=np.nan)
        columns = list(X.columns)
    else:
        arr = np.asarray(X)
        if arr.dtype.kind not in "biuf":
            try:
                arr = arr.astype(float)
            except (TypeError, ValueError):
                return  # scikit-learn's validation raises its standard error
        values = arr if arr.ndim == 2 else arr.reshape(len(arr), -1)
        columns = list(range(values.shape[1])) if values.ndim == 2 else []
    if values.size and not np.isfinite(values).all():
        r, c = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(
            f"X contains NaN or infinity: {row_label(X, int(r))}, column {columns[c]!r}"
        )


def check_survival_y(y: Any, n_samples: int | None = None) -> np.ndarray:
    """Validate a scikit-survival structured target and return it.

    Parameters
    ----------
    y : structured ndarray
        Two fields: a boolean event indicator, then a float time
        (``sksurv.util.Surv.from_arrays(event, time)``).
    n_samples : int, optional
        Expected length.

    Raises
    ------
    ValueError
        If y is not a structured (event, time) array, has the wrong length,
        non-positive or NaN times (naming the first bad row), or no events.
    """
    if y is None:
        raise ValueError("this estimator requires y to be passed, but the target y is None")
    if not isinstance(y, np.ndarray) or y.dtype.names is None or len(y.dtype.names) != 2:
        raise ValueError(
            "y must be a structured array with two fields (event: bool, time: float), "
            "e.g. sksurv.util.Surv.from_arrays(event, time); got "
            f"{type(y).__name__}{'' if not hasattr(y, 'dtype') else ' of dtype ' + str(y.dtype)}"
        )
    ev_name, t_name = y.dtype.names
    if y.dtype[ev_name].kind != "b":
        raise ValueError(f"the first field of y ({ev_name!r}) must be a boolean event indicator")
    if y.dtype[t_name].kind not in "iuf":
        raise ValueError(f"the second field of y ({t_name!r}) must hold numeric times")
    if n_samples is not None and y.shape[0] != n_samples:
        raise ValueError(f"y has {y.shape[0]} rows but X has {n_samples}")
    time = y[t_name].astype(float)
    bad = np.flatnonzero(~np.isfinite(time) | (time <= 0))
    if bad.size:
        raise ValueError(
            f"survival times must be positive and finite: row {bad[0]} has time {float(time[bad[0]])}"
        )
    if not y[ev_name].any():
        raise ValueError("y contains no events: a Cox model cannot be fitted to all-censored data")
    return y


def survival_arrays(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(event: bool, time: float64)`` from a structured survival array."""
    ev_name, t_name = y.dtype.names
    return y[ev_name].astype(bool), y[t_name].astype(np.float64)
