"""``cnnvis_eval.explain``: one call for any registered method, with explainers cached.

The explainers (and their compiled functions) are kept per model in
:data:`cnnvis_eval.cache.default_cache`; ``default_cache.drop(model)`` releases them.
"""

from __future__ import annotations

from .cache import default_cache
from .methods.base import Explanation, get_method
from .models.spec import as_spec


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

    Explainers are cached per (model, method, parameters) in
    :data:`cnnvis_eval.cache.default_cache`, so repeated calls reuse their compiled
    TensorFlow functions; one cached explainer may serve several callers at once.
    """
    cls = get_method(method)
    spec = as_spec(model)
    explainer = default_cache.explainer(spec, method, params, lambda: cls(spec, **params))
    return explainer.explain(x, target=target, batch_size=batch_size, progress=progress)


__all__ = ["explain"]
