"""Reference tests: gradient and modified-backprop methods against NumPy float64 twins.

The tiny network (conv-relu, conv, ReLU6, max-pool, dense) is evaluated by hand in
``suites/support/numpy_ref.py``; every method must match it to float64 precision.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from suites.support import numpy_ref as R
from suites.support import tiny

RTOL, ATOL = 1e-9, 1e-12


@pytest.fixture(scope="module")
def ref():
    return R.TinyNet(tiny.tiny_weights())


@pytest.fixture(scope="module")
def x():
    return tiny.tiny_input(4)


def _top(ref, x):
    return ref.logits(x).argmax(1)


def test_reference_net_matches_keras(ref, tiny_model, x):
    np.testing.assert_allclose(np.asarray(tiny_model(x)), ref.logits(x), rtol=1e-12, atol=1e-12)
    c = ref.forward(x)
    # the test input must exercise both rectifier branches of ReLU6 (else its rule is untested)
    assert (c["z2"] >= 6).any() and ((c["z2"] > 0) & (c["z2"] < 6)).any() and (c["z2"] <= 0).any()


@pytest.mark.parametrize("signed", [False, True], ids=["abs", "signed"])
def test_saliency(ref, tiny_model, x, signed):
    exp = cv.explain("saliency", tiny_model, x, signed=signed)
    g = ref.input_gradient(x, _top(ref, x))
    np.testing.assert_allclose(exp.attribution, g, rtol=RTOL, atol=ATOL)
    want = g.sum(-1) if signed else np.abs(g).max(-1)
    np.testing.assert_allclose(exp.heatmap, want, rtol=1e-6, atol=1e-7)
    assert exp.heatmap.dtype == np.float32 and exp.heatmap.shape == x.shape[:3]
    np.testing.assert_array_equal(exp.indices, _top(ref, x))
    np.testing.assert_allclose(exp.scores, ref.logits(x).max(1), rtol=1e-6)


def test_gradient_x_input(ref, tiny_model, x):
    exp = cv.explain("gradient_x_input", tiny_model, x, target=cv.ClassTarget(2))
    g = ref.input_gradient(x, 2)
    np.testing.assert_allclose(exp.attribution, g * x, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(exp.heatmap, (g * x).sum(-1), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(exp.indices, [2, 2, 2, 2])


def _ig_reference(ref, x, cls, steps, base):
    total = np.zeros_like(x)
    for k in range(steps):
        a = (k + 0.5) / steps
        total += ref.input_gradient(base + a * (x - base), cls)
    return (x - base) * total / steps


def test_integrated_gradients(ref, tiny_model, x):
    base = np.full(x.shape[1:], 0.25)
    exp = cv.explain("integrated_gradients", tiny_model, x, target=cv.ClassTarget([0, 1, 2, 0]),
                     steps=24, baseline=base, internal_batch_size=28)  # 7 steps per call: 7, 7, 7, 3
    want = _ig_reference(ref, x, np.array([0, 1, 2, 0]), 24, np.broadcast_to(base, x.shape))
    np.testing.assert_allclose(exp.attribution, want, rtol=1e-5, atol=1e-9)
    # the reported completeness error is the real one
    delta = ref.logits(x)[np.arange(4), [0, 1, 2, 0]] - ref.logits(np.broadcast_to(base, x.shape))[np.arange(4), [0, 1, 2, 0]]
    err = np.abs(want.reshape(4, -1).sum(1) - delta) / np.abs(delta)
    np.testing.assert_allclose(exp.meta["completeness_error"], err, rtol=1e-3, atol=1e-6)


def test_integrated_gradients_completeness_improves_with_steps(tiny_model, x):
    coarse = cv.explain("integrated_gradients", tiny_model, x, steps=4).meta["completeness_error"]
    fine = cv.explain("integrated_gradients", tiny_model, x, steps=256).meta["completeness_error"]
    # the integrand of a ReLU/max-pool net is piecewise constant: the midpoint rule converges
    # like 1/steps, so a few percent at worst here (1% on trained models: test_ig_completeness)
    assert fine.max() < 0.05
    assert fine.mean() < coarse.mean() / 4


def _noisy(ref, x, cls, n, sigma, seed):
    noise = np.random.default_rng(seed).standard_normal((n,) + x.shape[1:])
    scale = sigma * (x.reshape(len(x), -1).max(1) - x.reshape(len(x), -1).min(1))
    grads = np.stack([ref.input_gradient(x + scale[:, None, None, None] * e, cls) for e in noise])
    return grads


def test_smoothgrad_and_vargrad(ref, tiny_model, x):
    cls = _top(ref, x)
    grads = _noisy(ref, x, cls, 12, 0.2, seed=7)
    sg = cv.explain("smoothgrad", tiny_model, x, n=12, sigma=0.2, seed=7, internal_batch_size=20)  # 5, 5, 2 samples
    np.testing.assert_allclose(sg.attribution, grads.mean(0), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(sg.heatmap, np.abs(grads.mean(0)).max(-1), rtol=1e-5, atol=1e-7)
    sq = cv.explain("smoothgrad", tiny_model, x, n=12, sigma=0.2, seed=7, squared=True)
    np.testing.assert_allclose(sq.attribution, (grads ** 2).mean(0), rtol=1e-5, atol=1e-9)
    vg = cv.explain("vargrad", tiny_model, x, n=12, sigma=0.2, seed=7)
    np.testing.assert_allclose(vg.attribution, grads.var(0), rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(vg.heatmap, grads.var(0).max(-1), rtol=1e-4, atol=1e-7)


def test_smoothgrad_seeded(tiny_model, x):
    a = cv.explain("smoothgrad", tiny_model, x, n=6, seed=1).heatmap
    b = cv.explain("smoothgrad", tiny_model, x, n=6, seed=1).heatmap
    c = cv.explain("smoothgrad", tiny_model, x, n=6, seed=2).heatmap
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("method,rule", [("guided_backprop", "guided"), ("deconvnet", "deconvnet")])
def test_modified_backprop(ref, tiny_model, x, method, rule):
    exp = cv.explain(method, tiny_model, x)
    want = ref.input_gradient(x, _top(ref, x), rule=rule)
    np.testing.assert_allclose(exp.attribution, want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(exp.heatmap, np.abs(want).max(-1), rtol=1e-6, atol=1e-7)
    assert exp.meta["rectifiers"] == 2  # the fused relu of conv1 and the ReLU6 layer
    # the rule really differs from the plain gradient on this input
    assert not np.allclose(want, ref.input_gradient(x, _top(ref, x)))


def test_guided_relu6_blocks_saturated_units(ref, tiny_model, x):
    """Guided backprop must also block x >= 6: a ReLU6 treated as plain ReLU gives a
    different answer on this input, and ours matches the blocking reference."""
    exp = cv.explain("guided_backprop", tiny_model, x)
    cls = _top(ref, x)
    c = ref.forward(x)
    dl = np.zeros_like(c["logits"])
    dl[np.arange(len(x)), cls] = 1.0
    d = R.maxpool2_backward((dl @ ref.w["w3"].T).reshape(c["p"].shape), c["win"])
    unblocked = R.rect_backward(d, c["z2"], "guided", max_value=None)
    d1 = R.rect_backward(R.conv2d_backward(unblocked, c["a1"].shape, ref.w["w2"]), c["z1"], "guided")
    wrong = R.conv2d_backward(d1, x.shape, ref.w["w1"])
    assert not np.allclose(wrong, exp.attribution, atol=1e-6)
    np.testing.assert_allclose(exp.attribution, ref.input_gradient(x, cls, "guided"), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_neuron_target(ref, tiny_model, x, reduce):
    k = 1
    exp = cv.explain("saliency", tiny_model, x, target=cv.NeuronTarget("relu6", k, reduce=reduce))
    c = ref.forward(x)
    a = c["a2"][..., k]
    d = np.zeros_like(c["a2"])
    if reduce == "mean":
        d[..., k] = 1.0 / a[0].size
        want_score = a.mean((1, 2))
    elif reduce == "sum":
        d[..., k] = 1.0
        want_score = a.sum((1, 2))
    else:
        flat = a.reshape(len(x), -1)
        idx = flat.argmax(1)
        dk = np.zeros_like(flat)
        dk[np.arange(len(x)), idx] = 1.0
        d[..., k] = dk.reshape(a.shape)
        want_score = flat.max(1)
    np.testing.assert_allclose(exp.scores, want_score, rtol=1e-6)
    np.testing.assert_allclose(exp.attribution, ref.backward(c, "a2", d), rtol=RTOL, atol=ATOL)


def test_neuron_target_top_channel_is_most_activated_by_mean(ref, tiny_model, x):
    exp = cv.explain("saliency", tiny_model, x, target=cv.NeuronTarget("conv1", "top", reduce="max"))
    c = ref.forward(x)
    np.testing.assert_array_equal(exp.indices, c["a1"].mean((1, 2)).argmax(1))
    np.testing.assert_allclose(exp.scores, c["a1"].max((1, 2))[np.arange(len(x)), exp.indices], rtol=1e-6)


def test_per_image_class_indices(ref, tiny_model, x):
    cls = np.array([2, 0, 1, 1])
    exp = cv.explain("saliency", tiny_model, x, target=cv.ClassTarget(cls))
    np.testing.assert_allclose(exp.attribution, ref.input_gradient(x, cls), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(exp.indices, cls)


@pytest.mark.parametrize("method", ["saliency", "guided_backprop", "integrated_gradients", "smoothgrad"])
def test_batch_size_does_not_change_result(tiny_model, x, method):
    a = cv.explain(method, tiny_model, x, batch_size=1)
    b = cv.explain(method, tiny_model, x, batch_size=4)
    np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["saliency", "gradient_x_input", "integrated_gradients",
                                    "smoothgrad", "vargrad", "guided_backprop", "deconvnet"])
def test_user_model_and_input_unchanged(method, x):
    model = tiny.tiny_cnn(softmax=True)
    before = tiny.weights_snapshot(model)
    out_before = np.asarray(model(x))
    x_before = x.copy()
    cv.explain(method, model, x)
    tiny.assert_model_unchanged(model, before, x, out_before)
    np.testing.assert_array_equal(x, x_before)
    # still a softmax model, with the same single inbound node per layer
    np.testing.assert_allclose(np.asarray(model(x)).sum(1), 1.0, rtol=1e-9)
    assert all(len(layer._inbound_nodes) <= 1 for layer in model.layers)


def test_list_and_get_methods():
    names = cv.list_methods()
    assert names == sorted(names)
    for m in ["saliency", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad",
              "deconvnet", "guided_backprop"]:
        assert m in names
        assert cv.get_method(m).name == m


@pytest.mark.parametrize("shape", [(2, 5, 5, 1), (3, 9, 9, 3), (2, 7, 7, 7), (2, 7, 7, 8), (2, 6, 6, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_reductions_equal_numpys_own(shape, dtype):
    """reduce_channels runs channel by channel (fast for few channels): the same values, bit
    for bit, as NumPy's reduction over the last axis, in a new array."""
    from cnnvis_eval.methods.base import reduce_channels

    a = np.random.default_rng(sum(shape)).normal(size=shape).astype(dtype)
    want = {"max_abs": np.abs(a).max(-1), "sum": a.sum(-1), "sum_abs": np.abs(a).sum(-1), "max": a.max(-1)}
    for mode, ref in want.items():
        got = reduce_channels(a, mode)
        assert got.dtype == ref.dtype and np.array_equal(got, ref), mode
        assert not np.shares_memory(got, a)


def _conv_ops(cf) -> int:
    """Convolution ops of a concrete function: its graph and every function it calls."""
    gd = cf.graph.as_graph_def()
    nodes = list(gd.node) + [n for f in gd.library.function for n in f.node_def]
    return sum(n.op in ("Conv2D", "Conv2DBackpropInput") for n in nodes)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "gradient_shap", "blur_ig"])
def test_multi_sample_methods_call_the_shared_gradient(tiny_model, x, method):
    """The multi-sample methods' compiled functions call the model's one compiled input
    gradient (one trace per model and target tensor) instead of tracing the model again:
    the shared gradient is among the functions they call, and they hold no convolution
    besides its own (their sample loops run in the graph, so the call sits in a loop body)."""
    from cnnvis_eval.cache import default_cache

    exp = cv.get_method(method)(tiny_model, **({"n": 2} if method in ("smoothgrad", "gradient_shap") else {"steps": 2}))
    exp.explain(x[:2])
    fns = default_cache.functions(exp.spec)  # every test's functions on this model
    chunks = {k: f for k, f in fns.items() if k[0] in ("ig", "noise", "gradient_shap", "blur_ig")}
    assert chunks, sorted(map(str, fns))
    for k, fn in chunks.items():
        (grad,) = fns[("grad", k[1], k[2], "plain")]._list_all_concrete_functions()
        grad_convs = _conv_ops(grad)
        assert grad_convs > 0
        for cf in fn._list_all_concrete_functions():
            called = {f.signature.name for f in cf.graph.as_graph_def().library.function}
            assert grad.function_def.signature.name in called, f"{method} does not call the shared gradient"
            assert _conv_ops(cf) == grad_convs, f"{method} traced the model itself"
