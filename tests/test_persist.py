"""Safe persistence of fitted pipelines."""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.column import encode_categorical
from sksurv.datasets import load_whas500
from sksurv.ensemble import RandomSurvivalForest

from fracsurv.persist import load_pipeline, save_pipeline
from fracsurv.survival import DeepSurvRegressor


@pytest.fixture(scope="module")
def data():
    X, y = load_whas500()
    return encode_categorical(X).astype(float), y


def test_pipeline_roundtrip_without_pickle(data, tmp_path):
    X, y = data
    pipe = make_pipeline(StandardScaler(), DeepSurvRegressor(hidden_units=(8,), max_epochs=5,
                                                             random_state=0)).fit(X, y)
    save_pipeline(pipe, tmp_path / "p")
    assert not list((tmp_path / "p").rglob("*.joblib"))
    loaded = load_pipeline(tmp_path / "p")
    np.testing.assert_allclose(loaded.predict(X), pipe.predict(X), rtol=1e-6)


def test_pickled_steps_need_opt_in(data, tmp_path):
    X, y = data
    pipe = make_pipeline(StandardScaler(), RandomSurvivalForest(n_estimators=3, random_state=0))
    pipe.fit(X.iloc[:100], y[:100])
    save_pipeline(pipe, tmp_path / "p")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        load_pipeline(tmp_path / "p")
    loaded = load_pipeline(tmp_path / "p", allow_pickle=True)
    np.testing.assert_allclose(loaded.predict(X.iloc[:10]), pipe.predict(X.iloc[:10]))


def test_refuses_foreign_classes(tmp_path):
    import json

    (tmp_path / "manifest.json").write_text(json.dumps({"pipeline": False, "steps": [
        {"name": "x", "class": "subprocess.Popen", "folder": "00_x", "format": "json"}]}))
    (tmp_path / "00_x").mkdir()
    (tmp_path / "00_x" / "state.json").write_text(json.dumps({"params": {}, "attributes": {}}))
    with pytest.raises(ValueError, match="refusing"):
        load_pipeline(tmp_path)
