"""FullGrad (Srinivas & Fleuret 2019): input-gradient x input plus the bias-gradients of
every convolutional and BatchNorm layer, each rectified, normalised and upsampled."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ...errors import UnsupportedLayerError
from ...graph import FlatGraph, FlatNode, activation_name, linear_part
from ..base import BatchResult, Explainer, register

_EPS = 1e-7  # pytorch-grad-cam's scale_cam_image: (m - min) / (max - min + 1e-7)


def _bias_of(node: FlatNode):
    """The (explicit or implicit) per-channel bias of a node, as a function of the layer's
    variables (read at call time), or None: Conv and Dense biases; BatchNormalization's
    ``beta - mean * gamma / sqrt(var + eps)``."""
    layer = node.layer
    if isinstance(layer, keras.layers.BatchNormalization):
        def bn_bias():
            inv = keras.ops.rsqrt(layer.moving_variance + layer.epsilon)
            if layer.scale:
                inv = inv * layer.gamma
            b = -layer.moving_mean * inv
            return b + layer.beta if layer.center else b
        return bn_bias
    if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
        return lambda: layer.bias
    return None


def bias_layers(graph: FlatGraph) -> list[FlatNode]:
    """Nodes of ``graph`` with a per-channel bias and a 4-D (N, h, w, C) output, in order."""
    return [n for n in graph.nodes
            if len(n.outputs) == 1 and len(graph.shape(n.outputs[0])) == 4 and _bias_of(n) is not None]


def _normalised_sum(m):
    """(N, h, w, C) -> (N, h, w): each channel min-max normalised per image, summed."""
    lo = tf.reduce_min(m, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(m, axis=(1, 2), keepdims=True)
    return tf.reduce_sum((m - lo) / (hi - lo + _EPS), axis=-1)


@register("full_grad")
class FullGrad(Explainer):
    """FullGrad (Srinivas & Fleuret 2019) as pytorch-grad-cam computes it.

    ``S = norm(sum_c psi(|dy/dx * x|_c) + sum_l sum_c psi(|dy/dz_l * b_l|_c))`` where
    ``z_l`` (N, h, w, C) is the pre-activation output of every layer ``l`` with a
    per-channel bias ``b_l`` and a 4-D output (Conv2D, DepthwiseConv2D, SeparableConv2D,
    Conv2DTranspose with ``use_bias``; BatchNormalization with its implicit bias
    ``beta - mean gamma / sqrt(var + eps)``), ``psi`` min-max normalises each channel per
    image (``(m - min) / (max - min + 1e-7)``) and the per-layer channel sums are upsampled
    bilinearly to the input size (half-pixel centres); ``norm`` min-max normalises the
    total per image.  Dense biases (no spatial map) are left out, as in pytorch-grad-cam.
    A fused activation (``Conv2D(activation="relu")``) is split so that ``z_l`` is the
    pre-activation, on a private clone of the layer (the model is never modified).

    heatmap (N, H, W) in [0, 1]; ``meta["bias_layers"]`` the layers used.

    Raises
    ------
    UnsupportedLayerError
        Subclassed models kept opaque (their layers cannot be seen).
    """

    def __init__(self, model):
        super().__init__(model)
        if self.graph.opaque:
            raise UnsupportedLayerError(
                f"full_grad: model {self.graph.model.name!r} is a subclassed model; full_grad needs "
                "its layers' biases (build it with the functional or Sequential API)")
        self.nodes = bias_layers(self.graph)
        self._split: dict = {}  # node name -> (linear clone, activation) for fused activations
        for node in self.nodes:
            act = getattr(node.layer, "activation", None)
            if act is not None and activation_name(act) not in (None, "linear"):
                self._split[node.name] = (linear_part(self.graph, node), act)

    def sync_weights(self) -> None:
        """Copy the layers' current weights into the linear clones of fused layers (the
        biases are read from the variables at call time)."""
        for lin, _ in self._split.values():
            lin.sync()

    def _fn(self, bound):
        graph, nodes, split = self.graph, self.nodes, self._split
        size = tuple(graph.input_shape[1:3])
        biases = [_bias_of(n) for n in nodes]

        def build():
            @tf.function(autograph=False, input_signature=[self._signature(), tf.TensorSpec((None,), tf.int32)])
            def fn(x, indices):
                pre: dict = {}

                def splitter(name, lin, act):
                    def call(*a, **k):
                        z = lin(*a, **k)
                        pre[name] = z
                        return act(z)
                    return call

                overrides = {name: splitter(name, lin, act) for name, (lin, act) in split.items()}
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    values = graph.run(x, [bound.key], overrides, record=True)[1]
                    scores, idx = bound.select(values[bound.key], indices)
                # the layers the graph ran: an intermediate neuron's graph stops at its layer,
                # and a layer after it has no gradient (and no value) to contribute
                ran = [(n, b) for n, b in zip(nodes, biases)
                       if (n.name in pre if n.name in split else n.outputs[0] in values)]
                zs = [pre[n.name] if n.name in split else values[n.outputs[0]] for n, _ in ran]
                grads = tape.gradient(scores, [x] + zs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                total = _normalised_sum(tf.abs(grads[0] * x))
                for g, (_, bias) in zip(grads[1:], ran):
                    low = _normalised_sum(tf.abs(g * tf.cast(bias(), g.dtype)))
                    up = tf.image.resize(low[..., None], size, method="bilinear")[..., 0]
                    total += tf.cast(up, total.dtype)  # resize computes in float32
                lo = tf.reduce_min(total, axis=(1, 2), keepdims=True)
                hi = tf.reduce_max(total, axis=(1, 2), keepdims=True)
                return (total - lo) / (hi - lo + _EPS), scores, idx

            return fn

        return self._cached(("full_grad", bound.key, bound.reduce, id(self)), build)

    def _explain_batch(self, x, bound):
        heat, s, i = self._fn(bound)(x, bound.indices)
        meta = {"bias_layers": [n.name for n in self.nodes]}
        return BatchResult(heat.numpy().astype(np.float32), None, i.numpy(), s.numpy(), meta)


__all__ = ["FullGrad", "bias_layers"]
