"""Resumable training: every network fit inside :func:`resumable` checkpoints each epoch.

``fracsurv train`` trains several estimators for many minutes each; a run that is
killed (a machine handed back, Ctrl-C) must go on from the last finished epoch.
Inside ``with resumable(folder):`` the shared skorch base
(:meth:`TorchEstimatorMixin._fit_net`) writes, after every epoch, the module,
optimiser and history of the network it trains to ``folder``; a finished network
writes its final weights. A second run with the same estimator parameters and
training size reads them back: finished networks are not trained again, an
unfinished one continues from its last epoch (with its learning-rate schedule,
since skorch's ``LRScheduler`` counts on from the restored history).

Networks are numbered in the order an estimator fits them (the cropper fits
three), and each file is keyed by a digest of the estimator's class, its
weight-changing parameters, the network's number and the training size, so a
checkpoint is never applied to a different model. Early-stopping state is not
saved: after a resume it counts patience from the resumed epoch.

Written here: skorch's ``Checkpoint``/``LoadInitState`` restore one net of one
``fit`` but neither numbers the several nets of one estimator nor skips a
finished one.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fracsurv.nn.callbacks import EpochCheckpoint, read_checkpoint, save_checkpoint

__all__ = ["fit_resumable", "note", "resumable"]

#: Parameters that never change trained weights (left out of a checkpoint's key).
_RUNTIME_PARAMS = frozenset({"verbose", "device", "cache_dir", "checkpoint_dir", "n_jobs",
                             "on_error", "generation_batch_size", "num_workers"})


@dataclass
class _Scope:
    folder: Path
    counts: dict[str, int] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("fracsurv_resume",
                                                                       default=None)


@contextlib.contextmanager
def resumable(folder: str | Path) -> Iterator[list[str]]:
    """Checkpoint every network trained in this block to ``folder``; resume from it.

    Yields a list that collects one line per network (``"trained"``, ``"resumed
    at epoch k"`` or ``"finished earlier"``), for progress output and tests.
    """
    scope = _Scope(Path(folder))
    scope.folder.mkdir(parents=True, exist_ok=True)
    token = _SCOPE.set(scope)
    try:
        yield scope.log
    finally:
        _SCOPE.reset(token)


def note(line: str) -> None:
    """Add ``line`` to the log of the enclosing :func:`resumable` block (if any).

    For estimators with their own checkpoints (the generator's stages).
    """
    scope = _SCOPE.get()
    if scope is not None:
        scope.log.append(line)


def _key(estimator: Any, index: int, n_train: int) -> str:
    params = {k: v for k, v in estimator.get_params(deep=False).items()
              if k not in _RUNTIME_PARAMS}
    text = json.dumps([type(estimator).__name__, params, index, n_train], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """``value`` as JSON-able Python objects (a checkpoint is read with ``weights_only``)."""
    def default(v: Any) -> Any:
        try:
            return float(v)
        except (TypeError, ValueError):
            return str(v)

    return json.loads(json.dumps(value, default=default))


class _HistoryCheckpoint(EpochCheckpoint):
    """:class:`EpochCheckpoint` that also stores skorch's history (restored on resume)."""

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        save_checkpoint({"epoch": len(net.history), "module": net.module_.state_dict(),
                         "optimizer": net.optimizer_.state_dict(),
                         "history": _plain(net.history.to_list())}, self.path)


@contextlib.contextmanager
def _sigint_seen() -> Iterator[list[int]]:
    """Note a Ctrl-C: skorch swallows ``KeyboardInterrupt`` (its early-stopping signal)."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        seen.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


def fit_resumable(estimator: Any, net: Any, X: Any, y: Any = None) -> bool:
    """Fit ``net`` with per-epoch checkpoints when inside :func:`resumable`.

    Returns False (nothing done) outside a :func:`resumable` block.
    """
    from skorch.history import History

    scope = _SCOPE.get()
    if scope is None:
        return False
    name = type(estimator).__name__
    index = scope.counts.get(name, 0)
    scope.counts[name] = index + 1
    n_train = len(X) if hasattr(X, "__len__") else -1
    stem = scope.folder / f"{name}-net{index}-{_key(estimator, index, n_train)}"
    done_file, epoch_file = stem.with_suffix(".done.pt"), stem.with_suffix(".epoch.pt")
    done = read_checkpoint(done_file)
    if done is not None:
        net.initialize()
        net.module_.load_state_dict(done["module"])
        net.history = History(done["history"])
        scope.log.append(f"{name} net {index}: finished earlier")
        return True
    state = read_checkpoint(epoch_file)
    net.callbacks = [*(net.callbacks or []), ("resume_checkpoint",
                                              _HistoryCheckpoint(epoch_file, name))]
    epochs = int(net.max_epochs)
    if state is not None:
        finished = int(state["epoch"])
        net.initialize()
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        net.history = History(state["history"])
        net.warm_start = True
        net.max_epochs = max(epochs - finished, 0)
        # a different draw of batches from the resumed epoch on
        torch.manual_seed(int(np.random.SeedSequence([finished]).generate_state(1)[0]))
        scope.log.append(f"{name} net {index}: resumed at epoch {finished + 1} of {epochs}")
    else:
        scope.log.append(f"{name} net {index}: trained")
    if net.max_epochs > 0:
        with _sigint_seen() as interrupted:
            net.fit(X, y)
        if interrupted:  # skorch ends fit quietly on Ctrl-C: not finished, keep the epoch file
            raise KeyboardInterrupt
    net.max_epochs = epochs
    save_checkpoint({"module": net.module_.state_dict(),
                     "history": _plain(net.history.to_list())}, done_file)
    epoch_file.unlink(missing_ok=True)
    return True
