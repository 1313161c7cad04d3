"""Network inversion by a trained up-convolutional decoder (Dosovitskiy & Brox, CVPR 2016).

References: the mean training image (the best constant reconstruction, which a decoder must
beat), the paper's finding that early layers are reconstructed more accurately than late ones,
plain NumPy for the errors and weights; determinism and the user's model checked bit for bit.
Trained on the synthetic benchmark (the minis' training distribution), held-out images for
the errors.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError, TargetError
from cnnvis_eval.methods.synthesis.inversion_net import build_decoder
from suites.support.models import mini_spec

EARLY, LATE = "block1_pool", "block3_pool"  # mini_vgg: stride 2 and stride 8


def _data(n_train: int, spec):
    from cnnvis_eval.data.synthetic import make_synthetic

    train = spec.preprocess(make_synthetic(n_train, size=64, seed=0).images)
    test = spec.preprocess(make_synthetic(32, size=64, seed=99).images)
    return train, test


def _mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


@pytest.fixture(scope="module")
def trained():
    spec = mini_spec("mini_vgg")
    train, test = _data(192, spec)
    before = [w.copy() for w in spec.model.get_weights()]
    out_before = np.asarray(spec.model(test))
    nets = {layer: cv.train_inversion_network(spec, layer, train, epochs=12, width=32, lr=3e-3)
            for layer in (EARLY, LATE)}
    return spec, train, test, nets, before, out_before


def test_reconstruction_beats_the_mean_image_and_early_beats_late(trained):
    spec, train, test, nets, *_ = trained
    baseline = _mse(train.mean(0)[None], test)
    err = {}
    for layer, net in nets.items():
        rec = net.invert(test)
        assert rec.shape == test.shape and rec.dtype == np.float32
        err[layer] = _mse(rec, test)
        np.testing.assert_allclose(net.mean_image, train.mean(0), rtol=1e-5, atol=1e-6)
        assert net.history.shape == (12,) and net.history[-1] < net.history[0]
    assert err[EARLY] < 0.6 * baseline, (err, baseline)
    assert err[LATE] < baseline * 1.05, (err, baseline)
    # Dosovitskiy & Brox: the deeper the layer, the worse the reconstruction
    assert err[EARLY] < 0.7 * err[LATE], err


def test_invert_from_features_equals_from_images(trained):
    spec, train, test, nets, *_ = trained
    net = nets[LATE]
    feats = net.features(test[:4])
    assert feats.shape == (4, 8, 8, 48) and net.feature_shape == (8, 8, 48)
    np.testing.assert_array_equal(net.invert(feats), net.invert(test[:4]))
    np.testing.assert_array_equal(net.invert(feats, kind="features"), net.invert(test[:4], kind="images"))


def test_model_unchanged(trained):
    spec, train, test, nets, before, out_before = trained
    for a, b in zip(spec.model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(spec.model(test)), out_before)
    # the decoder holds none of the model's variables
    ids = {id(v) for v in spec.model.weights}
    assert not any(id(v) in ids for v in nets[EARLY].decoder.weights)


def test_training_is_seeded():
    spec = mini_spec("mini_vgg")
    train, _ = _data(64, spec)
    a, b, c = (cv.train_inversion_network(spec, LATE, train, epochs=2, width=16, seed=s) for s in (3, 3, 4))
    for u, v in zip(a.decoder.get_weights(), b.decoder.get_weights()):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(a.history, b.history)
    assert not np.array_equal(a.decoder.get_weights()[0], c.decoder.get_weights()[0])


def test_decoder_follows_the_layer_stride():
    import keras

    for feat, stages in (((32, 32, 16), 1), ((8, 8, 48), 3), ((64, 64, 16), 0), ((48,), 4)):
        dec = build_decoder(feat, (64, 64, 3), width=16)
        ups = [l for l in dec.layers if isinstance(l, keras.layers.Conv2DTranspose)]
        assert len(ups) == stages and all(l.strides == (2, 2) for l in ups)
        assert dec.output_shape == (None, 64, 64, 3)
        assert sum(isinstance(l, keras.layers.LeakyReLU) for l in dec.layers) == stages + (3 if len(feat) == 3 else 2)
    assert build_decoder((9, 9, 4), (299, 299, 3), width=16).output_shape == (None, 299, 299, 3)


@pytest.mark.parametrize("call, err, match", [
    (lambda s, x: cv.train_inversion_network(s, "block9_conv1", x), TargetError, "no layer named"),
    (lambda s, x: cv.train_inversion_network(s, EARLY, x[:1]), InputError, "at least 2"),
    (lambda s, x: cv.train_inversion_network(s, EARLY, x[..., :2]), InputError, "channels"),
    (lambda s, x: cv.train_inversion_network(s, EARLY, x, epochs=0), InputError, "epochs"),
], ids=["layer", "one-image", "shape", "epochs"])
def test_bad_input(call, err, match):
    spec = mini_spec("mini_vgg")
    x = spec.preprocess(np.zeros((4, 64, 64, 3)))
    with pytest.raises(err, match=match):
        call(spec, x)


def test_invert_bad_shape(trained):
    net = trained[3][LATE]
    with pytest.raises(InputError, match="expected images"):
        net.invert(np.zeros((2, 5, 5, 3), np.float32))


@pytest.mark.slow
def test_longer_training_all_depths():
    """512 training images, 30 epochs (~130 s on 2 shared cores): the error grows with depth
    (the paper's finding) and every layer's decoder beats the mean image (measured relative
    MSE 0.15, 0.63, 0.85 for strides 2, 4, 8)."""
    spec = mini_spec("mini_vgg")
    train, test = _data(512, spec)
    baseline = _mse(train.mean(0)[None], test)
    err = {layer: _mse(cv.train_inversion_network(spec, layer, train, epochs=30, width=32, lr=2e-3).invert(test), test)
           for layer in ("block1_pool", "block2_pool", "block3_pool")}
    assert err["block1_pool"] < 0.3 * baseline, err
    assert err["block2_pool"] < 0.8 * baseline, err
    assert err["block1_pool"] < err["block2_pool"] < err["block3_pool"] < 0.95 * baseline, (err, baseline)
