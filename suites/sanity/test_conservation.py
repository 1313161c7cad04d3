"""Conservation: the input relevance of Deep Taylor and LRP-alpha1-beta0 sums to the top
relevance, on the five architectures and on tiny hand-set nets (the relevance headline).

``|sum(input relevance) - top| / |top| < 1e-3`` for every image of a batch of 4, for the
top class and for the most activated channel (mean) of an intermediate layer
(``spec.intermediate_layers[0]``).  Both presets start from ``max(0, score)``: the targets
are chosen so the score is positive (with random weights the top logit is positive, and
the intermediate layers are rectifier outputs whose most activated channel has a positive
mean) and the tests assert it, so the check is never vacuous.  The sum is recomputed here
from ``attribution`` and compared with ``scores`` (the target values), not with the
method's own diagnostics.

Epsilon presets do not conserve by design (biases and epsilon absorb relevance); for them
the absorbed fraction is recorded (``record_property``, printed with ``-s``) and checked
to be finite (and small on the random-weight architectures, whose biases are zero).
One explainer per (preset, architecture), reused for both targets.  By default:
deep_taylor on all five architectures and lrp_alpha1beta0 on MobileNetV2; the other
alpha1-beta0 cases and the architectures' absorbed fractions run with ``-m slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

import cnnvis_eval as cv
from cnnvis_eval.targets import ClassTarget, NeuronTarget
from suites.support.models import big_params, big_spec
from suites.support.relevance_nets import NETS, net_input

PRESETS = ("deep_taylor", "lrp_alpha1beta0")
TOL = 1e-3
_EXPLAINERS: dict = {}


def explainer(key, model, preset, **kw):
    if (key, preset) not in _EXPLAINERS:
        _EXPLAINERS[(key, preset)] = cv.get_method(preset)(model, **kw)
    return _EXPLAINERS[(key, preset)]


def conservation_error(e) -> np.ndarray:
    total = e.attribution.astype(np.float64).reshape(len(e.attribution), -1).sum(1)
    return np.abs(total - e.scores) / np.abs(e.scores)


def biggest_step(e, i: int) -> str:
    """Where image i loses most relevance (from the per-layer sums), for failure messages."""
    sums = np.concatenate([[e.meta["relevance_top"][i]], e.meta["relevance_sums"][i]])
    j = int(np.argmax(np.abs(np.diff(sums))))
    return f"largest step at {e.meta['relevance_layers'][j]!r}: {np.diff(sums)[j]:.3g}"


def check(e, what: str, record_property):
    assert np.all(e.scores > 0), f"{what}: score not positive ({e.scores}); the check would be vacuous"
    err = conservation_error(e)
    record_property(f"conservation_error[{what}]", float(err.max()))
    print(f"conservation {what}: max relative error {err.max():.2e}")
    worst = int(np.argmax(err))
    assert np.all(err < TOL), f"{what}: relative error {err} ({biggest_step(e, worst)})"


def _big_cases():
    """deep_taylor on all five; lrp_alpha1beta0 on MobileNetV2 by default (signed
    bottlenecks, the most zero-denominator fallback sites), on the others when slow."""
    cases = [pytest.param(p.values[0], "deep_taylor", id=f"{p.id}-deep_taylor") for p in big_params()]
    for p in big_params():
        marks = () if p.values[0] == "mobilenet_v2" else pytest.mark.slow
        cases.append(pytest.param(p.values[0], "lrp_alpha1beta0", id=f"{p.id}-lrp_alpha1beta0", marks=marks))
    return cases


@pytest.mark.parametrize("arch,preset", _big_cases())
def test_conservation_big(arch, preset, big_input, record_property):
    spec = big_spec(arch)
    x = big_input(spec, n=4)
    exp = explainer(spec.name, spec, preset)
    check(exp.explain(x, ClassTarget("top")), f"{spec.name} {preset} top class", record_property)
    layer = spec.intermediate_layers[0]
    check(exp.explain(x, NeuronTarget(layer, "top", "mean")), f"{spec.name} {preset} {layer}", record_property)


# rectified intermediate layer of each tiny net
INTERMEDIATE = {"dense": "d2", "conv": "relu6", "residual": "r1", "concat": "cat", "bn": "r6"}


def positive_batch(model, n: int = 4) -> np.ndarray:
    """The first n of 64 seeded inputs whose largest logit is positive (deterministic)."""
    x = net_input(model, n=64, seed=3)
    keep = np.asarray(model(x)).max(axis=1) > 0
    assert keep.sum() >= n, "too few inputs with a positive top logit"
    return x[keep][:n]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", list(NETS))
def test_conservation_tiny(name, preset, record_property):
    """Tiny nets with non-positive biases (alpha-beta puts positive biases in its
    denominator, where they absorb relevance by design; z+ ignores biases)."""
    model, _ = NETS[name](bias="negative")
    x = positive_batch(model)
    exp = cv.get_method(preset)(model)
    # per image, the class with the largest logit; must be positive (asserted in check)
    check(exp.explain(x, ClassTarget("top")), f"{name} {preset} top class", record_property)
    check(exp.explain(x, NeuronTarget(INTERMEDIATE[name])), f"{name} {preset} {INTERMEDIATE[name]}",
          record_property)


@pytest.mark.parametrize("name", list(NETS))
def test_alpha1beta0_absorbs_positive_bias(name):
    """With positive biases alpha1-beta0 loses relevance (their share); z+ does not."""
    model, _ = NETS[name](bias=True)
    x = net_input(model, n=4, seed=3)
    ab = cv.get_method("lrp_alpha1beta0")(model).explain(x)
    ok = ab.scores > 0
    assert ok.any()
    assert np.all(ab.meta["absorbed_fraction"][ok] > 1e-6)
    dt = cv.get_method("deep_taylor")(model).explain(x)
    assert np.all(conservation_error(dt)[dt.scores > 0] < TOL)


# ---------------------------------------------------------------------- Excitation Backprop
def check_probability(e, what: str, record_property):
    """Excitation Backprop's winning probabilities: non-negative, summing to 1 per image."""
    total = e.attribution.astype(np.float64).reshape(len(e.attribution), -1).sum(1)
    err = np.abs(total - 1.0)
    record_property(f"probability_sum_error[{what}]", float(err.max()))
    assert np.all(e.attribution >= 0), f"{what}: negative probability {e.attribution.min()}"
    assert np.all(err < TOL), f"{what}: probabilities sum to {total}"


@pytest.mark.parametrize("name", list(NETS))
def test_excitation_backprop_probabilities_tiny(name, record_property):
    """The MWP sums to 1 at the input for a class and for a channel (whatever the sign of
    the score: the prior is the one-hot class); biases of any sign (MWP ignores them)."""
    model, _ = NETS[name](bias=True)
    x = net_input(model, n=4, seed=3)
    exp = cv.get_method("excitation_backprop")(model)
    check_probability(exp.explain(x, ClassTarget(0)), f"{name} class 0", record_property)
    e = exp.explain(x, NeuronTarget(INTERMEDIATE[name]))
    assert np.all(e.scores > 0)
    check_probability(e, f"{name} {INTERMEDIATE[name]}", record_property)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [p.values[0] for p in big_params()], ids=[p.id for p in big_params()])
def test_excitation_backprop_probabilities_big(arch, big_input, record_property):
    spec = big_spec(arch)
    x = big_input(spec, n=4)
    e = explainer(spec.name, spec, "excitation_backprop").explain(x, ClassTarget("top"))
    check_probability(e, f"{spec.name} top class", record_property)


# ---------------------------------------------------------------------- epsilon presets
EPSILON = ("lrp_epsilon", "lrp_composite", "lrp_epsilon_gamma_box", "lrp_epsilon_plus_flat")
TINY_KW = {"lrp_epsilon_gamma_box": dict(low=-2.0, high=2.0)}  # net_input's range; the nets have no spec


@pytest.mark.parametrize("preset", EPSILON)
@pytest.mark.parametrize("name", list(NETS))
def test_absorbed_fraction_tiny(name, preset, record_property):
    model, _ = NETS[name](bias=True)
    x = net_input(model, n=4, seed=3)
    e = cv.get_method(preset)(model, **TINY_KW.get(preset, {})).explain(x)
    frac = e.meta["absorbed_fraction"]
    record_property(f"absorbed_fraction[{name} {preset}]", frac.tolist())
    print(f"absorbed fraction {name} {preset}: {np.round(frac, 4)}")
    assert np.all(np.isfinite(frac))
    # the definition: (top - sum of input relevance) / top
    total = e.attribution.astype(np.float64).reshape(4, -1).sum(1)
    np.testing.assert_allclose(frac, (e.meta["relevance_top"] - total) / e.meta["relevance_top"],
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("preset", EPSILON)
@pytest.mark.parametrize("arch", [p.values[0] for p in big_params()], ids=[p.id for p in big_params()])
def test_absorbed_fraction_big(arch, preset, big_input, record_property):
    """Random-weight architectures have zero biases, so only epsilon (1e-6, absolute)
    absorbs: each layer keeps z / (z + eps sign z) of its relevance, and the fraction lies
    in [0, 1].  It is large where activations are tiny against epsilon (random-weight
    MobileNetV2's logits are ~1e-11, so nearly everything is absorbed)."""
    spec = big_spec(arch)
    x = big_input(spec, n=4)
    e = explainer(spec.name, spec, preset).explain(x)
    frac = e.meta["absorbed_fraction"]
    record_property(f"absorbed_fraction[{arch} {preset}]", frac.tolist())
    print(f"absorbed fraction {arch} {preset}: {frac} (scores {e.scores})")
    assert np.all(np.isfinite(frac)) and np.all((frac > -1e-4) & (frac < 1 + 1e-6))
