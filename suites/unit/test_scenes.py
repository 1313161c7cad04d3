"""Benchmark v2 scenes: several objects of different classes, per-object masks measured from the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import polygon

from cnnvis_eval import errors
from cnnvis_eval.data import SceneSet, make_scenes
from cnnvis_eval.data.synthetic import CLASSES, shape_polygon


@pytest.fixture(scope="module")
def scenes():
    return make_scenes(24, 64, seed=5)


def test_same_seed_same_scenes_different_seed_different():
    a, b, c = make_scenes(6, 64, seed=3), make_scenes(6, 64, seed=3), make_scenes(6, 64, seed=4)
    np.testing.assert_array_equal(a.images, b.images)
    for ma, mb, ca, cb in zip(a.object_masks, b.object_masks, a.object_classes, b.object_classes):
        np.testing.assert_array_equal(ma, mb)
        np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(a.images, c.images)


def test_shapes_and_classes(scenes):
    assert isinstance(scenes, SceneSet) and len(scenes) == 24
    assert scenes.images.shape == (24, 64, 64, 3) and scenes.images.dtype == np.uint8
    counts = [len(c) for c in scenes.object_classes]
    assert set(counts) == {2, 3}  # both scene sizes occur
    for masks, classes in zip(scenes.object_masks, scenes.object_classes):
        assert masks.shape == (len(classes), 64, 64) and masks.dtype == bool
        assert len(set(classes.tolist())) == len(classes) >= 2  # at least two different classes
        assert ((0 <= classes) & (classes < len(CLASSES))).all()
    seen = np.concatenate(scenes.object_classes)
    assert set(seen.tolist()) == set(range(len(CLASSES)))
    radii = [o["r"] for objs in scenes.objects for o in objs]
    assert max(radii) / min(radii) > 1.4  # varied scale


def test_masks_are_the_pixels_drawn_in_each_objects_colour(scenes):
    """Measured from the image: an object's mask is exactly the set of pixels of its colour;
    the masks of one image are disjoint (occluded pixels belong to the object in front)."""
    for img, masks, objs in zip(scenes.images, scenes.object_masks, scenes.objects):
        assert (masks.sum(0) <= 1).all()
        for mask, obj in zip(masks, objs):
            drawn = (img == obj["colour"]).all(-1)
            np.testing.assert_array_equal(drawn, mask)
            assert mask.sum() >= 20


def _full_area(o):
    """Pixels of an object's whole polygon, occluded or not (rasterized anew from its pose)."""
    rr, _ = polygon(*shape_polygon(o["shape"], o["cy"], o["cx"], o["r"], o["theta"]).T, (64, 64))
    return len(rr)


def test_occlusion_happens_and_is_bounded():
    s = make_scenes(24, 64, seed=5, max_occlusion=0.4)
    hidden = []
    for masks, objs in zip(s.object_masks, s.objects):
        for mask, o in zip(masks, objs):
            hidden.append(1 - mask.sum() / _full_area(o))
    hidden = np.array(hidden)
    assert hidden.max() <= 0.4 + 1e-9 and (hidden > 0.02).any()
    apart = make_scenes(8, 64, seed=5, max_occlusion=0.0)
    for masks, objs in zip(apart.object_masks, apart.objects):
        for mask, o in zip(masks, objs):
            assert mask.sum() == _full_area(o)


def test_contrast_masks(scenes):
    mask, other, labels = scenes.contrast_masks(1)
    for i in range(len(scenes)):
        m = scenes.object_masks[i]
        np.testing.assert_array_equal(mask[i], m[1])
        np.testing.assert_array_equal(other[i], m[0] | (m[2] if len(m) == 3 else False))
        assert labels[i] == scenes.object_classes[i][1]
    assert not (mask & other).any()
    with pytest.raises(errors.InputError, match="image 0 has 2 objects; object index 2"):
        make_scenes(1, 64, seed=0, n_objects=(2, 2)).contrast_masks(2)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be >= 1"),
    ({"n": 2, "size": 32}, "size must be between 48 and 128"),
    ({"n": 2, "n_objects": (1, 3)}, r"n_objects must be \(least, most\)"),
    ({"n": 2, "n_objects": (3, 2)}, r"n_objects must be \(least, most\)"),
    ({"n": 2, "n_objects": (2, 5)}, r"n_objects must be \(least, most\)"),
    ({"n": 2, "n_objects": 3}, r"n_objects must be \(least, most\)"),
    ({"n": 2, "max_occlusion": 1.0}, r"max_occlusion must be in \[0, 0.9\]"),
])
def test_bad_arguments_raise_one_line(kwargs, match):
    with pytest.raises(errors.InputError, match=match) as info:
        make_scenes(**kwargs)
    assert "\n" not in str(info.value)
