"""Explanations at every randomization step and their similarity to the original one.

:func:`randomization_explanations` runs an explainer on the original model and at every
step of :func:`~cnnvis_eval.metrics.randomization.randomized_models`' sequence;
:func:`randomization_curve` turns that into a long DataFrame of similarities (per image,
per step, per similarity metric); :class:`ModelParameterRandomization` reduces it to one
value per image.  :func:`compare_models` compares the explanations of two models (e.g. one
trained on permuted labels).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from ...errors import InputError
from ...methods.base import Explanation
from ...models.clone import clone_with_weights
from ...models.spec import as_spec
from ...quiet import quiet_retracing
from ...targets import bind, fixed_target, user_target
from ..base import Metric, explainer_factory, given_or_explained, make_metric, method_name, register_metric
from .randomize import _Randomizer, layer_groups

DEFAULT_SIMILARITY = ("spearman_abs", "spearman_signed", "ssim", "hog")
"""The similarity metrics of Adebayo et al. used by :func:`randomization_curve`."""


def randomization_explanations(
    model, x, explainer, target=None, *, mode: str = "cascading", granularity: str | Sequence = "block",
    seed: int = 0, batch_size: int | None = None, max_steps: int | None = None,
    reuse_explainer: bool = False, original: Explanation | None = None, only_steps: Sequence[int] | None = None,
    in_place: bool = False, **explainer_params,
) -> Iterator[tuple[int, str, Explanation]]:
    """Explain ``x`` on the original model and at every randomization step.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified: all work happens on one clone (or, with ``in_place``, on the model
        itself, whose weights are restored before this returns).
    x : array (N, H, W, C)
    explainer : method name, Explainer class or instance, or factory ``spec -> Explainer``
    target : ClassTarget, NeuronTarget, int or None
        "top" is resolved on the original model and kept fixed for every step, so each
        step explains the same class/channel.
    mode, granularity, seed, max_steps
        See :func:`~cnnvis_eval.metrics.randomization.randomized_models`.
    batch_size : int, optional
        Passed to ``explain``.
    reuse_explainer : bool
        Keep one explainer for all steps (see :mod:`cnnvis_eval.metrics.randomization`); its
        ``sync_weights()`` is called after every weight change.  Default False.  Refused for
        a method that can follow no weight change
        (:meth:`~cnnvis_eval.methods.base.Explainer.follows_weights`).
    original : Explanation, optional
        The explanation of ``x`` on the unmodified model by the same explainer and
        parameters, when the caller has it already (step 0 then costs nothing; its
        ``indices`` fix the target of every step).  Must hold one map per image of ``x``.
    only_steps : sequence of int, optional
        Explain only at these steps (k >= 1; step 0 is always yielded).  Not ``steps``: that
        name is the integration steps of the path methods, passed on in ``explainer_params``.  The weights still
        change at every step as ``mode`` says (in cascading mode step 3 has groups 1-3
        randomized whether or not steps 1 and 2 are explained).
    in_place : bool
        Randomize the model's own variables and restore them (bit for bit, also when the
        caller stops early or a step raises) instead of working on a clone.  With an
        Explainer instance on ``model`` and ``reuse_explainer`` this builds and traces
        nothing: the explainer the caller has already traced serves every step (its
        ``sync_weights()`` runs after every change and after the restore).  Default False;
        only for a model no one else uses meanwhile (another thread would see the
        randomized weights) -- the check session's own model
        (:mod:`cnnvis_eval.testing.checks`).  Measured on MobileNetV2 224 px: the clone and
        one trace per method and mode were 5-30 s of each curve's 6-35 s.
    **explainer_params
        Constructor parameters when ``explainer`` is a name or class.

    Yields
    ------
    (step, name, Explanation)
        Step 0 is ``"original"``; step k >= 1 is the k-th group of
        :func:`~cnnvis_eval.metrics.randomization.layer_groups`.
    """
    factory = explainer_factory(explainer, **explainer_params)
    wanted = None if only_steps is None else {int(k) for k in only_steps}
    if wanted is not None and (not wanted or min(wanted) < 1):
        raise InputError(f"only_steps must be randomization steps >= 1, got {only_steps!r}")
    work = as_spec(model) if in_place else clone_with_weights(model)
    rnd = _Randomizer(work, layer_groups(work, granularity), seed)
    target = user_target(target)
    exp0 = given_or_explained(original, len(x),
                              lambda: factory(work).explain(x, target=target, batch_size=batch_size, progress=False))
    fixed = fixed_target(bind(target, work.graph, len(exp0)), exp0.indices)
    yield 0, "original", exp0
    shared = factory(work) if reuse_explainer else None
    if shared is not None and not type(shared).follows_weights():
        raise InputError(f"reuse_explainer=True: {type(shared).__name__} keeps copies of the weights it "
                         "cannot refresh (reads_weights_once and no sync_weights); it must be rebuilt "
                         "at every step (reuse_explainer=False)")
    try:
        for i in rnd.steps(mode, max_steps):
            if wanted is not None and i + 1 not in wanted:
                continue
            if shared is not None:
                ex = shared
                ex.sync_weights()
            else:  # a fresh graph (empty compiled-function cache) over the randomized weights
                ex = factory(dataclasses.replace(work))
            with quiet_retracing():
                exp = ex.explain(x, target=fixed, batch_size=batch_size, progress=False)
            yield i + 1, rnd.groups[i].name, exp
    finally:
        if in_place:  # the caller's model as it was, and the reused explainer's copies with it
            for i in range(len(rnd.groups)):
                rnd.restore(i)
            if shared is not None:
                shared.sync_weights()


def _similarities(similarity) -> list[Metric]:
    items = [similarity] if isinstance(similarity, (str, Metric)) else list(similarity)
    out = [make_metric(s) for s in items]
    for m in out:
        if m.category != "similarity":
            raise InputError(f"{m.name!r} is not a similarity metric")
    return out


def randomization_curve(
    model, x, explainer, target=None, *, mode: str = "cascading", granularity: str | Sequence = "block",
    similarity=DEFAULT_SIMILARITY, seed: int = 0, batch_size: int | None = None,
    max_steps: int | None = None, reuse_explainer: bool = False, use_attribution: bool = False,
    original: Explanation | None = None, only_steps: Sequence[int] | None = None, in_place: bool = False,
    **explainer_params,
) -> pd.DataFrame:
    """Similarity of the explanation at every randomization step to the original one.

    Parameters
    ----------
    similarity : metric name(s) or Similarity instance(s)
        Default: Spearman (absolute and signed), SSIM and HOG, as Adebayo et al.
    use_attribution : bool
        Compare the attributions (N, H, W, C) where the method gives them (Adebayo et
        al. normalize those by channel sums), instead of the heatmaps.  Metrics that need
        2-D maps get the channel sum.

    Other parameters as :func:`randomization_explanations`.

    Returns
    -------
    DataFrame with columns ``method, model, mode, step, layer, image, metric, value``;
    step 0 (``layer="original"``) compares the original with itself.
    """
    metrics = _similarities(similarity)
    spec = as_spec(model)
    rows = []
    ref = None
    for step, name, exp in randomization_explanations(
        spec, x, explainer, target, mode=mode, granularity=granularity, seed=seed, batch_size=batch_size,
        max_steps=max_steps, reuse_explainer=reuse_explainer, original=original, only_steps=only_steps,
        in_place=in_place, **explainer_params,
    ):
        cur = exp.attribution if (use_attribution and exp.attribution is not None) else exp.heatmap
        if ref is None:
            ref = cur
        for m in metrics:
            a, b = ref, cur
            if a.ndim == 4 and not getattr(m, "channels", False):
                a, b = a.sum(-1), b.sum(-1)
            vals = m.evaluate(a, b)
            rows.append(pd.DataFrame({"step": step, "layer": name, "image": np.arange(len(vals)),
                                      "metric": m.name, "value": vals}))
    out = pd.concat(rows, ignore_index=True)
    out.insert(0, "mode", mode)
    out.insert(0, "model", spec.name)
    out.insert(0, "method", method_name(explainer))
    return out


@register_metric
class ModelParameterRandomization(Metric):
    """Similarity between the original explanation and the one of a randomized model,
    per image; lower is better (a method that explains the model must change).

    ``evaluate(model, x, explainer, target=None) -> (N,)``

    Parameters
    ----------
    mode : "cascading" (default) or "independent"
    granularity : "block", "layer" or explicit groups
    similarity : str
        Similarity metric name (default ``"spearman_abs"``).
    reduce : "last" (default for cascading: the fully randomized model), "mean" or "min"
        over the steps; "mean" is the default for independent randomization.
    seed : int
    max_steps : int, optional
    reuse_explainer : bool
    """

    name = "model_randomization"
    category = "randomization"
    higher_is_better = False
    per_image = ("x",)

    def __init__(self, mode: str = "cascading", granularity: str | Sequence = "block",
                 similarity: str = "spearman_abs", reduce: str | None = None, seed: int = 0,
                 max_steps: int | None = None, reuse_explainer: bool = False):
        reduce = reduce or ("last" if mode == "cascading" else "mean")
        if reduce not in ("last", "mean", "min"):
            raise InputError(f"reduce must be 'last', 'mean' or 'min', got {reduce!r}")
        super().__init__(mode=mode, granularity=granularity, similarity=similarity, reduce=reduce,
                         seed=seed, max_steps=max_steps, reuse_explainer=reuse_explainer)
        self.similarity = make_metric(similarity)

    def evaluate_batch(self, model, x, explainer, target=None):
        p = self.params
        ref, vals = None, []
        for step, _, exp in randomization_explanations(
            model, x, explainer, target, mode=p["mode"], granularity=p["granularity"], seed=p["seed"],
            max_steps=p["max_steps"], reuse_explainer=p["reuse_explainer"],
        ):
            if step == 0:
                ref = exp.heatmap
            else:
                vals.append(self.similarity.evaluate(ref, exp.heatmap))
        arr = np.stack(vals)  # (steps, n)
        return {"last": arr[-1], "mean": arr.mean(0), "min": arr.min(0)}[p["reduce"]]


def compare_models(model_a, model_b, x, explainer, target=None, *, similarity=DEFAULT_SIMILARITY,
                   batch_size: int | None = None, **explainer_params) -> pd.DataFrame:
    """Similarity of the explanations of two models of the same input shape, per image
    (e.g. a model trained on true labels vs one trained on permuted labels).

    ``target`` is bound on each model separately (default: each model's own top class).

    Returns
    -------
    DataFrame with columns ``method, image, metric, value``.
    """
    factory = explainer_factory(explainer, **explainer_params)
    sa, sb = as_spec(model_a), as_spec(model_b)
    ha = factory(sa).explain(x, target=target, batch_size=batch_size, progress=False).heatmap
    hb = factory(sb).explain(x, target=target, batch_size=batch_size, progress=False).heatmap
    rows = [pd.DataFrame({"image": np.arange(len(ha)), "metric": m.name, "value": m.evaluate(ha, hb)})
            for m in _similarities(similarity)]
    out = pd.concat(rows, ignore_index=True)
    out.insert(0, "method", method_name(explainer))
    return out


__all__ = [
    "DEFAULT_SIMILARITY",
    "ModelParameterRandomization",
    "compare_models",
    "randomization_curve",
    "randomization_explanations",
]
