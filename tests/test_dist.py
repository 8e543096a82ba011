"""Dask: partitions on a 2-process LocalCluster equal local runs; a killed worker loses nothing."""

import os
import signal
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from sklearn.pipeline import Pipeline  # noqa: E402

from fracsurv import dist  # noqa: E402
from fracsurv._atomic import atomic_open  # noqa: E402
from fracsurv.batch import score_frame  # noqa: E402
from fracsurv.datasets import CLINICAL_COLUMNS, make_spine_cohort  # noqa: E402
from fracsurv.io import DicomLoader  # noqa: E402
from fracsurv.preprocessing import SelectColumns  # noqa: E402
from fracsurv.survival import DeepSurvRegressor  # noqa: E402

# the workers unpickle this module's helpers by value (they cannot import tests/)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as lc, \
            distributed.Client(lc) as client:
        yield lc, client


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    c = make_spine_cohort(24, image_shape=(64, 32), random_state=3, out_dir=root / "c")
    return root, c


def _model(cache):
    return Pipeline([
        ("load", DicomLoader(output_shape=(64, 32), cache_dir=str(cache), on_error="skip")),
        ("select", SelectColumns(CLINICAL_COLUMNS)),
        ("cox", DeepSurvRegressor(hidden_units=(4,), max_epochs=3, validation_fraction=0.0,
                                  random_state=0)),
    ])


def test_loader_and_image_models_on_the_cluster_equal_local(cluster, cohort, tmp_path):
    from fracsurv.scoring import PVFScorer

    _, client = cluster
    _, c = cohort
    loader = DicomLoader(output_shape=(64, 32), cache_dir=str(tmp_path / "cache")).fit(c.frame)
    local = loader.transform(c.frame)
    remote = dist.transform(loader, c.frame, client, partition_size=5)
    assert list(remote.index) == list(c.frame.index)
    assert list(remote["image"]) == list(local["image"])  # the same cache entries
    pd.testing.assert_frame_equal(remote.drop(columns=["image", "keypoints"]),
                                  local.drop(columns=["image", "keypoints"]))
    scorer = PVFScorer(backbone="resnet10-tiny", input_shape=(32, 16), max_epochs=1,
                       batch_size=8, augment=False, validation_fraction=0.0,
                       random_state=0).fit(local)
    a = scorer.transform(local)
    b = dist.transform(scorer, local, client, partition_size=7)
    np.testing.assert_allclose(b["pvf"], a["pvf"], rtol=1e-5, atol=1e-6)
    proba = dist.transform(scorer, local, client, partition_size=7, method="predict_proba")
    np.testing.assert_allclose(proba, scorer.predict_proba(local), rtol=1e-5, atol=1e-6)


def test_vertebra_cropper_on_the_cluster_equals_local(cluster):
    from fracsurv.vertebrae import VertebraCropper

    _, client = cluster
    frame = make_spine_cohort(6, image_shape=(256, 128), random_state=8, dicom=False).frame
    cropper = VertebraCropper(input_shape=(256, 128), channels=(8, 16, 32, 64), num_res_units=0,
                              train_window=(64, 96), patch_size=32,
                              refiner_channels=(8, 16, 32, 64), batch_size=4, max_epochs=1,
                              stage2_epochs=1, validation_fraction=0.0, patience=0,
                              device="cpu", random_state=0).fit(frame)
    a = cropper.transform(frame)
    b = dist.transform(cropper, frame, client, partition_size=2)
    assert list(b.columns) == list(a.columns) and list(b.index) == list(a.index)
    for col in ("n_vertebrae", "n_fractures", "max_grade"):
        if col in a.columns:
            assert list(b[col]) == list(a[col]), col
    col = cropper.vertebrae_column
    for ka, kb in zip(a[col], b[col], strict=True):
        assert len(ka) == len(kb)
        for va, vb in zip(ka, kb, strict=True):
            np.testing.assert_allclose(vb["points"], va["points"], atol=1e-3)


def test_diffx_generation_on_the_cluster_equals_local(cluster):
    from fracsurv.generative import DIFFX_PRESETS, DiffXGenerator

    _, client = cluster
    frame = make_spine_cohort(4, image_shape=(64, 32), random_state=5, dicom=False).frame
    gen = DiffXGenerator(**{**DIFFX_PRESETS["tiny"], "random_state": 0, "device": "cpu"}).fit(frame)
    a = gen.transform(frame)
    b = dist.transform(gen, frame, client, partition_size=1)
    for fa, fb in zip(a["future_images"], b["future_images"], strict=True):
        np.testing.assert_allclose(np.stack(fb), np.stack(fa), atol=1e-5)


def _score_or_die(pipe, part, flag, cache):
    """score_frame, but the first worker to get row 9 dies mid-write (SIGKILL)."""
    if 9 in part.index and not Path(flag).exists():
        Path(flag).write_text("killed")
        with atomic_open(Path(cache) / "ab" / "entry.npy", "wb") as fh:
            fh.write(b"half an entry")
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return score_frame(pipe, part)


def test_a_killed_worker_loses_no_row_and_leaves_no_partial_file(cluster, cohort, tmp_path):
    _, client = cluster
    root, c = cohort
    cache = tmp_path / "cache"
    X = c.frame.drop(columns=["keypoints", "followup_image"]).copy()
    X.loc[4, "image"] = str(root / "missing.dcm")  # fails to load: reported for its row
    pipe = _model(cache).fit(c.frame, c.target)
    local = score_frame(pipe, X)
    flag = tmp_path / "killed"
    fn = partial(_score_or_die, flag=str(flag), cache=str(cache))
    remote = dist.map_partitions(fn, pipe, X, client, partition_size=3, cache_dir=cache)
    assert flag.exists()  # a worker did die mid-job
    pd.testing.assert_frame_equal(remote, local)
    assert remote["error"].notna().sum() == 1 and "file not found" in remote.loc[4, "error"]
    assert not list(cache.rglob("*.tmp"))  # the dead writer's temporary was removed
    entries = sorted(cache.rglob("*.npy"))
    stamps = [p.stat().st_mtime_ns for p in entries]
    again = dist.map_partitions(fn, pipe, X, client, partition_size=3, cache_dir=cache)
    pd.testing.assert_frame_equal(again, local)
    assert sorted(cache.rglob("*.npy")) == entries  # a rerun reuses the cache ...
    assert [p.stat().st_mtime_ns for p in entries] == stamps  # ... without rewriting it


def test_score_command_on_a_scheduler_equals_the_local_run(cluster, cohort, tmp_path,
                                                           monkeypatch):
    from fracsurv.cli import main
    from fracsurv.persist import save_pipeline

    lc, _ = cluster
    root, c = cohort
    save_pipeline(_model(tmp_path / "train-cache").fit(c.frame, c.target), tmp_path / "model")
    clinical = c.frame.drop(columns=["keypoints", "followup_image"]).copy()
    clinical["image"] = [Path(p).name for p in clinical["image"]]
    clinical.loc[2, "image"] = "missing.dcm"
    clinical.to_csv(tmp_path / "new.csv", index=False)
    base = ["score", "--model", str(tmp_path / "model"), "--images", str(root / "c" / "images"),
            "--clinical", str(tmp_path / "new.csv")]
    assert main([*base, "--out", str(tmp_path / "local.csv")]) == 0
    assert main([*base, "--out", str(tmp_path / "dask.csv"), "--scheduler",
                 lc.scheduler_address, "--cache-dir", str(tmp_path / "cache"),
                 "--partition-size", "5"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "dask.csv"),
                                  pd.read_csv(tmp_path / "local.csv"))
    # a scheduler without a shared cache folder, or one that does not answer: usage errors
    assert main([*base, "--out", str(tmp_path / "x.csv"), "--scheduler",
                 lc.scheduler_address]) == 2
    from tests.orthanc import free_port

    monkeypatch.setattr(dist, "CONNECT_TIMEOUT", "2s")
    assert main([*base, "--out", str(tmp_path / "x.csv"), "--scheduler",
                 f"tcp://127.0.0.1:{free_port()}", "--cache-dir", str(tmp_path / "c2")]) == 2


def test_cross_validation_through_joblibs_dask_backend_equals_local(cluster):
    from joblib import parallel_config
    from sklearn.model_selection import KFold, cross_val_score
    from sksurv.column import encode_categorical
    from sksurv.datasets import load_whas500

    X, y = load_whas500()
    X = encode_categorical(X).astype(float)
    model = DeepSurvRegressor(hidden_units=(8,), max_epochs=5, random_state=0)
    cv = KFold(3, shuffle=True, random_state=0)
    local = cross_val_score(model, X, y, cv=cv)
    with parallel_config(backend="dask"):
        remote = cross_val_score(model, X, y, cv=cv, n_jobs=2)
    np.testing.assert_allclose(remote, local, rtol=1e-6)
