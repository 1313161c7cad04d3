"""Working memory of one explanation at native resolution (issue 20: within 1.5x that of one
forward+backward pass of the batch, measured at 8 images of 224 px).

Measured with TensorFlow's CPU allocator statistics and tracemalloc
(:func:`suites.support.memory.measure`; margins for the up to 20% the peak moves with the
order of independent ops) on a small convolutional
network at 224 x 224: its activations (16 channels at full resolution) dominate, as those of
MobileNetV2 and ResNet50 do.  Each multi-sample method is measured with its default call size
(:func:`cnnvis_eval.params.call_inputs`: a batch of 8 images at 224 px per call) and with the
32 inputs per call it used before, which held 2.35-4x (~1.8x for the calls that only run the
model forward: Score-CAM, the perturbation methods): the test fails if the default stops bounding
the call; the maps of both settings agree (the call size only regroups sums).  DeepLIFT,
which holds two inputs' activations per image, is measured with its default batch against 8
images at once.  Every method on MobileNetV2 and ResNet50:
``suites/benchmarks/test_bench_memory.py`` (slow).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import InputError
from cnnvis_eval.evaluation.cost import reference_passes
from cnnvis_eval.params import CALL_PIXELS, MAX_CALL_INPUTS, call_inputs, internal_batch, samples_per_call
from suites.support.images import smooth_images
from suites.support.memory import measure

SIZE, BATCH = 224, 8
#: bound here: the goal's 1.5 plus the toy network's input-sized tensors (noise, noisy copies,
#: the input gradient and its sums weigh ~30% of its pass, a few % of MobileNetV2's) and the
#: peak's spread; 32 inputs per call gave 4x.  The goal itself: test_bench_memory (slow).
BOUND = 2.0


@pytest.fixture(scope="module")
def native():
    """A 224 px CNN (two convs of 16 channels at full resolution, max pooling by 4, a conv of
    32 at 56 px for the CAM methods, GAP, dense 5; ReLUs; fixed seed), 8 smooth images, and
    the working memory (MB) of its compiled forward+backward pass."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv0")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(h)
    h = keras.layers.MaxPooling2D(4, name="pool")(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(h)
    out = keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    spec = cv.as_spec(keras.Model(inp, out, name="native224"))
    x = smooth_images(BATCH, SIZE).astype(np.float32) / 255.0
    _, fb = reference_passes(spec)
    ref = measure(lambda: fb(x).numpy())["call_mb"]
    return spec, x, ref


def test_call_inputs_follow_the_pixel_budget():
    """8 images' pixels at 224 px per call, 1 to 32 inputs; a given internal_batch_size wins;
    every image of a batch gets at least one sample per call."""
    assert CALL_PIXELS == BATCH * SIZE * SIZE
    assert call_inputs(None, (224, 224)) == 8
    assert call_inputs(None, (64, 64)) == MAX_CALL_INPUTS == 32  # the minis: as before
    assert call_inputs(None, (299, 299)) == 4 and call_inputs(None, (2000, 2000)) == 1
    assert call_inputs(5, (224, 224)) == 5
    assert call_inputs(None, (224, 224), forward_only=True) == 16  # forward only: twice the pixels
    assert call_inputs(None, (64, 64), forward_only=True) == 32
    assert samples_per_call(None, np.zeros((8, 224, 224, 3))) == 1
    assert samples_per_call(None, np.zeros((2, 224, 224, 3))) == 4
    assert samples_per_call(None, np.zeros((12, 64, 64, 3))) == 2
    assert samples_per_call(None, np.zeros((40, 224, 224, 3))) == 1  # a large batch: one sample per call
    assert internal_batch(None) is None and internal_batch(3) == 3
    with pytest.raises(InputError, match="internal_batch_size must be >= 1"):
        internal_batch(0)
    with pytest.raises(InputError, match="internal_batch_size"):
        cv.get_method("smoothgrad")(cv.load_model("mini_vgg"), internal_batch_size=2.5)


#: (method, parameters, the call-size parameter, how much more 32 inputs per call hold at
#: least): backward passes take 8 inputs per call at 224 px (32 held 2.35-4x as much: the
#: peaks spread), forward-only ones 16 (32 held ~1.8x)
MULTI_SAMPLE = [
    ("integrated_gradients", {"steps": 8}, "internal_batch_size", 1.8),
    ("smoothgrad", {"n": 8}, "internal_batch_size", 1.8),
    ("gradient_shap", {"n": 8}, "internal_batch_size", 1.8),
    ("blur_ig", {"steps": 8}, "internal_batch_size", 1.8),
    ("score_cam", {}, "internal_batch_size", 1.3),
    ("rise", {"n_masks": 64}, "batch_size", 1.3),
]


@pytest.mark.parametrize("method,params,knob,wider", MULTI_SAMPLE, ids=[m[0] for m in MULTI_SAMPLE])
def test_multi_sample_methods_hold_one_batch_per_call(native, method, params, knob, wider):
    spec, x, ref = native
    auto = cv.get_method(method)(spec, **params)
    wide = cv.get_method(method)(spec, **{knob: 32}, **params)
    mem = {name: measure(lambda e=e: e.explain(x, progress=False))["call_mb"]
           for name, e in (("auto", auto), ("wide", wide))}
    assert mem["auto"] <= BOUND * ref, f"{method}: {mem['auto']:.0f} MB vs forward+backward {ref:.0f} MB"
    assert mem["wide"] >= wider * mem["auto"], mem  # the bound is the default's
    a, w = auto.explain(x, progress=False).heatmap, wide.explain(x, progress=False).heatmap
    np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()))


def test_deeplift_splits_large_batches(native):
    """DeepLIFT holds the input's and the reference's activations (``inputs_per_image = 2``):
    its default batch at 224 px is 4 images (the minis keep 16); 8 at once held 1.5-1.8x as
    much; the maps are those of one batch of 8.  (Its ratio to the forward+backward pass
    depends on the network: ~2.3 inputs per image here, ~1.9 on MobileNetV2, where 4 at a time
    take 0.86x: the benchmark.)"""
    spec, x, _ = native
    exp = cv.get_method("deeplift")(spec)
    assert exp.batch_images((SIZE, SIZE)) == 4 and exp.batch_images((64, 64)) == exp.default_batch_size == 16
    auto = measure(lambda: exp.explain(x, progress=False))["call_mb"]
    whole = measure(lambda: exp.explain(x, batch_size=BATCH, progress=False))["call_mb"]
    assert whole >= 1.3 * auto, (auto, whole)
    split, one = exp.explain(x, progress=False), exp.explain(x, batch_size=BATCH, progress=False)
    assert split.meta["batch_size"] == 4 and one.meta["batch_size"] == BATCH
    np.testing.assert_allclose(split.heatmap, one.heatmap, rtol=1e-4,
                               atol=1e-6 * float(np.abs(one.heatmap).max()))


def test_rise_sums_its_chunks_as_they_come(native):
    """RISE adds each chunk's score-weighted masks into one (targets, H, W) sum instead of
    keeping a map per chunk until the end (which took 241 MB of host memory for MobileNetV2's
    4000 masks of one image): its host memory does not grow with the number of masks."""
    spec, x, _ = native
    host = {n: measure(lambda n=n: cv.get_method("rise")(spec, n_masks=n, seed=1).explain(
        x[:1], progress=False))["host_mb"] for n in (64, 512)}
    assert host[512] - host[64] < 3.0, host  # a map per chunk: 32 chunks x 0.6 MB more


def _chain(inp):
    """Conv -> BatchNorm -> ReLU6, six times (8 channels at 224 px)."""
    h = inp
    for i in range(6):
        h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"conv{i}")(h)
        h = keras.layers.BatchNormalization(name=f"bn{i}")(h)
        h = keras.layers.ReLU(6.0, name=f"relu{i}")(h)
    return h


def _bottleneck(inp):
    """A stem and six bottleneck blocks at 224 px (ResNet50's shape: a stream of 16 channels;
    1x1 conv to 4, 3x3 conv, 1x1 conv back to 16, each with BN; ReLUs; Add; ReLU)."""
    h = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    h = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(h))
    for i in range(6):
        b = keras.layers.Conv2D(4, 1, use_bias=False, name=f"b{i}_conv1")(h)
        b = keras.layers.ReLU(name=f"b{i}_relu1")(keras.layers.BatchNormalization(name=f"b{i}_bn1")(b))
        b = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name=f"b{i}_conv2")(b)
        b = keras.layers.ReLU(name=f"b{i}_relu2")(keras.layers.BatchNormalization(name=f"b{i}_bn2")(b))
        b = keras.layers.BatchNormalization(name=f"b{i}_bn3")(
            keras.layers.Conv2D(16, 1, use_bias=False, name=f"b{i}_conv3")(b))
        h = keras.layers.ReLU(name=f"b{i}_out")(keras.layers.Add(name=f"b{i}_add")([h, b]))
    return h


def _memory(body, monkeypatch):
    """(forward+backward MB, {(method, recompute): MB}) of LRP-epsilon and Deep Taylor on
    ``body`` at 224 px, with the relevance engine's recomputation (``recompute=True``) and
    without it (``ForwardValues._rebuilt`` patched to give up: every recorded value is kept), in one
    process, so that both see the same executor and load."""
    from cnnvis_eval.methods.relevance import recorded

    keras.utils.set_random_seed(5)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    out = keras.layers.Dense(5, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(body(inp)))
    spec = cv.as_spec(keras.Model(inp, out, name=f"{body.__name__[1:]}224"))
    x = smooth_images(BATCH, SIZE).astype(np.float32) / 255.0
    _, fb = reference_passes(spec)
    fb(x).numpy()
    ref = measure(lambda: fb(x).numpy())["call_mb"]
    mem, maps = {}, {}
    for recompute in (True, False):
        with monkeypatch.context() as patch:
            if not recompute:
                patch.setattr(recorded.ForwardValues, "_rebuilt", lambda self, key: None)
            for method in ("lrp_epsilon", "deep_taylor"):
                exp = cv.get_method(method)(spec)  # a new instance: traced under the patch
                maps[method, recompute] = exp.explain(x, progress=False).attribution
                mem[method, recompute] = min(
                    measure(lambda e=exp: e.explain(x, progress=False), warm=False)["call_mb"] for _ in range(2))
    for method in ("lrp_epsilon", "deep_taylor"):  # the same values either way
        np.testing.assert_array_equal(maps[method, True], maps[method, False])
    return ref, mem


def test_lrp_epsilon_keeps_one_tensor_per_layer(monkeypatch):
    """LRP-epsilon reads each layer's recorded ``z + b`` (its denominator) and each layer's
    input; where that input is a rectifier's output it is computed again from the recorded
    ``z + b`` during the backward pass instead of being kept from the forward pass
    (``ForwardValues.layer_input``), so a Conv -> BN -> ReLU6 chain keeps one tensor per layer, as the
    forward+backward pass does (ReLU6's gradient reads its input).  Keeping both held 1.84x
    the pass here, recomputing 1.24x (MobileNetV2 at 224 px: 2.21x -> 1.36x); the maps are the
    same bit for bit."""
    ref, mem = _memory(_chain, monkeypatch)
    assert mem["lrp_epsilon", True] <= 0.8 * mem["lrp_epsilon", False], (mem, ref)
    assert mem["lrp_epsilon", True] <= 1.15 * mem["deep_taylor", True], (mem, ref)


def test_relevance_recomputes_residual_streams(monkeypatch):
    """A residual stream (each block's input: a rectified sum of the previous block's input and
    its branch's last ``z + b``, which the sum's merge reads anyway) is computed again in the
    backward pass from the stage's start instead of being kept from the forward pass, for
    every preset.  Keeping the streams held 1.67x the pass here for both presets, recomputing
    1.24-1.27x (ResNet50 at 224 px: LRP-epsilon 2.14x -> 1.31x, Deep Taylor 1.73x -> 1.24x);
    the maps are the same bit for bit."""
    ref, mem = _memory(_bottleneck, monkeypatch)
    for method in ("lrp_epsilon", "deep_taylor"):
        assert mem[method, True] <= 0.85 * mem[method, False], (mem, ref)
