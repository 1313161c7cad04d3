"""Perturbation methods: LIME, KernelSHAP, occlusion, RISE, Sobol, HSIC.

These methods only call the model forward: they perturb the input many times and read how
the explained value (a pre-softmax logit or a reduced channel, see :mod:`cnnvis_eval.targets`)
changes.  For every image, all its perturbed copies go through **one compiled TensorFlow
function** (``tf.function`` with a ``None`` batch dimension, traced once per model and
target) in chunks of ``batch_size`` model inputs, by the one sampling loop of
:mod:`.sampling`.  The perturbation itself is built inside that function from compact
descriptions (superpixel on/off rows, window corners, coarse mask grids), so the cost per
model input is the model call plus a few fused element-wise ops.

* ``lime`` (Ribeiro et al. 2016, :mod:`.lime`) -- the ``lime`` package's
  ``LimeImageExplainer``: its sampling of superpixel on/off vectors, cosine distances and
  kernel, weighted ridge regression and ``ImageExplanation`` are used as they are; only
  its per-sample Python loop that pastes images together (``data_labels``) is replaced by
  the batched equivalent (same random draws, same perturbed images; see
  :class:`BatchedLimeImageExplainer`).
* ``kernel_shap`` (Lundberg & Lee 2017, :mod:`.kernel_shap`) -- KernelSHAP on LIME's
  superpixels (:mod:`.superpixels`, shared with ``lime``): Shapley-kernel weighted linear
  regression with the empty and full coalitions enforced, shap's coalition sampling.
* ``occlusion`` (Zeiler & Fergus 2014, :mod:`.occlusion`) -- a sliding window set to a
  baseline value.
* ``rise`` (Petsiuk et al. 2018, :mod:`.rise`) -- random smooth masks, score-weighted average.
* ``sobol`` (Fel et al. 2021, :mod:`.sobol`) and ``hsic`` (Novello et al. 2022, :mod:`.hsic`)
  -- Xplique's global-sensitivity-analysis methods: a quasi-Monte Carlo design of grid
  masks, total-order Sobol' indices (Jansen) or HSIC per grid cell; their shared part is
  :class:`~.gsa.GsaExplainer`.

Perturbation methods process one image at a time (each image gets all its perturbations
batched); ``batch_size`` -- in the constructor or in ``explain`` -- is the number of model
inputs per compiled call.  A tqdm progress bar counts model inputs when there are more than
a few hundred of them (``progress=False`` silences it, ``True`` forces it).  The state of an
explain call lives in a :class:`Sampling` object, not on the explainer, so one explainer can
serve several callers at once.
"""

from .kernel_shap import KernelShap, kernel_shap_coalitions, shapley_kernel, solve_kernel_shap
from .lime import SEGMENTATION_DEFAULTS, BatchedLimeImageExplainer, Lime, display_images
from .occlusion import Occlusion, window_positions
from .rise import Rise, linear_resize_matrix
from .gsa import GsaExplainer
from .hsic import Hsic, hsic_scores
from .sampling import PROGRESS_THRESHOLD, PerturbationExplainer, Sampling
from .sobol import Sobol, jansen_total_order, replicated_design
from .superpixels import SuperpixelExplainer

__all__ = [
    "BatchedLimeImageExplainer",
    "GsaExplainer",
    "Hsic",
    "KernelShap",
    "Lime",
    "Occlusion",
    "PROGRESS_THRESHOLD",
    "PerturbationExplainer",
    "Rise",
    "SEGMENTATION_DEFAULTS",
    "Sampling",
    "Sobol",
    "SuperpixelExplainer",
    "display_images",
    "hsic_scores",
    "jansen_total_order",
    "kernel_shap_coalitions",
    "linear_resize_matrix",
    "replicated_design",
    "shapley_kernel",
    "solve_kernel_shap",
    "window_positions",
]
