"""Deep Taylor decomposition and LRP for Keras 3 (rules, composites, canonizers, engine).

Importing this package registers the presets ``deep_taylor``, ``deep_taylor_bounded``,
``lrp_epsilon``, ``lrp_alpha1beta0`` and ``lrp_composite``.  Custom combinations::

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
)
from .engine import RelevanceEngine, start_relevance
from .presets import (
    LRP,
    DeepTaylorBounded,
    DeepTaylorDecomposition,
    LRPAlpha1Beta0,
    LRPComposite,
    LRPEpsilon,
)
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Pass, Rule, SignedShare, WSquare, ZBox, ZPlus

__all__ = [
    "AlphaBeta", "Epsilon", "Flat", "Gamma", "Pass", "Rule", "SignedShare", "WSquare", "ZBox", "ZPlus",
    "Composite", "DeepTaylor", "LayerMapComposite", "epsilon_composite", "input_domains",
    "AVGPOOL", "BATCHNORM", "CONVOLUTION", "DENSE",
    "DEFAULT_CANONIZERS", "FoldBatchNorm", "Op", "Program", "canonize",
    "RelevanceEngine", "start_relevance",
    "LRP", "DeepTaylorDecomposition", "DeepTaylorBounded", "LRPEpsilon", "LRPAlpha1Beta0", "LRPComposite",
]
