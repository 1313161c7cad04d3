"""Randomization: clones, layer groups, re-initialization, curves, and the negative controls.

Negative controls (DESIGN rule 6): on a small CNN trained inline, the constant and the
edge-detector explainers must *fail* the model-parameter randomization test (their maps
do not change at all), while the gradient (saliency) must pass (its similarity drops).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval import metrics as M
from cnnvis_eval.errors import InputError, TargetError
from cnnvis_eval.metrics import randomization as R
from suites.support.models import big_params, big_spec
from suites.support import metric_models as MM
from suites.support import tiny


@pytest.fixture(scope="module")
def trained():
    model, acc = MM.trained_bars_cnn()
    assert acc > 0.9, f"the inline bars CNN did not train (accuracy {acc:.2f})"
    x, _, _ = MM.bars(6, seed=11)
    return model, x


def bn_model():
    inp = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.Conv2D(4, 3, name="c2", activation="relu")(h)
    out = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D(name="gap")(h))
    model = keras.Model(inp, out, name="bn_model")
    rng = np.random.default_rng(0)  # "trained" values everywhere (fresh BatchNorm equals its init)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


# ---------------------------------------------------------------------- groups
def test_groups_of_the_tiny_model():
    for api in ("functional", "sequential", "nested"):
        groups = R.layer_groups(tiny.tiny_cnn(api=api))
        assert [(g.name, g.layers) for g in groups] == [("dense", ("dense",)), ("conv2", ("conv2",)),
                                                        ("conv1", ("conv1",))]


def test_batchnorm_goes_with_its_layer():
    m = bn_model()
    for gran in ("layer", "block"):
        groups = R.layer_groups(m, gran)
        assert [(g.name, g.layers) for g in groups] == [("head", ("head",)), ("c2", ("c2",)),
                                                        ("c1", ("c1", "bn1"))]


@pytest.mark.parametrize("name", [p.values[0] for p in big_params()], ids=[p.id for p in big_params()])
def test_block_groups_of_the_five_architectures(name):
    spec = big_spec(name)
    groups = R.layer_groups(spec)
    names = [g.name for g in groups]
    assert names[0] == "predictions"
    first = {"vgg16": ["predictions", "fc2", "fc1", "block5", "block4", "block3", "block2", "block1"],
             "resnet50": ["predictions", "conv5_block3", "conv5_block2", "conv5_block1", "conv4_block6"],
             "inception_v3": ["predictions", "mixed10", "mixed9", "mixed8", "mixed7"],
             "xception": ["predictions", "block14", "block13", "block12"],
             "mobilenet_v2": ["predictions", "Conv_1", "block_16", "block_15"]}[name]
    assert names[:len(first)] == first
    weighted = {id(n.layer) for n in spec.graph.nodes if n.layer.weights}
    covered = [id(spec.graph.node(lname).layer) for g in groups for lname in g.layers]
    assert len(covered) == len(set(covered)) == len(weighted)  # every weighted layer exactly once
    assert len(groups) == {"vgg16": 8, "resnet50": 18, "inception_v3": 17, "xception": 15,
                           "mobilenet_v2": 20}[name]


def test_explicit_groups_and_errors():
    m = tiny.tiny_cnn()
    groups = R.layer_groups(m, [("top", ["dense"]), ["conv2", "conv1"]])
    assert [(g.name, g.layers) for g in groups] == [("top", ("dense",)), ("group1", ("conv2", "conv1"))]
    with pytest.raises(TargetError, match="conv3"):
        R.layer_groups(m, [["conv3"]])
    with pytest.raises(InputError, match="no weights"):
        R.layer_groups(m, [["pool"]])
    with pytest.raises(InputError, match="granularity"):
        R.layer_groups(m, "blocks")


# ---------------------------------------------------------------------- clones
@pytest.mark.parametrize("api", ["functional", "sequential", "nested"])
def test_clone_with_weights(api):
    model = tiny.tiny_cnn(api=api, softmax=True)
    x = tiny.tiny_input()
    clone = R.clone_with_weights(model)
    assert clone.model is not model and clone.info["clone_of"] == model.name
    logits = np.asarray(cv.as_spec(model).graph.run(x)[0])
    np.testing.assert_array_equal(np.asarray(clone.model(x)), logits)  # linear head: logits
    assert clone.graph.stripped is None
    orig_ids = {id(v) for v in model.weights}
    assert not any(id(v) in orig_ids for v in clone.model.weights)
    before = tiny.weights_snapshot(model)
    for v in clone.model.weights:
        v.assign(np.zeros(v.shape))
    tiny.assert_model_unchanged(model, before)


# ---------------------------------------------------------------------- re-initialization
def _by_layer(spec):
    g = spec.graph
    return {n.name: [np.array(v.numpy()) for v in n.layer.weights] for n in g.nodes if n.layer.weights}


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomized_models_change_the_right_layers(mode):
    model = bn_model()
    orig = _by_layer(cv.as_spec(model))
    before = tiny.weights_snapshot(model)
    steps = list(R.randomized_models(model, mode))
    assert [s for s, _ in steps] == ["head", "c2", "c1"]
    order = ["head", "c2", "c1"]
    for k, (_, spec) in enumerate(steps):
        now = _by_layer(spec)
        changed = {name for name in now if not all(np.array_equal(a, b) for a, b in zip(now[name], orig[name]))}
        want = set(order[:k + 1]) if mode == "cascading" else {order[k]}
        if "c1" in want:
            want.add("bn1")
        assert changed == want, (k, changed)
    tiny.assert_model_unchanged(model, before)


def test_reinitialization_uses_each_layers_initializer_and_seed():
    model = bn_model()
    last = list(R.randomized_models(model, "cascading", seed=3))[-1][1]
    bn = last.graph.node("bn1").layer
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)  # BatchNorm initializers: ones / zeros
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
    c2 = last.graph.node("c2").layer
    np.testing.assert_array_equal(c2.bias.numpy(), 0.0)  # bias_initializer="zeros"
    k = c2.kernel.numpy()
    limit = np.sqrt(6 / (3 * 3 * 4 + 3 * 3 * 4))  # glorot_uniform bound
    assert np.abs(k).max() <= limit and k.std() > 0.4 * limit
    again = list(R.randomized_models(model, "cascading", seed=3))[-1][1]
    other = list(R.randomized_models(model, "cascading", seed=4))[-1][1]
    for a, b, c in zip(last.model.weights, again.model.weights, other.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(k, other.graph.node("c2").layer.kernel.numpy())
    # each layer draws its own values (not one stream copied around)
    assert not np.allclose(last.graph.node("c1").layer.kernel.numpy().ravel()[:10], k.ravel()[:10])


# ---------------------------------------------------------------------- curves
def test_curve_frame_and_model_unchanged():
    model = tiny.tiny_cnn(api="nested", softmax=True)
    x = tiny.tiny_input(3)
    before, out = tiny.weights_snapshot(model), np.asarray(model(x))
    df = R.randomization_curve(model, x, "saliency", similarity=["spearman_abs", "ssim"], max_steps=2,
                               reuse_explainer=True)
    assert list(df.columns) == ["method", "model", "mode", "step", "layer", "image", "metric", "value"]
    assert len(df) == 3 * 2 * 3  # steps (original + 2) x metrics x images
    assert set(df.method) == {"saliency"} and set(df.model) == {"tiny_nested"}
    np.testing.assert_allclose(df[df.step == 0].value, 1.0)
    assert df[df.step > 0].value.max() < 1.0
    tiny.assert_model_unchanged(model, before, x, out)


def test_reused_explainer_gives_the_same_curve(trained):
    model, x = trained
    a = R.randomization_curve(model, x, "saliency", similarity="spearman_abs")
    b = R.randomization_curve(model, x, "saliency", similarity="spearman_abs", reuse_explainer=True)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-6)


def test_a_given_original_explanation_is_step_zero(trained):
    """``original=`` (the caller's explanation of the unmodified model) gives the same curve as
    computing it, and is used as it is (a doctored one shows in every step's similarity)."""
    model, x = trained
    a = R.randomization_curve(model, x, "grad_cam", similarity="spearman_abs")
    exp = cv.get_method("grad_cam")(model).explain(x, progress=False)
    b = R.randomization_curve(model, x, "grad_cam", similarity="spearman_abs", original=exp)
    np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-6)
    flipped = type(exp)(**{**vars(exp), "heatmap": exp.heatmap[:, ::-1].copy()})
    c = R.randomization_curve(model, x, "grad_cam", similarity="spearman_abs", original=flipped)
    assert not np.allclose(a[a.step > 0].value, c[c.step > 0].value)
    with pytest.raises(InputError, match="original holds 1 explanations"):
        next(R.randomization_explanations(model, x, "grad_cam", original=cv.get_method("grad_cam")(model).explain(
            x[:1], progress=False)))


def test_target_is_fixed_across_steps(trained):
    model, x = trained
    exps = list(R.randomization_explanations(model, x, "saliency", max_steps=3))
    for _, _, e in exps[1:]:
        np.testing.assert_array_equal(e.indices, exps[0][2].indices)


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_negative_controls_fail_and_saliency_passes(trained, mode):
    model, x = trained
    before, out = tiny.weights_snapshot(model), np.asarray(model(x))
    curves = {name: R.randomization_curve(model, x, ex, mode=mode, reuse_explainer=True)
              for name, ex in [("saliency", "saliency"), ("constant", M.ConstantExplainer),
                               ("edge", M.EdgeExplainer)]}
    for name in ("constant", "edge"):  # model-independent maps: similarity stays 1 at every step
        assert curves[name].value.min() > 0.99, name
    sal = curves["saliency"]
    final = sal[(sal.step == sal.step.max()) & (sal.metric == "spearman_abs")].value
    assert final.mean() < 0.5, final.mean()
    steps = sal[sal.metric == "spearman_abs"].groupby("step").value.mean()
    assert steps.iloc[1:].max() < 0.9
    tiny.assert_model_unchanged(model, before, x, out)


def test_model_randomization_metric(trained):
    model, x = trained
    mpr = M.get_metric("model_randomization")(reuse_explainer=True)
    sal = mpr.evaluate(model, x, "saliency")
    const = mpr.evaluate(model, x, M.ConstantExplainer)
    assert sal.shape == (len(x),) and (const == 1.0).all() and sal.mean() < 0.5
    indep = M.get_metric("model_randomization")(mode="independent", reuse_explainer=True)
    assert indep.params["reduce"] == "mean" and indep.evaluate(model, x, "saliency").mean() < 0.9


def test_random_logit(trained):
    model, x = trained
    rl = M.get_metric("random_logit")()
    np.testing.assert_array_equal(rl.evaluate(model, x, M.ConstantExplainer), 1.0)
    assert rl.evaluate(model, x, "gradient_x_input").mean() < 0.9
    other = R.random_other_class(np.array([0, 1, 2, 3, 4] * 20), 5, seed=0)
    assert (other != np.array([0, 1, 2, 3, 4] * 20)).all() and set(other) == {0, 1, 2, 3, 4}
    np.testing.assert_array_equal(other, R.random_other_class(np.array([0, 1, 2, 3, 4] * 20), 5, seed=0))
    with pytest.raises(TargetError, match="ClassTarget"):
        rl.evaluate(model, x, "saliency", cv.NeuronTarget("conv2", 0))


# ---------------------------------------------------------------------- data randomization
def test_train_on_permuted_labels_passes_permuted_labels():
    seen = {}

    def spy(x, y, **kw):
        seen.update(y=y, kw=kw, x=x)
        return "model"

    x = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.arange(20) % 4
    x0, y0 = x.copy(), y.copy()
    assert R.train_on_permuted_labels(spy, x, y, seed=1, epochs=3) == "model"
    assert seen["kw"] == {"epochs": 3}
    assert sorted(seen["y"]) == sorted(y) and not np.array_equal(seen["y"], y)
    np.testing.assert_array_equal(seen["y"], R.permuted_labels(y, seed=1))
    assert not np.array_equal(R.permuted_labels(y, seed=1), R.permuted_labels(y, seed=2))
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)
    with pytest.raises(InputError):
        R.train_on_permuted_labels(spy, x, y[:5])


def test_data_randomization_with_an_inline_trainer(trained):
    model, x = trained
    xs, ys, _ = MM.bars(128, seed=3)
    shuffled = R.train_on_permuted_labels(lambda a, b: MM.train_bars(a, b, seed=0, epochs=2), xs, ys, seed=0)
    same = R.compare_models(model, model, x, "saliency", similarity=["spearman_abs"])
    np.testing.assert_allclose(same.value, 1.0)
    diff = R.compare_models(model, shuffled, x, "saliency", similarity=["spearman_abs"])
    assert list(diff.columns) == ["method", "image", "metric", "value"]
    assert diff.value.mean() < 0.9


# ---------------------------------------------------------------------- explainers that follow weight changes
@pytest.mark.parametrize("method", ["deep_taylor", "lrp_epsilon", "lrp_alpha1beta0", "deconvnet", "deeplift",
                                    "full_grad"])
def test_sync_weights_equals_a_fresh_explainer(method):
    """An explainer with private weight copies (folded BatchNorm, linear clones of fused
    layers), built before the model's variables change in place, gives after
    ``sync_weights()`` exactly the maps of an explainer built on the changed weights; before
    the sync it is stale (so the comparison can fail).  Signs kept: the relevance programs
    keep their structure and nothing is traced again."""
    import dataclasses

    work = cv.models.clone.clone_with_weights(bn_model())
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    ex = cv.get_method(method)(work)
    before = ex.explain(x, cv.ClassTarget(0), progress=False).heatmap
    rng = np.random.default_rng(1)
    for v in work.model.weights:  # same signs, new magnitudes
        v.assign(np.asarray(v.numpy()) * rng.uniform(0.3, 3.0, v.shape).astype(np.float32))
    stale = ex.explain(x, cv.ClassTarget(0), progress=False).heatmap
    fresh = cv.get_method(method)(dataclasses.replace(work)).explain(x, cv.ClassTarget(0), progress=False).heatmap
    assert np.abs(fresh - before).max() > 1e-3 * np.abs(fresh).max()
    assert np.abs(stale - fresh).max() > 1e-3 * np.abs(fresh).max()
    traces = dict(getattr(ex, "engine", None).__dict__["_fns"]) if hasattr(ex, "engine") else None
    ex.sync_weights()
    np.testing.assert_allclose(ex.explain(x, cv.ClassTarget(0), progress=False).heatmap, fresh,
                               rtol=1e-5, atol=1e-6 * np.abs(fresh).max())
    if traces is not None:  # same structure: the compiled functions were kept
        assert ex.engine._fns == traces


def test_relevance_sync_rebuilds_when_the_structure_changes():
    """Randomization resets BatchNorm (beta = mean = 0) and zero-initializes biases: the
    folded biases stop being positive, so the zero-denominator fallback sites change; the
    engine rebuilds that plan and the maps equal a fresh explainer's."""
    import dataclasses

    work = cv.models.clone.clone_with_weights(bn_model())
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    ex = cv.get_method("deep_taylor")(work)
    ex.explain(x, progress=False)
    before = set(ex.engine.plan(work.graph.output_key).may_lose)
    for layer in work.model.layers:
        for v in layer.weights:
            if v.name in ("bias", "beta", "moving_mean"):
                v.assign(np.zeros(v.shape, np.float32))
    ex.sync_weights()
    after = set(ex.engine.plan(work.graph.output_key).may_lose)
    assert before and after != before
    fresh = cv.get_method("deep_taylor")(dataclasses.replace(work)).explain(x, progress=False)
    got = ex.explain(x, progress=False)
    np.testing.assert_allclose(got.heatmap, fresh.heatmap, rtol=1e-5, atol=1e-6 * np.abs(fresh.heatmap).max())
    np.testing.assert_allclose(got.meta["relevance_input"], fresh.meta["relevance_input"], rtol=1e-5)


@pytest.mark.parametrize("method", ["deep_taylor", "deeplift", "full_grad"])
def test_reused_curve_equals_rebuilt_and_copying_methods_are_refused(method):
    """randomization_curve with one synced explainer (Deep Taylor's folded BatchNorm,
    DeepLIFT's and FullGrad's linear clones of the fused c2) equals the curve with a fresh
    explainer per step; a method that copies weights and cannot refresh them is refused with
    reuse_explainer=True (no registered method does today: a saliency that says it copies)."""
    m = bn_model()
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    kw = dict(granularity="layer", similarity=("spearman_abs",), mode="independent")
    a = R.randomization_curve(m, x, method, reuse_explainer=True, **kw)
    b = R.randomization_curve(m, x, method, reuse_explainer=False, **kw)
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), atol=1e-6)
    assert a.value.min() < 0.99  # the curve moves: the comparison is not between constants
    assert cv.get_method(method).follows_weights()

    class Copying(cv.get_method("saliency")):
        reads_weights_once = True  # and no sync_weights

    assert not Copying.follows_weights()
    with pytest.raises(InputError, match="reuse_explainer=True: Copying"):
        R.randomization_curve(m, x, Copying, reuse_explainer=True, **kw)


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_only_the_requested_steps_are_explained(mode):
    """``steps=`` explains only those steps; their similarities equal the full curve's (the
    weights still change at the skipped steps: cascading step 2 has groups 1-2 randomized)."""
    m = bn_model()
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    kw = dict(granularity="layer", similarity=("spearman_abs",), mode=mode, reuse_explainer=True)
    full = R.randomization_curve(m, x, "saliency", **kw)
    calls = []

    class Counting(cv.get_method("saliency")):
        def explain(self, *a, **k):
            calls.append(1)
            return super().explain(*a, **k)

    part = R.randomization_curve(m, x, Counting, only_steps=(2,), **kw)
    assert sorted(set(part.step)) == [0, 2] and len(calls) == 2  # step 0 and step 2
    np.testing.assert_allclose(part[part.step == 2].value.to_numpy(), full[full.step == 2].value.to_numpy(),
                               atol=1e-6)
    assert full[full.step == 2].value.max() < 0.999  # step 2 differs from step 0: the test can fail
    with pytest.raises(InputError, match="only_steps must be"):
        R.randomization_curve(m, x, "saliency", only_steps=(0,), **kw)


@pytest.mark.parametrize("method, mode", [("deep_taylor", "cascading"), ("deconvnet", "independent"),
                                          ("deeplift", "cascading"), ("saliency", "independent")])
def test_in_place_randomization_equals_the_clone_and_restores_the_model(method, mode):
    """``in_place=True`` (the check session's path: its own explainer, no clone, no new trace)
    gives the clone's curve; afterwards the model's weights are bit-identical to before and
    the reused explainer -- synced copies included (Deep Taylor's folded BatchNorm,
    DeconvNet's and DeepLIFT's linear clones) -- gives its original maps again."""
    m = bn_model()
    spec = cv.models.spec.as_spec(m)
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    ex = cv.get_method(method)(spec)
    first = ex.explain(x, progress=False).heatmap
    weights = [np.array(v.numpy()) for v in m.weights]
    kw = dict(granularity="layer", similarity=("spearman_abs",), mode=mode)
    reuse = type(ex).follows_weights()
    clone = R.randomization_curve(m, x, method, reuse_explainer=reuse, **kw)
    inplace = R.randomization_curve(spec, x, ex, reuse_explainer=reuse, in_place=True, **kw)
    np.testing.assert_allclose(inplace.value.to_numpy(), clone.value.to_numpy(), atol=1e-6)
    assert clone[clone.step > 0].value.min() < 0.99  # the curve moves: not a comparison of constants
    for v, w in zip(m.weights, weights):
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)
    np.testing.assert_array_equal(ex.explain(x, progress=False).heatmap, first)


def test_in_place_randomization_restores_the_model_when_a_step_fails():
    """A step that raises, or a caller that stops early, leaves the weights as they were."""
    m = bn_model()
    spec = cv.models.spec.as_spec(m)
    x = np.random.default_rng(3).uniform(0, 1, (3, 8, 8, 2)).astype(np.float32)
    weights = [np.array(v.numpy()) for v in m.weights]
    calls = []

    class Failing(cv.get_method("saliency")):
        def explain(self, *a, **k):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("step 2 failed")
            return super().explain(*a, **k)

    with pytest.raises(RuntimeError, match="step 2 failed"):
        R.randomization_curve(spec, x, Failing(spec), granularity="layer", reuse_explainer=True, in_place=True)
    gen = R.randomization_explanations(spec, x, "saliency", granularity="layer", reuse_explainer=True,
                                       in_place=True)
    next(gen), next(gen)  # step 1: the top layer is randomized now
    assert any(not np.array_equal(v.numpy(), w) for v, w in zip(m.weights, weights))
    gen.close()
    for v, w in zip(m.weights, weights):
        np.testing.assert_array_equal(v.numpy(), w, err_msg=v.path)


def test_explainer_steps_reach_the_path_methods():
    """``steps`` is the integration steps of integrated gradients (and blur IG, guided IG,
    XRAI), passed on to the explainer; the curve's own step filter is ``only_steps``.  (The
    grid passed IG's steps=16 and the curve took it for its step filter: "'int' object is
    not iterable" for the path methods on every model of the default run.)"""
    m = bn_model()
    x = np.random.default_rng(3).uniform(0, 1, (2, 8, 8, 2)).astype(np.float32)
    exps = list(R.randomization_explanations(m, x, "integrated_gradients", max_steps=1, steps=3))
    assert [k for k, _, _ in exps] == [0, 1]
    assert all(e.meta["params"]["steps"] == 3 for _, _, e in exps), [e.meta["params"] for _, _, e in exps]
    curve = R.randomization_curve(m, x, "integrated_gradients", similarity=("spearman_abs",), max_steps=1, steps=3)
    assert sorted(set(curve.step)) == [0, 1]
