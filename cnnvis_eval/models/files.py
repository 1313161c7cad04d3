"""A user's saved Keras model file: the typed value that names it, and safe loading.

A run evaluates named models (``"mini_vgg"``, ``"resnet50"``, ...) and model files given
with ``--model-file``.  A file travels through the configuration, the runner and the CLI as
a :class:`ModelFile`, never as a string to parse; :func:`load_model_file` loads it with
Keras safe mode (no code from the file runs).
"""

from __future__ import annotations

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


def load_model_file(path: str | Path, output: str | None = None) -> ModelSpec:
    """A user's saved Keras model, loaded with Keras safe mode (no arbitrary code).

    Parameters
    ----------
    path : str or Path
        A ``.keras`` archive (or a legacy ``.h5`` / ``.hdf5`` file).
    output : str, optional
        For a model with several outputs: the layer whose output is explained (the model is
        wrapped as ``keras.Model(model.inputs, layer.output)``).

    Returns
    -------
    ModelSpec
        Named by the file's stem; no input range (the model's own preprocessing is used).

    Raises
    ------
    InputError
        The file is missing, unreadable, or not safe to load (e.g. it has Lambda layers);
        the model has several inputs, or several outputs and no (or an unknown) ``output``.
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
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as err:
        if "safe_mode" in str(err) or "unsafe" in str(err).lower() or "lambda" in str(err).lower():
            raise InputError(
                f"model file {str(path)!r} is not safe to load (it would run code): {err} "
                "cnnvis-eval loads model files in Keras safe mode only; save the model without "
                "Lambda layers (use registered layer classes) to evaluate it"
            ) from err
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: {err}") from err
    except Exception as err:
        raise InputError(f"model file {str(path)!r} cannot be read as a Keras model: "
                         f"{type(err).__name__}: {err}") from err
    model = _single_output(model, path, output)
    spec = as_spec(model)
    spec.name = path.stem
    if not spec.input_range:
        spec.input_range = None
    return spec


def _single_output(model, path: Path, output: str | None):
    """The model, or the part of it that ends at layer ``output``; one input only."""
    import keras

    if len(model.inputs) != 1:
        raise InputError(f"model file {str(path)!r} has {len(model.inputs)} inputs; models with several inputs "
                         "are not supported")
    if output is None and len(model.outputs) == 1:
        return model
    names = [t.name.split("/")[0] for t in model.outputs]
    if output is None:
        raise InputError(f"model file {str(path)!r} has {len(names)} outputs ({', '.join(names)}); "
                         "choose the one to explain (--cnnvis-output NAME)")
    try:
        layer = model.get_layer(output)
    except ValueError:
        raise InputError(f"model file {str(path)!r} has no layer {output!r} to explain "
                         f"(outputs: {', '.join(names)})") from None
    return keras.Model(model.inputs, layer.output, name=f"{model.name}_{output}")


__all__ = ["ModelFile", "load_model_file"]
