"""Faithfulness gains (issue 16.2): deletion, insertion and ROAD curves against random orders, per
unit of the clean logit, so that tables compare across models; checked against a NumPy deletion
curve of a linear model, and shown invariant to the scale of the logits."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError
from cnnvis_eval.metrics.faithfulness import road_curve
from cnnvis_eval.targets import ClassTarget

H = 12
N = 6
GAINS = ("deletion_gain", "insertion_gain", "road_morf_gain", "road_lerf_gain")


def _linear(scale: float = 1.0):
    """logit_c = sum(W_c * x) + b_c on (H, H, 3) inputs; W, b from a fixed seed, times ``scale``."""
    rng = np.random.default_rng(0)
    w, b = rng.normal(0, 1, (H * H * 3, 3)), rng.normal(0, 0.5, 3) + np.array([2.0, 0.0, 0.0])
    model = keras.Sequential([keras.Input((H, H, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    model.layers[-1].set_weights([(scale * w).astype(np.float32), (scale * b).astype(np.float32)])
    return model, w, b


@pytest.fixture(scope="module")
def data():
    x = np.random.default_rng(1).random((N, H, H, 3)).astype(np.float32)
    model, w, b = _linear()
    contrib = (w[:, 0].reshape(H, H, 3) * x).sum(-1)  # each pixel's share of logit 0: the ideal MoRF order
    return model, x, w, b, contrib


def _numpy_deletion_auc(contrib, heat, bias, per_step):
    """Zero-fill deletion of a linear model: the logit loses each pixel's contribution when deleted."""
    n, pixels = len(contrib), contrib[0].size
    out = []
    for c, h in zip(contrib.reshape(n, -1), heat.reshape(n, -1)):
        order = np.argsort(-h, kind="stable")
        left = bias + c.sum() - np.concatenate([[0.0], np.cumsum(c[order])])  # after k deletions
        ks = np.minimum(np.arange(-(-pixels // per_step) + 1) * per_step, pixels)
        out.append(np.trapezoid(left[ks], ks / pixels))
    return np.array(out)


def test_deletion_gain_matches_numpy(data):
    """gain = -(AUC(map) - mean AUC(3 random orders)) / |logit|, the random orders being the
    RandomExplainer maps of seeds 1..3, every curve computed here in NumPy."""
    model, x, w, b, contrib = data
    for heat in (contrib, -contrib, np.random.default_rng(5).random((N, H, H))):
        got = M.evaluate("deletion_gain", model, x, heat, target=ClassTarget(0), params={"pixels_per_step": 10})
        rand = np.mean([_numpy_deletion_auc(contrib, M.RandomExplainer(model, seed=s).explain(x).heatmap, b[0], 10)
                        for s in (1, 2, 3)], axis=0)
        clean = b[0] + contrib.sum((1, 2))
        want = -(_numpy_deletion_auc(contrib, heat, b[0], 10) - rand) / np.abs(clean)
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("metric", GAINS)
def test_gain_does_not_depend_on_the_logit_scale_and_tells_good_from_bad(data, metric):
    """Logits x10 leave the gain unchanged (the raw deletion AUC grows x10); the ideal order of a
    linear model beats the random orders (gain > 0), its reverse loses (< 0)."""
    model, x, _, _, contrib = data
    big, _, _ = _linear(10.0)
    t = ClassTarget(0)
    params = {"pixels_per_step": 12} if metric in ("deletion_gain", "insertion_gain") else {}
    if metric == "insertion_gain":
        params["blur_kernel"] = 5
    gain = M.evaluate(metric, model, x, contrib, target=t, params=params)
    np.testing.assert_allclose(M.evaluate(metric, big, x, contrib, target=t, params=params), gain, rtol=1e-4, atol=1e-5)
    assert gain.mean() > 0.05, gain
    assert M.evaluate(metric, model, x, -contrib, target=t, params=params).mean() < -0.05
    if metric == "deletion_gain":
        raw = lambda m: M.evaluate("deletion_auc", m, x, contrib, target=t, params=params)  # noqa: E731
        np.testing.assert_allclose(raw(big), 10 * raw(model), rtol=1e-4)


def test_road_lerf_is_morf_of_the_reversed_map(data):
    model, x, _, _, contrib = data
    lerf = road_curve(model, x, contrib, ClassTarget(0), order="lerf")
    morf = road_curve(model, x, -contrib, ClassTarget(0))
    np.testing.assert_array_equal(lerf.scores, morf.scores)
    with pytest.raises(InputError, match="order must be 'morf'"):
        road_curve(model, x, contrib, order="best")


def test_undefined_and_bad_parameters(data):
    model, x, _, _, contrib = data
    assert np.isnan(M.evaluate("deletion_gain", model, x, contrib, params={"min_scale": 1e9})).all()
    with pytest.raises(InputError, match="random_orders must be an integer >= 1"):
        M.get_metric("road_morf_gain")(random_orders=0)
