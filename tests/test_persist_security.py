"""A saved model folder cannot run code or read outside itself (issue 22, item 1).

The gadgets are the ones found in review: a JSON step or a torch ``config.json``
naming ``fracsurv.persist.load_pipeline`` with ``allow_pickle: true`` and a path to
a folder with a pickle payload, the same through ``fracsurv score``, and manifest
folders outside the model folder; then a fuzz of manifest/config mutations.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import pickle
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sksurv.datasets import load_whas500

from fracsurv._serial import ModelFormatError
from fracsurv.persist import load_pipeline, save_pipeline
from fracsurv.survival import DeepSurvRegressor


class _Payload:
    """Unpickling this touches a sentinel file: proof that code ran."""

    def __init__(self, sentinel: pathlib.Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def _evil_folder(root: pathlib.Path, sentinel: pathlib.Path) -> pathlib.Path:
    """A model folder whose only step is a pickle that touches ``sentinel``."""
    evil = root / "evil"
    (evil / "00_x").mkdir(parents=True)
    (evil / "00_x" / "estimator.joblib").write_bytes(pickle.dumps(_Payload(sentinel)))
    (evil / "manifest.json").write_text(json.dumps({"pipeline": False, "steps": [
        {"name": "x", "class": "builtins.object", "folder": "00_x", "format": "pickle"}]}))
    return evil


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    X, y = load_whas500()
    X = X[["age", "bmi", "hr", "sysbp"]].astype(float)
    pipe = make_pipeline(StandardScaler(), DeepSurvRegressor(hidden_units=(), max_epochs=2,
                                                             random_state=0)).fit(X, y)
    path = tmp_path_factory.mktemp("m") / "model"
    save_pipeline(pipe, path)
    return path, X


def _copy(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
    shutil.copytree(src, dst)
    return dst


def _gadget_json_step(model, dst, evil):
    """A copy of ``model`` whose first step names load_pipeline on the ``evil`` folder."""
    m = _copy(model, dst)
    manifest = json.loads((m / "manifest.json").read_text())
    manifest["steps"][0]["class"] = "fracsurv.persist.load_pipeline"
    (m / "manifest.json").write_text(json.dumps(manifest))
    (m / "00_standardscaler" / "state.json").write_text(json.dumps(
        {"params": {"path": str(evil), "allow_pickle": True}, "attributes": {}}))
    return m


def test_the_evil_folder_really_runs_code_when_pickle_is_allowed(tmp_path):
    # the payload works: so the refusals below are meaningful
    sentinel = tmp_path / "ran"
    load_pipeline(_evil_folder(tmp_path, sentinel), allow_pickle=True)
    assert sentinel.exists()


def test_json_step_cannot_call_load_pipeline(fitted, tmp_path):
    model, _ = fitted
    sentinel = tmp_path / "ran"
    evil = _evil_folder(tmp_path, sentinel)
    m = _gadget_json_step(model, tmp_path / "m", evil)
    with pytest.raises(ModelFormatError, match="refusing to instantiate"):
        load_pipeline(m)
    assert not sentinel.exists()


def test_torch_config_cannot_call_load_pipeline(fitted, tmp_path):
    model, _ = fitted
    sentinel = tmp_path / "ran"
    evil = _evil_folder(tmp_path, sentinel)
    m = _copy(model, tmp_path / "m")
    cfg_path = m / "01_deepsurvregressor" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["class"] = "fracsurv.persist.load_pipeline"
    cfg["params"] = {"path": str(evil), "allow_pickle": True}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="refusing to instantiate"):
        load_pipeline(m)
    assert not sentinel.exists()


def test_score_command_refuses_the_gadget(fitted, tmp_path):
    from fracsurv.cli import main

    model, X = fitted
    sentinel = tmp_path / "ran"
    evil = _evil_folder(tmp_path, sentinel)
    m = _gadget_json_step(model, tmp_path / "m", evil)
    X.head(3).assign(image="none.png").to_csv(tmp_path / "c.csv", index=False)
    rc = main(["score", "--model", str(m), "--images", str(tmp_path), "--clinical",
               str(tmp_path / "c.csv"), "--out", str(tmp_path / "out.csv")])
    assert rc == 1
    assert not sentinel.exists()
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("folder", ["ABS", "../outside", "sub/../../outside", ".."])
def test_manifest_folder_must_stay_inside(fitted, tmp_path, folder):
    model, _ = fitted
    outside = _copy(model / "00_standardscaler", tmp_path / "outside")
    m = _copy(model, tmp_path / "m")
    manifest = json.loads((m / "manifest.json").read_text())
    manifest["steps"][0]["folder"] = str(outside) if folder == "ABS" else folder
    (m / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="inside the model folder"):
        load_pipeline(m)


def test_symlinked_step_folder_is_refused(fitted, tmp_path):
    model, _ = fitted
    outside = _copy(model / "00_standardscaler", tmp_path / "outside")
    m = _copy(model, tmp_path / "m")
    shutil.rmtree(m / "00_standardscaler")
    (m / "00_standardscaler").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ModelFormatError, match="outside the model folder"):
        load_pipeline(m)


def test_allow_pickle_and_memory_cannot_come_from_a_folder(fitted, tmp_path):
    model, _ = fitted
    m = _copy(model, tmp_path / "m")
    manifest = json.loads((m / "manifest.json").read_text())
    manifest["steps"][0]["class"] = "sklearn.cluster._agglomerative.FeatureAgglomeration"
    (m / "manifest.json").write_text(json.dumps(manifest))
    (m / "00_standardscaler" / "state.json").write_text(json.dumps(
        {"params": {"memory": str(tmp_path)}, "attributes": {}}))
    with pytest.raises(ModelFormatError, match="'memory' cannot be set"):
        load_pipeline(m)


def test_machine_paths_are_not_followed(tmp_path):
    from fracsurv.io import DicomLoader

    save_pipeline(DicomLoader(cache_dir=str(tmp_path / "training-cache")).fit(
        __import__("pandas").DataFrame({"image": []})), tmp_path / "m")
    assert load_pipeline(tmp_path / "m").cache_dir is None


def test_broken_files_name_the_file_and_problem(fitted, tmp_path):
    model, _ = fitted
    m = _copy(model, tmp_path / "broken-json")
    (m / "manifest.json").write_text('{"steps": [')
    with pytest.raises(ModelFormatError, match=r"manifest.json: broken JSON"):
        load_pipeline(m)
    m = _copy(model, tmp_path / "truncated")
    w = m / "01_deepsurvregressor" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:40])
    with pytest.raises(ModelFormatError, match=r"weights.safetensors: unreadable weights"):
        load_pipeline(m)
    m = _copy(model, tmp_path / "missing-key")
    cfg_path = m / "01_deepsurvregressor" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["meta"]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match=r"config.json: missing key 'meta'"):
        load_pipeline(m)
    m = _copy(model, tmp_path / "newer")
    manifest = json.loads((m / "manifest.json").read_text())
    manifest["format_version"] = 99
    (m / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFormatError, match="newer than this fracsurv"):
        load_pipeline(m)


def test_versions_recorded_and_mismatch_warns(fitted, tmp_path):
    model, X = fitted
    manifest = json.loads((model / "manifest.json").read_text())
    assert {"fracsurv", "torch", "scikit-learn", "generator"} <= set(manifest["versions"])
    cfg = json.loads((model / "01_deepsurvregressor" / "config.json").read_text())
    assert cfg["versions"]["torch"] == manifest["versions"]["torch"]
    m = _copy(model, tmp_path / "old")
    manifest["versions"]["fracsurv"] = "0.0.1"
    (m / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="fracsurv version 0.0.1"):
        loaded = load_pipeline(m)
    assert np.isfinite(loaded.predict(X)).all()


def test_column_transformer_is_saved_without_pickle(tmp_path):
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder

    X = pd.DataFrame({"a": np.arange(20.0), "b": ["x", "y"] * 10})
    ct = ColumnTransformer([("n", StandardScaler(), ["a"]), ("c", OneHotEncoder(), ["b"])]).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "needs allow_pickle" warning
        save_pipeline(ct, tmp_path / "ct")
    assert not list((tmp_path / "ct").rglob("*.joblib"))
    np.testing.assert_allclose(load_pipeline(tmp_path / "ct").transform(X), ct.transform(X))


# --- fuzz: no mutation of a manifest or config may execute code or read outside ---

_cases = itertools.count()
_DANGEROUS = ["fracsurv.persist.load_pipeline", "fracsurv.nn.base.load_model", "os.system",
              "builtins.eval", "subprocess.Popen", "joblib.load", "pickle.loads",
              "fracsurv.datasets.spine.load_demo_cohort", "fracsurv.cli.main",
              "sklearn.utils.Bunch", "sklearn.pipeline.make_pipeline", "fracsurv._serial.read_json",
              "fracsurv.pretrained.load", "numpy.load", "fracsurv.persist.Pipeline"]
_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                           c, max_size=3),
                       max_leaves=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cls=st.sampled_from(_DANGEROUS), fmt=st.sampled_from(["json", "torch", "skops", "nope"]),
       which=st.sampled_from(["manifest", "config"]),
       folder=st.sampled_from(["00_standardscaler", "../evil", "EVIL", "/etc", "00_x/..", ""]),
       extra=st.dictionaries(st.sampled_from(["path", "allow_pickle", "memory", "cache_dir"]),
                             _values, max_size=3))
def test_fuzzed_folders_never_run_code(fitted, tmp_path, cls, fmt, which, folder, extra):
    model, _ = fitted
    case = tmp_path / f"case{next(_cases)}"
    sentinel = case / "ran"
    evil = _evil_folder(case, sentinel)
    m = _copy(model, case / "m")
    manifest = json.loads((m / "manifest.json").read_text())
    params = {"path": str(evil), "allow_pickle": True, **extra}
    if which == "manifest":
        step = manifest["steps"][0]
        step.update({"class": cls, "format": fmt,
                     "folder": str(evil / "00_x") if folder == "EVIL" else folder})
        (m / "00_standardscaler" / "state.json").write_text(
            json.dumps({"params": params, "attributes": {}}))
    else:
        cfg_path = m / "01_deepsurvregressor" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg.update({"class": cls, "params": params})
        cfg_path.write_text(json.dumps(cfg))
    (m / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelFormatError):
            load_pipeline(m)
    assert not sentinel.exists()
