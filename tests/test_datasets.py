"""The synthetic spine cohort: documented ranges, pixel/keypoint agreement, DICOM round trip."""

import itertools

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from skimage.draw import polygon as fill_polygon
from sksurv.metrics import concordance_index_censored

from fracsurv.datasets import CLINICAL_COLUMNS, load_demo_cohort, make_spine_cohort
from fracsurv.datasets._ageing import AgeingTraits
from fracsurv.datasets._dicom import decode_to_unit
from fracsurv.metrics.images import ms_ssim
from fracsurv.vertebrae.genant import grade_vertebrae


@pytest.fixture(scope="module")
def large():
    """Clinical data, keypoints and outcomes of 3,000 patients, without images (fast)."""
    return make_spine_cohort(3000, random_state=7, images=False)


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
    assert f["age"].between(50, 95).all() and 64 < f["age"].mean() < 68
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


def test_hazard_uses_the_grades_of_the_final_keypoints(large):
    """One source of truth: labels and hazard come from the keypoints, on every patient."""
    truth = large.truth.patients
    n_vf, sdi = [], []
    for cell in large.frame["keypoints"]:
        pts = np.array([v["points"] for v in cell])
        graded = np.array([v["level"] not in ("C7", "T1", "T2", "T3") for v in cell])
        grades = grade_vertebrae(pts)[0][graded]
        n_vf.append(int((grades >= 1).sum()))
        sdi.append(int(grades.sum()))
    assert np.array_equal(n_vf, truth["n_prevalent_vf"])
    assert np.array_equal(sdi, truth["sdi"])
    assert np.array_equal(np.array(n_vf) > 0, large.frame["prevalent_vf"].to_numpy() == 1)
    # the documented log-hazard, recomputed from the table
    f = large.frame
    z = (truth["spine_bmd"] - 0.895) / 0.212
    lp = (0.35 * (f["age"] - 66) / 10 + 0.25 * f["female"] - 0.10 * (f["bmi"] - 24) / 5
          - 0.30 * (f["tscore_fn"] + 1.5) - 0.40 * z + 0.30 * np.minimum(truth["n_prevalent_vf"], 3)
          + 0.25 * np.minimum(truth["sdi"], 6) + 0.45 * f["glucocorticoids"]
          + 0.35 * f["prior_fracture"] + 0.20 * f["parental_hip_fracture"] + 0.15 * f["smoking"]
          + 0.20 * f["rheumatoid_arthritis"] + 0.15 * f["secondary_osteoporosis"]
          + 0.15 * f["alcohol_3plus"])
    np.testing.assert_allclose(lp, large.truth.log_hazard, atol=1e-9)


# seed 000 Table 1: (mean, SD or None for proportions)
TABLE1 = {"age": (65.7, 8.5), "bmi": (24.0, 3.2), "tscore_fn": (-1.7, 1.2),
          "height_cm": (159.1, 8.5), "weight_kg": (61.1, 10.6), "female": (0.66, None),
          "prevalent_vf": (0.186, None), "prior_fracture": (0.074, None),
          "glucocorticoids": (0.047, None), "rheumatoid_arthritis": (0.027, None),
          "secondary_osteoporosis": (0.020, None)}


@pytest.mark.parametrize("column", sorted(TABLE1))
def test_population_matches_the_diffx_cohort(large, column):
    values = large.frame[column].to_numpy(dtype=float)
    mean, sd = TABLE1[column]
    se = values.std() / np.sqrt(len(values))
    assert abs(values.mean() - mean) < 3.5 * se, (values.mean(), mean)
    if sd is not None:
        assert abs(values.std() - sd) < 0.12 * sd, (values.std(), sd)


def test_events_and_followup_as_in_the_diffx_cohort(large):
    y = large.target
    assert 0.085 < y["event"].mean() < 0.12
    assert 30 < 12 * y["time"].mean() < 40  # months; seed: 34.8


def test_spine_bmd_correlates_with_the_femoral_neck_tscore(large):
    bmd = large.truth.patients["spine_bmd"]
    r = np.corrcoef(bmd, large.frame["tscore_fn"])[0, 1]
    assert 0.58 < r < 0.72
    assert abs(bmd.mean() - 0.895) < 0.02 and abs(bmd.std() - 0.212) < 0.02


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


def test_parallel_generation_is_identical(monkeypatch):
    monkeypatch.setenv("FRACSURV_MIN_PARALLEL_S", "0")  # workers even for a short job
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
    assert not list(tmp_path.glob("*.partial*"))


def test_two_processes_building_the_demo_cohort_both_succeed(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from fracsurv.datasets import load_demo_cohort; "
            "b = load_demo_cohort(n_patients=12, image_shape=(64, 32), data_home=sys.argv[1]); "
            "print(len(b.frame), b.frame['patient_id'].iloc[-1])")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in outs]
    assert outs[0][0] == outs[1][0] and outs[0][0].startswith("12 ")
    assert not list(tmp_path.glob(".*partial*"))
    assert load_demo_cohort(n_patients=12, image_shape=(64, 32),
                            data_home=tmp_path).frame.shape[0] == 12


def test_a_damaged_demo_cache_is_rebuilt(tmp_path, caplog):
    a = load_demo_cohort(n_patients=6, image_shape=(64, 32), data_home=tmp_path)
    folder = next(p for p in tmp_path.iterdir() if p.name.startswith("spine_"))
    (folder / "cohort.csv").write_text("patient_id,keypoints\nP0,{not json")
    (tmp_path / f".{folder.name}.partial-killed").mkdir()  # left by a killed build
    with caplog.at_level("WARNING", logger="fracsurv.datasets"):
        b = load_demo_cohort(n_patients=6, image_shape=(64, 32), data_home=tmp_path)
    assert "damaged" in caplog.text
    assert b.frame["patient_id"].tolist() == a.frame["patient_id"].tolist()
    assert not list(tmp_path.glob(".*partial*"))


def test_ageing_only_moves_forward():
    rng = np.random.default_rng(0)
    traits = AgeingTraits.draw(62.0, True, False, rng)
    states = [traits.at(t) for t in (0, 2, 5, 10, 20)]
    for old, new in itertools.pairwise(states):
        assert len(new.plaques) >= len(old.plaques)  # plaques persist, new ones appear
        assert (new.disc_scale <= old.disc_scale).all()
        assert (new.osteophyte_mm >= old.osteophyte_mm).all()
        assert new.cortex_mm <= old.cortex_mm and new.endplate_mm >= old.endplate_mm
    assert len(states[-1].plaques) > len(states[0].plaques)
    assert states[-1].disc_scale.mean() < states[0].disc_scale.mean()


def test_plaque_load_tracks_age():
    rng = np.random.default_rng(1)
    ages = rng.uniform(50, 90, 400)
    load = [AgeingTraits.draw(a, True, False, rng).at(0.0).plaques[:, 2].sum() for a in ages]
    assert np.corrcoef(ages, load)[0, 1] > 0.85


def test_followup_is_the_same_patient_aged():
    """MS-SSIM(baseline, follow-up) >= 0.8 without a new fracture, far above two patients."""
    b = make_spine_cohort(12, image_shape=(256, 128), random_state=21)
    fu = b.followups.set_index("patient_id").loc[b.frame["patient_id"]]
    keep = ~fu["incident_vf_before"].to_numpy()
    same = ms_ssim([b.frame["image"][i] for i in np.flatnonzero(keep)],
                   [b.frame["followup_image"][i] for i in np.flatnonzero(keep)])
    assert keep.sum() >= 8 and np.median(same) >= 0.8 and same.min() > 0.6
    other = ms_ssim(list(b.frame["image"][:6]), list(b.frame["image"][6:12]))
    assert other.mean() < np.median(same) - 0.15


def test_oracle_is_the_ceiling(large):
    """The true log-hazard beats Cox models fitted on other patients, also with the truth's covariates."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    test = make_spine_cohort(3000, random_state=8, images=False)

    def design(b, full):
        X = b.frame[list(CLINICAL_COLUMNS)].to_numpy(dtype=float)
        t = b.truth.patients
        extra = [np.minimum(t["n_prevalent_vf"], 3), np.minimum(t["sdi"], 6), t["spine_bmd"]]
        return np.column_stack([X, *extra]) if full else X

    def c(risk):
        return concordance_index_censored(test.target["event"], test.target["time"], risk)[0]

    oracle = c(test.truth.log_hazard)
    for full in (False, True):
        cox = CoxPHSurvivalAnalysis().fit(design(large, full), large.target)
        assert oracle >= c(cox.predict(design(test, full))) - (0.002 if full else -0.01)


def test_openjpeg_encoder_stays_quiet(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO)
    make_spine_cohort(8, image_shape=(64, 32), random_state=3, out_dir=tmp_path)
    assert any(p.suffix == ".dcm" for p in (tmp_path / "images").iterdir())
    assert not [r for r in caplog.records if "tile number" in r.getMessage()]


def test_demo_cache_is_keyed_by_generator_version(tmp_path):
    from fracsurv.datasets.spine import GENERATOR_VERSION

    load_demo_cohort(n_patients=4, image_shape=(64, 32), data_home=tmp_path)
    names = [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert GENERATOR_VERSION == 4 and names == ["spine_v4_n4_64x32_rs2024"]


def _one_patient(shape=(512, 256)):
    """A planned patient and a renderer holding everything but BMD and age fixed."""
    from fracsurv.datasets._patient import plan_patient
    from fracsurv.datasets._render import PatientLook, render

    row = {"age": 60.0, "female": 1, "smoking": 0, "height_cm": 158.0, "bmi": 24.0,
           "fractures": []}
    plan = plan_patient(np.random.default_rng(5), row, "lumbo-sacral", shape)
    look = PatientLook.draw(plan.ageing, 24.0, True, np.random.default_rng(6))

    def image(spine_bmd, years):
        return render(plan.column, window_mm=plan.window, shape=shape, spine_bmd=spine_bmd,
                      bmi=24.0, look=look, state=plan.ageing.at(years), profile=plan.profile,
                      facing_left=plan.facing_left, rng=np.random.default_rng(7))[0]

    masks = np.zeros(shape, bool)
    for p in plan.vertebrae["points"]:
        p = np.array(p)
        rr, cc = fill_polygon(p[[0, 1, 2, 5, 4, 3], 1], p[[0, 1, 2, 5, 4, 3], 0], shape)
        masks[rr, cc] = True
    return image, masks, plan


def test_spine_bmd_is_visible_as_trabecular_density():
    image, bodies, _ = _one_patient()
    low, high = image(0.55, 0.0), image(1.25, 0.0)
    gain_inside = high[bodies].mean() - low[bodies].mean()
    far = np.zeros_like(bodies)
    far[:, :20] = True  # a strip of soft tissue away from the spine
    assert gain_inside > 0.03
    assert gain_inside > 4 * abs(high[far].mean() - low[far].mean())


def test_ageing_is_visible_anterior_to_the_spine():
    """Twenty-five years later: aortic plaques in front of the bodies, nothing else moves much."""
    from scipy import ndimage

    image, bodies, plan = _one_patient()
    young, old = image(0.9, 0.0), image(0.9, 25.0)
    assert len(plan.ageing.at(25.0).plaques) > len(plan.ageing.at(0.0).plaques) + 5
    band = np.zeros_like(bodies)
    for p in plan.vertebrae["points"]:
        p = np.array(p)
        a = (p[2] - p[0]) / np.linalg.norm(p[2] - p[0])
        for k in np.linspace(1, 35, 18):  # 1-35 mm in front of the anterior wall
            for x, y in (p[[2, 5]] + a * k / (plan.window[2] / bodies.shape[0])).round().astype(int):
                if 0 <= y < band.shape[0] and 0 <= x < band.shape[1]:
                    band[y, x] = True
    band = ndimage.binary_dilation(band, iterations=2) & ~bodies

    def streaks(img):  # share of the band with a bright, thin structure
        return ((img - ndimage.gaussian_filter(img, 3))[band] > 0.12).mean()

    assert streaks(old) > 1.8 * streaks(young), (streaks(old), streaks(young))  # 0.048 vs 0.024
