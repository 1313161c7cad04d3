"""Registered relevance methods: Deep Taylor and LRP presets.

=======================  ==================================================================
``deep_taylor``          z+ where a layer's input is >= 0, w**2 where it can be negative
                         and at the pixels (Montavon et al. 2017); top = max(0, score).
``deep_taylor_bounded``  as ``deep_taylor`` but zB at the pixels, with the bounds of the
                         model's preprocessed input range; top = max(0, score).
``lrp_epsilon``          LRP-epsilon on every layer (and sums); top = score.
``lrp_alpha1beta0``      LRP-alpha1-beta0 (bias in the denominator) on dense, conv and
                         pooling layers; top = max(0, score).
``lrp_composite``        LRP-epsilon on dense layers, alpha1-beta0 (or gamma) on
                         convolutions and pooling, zB (or w**2) at the pixels; top = score.
=======================  ==================================================================

All presets fold BatchNorm into the preceding layer, split a residual ``Add`` with
:class:`~.rules.SignedShare` (except ``lrp_epsilon``, which uses epsilon there too) and pass
relevance unchanged through rectifiers and a lone BatchNorm.

Output: ``attribution`` is the input relevance (N, H, W, C); ``heatmap`` its sum over
channels (signed).  ``meta`` (per image arrays have the batch first):

* ``relevance_top`` (N,): the starting relevance (the score, or ``max(0, score)``);
* ``relevance_input`` (N,): the sum of the input relevance;
* ``conservation_error`` (N,): ``|input - top| / |top|`` (0 where both are 0);
* ``absorbed_fraction`` (N,): ``(top - input) / top``, the share absorbed by biases,
  epsilon or dropped at zero denominators (NaN where top is 0);
* ``relevance_layers`` (list of L op names, output to input) and ``relevance_sums``
  (N, L): the total relevance still in flight after each op, so a leak shows as a step;
* ``rules``: op name -> rule.

Starting relevance for a ``NeuronTarget``: the selected channel of the layer's output,
divided by the number of positions (``reduce="mean"``), as is (``"sum"``), or only at its
maximal position (``"max"``); it sums to the target score.  For a ``ClassTarget``: the
selected logit.  Presets with ``top = max(0, score)`` start from zero relevance for images
whose score is <= 0.
"""

from __future__ import annotations

import numpy as np

from ...errors import InputError
from ..base import BatchResult, Explainer, register
from .composites import (
    AVGPOOL,
    CONVOLUTION,
    DENSE,
    Composite,
    DeepTaylor,
    LayerMapComposite,
    epsilon_composite,
)
from .engine import RelevanceEngine
from .rules import AlphaBeta, Epsilon, Gamma, WSquare, ZBox


class LRP(Explainer):
    """Relevance propagation with any composite (base of the registered presets).

    Parameters
    ----------
    model : ModelSpec or keras.Model
    composite : Composite
    positive_top : bool
        Start from ``max(0, score)``.
    """

    signed = True
    default_batch_size = 8
    positive_top = False

    def __init__(self, model, *, composite: Composite | None = None,
                 positive_top: bool | None = None, **params):
        super().__init__(model, **params)
        if composite is None:
            composite = self.make_composite()
        if positive_top is not None:
            self.positive_top = bool(positive_top)
        self.composite = composite
        self.engine = RelevanceEngine(self.graph, composite, self.name, self.positive_top)
        # check every layer now, so an unsupported model fails at construction
        self.engine.plan(self.graph.output_key)

    def sync_weights(self) -> None:
        """Fold the current weights again (see :meth:`RelevanceEngine.sync`)."""
        self.engine.sync()

    def make_composite(self) -> Composite:
        raise InputError(f"{type(self).__name__} needs a composite")

    def rules(self, target=None) -> dict:
        """Op name -> rule for the model output (or a bound target's tensor)."""
        key = self.graph.output_key if target is None else target.key
        return self.engine.plan(key).describe()

    def _explain_batch(self, x, bound):
        fn = self.engine.function(bound, self._signature())
        r, scores, idx, top, sums = fn(x, bound.indices)
        r = r.numpy()
        top = top.numpy()
        total = r.reshape(len(r), -1).sum(axis=1, dtype=np.float64)
        denom = np.abs(top)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(denom > 0, np.abs(total - top) / np.where(denom > 0, denom, 1.0),
                           np.where(np.abs(total) > 0, np.inf, 0.0))
            absorbed = np.where(denom > 0, (top - total) / np.where(denom > 0, top, 1.0), np.nan)
        plan = self.engine.plan(bound.key)
        meta = {
            "relevance_top": top,
            "relevance_input": total,
            "conservation_error": err,
            "absorbed_fraction": absorbed,
            "relevance_layers": plan.layers,
            "relevance_sums": sums.numpy(),
            "rules": plan.describe(),
        }
        heat = r.sum(axis=-1)
        return BatchResult(heat, r, idx.numpy(), scores.numpy(), meta)


@register("deep_taylor")
class DeepTaylorDecomposition(LRP):
    """Deep Taylor decomposition (Montavon et al. 2017), rules chosen from the graph.

    z+ for layers whose input is >= 0, w**2 for layers with signed input (linear
    bottlenecks, residual sums) and for the layers reading the pixels.
    """

    positive_top = True

    def make_composite(self):
        return DeepTaylor()


def _bounds(spec, low, high, method: str):
    if low is not None and high is not None:
        return np.asarray(low, np.float64), np.asarray(high, np.float64)
    if low is not None or high is not None:
        raise InputError(f"{method}: give both low and high, or neither")
    if spec.input_range is None:
        return None
    return np.asarray(spec.input_range[0], np.float64), np.asarray(spec.input_range[1], np.float64)


@register("deep_taylor_bounded")
class DeepTaylorBounded(LRP):
    """Deep Taylor decomposition with the zB rule at the pixels.

    Parameters
    ----------
    low, high : float or array (C,), optional
        Pixel bounds in model-input units; default: the spec's ``input_range``.
    positive_top : bool, optional
        Start from ``max(0, score)`` (default ``True``, the z+ convention).
    """

    positive_top = True

    def __init__(self, model, *, low=None, high=None, positive_top: bool | None = None):
        self._low, self._high = low, high
        super().__init__(model, positive_top=positive_top, low=None if low is None else np.asarray(low).tolist(),
                         high=None if high is None else np.asarray(high).tolist())

    def make_composite(self):
        b = _bounds(self.spec, self._low, self._high, self.name)
        if b is None:
            raise InputError(
                f"{self.name} needs the bounds of the model input: pass low=..., high=... (in "
                "preprocessed units, scalars or per channel) or a ModelSpec with input_range"
            )
        return DeepTaylor(*b)


@register("lrp_epsilon")
class LRPEpsilon(LRP):
    """LRP-epsilon on every layer.

    Parameters
    ----------
    epsilon : float
        Stabilizer added to every denominator (with its sign); biases are included.
    """

    def __init__(self, model, *, epsilon: float = 1e-6):
        self.epsilon = float(epsilon)
        super().__init__(model, epsilon=self.epsilon)

    def make_composite(self):
        return epsilon_composite(self.epsilon)


@register("lrp_alpha1beta0")
class LRPAlpha1Beta0(LRP):
    """LRP-alpha1-beta0 on dense, convolution and pooling layers.

    Parameters
    ----------
    bias : bool
        Include the positive bias in the denominator (it absorbs relevance); ``False``
        makes the rule identical to z+.
    positive_top : bool, optional
        Start from ``max(0, score)`` (default ``True``, the z+ convention).
    """

    positive_top = True

    def __init__(self, model, *, bias: bool = True, positive_top: bool | None = None):
        self.bias = bool(bias)
        super().__init__(model, positive_top=positive_top, bias=self.bias)

    def make_composite(self):
        return LayerMapComposite([(DENSE + CONVOLUTION + AVGPOOL, AlphaBeta(1.0, 0.0, bias=self.bias))])


@register("lrp_composite")
class LRPComposite(LRP):
    """Composite LRP: epsilon on dense layers, alpha1-beta0 (or gamma) on convolutions and
    pooling, zB at the pixels.

    Parameters
    ----------
    epsilon : float
        For dense layers.
    conv : {"alpha1beta0", "gamma"}
    gamma : float
        For ``conv="gamma"``.
    first : {"auto", "zbox", "wsquare", "flat"}
        Rule at the pixels; "auto" is zB when the input range is known, else w**2
        (``meta["rules"]`` says which).
    low, high : optional pixel bounds for zB (default: the spec's input_range).
    """

    def __init__(self, model, *, epsilon: float = 1e-6, conv: str = "alpha1beta0",
                 gamma: float = 0.25, first: str = "auto", low=None, high=None):
        if conv not in ("alpha1beta0", "gamma"):
            raise InputError(f"lrp_composite: conv must be 'alpha1beta0' or 'gamma', got {conv!r}")
        if first not in ("auto", "zbox", "wsquare", "flat"):
            raise InputError(f"lrp_composite: first must be auto, zbox, wsquare or flat, got {first!r}")
        self.epsilon, self.conv, self.gamma, self.first = float(epsilon), conv, float(gamma), first
        self._low, self._high = low, high
        super().__init__(model, epsilon=self.epsilon, conv=conv, gamma=self.gamma, first=first)

    def make_composite(self):
        from .rules import Flat

        conv_rule = AlphaBeta(1.0, 0.0) if self.conv == "alpha1beta0" else Gamma(self.gamma)
        b = _bounds(self.spec, self._low, self._high, self.name)
        if self.first == "zbox" and b is None:
            raise InputError("lrp_composite: first='zbox' needs low/high or a ModelSpec with input_range")
        if self.first == "flat":
            first = Flat()
        elif self.first == "wsquare" or b is None:
            first = WSquare()
        else:
            first = ZBox(*b)
        return LayerMapComposite(
            [(DENSE, Epsilon(self.epsilon)), (CONVOLUTION + AVGPOOL, conv_rule)], first=first
        )


__all__ = [
    "LRP",
    "DeepTaylorDecomposition",
    "DeepTaylorBounded",
    "LRPEpsilon",
    "LRPAlpha1Beta0",
    "LRPComposite",
]
