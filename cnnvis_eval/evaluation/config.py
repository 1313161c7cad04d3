"""What one comparison run covers: :class:`RunConfig`, the neurons, the grid's method parameters.

The grid explains, with every method, every image for three neurons of every model
(:data:`NEURONS`): the top class logit (``"logit"``) and the most activated channel (mean
over the map) of each of the model's two intermediate layers (``"mid"`` and ``"high"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..errors import InputError
from ..methods.base import get_method, list_methods
from ..models.files import ModelFile
from ..models.spec import ModelSpec

NEURONS = ("logit", "mid", "high")

GRID_PARAMS: dict[str, dict] = {
    # fast settings for the grid (the methods' own defaults are the papers'); occlusion's
    # window is set per model from its input size (see :func:`method_params`)
    "lime": {"num_samples": 200},
    "rise": {"n_masks": 250},
    "smoothgrad": {"n": 8},
    "vargrad": {"n": 8},
    "integrated_gradients": {"steps": 16},
}
OCCLUSION_WINDOW_FRACTION = 6  # occlusion window = input side / 6 (11 px at 64, 37 px at 224), stride half


def method_params(method: str, spec: ModelSpec, params: dict | None = None) -> dict:
    """The parameters the grid passes to ``method`` on ``spec``.

    Parameters
    ----------
    method : str
        A registered method name.
    spec : ModelSpec
        The model (its input size sets occlusion's window).
    params : dict, optional
        The run's parameters of ``method`` (default: :data:`GRID_PARAMS`).

    Returns
    -------
    dict
        ``params``, plus an occlusion window scaled to the input size when none is given.
    """
    params = dict(GRID_PARAMS.get(method, {}) if params is None else params)
    if method == "occlusion" and "window" not in params:
        side = int(min(spec.input_shape[:2]))
        params["window"] = max(2, round(side / OCCLUSION_WINDOW_FRACTION))
        params.setdefault("stride", max(1, params["window"] // 2))
    return params


@dataclass
class RunConfig:
    """What one comparison run covers.

    Attributes
    ----------
    models : model names (:func:`cnnvis_eval.list_models`)
    model_files : paths of saved Keras models to evaluate too (loaded in safe mode)
    methods : method names (default: all registered)
    photos : bundled photo names (:func:`cnnvis_eval.data.list_photos`)
    synthetic : number of synthetic benchmark images (with object masks)
    weights : weights for the five big architectures (None, "imagenet" or a path)
    input_size : input size for the big architectures (None: native)
    seed : seed of the synthetic images, stochastic methods and randomization
    randomization_images : images per (model, method) in the randomization stage
    randomization_steps : coarse cascading steps (top group, ..., all)
    faithfulness_steps : points of the deletion and insertion curves (pixels revealed or
        removed per step = H * W / steps)
    stages : which scoring stages to run
    method_params : per-method parameters (default :data:`GRID_PARAMS`)
    """

    models: tuple = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
    model_files: tuple = ()
    methods: tuple = ()
    photos: tuple = ("chelsea", "coffee", "rocket", "grace_hopper")
    synthetic: int = 8
    weights: str | None = None
    input_size: int | None = None
    seed: int = 0
    randomization_images: int = 2
    randomization_steps: int = 2
    faithfulness_steps: int = 32
    stages: tuple = ("localization", "faithfulness", "complexity", "agreement", "randomization", "cost")
    method_params: dict = field(default_factory=lambda: {k: dict(v) for k, v in GRID_PARAMS.items()})

    def __post_init__(self):
        self.models = tuple(self.models)
        self.model_files = tuple(str(p) for p in self.model_files)
        self.methods = tuple(self.methods) or tuple(list_methods())
        self.photos = tuple(self.photos)
        for m in self.methods:
            get_method(m)  # InputError naming the unknown method
        if not self.models and not self.model_files:
            raise InputError("a run needs at least one model (models or model_files)")
        if self.synthetic < 0:
            raise InputError(f"synthetic must be >= 0, got {self.synthetic}")
        if not self.photos and not self.synthetic:
            raise InputError("a run needs images: photos and/or synthetic > 0")

    def sources(self) -> list:
        """The run's models in order: the names, then a :class:`ModelFile` per model file."""
        return list(self.models) + [ModelFile(p) for p in self.model_files]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """A stable id from the configuration, so the same command resumes the same run."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return "run-" + hashlib.sha1(blob).hexdigest()[:10]


__all__ = ["GRID_PARAMS", "NEURONS", "OCCLUSION_WINDOW_FRACTION", "RunConfig", "method_params"]
