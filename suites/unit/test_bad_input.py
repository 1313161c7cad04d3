"""Bad input gets a cnnvis_eval error that names the problem; nothing passed in is modified."""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import errors
from suites.support import tiny

METHODS = ["saliency", "gradient_x_input", "integrated_gradients", "smoothgrad", "vargrad",
           "guided_backprop", "deconvnet"]


@pytest.fixture(scope="module")
def model():
    return tiny.tiny_cnn()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "shape,match",
    [((6, 6, 2), r"shape \(N, 6, 6, 2\).*got shape \(6, 6, 2\).*x\[None\]"),
     ((1, 6, 6, 3), r"3 channels but model 'tiny' expects 2"),
     ((1, 7, 6, 2), r"7 size along axis 1.*expects 6"),
     ((0, 6, 6, 2), r"empty batch")],
    ids=["rank", "channels", "size", "empty"],
)
def test_wrong_shape(model, method, shape, match):
    with pytest.raises(errors.InputError, match=match):
        cv.explain(method, model, np.zeros(shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite(model, tiny_x, bad):
    x = tiny_x.copy()
    x[1, 2, 3, 0] = bad
    with pytest.raises(errors.InputError, match=r"1 NaN or inf values \(first at index \(1, 2, 3, 0\)\)"):
        cv.explain("saliency", model, x)


def test_integer_images_are_refused(model):
    with pytest.raises(errors.InputError, match="dtype uint8.*preprocess"):
        cv.explain("saliency", model, np.zeros((1, 6, 6, 2), np.uint8))


@pytest.mark.parametrize("target,match", [
    (cv.ClassTarget(3), r"class index 3 is out of range: the model has 3 \(valid 0..2\)"),
    (cv.ClassTarget(-1), r"class index -1 is out of range"),
    (cv.ClassTarget([0, 1]), r"2 entries for a batch of 3 images"),
    (cv.ClassTarget("best"), r"'top'"),
    (cv.ClassTarget(1.5), r"integer"),
    (cv.NeuronTarget("conv9"), r"no layer named 'conv9'.*did you mean"),
    (cv.NeuronTarget("conv2", 4), r"channel of layer 'conv2' 4 is out of range: the model has 4 \(valid 0..3\)"),
], ids=["class-high", "class-negative", "class-count", "class-word", "class-float", "layer", "channel"])
def test_bad_targets(model, tiny_x, target, match):
    with pytest.raises(errors.TargetError, match=match):
        cv.explain("saliency", model, tiny_x, target=target)


def test_bad_reduce():
    with pytest.raises(errors.TargetError, match="reduce must be one of"):
        cv.NeuronTarget("conv1", 0, reduce="median")


@pytest.mark.parametrize("params,match", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"baseline": np.zeros((5, 5, 2))}, r"baseline has shape \(5, 5, 2\)"),
    ({"baseline": "grey"}, "baseline must be"),
])
def test_bad_ig_parameters(model, tiny_x, params, match):
    with pytest.raises(errors.InputError, match=match):
        cv.explain("integrated_gradients", model, tiny_x, **params)


@pytest.mark.parametrize("params,match", [({"n": 0}, "n must be >= 1"), ({"sigma": -0.1}, "sigma must be >= 0")])
def test_bad_smoothgrad_parameters(model, tiny_x, params, match):
    with pytest.raises(errors.InputError, match=match):
        cv.explain("smoothgrad", model, tiny_x, **params)


def test_unknown_method(model, tiny_x):
    with pytest.raises(errors.InputError, match=r"unknown method 'saliancy'.*'saliency'"):
        cv.explain("saliancy", model, tiny_x)


def test_not_a_model(tiny_x):
    with pytest.raises(errors.InputError, match="expected a ModelSpec or a keras.Model, got dict"):
        cv.explain("saliency", {"a": 1}, tiny_x)


def test_bad_batch_size(model, tiny_x):
    with pytest.raises(errors.InputError, match="batch_size must be >= 1"):
        cv.explain("saliency", model, tiny_x, batch_size=0)


def test_errors_are_catchable_as_builtin_and_base():
    assert issubclass(errors.InputError, ValueError) and issubclass(errors.InputError, errors.CnnVisError)
    assert issubclass(errors.TargetError, ValueError)
    assert issubclass(errors.UnsupportedLayerError, errors.CnnVisError)
    assert issubclass(errors.WeightsUnavailableError, FileNotFoundError)


def test_inputs_not_modified_on_error(model, tiny_x):
    x = tiny_x.copy()
    x[0, 0, 0, 0] = np.nan
    snapshot = x.copy()
    with pytest.raises(errors.InputError):
        cv.explain("saliency", model, x)
    np.testing.assert_array_equal(x, snapshot)
