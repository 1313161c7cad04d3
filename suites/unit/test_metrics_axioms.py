"""Axioms: conservation error and input invariance (Kindermans et al.'s shifted network)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError, UnsupportedLayerError
from cnnvis_eval.metrics import axioms as A
from suites.support import metric_models as MM
from suites.support import tiny


# ---------------------------------------------------------------------- conservation
def test_conservation_error_hand_computed():
    attr = np.arange(2 * 2 * 2 * 1, dtype=np.float64).reshape(2, 2, 2, 1)  # sums 6 and 22
    err = M.get_metric("conservation_error")().evaluate(attr, score=np.array([5.0, 22.0]))
    np.testing.assert_allclose(err, [1 / 5, 0.0])
    err = M.get_metric("conservation_error")().evaluate(attr, score=np.array([8.0, 20.0]), reference=2.0)
    np.testing.assert_allclose(err, [0.0, 4 / 18])
    with pytest.raises(InputError, match="score"):
        M.get_metric("conservation_error")().evaluate(attr)


def test_conservation_of_gradient_x_input_on_linear_models():
    w = np.random.default_rng(0).normal(size=(4, 4, 2))
    x = np.random.default_rng(1).normal(size=(3, 4, 4, 2))
    fx = (w[None] * x).reshape(3, -1).sum(1)
    free = M.get_metric("conservation_error")().evaluate(cv.explain("gradient_x_input", MM.linear_model(w, 0.0), x))
    np.testing.assert_allclose(free, 0.0, atol=1e-6)  # bias-free: sum = logit (scores are float32)
    exp = cv.explain("gradient_x_input", MM.linear_model(w, 0.5), x)
    got = M.get_metric("conservation_error")().evaluate(exp)
    np.testing.assert_allclose(got, 0.5 / np.abs(fx + 0.5), rtol=1e-6)  # heatmap scores are float32


def test_conservation_uses_the_baseline_score_of_integrated_gradients():
    w = np.random.default_rng(2).normal(size=(4, 4, 2))
    model = MM.linear_model(w, 0.5)
    x = np.random.default_rng(3).normal(size=(3, 4, 4, 2))
    exp = cv.explain("integrated_gradients", model, x, steps=8)
    np.testing.assert_allclose(exp.meta["baseline_score"], 0.5, rtol=1e-6)
    # completeness against f(x) - f(0) holds exactly for a linear model
    np.testing.assert_allclose(M.get_metric("conservation_error")().evaluate(exp), 0.0, atol=1e-6)
    plain = M.get_metric("conservation_error")().evaluate(exp, reference=0.0)
    assert (plain > 1e-3).all()


# ---------------------------------------------------------------------- input shift
@pytest.mark.parametrize("api", ["functional", "sequential", "nested"])
def test_shift_model_preserves_the_function(api):
    """'same' padding: the shift's response varies at the borders -> exact bias map."""
    model = tiny.tiny_cnn(api=api, softmax=True)
    x = tiny.tiny_input(4)
    before = tiny.weights_snapshot(model)
    out = np.asarray(model(x))
    shift = np.array([0.7, -1.3])
    g = A.shift_model(model, shift)
    assert g.info["input_shift"]["folded"] == {"conv1": "bias_map"}
    logits = cv.as_spec(model).graph.run(x)[0]
    np.testing.assert_allclose(np.asarray(g.graph.run(x + shift)[0]), np.asarray(logits), rtol=1e-12, atol=1e-12)
    layer = g.graph.node("conv1").layer
    assert isinstance(layer, A.BiasMapConv2D) and isinstance(layer, keras.layers.Conv2D)
    assert A.BiasMapConv2D is not keras.layers.Conv2D and layer.activation is not None
    # interior positions see the full kernel: the map is -sum(W c) there
    full = (tiny.tiny_weights()["w1"] * shift[None, None, :, None]).sum((0, 1, 2))
    np.testing.assert_allclose(layer.bias_map.numpy()[1:-1, 1:-1], np.broadcast_to(-full, (4, 4, 3)), rtol=1e-12)
    tiny.assert_model_unchanged(model, before, x, out)


def test_shift_is_folded_into_the_bias_where_exact():
    w = np.random.default_rng(4).normal(size=(5, 5, 2))
    dense = MM.linear_model(w, 0.3)
    g = A.shift_model(dense, 2.0)
    assert g.info["input_shift"]["folded"] == {"dense": "bias"}
    np.testing.assert_allclose(g.model.get_layer("dense").bias.numpy(), 0.3 - 2.0 * w.sum(), rtol=1e-12)
    # a 'valid' convolution: every position sees the whole kernel -> a plain bias change
    inp = keras.Input((6, 6, 2), dtype="float64")
    conv = keras.layers.Conv2D(3, 3, activation="relu", dtype="float64", name="c")
    out = keras.layers.Dense(2, dtype="float64")(keras.layers.Flatten(dtype="float64")(conv(inp)))
    model = keras.Model(inp, out)
    g = A.shift_model(model, [1.0, -2.0])
    assert g.info["input_shift"]["folded"] == {"c": "bias"}
    x = tiny.tiny_input(3)
    np.testing.assert_allclose(np.asarray(g.model(x + np.array([1.0, -2.0]))), np.asarray(model(x)),
                               rtol=1e-12, atol=1e-12)


def test_shift_errors():
    inp = keras.Input((4, 4, 1))
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Rescaling(2.0)(inp))))
    with pytest.raises(UnsupportedLayerError, match="Rescaling"):
        A.shift_model(model, 1.0)
    with pytest.raises(InputError, match="broadcast"):
        A.shift_model(tiny.tiny_cnn(), np.ones(3))


def test_default_shift():
    assert np.allclose(A.default_shift(tiny.tiny_cnn()), 1.0)
    spec = cv.ModelSpec("m", tiny.tiny_cnn(), input_range=(np.array([-1.0, 0.0]), np.array([1.0, 255.0])))
    np.testing.assert_allclose(A.default_shift(spec), [1.0, 127.5])


def test_input_invariance_of_gradients_but_not_of_gradient_x_input():
    """Kindermans et al.: the gradient is invariant to the shift, gradient x input is not."""
    model = tiny.tiny_cnn(api="nested")
    x = tiny.tiny_input(4)
    before = tiny.weights_snapshot(model)
    out = np.asarray(model(x))
    inv = M.get_metric("input_invariance_error")(shift=[0.7, -1.3])
    np.testing.assert_allclose(inv.evaluate(model, x, "saliency"), 0.0, atol=1e-6)
    gxi = inv.evaluate(model, x, "gradient_x_input")
    assert (gxi > 0.05).all()
    e1, e2 = A.input_shift_explanations(model, x, "gradient_x_input", shift=[0.7, -1.3])
    np.testing.assert_array_equal(e1.indices, e2.indices)
    np.testing.assert_allclose(e2.attribution, e1.attribution + e1.attribution / x * np.array([0.7, -1.3]),
                               rtol=1e-9, atol=1e-12)  # g * (x + c) = g * x + g * c
    np.testing.assert_allclose(gxi, A.relative_l1(e1.heatmap, e2.heatmap))
    # the caller's own explanation of (f, x) is used as is and fixes the shifted target
    given = cv.explain("gradient_x_input", model, x, target=cv.ClassTarget(1))
    o1, o2 = A.input_shift_explanations(model, x, "gradient_x_input", shift=[0.7, -1.3], original=given)
    assert o1 is given and (o2.indices == 1).all()
    with pytest.raises(InputError, match="original holds 4 explanations; x has 3"):
        A.input_shift_explanations(model, x[:3], "gradient_x_input", original=given)
    tiny.assert_model_unchanged(model, before, x, out)
