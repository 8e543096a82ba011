"""`fracsurv demo` end to end on a tiny configuration."""

import re

from fracsurv.cli import main


def test_demo_writes_report_with_every_section(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRACSURV_DATA", str(tmp_path / "data"))
    assert main(["demo", "--out", str(tmp_path), "--tiny", "--n-patients", "200",
                 "--image-shape", "128x64"]) == 0
    html = (tmp_path / "report.html").read_text()
    assert "SIMULATED DATA" in html
    for anchor in ("cohort", "models", "td-auc", "km", "hr", "decision", "examples", "gradcam",
                   "futures", "run"):
        assert f'id="{anchor}"' in html
    # every model row has a C-index with a CI, e.g. "0.712 (0.650-0.770)"
    assert len(re.findall(r"0\.\d{3} \(0\.\d{3}-0\.\d{3}\)", html)) >= 2
    assert "Oracle (true log-hazard)" in html
    assert html.count("data:image/png;base64,") >= 6
    assert "Kaplan-Meier by risk group" in html and "Clinical fidelity" in html
    # the learned cropper's detection table and the fusion model are in the report
    assert "VertebraCropper (test split)" in html
    assert "FusionSurvival (13 crops + clinical)" in html
    _check_machine_readable_results(tmp_path)
    out = capsys.readouterr().out
    assert "demo finished" in out and "risk groups (test)" in out
    assert "VertebraCropper trained on" in out
    # components that do not exist yet are announced, never faked
    assert "skipped: generated future radiographs" not in out
    # by default the shipped generator and image pVF scorer are used, not trained
    assert "DiffXGenerator: pretrained" in out and "DiffXGenerator trained on" not in out
    assert "fracsurv.pretrained.load(&#x27;diffx&#x27;)" in html or \
        "fracsurv.pretrained.load('diffx')" in html


def test_demo_retrain_trains_the_image_models(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FRACSURV_DATA", str(tmp_path / "data"))
    assert main(["demo", "--out", str(tmp_path), "--tiny", "--retrain", "--n-patients", "120",
                 "--image-shape", "64x32"]) == 0
    out = capsys.readouterr().out
    assert "DiffXGenerator trained on" in out and "DiffXGenerator: pretrained" not in out
    assert "trained in the demo" in (tmp_path / "report.html").read_text()


def _check_machine_readable_results(folder):
    """results.json, the CSVs and the figures agree with direct computations (issue 21)."""
    import json

    import numpy as np
    import pandas as pd
    from lifelines.statistics import pairwise_logrank_test
    from sklearn.metrics import roc_auc_score

    from fracsurv.metrics import holm_adjust

    res = json.loads((folder / "results.json").read_text())
    for key in ("table-4-hazard-ratios", "table-5-hazard-ratios", "table-5-lr-tests",
                "logrank-pairwise", "median-survival", "calibration", "pvf-auroc"):
        assert key in res["tables"], key
        assert (folder / res["tables"][key]["csv"]).exists()
    for key in ("km", "pvf-roc", "calibration", "table-4-forest"):
        assert (folder / "figures" / f"{key}.png").exists()
        assert (folder / "figures" / f"{key}.svg").exists()
    data = pd.read_csv(folder / "data" / "test_split.csv")
    pw = pd.read_csv(folder / "tables" / "logrank-pairwise.csv")
    ref = pairwise_logrank_test(data["time"], data["risk_group"], data["event"]).summary
    for _, r in pw.iterrows():
        key = (r["group A"], r["group B"]) if (r["group A"], r["group B"]) in ref.index \
            else (r["group B"], r["group A"])
        assert r["p"] == __import__("pytest").approx(ref.loc[key, "p"], rel=1e-6)
    np.testing.assert_allclose(pw["p (Holm)"], holm_adjust(pw["p"]), rtol=1e-9)
    auc = {r["row"]: r["auc"] for r in res["tables"]["pvf-auroc"]["records"]}
    assert auc["crop pVF scorer (pvf)"] == __import__("pytest").approx(
        roc_auc_score(data["prevalent_vf"], data["pvf"]))
    cal = pd.read_csv(folder / "tables" / "calibration.csv")
    assert (cal.groupby("model")["n"].sum() == len(data)).all()
    # Table 5's LR test of the nested models equals a direct unpenalised lifelines fit
    from lifelines import CoxPHFitter

    lr = pd.read_csv(folder / "tables" / "table-5-lr-tests.csv").set_index(["reduced", "full"])
    cols = ["age", "female", "bmi"]
    d = data.assign(bpvf=data["bpvf"] / 0.1, gpvf=data["gpvf"] / 0.1)
    fit = lambda c: CoxPHFitter().fit(d[[*c, "time", "event"]], "time", "event")  # noqa: E731
    want = 2 * (fit(["bpvf", "gpvf", *cols]).log_likelihood_ - fit(cols).log_likelihood_)
    # the statistic is reported clipped at 0: a nested fit cannot lose likelihood, so a
    # negative difference (near-collinear scores of the tiny models) is numerical
    assert lr.loc[("Clinical model", "Score-based model"), "LR chi2"] == \
        __import__("pytest").approx(max(want, 0.0), rel=1e-5, abs=1e-9)


def test_demo_on_a_cohort_without_enough_events_is_a_one_line_usage_error(tmp_path, capsys,
                                                                          monkeypatch):
    # 40 patients of the demo cohort hold a single event: nothing can be analysed, so the
    # demo says so at once (it used to crash minutes later in td_auc_figure)
    monkeypatch.setenv("FRACSURV_DATA", str(tmp_path / "data"))
    assert main(["demo", "--out", str(tmp_path / "out"), "--tiny", "--n-patients", "40",
                 "--image-shape", "64x32"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and err[0].startswith("fracsurv demo: error: ")
    assert "1 fracture event" in err[0] and "--n-patients" in err[0]
    assert not (tmp_path / "out" / "report.html").exists()


def test_the_demo_uses_the_shipped_image_models(tmp_path):
    """Issue 20: outside --tiny/--retrain the cropper, the pVF scorer and the fusion model
    come from fracsurv.pretrained, and nothing of them is trained in the demo."""
    import numpy as np

    from fracsurv.contract import CLINICAL_COLUMNS
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.demo.context import DemoContext
    from fracsurv.demo.data import stage_crops, stage_pvf
    from fracsurv.demo.models import stage_models
    from fracsurv.pretrained.train import survival_target
    from fracsurv.report.html import Report

    c = make_spine_cohort(40, image_shape=(512, 256), random_state=3301, dicom=False,
                          n_followups=0)
    # outcomes of this plumbing test: every other patient an event, so the Cox fits run
    frame = c.frame.assign(time=c.target["time"], event=np.arange(40) % 2)
    ctx = DemoContext(out=tmp_path, seed=0, tiny=False, report=Report("t"), quiet=True)
    ctx.train, ctx.test = frame.iloc[:20].copy(), frame.iloc[20:].copy()
    ctx.y_train, ctx.y_test = survival_target(ctx.train), survival_target(ctx.test)
    ctx.clinical_columns = list(CLINICAL_COLUMNS)
    stage_crops(ctx)
    assert ctx.model_sources["VertebraCropper"] == "fracsurv.pretrained.load('vertebra-cropper')"
    # the stacks the shipped pvf-scorer was trained on: 13 vertebrae, each filling 64 x 64
    assert np.asarray(ctx.test["crops"].iloc[0]).shape == (13, 64, 64)
    # the shipped detector on the demo's 512 x 256 images
    assert ctx.detection["sensitivity"] > 0.85 and ctx.detection["precision"] > 0.85
    stage_pvf(ctx)
    assert ctx.model_sources["PVFScorer"] == "fracsurv.pretrained.load('pvf-scorer')"
    assert ctx.test["bpvf"].between(0, 1).all()
    weights = {k: v.clone() for k, v in ctx.fitted["PVFScorer"].module_.state_dict().items()}
    stage_models(ctx)
    assert ctx.model_sources["FusionSurvival"] == "fracsurv.pretrained.load('fusion-survival')"
    fusion, cols = ctx.models["FusionSurvival (13 crops + clinical)"]
    assert list(fusion.clinical_columns) == list(CLINICAL_COLUMNS) and "crops" in cols
    assert all((weights[k] == v).all() for k, v in
               ctx.fitted["PVFScorer"].module_.state_dict().items())


def test_cam_body_share_is_the_area_share_for_a_map_blind_to_anatomy():
    import numpy as np

    from fracsurv.datasets import make_spine_cohort
    from fracsurv.demo.explain import cam_body_share
    from fracsurv.vertebrae.crops import CropStacker

    c = make_spine_cohort(2, image_shape=(256, 128), n_followups=0, random_state=0, dicom=False)
    stacker = CropStacker(crop_size=(32, 32), resize="fill").fit(c.frame)
    image, verts = c.frame["image"][0], c.frame["keypoints"][0]
    n = sum(s is not None for s in stacker.slot_placements(image.shape, verts))
    flat = cam_body_share(stacker, image.shape, verts, np.ones((stacker.n_crops, 32, 32)))
    assert len(flat) == n > 5
    mass, area, grade = np.asarray(flat).T
    np.testing.assert_allclose(mass, area)  # a constant map: mass share = area share
    assert ((0.1 < area) & (area < 0.9)).all() and set(grade) <= {0, 1, 2, 3}
    yy, xx = np.mgrid[:32, :32]
    centre = np.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / 40.0)
    corners = 1.0 - centre
    on = np.asarray(cam_body_share(stacker, image.shape, verts, np.stack([centre] * 13)))
    off = np.asarray(cam_body_share(stacker, image.shape, verts, np.stack([corners] * 13)))
    assert (on[:, 0] > on[:, 1]).all() and (off[:, 0] < off[:, 1]).all()


def test_the_shipped_generator_gets_un_equalised_dicom_images_and_its_futures_get_clahe(tmp_path):
    """The shipped DiffX generator was trained on the simulator's un-equalised images;
    the crop scorer on CLAHE images. Each gets its own domain."""
    import numpy as np

    from fracsurv.datasets import make_spine_cohort
    from fracsurv.demo.context import DemoContext
    from fracsurv.demo.data import GENERATOR_IMAGE, _generator, stage_images, to_scorer_domain
    from fracsurv.io import load_image
    from fracsurv.io.preprocess import equalize_clahe
    from fracsurv.report.html import Report

    c = make_spine_cohort(4, image_shape=(128, 64), random_state=0, dicom=True,
                          out_dir=tmp_path / "cohort", n_followups=0)
    ctx = DemoContext(out=tmp_path, seed=0, tiny=False, report=Report("t"), quiet=True)
    ctx.train, ctx.test = c.frame.iloc[:2].copy(), c.frame.iloc[2:].copy()
    stage_images(ctx)
    raw, eq = (load_image(ctx.test[col].iloc[0]) for col in (GENERATOR_IMAGE, "image"))
    assert raw.shape == eq.shape and np.abs(raw - eq).mean() > 0.02  # CLAHE on one only
    gen = ctx.fitted["DiffXGenerator"] = _generator(ctx)
    assert gen.image_column == GENERATOR_IMAGE
    out = to_scorer_domain(ctx, [raw])
    loader = ctx.fitted["DicomLoader"]
    np.testing.assert_allclose(out[0], equalize_clahe(raw, loader.clahe_clip_limit,
                                                      loader.clahe_kernel_size,
                                                      loader.clahe_backend), atol=1e-6)
    # ... which is what the loader itself makes of the same DICOM file (float16 cache aside)
    assert np.abs(out[0] - eq).mean() < 0.005
    # a generator trained on the loader's output (--retrain) is left in that domain
    gen.set_params(image_column="image")
    np.testing.assert_array_equal(to_scorer_domain(ctx, [raw])[0], raw)
