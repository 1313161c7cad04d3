"""The relevance pass's speed-ups change no number.

* The fused elementwise kernels (:mod:`cnnvis_eval.methods.relevance.fused`, XLA) equal the
  plain TensorFlow chains bit for bit, on a tensor above the fusing size with the cases
  the chains branch on (zero and negative-zero denominators, all-zero residual branches).
* With the fusing size lowered to 1, so that every chain of every rule takes the fused
  path, the library still matches the independent NumPy reference on every tiny net.
* The recorded forward pass runs each folded Conv + BatchNormalization pair as one layer
  (the compiled relevance pass reads none of the BatchNormalization's variables) and
  records the pre-activation of layers with a fused rectifier (LRP-epsilon runs each
  convolution forward once); the relevance equals that of the model's own forward pass.
* The stem's phase transpose is the gradient of the strided convolution.
* The w**2 fallback is a ``tf.cond`` on large tensors only, with the same relevance either way.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import cnnvis_eval as cv
from cnnvis_eval.methods.relevance import (
    DENSE,
    LRP,
    LayerMapComposite,
    ZPlus,
    engine,
    fused,
)
from cnnvis_eval.methods.relevance.linear import KernelMap, is_phase_stem, phase_transpose
from cnnvis_eval.targets import ClassTarget
from suites.support.relevance_nets import NETS, net_input
from suites.unit.test_relevance_rules import (
    ORDER,
    ROTATIONS,
    RULES,
    ByName,
    assert_close,
    linear_names,
    net,
    raw,
    reference,
    scale_names,
)

SHAPE = (2, 64, 64, 33)  # 135168 values per image >= FUSE_MIN


def _tensors(seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=SHAPE)
    z[rng.random(SHAPE) < 0.05] = 0.0
    z[rng.random(SHAPE) < 0.05] = -0.0
    r = rng.normal(size=SHAPE)
    r[rng.random(SHAPE) < 0.1] = 0.0
    b = rng.normal(size=SHAPE[-1:])
    return [tf.constant(v.astype(np.float32)) for v in (r, z, b)]


def _same(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    assert same.all(), f"{what}: {np.size(same) - same.sum()} values differ, max {np.nanmax(np.abs(a - b))}"


def test_fused_kernels_equal_the_plain_ops_bit_for_bit():
    r, z, b = _tensors()
    assert fused.large(z)
    for eps in (0.0, 1e-6, 0.25):
        for bias in (None, b):
            den = z if bias is None else z + bias
            want = fused.stabilized_divide(r, den, tf.constant(eps, z.dtype)) if eps \
                else tf.math.divide_no_nan(r, den)
            _, got = fused.divide(r, z, eps, bias)
            _same(got, want, f"divide eps={eps} bias={bias is not None}")
            d, _ = fused.divide(r, z, eps, bias)
            assert bool(d.any_lost(r)) == bool(fused.lost_any(den, r))
    # no output with relevance at a zero denominator -> False
    r0 = tf.where(tf.equal(z, 0), tf.zeros_like(r), r)
    assert not bool(fused.divide(r0, z)[0].any_lost(r0))
    assert bool(fused.divide(r, z)[0].any_lost(r))
    # residual shares: two and three branches, with positions where every branch is 0
    for k in (2, 3):
        xs = [_tensors(seed)[1] for seed in range(1, k + 1)]
        xs[0] = tf.where(tf.equal(xs[1], 0), tf.zeros_like(xs[0]), xs[0])
        y = tf.add_n(xs)
        got = fused.shares(xs, y, r)
        want = fused.signed_shares(xs, y, r)
        for g, w in zip(got, want):
            _same(g, w, f"shares k={k}")


def _concrete(explainer):
    """The traced graphs of an explainer's compiled relevance passes."""
    for fn in explainer.engine._fns.values():
        yield from fn._list_all_concrete_functions()


def _traced_xla(explainer) -> bool:
    """Whether the compiled relevance pass calls an XLA-compiled function."""
    for cf in _concrete(explainer):
        for f in cf.graph.as_graph_def().library.function:
            if f.attr.get("_XlaMustCompile") is not None and f.attr["_XlaMustCompile"].b:
                return True
    return False


@pytest.fixture
def fuse_everything(monkeypatch):
    monkeypatch.setattr(fused, "FUSE_MIN", 1)


@pytest.mark.parametrize("rotation", range(len(ROTATIONS)), ids=["rot0", "rot1"])
@pytest.mark.parametrize("name", list(NETS))
def test_rules_match_reference_on_the_fused_path(name, rotation, fuse_everything):
    model, refnet = net(name)
    x = net_input(model)
    offset, (merge, ref_merge), (bn, ref_bn) = ROTATIONS[rotation]
    pick = {n: ORDER[(i + offset) % len(ORDER)] for i, n in enumerate(linear_names(refnet))}
    exp = LRP(model, composite=ByName({n: RULES[r][0] for n, r in pick.items()}, merge, bn))
    got, idx, _, sums = raw(exp, x)
    assert _traced_xla(exp), "the fused kernels did not run: the check would be vacuous"
    rules = {n: RULES[r][1] for n, r in pick.items()} | {n: ref_bn for n in scale_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx, sum_rule=ref_merge), f"{name} {pick}")
    np.testing.assert_allclose(sums[:, -1], got.reshape(len(x), -1).sum(1), rtol=1e-9, atol=1e-12)


def test_zero_denominator_fallback_on_the_fused_path(fuse_everything):
    """The fused check for relevance at zero denominators finds it and hands it on by w**2."""
    m2, refnet = NETS["dense"](bias=False)
    w = m2.get_layer("out").get_weights()
    w[0][:, 1] = -np.abs(w[0][:, 1])  # class 1: no positive contribution -> z+ = 0
    m2.get_layer("out").set_weights(w)
    refnet.nodes[-1] = dict(refnet.nodes[-1], m=w[0])
    x = net_input(m2)
    exp = LRP(m2, composite=LayerMapComposite([(DENSE, ZPlus())]))
    got, idx, top, _ = raw(exp, x, ClassTarget(1))
    assert _traced_xla(exp)
    rules = {n: ("zplus", True) for n in linear_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx), "fallback")
    np.testing.assert_allclose(got.reshape(len(x), -1).sum(1), top, rtol=1e-9)


def _conds(explainer) -> int:
    """``tf.cond`` ops in the compiled relevance passes (the w**2 fallback's)."""
    return sum(op.type in ("If", "StatelessIf") for cf in _concrete(explainer)
               for op in cf.graph.get_operations())


@pytest.mark.parametrize("large", [False, True], ids=["small", "large"])
def test_fallback_is_conditional_on_large_tensors_only(large, monkeypatch):
    """The w**2 fallback runs under a ``tf.cond`` on large tensors and unconditionally on
    small ones (there it adds exact zeros where nothing is lost); both give the same
    relevance, where relevance is lost (class 1: no positive contribution) and where it is
    not (class 0), and match the NumPy reference."""
    if large:
        monkeypatch.setattr(fused, "FUSE_MIN", 1)
    m2, refnet = NETS["dense"](bias=False)
    w = m2.get_layer("out").get_weights()
    w[0][:, 1] = -np.abs(w[0][:, 1])
    m2.get_layer("out").set_weights(w)
    refnet.nodes[-1] = dict(refnet.nodes[-1], m=w[0])
    x = net_input(m2)
    exp = LRP(m2, composite=LayerMapComposite([(DENSE, ZPlus())]))
    rules = {n: ("zplus", True) for n in linear_names(refnet)}
    for cls in (0, 1):
        got, idx, top, _ = raw(exp, x, ClassTarget(cls))
        assert_close(got, reference(refnet, x, rules, idx), f"class {cls}")
        np.testing.assert_allclose(got.reshape(len(x), -1).sum(1), top, rtol=1e-9)
    n = _conds(exp)
    assert (n > 0) if large else (n == 0), f"{n} conds with large={large}"


def _conv_bn_model():
    keras.utils.set_random_seed(3)  # fixed weights: the test must not depend on the run order
    inp = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="c1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="r1")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    out = keras.layers.Dense(4, name="out")(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(3)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 2, 6), rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, 6)])
    return model


@pytest.mark.parametrize("method", ["lrp_epsilon", "deep_taylor"])
def test_recorded_forward_runs_batchnorm_folded(method, monkeypatch):
    model = _conv_bn_model()
    x = np.random.default_rng(0).normal(size=(3, 12, 12, 3)).astype(np.float32)
    exp = cv.get_method(method)(model)
    e = exp.explain(x, batch_size=3)
    bn_vars = {id(v.value if hasattr(v, "value") else v) for v in model.get_layer("bn1").weights}
    captured = {id(v) for cf in _concrete(exp) for v in cf.variables}
    assert captured, "no compiled relevance pass was found"
    assert not captured & bn_vars, "the relevance pass still runs the BatchNormalization"
    # the folded pass computes the model's scores (float rounding apart) ...
    logits = model.predict(x, verbose=0)
    top = logits.max(axis=1)
    np.testing.assert_allclose(e.meta["relevance_top"], np.maximum(top, 0) if method == "deep_taylor" else top,
                               rtol=1e-5, atol=1e-5)
    # ... and the relevance of the model's own (unfolded) forward pass, float rounding apart
    monkeypatch.setattr(engine, "canonical_forward", lambda program, pre: {})
    plain = cv.get_method(method)(model).explain(x, batch_size=3)
    scale = np.abs(plain.attribution).max()
    assert scale > 0
    np.testing.assert_allclose(e.attribution, plain.attribution, rtol=0, atol=1e-5 * scale)


def _conv_relu_model():
    inp = keras.Input((14, 14, 3))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c1")(inp)
    h = keras.layers.Conv2D(5, 3, strides=2, activation="relu", name="c2")(h)
    h = keras.layers.Flatten(name="flat")(h)
    h = keras.layers.Dense(7, activation="relu", name="d1")(h)
    return keras.Model(inp, keras.layers.Dense(4, name="out")(h))


def _ops(exp, kind: str) -> int:
    """Ops of type ``kind`` the compiled pass's outputs depend on (a tape's forward whose
    value no gradient reads is in the graph but never runs)."""
    n = 0
    for cf in _concrete(exp):
        seen, todo = set(), [t.op for t in cf.graph.outputs]
        while todo:
            op = todo.pop()
            if op.name in seen:
                continue
            seen.add(op.name)
            todo.extend(t.op for t in op.inputs)
            todo.extend(op.control_inputs)
        n += sum(cf.graph.get_operation_by_name(name).type == kind for name in seen)
    return n


def test_fused_rectifier_layers_run_forward_once(monkeypatch):
    keras.utils.set_random_seed(4)
    model = _conv_relu_model()
    x = np.random.default_rng(1).normal(size=(3, 14, 14, 3)).astype(np.float32)
    exp = cv.get_method("lrp_epsilon")(model)
    e = exp.explain(x, batch_size=3)
    assert _ops(exp, "Conv2D") == 2  # each convolution's forward, once
    monkeypatch.setattr(engine, "canonical_forward", lambda program, pre: {})
    exp0 = cv.get_method("lrp_epsilon")(model)
    plain = exp0.explain(x, batch_size=3)
    assert _ops(exp0, "Conv2D") == 4  # the rule recomputes z + b behind each rectifier
    scale = np.abs(plain.attribution).max()
    assert scale > 0
    np.testing.assert_allclose(e.attribution, plain.attribution, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("kernel, stride, size, cin", [
    (7, 2, 30, 3),   # ResNet50's stem (230 -> 112 at 224 px)
    (3, 2, 17, 3),   # odd size: the last row is read by no output
    (6, 2, 21, 1),   # even kernel: stride * taps-per-phase > kernel + stride - 1
    (5, 3, 23, 4),
    (2, 2, 8, 2),
])
def test_phase_transpose_equals_the_convolution_gradient(kernel, stride, size, cin):
    """The stem's stride-1 phase convolution is the transpose of the strided convolution."""
    rng = np.random.default_rng(kernel * 100 + size)
    layer = keras.layers.Conv2D(5, kernel, strides=stride, padding="valid", dtype="float64")
    layer.build((None, size, size, cin))
    k = rng.normal(size=(kernel, kernel, cin, 5))
    assert is_phase_stem(layer, k)
    x = tf.constant(rng.normal(size=(2, size, size, cin)))
    kt = tf.constant(k)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.conv2d(x, kt, stride, "VALID")
    s = tf.constant(rng.normal(size=y.shape))
    want = tape.gradient(y, x, output_gradients=s).numpy()
    got = phase_transpose(s, kt, stride, (size, size)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
    # through the linear map the rules use: same forward, gradient by the phase transpose
    lmap = KernelMap("stem", layer, k, None, "float64")
    with tf.GradientTape() as tape:
        tape.watch(x)
        z = lmap.apply(x)
    np.testing.assert_allclose(z.numpy(), y.numpy(), rtol=0, atol=1e-12 * np.abs(y.numpy()).max())
    g = tape.gradient(z, x, output_gradients=s).numpy()
    np.testing.assert_allclose(g, want, rtol=0, atol=1e-12 * np.abs(want).max())
