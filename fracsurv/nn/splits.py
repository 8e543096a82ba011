"""The inner validation split of the survival networks, stratified on the event indicator.

An unstratified split of a small cohort can hold no event at all: the
validation Cox loss is then 0 and its C-index undefined, and early stopping
silently restores the first epoch's weights. skorch's ``ValidSplit`` can only
stratify on the ``y`` given to ``fit`` (here a survival target or nothing), so
this splitter holds the event indicator itself.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split
from torch.utils.data import Subset

__all__ = ["MIN_VALID_EVENTS", "EventStratifiedSplit"]

#: Fewer events than this in the validation part cannot guide early stopping.
MIN_VALID_EVENTS = 5


class EventStratifiedSplit:
    """A skorch ``train_split``: ``fraction`` of the rows held out, stratified on ``events``.

    Parameters
    ----------
    fraction : float
        Share of rows held out for validation (0 < fraction < 1).
    events : array-like of bool
        Event indicator of every training row, in dataset order.
    random_state : int, optional
        Seed of the split.
    owner : str
        Estimator name for the warning.

    Warns
    -----
    UserWarning
        When the validation part holds fewer than :data:`MIN_VALID_EVENTS`
        events (its loss and C-index then cannot guide early stopping), or when
        there are too few events or censored rows to stratify at all.
    """

    def __init__(self, fraction: float, events: Any, random_state: int | None = None,
                 owner: str = "survival model") -> None:
        self.fraction = float(fraction)
        self.events = np.asarray(events, dtype=bool)
        self.random_state = random_state
        self.owner = owner

    def rows(self, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(training, validation) row positions."""
        n = len(self.events) if n is None else int(n)
        if n != len(self.events):
            raise ValueError(f"{self.owner}: the split knows {len(self.events)} event indicators "
                             f"but the dataset has {n} rows")
        idx = np.arange(n)
        n_valid = math.ceil(self.fraction * n)
        n_ev = int(self.events.sum())
        stratify = self.events if min(n_ev, n - n_ev) >= 2 and 2 <= n_valid <= n - 2 else None
        if stratify is None:
            warnings.warn(f"{self.owner}: {n_ev} events in {n} rows are too few to stratify the "
                          "inner validation split; it is drawn at random", UserWarning,
                          stacklevel=3)
        train, valid = train_test_split(idx, test_size=n_valid, stratify=stratify,
                                        random_state=self.random_state)
        k = int(self.events[valid].sum())
        if k < MIN_VALID_EVENTS:
            warnings.warn(f"{self.owner}: the inner validation split ({len(valid)} rows) holds "
                          f"{k} events; its loss and C-index cannot guide early stopping. Use "
                          "more data, a larger validation_fraction, or validation_fraction=0 "
                          "with a fixed max_epochs.", UserWarning, stacklevel=3)
        return np.sort(train), np.sort(valid)

    def __call__(self, dataset: Any, y: Any = None, groups: Any = None) -> tuple[Subset, Subset]:
        train, valid = self.rows(len(dataset))
        return Subset(dataset, train.tolist()), Subset(dataset, valid.tolist())
