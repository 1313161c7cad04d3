"""Transformation robustness for feature visualization (Olah, Mordvintsev & Schubert,
"Feature Visualization", Distill 2017): the random transforms applied to the image before
every forward pass, as in Lucid's ``lucid/optvis/transform.py``.

Each transform is a small object: ``sample(rng)`` draws its random parameters (NumPy, seeded,
all drawn before the optimization starts), ``apply(x, params)`` applies it inside the compiled
step to an image batch ``(N, h, w, C)`` in RGB [0, 1] (sizes may change from one transform to
the next).

* :class:`Pad` ``(w, value)``: constant padding by ``w`` pixels on each side (Lucid pads with
  0.5, mid-grey).
* :class:`Jitter` ``(d)``: a random crop of size ``(h - d, w - d)`` at offset ``(oy, ox)``,
  each uniform in ``{0, ..., d}`` (Lucid's ``tf.image.random_crop``).
* :class:`RandomScale` ``(scales)``: bilinear resize (``half_pixel_centers=False``, Lucid's
  ``resize_bilinear``) to ``int(s * h), int(s * w)`` with ``s`` drawn uniformly from the list.
* :class:`RandomRotate` ``(angles)``: rotation by an angle drawn uniformly from the list
  (degrees, counter-clockwise as displayed) about the image centre, nearest-neighbour, the
  corners filled with 0 (``tfa.image.rotate``'s defaults).  Lucid converts degrees with 3.14
  for pi; we use pi.
* :class:`CropOrPad` ``(h, w)``: centred crop or zero pad to the model's input size (Lucid's
  ``crop_or_pad_to``, for models with a fixed input size); appended last by
  :func:`resolve_transforms`.

:data:`STANDARD` is Lucid's ``standard_transforms``: pad 12 (0.5), jitter 8, scale from
``1 + (i - 5) / 50`` for i in 0..10, rotate from -10..10 degrees with 5 extra zeros, jitter 4.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ...errors import InputError


class Transform:
    """One stochastic transform: ``n_params`` numbers per step."""

    n_params = 0

    def sample(self, rng) -> list:
        return []

    def apply(self, x, params):  # pragma: no cover - abstract
        raise NotImplementedError


class Pad(Transform):
    """Constant padding by ``width`` pixels on each side with ``value``."""

    def __init__(self, width: int, value: float = 0.5):
        self.width, self.value = int(width), float(value)

    def apply(self, x, params):
        w = self.width
        return tf.pad(x, [(0, 0), (w, w), (w, w), (0, 0)], constant_values=self.value)

    def __repr__(self):
        return f"Pad({self.width}, {self.value})"


class Jitter(Transform):
    """Crop of size ``(h - d, w - d)`` at a random offset ``(oy, ox)`` in ``{0..d}^2``."""

    n_params = 2

    def __init__(self, d: int):
        self.d = int(d)

    def sample(self, rng):
        return [float(v) for v in rng.integers(0, self.d + 1, 2)]

    def apply(self, x, params):
        oy, ox = tf.cast(params[0], tf.int32), tf.cast(params[1], tf.int32)
        shape = tf.shape(x)
        return tf.slice(x, tf.stack([0, oy, ox, 0]),
                        tf.stack([shape[0], shape[1] - self.d, shape[2] - self.d, shape[3]]))

    def __repr__(self):
        return f"Jitter({self.d})"


class RandomScale(Transform):
    """Bilinear resize by a factor drawn from ``scales`` (Lucid's legacy ``resize_bilinear``)."""

    n_params = 1

    def __init__(self, scales):
        self.scales = tuple(float(s) for s in scales)

    def sample(self, rng):
        return [self.scales[int(rng.integers(len(self.scales)))]]

    def apply(self, x, params):
        shape = tf.shape(x)
        size = tf.cast(tf.cast(params[0], tf.float32) * tf.cast(shape[1:3], tf.float32), tf.int32)
        out = tf.raw_ops.ResizeBilinear(images=x, size=size, align_corners=False,
                                        half_pixel_centers=False)
        return tf.cast(out, x.dtype)

    def __repr__(self):
        return f"RandomScale({list(self.scales)})"


class RandomRotate(Transform):
    """Rotation by an angle (degrees) drawn from ``angles``; nearest neighbour, zero fill."""

    n_params = 1

    def __init__(self, angles):
        self.angles = tuple(float(a) for a in angles)

    def sample(self, rng):
        return [np.pi * self.angles[int(rng.integers(len(self.angles)))] / 180.0]

    def apply(self, x, params):
        return rotate(x, params[0])

    def __repr__(self):
        return f"RandomRotate({list(self.angles)})"


class CropOrPad(Transform):
    """Centred crop or zero pad to ``(height, width)``."""

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)

    def apply(self, x, params):
        out = tf.image.resize_with_crop_or_pad(x, self.height, self.width)
        return tf.ensure_shape(out, (None, self.height, self.width, None))

    def __repr__(self):
        return f"CropOrPad({self.height}, {self.width})"


def rotate(x, radians):
    """Rotate (N, h, w, C) counter-clockwise by ``radians`` about the centre (nearest, zero
    fill), with ``tfa.image.rotate``'s projective transform."""
    shape = tf.shape(x)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    a = tf.cast(radians, tf.float32)
    cos, sin = tf.cos(a), tf.sin(a)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_off, sin, cos, y_off, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=tf.tile(transform, [shape[0], 1]), output_shape=shape[1:3],
        fill_value=tf.constant(0.0, tf.float32), interpolation="NEAREST", fill_mode="CONSTANT")
    return out


#: Lucid's ``standard_transforms``.
STANDARD = (
    Pad(12, 0.5),
    Jitter(8),
    RandomScale([1 + (i - 5) / 50.0 for i in range(11)]),
    RandomRotate(list(range(-10, 11)) + 5 * [0]),
    Jitter(4),
)


def resolve_transforms(transforms, height: int, width: int) -> tuple:
    """``"standard"`` (:data:`STANDARD`), ``None``/``"none"`` (none) or a sequence of
    :class:`Transform`, with :class:`CropOrPad` to the model's input size appended."""
    if transforms is None or (isinstance(transforms, str) and transforms == "none"):
        chosen = ()
    elif isinstance(transforms, str) and transforms == "standard":
        chosen = STANDARD
    elif isinstance(transforms, (list, tuple)) and all(isinstance(t, Transform) for t in transforms):
        chosen = tuple(transforms)
    else:
        raise InputError(
            f"transforms must be 'standard', 'none' or a list of Transform objects, got {transforms!r}")
    return chosen + (CropOrPad(height, width),)


def sample_params(transforms, rng, steps: int) -> np.ndarray:
    """The transforms' random parameters for every step: (steps, sum of n_params) float64."""
    width = sum(t.n_params for t in transforms)
    out = np.zeros((steps, width))
    for i in range(steps):
        out[i] = [v for t in transforms for v in t.sample(rng)]
    return out


def apply_all(transforms, x, params):
    """Apply ``transforms`` in order with their slices of the per-step ``params`` vector."""
    i = 0
    for t in transforms:
        x = t.apply(x, params[i:i + t.n_params])
        i += t.n_params
    return x


__all__ = [
    "CropOrPad",
    "Jitter",
    "Pad",
    "RandomRotate",
    "RandomScale",
    "STANDARD",
    "Transform",
    "apply_all",
    "resolve_transforms",
    "rotate",
    "sample_params",
]
