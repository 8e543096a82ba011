"""Crop-stack rules on hand-made boxes, and the transformer on the synthetic cohort."""

import numpy as np
import pandas as pd
import pytest

from fracsurv.vertebrae.crops import (
    CropStacker,
    crop_stack,
    select_boxes,
    select_slots,
    vertebra_grades,
)


def boxes(centres, h=10.0):
    return np.array([[0, c - h / 2, 20, c + h / 2] for c in centres], float)


def _centres(slots):
    return [None if s is None else (s[1] + s[3]) / 2 for s in slots]


def test_tall_boxes_discarded_and_top_dropped():
    b = np.vstack([boxes([10, 30, 50, 70]), [[0, 0, 20, 80]]])  # last one too tall
    slots = select_boxes(b, n_crops=3, max_box_height=40)
    assert _centres(slots) == [30, 50, 70]  # the top-most (10) dropped, tall one gone


def test_empty_slots_inserted_in_gaps():
    slots = select_boxes(boxes([10, 30, 50, 110, 130]), n_crops=8, gap_factor=1.5)
    # gap 50 -> 110 is three median gaps: two vertebrae missing there, one more at the end
    assert _centres(slots) == [10, 30, 50, None, None, 110, 130, None]


def test_exact_count_untouched_and_unsorted_input():
    slots = select_boxes(boxes([50, 10, 30]), n_crops=3)
    assert _centres(slots) == [10, 30, 50]


def test_crop_stack_pads_and_shrinks():
    img = np.arange(100 * 50, dtype=np.float32).reshape(100, 50)
    stack = crop_stack(img, [np.array([5, 10, 15, 20]), None, np.array([0, 0, 50, 100])], (20, 16))
    assert stack.shape == (3, 20, 16)
    assert (stack[1] == 0).all()
    # first crop (10x10) centred: its top-left pixel is img[10, 5]
    assert stack[0][5, 3] == img[10, 5]
    assert (stack[2] > 0).sum() > 0 and stack[2].max() <= img.max()


def test_crop_stack_fill_scales_every_crop_to_touch_the_border():
    img = np.ones((100, 50), np.float32)
    small, big = np.array([5, 10, 15, 20]), np.array([0, 0, 40, 80])  # 10x10 and 80x40 (h x w)
    shrink = crop_stack(img, [small, big], (20, 16))
    fill = crop_stack(img, [small, big], (20, 16), resize="fill")
    assert (shrink[0] > 0).sum() == 100  # kept at its 10 x 10 pixels
    assert (fill[0] > 0).sum() == 16 * 16  # enlarged until its width touches the border
    # a crop larger than crop_size is shrunk the same way by both rules (aspect kept: 20 x 10)
    assert (shrink[1] > 0).sum() == (fill[1] > 0).sum() == 20 * 10
    with pytest.raises(ValueError, match="resize"):
        crop_stack(img, [small], (20, 16), resize="stretch")


def test_transformer_on_cohort():
    from fracsurv.datasets import make_spine_cohort

    c = make_spine_cohort(4, image_shape=(256, 128), random_state=0)
    out = CropStacker(n_crops=13).fit_transform(c.frame)
    stack = out["crops"][0]
    assert stack.shape == (13, 68, 58)  # 272x230 scaled from 1024x512 to 256x128
    n = len(c.frame["keypoints"][0])
    assert ((stack.reshape(13, -1).max(axis=1) > 0).sum()) == min(n, 13)
    empty = CropStacker().fit_transform(pd.DataFrame({"image": [np.ones((256, 128))], "keypoints": [[]]}))
    assert (empty["crops"][0] == 0).all() and empty["n_vertebrae_cropped"][0] == 0


def test_slot_indices_follow_the_boxes():
    b = boxes([50, 10, 30, 110])
    slots = select_slots(b, n_crops=5, gap_factor=1.5)
    # sorted top to bottom: 10 (index 1), 30 (2), 50 (0), a gap of three medians, 110 (3)
    assert slots == [1, 2, 0, None, 3]
    assert [None if s is None else int(s) for s in slots] == [
        None if s is None else int(np.flatnonzero((b == s).all(axis=1))[0])
        for s in select_boxes(b, n_crops=5)]


def test_grades_column_is_the_genant_grade_of_each_slot():
    from fracsurv.datasets import make_spine_cohort

    c = make_spine_cohort(40, image_shape=(128, 64), n_followups=0, random_state=5, dicom=False)
    out = CropStacker(n_crops=18, crop_size=(12, 12), resize="fill",
                      grades_column="crop_grades").fit_transform(c.frame)
    truth = c.truth.vertebrae
    for pid, grades, stack in zip(c.frame["patient_id"], out["crop_grades"], out["crops"]):
        present = stack.reshape(18, -1).max(axis=1) > 0
        assert grades.shape == (18,)
        assert np.isnan(grades[~present]).all() and np.isfinite(grades[present]).all()
        t = truth[(truth["patient_id"] == pid) & (truth["visit"] == 0)]
        # 18 slots hold every visible vertebra: the grades are the cohort's labels, in order
        np.testing.assert_array_equal(grades[present], t["grade"].to_numpy(float))
    # a vertebra list that carries its grades (a detector's output) is used as given
    kps = [{**v, "grade": 3} for v in c.frame["keypoints"][0]]
    assert (vertebra_grades(kps) == 3).all()
    assert vertebra_grades([]).shape == (0,)
