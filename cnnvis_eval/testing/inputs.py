"""A user's inputs for the checks: model file, images, masks and preprocessing.

Images come as a folder of JPEG/PNG files (any size: centre-cropped to the model's aspect
ratio, then resized, with scikit-image), an ``.npz`` holding an ``images`` array, or a NumPy
array (N, H, W[, C]); grayscale images work with RGB models and RGB images with grayscale
models.  Masks (for localization) are a folder of PNGs named like the images, or an ``.npz``
with a ``masks`` array, cropped and resized like the images.  Every problem is one
:class:`~cnnvis_eval.errors.InputError` line naming the file and what is wrong.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import numpy as np

from ..data.photos import center_crop_resize
from ..errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PREPROCESS = ("0-255", "-1,1", "0-1", "caffe", "torch")
"""Named preprocessing choices (``--cnnvis-preprocess``); ``module:function`` names a callable."""

_TORCH_MEAN, _TORCH_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def preprocess_function(choice: str | None, spec=None) -> tuple[Callable[[np.ndarray], np.ndarray], tuple | None]:
    """The preprocessing of ``choice`` and the input range it produces (per channel, or None).

    Parameters
    ----------
    choice : one of :data:`PREPROCESS`, ``"module:function"``, or None
        None: the spec's own ``preprocess`` (a zoo or mini model), else ``"0-255"``.
    spec : ModelSpec, optional

    Returns
    -------
    (function images float (N, H, W, C) in [0, 255] -> float32, (low, high) or None)
    """
    if choice is None:
        if spec is not None and spec.family != "custom":
            return spec.preprocess, spec.input_range
        choice = "0-255"
    if choice == "0-255":
        return (lambda a: np.asarray(a, np.float32)), (0.0, 255.0)
    if choice == "0-1":
        return (lambda a: np.asarray(a, np.float32) / 255.0), (0.0, 1.0)
    if choice == "-1,1":
        return (lambda a: np.asarray(a, np.float32) / 127.5 - 1.0), (-1.0, 1.0)
    if choice == "caffe":
        from ..models.zoo import preprocess_caffe

        lo = preprocess_caffe(np.zeros((1, 1, 1, 3)))[0, 0, 0]
        hi = preprocess_caffe(np.full((1, 1, 1, 3), 255.0))[0, 0, 0]
        return preprocess_caffe, (lo, hi)
    if choice == "torch":
        def torch(a):
            a = np.asarray(a, np.float32)
            if a.shape[-1] != 3:
                raise InputError(f"--cnnvis-preprocess torch needs 3-channel images, got {a.shape[-1]}")
            return ((a / 255.0 - _TORCH_MEAN) / _TORCH_STD).astype(np.float32)

        return torch, (tuple(-_TORCH_MEAN / _TORCH_STD), tuple((1 - _TORCH_MEAN) / _TORCH_STD))
    if ":" in choice:
        module, _, name = choice.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:
            raise InputError(f"preprocessing {choice!r} cannot be imported: {err}") from None
        if not callable(fn):
            raise InputError(f"preprocessing {choice!r} is not a function")
        return (lambda a: np.asarray(fn(np.asarray(a, np.float32)), np.float32)), None
    raise InputError(f"unknown preprocessing {choice!r}; choose one of {', '.join(PREPROCESS)} or module:function")


def _fit(img: np.ndarray, shape: tuple, what: str) -> np.ndarray:
    """One image (H, W[, C]) -> uint8 (h, w, c) at the model's size and channel count."""
    h, w, c = shape
    img = np.asarray(img)
    if img.ndim == 3 and img.shape[-1] not in (1, 3, 4):
        raise InputError(f"{what}: {img.shape[-1]} channels; expected grayscale, RGB or RGBA")
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim != 2 and img.ndim != 3:
        raise InputError(f"{what}: shape {img.shape} is not an image (H, W) or (H, W, C)")
    rgb = center_crop_resize(img, (h, w)).astype(np.float64)
    if c == 3:
        return rgb
    if c == 1:
        return (rgb @ np.array([0.2125, 0.7154, 0.0721]))[..., None]
    raise InputError(f"the model takes {c} input channels; only 1 (grayscale) or 3 (RGB) are supported")


def _folder_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"image folder {str(folder)!r} holds no JPEG or PNG files")
    return files


def _read(path: Path) -> np.ndarray:
    from skimage import io

    try:
        return io.imread(path)
    except Exception as err:  # noqa: BLE001 - any decoder error is the file's problem
        raise InputError(f"image file {str(path)!r} cannot be read: {err}") from None


def _npz(path: Path, key: str) -> np.ndarray:
    try:
        with np.load(path) as data:
            if key not in data:
                raise InputError(f"{str(path)!r} has no {key!r} array (arrays: {', '.join(data.files) or 'none'})")
            return data[key]
    except (OSError, ValueError) as err:
        raise InputError(f"{str(path)!r} cannot be read as an npz file: {err}") from None


def load_images(source, input_shape: tuple) -> tuple[np.ndarray, list[str]]:
    """Images at the model's size, in [0, 255], and their ids.

    Parameters
    ----------
    source : folder, ``.npz`` file (array ``images``), single image file, or array (N, H, W[, C])
    input_shape : (H, W, C) of the model

    Returns
    -------
    images : float64 (N, H, W, C) in [0, 255]
    ids : list of N str (file stems, or ``"0"``, ``"1"``, ...)
    """
    if isinstance(source, np.ndarray):
        arr, what = source, "image array"
    else:
        path = Path(source)
        if path.is_dir():
            files = _folder_files(path)
            return (np.stack([_fit(_read(f), input_shape, f"image file {str(f)!r}") for f in files]),
                    [f.stem for f in files])
        if not path.exists():
            raise InputError(f"images {str(path)!r} do not exist")
        if path.suffix.lower() == ".npz":
            arr, what = _npz(path, "images"), f"{str(path)!r}"
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            return _fit(_read(path), input_shape, f"image file {str(path)!r}")[None], [path.stem]
        else:
            raise InputError(f"images {str(path)!r}: give a folder of JPEG/PNG files, an .npz or an image file")
    arr = np.asarray(arr)
    if arr.ndim not in (3, 4) or len(arr) == 0:
        raise InputError(f"{what}: expected a non-empty array (N, H, W) or (N, H, W, C), got shape {arr.shape}")
    if not np.isfinite(arr.astype(np.float64)).all():
        raise InputError(f"{what} contains NaN or inf")
    if arr.dtype != np.uint8 and arr.max() <= 1.0:
        arr = arr * 255.0
    return np.stack([_fit(np.clip(a, 0, 255).astype(np.uint8), input_shape, f"{what}[{i}]")
                     for i, a in enumerate(arr)]), [str(i) for i in range(len(arr))]


def load_masks(source, ids: list[str], input_shape: tuple) -> np.ndarray:
    """Masks for the images ``ids``, cropped and resized like them: bool (N, H, W).

    ``source``: a folder of PNGs named like the images, an ``.npz`` with ``masks`` (N, H, W),
    or an array.  Names or counts that do not match are an InputError.
    """
    h, w, _ = input_shape
    if isinstance(source, np.ndarray) or Path(source).suffix.lower() == ".npz":
        arr = np.asarray(source) if isinstance(source, np.ndarray) else _npz(Path(source), "masks")
        if arr.ndim != 3 or len(arr) != len(ids):
            raise InputError(f"masks {'array' if isinstance(source, np.ndarray) else repr(str(source))}: "
                             f"expected {len(ids)} masks (N, H, W), got shape {arr.shape}")
        raw = list(arr)
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise InputError(f"masks {str(folder)!r}: give a folder of PNGs named like the images, or an .npz")
        files = {p.stem: p for p in _folder_files(folder)}
        missing = [i for i in ids if i not in files]
        if missing:
            raise InputError(f"mask folder {str(folder)!r} has no mask for image(s) {', '.join(missing)}")
        raw = [_read(files[i]) for i in ids]
    out = []
    for i, m in zip(ids, raw):
        m = np.asarray(m)
        m = m[..., 0] if m.ndim == 3 else m
        out.append(center_crop_resize((m > 0).astype(np.uint8) * 255, (h, w))[..., 0] > 127)
    return np.stack(out)


__all__ = ["IMAGE_SUFFIXES", "PREPROCESS", "load_images", "load_masks", "preprocess_function"]


def load_user_model(path, output: str | None = None, preprocess: str | None = None, output_flag: str | None = None,
                    custom_objects=None, input_shape: tuple | None = None):
    """A user's model file as a ModelSpec ready for the checks.

    Parameters
    ----------
    path : str or Path
        ``.keras`` (safe mode) or legacy ``.h5``.
    output : str, optional
        For a model with several outputs: the name of the output layer to explain.
    preprocess : str, optional
        One of :data:`PREPROCESS` or ``module:function`` (default ``"0-255"``).
    output_flag : str, optional
        The option that gives ``output`` where the user is (``--cnnvis-output``, ``--output``),
        named in the error of a model with several outputs.
    custom_objects : list of ``"module:Name"`` or dict, optional
        The file's classes that are not registered with Keras (a subclassed model).
    input_shape : (H, W, C), optional
        For a subclassed model whose file does not record its input shape.

    Raises
    ------
    InputError
        Unreadable file, several inputs, several outputs without ``output``, unknown output.
    """
    from ..models.files import import_objects, load_model_file

    objects = custom_objects if isinstance(custom_objects, dict) else import_objects(custom_objects)
    try:
        spec = load_model_file(path, output=output, custom_objects=objects or None, input_shape=input_shape)
    except InputError as err:
        if output is None and output_flag and " outputs (" in str(err):
            raise InputError(f"{err}; here: {output_flag} NAME") from None
        raise
    fn, rng = preprocess_function(preprocess or "0-255", spec)
    spec.preprocess = fn
    c = spec.input_shape[-1]
    if rng is not None:
        spec.input_range = tuple(np.broadcast_to(np.asarray(v, np.float32), (c,)).copy() for v in rng)
    return spec


__all__ += ["load_user_model"]
