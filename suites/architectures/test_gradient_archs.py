"""Gradient and modified-backprop methods on the five architectures (random weights, 96 px).

Per (architecture, method): finite float32 (N, H, W) heatmaps, not all zero, a batch gives
the same maps as its images one by one, and the user's model is unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from suites.support.tiny import weights_snapshot

METHODS = {
    "saliency": {},
    "gradient_x_input": {},
    "integrated_gradients": {"steps": 8},
    "smoothgrad": {"n": 4},
    "vargrad": {"n": 4},
    "deconvnet": {},
    "guided_backprop": {},
}


@pytest.fixture(scope="module")
def snapshots():
    return {}


@pytest.mark.parametrize("method", list(METHODS))
def test_method_on_architecture(big_model, big_input, method, snapshots):
    spec = big_model
    x = big_input(spec, n=2)
    key = spec.name
    if key not in snapshots:
        snapshots[key] = (weights_snapshot(spec.model), np.asarray(spec.model(x[:1], training=False)))
    weights, out = snapshots[key]

    explainer = cv.get_method(method)(spec, **METHODS[method])
    exp = explainer.explain(x)
    assert exp.heatmap.shape == (2,) + spec.input_shape[:2] and exp.heatmap.dtype == np.float32
    assert np.isfinite(exp.heatmap).all()
    assert np.ptp(exp.heatmap) > 0, "heatmap is constant"
    assert exp.attribution.shape == x.shape

    # batch equals per-image (same compiled function, batch of one)
    for i in range(len(x)):
        single = explainer.explain(x[i : i + 1])
        scale = np.abs(exp.heatmap[i]).max()
        np.testing.assert_allclose(single.heatmap[0], exp.heatmap[i], atol=2e-3 * scale, rtol=0)
        assert single.indices[0] == exp.indices[i]

    # user model unchanged: weights identical, same outputs
    for a, b in zip(weights_snapshot(spec.model), weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(spec.model(x[:1], training=False)), out)


def test_guided_backprop_finds_every_rectifier(big_model):
    """Every ReLU / ReLU6 the architecture has is replaced, whichever way Keras expresses it."""
    from cnnvis_eval.graph import rectifier_of

    spec = big_model
    explainer = cv.get_method("guided_backprop")(spec)
    expected = sum(rectifier_of(n.layer) is not None for n in spec.graph.nodes)
    assert len(explainer.overrides) == expected > 0
    if spec.name == "mobilenet_v2":
        capped = [n for n in spec.graph.nodes if (r := rectifier_of(n.layer)) and r.max_value == 6.0]
        assert len(capped) == 35  # all of MobileNetV2's ReLU6 layers
