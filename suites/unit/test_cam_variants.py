"""pytorch-grad-cam's CAM variants (HiResCAM, XGrad-CAM, EigenCAM, Ablation-CAM): NumPy
float64 references on tiny hand-set nets, the closed-form identities, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError, UnsupportedArchitectureError, UnsupportedLayerError
from suites.support import cam_models, cam_ref, tiny
from suites.support.numpy_ref import TinyNet, conv2d_backward, maxpool2, maxpool2_backward

VARIANTS = ("hires_cam", "xgrad_cam", "eigen_cam", "ablation_cam")  # layer CAMs; and full_grad


@pytest.fixture(scope="module")
def tiny_ref():
    return TinyNet(tiny.tiny_weights())


def check_map(exp, n, ref, size):
    scale = max(np.abs(ref).max(), 1e-12)
    np.testing.assert_allclose(exp.meta["low_res"][n], ref, rtol=1e-5, atol=1e-7 * scale)
    np.testing.assert_allclose(exp.heatmap[n], cam_ref.bilinear(ref[None], size, size)[0], rtol=1e-5,
                               atol=1e-6 * scale)


def test_registered():
    assert set(VARIANTS + ("full_grad",)) <= set(cv.list_methods())


# ---------------------------------------------------------------------- HiResCAM, XGrad-CAM


@pytest.mark.parametrize("layer", ["relu6", "pool"])
@pytest.mark.parametrize("method, ref", [("hires_cam", cam_ref.hires_cam), ("xgrad_cam", cam_ref.xgrad_cam)])
def test_gradient_variants_match_numpy(method, ref, layer, tiny_model, tiny_x, tiny_ref):
    cls = np.array([0, 2, 1])
    exp = cv.get_method(method)(tiny_model, layer=layer).explain(tiny_x, cv.ClassTarget(cls))
    a, g = cam_ref.tiny_maps_and_grads(tiny_ref, tiny_x, cls, layer)
    assert exp.meta["layer"] == layer
    refs = [ref(a[n], g[n]) for n in range(len(tiny_x))]
    assert sum(r.max() > 0 for r in refs) >= 2  # not a comparison of empty maps
    for n, r in enumerate(refs):
        check_map(exp, n, r, 6)


@pytest.mark.parametrize("method", ["hires_cam", "xgrad_cam"])
@pytest.mark.parametrize("head", ["dense", "hidden"])
def test_equals_grad_cam_after_gap(head, method):
    """Feature layer followed by global average pooling: G_kij = d y / d A_kij = g_k / (h w)
    is constant over (i, j), whatever the head after the pooling (a hidden ReLU layer
    included).  HiResCAM: sum_k G_k A_k = sum_k mean(G_k) A_k.  XGrad-CAM:
    w_k = sum_ij A_kij G_kij / sum_ij A_kij = g_k / (h w) = mean(G_k) (a channel that sums to 0
    is all 0 after the ReLU and adds nothing either way).  Both equal Grad-CAM."""
    model, x = cam_models.gap_model(head=head), cam_models.gap_input()
    if head == "hidden":  # hand-set (Keras initializes it from the global seed)
        rng = np.random.default_rng(7)
        model.get_layer("hidden").set_weights([rng.normal(0, 1, (5, 5)), rng.normal(0.2, 0.1, 5)])
        model.get_layer("logits").set_weights([rng.normal(0, 1, (5, 4)), rng.normal(0, 0.1, 4)])
    for relu in (True, False):
        hi = cv.get_method(method)(model, relu=relu).explain(x, cv.ClassTarget([0, 1, 3]))
        gc = cv.get_method("grad_cam")(model, relu=relu).explain(x, cv.ClassTarget([0, 1, 3]))
        assert hi.meta["layer"] == gc.meta["layer"] == "conv2"
        np.testing.assert_allclose(hi.meta["low_res"], gc.meta["low_res"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(hi.heatmap, gc.heatmap, rtol=1e-6, atol=1e-9)
        assert np.ptp(hi.meta["low_res"]) > 0 or relu


@pytest.mark.parametrize("method", ["hires_cam", "xgrad_cam"])
def test_differs_from_grad_cam_without_gap(method, tiny_model, tiny_x):
    """A Flatten head (tiny_cnn, pool -> flatten -> dense): the gradient varies over the
    positions and the identity does not hold."""
    hi = cv.get_method(method)(tiny_model, layer="pool", relu=False).explain(tiny_x, cv.ClassTarget(0))
    gc = cv.get_method("grad_cam")(tiny_model, layer="pool", relu=False).explain(tiny_x, cv.ClassTarget(0))
    assert np.abs(hi.meta["low_res"] - gc.meta["low_res"]).max() > 0.1 * np.abs(gc.meta["low_res"]).max()


# ---------------------------------------------------------------------- EigenCAM


@pytest.mark.parametrize("layer", ["relu6", "pool"])
def test_eigen_cam_matches_numpy_and_ignores_the_class(layer, tiny_model, tiny_x, tiny_ref):
    maps = tiny_ref.forward(tiny_x)["a2" if layer == "relu6" else "p"]
    ex = cv.get_method("eigen_cam")(tiny_model, layer=layer)
    first = ex.explain(tiny_x, cv.ClassTarget(0))
    for n in range(len(tiny_x)):
        check_map(first, n, cam_ref.eigen_cam(maps[n]), 6)
    for cls in (1, 2):
        other = ex.explain(tiny_x, cv.ClassTarget(cls))
        np.testing.assert_array_equal(other.indices, [cls] * 3)
        np.testing.assert_allclose(other.heatmap, first.heatmap, rtol=0, atol=0)
        assert not np.allclose(other.scores, first.scores)


def test_eigen_cam_sign_follows_the_mean_map():
    """One channel carries a blob, the others are copies scaled by -1 and 2 (rank one): the
    first component is that blob; its sign is fixed so the map is the blob, not its hole."""
    model, x = cam_models.region_model(), cam_models.region_input()
    exp = cv.get_method("eigen_cam")(model, relu=False).explain(x, cv.NeuronTarget("conv2", 0))
    mean_map = cv.get_method("grad_cam")(model).layer_maps(
        x, cv.targets.bind(cv.NeuronTarget("conv2", 0), cv.as_spec(model).graph, 1), exp.meta["layer"],
        gradients=False)[0].mean(axis=-1)[0]
    assert cam_ref.pearson(exp.meta["low_res"][0], mean_map) > 0


# ---------------------------------------------------------------------- Ablation-CAM


@pytest.mark.parametrize("layer", ["relu6", "pool"])
def test_ablation_cam_matches_numpy(layer, tiny_model, tiny_x, tiny_ref):
    cls = np.array([2, 0, 1])
    exp = cv.get_method("ablation_cam")(tiny_model, layer=layer, internal_batch_size=5).explain(
        tiny_x, cv.ClassTarget(cls), progress=False)
    c = tiny_ref.forward(tiny_x)
    w3, b3 = tiny_ref.w["w3"], tiny_ref.w["b3"]

    def score(n):
        if layer == "pool":
            return lambda p: (p.reshape(-1) @ w3 + b3)[cls[n]]
        return lambda a2: (maxpool2(a2[None])[0].reshape(-1) @ w3 + b3)[cls[n]]

    for n in range(len(tiny_x)):
        a = c["p" if layer == "pool" else "a2"][n]
        ref = cam_ref.ablation_cam(a, c["logits"][n, cls[n]], score(n))
        assert ref.max() > 0
        check_map(exp, n, ref, 6)
    assert exp.meta["weights"].shape == (3, 4)


@pytest.mark.parametrize("api", ["functional", "nested"])
def test_ablation_cam_reuses_the_branch_that_skips_the_layer(api):
    """vbp_model: ablating r2 (inside a residual block) re-runs add -> out -> ... -> logits
    with the shortcut (pool) computed once: the weights match NumPy."""
    x = cam_models.vbp_input()
    net = cam_ref.VbpNet(cam_models.vbp_weights())
    t = net.forward(x)
    w = net.w

    def logits_from_r2(pool, r2):
        out = cam_ref.relu(pool + r2)[None]
        b1 = cam_ref.relu(cam_ref.conv2d(out, w["b1"], w["b1b"]))
        b2 = cam_ref.relu(cam_ref.conv2d(cam_ref.relu(cam_ref.conv2d(out, w["b2a"], w["b2ab"])), w["b2b"], w["b2bb"]))
        return (np.concatenate([b1, b2], -1).mean(axis=(1, 2)) @ w["d"] + w["db"])[0]

    exp = cv.get_method("ablation_cam")(cam_models.vbp_model(api=api), layer="r2",
                                        internal_batch_size=3).explain(x, cv.ClassTarget(1))
    for n in range(len(x)):
        ref = cam_ref.ablation_cam(t["r2"][n], t["logits"][n, 1], lambda r2: logits_from_r2(t["pool"][n], r2)[1])
        np.testing.assert_allclose(exp.meta["low_res"][n], ref, rtol=1e-6, atol=1e-9)
        y, ablated = t["logits"][n, 1], []
        for k in range(4):
            r2 = t["r2"][n].copy()
            r2[..., k] = 0
            ablated.append(logits_from_r2(t["pool"][n], r2)[1])
        np.testing.assert_allclose(exp.meta["weights"][n], (y - np.array(ablated)) / y, rtol=1e-5, atol=1e-9)


def test_ablation_cam_neuron_target_on_the_layer_itself(tiny_model, tiny_x):
    """Target = channel c of the feature layer (reduce mean): zeroing channel k changes the
    target only for k == c, by all of it: w_c = 1, the others 0; the map is ReLU(A_c)."""
    exp = cv.get_method("ablation_cam")(tiny_model, layer="relu6").explain(tiny_x, cv.NeuronTarget("relu6", 2))
    expected = np.zeros((3, 4))
    expected[:, 2] = 1.0
    ok = exp.scores != 0
    np.testing.assert_allclose(exp.meta["weights"][ok], expected[ok], atol=1e-12)


def test_ablation_cam_progress_and_params(tiny_model, tiny_x, capsys):
    ex = cv.get_method("ablation_cam")(tiny_model, layer="pool", internal_batch_size=1)
    one = ex.explain(tiny_x, progress=True)
    assert "ablation_cam channels" in capsys.readouterr().err
    many = cv.get_method("ablation_cam")(tiny_model, layer="pool").explain(tiny_x)
    np.testing.assert_allclose(one.heatmap, many.heatmap, rtol=1e-9, atol=1e-12)
    with pytest.raises(InputError, match="internal_batch_size"):
        cv.get_method("ablation_cam")(tiny_model, internal_batch_size=0)


# ---------------------------------------------------------------------- FullGrad


def _norm_sum(m):
    """pytorch-grad-cam's scale over channels: (N, h, w, C) per-channel min-max, summed."""
    lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
    return ((m - lo) / (hi - lo + 1e-7)).sum(-1)


def test_full_grad_matches_numpy(tiny_model, tiny_x, tiny_ref):
    """tiny_cnn: input term |dy/dx x| + conv1's bias term at its pre-activation z1 (the fused
    ReLU split off) + conv2's at z2 (before the separate ReLU6); Dense biases left out."""
    cls = np.array([0, 2, 1])
    exp = cv.get_method("full_grad")(tiny_model).explain(tiny_x, cv.ClassTarget(cls))
    assert exp.meta["bias_layers"] == ["conv1", "conv2"]
    c, w = tiny_ref.forward(tiny_x), tiny_ref.w
    dl = np.zeros_like(c["logits"])
    dl[np.arange(3), cls] = 1.0
    dz2 = maxpool2_backward((dl @ w["w3"].T).reshape(c["p"].shape), c["win"]) * ((c["z2"] > 0) & (c["z2"] < 6))
    dz1 = conv2d_backward(dz2, c["a1"].shape, w["w2"]) * (c["z1"] > 0)
    dx = conv2d_backward(dz1, tiny_x.shape, w["w1"])
    total = _norm_sum(np.abs(dx * tiny_x)) + _norm_sum(np.abs(dz1 * w["b1"])) + _norm_sum(np.abs(dz2 * w["b2"]))
    lo, hi = total.min(axis=(1, 2), keepdims=True), total.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.heatmap, (total - lo) / (hi - lo + 1e-7), rtol=1e-5, atol=1e-6)


def test_full_grad_of_an_intermediate_neuron_matches_numpy(tiny_model, tiny_x, tiny_ref):
    """A channel of conv1 (mean over its map): the graph stops at conv1, so only the input
    term and conv1's bias term exist (conv2 is after the target: no gradient).  The grid's
    intermediate neurons failed with a KeyError on every model before this."""
    ch = np.array([1, 2, 0])
    exp = cv.get_method("full_grad")(tiny_model).explain(tiny_x, cv.NeuronTarget("conv1", ch, reduce="mean"))
    c, w = tiny_ref.forward(tiny_x), tiny_ref.w
    da1 = np.zeros_like(c["a1"])
    da1[np.arange(3), :, :, ch] = 1.0 / np.prod(c["a1"].shape[1:3])
    dz1 = da1 * (c["z1"] > 0)
    dx = conv2d_backward(dz1, tiny_x.shape, w["w1"])
    total = _norm_sum(np.abs(dx * tiny_x)) + _norm_sum(np.abs(dz1 * w["b1"]))
    lo, hi = total.min(axis=(1, 2), keepdims=True), total.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(exp.heatmap, (total - lo) / (hi - lo + 1e-7), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(exp.scores, c["a1"][np.arange(3), :, :, ch].mean(axis=(1, 2)), rtol=1e-6)


def _bn_pair():
    """conv 3x3/2 (no bias) -> BatchNorm (set statistics) -> ReLU -> GAP -> Dense, and its twin
    with the BatchNorm folded into the conv (NumPy): kernel * s, bias beta - mean * s,
    s = gamma / sqrt(var + eps)."""
    rng = np.random.default_rng(3)
    k = rng.normal(0, 0.5, (3, 3, 2, 3))
    gamma, beta = rng.uniform(0.5, 2, 3), rng.normal(0, 0.5, 3)
    mean, var = rng.normal(0, 0.5, 3), rng.uniform(0.5, 2, 3)
    head = [rng.normal(0, 1, (3, 2)), rng.normal(0, 0.1, 2)]
    L = keras.layers

    def build(fold):
        inp = keras.Input((8, 8, 2), dtype="float64")
        conv = L.Conv2D(3, 3, strides=2, padding="same", use_bias=fold, name="c", dtype="float64")
        z = conv(inp)
        bn = None if fold else L.BatchNormalization(epsilon=1e-3, name="bn", dtype="float64")
        z = z if fold else bn(z)
        dense = L.Dense(2, name="logits", dtype="float64")
        model = keras.Model(inp, dense(L.GlobalAveragePooling2D(dtype="float64")(L.ReLU(dtype="float64")(z))))
        s = gamma / np.sqrt(var + 1e-3)
        conv.set_weights([k * s, beta - mean * s] if fold else [k])
        if bn is not None:
            bn.set_weights([gamma, beta, mean, var])
        dense.set_weights(head)
        return model

    return build(False), build(True)


def test_full_grad_batchnorm_bias_equals_the_folded_conv_bias():
    """BatchNorm's implicit bias beta - mean gamma / sqrt(var + eps) at its output equals the
    folded conv's explicit bias at the conv's output: same maps (the 4x4 maps upsampled)."""
    with_bn, folded = _bn_pair()
    x = cam_models.gap_input()
    a = cv.get_method("full_grad")(with_bn).explain(x, cv.ClassTarget(1))
    b = cv.get_method("full_grad")(folded).explain(x, cv.ClassTarget(1))
    assert a.meta["bias_layers"] == ["bn"] and b.meta["bias_layers"] == ["c"]
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-9)
    np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-5, atol=1e-6)
    assert np.ptp(a.heatmap) > 0.5


class _OpaqueNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.c1 = keras.layers.Conv2D(4, 3, padding="same", name="c1")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(tf.reduce_mean(tf.nn.relu(self.c1(x)), axis=(1, 2)))


def test_full_grad_refuses_an_opaque_subclassed_model():
    model = _OpaqueNet(name="opaque")
    model(np.zeros((1, 8, 8, 2), np.float32))
    with pytest.raises(UnsupportedLayerError, match="full_grad: model 'opaque' is a subclassed model"):
        cv.get_method("full_grad")(model)


# ---------------------------------------------------------------------- shared behaviour


@pytest.mark.parametrize("method", VARIANTS)
def test_bad_layers_and_models(method, tiny_model, tiny_x):
    cls = cv.get_method(method)
    with pytest.raises(InputError, match="'conv_2'.*did you mean 'conv2'"):
        cls(tiny_model, layer="conv_2").explain(tiny_x)
    with pytest.raises(InputError, match=r"'flatten' outputs shape \(None, 36\).*4-D"):
        cls(tiny_model, layer="flatten").explain(tiny_x)
    with pytest.raises(InputError, match="'relu6' does not feed"):
        cls(tiny_model, layer="relu6").explain(tiny_x, cv.NeuronTarget("conv1", 0))
    with pytest.raises(UnsupportedArchitectureError, match=f"{method}: model 'mlp' has no convolutional"):
        cls(cam_models.dense_model()).explain(cam_models.gap_input(1))
    assert UnsupportedLayerError  # subclassed models: see test_user_models (every method)


@pytest.mark.parametrize("method", VARIANTS + ("full_grad",))
def test_user_model_unchanged_and_batches_agree(method):
    model = cam_models.gap_model(softmax=True)
    x = cam_models.gap_input()
    before = tiny.weights_snapshot(model)
    out = np.asarray(model(x))
    ex = cv.get_method(method)(model)
    whole = ex.explain(x)
    split = ex.explain(x, batch_size=2)
    assert whole.meta["stripped_softmax"] and np.isfinite(whole.heatmap).all()
    np.testing.assert_allclose(split.heatmap, whole.heatmap, rtol=1e-9, atol=1e-12)
    tiny.assert_model_unchanged(model, before, x, out)
