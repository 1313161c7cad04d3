"""The checks of a user's model, each decided relative to controls on the same model and images.

Every check is a function ``(ctx, method, variant) -> Verdict`` registered in :data:`CHECKS`
with its variants; :func:`run_check` runs one and turns "this method does not apply to this
model" into ``n/a`` and a predicted failure into ``known_failure``.  Thresholds come from
:mod:`cnnvis_eval.testing.thresholds`, citations from :mod:`cnnvis_eval.testing.known`; the
measurements are the library's metrics (:mod:`cnnvis_eval.metrics`).

==================  ==========================================  ==================================
check               variants                                    controls
==================  ==========================================  ==================================
randomization       cascading_top, cascading_half,              edge_sobel (must stay ~1),
                    cascading_all, independent                  saliency (reference)
class_sensitivity   (one)                                       edge_sobel, saliency
faithfulness        deletion, insertion, road                   random pixel orders, edge_sobel
invariance          batch, determinism, shift                   saliency
stability           (one)                                       saliency, edge_sobel
conservation        (one; n/a unless the method claims it)      none
localization        pointing_game, relevance_mass (masks only)  random explainer (chance), edge
cost                (one)                                       forward+backward seconds
==================  ==========================================  ==================================
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .. import metrics as M
from ..errors import UnsupportedArchitectureError, UnsupportedLayerError
from ..targets import ClassTarget
from .context import CheckContext
from .known import known_failure
from .thresholds import THRESHOLDS
from .verdict import Verdict

N_RANDOM_ORDERS = 3  # random pixel orders (seeds) the faithfulness control averages
N_NOISE = 4  # noise samples of the stability check
INVARIANCE_IMAGES = 4
"""Images the batch and determinism checks use (the first ones): coupling between the images
of a batch, or a seed that does not repeat, shows on any four images; every image would
double the cost of the slowest methods for no new information."""
FAITHFULNESS_STEPS = 32
"""Points of the deletion and insertion curves of the faithfulness check (ceil(H*W / 32)
pixels per step).  Petsiuk et al. (2018) delete one image row's worth of pixels per step
(225 points at 224 px); the area under the curve is a mean over the curve, and the check's gain over the
random orders moves by <= 0.006 x mean |logit| between the two resolutions on 4 images of
mini_vgg and mini_resnet (0.012 on 2 images; the threshold is 0.1)
(suites/unit/test_testing_checks.py::test_faithfulness_at_32_steps_matches_petsiuk_resolution)
while the check then costs 7x fewer forward passes at 224 px (6 curves per variant before the
first method: 3 random orders, their spread, the edge control)."""
CURVE_BATCH = 32
"""Model inputs per compiled call of the faithfulness curves (the metrics' default is 128).
At 224 px an early MobileNetV2 activation of 128 inputs holds ~600 MB, and TensorFlow's pooled
CPU allocator (:mod:`cnnvis_eval.runtime`) keeps a process's high-water mark: measured on a
deletion curve of 8 images (MobileNetV2, 224 px, 33 points), peak RSS 2.80 GB at 128 vs
1.32 GB at 32, 5.78 vs 5.65 s per curve."""
REUSE_TIMING_CALLS = 100
"""A method that runs at least this many model inputs per image (LIME, RISE, occlusion) is
timed by the cost check on the explanation the other checks already ran (its wall time,
tracing included: one trace next to hundreds of batched forward passes per image) instead of
running it once more; cheaper methods are timed on a further, traced run."""
REPEAT_BUDGET = 400
"""Model inputs per repetition of the checks that re-run a method on the images
(randomization: 3 cascading steps and 1 independent one; stability: N_NOISE draws;
invariance: the batch, each image alone, a fresh explainer and the shifted input; class
sensitivity: the runner-up class).  A method that runs
``calls_per_image`` model inputs per image (LIME, RISE, occlusion) repeats on the first
max(REPEAT_MIN_IMAGES, REPEAT_BUDGET // calls_per_image) images (LIME at 200 samples: 2), the
others on every image; the verdict's reason says so.  At 224 px on 2 cores a MobileNetV2
forward pass is ~27 ms, so LIME at 200 samples through those 10 repetitions takes ~54 s per
image: 7 minutes on 8 images, 1.8 on 2.  Measured, the whole check of the study's seven
methods on MobileNetV2 (8 photos): 672 s with 4 repeated images, 582 s with 2 (goal 600 s)."""
REPEAT_MIN_IMAGES = 2
"""The fewest images a repeated check of a perturbation method uses (all of them if fewer)."""
CONTROL_EDGE, CONTROL_GRADIENT, CONTROL_RANDOM = "edge_sobel", "saliency", "random"


def repeat_images(ctx: CheckContext, method: str) -> int:
    """Images the repeated checks use for ``method`` (see :data:`REPEAT_BUDGET`)."""
    n = len(ctx.x)
    calls = getattr(ctx.explainer(method), "calls_per_image", None)
    if calls is None:
        return n
    return int(min(n, max(REPEAT_MIN_IMAGES, REPEAT_BUDGET // max(1, int(calls(ctx.x.shape[1:]))))))


def _subset_note(ctx: CheckContext, n: int) -> str:
    return "" if n == len(ctx.x) else (f"on the first {n} of {len(ctx.x)} images (a perturbation method: "
                                       f"{REPEAT_BUDGET} model inputs per repetition, checks.REPEAT_BUDGET)")


def _verdict(ctx: CheckContext, method: str, key: str, value: float, controls: dict, *, status: str | None = None,
             reason: str = "") -> Verdict:
    """A verdict against ``THRESHOLDS[key]`` (or the given status)."""
    thr = THRESHOLDS.get(key)
    if status is None:
        status = "pass" if thr.passes(value) else "fail"
    return Verdict(ctx.name, method, key, status, value, "" if thr is None else str(thr),
                   {k: float(v) for k, v in controls.items()}, reason)


# ---------------------------------------------------------------------- randomization
def coarse_groups(spec) -> list[tuple[str, list[str]]]:
    """Three steps, top down, as ``suites/sanity/test_randomization.py``: ``logits`` (the
    output group), ``top_half`` (groups 1 .. max(2, G // 2) - 1), ``rest``."""
    groups = M.layer_groups(spec, "block")
    half = max(2, len(groups) // 2)
    out = [("logits", list(groups[0].layers)),
           ("top_half", [n for g in groups[1:half] for n in g.layers]),
           ("rest", [n for g in groups[half:] for n in g.layers])]
    return [(name, layers) for name, layers in out if layers]


_STEP = {"cascading_top": ("cascading", 1), "cascading_half": ("cascading", 2), "cascading_all": ("cascading", 3),
         "independent": ("independent", 3)}


def _randomization_similarity(ctx: CheckContext, method: str, mode: str, step: int) -> float:
    def curve():
        cls = ctx.method_class(method)
        extra = {"positive_top": False} if getattr(cls, "positive_top", False) else {}  # as the suite: see its notes
        n = repeat_images(ctx, method)
        original = None if extra else _first(ctx.explain(method), n)  # step 0: already run
        groups = coarse_groups(ctx.spec)
        # the independent verdict reads one step: the others are not explained
        steps = None if mode == "cascading" else (min(_STEP["independent"][1], len(groups)),)
        # the context's own explainer on the context's own model, randomized in place and
        # restored: no clone, no new trace (the model is the session's, loaded from the file)
        return M.randomization_curve(ctx.spec, ctx.x[:n], ctx.explainer(method, **extra), mode=mode,
                                     granularity=groups, similarity=("spearman_abs",), seed=ctx.seed,
                                     reuse_explainer=cls.follows_weights(), original=original, only_steps=steps,
                                     in_place=True)

    c = ctx.memo(("randomization", method, mode), curve)
    step = min(step, int(c["step"].max()))
    return float(c[c["step"] == step]["value"].mean())


def _first(exp, n: int):
    """The explanation of the first ``n`` images of a batch's explanation."""
    import dataclasses

    if n == len(exp):
        return exp
    return dataclasses.replace(exp, heatmap=exp.heatmap[:n], indices=exp.indices[:n], scores=exp.scores[:n],
                               attribution=None if exp.attribution is None else exp.attribution[:n], meta={})


def check_randomization(ctx: CheckContext, method: str, variant: str) -> Verdict:
    """Model-parameter randomization (Adebayo et al. 2018): mean spearman_abs between the map
    of the trained model and that of the randomized one; the edge control must stay above
    ``randomization.control`` (else the similarity cannot see a model-blind map: inconclusive).

    The context's model is randomized in place with the context's traced explainers and
    restored bit for bit afterwards, also on error
    (:func:`~cnnvis_eval.metrics.randomization.randomization_explanations`, ``in_place``)."""
    mode, step = _STEP[variant]
    controls = {c: _randomization_similarity(ctx, c, mode, step) for c in (CONTROL_EDGE, CONTROL_GRADIENT)}
    value = _randomization_similarity(ctx, method, mode, step)
    if not THRESHOLDS["randomization.control"].passes(controls[CONTROL_EDGE]):
        return _verdict(ctx, method, f"randomization.{variant}", value, controls, status="inconclusive",
                        reason="the model-blind edge control changed under randomization")
    return _verdict(ctx, method, f"randomization.{variant}", value, controls,
                    reason=_subset_note(ctx, repeat_images(ctx, method)))


# ---------------------------------------------------------------------- class sensitivity
def _class_similarity(ctx: CheckContext, method: str, keep: np.ndarray, top: np.ndarray, other: np.ndarray) -> float:
    base = ctx.explain(method)  # the top class of every image: reused when it is the same target
    if np.array_equal(base.indices[keep], top[keep]):
        a = base.heatmap[keep]
    else:
        a = ctx.explain(method, ClassTarget(top[keep]), ctx.x[keep]).heatmap
    b = ctx.explain(method, ClassTarget(other[keep]), ctx.x[keep]).heatmap
    return float(M.evaluate("spearman_abs", a, b).mean())


def check_class_sensitivity(ctx: CheckContext, method: str, variant: str | None = None) -> Verdict:
    """The map of the top class vs the map of the runner-up class (Sixt et al. 2020), on the
    images whose runner-up has a positive logit; ``inconclusive`` when there is none."""
    logits = ctx.logits()
    key = "class_sensitivity"
    if logits.shape[1] < 2:
        return _verdict(ctx, method, key, math.nan, {}, status="n/a", reason="the model has a single output")
    order = np.argsort(-logits, axis=1, kind="stable")
    top, other = order[:, 0].astype(np.int32), order[:, 1].astype(np.int32)
    keep = THRESHOLDS["class_sensitivity.second_logit"].value < logits[np.arange(len(logits)), other]
    if not keep.any():
        return _verdict(ctx, method, key, math.nan, {}, status="inconclusive",
                        reason="no image has a second class with a positive logit")
    controls = {c: ctx.memo(("class", c), lambda c=c: _class_similarity(ctx, c, keep, top, other))
                for c in (CONTROL_EDGE, CONTROL_GRADIENT)}
    n = repeat_images(ctx, method)  # a perturbation method: the first n of the kept images
    mine = np.zeros_like(keep)
    mine[np.flatnonzero(keep)[:n]] = True
    value = _class_similarity(ctx, method, mine, top, other)
    note = "" if mine.sum() == keep.sum() else (
        f"; the method on the first {int(mine.sum())} of them (a perturbation method: {REPEAT_BUDGET} "
        "model inputs per repetition, checks.REPEAT_BUDGET)")
    return _verdict(ctx, method, key, value, controls, reason=f"{int(keep.sum())} of {len(keep)} images{note}")


# ---------------------------------------------------------------------- faithfulness
def _auc(ctx: CheckContext, variant: str, heat: np.ndarray) -> np.ndarray:
    """(N,) area of the variant's curve for the heatmaps (the top class of each image)."""
    per_step = -(-heat.shape[1] * heat.shape[2] // FAITHFULNESS_STEPS)
    if variant == "deletion":
        return M.deletion_curve(ctx.spec, ctx.x, heat, pixels_per_step=per_step, batch_size=CURVE_BATCH).auc()
    if variant == "insertion":
        return M.insertion_curve(ctx.spec, ctx.x, heat, pixels_per_step=per_step, batch_size=CURVE_BATCH).auc()
    return M.faithfulness.road_curve(ctx.spec, ctx.x, heat, seed=ctx.seed, batch_size=CURVE_BATCH).auc()


def _gain(ctx: CheckContext, variant: str, heat: np.ndarray) -> float:
    """Gain of an order over the random orders, in units of the mean |top logit|."""
    random = ctx.memo(("random_auc", variant), lambda: np.mean([
        _auc(ctx, variant, M.RandomExplainer(ctx.spec, seed=ctx.seed + s).explain(ctx.x, progress=False).heatmap)
        for s in range(N_RANDOM_ORDERS)], axis=0))
    scale = max(float(np.abs(ctx.logits().max(1)).mean()), 1e-12)
    diff = _auc(ctx, variant, heat) - random
    return float((diff if variant == "insertion" else -diff).mean() / scale)


def check_faithfulness(ctx: CheckContext, method: str, variant: str) -> Verdict:
    """Deletion / insertion (Petsiuk et al. 2018) or ROAD (Rong et al. 2022) against random
    pixel orders: the gain over the mean random order, per mean |logit|."""
    def spread():  # how far one random order is from the mean of the others: the noise floor
        heat = M.RandomExplainer(ctx.spec, seed=ctx.seed + N_RANDOM_ORDERS).explain(ctx.x, progress=False).heatmap
        return _gain(ctx, variant, heat)

    controls = {"random_order": ctx.memo(("random_spread", variant), spread),
                CONTROL_EDGE: ctx.memo(("faith", CONTROL_EDGE, variant),
                                       lambda: _gain(ctx, variant, ctx.explain(CONTROL_EDGE).heatmap))}
    value = _gain(ctx, variant, ctx.explain(method).heatmap)
    return _verdict(ctx, method, f"faithfulness.{variant}", value, controls)


# ---------------------------------------------------------------------- invariance
def _deviation(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want| (as suites/sanity/test_invariance.py)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.abs(want).max()
    return float(np.abs(got - want).max() / scale) if scale > 0 else float(np.abs(got).max())


def _batch_run(ctx: CheckContext, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(order, heatmaps)``: the context's explainer on the first INVARIANCE_IMAGES images
    (a perturbation method: at most :func:`repeat_images`) as one batch, reversed and with
    the first image twice (memoized: the batch and the determinism checks both read it)."""
    def run():
        order = np.r_[np.arange(min(INVARIANCE_IMAGES, repeat_images(ctx, method)))[::-1], 0]
        return order, ctx.explainer(method).explain(ctx.x[order], progress=False).heatmap

    return ctx.memo(("batch_run", method), run)


def _invariance(ctx: CheckContext, method: str, variant: str) -> float:
    ex = ctx.explainer(method)
    if variant == "batch":  # the batch vs each image alone
        order, batch = _batch_run(ctx, method)
        single = {i: ex.explain(ctx.x[i:i + 1], progress=False).heatmap for i in sorted(set(order.tolist()))}
        return _deviation(batch, np.concatenate([single[i] for i in order]))
    if variant == "determinism":
        # a fresh explainer with the same parameters (and seed) gives exactly the maps of the
        # context's explainer on the same batch (which has served other calls before it: state
        # carried from call to call shows too)
        order, first = _batch_run(ctx, method)
        fresh = ctx.method_class(method)(ctx.spec, **ctx.method_params(method))
        return _deviation(fresh.explain(ctx.x[order], progress=False).heatmap, first)
    n = repeat_images(ctx, method)  # the unshifted maps: already run (as randomization's step 0)
    e1, e2 = M.axioms.input_shift_explanations(ctx.spec, ctx.x[:n], ex, original=_first(ctx.explain(method), n))
    return float(M.axioms.relative_l1(e1.heatmap, e2.heatmap).max())


def check_invariance(ctx: CheckContext, method: str, variant: str) -> Verdict:
    """Batch invariance, seeded determinism and constant input shift (Kindermans et al.
    2017): the largest relative deviation over the images."""
    controls = {CONTROL_GRADIENT: ctx.memo(("inv", variant), lambda: _invariance(ctx, CONTROL_GRADIENT, variant))}
    note = _subset_note(ctx, repeat_images(ctx, method))
    return _verdict(ctx, method, f"invariance.{variant}", _invariance(ctx, method, variant), controls, reason=note)


# ---------------------------------------------------------------------- stability
def _max_sensitivity(ctx: CheckContext, method: str) -> tuple[float, int]:
    """Mean over images of the largest relative L1 change of the map under uniform noise of
    ``stability.noise`` x the input range that keeps the top class; and the samples kept."""
    rng = np.random.default_rng(ctx.seed)
    amp = THRESHOLDS["stability.noise"].value * ctx.input_width()
    n = repeat_images(ctx, method)  # the same noise on the first n images as for every method
    base = ctx.explain(method).heatmap[:n]
    top = ctx.logits().argmax(1)[:n]
    worst = np.full(n, np.nan)
    kept = 0
    for _ in range(N_NOISE):
        xn = (ctx.x + rng.uniform(-1, 1, ctx.x.shape) * amp).astype(ctx.x.dtype)[:n]
        exp = ctx.explainer(method).explain(xn, progress=False)
        same = exp.indices == top
        kept += int(same.sum())
        err = M.axioms.relative_l1(base, exp.heatmap)
        worst = np.where(same, np.fmax(worst, err), worst)
    return float(np.nanmean(worst)) if kept else math.nan, kept


def check_stability(ctx: CheckContext, method: str, variant: str | None = None) -> Verdict:
    """Max-sensitivity (Yeh et al. 2019) under noise that does not change the prediction."""
    controls = {c: ctx.memo(("stab", c), lambda c=c: _max_sensitivity(ctx, c)[0])
                for c in (CONTROL_GRADIENT, CONTROL_EDGE)}
    value, kept = _max_sensitivity(ctx, method)
    if not kept:
        return _verdict(ctx, method, "stability", value, controls, status="inconclusive",
                        reason="every noise sample changed the prediction")
    return _verdict(ctx, method, "stability", value, controls, reason=_subset_note(ctx, repeat_images(ctx, method)))


# ---------------------------------------------------------------------- conservation
CLAIMS_CONSERVATION = {"integrated_gradients": "conservation.integrated_gradients",
                       "deep_taylor": "conservation.relevance", "lrp_alpha1beta0": "conservation.relevance"}
"""Methods that claim completeness / conservation, and their threshold (the epsilon presets
absorb relevance in biases and epsilon by design; see suites/sanity/test_conservation.py)."""


def check_conservation(ctx: CheckContext, method: str, variant: str | None = None) -> Verdict:
    """Relative conservation error (:class:`~cnnvis_eval.metrics.axioms.ConservationError`),
    largest over the images; relevance presets only on images whose explained score is > 0
    (they start from max(0, score))."""
    key = CLAIMS_CONSERVATION.get(method)
    if key is None:
        return _verdict(ctx, method, "conservation", math.nan, {}, status="n/a",
                        reason=f"{method} does not claim completeness or conservation")
    exp = ctx.explain(method)
    err = M.evaluate("conservation_error", exp)
    keep = np.ones(len(err), bool) if method == "integrated_gradients" else exp.scores > 0
    if not keep.any():
        return _verdict(ctx, method, key, math.nan, {}, status="inconclusive",
                        reason="no image has a positive explained score")
    return _verdict(ctx, method, key, float(err[keep].max()), {})


# ---------------------------------------------------------------------- localization
_LOCALIZATION = {"pointing_game": "pointing_game", "relevance_mass": "relevance_mass_accuracy"}


def check_localization(ctx: CheckContext, method: str, variant: str) -> Verdict:
    """Pointing game / relevance mass against the masks, as a margin over the seeded random
    explainer (chance); ``n/a`` without masks."""
    key = f"localization.{variant}"
    if ctx.masks is None:
        return _verdict(ctx, method, key, math.nan, {}, status="n/a", reason="no ground-truth masks given")
    metric = _LOCALIZATION[variant]

    def score(heat):
        return float(np.nanmean(M.evaluate(metric, heat, ctx.masks)))

    chance = ctx.memo(("loc_random", variant), lambda: np.mean([
        score(M.RandomExplainer(ctx.spec, seed=ctx.seed + s).explain(ctx.x, progress=False).heatmap)
        for s in range(N_RANDOM_ORDERS)]))
    controls = {CONTROL_RANDOM: chance,
                CONTROL_EDGE: ctx.memo(("loc_edge", variant), lambda: score(ctx.explain(CONTROL_EDGE).heatmap))}
    return _verdict(ctx, method, key, score(ctx.explain(method).heatmap) - chance, controls,
                    reason="value = score - random explainer's score")


# ---------------------------------------------------------------------- cost
def check_cost(ctx: CheckContext, method: str, variant: str | None = None) -> Verdict:
    """Median seconds of the method over one compiled forward+backward pass, same images."""
    from ..evaluation.cost import median_seconds, reference_passes

    def reference():
        _, fb = reference_passes(ctx.spec)
        x32 = ctx.x.astype(np.float32)
        return median_seconds(lambda: fb(x32), rounds=3)

    t_ref = ctx.memo("cost_reference", reference)
    ex = ctx.explainer(method)
    calls = getattr(ex, "calls_per_image", None)
    if calls is not None and calls(ctx.x.shape[1:]) >= REUSE_TIMING_CALLS:
        t = ctx.explain_seconds(method)  # hundreds of forward passes per image: tracing is noise
    else:
        traced = ctx.has(("explain", method))  # an earlier check ran it: traced, no warm-up call needed
        t = median_seconds(lambda: ex.explain(ctx.x, progress=False).heatmap, rounds=1, warmup=0 if traced else 1)
    return _verdict(ctx, method, "cost", t / max(t_ref, 1e-9), {"forward_backward_seconds": t_ref})


# ---------------------------------------------------------------------- registry
CHECKS: dict[str, tuple[tuple, Callable]] = {
    "randomization": (("cascading_top", "cascading_half", "cascading_all", "independent"), check_randomization),
    "class_sensitivity": ((None,), check_class_sensitivity),
    "faithfulness": (("deletion", "insertion", "road"), check_faithfulness),
    "invariance": (("batch", "determinism", "shift"), check_invariance),
    "stability": ((None,), check_stability),
    "conservation": ((None,), check_conservation),
    "localization": (("pointing_game", "relevance_mass"), check_localization),
    "cost": ((None,), check_cost),
}
"""check name -> (variants, function ``(ctx, method, variant) -> Verdict``); None = no variant."""

NOT_APPLICABLE = (UnsupportedArchitectureError, UnsupportedLayerError)


def run_check(ctx: CheckContext, check: str, method: str, variant: str | None = None) -> Verdict:
    """Run one check; a method that does not apply to the model gives ``n/a`` with the
    library's message, a predicted failure carries its citation (``known_failure``)."""
    from ..errors import InputError

    if check not in CHECKS:
        raise InputError(f"unknown check {check!r}; available: {', '.join(CHECKS)}")
    variants, fn = CHECKS[check]
    if variant not in variants:
        raise InputError(f"check {check!r} has variants {[v for v in variants if v]}, got {variant!r}")
    try:
        v = fn(ctx, method, variant)
    except NOT_APPLICABLE as err:
        name = check if variant is None else f"{check}.{variant}"
        return Verdict(ctx.name, method, name, "n/a", reason=f"{method} does not apply to this model: {err}")
    if v.status == "fail":
        v.known_failure = known_failure(check, variant, method)
    return v


__all__ = ["CHECKS", "CLAIMS_CONSERVATION", "coarse_groups", "run_check"] + [f"check_{c}" for c in CHECKS]
