"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, Guided Grad-CAM.

All of them weight the feature maps ``A`` (N, h, w, K) of one convolutional layer, sum
over channels, (optionally) rectify, and upsample the (N, h, w) map bilinearly to the
input size (``tf.image.resize``, half-pixel centres):

==================  =======================================================================
``cam``             ``sum_k W[k, c] A_k`` with ``W`` the linear head's weights (Zhou et al.
                    2016); the head must be global average pooling + a linear layer, or a
                    convolution + global average pooling.  No ReLU by default (signed).
``grad_cam``        ``ReLU(sum_k mean_ij(G_k) A_k)``, ``G = d score / d A`` (Selvaraju et al.)
``grad_cam_plus_plus``  ``ReLU(sum_k (sum_ij a_kij ReLU(G_kij)) A_k)`` with
                    ``a = G^2 / (2 G^2 + sum_ab A_kab G^3)`` (Chattopadhyay et al. 2018, the
                    exponential-score closed form; ``a = 0`` where the denominator is 0)
``layer_cam``       ``ReLU(sum_k ReLU(G_k) * A_k)`` (Jiang et al. 2021)
``score_cam``       ``ReLU(sum_k softmax_k(S_k) A_k)`` with ``S_k`` the target score of the
                    input masked by the min-max normalised upsampled map ``A_k`` (Wang et al.
                    2020, Algorithm 1); gradient-free, one forward pass per channel
``guided_grad_cam`` guided backprop times the upsampled Grad-CAM map (composition of the
                    ``guided_backprop`` and ``grad_cam`` explainers)
==================  =======================================================================

**Layer.**  By default the last convolutional feature map before the target: for a
:class:`~cnnvis_eval.targets.ClassTarget` the model's last conv layer
(``spec.last_conv_layer``), for a :class:`~cnnvis_eval.targets.NeuronTarget` the target
layer itself when it is a convolutional feature map, else the last one before it
(:func:`~cnnvis_eval.targets.last_conv_layer`); nested models are flattened first, so the
base model's last conv layer of ``Sequential([base, GlobalAveragePooling2D(), Dense(k)])``
is found.  ``layer="name"`` overrides; ``exp.meta["layer"]`` records the layer used and
``exp.meta["low_res"]`` the (N, h, w) map before upsampling.

**Cost.**  The gradient methods run one compiled pass that records ``A`` and takes the
gradient of the target with respect to ``A`` only: the tape watches ``A`` and nothing
else, so the backward pass stops at the layer (it never reaches the input).  That pass is
shared by all CAM explainers of the same model and target layer (CAM, Grad-CAM,
Grad-CAM++, Layer-CAM, Score-CAM and the Grad-CAM inside Guided Grad-CAM trace it once;
CAM and Score-CAM only read its feature maps).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from ..errors import InputError, TargetError, UnsupportedArchitectureError, UnsupportedLayerError
from ..models.surgery import FlatGraph, FlatNode, activation_name
from ..targets import BoundTarget, last_conv_layer
from .backprop import GuidedBackprop
from .base import BatchResult, Explainer, register

# ---------------------------------------------------------------------- shared helpers


def _ancestors(graph: FlatGraph, key: int) -> set[int]:
    """Tensor keys that ``key`` depends on (including ``key`` and the input)."""
    keys = {graph.input_key, key}
    for node in graph.plan([key]):
        keys.update(node.outputs)
    return keys


def feature_layer(graph: FlatGraph, spec, bound: BoundTarget, layer: str | None, method: str) -> str:
    """The convolutional feature map a CAM-style method works on (see module docstring).

    Raises
    ------
    InputError
        ``layer`` unknown, not a 4-D feature map, or not feeding the target.
    UnsupportedArchitectureError
        No convolutional layer before the target.
    UnsupportedLayerError
        Subclassed model (its layers cannot be seen).
    """
    if graph.opaque:
        raise UnsupportedLayerError(
            f"{method}: model {graph.model.name!r} is a subclassed model; {method} needs its "
            "feature maps (build it with the functional or Sequential API)"
        )
    what = bound.target.describe()
    if layer is None:
        name = None
        if bound.is_class:
            cand = getattr(spec, "last_conv_layer", None)
            name = cand if cand and graph.has(cand) else last_conv_layer(graph)
        else:
            name = last_conv_layer(graph, before=bound.key)
        if name is None:
            raise UnsupportedArchitectureError(
                f"{method}: model {graph.model.name!r} has no convolutional layer before "
                f"{what}; {method} needs a 4-D convolutional feature map (pass layer=...)"
            )
    else:
        if not isinstance(layer, str):
            raise InputError(f"{method}: layer must be a layer name (str), got {layer!r}")
        try:
            graph.key(layer)
        except TargetError as err:
            raise InputError(f"{method}: layer={layer!r}: {err}") from None
        name = layer
    key = graph.key(name)
    shape = graph.shape(key)
    if len(shape) != 4:
        hint = last_conv_layer(graph, before=bound.key)
        raise InputError(
            f"{method}: layer {name!r} outputs shape {shape}; {method} needs a 4-D feature map "
            f"(N, height, width, channels)" + (f", e.g. {hint!r}" if hint else "")
        )
    if key not in _ancestors(graph, bound.key):
        raise InputError(
            f"{method}: layer {name!r} does not feed {what}: the target does not depend on it"
        )
    return name


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to (N, H, W) (``tf.image.resize``, half-pixel centres).

    Returns float32.
    """
    maps = np.asarray(maps)
    if maps.shape[1:3] == tuple(size):
        return maps.astype(np.float32)
    out = tf.image.resize(maps[..., None].astype(np.float32), size, method="bilinear")
    return out.numpy()[..., 0]


def _run_watching(graph: FlatGraph, x, keys, watch: int, tape) -> dict:
    """Run the nodes needed for ``keys``; ``tape`` starts watching tensor ``watch`` when made.

    With ``watch_accessed_variables=False`` the tape records only what depends on the
    watched tensor, so its gradient stops there.
    """
    values: dict[int, Any] = {graph.input_key: x}
    for node in graph.plan(keys):
        out = graph.call_node(node, values)
        for k, v in zip(node.outputs, keras.tree.flatten(out)):
            values[k] = v
        if tape is not None and watch in node.outputs:
            tape.watch(values[watch])
    return values


# ---------------------------------------------------------------------- middle class


class CamBase(Explainer):
    """Middle class of the CAM family: layer choice, the compiled maps/gradient pass, upsampling.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    layer : str, optional
        Feature map to explain with (default: the last conv feature map before the target).
    relu : bool
        Rectify the weighted sum (the papers' ReLU).

    Subclasses implement :meth:`combine` (gradient methods) or override ``_explain_batch``.
    """

    reads_weights_once = False  # compiled passes read the variables at call time

    def __init__(self, model, *, layer: str | None = None, relu: bool = True, **params):
        super().__init__(model, layer=layer, relu=relu, **params)
        self.layer = layer
        self.relu = bool(relu)
        self._layers: dict = {}

    # -- layer --------------------------------------------------------------------
    def layer_for(self, bound: BoundTarget) -> str:
        """Name of the feature map used for ``bound`` (validated once per target layer)."""
        ck = (bound.key, bound.is_class)
        if ck not in self._layers:
            self._layers[ck] = feature_layer(self.graph, self.spec, bound, self.layer, self.name)
        return self._layers[ck]

    # -- the compiled pass ----------------------------------------------------------
    def layer_maps(self, x, bound: BoundTarget, layer: str, gradients: bool = True):
        """Feature maps of ``layer`` and the target's gradient w.r.t. them, in one compiled pass.

        Parameters
        ----------
        x : array, shape (N, H, W, C)
        layer : str
        gradients : bool
            False: forward only (``G`` is None).

        Returns
        -------
        A : ndarray (N, h, w, K)
        G : ndarray (N, h, w, K) or None
        scores : ndarray (N,)
        indices : ndarray (N,) int32
        """
        fn = self._maps_fn(bound, self.graph.key(layer), gradients)
        out = fn(x, bound.indices)
        if gradients:
            a, g, s, i = (t.numpy() for t in out)
            return a, g, s, i
        a, s, i = (t.numpy() for t in out)
        return a, None, s, i

    def _maps_fn(self, bound: BoundTarget, lkey: int, gradients: bool) -> Callable:
        graph = self.graph
        key = ("cam_maps", gradients, bound.key, bound.top, bound.reduce, lkey)
        if key in self._fns:  # graph.fn_cache: shared by every explainer of this model
            return self._fns[key]
        sig = [self._signature(), tf.TensorSpec((None,), tf.int32)]
        tkey = bound.key

        if gradients:

            @tf.function(input_signature=sig)
            def fn(x, indices):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    values = _run_watching(graph, x, [tkey, lkey], lkey, tape)
                    scores, idx = bound.select(values[tkey], indices)
                a = values[lkey]
                g = tape.gradient(scores, a, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return a, g, scores, idx

        else:

            @tf.function(input_signature=sig)
            def fn(x, indices):
                values = _run_watching(graph, x, [tkey, lkey], lkey, None)
                scores, idx = bound.select(values[tkey], indices)
                return values[lkey], scores, idx

        self._fns[key] = fn
        return fn

    # -- assembling -------------------------------------------------------------------
    def combine(self, a, g):
        """(N, h, w, K) maps and gradients -> (N, h, w) map before the ReLU.

        TensorFlow ops, run inside a small compiled function (in the model's dtype).
        """
        raise NotImplementedError

    def _combine_fn(self) -> Callable:
        """Compiled ``(A, G) -> (low-res map, upsampled map)`` for this method."""
        size = tuple(self.graph.input_shape[1:3])
        key = ("cam_combine", type(self), self.relu, size)

        def build():
            spec = tf.TensorSpec((None, None, None, None), tf.as_dtype(self.dtype))
            combine, relu = self.combine, self.relu

            @tf.function(input_signature=[spec, spec])
            def fn(a, g):
                low = combine(a, g)
                if relu:
                    low = tf.nn.relu(low)
                return low, tf.image.resize(low[..., None], size, method="bilinear")[..., 0]

            return fn

        return self._cached(key, build)

    def finish(self, low: np.ndarray, x: np.ndarray, scores, indices, layer: str, **meta) -> BatchResult:
        """Rectify (if ``relu``), upsample to the input size, and pack a BatchResult."""
        if self.relu:
            low = np.maximum(low, 0.0)
        heat = upsample(low, x.shape[1:3])
        meta = {"layer": layer, "low_res": low.astype(np.float32), **meta}
        return BatchResult(heat, None, indices, scores, meta)

    def _explain_batch(self, x, bound):
        layer = self.layer_for(bound)
        # tensors stay in TensorFlow: the pass (shared by the family) feeds the combination
        a, g, s, i = self._maps_fn(bound, self.graph.key(layer), True)(x, bound.indices)
        low, heat = self._combine_fn()(a, g)
        meta = {"layer": layer, "low_res": low.numpy().astype(np.float32)}
        return BatchResult(heat.numpy().astype(np.float32), None, i.numpy(), s.numpy(), meta)


# ---------------------------------------------------------------------- gradient CAMs


@register("grad_cam")
class GradCam(CamBase):
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the gradient.

    Parameters
    ----------
    layer : str, optional
    relu : bool
        Default True (the paper); False gives the signed weighted sum.

    heatmap (N, H, W) >= 0; ``meta["layer"]``, ``meta["low_res"]`` (N, h, w).
    """

    def combine(self, a, g):
        w = tf.reduce_mean(g, axis=(1, 2))  # (N, K)
        return tf.einsum("nhwk,nk->nhw", a, w)


@register("grad_cam_plus_plus")
class GradCamPlusPlus(CamBase):
    """Grad-CAM++ (Chattopadhyay et al. 2018) in its closed form for an exponential score.

    ``alpha = G^2 / (2 G^2 + sum_ab A_ab G^3)`` (0 where the denominator vanishes), channel
    weights ``sum_ij alpha_ij ReLU(G_ij)``.  Higher derivatives of the (piecewise linear)
    pre-softmax score are taken as zero, as in the paper.
    """

    def combine(self, a, g):
        g2 = g * g
        denom = 2.0 * g2 + tf.reduce_sum(a, axis=(1, 2), keepdims=True) * g2 * g
        nonzero = tf.not_equal(denom, 0.0)
        alpha = tf.where(nonzero, g2 / tf.where(nonzero, denom, tf.ones_like(denom)), tf.zeros_like(g2))
        w = tf.reduce_sum(alpha * tf.nn.relu(g), axis=(1, 2))
        return tf.einsum("nhwk,nk->nhw", a, w)


@register("layer_cam")
class LayerCam(CamBase):
    """Layer-CAM (Jiang et al. 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``, a per-location weight."""

    def combine(self, a, g):
        return tf.reduce_sum(tf.nn.relu(g) * a, axis=-1)


# ---------------------------------------------------------------------- CAM


_PASSTHROUGH = (
    keras.layers.Dropout,  # includes SpatialDropout*
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.ActivityRegularization,
    keras.layers.Identity,
)


@dataclass(frozen=True)
class CamHead:
    """A CAM-compatible classifier head found in a graph.

    Attributes
    ----------
    kind : {"pool_linear", "linear_pool"}
        GAP then a linear layer, or a linear (convolution) layer then GAP.
    layer : str
        The feature map the head starts from (the map CAM weights).
    linear : FlatNode
        The Dense or Conv2D layer holding the class weights.
    description : str
        ``"avg_pool (GlobalAveragePooling2D) -> predictions (Dense)"``.
    """

    kind: str
    layer: str
    linear: FlatNode
    description: str


def _describe(nodes) -> str:
    return " -> ".join(f"{n.name} ({n.type_name})" for n in nodes)


def _is_linear_act(graph: FlatGraph, node: FlatNode) -> bool:
    act = activation_name(getattr(node.layer, "activation", None))
    if act in (None, "linear"):
        return True
    # a softmax on the output layer is stripped by the graph (explained on logits)
    return act == "softmax" and node.name in graph.overrides


def _is_softmax(node: FlatNode) -> bool:
    layer = node.layer
    return isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation) and activation_name(layer.activation) == "softmax"
    )


def _spatial_one(shape) -> bool:
    return len(shape) >= 3 and all(d == 1 for d in shape[1:-1])


def _is_gap(graph: FlatGraph, node: FlatNode) -> bool:
    layer = node.layer
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return True
    if isinstance(layer, keras.layers.AveragePooling2D):
        # an average pooling whose single window covers the whole map
        return _spatial_one(graph.output_shapes(node)[0]) and tuple(layer.pool_size) == tuple(
            graph.input_shapes(node)[0][1:3]
        )
    return False


def find_cam_head(graph: FlatGraph, method: str = "cam") -> CamHead:
    """Find the CAM head of ``graph`` or raise :class:`UnsupportedArchitectureError`.

    Accepted (Dropout-like layers and a Flatten/Reshape of a 1x1 map may sit in between, and
    a softmax at the output is stripped): ``GlobalAveragePooling2D -> Dense`` (also
    ``GlobalAveragePooling2D(keepdims=True) -> Conv2D 1x1``, and an ``AveragePooling2D``
    covering the whole map), or ``Conv2D -> GlobalAveragePooling2D`` (fully convolutional).
    The linear layer must have no activation other than a stripped output softmax.
    """
    trail: list[FlatNode] = []

    def prev(node):
        trail.append(node)
        return graph.producer(node.inputs[0]) if node.inputs else None

    def skip(node, allow_reshape: bool):
        while node is not None:
            layer = node.layer
            if isinstance(layer, _PASSTHROUGH) or (
                isinstance(layer, keras.layers.Activation) and _is_linear_act(graph, node)
                and not _is_softmax(node)
            ):
                node = prev(node)
            elif allow_reshape and isinstance(layer, (keras.layers.Flatten, keras.layers.Reshape)) and (
                _spatial_one(graph.input_shapes(node)[0])
            ):
                node = prev(node)
            else:
                break
        return node

    def fail(reason: str):
        last = last_conv_layer(graph) if not graph.opaque else None
        if last is None:
            raise UnsupportedArchitectureError(
                f"{method}: model {graph.model.name!r} has no convolutional feature map, so it has "
                "no class activation map"
            )
        head = graph.plan([graph.output_key], stop_at=[graph.key(last)])
        shown = _describe(head if len(head) <= 10 else head[:4] + head[-5:])
        if len(head) > 10:
            shown = shown.replace(f"{head[3].name} ({head[3].type_name}) -> ",
                                  f"{head[3].name} ({head[3].type_name}) -> ... -> ", 1)
        raise UnsupportedArchitectureError(
            f"{method} needs a classifier head of global average pooling followed by a linear "
            f"layer (Dense), or a convolution followed by global average pooling; model "
            f"{graph.model.name!r} has the head {shown} after its last conv feature map "
            f"{last!r} ({reason}). Use grad_cam or score_cam, which work with any head."
        )

    if graph.opaque:
        raise UnsupportedLayerError(
            f"{method}: model {graph.model.name!r} is a subclassed model; its head cannot be seen"
        )
    node = graph.producer(graph.output_key)
    if node is not None and _is_softmax(node) and node.name in graph.overrides:
        node = prev(node)
    node = skip(node, allow_reshape=True)
    if node is None:
        fail("nothing but the input")
    layer = node.layer
    in_shape = graph.input_shapes(node)[0] if node.inputs else ()
    dense_like = isinstance(layer, keras.layers.Dense) and len(in_shape) == 2
    conv_on_point = (
        isinstance(layer, keras.layers.Conv2D) and _spatial_one(in_shape)
        and tuple(layer.kernel_size) == (1, 1)
    )
    if dense_like or conv_on_point:
        if not _is_linear_act(graph, node):
            fail(f"its {type(layer).__name__} {node.name!r} has activation "
                 f"{activation_name(layer.activation)!r}; CAM needs a linear layer")
        linear = node
        node = skip(prev(node), allow_reshape=True)
        if node is None or not _is_gap(graph, node):
            fail(f"{linear.name!r} is not preceded by global average pooling")
        gap = node
        kind = "pool_linear"
        fmap_key = gap.inputs[0]
        trail_nodes = [gap, linear]
    elif _is_gap(graph, node):
        gap = node
        node = skip(prev(node), allow_reshape=False)
        ok = node is not None and (
            isinstance(node.layer, keras.layers.Conv2D)
            or (isinstance(node.layer, keras.layers.Dense) and len(graph.input_shapes(node)[0]) == 4)
        ) and type(node.layer) in (keras.layers.Conv2D, keras.layers.Dense)
        if not ok:
            fail(f"{gap.name!r} pools a {node.type_name if node else 'input'} output, not a convolution")
        if not _is_linear_act(graph, node):
            fail(f"its {node.type_name} {node.name!r} has activation "
                 f"{activation_name(node.layer.activation)!r}; CAM needs a linear layer")
        linear = node
        kind = "linear_pool"
        fmap_key = linear.inputs[0]
        trail_nodes = [linear, gap]
    else:
        fail("it does not end in global average pooling and a linear layer")
    src = graph.producer(fmap_key)
    if src is None or len(graph.shape(fmap_key)) != 4:
        fail("the pooled tensor is not a feature map produced by a layer")
    return CamHead(kind, src.name, linear, _describe(trail_nodes))


@register("cam")
class Cam(CamBase):
    """Class Activation Mapping (Zhou et al. 2016).

    ``map_c = sum_k W[k, c] A_k`` where ``A`` is the feature map the head pools and ``W``
    the head's linear weights (bias not included, so ``mean(map_c) + bias_c`` is the logit).
    For a fully convolutional head (``Conv2D -> GlobalAveragePooling2D``) the map is the
    convolution's class channel without its bias.  Only class targets.

    Parameters
    ----------
    layer : str, optional
        Must be the feature map the head pools (the default); CAM cannot use another layer.
    relu : bool
        Default False: the signed map of the paper.

    Raises
    ------
    UnsupportedArchitectureError
        At construction, when the head is anything else (the message names the head found).
    """

    def __init__(self, model, *, layer: str | None = None, relu: bool = False):
        super().__init__(model, layer=layer, relu=relu)
        self.signed = not self.relu
        self.head = find_cam_head(self.graph, self.name)
        if layer is not None:
            if not isinstance(layer, str) or not self.graph.has(layer):
                raise InputError(
                    f"cam: layer={layer!r} is not a layer of model {self.graph.model.name!r}"
                )
            if self.graph.key(layer) != self.graph.key(self.head.layer):
                raise InputError(
                    f"cam computes its map on the feature map its head pools ({self.head.layer!r}, "
                    f"head {self.head.description}); layer={layer!r} cannot be used. Grad-CAM "
                    "works on any layer."
                )

    def layer_for(self, bound):
        if not bound.is_class:
            raise TargetError(
                f"cam explains class logits (ClassTarget); {bound.target.describe()} is a "
                "NeuronTarget: use grad_cam, layer_cam or score_cam"
            )
        return self.head.layer

    def class_maps(self, a: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """(N, h, w, K) feature maps -> (N, h', w') bias-free class maps of classes ``indices``."""
        layer = self.head.linear.layer
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel), np.float64)
        a = a.astype(np.float64)
        if self.head.kind == "pool_linear" or isinstance(layer, keras.layers.Dense):
            w = kernel.reshape(-1, kernel.shape[-1])  # (K, classes)
            return np.einsum("nhwk,kn->nhw", a, w[:, indices])
        maps = keras.ops.conv(  # forward only: no gradient is taken here
            a, kernel, strides=layer.strides, padding=layer.padding, dilation_rate=layer.dilation_rate
        )
        maps = np.asarray(keras.ops.convert_to_numpy(maps))
        return np.take_along_axis(maps, indices[:, None, None, None], axis=3)[..., 0]

    def _explain_batch(self, x, bound):
        layer = self.layer_for(bound)
        # the family's shared pass: its backward only crosses the head (negligible), and one
        # trace then serves CAM, Grad-CAM, Grad-CAM++, Layer-CAM and Score-CAM
        a, _, s, i = self.layer_maps(x, bound, layer)
        low = self.class_maps(a, i)
        return self.finish(low, x, s, i, layer, head=self.head.description)


# ---------------------------------------------------------------------- Score-CAM


@register("score_cam")
class ScoreCam(CamBase):
    """Score-CAM (Wang et al. 2020): channels weighted by the score of the masked input.

    For each channel ``k`` the map ``A_k`` is upsampled bilinearly to the input size and
    min-max normalised to ``H_k`` in [0, 1]; ``S_k`` is the target score of ``x * H_k``;
    the weights are ``softmax_k(S_k)`` (Algorithm 1 of the paper; the target score is the
    pre-softmax logit or the channel value) and the map is ``ReLU(sum_k w_k A_k)``.
    Channels whose map is constant have no mask; they get weight 0 and are not evaluated.

    Parameters
    ----------
    layer : str, optional
    relu : bool
    internal_batch_size : int
        Masked inputs per compiled forward pass (images x channels).
    max_channels : int, optional
        Evaluate only the ``max_channels`` channels with the largest spatial variance per
        image (the "Faster Score-CAM" shortcut); default all channels.

    The masked forward passes (``N * channels / internal_batch_size`` of them) show a
    progress bar when there are more than 4; ``explain(..., progress=False)`` silences it.
    ``meta["channels"]`` (N,) counts the channels evaluated per image.
    """

    def __init__(self, model, *, layer: str | None = None, relu: bool = True,
                 internal_batch_size: int = 32, max_channels: int | None = None):
        super().__init__(model, layer=layer, relu=relu, internal_batch_size=internal_batch_size,
                         max_channels=max_channels)
        if int(internal_batch_size) < 1:
            raise InputError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        if max_channels is not None and int(max_channels) < 1:
            raise InputError(f"max_channels must be >= 1 or None, got {max_channels}")
        self.internal = int(internal_batch_size)
        self.max_channels = None if max_channels is None else int(max_channels)
        self._progress: bool | None = None

    def explain(self, x, target=None, batch_size=None, progress=None):
        self._progress = progress
        try:
            return super().explain(x, target, batch_size=batch_size, progress=progress)
        finally:
            self._progress = None

    explain.__doc__ = Explainer.explain.__doc__
    __call__ = explain

    def _score_fn(self, bound: BoundTarget, h: int, w: int) -> Callable:
        graph = self.graph
        key = ("score_cam", bound.key, bound.reduce, h, w)

        def build():
            sig = self._signature()
            size = tuple(graph.input_shape[1:3])
            tkey = bound.key

            @tf.function(input_signature=[
                sig, tf.TensorSpec((None, h, w, None), sig.dtype), tf.TensorSpec((None,), tf.int32)])
            def fn(x, a, indices):
                n, k = tf.shape(a)[0], tf.shape(a)[3]
                up = tf.cast(tf.image.resize(a, size, method="bilinear"), x.dtype)  # (N, H, W, k)
                lo = tf.reduce_min(up, axis=(1, 2), keepdims=True)
                hi = tf.reduce_max(up, axis=(1, 2), keepdims=True)
                rng = hi - lo
                masks = tf.where(rng > 0, (up - lo) / tf.where(rng > 0, rng, tf.ones_like(rng)),
                                 tf.zeros_like(up))
                masks = tf.transpose(masks, (0, 3, 1, 2))[..., None]  # (N, k, H, W, 1)
                xs = tf.reshape(x[:, None] * masks, tf.concat([[n * k], tf.shape(x)[1:]], 0))
                value = graph.run(xs, [tkey])[0]
                scores, _ = bound.select(value, tf.repeat(indices, k))
                return tf.reshape(scores, (n, k))

            return fn

        return self._cached(key, build)

    def _explain_batch(self, x, bound):
        layer = self.layer_for(bound)
        a, _, s, idx = self.layer_maps(x, bound, layer)  # shared pass (see Cam); G unused
        bound = bound.fixed(idx)
        n, h, w, k = a.shape
        a64 = a.astype(np.float64)
        var = a64.reshape(n, h * w, k).var(axis=1)  # (N, K)
        m = k if self.max_channels is None else min(k, self.max_channels)
        order = np.argsort(-var, axis=1, kind="stable")[:, :m]  # most varied first
        valid = np.take_along_axis(var, order, axis=1) > 0  # constant maps have no mask
        need = int(valid.sum(axis=1).max())
        sel = np.take_along_axis(a, order[:, None, None, :], axis=3)  # (N, h, w, m)
        per_call = max(1, self.internal // n)
        fn = self._score_fn(bound, h, w)
        starts = range(0, need, per_call)
        show = self._progress if self._progress is not None else len(starts) > 4
        scores = np.full((n, m), -np.inf)
        for c0 in tqdm(starts, desc=f"{self.name} masks", unit="pass", disable=not show, leave=False):
            c1 = min(need, c0 + per_call)
            scores[:, c0:c1] = fn(x, np.ascontiguousarray(sel[..., c0:c1]), bound.indices).numpy()
        z = np.where(valid, scores, -np.inf)
        zmax = np.where(valid.any(axis=1), z.max(axis=1), 0.0)[:, None]
        e = np.where(valid, np.exp(z - zmax), 0.0)
        weights = e / np.maximum(e.sum(axis=1, keepdims=True), 1e-300)
        low = np.einsum("nhwk,nk->nhw", sel.astype(np.float64), weights)
        return self.finish(low, x, s, idx, layer, channels=valid.sum(axis=1).astype(np.int32))


# ---------------------------------------------------------------------- Guided Grad-CAM


@register("guided_grad_cam")
class GuidedGradCam(Explainer):
    """Guided Grad-CAM (Selvaraju et al. 2017): guided backprop x upsampled Grad-CAM.

    Composes the ``guided_backprop`` and ``grad_cam`` explainers: the Grad-CAM map (N, H, W)
    (bilinearly upsampled, not normalised) multiplies the guided backprop signal
    (N, H, W, C) pixel-wise; both explain the same class (``"top"`` is resolved once, by
    Grad-CAM).  heatmap = guided backprop heatmap x Grad-CAM map.

    Parameters
    ----------
    layer : str, optional
        Grad-CAM layer.
    channel_reduce : str
        Guided backprop's channel reduction (default ``"max_abs"``).
    """

    reads_weights_once = False  # compiled passes read the variables at call time

    def __init__(self, model, *, layer: str | None = None, channel_reduce: str = "max_abs"):
        super().__init__(model, layer=layer, channel_reduce=channel_reduce)
        self.grad_cam = GradCam(self.spec, layer=layer)
        self.guided = GuidedBackprop(self.spec, channel_reduce=channel_reduce)

    def _explain_batch(self, x, bound):
        cam = self.grad_cam._explain_batch(x, bound)
        gb = self.guided._explain_batch(x, bound.fixed(cam.indices))
        weight = cam.heatmap.astype(np.float32)
        attr = gb.attribution * weight[..., None]
        heat = gb.heatmap * weight
        meta = dict(cam.meta)
        meta.update(gb.meta)
        meta["grad_cam"] = weight
        return BatchResult(heat, attr, cam.indices, cam.scores, meta)


__all__ = [
    "Cam",
    "CamBase",
    "CamHead",
    "GradCam",
    "GradCamPlusPlus",
    "GuidedGradCam",
    "LayerCam",
    "ScoreCam",
    "feature_layer",
    "find_cam_head",
    "upsample",
]
