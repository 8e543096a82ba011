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


def test_a_loader_saved_before_clahe_backend_existed_keeps_scikit_images_clahe(tmp_path):
    """Issue 24 changed the default CLAHE to OpenCV's; older saved models keep theirs."""
    import json

    import pandas as pd
    from sklearn.pipeline import Pipeline

    from fracsurv.io import DicomLoader

    X = pd.DataFrame({"image": [np.outer(np.arange(20.0), np.arange(10.0))]})
    save_pipeline(Pipeline([("load", DicomLoader(output_shape=(20, 10)).fit(X))]), tmp_path / "m")
    state = next((tmp_path / "m").rglob("state.json"))
    meta = json.loads(state.read_text())
    assert meta["params"].pop("clahe_backend") == "opencv"
    state.write_text(json.dumps(meta))  # as written before the parameter existed
    assert load_pipeline(tmp_path / "m").steps[0][1].clahe_backend == "skimage"
