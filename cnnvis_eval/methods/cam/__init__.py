"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, Guided Grad-CAM.

All of them weight the feature maps ``A`` (N, h, w, K) of one convolutional layer, sum
over channels, (optionally) rectify, and upsample the (N, h, w) map bilinearly to the
input size (``tf.image.resize``, half-pixel centres):

==================  =======================================================================
``cam``             ``sum_k W[k, c] A_k`` with ``W`` the linear head's weights (Zhou et al.
                    2016); the head must be global average pooling + a linear layer, or a
                    convolution + global average pooling.  No ReLU by default (signed).
``grad_cam``        ``ReLU(sum_k mean_ij(G_k) A_k)``, ``G = d score / d A`` (Selvaraju et al.)
``grad_cam_plus_plus``  ``ReLU(sum_k (sum_ij a_kij ReLU(G_kij)) A_k)`` with
                    ``a = G^2 / (2 G^2 + sum_ab A_kab G^3)`` (Chattopadhyay et al. 2018, the
                    exponential-score closed form; ``a = 0`` where the denominator is 0)
``layer_cam``       ``ReLU(sum_k ReLU(G_k) * A_k)`` (Jiang et al. 2021)
``score_cam``       ``ReLU(sum_k softmax_k(S_k) A_k)`` with ``S_k`` the target score of the
                    input masked by the min-max normalised upsampled map ``A_k`` (Wang et al.
                    2020, Algorithm 1); gradient-free, one forward pass per channel
``guided_grad_cam`` guided backprop times the upsampled Grad-CAM map (composition of the
                    ``guided_backprop`` and ``grad_cam`` explainers)
==================  =======================================================================

**Layer.**  By default the last convolutional feature map before the target: for a
:class:`~cnnvis_eval.targets.ClassTarget` the model's last conv layer
(``spec.last_conv_layer``), for a :class:`~cnnvis_eval.targets.NeuronTarget` the target
layer itself when it is a convolutional feature map, else the last one before it
(:func:`~cnnvis_eval.graph.last_conv_layer`); nested models are flattened first, so the
base model's last conv layer of ``Sequential([base, GlobalAveragePooling2D(), Dense(k)])``
is found.  ``layer="name"`` overrides; ``exp.meta["layer"]`` records the layer used and
``exp.meta["low_res"]`` the (N, h, w) map before upsampling.

**Cost.**  The gradient methods run one compiled pass that records ``A`` and takes the
gradient of the target with respect to ``A`` only: the tape watches ``A`` and nothing
else, so the backward pass stops at the layer (it never reaches the input).  That pass is
shared by all CAM explainers of the same model and target layer (CAM, Grad-CAM,
Grad-CAM++, Layer-CAM, Score-CAM and the Grad-CAM inside Guided Grad-CAM trace it once;
CAM and Score-CAM only read its feature maps).
"""

from .base import CamBase, feature_layer, upsample
from .gradcam import GradCam, GradCamPlusPlus, LayerCam
from .cam import Cam
from .score_cam import ScoreCam
from .guided import GuidedGradCam

__all__ = [
    "Cam",
    "CamBase",
    "GradCam",
    "GradCamPlusPlus",
    "GuidedGradCam",
    "LayerCam",
    "ScoreCam",
    "feature_layer",
    "upsample",
]
