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

Every way Keras expresses a rectifier is found (:func:`~cnnvis_eval.graph.rectifier_of`):
``activation="relu"``/``"relu6"`` on any layer, ``Activation``, ``ReLU(max_value=...)``,
and ``keras.ops.relu`` nodes, inside nested models too.  A layer with a fused rectifier
runs as a clone with copied weights and a linear activation, followed by the modified
rectifier; the user's model is never touched.  Overrides are built once per explainer.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from ..errors import UnsupportedLayerError
from ..graph import FlatGraph, Rectifier, linear_part, rectifier_of
from .base import BatchResult, Explainer, reduce_channels, register


def _forward(z, r: Rectifier):
    y = tf.where(z > r.threshold, z, tf.zeros_like(z))
    return y if r.max_value is None else tf.minimum(y, tf.cast(r.max_value, z.dtype))


def deconvnet_rectifier(r: Rectifier) -> Callable:
    """Rectifier whose backward pass is ``max(dy, 0)`` (the DeconvNet rule)."""

    @tf.custom_gradient
    def f(z):
        def grad(dy):
            return tf.nn.relu(dy)

        return _forward(z, r), grad

    return f


@tf.custom_gradient
def positive_gradient(y):
    """Identity whose backward pass keeps only the positive part of the gradient."""
    return tf.identity(y), tf.nn.relu


def guided_overrides(graph: FlatGraph) -> dict:
    """Overrides for Guided Backprop that keep every rectifying layer intact.

    The rectifier's own backward pass already multiplies by its pass mask
    ``[lo < z < hi]`` (TensorFlow's ReLU6 gradient is ``0 < z < 6``), so an identity after
    the layer that keeps only the positive gradient gives exactly the guided rule
    ``max(dy, 0) * [lo < z < hi]`` — without splitting fused Conv+ReLU layers, which keeps
    their fused forward kernels and costs nothing extra.
    """
    _check_visible(graph)
    out: dict = {}
    for node in graph.nodes:
        if rectifier_of(node.layer) is None:
            continue

        def call(*a, _node=node, **k):
            return positive_gradient(graph.call_layer(_node, *a, **k))

        out[node.name] = call
    return out


def _check_visible(graph: FlatGraph) -> None:
    if graph.opaque:
        raise UnsupportedLayerError(
            f"model {graph.model.name!r} is a subclassed model; modified backpropagation needs "
            "to see its ReLU layers (build it with the functional or Sequential API)"
        )


def rectifier_overrides(graph: FlatGraph, make: Callable[[Rectifier], Callable]) -> dict:
    """Layer-name -> callable overrides replacing every rectifier of ``graph`` by ``make(r)``.

    Fused rectifiers (``Conv2D(activation="relu")``) become a linear clone of the layer
    followed by the new rectifier.
    """
    _check_visible(graph)
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

    Subclasses implement ``build_overrides(graph) -> {layer name: callable}``.
    heatmap = max over channels of |signal| (``channel_reduce`` overrides);
    ``attribution`` is the backpropagated signal, shape (N, H, W, C).
    ``meta["rectifiers"]`` counts the rectifiers that were replaced.
    """

    def __init__(self, model, *, channel_reduce: str = "max_abs"):
        super().__init__(model, channel_reduce=channel_reduce)
        self.channel_reduce = channel_reduce
        self.overrides = self.build_overrides(self.graph)

    @staticmethod
    def build_overrides(graph: FlatGraph) -> dict:
        raise NotImplementedError

    def _explain_batch(self, x, bound):
        g, s, i = self.gradients(x, bound, self.overrides, tag=self.name)
        meta = {"rectifiers": len(self.overrides)}
        return BatchResult(reduce_channels(g, self.channel_reduce), g, i, s, meta)


@register("guided_backprop")
class GuidedBackprop(ModifiedBackprop):
    """Guided Backpropagation (Springenberg et al. 2015)."""

    reads_weights_once = False

    build_overrides = staticmethod(guided_overrides)


@register("deconvnet")
class DeconvNet(ModifiedBackprop):
    """DeconvNet (Zeiler & Fergus 2014) as a modified backward pass.

    The DeconvNet rule ignores the forward pass mask, so fused Conv+ReLU layers are split
    into a linear clone (copied weights) and a rectifier with the replaced backward pass.
    """

    @staticmethod
    def build_overrides(graph: FlatGraph) -> dict:
        return rectifier_overrides(graph, deconvnet_rectifier)
