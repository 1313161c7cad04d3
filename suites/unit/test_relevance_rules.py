"""Relevance rules, presets and canonizers against an independent NumPy matrix-form LRP.

The reference (``suites/support/lrp_ref.py``) builds every layer of the tiny hand-set nets
(``suites/support/relevance_nets.py``) as an explicit float64 matrix and writes each rule
with its explicit contribution tensor; it shares no code with the library.  The library
runs in float64 (the nets are float64) and is read before the float32 cast of
``Explanation`` so agreement is checked to 1e-6 of the largest relevance (it is ~1e-15).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.errors import UnsupportedLayerError
from cnnvis_eval.methods.relevance import (
    AVGPOOL,
    CONVOLUTION,
    DENSE,
    LRP,
    AlphaBeta,
    Composite,
    Epsilon,
    Flat,
    Gamma,
    LayerMapComposite,
    Pass,
    SignedShare,
    WSquare,
    ZPlus,
)
from cnnvis_eval.targets import ClassTarget, NeuronTarget, bind
from suites.support import lrp_ref as ref
from suites.support import tiny
from suites.support.relevance_nets import NETS, net_input

PRESETS = ("deep_taylor", "deep_taylor_bounded", "lrp_epsilon", "lrp_alpha1beta0", "lrp_composite")
LOW, HIGH = np.array([-2.0, -2.5]), np.array([2.0, 2.5])  # per-channel pixel bounds (inputs in [-2, 2])

# library rule -> reference rule tuple
RULES = {
    "zplus": (ZPlus(), ("zplus", True)),
    "epsilon": (Epsilon(0.01), ("epsilon", 0.01, True)),
    "alpha1beta0": (AlphaBeta(1, 0), ("alphabeta", 1.0, 0.0, True, True)),
    "alpha2beta1": (AlphaBeta(2, 1), ("alphabeta", 2.0, 1.0, True, True)),
    "wsquare": (WSquare(), ("wsquare",)),
    "flat": (Flat(), ("flat",)),
    "gamma": (Gamma(0.25), ("gamma", 0.25, True)),
}
ORDER = list(RULES)

_NETS: dict = {}


def net(name, bias=True):
    key = (name, bias)
    if key not in _NETS:
        _NETS[key] = NETS[name](bias=bias)
    return _NETS[key]


def raw(explainer, x, target=None):
    """float64 input relevance, indices and the engine's meta sums (before the float32 cast)."""
    b = bind(target, explainer.graph, len(x))  # "top" resolved inside, as explain() does
    r, scores, idx, top, sums = explainer.engine.function(b, explainer._signature())(x, b.indices)
    return r.numpy(), idx.numpy(), top.numpy(), sums.numpy()


def assert_close(got, want, what=""):
    scale = np.abs(want).max()
    assert scale > 0, f"{what}: reference relevance is all zero; the check would be vacuous"
    err = np.abs(got - want).max() / scale
    assert err < 1e-6, f"{what}: max |library - reference| / max |reference| = {err:.3g}"


def reference(refnet, x, rules, idx, positive=False, sum_rule=("signed_share",), start=None, r0=None):
    out_name = refnet.nodes[-1]["name"]
    if start is None:
        logits = refnet.forward(x)[out_name]
        start, r0 = out_name, ref.class_relevance(logits, idx, positive)
    return refnet.relevance(x, rules, start, r0, sum_rule)[0]


class ByName(Composite):
    """Test composite: a rule per layer name (the first graph node of each op)."""

    def __init__(self, by_name, merge, batchnorm):
        self.by_name, self.merge, self.batchnorm = by_name, merge, batchnorm

    def rule_for(self, op, domain):
        return self.by_name[op.nodes[0]]


def linear_names(refnet):
    return [nd["name"] for nd in refnet.nodes if nd["kind"] == "linear" and not nd.get("scale")]


def scale_names(refnet):
    return [nd["name"] for nd in refnet.nodes if nd.get("scale")]


# ---------------------------------------------------------------------- rules
ROTATIONS = [
    # (offset into ORDER, merge rule, batchnorm rule)
    (0, (SignedShare(), ("signed_share",)), (Pass(), ("pass",))),
    (3, (Epsilon(0.01), ("epsilon", 0.01)), (Epsilon(0.01), ("epsilon", 0.01, True))),
]


@pytest.mark.parametrize("rotation", range(len(ROTATIONS)), ids=["rot0", "rot1"])
@pytest.mark.parametrize("name", list(NETS))
def test_rules_match_reference(name, rotation):
    """Each layer gets a different rule (rotating through all seven), on every tiny net."""
    model, refnet = net(name)
    x = net_input(model)
    offset, (merge, ref_merge), (bn, ref_bn) = ROTATIONS[rotation]
    names = linear_names(refnet)
    pick = {n: ORDER[(i + offset) % len(ORDER)] for i, n in enumerate(names)}
    exp = LRP(model, composite=ByName({n: RULES[r][0] for n, r in pick.items()}, merge, bn))
    got, idx, top, sums = raw(exp, x)
    rules = {n: RULES[r][1] for n, r in pick.items()} | {n: ref_bn for n in scale_names(refnet)}
    want = reference(refnet, x, rules, idx, sum_rule=ref_merge)
    assert_close(got, want, f"{name} {pick}")
    # meta: the in-flight sum after the last op is the input relevance
    np.testing.assert_allclose(sums[:, -1], got.reshape(len(x), -1).sum(1), rtol=1e-9, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ORDER)
@pytest.mark.parametrize("name", list(NETS))
def test_uniform_rule_matches_reference(name, rule):
    """Every linear layer with the same rule (the full net x rule matrix)."""
    model, refnet = net(name)
    x = net_input(model)
    lib, rt = RULES[rule]
    exp = LRP(model, composite=LayerMapComposite([(DENSE + CONVOLUTION + AVGPOOL, lib)]))
    got, idx, _, _ = raw(exp, x)
    rules = {n: rt for n in linear_names(refnet)} | {n: ("pass",) for n in scale_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx), f"{name} {rule}")


def test_zero_denominator_fallback():
    """A z+ output with no positive contribution hands its relevance on by w**2 (conserved)."""
    m2, refnet = NETS["dense"](bias=False)  # a private copy: its weights are changed below
    w = m2.get_layer("out").get_weights()
    w[0][:, 1] = -np.abs(w[0][:, 1])  # class 1: all weights negative -> z+ = 0, logit <= 0
    m2.get_layer("out").set_weights(w)
    refnet.nodes[-1] = dict(refnet.nodes[-1], m=w[0])
    x = net_input(m2)
    exp = LRP(m2, composite=LayerMapComposite([(DENSE, ZPlus())]))
    got, idx, top, _ = raw(exp, x, ClassTarget(1))
    assert np.all(top < 0)
    rules = {n: ("zplus", True) for n in linear_names(refnet)}
    assert_close(got, reference(refnet, x, rules, idx), "fallback")
    np.testing.assert_allclose(got.reshape(len(x), -1).sum(1), top, rtol=1e-9)
    # without the fallback the relevance is dropped
    exp0 = LRP(m2, composite=LayerMapComposite([(DENSE, ZPlus(fallback=False))]))
    assert np.abs(raw(exp0, x, ClassTarget(1))[0]).max() == 0


# ---------------------------------------------------------------------- presets
def zbox(refnet):
    """Reference zB with the per-channel bounds tiled over the flattened input."""
    reps = int(np.prod(refnet.shapes["x"][:-1]))
    return ("zbox", np.tile(LOW, reps), np.tile(HIGH, reps))


def dt_rules(name, refnet, bounded=False):
    """Deep Taylor rules per layer, written out by hand from each net's structure."""
    first = zbox(refnet) if bounded else ("wsquare",)
    z, w2 = ("zplus", True), ("wsquare",)
    return {
        "dense": {"d1": first, "d2": z, "out": z},
        "conv": {"conv1": first, "conv2": z, "dense": z},
        "residual": {"c1": first, "c2": z, "sc": z, "c3": z, "gap": z, "out": z},
        "concat": {"a": first, "b": first, "c": z, "ap": z, "out": z},
        # lin reads a lone BN (signed), gap reads lin (linear), out reads the signed average
        "bn": {"c1": first, "dw": z, "sep": z, "bnl": ("pass",), "lin": w2, "gap": w2, "out": w2},
    }[name]


def preset_reference(name, preset, refnet):
    """(rules, sum rule, positive top) of a preset for a tiny net, by hand."""
    lin, sc = linear_names(refnet), scale_names(refnet)
    if preset == "deep_taylor":
        return dt_rules(name, refnet), ("signed_share",), True
    if preset == "deep_taylor_bounded":
        return dt_rules(name, refnet, bounded=True), ("signed_share",), True
    if preset == "lrp_epsilon":
        return {n: ("epsilon", 0.01, True) for n in lin + sc}, ("epsilon", 0.01), False
    if preset == "lrp_alpha1beta0":
        rules = {n: ("alphabeta", 1.0, 0.0, True, True) for n in lin} | {n: ("pass",) for n in sc}
        return rules, ("signed_share",), True
    if preset == "lrp_composite":
        firsts = {"dense": ["d1"], "conv": ["conv1"], "residual": ["c1"], "concat": ["a", "b"], "bn": ["c1"]}[name]
        dense = {"d2", "out", "dense"}
        rules = {}
        for n in lin:
            if n in firsts:
                rules[n] = zbox(refnet)
            elif n in dense:
                rules[n] = ("epsilon", 1e-6, True)
            else:
                rules[n] = ("alphabeta", 1.0, 0.0, True, True)
        return rules | {n: ("pass",) for n in sc}, ("signed_share",), False
    raise ValueError(preset)


PRESET_KW = {
    "deep_taylor_bounded": dict(low=LOW, high=HIGH),
    "lrp_epsilon": dict(epsilon=0.01),
    "lrp_composite": dict(first="zbox", low=LOW, high=HIGH),
}
_EXPLAINERS: dict = {}


def explainer(name, preset):
    key = (name, preset)
    if key not in _EXPLAINERS:
        _EXPLAINERS[key] = cv.get_method(preset)(net(name)[0], **PRESET_KW.get(preset, {}))
    return _EXPLAINERS[key]


PRESET_CASES = [
    pytest.param(n, p, id=f"{n}-{p}",
                 marks=() if (p.startswith("deep_taylor") or n in ("residual", "bn")) else pytest.mark.slow)
    for n in NETS for p in PRESETS
]


@pytest.mark.parametrize("name,preset", PRESET_CASES)
def test_preset_matches_reference(name, preset):
    """Presets (and the Deep Taylor domain analysis) against hand-assigned reference rules."""
    model, refnet = net(name)
    x = net_input(model)
    exp = explainer(name, preset)
    got, idx, top, _ = raw(exp, x)
    rules, sum_rule, positive = preset_reference(name, preset, refnet)
    assert_close(got, reference(refnet, x, rules, idx, positive, sum_rule), f"{name} {preset}")
    # the public result is the same relevance (float32) with its channel sum as heatmap
    e = exp.explain(x)
    np.testing.assert_allclose(e.attribution, got, rtol=1e-5, atol=1e-6 * np.abs(got).max())
    np.testing.assert_allclose(e.heatmap, got.sum(-1), rtol=1e-5, atol=1e-5 * np.abs(got).max())
    np.testing.assert_allclose(e.meta["relevance_top"], top)
    assert e.meta["relevance_layers"][0] == refnet.nodes[-1]["name"]


@pytest.mark.parametrize("preset", ["deep_taylor", "deep_taylor_bounded", "lrp_alpha1beta0"])
def test_z_plus_presets_can_start_from_the_signed_score(preset):
    """``positive_top=False`` starts the z+ presets from the signed score (what the
    randomization checks need): on the lowest-scoring class, whose logit is negative, the
    default map is all zero and the signed one matches the reference started from the logit."""
    model, refnet = net("residual")
    x = net_input(model)
    logits = refnet.forward(x)[refnet.nodes[-1]["name"]]
    low = ClassTarget(logits.argmin(1))
    assert (logits.min(1) < 0).all()
    kw = PRESET_KW.get(preset, {})
    default = cv.get_method(preset)(model, **kw)
    signed = cv.get_method(preset)(model, positive_top=False, **kw)
    assert default.positive_top and not signed.positive_top
    assert np.abs(raw(default, x, low)[0]).max() == 0
    got, idx, _, _ = raw(signed, x, low)
    rules, sum_rule, _ = preset_reference("residual", preset, refnet)
    assert_close(got, reference(refnet, x, rules, idx, False, sum_rule), f"residual {preset} signed top")


@pytest.mark.parametrize("reduce", ["mean", "sum", "max"])
def test_neuron_target_matches_reference(reduce):
    """NeuronTarget: the starting relevance is the channel's map (/ size, or at its max)."""
    model, refnet = net("residual")
    x = net_input(model)
    exp = explainer("residual", "deep_taylor")
    got, idx, top, _ = raw(exp, x, NeuronTarget("r1", "top", reduce))
    v = refnet.forward(x)["r1"].reshape(len(x), -1, 4)
    chan = v[np.arange(len(x)), :, idx]  # (N, positions)
    r0 = np.zeros_like(v)
    if reduce == "max":
        pos = chan.argmax(1)
        r0[np.arange(len(x)), pos, idx] = chan[np.arange(len(x)), pos]
    else:
        r0[np.arange(len(x)), :, idx] = chan / (chan.shape[1] if reduce == "mean" else 1)
    score = {"mean": chan.mean(1), "sum": chan.sum(1), "max": chan.max(1)}[reduce]
    np.testing.assert_allclose(top, score, rtol=1e-12)
    assert np.all(score > 0)
    rules = {k: v for k, v in dt_rules("residual", refnet).items() if k in ("c1", "c2", "sc")}
    want = refnet.relevance(x, rules, "r1", r0.reshape(len(x), -1))[0]
    assert_close(got, want, f"neuron {reduce}")


def test_epsilon_meta_locates_absorption():
    """relevance_sums steps by exactly the bias/epsilon share at each layer (reference)."""
    model, refnet = net("dense")
    x = net_input(model)
    e = explainer("dense", "lrp_epsilon").explain(x)
    v = refnet.forward(x)
    r = ref.class_relevance(v["out"], e.indices)
    steps = [r.sum(1)]
    for nd, src in (("out", "d2"), ("d2", "d1"), ("d1", "x")):
        node = next(n for n in refnet.nodes if n["name"] == nd)
        r = ref.linear_relevance(("epsilon", 0.01, True), v[src], node["m"], node["b"], r)
        steps.append(r.sum(1))
    sums = e.meta["relevance_sums"]
    assert e.meta["relevance_layers"] == ["out", "d2", "d1", "flat"]
    np.testing.assert_allclose(sums[:, :3], np.stack(steps[1:], 1), rtol=1e-5)
    np.testing.assert_allclose(e.meta["absorbed_fraction"], (steps[0] - steps[-1]) / steps[0], rtol=1e-4)


# ---------------------------------------------------------------------- identities
@pytest.mark.parametrize("name", ["residual", pytest.param("dense", marks=pytest.mark.slow),
                                  pytest.param("concat", marks=pytest.mark.slow)])
def test_lrp0_equals_gradient_x_input(name):
    """On a bias-free ReLU net LRP-0 (epsilon 0) is gradient x input."""
    model, _ = net(name, bias=False)
    x = net_input(model)
    lrp0 = cv.explain("lrp_epsilon", model, x, epsilon=0.0)
    gxi = cv.explain("gradient_x_input", model, x, target=ClassTarget(lrp0.indices))
    assert np.abs(gxi.attribution).max() > 0
    np.testing.assert_allclose(lrp0.attribution, gxi.attribution, rtol=1e-5,
                               atol=1e-6 * np.abs(gxi.attribution).max())


@pytest.mark.parametrize("name", ["residual", pytest.param("conv", marks=pytest.mark.slow)])
def test_zplus_equals_alpha1beta0_without_bias(name):
    """z+ everywhere == alpha1-beta0 with the bias ignored (nets with biases)."""
    model, _ = net(name)
    x = net_input(model)
    zp = LRP(model, composite=LayerMapComposite([(DENSE + CONVOLUTION + AVGPOOL, ZPlus())]), positive_top=True)
    ab = cv.get_method("lrp_alpha1beta0")(model, bias=False)
    a, b = raw(zp, x)[0], raw(ab, x)[0]
    assert np.abs(a).max() > 0
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12 * np.abs(a).max())
    # and with the bias in the denominator it differs (the identity is not vacuous)
    assert np.abs(raw(explainer(name, "lrp_alpha1beta0"), x)[0] - a).max() > 1e-6 * np.abs(a).max()


# ---------------------------------------------------------------------- errors, model safety
@pytest.mark.parametrize(
    "layer,type_name",
    [
        (keras.layers.LeakyReLU(name="odd"), "LeakyReLU"),
        (keras.layers.Activation("tanh", name="odd"), "Activation"),
        (keras.layers.Conv2D(3, 1, activation="sigmoid", name="odd"), "Conv2D"),
    ],
    ids=["leaky_relu", "tanh", "fused_sigmoid"],
)
def test_unsupported_layer_raises(layer, type_name):
    inp = keras.Input((6, 6, 2))
    y = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inp)
    y = layer(y)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(y)))
    with pytest.raises(UnsupportedLayerError) as err:
        cv.get_method("deep_taylor")(model)
    msg = str(err.value)
    assert "'odd'" in msg and type_name in msg and "deep_taylor" in msg


def test_unsupported_merge_raises():
    inp = keras.Input((4, 4, 2))
    a = keras.layers.Conv2D(2, 1, name="a")(inp)
    y = keras.layers.Multiply(name="gate")([a, inp])
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    with pytest.raises(UnsupportedLayerError, match=r"'gate'.*Multiply.*lrp_epsilon"):
        cv.get_method("lrp_epsilon")(model)


@pytest.mark.parametrize("preset", PRESETS)
def test_user_model_unchanged(preset):
    """Weights and outputs of the user's model are unchanged after building and explaining."""
    model, _ = net("bn")
    x = net_input(model)
    before, out = tiny.weights_snapshot(model), np.asarray(model(x, training=False))
    exp = explainer("bn", preset)  # built (weights copied, BN folded) and run on the net
    exp.explain(x)
    tiny.assert_model_unchanged(model, before, x, out)


def test_operator_add_with_broadcasting():
    """``a + b`` on KerasTensors (a keras.ops node), broadcasting a (N, 1, 1, C) term:
    relevance is split by SignedShare and summed back over the broadcast axes."""
    keras.utils.set_random_seed(1)
    inp = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(3, 3, padding="same", activation="relu")(inp)
    g = keras.layers.Conv2D(3, 1)(keras.layers.GlobalAveragePooling2D(keepdims=True)(a))
    y = keras.layers.ReLU()(a + g)
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(y)))
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype("float32")
    exp = cv.get_method("deep_taylor")(model)
    assert "SignedShare()" in exp.rules().values()
    e = exp.explain(x)
    ok = e.scores > 0
    assert ok.any()
    total = e.attribution.astype(np.float64).reshape(4, -1).sum(1)
    np.testing.assert_allclose(total[ok], e.scores[ok], rtol=1e-4)
    with pytest.raises(UnsupportedLayerError, match="adds a constant"):
        cv.get_method("deep_taylor")(keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(a + 1.0))))


# ---------------------------------------------------------------------- in-model preprocessing
SCALE, SHIFT = np.array([0.5, -0.25]), np.array([-1.0, 0.5])  # per channel; one negative scale


def _pre_and_post(pre_layer):
    """Model A = pre_layer -> body and model B = body with the same weights, fed with the
    preprocessed pixels: ``A(x) == B(x * SCALE + SHIFT)``."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((8, 8, 2))
    c1 = keras.layers.Conv2D(4, 3, activation="relu", name="c1")
    c2 = keras.layers.Conv2D(4, 3, name="c2")
    skip = keras.layers.Conv2D(4, 1, name="skip")
    head = keras.layers.Dense(3, name="out")

    def body(t):  # shared layers: the same weights in both models
        t = c1(t)
        t = keras.layers.ReLU()(keras.layers.Add()([t, skip(t)]))
        return head(keras.layers.GlobalAveragePooling2D()(c2(t)))

    a = keras.Model(inp, body(pre_layer(inp)), name="with_preprocessing")
    inp_b = keras.Input((8, 8, 2))
    b = keras.Model(inp_b, body(inp_b), name="without")
    head.bias.assign(np.full(3, 2.0, "float32"))  # positive logits: the z+ presets start from them
    return a, b


@pytest.mark.parametrize("kind", ["rescaling", "normalization"])
@pytest.mark.parametrize("preset", PRESETS)
def test_preprocessing_layer_is_transparent(preset, kind):
    """Rescaling / Normalization inside the model: the input relevance equals that of the
    same network without the layer, fed with the preprocessed pixels (bounds mapped through:
    a negative scale swaps them); sums are conserved through the layer."""
    if kind == "rescaling":
        pre = keras.layers.Rescaling(SCALE, offset=SHIFT, name="pre")
    else:  # (x - mean) / std == x * SCALE + SHIFT needs SCALE > 0
        pre = keras.layers.Normalization(mean=-SHIFT / np.abs(SCALE), variance=1.0 / SCALE**2, name="pre")
    a, b = _pre_and_post(pre)
    scale = SCALE if kind == "rescaling" else np.abs(SCALE)
    x = np.random.default_rng(5).uniform(0.0, 1.0, size=(4, 8, 8, 2)).astype("float32")
    xb = (x * scale + SHIFT).astype("float32")
    np.testing.assert_allclose(np.asarray(a(x)), np.asarray(b(xb)), rtol=1e-5, atol=1e-5)
    low, high = np.zeros(2), np.ones(2)
    lb, hb = np.minimum(low * scale + SHIFT, high * scale + SHIFT), np.maximum(low * scale + SHIFT, high * scale + SHIFT)
    kw_a = {"deep_taylor_bounded": dict(low=low, high=high), "lrp_composite": dict(first="zbox", low=low, high=high),
            "lrp_epsilon": dict(epsilon=0.01)}.get(preset, {})
    kw_b = {"deep_taylor_bounded": dict(low=lb, high=hb), "lrp_composite": dict(first="zbox", low=lb, high=hb),
            "lrp_epsilon": dict(epsilon=0.01)}.get(preset, {})
    ea, eb = cv.get_method(preset)(a, **kw_a), cv.get_method(preset)(b, **kw_b)
    ra, idx, _, sums_a = raw(ea, x)
    rb, _, _, _ = raw(eb, xb, ClassTarget(idx))
    assert_close(ra, rb, f"{kind} {preset}")
    # nothing is lost at the preprocessing layer: the sum before and after it is the same
    np.testing.assert_allclose(sums_a[:, -1], sums_a[:, -2], rtol=1e-9, atol=1e-9)


def test_per_pixel_preprocessing_is_unsupported():
    inp = keras.Input((4, 4, 2))
    y = keras.layers.Rescaling(np.ones((4, 4, 2)), name="pre")(inp)
    model = keras.Model(inp, keras.layers.Dense(2)(keras.layers.Flatten()(y)))
    with pytest.raises(UnsupportedLayerError, match=r"'pre'.*Rescaling.*deep_taylor.*shape \(4, 4, 2\)"):
        cv.get_method("deep_taylor")(model)
