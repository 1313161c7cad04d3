"""Structural questions asked of a model: a :class:`~cnnvis_eval.graph.flat.FlatGraph` in,
layer names out.

- :func:`last_conv_layer` — the last convolutional feature map before a target (Grad-CAM's
  default layer, ``ModelSpec.last_conv_layer``);
- :func:`pick_intermediate_layers` — two well-spread high intermediate layers (the study's
  intermediate neurons, ``ModelSpec.intermediate_layers``);
- :func:`feature_layer` — the feature map a CAM-style method works on, checked;
- :func:`find_cam_head` — the classifier head CAM needs (Zhou et al. 2016): global average
  pooling then a linear layer, or a convolution then global average pooling.

The layer groups re-initialized together by randomization checks are the remaining
question (:mod:`~cnnvis_eval.graph.groups`); :mod:`cnnvis_eval.graph` exports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from ..errors import InputError, TargetError, UnsupportedArchitectureError, UnsupportedLayerError
from .flat import OUTPUT, FlatGraph, FlatNode
from .layers import activation_name, is_conv, rectifier_of

# layers whose output keeps the feature map of their (first) input, location by location:
# normalisations, activations and rectifiers of any kind, elementwise joins, noise/dropout
_SAME_MAP = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.PReLU,
    keras.layers.ELU,
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Average,
    keras.layers.Concatenate,
    keras.layers.Dropout,  # includes SpatialDropout*
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.Identity,
)
# keras.ops operations (functional models calling keras.ops.*) that act elementwise
_SAME_MAP_OPS = frozenset({
    "Relu", "Relu6", "LeakyRelu", "Elu", "Selu", "Celu", "Gelu", "Silu", "HardSilu", "Mish",
    "Sigmoid", "HardSigmoid", "Softplus", "Softsign", "Squareplus", "SparsePlus", "Tanh",
    "Add", "Subtract", "Multiply", "Maximum", "Minimum", "Negative", "Abs", "Absolute", "Clip",
})


def keeps_map(node: FlatNode) -> bool:
    """True when ``node`` maps its input feature map to one of the same layout, location by
    location (activations and rectifiers of any kind, BatchNorm, elementwise joins, dropout)."""
    layer = node.layer
    if isinstance(layer, _SAME_MAP):
        return True
    return not isinstance(layer, keras.layers.Layer) and type(layer).__name__ in _SAME_MAP_OPS


def last_conv_layer(graph: FlatGraph, before: str | int = OUTPUT) -> str | None:
    """Name of the last convolutional feature map that feeds ``before``.

    Finds the last convolution on the path to ``before`` and follows it forward through
    layers that keep the map (:func:`keeps_map`: BatchNorm, activations and rectifiers of
    any kind — ReLU, LeakyReLU, PReLU, ELU, ``keras.ops`` activations —, residual Add,
    Concatenate), so the result is the output of the block's nonlinearity, not the
    convolution before it: the map Grad-CAM conventionally uses (VGG16 ``block5_conv3``,
    ResNet50 ``conv5_block3_out``, InceptionV3 ``mixed10``, Xception
    ``block14_sepconv2_act``, MobileNetV2 ``out_relu``, MTCNN ONet ``prelu4``).  If
    ``before`` is itself a convolutional feature map it is returned.  None when no
    convolution feeds it.
    """
    key = graph.key(before)
    plan = graph.plan([key])
    if not plan:
        return None
    target_node = graph.producer(key)
    if target_node is not None and len(graph.shape(key)) == 4 and (
        is_conv(target_node.layer) or keeps_map(target_node)
    ):
        if any(is_conv(n.layer) for n in plan):
            return target_node.name
    convs = [n for n in plan if is_conv(n.layer)]
    if not convs:
        return None
    in_plan = {id(n) for n in plan}
    node = convs[-1]
    shape = graph.shape(node.outputs[0])
    while True:
        nxt = [c for c in graph.consumers(node.outputs[0]) if id(c) in in_plan]
        if len(nxt) != 1 or not keeps_map(nxt[0]):
            break
        if graph.shape(nxt[0].outputs[0])[1:3] != shape[1:3]:
            break
        # a join (Add/Concatenate) is the block output only once all its inputs are computed
        node = nxt[0]
    return node.name


def pick_intermediate_layers(graph: FlatGraph, fractions=(0.6, 0.85)) -> tuple[str, ...]:
    """Two well-spread high intermediate layers: rectified 4-D feature maps (ReLU, ReLU6,
    LeakyReLU or PReLU outputs, or joins) at the given fractions of the depth of the model's feature extractor."""
    plan = graph.plan([graph.output_key])
    cands = [
        n
        for n in plan
        if len(graph.shape(n.outputs[0])) == 4
        and (rectifier_of(n.layer, leaky=True) is not None
             or isinstance(n.layer, keras.layers.Concatenate))
    ]
    if not cands:
        cands = [n for n in plan if len(graph.shape(n.outputs[0])) == 4]
    if not cands:
        return ()
    picks = []
    for f in fractions:
        n = cands[min(len(cands) - 1, int(round(f * (len(cands) - 1))))]
        if n.name not in picks:
            picks.append(n.name)
    return tuple(picks)


def _ancestors(graph: FlatGraph, key: int) -> set[int]:
    """Tensor keys that ``key`` depends on (including ``key`` and the input)."""
    keys = {graph.input_key, key}
    for node in graph.plan([key]):
        keys.update(node.outputs)
    return keys


def nodes_between(graph: FlatGraph, source: int, target: int) -> list[FlatNode]:
    """The nodes on a path from tensor ``source`` to tensor ``target`` (those computing
    ``target`` that read ``source`` directly or through another of them), in execution
    order; empty when ``target`` does not depend on ``source``."""
    below, out = {source}, []
    for node in graph.plan([target]):
        if any(k in below for k in node.inputs):
            out.append(node)
            below.update(node.outputs)
    return out


def feature_layer(
    graph: FlatGraph,
    target_key: int,
    *,
    layer: str | None = None,
    default: str | None = None,
    what: str = "the target",
    method: str = "grad_cam",
) -> str:
    """The convolutional feature map a CAM-style method works on, checked.

    Parameters
    ----------
    graph : FlatGraph
    target_key : int
        Tensor key of what is explained (the logits, or an intermediate layer's output).
    layer : str, optional
        The user's choice; default: ``default`` if the graph has it, else the last
        convolutional feature map before ``target_key`` (:func:`last_conv_layer`).
    default : str, optional
        Preferred default (a class target's ``ModelSpec.last_conv_layer``).
    what, method : str
        Descriptions of the target and of the method, for error messages.

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
    if layer is None:
        name = default if default and graph.has(default) else last_conv_layer(graph, before=target_key)
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
        hint = last_conv_layer(graph, before=target_key)
        raise InputError(
            f"{method}: layer {name!r} outputs shape {shape}; {method} needs a 4-D feature map "
            f"(N, height, width, channels)" + (f", e.g. {hint!r}" if hint else "")
        )
    if key not in _ancestors(graph, target_key):
        raise InputError(
            f"{method}: layer {name!r} does not feed {what}: the target does not depend on it"
        )
    return name


# ---------------------------------------------------------------------- CAM head
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


__all__ = [
    "CamHead",
    "feature_layer",
    "find_cam_head",
    "keeps_map",
    "last_conv_layer",
    "nodes_between",
    "pick_intermediate_layers",
]
