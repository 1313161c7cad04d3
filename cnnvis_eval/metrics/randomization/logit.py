"""The random-logit test (Sixt et al. 2020) and data randomization (Adebayo et al. 2018):
explanations of another class, and models trained on permuted labels."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import InputError, TargetError
from ...targets import ClassTarget, user_target
from ..base import Metric, make_metric, register_metric


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
        exp = ex.explain(x, target=user_target(target), progress=False)
        other = random_other_class(exp.indices, target.units, self.seed)
        exp2 = ex.explain(x, target=ClassTarget(other), progress=False)
        return self.similarity.evaluate(exp.heatmap, exp2.heatmap)


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


__all__ = ["RandomLogit", "permuted_labels", "random_other_class", "train_on_permuted_labels"]
