"""Modified backpropagation: DeconvNet and Guided Backprop.

The two methods differ from the gradient, and from each other, only in the backward rule
of the rectifiers (Springenberg et al. 2015, fig. 1):

=================  =========================================================
gradient           ``dx = dy * [lo < x < hi]``
DeconvNet          ``dx = max(dy, 0)``                    (forward mask ignored)
Guided Backprop    ``dx = max(dy, 0) * [lo < x < hi]``
=================  =========================================================

with ``lo`` the threshold (0) and ``hi`` the ReLU's ``max_value`` (6 for ReLU6; infinite
otherwise), so the guided rule also blocks ``x >= 6`` in MobileNetV2's ReLU6.

Every way Keras expresses a rectifier is found (:func:`~cnnvis_eval.models.surgery.rectifier_of`):
``activation="relu"``/``"relu6"`` on any layer, ``Activation``, ``ReLU(max_value=...)``,
and ``keras.ops.relu`` nodes, inside nested models too.  A layer with a fused rectifier
runs as a clone with copied weights and a linear activation, followed by the modified
rectifier; the user's model is never touched.  Overrides are built once per explainer.
"""

from __future__ import annotations

from typing import Callable, ClassVar

import tensorflow as tf

from ..errors import UnsupportedLayerError
from ..models.surgery import FlatGraph, Rectifier, linear_part, rectifier_of
from .base import BatchResult, Explainer, reduce_channels, register


def _forward(z, r: Rectifier):
    y = tf.where(z > r.threshold, z, tf.zeros_like(z))
    return y if r.max_value is None else tf.minimum(y, tf.cast(r.max_value, z.dtype))


def _pass_mask(z, r: Rectifier):
    mask = z > r.threshold
    if r.max_value is not None:
        mask = tf.logical_and(mask, z < tf.cast(r.max_value, z.dtype))
    return mask


def guided_rectifier(r: Rectifier) -> Callable:
    """Rectifier whose backward pass is ``max(dy, 0) * [lo < z < hi]``."""

    @tf.custom_gradient
    def f(z):
        def grad(dy):
            keep = tf.logical_and(_pass_mask(z, r), dy > 0)
            return tf.where(keep, dy, tf.zeros_like(dy))

        return _forward(z, r), grad

    return f


def deconvnet_rectifier(r: Rectifier) -> Callable:
    """Rectifier whose backward pass is ``max(dy, 0)`` (the DeconvNet rule)."""

    @tf.custom_gradient
    def f(z):
        def grad(dy):
            return tf.nn.relu(dy)

        return _forward(z, r), grad

    return f


def rectifier_overrides(graph: FlatGraph, make: Callable[[Rectifier], Callable]) -> dict:
    """Layer-name -> callable overrides replacing every rectifier of ``graph`` by ``make(r)``.

    Fused rectifiers (``Conv2D(activation="relu")``) become a linear clone of the layer
    followed by the new rectifier.
    """
    if graph.opaque:
        raise UnsupportedLayerError(
            f"model {graph.model.name!r} is a subclassed model; modified backpropagation needs "
            "to see its ReLU layers (build it with the functional or Sequential API)"
        )
    out: dict = {}
    for node in graph.nodes:
        r = rectifier_of(node.layer)
        if r is None:
            continue
        rect = make(r)
        if r.fused:
            lin = linear_part(graph, node)
            out[node.name] = lambda *a, _lin=lin, _rect=rect, **k: _rect(_lin(*a, **k))
        else:
            out[node.name] = lambda x, *a, _rect=rect, **k: _rect(x)
    return out


class ModifiedBackprop(Explainer):
    """Middle class: the gradient through rectifiers with a replaced backward rule.

    Subclasses set ``rule`` to a factory ``Rectifier -> callable``.
    heatmap = max over channels of |signal| (``channel_reduce`` overrides);
    ``attribution`` is the backpropagated signal, shape (N, H, W, C).
    ``meta["rectifiers"]`` counts the rectifiers that were replaced.
    """

    rule: ClassVar[Callable[[Rectifier], Callable]]

    def __init__(self, model, *, channel_reduce: str = "max_abs"):
        super().__init__(model, channel_reduce=channel_reduce)
        self.channel_reduce = channel_reduce
        self.overrides = rectifier_overrides(self.graph, type(self).rule)

    def _explain_batch(self, x, bound):
        g, s, i = self.gradients(x, bound, self.overrides, tag=self.name)
        meta = {"rectifiers": len(self.overrides)}
        return BatchResult(reduce_channels(g, self.channel_reduce), g, i, s, meta)


@register("guided_backprop")
class GuidedBackprop(ModifiedBackprop):
    """Guided Backpropagation (Springenberg et al. 2015)."""

    rule = staticmethod(guided_rectifier)


@register("deconvnet")
class DeconvNet(ModifiedBackprop):
    """DeconvNet (Zeiler & Fergus 2014) as a modified backward pass."""

    rule = staticmethod(deconvnet_rectifier)
