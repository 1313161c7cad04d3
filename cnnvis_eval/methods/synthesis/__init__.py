"""Image synthesis: activation maximization and network inversion.

Both find an image by gradient-based optimization under the two natural-image regularizers
of Mahendran & Vedaldi ("Understanding deep image representations by inverting them",
CVPR 2015; "Visualizing deep convolutional neural networks using natural pre-images",
IJCV 2016):

* a bounded-range prior, the alpha-norm ``N_alpha(x) = mean_ij (||x_ij|| / B) ** alpha``,
* a bounded-variation prior, the total variation with exponent beta,
  ``N_TV(x) = mean_ij ((||x_i,j+1 - x_ij||^2 + ||x_i+1,j - x_ij||^2) / V^2) ** (beta / 2)``,

where ``||x_ij||`` is the Euclidean norm of pixel (i, j) over the colour channels.

Normalization (Mahendran & Vedaldi, IJCV 2016, Sec. 3.3)
---------------------------------------------------------
The regularizers act on the image in *centred display units*: ``u = (x - c) * 255 / (high
- low)`` per channel, where ``(low, high)`` is the model's preprocessed input range
(``ModelSpec.input_range``) and ``c`` its midpoint.  For every zoo model this is the RGB
image in [0, 255] minus mid-grey (127.5), whatever the preprocessing (caffe BGR mean
subtraction or [-1, 1] scaling), so the same weights mean the same thing for every
architecture.  ``B = 80`` is the typical norm of a mean-subtracted RGB pixel in [0, 255]
units and ``V = B / 6.5`` the typical norm of a pixel difference of natural images (the
paper's constants; for C channels B is scaled by sqrt(C / 3)), so both regularizers are
about 1 on natural images and the weights ``lambda_alpha``, ``lambda_tv`` are scale free.
The paper's exponents are the defaults: ``alpha = 6``, ``beta = 2``.  The means run over
the H*W pixels (N_alpha) and the (H-1)*(W-1) pixels with both neighbours (N_TV).

Data terms: inversion uses the paper's normalized loss ``||phi(x') - phi(x)||^2 /
||phi(x)||^2``; activation maximization maximizes ``f(x') / s``, the target value divided
by ``s``, the root-mean-square over all units of the target's layer (all logits, or all
channels of the layer reduced over the map like the target) on the starting image -- a
scale that makes the weights independent of the model's activation magnitudes.

Defaults (``alpha = 6``, ``beta = 2``, B and V are the paper's; the weights are ours,
chosen on small CNNs so that activation maximization gives smooth images with a high
activation and inversion reaches a relative feature error below 0.1):

* activation maximization: ``lambda_alpha = 1e-2``, ``lambda_tv = 0.05``, 256 Adam steps,
  ``lr = 4`` decaying exponentially to ``0.4``;
* inversion: ``lambda_alpha = 1e-5``, ``lambda_tv = 5e-4`` (the data term is a relative
  squared error, ~0.01 at a 10 % feature error, so its priors must be weaker), 300 Adam
  steps, ``lr = 16`` decaying to ``1.6``.

Learning rates are in display units per step (out of 255).  Both clip the image to the
model's input range after every step and start from seeded noise around mid-grey
(``init`` overrides the start).  Optional jitter rolls the image by a random offset of up to ``jitter`` pixels
before each forward pass (Mahendran & Vedaldi; Mordvintsev et al.).

All gradients are taken inside one compiled step function (``tf.function``), called once
per step; the user's model is only read.

Two further syntheses follow other papers (their own module docstrings give the details):
:func:`feature_visualization` (:mod:`.feature_vis`, Olah, Mordvintsev & Schubert, Distill
2017: a decorrelated Fourier parameterization, :mod:`.fourier`, and transformation robustness,
:mod:`.transforms`, as in Lucid) and :func:`train_inversion_network` (:mod:`.inversion_net`,
Dosovitskiy & Brox, CVPR 2016: an up-convolutional decoder trained to reconstruct images from
a layer's features).

Layout: :mod:`.priors` (the regularizers and display units), :mod:`.optimize` (the one
parameter parser, the compiled step cached per model in :mod:`cnnvis_eval.cache`, the step
loop), :mod:`.maximization` and :mod:`.inversion`.
"""

from .feature_vis import FeatureVisualizationResult, feature_visualization
from .inversion import NetworkInversionResult, network_inversion
from .inversion_net import InversionNetwork, train_inversion_network
from .maximization import ActivationMaximizationResult, activation_maximization
from .priors import B_RANGE, V_RANGE, regularizers

__all__ = [
    "ActivationMaximizationResult",
    "B_RANGE",
    "FeatureVisualizationResult",
    "InversionNetwork",
    "NetworkInversionResult",
    "V_RANGE",
    "activation_maximization",
    "feature_visualization",
    "network_inversion",
    "regularizers",
    "train_inversion_network",
]
