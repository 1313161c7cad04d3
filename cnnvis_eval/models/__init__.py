"""Models: the five Keras applications (zoo), small trained members of their families
(mini), the ModelSpec that carries a model's metadata, and clones with copied weights.
The flattened graph (nested models, softmax stripping) lives in :mod:`cnnvis_eval.graph`."""

from __future__ import annotations

import os

from ..errors import InputError
from .spec import ModelSpec, as_spec
from .zoo import ARCHS, load_application

BIG_MODELS = tuple(ARCHS)


def _mini():
    try:
        from . import mini
    except ImportError:  # pragma: no cover - mini models not available in this checkout
        return None
    return mini


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`: the five architectures, then the mini models."""
    mini = _mini()
    return list(BIG_MODELS) + (list(mini.MINI_MODELS) if mini is not None else [])


def load_model(
    name: str,
    weights: str | os.PathLike | None = None,
    input_shape: tuple | None = None,
    download: bool = True,
) -> ModelSpec:
    """Load a model by name as a :class:`ModelSpec`.

    Parameters
    ----------
    name : str
        ``"vgg16"``, ``"inception_v3"``, ``"xception"``, ``"resnet50"``, ``"mobilenet_v2"``,
        or a mini model (``"mini_resnet"``, ... see :func:`list_models`).
    weights : None, "imagenet" or path
        For the five architectures: random (None), ImageNet, or a weights file.  Mini
        models load their committed trained weights by default.
    input_shape : (H, W, 3), optional
        Input size; defaults to the architecture's native size.
    download : bool
        Whether ``weights="imagenet"`` may try to download a missing file.

    Raises
    ------
    InputError
        Unknown name or unusable input shape.
    WeightsUnavailableError
        Weights file missing; the message says which file to place where.
    """
    if name in ARCHS:
        return load_application(name, weights=weights, input_shape=input_shape, download=download)
    mini = _mini()
    if mini is not None and name in mini.MINI_MODELS:
        return mini.load_mini(name, weights=weights, input_shape=input_shape)
    raise InputError(f"unknown model {name!r}; available: {', '.join(list_models())}")


__all__ = ["BIG_MODELS", "ModelSpec", "as_spec", "list_models", "load_model"]
