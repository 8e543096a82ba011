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
    assert "not a DICOM" in scores.loc[2, "load_error"] or "header" in scores.loc[2, "load_error"]
    expected = pipe.predict(frame.head(5).drop(index=2))
    np.testing.assert_allclose(scores["risk"].dropna().to_numpy(), expected, rtol=1e-6)
    text = out_csv.read_text()
    assert "ZZFAKE" not in text  # planted DICOM identifiers never reach the output
