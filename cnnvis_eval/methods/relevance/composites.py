"""Composites: which rule each layer gets.

A composite assigns a :class:`~.rules.Rule` to every linear op and a merge rule to every
``Add`` of a canonical :class:`~.canonizers.Program`.  Two kinds, after Zennit:

:class:`LayerMapComposite`
    A layer-type map ``[(types, rule), ...]`` (first match wins), an optional rule for the
    layers that read the pixels (``first``), and a merge rule for ``Add``.

:class:`DeepTaylor`
    Chooses the rule from the *domain* of each layer's input (Montavon et al. 2017):
    ``z+`` where the input is non-negative (it comes out of a rectifier, or of pooling /
    padding / concatenation / sums of rectifier outputs), ``w**2`` where it can be negative
    (MobileNetV2's linear bottlenecks, anything fed by a residual ``Add`` of signed
    branches or by a BatchNorm without a rectifier after it), and for the layers reading
    the pixels ``w**2`` or, in the bounded variant, ``zB`` with the preprocessed input
    range.  The domain is read from the graph (:func:`input_domains`), not from the data.

Domains: ``"input"`` (the model input, possibly through padding/reshaping), ``"nonneg"``,
``"signed"``.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import keras

from ...errors import InputError
from .canonizers import Op, Program
from .linear import ScaleMap
from .rules import Epsilon, Pass, Rule, SignedShare, WSquare, ZBox, ZPlus

INPUT, NONNEG, SIGNED = "input", "nonneg", "signed"

# layer-type groups for layer maps (the original layer class of each linear op)
DENSE = (keras.layers.Dense,)
CONVOLUTION = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)
AVGPOOL = (keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D)
BATCHNORM = (keras.layers.BatchNormalization,)


def _merge_domain(ds: Sequence[str]) -> str:
    if all(d == NONNEG for d in ds):
        return NONNEG
    if all(d == INPUT for d in ds):
        return INPUT
    return SIGNED


def input_domains(program: Program) -> dict[int, str]:
    """Domain of every tensor of the program, from the graph structure alone.

    Returns
    -------
    dict tensor key -> "input" | "nonneg" | "signed"
    """
    dom = {program.input_key: INPUT}
    for op in program.ops:
        ins = [dom.get(k, SIGNED) for k in op.inputs]
        if op.rectifier is not None:
            d = NONNEG  # rectifier op, or a linear op with a fused rectifier
        elif op.kind == "linear":
            # pooling has non-negative weights: keeps x >= 0; anything else is signed
            is_pool = not op.lmap.has_negative_weights
            d = NONNEG if (is_pool and ins[0] == NONNEG) else SIGNED
        elif op.kind == "pass":
            d = ins[0]
        elif op.kind == "affine":  # preprocessing: pixels stay pixels; x >= 0 only if s, t >= 0
            s, t = op.affine
            d = ins[0] if ins[0] == INPUT or (ins[0] == NONNEG and (s >= 0).all() and (t >= 0).all()) else SIGNED
        elif op.kind == "route":
            d = ins[0] if (op.shape_only or ins[0] != INPUT) else SIGNED
        elif op.kind in ("add", "concat"):
            d = _merge_domain(ins)
            if op.kind == "add" and d == INPUT:
                d = SIGNED
        else:  # pragma: no cover
            d = SIGNED
        dom[op.output] = d
    return dom


class Composite:
    """Base class: ``assign(program) -> {op name: rule}``.

    Attributes
    ----------
    merge : Rule
        Rule for residual ``Add`` (must implement ``merge``).
    batchnorm : Rule
        Rule for a BatchNorm left unfolded (``x * s + t``).
    """

    merge: Rule = SignedShare()
    batchnorm: Rule = Pass()

    def rule_for(self, op: Op, domain: str) -> Rule:
        raise NotImplementedError

    def assign(self, program: Program) -> dict[str, Rule]:
        dom = input_domains(program)
        rules: dict[str, Rule] = {}
        for op in program.ops:
            if op.kind == "add":
                rules[op.name] = self.merge
            elif op.kind == "linear":
                if isinstance(op.lmap, ScaleMap):
                    rules[op.name] = self.batchnorm
                else:
                    rules[op.name] = self.rule_for(op, dom[op.inputs[0]])
        return rules

    def domains(self, program: Program) -> dict[int, str]:
        return input_domains(program)


class LayerMapComposite(Composite):
    """Rules by layer type.

    Parameters
    ----------
    layer_map : list of (type or tuple of types, Rule)
        Matched against the original layer class of each linear op (first match wins).
    first : Rule, optional
        Rule for the layers reading the model input (domain "input").
    merge : Rule
        For ``Add`` (default :class:`~.rules.SignedShare`).
    batchnorm : Rule
        For an unfolded BatchNorm (default :class:`~.rules.Pass`).
    """

    def __init__(self, layer_map: Iterable, first: Rule | None = None,
                 merge: Rule | None = None, batchnorm: Rule | None = None):
        self.layer_map = list(layer_map)
        self.first = first
        if merge is not None:
            self.merge = merge
        if batchnorm is not None:
            self.batchnorm = batchnorm

    def rule_for(self, op, domain):
        if domain == INPUT and self.first is not None:
            return self.first
        for types, rule in self.layer_map:
            if issubclass(op.layer_type, types):
                return rule
        raise InputError(
            f"composite has no rule for layer {op.name!r} ({op.layer_type.__name__}); "
            "add its type to the layer map"
        )


class DeepTaylor(Composite):
    """Deep Taylor decomposition: the rule follows the input domain of each layer.

    Parameters
    ----------
    low, high : float or array (C,), optional
        Bounds of the pixels; when given, layers reading the pixels get ``ZBox(low, high)``
        (the bounded variant), otherwise ``WSquare()``.
    """

    def __init__(self, low=None, high=None):
        self.bounded = low is not None and high is not None
        self.pixels: Rule = ZBox(low, high) if self.bounded else WSquare()
        self.nonneg: Rule = ZPlus()
        self.signed: Rule = WSquare()

    def rule_for(self, op, domain):
        if domain == INPUT:
            return self.pixels
        if domain == NONNEG:
            return self.nonneg
        return self.signed


def epsilon_composite(epsilon: float = 1e-6) -> LayerMapComposite:
    """LRP-epsilon everywhere (dense, conv, pooling, sums and unfolded BatchNorm)."""
    e = Epsilon(epsilon)
    return LayerMapComposite([(DENSE + CONVOLUTION + AVGPOOL, e)], merge=e, batchnorm=e)


def zennit_composite(conv: Rule, epsilon: float, first: Rule) -> LayerMapComposite:
    """The layer map of Zennit's epsilon-* composites (``zennit.composites``): ``conv`` on
    convolutions, ``Epsilon(epsilon)`` on dense layers, ``first`` on the layers reading the
    pixels, and Zennit's ``Norm`` -- proportional with a 1e-6 stabilizer, i.e.
    ``Epsilon(1e-6)`` -- on average pooling and residual sums."""
    norm = Epsilon(1e-6)
    return LayerMapComposite([(DENSE, Epsilon(epsilon)), (AVGPOOL, norm), (CONVOLUTION, conv)],
                             first=first, merge=norm)


__all__ = [
    "zennit_composite",
    "INPUT", "NONNEG", "SIGNED", "DENSE", "CONVOLUTION", "AVGPOOL", "BATCHNORM",
    "Composite", "LayerMapComposite", "DeepTaylor", "input_domains", "epsilon_composite",
]
