"""SquareGrad, GradientSHAP (expected gradients) and DeepLIFT (rescale): NumPy float64
references on the tiny hand-set net (:class:`suites.support.numpy_ref.TinyNet`), the closed
forms and identities, errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError, UnsupportedLayerError
from suites.support import tiny
from suites.support.numpy_ref import TinyNet, conv2d_backward, maxpool2_backward

CLS = np.array([0, 2, 1])
F64 = "float64"


@pytest.fixture(scope="module")
def ref():
    return TinyNet(tiny.tiny_weights())


def test_registered():
    assert {"square_grad", "gradient_shap", "deeplift"} <= set(cv.list_methods())


# ---------------------------------------------------------------------- SquareGrad


def test_square_grad_is_the_mean_squared_noisy_gradient(tiny_model, tiny_x, ref):
    """Xplique's SquareGrad: absolute noise std (0.3 here), noise = default_rng(seed)
    .standard_normal((n, H, W, C)) as documented; heatmap = mean over channels."""
    n, sigma, seed = 6, 0.3, 7
    exp = cv.explain("square_grad", tiny_model, tiny_x, target=cv.ClassTarget(CLS), n=n, sigma=sigma,
                     seed=seed, internal_batch_size=4)
    noise = np.random.default_rng(seed).standard_normal((n,) + tiny_x.shape[1:])
    want = np.mean([ref.input_gradient(tiny_x + sigma * e, CLS) ** 2 for e in noise], axis=0)
    assert want.max() > 0.1
    np.testing.assert_allclose(exp.attribution, want, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(exp.heatmap, want.mean(-1), rtol=1e-6, atol=1e-9)


# ---------------------------------------------------------------------- GradientSHAP


def _sampler(seed, n, n_base, shape, stdevs):
    """The documented sampler of gradient_shap, written out from its docstring."""
    rng = np.random.default_rng(seed)
    return rng.integers(n_base, size=n), rng.random(n), rng.standard_normal((n,) + shape) * stdevs


def test_gradient_shap_matches_numpy_with_its_sampler(tiny_model, tiny_x, ref):
    bases = np.random.default_rng(11).normal(0, 0.5, (3,) + tiny_x.shape[1:])
    n, seed, stdevs = 10, 3, 0.2
    exp = cv.explain("gradient_shap", tiny_model, tiny_x, target=cv.ClassTarget(CLS), baselines=bases,
                     n=n, seed=seed, stdevs=stdevs, internal_batch_size=7)
    which, alphas, noise = _sampler(seed, n, 3, tiny_x.shape[1:], stdevs)
    want = np.zeros_like(tiny_x)
    for b, a, e in zip(bases[which], alphas, noise):
        want += ref.input_gradient(b + a * (tiny_x + e - b), CLS) * (tiny_x - b)
    want /= n
    assert np.abs(want).max() > 0.1
    np.testing.assert_allclose(exp.attribution, want, rtol=1e-9, atol=1e-12)


def _linear_model():
    inp = keras.Input((4, 4, 2), dtype=F64)
    out = keras.layers.Dense(2, dtype=F64, name="lin")(keras.layers.Flatten(dtype=F64)(inp))
    model = keras.Model(inp, out, name="linear")
    w = np.random.default_rng(2).normal(size=(32, 2))
    model.get_layer("lin").set_weights([w, np.array([0.3, -0.2])])
    return model, w[:, 1].reshape(4, 4, 2)


def test_gradient_shap_on_a_linear_model_is_x_minus_the_expected_baseline_times_w():
    """Expected gradients of f(x) = w . x + c: (x - E[b]) * w, here with 4000 samples of 4
    baselines (sampling error of the baseline mean ~ 1/sqrt(4000))."""
    model, w = _linear_model()
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 2))
    bases = np.random.default_rng(5).normal(size=(4, 4, 4, 2))
    exp = cv.explain("gradient_shap", model, x, target=cv.ClassTarget(1), baselines=bases, n=4000,
                     internal_batch_size=4000)
    want = (x - bases.mean(0)) * w
    np.testing.assert_allclose(exp.attribution, want, atol=0.05 * np.abs(want).max())
    # and completeness in expectation: sum = f(x) - E f(b)
    f = lambda v: v.reshape(len(v), -1) @ w.reshape(-1)  # noqa: E731 (the logit without its bias)
    np.testing.assert_allclose(exp.attribution.reshape(2, -1).sum(1), f(x) - f(bases).mean(), atol=0.05 * np.abs(f(x)).max())


def test_gradient_shap_bad_baselines_are_named(tiny_model, tiny_x):
    with pytest.raises(InputError, match=r"baselines must have shape \(B, 6, 6, 2\)"):
        cv.explain("gradient_shap", tiny_model, tiny_x, baselines=np.zeros((2, 5, 6, 2)))
    with pytest.raises(InputError, match="baselines='mean' differs per image"):
        cv.explain("gradient_shap", tiny_model, tiny_x, baselines="mean")
    with pytest.raises(InputError, match="baselines must be"):
        cv.get_method("gradient_shap")(tiny_model, baselines="blue")


# ---------------------------------------------------------------------- DeepLIFT


def _relu_net(bias: bool = False):
    """Conv(relu) -> MaxPool -> Flatten -> Dense -> ReLU -> Dense, float64, seeded weights."""
    rng = np.random.default_rng(9)
    inp = keras.Input((8, 8, 3), dtype=F64)
    conv = keras.layers.Conv2D(4, 3, activation="relu", use_bias=bias, dtype=F64)
    d1, d2 = (keras.layers.Dense(k, use_bias=bias, dtype=F64) for k in (5, 3))
    h = keras.layers.Flatten(dtype=F64)(keras.layers.MaxPooling2D(2, dtype=F64)(conv(inp)))
    model = keras.Model(inp, d2(keras.layers.ReLU(dtype=F64)(d1(h))), name="relu_net")
    for layer in (conv, d1, d2):
        layer.set_weights([rng.normal(0, 0.5, w.shape) for w in layer.get_weights()])
    return model


def test_deeplift_is_gradient_x_input_on_a_relu_net_with_zero_baseline():
    """Bias-free ReLU network, zero baseline: every reference activation is 0, so each
    rescale multiplier relu(z) / z is the ReLU's gradient (Shrikumar et al. 2017)."""
    model = _relu_net()
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3))
    dl = cv.explain("deeplift", model, x, target=cv.ClassTarget(CLS))
    gxi = cv.explain("gradient_x_input", model, x, target=cv.ClassTarget(CLS))
    assert np.abs(gxi.attribution).max() > 0.1
    np.testing.assert_allclose(dl.attribution, gxi.attribution, rtol=1e-10, atol=1e-12)


def test_deeplift_with_biases_differs_from_gradient_x_input():
    model = _relu_net(bias=True)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3))
    dl = cv.explain("deeplift", model, x).attribution
    gxi = cv.explain("gradient_x_input", model, x).attribution
    assert np.abs(dl - gxi).max() > 1e-3


def _rescale(z, z0, y, y0, slope):
    dz = z - z0
    small = np.abs(dz) <= 1e-7
    return np.where(small, slope, (y - y0) / np.where(small, 1.0, dz))


def test_deeplift_matches_numpy_with_a_nonzero_baseline(tiny_model, tiny_x, ref):
    """tiny_cnn (conv-relu, conv, ReLU6, max-pool, dense) from a non-zero reference: rescale
    multipliers at both rectifiers, max pooling routed to the input's winner."""
    x0 = np.random.default_rng(8).normal(0, 0.5, tiny_x.shape[1:])
    exp = cv.explain("deeplift", tiny_model, tiny_x, target=cv.ClassTarget(CLS), baseline=x0)
    c, c0 = ref.forward(tiny_x), ref.forward(np.broadcast_to(x0, tiny_x.shape))
    w = ref.w
    d = np.zeros_like(c["logits"])
    d[np.arange(3), CLS] = 1.0
    d = maxpool2_backward((d @ w["w3"].T).reshape(c["p"].shape), c["win"])
    d = d * _rescale(c["z2"], c0["z2"], c["a2"], c0["a2"], (c["z2"] > 0) & (c["z2"] < 6))
    d = conv2d_backward(d, c["a1"].shape, w["w2"])
    d = d * _rescale(c["z1"], c0["z1"], c["a1"], c0["a1"], c["z1"] > 0)
    want = (tiny_x - x0) * conv2d_backward(d, tiny_x.shape, w["w1"])
    np.testing.assert_allclose(exp.attribution, want, rtol=1e-9, atol=1e-12)
    gxi = cv.explain("gradient_x_input", tiny_model, tiny_x, target=cv.ClassTarget(CLS)).attribution
    assert np.abs(want - gxi).max() > 1e-2  # not the gradient in disguise


def test_deeplift_per_image_and_shared_baselines_agree_with_single_images(tiny_model, tiny_x):
    """A baseline shared by the batch runs its reference pass on one image and broadcasts it;
    per-image baselines run one reference per image.  Both equal explaining each image alone."""
    rng = np.random.default_rng(5)
    own = rng.normal(0, 0.5, tiny_x.shape)  # a different reference per image
    shared = np.broadcast_to(own[1], tiny_x.shape).copy()  # one reference, given per image
    for base in (own, shared):
        batch = cv.explain("deeplift", tiny_model, tiny_x, target=cv.ClassTarget(CLS), baseline=base)
        for n in range(len(tiny_x)):
            one = cv.explain("deeplift", tiny_model, tiny_x[n:n + 1], target=cv.ClassTarget(CLS[n:n + 1]),
                             baseline=base[n:n + 1])
            np.testing.assert_allclose(batch.attribution[n], one.attribution[0], rtol=1e-9, atol=1e-12)
            assert batch.meta["completeness_error"][n] == pytest.approx(one.meta["completeness_error"][0],
                                                                        abs=1e-9)


def test_deeplift_sums_to_delta_without_max_pooling():
    """Summation-to-delta on a net of convolutions, batch normalization, tanh, an addition
    and a sigmoid unit (no max pooling): sum(attribution) = f(x) - f(x0)."""
    rng = np.random.default_rng(1)
    inp = keras.Input((6, 6, 2), dtype=F64)
    a = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", dtype=F64)(inp)
    b = keras.layers.BatchNormalization(dtype=F64)(keras.layers.Conv2D(3, 1, dtype=F64)(inp))
    h = keras.layers.Activation("sigmoid", dtype=F64)(keras.layers.Add(dtype=F64)([a, b]))
    out = keras.layers.Dense(2, dtype=F64)(keras.layers.GlobalAveragePooling2D(dtype=F64)(h))
    model = keras.Model(inp, out, name="smooth")
    for layer in model.layers:
        if layer.get_weights():
            layer.set_weights([rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path else rng.normal(0, 1, v.shape)
                               for v in layer.weights])
    x = rng.normal(size=(2, 6, 6, 2))
    before = tiny.weights_snapshot(model)
    exp = cv.explain("deeplift", model, x, baseline=0.3)
    tiny.assert_model_unchanged(model, before)
    f = lambda v: np.asarray(model(v))[np.arange(2), exp.indices]  # noqa: E731
    delta = f(x) - f(np.full_like(x, 0.3))
    assert np.abs(delta).min() > 1e-3
    # Keras' eager call of BatchNormalization differs from the compiled graph by ~1e-8;
    # against the graph's own f(x) - f(x0) the sum holds to float64 rounding
    np.testing.assert_allclose(exp.attribution.reshape(2, -1).sum(1), delta, rtol=1e-6)
    assert exp.meta["completeness_error"].max() < 1e-12


def test_deeplift_names_an_unsupported_layer():
    inp = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, name="c1")(inp)
    h = keras.layers.Multiply(name="gate")([a, keras.layers.Conv2D(3, 3, name="c2")(inp)])
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(h)), name="gated")
    with pytest.raises(UnsupportedLayerError, match=r"deeplift: layer 'gate' \(Multiply\) of model 'gated' "
                                                    r"is not supported"):
        cv.get_method("deeplift")(model)
    inp = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(3, 3, activation="softmax", name="soft")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(h)), name="soft_in")
    with pytest.raises(UnsupportedLayerError, match=r"layer 'soft' \(Conv2D with activation 'softmax'\)"):
        cv.get_method("deeplift")(model)
