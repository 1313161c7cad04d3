"""Deep Taylor decomposition and LRP for Keras 3 (rules, composites, canonizers, engine).

Importing this package registers the presets ``deep_taylor``, ``deep_taylor_bounded``,
``lrp_epsilon``, ``lrp_alpha1beta0``, ``lrp_composite``, the Zennit composites
``lrp_epsilon_gamma_box`` and ``lrp_epsilon_plus_flat``, and ``excitation_backprop``.  Custom combinations::

    from cnnvis_eval.methods.relevance import LRP, LayerMapComposite, CONVOLUTION, DENSE, ZPlus, Epsilon
    lrp = LRP(model, composite=LayerMapComposite([(CONVOLUTION, ZPlus()), (DENSE, Epsilon(0.1))]))
"""

from .canonizers import DEFAULT_CANONIZERS, FoldBatchNorm, Op, Program, canonize
from .composites import (
    AVGPOOL,
    BATCHNORM,
    CONVOLUTION,
    DENSE,
    Composite,
    DeepTaylor,
    LayerMapComposite,
    epsilon_composite,
    input_domains,
    zennit_composite,
)
from .engine import RelevanceEngine, start_relevance
from .presets import (
    LRP,
    DeepTaylorBounded,
    DeepTaylorDecomposition,
    LRPAlpha1Beta0,
    LRPComposite,
    LRPEpsilon,
    LRPEpsilonGammaBox,
    LRPEpsilonPlusFlat,
)
from .excitation import ExcitationBackprop
from .rules import AlphaBeta, Contrast, Epsilon, Flat, Gamma, Pass, Rule, SignedShare, WSquare, ZBox, ZPlus

__all__ = [
    "AlphaBeta", "Contrast", "Epsilon", "Flat", "Gamma", "Pass", "Rule", "SignedShare", "WSquare", "ZBox", "ZPlus",
    "Composite", "DeepTaylor", "LayerMapComposite", "epsilon_composite", "input_domains", "zennit_composite",
    "AVGPOOL", "BATCHNORM", "CONVOLUTION", "DENSE",
    "DEFAULT_CANONIZERS", "FoldBatchNorm", "Op", "Program", "canonize",
    "RelevanceEngine", "start_relevance",
    "LRP", "DeepTaylorDecomposition", "DeepTaylorBounded", "LRPEpsilon", "LRPAlpha1Beta0", "LRPComposite",
    "LRPEpsilonGammaBox", "LRPEpsilonPlusFlat", "ExcitationBackprop",
]
