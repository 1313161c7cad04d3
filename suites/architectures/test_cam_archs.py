"""CAM family and VisualBackProp on the five architectures (96 px, random weights, batch 2).

One explainer per (method, architecture), reused for the batch and the per-image runs.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import UnsupportedArchitectureError
from cnnvis_eval.methods.visualbackprop import visual_backprop_plan
from suites.support.models import big_params, big_spec
from suites.support import cam_ref

METHODS = {
    "cam": {},
    "grad_cam": {},
    "grad_cam_plus_plus": {},
    "layer_cam": {},
    "score_cam": {"max_channels": 8},  # the full channel sweep is checked on the tiny model
    "guided_grad_cam": {},
    "visual_backprop": {},
}

_STATE: dict = {}


def model_state(spec, x):
    """Weights and outputs of the user's model before any method ran (once per architecture)."""
    if spec.name not in _STATE:
        weights = [keras.ops.convert_to_numpy(v).copy() for v in spec.model.weights]
        configs = [layer.get_config() for layer in spec.model.layers]
        _STATE[spec.name] = (weights, configs, np.asarray(spec.model(x, training=False)))
    return _STATE[spec.name]


@pytest.mark.parametrize("method", list(METHODS))
def test_method_on_architecture(method, big_model, big_input):
    spec = big_model
    if method == "cam" and spec.name == "vgg16":
        pytest.skip("VGG16 has a Flatten + Dense head: see test_cam_rejects_vgg16")
    x = big_input(spec)
    weights, configs, _ = model_state(spec, x)
    explainer = cv.get_method(method)(spec, **METHODS[method])
    exp = explainer.explain(x)
    singles = [explainer.explain(x[i : i + 1]) for i in range(len(x))]

    h, w = spec.input_shape[:2]
    assert exp.heatmap.shape == (2, h, w) and exp.heatmap.dtype == np.float32
    assert np.isfinite(exp.heatmap).all()
    assert exp.meta["layer"] == spec.last_conv_layer
    low = exp.meta.get("low_res")
    for i in range(len(x)):
        if low is not None and low.shape[1:] == (1, 1) and method != "guided_grad_cam":
            # InceptionV3's last map is 1x1 at 96 px: the map is that one value everywhere
            np.testing.assert_allclose(exp.heatmap[i], low[i, 0, 0], rtol=1e-6)
        else:
            assert np.ptp(exp.heatmap[i]) > 0, f"heatmap {i} is constant"
    # batch == per image
    per = np.concatenate([s.heatmap for s in singles])
    scale = np.abs(exp.heatmap).max()
    np.testing.assert_allclose(per, exp.heatmap, rtol=1e-3, atol=1e-4 * scale)
    np.testing.assert_array_equal(np.concatenate([s.indices for s in singles]), exp.indices)
    # the user's model is untouched (weights and layer configs here; outputs in
    # test_model_unchanged_after_all_methods, as an eager call of a big model is slow)
    assert_weights_and_configs(spec, weights, configs)


def assert_weights_and_configs(spec, weights, configs):
    for a, b in zip(spec.model.weights, weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), b)
    assert [layer.get_config() for layer in spec.model.layers] == configs


def test_model_unchanged_after_all_methods(big_model, big_input):
    """Runs after the method tests of each architecture: outputs equal those before them."""
    x = big_input(big_model)
    weights, configs, out = model_state(big_model, x)
    assert_weights_and_configs(big_model, weights, configs)
    np.testing.assert_array_equal(np.asarray(big_model.model(x, training=False)), out)


@pytest.mark.parametrize("method", ["grad_cam", "layer_cam"])
def test_inception_at_a_spatial_layer(method, big_input):
    """At 96 px InceptionV3's mixed10 is 1x1; an explicit layer= gives a spatial map."""
    spec = big_spec("inception_v3")
    exp = cv.get_method(method)(spec, layer="mixed7").explain(big_input(spec))
    assert exp.meta["layer"] == "mixed7" and exp.meta["low_res"].shape == (2, 4, 4)
    assert all(np.ptp(m) > 0 for m in exp.heatmap)


def test_cam_rejects_vgg16():
    with pytest.raises(UnsupportedArchitectureError) as err:
        cv.get_method("cam")(big_spec("vgg16"))
    msg = str(err.value)
    for part in ("'vgg16'", "block5_pool (MaxPooling2D)", "flatten (Flatten)", "fc1 (Dense)",
                 "predictions (Dense)", "'block5_conv3'", "grad_cam"):
        assert part in msg


def test_nested_transfer_learning_model():
    """Sequential([base, GAP, Dense]): the default layer is the base's last conv map, and CAM
    (through the GAP + Dense head) agrees with Grad-CAM."""
    keras.utils.set_random_seed(1)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, alpha=0.35, input_shape=(96, 96, 3))
    model = keras.Sequential([keras.Input((96, 96, 3)), base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(5, activation="softmax")])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    gc = cv.get_method("grad_cam")(model).explain(x, cv.ClassTarget(3))
    assert gc.meta["layer"] == "out_relu"
    cam = cv.get_method("cam")(model, relu=True).explain(x, cv.ClassTarget(3))
    assert cam.meta["layer"] == "out_relu"
    for i in range(2):
        assert np.ptp(gc.heatmap[i]) > 0
        assert cam_ref.pearson(cam.heatmap[i], gc.heatmap[i]) > 0.999


EXPECTED_MAPS = {  # (some block maps that must be used, some that must not)
    "vgg16": (["block1_conv1", "block3_conv3", "block5_conv3"], ["block1_pool"]),
    "inception_v3": ([f"mixed{i}" for i in range(11)], ["mixed9_0", "concatenate", "activation_5"]),
    "xception": (["block1_conv2_act", "add", "add_11", "block14_sepconv2_act"],
                 ["block5_sepconv1_act", "block2_sepconv2_act"]),
    "resnet50": (["conv1_relu", "conv2_block1_out", "conv4_block6_out", "conv5_block3_out"],
                 ["conv2_block1_add", "conv2_block1_1_relu"]),
    "mobilenet_v2": (["Conv1_relu", "block_2_add", "block_6_depthwise_relu", "out_relu"],
                     ["block_2_expand_relu", "block_2_project_BN"]),
}


@pytest.mark.parametrize("name", [p.values[0] for p in big_params()], ids=lambda n: n)
def test_visual_backprop_plan(name):
    """Block maps per the documented branch rules; each undo chain lands on the previous map's size."""
    spec = big_spec(name)
    graph = spec.graph
    plan = visual_backprop_plan(graph, spec.last_conv_layer)
    must, must_not = EXPECTED_MAPS[name]
    assert set(must) <= set(plan.maps)
    assert not set(must_not) & set(plan.maps)
    assert plan.maps[-1] == spec.last_conv_layer
    sizes = [tuple(spec.input_shape[:2])] + [graph.shape(k)[1:3] for k in plan.keys]
    for i, steps in enumerate(plan.undo):
        end = steps[-1].size if steps else sizes[i + 1]
        assert tuple(end) == tuple(sizes[i]), (plan.maps[i], steps)
