"""`fracsurv score`: batch scoring with a saved pipeline, bad files skipped, no identifiers out."""

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from fracsurv.cli import main
from fracsurv.datasets import CLINICAL_COLUMNS, make_spine_cohort
from fracsurv.io import DicomLoader
from fracsurv.persist import save_pipeline
from fracsurv.preprocessing import SelectColumns
from fracsurv.survival import DeepSurvRegressor


def test_score_command(tmp_path):
    cohort = make_spine_cohort(40, image_shape=(64, 32), random_state=2, out_dir=tmp_path / "c")
    frame = cohort.frame
    pipe = Pipeline([
        ("load", DicomLoader(output_shape=(64, 32))),
        ("select", SelectColumns(CLINICAL_COLUMNS)),
        ("cox", DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, max_epochs=3,
                                  random_state=0)),
    ]).fit(frame, cohort.target)
    save_pipeline(pipe, tmp_path / "model")
    assert not list((tmp_path / "model").rglob("*.joblib"))  # safe to share: no pickle

    images = tmp_path / "c" / "images"
    (images / "broken.dcm").write_bytes(b"\x00" * 300)
    clinical = frame.head(5).copy()
    clinical["image"] = [p.split("/")[-1] for p in clinical["image"]]
    clinical.loc[2, "image"] = "broken.dcm"
    clinical.drop(columns=["keypoints", "followup_image"]).to_csv(tmp_path / "new.csv", index=False)
    out_csv = tmp_path / "scores.csv"
    assert main(["score", "--model", str(tmp_path / "model"), "--images", str(images),
                 "--clinical", str(tmp_path / "new.csv"), "--out", str(out_csv)]) == 0
    scores = pd.read_csv(out_csv)
    assert scores["patient_id"].tolist() == frame["patient_id"].head(5).tolist()
    assert scores["risk"].isna().tolist() == [False, False, True, False, False]
    assert "not a DICOM" in scores.loc[2, "error"] or "header" in scores.loc[2, "error"]
    assert "broken.dcm" not in scores.loc[2, "error"]  # files are named by a hash of the path
    expected = pipe.predict(frame.head(5).drop(index=2))
    np.testing.assert_allclose(scores["risk"].dropna().to_numpy(), expected, rtol=1e-6)
    text = out_csv.read_text()
    assert "ZZFAKE" not in text  # planted DICOM identifiers never reach the output
    assert str(tmp_path) not in text  # nor do paths


# --- issue 22: scoring never loses good rows; clear errors; exit codes ---

import json  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def scoring_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    cohort = make_spine_cohort(30, image_shape=(64, 32), random_state=2, out_dir=root / "c")
    frame = cohort.frame
    pipe = Pipeline([
        ("load", DicomLoader(output_shape=(64, 32), cache_dir=str(root / "training-cache"))),
        ("select", SelectColumns(CLINICAL_COLUMNS)),
        ("cox", DeepSurvRegressor(hidden_units=(), optimizer="lbfgs", lr=1.0, max_epochs=3,
                                  random_state=0)),
    ]).fit(frame, cohort.target)
    save_pipeline(pipe, root / "model")
    clinical = frame.head(6).drop(columns=["keypoints", "followup_image"]).copy()
    clinical["image"] = [p.split("/")[-1] for p in clinical["image"]]
    return root, pipe, frame, clinical


def _score(root, clinical_csv, out, *extra, images=None):
    return main(["score", "--model", str(root / "model"), "--images",
                 str(images or root / "c" / "images"), "--clinical", str(clinical_csv),
                 "--out", str(out), *extra])


def test_bad_clinical_values_cost_only_their_rows(scoring_setup, tmp_path):
    root, pipe, frame, clinical = scoring_setup
    bad = clinical.copy()
    bad["bmi"] = bad["bmi"].astype(object)
    bad.loc[1, "bmi"] = "abc"
    bad.loc[4, "age"] = np.nan
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert _score(root, tmp_path / "bad.csv", tmp_path / "out.csv") == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["risk"].isna().tolist() == [False, True, False, False, True, False]
    assert "'bmi' is not a number ('abc')" in out.loc[1, "error"]
    assert "'age' is missing" in out.loc[4, "error"]
    good = [0, 2, 3, 5]
    np.testing.assert_allclose(out.loc[good, "risk"], pipe.predict(frame.head(6).iloc[good]),
                               rtol=1e-6)


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("patient_id,image,age\n", "header only"),
    ("patient_id,age\nP1,70\n", "no 'image' column"),
])
def test_unusable_clinical_csv_is_a_one_line_usage_error(scoring_setup, tmp_path, capsys,
                                                         content, message):
    root, *_ = scoring_setup
    (tmp_path / "c.csv").write_text(content)
    assert _score(root, tmp_path / "c.csv", tmp_path / "out.csv") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_wrong_images_folder_gives_per_row_file_not_found(scoring_setup, tmp_path, capsys):
    root, _, _, clinical = scoring_setup
    clinical.to_csv(tmp_path / "c.csv", index=False)
    rc = _score(root, tmp_path / "c.csv", tmp_path / "out.csv", images=tmp_path / "nowhere")
    assert rc == 1  # every row failed
    out = pd.read_csv(tmp_path / "out.csv")
    assert out["error"].str.contains("file not found").all()
    assert "not a folder" in capsys.readouterr().err


def test_scoring_never_uses_the_cache_saved_in_the_model(scoring_setup, tmp_path):
    root, _, _, clinical = scoring_setup
    state = json.loads((root / "model" / "00_load" / "state.json").read_text())
    assert state["params"]["cache_dir"] == str(root / "training-cache")  # saved as fitted
    before = sorted((root / "training-cache").rglob("*.npy"))
    clinical.to_csv(tmp_path / "c.csv", index=False)
    assert _score(root, tmp_path / "c.csv", tmp_path / "out.csv", "--cache-dir",
                  str(tmp_path / "run-cache")) == 0
    assert sorted((root / "training-cache").rglob("*.npy")) == before
    assert len(list((tmp_path / "run-cache").rglob("*.npy"))) == len(clinical)


def test_out_is_validated_first_and_a_failed_run_leaves_no_stale_file(scoring_setup, tmp_path):
    root, _, _, clinical = scoring_setup
    clinical.to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "adir").mkdir()
    assert _score(root, tmp_path / "c.csv", tmp_path / "adir") == 2
    stale = tmp_path / "old.csv"
    stale.write_text("patient_id,risk\nP1,0.5\n")
    bad_model = tmp_path / "model"
    bad_model.mkdir()
    (bad_model / "manifest.json").write_text("{broken")
    rc = main(["score", "--model", str(bad_model), "--images", str(root / "c" / "images"),
               "--clinical", str(tmp_path / "c.csv"), "--out", str(stale)])
    assert rc == 1
    assert not stale.exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_runtime_error_is_one_line_and_debug_shows_the_traceback(scoring_setup, tmp_path, capsys):
    _root, _, _, clinical = scoring_setup
    clinical.to_csv(tmp_path / "c.csv", index=False)
    missing = tmp_path / "no-model"
    assert main(["score", "--model", str(missing), "--images", str(tmp_path), "--clinical",
                 str(tmp_path / "c.csv"), "--out", str(tmp_path / "o.csv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json: missing" in err[0]
    with pytest.raises(Exception, match=r"manifest\.json: missing"):
        main(["--debug", "score", "--model", str(missing), "--images", str(tmp_path),
              "--clinical", str(tmp_path / "c.csv"), "--out", str(tmp_path / "o.csv")])


def test_version_and_help_say_what_they_do(capsys):
    import fracsurv

    with pytest.raises(SystemExit) as ex:
        main(["--version"])
    assert ex.value.code == 0 and fracsurv.__version__ in capsys.readouterr().out
    for cmd, words in (("score", ["error", "no_vertebra_found", "default:"]),
                       ("demo", ["report.html", "default: fracsurv-demo"])):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = capsys.readouterr().out
        assert all(w in text for w in words), (cmd, text)


def test_duplicate_patient_ids_warn(scoring_setup, tmp_path, capsys):
    root, _pipe, frame, clinical = scoring_setup
    dup = pd.concat([clinical, clinical.head(1)], ignore_index=True)
    dup.to_csv(tmp_path / "c.csv", index=False)
    assert _score(root, tmp_path / "c.csv", tmp_path / "o.csv") == 0
    err = capsys.readouterr().err
    assert "1 patient_id values occur more than once" in err
    assert err.count("scored") <= 1  # one summary, printed once
    with pytest.warns(UserWarning, match="repeat a patient_id"):
        DicomLoader(output_shape=(64, 32)).fit(pd.concat([frame.head(3), frame.head(1)]))


def test_no_vertebra_and_constant_image_scores_are_flagged():
    from fracsurv.batch import _summary

    X = pd.DataFrame({"patient_id": ["a", "b", "c"]})
    result = pd.DataFrame({"risk": [0.1, 0.2, 0.3], "pvf": [0.5, 0.5, 0.5],
                           "no_vertebra_found": [True, False, False], "error": [None] * 3})
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("fracsurv.batch")
    logger.addHandler(handler)
    try:
        _summary(result, X)
    finally:
        logger.removeHandler(handler)
    text = " ".join(r.getMessage() for r in records)
    assert "no vertebra was found in 1 images" in text
    assert "'pvf' is the same for every scored row" in text
