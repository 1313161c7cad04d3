"""The synthetic data sets with artefacts (issue 17, item 1): deterministic, the artefact
correlated with the label at the requested strength, and absent / moved / swapped in the
test variants.

The artefact's class is *read from the pixels*, not from the generator's record: a
nearest-centroid decoder of the artefact crops (the box the masks mark) is fitted on a
separate data set drawn with ``correlation=1``, after checking that there the crops of one
label are all closer to their own centroid than to any other.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnvis_eval import errors
from cnnvis_eval.data.artefacts import (
    CLASS_NAMES,
    DATASETS,
    make_artefact_set,
    make_artefact_splits,
)

SIZE = 48


def crops(s, masks=None) -> np.ndarray:
    """(N, side*side*C) crops of ``s.x`` at each mask's bounding box (masks: default s's own)."""
    masks = s.artefact_masks if masks is None else masks
    out = []
    for i in range(len(s)):
        rows, cols = np.nonzero(masks[i])
        out.append(s.x[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1].ravel())
    return np.stack(out).astype(np.float64)


def standardized(c: np.ndarray) -> np.ndarray:
    """Crops with zero mean and unit variance each (brightness and contrast removed)."""
    return (c - c.mean(1, keepdims=True)) / (c.std(1, keepdims=True) + 1e-9)


class Decoder:
    """Nearest-centroid reader of the artefact class, fitted where the artefact is the label."""

    def __init__(self, dataset):
        ref = make_artefact_set(dataset, 48, correlation=1.0, size=SIZE, seed=101)
        c = standardized(crops(ref))
        self.centroids = np.stack([c[ref.y == k].mean(0) for k in range(len(CLASS_NAMES[dataset]))])
        d = self.distances(crops(ref))
        # a perfect cue: every crop is nearest its own label's centroid, with a gap
        own = d[np.arange(len(d)), ref.y]
        other = np.where(np.eye(len(self.centroids), dtype=bool)[ref.y], np.inf, d).min(1)
        assert np.all(other > 1.2 * own), (own.max(), other.min())
        self.min_contrast = crops(ref).std(1).min()

    def distances(self, c):
        c = standardized(c)
        return np.linalg.norm(c[:, None, :] - self.centroids[None], axis=-1)

    def __call__(self, s, masks=None):
        return self.distances(crops(s, masks)).argmin(1)


@pytest.fixture(scope="module", params=DATASETS)
def variants(request):
    ds = request.param
    sets = {v: make_artefact_set(ds, 24, split="test", variant=v, correlation=1.0, size=SIZE, seed=5)
            for v in ("same", "absent", "moved", "swapped")}
    return ds, sets, Decoder(ds)


def test_same_seed_same_bytes_other_seed_or_split_differs():
    a = make_artefact_set("symbols", 6, size=SIZE, seed=3)
    b = make_artefact_set("symbols", 6, size=SIZE, seed=3)
    for f in ("x", "y", "artefact_masks", "object_masks"):
        assert getattr(a, f).tobytes() == getattr(b, f).tobytes()
    assert not np.array_equal(a.x, make_artefact_set("symbols", 6, size=SIZE, seed=4).x)
    assert not np.array_equal(a.x, make_artefact_set("symbols", 6, size=SIZE, seed=3, split="validation").x)


@pytest.mark.parametrize("dataset", DATASETS)
def test_shapes_ranges_and_balance(dataset):
    s = make_artefact_set(dataset, 12, size=24, seed=1)
    c = 3 if dataset == "symbols" else 1
    k = len(CLASS_NAMES[dataset])
    assert s.x.shape == (12, 24, 24, c) and s.x.dtype == np.float32
    assert 0.0 <= s.x.min() and s.x.max() <= 1.0
    assert s.y.shape == (12,) and s.y.dtype == np.int64
    assert np.bincount(s.y, minlength=k).max() - np.bincount(s.y, minlength=k).min() <= 1
    for m in (s.artefact_masks, s.object_masks):
        assert m.shape == (12, 24, 24) and m.dtype == bool
    assert s.class_names == CLASS_NAMES[dataset] and s.num_classes == k


def test_variant_masks_and_pixels(variants):
    """absent: no mask, no artefact pixels; moved: own class, elsewhere; swapped: another
    class, same place; the images are the same outside the artefacts; objects never overlap."""
    _, sets, decode = variants
    same, absent, moved, swapped = (sets[v] for v in ("same", "absent", "moved", "swapped"))
    y = same.y
    for s in sets.values():
        np.testing.assert_array_equal(s.y, y)
        assert not np.any(s.artefact_masks & s.object_masks)
        assert s.object_masks.reshape(len(s), -1).any(1).all()
    home = same.artefact_masks
    assert home.reshape(len(y), -1).any(1).all()
    np.testing.assert_array_equal(decode(same), y)  # correlation 1
    # absent: no mask, the image equals the "same" image outside its artefact box, and the
    # box is flat (an artefact crop has far more contrast)
    assert not absent.artefact_masks.any()
    np.testing.assert_array_equal(absent.x[~home], same.x[~home])
    assert crops(absent, home).std(1).max() < 0.5 * decode.min_contrast
    # moved: the image's own class, in a box that does not touch the usual one
    assert moved.artefact_masks.reshape(len(y), -1).any(1).all()
    assert not np.any(moved.artefact_masks & home)
    np.testing.assert_array_equal(decode(moved), y)
    both = home | moved.artefact_masks
    np.testing.assert_array_equal(moved.x[~both], same.x[~both])
    # swapped: the usual place, never the image's own class
    np.testing.assert_array_equal(swapped.artefact_masks, home)
    assert np.all(decode(swapped) != y)
    assert np.all(swapped.artefact_classes != y) and np.all(absent.artefact_classes == -1)


@pytest.mark.parametrize("dataset", DATASETS)
def test_artefact_agrees_with_label_at_the_requested_strength(dataset):
    """agreement = correlation + (1 - correlation) / K, read from the pixels (4 sigma)."""
    decode = Decoder(dataset)
    k = len(CLASS_NAMES[dataset])
    n, p = 160, 0.5
    s = make_artefact_set(dataset, n, correlation=p, size=SIZE, seed=9)
    agree = np.mean(decode(s) == s.y)
    sigma = np.sqrt(n * (1 - p) * (1 / k) * (1 - 1 / k)) / n
    assert abs(agree - (p + (1 - p) / k)) < 4 * sigma, agree
    np.testing.assert_array_equal(decode(s), s.artefact_classes)  # the record is the pixels


def test_correlation_zero_is_chance_and_one_is_perfect():
    decode = Decoder("symbols")
    n = 200
    zero = make_artefact_set("symbols", n, correlation=0.0, size=SIZE, seed=12)
    one = make_artefact_set("symbols", n, correlation=1.0, size=SIZE, seed=12, split="validation")
    sigma = np.sqrt(0.25 * 0.75 / n)
    assert abs(np.mean(decode(zero) == zero.y) - 0.25) < 4 * sigma
    assert np.mean(decode(one) == one.y) == 1.0


def test_mask_kinds_and_dilation():
    box = make_artefact_set("sketches", 8, size=SIZE, seed=2)
    pix = make_artefact_set("sketches", 8, size=SIZE, seed=2, mask="pixels")
    grown = make_artefact_set("sketches", 8, size=SIZE, seed=2, mask_dilation=2)
    np.testing.assert_array_equal(box.x, pix.x)
    assert np.all(pix.artefact_masks <= box.artefact_masks)
    assert pix.artefact_masks.sum() < box.artefact_masks.sum()
    # the drawn pixels are ink: darker than the paper around them
    ink, paper = box.x[..., 0][pix.artefact_masks], box.x[..., 0][box.artefact_masks & ~pix.artefact_masks]
    assert ink.mean() < paper.mean() - 0.4
    for b, g in zip(box.artefact_masks, grown.artefact_masks):
        rows, cols = np.nonzero(b)
        assert b.sum() == (np.ptp(rows) + 1) ** 2 and np.ptp(rows) == np.ptp(cols)  # a square box
        want = np.zeros_like(b)  # the box grown by 2 pixels, clipped to the image
        want[max(rows.min() - 2, 0):rows.max() + 3, max(cols.min() - 2, 0):cols.max() + 3] = True
        np.testing.assert_array_equal(g, want)


def test_splits_share_settings_and_hold_every_variant():
    sp = make_artefact_splits("xrays", 6, 3, 4, correlation=1.0, size=SIZE, seed=0)
    assert set(sp) == {"train", "validation", "test", "test_absent", "test_moved", "test_swapped"}
    assert [len(sp[k]) for k in ("train", "validation", "test")] == [6, 3, 4]
    assert {s.size for s in sp.values()} == {SIZE}
    np.testing.assert_array_equal(sp["test"].y, sp["test_swapped"].y)
    assert not np.array_equal(sp["train"].x[:3], sp["validation"].x)


@pytest.mark.parametrize("kwargs,match", [
    ({"dataset": "faces"}, "unknown data set"),
    ({"n": 0}, "n must be"),
    ({"size": 16}, "size must be"),
    ({"correlation": 1.5}, "correlation must be"),
    ({"correlation": -0.1}, "correlation must be"),
    ({"split": "val"}, "split must be"),
    ({"variant": "gone"}, "variant must be"),
    ({"mask": "circle"}, "mask must be"),
    ({"mask_dilation": -1}, "mask_dilation must be"),
    ({"artefact_size": 0.5}, "artefact_size must be"),
])
def test_bad_arguments(kwargs, match):
    args = {"dataset": "symbols", "n": 4, **kwargs}
    with pytest.raises(errors.InputError, match=match):
        make_artefact_set(args.pop("dataset"), args.pop("n"), **args)
