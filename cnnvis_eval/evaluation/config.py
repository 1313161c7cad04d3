"""What one comparison run covers: :class:`RunConfig`, the neurons, the grid's method parameters.

The grid explains, with every method, every image for three neurons of every model
(:data:`NEURONS`): the top class logit (``"logit"``) and the most activated channel (mean
over the map) of each of the model's two intermediate layers (``"mid"`` and ``"high"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import operator
from dataclasses import dataclass, field
from pathlib import Path

from ..data.photos import photo_info
from ..errors import InputError
from ..methods.base import get_method, list_methods
from ..models import ARCHS, BIG_MODELS, list_models
from ..models.files import ModelFile
from ..models.spec import ModelSpec

NEURONS = ("logit", "mid", "high")

GRID_PARAMS: dict[str, dict] = {
    # fast settings for the grid (the methods' own defaults are the papers'); occlusion's
    # window is set per model from its input size (see :func:`method_params`)
    "lime": {"num_samples": 200},
    "kernel_shap": {"num_samples": 200},
    "rise": {"n_masks": 250},
    "smoothgrad": {"n": 8},
    "vargrad": {"n": 8},
    "integrated_gradients": {"steps": 16},
    "guided_ig": {"steps": 16},
    "blur_ig": {"steps": 16},
    "xrai": {"steps": 8},
    "square_grad": {"n": 8},
    "gradient_shap": {"n": 8},
    # Sobol: 8 x (64 + 2) = 528 model inputs per image (Xplique's 32: 2112); HSIC: 250 (500)
    "sobol": {"nb_design": 8},
    "hsic": {"nb_design": 250},
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


# Input sizes the grid accepts for the five big architectures (``RunConfig.input_size``).
# Minimum: the Keras applications' own (``ARCHS[name].min_size``: 32, InceptionV3 75,
# Xception 71).  Maximum: one forward+backward pass of a batch of 16 images (the methods'
# default batch) must keep its activations within about 8 GiB, i.e. 512 MiB per image.
# Activation memory grows with the square of the side; measured per image at 224 px
# (suites/benchmarks/memory_probe.py, CPU): mobilenet_v2 25 MB, inception_v3 25 MB,
# resnet50 44 MB, xception 52 MB, vgg16 148 MB (517 MB for mobilenet_v2 at 1024 px, 449 MB
# for resnet50 at 736 px).  Side = 224 * sqrt(512 / MB), rounded down to a multiple of 32
# (the networks downsample by 32).  VGG16 is held below its 416 px because its Flatten head's
# weights also grow with the square of the side (1.2 GB more at 384 px than at 224 px).
# Without a limit, ``--input-size 10000`` on MobileNetV2 grew to 14 GB and crashed.
MAX_INPUT_SIZE: dict[str, int] = {
    "vgg16": 384, "resnet50": 736, "inception_v3": 992, "xception": 672, "mobilenet_v2": 992,
}
# Synthetic benchmark images per run: one model's images are held in memory together (as
# float32: 1000 at 299 px are 1.1 GB), and every cell stores a heatmap per image.
MAX_SYNTHETIC = 1000
MAX_SEED = 2**31 - 1


def _whole(value, what: str) -> int:
    """``value`` as an int, or an InputError naming ``what`` (bools and floats are refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InputError(f"{what} must be a whole number, got {value!r}") from None


def _unique(values, what: str):
    """InputError naming the first value of ``values`` given twice."""
    seen = set()
    for v in values:
        if v in seen:
            raise InputError(f"{what} {v!r} is given twice")
        seen.add(v)


def _check_models(models: tuple) -> None:
    known = list_models()
    for m in models:
        if m not in known:
            raise InputError(f"unknown model {m!r}; available: {', '.join(known)}")
    _unique(models, "model")


def _check_big_model_options(config: "RunConfig") -> None:
    """``weights`` and ``input_size`` set the five big architectures only: an error when the
    run has none of them, and input sizes outside ``[ARCHS[m].min_size, MAX_INPUT_SIZE[m]]``."""
    big = [m for m in config.models if m in BIG_MODELS]
    others = [m for m in config.models if m not in BIG_MODELS] + [f"file:{p}" for p in config.model_files]
    for option, value, own in (("input_size", config.input_size, "a fixed input size"),
                               ("weights", config.weights, "their own trained weights")):
        if value is not None and not big:
            raise InputError(
                f"{option} {value!r} does not apply to {', '.join(others)}: it sets the {option} of the "
                f"big models ({', '.join(BIG_MODELS)}); mini models and model files have {own}"
            )
    if config.input_size is not None:
        size = _whole(config.input_size, "input_size")
        for m in big:
            low, high = ARCHS[m].min_size, MAX_INPUT_SIZE[m]
            if not low <= size <= high:
                raise InputError(
                    f"input_size {size} is out of range for {m}: {low} to {high} pixels "
                    f"(the smallest input Keras builds it for, and a batch of 16 images within ~8 GiB)"
                )
    if config.weights == "imagenet" and config.input_size is not None:
        for m in big:
            arch = ARCHS[m]
            if arch.fixed_size and config.input_size != arch.default_size:
                raise InputError(
                    f"{m} has a Flatten head: ImageNet weights need input_size {arch.default_size}, "
                    f"got {config.input_size}"
                )


MAX_FILE_SIDE = 1024  # the largest side of a model file's input shape (--input-shape)


def _check_file_options(config: "RunConfig") -> None:
    """``file_input_shape`` and ``file_output`` set the model files only."""
    for option, value in (("file_input_shape", config.file_input_shape), ("file_output", config.file_output)):
        if value is not None and not config.model_files:
            raise InputError(f"{option} {value!r} does not apply: the run has no model file "
                             "(it sets how model files are loaded)")
    if config.file_input_shape is not None:
        shape = tuple(config.file_input_shape)
        if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
            raise InputError(f"file_input_shape must be three whole numbers (H, W, C), got {shape!r}")
        h, w, c = shape
        if not (1 <= h <= MAX_FILE_SIDE and 1 <= w <= MAX_FILE_SIDE and c in (1, 3)):
            raise InputError(f"file_input_shape {shape!r} is out of range: H and W from 1 to {MAX_FILE_SIDE}, "
                             "C 1 or 3 (the run's images are RGB or grayscale)")
        config.file_input_shape = shape
    if isinstance(config.file_output, str) and config.file_output.isdigit():
        config.file_output = int(config.file_output)


@dataclass
class RunConfig:
    """What one comparison run covers.

    Attributes
    ----------
    models : model names (:func:`cnnvis_eval.list_models`)
    model_files : paths of saved Keras models to evaluate too (loaded in safe mode)
    methods : method names (default: all registered)
    photos : bundled photo names (:func:`cnnvis_eval.data.list_photos`)
    synthetic : number of single-shape synthetic benchmark images (with object masks), 0 to
        :data:`MAX_SYNTHETIC`
    scenes : number of benchmark v2 scenes (2-3 objects of different classes, a mask per
        object), 0 to :data:`MAX_SYNTHETIC`; scored on class contrast for models whose
        classes are benchmark v2's (the clean mini models)
    birds : number of benchmark v2 part-based birds (a mask per part), 0 to
        :data:`MAX_SYNTHETIC`; scored on part-importance correctness
    weights : weights for the five big architectures (None, "imagenet" or a path); an error
        when the run has none of them (mini models and model files have their own)
    input_size : input side for the big architectures (None: native), within
        ``[ARCHS[name].min_size, MAX_INPUT_SIZE[name]]`` for each; an error when the run
        has none of them (mini models are 64x64, model files keep their own)
    seed : seed of the synthetic images, stochastic methods and randomization (0 to
        :data:`MAX_SEED`)
    randomization_images : images per (model, method) in the randomization stage
    randomization_steps : coarse cascading steps (top group, ..., all)
    faithfulness_steps : points of the deletion and insertion curves (pixels revealed or
        removed per step = H * W / steps)
    stages : which scoring stages to run
    method_params : per-method parameters (default :data:`GRID_PARAMS`)
    file_input_shape : (H, W, C) to trace the model files' subclassed models with when a
        file does not record its input shape (an error when the run has no model file)
    file_output : the output the model files are explained on when they have several (index
        or the producing layer's name; an error when the run has no model file)
    """

    models: tuple = ("mini_vgg", "mini_resnet", "mini_inception", "mini_xception", "mini_mobilenet")
    model_files: tuple = ()
    methods: tuple = ()
    photos: tuple = ("chelsea", "coffee", "rocket", "grace_hopper")
    synthetic: int = 2
    scenes: int = 3
    birds: int = 3
    weights: str | None = None
    input_size: int | None = None
    seed: int = 0
    randomization_images: int = 2
    randomization_steps: int = 2
    faithfulness_steps: int = 32
    stages: tuple = ("localization", "contrast", "parts", "faithfulness", "complexity", "agreement",
                     "randomization", "cost")
    method_params: dict = field(default_factory=lambda: {k: dict(v) for k, v in GRID_PARAMS.items()})
    file_input_shape: tuple | None = None
    file_output: int | str | None = None

    def __post_init__(self):
        self.models = tuple(self.models)
        self.model_files = tuple(str(p) for p in self.model_files)
        self.methods = tuple(self.methods) or tuple(list_methods())
        self.photos = tuple(self.photos)
        # Everything here is checked without loading a model or reading a file: an InputError
        # naming the bad value, before a run starts.
        for m in self.methods:
            get_method(m)  # InputError naming the unknown method
        _unique(self.methods, "method")
        if not self.models and not self.model_files:
            raise InputError("a run needs at least one model (models or model_files)")
        _check_models(self.models)
        _unique([str(Path(p).resolve()) for p in self.model_files], "model file")
        for name in self.photos:
            photo_info(name)  # InputError naming the unknown photo, listing the bundled ones
        _unique(self.photos, "photo")
        for what in ("synthetic", "scenes", "birds"):
            value = _whole(getattr(self, what), what)
            if not 0 <= value <= MAX_SYNTHETIC:
                raise InputError(f"{what} must be >= 0 and at most {MAX_SYNTHETIC}, got {value}")
            setattr(self, what, value)
        if not self.photos and not self.synthetic and not self.scenes and not self.birds:
            raise InputError("a run needs images: photos and/or synthetic, scenes or birds > 0")
        self.seed = _whole(self.seed, "seed")
        if not 0 <= self.seed <= MAX_SEED:
            raise InputError(f"seed must be between 0 and {MAX_SEED}, got {self.seed}")
        _check_big_model_options(self)
        _check_file_options(self)

    @property
    def n_images(self) -> int:
        """Images every model of the run sees: photos, single shapes, scenes and birds."""
        return len(self.photos) + self.synthetic + self.scenes + self.birds

    def sources(self) -> list:
        """The run's models in order: the names, then a :class:`ModelFile` per model file."""
        return list(self.models) + [ModelFile(p) for p in self.model_files]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def run_id(self) -> str:
        """A stable id from the configuration, so the same command resumes the same run."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return "run-" + hashlib.sha1(blob).hexdigest()[:10]


__all__ = ["GRID_PARAMS", "MAX_FILE_SIDE", "MAX_INPUT_SIZE", "MAX_SEED", "MAX_SYNTHETIC", "NEURONS", "OCCLUSION_WINDOW_FRACTION",
           "RunConfig", "method_params"]
