"""Randomization sanity checks (Adebayo et al. 2018; Sixt et al. 2020).

A method whose heatmap does not change when the model's parameters are destroyed cannot
be explaining the model.  This package provides:

- :func:`layer_groups` — the layers or blocks re-initialized together, from the logits
  down (the structural question is answered by :func:`cnnvis_eval.graph.layer_groups`).
- :func:`randomized_models` — the sequence ``(step name, randomized ModelSpec)`` of
  cascading or independent randomization, each an independent clone
  (:mod:`~cnnvis_eval.metrics.randomization.randomize`).  Every modification happens on a
  clone with copied weights (:func:`cnnvis_eval.models.clone.clone_with_weights`); the
  user's model is never touched.
- :func:`randomization_explanations` / :func:`randomization_curve` — run an explainer at
  every step; the curve is a long DataFrame of similarities to the original explanation
  (per image, per step, per similarity metric)
  (:mod:`~cnnvis_eval.metrics.randomization.curve`).
- :class:`ModelParameterRandomization` and :class:`RandomLogit` metrics (N,).
- Data randomization: :func:`permuted_labels`, :func:`train_on_permuted_labels` (with a
  caller-given trainer such as the mini-model trainer) and :func:`compare_models`
  (:mod:`~cnnvis_eval.metrics.randomization.logit`).

**Explainers** are given as a method name (+ params), an Explainer class, a factory
``spec -> Explainer`` or an instance (see :func:`~cnnvis_eval.metrics.base.explainer_factory`).
By default a new explainer is built on a fresh graph at every step, so methods that
derive state from the weights at construction (canonized relevance models, CAM weights)
always see the randomized weights.  ``reuse_explainer=True`` keeps one explainer whose
compiled functions read the (in-place randomized) weights at call time — much faster,
valid for the gradient family and the controls.
"""

from ...graph.groups import LayerGroup, block_key
from ...models.clone import clone_with_weights, copy_weights
from .curve import (
    DEFAULT_SIMILARITY,
    ModelParameterRandomization,
    compare_models,
    randomization_curve,
    randomization_explanations,
)
from .logit import RandomLogit, permuted_labels, random_other_class, train_on_permuted_labels
from .randomize import layer_groups, randomized_models

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
