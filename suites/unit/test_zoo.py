"""load_model: the five architectures, weights handling, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import errors
from cnnvis_eval.models import zoo
from suites.support.models import BIG, big_spec


@pytest.mark.parametrize("name", BIG)
def test_spec_fields(name):
    spec = big_spec(name)
    graph = spec.graph
    assert spec.model.output_shape == (None, 1000)
    assert graph.stripped is None  # the zoo builds linear heads
    assert len(graph.shape(graph.key(spec.last_conv_layer))) == 4
    assert len(spec.intermediate_layers) == 2
    for layer in spec.intermediate_layers:
        assert len(graph.shape(graph.key(layer))) == 4
    # the two intermediate layers are well spread and high: after half the depth, in order
    names = graph.layer_names
    i, j = (names.index(n) for n in spec.intermediate_layers)
    assert len(names) * 0.4 < i < j < names.index(spec.last_conv_layer) + 1
    from cnnvis_eval.graph import last_conv_layer
    assert last_conv_layer(graph) == spec.last_conv_layer


@pytest.mark.parametrize("name", BIG)
def test_preprocess(name):
    spec = big_spec(name)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    keep = imgs.copy()
    x = spec.preprocess(imgs)
    np.testing.assert_array_equal(imgs, keep)
    assert x.dtype == np.float32 and x.shape == imgs.shape
    low, high = spec.input_range
    assert np.all(x >= low - 1e-4) and np.all(x <= high + 1e-4)
    np.testing.assert_allclose(spec.deprocess(x), imgs, atol=1e-3)
    # extremes reach the documented bounds
    ext = spec.preprocess(np.stack([np.zeros((4, 4, 3)), np.full((4, 4, 3), 255.0)]))
    np.testing.assert_allclose(ext[0].min((0, 1)), low, atol=1e-4)
    np.testing.assert_allclose(ext[1].max((0, 1)), high, atol=1e-4)


def test_imagenet_weights_missing_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(errors.WeightsUnavailableError) as info:
        cv.load_model("resnet50", weights="imagenet", input_shape=(96, 96, 3), download=False)
    msg = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in msg
    assert str(tmp_path / "models") in msg


def test_imagenet_weights_from_cache(tmp_path, monkeypatch):
    """A weights file placed in the Keras cache is picked up (here: one we wrote ourselves)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    src = cv.load_model("mobilenet_v2", input_shape=(96, 96, 3))
    (tmp_path / "models").mkdir()
    path = tmp_path / "models" / zoo.ARCHS["mobilenet_v2"].weights_file
    import h5py
    from keras.src.legacy.saving import legacy_h5_format  # the format Keras' ImageNet files use

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, src.model)
    spec = cv.load_model("mobilenet_v2", weights="imagenet", input_shape=(96, 96, 3), download=False)
    for a, b in zip(spec.model.weights, src.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert spec.weights == "imagenet"


def test_weights_path(tmp_path):
    with pytest.raises(errors.WeightsUnavailableError, match="does not exist"):
        cv.load_model("vgg16", weights=tmp_path / "nope.h5", input_shape=(64, 64, 3))


def test_vgg_imagenet_needs_native_size():
    with pytest.raises(errors.InputError, match=r"Flatten head.*\(224, 224, 3\)"):
        cv.load_model("vgg16", weights="imagenet", input_shape=(96, 96, 3), download=False)


def test_unknown_model_and_bad_shapes():
    with pytest.raises(errors.InputError, match="unknown model 'resnet18'.*resnet50"):
        cv.load_model("resnet18")
    with pytest.raises(errors.InputError, match="at least 75x75"):
        cv.load_model("inception_v3", input_shape=(64, 64, 3))
    with pytest.raises(errors.InputError, match=r"\(H, W, 3\)"):
        cv.load_model("resnet50", input_shape=(64, 64, 1))


def test_list_models():
    names = cv.list_models()
    assert names[:5] == list(BIG)
