"""A user's saved Keras model file: the typed value that names it, and safe loading.

A run evaluates named models (``"mini_vgg"``, ``"resnet50"``, ...) and model files given
with ``--model-file``.  A file travels through the configuration, the runner and the CLI as
a :class:`ModelFile`, never as a string to parse; :func:`load_model_file` loads it with
Keras safe mode (no code from the file runs).
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .spec import ModelSpec, as_spec


@dataclass(frozen=True)
class ModelFile:
    """A saved Keras model (``.keras``, or legacy ``.h5``) to evaluate.

    Attributes
    ----------
    path : str
        The file's path as the user gave it.

    Notes
    -----
    ``str(ModelFile(p))`` is ``"file:<p>"``: how a file whose model cannot be loaded is
    named in a run's ``cells.parquet`` and messages.  A loaded file's model is named by the
    file's stem (``ModelSpec.name``), as its heatmap folder is.
    """

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", str(self.path))

    def __str__(self) -> str:
        return f"file:{self.path}"


def import_objects(names) -> dict:
    """``{"Name": object}`` for ``"module:Name"`` strings (the classes a model file needs,
    e.g. ``"mtcnn.network.onet:ONet"``), for :func:`load_model_file`'s ``custom_objects``.

    Importing runs the named module: the user names it, unlike code stored in a model file
    (which safe mode refuses).  A bad name is one InputError line.
    """
    import importlib

    out = {}
    for name in names or ():
        module, sep, attr = str(name).partition(":")
        if not (sep and module and attr):
            raise InputError(f"custom object {name!r}: give it as module:Name, e.g. mtcnn.network.onet:ONet")
        try:
            out[attr.rpartition(".")[2]] = _getattr_path(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise InputError(f"custom object {name!r} cannot be imported: {err}") from None
    return out


def _getattr_path(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


_UNKNOWN_CLASS = re.compile(r"Could not locate class '([^']+)'")
_MODULE = re.compile(r"'module': '([^']+)'")


def load_model_file(path: str | Path, input_shape: tuple | None = None,
                    output: int | str | None = None, custom_objects: dict | None = None) -> ModelSpec:
    """A user's saved Keras model, loaded with Keras safe mode (no arbitrary code).

    Parameters
    ----------
    path : str or Path
        A ``.keras`` archive (or a legacy ``.h5`` / ``.hdf5`` file).
    input_shape : tuple (H, W, C), optional
        For a subclassed model (its class registered with
        ``keras.saving.register_keras_serializable``): the shape to trace it with, when the
        file does not record one (the CLI passes its images' shape).
    output : int or str, optional
        For a multi-output model: the output to explain (index or producing layer's name).
    custom_objects : dict, optional
        ``{"Name": class}`` of the file's own classes (a subclassed model, custom layers) that
        are not registered with ``keras.saving.register_keras_serializable``; see
        :func:`import_objects`.

    Returns
    -------
    ModelSpec
        Named by the file's stem; no input range (the model's own preprocessing is used).

    Raises
    ------
    InputError
        The file is missing, unreadable, or not safe to load (e.g. it has Lambda layers);
        a multi-output model without ``output``; a subclassed model of unknown input shape;
        a model with several inputs (not supported).
    """
    import keras

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {str(path)!r} does not exist (or is not a file)")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as err:
        raise InputError(f"model file {str(path)!r} cannot be read: {err.strerror or err}") from err
    suffix = path.suffix.lower()
    if suffix == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: "
                         "it is not a .keras zip archive (save models with model.save('name.keras'))")
    if suffix in (".h5", ".hdf5") and head != b"\x89HDF\r\n\x1a\n":
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: it is not an HDF5 file")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True, custom_objects=custom_objects)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower() or "lambda" in str(err).lower():
            raise InputError(
                f"model file {str(path)!r} is not safe to load (it would run code): {err} "
                "cnnvis-eval loads model files in Keras safe mode only; save the model without "
                "Lambda layers (use registered layer classes) to evaluate it"
            ) from err
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: {err}") from err
    except Exception as err:
        unknown = _UNKNOWN_CLASS.search(str(err))
        if unknown:
            module = _MODULE.search(str(err))
            where = f"{module.group(1)}:{unknown.group(1)}" if module else f"module:{unknown.group(1)}"
            raise InputError(f"model file {str(path)!r} needs the class {unknown.group(1)!r}, which is not "
                             "registered (keras.saving.register_keras_serializable); name it as a custom "
                             f"object, e.g. {where}") from err
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: "
                         f"{type(err).__name__}: {err}") from err
    try:
        n_inputs = len(model.inputs)
    except (AttributeError, TypeError, ValueError):  # a subclassed model: traced with one input
        n_inputs = 1
    if n_inputs != 1:
        raise InputError(f"model file {str(path)!r} has {n_inputs} inputs; models with several inputs "
                         "are not supported")
    try:
        spec = as_spec(model, input_shape=input_shape, output=output)
    except InputError as err:  # several outputs, unknown input shape: name the file too
        raise InputError(f"model file {str(path)!r}: {err}") from err
    spec.name = path.stem
    if not spec.input_range:
        spec.input_range = None
    return spec


__all__ = ["ModelFile", "import_objects", "load_model_file"]
