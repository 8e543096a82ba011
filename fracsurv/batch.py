"""Batch scoring of new patients with a saved pipeline (``fracsurv score``).

Scoring never loses a good row because of a bad one: a row whose image fails to
load, whose clinical values are not numbers, or that makes a step fail gets an
``error`` message and no risk, and every other row is scored. See
``docs/score.md`` for the inputs, the output columns and the exit codes.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from fracsurv._atomic import atomic_open
from fracsurv.persist import load_pipeline

__all__ = ["OUTPUT_COLUMNS", "UsageError", "score_frame", "score_patients"]

log = logging.getLogger("fracsurv.batch")

#: Columns copied to the output besides ``risk`` when the pipeline makes them;
#: never header-derived values.
OUTPUT_COLUMNS = ("pvf", "pvf_sd", "gpvf", "gpvf_sd", "risk_group", "n_vertebrae",
                  "n_fractures", "max_grade", "no_vertebra_found")
_IMAGE_SCORES = ("pvf", "gpvf")


class UsageError(ValueError):
    """Bad command-line input (exit code 2): the message says what to change."""


def _indexed(result: Any, index: pd.Index) -> pd.DataFrame | pd.Series:
    if isinstance(result, pd.DataFrame | pd.Series):
        return result
    arr = np.asarray(result)
    return pd.Series(arr, index=index) if arr.ndim == 1 else pd.DataFrame(arr, index=index)


def _row_safe(fn: Callable[[pd.DataFrame], Any], X: pd.DataFrame, errors: pd.Series,
              step: str) -> Any:
    """``fn(X)``; when it fails, run it row by row and record each failing row's error."""
    try:
        return _indexed(fn(X), X.index)
    except Exception as exc:
        if len(X) == 1:
            errors.loc[X.index[0]] = f"{step}: {type(exc).__name__}: {exc}"
            return None
    parts = [r for i in range(len(X)) if (r := _row_safe(fn, X.iloc[[i]], errors, step)) is not None]
    return pd.concat(parts) if parts else None


def _numeric_columns(pipe: Any, X: pd.DataFrame) -> list[str]:
    """Columns of ``X`` the pipeline reads as numbers (``SelectColumns`` or the final model)."""
    from fracsurv.preprocessing import SelectColumns

    steps = [s for _, s in getattr(pipe, "steps", [("model", pipe)])]
    cols = [c for s in steps if isinstance(s, SelectColumns) for c in s.columns]
    if not cols and hasattr(steps[-1], "feature_names_in_"):
        cols = [str(c) for c in steps[-1].feature_names_in_]
    return [c for c in dict.fromkeys(cols) if c in X.columns]


def _clinical_errors(X: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Per row: which required clinical value is missing or not a number (else None)."""
    errors = pd.Series(None, index=X.index, dtype=object)
    for col in columns:
        values = pd.to_numeric(X[col], errors="coerce").astype(float)
        bad = ~np.isfinite(values.to_numpy())
        for idx in X.index[bad & errors.isna().to_numpy()]:
            raw = X.at[idx, col]
            what = "missing" if pd.isna(raw) else f"not a number ({str(raw)[:20]!r})"
            errors.loc[idx] = f"clinical column {col!r} is {what}"
    return errors


def score_frame(pipe: Pipeline, X: pd.DataFrame) -> pd.DataFrame:
    """Run ``pipe`` on ``X`` row-safely: rows that fail get NaN risk and an ``error``.

    Rows whose required clinical values are missing or not numbers are set
    aside first; then every transformer step runs in turn. After a step that
    reports a ``load_error`` column (``DicomLoader(on_error="skip")``), the
    failed rows are set aside; a step that fails on the batch is rerun row by
    row so that only the rows that make it fail are lost.

    Returns
    -------
    DataFrame
        Indexed like ``X``: ``patient_id`` (when present), ``risk``, the columns
        of :data:`OUTPUT_COLUMNS` the pipeline produced, and ``error``.
    """
    steps = pipe.steps if isinstance(pipe, Pipeline) else [("model", pipe)]
    errors = _clinical_errors(X, _numeric_columns(pipe, X))
    Xt: Any = X.loc[errors.isna()]
    for name, step in steps[:-1]:
        if step in (None, "passthrough"):
            continue
        if Xt is None or not len(Xt):
            break
        Xt = _row_safe(step.transform, Xt, errors, name)
        if isinstance(Xt, pd.DataFrame) and "load_error" in Xt.columns:
            bad = Xt["load_error"].notna()
            errors.loc[Xt.index[bad]] = Xt.loc[bad, "load_error"]
            Xt = Xt.loc[~bad].drop(columns="load_error")
    out = pd.DataFrame(index=X.index)
    if "patient_id" in X.columns:
        out["patient_id"] = X["patient_id"]
    out["risk"] = float("nan")
    if Xt is not None and len(Xt):
        risk = _row_safe(steps[-1][1].predict, Xt, errors, steps[-1][0])
        if risk is not None:
            out.loc[risk.index, "risk"] = np.asarray(risk, dtype=float).ravel()
        if isinstance(Xt, pd.DataFrame):
            for col in OUTPUT_COLUMNS:
                if col in Xt.columns:
                    out[col] = Xt[col].reindex(out.index)
    out["error"] = errors
    return out


def _set_runtime(pipe: Any, cache_dir: str) -> None:
    """Skip bad images instead of raising; use this run's cache, never the model's."""
    for _, step in getattr(pipe, "steps", [("model", pipe)]):
        params = step.get_params(deep=False) if hasattr(step, "get_params") else {}
        if "on_error" in params:
            step.set_params(on_error="skip")
        if "cache_dir" in params:
            step.set_params(cache_dir=cache_dir)


def check_output_path(out: Path) -> None:
    """Refuse an output that cannot be written before any work starts (:class:`UsageError`)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'scores.csv'}")
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write-test", delete=True):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None


def read_clinical(path: Path) -> pd.DataFrame:
    """The clinical CSV, or a :class:`UsageError` that says why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--clinical {path}: no such file")
    try:
        X = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise UsageError(f"--clinical {path}: the file is empty (expected a header and rows)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UsageError(f"--clinical {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if X.empty:
        raise UsageError(f"--clinical {path}: header only, no patient rows")
    if "image" not in X.columns:
        raise UsageError(f"--clinical {path}: no 'image' column (file names relative to --images)")
    return X


def _summary(result: pd.DataFrame, X: pd.DataFrame) -> None:
    """Warnings a user must see: duplicates, rows without vertebrae, a constant image branch."""
    if "patient_id" in X.columns and X["patient_id"].duplicated().any():
        dup = X["patient_id"][X["patient_id"].duplicated()].unique()
        log.warning("warning: %d patient_id values occur more than once (e.g. %s); each row "
                    "is scored separately", len(dup), dup[0])
    if "no_vertebra_found" in result.columns:
        n = int(result["no_vertebra_found"].fillna(False).astype(bool).sum())
        if n:
            log.warning("warning: no vertebra was found in %d images (no_vertebra_found); their "
                        "image scores are a fallback, not a reading of the spine", n)
    ok = result["error"].isna()
    for col in _IMAGE_SCORES:
        if col in result.columns and ok.sum() >= 2 and result.loc[ok, col].nunique() <= 1:
            log.warning("warning: the image score %r is the same for every scored row: the "
                        "risks do not use the radiographs", col)


def _score_part(pipe: Pipeline, part: pd.DataFrame) -> pd.DataFrame:
    """One partition of a distributed scoring job (runs on a worker)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*patient_id.*more than once")
        return score_frame(pipe, part)


def _cell_resolver(one: Callable[[str], str]) -> Callable[[Any], Any]:
    """A cell of ``;``-separated names -> ``one(name)`` (a list when there are several)."""
    def resolve(cell: Any) -> Any:
        if not isinstance(cell, str):
            return None
        parts = [one(p.strip()) for p in cell.split(";") if p.strip()]
        return parts[0] if len(parts) == 1 else parts
    return resolve


def _file_resolver(images: Path) -> Callable[[Any], Any]:
    return _cell_resolver(lambda name: str(images / name))


def _dicomweb_resolver(server: str) -> Callable[[Any], Any]:
    """``STUDY[/SERIES[/INSTANCE]]`` UIDs (or full references) to references on ``server``."""
    from fracsurv.io.dicomweb import dicomweb_ref, is_dicomweb

    def one(text: str) -> str:
        if is_dicomweb(text):
            return text
        uids = [u for u in text.strip("/").split("/") if u]
        if len(uids) == 5 and uids[1] == "series" and uids[3] == "instances":
            uids = uids[0::2]  # "study/series/<uid>/instances/<uid>" spelled out
        if 1 <= len(uids) <= 3:
            return dicomweb_ref(server, *uids)
        return f"{server}/studies//"  # malformed: the loader reports it for this row

    return _cell_resolver(one)


def _study_of(cell: Any) -> set[str]:
    from fracsurv.io.dicomweb import DicomLoadError, parse_reference

    found = set()
    for ref in (cell if isinstance(cell, list) else [cell]):
        try:
            found.add(parse_reference(ref).study)
        except (DicomLoadError, AttributeError):
            continue
    return found


def _score_on_cluster(pipe: Pipeline, X: pd.DataFrame, scheduler: Any, partition_size: int,
                      cache_dir: Any) -> pd.DataFrame:
    from fracsurv import dist

    try:
        client = dist.connect(scheduler)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"--scheduler {scheduler}: no dask scheduler answers there "
                         f"({type(exc).__name__})") from None
    try:
        return dist.map_partitions(_score_part, pipe, X, client, partition_size=partition_size,
                                   cache_dir=cache_dir)
    finally:
        if client is not scheduler:
            client.close()


def score_patients(model: Path, images: Path | None, clinical: Path, out: Path,
                   allow_pickle: bool = False,
                   cache_dir: str | Path | None = None, *, dicomweb: str | None = None,
                   studies: list[str] | None = None, scheduler: Any = None,
                   partition_size: int = 64) -> tuple[int, int]:
    """Score the patients of ``clinical`` (CSV) whose images lie in ``images`` or a PACS.

    The CSV's ``image`` column holds file names relative to ``images`` (several
    per row separated by ``;``) or, with ``dicomweb``, DICOMweb references:
    ``STUDY_UID``, ``STUDY_UID/SERIES_UID`` or ``STUDY/SERIES/INSTANCE`` UIDs
    on that server (a study or series loads all its instances), or full
    reference URLs. Errors are recorded per row, not raised.

    Parameters
    ----------
    model : Path
        Folder written by :func:`fracsurv.save_pipeline`.
    images : Path or None
        Folder the ``image`` column is relative to (``None`` with ``dicomweb``).
    clinical : Path
        CSV with ``patient_id``, ``image`` and the clinical columns.
    out : Path
        Output CSV, written atomically; a previous file of that name is removed
        when the run starts, so a failed run never leaves it looking current.
    allow_pickle : bool, default=False
        Allow pickled steps (only for models you trust).
    cache_dir : path, optional
        Image cache of this run (reused by later runs). Default: a temporary
        folder removed afterwards. The cache saved in the model is never used.
        Required with ``scheduler``: a folder every worker can write.
    dicomweb : str, optional
        DICOMweb service root (e.g. ``http://pacs:8042/dicom-web``).
    studies : list of str, optional
        With ``dicomweb``: score only the rows whose references lie in these
        studies.
    scheduler : str or distributed.Client, optional
        Score on this dask cluster, ``partition_size`` rows per task (see
        :mod:`fracsurv.dist`); the images must be readable by every worker.

    Returns
    -------
    (int, int)
        Patients scored, patients that failed.

    Raises
    ------
    UsageError
        For an output that cannot be written or an unusable clinical CSV.
    """
    out = Path(out)
    if (images is None) == (dicomweb is None):
        raise UsageError("give exactly one image source: --images FOLDER or --dicomweb URL")
    if studies and dicomweb is None:
        raise UsageError("--study selects studies of a DICOMweb server: it needs --dicomweb")
    if scheduler is not None and cache_dir is None:
        raise UsageError("--scheduler needs --cache-dir: a folder on storage every worker "
                         "can write (the images travel through it)")
    check_output_path(out)
    X = read_clinical(clinical)
    if images is not None:
        images = Path(images)
        if not images.is_dir():
            log.warning("warning: --images %s is not a folder: every row will be "
                        "'file not found'", images)
        X["image"] = X["image"].map(_file_resolver(images))
    else:
        X["image"] = X["image"].map(_dicomweb_resolver(str(dicomweb).rstrip("/")))
        if studies:
            keep = X["image"].map(lambda c: bool(_study_of(c) & set(studies)))
            if not keep.any():
                raise UsageError("no row of --clinical refers to a study given with --study")
            X = X.loc[keep].reset_index(drop=True)
    out.unlink(missing_ok=True)
    pipe = load_pipeline(model, allow_pickle=allow_pickle)
    with tempfile.TemporaryDirectory(prefix="fracsurv-score-") as tmp:
        _set_runtime(pipe, str(cache_dir) if cache_dir else tmp)
        if scheduler is not None:
            result = _score_on_cluster(pipe, X, scheduler, partition_size, cache_dir)
        else:
            result = _score_part(pipe, X)
    with atomic_open(out, "w") as fh:
        result.to_csv(fh, index=False)
    _summary(result, X)
    n_bad = int(result["error"].notna().sum())
    return len(result) - n_bad, n_bad

