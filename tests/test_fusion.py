"""FusionSurvival: every fusion mode learns, the heads compute what they claim,
scikit-learn integration, safe persistence, clear errors, augmentation geometry."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sksurv.functions import StepFunction
from sksurv.util import Surv

from fracsurv.metrics import concordance_index
from fracsurv.nn import load_model
from fracsurv.nn.augment import RandSaltPepper, make_augmenter, rotation_padded_shape
from fracsurv.survival import FusionSurvival

TAB = ["x1", "x2"]
FAST = {"backbone": "resnet10-tiny", "clinical_columns": TAB, "clinical_hidden_units": (8, 16),
        "max_epochs": 10, "batch_size": 32, "lr": 3e-3, "augment": False,
        "validation_fraction": 0.0, "scheduler": None, "random_state": 0, "device": "cpu"}


def _cohort(n, rng):
    """A bright square in one crop (or in the radiograph) and x1 both raise the hazard.

    Rows carry a 3-crop stack (3 x 12 x 12), a 24 x 12 radiograph, two clinical
    columns (x2 is noise) and a 0/1 'lesion' label; times are exponential with
    log-hazard 2.5 * lesion + 1.5 * x1, about 25 % censored.
    """
    lesion = (rng.random(n) < 0.4).astype(int)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    crops, images = [], []
    for k in range(n):
        stack = rng.normal(0.3, 0.05, (3, 12, 12)).astype(np.float32)
        img = rng.normal(0.3, 0.05, (24, 12)).astype(np.float32)
        if lesion[k]:
            c, r0, c0 = rng.integers(0, 3), rng.integers(1, 7), rng.integers(1, 7)
            stack[c, r0:r0 + 5, c0:c0 + 5] += 0.6
            r1 = rng.integers(1, 18)
            img[r1:r1 + 5, c0:c0 + 5] += 0.6
        crops.append(stack)
        images.append(img)
    lp = 2.5 * lesion + 1.5 * x1
    t_event = rng.exponential(1.0, n) / np.exp(lp)
    censor = rng.exponential(3.0, n)
    y = Surv.from_arrays(t_event <= censor, np.maximum(np.minimum(t_event, censor), 1e-3))
    X = pd.DataFrame({"patient_id": [f"P{k}" for k in range(n)], "crops": crops, "image": images,
                      "x1": x1, "x2": x2, "lesion": lesion},
                     index=pd.RangeIndex(1000, 1000 + n))
    return X, y, lp


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(0)
    return _cohort(128, rng), _cohort(100, rng)


@pytest.fixture(scope="session")
def fitted(data):
    (X, y, _), _ = data
    out = {}
    # the image-only model trains on the full batch: with 32-row batches its test C
    # ranged 0.56-0.67 over seeds (and thread counts), 0.68-0.70 with the full batch
    extra = {"image_only": {"batch_size": 128, "lr": 1e-2}}
    for fusion in ("intermediate", "late", "alpha", "image_only"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out[fusion] = FusionSurvival(image_input="crops", fusion=fusion,
                                         clinical_weight=0.5,
                                         **{**FAST, "max_epochs": 20,
                                            **extra.get(fusion, {})}).fit(X, y)
    return out


# -- learning -------------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["intermediate", "late", "alpha", "image_only"])
def test_every_fusion_mode_learns_above_chance(data, fitted, fusion):
    _, (Xt, yt, lp) = data
    c = fitted[fusion].score(Xt, yt)
    oracle = concordance_index(yt, lp)
    # chance is 0.5; with 100 test rows the C-index's standard error is about 0.03
    assert c > 0.6, (fusion, c, oracle)
    assert np.isfinite(fitted[fusion].predict(Xt)).all()


def test_multimodal_beats_each_modality_alone(data, fitted):
    """The image-only model cannot see x1; intermediate fusion sees both."""
    _, (Xt, yt, _) = data
    assert fitted["intermediate"].score(Xt, yt) > fitted["image_only"].score(Xt, yt) + 0.02


def test_full_image_input_with_augmentation_learns(data):
    (X, y, _), (Xt, yt, _) = data
    est = FusionSurvival(image_input="image", fusion="image_only", input_shape=(24, 12),
                         **{**FAST, "augment": True, "max_epochs": 15})
    est.fit(X, y)
    # rotation padding: the 24 x 12 input grows so a 15 degree turn cuts nothing
    assert est.input_shape_ == rotation_padded_shape((24, 12), 15.0)
    assert est.input_shape_[0] > 24 and est.input_shape_[1] > 12
    assert est.n_channels_ == 1
    assert est.score(Xt, yt) > 0.6


# -- what the heads compute ------------------------------------------------------
def test_alpha_model_is_the_weighted_sum_of_sub_model_risks(data, fitted):
    _, (Xt, _, _) = data
    est = fitted["alpha"]
    r = est.sub_model_risks(Xt)
    np.testing.assert_allclose(est.predict(Xt), 0.5 * r["risk_clinical"] + 0.5 * r["risk_image"],
                               rtol=1e-4, atol=1e-5)
    assert est.clinical_weight_ == pytest.approx(0.5)


def test_late_fusion_is_a_linear_head_on_frozen_sub_models(data, fitted):
    _, (Xt, _, _) = data
    est = fitted["late"]
    r = est.sub_model_risks(Xt).to_numpy()
    assert est.late_weights_.shape == (2,)
    np.testing.assert_allclose(est.predict(Xt), r @ est.late_weights_, rtol=1e-4, atol=1e-5)
    # both sub-models were pre-trained (their own stage) before the head was fitted
    assert [h["stage"] for h in est.histories_] == ["tabular", "image"]
    # each sub-model ranks on its own: clinical risk follows x1, image risk the lesion
    assert np.corrcoef(r[:, 0], Xt["x1"])[0, 1] > 0.5
    assert r[Xt["lesion"].to_numpy() == 1, 1].mean() > r[Xt["lesion"].to_numpy() == 0, 1].mean()


class _SnapshotBeforeFusion(FusionSurvival):
    """Records the clinical branch's weights when the fusion stage starts."""

    def on_stage_begin(self, module, stage, frozen):
        if stage == "fusion":
            self.snapshot_ = {k: v.clone() for k, v in module.tabular.state_dict().items()}


@pytest.mark.parametrize("freeze", [True, False])
def test_pretrained_tabular_branch_frozen_or_fine_tuned(data, freeze):
    (X, y, _), _ = data
    est = _SnapshotBeforeFusion(image_input="crops", fusion="alpha", clinical_weight=0.5,
                                pretrain="tabular", freeze_pretrained=freeze,
                                **{**FAST, "max_epochs": 3})
    est.fit(X, y)
    assert [h["stage"] for h in est.histories_] == ["tabular", "fusion"]
    assert est.histories_[1]["frozen"] == (["tabular"] if freeze else [])
    after = est.module_.tabular.state_dict()
    same = all(torch.equal(after[k], v) for k, v in est.snapshot_.items())
    assert same is freeze
    assert all(p.requires_grad for p in est.module_.parameters())  # unfrozen after fit


class _RecordStages(FusionSurvival):
    """Records every on_stage_begin call."""

    def on_stage_begin(self, module, stage, frozen):
        self.calls_ = [*getattr(self, "calls_", []), (stage, frozen, module.stage)]


def test_on_stage_begin_is_called_once_per_trained_stage(data):
    (X, y, _), _ = data
    est = _RecordStages(image_input="crops", fusion="late",
                        **{**FAST, "clinical_hidden_units": (), "max_epochs": 2}).fit(X, y)
    # the linear clinical branch and the FC are fitted in closed form: only the image
    # sub-model has a training stage, with the network already switched to it
    assert est.calls_ == [("image", ("tabular", "fuse"), "image")]
    assert est.histories_[-1]["frozen"] == ["tabular", "fuse"]


def test_alpha_search_picks_from_the_grid(data):
    (X, y, _), _ = data
    est = FusionSurvival(image_input="crops", fusion="alpha", clinical_weight="search",
                         clinical_weight_grid=(0.2, 0.9),
                         **{**FAST, "max_epochs": 4, "validation_fraction": 0.3, "patience": 0})
    est.fit(X, y)
    assert set(est.clinical_weight_scores_) == {0.2, 0.9}
    scores = est.clinical_weight_scores_
    assert est.clinical_weight_ == max(scores, key=scores.get)
    assert float(est.module_.alpha) == pytest.approx(est.clinical_weight_)
    assert all(0.0 <= v <= 1.0 for v in est.clinical_weight_scores_.values())


def test_alpha_names_are_deprecated_for_clinical_weight(data):
    """The former names alpha / alpha_grid still work, warn at fit, and fit the same model;
    alpha_ / alpha_scores_ read the new attributes (with a warning)."""
    (X, y, _), (Xt, _, _) = data
    kw = {**FAST, "max_epochs": 2, "validation_fraction": 0.3, "patience": 0}
    new = FusionSurvival(image_input="crops", fusion="alpha", clinical_weight="search",
                         clinical_weight_grid=(0.2, 0.9), **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the new names do not warn
        new.fit(X, y)
    old = FusionSurvival(image_input="crops", fusion="alpha", alpha="search",
                         alpha_grid=(0.2, 0.9), **kw)
    with pytest.warns(FutureWarning, match="'alpha' is deprecated.*'clinical_weight'"), \
            pytest.warns(FutureWarning, match="'alpha_grid' is deprecated.*'clinical_weight_grid'"):
        old.fit(X, y)
    assert old.clinical_weight_ == new.clinical_weight_
    assert old.clinical_weight_scores_ == new.clinical_weight_scores_
    np.testing.assert_allclose(old.predict(Xt), new.predict(Xt), rtol=1e-6, atol=1e-6)
    with pytest.warns(FutureWarning, match="'alpha_' is deprecated.*'clinical_weight_'"):
        assert old.alpha_ == old.clinical_weight_
    with pytest.warns(FutureWarning, match="'alpha_scores_' is deprecated"):
        assert old.alpha_scores_ == old.clinical_weight_scores_
    with pytest.raises(AttributeError):
        old.alpha_ = 0.3
    assert not hasattr(FusionSurvival(), "alpha_")  # unfitted: neither name exists


def test_early_stopping_on_validation_cindex(data):
    (X, y, _), _ = data
    est = FusionSurvival(image_input="crops", fusion="image_only",
                         **{**FAST, "max_epochs": 30, "validation_fraction": 0.25,
                            "patience": 2, "lr": 3e-2})
    est.fit(X, y)
    hist = est.histories_[-1]["history"]
    assert all("valid_cindex" in h for h in hist)
    assert len(hist) < 30  # stopped early


# -- survival API, determinism -------------------------------------------------
def test_survival_functions(data, fitted):
    _, (Xt, _, _) = data
    est = fitted["intermediate"]
    sf = est.predict_survival_function(Xt.iloc[:4])
    assert isinstance(sf[0], StepFunction)
    arr = est.predict_survival_function(Xt.iloc[:4], return_array=True)
    assert arr.shape == (4, len(est.unique_times_))
    assert np.all(np.diff(arr, axis=1) <= 1e-12) and arr.min() >= 0 and arr.max() <= 1
    # higher risk -> lower survival at every time
    risk = est.predict(Xt.iloc[:4])
    hi, lo = int(np.argmax(risk)), int(np.argmin(risk))
    assert np.all(arr[hi] <= arr[lo] + 1e-12)


def test_same_seed_same_model(data):
    (X, y, _), (Xt, _, _) = data
    kw = {**FAST, "max_epochs": 2, "augment": True}
    a = FusionSurvival(image_input="crops", **kw).fit(X, y).predict(Xt)
    b = FusionSurvival(image_input="crops", **kw).fit(X, y).predict(Xt)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- scikit-learn integration ---------------------------------------------------
def test_clone_gridsearch_and_pipeline(data):
    (X, y, _), _ = data
    est = FusionSurvival(image_input="crops", fusion="alpha", **{**FAST, "max_epochs": 3})
    c = clone(est)
    assert c.get_params() == est.get_params() and not hasattr(c, "module_")
    gs = GridSearchCV(est, {"clinical_weight": [0.2, 0.8]},
                      cv=KFold(2, shuffle=True, random_state=0))
    gs.fit(X, y)
    assert gs.best_params_["clinical_weight"] in (0.2, 0.8)
    assert np.isfinite(gs.cv_results_["mean_test_score"]).all()
    assert gs.best_estimator_.clinical_weight_ == gs.best_params_["clinical_weight"]


def test_pipeline_with_crop_stacker_on_synthetic_spines():
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.vertebrae.crops import CropStacker

    cohort = make_spine_cohort(48, image_shape=(64, 32), n_followups=0, random_state=3,
                               dicom=False)
    X, y = cohort.frame, cohort.target
    pipe = Pipeline([("crops", CropStacker(crop_size=(12, 12))),
                     ("fusion", FusionSurvival(image_input="crops", backbone="resnet10-tiny",
                                               max_epochs=2, batch_size=16, augment=True,
                                               validation_fraction=0.0, random_state=0))])
    pipe.fit(X, y)
    fus = pipe.named_steps["fusion"]
    assert fus.n_channels_ == 13  # the default 13 vertebra crops as channels
    assert fus.tabular_columns_ == cohort.clinical_columns
    risk = pipe.predict(X)
    assert risk.shape == (48,) and np.isfinite(risk).all()
    assert 0.0 <= pipe.score(X, y) <= 1.0


# -- persistence -----------------------------------------------------------------
@pytest.mark.parametrize("fusion", ["late", "intermediate"])
def test_save_load_round_trip(data, fitted, fusion, tmp_path):
    _, (Xt, _, _) = data
    est = fitted[fusion]
    est.save(tmp_path / "m")
    assert not list(tmp_path.glob("m/*.pkl"))
    back = load_model(tmp_path / "m")
    assert isinstance(back, FusionSurvival) and back.get_params() == est.get_params()
    np.testing.assert_allclose(back.predict(Xt), est.predict(Xt), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(back.predict_survival_function(Xt, return_array=True),
                               est.predict_survival_function(Xt, return_array=True), atol=1e-10)
    assert FusionSurvival.load(tmp_path / "m").tabular_columns_ == TAB


def test_late_weights_survive_save_load(fitted, tmp_path):
    est = fitted["late"]
    assert est.late_weights_ is not None and est.late_weights_.shape == (2,)
    est.save(tmp_path / "late")
    back = load_model(tmp_path / "late")
    np.testing.assert_allclose(back.late_weights_, est.late_weights_, rtol=1e-6)
    # the saved weights are the loaded network's FC, not a stale copy
    fc = back.module_.fuse.weight.detach().double().numpy().reshape(-1)
    np.testing.assert_allclose(back.late_weights_, fc, rtol=1e-6)
    est2 = fitted["intermediate"]
    est2.save(tmp_path / "inter")
    assert load_model(tmp_path / "inter").late_weights_ is None


def test_model_saved_with_the_alpha_names_loads(data, fitted, tmp_path):
    """config.json of a model saved before the rename: params alpha / alpha_grid,
    meta keys "alpha" and "alpha_scores"."""
    import json

    _, (Xt, _, _) = data
    est = fitted["alpha"]
    est.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    params = config["params"]
    params["alpha"] = params.pop("clinical_weight")
    params["alpha_grid"] = params.pop("clinical_weight_grid")
    config["meta"]["alpha"] = config["meta"].pop("clinical_weight")
    config["meta"]["alpha_scores"] = config["meta"].pop("clinical_weight_scores")
    path.write_text(json.dumps(config))
    back = load_model(tmp_path / "m")
    assert back.clinical_weight_ == pytest.approx(0.5) and back.clinical_weight_scores_ is None
    assert back._clinical_weight() == pytest.approx(0.5)
    np.testing.assert_allclose(back.predict(Xt), est.predict(Xt), rtol=1e-6, atol=1e-6)


# -- errors ------------------------------------------------------------------------
def test_clear_errors(data, fitted):
    (X, y, _), _ = data
    est = FusionSurvival(image_input="crops", **FAST)
    with pytest.raises(ValueError, match="clinical column 'x1'"):
        est.fit(X.drop(columns=["x1"]), y)
    bad = X.copy()
    bad.loc[1005, "x2"] = np.nan
    with pytest.raises(ValueError, match=r"row 1005 .*column 'x2'"):
        est.fit(bad, y)
    bad = X.copy()
    bad.at[1003, "crops"] = None
    with pytest.raises(ValueError, match=r"no image in row 1003"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match=r"no image column 'crops'.*CropStacker"):
        est.fit(X.drop(columns=["crops"]), y)
    with pytest.raises(ValueError, match="'fusion' parameter of FusionSurvival must be"):
        FusionSurvival(fusion="early", **FAST).fit(X, y)
    with pytest.raises(ValueError, match="'clinical_weight' parameter of FusionSurvival must be"):
        FusionSurvival(clinical_weight=1.5, **FAST).fit(X, y)
    with pytest.raises(TypeError, match="DataFrame"):
        est.fit(np.zeros((4, 3)), y[:4])
    model = fitted["image_only"]
    unreadable = X.iloc[:3].copy()
    unreadable.at[1002, "crops"] = "/nonexistent/stack.npy"
    with pytest.raises(ValueError, match=r"cannot read the image of row 1002"):
        model.predict(unreadable)
    wrong = X.iloc[:3].copy()
    wrong.at[1001, "crops"] = np.zeros((5, 12, 12), np.float32)
    with pytest.raises(ValueError, match=r"row 1001 .*5 channels.*built for 3"):
        model.predict(wrong)


# -- augmentation ------------------------------------------------------------------
def test_rotation_padding_keeps_the_whole_image():
    assert rotation_padded_shape((1024, 512), 15.0) == (1122, 760)  # study: 1121 x 759
    h, w = 40, 20
    ph, pw = rotation_padded_shape((h, w), 15.0)
    img = torch.zeros(1, ph, pw)
    top, left = (ph - h) // 2, (pw - w) // 2
    img[0, top:top + h, left:left + w] = 1.0  # the image content fills its own box
    from monai.transforms import Rotate

    for deg in (-15, 15):
        out = torch.as_tensor(Rotate(np.radians(deg), keep_size=True, padding_mode="zeros")(img))
        assert float(out.sum()) == pytest.approx(h * w, rel=0.03)  # nothing rotated out
    unpadded = torch.ones(1, h, w)
    cut = torch.as_tensor(Rotate(np.radians(15), keep_size=True, padding_mode="zeros")(unpadded))
    assert float(cut.sum()) < 0.93 * h * w  # without padding the corners are lost


def test_augmenters():
    x = torch.rand(1, 32, 16) * 0.5 + 0.25
    sp = RandSaltPepper(prob=1.0, amount=0.2)
    sp.set_random_state(0)
    out = sp(x)
    changed = (out != x).float().mean().item()
    assert 0.1 < changed < 0.3
    assert set(torch.unique(out[out != x]).tolist()) <= {float(x.min()), float(x.max())}
    crops = torch.rand(13, 16, 16)
    a = make_augmenter("crops", 0)(crops)
    b = make_augmenter("crops", 0)(crops)
    assert tuple(a.shape) == (13, 16, 16)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b))  # seeded
    assert tuple(make_augmenter("image", 1)(torch.rand(1, 32, 16)).shape) == (1, 32, 16)
    with pytest.raises(ValueError, match="kind"):
        make_augmenter("video")


# -- crop pooling and per-crop auxiliary labels ------------------------------------
def test_pool_crops_ignores_empty_slots():
    from fracsurv.nn.pooling import crops_present, pool_crops

    stack = torch.zeros(3, 4, 2, 2)
    stack[0, :2] = 1.0  # two crops
    stack[1, 3] = 1.0  # one crop
    present = crops_present(stack)
    assert present.tolist() == [[True, True, False, False], [False, False, False, True],
                                [False] * 4]
    values = torch.tensor([[1.0, -2.0, 50.0, 60.0], [7.0, 8.0, 9.0, -1.0], [5.0, 5.0, 5.0, 5.0]])
    assert pool_crops(values, present, "max").tolist() == [1.0, -1.0, 0.0]
    assert pool_crops(values, present, "sum").tolist() == [-1.0, -1.0, 0.0]
    assert pool_crops(values, present, "mean").tolist() == [-0.5, -1.0, 0.0]
    assert pool_crops(values, present, "max", empty=-30.0)[2].item() == -30.0
    feats = torch.arange(24.0).reshape(3, 4, 2)  # (B, N, F): pooled per feature
    assert pool_crops(feats, present, "sum")[0].tolist() == [2.0, 4.0]
    with pytest.raises(ValueError, match="crop pooling"):
        pool_crops(values, present, "median")


def test_ordinal_aux_loss_is_a_sum_of_threshold_bces():
    from fracsurv.survival._fusion_nets import FusionCoxLoss

    risk = torch.tensor([[0.2], [-0.1], [0.4]])
    logits = torch.tensor([[[1.0, -1.0, 0.5], [0.0, 2.0, -2.0]],
                           [[0.3, 0.3, 0.3], [-1.0, -1.0, -1.0]],
                           [[2.0, 1.0, 0.0], [0.5, 0.5, 0.5]]])  # (B, N=2, K=3)
    y = torch.tensor([[1.0, 1.0, 0.0, 2.0], [2.0, 0.0, 3.0, float("nan")],
                      [0.5, 1.0, 1.0, 0.0]])  # time, event, grade of crop 0, of crop 1
    cox = FusionCoxLoss(aux_weight=0.0)(risk, y)
    total = FusionCoxLoss(aux_weight=0.5)((risk, logits), y)
    grades = y[:, 2:]
    known = torch.isfinite(grades)
    targets = torch.stack([(grades >= k).float() for k in (1, 2, 3)], dim=-1)[known]
    # summed over a row's crops and thresholds, averaged over the 3 labelled rows
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[known], targets, reduction="sum") / 3
    assert float(total - cox) == pytest.approx(0.5 * float(expected), rel=1e-6)
    assert int(known.sum()) == 5  # the unknown (NaN) crop is left out
    # one 0/1 label per row (L = 1, K = 1) is the plain mean BCE over rows
    row = FusionCoxLoss(aux_weight=1.0)((risk, logits[:, :1, :1]), y[:, :3]) - cox
    assert float(row) == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:, 0, 0], (y[:, 2] >= 1).float())), rel=1e-6)


def _graded_cohort(n, rng):
    """Crop stacks whose per-crop grade (0..3) sets the brightness of a square;
    log-hazard = 0.8 * sum of grades (an SDI), 4-crop stacks, last slot sometimes empty."""
    grades = rng.choice(4, size=(n, 4), p=[0.7, 0.1, 0.1, 0.1]).astype(float)
    stacks = rng.normal(0.3, 0.05, (n, 4, 12, 12)).astype(np.float32)
    empty = rng.random(n) < 0.3
    for k in range(n):
        for c in range(4):
            stacks[k, c, 3:9, 3:9] += 0.25 * grades[k, c]
    stacks[empty, 3] = 0.0
    grades[empty, 3] = np.nan
    lp = 0.8 * np.nansum(grades, axis=1)
    t = rng.exponential(1.0, n) / np.exp(lp)
    cens = rng.exponential(2.0, n)
    y = Surv.from_arrays(t <= cens, np.maximum(np.minimum(t, cens), 1e-3))
    X = pd.DataFrame({"crops": list(stacks), "crop_grades": list(grades), "x1": rng.normal(size=n),
                      "x2": rng.normal(size=n), "sdi": np.nansum(grades, axis=1)},
                     index=pd.RangeIndex(500, 500 + n))
    return X, y, lp


@pytest.mark.parametrize(("pool", "aux_risk"), [("max", "only"), ("sum", "add")])
def test_per_crop_grade_supervision_learns_the_sdi(pool, aux_risk, tmp_path):
    rng = np.random.default_rng(1)
    (X, y, _), (Xt, yt, _) = _graded_cohort(160, rng), _graded_cohort(120, rng)
    est = FusionSurvival(image_input="crops", fusion="image_only", crop_encoder="shared",
                         crop_pool=pool, aux_column="crop_grades", aux_weight=1.0,
                         aux_risk=aux_risk, **{**FAST, "max_epochs": 12})
    est.fit(X, y)
    assert est.aux_levels_ == 3 and est.aux_per_crop_
    assert est.module_.aux_head.logits.out_features == 3
    risk = est.predict(Xt)
    from scipy.stats import spearmanr

    assert spearmanr(risk, Xt["sdi"])[0] > 0.8  # the image risk ranks by the grade sum (0.90-0.97 seen)
    assert est.score(Xt, yt) > 0.7
    est.save(tmp_path / "m")
    back = load_model(tmp_path / "m")
    assert back.aux_levels_ == 3 and back.aux_per_crop_
    np.testing.assert_allclose(back.predict(Xt), risk, rtol=1e-6, atol=1e-6)


def test_aux_label_errors_name_the_row():
    rng = np.random.default_rng(2)
    X, y, _ = _graded_cohort(20, rng)
    kw = {**FAST, "max_epochs": 1}
    shared = FusionSurvival(image_input="crops", fusion="image_only", crop_encoder="shared",
                            aux_column="crop_grades", **kw)
    with pytest.raises(ValueError, match=r"needs image_input='crops' and crop_encoder='shared'"):
        FusionSurvival(image_input="crops", fusion="image_only", aux_column="crop_grades",
                       **kw).fit(X, y)
    bad = X.copy()
    bad.at[503, "crop_grades"] = np.array([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"row 503 .*has 3 labels for a stack of 4 crops"):
        shared.fit(bad, y)
    bad = X.copy()
    bad.at[507, "crop_grades"] = np.array([0.0, 1.5, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"row 507 .*, crop 1 has 1.5"):
        shared.fit(bad, y)
    bad = X.assign(label=np.where(np.arange(20) == 4, -1.0, 0.0))
    with pytest.raises(ValueError, match=r"row 504 .*has -1.0"):
        clone(shared).set_params(aux_column="label").fit(bad, y)
    with pytest.raises(ValueError, match="'crop_pool' parameter of FusionSurvival must be"):
        clone(shared).set_params(crop_pool="median").fit(X, y)
    # a row-level grade (0..3) is an ordinal label with 3 thresholds
    est = clone(shared).set_params(aux_column="sdi").fit(X.assign(sdi=X["sdi"].clip(0, 3)), y)
    assert est.aux_levels_ == 3 and not est.aux_per_crop_


def test_alpha_search_over_frozen_sub_models_trains_them_once(data):
    (X, y, _), (Xt, _, _) = data
    est = FusionSurvival(image_input="crops", fusion="alpha", clinical_weight="search",
                         clinical_weight_grid=(0.1, 0.5, 0.9), pretrain="both",
                         **{**FAST, "max_epochs": 4, "validation_fraction": 0.3})
    est.fit(X, y)
    # one training per sub-model, not one per clinical weight
    assert [h["stage"] for h in est.histories_] == ["tabular", "image"]
    assert set(est.clinical_weight_scores_) == {0.1, 0.5, 0.9}
    scores = est.clinical_weight_scores_
    assert est.clinical_weight_ == max(scores, key=scores.get)
    # each score is the validation C-index of that weighted sum of the two risks
    rows = est._valid_rows(y, int(np.random.RandomState(0).randint(0, 2**31 - 1)))
    r = est.sub_model_risks(X.iloc[rows]).to_numpy()
    for a, score in est.clinical_weight_scores_.items():
        assert score == pytest.approx(concordance_index(y[rows], a * r[:, 0] + (1 - a) * r[:, 1]))
    rt = est.sub_model_risks(Xt).to_numpy()
    w = est.clinical_weight_
    np.testing.assert_allclose(est.predict(Xt), w * rt[:, 0] + (1 - w) * rt[:, 1],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["add", "only", "none"])
def test_image_risk_reads_the_expected_number_of_graded_vertebrae(mode):
    """With per-crop grades the aux summary is sum over present crops of P(grade >= k)."""
    from fracsurv.survival._fusion_nets import FusionNet

    torch.manual_seed(0)
    net = FusionNet("image_only", "resnet10-tiny", 4, (12, 12), 0, aux_levels=3,
                    aux_per_crop=True, shared_crops=True, aux_risk=mode).eval()
    with torch.no_grad():
        net.aux_head.risk.weight.copy_(torch.tensor([[0.3, 0.2, 0.1]]))
    x = torch.rand(5, 4, 12, 12)
    x[:, 3] = 0.0  # an empty slot
    with torch.no_grad():
        feats, per_crop = net.image.encode(x)
        probs = torch.sigmoid(net.aux_head.logits(per_crop[0]))[:, :3]  # the 3 present crops
        expected_counts = probs.sum(dim=1)  # (B, K)
        aux_term = expected_counts @ torch.tensor([0.3, 0.2, 0.1])
        backbone = net.image.head(feats)[:, 0]
        risk = net(x, torch.zeros(5, 0))[:, 0]
    want = {"add": backbone + aux_term, "only": aux_term, "none": backbone}[mode]
    torch.testing.assert_close(risk, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="aux_risk"):
        FusionNet("image_only", "resnet10-tiny", 4, (12, 12), 0, aux_risk="sometimes")


def test_pipeline_with_per_crop_grades_on_synthetic_spines():
    """CropStacker's grades_column feeds FusionSurvival's per-crop auxiliary label."""
    from fracsurv.datasets import make_spine_cohort
    from fracsurv.vertebrae.crops import CropStacker

    cohort = make_spine_cohort(40, image_shape=(64, 32), n_followups=0, random_state=4,
                               dicom=False)
    X, y = cohort.frame, cohort.target
    pipe = Pipeline([
        ("crops", CropStacker(n_crops=18, crop_size=(12, 12), resize="fill",
                              grades_column="crop_grades")),
        ("fusion", FusionSurvival(image_input="crops", backbone="resnet10-tiny",
                                  crop_encoder="shared", aux_column="crop_grades",
                                  aux_risk="only", fusion="late", max_epochs=2, batch_size=16,
                                  validation_fraction=0.0, random_state=0))])
    pipe.fit(X, y)
    fus = pipe.named_steps["fusion"]
    assert fus.n_channels_ == 18 and fus.aux_per_crop_
    grades = np.concatenate(list(pipe.named_steps["crops"].transform(X)["crop_grades"]))
    assert fus.aux_levels_ == max(1, int(np.nanmax(grades)))
    # prediction needs no grades: the label is training supervision only
    risk = pipe.predict(X)
    Xc = pipe[:-1].transform(X).drop(columns=["crop_grades"])
    np.testing.assert_allclose(fus.predict(Xc), risk, rtol=1e-6)
    r = fus.sub_model_risks(Xc)
    np.testing.assert_allclose(risk, r.to_numpy() @ fus.late_weights_, rtol=1e-4, atol=1e-5)


def test_late_head_fitted_on_every_row(data):
    """head_rows='all': the FC is the penalised 2-covariate Cox fit on all rows' risks,
    and a search over frozen sub-models scores the clinical weight on every row."""
    from fracsurv.survival.loss import cox_nll

    (X, y, _), _ = data
    kw = {**FAST, "max_epochs": 4, "validation_fraction": 0.3}
    est = FusionSurvival(image_input="crops", fusion="late", head_rows="all", **kw).fit(X, y)
    valid = FusionSurvival(image_input="crops", fusion="late", **kw).fit(X, y)
    assert not np.allclose(est.late_weights_, valid.late_weights_)
    r = torch.as_tensor(est.sub_model_risks(X).to_numpy(), dtype=torch.float64)
    scale = r.std(0)
    z = (r - r.mean(0)) / scale
    t = torch.as_tensor(np.ascontiguousarray(y["time"], dtype=float))
    e = torch.as_tensor(np.ascontiguousarray(y["event"], dtype=float))
    w = torch.as_tensor(est.late_weights_, dtype=torch.float64) * scale  # standardised weights

    def loss(v):
        return float(cox_nll(z @ v, t, e, ties="efron") + 1e-2 * (v ** 2).sum())

    best = loss(w)
    for i in range(2):
        for step in (-0.05, 0.05):
            assert loss(w + step * torch.eye(2, dtype=torch.float64)[i]) >= best - 1e-9
    with pytest.raises(ValueError, match="head_rows"):
        clone(est).set_params(head_rows="some").fit(X, y)
    alpha = FusionSurvival(image_input="crops", fusion="alpha", clinical_weight="search",
                           pretrain="both", clinical_weight_grid=(0.2, 0.8), head_rows="all",
                           **kw).fit(X, y)
    ra = alpha.sub_model_risks(X).to_numpy()
    for a, score in alpha.clinical_weight_scores_.items():
        assert score == pytest.approx(concordance_index(y, a * ra[:, 0] + (1 - a) * ra[:, 1]))


def _split_seed(random_state: int) -> int:
    return int(np.random.RandomState(random_state).randint(0, 2**31 - 1))


def _ridge_on_training_rows(est, X, y):
    """The ridge Cox fit on the inner training rows' standardised clinical inputs."""
    from fracsurv.survival import fit_ridge_cox

    train = est._split_rows(y, _split_seed(est.random_state))[0]
    z = ((X[TAB].to_numpy() - est.x_mean_) / est.x_scale_).astype(np.float32)
    t = torch.as_tensor(np.ascontiguousarray(y["time"][train], dtype=float))
    e = torch.as_tensor(np.ascontiguousarray(y["event"][train], dtype=float))
    return z, fit_ridge_cox(torch.as_tensor(z[train]), t, e).numpy()


def test_linear_clinical_branch_is_the_exact_ridge_cox_fit(data):
    """linear_init='cox', clinical_hidden_units=(): the clinical sub-model is fitted, not trained;
    'random' trains it from a random start instead."""
    (X, y, _), _ = data
    kw = {**FAST, "clinical_hidden_units": (), "max_epochs": 3, "validation_fraction": 0.25}
    est = FusionSurvival(image_input="crops", fusion="late", **kw).fit(X, y)
    assert est.histories_[0]["stage"] == "tabular" and est.histories_[0]["history"] == []
    assert [h["stage"] for h in est.histories_] == ["tabular", "image"]
    z, w = _ridge_on_training_rows(est, X, y)
    risk = est.sub_model_risks(X)["risk_clinical"].to_numpy()
    np.testing.assert_allclose(risk, z.astype(float) @ w, rtol=1e-4, atol=1e-5)
    rand = FusionSurvival(image_input="crops", fusion="late", linear_init="random", **kw)
    rand.fit(X, y)
    assert len(rand.histories_[0]["history"]) == 3
    assert not np.allclose(rand.sub_model_risks(X)["risk_clinical"], risk, atol=1e-3)
    with pytest.raises(ValueError, match="linear_init"):
        clone(est).set_params(linear_init="zeros").fit(X, y)


class _SnapshotFirstStage(FusionSurvival):
    """Records the clinical branch's weights when the first training stage starts."""

    def on_stage_begin(self, module, stage, frozen):
        if not hasattr(self, "start_"):
            self.start_ = {k: v.clone() for k, v in module.tabular.state_dict().items()}


@pytest.mark.parametrize("fusion", ["intermediate", "late"])
def test_mlp_clinical_branch_starts_at_the_linear_cox_model(data, fusion):
    """With hidden layers the skip term starts at the ridge fit and the MLP's head at 0,
    so training (end to end for intermediate, alone for late) starts from linear Cox."""
    (X, y, _), _ = data
    est = _SnapshotFirstStage(image_input="crops", fusion=fusion,
                              **{**FAST, "max_epochs": 2, "validation_fraction": 0.25})
    est.fit(X, y)
    _, w = _ridge_on_training_rows(est, X, y)
    np.testing.assert_allclose(est.start_["skip.weight"].numpy().ravel(), w, rtol=1e-4,
                               atol=1e-6)
    assert not est.start_["head.weight"].any()
    assert est.histories_[0]["history"]  # and then trained


def test_a_dead_image_branch_warns(data, fitted):
    (X, y, _), _ = data
    assert all(m.image_branch_alive_ for m in fitted.values())
    blank = X.copy()
    blank["crops"] = [np.full((3, 12, 12), 0.3, np.float32) for _ in range(len(X))]
    with pytest.warns(UserWarning, match="dead image branch"):
        est = FusionSurvival(image_input="crops", fusion="late",
                             **{**FAST, "max_epochs": 2}).fit(blank, y)
    assert est.image_branch_alive_ is False
