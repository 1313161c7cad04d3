"""cnnvis_eval: CNN visualization methods for TensorFlow 2 / Keras 3, and their evaluation.

Quick start::

    import cnnvis_eval as cv
    spec = cv.load_model("resnet50", weights=None, input_shape=(128, 128, 3))
    x = spec.preprocess(images_uint8)                      # (N, 128, 128, 3) float32
    exp = cv.explain("guided_backprop", spec, x, target=cv.ClassTarget("top"))
    exp.heatmap                                            # float32 (N, 128, 128)
"""

from __future__ import annotations

from . import runtime as _runtime
from . import quiet as _quiet

_runtime.configure()  # before TensorFlow's first tensor: its CPU allocator reads it (see runtime)
_quiet.setup()  # before anything imports TensorFlow: its start-up chatter stays hidden

from . import errors  # noqa: E402
from .errors import CnnVisError, InputError, TargetError, UnsupportedLayerError  # noqa: E402
from .methods import Explainer, Explanation, get_method, list_methods  # noqa: E402
from .methods.base import register  # noqa: E402
from .methods.synthesis import (  # noqa: E402
    activation_maximization,
    feature_visualization,
    network_inversion,
    train_inversion_network,
)
from .models import ModelSpec, list_models, load_model  # noqa: E402
from .models.spec import as_spec  # noqa: E402
from .targets import ClassTarget, NeuronTarget  # noqa: E402
from .api import explain, explain_targets  # noqa: E402
from .cache import ModelCache, default_cache  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ClassTarget",
    "CnnVisError",
    "Explainer",
    "Explanation",
    "InputError",
    "ModelCache",
    "ModelSpec",
    "NeuronTarget",
    "TargetError",
    "UnsupportedLayerError",
    "activation_maximization",
    "as_spec",
    "default_cache",
    "errors",
    "explain",
    "explain_targets",
    "feature_visualization",
    "get_method",
    "list_methods",
    "list_models",
    "load_model",
    "network_inversion",
    "register",
    "train_inversion_network",
]
