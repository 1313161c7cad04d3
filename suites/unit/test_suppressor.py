"""Benchmark v2 suppressor variant (issue 16.1): the suppressor region carries no class
information (measured from the pixels) yet a logistic model trained on the pixels uses it, its
gradient puts mass there, and so does an edge detector; suppressor_mass measures it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.data import SuppressorSet, make_suppressor
from cnnvis_eval.errors import InputError


@pytest.fixture(scope="module")
def train():
    return make_suppressor(600, 64, seed=0)


def test_same_seed_same_images_different_seed_different():
    a, b, c = make_suppressor(4, seed=1), make_suppressor(4, seed=1), make_suppressor(4, seed=2)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_shapes_grey_balanced(train):
    assert isinstance(train, SuppressorSet) and len(train) == 600
    assert train.images.shape == (600, 64, 64, 3) and train.images.dtype == np.uint8
    assert (train.images == train.images[..., :1]).all()  # grey
    np.testing.assert_array_equal(np.bincount(train.labels), [300, 300])
    assert not (train.signal_mask & train.suppressor_mask).any()


def _regions_from_pixels(s):
    """The pattern's pixels found from the images alone (intensity varies across images far more
    than the i.i.d. noise does), split into the left (signal) and right (suppressor) copies."""
    grey = s.images[..., 0] / 255.0
    varying = grey.std(0) > 3 * np.median(grey.std(0))
    left = varying & (np.arange(64) < 32)[None, :]
    return grey, left, varying & ~left


def test_suppressor_carries_no_class_information_but_cancels_the_noise(train):
    grey, left, right = _regions_from_pixels(train)
    assert left.sum() == right.sum() >= 40  # the same pattern twice
    assert (left <= train.signal_mask[0]).all() and (right <= train.suppressor_mask[0]).all()
    f_s, f_r = grey[:, left].mean(1), grey[:, right].mean(1)
    y = train.labels
    corr = lambda f: abs(np.corrcoef(f, y)[0, 1])  # noqa: E731
    # measured |correlation with the label|: suppressor 0.06, signal alone 0.53, signal minus suppressor 1.00
    assert corr(f_r) < 0.1 and corr(f_s) < 0.6 and corr(f_s - f_r) > 0.95


@pytest.fixture(scope="module")
def logistic(train):
    """Logistic regression on the pixels of 600 images; weights (64, 64) and held-out accuracy,
    and the accuracy of the same fit on the signal square alone."""
    test = make_suppressor(300, 64, seed=1)
    x, xt = train.images[..., 0].reshape(600, -1) / 255.0, test.images[..., 0].reshape(300, -1) / 255.0
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(x, train.labels)
    sig = train.signal_mask[0].ravel()
    alone = LogisticRegression(C=1.0, max_iter=2000).fit(x[:, sig], train.labels)
    return clf.coef_[0].reshape(64, 64), float(clf.intercept_[0]), clf.score(xt, test.labels), \
        alone.score(xt[:, sig], test.labels)


def test_a_logistic_model_gives_the_suppressor_weight(train, logistic):
    """Measured: held-out accuracy 1.00 with every pixel, 0.70 from the signal square alone;
    |w| summed over the suppressor square is 0.97 of the signal square's, 9x that of an
    equal square of pure noise."""
    w, _, acc, acc_alone = logistic
    assert acc > 0.95 and acc_alone < 0.8
    sig, sup = train.signal_mask[0], train.suppressor_mask[0]
    noise_square = np.roll(sup, 22, axis=0)
    assert not (noise_square & (sig | sup)).any()
    assert np.abs(w[sup]).sum() > 0.7 * np.abs(w[sig]).sum()
    assert np.abs(w[sup]).sum() > 4 * np.abs(w[noise_square]).sum()


def test_gradient_and_edges_put_mass_on_the_suppressor_a_signal_map_does_not(train, logistic):
    """suppressor_mass (share of positive relevance on the suppressor square; the square is 11%
    of the image): measured 0.35 for the model's saliency |gradient|; 0.16 for the Sobel edge map,
    about as much as it puts on the signal square (0.17: it cannot tell them apart; the rest is on the
    background noise); 0.03 for the signed gradient (the model's suppressor weights are negative)
    but 0.35 with absolute=True; a map of the signal square scores 0."""
    w, b, _, _ = logistic
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    kernel = np.zeros((64 * 64 * 3, 2), np.float32)
    kernel[:, 1] = np.repeat(w.ravel() / 3, 3)  # grey = mean of the channels; logit 1 = w . grey + b
    model.layers[-1].set_weights([kernel, np.array([0.0, b], np.float32)])
    x = train.images[:8].astype(np.float32) / 255.0
    sup = train.suppressor_mask[:8]
    mass = lambda h, **kw: M.evaluate("suppressor_mass", h, sup, params=kw).mean()  # noqa: E731
    target = cv.ClassTarget(1)
    saliency = cv.explain("saliency", model, x, target=target).heatmap
    signed = cv.explain("saliency", model, x, target=target, signed=True).heatmap
    sobel = M.EdgeExplainer(model).explain(x).heatmap
    area = sup[0].mean()
    on_signal = M.evaluate("suppressor_mass", sobel, train.signal_mask[:8]).mean()
    assert mass(saliency) > 2.5 * area and mass(sobel) > max(1.2 * area, 0.8 * on_signal)
    assert mass(signed) < 0.05 and mass(signed, absolute=True) > 2.5 * area
    assert mass(train.signal_mask[:8].astype(float)) == 0.0


def test_suppressor_mass_by_hand_and_errors():
    h = np.array([[[2.0, -4.0], [1.0, 1.0]]])
    m = np.array([[[True, True], [False, False]]])
    assert M.evaluate("suppressor_mass", h, m)[0] == pytest.approx(2 / 4)
    assert M.evaluate("suppressor_mass", h, m, params={"absolute": True})[0] == pytest.approx(6 / 8)
    assert M.evaluate("suppressor_mass", -np.abs(h), m)[0] == 0.0  # no positive relevance
    assert np.isnan(M.evaluate("suppressor_mass", h, np.zeros_like(m))[0])
    assert not M.get_metric("suppressor_mass").higher_is_better
    with pytest.raises(InputError, match=r"suppressor_mask has shape \(1, 1, 2\)") as info:
        M.evaluate("suppressor_mass", h, m[:, :1])
    assert "\n" not in str(info.value)
    for kw, pattern in [({"signal": 0.9}, r"signal must be in \[0, 0.5\]"), ({"block": 9}, "block must be between"),
                        ({"size": 200}, "size must be between 48 and 128")]:
        with pytest.raises(InputError, match=pattern):
            make_suppressor(2, **kw)
