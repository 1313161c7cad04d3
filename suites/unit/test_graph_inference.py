"""The folded inference forward pass (cnnvis_eval.graph.inference): BatchNormalizations
folded into the kernel layer before them give the model's own outputs (Keras' unfolded
layers are the reference), only where nothing could tell, and follow weights changed in
place."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv

from cnnvis_eval.graph import FlatGraph
from cnnvis_eval.graph.inference import foldable_pairs, forward_overrides, run_folded
from suites.support.images import smooth_images
from suites.support.models import mini_params, mini_spec


def _bn(name, **kw):
    return keras.layers.BatchNormalization(name=name, **kw)


def _set_stats(model, seed=0):
    """Moving statistics, affine parameters and biases far from the identity (a fold that
    forgot a term would show)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if getattr(layer, "use_bias", False):  # Keras starts biases at zero
            layer.bias.assign(rng.normal(0, 0.5, layer.bias.shape))
        if isinstance(layer, keras.layers.BatchNormalization):
            c = int(layer.moving_mean.shape[0])
            layer.moving_mean.assign(rng.normal(0, 0.5, c))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, c))
            if layer.scale:
                layer.gamma.assign(rng.normal(1.0, 0.5, c))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, c))
    return model


def kinds_model():
    """Every foldable kernel class, with and without bias, BN with and without its affine
    parameters, and one pair of each excluded kind."""
    keras.utils.set_random_seed(3)
    L = keras.layers
    x = inp = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, padding="same", name="conv")(x)
    x = _bn("bn_conv")(x)
    x = L.ReLU(name="r1")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, name="dw")(x)
    x = _bn("bn_dw", center=False)(x)
    x = L.SeparableConv2D(8, 3, strides=2, padding="valid", name="sep")(x)
    x = _bn("bn_sep", scale=False)(x)
    x = L.Activation("relu", name="r2")(x)
    # excluded: a kernel layer with a fused rectifier
    x = L.Conv2D(8, 1, activation="relu", name="conv_relu")(x)
    x = _bn("bn_after_relu")(x)
    # excluded: the kernel output read twice
    y = L.Conv2D(8, 1, name="conv_twice")(x)
    x = L.Add(name="add")([_bn("bn_twice")(y), y])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(5, name="fc")(x)
    x = _bn("bn_fc")(x)
    out = L.Dense(4, name="logits")(x)
    return _set_stats(keras.Model(inp, out))


class ShiftedConv(keras.layers.Conv2D):
    """A subclass computing more than its weights say: must not be folded."""

    def call(self, x):
        return super().call(x) + 1.0


def test_every_kernel_class_folds_and_gives_the_models_outputs():
    model = kinds_model()
    graph = FlatGraph(model)
    pairs = {(a.name, b.name) for a, b in foldable_pairs(graph)}
    assert pairs == {("conv", "bn_conv"), ("dw", "bn_dw"), ("sep", "bn_sep"), ("fc", "bn_fc")}
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 3)).astype(np.float32)
    want = np.asarray(model(x, training=False), np.float64)
    got = np.asarray(tf.function(lambda t: run_folded(graph, t, ["logits"])[0], autograph=False)(x))
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale
    # the folded pass is a different computation (the check above can fail): rounding shows
    assert np.abs(got - want).max() > 0


def test_a_tensor_asked_for_keeps_its_pair_unfolded():
    model = kinds_model()
    graph = FlatGraph(model)
    x = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype(np.float32)
    conv_out = graph.key("dw")
    assert "dw" not in forward_overrides(graph, [conv_out])
    assert "conv" in forward_overrides(graph, [conv_out])
    got, logits = run_folded(graph, x, ["dw", "logits"])
    ref = keras.Model(model.input, [model.get_layer("dw").output, model.output])(x, training=False)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref[1]), rtol=1e-4, atol=1e-5)


def test_subclasses_and_other_layouts_are_not_folded():
    keras.utils.set_random_seed(4)
    L = keras.layers
    inp = keras.Input((8, 8, 2))
    a = _bn("bn_sub")(ShiftedConv(3, 3, padding="same", name="sub")(inp))
    b = _bn("bn_axis1", axis=1)(L.Conv2D(3, 3, padding="same", name="conv_axis")(inp))
    out = L.Dense(2, name="fc")(L.Flatten()(L.Concatenate()([a, b])))
    model = _set_stats(keras.Model(inp, out))
    graph = FlatGraph(model)
    assert foldable_pairs(graph) == []
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(run_folded(graph, x, ["fc"])[0]), np.asarray(model(x)), rtol=1e-6, atol=1e-6)


def test_weights_changed_in_place_are_followed():
    model = kinds_model()
    graph = FlatGraph(model)
    fn = tf.function(lambda t: run_folded(graph, t, ["logits"])[0], autograph=False)
    x = np.random.default_rng(5).normal(size=(3, 12, 12, 3)).astype(np.float32)
    before = np.asarray(fn(x))
    _set_stats(model, seed=9)
    conv = model.get_layer("sep")
    conv.pointwise_kernel.assign(conv.pointwise_kernel * -2.0)
    after = np.asarray(fn(x))
    want = np.asarray(model(x, training=False))
    assert np.abs(after - before).max() > 0.1 * np.abs(want).max()
    assert np.abs(after - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize("name", mini_params())
def test_mini_models_fold_and_agree(name, capfd):
    """Every BatchNormalization of the minis follows a kernel layer: all fold but those read
    by an Add (TensorFlow's remapper fails on those graphs, and says so on the console)."""
    spec = mini_spec(name)
    graph = spec.graph
    added = {k for n in graph.nodes if n.type_name == "Add" for k in n.inputs}
    bns = {n.name for n in graph.nodes if type(n.layer) is keras.layers.BatchNormalization
           and n.outputs[0] not in added}
    assert {bn.name for _, bn in foldable_pairs(graph)} == bns
    x = spec.preprocess(smooth_images(4, int(graph.input_shape[1])))
    want = np.asarray(graph.run(x)[0])
    got = np.asarray(tf.function(lambda t: run_folded(graph, t, [graph.output_key])[0], autograph=False)(x))
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert "remapper failed" not in capfd.readouterr().err


FOLDED_METHODS = {
    "occlusion": {"window": 16, "stride": 16}, "rise": {"n_masks": 16}, "lime": {"num_samples": 16},
    "kernel_shap": {"num_samples": 16}, "sobol": {"nb_design": 2}, "hsic": {"nb_design": 16},
    "score_cam": {}, "cam": {}, "grad_cam": {},
}


@pytest.mark.parametrize("method", list(FOLDED_METHODS))
def test_methods_that_evaluate_the_model_run_it_folded(method, monkeypatch):
    """The perturbation methods, Score-CAM and the CAM pass run the folded forward pass (on a
    fresh copy of mini_mobilenet, whose 12 foldable pairs make it measurably cheaper), and
    their maps are the unfolded pass's to float rounding."""
    from cnnvis_eval.graph import inference
    from cnnvis_eval.methods.cam import base as cam_base

    x = mini_spec("mini_mobilenet").preprocess(smooth_images(2, 64, seed=3))
    params = FOLDED_METHODS[method]
    calls = []
    real = inference.forward_overrides

    def counting(graph, keys=()):
        out = real(graph, keys)
        calls.append(len(out))
        return out

    monkeypatch.setattr(inference, "forward_overrides", counting)
    monkeypatch.setattr(cam_base, "forward_overrides", counting)
    folded = cv.get_method(method)(cv.load_model("mini_mobilenet"), **params).explain(x)
    assert calls and max(calls) >= 2  # pairs were folded (two overrides per pair)
    monkeypatch.setattr(inference, "forward_overrides", lambda graph, keys=(): {})
    monkeypatch.setattr(cam_base, "forward_overrides", lambda graph, keys=(): {})
    plain = cv.get_method(method)(cv.load_model("mini_mobilenet"), **params).explain(x)
    np.testing.assert_array_equal(folded.indices, plain.indices)
    scale = np.abs(plain.heatmap).max()
    assert np.abs(folded.heatmap - plain.heatmap).max() <= 1e-4 * scale + 1e-7
