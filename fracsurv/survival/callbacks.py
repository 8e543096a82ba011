"""skorch callbacks for the survival networks."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from skorch.callbacks import Callback

__all__ = ["ValidCIndex"]


class ValidCIndex(Callback):
    """Harrell's C of the whole validation split, from the predictions of its batches.

    A skorch callback for any Cox network whose targets are ``[time, event, ...]``
    rows (the first output is the risk when the network returns a tuple).
    Recorded as ``valid_cindex`` every epoch (the multimodal study's
    model-selection metric), without a second pass over the data; pair it with
    ``EarlyStopping(monitor="valid_cindex", lower_is_better=False)``.
    """

    def on_epoch_begin(self, net: Any, **kwargs: Any) -> None:
        self._risk: list[np.ndarray] = []
        self._y: list[np.ndarray] = []

    def on_batch_end(self, net: Any, batch: Any = None, training: bool = False,
                     y_pred: Any = None, **kwargs: Any) -> None:
        if training or y_pred is None:
            return
        risk = y_pred[0] if isinstance(y_pred, tuple) else y_pred
        self._risk.append(risk.detach().float().cpu().numpy().reshape(-1))
        self._y.append(np.asarray(batch[1].detach().cpu().numpy() if isinstance(
            batch[1], torch.Tensor) else batch[1], dtype=float)[:, :2])

    def on_epoch_end(self, net: Any, **kwargs: Any) -> None:
        if not self._risk:
            return
        risk = np.concatenate(self._risk)
        y = np.concatenate(self._y)
        event = y[:, 1] > 0.5
        c = 0.5
        if event.any() and np.isfinite(risk).all():
            from sksurv.metrics import concordance_index_censored

            c = float(concordance_index_censored(event, y[:, 0], risk)[0])
        net.history.record("valid_cindex", c)
