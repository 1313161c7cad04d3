"""``cnnvis_eval.explain``: one call for any registered method, with explainers cached."""

from __future__ import annotations

import weakref
from typing import Any

from .methods.base import Explanation, get_method
from .models.spec import as_spec

_CACHE: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _params_key(params: dict) -> tuple:
    items = []
    for k, v in sorted(params.items()):
        try:
            hash(v)
            items.append((k, v))
        except TypeError:
            items.append((k, ("id", id(v))))
    return tuple(items)


def explain(method: str, model, x, target=None, batch_size: int | None = None,
            progress: bool | None = None, **params) -> Explanation:
    """Explain ``x`` with the method registered as ``method``.

    Parameters
    ----------
    method : str
        A name from :func:`list_methods`.
    model : ModelSpec or keras.Model
    x : array, shape (N, H, W, C)
        Preprocessed model inputs (not modified).
    target : ClassTarget, NeuronTarget, int or None
        Default: the top class per image.
    batch_size : int, optional
    progress : bool, optional
    **params
        The method's parameters (e.g. ``steps=128`` for integrated gradients).

    Returns
    -------
    Explanation
        ``heatmap`` float32 (N, H, W); see :class:`Explanation`.

    Explainers are cached per (model, method, parameters), so repeated calls reuse their
    compiled TensorFlow functions.
    """
    cls = get_method(method)
    spec = as_spec(model)
    per_model = _CACHE.setdefault(spec, {})
    key = (method, _params_key(params))
    explainer = per_model.get(key)
    if explainer is None:
        explainer = per_model[key] = cls(spec, **params)
    return explainer.explain(x, target=target, batch_size=batch_size, progress=progress)
