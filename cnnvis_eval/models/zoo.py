"""The five ImageNet architectures of the study, as ModelSpecs.

``load_model("resnet50", weights=None, input_shape=(128, 128, 3))`` builds the Keras
application with a linear head (pre-softmax logits).  ``weights`` is ``None`` (random,
seeded by Keras' global seed), ``"imagenet"`` (the Keras weights file, read from the Keras
cache; downloaded there only if ``download=True`` and the network allows), or a path to a
weights file.  When ImageNet weights cannot be had the error names the file and the folder
to place it in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from ..errors import InputError, WeightsUnavailableError
from .spec import ModelSpec

_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def _check_images(images, what="images") -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"{what} must have shape (N, H, W, 3) or (H, W, 3), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InputError(f"{what} contain NaN or inf")
    return np.array(x, dtype=np.float32, copy=True)


def preprocess_caffe(images) -> np.ndarray:
    """RGB [0, 255] -> BGR minus the ImageNet mean (VGG16, ResNet50). Returns a new array."""
    x = _check_images(images)[..., ::-1]
    return np.ascontiguousarray(x - _CAFFE_MEAN_BGR)


def deprocess_caffe(x) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.ascontiguousarray((x + _CAFFE_MEAN_BGR)[..., ::-1])


def preprocess_tf(images) -> np.ndarray:
    """RGB [0, 255] -> [-1, 1] (InceptionV3, Xception, MobileNetV2). Returns a new array."""
    return _check_images(images) / 127.5 - 1.0


def deprocess_tf(x) -> np.ndarray:
    return (np.asarray(x, np.float32) + 1.0) * 127.5


_MODES = {
    "caffe": (
        preprocess_caffe,
        deprocess_caffe,
        (-_CAFFE_MEAN_BGR, 255.0 - _CAFFE_MEAN_BGR),
    ),
    "tf": (preprocess_tf, deprocess_tf, (-np.ones(3, np.float32), np.ones(3, np.float32))),
}


@dataclass(frozen=True)
class Arch:
    """Static facts about one Keras application."""

    name: str
    constructor: Callable
    family: str
    mode: str
    default_size: int
    min_size: int
    last_conv_layer: str
    intermediate_layers: tuple[str, str]
    weights_file: str
    fixed_size: bool = False  # Flatten head: ImageNet weights only at the default size


ARCHS: dict[str, Arch] = {
    a.name: a
    for a in [
        Arch("vgg16", keras.applications.VGG16, "vgg", "caffe", 224, 32, "block5_conv3",
             ("block4_conv3", "block5_conv2"),
             "vgg16_weights_tf_dim_ordering_tf_kernels.h5", fixed_size=True),
        Arch("inception_v3", keras.applications.InceptionV3, "inception", "tf", 299, 75, "mixed10",
             ("mixed5", "mixed8"), "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"),
        Arch("xception", keras.applications.Xception, "xception", "tf", 299, 71,
             "block14_sepconv2_act", ("block8_sepconv1_act", "block13_sepconv1_act"),
             "xception_weights_tf_dim_ordering_tf_kernels.h5"),
        Arch("resnet50", keras.applications.ResNet50, "resnet", "caffe", 224, 32, "conv5_block3_out",
             ("conv4_block3_out", "conv5_block2_out"),
             "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
        Arch("mobilenet_v2", keras.applications.MobileNetV2, "mobilenet", "tf", 224, 32, "out_relu",
             ("block_10_expand_relu", "block_15_expand_relu"),
             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"),
    ]
}


def keras_cache_dir() -> Path:
    """Folder where Keras keeps downloaded weights (``$KERAS_HOME/models`` or ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def _imagenet_file(arch: Arch, download: bool) -> Path:
    path = keras_cache_dir() / arch.weights_file
    if path.is_file():
        return path
    hint = (
        f"ImageNet weights for {arch.name} are not available: place the Keras file "
        f"{arch.weights_file!r} in {str(keras_cache_dir())!r} (copy it from a machine with "
        f"network access, where keras.applications.{arch.constructor.__name__}(weights='imagenet') "
        "downloads it), or pass weights='/path/to/file.h5'."
    )
    if not download:
        raise WeightsUnavailableError(hint)
    try:  # builds the default-size model once, which downloads the file into the cache
        arch.constructor(weights="imagenet")
    except Exception as err:
        raise WeightsUnavailableError(f"{hint} (download failed: {err})") from err
    if not path.is_file():  # pragma: no cover - Keras changed its file names
        raise WeightsUnavailableError(hint)
    return path


def load_application(
    name: str,
    weights: str | os.PathLike | None = None,
    input_shape: tuple | None = None,
    download: bool = True,
) -> ModelSpec:
    """Build one of the five architectures as a ModelSpec (see module docstring)."""
    arch = ARCHS[name]
    if input_shape is None:
        input_shape = (arch.default_size, arch.default_size, 3)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise InputError(f"input_shape for {name} must be (H, W, 3), got {input_shape}")
    if min(input_shape[:2]) < arch.min_size:
        raise InputError(
            f"{name} needs inputs of at least {arch.min_size}x{arch.min_size} pixels, got {input_shape[:2]}"
        )
    weights_path = None
    if weights is not None:
        if str(weights) == "imagenet":
            if arch.fixed_size and input_shape[:2] != (arch.default_size, arch.default_size):
                raise InputError(
                    f"{name} has a Flatten head: ImageNet weights need input_shape "
                    f"({arch.default_size}, {arch.default_size}, 3), got {input_shape}"
                )
            weights_path = _imagenet_file(arch, download)
        else:
            weights_path = Path(weights)
            if not weights_path.is_file():
                raise WeightsUnavailableError(f"weights file {str(weights_path)!r} for {name} does not exist")
    model = arch.constructor(
        weights=None, input_shape=input_shape, classes=1000, classifier_activation=None
    )
    if weights_path is not None:
        try:
            model.load_weights(str(weights_path))
        except Exception as err:
            raise WeightsUnavailableError(
                f"weights file {str(weights_path)!r} does not fit {name} at {input_shape}: {err}"
            ) from err
    pre, de, rng = _MODES[arch.mode]
    return ModelSpec(
        name=name,
        model=model,
        preprocess=pre,
        deprocess=de,
        input_shape=input_shape,
        last_conv_layer=arch.last_conv_layer,
        intermediate_layers=arch.intermediate_layers,
        input_range=(rng[0].copy(), rng[1].copy()),
        family=arch.family,
        weights=None if weights is None else str(weights),
    )
