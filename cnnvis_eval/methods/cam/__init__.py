"""Class activation maps: CAM, Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, Guided Grad-CAM,
HiResCAM, XGrad-CAM, EigenCAM, Ablation-CAM, and FullGrad.

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
``hires_cam``       ``ReLU(sum_k G_k * A_k)`` (Draelos & Carin 2020); equals Grad-CAM when
                    the layer is followed by global average pooling
``xgrad_cam``       ``ReLU(sum_k w_k A_k)``, ``w_k = sum_ij A_kij G_kij / sum_ij A_kij`` (Fu
                    et al. 2020)
``eigen_cam``       ``ReLU((A - mean_ij A) v_1)``, ``v_1`` the first principal direction of
                    the (h w, K) feature matrix (Muhammad & Yeasin 2020); class-independent
``ablation_cam``    ``ReLU(sum_k w_k A_k)``, ``w_k = (y - y_k) / y`` with ``y_k`` the score
                    with channel ``k`` zeroed (Desai & Ramaswamy 2020); one tail pass per channel
``full_grad``       ``|dy/dx * x|`` plus the bias-gradients ``|dy/dz_l * b_l|`` of every conv
                    and BatchNorm layer, normalised and upsampled (Srinivas & Fleuret 2019);
                    not a map of one layer (no ``layer=``)
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
Grad-CAM++, Layer-CAM, HiResCAM, XGrad-CAM, EigenCAM, Score-CAM and the Grad-CAM inside
Guided Grad-CAM trace it once; CAM, EigenCAM and Score-CAM only read its feature maps).
Ablation-CAM runs one forward pass, then only the layers after the feature layer on the
ablated copies.
"""

from .ablation_cam import AblationCam
from .base import CamBase, feature_layer, upsample
from .eigen_cam import EigenCam
from .full_grad import FullGrad
from .gradcam import GradCam, GradCamPlusPlus, HiResCam, LayerCam, XGradCam
from .cam import Cam
from .score_cam import ScoreCam
from .guided import GuidedGradCam

__all__ = [
    "AblationCam",
    "Cam",
    "CamBase",
    "EigenCam",
    "FullGrad",
    "GradCam",
    "GradCamPlusPlus",
    "GuidedGradCam",
    "HiResCam",
    "LayerCam",
    "ScoreCam",
    "XGradCam",
    "feature_layer",
    "upsample",
]
