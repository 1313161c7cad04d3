"""CAM family: exact identities and NumPy references on tiny hand-set models."""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import (
    CnnVisError,
    InputError,
    TargetError,
    UnsupportedArchitectureError,
)
from cnnvis_eval.graph import find_cam_head
from suites.support import cam_models, cam_ref, tiny
from suites.support.numpy_ref import TinyNet

CAM_METHODS = ("cam", "grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam", "guided_grad_cam")
GRAD_REFS = {
    "grad_cam": cam_ref.grad_cam,
    "grad_cam_plus_plus": cam_ref.grad_cam_plus_plus,
    "layer_cam": cam_ref.layer_cam,
}


def test_registered():
    names = cv.list_methods()
    for m in CAM_METHODS + ("visual_backprop",):
        assert m in names


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def gap_model():
    return cam_models.gap_model()


@pytest.fixture(scope="module")
def gap_x():
    return cam_models.gap_input()


def gap_forward(x, w=None):
    """NumPy twin of cam_models.gap_model: (feature map (N,4,4,5), logits (N,4))."""
    w = cam_models.gap_weights() if w is None else w
    a = cam_ref.relu(cam_ref.conv2d(cam_ref.relu(cam_ref.conv2d(x, w["c1"], w["c1b"])), w["c2"], w["c2b"], stride=2))
    return a, a.mean(axis=(1, 2)) @ w["d"] + w["db"]


# ---------------------------------------------------------------------- CAM


@pytest.mark.parametrize("head", ["dense", "keepdims", "fcn"])
@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_cam_matches_numpy(head, softmax, gap_x):
    model = cam_models.gap_model(head=head, softmax=softmax)
    w = cam_models.gap_weights()
    a, logits = gap_forward(gap_x)
    exp = cv.get_method("cam")(model).explain(gap_x, cv.ClassTarget([0, 2, 3]))
    assert exp.meta["layer"] == "conv2"
    np.testing.assert_allclose(exp.scores, logits[np.arange(3), [0, 2, 3]], rtol=1e-6)
    for n, c in enumerate([0, 2, 3]):
        ref = (a[n] * w["d"][:, c]).sum(-1)  # sum_k W[k, c] A_k, no bias, no ReLU
        np.testing.assert_allclose(exp.meta["low_res"][n], ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(exp.heatmap[n], cam_ref.bilinear(ref[None], 8, 8)[0], rtol=1e-5, atol=1e-5)
        # completeness: the map's mean plus the bias is the logit
        assert exp.meta["low_res"][n].mean() + w["db"][c] == pytest.approx(logits[n, c], rel=1e-5)
    assert exp.heatmap.min() < 0 < exp.heatmap.max()  # signed by default


def test_cam_head_descriptions():
    assert find_cam_head(cv.as_spec(cam_models.gap_model()).graph).description == "gap (GlobalAveragePooling2D) -> logits (Dense)"
    assert find_cam_head(cv.as_spec(cam_models.gap_model(head="fcn")).graph).kind == "linear_pool"


@pytest.mark.parametrize("head, names", [
    ("flatten", ["flatten (Flatten)", "logits (Dense)", "'conv2'"]),
    ("hidden", ["gap (GlobalAveragePooling2D)", "hidden (Dense)", "logits (Dense)"]),
])
def test_cam_rejects_other_heads(head, names):
    model = cam_models.gap_model(head=head)
    with pytest.raises(UnsupportedArchitectureError) as err:
        cv.get_method("cam")(model)
    for name in names:
        assert name in str(err.value)
    # Grad-CAM has no such restriction
    exp = cv.get_method("grad_cam")(model).explain(cam_models.gap_input(1))
    assert np.isfinite(exp.heatmap).all()


@pytest.mark.parametrize("cls", [0, 1, 2, 3])
def test_cam_agrees_with_grad_cam_on_gap_dense(cls, gap_model, gap_x):
    """On GAP + Dense, Grad-CAM's weights are W[:, c] / (h w): the maps agree exactly."""
    t = cv.ClassTarget(cls)
    cam = cv.get_method("cam")(gap_model, relu=True).explain(gap_x, t)
    gc = cv.get_method("grad_cam")(gap_model).explain(gap_x, t)
    for n in range(len(gap_x)):
        if np.ptp(cam.heatmap[n]) > 0:
            assert cam_ref.pearson(cam.heatmap[n], gc.heatmap[n]) > 0.999
    signed = cv.get_method("cam")(gap_model).explain(gap_x, t)
    gc_signed = cv.get_method("grad_cam")(gap_model, relu=False).explain(gap_x, t)
    np.testing.assert_allclose(gc_signed.meta["low_res"] * 16, signed.meta["low_res"], rtol=1e-5, atol=1e-6)
    for n in range(len(gap_x)):
        assert cam_ref.pearson(signed.heatmap[n], gc_signed.heatmap[n]) > 0.999


def test_cam_bad_input(gap_model, gap_x):
    cam = cv.get_method("cam")(gap_model)
    with pytest.raises(TargetError, match="NeuronTarget"):
        cam.explain(gap_x, cv.NeuronTarget("conv2", 0))
    with pytest.raises(InputError, match="conv1"):
        cv.get_method("cam")(gap_model, layer="conv1")
    with pytest.raises(InputError, match="nope"):
        cv.get_method("cam")(gap_model, layer="nope")
    with pytest.raises(UnsupportedArchitectureError, match="no convolutional"):
        cv.get_method("cam")(cam_models.dense_model())


# ---------------------------------------------------------------------- gradient CAMs vs NumPy


@pytest.fixture(scope="module")
def tiny_ref():
    return TinyNet(tiny.tiny_weights())


@pytest.mark.parametrize("layer", ["relu6", "pool"])
@pytest.mark.parametrize("method", sorted(GRAD_REFS))
def test_gradient_cams_match_numpy(method, layer, tiny_model, tiny_x, tiny_ref):
    cls = np.array([0, 2, 1])
    exp = cv.get_method(method)(tiny_model, layer=layer).explain(tiny_x, cv.ClassTarget(cls))
    a, g = cam_ref.tiny_maps_and_grads(tiny_ref, tiny_x, cls, layer)
    assert exp.meta["layer"] == layer
    np.testing.assert_allclose(exp.scores, tiny_ref.logits(tiny_x)[np.arange(3), cls], rtol=1e-6)
    for n in range(len(tiny_x)):
        ref = GRAD_REFS[method](a[n], g[n])
        scale = max(np.abs(ref).max(), 1e-12)
        np.testing.assert_allclose(exp.meta["low_res"][n], ref, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(exp.heatmap[n], cam_ref.bilinear(ref[None], 6, 6)[0], rtol=1e-5,
                                   atol=1e-5 * scale)


def test_default_layer_is_last_conv_map(tiny_model, tiny_x):
    """tiny_cnn: conv2 -> ReLU(6) -> pool: the last conv feature map is the ReLU6 output,
    for the functional, Sequential and nested builds alike."""
    ref = cv.get_method("grad_cam")(tiny_model).explain(tiny_x, cv.ClassTarget(1))
    assert ref.meta["layer"] == "relu6"
    for api in ("sequential", "nested"):
        exp = cv.get_method("grad_cam")(tiny.tiny_cnn(api=api)).explain(tiny_x, cv.ClassTarget(1))
        assert exp.meta["layer"] == "relu6"
        np.testing.assert_allclose(exp.heatmap, ref.heatmap, rtol=1e-6, atol=1e-9)
    # a NeuronTarget on a pooling layer uses the last conv map before it
    exp = cv.get_method("grad_cam")(tiny_model).explain(tiny_x, cv.NeuronTarget("pool", 1))
    assert exp.meta["layer"] == "relu6"
    exp = cv.get_method("grad_cam")(tiny_model).explain(tiny_x, cv.NeuronTarget("conv1", 2))
    assert exp.meta["layer"] == "conv1"


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus", "layer_cam"])
@pytest.mark.parametrize("channel", [0, 1])
def test_neuron_target_highlights_active_region(method, channel):
    """conv2 channel k is active only where input channel k is bright."""
    model, x = cam_models.region_model(), cam_models.region_input()
    exp = cv.get_method(method)(model).explain(x, cv.NeuronTarget("conv2", channel))
    assert exp.meta["layer"] == "conv2"
    rows, cols = cam_models.REGIONS[channel]
    r, c = np.unravel_index(np.argmax(exp.heatmap[0]), exp.heatmap.shape[1:])
    assert rows.start <= r < rows.stop and cols.start <= c < cols.stop
    # and the other region is (near) zero
    other = cam_models.REGIONS[1 - channel]
    assert exp.heatmap[0][other].max() < 0.05 * exp.heatmap[0].max()


# ---------------------------------------------------------------------- Score-CAM


@pytest.mark.parametrize("layer", ["pool", "relu6"])
def test_score_cam_matches_numpy(layer, tiny_model, tiny_x, tiny_ref):
    cls = np.array([2, 0, 1])
    exp = cv.get_method("score_cam")(tiny_model, layer=layer, internal_batch_size=5).explain(
        tiny_x, cv.ClassTarget(cls), progress=False)
    maps = tiny_ref.forward(tiny_x)["p" if layer == "pool" else "a2"]
    for n in range(len(tiny_x)):
        ref = cam_ref.score_cam(tiny_x[n], maps[n], lambda xs: tiny_ref.logits(xs)[:, cls[n]])
        scale = np.abs(ref).max()
        assert scale > 0
        np.testing.assert_allclose(exp.meta["low_res"][n], ref, rtol=1e-5, atol=1e-6 * scale)
        np.testing.assert_allclose(exp.heatmap[n], cam_ref.bilinear(ref[None], 6, 6)[0], rtol=1e-5,
                                   atol=1e-5 * scale)


def test_score_cam_chunking_and_max_channels(tiny_model, tiny_x, tiny_ref):
    full = cv.get_method("score_cam")(tiny_model, layer="pool", internal_batch_size=64).explain(tiny_x)
    one = cv.get_method("score_cam")(tiny_model, layer="pool", internal_batch_size=1).explain(
        tiny_x, progress=False)
    np.testing.assert_allclose(one.heatmap, full.heatmap, rtol=1e-6, atol=1e-9)
    # with one channel its softmax weight is 1: the map is that channel (largest variance)
    top1 = cv.get_method("score_cam")(tiny_model, layer="pool", max_channels=1).explain(tiny_x)
    p = tiny_ref.forward(tiny_x)["p"]
    k = p.reshape(3, 9, 4).var(axis=1).argmax(axis=1)
    np.testing.assert_allclose(top1.meta["low_res"], np.maximum(p[np.arange(3), :, :, k], 0), rtol=1e-6)
    np.testing.assert_array_equal(top1.meta["channels"], [1, 1, 1])


def test_score_cam_progress_bar(tiny_model, tiny_x, capsys):
    sc = cv.get_method("score_cam")(tiny_model, layer="pool", internal_batch_size=1)
    sc.explain(tiny_x, progress=False)
    assert "score_cam" not in capsys.readouterr().err
    sc.explain(tiny_x, progress=True)
    assert "score_cam masks" in capsys.readouterr().err


def test_score_cam_bad_params(tiny_model):
    with pytest.raises(InputError, match="internal_batch_size"):
        cv.get_method("score_cam")(tiny_model, internal_batch_size=0)
    with pytest.raises(InputError, match="max_channels"):
        cv.get_method("score_cam")(tiny_model, max_channels=0)


# ---------------------------------------------------------------------- Guided Grad-CAM


@pytest.mark.parametrize("target", [None, cv.ClassTarget([1, 0, 2])], ids=["top", "fixed"])
def test_guided_grad_cam_is_product(target, tiny_model, tiny_x):
    ggc = cv.get_method("guided_grad_cam")(tiny_model, layer="pool").explain(tiny_x, target)
    gc = cv.get_method("grad_cam")(tiny_model, layer="pool").explain(tiny_x, target)
    gb = cv.get_method("guided_backprop")(tiny_model).explain(tiny_x, target)
    np.testing.assert_array_equal(ggc.indices, gc.indices)
    np.testing.assert_array_equal(ggc.indices, gb.indices)
    np.testing.assert_allclose(ggc.attribution, gb.attribution * gc.heatmap[..., None], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ggc.heatmap, gb.heatmap * gc.heatmap, rtol=1e-6, atol=1e-12)
    assert np.ptp(ggc.heatmap) > 0


@pytest.mark.parametrize("head", ["gap", "relu_dense"])
def test_guided_grad_cam_one_pass_where_no_rectifier_follows_the_cam_layer(head):
    """With a GAP head the guided rule leaves the gradient at the Grad-CAM layer alone: one
    forward and one backward pass give both factors (``meta["one_pass"]``); with a ReLU
    Dense after it (VGG-style) the guided gradient there differs, and the two explainers run
    one after the other.  Either way: Guided Backprop x Grad-CAM, each explained alone."""
    import keras

    keras.utils.set_random_seed(1)  # (fused there, the relu_dense maps differ by 4%: the test can fail)
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(6, 3, name="c2")(h)
    h = keras.layers.ReLU(name="r2")(h)
    if head == "gap":
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    else:
        h = keras.layers.Dense(5, activation="relu", name="fc")(keras.layers.Flatten(name="flat")(h))
    model = keras.Model(inp, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).uniform(0, 1, (4, 12, 12, 3)).astype(np.float32)
    ggc = cv.get_method("guided_grad_cam")(model).explain(x, progress=False)
    assert ggc.meta["one_pass"] is (head == "gap")
    t = cv.ClassTarget(ggc.indices)
    gc = cv.get_method("grad_cam")(model).explain(x, t, progress=False)
    gb = cv.get_method("guided_backprop")(model).explain(x, t, progress=False)
    assert ggc.meta["layer"] == gc.meta["layer"] == "r2"
    np.testing.assert_allclose(ggc.meta["low_res"], gc.meta["low_res"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ggc.heatmap, gb.heatmap * gc.heatmap, rtol=1e-5, atol=1e-7 * np.abs(ggc.heatmap).max())
    np.testing.assert_allclose(ggc.scores, gc.scores, rtol=1e-6)
    assert np.ptp(ggc.heatmap) > 0


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize("method", ["grad_cam", "grad_cam_plus_plus", "layer_cam", "score_cam",
                                    "guided_grad_cam", "visual_backprop"])
def test_bad_layers(method, tiny_model, tiny_x):
    cls = cv.get_method(method)
    with pytest.raises(InputError, match="'conv_2'.*did you mean 'conv2'"):
        cls(tiny_model, layer="conv_2").explain(tiny_x)
    with pytest.raises(InputError, match=r"'flatten' outputs shape \(None, 36\).*4-D"):
        cls(tiny_model, layer="flatten").explain(tiny_x)
    with pytest.raises(InputError, match="'relu6' does not feed"):
        cls(tiny_model, layer="relu6").explain(tiny_x, cv.NeuronTarget("conv1", 0))
    with pytest.raises(UnsupportedArchitectureError, match="'mlp' has no convolutional layer"):
        cls(cam_models.dense_model()).explain(cam_models.gap_input(1))
    assert issubclass(UnsupportedArchitectureError, CnnVisError)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_user_model_unchanged(method, gap_x):
    model = cam_models.gap_model(softmax=True)
    before = tiny.weights_snapshot(model)
    out = np.asarray(model(gap_x))
    exp = cv.get_method(method)(model).explain(gap_x)
    assert np.isfinite(exp.heatmap).all()
    tiny.assert_model_unchanged(model, before, gap_x, out)
