"""One compiled trace per method serves "top" and explicit targets.

The compiled functions take the per-image indices as an input and pick the top index
inside the graph where an index is negative, so explaining the same batch with
``target="top"`` and then with explicit indices must not trace again (a retrace costs
1-3 s per method on a mini model and about 5 s on MobileNetV2 at 224 px), and both calls
must give the same maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.graph.flat import FlatGraph
from cnnvis_eval.graph.queries import last_conv_layer
from cnnvis_eval.targets import ClassTarget, NeuronTarget, bind

from ..support.images import smooth_images

# one method per compiled-function family whose body picks the index: plain/overridden
# gradients, the relevance engine, VisualBackProp, the CAM maps, Ablation-CAM's head,
# FullGrad (the path and sampling methods resolve "top" by the shared forward pass first)
METHODS = {
    "saliency": {},
    "guided_backprop": {},
    "deep_taylor": {},
    "visual_backprop": {},
    "grad_cam": {},
    "ablation_cam": {},
    "full_grad": {},
}

# VisualBackProp averages the forward feature maps: its map does not depend on the class
CLASS_BLIND = {"visual_backprop"}


@pytest.fixture(scope="module")
def spec():
    # a fresh load: no function of it has been traced by another test
    return cv.load_model("mini_mobilenet")


@pytest.fixture(scope="module")
def x(spec):
    size = spec.input_shape[1]
    return smooth_images(2, size, seed=3).astype(np.float32)


@pytest.fixture
def traces(monkeypatch):
    """Counts Python executions of the graph's layer calls: they run only while a
    tf.function traces (every method's compiled body calls its layers through them)."""
    calls = []

    def counting(original):
        def counted(self, *args, **kwargs):
            calls.append(original.__name__)
            return original(self, *args, **kwargs)
        return counted

    for name in ("run", "call_node", "call_layer"):
        monkeypatch.setattr(FlatGraph, name, counting(getattr(FlatGraph, name)))
    return calls


@pytest.mark.parametrize("name", list(METHODS))
def test_explicit_target_reuses_the_top_trace(spec, x, traces, name):
    explainer = cv.get_method(name)(spec, **METHODS[name])
    top = explainer.explain(x, "top")
    assert traces, "the first call should trace (the counter is wired to the graph runs)"
    del traces[:]
    fixed = explainer.explain(x, ClassTarget(top.indices))
    assert not traces, f"{name}: explicit indices traced again ({len(traces)} graph runs in Python)"
    np.testing.assert_array_equal(fixed.indices, top.indices)
    np.testing.assert_allclose(fixed.heatmap, top.heatmap, rtol=1e-6, atol=1e-7)
    # and another class than the top one gives another map through the same trace
    other = (top.indices + 1) % spec.num_classes
    moved = explainer.explain(x, ClassTarget(other))
    assert not traces
    np.testing.assert_array_equal(moved.indices, other)
    if name in CLASS_BLIND:
        np.testing.assert_array_equal(moved.heatmap, top.heatmap)
    else:
        assert not np.allclose(moved.heatmap, top.heatmap)


def test_select_mixes_top_and_explicit_per_image(spec):
    graph = spec.graph
    bound = bind(ClassTarget("top"), graph, 3)
    assert np.all(bound.indices == -1)
    logits = tf.constant([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    scores, idx = bound.select(logits, tf.constant([-1, 2, -1], tf.int32))
    np.testing.assert_array_equal(idx.numpy(), [1, 2, 2])
    np.testing.assert_array_equal(scores.numpy(), [3.0, 1.0, 2.0])


def test_neuron_top_ranks_by_mean_whatever_the_reduction(spec):
    layer = last_conv_layer(spec.graph)
    bound = bind(NeuronTarget(layer, "top", "max"), spec.graph, 1)
    # channel 0: mean 1, max 1; channel 1: mean 0.5, max 2 -> top by mean is 0, scored by max
    value = tf.constant([[[[1.0, 2.0]], [[1.0, -1.0]]]])
    scores, idx = bound.select(value, tf.constant([-1], tf.int32))
    assert idx.numpy().tolist() == [0]
    assert scores.numpy().tolist() == [1.0]
    scores, idx = bound.select(value, tf.constant([1], tf.int32))
    assert idx.numpy().tolist() == [1] and scores.numpy().tolist() == [2.0]


def test_deconvnet_instances_of_one_model_share_the_synced_clones():
    """The compiled functions are cached per model and close over DeconvNet's linear clones
    of fused Conv+ReLU layers, so the clones are per model too: after a weight change, any
    instance's ``sync_weights()`` refreshes what the shared trace reads (a second instance
    with its own clones used to sync copies no trace read)."""
    import keras

    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, name="c1", activation="relu")(inp)
    h = keras.layers.Conv2D(4, 3, name="c2", activation="relu")(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 1, w.shape).astype(w.dtype) for w in model.get_weights()])
    spec = cv.models.spec.as_spec(model)
    xs = rng.uniform(0, 1, (2, 8, 8, 2)).astype(np.float32)
    first = cv.get_method("deconvnet")(spec)
    before = first.explain(xs, ClassTarget([0, 1]), progress=False).heatmap
    c2 = model.get_layer("c2")
    c2.kernel.assign(rng.normal(0, 1, c2.kernel.shape).astype(np.float32))
    second = cv.get_method("deconvnet")(spec)
    second.sync_weights()
    after = second.explain(xs, ClassTarget([0, 1]), progress=False).heatmap
    fresh = cv.get_method("deconvnet")(cv.models.spec.as_spec(keras.models.clone_model(model)))
    fresh.spec.model.set_weights(model.get_weights())
    fresh.sync_weights()
    want = fresh.explain(xs, ClassTarget([0, 1]), progress=False).heatmap
    assert not np.allclose(want, before)  # the change moves the map: the test can fail
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-6)


def test_ablation_cam_scores_the_given_class_after_a_top_call(spec, x):
    """Ablation-CAM's ablated passes score the target's index.  Before one trace served
    both, its tail function (keyed without "top") kept the first call's "top" selection,
    so explicit targets after a "top" call scored each ablated input's own argmax class:
    compare with an explainer on a fresh function cache that never saw "top"."""
    import dataclasses

    used = cv.get_method("ablation_cam")(spec)
    top = used.explain(x, "top", progress=False)
    other = ClassTarget((top.indices + 1) % spec.num_classes)
    got = used.explain(x, other, progress=False)
    fresh = cv.get_method("ablation_cam")(dataclasses.replace(spec)).explain(x, other, progress=False)
    np.testing.assert_allclose(got.heatmap, fresh.heatmap, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.meta["weights"], fresh.meta["weights"], rtol=1e-5, atol=1e-6)
