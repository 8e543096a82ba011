"""VertebraCropper: a tiny network trained once per session on a small synthetic cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fracsurv.datasets import make_spine_cohort
from fracsurv.vertebrae import VertebraCropper, draw_vertebrae
from fracsurv.vertebrae.detector import (
    N_OUT,
    KeypointLoss,
    VertebraNet,
    assign_levels,
    decode_maps,
    from_grid,
    render_targets,
    to_grid,
)

SHAPE = (256, 128)
CROP = (13, 68, 58)  # 272 x 230 scaled from 1024 x 512 to 256 x 128
TINY = dict(input_shape=SHAPE, channels=(8, 16, 32, 64), num_res_units=0, train_window=(64, 96),
            patch_size=32, refiner_channels=(8, 16, 32, 64),
            batch_size=8, lr=5e-3, validation_fraction=0.0, patience=0, device="cpu",
            random_state=0)


def _centre_match(pred: list[dict], truth: list[dict]) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of centres closer than half the true height."""
    pairs, used = [], set()
    for j, t in enumerate(truth):
        tp = np.asarray(t["points"], float)
        tc, th = tp.mean(0), np.linalg.norm(tp[:3] - tp[3:], axis=1).mean()
        d = [np.linalg.norm(np.mean(p["points"], 0) - tc) if i not in used else np.inf
             for i, p in enumerate(pred)]
        if d and min(d) < 0.5 * th:
            used.add(int(np.argmin(d)))
            pairs.append((int(np.argmin(d)), j))
    return pairs


def _scores(out: pd.DataFrame, truth: pd.Series) -> tuple[float, float, float]:
    """(sensitivity, precision, median keypoint error in px)."""
    tp = n_pred = n_true = 0
    errs = []
    for pv, tv in zip(out["vertebrae"], truth):
        pairs = _centre_match(pv, tv)
        tp, n_pred, n_true = tp + len(pairs), n_pred + len(pv), n_true + len(tv)
        errs += [np.linalg.norm(np.subtract(pv[i]["points"], tv[j]["points"]), axis=1).mean()
                 for i, j in pairs]
    return tp / max(n_true, 1), tp / max(n_pred, 1), float(np.median(errs)) if errs else np.inf


@pytest.fixture(scope="session")
def cohorts():
    train = make_spine_cohort(80, image_shape=SHAPE, random_state=11, dicom=False, n_followups=0)
    test = make_spine_cohort(8, image_shape=SHAPE, random_state=12, dicom=False, n_followups=0)
    return train.frame, test.frame


@pytest.fixture(scope="session")
def fitted(cohorts):
    torch.set_num_threads(1)
    return VertebraCropper(max_epochs=100, stage2_epochs=30, **TINY).fit(cohorts[0])


@pytest.fixture(scope="session")
def transformed(fitted, cohorts):
    return fitted.transform(cohorts[1])


# -- the network pieces -------------------------------------------------------
def test_grid_round_trip_and_targets():
    pts = np.array([[[10.0, 20], [14, 20], [18, 20], [10, 30], [14, 30], [18, 30]]])
    g = to_grid(pts, (0.5, 0.5))
    assert np.allclose(from_grid(g, (0.5, 0.5)), pts)
    t = render_targets(g, np.array([3]), (32, 16), sigma=1.0, offset_scale=4.0)
    c = g[0].mean(0)
    cy, cx = int(np.rint(c[1])), int(np.rint(c[0]))
    assert t[0, cy, cx] == 1.0 and t[0].max() == 1.0
    assert t[38, cy, cx] == 3 and (t[38] >= 0).sum() == 9
    # the centre pixel's offsets lead exactly to the points
    off = t[7:19, cy, cx].reshape(6, 2) * 4.0 + [cx, cy]
    assert np.allclose(off, g[0], atol=1e-5)


def test_decode_recovers_rendered_targets():
    """Maps built from targets (logits of the truth) decode to the exact points."""
    rng = np.random.default_rng(0)
    shape = np.array([[4, 0], [8, 0], [12, 0], [4, 6], [8, 6], [12, 6]], float)
    shift = np.stack([rng.uniform(8, 10, 5), 4 + 9 * np.arange(5) + rng.uniform(0, 1, 5)], axis=1)
    pts = shape[None] + shift[:, None]
    t = render_targets(pts, np.arange(5) + 4, (56, 32), sigma=1.0, offset_scale=4.0)
    maps = np.zeros((N_OUT, 56, 32), np.float32)
    logit = lambda p: np.log(np.clip(p, 1e-4, 1 - 1e-4) / (1 - np.clip(p, 1e-4, 1 - 1e-4)))  # noqa: E731
    maps[0], maps[1:7] = logit(t[0]), logit(t[1:7])
    maps[7:19], maps[19:31] = t[7:19], t[20:32]
    maps[31] = np.where(t[39] >= 0, 10 * t[39] - 5, 0)
    lv = t[38].astype(int)
    maps[32:] = -5.0
    yy, xx = np.nonzero(lv >= 0)
    maps[32 + lv[yy, xx], yy, xx] = 5.0
    found = sorted(decode_maps(maps, 0.5, 4.0), key=lambda d: d["points"][:, 1].mean())
    assert len(found) == 5
    assert np.allclose(np.stack([d["points"] for d in found]), pts, atol=1e-4)
    assert [int(d["level_logp"].argmax()) for d in found] == [4, 5, 6, 7, 8]


def test_assign_levels_consecutive_with_gap():
    y = np.array([10.0, 20, 30, 50, 60])  # one vertebra missing between 30 and 50
    logp = np.full((5, 18), -5.0)
    for k, lv in enumerate([5, 6, 9, 9, 10]):  # one wrong vote (9 at the third)
        logp[k, lv] = 0.0
    assert assign_levels(y, np.full(5, 8.0), logp).tolist() == [5, 6, 7, 9, 10]
    assert assign_levels(np.zeros(0), np.zeros(0), np.zeros((0, 18))).shape == (0,)


def test_loss_finite_and_decreasing_on_one_batch():
    torch.manual_seed(0)
    net, loss_fn = VertebraNet((8, 16, 32, 64), 0), KeypointLoss()
    pts = np.array([[[10, 10], [14, 10], [18, 10], [10, 16], [14, 16], [18, 16]]], float)
    y = torch.from_numpy(render_targets(pts, np.array([5]), (64, 32)))[None].repeat(2, 1, 1, 1)
    losses = _overfit(net, loss_fn, torch.rand(2, 1, 128, 64), y, 15)
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]


def _overfit(net: torch.nn.Module, loss_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
             steps: int) -> list[float]:
    """Adam steps on one batch; the losses."""
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses = []
    for _ in range(steps):
        loss = loss_fn(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# -- the estimator --------------------------------------------------------------
def test_learns_far_above_untrained_and_mean_shape(fitted, transformed, cohorts):
    sens, prec, err = _scores(transformed, cohorts[1]["keypoints"])
    assert sens >= 0.6 and prec >= 0.6, (sens, prec)
    # an untrained network (CenterNet prior) finds nothing
    untrained = VertebraCropper(max_epochs=1, **TINY)
    untrained.fit(cohorts[0].iloc[:2])
    untrained.module_.detector = VertebraNet((8, 16, 32, 64), 0)
    assert untrained.transform(cohorts[1])["no_vertebra_found"].all()
    # keypoints beat the mean vertebral shape placed at the detected centre
    train_pts = np.array([v["points"] for kp in cohorts[0]["keypoints"] for v in kp], float)
    mean_shape = (train_pts - train_pts.mean(1, keepdims=True)).mean(0)
    base = []
    for pv, tv in zip(transformed["vertebrae"], cohorts[1]["keypoints"]):
        for i, j in _centre_match(pv, tv):
            guess = np.mean(pv[i]["points"], 0) + mean_shape
            base.append(np.linalg.norm(guess - np.asarray(tv[j]["points"]), axis=1).mean())
    assert err < 0.6 * np.median(base), (err, np.median(base))


def test_columns_and_types(transformed, cohorts, fitted):
    out = transformed
    for c in cohorts[1].columns:
        assert c in out.columns
    assert list(fitted.get_feature_names_out()) == list(out.columns)
    assert out["n_vertebrae"].dtype.kind == "i" and out["sdi"].dtype.kind == "i"
    assert out["max_reduction"].dtype.kind == "f" and out["no_vertebra_found"].dtype == bool
    assert out["max_soft_grade"].dtype.kind == "f" and out["level_confidence"].between(0, 1).all()
    assert set(out["level_anchor"]) <= {"none", "C7", "last rib", "sacrum", "C7+last rib",
                                        "last rib+sacrum", "C7+last rib+sacrum", "C7+sacrum"}
    for verts, stack, n, sdi, mx in zip(out["vertebrae"], out["crops"], out["n_vertebrae"],
                                       out["sdi"], out["max_grade"]):
        assert isinstance(stack, np.ndarray) and stack.shape == CROP
        assert len(verts) == n
        ys = [np.mean(v["points"], 0)[1] for v in verts]
        assert ys == sorted(ys)
        for v in verts:
            assert set(v) >= {"level", "points", "point_error", "box", "grade", "soft_grade",
                              "p_fracture", "morphology", "confidence", "level_confidence"}
            assert np.shape(v["points"]) == (6, 2) and len(v["box"]) == 4
            assert v["grade"] in (0, 1, 2, 3) and 0 < v["confidence"] <= 1
            assert np.shape(v["point_error"]) == (6,) and min(v["point_error"]) > 0
            assert 0 <= v["soft_grade"] <= 3 and 0 <= v["p_fracture"] <= 1
            assert 0 <= v["level_confidence"] <= 1
        assert sdi == sum(v["grade"] for v in verts if v["graded"])
        assert mx == max([v["grade"] for v in verts if v["graded"]], default=0)
        n_full = int((stack.reshape(13, -1).max(1) > 0).sum())
        assert n_full <= min(n, 13)


def test_no_vertebra_image_flags_and_empty_crops(fitted):
    X = pd.DataFrame({"image": [np.zeros(SHAPE, np.float32), np.full(SHAPE, 0.5, np.float32)]})
    out = fitted.transform(X)
    assert out["no_vertebra_found"].all()
    assert all(v == [] for v in out["vertebrae"])
    assert all(s.shape == CROP and not s.any() for s in out["crops"])
    assert (out[["n_vertebrae", "n_fractures", "max_grade", "sdi"]] == 0).all().all()


def test_deterministic_with_random_state(cohorts):
    small = cohorts[0].iloc[:6]
    a = VertebraCropper(max_epochs=2, stage2_epochs=1, **TINY).fit(small)
    b = VertebraCropper(max_epochs=2, stage2_epochs=1, **TINY).fit(small)
    assert len(a.module_.state_dict()) > 30
    for (k, va), vb in zip(a.module_.state_dict().items(), b.module_.state_dict().values()):
        assert torch.equal(va, vb), k
    c = VertebraCropper(max_epochs=2, stage2_epochs=1, **{**TINY, "random_state": 1}).fit(small)
    assert not torch.equal(a.module_.detector.head[-1].weight, c.module_.detector.head[-1].weight)
    assert not torch.equal(a.module_.refiner.heat.weight, c.module_.refiner.heat.weight)


def test_save_load_round_trip(fitted, transformed, cohorts, tmp_path):
    fitted.save(tmp_path / "m")
    loaded = VertebraCropper.load(tmp_path / "m")
    again = loaded.transform(cohorts[1])
    assert again["vertebrae"].tolist() == transformed["vertebrae"].tolist()
    assert all(np.array_equal(a, b) for a, b in zip(again["crops"], transformed["crops"]))


def test_clone_pipeline_params_and_cache(cohorts, tmp_path):
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    est = VertebraCropper(max_epochs=1, cache_dir=str(tmp_path), **TINY)
    assert clone(est).get_params() == est.get_params()
    pipe = Pipeline([("crop", est)]).set_params(crop__n_crops=5)
    out = pipe.fit(cohorts[0].iloc[:4]).transform(cohorts[1].iloc[:2])
    ref = out["crops"].iloc[0]
    assert isinstance(ref, str) and ref.startswith(str(tmp_path))
    assert np.load(ref).shape == (5, *CROP[1:])


def test_errors_name_the_row(cohorts):
    X = cohorts[0].iloc[:3].copy()
    X.at[X.index[1], "keypoints"] = [{"level": "T6", "points": [[0, 0]] * 5}]
    with pytest.raises(ValueError, match=r"row 1 .*6 finite"):
        VertebraCropper(**TINY).fit(X)
    X.at[X.index[1], "keypoints"] = [{"level": "T13", "points": [[0, 0]] * 6}]
    with pytest.raises(ValueError, match=r"row 1 .*unknown level 'T13'"):
        VertebraCropper(**TINY).fit(X)
    with pytest.raises(ValueError, match="input_shape"):
        VertebraCropper(input_shape=(100, 50)).fit(cohorts[0])


def test_draw_vertebrae(transformed, cohorts):
    import matplotlib

    matplotlib.use("Agg")
    fig = draw_vertebrae(cohorts[1]["image"].iloc[0], transformed["vertebrae"].iloc[0], title="x")
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * len(transformed["vertebrae"].iloc[0])  # outline + box each
    assert len(ax.texts) == len(transformed["vertebrae"].iloc[0])


def test_detection_summary_on_hand_made_vertebrae():
    from fracsurv.vertebrae.evaluation import detection_summary, match_vertebrae

    box = np.array([[0, 0], [5, 0], [10, 0], [0, 10], [5, 10], [10, 10]], float)  # height 10
    truth = [{"points": box}, {"points": box + np.array([0, 20])}]
    near = {"points": box + np.array([1, 0])}  # 1 px off: matches the first
    far = {"points": box + np.array([0, 45])}  # 25 px below the second: matches nothing
    assert match_vertebrae([far, near], truth) == [(1, 0)]
    s = detection_summary([[near, far]], [truth])
    assert s["sensitivity"] == 0.5 and s["precision"] == 0.5
    assert s["median_point_error_px"] == pytest.approx(1.0)
    assert detection_summary([[]], [truth])["sensitivity"] == 0.0


# -- stage 2: refiner, levels, soft grades ---------------------------------------
BOX = np.array([[20.0, 30], [30, 29], [40, 28], [21, 45], [31, 44], [41, 43]])  # posterior left


def test_patch_frame_round_trip_and_mirror_invariance():
    from fracsurv.vertebrae.refiner import frame_of, sample_patch

    f = frame_of(BOX, 32, shift=(0.05, -0.03), rotate=0.1, zoom=1.1)
    assert np.allclose(f.to_native(f.to_patch(BOX)), BOX)
    # canonical: posterior left, superior up, whichever way the image faces
    uv = frame_of(BOX, 32).to_patch(BOX)
    assert uv[[0, 3], 0].mean() < uv[[2, 5], 0].mean() and uv[:3, 1].mean() < uv[3:, 1].mean()
    rng = np.random.default_rng(0)
    img = rng.random((80, 64)).astype(np.float32)
    mirrored = BOX.copy()
    mirrored[:, 0] = 63 - mirrored[:, 0]
    a = sample_patch(img, frame_of(BOX, 32))
    b = sample_patch(img[:, ::-1], frame_of(mirrored, 32))
    assert np.allclose(a, b, atol=1e-5)
    assert frame_of(mirrored, 32).to_patch(mirrored) == pytest.approx(uv, abs=1e-9)


def test_refiner_loss_falls_and_error_head_tracks_the_error():
    from fracsurv.vertebrae.refiner import RefinerLoss, RefinerNet

    torch.manual_seed(0)
    net, loss_fn = RefinerNet((8, 16, 32)), RefinerLoss()
    x = torch.rand(4, 1, 32, 32)
    y = torch.tensor(BOX / 2, dtype=torch.float32)[None].repeat(4, 1, 1)
    losses = _overfit(net, loss_fn, x, y, 40)
    out = net.eval()(x).detach()
    err = torch.linalg.norm(out[..., :2] - y, dim=-1)
    assert losses[-1] < 0.5 * losses[0]
    assert out.shape == (4, 6, 3 + 32 * 32) and torch.allclose(out[..., 3:].sum(-1), torch.ones(4, 6))
    assert 0.3 < float(out[..., 2].exp().mean() / err.mean()) < 3.0


def test_uncertain_grades_tend_to_the_hard_grade():
    from fracsurv.vertebrae.genant import grade_vertebrae, uncertain_grades

    col = np.stack([BOX + np.array([0, 20 * k]) for k in range(3)])
    col[1, 2, 1] += 3.3  # anterior height 15 -> 11.7: a 22 % wedge, grade 1
    hard = grade_vertebrae(col)[0]
    soft, p = uncertain_grades(col, np.full((3, 6), 1e-6))
    assert hard.tolist() == [0, 1, 0] and soft.tolist() == [0, 1, 0] and p.tolist() == [0, 1, 0]
    soft, p = uncertain_grades(col, np.full((3, 6), 1.0), n_samples=200)
    assert 0.2 < p[1] < 0.95 and p[0] < p[1] and soft[1] > soft[0]
    assert np.array_equal(uncertain_grades(col, np.ones((3, 6)))[0], uncertain_grades(col, np.ones((3, 6)))[0])


def test_placement_confidence_and_anchors():
    from fracsurv.vertebrae.detector import N_LEVELS, placement_confidence
    from fracsurv.vertebrae.levels import decode_column

    logp = np.log(np.full((3, N_LEVELS), 1e-3))
    logp[[0, 1, 2], [10, 11, 12]] = 0.0  # T10, T11, T12 clear
    assert placement_confidence(np.array([10, 11, 12]), logp) > 0.99
    flat = np.full((3, N_LEVELS), -np.log(N_LEVELS))
    assert placement_confidence(np.array([10, 11, 12]), flat) == pytest.approx(1 / (N_LEVELS - 2))
    out = np.full((4, N_LEVELS + 3), -8.0)
    out[np.arange(4), [11, 12, 13, 14]] = 8.0  # T11, T12, L1, L2
    out[:2, N_LEVELS + 1] = 8.0  # the first two bear ribs
    d = decode_column(out, np.array([10.0, 20, 30, 40]), np.full(4, 8.0))
    assert d["levels"].tolist() == [11, 12, 13, 14] and d["anchors"] == ["last rib"]
    out[:, N_LEVELS + 1] = -8.0  # no rib transition: no anchor
    assert decode_column(out, np.array([10.0, 20, 30, 40]), np.full(4, 8.0))["anchors"] == []


def test_refiner_and_column_model_beat_stage_one(fitted, transformed, cohorts):
    from sklearn.base import clone

    stage1 = clone(fitted).set_params(refine_passes=0)
    stage1.module_, stage1.feature_names_in_ = fitted.module_, fitted.feature_names_in_
    _, _, err1 = _scores(stage1.transform(cohorts[1]), cohorts[1]["keypoints"])
    _, _, err2 = _scores(transformed, cohorts[1]["keypoints"])
    assert err2 < 0.8 * err1, (err1, err2)
    ok = [pv[i]["level"] == tv[j]["level"]
          for pv, tv in zip(transformed["vertebrae"], cohorts[1]["keypoints"])
          for i, j in _centre_match(pv, tv)]
    assert np.mean(ok) >= 0.7, np.mean(ok)


def test_bad_images_get_a_per_row_outcome(fitted, cohorts):
    from fracsurv.vertebrae.cropper import CropperInputError

    good = cohorts[1]["image"].iloc[0]
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"image": [np.zeros(SHAPE, np.float32), rng.random(SHAPE).astype(np.float32),
                                good[::-1].copy(), good[:, ::-1].copy(), np.zeros((16, 8), np.float32),
                                np.full(SHAPE, np.nan, np.float32), good]})
    out = fitted.set_params(on_error="skip").transform(X)
    fitted.set_params(on_error="raise")
    assert out["no_vertebra_found"].iloc[0] and out["load_error"].iloc[:4].isna().all()
    assert "16 x 8" in out["load_error"].iloc[4] and "NaN" in out["load_error"].iloc[5]
    assert out["no_vertebra_found"].iloc[4:6].all() and out["load_error"].iloc[6] is None
    assert out["n_vertebrae"].iloc[6] >= 3 and out["n_vertebrae"].iloc[3] >= 3  # mirrored: still read
    assert all(s.shape == CROP for s in out["crops"])
    with pytest.raises(CropperInputError, match=r"row 4 .*16 x 8"):
        fitted.transform(X)


def test_shipped_model_loads_and_reads_a_fresh_cohort():
    """The benchmark's saved model, on a cohort no model saw, at 1024 x 512."""
    from pathlib import Path

    from fracsurv.vertebrae.evaluation import detection_summary

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "models" / "vertebra-cropper"
    model = VertebraCropper.load(path)
    fresh = make_spine_cohort(6, image_shape=(1024, 512), random_state=4242, dicom=False,
                              n_followups=0).frame
    out = model.transform(fresh)
    s = detection_summary(out["vertebrae"], fresh["keypoints"])
    assert s["sensitivity"] >= 0.9 and s["precision"] >= 0.9, s
    assert s["median_point_error_px"] <= 1.5, s
    assert (out["level_anchor"] != "none").all()
