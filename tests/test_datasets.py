"""The synthetic spine cohort: documented ranges, pixel/keypoint agreement, DICOM round trip."""

import itertools

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from skimage.draw import polygon as fill_polygon
from sksurv.metrics import concordance_index_censored

from fracsurv.datasets import CLINICAL_COLUMNS, load_demo_cohort, make_spine_cohort
from fracsurv.datasets._dicom import decode_to_unit
from fracsurv.vertebrae.genant import grade_vertebrae


@pytest.fixture(scope="module")
def large():
    """Clinical data, keypoints and outcomes without images (fast)."""
    return make_spine_cohort(2500, random_state=7, images=False)


@pytest.fixture(scope="module")
def small():
    return make_spine_cohort(16, image_shape=(256, 128), random_state=3)


def test_contract_columns(small):
    frame = small.frame
    for c in ["patient_id", "image", "age", "sex", "female", "bmi", "height_cm", "weight_kg",
              "tscore_fn", "clinical_risk_score", "prevalent_vf", "keypoints", "followup_image",
              "followup_age", *CLINICAL_COLUMNS]:
        assert c in frame.columns, c
    assert small.target.dtype.names == ("event", "time")
    img = frame["image"][0]
    assert img.shape == (256, 128) and img.dtype == np.float32
    assert 0.0 <= img.min() and img.max() <= 1.0
    assert (frame["followup_age"] > frame["age"]).all()


def test_distributions_in_documented_ranges(large):
    f, y = large.frame, large.target
    assert f["age"].between(50, 90).all() and 64 < f["age"].mean() < 68
    assert 0.62 < f["female"].mean() < 0.70
    assert 0.15 < f["prevalent_vf"].mean() < 0.22
    assert 0.08 < y["event"].mean() < 0.13
    assert 2.6 < y["time"].mean() < 3.4
    assert (y["time"] > 0).all()
    # prevalence rises with age and falls with T-score
    old = f["age"] > 75
    assert f.loc[old, "prevalent_vf"].mean() > f.loc[~old, "prevalent_vf"].mean()
    low = f["tscore_fn"] < -2.5
    assert f.loc[low, "prevalent_vf"].mean() > f.loc[~low, "prevalent_vf"].mean()


def test_fracture_levels_peak_at_thoracolumbar_junction(large):
    v = large.truth.vertebrae
    counts = v[(v["visit"] == 0) & (v["grade"] > 0)]["level"].value_counts()
    top4 = set(counts.index[:4])
    assert {"T12", "L1"} <= top4
    assert counts.get("T7", 0) + counts.get("T8", 0) > counts.get("T4", 0) + counts.get("T5", 0)


def test_oracle_c_index_well_above_chance(large):
    y = large.target
    c = concordance_index_censored(y["event"], y["time"], large.truth.log_hazard)[0]
    assert c > 0.70


def test_grades_agree_with_keypoints(large):
    for cell, vf in zip(large.frame["keypoints"][:300], large.frame["prevalent_vf"][:300]):
        pts = np.array([v["points"] for v in cell])
        levels = [v["level"] for v in cell]
        grades, _, _ = grade_vertebrae(pts)
        graded = np.array([lv not in ("C7", "T1", "T2", "T3") for lv in levels])
        assert int((grades[graded] >= 1).any()) == vf


def test_bone_brighter_inside_keypoints_than_in_disc(small):
    for img, cell in zip(small.frame["image"], small.frame["keypoints"]):
        inside, disc = [], []
        for upper, lower in itertools.pairwise(cell):
            p = np.array(upper["points"])
            rr, cc = fill_polygon(p[[0, 1, 2, 5, 4, 3], 1], p[[0, 1, 2, 5, 4, 3], 0], img.shape)
            inside.append(img[rr, cc].mean())
            q = np.array(lower["points"])
            gap = np.array([p[3], p[5], q[2], q[0]])  # inferior endplate -> next superior
            rr, cc = fill_polygon(gap[:, 1], gap[:, 0], img.shape)
            if len(rr):
                disc.append(img[rr, cc].mean())
        assert np.mean(inside) > np.mean(disc) + 0.03


def test_deterministic(small):
    again = make_spine_cohort(16, image_shape=(256, 128), random_state=3)
    for a, b in zip(small.frame["image"], again.frame["image"]):
        assert a.tobytes() == b.tobytes()
    cols = [c for c in small.frame.columns if c not in ("image", "followup_image", "keypoints")]
    assert small.frame[cols].equals(again.frame[cols])
    assert small.frame["keypoints"].tolist() == again.frame["keypoints"].tolist()
    other = make_spine_cohort(16, image_shape=(256, 128), random_state=4)
    assert other.frame["image"][0].tobytes() != small.frame["image"][0].tobytes()


def test_parallel_generation_is_identical():
    a = make_spine_cohort(6, image_shape=(128, 64), random_state=5, n_jobs=1)
    b = make_spine_cohort(6, image_shape=(128, 64), random_state=5, n_jobs=2)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a.frame["image"], b.frame["image"]))


def test_dicom_round_trip_and_fake_identifiers(tmp_path, small):
    bunch = make_spine_cohort(16, image_shape=(256, 128), random_state=3, out_dir=tmp_path)
    seen = set()
    for path, arr in zip(bunch.frame["image"], small.frame["image"]):
        ds = pydicom.dcmread(path)
        assert "ZZFAKE" in str(ds.PatientName)  # identifiers are planted...
        assert "ZZFAKE" not in path and str(ds.PatientID) not in path  # ...never in names
        seen.add((ds.PhotometricInterpretation, ds.file_meta.TransferSyntaxUID.is_compressed))
        modality = apply_modality_lut(ds.pixel_array, ds)
        unit = decode_to_unit(modality, float(ds.RescaleSlope), float(ds.RescaleIntercept),
                              ds.BitsStored, ds.PhotometricInterpretation == "MONOCHROME1")
        assert np.abs(unit - arr).max() < 1.0 / (0.9 * (2**ds.BitsStored - 1))
    assert {p for p, _ in seen} == {"MONOCHROME1", "MONOCHROME2"}
    assert {c for _, c in seen} == {True, False}
    assert (tmp_path / "cohort.csv").is_file() and (tmp_path / "README.txt").is_file()


def test_demo_cohort_is_cached(tmp_path):
    a = load_demo_cohort(n_patients=8, image_shape=(128, 64), data_home=tmp_path)
    stamp = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.dcm"))
    b = load_demo_cohort(n_patients=8, image_shape=(128, 64), data_home=tmp_path)
    assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.dcm")) == stamp
    assert a.frame["patient_id"].tolist() == b.frame["patient_id"].tolist()
    assert isinstance(a.frame["keypoints"][0], list)
    assert not list(tmp_path.glob("*.partial"))
