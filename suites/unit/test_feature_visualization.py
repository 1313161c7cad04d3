"""Feature visualization with a decorrelated Fourier parameterization and transformation
robustness (Olah, Mordvintsev & Schubert, Distill 2017; Lucid's formulas).

References: NumPy float64 twins of the spectral and colour maps, Lucid's constants typed in
here, closed-form properties (power spectrum 1/f^2 of white noise, colour covariance C C^T of
white colours, a 90 degree rotation is ``np.rot90``, a jitter is a slice), and on a trained
mini model the literature's predictions: an activation far above the natural images', less
high-frequency power than the pixel parameterization, a higher activation than the pixel
parameterization at equal steps under the same transforms (class logits), and an activation
that survives random transforms when optimized under them.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError, TargetError
from cnnvis_eval.methods.synthesis import fourier as F
from cnnvis_eval.methods.synthesis import transforms as T
from cnnvis_eval.methods.synthesis.feature_vis import InputMap
from suites.support.models import mini_spec

# Lucid's lucid/optvis/param/color.py, typed in
LUCID_C = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------- parameterization
@pytest.mark.parametrize("h, w", [(8, 8), (7, 9), (64, 64)])
def test_fft_image_matches_numpy_and_inverts(h, w):
    rng = np.random.default_rng(0)
    spec = rng.normal(size=(2, 2, 3, h, w // 2 + 1))
    # NumPy float64 reference written from Lucid's formula
    freqs = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, : w // 2 + 1] ** 2)
    scale = np.sqrt(h * w) / np.maximum(freqs, 1.0 / max(h, w))
    ref = np.fft.irfft2((spec[0] + 1j * spec[1]) * scale, s=(h, w)).transpose(0, 2, 3, 1) / 4
    np.testing.assert_allclose(F.spectrum_scale(h, w), scale, rtol=1e-12)
    out = F.fft_image_tf(tf.constant(spec), tf.constant(scale), h, w).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.fft_image(spec, h, w), ref, rtol=1e-10, atol=1e-12)
    # the inverse: any real image is reached exactly from spectrum_of(image)
    img = rng.normal(size=(2, h, w, 3))
    np.testing.assert_allclose(F.fft_image(F.spectrum_of(img), h, w), img, atol=1e-10)
    back = F.fft_image_tf(tf.constant(F.spectrum_of(img)), tf.constant(scale), h, w).numpy()
    np.testing.assert_allclose(back, img, atol=1e-10)


def test_white_spectrum_gives_one_over_f_squared_power():
    """White noise in the parameters -> power |FFT|^2 = 2 (scale / 4)^2 per bin, i.e. falling
    as 1 / f^2 (decay_power 1), measured on the TensorFlow forward map."""
    h = w = 64
    rng = np.random.default_rng(1)
    spec = rng.normal(size=(2, 48, 3, h, w // 2 + 1))
    img = F.fft_image_tf(tf.constant(spec), tf.constant(F.spectrum_scale(h, w)), h, w).numpy()
    power = np.mean(np.abs(np.fft.rfft2(img.transpose(0, 3, 1, 2))) ** 2, axis=(0, 1))
    cols = slice(1, w // 2)  # bins whose conjugate is not stored (the others are symmetrized)
    freqs = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, : w // 2 + 1] ** 2)
    expected = 2 * (h * w) / 16 / freqs[:, cols] ** 2
    ratio = power[:, cols] / expected
    assert abs(np.median(ratio) - 1) < 0.05, np.median(ratio)
    slope = np.polyfit(np.log(freqs[:, cols].ravel()), np.log(power[:, cols].ravel()), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.05)


def test_colour_matrix_is_lucids_and_decorrelates():
    cn = LUCID_C / np.linalg.norm(LUCID_C, axis=0).max()
    np.testing.assert_allclose(F.color_matrix(), cn, rtol=1e-12)
    rng = np.random.default_rng(2)
    t = rng.normal(size=(4, 64, 64, 3))
    rgb = F.to_valid_rgb_tf(tf.constant(t), tf.constant(cn), True).numpy()
    assert rgb.min() > 0 and rgb.max() < 1
    z = np.log(rgb) - np.log1p(-rgb)  # undo the sigmoid
    cov = np.cov(z.reshape(-1, 3).T)
    np.testing.assert_allclose(cov, cn @ cn.T, atol=0.02)
    assert np.abs(cov - cn.T @ cn).max() > 0.2  # the test tells C C^T from C^T C
    # the colour inverse used for init=
    np.testing.assert_allclose(_sigmoid(F.logits_of_rgb(rgb, True) @ cn.T), rgb, atol=1e-8)


def test_input_map_follows_the_preprocess_channel_order():
    from cnnvis_eval.models.zoo import preprocess_caffe, preprocess_tf

    rgb = np.random.default_rng(3).uniform(size=(2, 4, 4, 3))
    for pre, perm in ((preprocess_caffe, [2, 1, 0]), (preprocess_tf, [0, 1, 2])):
        lo = pre(np.zeros((1, 1, 1, 3)))[0, 0, 0]
        hi = pre(np.full((1, 1, 1, 3), 255.0))[0, 0, 0]
        spec = cv.ModelSpec(name="m", model=None, preprocess=pre, input_shape=(4, 4, 3),
                            input_range=(lo, hi))
        imap = InputMap(spec, 3, np.float32)
        assert imap.perm.tolist() == perm
        np.testing.assert_allclose(imap.to_x(rgb), pre(255 * rgb), rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(imap.to_rgb(imap.to_x(rgb)), rgb, atol=1e-6)


# ---------------------------------------------------------------------- transforms
def _legacy_bilinear(x, oh, ow):
    """NumPy twin of resize_bilinear(align_corners=False, half_pixel_centers=False)."""
    h, w = x.shape[1:3]
    ys, xs = np.arange(oh) * h / oh, np.arange(ow) * w / ow
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[None, :, None, None], (xs - x0)[None, None, :, None]
    top = x[:, y0][:, :, x0] * (1 - fx) + x[:, y0][:, :, x1] * fx
    bot = x[:, y1][:, :, x0] * (1 - fx) + x[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bot * fy


def test_transforms_are_the_documented_ones():
    rng = np.random.default_rng(4)
    x = rng.uniform(size=(1, 12, 10, 3)).astype(np.float32)
    xt = tf.constant(x)
    pad = T.Pad(3, 0.5).apply(xt, []).numpy()
    np.testing.assert_array_equal(pad, np.pad(x, [(0, 0), (3, 3), (3, 3), (0, 0)], constant_values=0.5))
    jit = T.Jitter(4).apply(xt, tf.constant([1.0, 3.0])).numpy()
    np.testing.assert_array_equal(jit, x[:, 1:9, 3:9])
    for s in (0.9, 1.1, 1.5):
        out = T.RandomScale([s]).apply(xt, tf.constant([s])).numpy()
        oh, ow = int(np.float32(s) * np.float32(12)), int(np.float32(s) * np.float32(10))
        np.testing.assert_allclose(out, _legacy_bilinear(x.astype(np.float64), oh, ow), atol=1e-5)
    sq = tf.constant(x[:, :10])
    np.testing.assert_array_equal(T.rotate(sq, np.pi / 2).numpy()[0], np.rot90(x[0, :10]))  # counter-clockwise
    np.testing.assert_array_equal(T.rotate(sq, 0.0).numpy(), x[:, :10])
    # 10 degrees, nearest neighbour about the centre, zero outside: a NumPy twin
    a = np.deg2rad(10.0)
    out = T.rotate(xt, a).numpy()[0]
    h, w = 12, 10
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    xs = cx + np.cos(a) * (xx - cx) - np.sin(a) * (yy - cy)
    ys = cy + np.sin(a) * (xx - cx) + np.cos(a) * (yy - cy)
    xi, yi = np.floor(xs + 0.5).astype(int), np.floor(ys + 0.5).astype(int)
    inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
    ref = np.zeros_like(x[0])
    ref[inside] = x[0][yi[inside], xi[inside]]
    np.testing.assert_allclose(out, ref)
    # Lucid's standard_transforms
    pad, j8, sc, rot, j4 = T.STANDARD
    assert (pad.width, pad.value, j8.d, j4.d) == (12, 0.5, 8, 4)
    np.testing.assert_allclose(sc.scales, np.linspace(0.9, 1.1, 11))
    assert sorted(rot.angles) == sorted(list(range(-10, 11)) + [0] * 5)
    # seeded parameters, jitter offsets cover {0..d}
    chain = T.resolve_transforms("standard", 64, 64)
    p1 = T.sample_params(chain, np.random.default_rng(0), 400)
    np.testing.assert_array_equal(p1, T.sample_params(chain, np.random.default_rng(0), 400))
    assert p1.shape == (400, 6) and set(np.unique(p1[:, :2])) == set(range(9))
    assert set(np.unique(p1[:, 4:6])) == set(range(5))
    out = T.apply_all(chain, tf.constant(rng.uniform(size=(1, 64, 64, 3)), tf.float32), tf.constant(p1[0], tf.float32))
    assert out.shape == (1, 64, 64, 3)


# ---------------------------------------------------------------------- end to end, mini model
def _hf_fraction(rgb):
    """Share of the grey image's power above 0.25 cycles per pixel."""
    g = rgb.mean(-1) - rgb.mean()
    p = np.abs(np.fft.fft2(g)) ** 2
    f = np.sqrt(np.fft.fftfreq(g.shape[0])[:, None] ** 2 + np.fft.fftfreq(g.shape[1])[None] ** 2)
    return p[f > 0.25].sum() / p.sum()


STEPS = 64


@pytest.fixture(scope="module")
def mini():
    """mini_resnet, the synthetic benchmark's images, their activations (plain Keras) and the
    runs: Fourier + decorrelated vs pixel, with and without the standard transforms."""
    import keras

    from cnnvis_eval.data.synthetic import make_synthetic

    spec = mini_spec("mini_resnet")
    x = spec.preprocess(make_synthetic(64, size=64, seed=1).images)
    values = {"logits": lambda im: np.asarray(spec.model(im))}
    for layer in spec.intermediate_layers:
        sub = keras.Model(spec.model.input, spec.model.get_layer(layer).output)
        values[layer] = lambda im, sub=sub: np.asarray(sub(im)).mean(axis=(1, 2))
    targets, natural = {}, {}
    for name, fn in values.items():
        a = fn(x)
        ch = int(np.argmax(a.mean(0)))  # the unit the benchmark's images excite most
        targets[name] = cv.ClassTarget(ch) if name == "logits" else cv.NeuronTarget(name, ch)
        natural[name] = a[:, ch]
    runs = {}
    for name, target in targets.items():
        runs[name, "fourier", "standard"] = cv.feature_visualization(spec, target, steps=STEPS)
    for par, dec in (("fourier", True), ("pixel", False)):
        for tr in ("standard",) if par == "pixel" else ("none",):
            runs["logits", par, tr] = cv.feature_visualization(
                spec, targets["logits"], steps=STEPS, parameterization=par, decorrelate=dec, transforms=tr)
    return spec, values, targets, natural, runs


def test_mini_activation_far_above_natural_images(mini):
    spec, values, targets, natural, runs = mini
    for name, target in targets.items():
        r = runs[name, "fourier", "standard"]
        ch = target.index
        keras_value = values[name](r.image[None])[0, ch]
        assert keras_value == pytest.approx(r.activation, rel=1e-4, abs=1e-5)
        nat = natural[name]
        assert r.activation > nat.max() + 3 * nat.std(), (name, r.activation, nat.max(), nat.std())
        assert r.image.min() >= -1 - 1e-6 and r.image.max() <= 1 + 1e-6  # the spec's input range
        assert r.activation_history.shape == (STEPS,)


def test_mini_fourier_beats_pixel_and_has_less_high_frequency(mini):
    *_, runs = mini
    fou, pix = runs["logits", "fourier", "standard"], runs["logits", "pixel", "standard"]
    # at equal steps under the same transforms the preconditioned parameterization climbs higher
    assert fou.activation > 1.5 * pix.activation, (fou.activation, pix.activation)
    hf_f, hf_p = _hf_fraction(fou.rgb), _hf_fraction(pix.rgb)
    assert hf_f < 0.5 * hf_p, (hf_f, hf_p)


def test_mini_transformation_robustness(mini):
    """The image optimized under random transforms keeps its activation under fresh ones;
    the one optimized without them loses most of it, though it scored higher untransformed (Distill 2017, 'Transformation
    robustness')."""
    spec, values, targets, natural, runs = mini
    chain = T.resolve_transforms("standard", 64, 64)
    params = T.sample_params(chain, np.random.default_rng(123), 16).astype(np.float32)
    imap = InputMap(spec, 3, np.float32)
    ch = targets["logits"].index

    def robust(r):
        xs = [imap.to_x(T.apply_all(chain, tf.constant(r.rgb[None]), tf.constant(p)).numpy()) for p in params]
        return values["logits"](np.concatenate(xs).astype(np.float32))[:, ch].mean()

    with_t, without = runs["logits", "fourier", "standard"], runs["logits", "fourier", "none"]
    kept_with = robust(with_t) / with_t.activation
    kept_without = robust(without) / without.activation
    assert kept_with > 0.6, kept_with
    assert kept_without < 0.5 * kept_with, (kept_with, kept_without)


# ---------------------------------------------------------------------- contract
def test_seeded_init_and_model_unchanged():
    spec = mini_spec("mini_resnet")
    before = [w.copy() for w in spec.model.get_weights()]
    target = cv.NeuronTarget(spec.intermediate_layers[0], 0)
    a, b, c = (cv.feature_visualization(spec, target, steps=8, seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.image, c.image)
    x0 = np.random.default_rng(0).uniform(-0.8, 0.8, (64, 64, 3)).astype(np.float32)
    for par in ("fourier", "pixel"):
        r = cv.feature_visualization(spec, target, steps=1, lr=1e-9, init=x0, parameterization=par)
        np.testing.assert_allclose(r.image, x0, atol=1e-4)
    for w0, w1 in zip(before, spec.model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_float64_grey_model():
    """A float64 one-channel model: the standard transforms run in float64 and the colour
    decorrelation (defined for RGB) is switched off."""
    import keras

    inp = keras.Input((20, 20, 1), dtype="float64")
    h = keras.layers.Conv2D(2, 3, name="c1", dtype="float64", kernel_initializer=keras.initializers.Constant(0.1),
                            bias_initializer=keras.initializers.Constant(0.05))(inp)
    model = keras.Model(inp, keras.layers.Dense(2, dtype="float64")(keras.layers.Flatten(dtype="float64")(h)))
    r = cv.feature_visualization(model, cv.NeuronTarget("c1", 0), steps=10)
    assert r.image.shape == (20, 20, 1) and r.params["decorrelate"] is False
    assert r.activation > r.start_activation


@pytest.mark.parametrize("kwargs, err, match", [
    ({"target": cv.ClassTarget("top")}, TargetError, "concrete class"),
    ({"target": cv.NeuronTarget("nope", 0)}, TargetError, "no layer named"),
    ({"parameterization": "wavelet"}, InputError, "parameterization"),
    ({"transforms": "lots"}, InputError, "transforms"),
    ({"steps": 0}, InputError, "steps"),
], ids=["top", "layer", "param", "transforms", "steps"])
def test_bad_input(kwargs, err, match):
    spec = mini_spec("mini_resnet")
    kwargs = {"target": cv.ClassTarget(0), **kwargs}
    with pytest.raises(err, match=match):
        cv.feature_visualization(spec, **kwargs)


# ---------------------------------------------------------------------- all minis (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name", ["mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet"])
def test_all_minis_far_above_natural_images(name):
    import keras

    from cnnvis_eval.data.synthetic import make_synthetic

    spec = mini_spec(name)
    x = spec.preprocess(make_synthetic(64, size=64, seed=1).images)
    for layer in list(spec.intermediate_layers) + [None]:
        if layer is None:
            a = np.asarray(spec.model(x))
        else:
            a = np.asarray(keras.Model(spec.model.input, spec.model.get_layer(layer).output)(x)).mean(axis=(1, 2))
        ch = int(np.argmax(a.mean(0)))
        target = cv.ClassTarget(ch) if layer is None else cv.NeuronTarget(layer, ch)
        r = cv.feature_visualization(spec, target)  # Lucid's 512 steps
        assert r.activation > a[:, ch].max() + 2 * a[:, ch].std(), (layer, r.activation, a[:, ch].max())
