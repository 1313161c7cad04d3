"""Deep Taylor's domain analysis: the rule of each layer follows from the graph.

z+ where the layer input is a rectifier output (or pooled / padded / concatenated
rectifier outputs), w**2 where it can be negative (linear bottlenecks, residual sums,
the pixels), zB at the pixels in the bounded preset.  Checked on a hand-built
MobileNetV2-like graph and on the graphs of the real mobilenet_v2, resnet50 and xception
(random weights; nothing is traced here).
"""

from __future__ import annotations

import keras

import cnnvis_eval as cv
from cnnvis_eval.methods.relevance import ZBox
from suites.support.models import big_spec

L = keras.layers


def rules_by_layer(explainer) -> dict:
    """First graph node name of each op (the conv of a folded conv+BN) -> rule repr."""
    plan = explainer.engine.plan(explainer.graph.output_key)
    return {op.nodes[0]: repr(plan.rules[op.name]) for op in plan.program.ops if op.name in plan.rules}


def mobilenet_like():
    """Stem -> bottleneck -> two inverted residual blocks with Add -> 1x1 head -> GAP -> Dense."""
    def cbr(x, f, name, k=1, act=True, dw=False, strides=1):
        conv = (L.DepthwiseConv2D(k, strides=strides, padding="same", use_bias=False, name=name) if dw
                else L.Conv2D(f, k, strides=strides, padding="same", use_bias=False, name=name))
        x = L.BatchNormalization(name=name + "_bn")(conv(x))
        return L.ReLU(6.0, name=name + "_relu")(x) if act else x

    inp = keras.Input((16, 16, 3))
    x = cbr(inp, 8, "stem", 3, strides=2)
    x = cbr(x, 8, "b0_dw", 3, dw=True)
    b0 = cbr(x, 8, "b0_project", act=False)  # linear bottleneck
    x = cbr(b0, 24, "b1_expand")
    x = cbr(x, 24, "b1_dw", 3, dw=True)
    x = cbr(x, 8, "b1_project", act=False)
    a1 = L.Add(name="b1_add")([b0, x])
    x = cbr(a1, 24, "b2_expand")
    x = cbr(x, 24, "b2_dw", 3, dw=True)
    x = cbr(x, 8, "b2_project", act=False)
    a2 = L.Add(name="b2_add")([a1, x])
    x = cbr(a2, 32, "head")
    out = L.Dense(5, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    return keras.Model(inp, out, name="mobilenet_like")


def test_mobilenet_like_graph():
    model = mobilenet_like()
    got = rules_by_layer(cv.get_method("deep_taylor")(model))
    expected = {
        "stem": "WSquare()",  # the pixels
        "b0_dw": "ZPlus()", "b0_project": "ZPlus()",  # fed by ReLU6
        "b1_expand": "WSquare()",  # fed by the linear bottleneck b0_project
        "b1_dw": "ZPlus()", "b1_project": "ZPlus()",
        "b2_expand": "WSquare()",  # fed by the residual Add b1_add
        "b2_dw": "ZPlus()", "b2_project": "ZPlus()",
        "head": "WSquare()",  # fed by the residual Add b2_add
        "gap": "ZPlus()", "logits": "ZPlus()",  # averages of ReLU6 outputs
        "b1_add": "SignedShare()", "b2_add": "SignedShare()",
    }
    assert got == expected
    bounded = rules_by_layer(cv.get_method("deep_taylor_bounded")(model, low=-1.0, high=1.0))
    assert bounded == expected | {"stem": repr(ZBox(-1.0, 1.0))}  # only the pixel layer changes


def _check_real(name, expect):
    spec = big_spec(name)
    got = rules_by_layer(cv.get_method("deep_taylor")(spec))
    wrong = {k: v for k, v in got.items() if v != expect(k)}
    assert not wrong, f"{name}: unexpected rules {wrong}"
    bounded = rules_by_layer(cv.get_method("deep_taylor_bounded")(spec))
    changed = {k: v for k, v in bounded.items() if v != got[k]}
    first = {"mobilenet_v2": "Conv1", "resnet50": "conv1_conv", "xception": "block1_conv1"}[name]
    lo, hi = spec.input_range
    assert changed == {first: repr(ZBox(lo, hi))}
    return got


def test_mobilenet_v2_graph():
    def expect(layer):
        if layer == "Conv1":
            return "WSquare()"
        if layer.endswith("_add"):
            return "SignedShare()"
        if layer.endswith("_expand") or layer == "Conv_1":  # fed by a bottleneck or a residual sum
            return "WSquare()"
        return "ZPlus()"  # depthwise / project (fed by ReLU6), GAP and the logits

    got = _check_real("mobilenet_v2", expect)
    assert sum(v == "WSquare()" for v in got.values()) == 1 + 16 + 1  # Conv1, 16 expands, Conv_1


def test_resnet50_graph():
    def expect(layer):
        if layer == "conv1_conv":
            return "WSquare()"
        return "SignedShare()" if layer.endswith("_add") else "ZPlus()"

    got = _check_real("resnet50", expect)
    assert sum(v == "ZPlus()" for v in got.values()) == 52 + 2  # convs, GAP, predictions
    # every BatchNorm was folded into its convolution
    plan = cv.get_method("deep_taylor")(big_spec("resnet50")).engine.plan(big_spec("resnet50").graph.output_key)
    assert sum(len(op.nodes) == 2 for op in plan.program.ops) == 53


def test_xception_graph():
    # the shortcut convolutions (auto-named, so found by type) read the residual sum, which
    # has no ReLU after it, except the first, which reads block1_conv2_act; block14_sepconv1
    # reads the last sum directly
    graph = big_spec("xception").graph

    def expect(layer):
        node = graph.node(layer)
        if isinstance(node.layer, L.Add):
            return "SignedShare()"
        if layer in ("block1_conv1", "block14_sepconv1"):
            return "WSquare()"
        if type(node.layer) is L.Conv2D and not layer.startswith("block"):
            src = graph.producer(node.inputs[0]).layer
            return "WSquare()" if isinstance(src, L.Add) else "ZPlus()"
        return "ZPlus()"

    got = _check_real("xception", expect)
    assert sum(v == "WSquare()" for v in got.values()) == 2 + 3  # pixels, block14_sepconv1, 3 shortcuts
