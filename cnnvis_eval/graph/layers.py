"""Layer helpers: what a Keras layer does, and clones of layers with copied weights.

Questions about one layer (its activation, the rectifier it applies, whether it is a
convolution) and changed copies of it (:func:`clone_layer`, :func:`linear_part`).  Questions
about the whole graph live in :mod:`cnnvis_eval.graph.queries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

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
    """Parameters of a piecewise-linear rectifier (Keras ``relu`` semantics)::

        f(z) = min(z, max_value)                  z >  threshold
        f(z) = negative_slope * (z - threshold)   z <= threshold

    ``negative_slope`` is 0 for ReLU/ReLU6, the slope of a LeakyReLU, and unused when
    ``prelu`` is True (a PReLU layer: the slope is the layer's learned ``alpha`` weights,
    shape ``input_shape[1:]`` with 1 on shared axes).  ``fused`` is True when the rectifier is
    the ``activation=`` of a Conv/Dense layer (the layer must be split into a linear clone
    and a separate rectifier to change it).
    """

    threshold: float = 0.0
    max_value: float | None = None
    fused: bool = False
    negative_slope: float = 0.0
    prelu: bool = False

    @property
    def leaky(self) -> bool:
        """True when negative inputs pass with a non-zero slope (LeakyReLU, PReLU)."""
        return self.prelu or self.negative_slope != 0.0


# the slope of activation="leaky_relu": keras.activations.leaky_relu(x, negative_slope=0.2)
_LEAKY_DEFAULT = 0.2

#: Rectifier-like units that are not piecewise linear (no on/off gate): ELU and its kin,
#: the sigmoid-weighted units and the soft rectifiers.  Keras activation names.
SMOOTH_UNITS = frozenset({
    "elu", "selu", "celu", "gelu", "silu", "swish", "hard_silu", "hard_swish", "mish",
    "softplus", "squareplus", "sparse_plus",
})
# keras.ops operation classes (functional models calling keras.ops.*) -> activation name
_OP_UNITS = {
    "Elu": "elu", "Selu": "selu", "Celu": "celu", "Gelu": "gelu", "Silu": "silu",
    "HardSilu": "hard_silu", "Softplus": "softplus", "Squareplus": "squareplus",
    "SparsePlus": "sparse_plus", "Mish": "mish",
}


def _is_op(layer, cls: str) -> bool:
    return type(layer).__name__ == cls and not isinstance(layer, keras.layers.Layer)


def rectifier_of(layer, *, leaky: bool = False) -> Rectifier | None:
    """The rectifier a layer applies, or None if it applies none.

    Recognised: ``activation="relu"``/``"relu6"`` on any layer, ``Activation("relu")``,
    ``Activation("relu6")``, ``ReLU(max_value=..., threshold=...)`` without a negative
    slope, and the ``keras.ops.relu``/``relu6`` operations.

    With ``leaky=True`` also the leaky piecewise-linear rectifiers: ``LeakyReLU``,
    ``PReLU``, ``ReLU(negative_slope=...)``, ``activation="leaky_relu"`` (slope 0.2, the
    Keras default of the string) and ``keras.ops.leaky_relu``.  The default (``leaky=False``)
    is for callers whose rules hold for ReLU only (relevance propagation).
    """
    r = _rectifier(layer)
    if r is not None and r.leaky and not leaky:
        return None
    return r


def _rectifier(layer) -> Rectifier | None:
    if isinstance(layer, keras.layers.ReLU):
        mv = layer.max_value
        return Rectifier(float(layer.threshold or 0.0), None if mv is None else float(mv),
                         negative_slope=float(getattr(layer, "negative_slope", 0.0) or 0.0))
    if isinstance(layer, keras.layers.LeakyReLU):
        return Rectifier(negative_slope=float(layer.negative_slope))
    if isinstance(layer, keras.layers.PReLU):
        return Rectifier(prelu=True)
    if _is_op(layer, "Relu") or _is_op(layer, "Relu6"):
        return Rectifier(0.0, 6.0 if type(layer).__name__ == "Relu6" else None)
    if _is_op(layer, "LeakyRelu"):
        return Rectifier(negative_slope=float(layer.negative_slope))
    act = activation_name(getattr(layer, "activation", None))
    fused = not isinstance(layer, keras.layers.Activation)
    if act == "relu":
        return Rectifier(0.0, None, fused)
    if act == "relu6":
        return Rectifier(0.0, 6.0, fused)
    if act == "leaky_relu":
        return Rectifier(fused=fused, negative_slope=_LEAKY_DEFAULT)
    return None


def smooth_unit_of(layer) -> str | None:
    """Name of the smooth rectifier-like unit a layer applies (``"elu"``, ``"gelu"``,
    ``"silu"``, ...; see :data:`SMOOTH_UNITS`), or None.

    Found as ``ELU`` layers, ``activation=`` strings or callables on any layer, and
    ``keras.ops`` operations (``keras.ops.gelu``...).  These units have no on/off gate, so
    rules defined by a rectifier's gate (Guided Backprop, DeconvNet) do not apply to them.
    """
    if isinstance(layer, keras.layers.ELU):
        return "elu"
    if not isinstance(layer, keras.layers.Layer) and type(layer).__name__ in _OP_UNITS:
        return _OP_UNITS[type(layer).__name__]
    act = activation_name(getattr(layer, "activation", None))
    return act if act in SMOOTH_UNITS else None


class LinearPart:
    """``node``'s layer without its fused activation: a clone with copied weights, called
    like the layer; :meth:`sync` copies the layer's current weights into the clone again
    (after the model's variables changed in place)."""

    def __init__(self, layer, input_shape):
        self.layer = layer
        self.clone = clone_layer(layer, input_shape, activation="linear")

    def __call__(self, *a, **k):
        return self.clone(*a, **k)

    def sync(self) -> None:
        for mine, theirs in zip(self.clone.weights, self.layer.weights):
            mine.assign(theirs)


def sync_clones(fns) -> None:
    """Call ``sync()`` of every callable in ``fns`` that has one: the overrides or units a
    method built around :class:`LinearPart` clones carry their clone's ``sync`` (the
    methods' ``sync_weights``)."""
    for fn in fns:
        sync = getattr(fn, "sync", None)
        if sync is not None:
            sync()


def linear_part(graph: FlatGraph, node: FlatNode) -> LinearPart:
    """A callable computing ``node``'s layer without its fused activation (a clone; see
    :class:`LinearPart`)."""
    return LinearPart(node.layer, graph.input_shapes(node)[0])


__all__ = [
    "SMOOTH_UNITS",
    "LinearPart",
    "Rectifier",
    "activation_name",
    "clone_layer",
    "is_conv",
    "linear_part",
    "rectifier_of",
    "smooth_unit_of",
    "sync_clones",
]
