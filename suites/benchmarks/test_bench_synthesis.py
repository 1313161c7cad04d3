"""Benchmarks: the synthesis methods beside a plain forward+backward pass (issue 19).

``extra_info["ratio"]`` = time per optimization step (or per training epoch of the
inversion network, per image) / one compiled forward+backward pass of the same model on
one image (``passes`` of them per step).  Each step of activation maximization, network
inversion (Mahendran & Vedaldi) and feature visualization (Olah et al. 2017, Fourier
parameterization and Lucid's transforms) is one compiled forward+backward pass of one image
plus the image-space prior or parameterization; its limit is about 1.  The learned inversion
(Dosovitskiy & Brox 2016) trains a decoder: its epoch costs one forward of the model per image
(features, computed once) plus the decoder's own forward+backward passes, so its ratio says
what the decoder adds.  The default run uses mini_vgg (the minis' passes take milliseconds:
their ratios are noisy) and, with --benchmark-disable, runs each case once as a smoke check;
MobileNetV2 at 96 px is ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from suites.support.images import smooth_images
from suites.support.models import big_spec, mini_spec

STEPS = 8
MODELS = [
    pytest.param("mini_vgg", id="mini_vgg"),
    pytest.param(("mobilenet_v2", 96), id="mobilenet_v2@96", marks=pytest.mark.slow),
]


def _spec(model):
    return mini_spec(model) if isinstance(model, str) else big_spec(*model)


def _run(spec, method, x):
    layer = spec.model.layers[len(spec.model.layers) // 3].name
    if method == "activation_maximization":
        return lambda: cv.activation_maximization(spec, cv.ClassTarget(1), steps=STEPS)
    if method == "feature_visualization":
        return lambda: cv.feature_visualization(spec, cv.ClassTarget(1), steps=STEPS)
    if method == "network_inversion":
        return lambda: cv.network_inversion(spec, x[:1], layer, steps=STEPS)
    raise AssertionError(method)


@pytest.mark.benchmark(group="synthesis")
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("method", ["activation_maximization", "network_inversion", "feature_visualization"])
def test_synthesis_step_cost(bench_ratio, model, method):
    spec = _spec(model)
    size = spec.input_shape[0]
    x = spec.preprocess(smooth_images(1, size))
    _, fwd_bwd = reference_passes(spec)
    fn = _run(spec, method, x)

    def plain():
        for _ in range(STEPS):
            out = fwd_bwd(x).numpy()
        return out

    result = bench_ratio(fn, plain, rounds=3, method=method, model=str(model), passes=STEPS,
                         goal="about 1 per step (one forward+backward pass of one image)")
    image = result.reconstruction if method == "network_inversion" else result.image
    assert image is not None and np.isfinite(image).all() and image.shape[-3:] == tuple(spec.input_shape)


@pytest.mark.benchmark(group="synthesis")
@pytest.mark.parametrize("model", MODELS)
def test_inversion_network_epoch_cost(bench_ratio, model):
    spec = _spec(model)
    size = spec.input_shape[0]
    x = spec.preprocess(smooth_images(16, size))
    layer = spec.model.layers[len(spec.model.layers) // 3].name
    _, fwd_bwd = reference_passes(spec)

    def plain():
        for i in range(len(x)):
            out = fwd_bwd(x[i:i + 1]).numpy()
        return out

    net = bench_ratio(lambda: cv.train_inversion_network(spec, layer, x, epochs=1, width=16), plain, rounds=3,
                      method="inversion_network", model=str(model), passes=len(x),
                      goal="one epoch over 16 images, per forward+backward pass of one image")
    rec = net.invert(x[:2])
    assert rec.shape == x[:2].shape and np.isfinite(rec).all()
