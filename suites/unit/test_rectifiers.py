"""Non-ReLU rectifiers (issue 14, items 7 and 8).

Item 7: Guided Backprop and DeconvNet apply their rule to leaky piecewise-linear rectifiers
(LeakyReLU, PReLU, ReLU(negative_slope=...), activation="leaky_relu"), checked against an
independent NumPy float64 computation; smooth units (ELU, GELU, swish, ...) and networks
without rectifiers are refused with an error naming the layer; never the plain gradient
under the method's name.  Item 8: Grad-CAM's automatic layer is the output of the
nonlinearity after the last convolution (the PReLU), not the convolution.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import errors
from cnnvis_eval.graph import (
    FlatGraph,
    find_cam_head,
    last_conv_layer,
    rectifier_of,
    smooth_unit_of,
)
from suites.support import numpy_ref as R

DT = "float64"
RTOL, ATOL = 1e-7, 1e-10
PRELU_ALPHA = np.array([0.25, -0.3, 0.6, 0.1, 0.0])  # per channel of c2 (a negative one too)
CAP, THR, SLOPE_B = 1.5, 0.1, 0.05  # model B's ReLU(negative_slope, max_value, threshold)


# ---------------------------------------------------------------------- models
def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(0, 0.5, (3, 3, 3, 4)), "b1": rng.normal(0, 0.1, 4),
            "w2": rng.normal(0, 0.6, (3, 3, 4, 5)), "b2": rng.normal(0, 0.1, 5),
            "w3": rng.normal(0, 1.0, (5, 3)), "b3": rng.normal(0, 0.1, 3)}


def _net(kind: str, w=None) -> keras.Model:
    """x (16,16,3) -> c1 3x3 (4) -> unit1 -> 2x2 max-pool -> c2 3x3 (5) -> unit2 -> GAP -> dense (3).

    kind "A": c1 with activation="leaky_relu" (fused, slope 0.2), unit2 a PReLU (alpha per channel).
    kind "B": unit1 a LeakyReLU(0.1) layer, unit2 ReLU(negative_slope, max_value, threshold).
    """
    w = _weights() if w is None else w
    inp = keras.Input((16, 16, 3), dtype=DT)
    c1 = keras.layers.Conv2D(4, 3, padding="same", name="c1", dtype=DT,
                             activation="leaky_relu" if kind == "A" else None)
    h = c1(inp)
    if kind == "B":
        h = keras.layers.LeakyReLU(0.1, name="u1", dtype=DT)(h)
    h = keras.layers.MaxPooling2D(2, dtype=DT)(h)
    c2 = keras.layers.Conv2D(5, 3, padding="same", name="c2", dtype=DT)
    h = c2(h)
    if kind == "A":
        u2 = keras.layers.PReLU(shared_axes=[1, 2], name="u2", dtype=DT)
        h = u2(h)
        u2.set_weights([PRELU_ALPHA.reshape(1, 1, 5)])
    else:
        h = keras.layers.ReLU(max_value=CAP, negative_slope=SLOPE_B, threshold=THR, name="u2", dtype=DT)(h)
    h = keras.layers.GlobalAveragePooling2D(dtype=DT)(h)
    dense = keras.layers.Dense(3, activation="softmax", name="dense", dtype=DT)
    model = keras.Model(inp, dense(h), name=f"leaky_{kind}")
    c1.set_weights([w["w1"], w["b1"]])
    c2.set_weights([w["w2"], w["b2"]])
    dense.set_weights([w["w3"], w["b3"]])
    return model


def _x(n=2, seed=1):
    return np.random.default_rng(seed).normal(0, 1.0, (n, 16, 16, 3))


# ---------------------------------------------------------------------- NumPy reference
def _unit(kind: str, layer: int):
    """(forward, slope(z), negative-side alpha) of one unit of model ``kind``, in NumPy."""
    if kind == "A" and layer == 1:
        return (lambda z: np.where(z > 0, z, 0.2 * z)), (lambda z: np.where(z > 0, 1.0, 0.2)), 0.2
    if kind == "A":
        a = PRELU_ALPHA
        return (lambda z: np.where(z > 0, z, a * z)), (lambda z: np.where(z > 0, 1.0, a)), a
    if layer == 1:
        return (lambda z: np.where(z > 0, z, 0.1 * z)), (lambda z: np.where(z > 0, 1.0, 0.1)), 0.1

    def f(z):
        return np.where(z > THR, np.minimum(z, CAP), SLOPE_B * (z - THR))

    def slope(z):
        return np.where(z > THR, (z < CAP).astype(float), SLOPE_B)

    return f, slope, SLOPE_B


def _backward(dy, z, slope, alpha, rule):
    if rule == "gradient":
        return dy * slope(z)
    if rule == "guided":
        return np.maximum(dy, 0) * slope(z)
    if rule == "deconvnet":
        return np.where(dy > 0, dy, alpha * dy)
    raise ValueError(rule)


def reference(kind: str, x, cls, rule: str, w=None):
    """d logit[cls] / d x of model ``kind`` under ``rule``, float64, by hand; and the cache."""
    w = _weights() if w is None else w
    f1, s1, a1 = _unit(kind, 1)
    f2, s2, a2 = _unit(kind, 2)
    c = {"z1": R.conv2d(x, w["w1"], w["b1"])}
    c["h1"] = f1(c["z1"])
    c["p"], win = R.maxpool2(c["h1"])
    c["z2"] = R.conv2d(c["p"], w["w2"], w["b2"])
    c["h2"] = f2(c["z2"])
    c["logits"] = c["h2"].mean(axis=(1, 2)) @ w["w3"] + w["b3"]
    n, hh, ww, _ = c["h2"].shape
    cls = np.broadcast_to(cls, (n,))
    d = np.broadcast_to(w["w3"][:, cls].T[:, None, None, :] / (hh * ww), c["h2"].shape)
    d = _backward(d, c["z2"], s2, a2, rule)
    d = R.conv2d_backward(d, c["p"].shape, w["w2"])
    d = R.maxpool2_backward(d, win)
    d = _backward(d, c["z1"], s1, a1, rule)
    return R.conv2d_backward(d, x.shape, w["w1"]), c


@pytest.fixture(scope="module")
def nets():
    return {k: _net(k) for k in "AB"}


# ---------------------------------------------------------------------- item 7
def test_rectifier_kinds_are_found():
    """Leaky units are rectifiers only when asked for (relevance rules are ReLU-only)."""
    dense_leaky = keras.layers.Dense(3, activation="leaky_relu")
    r = rectifier_of(dense_leaky, leaky=True)
    assert r.fused and r.negative_slope == 0.2 and rectifier_of(dense_leaky) is None
    assert rectifier_of(keras.layers.LeakyReLU(0.3), leaky=True).negative_slope == pytest.approx(0.3)
    assert rectifier_of(keras.layers.PReLU(), leaky=True).prelu
    assert rectifier_of(keras.layers.ReLU(negative_slope=0.1), leaky=True).leaky
    assert rectifier_of(keras.layers.ReLU(negative_slope=0.1)) is None  # ReLU-only callers
    assert not rectifier_of(keras.layers.ReLU(), leaky=True).leaky
    for act in ("elu", "selu", "gelu", "silu", "softplus", "mish"):
        assert smooth_unit_of(keras.layers.Activation(act)) == act
    assert smooth_unit_of(keras.layers.Conv2D(2, 3, activation="swish")) == "silu"
    assert smooth_unit_of(keras.layers.ELU()) == "elu"
    assert smooth_unit_of(keras.layers.Activation("tanh")) is None
    assert smooth_unit_of(keras.layers.ReLU()) is None


def test_keras_ops_leaky_relu_is_a_rectifier():
    """keras.ops.leaky_relu nodes get the same rule as a LeakyReLU layer with that slope
    (DeconvNet: the rule that reads the slope)."""
    method = "deconvnet"
    def build(op: bool):
        inp = keras.Input((16, 16, 3), dtype=DT)
        conv = keras.layers.Conv2D(3, 3, name="c", dtype=DT,
                                   kernel_initializer=keras.initializers.RandomNormal(seed=4))
        h = conv(inp)
        h = keras.ops.leaky_relu(h, negative_slope=0.1) if op else keras.layers.LeakyReLU(0.1, dtype=DT)(h)
        h = keras.layers.GlobalAveragePooling2D(dtype=DT)(h)
        dense = keras.layers.Dense(2, dtype=DT,
                                   kernel_initializer=keras.initializers.RandomNormal(seed=5))
        return keras.Model(inp, dense(h))

    x = _x()
    a = cv.explain(method, build(True), x, target=cv.ClassTarget(0))
    b = cv.explain(method, build(False), x, target=cv.ClassTarget(0))
    assert a.meta["leaky_rectifiers"] == 1
    np.testing.assert_allclose(a.attribution, b.attribution, rtol=1e-12, atol=0)
    sal = cv.explain("saliency", build(True), x, target=cv.ClassTarget(0)).attribution
    assert np.abs(a.attribution - sal).max() > 0.1 * np.abs(sal).max()  # not the gradient


@pytest.mark.parametrize("kind", ["A", "B"])
@pytest.mark.parametrize("method,rule", [("guided_backprop", "guided"), ("deconvnet", "deconvnet")])
def test_rule_on_leaky_units_matches_numpy(nets, kind, method, rule):
    """A: fused activation="leaky_relu" + PReLU (a negative alpha too); B: LeakyReLU layer +
    ReLU(negative_slope, max_value, threshold).  The library's signal equals the hand-computed
    rule, which differs from the plain gradient on this input."""
    x = _x()
    ref_grad, c = reference(kind, x, 0, "gradient")
    want, _ = reference(kind, x, 0, rule)
    scale = np.abs(ref_grad).max()
    assert np.abs(want - ref_grad).max() > 0.1 * scale  # the rule bites here
    if kind == "B":  # every branch of the capped, thresholded leaky unit is exercised
        assert (c["z2"] > CAP).any() and (c["z2"] <= THR).any() and ((c["z2"] > THR) & (c["z2"] < CAP)).any()
    exp = cv.explain(method, nets[kind], x, target=cv.ClassTarget(0))
    np.testing.assert_allclose(exp.attribution, want, rtol=RTOL, atol=ATOL * scale)
    assert exp.meta["rectifiers"] == 2 and exp.meta["leaky_rectifiers"] == 2


def test_agreement_with_saliency_is_not_one_on_leaky_model(nets):
    from cnnvis_eval.evaluation.stages import AGREEMENT
    from cnnvis_eval.metrics import pairwise_similarity

    x = _x()
    maps = {m: cv.explain(m, nets["B"], x, target=cv.ClassTarget(0)).heatmap
            for m in ("saliency", "guided_backprop", "deconvnet")}
    sim = pairwise_similarity(maps, AGREEMENT.metric)
    off = sim[sim.method_a != sim.method_b]
    with_saliency = off[(off.method_a == "saliency") | (off.method_b == "saliency")]
    assert len(with_saliency) == 4 and (with_saliency.value < 0.99).all(), with_saliency


def _smooth_model(kind: str) -> keras.Model:
    inp = keras.Input((16, 16, 3))
    conv_act = {"conv_silu": "silu", "conv_swish": "swish", "conv_gelu": "gelu"}.get(kind)
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c0")(inp)  # a ReLU too: still refused
    h = keras.layers.Conv2D(4, 3, activation=conv_act, name="c1")(h)
    if kind == "elu_layer":
        h = keras.layers.ELU(name="act")(h)
    elif kind.startswith("act_"):
        h = keras.layers.Activation(kind[4:], name="act")(h)
    elif kind == "ops_gelu":
        h = keras.ops.gelu(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(2)(h), name=f"smooth_{kind}")


SMOOTH = [("elu_layer", "act", "elu"), ("act_elu", "act", "elu"), ("act_gelu", "act", "gelu"),
          ("act_selu", "act", "selu"), ("act_softplus", "act", "softplus"), ("conv_silu", "c1", "silu"),
          ("conv_swish", "c1", "silu"), ("conv_gelu", "c1", "gelu"), ("ops_gelu", "gelu", "gelu")]


@pytest.mark.parametrize("kind,layer,act", SMOOTH, ids=[s[0] for s in SMOOTH])
@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_grad_cam"])
def test_smooth_units_are_refused_naming_the_layer(kind, layer, act, method):
    model = _smooth_model(kind)
    with pytest.raises(errors.UnsupportedLayerError,
                       match=rf"^{method}: layer '{layer}[^']*' \(\w+\) .* applies '{act}', a smooth unit"):
        cv.get_method(method)(model)


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_grad_cam"])
@pytest.mark.parametrize("act", [None, "tanh"])
def test_model_without_rectifier_is_refused(method, act):
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, activation=act)(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h), name="norect")
    with pytest.raises(errors.UnsupportedArchitectureError,
                       match=rf"^{method}: model 'norect' has no rectifier .* would be the plain gradient"):
        cv.get_method(method)(model)


# ---------------------------------------------------------------------- item 8
def _unit_after_last_conv(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)  # the same weights whatever ran before in this process
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(4, 3, name="c1")(inp)
    h = keras.layers.PReLU(shared_axes=[1, 2], name="p1")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(6, 3, name="c2")(h)
    if kind == "prelu":
        h = keras.layers.PReLU(shared_axes=[1, 2], name="unit")(h)
    elif kind == "elu":
        h = keras.layers.ELU(name="unit")(h)
    elif kind == "leaky":
        h = keras.layers.LeakyReLU(name="unit")(h)
    elif kind == "ops_leaky":
        h = keras.ops.leaky_relu(h, negative_slope=0.1)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h), name=f"after_{kind}")


@pytest.mark.parametrize("kind,want", [("prelu", "unit"), ("elu", "unit"), ("leaky", "unit"),
                                       ("ops_leaky", "leaky_relu")])
def test_last_conv_layer_is_the_nonlinearity_output(kind, want):
    graph = FlatGraph(_unit_after_last_conv(kind))
    assert last_conv_layer(graph).startswith(want)
    assert find_cam_head(graph).layer == last_conv_layer(graph)  # CAM pools the same map


def test_grad_cam_uses_the_prelu_output():
    model = _unit_after_last_conv("prelu")
    rng = np.random.default_rng(3)
    model.get_layer("unit").set_weights([rng.uniform(-0.5, 0.5, (1, 1, 6))])
    assert cv.as_spec(model).last_conv_layer == "unit"
    x = rng.normal(size=(2, 16, 16, 3)).astype("float32")
    exp = cv.explain("grad_cam", model, x)
    assert exp.meta["layer"] == "unit" and exp.heatmap.max(axis=(1, 2)).min() > 0
    ggc = cv.explain("guided_grad_cam", model, x)
    assert ggc.meta["layer"] == "unit" and ggc.meta["leaky_rectifiers"] == 2


def test_mtcnn_onet_face():
    """The trained MTCNN ONet (its own layers, rewired as a functional model with the face
    head) on the astronaut's face: Grad-CAM uses prelu4, the guided rules use its 5 PReLUs."""
    pytest.importorskip("mtcnn")
    from mtcnn.network.onet import ONet
    from mtcnn.utils.tensorflow import load_weights
    from skimage import data

    onet = ONet()
    onet.build()
    onet.set_weights(load_weights("onet.lz4"))
    inp = keras.Input((48, 48, 3))
    h = inp
    for name in ("conv1", "prelu1", "maxpool1", "conv2", "prelu2", "maxpool2", "conv3", "prelu3",
                 "maxpool3", "conv4", "prelu4", "permute", "flatten", "fc5", "prelu5", "fc6_3"):
        h = getattr(onet, name)(h)
    model = keras.Model(inp, h, name="onet_face")
    img = (data.astronaut()[None].astype("float32") - 127.5) / 128  # mtcnn's normalisation
    import tensorflow as tf

    x = tf.image.crop_and_resize(img, [[64 / 512, 182 / 512, 171 / 512, 265 / 512]], [0], (48, 48)).numpy()
    assert float(model(x)[0, 1]) > 0.99  # a face
    cam = cv.explain("grad_cam", model, x, target=cv.ClassTarget(1))
    assert cam.meta["layer"] == "prelu4" and cam.heatmap.max() > 0
    sal = cv.explain("saliency", model, x, target=cv.ClassTarget(1))
    for method in ("guided_backprop", "deconvnet"):
        exp = cv.explain(method, model, x, target=cv.ClassTarget(1))
        assert exp.meta["rectifiers"] == exp.meta["leaky_rectifiers"] == 5
        assert not np.allclose(exp.attribution, sal.attribution, rtol=0.05, atol=0)
