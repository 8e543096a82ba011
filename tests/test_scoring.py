"""PVFScorer: aggregation rules, learning on a clear signal, persistence, sklearn integration."""

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline

from fracsurv.nn import load_model
from fracsurv.scoring import PVFScorer, aggregate_cell_scores, cell_groups


def test_cell_groups_layouts():
    a, b, c, d = (np.full((4, 4), v) for v in range(4))
    assert len(cell_groups(a)) == 1
    assert [len(g) for g in cell_groups([a, b, c, d], n_seeds=2)] == [2, 2]
    assert [len(g) for g in cell_groups([[a, b, c], [d]])] == [3, 1]
    assert [len(g) for g in cell_groups([a, b])] == [1, 1]  # views, no seeds
    with pytest.raises(ValueError, match="multiple of n_seeds"):
        cell_groups([a, b, c], n_seeds=2)


def test_aggregation_mean_over_seeds_then_max():
    score, sd = aggregate_cell_scores([np.array([0.2, 0.4]), np.array([0.5, 0.9, 0.7]),
                                       np.array([0.6])])
    assert score == pytest.approx(0.7)  # group means 0.3, 0.7, 0.6 -> max 0.7
    assert sd == pytest.approx(np.std([0.5, 0.9, 0.7]))
    assert aggregate_cell_scores([np.array([0.4])]) == (0.4, 0.0)


def _blob_frame(n, rng):
    """Images where a bright square marks the positive class: a clear, learnable signal."""
    imgs, labels = [], []
    for _ in range(n):
        img = rng.normal(0.3, 0.05, (32, 16)).astype(np.float32)
        lab = int(rng.random() < 0.4)
        if lab:
            y, x = rng.integers(2, 24), rng.integers(2, 10)
            img[y:y + 6, x:x + 5] += 0.6
        imgs.append(img)
        labels.append(lab)
    return pd.DataFrame({"image": imgs, "prevalent_vf": labels, "age": rng.uniform(50, 90, n)})


FAST = {"backbone": "resnet10-tiny", "input_shape": (32, 16), "max_epochs": 12, "batch_size": 16,
        "lr": 3e-3, "augment": False, "validation_fraction": 0.0, "random_state": 0}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return _blob_frame(120, rng), _blob_frame(60, rng)


@pytest.fixture(scope="module")
def fitted(data):
    return PVFScorer(**FAST).fit(data[0])


def test_learns_above_chance(fitted, data):
    assert fitted.score(data[1]) > 0.8
    out = fitted.transform(data[1])
    assert {"pvf", "pvf_sd"} <= set(out.columns) and out["age"].equals(data[1]["age"])
    assert out["pvf"].between(0, 1).all()


def test_deterministic(fitted, data):
    again = PVFScorer(**FAST).fit(data[0])
    np.testing.assert_allclose(again.decision_function(data[1]), fitted.decision_function(data[1]))


def test_cells_with_several_images_use_the_rule(fitted, data):
    test = data[1]
    pos = test.index[test["prevalent_vf"] == 1][0]
    neg = test.index[test["prevalent_vf"] == 0][:3]
    imgs = [test.loc[pos, "image"], *test.loc[neg, "image"]]
    single = fitted.image_scores(imgs)
    cell = PVFScorer(**{**FAST, "n_seeds": 2})
    cell.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_")})
    out = cell.transform(pd.DataFrame({"image": [imgs]}))
    expected = max(np.mean(single[:2]), np.mean(single[2:]))
    assert out["pvf"][0] == pytest.approx(expected, rel=1e-5)
    best = np.argmax([np.mean(single[:2]), np.mean(single[2:])])
    assert out["pvf_sd"][0] == pytest.approx(np.std(single[2 * best: 2 * best + 2]), rel=1e-4)


def test_grad_cam(fitted, data):
    before = fitted.decision_function(data[1])
    maps = fitted.grad_cam(list(data[1]["image"][:2]))
    assert maps.shape == (2, 32, 16) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
    # MONAI's hooks are gone afterwards: the scorer still pickles and scores as before
    import copy
    import pickle

    assert not any(m._forward_hooks or m._backward_hooks for m in fitted.module_.modules())
    pickle.dumps(copy.deepcopy(fitted))
    np.testing.assert_allclose(fitted.decision_function(data[1]), before, rtol=1e-6)


def test_calibration_and_persistence(data, tmp_path):
    model = PVFScorer(**{**FAST, "calibration": "temperature"}).fit(data[0])
    assert model.temperature_ > 0
    loaded = load_model(model.save(tmp_path / "pvf"))
    np.testing.assert_allclose(loaded.decision_function(data[1]), model.decision_function(data[1]),
                               rtol=1e-5)


def test_labels_and_errors(data):
    with pytest.raises(ValueError, match="label column"):
        PVFScorer(**FAST).fit(data[0].drop(columns="prevalent_vf"))
    bad = data[0].assign(prevalent_vf=2)
    with pytest.raises(ValueError, match="0/1"):
        PVFScorer(**FAST).fit(bad)


def test_pipeline_gridsearch_clone(data):
    est = PVFScorer(**{**FAST, "max_epochs": 2})
    assert clone(est).get_params() == est.get_params()
    grid = GridSearchCV(est, {"lr": [1e-3, 3e-3]}, cv=KFold(2, shuffle=True, random_state=0))
    grid.fit(data[0], data[0]["prevalent_vf"].to_numpy())
    assert 0.0 <= grid.best_score_ <= 1.0
    out = Pipeline([("pvf", est)]).fit(data[0]).transform(data[1])
    assert "pvf" in out


def _stack_frame(n, rng, n_crops=6):
    """Crop stacks in which a bright square marks a fractured vertebra, with per-crop labels."""
    stacks, labels, crop_labels = [], [], []
    for _ in range(n):
        st = rng.normal(0.3, 0.05, (n_crops, 16, 16)).astype(np.float32)
        lab = np.zeros(n_crops)
        if rng.random() < 0.4:
            k = rng.integers(n_crops)
            st[k, 5:11, 5:11] += 0.6
            lab[k] = 2.0  # a Genant grade; >= 1 is a fracture
        lab[-1] = np.nan  # an unknown slot, ignored by the loss
        stacks.append(st)
        labels.append(int(lab[:-1].max() >= 1))
        crop_labels.append(lab)
    return pd.DataFrame({"crops": stacks, "prevalent_vf": labels, "crop_grades": crop_labels})


def test_per_crop_loss_adds_the_labelled_crops_bce():
    import torch

    from fracsurv.scoring._nets import WeightedBCE

    logits = torch.tensor([[0.5, 1.0, -1.0, 2.0], [-0.5, 0.0, 0.3, -2.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, float("nan")], [0.0, 0.0, float("nan"), 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    got = WeightedBCE(2.0, 3.0)(logits, y)
    crop = bce(torch.tensor([1.0, -1.0, 0.0, -2.0]), torch.tensor([1.0, 0.0, 0.0, 0.0]),
               pos_weight=torch.tensor([3.0]))
    want = bce(logits[:, 0], y[:, 0], pos_weight=torch.tensor([2.0])) + crop
    assert torch.allclose(got, want)
    # evaluation logits (B, 1) use the stack's label only
    assert torch.allclose(WeightedBCE(2.0, 3.0)(logits[:, :1], y),
                          bce(logits[:, 0], y[:, 0], pos_weight=torch.tensor([2.0])))


def test_per_crop_labels_train_a_shared_crop_scorer():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    train, test = _stack_frame(120, rng), _stack_frame(60, rng)
    params = {**FAST, "image_column": "crops", "image_input": "crops", "crop_encoder": "shared",
              "input_shape": (16, 16), "max_epochs": 15}
    est = PVFScorer(**params, crop_label_column="crop_grades").fit(train)
    assert est.net_.module_.per_crop
    assert roc_auc_score(test["prevalent_vf"], est.predict_proba(test)[:, 1]) > 0.9
    bad = train.copy()
    bad.at[bad.index[3], "crop_grades"] = np.zeros(4)
    with pytest.raises(ValueError, match=r"row 3.*4 labels for a stack of 6"):
        PVFScorer(**params, crop_label_column="crop_grades").fit(bad)
    with pytest.raises(ValueError, match="crop_encoder='shared'"):
        PVFScorer(**{**params, "crop_encoder": "channels"}, crop_label_column="crop_grades").fit(train)


def test_default_cam_layer_is_the_deepest_block_at_least_8_pixels_a_side(fitted):
    import torch

    from fracsurv.nn.backbones import MIN_CAM_SIDE, cam_layer_candidates, default_cam_layer

    net = fitted.module_.backbone
    sizes = {}
    hooks = [dict(net.named_modules())[c].register_forward_hook(
        lambda _m, _i, out, c=c: sizes.__setitem__(c, min(out.shape[-2:])))
        for c in cam_layer_candidates("resnet10-tiny")]
    bn = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    with torch.no_grad():
        net.eval()(torch.zeros(1, 1, *fitted.input_shape))
    for h in hooks:
        h.remove()
    chosen = fitted.default_cam_layer().removeprefix("backbone.")
    order = list(cam_layer_candidates("resnet10-tiny"))
    assert sizes[chosen] >= MIN_CAM_SIDE
    assert all(sizes[c] < MIN_CAM_SIDE for c in order[:order.index(chosen)])
    assert chosen != "layer4"  # at 32 x 16 the last block is too coarse
    # the probe forward left BatchNorm's statistics and the training flag alone
    net.train()
    default_cam_layer("resnet10-tiny", net, fitted.input_shape)
    assert net.training
    for k, v in net.state_dict().items():
        if k in bn:
            assert torch.equal(v, bn[k])
    net.eval()
    assert default_cam_layer("resnet10-tiny") == "layer4"  # nothing to measure: the last block
    assert default_cam_layer("resnet10-tiny", net, (512, 256)) == "layer4"
    assert PVFScorer(cam_layer="backbone.layer2").default_cam_layer() == "backbone.layer2"
