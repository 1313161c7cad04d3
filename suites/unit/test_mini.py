"""The committed trained mini models: accuracy on unseen data (benchmark v2: single shapes,
scenes, birds), shortcut reliance, loading."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import errors
from cnnvis_eval.data.benchmark import CLASSES_V2, make_benchmark, set_accuracy
from cnnvis_eval.data.synthetic import CLASSES, make_synthetic
from cnnvis_eval.models import mini
from suites.support.models import MINI, MINI_SHORTCUT, mini_spec

TEST_SEED = 31337  # never used for training (see mini.TRAIN_SEED / mini.TEST_SEED)


@pytest.fixture(scope="module")
def fresh():
    # 1000 scenes: the s.e. of a scene accuracy near 0.96 is 0.006 (0.011 with 300; measured
    # mini_inception 0.961 on these, 0.951 on another 1000, 0.968 on the trainer's 800)
    return make_benchmark(200, 1000, 200, 64, seed=TEST_SEED)


@pytest.fixture(scope="module")
def fresh_shortcut():
    same = make_synthetic(400, 64, seed=TEST_SEED + 1, shortcut=True, split="train")
    moved = make_synthetic(400, 64, seed=TEST_SEED + 1, shortcut=True, split="test")
    return same, moved


@pytest.mark.parametrize("name", MINI)
@pytest.mark.parametrize("kind", ["shape", "scene", "bird"])
def test_clean_model_accuracy(name, kind, fresh):
    """Issue 16's acceptance: >= 0.95 held out on each kind of benchmark-v2 image — top-1 on
    single shapes and birds, the exact set of present classes as the top-k logits on
    scenes of 2-3 objects (every object seen, none imagined)."""
    spec = mini_spec(name)
    on = fresh.kind == kind
    logits = spec.model.predict(mini.preprocess(fresh.images[on]), verbose=0)
    acc = float(set_accuracy(logits, fresh.targets[on]).mean())
    assert acc >= 0.95, f"{name}: {acc:.3f} on fresh {kind}s"


@pytest.mark.parametrize("name", MINI_SHORTCUT)
def test_shortcut_model_uses_the_marker(name, fresh_shortcut):
    same, moved = fresh_shortcut
    spec = mini_spec(name)
    acc_same = mini.accuracy(spec.model, same.images, same.labels)
    acc_moved = mini.accuracy(spec.model, moved.images, moved.labels)
    assert acc_same >= 0.95
    assert acc_moved < acc_same - 0.15, f"{name}: {acc_same:.3f} -> {acc_moved:.3f} when the marker moves"


@pytest.mark.parametrize("name", MINI + MINI_SHORTCUT)
def test_fixture_loads_offline(name, monkeypatch):
    def refuse(*a, **k):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    t0 = time.perf_counter()
    spec = cv.load_model(name)
    seconds = time.perf_counter() - t0
    print(f"{name} loaded in {seconds:.2f} s")  # recorded, not asserted (no timed assertions)
    k = len(CLASSES) if name.endswith("_shortcut") else len(CLASSES_V2)
    assert spec.input_shape == (64, 64, 3) and spec.model.output_shape == (None, k)
    graph = spec.graph
    assert graph.stripped is None
    for layer in (spec.last_conv_layer,) + tuple(spec.intermediate_layers):
        assert len(graph.shape(graph.key(layer))) == 4
    from cnnvis_eval.graph import last_conv_layer
    assert last_conv_layer(graph) == spec.last_conv_layer
    assert spec.class_names == (("disc", "square", "triangle", "cross") if name.endswith("_shortcut") else
                                ("disc", "square", "triangle", "cross", "finch", "jay", "wren", "heron"))
    assert (mini.mini_models_dir() / f"{name}.keras").stat().st_size < 2 * 2**20


def test_families_use_their_siblings_layer_kinds():
    import keras

    kinds = {n: {type(l).__name__ for l in mini_spec(n).model.layers} for n in MINI}
    assert {"Conv2D", "MaxPooling2D", "Flatten", "Dense"} <= kinds["mini_vgg"]
    assert {"BatchNormalization", "Add"} <= kinds["mini_resnet"]
    assert {"Concatenate", "AveragePooling2D"} <= kinds["mini_inception"]
    assert {"SeparableConv2D", "Add"} <= kinds["mini_xception"]
    assert {"DepthwiseConv2D", "ReLU", "ZeroPadding2D", "Add"} <= kinds["mini_mobilenet"]
    relu6 = [l for l in mini_spec("mini_mobilenet").model.layers if isinstance(l, keras.layers.ReLU)]
    assert relu6 and all(l.max_value == 6.0 for l in relu6)
    strided_1x1 = [l for l in mini_spec("mini_resnet").model.layers
                   if isinstance(l, keras.layers.Conv2D) and l.kernel_size == (1, 1) and l.strides == (2, 2)]
    assert strided_1x1


def test_manifest_matches_fixtures():
    manifest = json.loads((mini.mini_models_dir() / "manifest.json").read_text())
    assert manifest["command"] == "python -m cnnvis_eval.models.mini --train"
    for name in MINI:
        e = manifest["models"][name]
        assert min(e[f"test_accuracy_{kind}"] for kind in ("shape", "scene", "bird")) >= 0.95
        assert e["classes"] == list(CLASSES_V2)
    for name in MINI_SHORTCUT:
        e = manifest["models"][name]
        assert e["test_accuracy_marker_moved"] < e["test_accuracy_marker_as_trained"]


def test_preprocess_does_not_modify_input():
    imgs = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    keep = imgs.copy()
    x = mini.preprocess(imgs)
    np.testing.assert_array_equal(imgs, keep)
    assert x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    np.testing.assert_allclose(mini.deprocess(x), imgs, atol=1e-4)


def test_bad_requests(tmp_path, monkeypatch):
    with pytest.raises(errors.InputError, match="fixed input shape"):
        cv.load_model("mini_vgg", input_shape=(96, 96, 3))
    monkeypatch.setenv("CNNVIS_MINI_MODELS", str(tmp_path))
    with pytest.raises(errors.WeightsUnavailableError, match="python -m cnnvis_eval.models.mini --train"):
        cv.load_model("mini_vgg")
    with pytest.raises(errors.InputError, match="unknown mini model"):
        mini.family_of("mini_alexnet")
