"""The survival networks' inner validation split is stratified on events (issue 22, item 2)."""

import warnings

import numpy as np
import pytest
from skorch.dataset import ValidSplit
from sksurv.datasets import load_whas500
from sksurv.util import Surv

from fracsurv.nn.splits import MIN_VALID_EVENTS, EventStratifiedSplit
from fracsurv.survival import DeepSurvRegressor, FusionSurvival


def test_unstratified_splits_can_hold_no_event_and_ours_never_do():
    events = np.zeros(60, bool)
    events[:6] = True  # 10 % events, as in a small fracture cohort
    empty_before = 0
    for seed in range(30):
        _, valid = ValidSplit(0.2, stratified=False, random_state=seed)(np.arange(60))
        empty_before += events[np.asarray(valid.indices)].sum() == 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train, rows = EventStratifiedSplit(0.2, events, seed).rows()
        assert events[rows].sum() >= 1 and events[train].sum() >= 4
        assert len(rows) == 12 and len(np.intersect1d(train, rows)) == 0
    assert empty_before > 0  # the failure the stratification removes


def test_too_few_validation_events_warn():
    events = np.r_[np.ones(4, bool), np.zeros(36, bool)]
    with pytest.warns(UserWarning, match=r"holds 1 events; its loss and C-index cannot guide"):
        EventStratifiedSplit(0.25, events, 0, owner="X").rows()
    with pytest.warns(UserWarning, match="too few to stratify"):
        EventStratifiedSplit(0.25, np.r_[True, np.zeros(39, bool)], 0).rows()
    many = np.r_[np.ones(40, bool), np.zeros(60, bool)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, rows = EventStratifiedSplit(0.25, many, 0).rows()
    assert many[rows].sum() == 10 >= MIN_VALID_EVENTS


def test_deepsurv_uses_the_stratified_split_and_warns_on_small_data():
    X, _y = load_whas500()
    X = X[["age", "bmi", "hr"]].astype(float).to_numpy()[:60]
    event = np.zeros(60, bool)
    event[:5] = True
    yy = Surv.from_arrays(event, np.arange(1.0, 61.0))
    est = DeepSurvRegressor(hidden_units=(4,), max_epochs=3, validation_fraction=0.2,
                            random_state=0)
    with pytest.warns(UserWarning, match="DeepSurvRegressor: the inner validation split"):
        est.fit(X, yy)
    assert isinstance(est.net_.train_split, EventStratifiedSplit)
    valid_loss = [h["valid_loss"] for h in est.net_.history]
    assert all(v > 0 for v in valid_loss)  # an event in validation: a real Cox loss


def test_fusion_split_rows_are_stratified():
    event = np.r_[np.ones(6, bool), np.zeros(54, bool)]
    y = Surv.from_arrays(event, np.arange(1.0, 61.0))
    est = FusionSurvival(validation_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in range(10):
            _train, valid = est._split_rows(y, seed)
            assert event[valid].sum() >= 1 and len(valid) == 12


@pytest.mark.parametrize("n", [2, 3])
def test_tiny_fits_give_a_clear_minimum_size_error(n):
    import pandas as pd

    from fracsurv.scoring import PVFScorer

    X = np.random.default_rng(0).random((n, 3))
    y = Surv.from_arrays([True, False, True][:n], np.arange(1.0, n + 1))
    with pytest.raises(ValueError, match=r"DeepSurvRegressor: fit needs at least 7 rows"):
        DeepSurvRegressor(max_epochs=1).fit(X, y)
    DeepSurvRegressor(max_epochs=1, validation_fraction=0).fit(X, y)  # what the message says
    frame = pd.DataFrame({"image": [np.zeros((32, 16), np.float32)] * n})
    labels = np.arange(n) % 2
    with pytest.raises(ValueError, match=r"PVFScorer: fit needs at least \d+ rows"):
        PVFScorer(max_epochs=1, input_shape=(32, 16)).fit(frame, labels)
