"""Mahendran & Vedaldi's natural-image priors in centred display units (see the
package docstring): the alpha-norm, the total variation, and the map between model inputs
and display units."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ...errors import InputError
from ...models.spec import ModelSpec, as_spec

#: Typical norm of a mean-subtracted RGB pixel in [0, 255] units (Mahendran & Vedaldi).
B_RANGE = 80.0
#: Typical norm of the difference of neighbouring pixels, B / 6.5 (Mahendran & Vedaldi).
V_RANGE = B_RANGE / 6.5


def regularizers(model, images, alpha: float = 6.0, tv_beta: float = 2.0, input_range=None) -> dict:
    """N_alpha and N_TV of images in model-input space, as the optimizations measure them.

    Parameters
    ----------
    model : ModelSpec or keras.Model
        Supplies the input range that defines the centred display units.
    images : array, shape (N, H, W, C) or (H, W, C)

    Returns
    -------
    dict with ``"alpha_norm"`` and ``"tv"``, each (N,) float64 (or floats for one image).
    """
    spec = as_spec(model)
    arr = np.asarray(images, np.float64)
    single = arr.ndim == 3
    arr = arr[None] if single else arr
    space = DisplaySpace(spec, arr.shape[-1], np.float64, input_range)
    u = tf.constant(space.to_u(arr))
    a = alpha_norm(u, tf.constant(float(alpha), tf.float64), space.bound).numpy()
    t = total_variation(u, tf.constant(float(tv_beta), tf.float64), space.vbound).numpy()
    return {"alpha_norm": float(a[0]), "tv": float(t[0])} if single else {"alpha_norm": a, "tv": t}


def alpha_norm(u, alpha, bound):
    """Bounded-range prior per image: ``mean_ij (||u_ij|| / bound) ** alpha``; u (N, H, W, C)
    in centred display units -> (N,)."""
    sq = tf.reduce_sum(tf.square(u / bound), axis=-1)
    eps = tf.where(alpha >= 2, tf.zeros_like(alpha), tf.constant(1e-8, u.dtype))
    return tf.reduce_mean(tf.pow(sq + eps, alpha / 2), axis=[1, 2])


def total_variation(u, beta, scale):
    """Bounded-variation prior per image: ``mean_ij ((||u_i,j+1 - u_ij||^2 +
    ||u_i+1,j - u_ij||^2) / scale^2) ** (beta / 2)`` over the (H-1)(W-1) pixels with a right
    and a lower neighbour; u (N, H, W, C) -> (N,)."""
    dx = u[:, :-1, 1:, :] - u[:, :-1, :-1, :]
    dy = u[:, 1:, :-1, :] - u[:, :-1, :-1, :]
    sq = tf.reduce_sum(tf.square(dx) + tf.square(dy), axis=-1) / (scale * scale)
    eps = tf.where(beta >= 2, tf.zeros_like(beta), tf.constant(1e-8, u.dtype))
    return tf.reduce_mean(tf.pow(sq + eps, beta / 2), axis=[1, 2])


class DisplaySpace:
    """Map between model inputs x and centred display units u = (x - c) * k."""

    def __init__(self, spec: ModelSpec, channels: int, dtype, input_range=None, fallback=None):
        rng = input_range if input_range is not None else spec.input_range
        source = "input_range" if input_range is not None else "spec.input_range"
        if rng is None and fallback is not None:
            rng, source = fallback, "image range"
        if rng is None:
            rng, source = (np.zeros(channels), np.ones(channels)), "assumed [0, 1]"
        lo = np.broadcast_to(np.asarray(rng[0], np.float64), (channels,))
        hi = np.broadcast_to(np.asarray(rng[1], np.float64), (channels,))
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
            raise InputError(f"input range must have low < high per channel, got {rng!r}")
        self.low, self.high, self.source = lo, hi, source
        self.center = ((lo + hi) / 2).astype(dtype)
        self.k = (255.0 / (hi - lo)).astype(dtype)
        self.u_max = 127.5
        self.bound = B_RANGE * np.sqrt(channels / 3.0)
        self.vbound = V_RANGE * np.sqrt(channels / 3.0)

    def to_u(self, x):
        return (np.asarray(x, np.float64) - self.center) * self.k

    def to_x(self, u):
        return np.asarray(u) / self.k + self.center


__all__ = ["B_RANGE", "DisplaySpace", "V_RANGE", "alpha_norm", "regularizers", "total_variation"]
