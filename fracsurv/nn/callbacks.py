"""skorch callbacks shared by fracsurv's long-training estimators.

* :class:`EMACallback` keeps an exponential moving average of the weights with
  diffusers' :class:`~diffusers.training_utils.EMAModel` and puts it into the
  module when training ends (the standard of diffusion training).
* :class:`EpochCheckpoint` writes the module, optimiser and EMA states after every
  epoch (atomically: a temporary file, then a rename), so an interrupted ``fit``
  resumes from the last finished epoch (see :func:`read_checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from skorch.callbacks import Callback

from fracsurv._atomic import atomic_open

__all__ = ["EMACallback", "EpochCheckpoint", "LossConvergence", "read_checkpoint", "save_checkpoint"]


class EMACallback(Callback):
    """Exponential moving average of the module's weights, copied in at the end.

    Parameters
    ----------
    decay : float
        EMA decay per optimiser step (diffusers' warm-up applies: the effective
        decay rises from 0 to ``decay`` over the first steps).
    state : dict, optional
        An :meth:`EMAModel.state_dict` to resume from.
    """

    def __init__(self, decay: float, state: dict[str, Any] | None = None) -> None:
        self.decay = decay
        self.state = state

    def initialize(self) -> EMACallback:
        self.ema_ = None
        return self

    def on_train_begin(self, net: Any, **kwargs: Any) -> None:
        from diffusers.training_utils import EMAModel

        self.ema_ = EMAModel(net.module_.parameters(), decay=float(self.decay),
                             use_ema_warmup=True, inv_gamma=1.0, power=2 / 3)
        if self.state is not None:
            self.ema_.load_state_dict(self.state)

    def on_batch_end(self, net: Any, batch: Any = None, training: bool = False,
                     **kwargs: Any) -> None:
        if training and self.ema_ is not None:
            self.ema_.step(net.module_.parameters())

    def on_train_end(self, net: Any, **kwargs: Any) -> None:
        if self.ema_ is not None:
            self.ema_.copy_to(net.module_.parameters())


class LossConvergence(Callback):
    """Stop a full-batch (L-BFGS) fit once the training loss has stopped changing.

    skorch's ``EarlyStopping`` watches a validation score; a full-batch fit has
    none, and L-BFGS usually converges within a few epochs, after which the
    remaining epochs repeat the same loss. Stops after ``patience`` epochs whose
    relative loss change is below ``tol``.
    """

    def __init__(self, tol: float = 1e-7, patience: int = 2) -> None:
        self.tol = tol
        self.patience = patience

    def initialize(self) -> LossConvergence:
        self.quiet_epochs_ = 0
        return self

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        losses = net.history[:, "train_loss"]
        if len(losses) < 2:
            return
        prev, last = float(losses[-2]), float(losses[-1])
        change = abs(last - prev) / max(abs(last), 1e-12)
        self.quiet_epochs_ = self.quiet_epochs_ + 1 if change < self.tol else 0
        if self.quiet_epochs_ >= self.patience:
            raise KeyboardInterrupt  # skorch's documented way to end training from a callback


class EpochCheckpoint(Callback):
    """Save ``{stage, epoch, losses, module, optimizer, ema}`` to ``path`` after each epoch.

    Parameters
    ----------
    path : path
        The checkpoint file (replaced atomically each epoch).
    stage : str
        Name of the training stage the file belongs to.
    epoch_offset : int
        Epochs finished before this ``fit`` (a resumed run counts on from there).
    previous_losses : sequence of float
        Training losses of the epochs finished before this ``fit``.
    """

    def __init__(self, path: str | os.PathLike[str], stage: str, epoch_offset: int = 0,
                 previous_losses: Any = ()) -> None:
        self.path = path
        self.stage = stage
        self.epoch_offset = epoch_offset
        self.previous_losses = previous_losses

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        ema = next((cb.ema_ for _, cb in net.callbacks_ if isinstance(cb, EMACallback)), None)
        losses = [*map(float, self.previous_losses),
                  *(float(h["train_loss"]) for h in net.history)]
        state = {"stage": self.stage, "epoch": self.epoch_offset + len(net.history),
                 "losses": losses, "module": net.module_.state_dict(),
                 "optimizer": net.optimizer_.state_dict(),
                 "ema": ema.state_dict() if ema is not None else None}
        save_checkpoint(state, self.path)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename: never half-written."""
    with atomic_open(path, "wb") as fh:
        torch.save(state, fh)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The state an :class:`EpochCheckpoint` wrote, or None when there is none.

    Checkpoints are this package's own training state (tensors, numbers and
    strings), read with ``weights_only=True`` so a planted file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and why
        raise ValueError(f"checkpoint {path.name} cannot be read ({exc}); delete it to "
                         "start the stage again") from None
