"""Registered relevance methods: Deep Taylor and LRP presets.

=========================  ==================================================================
``deep_taylor``            z+ where a layer's input is >= 0, w**2 where it can be negative
                           and at the pixels (Montavon et al. 2017); top = max(0, score).
``deep_taylor_bounded``    as ``deep_taylor`` but zB at the pixels, with the bounds of the
                           model's preprocessed input range; top = max(0, score).
``lrp_epsilon``            LRP-epsilon on every layer (and sums); top = score.
``lrp_alpha1beta0``        LRP-alpha1-beta0 (bias in the denominator) on dense, conv and
                           pooling layers; top = max(0, score).
``lrp_composite``          LRP-epsilon on dense layers, alpha1-beta0 (or gamma) on
                           convolutions and pooling, zB (or w**2) at the pixels; top = score.
``lrp_epsilon_gamma_box``  Zennit's ``EpsilonGammaBox``: epsilon on dense layers, gamma on
                           convolutions, zB at the pixels; top = score.
``lrp_epsilon_plus_flat``  Zennit's ``EpsilonPlusFlat``: epsilon on dense layers, z+ on
                           convolutions, flat at the pixels; top = score.
=========================  ==================================================================

All presets fold BatchNorm into the preceding layer, split a residual ``Add`` with
:class:`~.rules.SignedShare` (except ``lrp_epsilon``, which uses epsilon there too, and the
Zennit presets, which use Zennit's ``Norm``: epsilon 1e-6) and pass relevance unchanged
through rectifiers and a lone BatchNorm.  ``excitation_backprop`` (:mod:`.excitation`)
runs on the same engine.

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
    zennit_composite,
)
from .engine import RelevanceEngine
from .rules import AlphaBeta, Epsilon, Flat, Gamma, WSquare, ZBox


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
    unit_top = False  # start from relevance 1 (Excitation Backprop's probability prior)

    def __init__(self, model, *, composite: Composite | None = None,
                 positive_top: bool | None = None, **params):
        super().__init__(model, **params)
        if composite is None:
            composite = self.make_composite()
        if positive_top is not None:
            self.positive_top = bool(positive_top)
        self.composite = composite
        self.engine = RelevanceEngine(self.graph, composite, self.name, self.positive_top,
                                       unit_top=self.unit_top)
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


def _zennit_bounds(spec, low, high, method):
    b = _bounds(spec, low, high, method)
    if b is None:
        raise InputError(
            f"{method} needs the bounds of the model input for zB: pass low=..., high=... (in "
            "preprocessed units, scalars or per channel) or a ModelSpec with input_range"
        )
    return b


def _listed(v):
    return None if v is None else np.asarray(v).tolist()


@register("lrp_epsilon_gamma_box")
class LRPEpsilonGammaBox(LRP):
    """Zennit's ``EpsilonGammaBox`` composite (Anders et al. 2021, zennit.composites):
    LRP-epsilon on dense layers, Zennit's generalized LRP-gamma (Montavon et al. 2019; Andeol
    et al. 2021: ``Gamma(generalized=True)``, mirrored weights for negative outputs) on
    convolutions, zB on the
    layers reading the pixels (Montavon et al. 2017), Zennit's ``Norm`` (proportional, 1e-6
    stabilizer) on average pooling and residual sums; top = score.

    Parameters
    ----------
    epsilon : float
        For dense layers (Zennit's default 1e-6).
    gamma : float
        For convolutions (Zennit's default 0.25).
    low, high : float or array (C,), optional
        Pixel bounds in model-input units for zB; default: the spec's ``input_range``
        (required: Zennit requires them too).

    Notes
    -----
    Where this differs from Zennit, and why:

    * zB goes to *every* linear layer that reads the pixels (two parallel stems both get
      it) and to a dense first layer too; Zennit gives it to the first convolution in
      module order only.  Identical for every CNN whose stem is one convolution.
    * BatchNorm is folded into the layer before it (Zennit: only with its canonizer); a
      lone BatchNorm passes relevance unchanged (Zennit: its gradient).
    * zB uses safe division (0 where the denominator is 0) where Zennit adds 1e-6; gamma
      and epsilon add the stabilizer as Zennit does.
    """

    def __init__(self, model, *, epsilon: float = 1e-6, gamma: float = 0.25, low=None, high=None):
        if not gamma >= 0:
            raise InputError(f"lrp_epsilon_gamma_box: gamma must be >= 0, got {gamma}")
        self.epsilon, self.gamma = float(epsilon), float(gamma)
        self._low, self._high = low, high
        super().__init__(model, epsilon=self.epsilon, gamma=self.gamma, low=_listed(low), high=_listed(high))

    def make_composite(self):
        b = _zennit_bounds(self.spec, self._low, self._high, self.name)
        return zennit_composite(Gamma(self.gamma, stabilizer=1e-6, generalized=True), self.epsilon, ZBox(*b))


@register("lrp_epsilon_plus_flat")
class LRPEpsilonPlusFlat(LRP):
    """Zennit's ``EpsilonPlusFlat`` composite (Anders et al. 2021, zennit.composites):
    LRP-epsilon on dense layers, z+ on convolutions, flat on the layers reading the pixels
    (Lapuschkin et al. 2019), Zennit's ``Norm`` (proportional, 1e-6 stabilizer) on average
    pooling and residual sums; top = score.

    Parameters
    ----------
    epsilon : float
        For dense layers (Zennit's default 1e-6).

    Notes
    -----
    Zennit's ``ZPlus`` is alpha1-beta0 with the positive bias in the denominator, so the
    convolutions get :class:`~.rules.AlphaBeta` ``(1, 0)`` (not :class:`~.rules.ZPlus`,
    which ignores the bias).  Where this differs from Zennit, and why:

    * flat goes to every linear layer that reads the pixels; Zennit to the first dense or
      convolution in module order.  Identical for a single stem.
    * z+ uses safe division with a w**2 hand-on for outputs without positive contribution
      (so relevance is not dropped); Zennit adds 1e-6 to the denominator.
    * BatchNorm folding and a lone BatchNorm as in :class:`LRPEpsilonGammaBox`.
    """

    def __init__(self, model, *, epsilon: float = 1e-6):
        self.epsilon = float(epsilon)
        super().__init__(model, epsilon=self.epsilon)

    def make_composite(self):
        return zennit_composite(AlphaBeta(1.0, 0.0), self.epsilon, Flat())


__all__ = [
    "LRP",
    "LRPEpsilonGammaBox",
    "LRPEpsilonPlusFlat",
    "DeepTaylorDecomposition",
    "DeepTaylorBounded",
    "LRPEpsilon",
    "LRPAlpha1Beta0",
    "LRPComposite",
]
