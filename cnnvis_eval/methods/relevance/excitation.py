"""Excitation Backprop: the marginal winning probability (Zhang et al., "Top-down Neural
Attention by Excitation Backprop", ECCV 2016 / IJCV 2018).

A top-down probabilistic winner-take-all: the probability that a unit ``a_i`` of a lower
layer "wins" is ``P(a_i) = sum_j P(a_i | a_j) P(a_j)`` over its parents ``a_j``, with only
excitatory connections,

    P(a_i | a_j) = a_i w_ij+ / sum_i' a_i' w_i'j+        (a_i >= 0, bias ignored),

which is the z+ rule (LRP-alpha1-beta0 without bias) started from a probability prior.  So
the method runs on the relevance engine: :class:`~.rules.ZPlus` on every dense,
convolution and pooling layer (average pooling: proportional to the inputs, as in the
paper), max pooling hands the probability to its winner, rectifiers and padding pass it on,
a residual ``Add`` splits it in proportion to its (non-negative) branches
(:class:`~.rules.SignedShare`), BatchNorm is folded into the layer before it.  The prior is
the one-hot vector of the target class (the paper starts from a prior over the outputs; for
a channel target: its activation map divided by its total).  Probabilities sum to 1 at every
layer (``meta["relevance_sums"]``).  At the pixels, whose values can be negative, the
positive contributions ``x+ w+ + x- w-`` take the place of ``a_i w_ij+``.

Contrastive MWP (``contrastive=True``): the MWP of the target minus the MWP of its *dual*
unit, which has the negated weights of the top layer (:class:`~.rules.Contrast` on the
layer producing the explained tensor), both computed down to an intermediate layer
(``layer``; default: the last convolutional feature map, :func:`~cnnvis_eval.graph.queries.last_conv_layer`,
the paper's conv5-style choice), summed over channels, truncated at 0 and upsampled
bilinearly to the input, as the paper does.  Below the top layer MWP is linear in the
probabilities, so one pass propagates the difference.

Output: ``heatmap`` (N, H, W): the MWP at the input summed over channels (``attribution``
(N, H, W, C)), or the upsampled c-MWP map (``attribution`` None; ``meta["mwp_layer"]`` and
``meta["mwp_layer_map"]`` (N, h, w) give the layer and its map before upsampling).  ``meta``
also has the relevance engine's entries (``relevance_top`` is 1, or 0 for a channel that
is all zero).
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ...graph.queries import last_conv_layer
from ..base import BatchResult, register
from ..cam.base import upsample
from .composites import Composite
from .linear import ScaleMap
from .presets import LRP
from .rules import Contrast, ZPlus


class ExcitationComposite(Composite):
    """z+ on every linear layer; with ``contrastive``, :class:`~.rules.Contrast` on the
    layer producing the explained tensor (which must be a dense layer or a convolution)."""

    def __init__(self, contrastive: bool = False, method: str = "excitation_backprop"):
        self.contrastive = bool(contrastive)
        self.method = method
        self.excite = ZPlus()

    def rule_for(self, op, domain):
        return self.excite

    def assign(self, program):
        rules = super().assign(program)
        if self.contrastive:
            top = next((op for op in program.ops if op.output == program.output_key), None)
            if top is None or top.kind != "linear" or isinstance(top.lmap, ScaleMap):
                what = "nothing" if top is None else (top.nodes[0] if top.nodes else top.name)
                raise InputError(
                    f"{self.method}: contrastive=True needs the explained tensor to come out of a dense "
                    f"layer or a convolution (its dual unit negates that layer's weights); it comes "
                    f"out of {what!r}"
                )
            rules[top.name] = Contrast()
        return rules


@register("excitation_backprop")
class ExcitationBackprop(LRP):
    """Excitation Backprop: marginal winning probability (MWP), or contrastive MWP.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    contrastive : bool
        c-MWP: target minus dual unit at ``layer``, truncated at 0, upsampled.
    layer : str, optional
        Layer of the c-MWP map (a 4-D feature map feeding the target); default: the
        spec's ``last_conv_layer`` (the last convolutional block output).  Only with
        ``contrastive=True``.
    """

    signed = False
    positive_top = False
    unit_top = True

    def __init__(self, model, *, contrastive: bool = False, layer: str | None = None):
        self.contrastive = bool(contrastive)
        if layer is not None and not self.contrastive:
            raise InputError("excitation_backprop: layer=... is only used with contrastive=True")
        super().__init__(model, contrastive=self.contrastive, layer=layer)
        self.layer, self._at = None, None
        if self.contrastive:
            name = layer or self.spec.last_conv_layer or last_conv_layer(self.graph)
            if name is None:
                raise InputError("excitation_backprop: the model has no convolutional feature map for c-MWP; "
                                 "pass layer=...")
            key = self.graph.key(name)  # TargetError naming close matches if unknown
            if len(self.graph.shape(key)) != 4:
                raise InputError(f"excitation_backprop: layer {name!r} has shape {self.graph.shape(key)}; "
                                 "c-MWP needs a 4-D feature map")
            if not any(op.output == key for op in self.engine.plan(self.graph.output_key).program.ops):
                raise InputError(f"excitation_backprop: layer {name!r} is not on the path to the output "
                                 "(or is merged into the next layer, e.g. a convolution before its "
                                 "BatchNorm: pick the block's activation)")
            self.layer, self._at = name, key

    def make_composite(self):
        return ExcitationComposite(self.contrastive, self.name)

    def _explain_batch(self, x, bound):
        if not self.contrastive:
            return super()._explain_batch(x, bound)
        fn = self.engine.function(bound, self._signature(), at=self._at)
        r, scores, idx, top, sums = fn(x, bound.indices)
        low = np.maximum(r.numpy().sum(axis=-1), 0.0)  # (N, h, w)
        heat = upsample(low, tuple(x.shape[1:3]))
        meta = {
            "mwp_layer": self.layer,
            "mwp_layer_map": low,
            "relevance_top": top.numpy(),
            "rules": self.engine.plan(bound.key).describe(),
        }
        return BatchResult(heat, None, idx.numpy(), scores.numpy(), meta)


__all__ = ["ExcitationBackprop", "ExcitationComposite"]
