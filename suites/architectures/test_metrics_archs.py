"""Metric machinery on the five architectures (random weights, 96 px); slow.

Per architecture: the clone computes the same function, the input-shifted clone computes
the same function on shifted inputs, a short cascading randomization runs and changes the
saliency map, the faithfulness curves run, and the user's model is unchanged throughout.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.metrics import axioms as A
from suites.support.tiny import weights_snapshot

pytestmark = pytest.mark.slow


def test_metrics_on_architecture(big_model, big_input):
    spec = big_model
    x = big_input(spec, n=2)
    weights, out = weights_snapshot(spec.model), np.asarray(spec.model(x, training=False))
    logits = np.asarray(spec.graph.run(x)[0])
    scale = np.abs(logits).max()

    clone = M.clone_with_weights(spec)
    np.testing.assert_allclose(np.asarray(clone.model(x, training=False)), logits, rtol=0, atol=1e-5 * scale)

    shift = A.default_shift(spec)
    g = A.shift_model(spec, shift)
    shifted = np.asarray(g.graph.run((x + shift).astype(np.float32))[0])
    np.testing.assert_allclose(shifted, logits, rtol=0, atol=1e-3 * scale)

    curve = M.randomization_curve(spec, x, "saliency", similarity=["spearman_abs"], max_steps=2,
                                  reuse_explainer=True)
    assert set(curve.step) == {0, 1, 2}
    assert curve[curve.step == 2].value.max() < 0.999

    heat = cv.explain("saliency", spec, x).heatmap
    for name, params in (("deletion_auc", {"pixels_per_step": 96 * 8}), ("insertion_auc", {"pixels_per_step": 96 * 8}),
                         ("aopc_morf", {"steps": 10})):
        vals = M.get_metric(name)(**params).evaluate(spec, x, heat)
        assert vals.shape == (2,) and np.isfinite(vals).all()

    for a, b in zip(weights_snapshot(spec.model), weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(spec.model(x, training=False)), out)
