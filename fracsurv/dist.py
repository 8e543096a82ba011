"""Cohort-scale work on a ``dask.distributed`` cluster (the ``dist`` extra).

Partitions of a frame go to the cluster's workers, each runs an estimator's
``transform`` (or a whole scoring pipeline) on its rows, and the results come
back in input order. Images travel by reference: give every image step a
``cache_dir`` on storage all workers see, and image paths all workers can read
(or DICOMweb references). Dask reschedules the partitions of a worker that
dies; cache entries are written atomically, so a killed worker leaves no
partial entry, and its temporaries are removed when the job ends.

Cross-validation and grid searches need nothing from this module: run them
inside ``joblib.parallel_config(backend="dask")`` with a ``Client`` open (see
``docs/distributed.md``).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from fracsurv._progress import progress

__all__ = ["connect", "map_partitions", "partitions", "transform"]

log = logging.getLogger("fracsurv.dist")

#: How long :func:`connect` waits for a scheduler to answer.
CONNECT_TIMEOUT = "10s"


def connect(scheduler: Any) -> Any:
    """A ``distributed.Client`` for ``scheduler`` (an address, or a ``Client`` kept as is).

    Raises
    ------
    ImportError
        When dask.distributed is not installed (the message names the extra).
    OSError
        When no scheduler answers at the address.
    """
    try:
        from distributed import Client
    except ImportError:
        raise ImportError("the dask scheduler needs the 'dist' extra: "
                          "pip install 'fracsurv[dist]'") from None
    if isinstance(scheduler, Client):
        return scheduler
    return Client(scheduler, timeout=CONNECT_TIMEOUT)


def partitions(X: pd.DataFrame, partition_size: int) -> Iterator[pd.DataFrame]:
    """Consecutive row blocks of ``X`` with at most ``partition_size`` rows each."""
    if int(partition_size) < 1:
        raise ValueError(f"partition_size must be >= 1, got {partition_size}")
    for start in range(0, len(X), int(partition_size)):
        yield X.iloc[start:start + int(partition_size)]


def _identity(obj: Any) -> Any:
    return obj


def _apply(fn: Callable[..., Any], obj: Any, part: pd.DataFrame) -> Any:
    return fn(obj, part)


def _call_method(obj: Any, part: pd.DataFrame, method: str) -> Any:
    return getattr(obj, method)(part)


def _remove_orphans(cache_dir: str) -> int:
    from fracsurv.io.refs import ImageCache

    return ImageCache(cache_dir).remove_orphans()


def map_partitions(fn: Callable[[Any, pd.DataFrame], Any], obj: Any, X: pd.DataFrame,
                   client: Any, partition_size: int = 64, retries: int = 2,
                   cache_dir: str | Path | None = None) -> pd.DataFrame:
    """``fn(obj, part)`` for every partition of ``X`` on the cluster; results in input order.

    Parameters
    ----------
    fn : callable
        Module-level function ``(obj, frame) -> frame`` run on the workers.
    obj : object
        Sent to the cluster once (an estimator, a pipeline) and recomputed from
        the task graph if the worker holding it dies.
    X : DataFrame
    client : distributed.Client or str
        The cluster (an address is connected to).
    partition_size : int, default=64
        Rows per task.
    retries : int, default=2
        Reruns of a task that raised (a worker that died does not count:
        dask reschedules its tasks on its own).
    cache_dir : path, optional
        The image cache of the job: temporaries of killed writers are removed
        from it on every worker when the job ends.

    Returns
    -------
    DataFrame
        The partitions' results concatenated in the order of ``X``.
    """
    from distributed import as_completed

    client = connect(client)
    parts = list(partitions(X, partition_size))
    if not parts:
        return fn(obj, X)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ending large graph.*")
        # a task (not ``scatter``): the scheduler can recompute it if its worker dies
        held = client.submit(_identity, obj, pure=False)
        futures = [client.submit(_apply, fn, held, part, pure=False, retries=retries)
                   for part in parts]
    position = {f.key: i for i, f in enumerate(futures)}
    results: list[Any] = [None] * len(parts)
    try:
        for future in progress(as_completed(futures), total=len(futures), desc="partitions"):
            results[position[future.key]] = future.result()
    finally:
        if cache_dir is not None:
            try:
                client.run(_remove_orphans, str(cache_dir))
            except Exception as exc:  # cleanup must not hide the job's own error
                log.warning("warning: could not clean the cache's temporaries on the "
                            "workers (%s)", type(exc).__name__)
            _remove_orphans(str(cache_dir))
    log.info("dask: %d rows in %d partitions on %d workers", len(X), len(parts),
             len(client.scheduler_info(n_workers=-1).get("workers", {})))
    if isinstance(results[0], pd.DataFrame | pd.Series):
        return pd.concat(results)
    import numpy as np

    return np.concatenate([np.asarray(r) for r in results])


def transform(estimator: Any, X: pd.DataFrame, client: Any, partition_size: int = 64,
              method: str = "transform", retries: int = 2) -> pd.DataFrame:
    """``estimator.transform(X)`` computed partition-wise on a dask cluster.

    Equal to the local call (each partition is transformed alone; fracsurv's
    transforms are row-wise), with the estimator sent to the cluster once. The
    estimator's ``cache_dir``, if it has one, must be on storage all workers see.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> with Client("tcp://scheduler:8786") as client:  # doctest: +SKIP
    ...     loaded = fracsurv.dist.transform(loader, X, client)
    """
    from functools import partial

    cache = estimator.get_params(deep=False).get("cache_dir") \
        if hasattr(estimator, "get_params") else None
    return map_partitions(partial(_call_method, method=method), estimator, X, client,
                          partition_size=partition_size, retries=retries, cache_dir=cache)
