"""DeepLIFT with the rescale rule (Shrikumar et al. 2017), as Captum's ``DeepLift``.

Every quantity is a difference from its value on a reference input ``x0`` (the
baseline): ``attribution = (x - x0) * m`` where the multipliers ``m`` are backpropagated like
a gradient except at the elementwise nonlinearities ``y = f(z)``, whose local derivative is
replaced by the rescale multiplier ``(f(z) - f(z0)) / (z - z0)`` (the derivative ``f'(z)``
where ``|z - z0| <= 1e-7``; Captum falls back likewise below its epsilon 1e-10).  Linear layers (convolutions, dense,
batch normalization in inference, average pooling, additions, concatenations, reshapes,
padding, dropout) keep their gradient, which is their multiplier; max pooling keeps its
gradient too (the input's winner takes the difference, as DeepExplain; Captum's DeepLift
distributes it over the window).  On a network whose nonlinearities are only ReLUs, without
biases, the reference activations at a zero baseline are all zero, so every multiplier
is ``relu(z) / z`` = the gradient and DeepLIFT equals gradient x input.

Implementation: one compiled function runs the reference forward (keeping each
nonlinearity's input), then the input forward and backward, where each nonlinearity is a
``tf.custom_gradient`` reading its reference input, and picks the target ("top") inside the
same graph.  A baseline shared by every image of the batch (``"zeros"``, ``"black"``, a number,
one image) runs its reference forward on one image and broadcasts it, so the cost is about one
gradient plus the rescale multipliers.  A layer with a fused activation (``Conv2D(activation="relu")``) runs as a linear clone followed by
the activation; the user's model is never modified.  Any other layer (multiplications,
softmax inside the network, attention, normalisation over features, subclassed models)
is refused at construction with :class:`~cnnvis_eval.errors.UnsupportedLayerError` naming it.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ..errors import UnsupportedLayerError
from ..graph import FlatGraph, FlatNode, linear_part, sync_clones
from ..graph.layers import activation_name
from ..params import check_baseline, resolve_baseline
from ..targets import BoundTarget
from .base import BatchResult, Explainer, reduce_channels, register

EPS = 1e-7

#: activations applied elementwise (rescale rule); "linear" is the identity
ELEMENTWISE = frozenset({
    "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "hard_sigmoid", "elu", "selu", "celu", "gelu",
    "silu", "swish", "hard_silu", "hard_swish", "mish", "softplus", "softsign", "exponential",
    "sparse_plus", "squareplus",
})
_ELEMENTWISE_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU, keras.layers.ELU)
_ELEMENTWISE_OPS = frozenset({
    "Relu", "Relu6", "LeakyRelu", "Sigmoid", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Silu",
    "HardSilu", "Softplus", "SparsePlus", "Squareplus", "Mish", "HardSigmoid", "Softsign",
})
_LINEAR_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D, keras.layers.Conv2DTranspose, keras.layers.Dense,
    keras.layers.BatchNormalization, keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
    keras.layers.AveragePooling1D, keras.layers.GlobalAveragePooling1D, keras.layers.Add,
    keras.layers.Subtract, keras.layers.Average, keras.layers.Concatenate, keras.layers.Flatten,
    keras.layers.Reshape, keras.layers.Permute, keras.layers.ZeroPadding2D, keras.layers.Cropping2D,
    keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
    keras.layers.GaussianDropout, keras.layers.Rescaling, keras.layers.Normalization,
    keras.layers.Identity, keras.layers.UpSampling2D, keras.layers.InputLayer, keras.layers.Activation,
)
_MAX_POOL = (keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
             keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D)
_LINEAR_OPS = frozenset({"Add", "Subtract", "Concatenate", "Reshape", "Transpose", "ExpandDims",
                         "Squeeze", "Negative", "Pad", "Mean", "Sum", "GetItem"})


def _rescale(z, z0, fn):
    """``fn(z)``; backward: the rescale multiplier ``(fn(z) - fn(z0)) / (z - z0)`` (``fn'(z)``
    where ``|z - z0| <= EPS``).  ``z0`` is the same unit's input on the reference."""

    @tf.custom_gradient
    def op(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = fn(z)
        local = tape.gradient(y, z)

        def grad(dy, variables=None):
            dz, dout = z - z0, y - fn(z0)
            small = tf.abs(dz) <= EPS
            g = dy * tf.where(small, local, dout / tf.where(small, tf.ones_like(dz), dz))
            return (g, [None] * len(variables)) if variables is not None else g

        return tf.identity(y), grad

    return op(z)


def _kind(graph: FlatGraph, node: FlatNode) -> str:
    """"linear", "elementwise", "fused" (linear layer + elementwise activation) or "other"."""
    layer = node.layer
    if node.name in graph.overrides:  # the stripped softmax: the graph runs the logits
        return "linear"
    if isinstance(layer, _ELEMENTWISE_LAYERS):
        return "elementwise"
    if isinstance(layer, _MAX_POOL):
        return "linear"
    if not isinstance(layer, keras.layers.Layer):
        name = type(layer).__name__
        return "elementwise" if name in _ELEMENTWISE_OPS else "linear" if name in _LINEAR_OPS else "other"
    if isinstance(layer, _LINEAR_LAYERS):
        act = activation_name(getattr(layer, "activation", None))
        if act in (None, "linear"):
            return "linear"
        if act in ELEMENTWISE:
            return "elementwise" if isinstance(layer, keras.layers.Activation) else "fused"
    return "other"


def deeplift_units(graph: FlatGraph, method: str = "deeplift") -> dict:
    """Layer name -> ``fn(z, *args, **kwargs) -> (pre-activation z, activation function)``
    of every nonlinearity of ``graph`` (elementwise activations, and the fused activation of
    a linear layer, which then runs as a linear clone), checked.

    Raises
    ------
    UnsupportedLayerError
        A subclassed model, or a layer that is neither linear, max pooling nor an
        elementwise activation (the message names the first such layer).
    """
    if graph.opaque:
        raise UnsupportedLayerError(
            f"{method}: model {graph.model.name!r} is a subclassed model; DeepLIFT needs to see "
            "its layers (build it with the functional or Sequential API)")
    out: dict = {}
    for node in graph.nodes:
        kind = _kind(graph, node)
        if kind == "other":
            act = activation_name(getattr(node.layer, "activation", None))
            what = f" with activation {act!r}" if act not in (None, "linear") else ""
            raise UnsupportedLayerError(
                f"{method}: layer {node.name!r} ({node.type_name}{what}) of model "
                f"{graph.model.name!r} is not supported: DeepLIFT's rescale rule covers linear "
                "layers, max pooling and elementwise activations; use integrated_gradients")
        if kind == "elementwise":
            def unit(*a, _node=node, **k):
                return a[0], lambda t: graph.call_layer(_node, t, *a[1:], **k)
        elif kind == "fused":
            lin = linear_part(graph, node)

            def unit(*a, _lin=lin, _fn=keras.activations.get(node.layer.activation), **k):
                k.pop("training", None)
                return _lin(*a, **k), _fn

            unit.sync = lin.sync  # the clone's copied weights (DeepLift.sync_weights)
        else:
            continue
        out[node.name] = unit
    return out


def reference_overrides(units: dict, store: dict) -> dict:
    """Overrides for the reference pass: each unit's input is kept in ``store`` by name."""
    def wrap(name, unit):
        def call(*a, **k):
            z, fn = unit(*a, **k)
            store[name] = z
            return fn(z)
        return call
    return {name: wrap(name, unit) for name, unit in units.items()}


def rescale_overrides(units: dict, store: dict) -> dict:
    """Overrides for the input's pass: each unit's backward is the rescale multiplier
    against its reference input in ``store``."""
    def wrap(name, unit):
        def call(*a, **k):
            z, fn = unit(*a, **k)
            return _rescale(z, store[name], fn)
        return call
    return {name: wrap(name, unit) for name, unit in units.items()}


@register("deeplift")
class DeepLift(Explainer):
    """DeepLIFT, rescale rule (Shrikumar et al. 2017; Captum ``DeepLift``).

    Parameters
    ----------
    baseline : "zeros", "black", "mean", a number, or an array broadcastable to (N, H, W, C)
        The reference input ``x0`` (:func:`cnnvis_eval.params.resolve_baseline`).

    ``attribution`` (N, H, W, C) = ``(x - x0) * multipliers``; heatmap (N, H, W) = sum over
    channels (signed).  ``meta["completeness_error"]`` (N,): |sum(attribution) - (f(x) -
    f(x0))| / |f(x) - f(x0)| (0 up to rounding without max pooling: summation-to-delta).

    Raises
    ------
    UnsupportedLayerError
        At construction, naming the first layer the rescale rule does not cover.
    """

    reads_weights_once = True  # the fused layers' linear clones copy the weights (sync_weights)
    signed = True
    inputs_per_image = 2  # the input's and the reference's activations (MobileNetV2 224 px: 1.9x the fb pass)

    def __init__(self, model, *, baseline="zeros"):
        super().__init__(model, baseline=baseline if isinstance(baseline, str) else "array")
        self.baseline = check_baseline(baseline)
        # one set per model, like the compiled function that closes over it: sync_weights()
        # must refresh the clones the model's shared trace reads, whichever instance traced it
        self.units = self._cached(("deeplift_units", self.name), lambda: deeplift_units(self.graph, self.name))

    def sync_weights(self) -> None:
        """Copy the layers' current weights into the linear clones of fused layers."""
        sync_clones(self.units.values())

    def _fn(self, bound: BoundTarget):
        def build():
            graph, units = self.graph, self.units
            sig = self._signature()

            @tf.function(autograph=False, input_signature=[sig, sig, tf.TensorSpec((None,), tf.int32)])
            def fn(x, ref, indices):
                # ref has 1 row (shared by every image) or one per image; the stored reference
                # inputs broadcast against the input's pass either way
                store: dict = {}
                ref_value = graph.run(ref, [bound.key], reference_overrides(units, store))[0]
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    value = graph.run(x, [bound.key], rescale_overrides(units, store))[0]
                    scores, chosen = bound.select(value, indices)
                g = tape.gradient(scores, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                n = tf.shape(x)[0]
                ref_value = tf.broadcast_to(ref_value, tf.concat([[n], tf.shape(ref_value)[1:]], 0))
                ref_scores, _ = bound.select(ref_value, chosen)
                return (x - ref) * g, scores, ref_scores, chosen

            return fn

        return self._cached(("deeplift", bound.key, bound.reduce), build)

    def _explain_batch(self, x, bound):
        ref = resolve_baseline(self.baseline, x, self.spec)
        # a baseline shared by every image (zeros, black, a number, one array) runs its
        # reference pass once, not once per image: the same values, one forward of 1 image
        shared = ref[:1] if len(ref) > 1 and (ref == ref[:1]).all() else ref
        attr, fx, f0, idx = (t.numpy() for t in self._fn(bound)(x, shared, bound.indices))
        delta = fx.astype("float64") - f0
        err = abs(attr.reshape(len(x), -1).sum(1, dtype="float64") - delta) / abs(delta).clip(1e-12)
        meta = {"completeness_error": err.astype("float32")}
        return BatchResult(reduce_channels(attr, "sum"), attr, idx, fx, meta)


__all__ = ["DeepLift", "deeplift_units"]
