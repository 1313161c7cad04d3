"""VisualBackProp (Bojarski et al. 2016): a gradient-free mask from one forward pass.

The paper's recipe for a plain chain of convolutions: average the post-ReLU feature maps of
every convolutional layer over channels; take the deepest average, scale it up to the size
of the previous map by a transposed convolution with a kernel of ones (kernel size and
stride of the layer it undoes), multiply point-wise by the previous average, and repeat
down to the input; normalise the final mask to [0, 1].

The five architectures are not plain chains.  This implementation generalises the recipe
on the flattened graph (nested models inlined) with four rules:

1. **Block maps.**  The maps that are averaged are the 4-D tensors that *every* path from
   the input to the deepest map passes through (the graph's articulation points, found by
   a dominator sweep), and that are the output of an activation (ReLU, ReLU6, a fused
   ``activation=``, any ``Activation`` layer) or of a join (``Add``, ``Concatenate``, and
   the other merge layers).  So:

   * VGG16: every convolution (fused ReLU);
   * InceptionV3: the stem activations and the block concatenations ``mixed0`` ...
     ``mixed10``; the branch maps inside a block are not used;
   * ResNet50: ``conv1_relu`` and the block outputs ``conv*_block*_out``;
   * Xception: the entry-flow activations, the residual sums ``add``, ``add_1``, ... (the
     block outputs) and the exit-flow activations;
   * MobileNetV2: the expand / depthwise ReLU6 maps of blocks without a shortcut, the
     residual sums ``block_*_add``, and ``out_relu``.

   Consecutive block maps with no convolution, pooling, dense or resizing layer between
   them are one block and only the deeper one is used (ResNet's ``add`` followed by its
   ReLU counts once).  The deepest map (by default the last convolutional feature map
   before the target, as for Grad-CAM; ``layer=`` overrides) is always used.

2. **Averaging.**  Each block map is rectified, ``max(A, 0)``, then averaged over channels.
   Rectification is a no-op for post-activation maps and for Inception's concatenations
   of ReLU branches; for the signed residual sums of Xception it is the ReLU the next block
   applies first, for MobileNetV2's linear-bottleneck sums it keeps their positive part.

3. **Branches.**  From one block map back to the previous one the mask follows the
   *longest* path of layers between them (ties: the first in graph order): in a residual
   block the residual branch, never the identity or projection shortcut; in an Inception
   block its deepest branch (e.g. the double-3x3 branch); in depthwise-separable blocks the
   expand / depthwise / project chain.  Every convolution or pooling on that path (plain,
   depthwise, separable; stride 1 and ``"same"`` ones too, which become a box sum) is
   undone by a transposed convolution with a kernel of ones of its (dilated) kernel size,
   its stride and padding, to exactly its input size; ``ZeroPadding2D`` is undone by
   cropping and ``Cropping2D`` by zero padding; any other layer that changes the spatial
   size (``UpSampling2D``, ``Resizing``, transposed convolutions) by bilinear resizing;
   all other layers leave the mask alone.

4. **Normalisation.**  The final input-size mask is min-max normalised to [0, 1] per image
   (an all-constant mask gives zeros).  The running mask is divided by its maximum after
   every step; the whole computation is linear in the mask, so this changes nothing in the
   normalised result and keeps deep networks (dozens of block maps) from underflowing.

The method is target-agnostic, as in the paper: the class index only selects the reported
``scores``; a :class:`~cnnvis_eval.targets.NeuronTarget` restricts the maps to those below
its layer.  ``meta["layers"]`` lists the block maps used, shallowest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from ..graph import FlatGraph, FlatNode, activation_name, is_conv, rectifier_of
from ..targets import BoundTarget
from .base import BatchResult, Explainer, register
from .cam import feature_layer

_JOINS = {"Add", "Concatenate", "Average", "Maximum", "Minimum", "Multiply", "Subtract"}
_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_ACT_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.PReLU)


@dataclass(frozen=True)
class Undo:
    """One step back through a layer: from its output size to its input ``size``.

    ``kind`` is ``"deconv"`` (transposed convolution with a kernel of ones: ``kernel`` the
    (dilated) kernel as a 0/1 array, ``strides``, ``padding``), ``"crop"`` / ``"pad"``
    (``edges`` = ((top, bottom), (left, right))) or ``"resize"`` (bilinear).
    """

    layer: str
    kind: str
    size: tuple[int, int]
    kernel: tuple = ()
    strides: tuple[int, int] = (1, 1)
    padding: str = "VALID"
    edges: tuple = ((0, 0), (0, 0))


@dataclass(frozen=True)
class VbpPlan:
    """The block maps (shallowest first) and, for each, the steps back to the previous map.

    ``undo[i]`` takes the mask from ``maps[i]`` to the size of ``maps[i - 1]`` (for
    ``i = 0``: to the input), applied in order.
    """

    maps: tuple[str, ...]
    keys: tuple[int, ...]
    undo: tuple[tuple[Undo, ...], ...]


# ---------------------------------------------------------------------- graph analysis
def dominators(graph: FlatGraph, key: int) -> list[int]:
    """Tensor keys every path from the input to ``key`` passes through, input to ``key``.

    The input itself is not listed; ``key`` is.  One sweep in topological order: after a
    node, a tensor it produced is a dominator iff it is the only tensor with edges still
    open to nodes not yet run.
    """
    plan = graph.plan([key])
    relevant = {graph.input_key}
    for node in plan:
        relevant.update(node.outputs)
    open_edges: dict[int, int] = {}
    for node in plan:
        for k in node.inputs:
            if k in relevant:
                open_edges[k] = open_edges.get(k, 0) + 1
    live = {graph.input_key} if open_edges.get(graph.input_key) else set()
    out: list[int] = []
    for node in plan:
        for k in node.inputs:
            if k in open_edges:
                open_edges[k] -= 1
                if open_edges[k] == 0:
                    live.discard(k)
        for k in node.outputs:
            if open_edges.get(k):
                live.add(k)
        for k in node.outputs:
            if k == key or (live == {k}):
                out.append(k)
    return out


def _is_block_map(node: FlatNode) -> bool:
    layer = node.layer
    if type(layer).__name__ in _JOINS:
        return True
    if rectifier_of(layer) is not None or isinstance(layer, _ACT_LAYERS):
        return True
    act = activation_name(getattr(layer, "activation", None))
    return act not in (None, "linear")


def _mixes(graph: FlatGraph, node: FlatNode) -> bool:
    layer = node.layer
    if is_conv(layer) or isinstance(layer, _POOLS + (keras.layers.Dense,)):
        return True
    ins = [graph.shape(k)[1:3] for k in node.inputs if len(graph.shape(k)) == 4]
    outs = [graph.shape(k)[1:3] for k in node.outputs if len(graph.shape(k)) == 4]
    return any(i != o for i in ins for o in outs)


def _longest_path(graph: FlatGraph, src: int, dst: int) -> list[tuple[FlatNode, int]]:
    """The longest chain of (node, input key it is reached through) from ``src`` to ``dst``."""
    best: dict[int, list] = {src: []}
    for node in graph.plan([dst], stop_at=[src]):
        reach = [k for k in node.inputs if k in best]
        if not reach:
            continue
        k = max(reach, key=lambda r: len(best[r]))  # first of the longest
        path = best[k] + [(node, k)]
        for o in node.outputs:
            best[o] = path
    return best.get(dst, [])


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    return tuple(int(a) for a in v)  # type: ignore[return-value]


def _undo(graph: FlatGraph, node: FlatNode, in_key: int) -> Undo | None:
    layer = node.layer
    in_shape, out_shape = graph.shape(in_key), graph.shape(node.outputs[0])
    size = tuple(int(d) for d in in_shape[1:3])
    if isinstance(layer, keras.layers.ZeroPadding2D):
        return Undo(node.name, "crop", size, edges=tuple(_pair(p) for p in layer.padding))
    if isinstance(layer, keras.layers.Cropping2D):
        return Undo(node.name, "pad", size, edges=tuple(_pair(p) for p in layer.cropping))
    conv_like = is_conv(layer) and not isinstance(layer, keras.layers.Conv2DTranspose)
    if conv_like or isinstance(layer, _POOLS):
        k = _pair(layer.kernel_size if conv_like else layer.pool_size)
        s = _pair(layer.strides if layer.strides is not None else k)
        d = _pair(getattr(layer, "dilation_rate", 1))
        if k == (1, 1) and s == (1, 1):
            return None
        kernel = np.zeros(((k[0] - 1) * d[0] + 1, (k[1] - 1) * d[1] + 1), np.int8)
        kernel[:: d[0], :: d[1]] = 1
        return Undo(node.name, "deconv", size, tuple(map(tuple, kernel)), s, str(layer.padding).upper())
    if len(out_shape) == 4 and tuple(out_shape[1:3]) != size:
        return Undo(node.name, "resize", size)
    return None


def visual_backprop_plan(graph: FlatGraph, layer: str) -> VbpPlan:
    """Block maps up to ``layer`` and the undo steps between them (rules in the module doc)."""
    final = graph.key(layer)
    cands = []
    for k in dominators(graph, final):
        node = graph.producer(k)
        if node is None or len(graph.shape(k)) != 4:
            continue
        if k == final or _is_block_map(node):
            cands.append(k)
    maps: list[int] = []
    for k in cands:  # merge maps with nothing that mixes between them: keep the deeper
        if maps and not any(_mixes(graph, n) for n in graph.plan([k], stop_at=[maps[-1]])):
            maps[-1] = k
        else:
            maps.append(k)
    undo = []
    prev = graph.input_key
    for k in maps:
        path = _longest_path(graph, prev, k)
        steps = [u for node, ik in reversed(path) if (u := _undo(graph, node, ik)) is not None]
        undo.append(tuple(steps))
        prev = k
    names = tuple(graph.producer(k).name for k in maps)
    return VbpPlan(names, tuple(maps), tuple(undo))


# ---------------------------------------------------------------------- the mask
def _apply(step: Undo, m):
    """Apply one undo step to masks ``m`` (N, h, w)."""
    if step.kind == "deconv":
        kernel = tf.constant(np.asarray(step.kernel, np.float64)[:, :, None, None], dtype=m.dtype)
        shape = tf.stack([tf.shape(m)[0], step.size[0], step.size[1], 1])
        out = tf.nn.conv2d_transpose(
            m[..., None], kernel, output_shape=shape, strides=[1, *step.strides, 1], padding=step.padding
        )
        return out[..., 0]
    if step.kind == "crop":
        (t, b), (l, r) = step.edges
        h, w = m.shape[1], m.shape[2]
        return m[:, t : h - b, l : w - r]
    if step.kind == "pad":
        (t, b), (l, r) = step.edges
        return tf.pad(m, [[0, 0], [t, b], [l, r]])
    out = tf.image.resize(m[..., None], step.size, method="bilinear")
    return tf.cast(out, m.dtype)[..., 0]


def _scale_max(m):
    mx = tf.reduce_max(m, axis=(1, 2), keepdims=True)
    return m / tf.where(mx > 0, mx, tf.ones_like(mx))


def _min_max(m):
    lo = tf.reduce_min(m, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(m, axis=(1, 2), keepdims=True)
    rng = hi - lo
    return tf.where(rng > 0, (m - lo) / tf.where(rng > 0, rng, tf.ones_like(rng)), tf.zeros_like(m))


@register("visual_backprop")
class VisualBackProp(Explainer):
    """VisualBackProp (Bojarski et al. 2016); branch handling in the module docstring.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    layer : str, optional
        Deepest feature map (default: the last conv feature map before the target).
    normalize_maps : bool
        Also min-max normalise every averaged map to [0, 1] before multiplying (as some
        public implementations do); the paper (default False) normalises only the result.

    heatmap (N, H, W) in [0, 1]; ``meta["layers"]`` the block maps used (shallowest
    first), ``meta["layer"]`` the deepest.  One compiled forward pass, no gradients.
    """

    reads_weights_once = False  # compiled passes read the variables at call time

    def __init__(self, model, *, layer: str | None = None, normalize_maps: bool = False):
        super().__init__(model, layer=layer, normalize_maps=normalize_maps)
        self.layer = layer
        self.normalize_maps = bool(normalize_maps)
        self._plans: dict = {}

    def plan_for(self, bound: BoundTarget) -> VbpPlan:
        """The :class:`VbpPlan` used for ``bound`` (computed once per target layer)."""
        ck = (bound.key, bound.is_class)
        if ck not in self._plans:
            name = feature_layer(self.graph, self.spec, bound, self.layer, self.name)
            self._plans[ck] = visual_backprop_plan(self.graph, name)
        return self._plans[ck]

    def _fn(self, bound: BoundTarget, plan: VbpPlan) -> Callable:
        graph = self.graph
        key = ("vbp", bound.key, bound.reduce, plan.keys, self.normalize_maps)

        def build():
            tkey = bound.key
            norm = self.normalize_maps
            rects = [rectifier_of(graph.producer(k).layer) for k in plan.keys]
            rectified = tuple(r is not None and r.threshold >= 0 for r in rects)  # already >= 0

            @tf.function(autograph=False, input_signature=[self._signature(), tf.TensorSpec((None,), tf.int32)])
            def fn(x, indices):
                values = graph.run(x, [tkey, *plan.keys])
                scores, idx = bound.select(values[0], indices)
                mask = None
                for value, steps, pos in zip(reversed(values[1:]), reversed(plan.undo), reversed(rectified)):
                    avg = tf.reduce_mean(value if pos else tf.nn.relu(value), axis=-1)
                    if norm:
                        avg = _min_max(avg)
                    mask = avg if mask is None else _scale_max(mask * avg)
                    for step in steps:
                        mask = _scale_max(_apply(step, mask))
                mask = _min_max(mask)
                return mask, scores, idx

            return fn

        return self._cached(key, build)

    def _explain_batch(self, x, bound):
        plan = self.plan_for(bound)
        mask, s, i = (t.numpy() for t in self._fn(bound, plan)(x, bound.indices))
        meta = {"layer": plan.maps[-1], "layers": plan.maps}
        return BatchResult(mask.astype(np.float32), None, i, s, meta)


__all__ = ["Undo", "VbpPlan", "VisualBackProp", "dominators", "visual_backprop_plan"]
