"""The models shipped in fracsurv.pretrained load, work in a Pipeline and meet a floor."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.pipeline import Pipeline

from fracsurv import pretrained
from fracsurv.datasets import make_spine_cohort
from fracsurv.metrics.images import ms_ssim
from fracsurv.nn.data import antialiased_resize
from fracsurv.vertebrae.evaluation import detection_summary

NAMES = {"diffx", "vertebra-cropper", "pvf-scorer", "fusion-survival"}


def _small(images, shape=(128, 64)):
    return list(antialiased_resize(list(images), shape))


@pytest.fixture(scope="module")
def fresh():
    """A cohort whose seed no shipped model was trained or selected on."""
    return make_spine_cohort(3, image_shape=(512, 256), random_state=4001, dicom=False,
                             n_followups=0).frame


def test_available_lists_every_shipped_model_with_its_card():
    table = pretrained.available()
    assert NAMES <= set(table["name"])
    assert table["size_mb"].sum() <= 40
    for name in NAMES:
        card = pretrained.card(name)
        assert card["generator_version"] and card["training"]["seeds"]
        assert card["heldout"]["metrics"], name
        assert (pretrained.model_path(name) / "card.md").read_text().startswith("# Model card")


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(KeyError, match=r"available: .*diffx"):
        pretrained.load("no-such-model")


def test_loading_warns_when_the_cohort_generator_changed(monkeypatch):
    import fracsurv.datasets.spine as spine

    monkeypatch.setattr(spine, "GENERATOR_VERSION", 999)
    with pytest.warns(UserWarning, match=r"generator v.*999"):
        pretrained.load("diffx")


def test_diffx_reconstructs_and_generates_fresh_patients(fresh):
    gen = pretrained.load("diffx")
    shape = tuple(gen.input_shape)
    gen.set_params(output_shape=shape)
    rows = fresh.head(3)
    base = _small(rows["image"], shape)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack(base))[:, None] * 2 - 1
        ae = ((gen.module_.decode(gen.module_.encode(x)).clamp(-1, 1) + 1) / 2)[:, 0].numpy()
    assert ms_ssim(ae, np.stack(base)).mean() >= 0.95
    out = gen.generate(base[0], rows["age"].iloc[0], rows["sex"].iloc[0], [1, 10], seeds=[0, 1])
    assert out.shape == (2, 2, *shape) and np.isfinite(out).all()
    assert ms_ssim(out[0], np.stack([base[0]] * 2)).mean() >= 0.6  # the same patient


def test_vertebra_cropper_finds_the_vertebrae_of_fresh_radiographs():
    big = make_spine_cohort(2, image_shape=(1024, 512), random_state=4002, dicom=False,
                            n_followups=0).frame
    out = Pipeline([("crop", pretrained.load("vertebra-cropper"))]).transform(big)
    det = detection_summary(out["vertebrae"], big["keypoints"])
    assert det["sensitivity"] >= 0.9 and det["precision"] >= 0.9
    assert det["median_point_error_px"] <= 2.0
    assert isinstance(out, pd.DataFrame) and "crops" in out


@pytest.fixture(scope="module")
def detected():
    """A fresh 512 x 256 cohort (seed used nowhere else) cut by the shipped cropper."""
    from fracsurv.pretrained.train import DETECTED_CROPS

    c = make_spine_cohort(120, image_shape=(512, 256), random_state=4003, dicom=False,
                          n_followups=0)
    frame = c.frame.assign(time=c.target["time"], event=c.target["event"])
    return pretrained.load("vertebra-cropper").set_params(**DETECTED_CROPS).transform(frame)


def test_pvf_scorer_scores_detected_crops_of_fresh_patients(detected):
    from sklearn.metrics import roc_auc_score

    scorer = pretrained.load("pvf-scorer")
    p = Pipeline([("score", scorer)]).transform(detected)["pvf"]
    assert p.between(0, 1).all()
    assert roc_auc_score(detected["prevalent_vf"], p) >= 0.85
    # Grad-CAM explains every crop's own logit: many crops of one stack get a map, where
    # the stack's maximum alone would pass a gradient to one crop only
    maps = scorer.grad_cam([detected["crops"].iloc[0]])
    assert maps.shape == (13, 64, 64) and (maps.reshape(13, -1).max(axis=1) > 0).sum() >= 3


def test_fusion_survival_ranks_fresh_patients(detected):
    from fracsurv.metrics.core import concordance_index
    from fracsurv.pretrained.train import survival_target

    model = pretrained.load("fusion-survival")
    risk = model.predict(detected)
    assert np.isfinite(risk).all() and risk.std() > 0
    assert concordance_index(survival_target(detected), risk) >= 0.65


def test_futures_cut_at_the_baseline_vertebrae_score_as_the_baseline_does(detected):
    """A 'future' that is the baseline itself scores as the baseline (the same vertebrae
    in the same slots); the row aggregation is mean over seeds, max over horizons."""
    from fracsurv.pretrained.train import DETECTED_CROPS
    from fracsurv.scoring.futures import scores_at_baseline_vertebrae

    scorer, rows = pretrained.load("pvf-scorer"), detected.head(8)
    cropper = pretrained.load("vertebra-cropper").set_params(**DETECTED_CROPS)
    shapes = [im.shape for im in rows["image"]]
    same = scores_at_baseline_vertebrae(cropper, scorer, [[im] for im in rows["image"]],
                                        list(rows["vertebrae"]), shapes)
    np.testing.assert_allclose(same, scorer.score_cells(rows)[0], atol=1e-5)
    blank = np.zeros_like(rows["image"].iloc[0])
    per_image = scores_at_baseline_vertebrae(cropper, scorer, [[blank]] * len(rows),
                                             list(rows["vertebrae"]), shapes)
    cells = [[im, blank, im[::-1].copy(), blank] for im in rows["image"]]  # 2 horizons x 2 seeds
    agg = scores_at_baseline_vertebrae(cropper, scorer, cells, list(rows["vertebrae"]), shapes,
                                       n_seeds=2)
    flipped = scores_at_baseline_vertebrae(
        cropper, scorer, [[im[::-1].copy()] for im in rows["image"]], list(rows["vertebrae"]),
        shapes)
    expect = np.maximum((same + per_image) / 2, (flipped + per_image) / 2)
    np.testing.assert_allclose(agg, expect, atol=1e-5)
    with pytest.raises(ValueError, match="differ in length"):
        scores_at_baseline_vertebrae(cropper, scorer, cells, list(rows["vertebrae"])[:2], shapes)
