"""The scoring stages of a run, declared as data, and the code that runs them on one model.

After the explain stage has stored every cell's heatmaps, a model is scored by the stages
the configuration names (``RunConfig.stages``):

- :data:`SCORES`: one :class:`Score` per metric: which stage enables it, on which neurons,
  and what it reads (the heatmaps alone; the object masks, where a scene's mask is its object
  of the explained class; the scenes' target and other objects for class contrast; the
  birds' part masks and counterfactual part importances for part correctness; or the model
  and the images); whether higher is better comes from the metric class;
- :data:`CONTROLS`: model-blind control maps scored beside the methods on the ground-truth
  scores (rows ``control:<name>``: where chance lies);
- :data:`AGREEMENT`: rank agreement of every method with every other method's heatmaps of
  the same image and neuron (:func:`cnnvis_eval.metrics.pairwise_similarity`);
- :data:`RANDOMIZATION`: similarity of the logit heatmap after cascading re-initialization
  of the model (coarse steps: top group, half, all), the curve and its final value, with
  per-method parameter overrides (:data:`Z_PLUS`) as data too;
- ``"cost"``: seconds per image of a warm explanation divided by a plain forward+backward
  pass of the same model in the same run.

Each stage writes its rows through the :class:`~cnnvis_eval.evaluation.store.RunStore`, so
a resumed run does not score a model again.

One job, in one module (about 480 lines): what the scoring stages are and how one model is
scored by them -- the declarations and the code reading them change together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import UnsupportedArchitectureError, UnsupportedLayerError
from ..frame import CONTROL_PREFIX, rows
from ..methods.base import Explanation, get_method
from ..models.spec import ModelSpec
from ..targets import ClassTarget
from .config import NEURONS, RunConfig, method_params
from .inputs import ImageSet
from .store import RunStore

NOT_APPLICABLE = (UnsupportedArchitectureError, UnsupportedLayerError)


@dataclass(frozen=True)
class Score:
    """One metric of the score stage.

    Attributes
    ----------
    metric : str
        Registered metric name (:func:`cnnvis_eval.metrics.get_metric`).
    stage : str
        The entry of ``RunConfig.stages`` that enables it.
    neurons : tuple of str
        The neurons whose heatmaps it scores.
    reads : str
        ``"heatmap"``: ``evaluate(heatmaps)``; ``"masks"``: ``evaluate(heatmaps, masks)`` on
        the images with object masks (a scene's mask is its object of the explained class,
        :meth:`~cnnvis_eval.evaluation.inputs.ImageSet.target_masks`); ``"contrast"``:
        ``evaluate(heatmaps, mask, other_mask)`` on the scenes (the explained object, the
        others); ``"parts"``: ``evaluate(heatmaps, part_masks, importance)`` on the birds,
        the importance of each part for the explained class from its counterfactual removal
        on the model (:func:`~cnnvis_eval.metrics.parts.part_importance`); ``"model"``:
        ``evaluate(spec, x, heatmaps, target=<the classes the cell explained>,
        pixels_per_step=H * W / faithfulness_steps)``.
    """

    metric: str
    stage: str
    neurons: tuple = NEURONS
    reads: str = "heatmap"

    @property
    def needs_masks(self) -> bool:
        return self.reads == "masks"

    @property
    def higher_is_better(self) -> bool:
        """The metric class's direction."""
        from ..metrics import get_metric

        return get_metric(self.metric).higher_is_better


SCORES: tuple[Score, ...] = (
    Score("sparseness", "complexity"),
    Score("entropy", "complexity"),
    Score("compactness", "complexity"),
    *(Score(m, "localization", ("logit",), "masks")
      for m in ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy", "energy_pointing_game")),
    Score("class_contrast_mass", "contrast", ("logit",), "contrast"),
    Score("contrast_pointing_game", "contrast", ("logit",), "contrast"),
    Score("part_importance_correlation", "parts", ("logit",), "parts"),
    # normalized (issue 16): AUC of the map's order minus that of random orders, per |clean
    # logit|, so models compare; the random orders' curves are computed once per model
    Score("deletion_gain", "faithfulness", ("logit",), "model"),
    Score("insertion_gain", "faithfulness", ("logit",), "model"),
)


@dataclass(frozen=True)
class Agreement:
    """Agreement of the methods' heatmaps: ``metric`` of every pair, per image.

    Rows ``name`` per (method, image, neuron): the mean over the other methods; a
    method x method matrix (mean over images) per (model, neuron) in ``rows/agreement``.
    """

    metric: str = "spearman_abs"
    stage: str = "agreement"
    neurons: tuple = NEURONS
    name: str = "agreement"


AGREEMENT = Agreement()


@dataclass(frozen=True)
class ParamOverride:
    """A method parameter the randomization stage sets for methods whose class has the
    attribute ``when`` set (unless the run's parameters set ``param`` themselves)."""

    when: str
    param: str
    value: object
    why: str = ""


Z_PLUS = ParamOverride(
    "positive_top", "positive_top", False,
    why="with the top relevance clipped to >= 0 a randomized model whose logit turns negative gives "
        "an all-zero map, which scores 'dissimilar' for that reason alone; start from the signed "
        "logit instead (as the sanity suite does; Sixt et al. 2020 find these maps insensitive to "
        "the upper layers)")


@dataclass(frozen=True)
class Randomization:
    """The randomization stage: cascading re-initialization by layer ``granularity``,
    ``similarity`` metrics along the curve; the last step's ``summary`` value becomes the
    ``summary_metric`` row of the long frame."""

    stage: str = "randomization"
    neuron: str = "logit"
    mode: str = "cascading"
    granularity: str = "block"
    similarity: tuple = ("spearman_abs", "ssim")
    summary: str = "spearman_abs"
    summary_metric: str = "randomization_similarity"
    overrides: tuple = (Z_PLUS,)

    def params(self, method: str, params: dict) -> dict:
        """``params`` of ``method`` with the :attr:`overrides` that apply to its class."""
        cls = get_method(method)
        params = dict(params)
        for o in self.overrides:
            if getattr(cls, o.when, False) and o.param not in params:
                params[o.param] = o.value
        return params


RANDOMIZATION = Randomization()

#: Model-blind control explainers scored beside the methods on the ground-truth scores
#: (``"masks"``, ``"contrast"``, ``"parts"``): rows ``method="control:<name>"``, so the
#: report shows where chance lies (DESIGN rule 6); they are not methods (no cells, no
#: totals).
CONTROLS = ("edge_sobel", "random")
#: The random control's score of an image is the mean over this many seeded random maps: it
#: stands for chance, which one draw per image estimates poorly on a handful of images
#: (part correctness over 4 parts of 3 birds: one draw per image gave -0.32 on the default run)
RANDOM_DRAWS = 8


# ---------------------------------------------------------------------- score stage
def score_model(store: RunStore, config: RunConfig, spec: ModelSpec, images: ImageSet, x: np.ndarray,
                heat: dict, cells: list):
    """Score one model's stored heatmaps (the score, agreement and cost stages).

    Parameters
    ----------
    store, config : the run's
    spec : the model
    images : its images; ``x`` (N, H, W, C) their preprocessed values
    heat : ``{(method, neuron): heatmaps (N, H, W)}`` of the cells that are ok
    cells : the cell rows (``status``, ``seconds_per_image``, ...)

    Writes ``rows/scores/<model>.parquet``, the agreement matrices and the reference timing,
    and beside the scores the cells they were computed from (``.cells.json``): a model is not
    scored again unless that set changed (a cell that failed and has been explained since).
    """
    from ..metrics import get_metric

    model = spec.name
    path = store.rows_path("scores", model)
    basis_path = path.with_suffix(".cells.json")
    basis = {"cells": sorted(f"{m}/{n}" for m, n in heat)}
    if path.is_file() and store.read_json(basis_path, keys=("cells",)) == basis:
        return
    frames = []
    ids = np.array(images.ids)
    truth = _Truth(spec, images, x)
    logit_idx = None
    per_step = max(1, -(-int(np.prod(x.shape[1:3])) // max(1, config.faithfulness_steps)))
    on_model = {s.metric: get_metric(s.metric)(pixels_per_step=per_step) for s in SCORES if s.reads == "model"}
    for (method, neuron), h in heat.items():
        target = None  # the classes the cell explained, read when a score needs them
        for s in SCORES:
            if s.stage not in config.stages or neuron not in s.neurons:
                continue
            if s.reads == "heatmap":
                vals, on = get_metric(s.metric)().evaluate(h), ids
            elif s.reads == "model":
                if target is None:
                    target = _explained(store, model, method, neuron)
                vals = on_model[s.metric].evaluate(spec, x, h, target=ClassTarget(target))
                on = ids
            else:
                if target is None:
                    target = _explained(store, model, method, neuron)
                got = truth.score(s, h, target)
                if got is None:
                    continue
                vals, on = got
            frames.append(rows(s.metric, vals, image=on, method=method, model=model, neuron=neuron))
            if neuron == "logit" and s.reads != "heatmap" and logit_idx is None:
                logit_idx = target
    if logit_idx is not None:
        frames += _control_rows(config, spec, x, truth, logit_idx)
    if AGREEMENT.stage in config.stages:
        frames += _agreement(store, model, ids, heat)
    if "cost" in config.stages:
        ref_per_image = reference_seconds(spec, x)
        for c in cells:
            if c["status"] == "ok" and c["neuron"] == "logit":
                for metric, value in (("cost_ratio", c["seconds_per_image"] / ref_per_image),
                                      ("seconds_per_image", c["seconds_per_image"])):
                    frames.append(rows(metric, [value], image=["*"], method=c["method"], model=model,
                                       neuron="logit"))
        store.save_rows(store.rows_path("reference", model),
                        pd.DataFrame({"model": [model], "forward_backward_seconds_per_image": [ref_per_image]}))
    if frames:
        store.save_rows(path, pd.concat(frames, ignore_index=True))
        store.save_json(basis_path, basis)


def _explained(store: RunStore, model: str, method: str, neuron: str) -> np.ndarray:
    """The class (or channel) indices (N,) int64 a stored cell explained."""
    return store.load_cell(store.heatmap_path(model, method, neuron))["indices"].astype(np.int64)


class _Truth:
    """The ground truth of one model's images for the ``"masks"``, ``"contrast"`` and
    ``"parts"`` scores; the target masks and the parts' counterfactual importances are
    computed once per explained class vector (every method's logit cell explains the same
    top classes)."""

    def __init__(self, spec: ModelSpec, images: ImageSet, x: np.ndarray):
        self.spec, self.images, self.x = spec, images, x
        self.ids = np.array(images.ids)
        self._importance, self._masks = {}, {}

    def target_masks(self, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`ImageSet.target_masks` of ``target``, computed once per class vector."""
        key = target.tobytes()
        if key not in self._masks:
            self._masks[key] = self.images.target_masks(target)
        return self._masks[key]

    def importance(self, target: np.ndarray) -> np.ndarray:
        """(B, P) logit drop per part removed, for the birds and their explained classes."""
        from ..metrics.parts import part_importance

        birds = np.flatnonzero(self.images.part_index)
        key = target[birds].tobytes()
        if key not in self._importance:
            removed = np.stack([self.spec.preprocess(self.images.parts[i][1]) for i in birds])
            self._importance[key] = part_importance(self.spec, self.x[birds], removed,
                                                    ClassTarget(target[birds]))
        return self._importance[key]

    def score(self, s: Score, h: np.ndarray, target: np.ndarray):
        """``(values, image ids)`` of score ``s`` on heatmaps ``h`` (N, H, W) explaining
        ``target`` (N,), or None when the run has no image it applies to."""
        from ..metrics import get_metric

        imgs = self.images
        metric = get_metric(s.metric)()
        if s.reads == "masks":
            syn = imgs.synthetic_index
            if not syn.any():
                return None
            mask, _ = self.target_masks(target)
            return metric.evaluate(h[syn], mask), self.ids[syn]
        if s.reads == "contrast":
            sc = imgs.scene_index
            if not sc.any():
                return None
            mask, other = self.target_masks(target)
            keep = sc[imgs.synthetic_index]
            return metric.evaluate(h[sc], mask[keep], other[keep]), self.ids[sc]
        if s.reads == "parts":
            birds = imgs.part_index
            if not birds.any():
                return None
            masks = np.stack([imgs.parts[i][0] for i in np.flatnonzero(birds)])
            return metric.evaluate(h[birds], masks, self.importance(target)), self.ids[birds]
        raise ValueError(f"unknown score input {s.reads!r}")


def _control_rows(config: RunConfig, spec: ModelSpec, x: np.ndarray, truth: _Truth,
                  target: np.ndarray) -> list[pd.DataFrame]:
    """Rows of the :data:`CONTROLS` on the ground-truth scores, for the classes the
    methods' logit cells explained (``target``)."""
    from ..metrics.controls import CONTROLS as EXPLAINERS

    frames = []
    scores = [s for s in SCORES if s.stage in config.stages and s.reads in ("masks", "contrast", "parts")
              and "logit" in s.neurons]
    if not scores:
        return frames
    for name in CONTROLS:
        cls = EXPLAINERS[name]
        if name == "random":
            maps = [cls(spec, seed=config.seed + k).explain(x, ClassTarget(target), progress=False).heatmap
                    for k in range(RANDOM_DRAWS)]
        else:
            maps = [cls(spec).explain(x, ClassTarget(target), progress=False).heatmap]
        for s in scores:
            got = [truth.score(s, h, target) for h in maps]
            if got[0] is not None:
                values = _nanmean(np.stack([g[0] for g in got]), axis=0) if len(got) > 1 else got[0][0]
                frames.append(rows(s.metric, values, image=got[0][1], method=CONTROL_PREFIX + name,
                                   model=spec.name, neuron="logit"))
    return frames


def _agreement(store: RunStore, model: str, ids: np.ndarray, heat: dict) -> list[pd.DataFrame]:
    """Agreement rows of every method per neuron; stores the matrices."""
    from ..metrics import pairwise_similarity

    frames = []
    for neuron in AGREEMENT.neurons:
        maps = {m: h for (m, n), h in heat.items() if n == neuron}
        if len(maps) < 2:
            continue
        long = pairwise_similarity(maps, AGREEMENT.metric)
        pairs = {}
        for (a, b), g in long.groupby(["method_a", "method_b"], sort=False):
            pairs[a, b] = pairs[b, a] = g.sort_values("image")["value"].to_numpy()
        names = list(maps)
        for m in names:
            others = np.stack([pairs[m, o] for o in names if o != m])
            frames.append(rows(AGREEMENT.name, _nanmean(others, axis=0), image=ids, method=m, model=model,
                               neuron=neuron))
        mat = pd.DataFrame([[float(_nanmean(pairs[a, b])) for b in names] for a in names], index=names,
                           columns=names)
        mat.index.name = mat.columns.name = AGREEMENT.metric
        store.save_rows(store.rows_path("agreement", model, neuron),
                        mat.reset_index(names="method_a").melt(id_vars="method_a", var_name="method_b",
                                                               value_name="value")
                        .assign(model=model, neuron=neuron))
    return frames


def reference_seconds(spec: ModelSpec, x: np.ndarray) -> float:
    """Seconds per image of a plain compiled forward+backward pass (median of 3, on <= 8 images)."""
    from .cost import median_seconds, reference_passes

    _, fwd_bwd = reference_passes(spec)
    xb = x[: min(len(x), 8)]
    return median_seconds(lambda: fwd_bwd(xb), rounds=3, warmup=1) / len(xb)


def _nanmean(values, axis=None):
    """Mean ignoring NaN (NaN when all are NaN), without the all-NaN warning."""
    values = np.asarray(values, dtype=np.float64)
    count = np.sum(~np.isnan(values), axis=axis)
    total = np.nansum(values, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---------------------------------------------------------------------- randomization stage
def coarse_steps(spec: ModelSpec, steps: int) -> list[tuple[str, list[str]]]:
    """The cascading steps: the top ``1/steps`` of the model's layer groups, then the next
    ``1/steps``, ..., each as ``(label, layer names)``."""
    from ..metrics import layer_groups

    groups = layer_groups(spec, RANDOMIZATION.granularity)
    n = max(1, steps)
    cuts = sorted({max(1, int(round(len(groups) * (i + 1) / n))) for i in range(n)})
    coarse, start = [], 0
    for c in cuts:
        layers = [l for g in groups[start:c] for l in g.layers]
        coarse.append((f"top {c}/{len(groups)}", layers))
        start = c
    return coarse


def randomize_model(store: RunStore, config: RunConfig, spec: ModelSpec, images: ImageSet, x: np.ndarray,
                    heat: dict, methods, log: Callable[[str], None]):
    """Randomization curves of ``methods`` on one model (``rows/randomization/<model>__<method>``).

    The first ``config.randomization_images`` images (synthetic ones first) are explained
    for the classes the stored logit cell explained: the same target as ``"top"`` on the
    trained model, and fixed indices let explainers that read the weights at call time
    reuse their trained-model trace at every step.  A method that does not apply is
    skipped; a failing one is logged and the run goes on.

    Step 0 is the stored logit cell's maps of those images when the stage explains with
    the cell's own parameters (every method but the z+ presets, see :data:`Z_PLUS`): one
    explanation of the images less per curve, the same curve.

    The model is randomized in place (``in_place``: its variables are restored bit for bit
    before the next method, also when one fails) and the explainer is the one the explain
    stage cached for the model, method and parameters (:data:`~cnnvis_eval.cache.default_cache`):
    in the task that has just explained the cells, a method that follows weight changes
    traces nothing here.  Measured on mini_inception (39 methods, the default run): 37.5 s
    with a clone and two new explainers per method, 12.3 s this way, the same curves.
    Nothing else may use ``spec`` meanwhile (a run's worker runs one task at a time).
    """
    from ..cache import default_cache
    from ..metrics import randomization_curve

    model, neuron = spec.name, RANDOMIZATION.neuron
    k = min(config.randomization_images, len(x))
    order = np.argsort(~images.synthetic_index, kind="stable")[:k]  # synthetic images first
    xs = x[order]
    coarse = coarse_steps(spec, config.randomization_steps)
    for method in methods:
        path = store.rows_path("randomization", model, method)
        if path.is_file() or (method, neuron) not in heat:
            continue
        cls = get_method(method)
        own = method_params(method, spec, config.method_params.get(method, {}))  # the cells'
        params = RANDOMIZATION.params(method, own)
        cell = store.load_cell(store.heatmap_path(model, method, neuron))
        top = cell["indices"][order]
        target = ClassTarget(top.astype(np.int64))
        # step 0 is the stored cell when the stage explains with the cell's own parameters:
        # the same explainer, images and classes (one explanation of the images less per curve)
        original = None
        if params == own:
            original = Explanation(heat[(method, neuron)][order], None, method, target, top, cell["scores"][order])
        try:
            cached = default_cache.explainer(spec, method, params, lambda: cls(spec, **params))
            curve = randomization_curve(spec, xs, _on(spec, cached, cls, params), target,
                                        mode=RANDOMIZATION.mode, granularity=coarse,
                                        similarity=RANDOMIZATION.similarity, seed=config.seed,
                                        reuse_explainer=cls.follows_weights(), in_place=True, original=original)
        except NOT_APPLICABLE:
            continue
        except Exception as err:  # recorded, the run goes on
            log(f"randomization {model}/{method} failed: {type(err).__name__}: {err}")
            continue
        curve["method"] = method  # (the factory has no method name of its own)
        curve["image"] = np.array(images.ids)[order][curve["image"].to_numpy()]
        store.save_rows(path, curve)


def _on(spec: ModelSpec, cached, cls, params: dict) -> Callable:
    """The explainer factory of the randomization stage: ``cached`` on ``spec`` itself, a new
    ``cls(other, **params)`` on the per-step copies of a method that cannot follow weight
    changes (not ``type(cached)(other, **cached.params)``: an explainer's ``params`` need not
    hold every constructor argument)."""
    return lambda s: cached if s is spec else cls(s, **params)


def randomization_rows(curves: pd.DataFrame) -> pd.DataFrame:
    """The long-frame rows of stored randomization curves: the :attr:`Randomization.summary`
    similarity at each (method, model)'s last step, as ``randomization_similarity``."""
    last = curves[curves["metric"] == RANDOMIZATION.summary]
    last = last[last["step"] == last.groupby(["method", "model"])["step"].transform("max")]
    return rows(RANDOMIZATION.summary_metric, last["value"], image=last["image"], method=last["method"],
                model=last["model"], neuron=RANDOMIZATION.neuron)


__all__ = ["AGREEMENT", "CONTROLS", "RANDOMIZATION", "RANDOM_DRAWS", "SCORES", "Z_PLUS", "Agreement", "ParamOverride", "Randomization",
           "Score", "coarse_steps", "randomization_rows", "randomize_model", "reference_seconds", "score_model"]
