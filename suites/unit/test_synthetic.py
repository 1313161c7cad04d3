"""The synthetic ground-truth benchmark: deterministic, balanced, masks exact."""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_eval import errors
from cnnvis_eval.data.synthetic import CLASSES, make_synthetic, marker_slot_box, shape_area


@pytest.fixture(scope="module")
def clean():
    return make_synthetic(40, 64, seed=11)


def test_same_seed_same_data_different_seed_different():
    a, b, c = make_synthetic(8, 64, seed=3), make_synthetic(8, 64, seed=3), make_synthetic(8, 64, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)


def test_shapes_and_balance(clean):
    assert clean.images.shape == (40, 64, 64, 3) and clean.images.dtype == np.uint8
    assert clean.masks.shape == (40, 64, 64) and clean.masks.dtype == bool
    np.testing.assert_array_equal(np.bincount(clean.labels, minlength=4), [10, 10, 10, 10])
    assert clean.marker_masks is None


def test_masks_cover_the_target_object_and_only_it(clean):
    for i, obj in enumerate(clean.objects):
        mask = clean.masks[i]
        colour = obj["colour"]
        # every mask pixel carries the object's colour ...
        np.testing.assert_array_equal(clean.images[i][mask], np.broadcast_to(colour, (mask.sum(), 3)))
        # ... and the object's colour hardly appears elsewhere (only by coincidence of the texture)
        elsewhere = np.all(clean.images[i][~mask] == colour, axis=-1).sum()
        assert elsewhere <= 0.01 * mask.sum()
        # area matches the analytic polygon area (rasterization error only)
        area = shape_area(obj["shape"], obj["r"])
        assert abs(mask.sum() - area) < 0.12 * area + 12, (obj["shape"], mask.sum(), area)
        # the mask is where the object is: its centroid is the object's centre
        rows, cols = np.nonzero(mask)
        assert abs(rows.mean() - obj["cy"]) < 2.0 and abs(cols.mean() - obj["cx"]) < 2.0
        assert obj["shape"] == CLASSES[clean.labels[i]]


def test_distractors_are_fainter_than_the_target(clean):
    """Distractors exist (clutter changes pixels outside the mask) and are lower in contrast."""
    imgs = clean.images.astype(float)
    sat_in = np.array([np.ptp(imgs[i][clean.masks[i]], axis=-1).mean() for i in range(len(imgs))])
    sat_out = np.array([np.ptp(imgs[i][~clean.masks[i]], axis=-1).mean() for i in range(len(imgs))])
    assert np.all(sat_in > sat_out)


def test_shortcut_marker():
    train = make_synthetic(40, 64, seed=5, shortcut=True, split="train")
    test = make_synthetic(200, 64, seed=6, shortcut=True, split="test")
    np.testing.assert_array_equal(train.marker_slots, train.labels)  # perfectly correlated
    agree = (test.marker_slots == test.labels).mean()
    assert 0.1 < agree < 0.45  # independent of the class in the test split (chance: 0.25)
    for s in (train, test):
        for i in range(len(s)):
            rs, cs = marker_slot_box(int(s.marker_slots[i]), 64)
            box = np.zeros((64, 64), bool)
            box[rs, cs] = True
            np.testing.assert_array_equal(s.marker_masks[i], box)
            assert np.all(s.images[i][box] == 255)
            assert not np.any(s.masks[i] & s.marker_masks[i])


@pytest.mark.parametrize("kwargs,match", [({"n": 0}, "n must be"), ({"n": 2, "size": 16}, "size must be"),
                                          ({"n": 2, "split": "val"}, "split must be")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(errors.InputError, match=match):
        make_synthetic(**kwargs)
