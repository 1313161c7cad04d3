"""Layer helpers: what a Keras layer does, and clones of layers with copied weights.

Questions about one layer (its activation, the rectifier it applies, whether it is a
convolution) and changed copies of it (:func:`clone_layer`, :func:`linear_part`).  Questions
about the whole graph live in :mod:`cnnvis_eval.graph.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import keras
import numpy as np

from ..errors import UnsupportedLayerError
from .precision import is_low_precision

if TYPE_CHECKING:  # pragma: no cover
    from .flat import FlatGraph, FlatNode

_CONV = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


def is_conv(layer) -> bool:
    """True for 2-D convolution layers (plain, depthwise, separable, transposed)."""
    return isinstance(layer, _CONV)


def activation_name(fn: Any) -> str | None:
    """Name of a Keras activation function (``"relu"``, ``"softmax"``, ...) or None."""
    if fn is None:
        return None
    if isinstance(fn, str):
        return fn
    try:
        name = keras.activations.serialize(fn)
        if isinstance(name, dict):
            name = name.get("config", name.get("class_name"))
        if isinstance(name, str):
            return name.rsplit(">", 1)[-1]
    except Exception:  # pragma: no cover - exotic callables
        pass
    return getattr(fn, "__name__", None)


def clone_layer(layer, input_shape: tuple | Sequence[tuple], **changes):
    """A copy of ``layer`` with config ``changes`` applied and the same weight values.

    The copy is built for ``input_shape`` and gets *copies* of the weights, so changing it
    never touches the original.  A mixed-precision layer (float16/bfloat16 compute) is
    cloned as float32: the graph runs such layers in float32 (see FlatGraph).
    """
    config = layer.get_config()
    if is_low_precision(layer):
        config["dtype"] = "float32"
    config.update(changes)
    try:
        clone = type(layer).from_config(config)
        clone.build(input_shape)
        clone.set_weights([np.array(w) for w in layer.get_weights()])
    except Exception as err:  # pragma: no cover - only for exotic layers
        raise UnsupportedLayerError(
            f"cannot clone layer {layer.name!r} ({type(layer).__name__}) with {changes}: {err}"
        ) from err
    return clone


@dataclass(frozen=True)
class Rectifier:
    """Parameters of a rectifying activation: ``min(max(x, threshold), max_value)``.

    ``fused`` is True when the rectifier is the ``activation=`` of a Conv/Dense layer
    (the layer must be split into a linear clone and a separate rectifier to change it).
    """

    threshold: float = 0.0
    max_value: float | None = None
    fused: bool = False


def rectifier_of(layer) -> Rectifier | None:
    """The rectifier a layer applies, or None if it applies none.

    Recognised: ``activation="relu"``/``"relu6"`` on any layer, ``Activation("relu")``,
    ``Activation("relu6")``, ``ReLU(max_value=..., threshold=...)`` without a negative
    slope, and the ``keras.ops.relu``/``relu6`` operations.
    """
    if isinstance(layer, keras.layers.ReLU):
        if float(getattr(layer, "negative_slope", 0.0) or 0.0) != 0.0:
            return None
        mv = layer.max_value
        return Rectifier(float(layer.threshold or 0.0), None if mv is None else float(mv))
    cls = type(layer).__name__
    if cls in ("Relu", "Relu6") and not isinstance(layer, keras.layers.Layer):
        return Rectifier(0.0, 6.0 if cls == "Relu6" else None)
    act = activation_name(getattr(layer, "activation", None))
    fused = not isinstance(layer, keras.layers.Activation)
    if act == "relu":
        return Rectifier(0.0, None, fused)
    if act == "relu6":
        return Rectifier(0.0, 6.0, fused)
    return None


def linear_part(graph: FlatGraph, node: FlatNode) -> Callable:
    """A callable computing ``node``'s layer without its fused activation (a clone)."""
    clone = clone_layer(node.layer, graph.input_shapes(node)[0], activation="linear")
    return lambda *a, **k: clone(*a, **k)


__all__ = [
    "Rectifier",
    "activation_name",
    "clone_layer",
    "is_conv",
    "linear_part",
    "rectifier_of",
]
