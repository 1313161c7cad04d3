"""VisualBackProp: NumPy reference on a tiny hand-set model with a residual and a concat block."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.methods.visualbackprop import dominators, visual_backprop_plan
from suites.support import cam_models, cam_ref, tiny


@pytest.fixture(scope="module")
def vbp_model():
    return cam_models.vbp_model()


@pytest.fixture(scope="module")
def vbp_x():
    return cam_models.vbp_input()


def test_plan_follows_the_documented_rules(vbp_model):
    graph = cv.as_spec(vbp_model).graph
    plan = visual_backprop_plan(graph, "cat")
    # c1, c2 (fused ReLUs), the residual block's ReLU (its Add merges into it), the concat
    assert plan.maps == ("c1", "c2", "out", "cat")
    steps = [[(s.layer, s.kind) for s in u] for u in plan.undo]
    assert steps == [
        [("c1", "deconv"), ("pad", "crop")],
        [("c2", "deconv")],
        [("r1", "deconv"), ("pool", "deconv")],  # residual branch, not the shortcut
        [("b2b", "deconv")],  # the longest branch of the concat block
    ]
    assert plan.undo[0][0].size == (13, 13) and plan.undo[0][0].strides == (2, 2)
    assert plan.undo[0][0].padding == "VALID" and plan.undo[0][1].edges == ((1, 1), (1, 1))
    assert plan.undo[2][1].size == (6, 6) and plan.undo[2][1].strides == (2, 2)


def test_dominators(vbp_model):
    graph = cv.as_spec(vbp_model).graph
    names = [graph.producer(k).name for k in dominators(graph, graph.key("cat"))]
    assert names == ["pad", "c1", "c2", "pool", "add", "out", "cat"]  # never r1, r2, b1, b2a, b2b


@pytest.mark.parametrize("normalize_maps", [False, True])
def test_matches_numpy(normalize_maps, vbp_model, vbp_x):
    net = cam_ref.VbpNet(cam_models.vbp_weights())
    exp = cv.get_method("visual_backprop")(vbp_model, normalize_maps=normalize_maps).explain(vbp_x)
    ref = net.visual_backprop(vbp_x, normalize_maps=normalize_maps)
    assert exp.heatmap.shape == (3, 11, 11)
    np.testing.assert_allclose(exp.heatmap, ref, rtol=1e-5, atol=1e-6)
    assert exp.heatmap.min() == 0.0 and exp.heatmap.max() == pytest.approx(1.0)
    np.testing.assert_allclose(exp.scores, net.forward(vbp_x)["logits"].max(axis=1), rtol=1e-6)
    assert exp.meta["layers"] == ("c1", "c2", "out", "cat") and exp.meta["layer"] == "cat"


def test_nested_model_gives_the_same_mask(vbp_x):
    flat = cv.get_method("visual_backprop")(cam_models.vbp_model()).explain(vbp_x)
    nested = cv.get_method("visual_backprop")(cam_models.vbp_model(api="nested")).explain(vbp_x)
    np.testing.assert_allclose(nested.heatmap, flat.heatmap, rtol=1e-6, atol=1e-9)
    assert nested.meta["layers"] == flat.meta["layers"]


def test_neuron_target_and_layer_restrict_the_maps(vbp_model, vbp_x):
    vbp = cv.get_method("visual_backprop")(vbp_model)
    exp = vbp.explain(vbp_x, cv.NeuronTarget("out", 1))
    assert exp.meta["layers"] == ("c1", "c2", "out")
    np.testing.assert_allclose(exp.scores, cam_ref.VbpNet(cam_models.vbp_weights()).forward(vbp_x)["out"][..., 1].mean(axis=(1, 2)),
                               rtol=1e-6)
    by_layer = cv.get_method("visual_backprop")(vbp_model, layer="out").explain(vbp_x)
    np.testing.assert_allclose(by_layer.heatmap, exp.heatmap, rtol=1e-6, atol=1e-9)


def test_is_gradient_free(vbp_model, vbp_x):
    vbp = cv.get_method("visual_backprop")(vbp_model)
    exp = vbp.explain(vbp_x[:1])
    bound = cv.targets.bind(None, vbp.graph, 1)
    fn = vbp._fn(bound, vbp.plan_for(bound))
    ops = fn.get_concrete_function().graph.get_operations()
    assert not [op.name for op in ops if "gradient" in op.name.lower()]
    assert np.isfinite(exp.heatmap).all()


def test_user_model_unchanged(vbp_x):
    model = cam_models.vbp_model()
    before, out = tiny.weights_snapshot(model), np.asarray(model(vbp_x))
    cv.get_method("visual_backprop")(model).explain(vbp_x)
    tiny.assert_model_unchanged(model, before, vbp_x, out)


def test_undoes_dilated_and_resizing_layers():
    """A dilated conv is undone with a dilated kernel of ones; UpSampling2D by resizing."""
    L = keras.layers
    inp = keras.Input((12, 12, 1))
    a = L.Conv2D(2, 3, dilation_rate=2, padding="valid", activation="relu", name="dil")(inp)  # 8x8
    b = L.UpSampling2D(2, name="up")(a)  # 16x16
    c = L.Conv2D(2, 3, padding="same", activation="relu", name="last")(b)
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(c)))
    plan = visual_backprop_plan(cv.as_spec(model).graph, "last")
    assert plan.maps == ("dil", "last")
    dil = plan.undo[0][0]
    assert dil.kind == "deconv" and np.asarray(dil.kernel).shape == (5, 5)
    np.testing.assert_array_equal(np.asarray(dil.kernel)[::2, ::2], 1)
    assert np.asarray(dil.kernel).sum() == 9
    assert [s.kind for s in plan.undo[1]] == ["deconv", "resize"]
    exp = cv.get_method("visual_backprop")(model).explain(np.random.default_rng(0).normal(size=(2, 12, 12, 1)))
    assert exp.heatmap.shape == (2, 12, 12) and np.isfinite(exp.heatmap).all()
