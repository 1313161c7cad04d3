"""``cnnvis_eval.explain``: one call for any registered method, with explainers cached.

The explainers (and their compiled functions) are kept per model in
:data:`cnnvis_eval.cache.default_cache`; ``default_cache.drop(model)`` releases them.
"""

from __future__ import annotations

import numpy as np

from .cache import default_cache
from .graph import is_subclassed, known_input_shape
from .methods.base import Explanation, get_method
from .models.spec import as_spec


def explain(method: str, model, x, target=None, batch_size: int | None = None,
            progress: bool | None = None, output: int | str | None = None,
            input_shape: tuple | None = None, **params) -> Explanation:
    """Explain ``x`` with the method registered as ``method``.

    Parameters
    ----------
    method : str
        A name from :func:`list_methods`.
    model : ModelSpec or keras.Model
        Sequential, functional, nested, or subclassed (traced into its layers, see
        :func:`cnnvis_eval.as_spec`).
    x : array, shape (N, H, W, C)
        Preprocessed model inputs (not modified).
    target : ClassTarget, NeuronTarget, int or None
        Default: the top class per image.
    batch_size : int, optional
    progress : bool, optional
    output : int or str, optional
        For multi-output models (required there): the output to explain, by index or by
        the name of the layer producing it; a softmax output is explained on its logits.
    input_shape : tuple (H, W, C), optional
        For subclassed models: the shape to trace them with; default the shape they were
        built with, else ``x.shape[1:]``.
    **params
        The method's parameters (e.g. ``steps=128`` for integrated gradients).

    Returns
    -------
    Explanation
        ``heatmap`` float32 (N, H, W); see :class:`Explanation`.

    Raises
    ------
    NonFiniteError
        A heatmap of finite input has NaN or inf values (names the method and the image).

    Explainers are cached per (model, method, parameters) in
    :data:`cnnvis_eval.cache.default_cache`, so repeated calls reuse their compiled
    TensorFlow functions; one cached explainer may serve several callers at once.
    """
    explainer = _explainer(method, model, x, output, input_shape, params)
    return explainer.explain(x, target=target, batch_size=batch_size, progress=progress)


def explain_targets(method: str, model, x, targets, batch_size: int | None = None,
                    progress: bool | None = None, output: int | str | None = None,
                    input_shape: tuple | None = None, **params) -> list[Explanation]:
    """Explain ``x`` for several targets with the method registered as ``method``: one
    :class:`Explanation` per target, in order, each equal to ``explain(method, model, x,
    target=t, ...)``.

    The perturbation methods (the methods with ``joint_targets``: LIME, KernelSHAP,
    occlusion, RISE, Sobol, HSIC) evaluate each perturbed input once and read every target
    from that forward pass, so e.g. the logit and two layer neurons cost about what the
    logit alone does; the other methods explain the targets one after the other.

    Parameters
    ----------
    targets : sequence of ClassTarget, NeuronTarget, int or None
        At least one.
    Other parameters as :func:`explain`.

    Returns
    -------
    list of Explanation
        ``heatmap`` float32 (N, H, W) each.
    """
    explainer = _explainer(method, model, x, output, input_shape, params)
    return explainer.explain_targets(x, list(targets), batch_size=batch_size, progress=progress)


def _explainer(method: str, model, x, output, input_shape, params: dict):
    """The cached explainer of ``method`` on ``model`` with ``params`` (see :func:`explain`)."""
    cls = get_method(method)
    if input_shape is None and is_subclassed(model) and known_input_shape(model) is None \
            and np.ndim(x) >= 2:
        input_shape = tuple(int(d) for d in np.shape(x)[1:])
    spec = as_spec(model, input_shape=input_shape, output=output)
    return default_cache.explainer(spec, method, params, lambda: cls(spec, **params))


__all__ = ["explain", "explain_targets"]
