"""ModelSpec: a model together with what the methods and the suites need to know about it."""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable

import keras
import numpy as np

from ..errors import InputError
from ..graph import FlatGraph
from ..graph.trace import check_input_shape
from ..graph.queries import last_conv_layer, pick_intermediate_layers


def identity(x):
    """The default ``preprocess``/``deprocess``: a float32 copy of ``x``."""
    return np.array(x, dtype=np.float32, copy=True)


@dataclass(eq=False)
class ModelSpec:
    """A Keras model and its metadata.

    Attributes
    ----------
    name : str
        ``"resnet50"``, ``"mini_vgg"``, or the user model's name.
    model : keras.Model
        The model. The zoo builds it with a linear head (pre-softmax logits); user models
        ending in softmax are explained on their logits through :attr:`graph`.
    preprocess : callable
        ``images (N, H, W, 3) uint8 or float in [0, 255] -> float32 model input``; never
        modifies its argument.
    deprocess : callable
        Inverse of ``preprocess`` (model input -> float image in [0, 255]), for display.
    input_shape : tuple (H, W, C)
    last_conv_layer : str or None
        The last convolutional feature map (Grad-CAM's default layer).
    intermediate_layers : tuple of str
        Two well-spread high intermediate layers (the study's intermediate neurons).
    input_range : (low, high)
        Bounds of preprocessed inputs, each an array of shape (C,) (or None when unknown);
        used by bounded relevance rules and by randomization baselines.
    family : str
        Architecture family (``"vgg"``, ``"resnet"``, ``"inception"``, ``"xception"``,
        ``"mobilenet"``, or ``"custom"``).
    weights : str or None
        ``None`` (random), ``"imagenet"``, or the weights file path.
    class_names : tuple of str or None
    output : int, str or None
        Which output of a multi-output model is explained (index, or the name of the layer
        producing it); None for single-output models.

    A subclassed model is explained through a functional trace of its ``call`` with
    ``input_shape`` (see :mod:`cnnvis_eval.graph.trace`).
    """

    name: str
    model: keras.Model
    preprocess: Callable[[np.ndarray], np.ndarray] = identity
    deprocess: Callable[[np.ndarray], np.ndarray] = identity
    input_shape: tuple = ()
    last_conv_layer: str | None = None
    intermediate_layers: tuple = ()
    input_range: tuple | None = None
    family: str = "custom"
    weights: str | None = None
    class_names: tuple | None = None
    info: dict = field(default_factory=dict)
    output: int | str | None = None

    @cached_property
    def graph(self) -> FlatGraph:
        """The flattened, softmax-free graph the methods run (built once, cached)."""
        return FlatGraph(self.model, strip_softmax=True, input_shape=self.input_shape or None,
                         output=self.output)

    @property
    def num_classes(self) -> int:
        return int(self.graph.output_shape[-1])

    def __repr__(self) -> str:
        return (
            f"ModelSpec(name={self.name!r}, input_shape={self.input_shape}, "
            f"weights={self.weights!r}, last_conv_layer={self.last_conv_layer!r})"
        )


#: plain model -> {(input_shape, output): its spec}
_SPECS: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()


def as_spec(model: "ModelSpec | keras.Model", input_shape: tuple | None = None,
            output: int | str | None = None) -> ModelSpec:
    """The ModelSpec of ``model``; a plain Keras model gets one derived from its layers.

    Parameters
    ----------
    model : ModelSpec or keras.Model
    input_shape : tuple (H, W, C), optional
        For subclassed models: the input shape to trace ``call`` with (default: the shape
        the model was built or called with).  Ignored for Sequential/functional models.
    output : int or str, optional
        For multi-output models (required there): the output to explain, by index or by
        the name of the layer producing it.  A softmax output is explained on its logits.

    Specs of plain models are cached per (model object, input_shape, output), so repeated
    calls share the flattened graph (and explainers built on it).  A ModelSpec is returned
    as is when ``output`` is None or its own; otherwise a copy choosing ``output``.

    Raises
    ------
    InputError
        Not a model; a multi-output model without ``output`` (the message lists the
        outputs); a subclassed model whose input shape is unknown.
    """
    if isinstance(model, ModelSpec):
        if output is None or output == model.output:
            return model
        variants = model.__dict__.setdefault("_output_variants", {})
        if output not in variants:
            variant = dataclasses.replace(model, output=output)
            variant.graph  # noqa: B018 - checks ``output`` now, not at the first method call
            variants[output] = variant
        return variants[output]
    if not isinstance(model, keras.Model):
        raise InputError(
            f"expected a ModelSpec or a keras.Model, got {type(model).__name__}; "
            "load one with cnnvis_eval.load_model(...)"
        )
    shape = None if input_shape is None else check_input_shape(input_shape, model.name)
    key = (shape, output)
    try:
        return _SPECS[model][key]
    except (KeyError, TypeError):
        pass
    spec = ModelSpec(name=model.name, model=model, input_shape=shape or (), output=output)
    _derive(spec)
    try:
        _SPECS.setdefault(model, {})[key] = spec
    except TypeError:  # pragma: no cover - model not weak-referenceable
        pass
    return spec


def _derive(spec: ModelSpec) -> None:
    """Fill a plain model's spec from its graph (input shape, CAM and intermediate layers)."""
    graph = spec.graph
    spec.input_shape = tuple(graph.input_shape[1:])
    if not graph.opaque:
        spec.last_conv_layer = last_conv_layer(graph)
        spec.intermediate_layers = pick_intermediate_layers(graph)


def fingerprint(model: keras.Model) -> str:
    """A sha256 (hex) of ``model``'s architecture and weights: what the model computes.

    Hashes the model's configuration (``get_config()`` as canonical JSON; for a model without
    one, its class and layer classes), then every weight variable in order: its path, shape,
    dtype and bytes, one array at a time (streamed, never all weights at once).  Layer and
    model names are part of the configuration; a model re-saved unchanged keeps its
    fingerprint, one whose weights or layers changed gets another.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    str
        64 hex characters.
    """
    import hashlib
    import json

    def plain(obj):  # a value get_config leaves unserialized: its type, never an address
        return type(obj).__qualname__

    try:
        arch = json.dumps(model.get_config(), sort_keys=True, default=plain)
    except Exception:  # subclassed models without get_config
        arch = json.dumps([type(model).__qualname__] + [type(l).__qualname__ for l in model.layers])
    h = hashlib.sha256(arch.encode())
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"|{w.path}|{a.shape}|{a.dtype.str}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()
