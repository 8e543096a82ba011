"""The shared homes of issue 23: serializer, data contract, seeds, image loading."""

import numpy as np
import pytest

from fracsurv import _serial
from fracsurv._base import derive_seed
from fracsurv.contract import CLINICAL_COLUMNS, DEFAULT_IMAGE_SHAPE
from fracsurv.nn.data import ImageDataset, load_row_image


def test_params_round_trip_keeps_tuples_and_lists():
    params = {"shape": (1024, 512), "grid": [0.3, 0.5], "nested": {"a": (1, [2, (3,)])},
              "none": None, "flag": True, "np": np.float32(0.5)}
    back = _serial.from_json(_serial.params_json(params))
    assert back == {**params, "np": 0.5}
    assert isinstance(back["shape"], tuple) and isinstance(back["grid"], list)
    assert isinstance(back["nested"]["a"][1][1], tuple)
    with pytest.raises(TypeError, match="parameter 'bad'"):
        _serial.params_json({"bad": object()})


def test_metadata_json_and_arrays(tmp_path):
    assert _serial.to_json({1: (np.int64(2), "x")}) == {"1": [2, "x"]}
    with pytest.raises(TypeError):
        _serial.to_json({"a": object()})
    arrays = {"a": np.arange(6.0).reshape(2, 3)[:, ::2], "b": np.array([True, False])}
    _serial.write_arrays(arrays, tmp_path / "x.safetensors")
    back = _serial.read_arrays(tmp_path / "x.safetensors")
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)


def test_class_import_is_allow_listed():
    assert _serial.import_allowed_class("fracsurv.survival.deepsurv.DeepSurvRegressor",
                                        ("fracsurv",)).__name__ == "DeepSurvRegressor"
    with pytest.raises(ValueError, match="not one of fracsurv's public estimators"):
        _serial.import_allowed_class("fracsurv.survival.DeepSurvRegressor", ("fracsurv",))
    with pytest.raises(ValueError, match="refusing"):
        _serial.import_allowed_class("os.system", ("fracsurv", "sklearn"))


def test_contract_is_the_cohorts_and_the_models_default():
    from fracsurv.datasets import CLINICAL_COLUMNS as cohort_columns
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.survival import FusionSurvival

    assert list(cohort_columns) == list(CLINICAL_COLUMNS) and len(CLINICAL_COLUMNS) == 11
    assert DEFAULT_IMAGE_SHAPE == (1024, 512)
    assert FusionSurvival()._tab_cols() == list(CLINICAL_COLUMNS)
    frame = make_spine_cohort(n_patients=20, image_shape=(64, 32), random_state=0).frame
    assert set(CLINICAL_COLUMNS) <= set(frame.columns)


def test_derive_seed_is_the_former_derivation():
    for rs in (0, 7, 2**31):
        assert derive_seed(rs) == np.random.RandomState(rs).randint(0, 2**31 - 1)
    # a RandomState (which the 'random_state' constraint admits) is drawn from
    assert derive_seed(np.random.RandomState(3)) == np.random.RandomState(3).randint(0, 2**31 - 1)
    assert 0 <= derive_seed(None) < 2**31 - 1


def test_row_image_errors_name_the_row_and_keep_the_cause():
    with pytest.raises(ValueError, match=r"cannot read the image of row 'p7' \(position 2\)") as info:
        load_row_image("/no/such/file.png", "row 'p7' (position 2)")
    assert info.value.__cause__ is not None
    ds = ImageDataset([np.zeros((4, 4)), "/no/such/file.png"], rows=["row 0", "row 1"])
    assert tuple(ds.load(0).shape) == (1, 4, 4)
    with pytest.raises(ValueError, match="cannot read the image of row 1") as info:
        ds.load(1)
    assert info.value.__cause__ is not None


def test_valid_cindex_callback_scores_the_whole_validation_split():
    import torch
    from skorch.history import History

    from fracsurv.metrics import concordance_index
    from fracsurv.survival import ValidCIndex
    from fracsurv.survival.deepsurv import survival_target_tensor

    rng = np.random.default_rng(0)
    time, event, risk = rng.exponential(size=30) + 0.1, rng.random(30) < 0.6, rng.normal(size=30)
    y = np.array(list(zip(event, time)), dtype=[("event", bool), ("time", float)])
    target = torch.as_tensor(survival_target_tensor(y))

    class Net:
        history = History()

    net = Net()
    net.history.new_epoch()
    cb = ValidCIndex()
    cb.on_epoch_begin(net)
    for i in range(0, 30, 8):  # validation batches; a training batch is ignored
        batch = (None, target[i:i + 8])
        cb.on_batch_end(net, batch=batch, training=False, y_pred=torch.as_tensor(risk[i:i + 8]))
        cb.on_batch_end(net, batch=batch, training=True, y_pred=torch.zeros(8))
    cb.on_epoch_end(net)
    assert net.history[-1]["valid_cindex"] == pytest.approx(concordance_index(y, risk))


def test_calibration_recovers_a_known_temperature_and_a_monotone_map():
    from fracsurv.scoring.calibration import fit_isotonic, fit_temperature, sigmoid

    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < sigmoid(true_logit)).astype(float)
    assert fit_temperature(3.0 * true_logit, labels) == pytest.approx(3.0, rel=0.05)
    x, y = fit_isotonic(3.0 * true_logit, labels)
    assert np.all(np.diff(x) >= 0) and np.all(np.diff(y) >= 0)
    assert 0.0 <= y.min() and y.max() <= 1.0


# --- issue 24: workers only when they pay for their start-up ---


def _pid_after(seconds):
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def test_map_ordered_starts_workers_only_for_long_jobs(monkeypatch):
    import os

    from fracsurv._base import map_ordered

    short = map_ordered(_pid_after, [(0.0,)] * 6, n_jobs=2)
    assert set(short) == {os.getpid()}  # 6 x ~0 s: not worth two worker start-ups
    monkeypatch.setenv("FRACSURV_MIN_PARALLEL_S", "0.05")
    long = map_ordered(_pid_after, [(0.02,)] * 6, n_jobs=2)
    assert long[0] == os.getpid() and set(long[1:]) - {os.getpid()}  # the rest on workers
    assert map_ordered(_pid_after, [], n_jobs=2) == []
    assert map_ordered(lambda a, b: a - b, [(5, 2), (1, 1), (0, 3)], n_jobs=1) == [3, 0, -3]
