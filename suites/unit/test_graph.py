"""FlatGraph: nested models, softmax stripping, user models untouched; the structural queries."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.graph import OUTPUT, FlatGraph, rectifier_of, to_logits
from suites.support import numpy_ref as R
from suites.support import tiny


@pytest.mark.parametrize("api", ["functional", "sequential", "nested"])
def test_flat_graph_runs_like_the_model(api, tiny_x):
    model = tiny.tiny_cnn(api=api)
    graph = FlatGraph(model)
    out = graph.run(tiny_x)[0]
    np.testing.assert_allclose(np.asarray(out), np.asarray(model(tiny_x)), rtol=1e-12)
    assert [n for n in graph.layer_names if n in ("conv1", "conv2", "relu6", "pool", "flatten", "dense")] == [
        "conv1", "conv2", "relu6", "pool", "flatten", "dense"]
    if api == "nested":
        assert graph.node("conv1").scope == ("trunk",)
        assert graph.node("trunk/conv1") is graph.node("conv1")
        # the nested model's own name gives its output
        np.testing.assert_allclose(np.asarray(graph.run(tiny_x, ["trunk"])[0]),
                                   np.asarray(graph.run(tiny_x, ["relu6"])[0]))


@pytest.mark.parametrize("api", ["functional", "sequential", "nested"])
def test_methods_agree_across_apis(api, tiny_x):
    """A Sequential or nested model gives the same guided backprop as the functional one."""
    flat = cv.explain("guided_backprop", tiny.tiny_cnn(api="functional"), tiny_x)
    other = cv.explain("guided_backprop", tiny.tiny_cnn(api=api), tiny_x)
    np.testing.assert_allclose(other.attribution, flat.attribution, rtol=1e-12, atol=1e-14)
    assert other.meta["rectifiers"] == 2


def _softmax_variants():
    def dense_act():
        return tiny.tiny_cnn(softmax=True)

    def activation_layer():
        base = tiny.tiny_cnn()
        return keras.Model(base.input, keras.layers.Activation("softmax", dtype="float64")(base.output))

    def softmax_layer():
        base = tiny.tiny_cnn()
        return keras.Sequential([keras.Input((6, 6, 2), dtype="float64"), base, keras.layers.Softmax(dtype="float64")])

    return {"dense_activation": dense_act, "activation_layer": activation_layer, "softmax_layer": softmax_layer}


@pytest.mark.parametrize("kind", list(_softmax_variants()))
def test_softmax_is_stripped_on_a_clone(kind, tiny_x):
    model = _softmax_variants()[kind]()
    probs = np.asarray(model(tiny_x))
    np.testing.assert_allclose(probs.sum(1), 1.0)
    graph = FlatGraph(model)
    assert graph.stripped is not None
    ref = R.TinyNet(tiny.tiny_weights())
    np.testing.assert_allclose(np.asarray(graph.run(tiny_x)[0]), ref.logits(tiny_x), rtol=1e-12)
    exp = cv.explain("saliency", model, tiny_x)
    np.testing.assert_allclose(exp.scores, ref.logits(tiny_x).max(1), rtol=1e-6)
    assert "stripped_softmax" in exp.meta
    np.testing.assert_array_equal(np.asarray(model(tiny_x)), probs)  # user model still softmax
    logits_model = to_logits(model)
    np.testing.assert_allclose(np.asarray(logits_model(tiny_x)), ref.logits(tiny_x), rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(model(tiny_x)), probs)


def test_no_softmax_means_nothing_stripped(tiny_model):
    assert FlatGraph(tiny_model).stripped is None


def test_transfer_learning_nested_model(tiny_x):
    """Sequential([base, GAP, Dense]) with a functional base: inner layers are reachable."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(5, 3, name="c2")(h)
    h = keras.layers.ReLU(6.0, name="r2")(h)
    base = keras.Model(inp, h, name="base")
    model = keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3, activation="softmax")])
    spec = cv.as_spec(model)
    assert spec.last_conv_layer == "r2"
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    exp = cv.explain("saliency", model, x, target=cv.NeuronTarget("c2", 1))
    assert exp.heatmap.shape == (2, 16, 16) and np.abs(exp.heatmap).max() > 0
    gb = cv.explain("guided_backprop", model, x)
    assert gb.meta["rectifiers"] == 2


def test_rectifier_detection():
    relu6_act = keras.layers.Activation("relu6")
    assert rectifier_of(keras.layers.ReLU()) == rectifier_of(keras.layers.Activation("relu"))
    assert rectifier_of(keras.layers.ReLU(max_value=6.0)).max_value == 6.0
    assert rectifier_of(relu6_act).max_value == 6.0 and not rectifier_of(relu6_act).fused
    assert rectifier_of(keras.layers.Dense(3, activation="relu")).fused
    assert rectifier_of(keras.layers.ReLU(negative_slope=0.1)) is None
    assert rectifier_of(keras.layers.Dense(3, activation="tanh")) is None
    assert rectifier_of(keras.layers.Dense(3)) is None


def test_unknown_layer_suggests_names(tiny_model):
    graph = FlatGraph(tiny_model)
    with pytest.raises(cv.TargetError, match=r"no layer named 'conv_1'.*'conv1'"):
        graph.key("conv_1")
    assert graph.key(OUTPUT) == graph.output_key


def test_multi_output_model_is_rejected():
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(2, 3)(inp)
    model = keras.Model(inp, [keras.layers.Flatten()(h), h])
    with pytest.raises(cv.InputError, match="2 outputs"):
        FlatGraph(model)


def test_unbuilt_sequential_is_rejected():
    with pytest.raises(cv.InputError, match="not built"):
        FlatGraph(keras.Sequential([keras.layers.Dense(3)]))


# ---------------------------------------------------------------------- structural queries
def _residual_gap_model() -> keras.Model:
    """stem (Conv, relu) -> stem_bn -> [block1_conv1 (relu) -> block1_conv2] + stem_bn
    -> block1_out (ReLU) -> gap -> drop -> logits (Dense, softmax)."""
    L = keras.layers
    inp = keras.Input((12, 12, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    y = L.Conv2D(4, 3, padding="same", activation="relu", name="block1_conv1")(x)
    y = L.Conv2D(4, 3, padding="same", name="block1_conv2")(y)
    x = L.Add(name="block1_add")([x, y])
    x = L.ReLU(name="block1_out")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.5, name="drop")(x)
    out = L.Dense(5, activation="softmax", name="logits")(x)
    return keras.Model(inp, out, name="residual_gap")


def test_layer_queries_name_the_expected_layers():
    from cnnvis_eval.errors import InputError
    from cnnvis_eval.graph import feature_layer, last_conv_layer, pick_intermediate_layers

    graph = FlatGraph(_residual_gap_model())
    # the last conv, followed forward through the residual Add and its ReLU
    assert last_conv_layer(graph) == "block1_out"
    assert last_conv_layer(graph, before="block1_conv1") == "block1_conv1"
    assert last_conv_layer(graph, before="stem_bn") == "stem_bn"
    # rectified 4-D maps: stem, block1_conv1, block1_out -> at 0.6 and 0.85 of the depth
    assert pick_intermediate_layers(graph) == ("block1_conv1", "block1_out")
    assert feature_layer(graph, graph.output_key) == "block1_out"
    assert feature_layer(graph, graph.output_key, default="stem") == "stem"
    assert feature_layer(graph, graph.output_key, default="no_such_layer") == "block1_out"
    assert feature_layer(graph, graph.key("block1_conv2")) == "block1_conv2"
    with pytest.raises(InputError, match="does not feed"):
        feature_layer(graph, graph.key("block1_conv1"), layer="block1_out")
    with pytest.raises(InputError, match="4-D feature map"):
        feature_layer(graph, graph.output_key, layer="gap")


def test_cam_head_query():
    from cnnvis_eval.graph import find_cam_head

    graph = FlatGraph(_residual_gap_model())
    head = find_cam_head(graph)
    assert (head.kind, head.layer, head.linear.name) == ("pool_linear", "block1_out", "logits")
    assert head.description == "gap (GlobalAveragePooling2D) -> logits (Dense)"


def test_layer_group_queries():
    from cnnvis_eval.graph import block_key, layer_groups

    graph = FlatGraph(_residual_gap_model())
    assert [(g.name, g.layers) for g in layer_groups(graph, "layer")] == [
        ("logits", ("logits",)),
        ("block1_conv2", ("block1_conv2",)),
        ("block1_conv1", ("block1_conv1",)),
        ("stem", ("stem", "stem_bn")),
    ]
    assert [(g.name, g.layers) for g in layer_groups(graph, "block")] == [
        ("logits", ("logits",)),
        ("block1", ("block1_conv1", "block1_conv2")),
        ("stem", ("stem", "stem_bn")),
    ]
    assert [block_key(n) for n in ("block5_conv3", "conv4_block2_out", "block_13_add", "mixed10", "fc1")] == [
        "block5", "conv4_block2", "block_13", "mixed10", None]


def test_nodes_between_two_tensors():
    """The nodes on the way from one tensor to another, by hand on a branching model: from
    ``b`` the branch that reads ``a`` only (``d``) is not among them; nothing lies between a
    tensor and one that does not depend on it."""
    from cnnvis_eval.graph import nodes_between

    inp = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, name="a")(inp)
    b = keras.layers.ReLU(name="b")(a)
    c = keras.layers.GlobalAveragePooling2D(name="c")(b)
    d = keras.layers.GlobalAveragePooling2D(name="d")(a)
    out = keras.layers.Dense(2, name="out")(keras.layers.Concatenate(name="cat")([c, d]))
    g = FlatGraph(keras.Model(inp, out))
    assert [n.name for n in nodes_between(g, g.key("a"), g.key("out"))] == ["b", "c", "d", "cat", "out"]
    assert [n.name for n in nodes_between(g, g.key("b"), g.key("out"))] == ["c", "cat", "out"]
    assert nodes_between(g, g.key("c"), g.key("d")) == []
