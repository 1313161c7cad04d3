"""Randomization sanity checks (Adebayo et al. 2018; Sixt et al. 2020).

A method whose heatmap does not change when the model's parameters are destroyed cannot
be explaining the model.  This module provides:

- :func:`clone_with_weights` — every modification happens on a clone
  (``keras.models.clone_model(..., recursive=True)`` for nested models, then the weights
  copied layer by layer); the user's model is never touched.  Clones have a linear head
  (a Dense/Conv ``activation="softmax"`` output becomes linear, as the methods explain
  logits anyway).
- :func:`layer_groups` — the layers or blocks re-initialized together, from the logits
  down (see below).
- :func:`randomized_models` — the sequence ``(step name, randomized ModelSpec)`` of
  cascading or independent randomization, each an independent clone.
- :func:`randomization_explanations` / :func:`randomization_curve` — run an explainer at
  every step; the curve is a long DataFrame of similarities to the original explanation
  (per image, per step, per similarity metric).
- :class:`ModelParameterRandomization` and :class:`RandomLogit` metrics (N,).
- Data randomization: :func:`permuted_labels`, :func:`train_on_permuted_labels` (with a
  caller-given trainer such as the mini-model trainer) and :func:`compare_models`.

**Cascading** randomization re-initializes the top group (the logits), then the top two,
and so on down to the input; **independent** randomization re-initializes one group at a
time, the others keeping their trained values.  Each variable gets its layer's own
initializer (``kernel_initializer``, ``bias_initializer``, ``depthwise_initializer``,
BatchNorm's ``gamma``/``beta``/``moving_*`` initializers, ...) from the layer config, with
a seed derived from ``seed``, the layer and the variable, so identical seeds give
identical randomized models.

**Groups.**  ``granularity="layer"``: every layer with weights (a BatchNormalization that
directly follows a weighted layer goes with it).  ``granularity="block"`` (default): the
graph is cut at its *articulation tensors* (tensors every input-output path passes
through), so a residual or Inception block falls into one segment; normalization-only
segments join the layer before them; consecutive segments whose layers share a block name
prefix (``block5_`` in VGG16 and Xception, ``conv4_block2_`` in ResNet50, ``block_13_``
in MobileNetV2) are merged.  For the five architectures this gives VGG16's
``predictions, fc2, fc1, block5, ..., block1``, ResNet50's ``predictions,
conv5_block3, ...``, InceptionV3's ``predictions, mixed10, ..., mixed0, conv2d_4, ...``.
An explicit list of groups can be passed instead.

**Explainers** are given as a method name (+ params), an Explainer class, a factory
``spec -> Explainer`` or an instance (see :func:`~cnnvis_eval.metrics.base.explainer_factory`).
By default a new explainer is built on a fresh graph at every step, so methods that
derive state from the weights at construction (canonized relevance models, CAM weights)
always see the randomized weights.  ``reuse_explainer=True`` keeps one explainer whose
compiled functions read the (in-place randomized) weights at call time — much faster,
valid for the gradient family and the controls.
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import keras
import numpy as np
import pandas as pd

from ..errors import InputError, TargetError, UnsupportedArchitectureError
from ..methods.base import Explanation
from ..models.spec import ModelSpec, as_spec
from ..quiet import quiet_retracing
from ..targets import BoundTarget, ClassTarget, bind
from .base import Metric, explainer_factory, fixed_target, make_metric, method_name, register_metric

DEFAULT_SIMILARITY = ("spearman_abs", "spearman_signed", "ssim", "hog")
"""The similarity metrics of Adebayo et al. used by :func:`randomization_curve`."""

# ---------------------------------------------------------------------- cloning
_NORM = (keras.layers.BatchNormalization, keras.layers.LayerNormalization, keras.layers.GroupNormalization)


def _softmax_head(spec: ModelSpec):
    graph = spec.graph
    if not graph.stripped:
        return None
    node = graph.producer(graph.output_key)
    if isinstance(node.layer, (keras.layers.Softmax, keras.layers.Activation)):
        return None  # stripped by an identity override; no weights involved
    return node.layer


def _layer_pairs(a: keras.Model, b: keras.Model):
    for la, lb in zip(a.layers, b.layers):
        if isinstance(la, keras.Model) and hasattr(la, "layers") and isinstance(lb, keras.Model):
            yield from _layer_pairs(la, lb)
        else:
            yield la, lb


def copy_weights(source: keras.Model, dest: keras.Model) -> None:
    """Copy the weights of ``source`` into its clone ``dest``, layer by layer, matched by
    variable name (variables that only ``dest`` has are left alone)."""
    for la, lb in _layer_pairs(source, dest):
        src = {v.name: v for v in la.weights}
        for v in lb.weights:
            if v.name in src:
                value = np.array(src[v.name].numpy())
                if tuple(value.shape) != tuple(v.shape):
                    raise UnsupportedArchitectureError(
                        f"clone of layer {la.name!r}: variable {v.name!r} has shape {tuple(v.shape)} "
                        f"but the original has {value.shape}"
                    )
                v.assign(value)


def clone_with_weights(model, replace: dict | None = None) -> ModelSpec:
    """A clone of ``model`` with copied weights, as a ModelSpec with the same metadata.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Sequential, functional, or nested (inner models are cloned too).
    replace : dict, optional
        ``{id(original_layer): factory(original_layer) -> new_layer}`` to swap layers in
        the clone (used by the input-shift axiom); their weights are copied by name.

    Returns
    -------
    ModelSpec
        Same name, preprocessing, layer names and metadata; ``info["clone_of"]`` is set.
        A softmax Dense/Conv head becomes linear.

    Raises
    ------
    UnsupportedArchitectureError
        Subclassed models (Keras cannot clone them).
    """
    spec = as_spec(model)
    if spec.graph.opaque:
        raise UnsupportedArchitectureError(
            f"model {spec.model.name!r} is a subclassed model: randomization and input-shift "
            "checks need a Sequential or functional model that keras.models.clone_model can copy"
        )
    head = _softmax_head(spec)
    replace = replace or {}

    def clone_fn(layer):
        if id(layer) in replace:
            return replace[id(layer)](layer)
        cfg = layer.get_config()
        if layer is head:
            cfg = {**cfg, "activation": "linear"}
        return type(layer).from_config(cfg)

    try:
        clone = keras.models.clone_model(spec.model, clone_function=clone_fn, recursive=True)
    except Exception as err:
        raise UnsupportedArchitectureError(f"cannot clone model {spec.model.name!r}: {err}") from err
    copy_weights(spec.model, clone)
    return dataclasses.replace(spec, model=clone, info={**spec.info, "clone_of": spec.name})


# ---------------------------------------------------------------------- groups
@dataclass(frozen=True)
class LayerGroup:
    """Layers re-initialized together in one randomization step.

    Attributes
    ----------
    name : str
        Step name (block name, or layer name).
    layers : tuple of str
        Flat-graph names of the layers with weights in the group, input to output.
    """

    name: str
    layers: tuple[str, ...]


_BLOCK_PATTERNS = (
    re.compile(r"^(conv\d+_block\d+)_"),  # ResNet
    re.compile(r"^(block_?\d+)_"),  # VGG, Xception (block5_), MobileNetV2 (block_13_)
    re.compile(r"^(mixed_?\d+[a-z]?)(?:_|$)"),
    re.compile(r"^(expanded_conv)_"),  # MobileNetV2's first inverted residual block
    re.compile(r"^(stage\d+_block\d+)_"),
)


def block_key(layer_name: str) -> str | None:
    """The block a layer's name places it in (``"block5_conv3" -> "block5"``), or None."""
    for pat in _BLOCK_PATTERNS:
        m = pat.match(layer_name)
        if m:
            return m.group(1)
    return None


def _has_weights(layer) -> bool:
    return bool(getattr(layer, "weights", None))


def _weighted_nodes(graph):
    plan = graph.plan([graph.output_key])
    seen, out = set(), []
    for n in plan:
        if _has_weights(n.layer) and id(n.layer) not in seen:
            seen.add(id(n.layer))
            out.append(n)
    return plan, out


def _segments(graph, plan) -> list[list]:
    """Split the plan at articulation tensors (the only live tensor after a node)."""
    produced = {graph.input_key: -1}
    last: dict[int, int] = {}
    for i, n in enumerate(plan):
        for k in n.outputs:
            produced[k] = i
        for k in n.inputs:
            last[k] = max(last.get(k, -1), i)
    delta = np.zeros(len(plan) + 2, np.int64)
    for k, p in produced.items():
        lu = last.get(k)
        if lu is None or lu <= p:
            continue
        delta[p + 1] += 1
        delta[lu + 1] -= 1
    live = np.cumsum(delta)  # live[i + 1]: tensors live after node i
    segs, cur = [], []
    for i, n in enumerate(plan):
        cur.append(n)
        if i < len(plan) - 1 and live[i + 1] == 1:
            segs.append(cur)
            cur = []
    if cur:
        segs.append(cur)
    return segs


def _most_common_key(nodes) -> str | None:
    keys = [block_key(n.layer.name) for n in nodes]
    keys = [k for k in keys if k is not None]
    if not keys:
        return None
    return max(set(keys), key=lambda k: (keys.count(k), -keys.index(k)))


def layer_groups(model, granularity: str | Sequence = "block") -> list[LayerGroup]:
    """The randomization steps of ``model``, from the logits down.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    granularity : "block" (default), "layer", or a sequence of groups
        A sequence gives the groups explicitly, top (first randomized) first: items are
        ``LayerGroup``, ``(name, [layer names])`` or ``[layer names]``.

    Returns
    -------
    list of LayerGroup, top-down (the first entry holds the output layer).
    """
    spec = as_spec(model)
    graph = spec.graph
    if graph.opaque:
        raise UnsupportedArchitectureError(f"model {spec.model.name!r} is subclassed; its layers are not visible")
    plan, weighted = _weighted_nodes(graph)
    if not weighted:
        raise InputError(f"model {spec.model.name!r} has no layers with weights to randomize")
    wid = {id(n) for n in weighted}
    if not isinstance(granularity, str):
        return _explicit_groups(graph, granularity, wid)
    if granularity == "layer":
        groups: list[list] = []
        for n in weighted:
            prev = groups[-1][-1] if groups else None
            if isinstance(n.layer, _NORM) and prev is not None and graph.producer(n.inputs[0]) is prev:
                groups[-1].append(n)
            else:
                groups.append([n])
        out = [LayerGroup(g[0].name, tuple(x.name for x in g)) for g in groups]
        return out[::-1]
    if granularity != "block":
        raise InputError(f"granularity must be 'block', 'layer' or a list of groups, got {granularity!r}")
    blocks: list[dict] = []
    for seg in _segments(graph, plan):
        w = [n for n in seg if id(n) in wid]
        if not w:
            continue
        if all(isinstance(n.layer, _NORM) for n in w) and blocks:
            blocks[-1]["nodes"] += w
            continue
        key = _most_common_key(w)
        if blocks and key is not None and blocks[-1]["key"] == key:
            blocks[-1]["nodes"] += w
            blocks[-1]["segments"] += 1
            continue
        blocks.append({"key": key, "nodes": list(w), "last": seg[-1], "segments": 1})
    out = []
    for b in blocks:
        main = [n for n in b["nodes"] if not isinstance(n.layer, _NORM)]
        if b["key"] is not None:
            name = b["key"]
        elif len(main) <= 1:
            name = (main or b["nodes"])[0].name
        else:
            name = b["last"].name
        out.append(LayerGroup(name, tuple(n.name for n in b["nodes"])))
    # names must be unique step labels
    counts: dict[str, int] = {}
    uniq = []
    for g in out:
        k = counts.get(g.name, 0)
        counts[g.name] = k + 1
        uniq.append(g if k == 0 else LayerGroup(f"{g.name}@{k}", g.layers))
    return uniq[::-1]


def _explicit_groups(graph, groups, wid) -> list[LayerGroup]:
    out = []
    for i, g in enumerate(groups):
        if isinstance(g, LayerGroup):
            name, layers = g.name, g.layers
        elif isinstance(g, tuple) and len(g) == 2 and isinstance(g[0], str) and not isinstance(g[1], str):
            name, layers = g
        else:
            layers = [g] if isinstance(g, str) else list(g)
            name = layers[0] if len(layers) == 1 else f"group{i}"
        names = []
        for layer in layers:
            node = graph.node(layer)  # TargetError names unknown layers
            if not _has_weights(node.layer):
                raise InputError(f"layer {layer!r} has no weights to randomize")
            names.append(node.name)
        if not names:
            raise InputError(f"randomization group {name!r} is empty")
        out.append(LayerGroup(str(name), tuple(names)))
    if not out:
        raise InputError("no randomization groups given")
    return out


# ---------------------------------------------------------------------- re-initialization
def _initializer(layer, var, seed: int):
    cfg = layer.get_config()
    name = var.name
    candidates = [f"{name}_initializer"]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        candidates.insert(0, "depthwise_initializer")
    if name.endswith("_kernel"):
        candidates.append(name[: -len("_kernel")] + "_initializer")
    conf = next((cfg[c] for c in candidates if cfg.get(c) is not None), None)
    fallback = conf is None
    if fallback:
        conf = "glorot_uniform" if len(var.shape) >= 2 else "zeros"
    init = keras.initializers.get(conf)
    icfg = init.get_config()
    if "seed" in icfg:
        init = type(init).from_config({**icfg, "seed": int(seed)})
    return init, fallback


class _Randomizer:
    """Re-initializes groups of a (cloned) model in place and restores them."""

    def __init__(self, spec: ModelSpec, groups: list[LayerGroup], seed: int):
        self.spec, self.groups, self.seed = spec, groups, int(seed)
        graph = spec.graph
        self.vars: list[list[tuple[str, Any, Any]]] = []
        seen: set[int] = set()
        for g in groups:
            entries = []
            for lname in g.layers:
                layer = graph.node(lname).layer
                for v in layer.weights:
                    if id(v) in seen:
                        continue  # a variable shared by two groups goes with the first
                    seen.add(id(v))
                    entries.append((lname, layer, v))
            self.vars.append(entries)
        self.original = [[np.array(v.numpy()) for _, _, v in e] for e in self.vars]
        self._fresh: dict[int, list[np.ndarray]] = {}
        self.fallbacks: list[str] = []

    def fresh(self, i: int) -> list[np.ndarray]:
        if i not in self._fresh:
            vals = []
            for lname, layer, v in self.vars[i]:
                s = zlib.crc32(f"{self.seed}:{lname}:{v.name}".encode()) & 0x7FFFFFFF
                init, fallback = _initializer(layer, v, s)
                if fallback:
                    self.fallbacks.append(f"{lname}/{v.name}")
                vals.append(np.asarray(keras.ops.convert_to_numpy(init(shape=tuple(v.shape), dtype=v.dtype))))
            self._fresh[i] = vals
        return self._fresh[i]

    def randomize(self, i: int):
        for (_, _, v), val in zip(self.vars[i], self.fresh(i)):
            v.assign(val)

    def restore(self, i: int):
        for (_, _, v), val in zip(self.vars[i], self.original[i]):
            v.assign(val)

    def steps(self, mode: str, max_steps: int | None = None) -> Iterator[int]:
        """Apply the steps of ``mode`` one after the other, yielding each step's index
        while the model is in that step's state."""
        if mode not in ("cascading", "independent"):
            raise InputError(f"mode must be 'cascading' or 'independent', got {mode!r}")
        count = len(self.groups) if max_steps is None else min(len(self.groups), int(max_steps))
        for i in range(count):
            self.randomize(i)
            try:
                yield i
            finally:
                if mode == "independent":
                    self.restore(i)


def randomized_models(model, mode: str = "cascading", granularity: str | Sequence = "block",
                      seed: int = 0, max_steps: int | None = None) -> Iterator[tuple[str, ModelSpec]]:
    """The randomized models of cascading or independent randomization.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified.
    mode : "cascading" or "independent"
    granularity : "block", "layer" or explicit groups (see :func:`layer_groups`)
    seed : int
    max_steps : int, optional
        Stop after this many steps (from the top).

    Yields
    ------
    (step name, ModelSpec)
        Each an independent clone: keeping them all is safe (and costs one model each).
    """
    work = clone_with_weights(model)
    rnd = _Randomizer(work, layer_groups(work, granularity), seed)
    for i in rnd.steps(mode, max_steps):
        yield rnd.groups[i].name, clone_with_weights(work)


# ---------------------------------------------------------------------- explanations at every step
def _user_target(target):
    """A plain target from a target or a BoundTarget (fixed indices kept)."""
    if isinstance(target, BoundTarget):
        return target.target if target.top else fixed_target(target, target.indices)
    return target


def randomization_explanations(
    model, x, explainer, target=None, *, mode: str = "cascading", granularity: str | Sequence = "block",
    seed: int = 0, batch_size: int | None = None, max_steps: int | None = None,
    reuse_explainer: bool = False, **explainer_params,
) -> Iterator[tuple[int, str, Explanation]]:
    """Explain ``x`` on the original model and at every randomization step.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Not modified (all work happens on one clone).
    x : array (N, H, W, C)
    explainer : method name, Explainer class or instance, or factory ``spec -> Explainer``
    target : ClassTarget, NeuronTarget, int or None
        "top" is resolved on the original model and kept fixed for every step, so each
        step explains the same class/channel.
    mode, granularity, seed, max_steps
        See :func:`randomized_models`.
    batch_size : int, optional
        Passed to ``explain``.
    reuse_explainer : bool
        Keep one explainer for all steps (see the module notes); default False.
    **explainer_params
        Constructor parameters when ``explainer`` is a name or class.

    Yields
    ------
    (step, name, Explanation)
        Step 0 is ``"original"``; step k >= 1 is the k-th group of :func:`layer_groups`.
    """
    factory = explainer_factory(explainer, **explainer_params)
    work = clone_with_weights(model)
    rnd = _Randomizer(work, layer_groups(work, granularity), seed)
    target = _user_target(target)
    exp0 = factory(work).explain(x, target=target, batch_size=batch_size, progress=False)
    fixed = fixed_target(bind(target, work.graph, len(exp0)), exp0.indices)
    yield 0, "original", exp0
    shared = factory(work) if reuse_explainer else None
    for i in rnd.steps(mode, max_steps):
        if shared is not None:
            ex = shared
        else:  # a fresh graph (empty compiled-function cache) over the randomized clone
            ex = factory(dataclasses.replace(work))
        with quiet_retracing():
            exp = ex.explain(x, target=fixed, batch_size=batch_size, progress=False)
        yield i + 1, rnd.groups[i].name, exp


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
        max_steps=max_steps, reuse_explainer=reuse_explainer, **explainer_params,
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


# ---------------------------------------------------------------------- metrics
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


def random_other_class(indices: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    """For each index, a uniformly drawn *different* class in ``0..classes-1`` (seeded)."""
    if classes < 2:
        raise TargetError("the random-logit test needs a model with at least 2 classes")
    idx = np.asarray(indices, np.int64)
    draw = np.random.default_rng(seed).integers(0, classes - 1, size=len(idx))
    return (draw + (draw >= idx)).astype(np.int32)


@register_metric
class RandomLogit(Metric):
    """Random-logit test (Sixt et al. 2020; Adebayo et al.): the similarity between the
    explanation of the target class and that of a random other class, per image; lower
    is better (a class-sensitive method explains different classes differently).

    ``evaluate(model, x, explainer, target=None) -> (N,)``; ClassTargets only ("top" is
    resolved first).

    Parameters
    ----------
    similarity : str
        Default ``"spearman_abs"``.
    seed : int
        Draws the other classes (per call; identical seeds give identical draws).
    """

    name = "random_logit"
    category = "randomization"
    higher_is_better = False
    per_image = ("x",)

    def __init__(self, similarity: str = "spearman_abs", seed: int = 0):
        super().__init__(similarity=similarity, seed=seed)
        self.similarity = make_metric(similarity)
        self.seed = int(seed)

    def check(self, data):
        if not data["target"].is_class:
            raise TargetError(f"random_logit needs a ClassTarget; got {data['target'].target!r}")
        return data

    def evaluate_batch(self, model, x, explainer, target=None):
        ex = explainer(model)
        exp = ex.explain(x, target=_user_target(target), progress=False)
        other = random_other_class(exp.indices, target.units, self.seed)
        exp2 = ex.explain(x, target=ClassTarget(other), progress=False)
        return self.similarity.evaluate(exp.heatmap, exp2.heatmap)


# ---------------------------------------------------------------------- data randomization
def permuted_labels(y, seed: int = 0) -> np.ndarray:
    """A seeded permutation of the labels ``y`` (N,) or one-hot (N, K) along the first axis."""
    y = np.asarray(y)
    if y.ndim == 0 or len(y) < 2:
        raise InputError(f"y must hold labels for at least 2 examples; got shape {y.shape}")
    return y[np.random.default_rng(seed).permutation(len(y))]


def train_on_permuted_labels(train_fn: Callable, x, y, seed: int = 0, **train_kwargs):
    """Data randomization test (Adebayo et al.): train a model on randomly permuted labels.

    Parameters
    ----------
    train_fn : callable ``(x, y, **train_kwargs) -> model or ModelSpec``
        The trainer, e.g. the mini-model trainer of ``cnnvis_eval.models.mini``.
    x : array (N, ...)
    y : array (N,) or (N, K)
    seed : int
        Seeds the permutation (the trainer seeds its own training).

    Returns
    -------
    Whatever ``train_fn`` returns.  The inputs are not modified.
    """
    if not callable(train_fn):
        raise InputError("train_fn must be a callable (x, y, **kwargs) -> model")
    x = np.asarray(x)
    yp = permuted_labels(y, seed)
    if len(x) != len(yp):
        raise InputError(f"x has {len(x)} examples but y has {len(yp)}")
    return train_fn(x.copy(), yp, **train_kwargs)


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
    "LayerGroup",
    "ModelParameterRandomization",
    "RandomLogit",
    "block_key",
    "clone_with_weights",
    "compare_models",
    "copy_weights",
    "layer_groups",
    "permuted_labels",
    "random_other_class",
    "randomization_curve",
    "randomization_explanations",
    "randomized_models",
    "train_on_permuted_labels",
]
