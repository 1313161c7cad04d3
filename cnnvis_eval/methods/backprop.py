"""Modified backpropagation: DeconvNet and Guided Backprop.

The two methods differ from the gradient, and from each other, only in the backward rule
of the rectifiers (Springenberg et al. 2015, fig. 1).  For a piecewise-linear rectifier
``y = f(z)`` with slope ``f'(z)`` in {1, alpha, 0} — 1 in its pass range
``threshold < z < max_value``, ``alpha`` below the threshold, 0 above the cap:

=================  ==========================================================================
gradient           ``dz = f'(z) * dy``
DeconvNet          ``dz = max(dy, 0) + alpha * min(dy, 0)``   (forward ``z`` ignored)
Guided Backprop    ``dz = f'(z) * max(dy, 0)``
=================  ==========================================================================

For ReLU (``alpha = 0``) these are the papers' rules: DeconvNet ``max(dy, 0)``, Guided
Backprop ``max(dy, 0) * [lo < z < hi]`` (so the guided rule also blocks ``z >= 6`` in
MobileNetV2's ReLU6).  **Leaky rectifiers** (``LeakyReLU``, ``PReLU``,
``ReLU(negative_slope=...)``, ``activation="leaky_relu"``, ``keras.ops.leaky_relu``) get
the same rules with their own ``alpha`` (PReLU: its learned per-channel slope):

- Guided Backprop keeps the unit's own backward pass and applies the positive-gradient
  gate after the unit: only positive signal enters it, and it flows back scaled by the
  unit's local slope (exactly the ReLU rule when ``alpha = 0``).
- DeconvNet passes the backward signal through the unit's rectification, as Zeiler &
  Fergus (2014, sec. 2.1: "we pass the reconstructed signal through a relu non-linearity")
  do for ReLU: positive signal passes, negative signal is scaled by ``alpha``.  Threshold and
  cap are ranges of the forward input and are not applied to the signal (as for ReLU6).

**Smooth units** (ELU, SELU, CELU, GELU, swish/SiLU, hard-swish, mish, softplus, ...; see
:data:`~cnnvis_eval.graph.layers.SMOOTH_UNITS`) are refused with
:class:`~cnnvis_eval.errors.UnsupportedLayerError` naming the layer and its activation:
they have no on/off gate to guide with; passing the signal through them (the DeconvNet
analogue) is not positively homogeneous, so the map would change with the scale of the
score; and GELU's and swish's derivative is negative for ``z`` below about -0.75 / -1.28,
so "only positive signal flows back" would not hold.  iNNvestigate (Alber et al. 2019)
likewise refuses both methods on non-ReLU networks.  A model with **no rectifier** is
refused with :class:`~cnnvis_eval.errors.UnsupportedArchitectureError`: both methods would
be the plain gradient there, reported under another name.  Other activations (sigmoid,
tanh, softmax) are not rectifiers and keep their gradient, as in the papers.

Every way Keras expresses a rectifier is found (:func:`~cnnvis_eval.graph.rectifier_of`
with ``leaky=True``): ``activation=`` on any layer, ``Activation``, ``ReLU``/``LeakyReLU``/
``PReLU`` layers and ``keras.ops`` nodes, inside nested models too.  For DeconvNet a layer
with a fused rectifier runs as a clone with copied weights and a linear activation,
followed by the unit; the user's model is never touched.  Overrides are built once per
explainer.
"""

from __future__ import annotations

import tensorflow as tf

from ..errors import UnsupportedArchitectureError, UnsupportedLayerError
from ..graph import (
    FlatGraph,
    FlatNode,
    Rectifier,
    linear_part,
    rectifier_of,
    smooth_unit_of,
    sync_clones,
)
from .base import BatchResult, Explainer, reduce_channels, register

_ALTERNATIVES = "use saliency, integrated_gradients or smoothgrad"


@tf.custom_gradient
def positive_gradient(y):
    """Identity whose backward pass keeps only the positive part of the gradient."""
    return tf.identity(y), tf.nn.relu


@tf.custom_gradient
def _deconv_link(y, z, slope):
    """Value ``y`` (a unit's output); backward: the DeconvNet signal rule to ``z`` only."""

    def grad(dy):
        alpha = tf.cast(slope, dy.dtype)
        return None, tf.where(dy > 0, dy, alpha * dy), None

    return tf.identity(y), grad


@tf.custom_gradient
def _deconv_relu_link(y, z):
    """:func:`_deconv_link` for a unit with no negative slope (ReLU, ReLU6): the backward
    pass is ``max(dy, 0)``, one op where the general rule's select takes three (DeconvNet on
    MobileNetV2's 35 ReLU6 units)."""

    def grad(dy):
        return None, tf.nn.relu(dy)

    return tf.identity(y), grad


def _link(node: FlatNode, r: Rectifier, y, z):
    """The DeconvNet link of unit ``node`` (value ``y``, input ``z``)."""
    if not r.prelu and r.negative_slope == 0:
        return _deconv_relu_link(y, z)
    return _deconv_link(y, z, _slope(node, r, z))


def _slope(node: FlatNode, r: Rectifier, z):
    """The unit's negative-side slope: a scalar, or a PReLU's ``alpha`` (read at call time)."""
    if r.prelu:
        return tf.convert_to_tensor(node.layer.alpha)
    return tf.constant(r.negative_slope, dtype=z.dtype)


def rectifier_units(graph: FlatGraph, method: str) -> list[tuple[FlatNode, Rectifier]]:
    """The (node, rectifier) pairs a modified backward rule applies to, checked.

    Raises
    ------
    UnsupportedLayerError
        A subclassed model, or a layer applying a smooth rectifier-like unit (ELU, GELU,
        swish, ...): the message names the first such layer and its activation.
    UnsupportedArchitectureError
        No rectifier at all: the method would be the plain gradient.
    """
    if graph.opaque:
        raise UnsupportedLayerError(
            f"{method}: model {graph.model.name!r} is a subclassed model; modified "
            "backpropagation needs to see its rectifier layers (build it with the functional "
            "or Sequential API)"
        )
    units, smooth = [], []
    for node in graph.nodes:
        r = rectifier_of(node.layer, leaky=True)
        if r is not None:
            units.append((node, r))
        elif (name := smooth_unit_of(node.layer)) is not None:
            smooth.append((node, name))
    if smooth:
        node, name = smooth[0]
        more = f" (and {len(smooth) - 1} more such layers)" if len(smooth) > 1 else ""
        raise UnsupportedLayerError(
            f"{method}: layer {node.name!r} ({node.type_name}) of model {graph.model.name!r} "
            f"applies {name!r}, a smooth unit without an on/off gate{more}; {method} is defined "
            f"for piecewise-linear rectifiers (ReLU, ReLU6, LeakyReLU, PReLU) only: {_ALTERNATIVES}"
        )
    if not units:
        raise UnsupportedArchitectureError(
            f"{method}: model {graph.model.name!r} has no rectifier (ReLU, ReLU6, LeakyReLU, "
            f"PReLU), so {method} would be the plain gradient: {_ALTERNATIVES}"
        )
    return units


def guided_overrides(graph: FlatGraph, method: str = "guided_backprop") -> dict:
    """Overrides for Guided Backprop that keep every rectifying layer intact.

    The rectifier's own backward pass already multiplies by its slope ``f'(z)`` (TensorFlow's
    ReLU6 gradient is ``[0 < z < 6]``, a LeakyReLU's is 1 or ``alpha``), so an identity after
    the layer that keeps only the positive gradient gives exactly the guided rule
    ``f'(z) * max(dy, 0)`` — without splitting fused Conv+ReLU layers, which keeps
    their fused forward kernels and costs nothing extra.
    """
    out: dict = {}
    for node, _ in rectifier_units(graph, method):

        def call(*a, _node=node, **k):
            return positive_gradient(graph.call_layer(_node, *a, **k))

        out[node.name] = call
    return out


def deconvnet_overrides(graph: FlatGraph, method: str = "deconvnet") -> dict:
    """Layer-name -> callable overrides giving every rectifier of ``graph`` the DeconvNet rule.

    The unit's forward value is unchanged; its backward pass is
    ``max(dy, 0) + alpha * min(dy, 0)`` to the unit's input.  Fused rectifiers
    (``Conv2D(activation="relu")``) become a linear clone of the layer followed by the unit.
    """
    out: dict = {}
    for node, r in rectifier_units(graph, method):
        if r.fused:
            lin = linear_part(graph, node)

            def call(*a, _node=node, _r=r, _lin=lin, **k):
                z = _lin(*a, **k)
                y = tf.stop_gradient(_node.layer.activation(z))
                return _link(_node, _r, y, z)

            call.sync = lin.sync  # the clone's copied weights (ModifiedBackprop.sync_weights)

        else:

            def call(x, *a, _node=node, _r=r, **k):
                y = tf.stop_gradient(graph.call_layer(_node, x, *a, **k))
                return _link(_node, _r, y, x)

        out[node.name] = call
    return out


class ModifiedBackprop(Explainer):
    """Middle class: the gradient through rectifiers with a replaced backward rule.

    Subclasses implement ``build_overrides(graph, method) -> {layer name: callable}``.
    heatmap = max over channels of |signal| (``channel_reduce`` overrides);
    ``attribution`` is the backpropagated signal, shape (N, H, W, C).
    ``meta["rectifiers"]`` counts the rectifiers whose rule was replaced (>= 1), and
    ``meta["leaky_rectifiers"]`` those among them with a negative slope (LeakyReLU, PReLU).

    Raises (at construction) :class:`UnsupportedLayerError` for smooth units and
    :class:`UnsupportedArchitectureError` for a model without rectifiers (module docstring).
    """

    def __init__(self, model, *, channel_reduce: str = "max_abs"):
        super().__init__(model, channel_reduce=channel_reduce)
        self.channel_reduce = channel_reduce
        # one set per model, like the compiled functions that close over it: DeconvNet's
        # linear clones hold copied weights, and an explainer's sync_weights() must refresh
        # the copies the model's shared trace reads, whichever instance traced it
        self.overrides = self._cached(("overrides", type(self), self.name),
                                      lambda: self.build_overrides(self.graph, self.name))
        self._leaky = sum(
            1 for n in self.graph.nodes
            if n.name in self.overrides and rectifier_of(n.layer, leaky=True).leaky
        )

    @staticmethod
    def build_overrides(graph: FlatGraph, method: str) -> dict:
        raise NotImplementedError

    def sync_weights(self) -> None:
        """Copy the layers' current weights into the linear clones of fused layers (DeconvNet)."""
        sync_clones(self.overrides.values())

    def _explain_batch(self, x, bound):
        g, s, i = self.gradients(x, bound, self.overrides, tag=self.name)
        meta = {"rectifiers": len(self.overrides), "leaky_rectifiers": self._leaky}
        return BatchResult(reduce_channels(g, self.channel_reduce), g, i, s, meta)


@register("guided_backprop")
class GuidedBackprop(ModifiedBackprop):
    """Guided Backpropagation (Springenberg et al. 2015); leaky rectifiers and refusals as
    in the module docstring."""

    reads_weights_once = False

    build_overrides = staticmethod(guided_overrides)


@register("deconvnet")
class DeconvNet(ModifiedBackprop):
    """DeconvNet (Zeiler & Fergus 2014) as a modified backward pass.

    The DeconvNet rule ignores the forward pass mask, so fused Conv+ReLU layers are split
    into a linear clone (copied weights) and a rectifier with the replaced backward pass.
    Leaky rectifiers and refusals as in the module docstring.
    """

    build_overrides = staticmethod(deconvnet_overrides)
