"""Guided IG, Blur IG and XRAI against PAIR's ``saliency`` package (``saliency.core``) on the
same Keras model and inputs: the package is the reference (a test dependency), called with a
``call_model_function`` that takes the model's own gradient, independently of our
explainers.

PAIR's ``guided_ig`` calls ``np.quantile(..., interpolation='lower')``, a keyword NumPy 2
removed; the reference runs with that one call spelled ``method='lower'`` (same value), see
:func:`pair_guided_ig`.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.methods.path_ig import gaussian_matrix
from cnnvis_eval.methods.xrai import segment_masks, xrai_regions
from suites.support import tiny
from suites.support.models import mini_spec
from suites.support.suite_data import benchmark

sc = pytest.importorskip("saliency.core")
from saliency.core import guided_ig as pair_gig  # noqa: E402
from saliency.core import xrai as pair_xrai  # noqa: E402

CLS = np.array([0, 2])


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def call_model_function(fn, cls: int, dtype):
    """PAIR's ``call_model_function``: gradients of logit ``cls`` of ``fn`` (a Keras model or
    a graph run) w.r.t. the batch, in a compiled function (eager gradients of strided convs
    crash TF 2.21 + oneDNN)."""

    @tf.function
    def grad(xb):
        with tf.GradientTape() as tape:
            tape.watch(xb)
            y = fn(xb)[:, cls]
        return tape.gradient(y, xb)

    def call(xb, call_model_args=None, expected_keys=None):
        return {sc.INPUT_OUTPUT_GRADIENTS: grad(tf.constant(np.asarray(xb, dtype))).numpy()}

    return call


class _Numpy2(types.ModuleType):
    """``numpy`` as PAIR's guided_ig module sees it, with ``quantile(interpolation=)``."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def quantile(a, q, interpolation="linear", **kw):
        return np.quantile(a, q, method=interpolation, **kw)


def pair_guided_ig(monkeypatch, x, call, **kw):
    monkeypatch.setattr(pair_gig, "np", _Numpy2("numpy"))
    return sc.GuidedIG().GetMask(x, call, **kw)


@pytest.fixture(scope="module")
def tiny_pair():
    model = tiny.tiny_cnn()
    x = tiny.tiny_input(2, seed=3) * 2.0
    return model, x


def test_registered():
    assert {"guided_ig", "blur_ig", "xrai"} <= set(cv.list_methods())


@pytest.mark.parametrize("max_dist", [0.02, 0.3])
def test_guided_ig_matches_pair(monkeypatch, tiny_pair, max_dist):
    model, x = tiny_pair
    exp = cv.explain("guided_ig", model, x, target=cv.ClassTarget(CLS), steps=24, max_dist=max_dist)
    for n in range(len(x)):
        ref = pair_guided_ig(monkeypatch, x[n], call_model_function(model, CLS[n], np.float64),
                             x_steps=24, fraction=0.25, max_dist=max_dist)
        assert np.abs(ref).max() > 0.1
        np.testing.assert_allclose(exp.attribution[n], ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
        assert pearson(exp.heatmap[n], ref.sum(-1)) > 0.99


def test_guided_ig_batches_like_single_images(tiny_pair):
    model, x = tiny_pair
    both = cv.explain("guided_ig", model, x, target=cv.ClassTarget(CLS), steps=8)
    one = cv.explain("guided_ig", model, x[1:], target=cv.ClassTarget(CLS[1:]), steps=8)
    np.testing.assert_allclose(both.attribution[1], one.attribution[0], rtol=1e-12)


@pytest.mark.parametrize("sqrt", [False, True])
def test_blur_ig_matches_pair(tiny_pair, sqrt):
    model, x = tiny_pair
    exp = cv.explain("blur_ig", model, x, target=cv.ClassTarget(CLS), steps=12, max_sigma=3.0, sqrt=sqrt,
                     internal_batch_size=5)
    for n in range(len(x)):
        # batch_size=1: PAIR weights a whole batch by the last step's sigma difference
        ref = sc.BlurIG().GetMask(x[n], call_model_function(model, CLS[n], np.float64), steps=12,
                                  max_sigma=3.0, sqrt=sqrt, batch_size=1)
        assert np.abs(ref).max() > 0.1
        np.testing.assert_allclose(exp.attribution[n], ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.7, 2.5, 30.0])
def test_gaussian_matrix_is_scipys_filter(sigma):
    from scipy import ndimage

    v = np.random.default_rng(0).normal(size=(9, 3))
    want = ndimage.gaussian_filter(v, sigma=[sigma, 0], mode="constant") if sigma else v
    np.testing.assert_allclose(gaussian_matrix(9, sigma) @ v, want, rtol=1e-12, atol=1e-14)


@pytest.fixture(scope="module")
def mini_xrai():
    """mini_vgg, one synthetic image, its XRAI explanation (8 IG steps) and its segments."""
    spec = mini_spec("mini_vgg")
    syn = benchmark(1)
    x, label = spec.preprocess(syn.images), int(syn.labels[0])
    exp = cv.explain("xrai", spec, x, target=cv.ClassTarget([label]), steps=8)
    return spec, x, label, exp, segment_masks(x[0])


def test_xrai_segments_are_pairs(mini_xrai):
    _, x, _, _, ours = mini_xrai
    ref = pair_xrai._get_segments_felzenszwalb(x[0])
    assert len(ours) == len(ref) > 20
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("shape", [(48, 80), (250, 250)])
def test_xrai_segments_are_pairs_at_other_sizes(shape):
    """Non-square, and larger than the 224 px segmentation size (the labels resized up)."""
    img = np.random.default_rng(sum(shape)).random(shape + (3,)).astype(np.float32)
    img = ndimage.gaussian_filter(img, sigma=(3, 3, 0))  # regions, not noise
    ours = segment_masks(img)
    ref = pair_xrai._get_segments_felzenszwalb(img)
    assert len(ours) == len(ref) > 6
    assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


@pytest.mark.parametrize("shape,radius", [((20, 31), 5), ((64, 64), 5), ((4, 9), 5), ((12, 12), 2)])
def test_dilated_labels_are_skimages_dilation_per_label(shape, radius):
    """Every label from min to max (one absent), against skimage's dilation of each label's
    mask with its default mirrored border; (4, 9) is smaller than the disk (the per-label path)."""
    from skimage.morphology import dilation, disk

    from cnnvis_eval.methods.xrai import dilated_labels

    seg = np.random.default_rng(radius).integers(3, 9, size=shape)
    seg[seg == 5] = 6  # label 5 absent: an empty mask, as the per-label loop gives
    ours = dilated_labels(seg, radius)
    ref = np.stack([dilation(seg == k, footprint=disk(radius)) for k in range(3, 9)])
    assert ours.dtype == bool and ours.shape == ref.shape and not ours[2].any()
    np.testing.assert_array_equal(ours, ref)


def test_xrai_regions_match_pair_on_the_same_attributions(mini_xrai):
    """Same integrated gradients and segments given to both: PAIR's greedy region ranking."""
    _, x, _, exp, masks = mini_xrai
    ref = sc.XRAI().GetMaskWithDetails(
        x[0], None, base_attribution=exp.attribution[0], segments=list(masks),
        extra_parameters=pair_xrai.XRAIParameters(return_xrai_segments=True))
    np.testing.assert_allclose(exp.heatmap[0], ref.attribution_mask, rtol=1e-6,
                               atol=1e-6 * np.abs(ref.attribution_mask).max())
    np.testing.assert_array_equal(exp.meta["ranks"][0], ref.segments)
    assert len(np.unique(exp.meta["ranks"][0])) > 3


@pytest.mark.parametrize("kind", ["half_zero", "constant", "ramp", "noise"])
def test_xrai_greedy_picks_pairs_regions_under_ties(mini_xrai, kind):
    """The greedy step keeps each mask's new-pixel count and attribution sum up to date (the
    pixels each added region covers are subtracted) instead of recomputing them over the
    image; on attributions with exact ties (a zero half, a constant map: equal gains, the
    first mask wins) and without, it picks PAIR's regions in PAIR's order, and the gains
    are PAIR's."""
    _, x, _, _, masks = mini_xrai
    h, w = masks.shape[1:]
    attr = {"half_zero": np.where(np.arange(h)[:, None] < h // 2, 0.0, np.random.default_rng(0).normal(size=(h, w))),
            "constant": np.zeros((h, w)),
            "ramp": np.add.outer(np.linspace(0, 1, h), np.linspace(1, 0, w)),
            "noise": np.random.default_rng(1).normal(size=(h, w))}[kind]
    ref = sc.XRAI().GetMaskWithDetails(
        x[0], None, base_attribution=np.repeat(attr[..., None], 3, axis=-1), segments=list(masks),
        extra_parameters=pair_xrai.XRAIParameters(return_xrai_segments=True))
    heat, ranks = xrai_regions(attr, masks)
    np.testing.assert_array_equal(ranks, ref.segments)
    np.testing.assert_allclose(heat, ref.attribution_mask, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_xrai_integrated_gradients_match_pairs(mini_xrai):
    """Our IG (midpoint rule) against PAIR's (``linspace(0, 1, steps)``: both end points, a
    biased rule), both from the image's min and max baselines, at 256 steps each, where both
    are close to the integral they approximate (PAIR's 256 vs 1024 steps: r = 0.9995).  At 32
    steps ours is still r = 0.968 from it on this mini_vgg image (measured 2026-12-02; the
    test used to claim 0.99 at 32 steps, which the retrained minis and benchmark v2's images
    no longer give: a statement about convergence speed, not about correctness)."""
    spec, x, label, _, _ = mini_xrai
    exp = cv.explain("xrai", spec, x, target=cv.ClassTarget([label]), steps=256)
    call = call_model_function(lambda xb: spec.graph.run(xb)[0], label, np.float32)
    ig = np.mean([sc.IntegratedGradients().GetMask(x[0], call, x_baseline=np.full_like(x[0], v),
                                                   x_steps=256, batch_size=64)
                  for v in (x[0].min(), x[0].max())], axis=0)
    assert pearson(exp.attribution[0], ig) > 0.998


@pytest.mark.parametrize("method, params, match", [
    ("guided_ig", {"fraction": 1.5}, "at most 1"),
    ("guided_ig", {"steps": 0}, "steps"),
    ("blur_ig", {"max_sigma": 0}, "max_sigma"),
    ("xrai", {"area_threshold": 0}, "area_threshold"),
])
def test_bad_parameters_are_named(method, params, match):
    with pytest.raises(InputError, match=match):
        cv.get_method(method)(tiny.tiny_cnn(), **params)


def test_xrai_segments_are_computed_once_per_image(monkeypatch):
    """The segments depend on the image only: a second call with an equal image (another
    array) reuses them; a changed pixel, shape or dtype segments anew; the cached masks are
    read-only."""
    from cnnvis_eval.methods import xrai

    calls = []
    real = xrai._segment_masks
    monkeypatch.setattr(xrai, "_segment_masks", lambda im: calls.append(1) or real(im))
    monkeypatch.setattr(xrai, "SEGMENTS", type(xrai.SEGMENTS)())
    x = benchmark(2).images[0].astype(np.float32)
    first = xrai.segment_masks(x)
    again = xrai.segment_masks(x.copy())
    assert len(calls) == 1 and again is first and not first.flags.writeable
    other = x.copy()
    other[0, 0, 0] += 0.5
    xrai.segment_masks(other)
    xrai.segment_masks(x.astype(np.float64))
    assert len(calls) == 3
    np.testing.assert_array_equal(xrai.segment_masks(x), real(x))


def test_guided_ig_completeness_error_is_against_the_models_own_scores(tiny_pair):
    """meta["completeness_error"] = |sum(attribution) - (f(x) - f(baseline))| / |f(x) - f(baseline)|
    with f read off the model directly (the method takes f(baseline) from its first gradient
    call, where the path starts)."""
    model, x = tiny_pair
    exp = cv.explain("guided_ig", model, x, target=cv.ClassTarget(CLS), steps=32)
    f = lambda v: np.asarray(model(v), np.float64)[np.arange(len(x)), CLS]  # noqa: E731
    delta = f(x) - f(np.zeros_like(x))
    want = np.abs(exp.attribution.reshape(len(x), -1).sum(1) - delta) / np.abs(delta)
    assert np.abs(delta).min() > 1e-2
    np.testing.assert_allclose(exp.meta["completeness_error"], want, rtol=1e-4, atol=1e-7)
