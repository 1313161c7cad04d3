"""The model's inference forward pass with every BatchNormalization folded into the layer
before it.

At inference a BatchNormalization is the affine map ``x * s + t`` per channel
(``s = gamma / sqrt(var + eps)``, ``t = beta - mean * s``).  Behind a kernel layer with a
linear activation (``Conv2D``, ``DepthwiseConv2D``, ``SeparableConv2D``, ``Dense``) it is
the same layer with its output channels' kernel scaled by ``s`` and bias ``b * s + t``:
one convolution + bias (which TensorFlow fuses, with a following ReLU) instead of a
convolution followed by a multiply and an add over the whole activation.  On the 64 px
mini models a forward pass of 32 images costs 11-33% less (mini_mobilenet 9.0 -> 6.0 ms,
mini_resnet 6.5 -> 5.8 ms); values differ from the model's own by float rounding (about
3e-7 of the output's range).

:func:`forward_overrides` gives the folds as :meth:`FlatGraph.run` overrides (the CAM
family's maps/gradient pass uses them); the methods and metrics that only *evaluate* the
model (perturbation methods, Score-CAM's masked inputs, the target forward, the
faithfulness curves) run the graph through :func:`run_folded`.  The folded kernel and bias are computed in the graph from the layers'
own variables on every call, so a model whose weights change in place (the randomization
checks) is followed without a copy to keep in sync.

A pair is folded only when nothing could tell: both layers are the Keras classes
themselves (a subclass may compute more than its weights say), neither runs in mixed
precision, the kernel layer is channels-last, not quantized and not overridden, its output
is read by the BatchNormalization alone, the BatchNormalization normalizes the last axis
and its output is not read by an ``Add`` (see :func:`foldable_pairs`), and the kernel
layer's output is not one of the tensors asked for.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Callable, Sequence

import keras
import tensorflow as tf

from .layers import activation_name

if TYPE_CHECKING:  # pragma: no cover
    from .flat import FlatGraph, FlatNode

#: The kernel layers a following BatchNormalization folds into (exact classes).
FOLDABLE = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D,
            keras.layers.Dense)

_CACHE: "weakref.WeakKeyDictionary[FlatGraph, dict]" = weakref.WeakKeyDictionary()


def normalizes_last_axis(graph: "FlatGraph", node: "FlatNode") -> bool:
    """Whether BatchNormalization ``node`` normalizes the last axis of its input (the
    channels of a channels-last map: then it is a per-output-channel affine map of the
    kernel layer before it)."""
    axis = node.layer.axis
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    rank = len(graph.input_shapes(node)[0])
    return len(axes) == 1 and axes[0] % rank == rank - 1


def foldable_pairs(graph: "FlatGraph", keep: Sequence[int] = ()) -> list[tuple["FlatNode", "FlatNode"]]:
    """``(kernel node, BatchNormalization node)`` pairs of ``graph`` that fold (see the
    module docstring); ``keep``: tensor keys that must stay computed as they are (the
    tensors asked of the pass)."""
    keep = set(keep)
    pairs = []
    for bn in graph.nodes:
        if type(bn.layer) is not keras.layers.BatchNormalization or len(bn.inputs) != 1 \
                or len(bn.outputs) != 1 or bn.name in graph.float32_nodes or bn.name in graph.overrides:
            continue
        prev = graph.producer(bn.inputs[0])
        if prev is None or type(prev.layer) not in FOLDABLE:
            continue
        layer = prev.layer
        if (prev.name in graph.float32_nodes or prev.name in graph.overrides or len(prev.outputs) != 1
                or len(prev.inputs) != 1 or prev.outputs[0] in keep
                or activation_name(getattr(layer, "activation", None)) not in (None, "linear")
                or getattr(layer, "quantization_mode", None)
                or getattr(layer, "data_format", "channels_last") != "channels_last"
                or not normalizes_last_axis(graph, bn)
                or len(graph.consumers(prev.outputs[0])) != 1):
            continue
        pairs.append((prev, bn))
    # TensorFlow 2.21's remapper fuses an Add (and its ReLU) into a convolution + bias that
    # feeds it; on residual blocks whose Adds read folded pairs it fails on some graphs
    # ("remapper failed: ... Mutation::Apply error", printed on the console) and leaves
    # the graph unfused.  A pair read by an Add stays as the model computes it.
    added = {k for node in graph.nodes if isinstance(node.layer, keras.layers.Add) for k in node.inputs}
    return [p for p in pairs if p[1].outputs[0] not in added]


def _folded_call(layer, bn) -> Callable:
    """``x -> bn(layer(x))`` as one kernel op + bias, the folded weights computed from the
    live variables."""

    def call(x, *args, **kwargs):
        s = tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.scale:
            s = bn.gamma * s
        t = -bn.moving_mean * s
        if bn.center:
            t = t + bn.beta
        if getattr(layer, "use_bias", False):
            t = t + layer.bias * s
        if isinstance(layer, keras.layers.Dense):
            y = keras.ops.matmul(x, layer.kernel * s)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            k = layer.kernel
            y = keras.ops.depthwise_conv(x, k * tf.reshape(s, tf.shape(k)[2:]), strides=layer.strides,
                                         padding=layer.padding, dilation_rate=layer.dilation_rate,
                                         data_format=layer.data_format)
        elif isinstance(layer, keras.layers.SeparableConv2D):
            y = keras.ops.separable_conv(x, layer.depthwise_kernel, layer.pointwise_kernel * s,
                                         strides=layer.strides, padding=layer.padding,
                                         dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        else:
            y = keras.ops.conv(x, layer.kernel * s, strides=list(layer.strides), padding=layer.padding,
                               dilation_rate=layer.dilation_rate, data_format=layer.data_format)
        return tf.nn.bias_add(y, t)

    return call


def _identity(x, *args, **kwargs):
    return x


def forward_overrides(graph: "FlatGraph", keys: Sequence[int] = ()) -> dict[str, Callable]:
    """:meth:`FlatGraph.run` overrides running each foldable pair as one layer: the kernel
    node computes the pair's output, the BatchNormalization hands it on.  ``keys``: the
    tensor keys the pass is asked for (a kernel layer's output among them keeps its pair
    unfolded).  Cached per graph and keys."""
    per_graph = _CACHE.setdefault(graph, {})
    key = tuple(sorted(set(keys)))
    if key not in per_graph:
        out: dict[str, Callable] = {}
        for prev, bn in foldable_pairs(graph, key):
            out[prev.name] = _folded_call(prev.layer, bn.layer)
            out[bn.name] = _identity
        per_graph[key] = out
    return per_graph[key]


def run_folded(graph: "FlatGraph", x, outputs: Sequence) -> list:
    """``graph.run(x, outputs)`` with the BatchNormalizations folded (:func:`forward_overrides`):
    the tensors asked for, for evaluating the model (differentiable too, but a rule that
    reads the tensors between a kernel layer and its BatchNormalization must use
    :meth:`FlatGraph.run`)."""
    keys = [graph.key(o) for o in outputs]
    return graph.run(x, keys, overrides=forward_overrides(graph, keys))


__all__ = ["FOLDABLE", "foldable_pairs", "forward_overrides", "normalizes_last_axis", "run_folded"]
