"""Exceptions raised by cnnvis_eval.

Every error the library raises on bad input derives from :class:`CnnVisError`, and its
message names what is wrong (layer name, shape, index range), so users never have to read
a TensorFlow traceback to find their mistake.  The subclasses also derive from the closest
builtin exception so ``except ValueError`` style handlers keep working.
"""

from __future__ import annotations


class CnnVisError(Exception):
    """Base class of all cnnvis_eval errors."""


class InputError(CnnVisError, ValueError):
    """The input images (or another argument) have the wrong rank, shape, dtype or values."""


class TargetError(CnnVisError, ValueError):
    """A target cannot be explained: unknown layer, class or channel index out of range."""


class UnsupportedLayerError(CnnVisError, TypeError):
    """A method met a layer type it has no rule for (the message names layer, type and method)."""


class UnsupportedArchitectureError(CnnVisError, ValueError):
    """A method needs a model structure this model does not have (e.g. CAM needs a GAP head)."""


class NonFiniteError(CnnVisError, FloatingPointError):
    """A method produced a NaN or inf heatmap from finite input (names method and image)."""


class WeightsUnavailableError(CnnVisError, FileNotFoundError):
    """Pretrained weights cannot be had; the message says which file to place where."""


__all__ = [
    "CnnVisError",
    "InputError",
    "NonFiniteError",
    "TargetError",
    "UnsupportedLayerError",
    "UnsupportedArchitectureError",
    "WeightsUnavailableError",
]
