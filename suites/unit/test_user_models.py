"""Models users bring: subclassed, multi-output, mixed precision, a real trained network
(MTCNN's ONet), and finite inputs whose maps would not be finite (issue 14, items 6, 9, 11).

Expected values come from functional / float32 twins of the same layers and weights (whose
paths the reference tests check against NumPy), never from the code path under test.
"""

from __future__ import annotations

import re
import warnings

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval import errors
from cnnvis_eval.targets import bind
from suites.support import tiny
from suites.support.models import astronaut_face, mtcnn_onet

# small sample counts: these tests check that a method runs and stays finite, not its quality
FAST = {"lime": {"num_samples": 24}, "kernel_shap": {"num_samples": 24}, "rise": {"n_masks": 16, "grid_size": 4},
        "smoothgrad": {"n": 2}, "vargrad": {"n": 2}, "integrated_gradients": {"steps": 4},
        "occlusion": {"window": 4, "stride": 4}, "guided_ig": {"steps": 4}, "blur_ig": {"steps": 4},
        "xrai": {"steps": 2}, "square_grad": {"n": 2}, "gradient_shap": {"n": 2},
        "sobol": {"grid_size": 4, "nb_design": 4}, "hsic": {"grid_size": 4, "nb_design": 32}}


def _twin_weights(source_layers, dest_layers):
    for a, b in zip(source_layers, dest_layers):
        b.set_weights(a.get_weights())


# ---------------------------------------------------------------------- subclassed models


class _Net(keras.Model):
    """Conv(relu) -> Conv -> keras.ops.relu -> GAP -> Dense: traceable (layers and keras.ops)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")
        self.c2 = keras.layers.Conv2D(5, 3, padding="same", name="c2")
        self.gap = keras.layers.GlobalAveragePooling2D(name="gap")
        self.head = keras.layers.Dense(3, name="head")

    def call(self, x):
        return self.head(self.gap(keras.ops.relu(self.c2(self.c1(x)))))


class _TfNet(_Net):
    """The same layers, but call() uses tf.nn.relu: a KerasTensor cannot go through it."""

    def call(self, x):
        return self.head(self.gap(tf.nn.relu(self.c2(self.c1(x)))))


class _TwoHeads(_Net):
    """A shared trunk with two heads: box regression (4) and a softmax classifier (3)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.box = keras.layers.Dense(4, name="box")
        self.cls = keras.layers.Dense(3, activation="softmax", name="cls")

    def call(self, x):
        h = self.gap(keras.ops.relu(self.c2(self.c1(x))))
        return self.box(h), self.cls(h)


def _functional_twin(net, softmax_head=None):
    """A functional model with copies of ``net``'s layers and weights (the reference path)."""
    inp = keras.Input((8, 8, 2))
    c1 = keras.layers.Conv2D(4, 3, padding="same", activation="relu")
    c2 = keras.layers.Conv2D(5, 3, padding="same")
    head = softmax_head or keras.layers.Dense(3)
    model = keras.Model(inp, head(keras.layers.GlobalAveragePooling2D()(keras.ops.relu(c2(c1(inp))))))
    _twin_weights([net.c1, net.c2, net.cls if softmax_head else net.head], [c1, c2, head])
    return model


def _x(n=2, size=8, channels=2, seed=3):
    return np.random.default_rng(seed).uniform(0, 1, (n, size, size, channels)).astype(np.float32)


@pytest.fixture(scope="module")
def net():
    model = _Net(name="subnet")
    model(_x(1))  # called once on data: built, records its input shape
    return model


def test_subclassed_model_is_traced_and_explained(net):
    twin = _functional_twin(net)
    x = _x()
    before = tiny.weights_snapshot(net)
    out_before = np.asarray(net(x))
    for method in ("saliency", "grad_cam", "guided_backprop", "lrp_epsilon"):
        got = cv.explain(method, net, x, target=cv.ClassTarget(1))
        want = cv.explain(method, twin, x, target=cv.ClassTarget(1))
        np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-5, atol=1e-6, err_msg=method)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, err_msg=method)
    tiny.assert_model_unchanged(net, before, x, out_before)
    graph = cv.as_spec(net).graph
    assert graph.traced and not graph.opaque
    assert [graph.node(n).type_name for n in graph.layer_names] == ["Conv2D", "Conv2D", "Relu",
                                                                     "GlobalAveragePooling2D", "Dense"]


def test_traced_subclassed_model_can_be_cloned_for_randomization(net):
    from cnnvis_eval.models.clone import clone_with_weights

    clone = clone_with_weights(net)
    x = _x()
    assert clone.model is not net and not clone.graph.opaque
    np.testing.assert_allclose(clone.graph.run(x)[0], np.asarray(net(x)), rtol=1e-6, atol=1e-6)
    clone.model.get_layer("head").kernel.assign(np.zeros((5, 3), np.float32))
    assert np.abs(np.asarray(net.head.kernel)).max() > 0  # the user's layers are not shared


def test_unbuilt_subclassed_model_takes_the_shape_of_x_or_says_what_is_missing():
    model = _Net(name="unbuilt")
    with pytest.raises(errors.InputError, match=r"subclassed model 'unbuilt' has no known input shape: "
                                                r"pass input_shape=\(H, W, C\)"):
        cv.as_spec(model)
    assert cv.explain("saliency", model, _x(1)).heatmap.shape == (1, 8, 8)  # traced with x.shape[1:]
    assert cv.as_spec(model, input_shape=(8, 8, 2)).input_shape == (8, 8, 2)
    with pytest.raises(errors.InputError, match="input_shape for model 'unbuilt' must be"):
        cv.as_spec(model, input_shape=(8, 0, 2))


def test_untraceable_subclassed_model_gradients_work_layer_methods_say_why():
    model = _TfNet(name="tfnet")
    x = _x()
    model(x[:1])
    twin = _functional_twin(model)
    graph = cv.as_spec(model).graph
    assert graph.opaque and "KerasTensor cannot be used as input to a TensorFlow function" in graph.opaque_reason
    np.testing.assert_allclose(cv.explain("saliency", model, x).heatmap, cv.explain("saliency", twin, x).heatmap,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(errors.UnsupportedLayerError, match=r"'tfnet' is a subclassed model that cannot be traced "
                                                           r"into layers: its call\(\) fails on a symbolic"):
        cv.explain("lrp_epsilon", model, x)
    for method in ("grad_cam", "guided_backprop"):
        with pytest.raises(errors.UnsupportedLayerError, match="'tfnet' is a subclassed model"):
            cv.explain(method, model, x)


# ---------------------------------------------------------------------- several outputs


@pytest.fixture(scope="module")
def two_heads():
    model = _TwoHeads(name="two_heads")
    with warnings.catch_warnings():  # Keras: "build() was called ... has unbuilt state" (it is built)
        warnings.simplefilter("ignore", UserWarning)
        model(_x(1))
    return model


def test_multi_output_model_needs_a_choice(two_heads):
    with pytest.raises(errors.InputError, match=r"'two_heads' has 2 outputs \(0: 'box', 1: 'cls'\); choose "
                                                r"the one to explain with output="):
        cv.explain("saliency", two_heads, _x())
    with pytest.raises(errors.InputError, match=r"output=2 is out of range: model 'two_heads' has 2 output"):
        cv.as_spec(two_heads, output=2)
    with pytest.raises(errors.InputError, match=r"has no output 'bbox'; its outputs are 0: 'box', 1: 'cls'"):
        cv.as_spec(two_heads, output="bbox")


def test_chosen_softmax_output_is_explained_on_its_logits(two_heads):
    twin = _functional_twin(two_heads, softmax_head=keras.layers.Dense(3, activation="softmax"))
    x = _x()
    got = cv.explain("grad_cam", two_heads, x, output="cls")
    want = cv.explain("grad_cam", twin, x)
    np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6)
    by_index = cv.as_spec(two_heads, output=1).graph
    by_name = cv.as_spec(two_heads, output="cls").graph
    assert by_index.output_index == by_name.output_index == 1
    assert by_index.output_names == by_name.output_names == ["box", "cls"]
    assert by_index.stripped.startswith("cls") and "box" not in by_index.layer_names
    box = cv.explain("saliency", two_heads, x, output="box", target=cv.ClassTarget(3))
    assert box.indices.tolist() == [3, 3]  # the 4-wide box head, not the classifier


@keras.saving.register_keras_serializable("cnnvis_test_user_models")
class _SavedHeads(_TwoHeads):
    """_TwoHeads, registered so that a .keras file of it loads in safe mode."""


def test_saved_subclassed_multi_output_file_loads_with_a_chosen_output(tmp_path):
    from cnnvis_eval.models.files import load_model_file

    model = _SavedHeads(name="saved_heads")
    x = _x()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model(x[:1])
    path = tmp_path / "heads.keras"
    model.save(path)
    with pytest.raises(errors.InputError, match=r"model file '.*heads.keras': model 'saved_heads' has 2 outputs "
                                                r"\(0: 'box', 1: 'cls'\)"):
        load_model_file(path)
    spec = load_model_file(path, output="cls")
    assert spec.name == "heads" and spec.input_shape == (8, 8, 2) and spec.graph.traced
    np.testing.assert_allclose(spec.graph.run(x)[0], cv.as_spec(model, output=1).graph.run(x)[0], rtol=1e-6)


# ---------------------------------------------------------------------- mixed precision


def _small_cnn(policy: str) -> keras.Model:
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        inp = keras.Input((8, 8, 2))
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
        h = keras.layers.Conv2D(5, 3, padding="same", name="c2")(h)
        h = keras.layers.ReLU(name="r2")(h)
        h = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
        out = keras.layers.Activation("softmax", dtype="float32", name="prob")(h)
        return keras.Model(inp, out, name=f"small_{policy}")
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.fixture(scope="module")
def mixed_pair():
    mixed, plain = _small_cnn("mixed_float16"), _small_cnn("float32")
    assert mixed.get_layer("c1").compute_dtype == "float16"
    _twin_weights(mixed.layers, plain.layers)
    return mixed, plain


#: one method of each family that crashed with a raw TypeError on mixed_float16 models, plus a
#: rule override wrapping the original layer (guided backprop); every method runs under -m slow
MIXED_FAST = ("grad_cam", "deep_taylor", "lrp_epsilon", "guided_backprop")


@pytest.mark.parametrize("method", [m if m in MIXED_FAST else pytest.param(m, marks=pytest.mark.slow)
                                    for m in cv.list_methods()])
def test_mixed_float16_model_is_explained_in_float32(mixed_pair, method):
    mixed, plain = mixed_pair
    params = dict(FAST.get(method, {}), **({"low": 0.0, "high": 1.0} if method in ("deep_taylor_bounded", "lrp_epsilon_gamma_box") else {}))
    x = _x()
    got = cv.explain(method, mixed, x, **params)
    want = cv.explain(method, plain, x, **params)
    assert got.heatmap.dtype == np.float32 and np.isfinite(got.heatmap).all()
    # computed in float32 throughout: the float32 twin's map, not a float16 approximation
    np.testing.assert_allclose(got.heatmap, want.heatmap, rtol=1e-4, atol=1e-6 * np.abs(want.heatmap).max())


def test_float16_weights_are_refused_by_name():
    model = _small_cnn("float16")
    with pytest.raises(errors.UnsupportedLayerError, match=r"layer 'c1' \(Conv2D\) of model 'small_float16' "
                                                           r"keeps its weights in float16"):
        cv.explain("saliency", model, _x())


# ---------------------------------------------------------------------- non-finite maps


@pytest.mark.parametrize("method", ["deep_taylor", pytest.param("grad_cam", marks=pytest.mark.slow)])
def test_non_finite_map_of_finite_input_names_method_and_image(method):
    model = tiny.tiny_cnn(dtype="float32")
    x = tiny.tiny_input(2, dtype=np.float32)
    x[1] *= np.float32(3e38) / np.abs(x[1]).max()
    assert np.isfinite(x).all()
    # whether the model's own (compiled) output overflows for image 1 depends on the CPU's
    # kernels (inf on some machines, a finite logit on others): the message says so exactly then
    explainer = cv.get_method(method)(model)
    own, _ = explainer.forward(x, bind(cv.ClassTarget("top"), explainer.graph, len(x)))
    why = r"; the model's own output for it is (inf|nan)" if not np.isfinite(own[1]) else "$"
    try:
        exp = explainer.explain(x)
    except errors.NonFiniteError as err:
        assert re.match(rf"^{method}: the heatmap of image 1 has \d+ NaN or inf values although the input "
                        r"is finite \(model 'tiny'\)" + why, str(err)), str(err)
    else:  # this CPU's kernels kept the map finite: then it is returned, never a silent NaN
        assert np.isfinite(exp.heatmap).all()
    ok = cv.explain(method, model, x[:1])  # the finite image alone is fine
    assert np.isfinite(ok.heatmap).all()


# ---------------------------------------------------------------------- MTCNN's ONet

#: methods that may refuse ONet, and the error they must give then
PRELU = (errors.UnsupportedLayerError, r"layer 'prelu\d'.*PReLU|PReLU.*'prelu\d'")
ONET_REFUSALS = {
    "cam": (errors.UnsupportedArchitectureError, r"cam needs a classifier head of global average pooling"),
    **{m: PRELU for m in ("deep_taylor", "deep_taylor_bounded", "lrp_alpha1beta0", "lrp_composite",
                          "lrp_epsilon", "lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat",
                          "excitation_backprop")},
}
ONET_PARAMS = {**FAST, "rise": {"n_masks": 16}, "occlusion": {"window": 8, "stride": 8},
               "deep_taylor_bounded": {"low": -127.5 / 128, "high": 127.5 / 128},
               "lrp_epsilon_gamma_box": {"low": -127.5 / 128, "high": 127.5 / 128}}


@pytest.fixture(scope="module")
def onet():
    """MTCNN's ONet (a subclassed model with three outputs) with its shipped trained weights,
    and the astronaut's face as ONet sees it: a 48x48 crop normalised (x - 127.5) / 128."""
    model = mtcnn_onet()
    face = astronaut_face().astype(np.float32)
    x = (tf.image.resize(face[None], (48, 48), method="area").numpy() - 127.5) / 128
    return model, x


def test_onet_sees_the_face_and_needs_an_output(onet):
    model, x = onet
    assert float(model(x)[2][0, 1]) > 0.99  # ONet's own face probability
    with pytest.raises(errors.InputError, match=r"'o_net(_\d+)?' has 3 outputs \(0: 'fc6-1', 1: 'fc6-2', 2: 'fc6-3'\)"):
        cv.explain("saliency", model, x)


@pytest.mark.parametrize("method", cv.list_methods())
def test_onet_face_output_is_explained_by_every_method(onet, method):
    """Every method gives a finite map of the face logit, or refuses naming why (CAM: no GAP
    head; the relevance rules: PReLU).  The guided rules apply their leaky rule to ONet's
    five PReLUs (issue 14 item 7), never silently the plain gradient."""
    model, x = onet
    try:
        exp = cv.explain(method, model, x, output="fc6-3", target=cv.ClassTarget(1),
                         **ONET_PARAMS.get(method, {}))
    except errors.CnnVisError as err:
        if method not in ONET_REFUSALS:
            raise
        kind, message = ONET_REFUSALS[method]
        assert isinstance(err, kind) and re.search(message, str(err)), str(err)
        return
    assert method not in ONET_REFUSALS, f"{method} was expected to refuse ONet"
    assert exp.heatmap.shape == (1, 48, 48) and np.isfinite(exp.heatmap).all()
    assert np.abs(exp.heatmap).max() > 0, f"{method}: all-zero map of a face ONet scores 0.99999"
    if "layer" in exp.meta:  # the CAM family: the PReLU output, not the conv before it (item 8)
        assert exp.meta["layer"] == "prelu4", exp.meta["layer"]
    assert exp.scores[0] > 0  # the face logit (the softmax is explained on its logits)
    if method in ("guided_backprop", "deconvnet", "guided_grad_cam"):
        assert exp.meta["leaky_rectifiers"] == 5  # prelu1..prelu5


def test_a_run_explains_a_saved_multi_output_file_on_the_chosen_output(tmp_path):
    """The grid (``cnnvis-eval run --model-file F --output cls``): the file's classifier head
    is explained; without the choice the file is refused before the run, naming the outputs."""
    from cnnvis_eval.evaluation import GridRun, RunConfig, inputs
    from cnnvis_eval.models.files import ModelFile, load_model_file

    model = _SavedHeads(name="rgb_heads")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model(_x(1, size=16, channels=3))
    path = tmp_path / "heads.keras"
    model.save(path)
    kw = dict(models=(), model_files=(str(path),), methods=("saliency",), photos=(), synthetic=1, scenes=0, birds=0)
    with pytest.raises(errors.InputError, match=r"has 2 outputs \(0: 'box', 1: 'cls'\)"):
        inputs.load_spec(ModelFile(path), RunConfig(**kw))
    with pytest.raises(errors.InputError, match=r"file_output 'cls' does not apply: the run has no model file"):
        RunConfig(models=("mini_vgg",), file_output="cls")
    config = RunConfig(**kw, stages=("complexity",), file_output="cls")
    GridRun(config, tmp_path / "run", progress=False, log=None).run()
    cells = pd.read_parquet(tmp_path / "run" / "cells.parquet")
    assert cells.loc[cells["neuron"] == "logit", "status"].tolist() == ["ok"], cells
    # the stored map is the classifier head's: the same as explaining the file's output 'cls' directly
    spec = load_model_file(path, output="cls")
    images = np.load(next((tmp_path / "run" / "images").glob("*.npz")))["images"]
    direct = cv.explain("saliency", spec, spec.preprocess(images))
    stored = [np.load(f)["heatmap"] for f in (tmp_path / "run" / "heatmaps").rglob("logit*.npz")]
    assert len(stored) == 1
    np.testing.assert_allclose(stored[0], direct.heatmap, rtol=1e-5, atol=1e-7)
