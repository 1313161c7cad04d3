"""Cost of the CAM family and VisualBackProp as ratios to plain passes of the same model.

Goals (issue 3): CAM, Grad-CAM, Grad-CAM++ and Layer-CAM within 0.5x of a forward+backward
pass (issue 19: HiResCAM, XGrad-CAM and EigenCAM within 0.6x); VisualBackProp within 1.2x of one forward pass; Score-CAM within 1.1x of the plain
forward passes it needs (one pass for the maps, then images x channels / internal batch).
The goals are measured on ResNet50 at 224 px, batch 8 (``-m slow --benchmark-enable``);
the default run times a small CNN once as a correctness check.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.evaluation.cost import reference_passes
from suites.support.images import smooth_images
from suites.support.models import big_spec

pytestmark = pytest.mark.benchmark(group="cam")

SCORE_CAM_CHANNELS = 32  # channels per image timed for Score-CAM (its cost is linear in them)
SCORE_CAM_BATCH = 32  # masked inputs per forward pass

_CACHE: dict = {}


def small_cnn() -> keras.Model:
    """A small residual CNN with a GAP + Dense head (32 px), random seeded weights."""
    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inp)
    y = L.Conv2D(16, 3, padding="same", activation="relu")(x)
    y = L.Conv2D(16, 3, padding="same")(y)
    x = L.ReLU()(L.Add()([x, y]))
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu")(x)
    out = L.Dense(10)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="small_cnn")


def setup(case: str):
    """(spec, x, (forward, forward_backward)) for a case, built once per session."""
    if case not in _CACHE:
        if case == "small":
            spec = cv.as_spec(small_cnn())
            x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype(np.float32)
        else:
            name, size = case.split("@")
            spec = big_spec(name, int(size))
            x = spec.preprocess(smooth_images(8, int(size)))
        _CACHE[case] = (spec, x, reference_passes(spec))
    return _CACHE[case]


CASES = [
    pytest.param("small", id="small_cnn@32-b8"),
    pytest.param("resnet50@224", id="resnet50@224-b8", marks=pytest.mark.slow),
]


#: goal per method: time / one forward+backward pass
GRADIENT_CAM_GOALS = {"cam": 0.5, "grad_cam": 0.5, "grad_cam_plus_plus": 0.5, "layer_cam": 0.5,
                      "hires_cam": 0.6, "xgrad_cam": 0.6, "eigen_cam": 0.6}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("method", list(GRADIENT_CAM_GOALS))
def test_bench_gradient_cams(method, case, bench_ratio):
    spec, x, (_, forward_backward) = setup(case)
    explainer = cv.get_method(method)(spec)
    exp = bench_ratio(lambda: explainer.explain(x), lambda: forward_backward(x),
                      reference="forward+backward", goal=GRADIENT_CAM_GOALS[method], method=method, case=case)
    assert exp.heatmap.shape == x.shape[:3] and np.isfinite(exp.heatmap).all()


@pytest.mark.parametrize("case", CASES)
def test_bench_visual_backprop(case, bench_ratio):
    spec, x, (forward, _) = setup(case)
    explainer = cv.get_method("visual_backprop")(spec)
    exp = bench_ratio(lambda: explainer.explain(x), lambda: forward(x),
                      reference="forward", goal=1.2, method="visual_backprop", case=case)
    assert exp.heatmap.shape == x.shape[:3] and np.isfinite(exp.heatmap).all()


@pytest.mark.parametrize("case", CASES)
def test_bench_score_cam(case, bench_ratio):
    spec, x, (forward, _) = setup(case)
    explainer = cv.get_method("score_cam")(spec, max_channels=SCORE_CAM_CHANNELS,
                                           internal_batch_size=SCORE_CAM_BATCH)
    per_call = max(1, SCORE_CAM_BATCH // len(x))
    calls = -(-SCORE_CAM_CHANNELS // per_call)
    masked = np.repeat(x, per_call, axis=0)  # one full batch of masked inputs

    def passes():  # the maps pass, then the masked-input passes
        out = forward(x)
        for _ in range(calls):
            out = forward(masked)
        return out

    exp = bench_ratio(lambda: explainer.explain(x, progress=False), passes, rounds=3,
                      reference=f"forward passes (1 + {calls} x {len(masked)} inputs)", goal=1.1,
                      method="score_cam", case=case, channels=SCORE_CAM_CHANNELS)
    assert exp.heatmap.shape == x.shape[:3] and np.isfinite(exp.heatmap).all()
    assert (exp.meta["channels"] <= SCORE_CAM_CHANNELS).all()
