"""Detection of irrelevant features (issue 17, items 2 and 3).

Hand-set models first (every number checked against NumPy written here), then a tiny
VGG-style GAP classifier trained in seconds on a shortcut version of the symbols data:
the filter ranking and the CAM mass must single out the artefact for the shortcut model and
not for the same architecture trained where the artefact tells nothing (correlation 0).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from scipy.stats import spearmanr

import cnnvis_eval as cv
from cnnvis_eval.data.artefacts import make_artefact_set
from cnnvis_eval.errors import InputError, UnsupportedLayerError
from cnnvis_eval.remedy import (
    MaskSelection,
    accuracy,
    as_masks,
    class_weights,
    downsample_masks,
    explanation_mass,
    feature_maps,
    filter_analysis,
    propose_from_cam,
    propose_from_channels,
    train_classifier,
)
from suites.support.tiny import weights_snapshot

S = 8  # hand-set models: 8x8 single-channel inputs
W_HEAD = np.array([[2.0, 0.0], [0.0, 1.0]])  # class 0 reads channel 0, class 1 channel 1


@functools.cache  # one model per configuration: its compiled functions are reused (it is only read)
def hand_model(pool: bool = False, head: str = "gap") -> keras.Model:
    """x (8,8,1) -> Conv2D 1x1 [relu(x), relu(1 - x)] -> (AveragePooling 2) -> GAP -> Dense W_HEAD.

    ``head="flatten"``: Flatten -> Dense instead (no CAM head)."""
    inp = keras.Input((S, S, 1), name="image")
    conv = keras.layers.Conv2D(2, 1, activation="relu", name="conv")
    h = conv(inp)
    if pool:
        h = keras.layers.AveragePooling2D(2, name="pool")(h)
    if head == "gap":
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        dense = keras.layers.Dense(2, name="logits")
        out = dense(h)
        dense.set_weights([W_HEAD, np.zeros(2)])
    else:
        h = keras.layers.Flatten(name="flatten")(h)
        dense = keras.layers.Dense(2, name="logits")
        out = dense(h)
        dense.set_weights([np.random.default_rng(0).normal(0, 1, (h.shape[-1], 2)), np.zeros(2)])
    conv.set_weights([np.array([[[[1.0, -1.0]]]]), np.array([0.0, 1.0])])
    return keras.Model(inp, out, name=f"hand_{head}_{int(pool)}")


def hand_data(n: int = 4, seed: int = 0):
    """Images in [0, 1] with a bright 3x3 square at a random place, and the square's masks."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.3, (n, S, S, 1)).astype(np.float32)
    masks = np.zeros((n, S, S), bool)
    for i in range(n):
        r, c = rng.integers(0, S - 3, 2)
        masks[i, r:r + 3, c:c + 3] = True
    x[masks] = 1.0
    return x, masks


def blocks(a: np.ndarray, k: int = 2) -> np.ndarray:
    """Mean over k x k blocks of (N, H, W[, C]) arrays."""
    n, h, w = a.shape[:3]
    return a.reshape(n, h // k, k, w // k, k, *a.shape[3:]).mean((2, 4))


# ---------------------------------------------------------------------- hand-set models
@pytest.mark.parametrize("pool", [False, True], ids=["full_res", "pooled"])
def test_filter_shares_match_numpy(pool):
    model = hand_model(pool)
    x, masks = hand_data()
    before = weights_snapshot(model)
    r = filter_analysis(model, x, masks, threshold=0.3, class_names=("cat", "dog"))
    a = np.stack([np.maximum(x[..., 0], 0), np.maximum(1 - x[..., 0], 0)], -1).astype(np.float64)
    m = masks.astype(np.float64)
    if pool:
        a, m = blocks(a), blocks(m)
    want = (a * m[..., None]).sum((0, 1, 2)) / a.sum((0, 1, 2))
    np.testing.assert_allclose(r.shares, want, rtol=1e-5)
    assert r.layer == ("pool" if pool else "conv")
    assert r.chance == pytest.approx(m.mean())
    np.testing.assert_array_equal(r.ranking, np.argsort(-want))
    assert r.shares[0] > 0.3 > r.shares[1]  # channel 0 lives on the bright squares
    np.testing.assert_array_equal(r.irrelevant, [0])
    np.testing.assert_allclose(r.weights, W_HEAD)
    np.testing.assert_allclose(r.mean_activation, a.mean((0, 1, 2)), rtol=1e-5)
    # class 0's score is channel 0 alone; class 1's never uses it
    pred = (a.mean((1, 2)) @ W_HEAD).argmax(1)
    for c in (0, 1):
        if np.any(pred == c):
            assert r.irrelevant_contribution[c] == pytest.approx(1.0 - c)
    df = r.frame()
    assert list(df["channel"]) == list(r.ranking) and df["irrelevant"].tolist() == [True, False]
    assert df.loc[0, "weight[cat]"] == 2.0 and df.loc[0, "weight[dog]"] == 0.0
    assert df.loc[0, "enrichment"] == pytest.approx(want[0] / m.mean())
    for b, after in zip(before, weights_snapshot(model), strict=True):  # the model is only read
        np.testing.assert_array_equal(b, after)


def test_feature_maps_and_downsampled_masks():
    model = hand_model(pool=True)
    x, masks = hand_data(3)
    a, logits = feature_maps(model, x, logits=True)
    want = blocks(np.stack([x[..., 0], 1 - x[..., 0]], -1))
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, want.mean((1, 2)) @ W_HEAD, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(downsample_masks(masks, (4, 4)), blocks(masks.astype(float)), atol=1e-6)
    # a non-integer ratio: cell coverage still sums to the mask's area share
    cov = downsample_masks(masks, (3, 3))
    np.testing.assert_allclose(cov.mean((1, 2)), masks.mean((1, 2)), atol=1e-6)


def test_no_cam_head_gives_no_weights_but_still_ranks():
    model = hand_model(head="flatten")
    x, masks = hand_data()
    r = filter_analysis(model, x, masks)
    assert r.layer == "conv" and r.weights is None and r.irrelevant_contribution is None
    assert r.ranking[0] == 0
    assert class_weights(model) is None


def test_explanation_mass_matches_numpy_cam():
    model = hand_model()
    x, masks = hand_data(5, seed=3)
    rep = explanation_mass(model, x, masks, method="cam", target=cv.ClassTarget(0))
    cam = 2.0 * x[..., 0]  # class 0's map: W[0, 0] * relu(x)
    want = (cam * masks).sum((1, 2)) / cam.sum((1, 2))
    np.testing.assert_allclose(rep.per_image, want, rtol=1e-5)
    assert rep.score == pytest.approx(want.mean()) and rep.chance == pytest.approx(masks.mean())
    # any registered method; an empty mask leaves the image out
    masks[0] = False
    rep = explanation_mass(model, x, masks, method="saliency", target=cv.ClassTarget(0))
    assert np.isnan(rep.per_image[0]) and np.isfinite(rep.per_image[1:]).all()
    assert rep.score == pytest.approx(np.nanmean(rep.per_image))


def test_mask_selection_builds_what_numpy_builds():
    sel = MaskSelection(3, 10, 12)
    sel.add_rectangle(2, 3, 5, 7)
    sel.add_polygon([(0, 0), (0, 4), (4, 0)], images=[1])
    one = np.zeros((10, 12), bool)
    one[9, 11] = True
    sel.add_array(one, images=[2])
    sel.erase = True
    sel.add_rectangle(2, 3, 3, 7, images=[0])
    want = np.zeros((3, 10, 12), bool)
    want[:, 2:5, 3:7] = True
    want[0, 2, 3:7] = False
    rows, cols = np.mgrid[0:10, 0:12]
    want[1] |= (rows + cols <= 4) & (rows >= 0) & (cols >= 0)  # the triangle, edges included
    want[2, 9, 11] = True
    got = sel.masks
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[2], want[2])
    # skimage's polygon fill: the triangle's interior at least, nothing beyond its edge
    assert np.all(got[1] <= want[1]) and got[1][(rows + cols < 4)].all()
    grown = MaskSelection(1, 10, 12).add_rectangle(4, 4, 6, 6).dilate(1).masks[0]
    want = np.zeros((10, 12), bool)
    want[3:7, 3:7] = True
    np.testing.assert_array_equal(grown, want)


@pytest.mark.parametrize("call,match", [
    pytest.param(lambda s: s.add_rectangle(5, 5, 5, 8), "rectangle", id="empty_rectangle"),
    pytest.param(lambda s: s.add_rectangle(0, 0, 11, 4), "rectangle", id="rectangle_outside"),
    pytest.param(lambda s: s.add_polygon([(0, 0), (1, 1)]), "polygon", id="two_vertices"),
    pytest.param(lambda s: s.add_array(np.zeros((2, 10, 12), bool)), "shape", id="array_shape"),
    pytest.param(lambda s: s.add_rectangle(0, 0, 2, 2, images=[3]), "out of range", id="image_index"),
    pytest.param(lambda s: s.dilate(-1), "dilate", id="negative_dilation"),
])
def test_mask_selection_errors(call, match):
    with pytest.raises(InputError, match=match):
        call(MaskSelection(3, 10, 12))


def test_proposals_find_the_bright_squares():
    model = hand_model()
    x, masks = hand_data(4, seed=5)
    # CAM of class 0 is 2 * x: at least half its maximum exactly on the squares
    np.testing.assert_array_equal(propose_from_cam(model, x, target=cv.ClassTarget(0)), masks)
    # ... unless they are declared the object
    assert not propose_from_cam(model, x, masks, target=cv.ClassTarget(0)).any()
    np.testing.assert_array_equal(propose_from_channels(model, x, [0]), masks)


@pytest.mark.parametrize("call,match", [  # every one an InputError
    pytest.param(lambda m, x, k: filter_analysis(m, x, k[:, :4]), "masks have shape", id="mask_shape"),
    pytest.param(lambda m, x, k: filter_analysis(m, x, k.astype(float) * 0.5), "boolean", id="mask_values"),
    pytest.param(lambda m, x, k: filter_analysis(m, x, k, layer="gap"), "4-D feature map", id="not_a_conv_layer"),
    pytest.param(lambda m, x, k: filter_analysis(m, x, k, layer="nope"), "nope", id="unknown_layer"),
    pytest.param(lambda m, x, k: filter_analysis(m, x, k, threshold=0), "threshold", id="threshold"),
    pytest.param(lambda m, x, k: filter_analysis(m, x, k, class_names=["a"]), "class_names has 1",
                 id="class_names"),
    pytest.param(lambda m, x, k: filter_analysis(m, x[..., :1, :], k), "images have shape", id="image_shape"),
    pytest.param(lambda m, x, k: explanation_mass(m, x, k[:2]), "masks have shape", id="mass_mask_count"),
    pytest.param(lambda m, x, k: propose_from_cam(m, x, threshold=1.5), "threshold", id="proposal_threshold"),
    pytest.param(lambda m, x, k: propose_from_channels(m, x, [2]), "channels", id="channel_index"),
    pytest.param(lambda m, x, k: as_masks(k, 3, (S, S)), "expected", id="as_masks_count"),
])
def test_bad_input(call, match):
    x, masks = hand_data()
    with pytest.raises(InputError, match=match):
        call(hand_model(), x, masks)


def test_subclassed_model_is_refused_with_its_reason():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 1)
            self.pool = keras.layers.GlobalAveragePooling2D()

        def call(self, x):
            import tensorflow as tf
            return self.pool(tf.nn.relu(self.conv(x)))

    model = Sub()
    model(np.zeros((1, S, S, 1), np.float32))
    x, masks = hand_data()
    with pytest.raises(UnsupportedLayerError, match="subclassed model; filter analysis needs its feature maps"):
        filter_analysis(model, x, masks)


# ---------------------------------------------------------------------- a trained shortcut
TINY = {"size": 32, "artefact_size": 0.25, "seed": 0}
TRAIN = {"epochs": 15, "lr": 0.01, "widths": (8, 16, 32), "convs_per_block": 1, "seed": 0}


@functools.cache
def variant_sets():
    return {v: make_artefact_set("symbols", 64, split="test", variant=v, correlation=1.0, **TINY)
            for v in ("same", "absent", "swapped")}


@functools.cache
def trained(correlation: float) -> keras.Model:
    """The tiny classifier on 256 symbols images (32 px) whose artefact agrees with the label at
    ``correlation``: 1.0 the shortcut model, 0.0 the upper bound."""
    data = make_artefact_set("symbols", 256, correlation=correlation, **TINY)
    return train_classifier(data.x, data.y, **TRAIN)


def accuracies(model, t) -> dict:
    return {v: np.mean(feature_maps(model, s.x, logits=True)[1].argmax(1) == s.y) for v, s in t.items()}


def near(masks: np.ndarray) -> np.ndarray:
    """Masks grown by one cell of the 8x8 feature map (4 px)."""
    return binary_dilation(masks, np.ones((1, 9, 9), bool))


def landing(prop: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """(share of images with a proposal, median share of their proposal near the masks)."""
    some = prop.any((1, 2))
    return some.mean(), np.median((prop & near(masks)).sum((1, 2))[some] / prop.sum((1, 2))[some])


def test_detection_on_a_trained_shortcut_model():
    """The shortcut model (trained once, in seconds) follows the artefact; the filters ranked
    first are the artefact-driven ones; CAM and the proposals point at the artefact.  (Its
    contrast with the upper bound is the slow test below: a second training.)"""
    short, t = trained(1.0), variant_sets()
    same = t["same"]
    acc = accuracies(short, t)  # precondition, measured: it reads the patch
    assert acc["same"] >= 0.95 and acc["swapped"] <= 0.25, acc
    # a channel's share on the mask predicts how much of its activation the artefact causes
    # (measured apart: the same images with the artefact removed)
    r = filter_analysis(short, same.x, same.artefact_masks)
    a_on = feature_maps(short, same.x).astype(np.float64)
    a_off = feature_maps(short, t["absent"].x).astype(np.float64)
    caused = np.maximum(a_on - a_off, 0).sum((0, 1, 2)) / np.maximum(a_on.sum((0, 1, 2)), 1e-12)
    alive = np.isfinite(r.shares)
    assert spearmanr(r.shares[alive], caused[alive])[0] >= 0.6
    assert np.all(caused[r.top(3)] >= 0.8), caused[r.top(3)]
    assert len(r.irrelevant) >= 3 and np.all(caused[r.irrelevant] >= 0.5)
    others = np.setdiff1d(np.flatnonzero(alive), r.irrelevant)
    assert caused[r.irrelevant].mean() >= caused[others].mean() + 0.4
    # CAM's mass on the artefact, and the decision resting on the irrelevant filters
    rs = explanation_mass(short, same.x, same.artefact_masks)
    assert rs.score >= 3 * rs.chance, (rs.score, rs.chance)
    assert np.nanmax(r.irrelevant_contribution) >= 0.5
    # automatic proposals land on the artefact
    some, on = landing(propose_from_channels(short, same.x, r.irrelevant, threshold=0.3), same.artefact_masks)
    assert some >= 0.75 and on >= 0.9, (some, on)
    some, on = landing(propose_from_cam(short, same.x, same.object_masks), same.artefact_masks)
    assert some >= 0.9 and on >= 0.9, (some, on)


@pytest.mark.slow
def test_the_upper_bound_is_not_flagged():
    """The same architecture trained where the artefact tells nothing (correlation 0): it
    ignores the patch, CAM does not look at it, and no decision rests on patch filters."""
    short, upper, t = trained(1.0), trained(0.0), variant_sets()
    same = t["same"]
    acc = accuracies(upper, t)
    assert acc["same"] >= 0.7 and acc["swapped"] >= acc["same"] - 0.15, acc
    rs = explanation_mass(short, same.x, same.artefact_masks)
    ru = explanation_mass(upper, same.x, same.artefact_masks)
    assert ru.score <= 1.5 * ru.chance, (ru.score, ru.chance)
    assert rs.score >= 3 * ru.score
    fu = filter_analysis(upper, same.x, same.artefact_masks)
    assert np.nanmax(fu.irrelevant_contribution) <= 0.1
    assert landing(propose_from_cam(upper, same.x, same.object_masks), same.artefact_masks)[1] <= 0.3


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["sketches", "symbols", "xrays"])
def test_detection_at_the_default_size(dataset):
    """64 px, 800 training images: the shortcut model follows the artefact and CAM says so;
    the upper bound (artefact uninformative) neither follows it nor looks at it."""
    data = {v: make_artefact_set(dataset, 160, split="test", variant=v, correlation=1.0, size=64)
            for v in ("same", "swapped")}
    train = dict(epochs=10, lr=0.005, widths=(16, 32, 64), convs_per_block=1, seed=0)
    out = {}
    for name, corr in (("shortcut", 1.0), ("upper_bound", 0.0)):
        d = make_artefact_set(dataset, 800, correlation=corr, size=64)
        model = train_classifier(d.x, d.y, **train)
        mass = explanation_mass(model, data["same"].x, data["same"].artefact_masks)
        out[name] = {v: accuracy(model, s.x, s.y) for v, s in data.items()} | {"mass": mass.score}
        chance = mass.chance
    s, u = out["shortcut"], out["upper_bound"]
    print(dataset, out, chance)
    # the artefact steers the shortcut model (sketches at 64 px: the drawing is as easy a
    # cue as the signature, so only about half of the swapped images flip)
    assert s["same"] >= 0.9 and s["swapped"] <= s["same"] - 0.3, out
    assert u["swapped"] >= u["same"] - 0.15, out
    assert s["mass"] >= 2 * chance and s["mass"] >= 2 * u["mass"], (out, chance)


@pytest.mark.slow
def test_training_is_deterministic():
    d = make_artefact_set("symbols", 64, correlation=1.0, **TINY)
    a, b = (train_classifier(d.x, d.y, **(TRAIN | {"epochs": 2})) for _ in range(2))
    for u, v in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
